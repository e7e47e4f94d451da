"""DICOM reading: every flavour built with pydicom (tests/dicom_factory.py)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from dicom_factory import (  # noqa: E402
    can_encode,
    make_mammo_dicom,
    make_series,
    make_tomo_dicom,
    monochrome1_of,
)

from napari_calc.core.errors import InvalidParameterError, UnsupportedImageError  # noqa: E402
from napari_calc.core.read import find_inputs, is_dicom, read_image  # noqa: E402

BITS = 12


@pytest.fixture(scope="module")
def mammo():
    """A small 12-bit 'mammogram' with a bright spot (dense = high)."""
    rng = np.random.default_rng(5)
    img = rng.integers(500, 1500, size=(48, 64)).astype(np.uint16)
    img[20:23, 30:33] = 4000
    img[0, 0] = 0
    img[-1, -1] = 4095
    return img


# ---------------------------------------------------------------- basics


def test_monochrome2_plain(tmp_path, mammo):
    p = tmp_path / "plain.dcm"
    make_mammo_dicom(p, mammo, bits_stored=BITS, pixel_spacing=(0.07, 0.065), window=(1000, 2000))
    img = read_image(p)
    assert img.pixels.shape == mammo.shape
    assert img.pixels.dtype.kind in "ui"
    np.testing.assert_array_equal(img.pixels, mammo)
    assert img.spacing_mm == pytest.approx((0.07, 0.065))
    m = img.metadata
    assert m["spacing_source"] == "PixelSpacing"
    assert m["intensity_transforms"] == []
    assert m["voi_window"] == (1000.0, 2000.0)
    assert m["format"] == "dicom"
    assert m["modality"] == "MG"
    assert m["laterality"] == "L"
    assert m["view"] == "CC"
    assert m["presentation_intent"] == "FOR PRESENTATION"
    assert m["photometric"] == "MONOCHROME2"
    assert m["bits_stored"] == BITS
    assert m["source_path"] == os.fspath(p)
    assert m["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.1.2"
    for key in ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "frame_of_reference_uid"):
        assert isinstance(m[key], str) and m[key].count(".") > 3
    assert m["patient_name"] == "Test^Patient"
    assert m["patient_id"] == "TEST0001"
    assert m["patient_birth_date"] == "19600101"
    assert m["study_date"] == "20240517"
    assert m["accession_number"] == "ACC123"
    assert m["manufacturer"] == "napari-calc test factory"
    assert m["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    assert "dicom_header" not in m
    # JSON-serialisable, plain types
    json.dumps(m)


def test_window_not_applied(tmp_path, mammo):
    """A narrow VOI window must not clip or rescale the pixels."""
    p = tmp_path / "win"
    make_mammo_dicom(p, mammo, bits_stored=BITS, window=(1000, 10))
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, mammo)
    assert img.metadata["voi_window"] == (1000.0, 10.0)


def test_no_extension_recognised_by_content(tmp_path, mammo):
    p = tmp_path / "IM0001"
    make_mammo_dicom(p, mammo, bits_stored=BITS)
    assert is_dicom(p)
    np.testing.assert_array_equal(read_image(p).pixels, mammo)
    # a misleading extension does not matter either
    q = tmp_path / "really_dicom.tif"
    make_mammo_dicom(q, mammo, bits_stored=BITS)
    np.testing.assert_array_equal(read_image(q).pixels, mammo)


@pytest.mark.parametrize("ts", ["explicit", "implicit"])
def test_no_preamble(tmp_path, mammo, ts):
    p = tmp_path / "bare"
    make_mammo_dicom(p, mammo, bits_stored=BITS, preamble=False, pixel_spacing=(0.1, 0.1), transfer_syntax=ts)
    with open(p, "rb") as fh:
        assert fh.read(132)[128:132] != b"DICM"
    assert is_dicom(p)
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, mammo)
    assert img.spacing_mm == pytest.approx((0.1, 0.1))


@pytest.mark.parametrize("ts", ["implicit", "big_endian", "deflated"])
def test_native_syntaxes(tmp_path, mammo, ts):
    p = tmp_path / ts
    make_mammo_dicom(p, mammo, bits_stored=BITS, transfer_syntax=ts)
    img = read_image(p)
    assert img.pixels.dtype.isnative
    np.testing.assert_array_equal(img.pixels, mammo)


@pytest.mark.parametrize("modality,intent,sop", [
    ("DX", "FOR PRESENTATION", "1.2.840.10008.5.1.4.1.1.1.1"),
    ("CR", None, "1.2.840.10008.5.1.4.1.1.1"),
])
def test_dx_cr(tmp_path, mammo, modality, intent, sop):
    p = tmp_path / modality
    make_mammo_dicom(p, mammo, modality=modality, presentation_intent=intent, bits_stored=BITS,
                     imager_pixel_spacing=(0.15, 0.15))
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, mammo)
    assert img.metadata["modality"] == modality
    assert img.metadata["sop_class_uid"] == sop
    assert img.metadata["presentation_intent"] == intent
    assert img.spacing_mm == pytest.approx((0.15, 0.15))


# ---------------------------------------------------------------- polarity


def test_monochrome1_equals_monochrome2(tmp_path, mammo):
    p2, p1 = tmp_path / "m2.dcm", tmp_path / "m1.dcm"
    make_mammo_dicom(p2, mammo, bits_stored=BITS, window=(1000, 400))
    stored = monochrome1_of(mammo, BITS)
    assert not np.array_equal(stored, mammo)
    make_mammo_dicom(p1, stored, photometric="MONOCHROME1", bits_stored=BITS, window=(4095 - 1000, 400))
    a, b = read_image(p2), read_image(p1)
    assert b.pixels.dtype.kind in "ui"  # integer kept
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert b.metadata["intensity_transforms"] == ["invert_monochrome1"]
    assert b.metadata["photometric"] == "MONOCHROME1"
    # the window is translated into the inverted scale: same display
    assert b.metadata["voi_window"] == pytest.approx(a.metadata["voi_window"])
    # the bright (dense) spot stays bright
    assert b.pixels[21, 31] == 4000


def test_monochrome1_with_rescale(tmp_path, mammo):
    """Rescaled MONOCHROME1: inverted within the rescaled representable range."""
    p = tmp_path / "m1r"
    make_mammo_dicom(p, mammo, photometric="MONOCHROME1", bits_stored=BITS, rescale=(2.0, -100.0))
    img = read_image(p)
    lo, hi = -100, 2 * 4095 - 100
    expected = lo + hi - (mammo.astype(np.int64) * 2 - 100)
    np.testing.assert_array_equal(img.pixels, expected)
    assert img.pixels.dtype.kind == "i"
    assert img.metadata["intensity_transforms"] == ["modality_lut", "invert_monochrome1"]


def test_rescale_applied(tmp_path, mammo):
    p = tmp_path / "resc"
    make_mammo_dicom(p, mammo, bits_stored=BITS, rescale=(1.0, -1024.0))
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, mammo.astype(np.int64) - 1024)
    assert img.pixels.dtype == np.int16
    assert img.metadata["intensity_transforms"] == ["modality_lut"]


def test_fractional_rescale_is_float(tmp_path, mammo):
    p = tmp_path / "rescf"
    make_mammo_dicom(p, mammo, bits_stored=BITS, rescale=(0.5, 0.25))
    img = read_image(p)
    assert img.pixels.dtype == np.float32
    np.testing.assert_allclose(img.pixels, mammo * 0.5 + 0.25)


def test_for_processing_log(tmp_path):
    """Raw linear data, dense = low signal: -log makes dense bright."""
    raw = np.full((40, 40), 3000, np.uint16)
    raw[10:20, 10:20] = 1000  # denser tissue, less signal
    raw[15, 15] = 300  # a calcification: least signal
    p = tmp_path / "raw"
    make_mammo_dicom(p, raw, bits_stored=14, presentation_intent="FOR PROCESSING",
                     pixel_intensity_relationship="LIN", pixel_intensity_relationship_sign=1,
                     window=(2000, 4000))
    img = read_image(p)
    assert img.metadata["presentation_intent"] == "FOR PROCESSING"
    assert img.metadata["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.1.2.1"
    assert img.pixels.dtype == np.float32
    assert "for_processing_log_attenuation" in img.metadata["intensity_transforms"]
    np.testing.assert_allclose(img.pixels[0, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(img.pixels[12, 12], np.log(3000 / 1000), rtol=1e-5)
    np.testing.assert_allclose(img.pixels[15, 15], np.log(3000 / 300), rtol=1e-5)
    assert img.pixels[15, 15] > img.pixels[12, 12] > img.pixels[0, 0]
    assert img.metadata["voi_window"] is None  # a raw-scale window does not apply


def test_for_processing_log_relationship(tmp_path):
    raw = np.full((16, 16), 100, np.uint16)
    raw[5, 5] = 900  # LOG with sign +1: low value = dense, so 900 is less dense
    p = tmp_path / "rawlog"
    make_mammo_dicom(p, raw, bits_stored=10, presentation_intent="FOR PROCESSING",
                     pixel_intensity_relationship="LOG", pixel_intensity_relationship_sign=1)
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, 1023 - raw.astype(np.int64))
    assert img.metadata["intensity_transforms"] == ["for_processing_invert_log"]


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("kw,expected,source", [
    (dict(pixel_spacing=(0.05, 0.06), imager_pixel_spacing=(0.1, 0.1), magnification=2.0),
     (0.05, 0.06), "PixelSpacing"),
    (dict(imager_pixel_spacing=(0.1, 0.12), magnification=1.25),
     (0.08, 0.096), "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"),
    (dict(imager_pixel_spacing=(0.1, 0.12)), (0.1, 0.12), "ImagerPixelSpacing"),
    (dict(nominal_scanned_pixel_spacing=(0.05, 0.05)), (0.05, 0.05), "NominalScannedPixelSpacing"),
    (dict(), None, None),
])
def test_spacing_precedence(tmp_path, mammo, kw, expected, source):
    p = tmp_path / "sp"
    make_mammo_dicom(p, mammo, bits_stored=BITS, **kw)
    img = read_image(p)
    if expected is None:
        assert img.spacing_mm is None
    else:
        assert img.spacing_mm == pytest.approx(expected)
    assert img.metadata["spacing_source"] == source


def test_user_spacing(tmp_path, mammo):
    p = tmp_path / "u"
    make_mammo_dicom(p, mammo, bits_stored=BITS, imager_pixel_spacing=(0.1, 0.1))
    img = read_image(p, spacing_mm=0.05)
    assert img.spacing_mm == (0.05, 0.05)
    assert img.metadata["spacing_source"] == "user"
    assert read_image(p, spacing_mm=(0.04, 0.03)).spacing_mm == (0.04, 0.03)
    with pytest.raises(InvalidParameterError, match="positive"):
        read_image(p, spacing_mm=-1)
    with pytest.raises(InvalidParameterError, match="2-D"):
        read_image(p, spacing_mm=(1, 1, 1))


# ---------------------------------------------------------------- compression

LOSSLESS = ["rle", "jpegls_lossless", "j2k_lossless", "jpeg_lossless_sv1", "jpeg_lossless"]


@pytest.mark.parametrize("ts", LOSSLESS)
def test_lossless_identical(tmp_path, mammo, ts):
    if not can_encode(ts):
        pytest.skip(f"no encoder for {ts} on this machine (imagecodecs needed)")
    plain, comp = tmp_path / "plain", tmp_path / ts
    make_mammo_dicom(plain, mammo, bits_stored=BITS, pixel_spacing=(0.1, 0.1))
    ds = make_mammo_dicom(comp, mammo, bits_stored=BITS, transfer_syntax=ts, pixel_spacing=(0.1, 0.1))
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    a, b = read_image(plain), read_image(comp)
    np.testing.assert_array_equal(b.pixels, a.pixels)
    assert b.pixels.dtype == a.pixels.dtype
    assert b.metadata["transfer_syntax_uid"] == str(ds.file_meta.TransferSyntaxUID)


def test_jpeg2000_lossless_monochrome1(tmp_path, mammo):
    p = tmp_path / "j2k_m1"
    make_mammo_dicom(p, monochrome1_of(mammo, BITS), photometric="MONOCHROME1", bits_stored=BITS,
                     transfer_syntax="j2k_lossless")
    np.testing.assert_array_equal(read_image(p).pixels, mammo)


@pytest.mark.parametrize("ts,kw", [("j2k", dict(j2k_cr=[10])), ("jpegls_near", dict(jls_error=3))])
def test_lossy_close(tmp_path, ts, kw):
    """Lossy syntaxes decode to the right shape and nearly the right values."""
    yy, xx = np.mgrid[0:64, 0:80]
    smooth = (1000 + 20 * xx + 10 * yy).astype(np.uint16)
    smooth[30:33, 40:43] += 1500
    p = tmp_path / ts
    make_mammo_dicom(p, smooth, bits_stored=BITS, transfer_syntax=ts, **kw)
    img = read_image(p)
    assert img.pixels.shape == smooth.shape
    err = np.abs(img.pixels.astype(int) - smooth.astype(int))
    if ts == "jpegls_near":
        assert err.max() <= 3  # the JPEG-LS NEAR bound is a guarantee
    else:
        assert err.mean() < 0.01 * 4095
    assert img.pixels[31, 41] > img.pixels[10, 41] + 1000  # the spot survives


def test_jpeg_baseline_8bit(tmp_path):
    if not can_encode("jpeg_baseline"):
        pytest.skip("no JPEG baseline encoder")
    yy, xx = np.mgrid[0:64, 0:64]
    img8 = (40 + 2 * xx + yy).astype(np.uint8)
    p = tmp_path / "jpg"
    make_mammo_dicom(p, img8, bits_stored=8, transfer_syntax="jpeg_baseline")
    out = read_image(p)
    assert out.pixels.shape == img8.shape
    assert np.abs(out.pixels.astype(int) - img8).max() <= 6


# ---------------------------------------------------------------- tomosynthesis


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(7)
    return rng.integers(0, 4096, size=(5, 40, 48)).astype(np.uint16)


def test_tomo_enhanced(tmp_path, volume):
    p = tmp_path / "bto.dcm"
    make_tomo_dicom(p, volume, bits_stored=BITS, pixel_spacing=(0.085, 0.09), spacing_between_slices=1.0,
                    slice_thickness=0.5, window=(2000, 3000))
    img = read_image(p)
    assert img.pixels.shape == volume.shape
    np.testing.assert_array_equal(img.pixels, volume)
    assert img.spacing_mm == pytest.approx((1.0, 0.085, 0.09))
    m = img.metadata
    assert m["spacing_source"] == "PixelSpacing"
    assert m["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.13.1.3"
    assert m["laterality"] == "R" and m["view"] == "MLO"
    assert m["voi_window"] == (2000.0, 3000.0)
    assert m["image_orientation_patient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert m["image_position_patient"] == [0.0, 0.0, 0.0]
    assert len(m["frame_positions_patient"]) == 5
    json.dumps(m)


def test_tomo_enhanced_spacing_from_positions_and_per_frame(tmp_path, volume):
    """No SpacingBetweenSlices: slice spacing from per-frame positions."""
    p = tmp_path / "bto2"
    positions = [[0.0, 0.0, 0.7 * k] for k in range(5)]
    make_tomo_dicom(p, volume, bits_stored=BITS, spacing_between_slices=None, slice_thickness=1.0,
                    positions=positions, per_frame_pixel_measures=True, pixel_spacing=(0.1, 0.1))
    img = read_image(p)
    assert img.spacing_mm == pytest.approx((0.7, 0.1, 0.1))


def test_tomo_enhanced_per_frame_rescale_compressed(tmp_path, volume):
    p = tmp_path / "bto3"
    rescale = [(1.0, float(10 * k)) for k in range(5)]
    make_tomo_dicom(p, volume, bits_stored=BITS, rescale=rescale, transfer_syntax="j2k_lossless")
    img = read_image(p)
    expected = volume.astype(np.int64) + 10 * np.arange(5)[:, None, None]
    np.testing.assert_array_equal(img.pixels, expected)


def test_tomo_magnification_in_plane(tmp_path, volume):
    p = tmp_path / "bto4"
    make_tomo_dicom(p, volume, bits_stored=BITS, pixel_spacing=None, imager_pixel_spacing=(0.1, 0.1),
                    magnification=1.1, spacing_between_slices=1.0)
    img = read_image(p)
    assert img.spacing_mm == pytest.approx((1.0, 0.1 / 1.1, 0.1 / 1.1))
    assert img.metadata["spacing_source"] == "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"


def test_tomo_simple_multiframe(tmp_path, volume):
    p = tmp_path / "mf"
    make_tomo_dicom(p, volume, enhanced=False, bits_stored=BITS, pixel_spacing=(0.1, 0.1),
                    spacing_between_slices=1.5, photometric="MONOCHROME1")
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, monochrome1_of(volume, BITS))
    assert img.spacing_mm == pytest.approx((1.5, 0.1, 0.1))


def test_tomo_unknown_slice_spacing(tmp_path, volume):
    p = tmp_path / "mf2"
    make_tomo_dicom(p, volume, enhanced=False, bits_stored=BITS, pixel_spacing=(0.1, 0.1),
                    spacing_between_slices=None, slice_thickness=None)
    img = read_image(p)
    assert img.spacing_mm is None
    assert img.metadata["spacing_source"] is None
    assert img.metadata["in_plane_spacing_mm"] == pytest.approx([0.1, 0.1])
    # one or two values do not say how far apart the slices are: refused (a
    # scalar was taken for the slice spacing too, 0.2 mm between DBT slices)
    with pytest.raises(InvalidParameterError, match="no slice spacing; give 3 values .*not one"):
        read_image(p, spacing_mm=0.2)
    with pytest.raises(InvalidParameterError, match="slice"):
        read_image(p, spacing_mm=(0.1, 0.1))
    assert read_image(p, spacing_mm=(1.0, 0.1, 0.1)).spacing_mm == (1.0, 0.1, 0.1)
    # detecting on it says which spacing is missing (it said "the pixel spacing is unknown")
    import napari_calc
    from napari_calc.core.errors import MissingSpacingError

    with pytest.raises(MissingSpacingError, match=r"the slice spacing is unknown \(in-plane 0.1 x 0.1 mm\)"):
        napari_calc.detect(img)


def test_tomosynthesis_projections_are_refused(tmp_path, volume):
    """Breast Projection X-Ray objects stack views from different angles:
    detected as slices, clusters formed across projections."""
    from napari_calc.core.errors import UnsupportedImageError

    for sop in ("1.2.840.10008.5.1.4.1.1.13.1.4", "1.2.840.10008.5.1.4.1.1.13.1.5"):
        p = tmp_path / f"bpx{sop[-1]}.dcm"
        make_tomo_dicom(p, volume, bits_stored=BITS, sop_class_uid=sop)
        with pytest.raises(UnsupportedImageError, match="Breast Projection X-Ray: the projections"):
            read_image(p)


# ---------------------------------------------------------------- folders


def test_series_folder_sorted(tmp_path, volume):
    folder = tmp_path / "series"
    make_series(folder, volume, bits_stored=BITS, slice_spacing=1.25, pixel_spacing=(0.1, 0.1))
    img = read_image(folder)
    np.testing.assert_array_equal(img.pixels, volume)
    assert img.spacing_mm == pytest.approx((1.25, 0.1, 0.1))
    assert img.metadata["source_path"] == os.fspath(folder)
    assert len(img.metadata["sop_instance_uids"]) == 5
    # find_inputs keeps a volume folder as one input
    assert find_inputs([folder]) == [os.fspath(folder)]


def test_series_folder_by_instance_number(tmp_path, volume):
    folder = tmp_path / "series_in"
    make_series(folder, volume, bits_stored=BITS, with_positions=False, slice_thickness=2.0)
    img = read_image(folder)
    np.testing.assert_array_equal(img.pixels, volume)
    assert img.spacing_mm == pytest.approx((2.0, 0.1, 0.1))


def test_folder_single_image(tmp_path, mammo):
    folder = tmp_path / "one"
    folder.mkdir()
    make_mammo_dicom(folder / "IMG", mammo, bits_stored=BITS)
    (folder / "notes.txt").write_text("hello")
    np.testing.assert_array_equal(read_image(folder).pixels, mammo)


def test_folder_mixed_series_refused(tmp_path, mammo):
    folder = tmp_path / "mixed"
    folder.mkdir()
    make_mammo_dicom(folder / "a", mammo, bits_stored=BITS)
    make_mammo_dicom(folder / "b", mammo, bits_stored=BITS)  # another series UID
    with pytest.raises(UnsupportedImageError, match="2 DICOM series") as exc:
        read_image(folder)
    assert os.fspath(folder) in str(exc.value)


def test_folder_four_views_not_stacked(tmp_path, mammo):
    folder = tmp_path / "views"
    folder.mkdir()
    uid = "1.2.826.0.1.3680043.8.498.1"
    for i, (lat, view) in enumerate([("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]):
        make_mammo_dicom(folder / f"v{i}", mammo, bits_stored=BITS, laterality=lat, view=view,
                         series_uid=uid, instance_number=i + 1)
    with pytest.raises(UnsupportedImageError, match="do not form a volume"):
        read_image(folder)
    # the CLI expansion yields the four images separately
    assert find_inputs([folder]) == sorted(os.fspath(folder / f"v{i}") for i in range(4))
    # still so when each view carries an ImagePositionPatient
    import pydicom

    for i in range(4):
        ds = pydicom.dcmread(folder / f"v{i}")
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.save_as(folder / f"v{i}")
    assert find_inputs([folder]) == sorted(os.fspath(folder / f"v{i}") for i in range(4))


def test_slices_that_do_not_stack_are_one_failed_input(tmp_path, volume):
    """A series folder with one odd slice was detected as N separate 2-D
    images, silently (opening the folder said why it is not a volume)."""
    import pydicom

    folder = tmp_path / "dbt"
    files = make_series(folder, volume)
    ds = pydicom.dcmread(files[3])
    ds.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient
    ds.save_as(files[3])
    assert find_inputs([folder]) == [os.fspath(folder)]
    with pytest.raises(UnsupportedImageError, match=r"dbt: folder holds 5 images of one series that do not "
                                                    r"form a volume \(two images at the same position\)"):
        read_image(folder)


def test_modality_lut_sequence(tmp_path, mammo):
    """A Modality LUT Sequence is applied (pydicom) and sets the inversion range."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", [2 * i + 100 for i in range(4096)])
    item.ModalityLUTType = "US"
    p = tmp_path / "mlut"
    make_mammo_dicom(p, mammo, bits_stored=BITS, extra={"ModalityLUTSequence": Sequence([item])})
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, 2 * mammo.astype(np.int64) + 100)
    assert img.metadata["intensity_transforms"] == ["modality_lut"]
    q = tmp_path / "mlut1"
    make_mammo_dicom(q, mammo, bits_stored=BITS, photometric="MONOCHROME1",
                     extra={"ModalityLUTSequence": Sequence([item])})
    inv = read_image(q)
    np.testing.assert_array_equal(inv.pixels, (100 + 8290) - (2 * mammo.astype(np.int64) + 100))


def test_signed_monochrome1(tmp_path):
    rng = np.random.default_rng(2)
    dense_bright = rng.integers(-2048, 2048, size=(32, 40)).astype(np.int16)
    stored = (-1 - dense_bright.astype(np.int32)).astype(np.int16)  # lo + hi - x with [-2048, 2047]
    p = tmp_path / "signed_m1"
    make_mammo_dicom(p, stored, photometric="MONOCHROME1", bits_stored=12)
    img = read_image(p)
    assert img.pixels.dtype == np.int16
    np.testing.assert_array_equal(img.pixels, dense_bright)


def test_find_inputs_mixed_tree(tmp_path, mammo, volume):
    import tifffile

    make_mammo_dicom(tmp_path / "a_mammo", mammo, bits_stored=BITS)
    tifffile.imwrite(tmp_path / "b.tif", mammo)
    (tmp_path / "c.txt").write_text("notes")
    make_series(tmp_path / "sub" / "slices", volume, bits_stored=BITS)
    make_tomo_dicom(tmp_path / "sub" / "tomo.dcm", volume)
    got = find_inputs([tmp_path])
    assert got == [os.fspath(tmp_path / "a_mammo"), os.fspath(tmp_path / "b.tif"),
                   os.fspath(tmp_path / "sub" / "tomo.dcm"), os.fspath(tmp_path / "sub" / "slices")]
    assert find_inputs([tmp_path], recursive=False) == got[:2]
    # duplicates removed, explicit files kept in order
    assert find_inputs([tmp_path / "b.tif", tmp_path / "b.tif", tmp_path / "c.txt"]) == [
        os.fspath(tmp_path / "b.tif"), os.fspath(tmp_path / "c.txt")]


def test_jpeg_extended_12bit(tmp_path):
    if not can_encode("jpeg_extended"):
        pytest.skip("no 12-bit JPEG encoder (imagecodecs)")
    yy, xx = np.mgrid[0:64, 0:64]
    img12 = (500 + 40 * xx + 10 * yy).astype(np.uint16)
    p = tmp_path / "jpg12"
    make_mammo_dicom(p, img12, bits_stored=12, transfer_syntax="jpeg_extended")
    out = read_image(p)
    assert out.metadata["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.51"
    assert np.abs(out.pixels.astype(int) - img12).max() <= 16


def test_voi_lut_sequence_kept_as_window_only(tmp_path, mammo):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [1024, 500, 8]
    item.add_new(0x00283006, "US", [i // 4 for i in range(1024)])
    p = tmp_path / "voilut"
    make_mammo_dicom(p, mammo, bits_stored=BITS, extra={"VOILUTSequence": Sequence([item])})
    img = read_image(p)
    np.testing.assert_array_equal(img.pixels, mammo)  # never applied
    assert img.metadata["voi_window"] == (500 + 1023 / 2, 1024.0)


def test_stack_without_any_spacing_asks_for_all_three():
    """It said "give it in mm (--spacing)", and one value was then refused."""
    import napari_calc
    from napari_calc.core.errors import MissingSpacingError
    from napari_calc.core.image import MammoImage

    img = MammoImage(pixels=np.zeros((3, 40, 40), np.uint16), spacing_mm=None, metadata={"source_path": "s.tif"})
    with pytest.raises(MissingSpacingError, match=r"s\.tif: the pixel and slice spacings are unknown; "
                                                  r"give all three in mm, slice first"):
        napari_calc.detect(img)


def _z(*zs):
    return [(0.0, 0.0, float(z)) for z in zs]


@pytest.mark.parametrize("zs, declared, message", [
    ((0, 1, 2, 4, 5), 1.0, r"not evenly spaced \(1 to 2 mm apart: a missing slice\?\)"),
    ((0, 1, 2, 3.5, 4.5), None, r"not evenly spaced \(1 to 1\.5 mm apart"),
    ((0, 2, 1, 3, 4), 1.0, r"not in slice order"),
    ((0, 1, 1, 2, 3), None, r"two slices of the stack are at the same position"),
    ((0, 0.5, 1, 1.5, 2), 1.0, r"SpacingBetweenSlices \(1 mm\) disagrees with the slice positions \(0\.5 mm apart\)"),
], ids=["gap", "uneven", "shuffled", "duplicate", "conflict"])
def test_stack_geometry_that_one_slice_spacing_cannot_describe_is_refused(tmp_path, volume, zs, declared,
                                                                           message):
    """z_mm was slice x (median step) while the Slicer markups followed the
    positions: the outputs disagreed by up to a slice, silently."""
    p = tmp_path / "odd.dcm"
    make_tomo_dicom(p, volume, bits_stored=BITS, spacing_between_slices=declared, positions=_z(*zs))
    with pytest.raises(UnsupportedImageError, match=r"odd\.dcm: .*" + message) as info:
        read_image(p)
    assert "\n" not in str(info.value)
    # the user may still choose one spacing: then the markups step by it too
    img = read_image(p, spacing_mm=(2.0, 0.1, 0.1))
    from napari_calc.core.export.slicer_markups import pixel_to_lps

    lps = pixel_to_lps([0, 0, 0], [0, 0, 0], [0, 1, 3], img.metadata, img.spacing_mm)
    np.testing.assert_allclose(np.diff(lps[:, 2]), [2.0, 4.0])


def test_even_stacks_and_positions_that_do_not_vary_are_read(tmp_path, volume):
    # DS rounding of a few hundredths: still even; reversed order: even
    for zs in ((0, 1.02, 1.98, 3.01, 4), (4, 3, 2, 1, 0)):
        p = tmp_path / "even.dcm"
        make_tomo_dicom(p, volume, bits_stored=BITS, spacing_between_slices=1.0, positions=_z(*zs))
        assert read_image(p).spacing_mm[0] == pytest.approx(1.0)
    # every frame at one position (no slice information): the declared spacing,
    # and the markups step along the normal by it
    p = tmp_path / "flat.dcm"
    make_tomo_dicom(p, volume, bits_stored=BITS, spacing_between_slices=1.5, positions=_z(7, 7, 7, 7, 7))
    img = read_image(p)
    assert img.spacing_mm[0] == pytest.approx(1.5)
    from napari_calc.core.export.slicer_markups import pixel_to_lps

    lps = pixel_to_lps([0, 0], [0, 0], [0, 2], img.metadata, img.spacing_mm)
    assert abs(lps[1, 2] - lps[0, 2]) == pytest.approx(3.0)


def test_series_with_a_missing_slice_is_refused(tmp_path, volume):
    folder = tmp_path / "series"
    files = make_series(folder, volume, modality="MG")
    os.remove(files[2])
    with pytest.raises(UnsupportedImageError, match="series: the slices are not evenly spaced"):
        read_image(folder)


def test_frames_with_different_pixel_spacings_are_refused(tmp_path, volume):
    """Frame 1's spacing was used for all, silently."""
    import pydicom

    p = tmp_path / "pf.dcm"
    make_tomo_dicom(p, volume, bits_stored=BITS, per_frame_pixel_measures=True)
    assert read_image(p).spacing_mm == pytest.approx((1.0, 0.1, 0.1))  # the same in every frame: fine
    ds = pydicom.dcmread(p)
    for item in ds.PerFrameFunctionalGroupsSequence[3:]:
        item.PixelMeasuresSequence[0].PixelSpacing = [0.2, 0.2]
    ds.save_as(p)
    with pytest.raises(UnsupportedImageError, match=r"pf\.dcm: the frames have different pixel spacings "
                                                    r"\(0\.1 to 0\.2 mm\)"):
        read_image(p)
    assert read_image(p, spacing_mm=(1.0, 0.1, 0.1)).spacing_mm == (1.0, 0.1, 0.1)  # the user decides


def test_a_symlink_loop_in_a_folder_is_followed_once(tmp_path, mammo):
    """`ln -s .. data/sub/loop` made every image count again at
    loop/sub/loop/..., until the names grew too long."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    make_mammo_dicom(data / "a.dcm", mammo, bits_stored=BITS)
    make_mammo_dicom(data / "sub" / "b.dcm", mammo, bits_stored=BITS)
    (data / "sub" / "loop").symlink_to("..")
    assert find_inputs([data]) == [os.fspath(data / "a.dcm"), os.fspath(data / "sub" / "b.dcm")]
