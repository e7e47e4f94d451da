"""Detection on the mask's bounding box (``detect._crop_box``), with the DoG
computed only on each row's part of the mask grown by the NMS radius
(``detect._ROW_RANGES``), gives exactly what the whole-image computation
gives: the candidates and their measurements must not change by one bit."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

import napari_calc
from napari_calc import _kernel
from napari_calc.core.phantom import make_phantom

D = importlib.import_module("napari_calc.core.detect")  # the module (napari_calc.core.detect is the function)


def _assert_same(a, b):
    for x, y in ((a.calcifications, b.calcifications), (a.clusters, b.clusters), (a.extra, b.extra)):
        pd.testing.assert_frame_equal(x, y, check_exact=True)


@pytest.fixture
def crops(monkeypatch):
    """Records the crops detect takes (None: the whole image)."""
    seen = []
    real = D._crop_box

    def spy(*a, **k):
        box = real(*a, **k)
        seen.append(box)
        return box

    monkeypatch.setattr(D, "_crop_box", spy)
    return seen


def _both(monkeypatch, image, spacing, **kw):
    """detect with the crop and the row ranges, and without either (every
    candidate kept)."""
    kw.setdefault("keep_min_score", 0.0)
    cropped = napari_calc.detect(image, spacing, **kw)
    monkeypatch.setattr(D, "_CROP_TO_MASK", False)
    monkeypatch.setattr(D, "_ROW_RANGES", False)
    whole = napari_calc.detect(image, spacing, **kw)
    monkeypatch.setattr(D, "_CROP_TO_MASK", True)
    monkeypatch.setattr(D, "_ROW_RANGES", True)
    return cropped, whole


def _cropped(box, shape):
    assert box is not None
    r0, r1, c0, c1 = box
    assert 0 <= r0 < r1 <= shape[0] and 0 <= c0 < c1 <= shape[1]
    assert (r1 - r0) * (c1 - c0) < shape[0] * shape[1]


@pytest.mark.parametrize("spacing", [0.05, 0.07, 0.1, 0.14, 0.2])
def test_dog_support_bounds_where_a_crop_changes_the_response(spacing):
    # the DoG of an aligned crop equals the whole image's DoG at every pixel
    # at least _dog_support away from the crop's edges that are not image
    # edges (a rough image: noise has every frequency)
    rng = np.random.default_rng(int(spacing * 100))
    img = rng.integers(0, 4000, size=(700, 650), dtype=np.uint16)
    sig = D.dog_sigmas(spacing, 0.15, 1.0)
    plan = D._octave_plan(sig, *img.shape)
    sup = D._dog_support(plan)
    align = 2 ** (len(plan) - 1)
    full, fscale = _kernel.dog_octaves(img, sig, D.TRUNCATE, D.OCTAVE_SPLIT_SIGMA, 16, 0)
    for r0, r1, c0, c1 in [(2 * align, 700 - 37, 3 * align, 650 - 101), (0, 411, align, 650),
                           (align, 700, 0, 333)]:
        if [p[:2] for p in D._octave_plan(sig, r1 - r0, c1 - c0)] != [p[:2] for p in plan]:
            continue
        resp, scale = _kernel.dog_octaves(np.ascontiguousarray(img[r0:r1, c0:c1]), sig, D.TRUNCATE,
                                          D.OCTAVE_SPLIT_SIGMA, 16, 0)
        a = sup if r0 > 0 else 0
        b = (r1 - r0) - (sup if r1 < 700 else 0)
        c = sup if c0 > 0 else 0
        d = (c1 - c0) - (sup if c1 < 650 else 0)
        assert a < b and c < d
        np.testing.assert_array_equal(resp[a:b, c:d], full[r0 + a:r0 + b, c0 + c:c0 + d])
        np.testing.assert_array_equal(scale[a:b, c:d], fscale[r0 + a:r0 + b, c0 + c:c0 + d])
        # and the bound is needed: next to a cut edge the crop does differ
        # (the response there depends on what was cut off)
        if r0 > 0:
            assert not np.array_equal(resp[:a], full[r0:r0 + a, c0:c1])


@pytest.mark.parametrize("seed,spacing", [(0, 0.07), (1, 0.1), (2, 0.2)])
def test_crop_to_breast_is_exact_on_phantoms(monkeypatch, crops, seed, spacing):
    shape = (700, 560) if spacing < 0.1 else None
    ph = make_phantom(seed=seed, spacing_mm=spacing, shape=shape)
    cropped, whole = _both(monkeypatch, ph.image, None)
    _cropped(crops[0], ph.image.pixels.shape)
    assert len(cropped.calcifications) > 10
    _assert_same(cropped, whole)


def _blobs(shape, seed, n=40):
    """A noisy flat image with small bright blobs (candidates everywhere)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(1000.0, 20.0, size=shape)
    yy, xx = np.mgrid[-6:7, -6:7]
    spot = 300.0 * np.exp(-(yy ** 2 + xx ** 2) / (2 * 1.5 ** 2))
    for r, c in zip(rng.integers(6, shape[0] - 7, n), rng.integers(6, shape[1] - 7, n)):
        img[r - 6:r + 7, c - 6:c + 7] += spot
    return np.clip(img, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("where", ["top-right", "bottom-left", "inside"])
def test_user_mask_at_the_image_edge_and_inside(monkeypatch, crops, where):
    img = _blobs((600, 500), 3, n=120)
    mask = np.zeros(img.shape, bool)
    if where == "top-right":
        mask[:250, 300:] = True
    elif where == "bottom-left":
        mask[380:, :170] = True
    else:
        mask[200:330, 170:290] = True
    cropped, whole = _both(monkeypatch, img, 0.1, mask=mask)
    _cropped(crops[0], img.shape)
    assert len(cropped.calcifications) > 3
    _assert_same(cropped, whole)


@pytest.mark.parametrize("size", [1, 5, 20])
def test_tiny_mask(monkeypatch, crops, size):
    # too few pixels for any noise tile: the noise comes from the masked
    # pixels of the whole image sampled every 3rd row and column (the image
    # has over 9 Mpixels; the crop does not start on that grid), or, with
    # fewer than 2 such samples, from the whole image's response. A blob
    # sits in the mask, off the sampling grid.
    img = _blobs((3000, 3050), 5, n=0)
    r, c = 1001, 1501
    yy, xx = np.mgrid[-6:7, -6:7]
    img[r - 6:r + 7, c - 6:c + 7] += (3000 * np.exp(-(yy ** 2 + xx ** 2) / 4.5)).astype(np.uint16)
    mask = np.zeros(img.shape, bool)
    h = size // 2
    mask[r - h:r - h + size, c - h:c - h + size] = True
    cropped, whole = _both(monkeypatch, img, 0.07, mask=mask)
    _cropped(crops[0], img.shape)
    assert crops[0][0] % 3 and crops[0][2] % 3
    assert (r, c) in set(zip(cropped.calcifications["row"], cropped.calcifications["col"]))
    _assert_same(cropped, whole)


def test_empty_mask(monkeypatch):
    img = _blobs((300, 280), 7)
    cropped, whole = _both(monkeypatch, img, 0.1, mask=np.zeros(img.shape, bool))
    assert len(cropped.calcifications) == 0 and len(cropped.clusters) == 0
    _assert_same(cropped, whole)


def test_no_mask_means_no_crop(monkeypatch, crops):
    img = _blobs((300, 280), 8)
    det = napari_calc.detect(img, 0.1, use_mask=False, keep_min_score=0.0)
    assert crops == []
    assert len(det.calcifications) > 10


def test_stack_one_crop_for_all_slices(monkeypatch, crops):
    ph = make_phantom(seed=2, n_slices=4, spacing_mm=0.2)
    cropped, whole = _both(monkeypatch, ph.image, None)
    assert len(crops) == 4 and len(set(crops)) == 1
    _cropped(crops[0], ph.image.pixels.shape[1:])
    assert len(cropped.calcifications) > 10
    _assert_same(cropped, whole)


@pytest.fixture
def dog_calls(monkeypatch):
    """Records the image shape and the ranges of each DoG call
    (dog_octaves, or dog_noise_nms: the DoG and the noise pass in one)."""
    seen = []
    real, real_one = _kernel.dog_octaves, _kernel.dog_noise_nms

    def spy(*a, **k):
        seen.append((a[0].shape, k.get("ranges")))
        return real(*a, **k)

    def spy_one(*a, **k):
        seen.append((a[0].shape, a[7]))
        return real_one(*a, **k)

    monkeypatch.setattr(_kernel, "dog_octaves", spy)
    monkeypatch.setattr(_kernel, "dog_noise_nms", spy_one)
    return seen


@pytest.mark.parametrize("shape", ["diagonal", "ring"])
def test_row_ranges_are_exact_on_irregular_masks(monkeypatch, dog_calls, shape):
    # masks whose rows are far from their box: a diagonal band (an MLO-like
    # breast) and a ring (a hole: each row's range is its hull)
    img = _blobs((520, 480), 9, n=150)
    yy, xx = np.mgrid[:520, :480]
    if shape == "diagonal":
        mask = np.abs(yy - 1.1 * xx) < 90
    else:
        d2 = (yy - 260) ** 2 + (xx - 240) ** 2
        mask = (d2 < 220 ** 2) & (d2 > 120 ** 2)
    ranged, whole = _both(monkeypatch, img, 0.1, mask=mask)
    (rows, cols), (lo, hi) = dog_calls[0]
    assert (hi - lo).sum() < 0.75 * rows * cols  # the ranges leave a good part of the box out
    assert len(ranged.calcifications) > 20
    _assert_same(ranged, whole)


@pytest.mark.parametrize("fill", [np.nan, 3.0e38, -1.0])
def test_what_the_dog_leaves_unwritten_is_never_used(monkeypatch, dog_calls, fill):
    # the response outside the ranges holds whatever the scratch held: NaN
    # (the one-pass noise and peaks then leave it to the two steps, which
    # get the whole response), or finite values above or below any threshold
    ph = make_phantom(seed=4, spacing_mm=0.1)
    monkeypatch.setattr(D, "_ROW_RANGES", False)
    ref = napari_calc.detect(ph.image, keep_min_score=0.0)
    monkeypatch.setattr(D, "_ROW_RANGES", True)
    real = D._dog_scratch

    def filled(shape):
        resp, scale = real(shape)
        resp.fill(fill)
        scale.fill(200)
        return resp, scale

    monkeypatch.setattr(D, "_dog_scratch", filled)
    dog_calls.clear()
    got = napari_calc.detect(ph.image, keep_min_score=0.0)
    assert len(got.calcifications) > 10
    _assert_same(got, ref)
    # with ranges; after NaN, once more for the two steps, on every pixel
    assert dog_calls[0][1] is not None
    assert [r is None for _, r in dog_calls[1:]] == ([True] if np.isnan(fill) else [])


def test_crop_ranges_in_c_are_the_numpy_code(monkeypatch):
    # _kernel.extent_ranges against _crop_ranges' NumPy code: random
    # extents with empty rows, boxes at the edges and inside, pads from 0
    # to more than the image
    rng = np.random.default_rng(7)
    for case in range(300):
        n = int(rng.integers(1, 60))
        w = int(rng.integers(1, 80))
        lo = rng.integers(0, w, n).astype(np.int32)
        hi = np.minimum(lo + rng.integers(-3, w, n), w).astype(np.int32)  # some empty (lo >= hi)
        if rng.random() < 0.1:
            hi[:] = 0  # no row at all
        r0 = int(rng.integers(0, n))
        r1 = int(rng.integers(r0, n + 1))
        c0 = int(rng.integers(0, w))
        c1 = int(rng.integers(c0, w + 1))
        pad = int(rng.choice([0, 1, 2, 5, n + 3]))
        monkeypatch.setattr(D, "_CROP_RANGES_KERNEL", True)
        got = D._crop_ranges((lo, hi), (r0, r1, c0, c1), pad)
        monkeypatch.setattr(D, "_CROP_RANGES_KERNEL", False)
        want = D._crop_ranges((lo, hi), (r0, r1, c0, c1), pad)
        for g, x in zip(got, want):
            assert g.dtype == x.dtype == np.int32
            np.testing.assert_array_equal(g, x)
    with pytest.raises(ValueError):
        _kernel.extent_ranges(np.zeros(3, np.int32), np.zeros(2, np.int32), 0, 1, 0, 1)


@pytest.mark.parametrize("seed,spacing", [(0, 0.05), (1, 0.07), (2, 0.1), (3, 0.14), (4, 0.2)])
def test_crop_ranges_from_the_extents_are_the_masks(seed, spacing):
    # the ranges detect derives from breast_mask_parts's row extents are
    # those of ncalc_mask_row_ranges on the crop of the full-size mask
    from napari_calc.core.mask import breast_mask_parts

    img = make_phantom(seed=seed, spacing_mm=spacing).image.pixels
    p = D.DetectionParams()
    sig = D.dog_sigmas(spacing, p.min_diameter_mm, p.max_diameter_mm)
    tile = max(8, int(round(p.noise_tile_mm / spacing)))
    radius = int(round(p.nms_radius_mm / spacing))
    for margin in (0.0, 1.5):
        mask, bbox, extents = breast_mask_parts(img, spacing, skin_margin_mm=margin)
        box = D._crop_box(img.shape, bbox, sig, tile, radius) or (0, img.shape[0], 0, img.shape[1])
        r0, r1, c0, c1 = box
        for pad in {0, 1, radius}:
            got = D._crop_ranges(extents, box, pad)
            want = _kernel.mask_row_ranges(np.ascontiguousarray(mask[r0:r1, c0:c1]).view(np.uint8), pad, 1)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_stack_with_a_user_mask(monkeypatch, dog_calls):
    # a given mask for a stack: its row extents found once, every slice's
    # ranges from them
    ph = make_phantom(seed=5, n_slices=3, spacing_mm=0.2)
    mask = np.zeros(ph.image.pixels.shape[1:], bool)
    yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
    mask[(yy - mask.shape[0] / 2) ** 2 + (xx / 1.3) ** 2 < (0.4 * mask.shape[0]) ** 2] = True
    ranged, whole = _both(monkeypatch, ph.image, None, mask=mask)
    ranges = [r for _, r in dog_calls[:3]]
    assert all(r is not None for r in ranges)
    assert all(np.array_equal(r[0], ranges[0][0]) and np.array_equal(r[1], ranges[0][1]) for r in ranges)
    assert len(ranged.calcifications) > 5
    _assert_same(ranged, whole)


@pytest.mark.parametrize("seed,spacing", [(0, 0.07), (5, 0.1), (6, 0.2)])
def test_automatic_mask_as_blocks_is_the_full_mask(monkeypatch, seed, spacing):
    # the automatic mask reaches noise_nms as its 1 mm blocks (no full-size
    # mask is made); the same mask given in full gives the same tables
    from napari_calc.core.mask import breast_mask

    ph = make_phantom(seed=seed, spacing_mm=spacing)
    calls = []
    real, real_one = _kernel.noise_nms, _kernel.dog_noise_nms

    def spy(resp, tile, mask=None, *a, blocks=None, **k):
        calls.append((mask is None, blocks is None))
        return real(resp, tile, mask, *a, blocks=blocks, **k)

    def spy_one(*a, blocks=None, **k):  # the DoG and the noise pass in one call
        calls.append((a[9] is None, blocks is None))
        return real_one(*a, blocks=blocks, **k)

    monkeypatch.setattr(_kernel, "noise_nms", spy)
    monkeypatch.setattr(_kernel, "dog_noise_nms", spy_one)
    auto = napari_calc.detect(ph.image, keep_min_score=0.0)
    given = napari_calc.detect(ph.image, mask=breast_mask(ph.image.pixels, ph.image.spacing_mm),
                               keep_min_score=0.0)
    assert calls == [(True, False), (False, True)]
    assert len(auto.calcifications) > 10
    _assert_same(auto, given)


def test_block_extents_in_c_are_the_numpy_code(monkeypatch, spy):
    """The mask's bounding box and row extents from ``_kernel.block_extents``
    are ``_upscaled_bbox`` and ``_upscaled_extents``: random working masks
    (sparse, dense, empty, full, one block, a view with a row pitch), image
    sizes with rows and columns left over."""
    M = importlib.import_module("napari_calc.core.mask")
    rng = np.random.default_rng(11)
    cases = []
    for _ in range(300):
        hh, ww = rng.integers(1, 40, 2)
        fy, fx = rng.integers(1, 16, 2)
        h, w = hh * fy + rng.integers(0, fy), ww * fx + rng.integers(0, fx)
        t = rng.random((hh, ww)) < rng.choice([0.0, 0.02, 0.3, 0.9, 1.0])
        cases.append((t, fy, fx, h, w))
    one = np.zeros((5, 6), bool)
    one[4, 5] = True                                 # the last block: to the image's end
    cases.append((one, 3, 2, 17, 13))
    big = rng.random((30, 40)) < 0.5
    cases.append((big[2:-3, 4:-1], 7, 5, 25 * 7 + 6, 35 * 5 + 4))   # a view: rows not adjacent
    for t, fy, fx, h, w in cases:
        want_box, want = M._upscaled_bbox(t, fy, fx, h, w), M._upscaled_extents(t, fy, fx, h, w)
        box, got = _kernel.block_extents(t, fy, fx, h, w)
        assert box == want_box
        for a, b in zip(got, want):
            assert a.dtype == np.int32 and a.shape == (h,)
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        _kernel.block_extents(np.ones((4, 4), bool), 2, 2, 7, 8)    # fewer rows than the blocks cover
    with pytest.raises(ValueError):
        _kernel.block_extents(np.ones((4, 8), bool)[:, ::2], 2, 2, 8, 8)   # columns not contiguous
    # breast_mask_blocks makes them in C (inside _kernel.breast_blocks),
    # the same as the NumPy code
    calls = spy(_kernel, "breast_blocks")
    img = make_phantom(seed=3, spacing_mm=0.1).image.pixels
    parts = M.breast_mask_blocks(img, 0.1)
    assert len(calls) == 1
    monkeypatch.setattr(M, "_MASK_KERNEL", False)
    again = M.breast_mask_blocks(img, 0.1)
    assert parts[1] == again[1] and parts[1] is not None
    for a, b in zip(parts[2], again[2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(parts[0].tissue, again[0].tissue)
