"""Float images in any unit: the same detections whatever the scale.

A float image whose values were tiny (a maximum of 1e-4, say, with a noise
of 1e-6) gave no detections at all, silently: the model's small-noise
guards (1e-6 of a grey level) swamped the image's own noise. One near
float32's largest value gave none either, with NumPy overflow warnings.
``detect`` now scales such an image by a power of two, which is exact, and
scales its intensity measurements back.
"""

import importlib
import warnings

import numpy as np
import pytest

import napari_calc
from napari_calc.core.detect import FLOAT_RANGE, _INTENSITY_KEYS
from napari_calc.core.errors import UnsupportedImageError
from napari_calc.core.phantom import make_phantom

SP = 0.1


@pytest.fixture(scope="module")
def base():
    """The phantom's grey levels as float32 (whole numbers up to 2983)."""
    px = make_phantom(seed=3).image.pixels.astype(np.float32)
    assert 2.0 ** 11 <= px.max() < 2.0 ** 12  # the references below rely on it
    return px


@pytest.fixture(scope="module")
def ref16(base):
    """Detections on base * 16: in range, so detected as it is; every image
    below is scaled into [2**15, 2**16) and so becomes exactly this one."""
    return napari_calc.detect(base * np.float32(16), SP)


def _quiet_detect(img, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings either
        return napari_calc.detect(img, None if hasattr(img, "spacing_mm") else SP, **kw)


def _assert_scaled(det, ref, k):
    """``det`` is ``ref`` with every grey-level measurement times 2**k, bit
    for bit, and every other value the same."""
    assert len(ref.calcifications) > 20  # a real comparison
    for table, other in ((det.calcifications, ref.calcifications), (det.extra, ref.extra)):
        assert list(table.columns) == list(other.columns)
        for col in table.columns:
            want = other[col].to_numpy()
            if col in _INTENSITY_KEYS:
                want = np.ldexp(want, k)
            np.testing.assert_array_equal(table[col].to_numpy(), want, err_msg=col)
    assert det.clusters.equals(ref.clusters)


@pytest.mark.parametrize("k", [-130, -60, -24, 70, 115])
def test_float32_at_any_scale(base, ref16, k):
    # k = -24: maximum 1.8e-4, noise about 1e-6 (it found 36 of 44, and 0 from k = -28)
    # k = -130: subnormal float32, still exact for these whole numbers
    # k = 115: maximum 1.2e38 (near float32's largest: the DoG overflowed)
    det = _quiet_detect(np.ldexp(base, k))
    _assert_scaled(det, ref16, k - 4)


@pytest.mark.parametrize("k", [-900, -600, 600, 900])
def test_float64_beyond_float32s_range(base, ref16, k):
    # 1e-300 became 0 and 1e300 infinite in the conversion to float32
    det = _quiet_detect(np.ldexp(base.astype(np.float64), k))
    _assert_scaled(det, ref16, k - 4)


def test_near_float32_max_not_a_power_of_two(base):
    # 1.5 * whole numbers is exact: the image is base * 12 scaled by 2**112
    assert 2.0 ** 12 <= 1.5 * base.max() < 2.0 ** 13
    img = base * np.float32(1.5) * np.float32(2.0 ** 115)
    assert img.max() > 1.8e38
    _assert_scaled(_quiet_detect(img), napari_calc.detect(base * np.float32(12), SP), 112)


def test_float16(base):
    h = np.ldexp(base, -14).astype(np.float16)  # largest 0.182 (11-bit significand: rounded)
    want = napari_calc.detect(np.ldexp(h.astype(np.float32), 18), SP)
    _assert_scaled(_quiet_detect(h), want, -18)


def test_in_range_is_detected_as_given(base, ref16):
    # the premise: scaling by a power of two inside the range changes nothing
    assert FLOAT_RANGE[0] <= base.max() and base.max() * 16 <= FLOAT_RANGE[1]
    _assert_scaled(napari_calc.detect(base, SP), ref16, -4)
    # and a plain uint16 image is the same as its float32 copy
    assert napari_calc.detect(base.astype(np.uint16), SP).calcifications.equals(
        napari_calc.detect(base, SP).calcifications)


def test_stack_and_mask(base):
    vol = np.stack([base, base[:, ::-1]])
    mask = np.zeros(base.shape, bool)
    mask[100:-100, 100:-100] = True
    sp3 = (1.0, SP, SP)
    ref = napari_calc.detect(vol * np.float32(16), sp3, mask=mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det = napari_calc.detect(np.ldexp(vol, -40), sp3, mask=mask)
    assert len(ref.calcifications) > 20 and set(ref.calcifications["slice"]) == {0, 1}
    _assert_scaled(det, ref, -44)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nan_and_infinity_refused(base, bad, dtype):
    img = base.astype(dtype)
    img[500, 400] = bad
    with pytest.raises(UnsupportedImageError, match="image contains NaN or infinite values"):
        napari_calc.detect(img, SP)


def test_all_zero_float_image():
    det = _quiet_detect(np.zeros((300, 300), np.float32))
    assert len(det.calcifications) == 0 and len(det.clusters) == 0


def test_for_processing_log_values_detect_as_before(tmp_path, monkeypatch):
    """A "for processing" DICOM is read as log attenuation (float32, here
    0 to about 1.6): now scaled by 2**15 for detection, it gives the very
    tables it gave unscaled (nothing there was near the small-noise
    guards), contrast in the log unit."""
    from dicom_factory import make_mammo_dicom

    from napari_calc.core.read import read_image

    D = importlib.import_module("napari_calc.core.detect")  # (the package exports the function)

    raw = make_phantom(seed=3).image.pixels.astype(np.float64)
    signal = (12000 * np.exp(-raw / 2000.0)).astype(np.uint16)  # dense: less signal
    make_mammo_dicom(tmp_path / "fp.dcm", signal, bits_stored=14, presentation_intent="FOR PROCESSING",
                     pixel_intensity_relationship="LIN", pixel_intensity_relationship_sign=1,
                     imager_pixel_spacing=(0.1, 0.1))
    img = read_image(tmp_path / "fp.dcm")
    assert img.pixels.dtype == np.float32 and 1.0 < img.pixels.max() < FLOAT_RANGE[0]
    scaled = _quiet_detect(img)
    monkeypatch.setattr(D, "FLOAT_RANGE", (0.0, np.inf))  # the unscaled path
    unscaled = napari_calc.detect(img)
    assert len(scaled.calcifications) > 20
    for f in ("calcifications", "clusters", "extra"):
        assert getattr(scaled, f).equals(getattr(unscaled, f)), f
