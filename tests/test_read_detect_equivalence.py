"""Issue 5 acceptance: the storage of a mammogram does not change detection.

A phantom is written as DICOM in several ways (MONOCHROME2, MONOCHROME1,
JPEG 2000 lossless, RLE); reading each back and detecting must give the
same calcifications and clusters as the uncompressed MONOCHROME2 file.
"""

import numpy as np
import pandas as pd
import pytest

import napari_calc
from dicom_factory import can_encode, make_mammo_dicom, monochrome1_of
from napari_calc.core.phantom import make_phantom

BITS = 12


@pytest.fixture(scope="module")
def pixels():
    ph = make_phantom(seed=21, size_mm=(70.0, 56.0), n_clusters=1)
    p = np.asarray(ph.image.pixels)
    # 12-bit stored range, as most FFDM detectors
    p = np.clip(np.round(p.astype(np.float64) * ((2 ** BITS - 1) / max(float(p.max()), 1.0))), 0,
                2 ** BITS - 1).astype(np.uint16)
    return p


@pytest.fixture(scope="module")
def reference(pixels, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "mono2.dcm"
    make_mammo_dicom(path, pixels, bits_stored=BITS, pixel_spacing=(0.1, 0.1))
    img = napari_calc.read_image(path)
    np.testing.assert_array_equal(np.asarray(img.pixels), pixels)
    det = napari_calc.detect(img)
    assert len(det.calcifications) > 0 and len(det.clusters) > 0
    return det


def _same(a, b):
    pd.testing.assert_frame_equal(a.calcifications, b.calcifications)
    pd.testing.assert_frame_equal(a.clusters, b.clusters)


def test_monochrome1_equals_monochrome2(pixels, reference, tmp_path):
    path = tmp_path / "mono1.dcm"
    make_mammo_dicom(path, monochrome1_of(pixels, BITS), photometric="MONOCHROME1",
                     bits_stored=BITS, pixel_spacing=(0.1, 0.1))
    img = napari_calc.read_image(path)
    assert "invert_monochrome1" in img.metadata["intensity_transforms"]
    _same(napari_calc.detect(img), reference)


@pytest.mark.parametrize("syntax", ["j2k_lossless", "rle"])
def test_lossless_compression_equals_uncompressed(pixels, reference, tmp_path, syntax):
    if not can_encode(syntax):
        pytest.skip(f"no encoder for {syntax} here")
    path = tmp_path / f"{syntax}.dcm"
    make_mammo_dicom(path, pixels, bits_stored=BITS, pixel_spacing=(0.1, 0.1), transfer_syntax=syntax)
    img = napari_calc.read_image(path)
    np.testing.assert_array_equal(np.asarray(img.pixels), pixels)
    _same(napari_calc.detect(img), reference)
