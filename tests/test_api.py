"""The public Python API of INTERFACE.md: names, types and columns."""

import re

import numpy as np
import pandas as pd
import pytest

import napari_calc
from napari_calc.core.columns import CALC_COLUMNS, CLUSTER_COLUMNS
from napari_calc.core.errors import InvalidParameterError, MissingSpacingError, UnsupportedImageError
from napari_calc.core.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=3)


def test_top_level_names():
    for name in ("read_image", "detect", "Detections", "MammoImage", "__version__"):
        assert hasattr(napari_calc, name)


def test_detect_columns_exact(phantom):
    det = napari_calc.detect(phantom.image)
    assert list(det.calcifications.columns) == CALC_COLUMNS
    assert list(det.clusters.columns) == CLUSTER_COLUMNS
    assert len(det.calcifications) > 0 and len(det.clusters) > 0
    c = det.calcifications
    assert set(c["status"]) <= {"candidate", "accepted", "rejected", "added"}
    np.testing.assert_allclose(c["y_mm"], c["row"] * phantom.image.spacing_mm[0])
    np.testing.assert_allclose(c["x_mm"], c["col"] * phantom.image.spacing_mm[1])
    assert ((c["cluster_id"] == -1) | c["cluster_id"].isin(det.clusters["cluster_id"])).all()
    assert (det.clusters["n_calcifications"] >= 3).all()
    assert c["diameter_mm"].between(0.1, 1.0).all()


def test_bare_array_equals_mammo_image(phantom):
    a = napari_calc.detect(phantom.image)
    b = napari_calc.detect(np.asarray(phantom.image.pixels), spacing_mm=phantom.image.spacing_mm)
    c = napari_calc.detect(np.asarray(phantom.image.pixels), spacing_mm=phantom.image.spacing_mm[0])
    pd.testing.assert_frame_equal(a.calcifications, b.calcifications)
    pd.testing.assert_frame_equal(a.calcifications, c.calcifications)


def test_scales_follow_spacing_not_pixels():
    """The same physical blob is found with the same diameter at two spacings."""
    from scipy import ndimage as ndi

    out = []
    for sp in (0.05, 0.1):
        n = int(round(20 / sp))
        img = np.full((n, n), 1000.0, np.float32)
        yy, xx = np.mgrid[:n, :n] * sp
        img += 400.0 * (((yy - 10) ** 2 + (xx - 10) ** 2) <= 0.25 ** 2)  # 0.5 mm disc
        img = ndi.gaussian_filter(img, 0.5) + np.random.default_rng(0).normal(0, 5, img.shape)
        det = napari_calc.detect(img.astype(np.float32), spacing_mm=sp, use_mask=False)
        best = det.calcifications.sort_values("score").iloc[-1]
        assert abs(best["y_mm"] - 10) <= 0.2 and abs(best["x_mm"] - 10) <= 0.2
        out.append(best["diameter_mm"])
    assert out[0] == pytest.approx(out[1], rel=0.35)


def test_spacing_required_for_bare_arrays():
    with pytest.raises(MissingSpacingError):
        napari_calc.detect(np.zeros((64, 64), np.uint16))


@pytest.mark.parametrize("shape", [(1, 1), (1, 50), (50, 1), (2, 2, 1)])
def test_too_small_or_wrong_dims(shape):
    with pytest.raises(UnsupportedImageError):
        napari_calc.detect(np.zeros(shape, np.uint16), spacing_mm=0.1)


def test_rgb_like_refused():
    with pytest.raises(UnsupportedImageError):
        napari_calc.detect(np.zeros((4, 4, 4, 3), np.uint8), spacing_mm=0.1)


@pytest.mark.parametrize("params", [dict(threshold=-1), dict(min_diameter_mm=2, max_diameter_mm=1),
                                    dict(bogus=1), dict(min_cluster_size=1),
                                    # wrong types: one clear error, not a TypeError deep inside
                                    dict(threshold="abc"), dict(threshold=float("nan")),
                                    dict(threshold=float("inf")), dict(threshold=True),
                                    dict(min_cluster_size="abc"), dict(max_candidates=1.5),
                                    dict(use_mask="maybe"), dict(use_mask=1)])
def test_bad_parameters(params):
    with pytest.raises(InvalidParameterError):
        napari_calc.detect(np.zeros((32, 32), np.uint16), spacing_mm=0.1, **params)


def test_whole_floats_are_taken_as_ints():
    det = napari_calc.detect(np.zeros((64, 64), np.uint16), spacing_mm=0.1, max_candidates=3000.0,
                             min_cluster_size=np.int64(3), use_mask=np.bool_(False))
    assert det.params["max_candidates"] == 3000 and isinstance(det.params["max_candidates"], int)


def test_constant_and_tiny_images_give_no_detections():
    # the smallest images a search at 0.1 mm takes (the DoG's largest window: 55 pixels)
    for shape in [(55, 55), (55, 300), (300, 55)]:
        det = napari_calc.detect(np.full(shape, 7, np.uint16), spacing_mm=0.1)
        assert len(det.calcifications) == 0 and len(det.clusters) == 0
        assert list(det.calcifications.columns) == CALC_COLUMNS
    # smaller ones are refused in one line, not "searched" (they gave 0 detections)
    for shape, says in [((2, 2), "2x2 pixels, too small to search for calcifications at any pixel spacing"),
                        ((3, 3), "3x3 pixels, too small to search for calcifications at any pixel spacing"),
                        ((2, 9), "2x9 pixels, too small"),
                        ((54, 300), "54x300 pixels (5.4 x 30 mm), too small to search for calcifications: "
                                    "at least 55x55 pixels (5.5 mm) at 0.1 mm per pixel")]:
        with pytest.raises(UnsupportedImageError, match=re.escape(says)):
            napari_calc.detect(np.full(shape, 7, np.uint16), spacing_mm=0.1)


def test_stack_columns_and_positions():
    ph = make_phantom(seed=5)
    vol = np.stack([ph.image.pixels] * 3)
    det = napari_calc.detect(vol, spacing_mm=(1.0,) + tuple(ph.image.spacing_mm))
    assert list(det.calcifications.columns) == ["slice", "z_mm"] + CALC_COLUMNS
    assert list(det.clusters.columns) == ["slice", "z_mm"] + CLUSTER_COLUMNS
    # identical slices: the 3-D suppression keeps one per calcification, at
    # the same places as in 2-D (every candidate kept, so that this does not
    # depend on the scores: a stack's noise-level function pools its slices)
    every = dict(keep_min_score=0.0)
    three_d = napari_calc.detect(vol, spacing_mm=(1.0,) + tuple(ph.image.spacing_mm), **every)
    two_d = napari_calc.detect(ph.image, **every)
    assert len(three_d.calcifications) == len(two_d.calcifications)
    pos3 = set(zip(three_d.calcifications["row"], three_d.calcifications["col"]))
    assert pos3 == set(zip(two_d.calcifications["row"], two_d.calcifications["col"]))
    assert (three_d.calcifications["slice"] == 0).all()  # ties go to the first slice


def test_in_plane_spacing_keeps_the_stacks_slice_spacing():
    """Giving only the in-plane spacing keeps the stack's own slice spacing
    (it was silently replaced by 1 mm); a bare stack needs all three."""
    from napari_calc.core.image import MammoImage

    ph = make_phantom(seed=5, shape=(400, 320))
    vol = np.stack([ph.image.pixels] * 3)
    img = MammoImage(pixels=vol, spacing_mm=(0.5, 0.1, 0.1), metadata={})
    for given in (0.1, (0.1, 0.1), [0.1, 0.1]):
        det = napari_calc.detect(img, spacing_mm=given, keep_min_score=0.0)
        assert det.spacing_mm == (0.5, 0.1, 0.1)
        calcs = det.calcifications
        assert len(calcs) and np.allclose(calcs["z_mm"], calcs["slice"] * 0.5)
    assert napari_calc.detect(img, spacing_mm=(0.25, 0.1, 0.1)).spacing_mm == (0.25, 0.1, 0.1)
    for given in (0.1, (0.1, 0.1)):
        with pytest.raises(MissingSpacingError, match="slice spacing of this 3-D stack is unknown"):
            napari_calc.detect(vol, spacing_mm=given)


def test_results_do_not_depend_on_thread_count(phantom):
    a = napari_calc.detect(phantom.image, n_threads=1)
    b = napari_calc.detect(phantom.image, n_threads=2)
    pd.testing.assert_frame_equal(a.calcifications, b.calcifications)
    pd.testing.assert_frame_equal(a.clusters, b.clusters)


def test_cancel_and_progress(phantom):
    from napari_calc.core.errors import DetectionCancelled

    seen = []
    napari_calc.detect(phantom.image, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    # a 2-D image reports each stage (it went from 0 to 0.95 in one step)
    assert [m for _, m in seen] == ["finding the breast", "filtering", "estimating the noise",
                                    "finding peaks", "measuring candidates", "measuring candidates",
                                    "clustering", "done"]
    with pytest.raises(DetectionCancelled):
        napari_calc.detect(phantom.image, cancel=lambda: True)


def test_cancel_inside_a_plane(phantom):
    """A 2-D image is cancelled between stages, not only between slices."""
    from napari_calc.core.errors import DetectionCancelled

    calls = []

    def cancel():
        calls.append(1)
        return len(calls) >= 3  # the first check is before the plane starts

    with pytest.raises(DetectionCancelled):
        napari_calc.detect(phantom.image, cancel=cancel)
    assert len(calls) == 3


def test_atomic_write_gives_usual_permissions(tmp_path):
    """Outputs are shared with colleagues: not private 0600 temp-file modes."""
    import os
    import stat

    from napari_calc.core.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.csv", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.csv").st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


def test_non_square_pixels_are_refused():
    """The filters are round in pixels: on 2:1 pixels a phantom gave ten
    times the candidates, silently. Within 5 % (scanner rounding) is fine."""
    ph = make_phantom(seed=3, shape=(300, 240))
    with pytest.raises(UnsupportedImageError, match=r"pixels are not square \(0.1 x 0.05 mm\)"):
        napari_calc.detect(ph.image.pixels, spacing_mm=(0.1, 0.05))
    with pytest.raises(UnsupportedImageError, match="not square"):
        napari_calc.detect(np.stack([ph.image.pixels] * 2), spacing_mm=(1.0, 0.1, 0.11))
    assert napari_calc.detect(ph.image.pixels, spacing_mm=(0.1, 0.104)).spacing_mm == (0.1, 0.104)


def test_colour_array_and_plain_numbers_in_messages():
    with pytest.raises(UnsupportedImageError, match=r"a colour image \(shape \(50, 60, 3\)\)"):
        napari_calc.detect(np.zeros((50, 60, 3), np.uint8), spacing_mm=0.1)
    with pytest.raises(InvalidParameterError, match=r"got 0 x 0$"):
        napari_calc.detect(np.zeros((50, 60), np.uint16), spacing_mm=0)
