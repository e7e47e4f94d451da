"""Breast mask: the C block mean and the broadcast upsampling give exactly
the mask of the plain NumPy/SciPy formulation (kept here as the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_calc.core.mask import block_mean, breast_mask, otsu_threshold


def ref_breast_mask(pixels, spacing_mm, *, skin_margin_mm=1.5, work_mm=1.0):
    """The mask by numpy mean of reshaped blocks and np.repeat upsampling."""
    pixels = np.asarray(pixels)
    sy, sx = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    fy = max(1, int(round(work_mm / sy)))
    fx = max(1, int(round(work_mm / sx)))
    h, w = pixels.shape
    hh, ww = h // fy, w // fx
    full = np.ones((h, w), dtype=bool)
    if hh < 4 or ww < 4:
        return full
    small = pixels[: hh * fy, : ww * fx].reshape(hh, fy, ww, fx).mean(axis=(1, 3), dtype=np.float64)
    thr = otsu_threshold(small)
    tissue = small > thr
    frac_air = 1.0 - tissue.mean()
    if frac_air < 0.03 or frac_air > 0.97:
        return full
    labels, n = ndi.label(tissue)
    if n == 0:
        return full
    sizes = ndi.sum_labels(tissue, labels, index=np.arange(1, n + 1))
    tissue = labels == (1 + int(np.argmax(sizes)))
    tissue = ndi.binary_fill_holes(tissue)
    margin = int(round(skin_margin_mm / work_mm))
    if margin > 0:
        tissue = ndi.binary_erosion(np.pad(tissue, margin, mode="edge"), iterations=margin)[
            margin:-margin, margin:-margin]
    up = np.repeat(np.repeat(tissue, fy, axis=0), fx, axis=1)
    out = np.zeros((h, w), dtype=bool)
    out[: up.shape[0], : up.shape[1]] = up
    if up.shape[0] < h:
        out[up.shape[0]:, : up.shape[1]] = up[-1:, :]
    if up.shape[1] < w:
        out[:, up.shape[1]:] = out[:, up.shape[1] - 1: up.shape[1]]
    return out


@pytest.fixture(scope="module")
def phantom():
    from napari_calc.core.phantom import make_phantom

    return np.ascontiguousarray(make_phantom(seed=7, spacing_mm=0.25, shape=(403, 331)).image.pixels)


@pytest.mark.parametrize("spacing", [0.25, 0.1, (0.25, 0.2), 0.07])
def test_mask_identical_to_reference(phantom, spacing):
    for img in (phantom, phantom[:-3, :-5].copy(), phantom.astype(np.float32), phantom.astype(np.float64),
                phantom[:, ::-1]):   # a non-contiguous view goes to NumPy
        got = breast_mask(img, spacing)
        ref = ref_breast_mask(img, spacing)
        assert got.dtype == bool and got.shape == img.shape and got.flags.c_contiguous
        np.testing.assert_array_equal(got, ref)
    assert 0.1 < breast_mask(phantom, spacing).mean() < 0.95   # air and skin band excluded


def test_mask_margins_and_threads(phantom):
    for margin in (0.0, 1.5, 4.0):
        np.testing.assert_array_equal(breast_mask(phantom, 0.25, skin_margin_mm=margin),
                                      ref_breast_mask(phantom, 0.25, skin_margin_mm=margin))
    np.testing.assert_array_equal(breast_mask(phantom, 0.25, n_threads=1),
                                  breast_mask(phantom, 0.25, n_threads=2))


def test_mask_whole_image_cases(phantom):
    inside = np.full((100, 120), 1000, np.uint16)   # almost no air: everything kept
    inside[:8, :8] = 0
    assert breast_mask(inside, 0.5).all() and ref_breast_mask(inside, 0.5).all()
    crop = phantom[150:250, 50:150].copy()
    np.testing.assert_array_equal(breast_mask(crop, 0.25), ref_breast_mask(crop, 0.25))
    tiny = phantom[:10, :10].copy()            # smaller than 4 working pixels
    assert breast_mask(tiny, 0.25).all()


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64, np.uint8])
def test_block_mean_matches_numpy_reshape(phantom, dtype):
    img = phantom.astype(dtype)
    for fy, fx in ((4, 4), (7, 3), (1, 1), (403, 331), (404, 2)):
        hh, ww = img.shape[0] // fy, img.shape[1] // fx
        ref = img[: hh * fy, : ww * fx].reshape(hh, fy, ww, fx).mean(axis=(1, 3), dtype=np.float64)
        got = block_mean(img, fy, fx)
        assert got.shape == ref.shape
        if dtype == np.float32:
            np.testing.assert_allclose(got, ref, rtol=1e-12)
        else:
            np.testing.assert_array_equal(got, ref)


def test_fill_holes_and_erosion_match_scipy():
    """The labelling hole fill and the distance-transform erosion used by
    breast_mask are SciPy's binary_fill_holes and iterated binary_erosion."""
    from napari_calc.core.mask import _erode_diamond, _fill_holes

    rng = np.random.default_rng(0)
    for t in range(120):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        a = rng.random((h, w)) > rng.uniform(0.05, 0.9)
        if t % 2 and min(h, w) > 2:
            a = ndi.binary_opening(a)
        np.testing.assert_array_equal(_fill_holes(a), ndi.binary_fill_holes(a))
        for n in (1, 2, 3, 5):
            np.testing.assert_array_equal(_erode_diamond(a, n), ndi.binary_erosion(a, iterations=n))
    for shape in ((1, 1), (3, 7), (20, 20)):
        ones = np.ones(shape, bool)
        for n in (1, 2, 4):
            np.testing.assert_array_equal(_erode_diamond(ones, n), ndi.binary_erosion(ones, iterations=n))


def _working_resolution_cases(phantom):
    """Images and spacings for the 1 mm mask's box and extents: any block
    size, rows and columns left over, whole-image cases."""
    return [(phantom, 0.25), (phantom[:-3, :-5].copy(), 0.1), (phantom[:, ::-1], (0.25, 0.2)),
            (phantom[150:250, 50:150].copy(), 0.25), (phantom[:10, :10].copy(), 0.25),
            (phantom[:, 200:].copy(), 0.07), (phantom[300:, :].copy(), 0.13),
            # cut through the breast, with rows / columns left over by the blocks
            (phantom[:250].copy(), 0.25), (phantom[:, :203].copy(), 0.25), (phantom[:, 130:].copy(), 0.25)]


def test_mask_bbox_from_working_resolution_is_the_full_size_masks(phantom):
    """breast_mask_and_bbox's box (from the 1 mm mask) is the bounding box
    of the full-size mask, whatever the block size, the leftover rows and
    columns, the margins and the whole-image cases."""
    import sys

    from napari_calc.core.mask import breast_mask_and_bbox

    mask_bbox = sys.modules["napari_calc.core.detect"]._mask_bbox
    seen_partial = 0
    for img, sp in _working_resolution_cases(phantom):
        for margin in (0.0, 1.5, 4.0):
            mask, bbox = breast_mask_and_bbox(img, sp, skin_margin_mm=margin)
            np.testing.assert_array_equal(mask, breast_mask(img, sp, skin_margin_mm=margin))
            assert bbox == mask_bbox(mask)
            seen_partial += bbox is not None and bbox != (0, img.shape[0], 0, img.shape[1])
    assert seen_partial >= 3   # the box is not just the whole image
    # a strip of tissue 4 px wide, eroded away: empty mask, no box
    blob = np.zeros((60, 60), np.uint16)
    blob[28:32] = 1000
    mask, bbox = breast_mask_and_bbox(blob, 1.0, skin_margin_mm=3.0)
    assert not mask.any() and bbox is None


def test_mask_row_extents_from_working_resolution_are_the_full_size_masks(phantom):
    """breast_mask_parts's row extents (from the 1 mm mask) are each row's
    first and one-past-last masked column of the full-size mask ((0, 0)
    for an empty row), in the same cases as the box."""
    from napari_calc.core.mask import breast_mask_parts

    def ref(mask):
        has = mask.any(axis=1)
        return (np.where(has, mask.argmax(axis=1), 0),
                np.where(has, mask.shape[1] - mask[:, ::-1].argmax(axis=1), 0))

    seen_ragged = 0
    for img, sp in _working_resolution_cases(phantom):
        for margin in (0.0, 1.5, 4.0):
            mask, bbox, (lo, hi) = breast_mask_parts(img, sp, skin_margin_mm=margin)
            rlo, rhi = ref(mask)
            np.testing.assert_array_equal(lo, rlo)
            np.testing.assert_array_equal(hi, rhi)
            assert lo.dtype == hi.dtype == np.int32
            seen_ragged += len(set(zip(lo.tolist(), hi.tolist()))) > 3
    assert seen_ragged >= 3  # rows of the breast's curved edge, not just boxes
    blob = np.zeros((60, 60), np.uint16)
    blob[28:32] = 1000
    mask, bbox, (lo, hi) = breast_mask_parts(blob, 1.0, skin_margin_mm=3.0)
    assert not lo.any() and not hi.any()


def test_block_mask_is_the_upscaled_mask(phantom):
    """breast_mask_blocks's BlockMask: made in full, the mask of
    breast_mask_parts (whole-image cases included); sampled at every k-th
    row and column from any start, the same pixels of it."""
    from napari_calc.core.mask import BlockMask, breast_mask_blocks, breast_mask_parts

    for img, sp in _working_resolution_cases(phantom) + [(phantom[:0, :5], 0.1)]:
        blocks, bbox, ext = breast_mask_blocks(img, sp, skin_margin_mm=1.5)
        mask, bbox2, ext2 = breast_mask_parts(img, sp, skin_margin_mm=1.5)
        assert isinstance(blocks, BlockMask) and blocks.shape == img.shape
        assert bbox == bbox2
        np.testing.assert_array_equal(ext[0], ext2[0])
        full = blocks.full()
        assert full.dtype == bool and full.shape == img.shape
        np.testing.assert_array_equal(full, mask)
        for rs, cs in [(slice(1, -1, 3), slice(1, -1, 5)), (slice(None), slice(None)), (slice(2, 9, 1), slice(0, 0))]:
            got = blocks.sample(rs, cs)
            assert got.flags.c_contiguous
            np.testing.assert_array_equal(got, mask[rs, cs])


@pytest.mark.parametrize("kernel", [True, False])
def test_noise_level_function_same_with_the_block_mask(phantom, monkeypatch, kernel):
    import importlib

    from napari_calc.core.mask import breast_mask_blocks

    S = importlib.import_module("napari_calc.core.score")
    monkeypatch.setattr(S, "_NLF_KERNEL", kernel)
    img = phantom
    blocks, _, _ = breast_mask_blocks(img, 0.25, skin_margin_mm=1.5)
    for kw in (dict(), dict(max_samples=5000)):
        for a, b in zip(S.noise_level_function(img, blocks, **kw), S.noise_level_function(img, blocks.full(), **kw)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
def test_breast_blocks_on_threads_is_the_numpy_code(monkeypatch, spy, n_threads):
    """From 16384 blocks (a full-field image's 1 mm grid has about 69,000)
    ``_kernel.breast_blocks`` takes the threshold's extremes, histogram and
    count on contiguous parts of the grid, one a thread: the working mask,
    box and row extents stay the NumPy/SciPy code's at any thread count
    (grids of 130-220 blocks a side, a disc of tissue in air, noise,
    blocks on the threshold itself)."""
    import importlib

    from napari_calc import _kernel

    M = importlib.import_module("napari_calc.core.mask")
    rng = np.random.default_rng(100 + n_threads)
    calls = spy(_kernel, "breast_blocks")
    for case in range(8):
        hh, ww = (int(v) for v in rng.integers(130, 221, 2))
        f = 1 + case % 2
        yy, xx = np.mgrid[:hh, :ww]
        disc = np.hypot(yy - rng.uniform(0, 1) * hh, xx - rng.uniform(0, 1) * ww) < rng.uniform(0.3, 1.2) * hh
        if case % 2:
            grid = np.where(disc, 1000, 100) + rng.integers(0, 300, (hh, ww))
        else:   # values 0-512: blocks on the threshold itself
            grid = np.where(disc, 300, 0) + rng.integers(0, 213, (hh, ww))
            grid.flat[[0, -1]] = 0, 512
        img = np.repeat(np.repeat(grid, f, axis=0), f, axis=1).astype(np.uint16)
        assert hh * ww >= 16384
        monkeypatch.setattr(M, "_MASK_KERNEL", True)
        got = M.breast_mask_blocks(img, 1.0 / f, skin_margin_mm=2.0, n_threads=n_threads)
        monkeypatch.setattr(M, "_MASK_KERNEL", False)
        want = M.breast_mask_blocks(img, 1.0 / f, skin_margin_mm=2.0)
        np.testing.assert_array_equal(got[0].tissue, want[0].tissue)
        assert got[1] == want[1] and got[1] is not None
        for a, b in zip(got[2], want[2]):
            np.testing.assert_array_equal(a, b)
    assert len(calls) == 8 and all(a[-1] == n_threads for a in calls)


def test_breast_blocks_in_c_is_the_numpy_code(monkeypatch, spy):
    """breast_mask_blocks's steps after the block means in one C call
    (``_kernel.breast_blocks``) give the NumPy/SciPy code's working mask,
    box and row extents: a disc of tissue in air at random places and
    sizes (air fractions from almost none to almost all, so the whole-image
    cases too), noise, blocks of 1-4 pixels with rows and columns left
    over, blocks on the threshold itself, margins 0-5 (masks eroded away
    included); a NaN block mean is left to the NumPy code."""
    import importlib

    from napari_calc import _kernel

    M = importlib.import_module("napari_calc.core.mask")
    rng = np.random.default_rng(21)
    calls = spy(_kernel, "breast_blocks")
    kinds = {"whole": 0, "mask": 0, "empty": 0}
    for case in range(150):
        hh, ww = (int(v) for v in rng.integers(4, 36, 2))
        fy, fx = (int(v) for v in rng.integers(1, 5, 2))
        yy, xx = np.mgrid[:hh, :ww]
        # (the centre up to half a side outside: the disc also widens towards an edge)
        disc = np.hypot(yy - rng.uniform(-0.5, 1.5) * hh, xx - rng.uniform(-0.5, 1.5) * ww) < rng.uniform(0, hh + ww)
        if case % 2:
            grid = np.where(disc, 1000, 100) + rng.integers(0, 300, (hh, ww))
        else:   # values 0-512: Otsu's bin centres are the odd integers, so blocks on the threshold itself
            grid = np.where(disc, 300, 0) + rng.integers(0, 213, (hh, ww))
            grid.flat[[0, -1]] = 0, 512
        if case % 15 < 2 and hh * ww >= 40:   # one air block in tissue or one tissue block in air: the whole image
            grid = (100 if case % 15 else 1000) + rng.integers(0, 30, (hh, ww))
            grid.flat[rng.integers(hh * ww)] = 1000 if case % 15 else 100
        img = np.repeat(np.repeat(grid, fy, axis=0), fx, axis=1).astype(np.uint16)   # block means: grid
        img = np.pad(img, ((0, int(rng.integers(0, fy))), (0, int(rng.integers(0, fx)))), mode="reflect")
        margin = float(rng.integers(0, 6))
        args = (img, (1.0 / fy, 1.0 / fx))
        monkeypatch.setattr(M, "_MASK_KERNEL", True)
        got = M.breast_mask_blocks(*args, skin_margin_mm=margin)
        monkeypatch.setattr(M, "_MASK_KERNEL", False)
        want = M.breast_mask_blocks(*args, skin_margin_mm=margin)
        assert (got[0].fy, got[0].fx, got[0].shape) == (want[0].fy, want[0].fx, want[0].shape)
        assert got[0].shape == img.shape
        np.testing.assert_array_equal(got[0].tissue, want[0].tissue)
        assert got[0].tissue.dtype == bool
        assert got[1] == want[1]
        for a, b in zip(got[2], want[2]):
            assert a.dtype == np.int32 and a.shape == (img.shape[0],)
            np.testing.assert_array_equal(a, b)
        kinds["whole" if got[0].tissue.all() and got[1] == (0, img.shape[0], 0, img.shape[1])
              else "empty" if got[1] is None else "mask"] += 1
    assert len(calls) == 150
    assert min(kinds.values()) >= 10, kinds
    # a NaN block mean: the kernel refuses it, and the NumPy code decides
    img = np.full((40, 40), 100, np.float32)
    img[10:30, 10:30] = 1000
    with pytest.raises(ValueError):
        _kernel.breast_blocks(M.block_mean(np.where(img == 100, np.nan, img).astype(np.float32), 1, 1),
                              256, 0.03, 0.97, 1, 1, 1, 40, 40)
    with pytest.raises(ValueError):
        _kernel.breast_blocks(np.ones((4, 4)), 256, 0.03, 0.97, 1, 2, 2, 7, 8)   # fewer rows than the blocks
    img[0, 0] = np.nan
    monkeypatch.setattr(M, "_MASK_KERNEL", True)
    with pytest.raises(ValueError):   # NumPy's histogram refuses a NaN range, as before the kernel
        M.breast_mask_blocks(img, 1.0)
    monkeypatch.setattr(M, "_MASK_KERNEL", False)
    with pytest.raises(ValueError):
        M.breast_mask_blocks(img, 1.0)
