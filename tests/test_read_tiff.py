"""TIFF / ImageJ-TIFF / OME-TIFF reading via tifffile."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from napari_calc.core.errors import UnsupportedImageError
from napari_calc.core.read import find_inputs, is_tiff, read_image


@pytest.fixture(scope="module")
def img16():
    rng = np.random.default_rng(3)
    return rng.integers(0, 65535, size=(48, 64)).astype(np.uint16)


def test_plain_16bit_no_spacing(tmp_path, img16):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, img16)  # tifffile writes 1/1 with no unit
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, img16)
    assert img.pixels.dtype == np.uint16
    assert img.spacing_mm is None
    m = img.metadata
    assert m["spacing_source"] is None
    assert m["format"] == "tiff"
    assert m["photometric"] == "MINISBLACK"
    assert m["intensity_transforms"] == []
    assert m["source_path"] == os.fspath(p)
    for key in ("modality", "laterality", "view", "presentation_intent", "voi_window"):
        assert key in m
    json.dumps(m)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int16])
def test_dtypes_kept(tmp_path, img16, dtype):
    data = (img16 / 300).astype(dtype)
    p = tmp_path / "d.tif"
    tifffile.imwrite(p, data)
    img = read_image(p)
    assert img.pixels.dtype == dtype
    np.testing.assert_array_equal(img.pixels, data)


@pytest.mark.parametrize("res,unit,expected", [
    ((254, 254), "INCH", (0.1, 0.1)),
    ((254, 127), "INCH", (0.2, 0.1)),  # (x, y) resolution -> (row=y, col=x) spacing
    ((100, 50), "CENTIMETER", (0.2, 0.1)),
    ((200, 200), "CENTIMETER", (0.05, 0.05)),
])
def test_resolution_tags(tmp_path, img16, res, unit, expected):
    p = tmp_path / "res.tif"
    tifffile.imwrite(p, img16, resolution=res, resolutionunit=unit)
    img = read_image(p)
    assert img.spacing_mm == pytest.approx(expected)
    assert img.metadata["spacing_source"] == "TIFF resolution"


@pytest.mark.parametrize("res,unit", [((1, 1), "NONE"), ((300, 300), "NONE"), ((72, 72), "INCH"), ((96, 96), "INCH")])
def test_resolution_unknown(tmp_path, img16, res, unit):
    """No unit, the 1/1 placeholder and writer-default dpi are not spacings."""
    p = tmp_path / "unk.tif"
    tifffile.imwrite(p, img16, resolution=res, resolutionunit=unit)
    img = read_image(p)
    assert img.spacing_mm is None
    assert img.metadata["spacing_source"] is None


@pytest.mark.parametrize("size,unit,expected_mm", [
    (50.0, "µm", 0.05),
    (50.0, None, 0.05),  # OME default unit is µm
    (70000.0, "nm", 0.07),
    (0.085, "mm", 0.085),
    (0.01, "cm", 0.1),
])
def test_ome_physical_size_units(tmp_path, img16, size, unit, expected_mm):
    p = tmp_path / "a.ome.tif"
    md = {"axes": "YX", "PhysicalSizeX": size, "PhysicalSizeY": size}
    if unit is not None:
        md["PhysicalSizeXUnit"] = unit
        md["PhysicalSizeYUnit"] = unit
    tifffile.imwrite(p, img16, photometric="minisblack", metadata=md)
    img = read_image(p)
    assert img.metadata["format"] == "ome-tiff"
    assert img.metadata["spacing_source"] == "OME PhysicalSize"
    assert img.spacing_mm == pytest.approx((expected_mm, expected_mm))


def test_ome_stack(tmp_path, img16):
    vol = np.stack([img16, img16 // 2, img16 // 3])
    p = tmp_path / "stack.ome.tif"
    tifffile.imwrite(p, vol, photometric="minisblack", metadata={
        "axes": "ZYX", "PhysicalSizeX": 50, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.06,
        "PhysicalSizeYUnit": "mm", "PhysicalSizeZ": 1, "PhysicalSizeZUnit": "mm"})
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, vol)
    assert img.spacing_mm == pytest.approx((1.0, 0.06, 0.05))


def test_ome_precedes_resolution_tags(tmp_path, img16):
    p = tmp_path / "both.ome.tif"
    tifffile.imwrite(p, img16, photometric="minisblack", resolution=(254, 254), resolutionunit="INCH",
                     metadata={"axes": "YX", "PhysicalSizeX": 70, "PhysicalSizeY": 70})
    assert read_image(p).spacing_mm == pytest.approx((0.07, 0.07))


def test_imagej_stack(tmp_path, img16):
    vol = np.stack([img16, img16])
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, vol, imagej=True, resolution=(1 / 0.05, 1 / 0.05),
                     metadata={"spacing": 1.5, "unit": "mm", "axes": "ZYX"})
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, vol)
    assert img.spacing_mm == pytest.approx((1.5, 0.05, 0.05))
    assert img.metadata["spacing_source"] == "TIFF resolution"


def test_imagej_micron(tmp_path, img16):
    p = tmp_path / "ijum.tif"
    tifffile.imwrite(p, img16, imagej=True, resolution=(1 / 70, 1 / 70), metadata={"unit": "micron"})
    assert read_image(p).spacing_mm == pytest.approx((0.07, 0.07))


def test_multipage_stack_without_z(tmp_path, img16):
    vol = np.stack([img16, img16 // 2])
    p = tmp_path / "pages.tif"
    tifffile.imwrite(p, vol, photometric="minisblack", resolution=(100, 100), resolutionunit="CENTIMETER")
    img = read_image(p)
    assert img.pixels.shape == (2, 48, 64)
    np.testing.assert_array_equal(img.pixels, vol)
    # in-plane known, slice unknown -> no spacing, in-plane kept for the user
    assert img.spacing_mm is None
    assert img.metadata["in_plane_spacing_mm"] == pytest.approx([0.1, 0.1])
    assert read_image(p, spacing_mm=(1.0, 0.1, 0.1)).spacing_mm == (1.0, 0.1, 0.1)


def test_compressed_tiff(tmp_path, img16):
    p = tmp_path / "z.tif"
    tifffile.imwrite(p, img16, compression="zlib")
    np.testing.assert_array_equal(read_image(p).pixels, img16)


def test_miniswhite_inverted(tmp_path, img16):
    p = tmp_path / "w.tif"
    tifffile.imwrite(p, 65535 - img16, photometric="miniswhite")
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, img16)
    assert img.metadata["intensity_transforms"] == ["invert_miniswhite"]


@pytest.mark.parametrize("shape,photometric", [((32, 32, 3), "rgb"), ((32, 32, 4), "rgb"), ((2, 32, 32, 3), "rgb")])
def test_rgb_refused(tmp_path, shape, photometric):
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, np.zeros(shape, np.uint8), photometric=photometric)
    with pytest.raises(UnsupportedImageError, match="colour") as exc:
        read_image(p)
    assert "rgb.tif" in str(exc.value)


def test_content_not_extension(tmp_path, img16):
    p = tmp_path / "scan.dat"
    tifffile.imwrite(p, img16)
    assert is_tiff(p)
    np.testing.assert_array_equal(read_image(p).pixels, img16)
    assert find_inputs([tmp_path]) == [os.fspath(p)]


def test_same_metadata_keys_as_dicom(tmp_path, img16):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from dicom_factory import make_mammo_dicom

    tifffile.imwrite(tmp_path / "a.tif", img16)
    make_mammo_dicom(tmp_path / "b.dcm", img16)
    t, d = read_image(tmp_path / "a.tif").metadata, read_image(tmp_path / "b.dcm").metadata
    common = {"source_path", "format", "modality", "laterality", "view", "presentation_intent", "photometric",
              "manufacturer", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid",
              "frame_of_reference_uid", "image_position_patient", "image_orientation_patient", "patient_name",
              "patient_id", "patient_birth_date", "study_date", "accession_number", "bits_stored", "voi_window",
              "spacing_source", "intensity_transforms", "transfer_syntax_uid"}
    assert common <= set(t) and common <= set(d)
