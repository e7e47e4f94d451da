"""The noise-level function's C kernel (``_kernel.nlf_samples`` and
``_kernel.nlf_bins``) gives bit-identical results to its NumPy reference
(the code path ``noise_level_function`` takes without the kernel)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from napari_calc import _kernel

S = importlib.import_module("napari_calc.core.score")


def _nlf_both(monkeypatch, img, mask=None, **kw):
    a = S.noise_level_function(img, mask, **kw)
    monkeypatch.setattr(S, "_NLF_KERNEL", False)
    b = S.noise_level_function(img, mask, **kw)
    monkeypatch.setattr(S, "_NLF_KERNEL", True)
    return a, b


def _same(a, b):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.view(np.uint64), y.view(np.uint64))  # bits, signed zeros too


def _image(rng, kind, h, w):
    if kind == "u16":
        return rng.integers(0, 60000, (h, w)).astype(np.uint16)
    if kind == "u16-ties":  # few grey levels: many equal values in every bin
        return rng.integers(0, 5, (h, w)).astype(np.uint16)
    if kind == "f32":
        return rng.normal(0, 3, (h, w)).astype(np.float32)
    if kind == "f32-zeros":  # some negative zeros
        img = rng.integers(-2, 3, (h, w)).astype(np.float32)
        img[img == 0] = -0.0
        return img
    if kind == "f32-subnormal":  # levels a few subnormals apart: too close for linear bins of the range
        return (rng.integers(0, 4, (h, w)) * np.float32(1e-45)).astype(np.float32)
    if kind == "f32-wide":  # levels +-2e37 and a crowd near 0: the quantiles' ranks in one bin
        img = rng.normal(0, 1, (h, w)).astype(np.float32)
        far = rng.random((h, w)) < 0.02
        img[far] = np.where(rng.random(int(far.sum())) < 0.5, -8e37, 8e37).astype(np.float32)
        return img
    if kind == "f32-const":  # every level the same
        return np.full((h, w), np.float32(7.25))
    # mostly negative zeros: medians of -0.0 values (numpy.median gives +0.0)
    return np.where(rng.random((h, w)) < 0.05, np.float32(1.0), np.float32(-0.0))


@pytest.mark.parametrize("kind", ["u16", "u16-ties", "f32", "f32-zeros", "f32-negzero", "f32-subnormal", "f32-wide",
                                  "f32-const"])
def test_nlf_kernel_matches_numpy_path(monkeypatch, kind):
    rng = np.random.default_rng(len(kind))
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(3, 300, 2))
        img = _image(rng, kind, h, w)
        mask = rng.random((h, w)) < rng.random() if rng.random() < 0.6 else None
        if rng.random() < 0.3:  # a stack, maybe every other plane of one
            img = np.stack([img, img[::-1].copy(), np.full_like(img, img[0, 0])])[:: int(rng.integers(1, 3))]
        kw = dict(max_samples=int(rng.integers(100, 100_000)), n_bins=int(rng.integers(1, 40)))
        _same(*_nlf_both(monkeypatch, img, mask, **kw))


def test_nlf_kernel_on_a_phantom_and_threads(monkeypatch):
    from napari_calc.core.mask import breast_mask
    from napari_calc.core.phantom import make_phantom

    img = make_phantom(seed=4, spacing_mm=0.2).image.pixels
    mask = breast_mask(img, 0.2)
    ref = _nlf_both(monkeypatch, img, mask)
    _same(*ref)
    assert len(ref[0][0]) >= 20
    for nt in (1, 2, 3):
        _same(S.noise_level_function(img, mask, n_threads=nt), ref[1])
    _same(*_nlf_both(monkeypatch, img.astype(np.float32) * np.float32(0.3), mask))


def test_nlf_non_finite_falls_back_to_numpy(monkeypatch):
    rng = np.random.default_rng(3)
    img = rng.normal(100, 5, (200, 180)).astype(np.float32)
    img[50, 51] = np.inf
    img[101, 91] = np.nan
    a, b = _nlf_both(monkeypatch, img, max_samples=20_000)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # NaN == NaN here
    with pytest.raises(ValueError):
        _kernel.nlf_bins(np.array([1.0, np.inf], np.float32), np.zeros(2, np.float32), np.array([0.5]))


def test_nlf_samples_match_numpy_expression():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 4000, (3, 61, 47)).astype(np.uint16)
    for k in (1, 2, 7):
        rs, cs = slice(1, 60, k), slice(1, 46, k)
        c = img[:, rs, cs].astype(np.float32)
        nb = (img[:, 0:59:k, cs].astype(np.float32) + img[:, 2:61:k, cs] + img[:, rs, 0:45:k]
              + img[:, rs, 2:47:k]) * np.float32(0.25)
        sm = rng.random(c.shape[1:]) < 0.5
        want = np.broadcast_to(sm, c.shape)
        resid, level = _kernel.nlf_samples(img, k, np.ascontiguousarray(sm).view(np.uint8))
        np.testing.assert_array_equal(resid, (c - nb)[want])
        np.testing.assert_array_equal(level, ((c + 4 * nb) * np.float32(0.2))[want])
        resid, level = _kernel.nlf_samples(img[1], k)
        np.testing.assert_array_equal(resid, (c - nb)[1].ravel())
    with pytest.raises(ValueError):
        _kernel.nlf_samples(img[:, :, ::2], 1)  # planes not contiguous
    with pytest.raises(ValueError):
        _kernel.nlf_samples(img[0], 2, np.ones((3, 3), np.uint8))  # wrong sample-mask shape
    with pytest.raises(TypeError):
        _kernel.nlf_samples(img[0].astype(np.int32), 2)


def _assert_numpy_bins(binned, level, resid, edges):
    """``nlf_bins``'s output is, bin by bin, the count, numpy.median of the
    levels and numpy.median of |resid - median| of the samples whose bin
    is numpy.searchsorted(edges, level, side="right") (NaN when empty)."""
    count, lev, mad = binned
    b = np.searchsorted(edges, level, side="right")
    np.testing.assert_array_equal(count, np.bincount(b, minlength=len(edges) + 1))
    for i in range(len(edges) + 1):
        sel = b == i
        if not sel.any():
            assert np.isnan(lev[i]) and np.isnan(mad[i])
            continue
        r = resid[sel]
        assert lev[i].tobytes() == np.median(level[sel]).tobytes()
        assert mad[i].tobytes() == np.median(np.abs(r - np.median(r))).tobytes()


def test_nlf_bins_are_numpy_medians():
    rng = np.random.default_rng(6)
    for n in (0, 1, 2, 3, 10, 1001, 5000, 40_000):  # 40000: the bins are found in parallel
        level = rng.integers(0, 50, n).astype(np.float32)
        resid = rng.normal(0, 2, n).astype(np.float32)
        edges = np.sort(rng.integers(0, 50, 5)).astype(np.float64)
        _assert_numpy_bins(_kernel.nlf_bins(level, resid, edges, 2), level, resid, edges)
    with pytest.raises(ValueError):  # decreasing edges
        _kernel.nlf_bins(np.ones(3, np.float32), np.ones(3, np.float32), np.array([2.0, 1.0]))


def test_nlf_bins_edges_between_floats_and_threads():
    """The bins are numpy.searchsorted(edges, level, side="right") for
    float64 edges that no float32 equals (just above, just below and on a
    level), beyond the float range and infinite, signed zeros, on 1-3 threads and on
    both sides of the parallel threshold."""
    rng = np.random.default_rng(11)
    for n in (7, 16_384, 16_385, 50_001):
        level = rng.integers(-20, 20, n).astype(np.float32)
        level[: n // 3] = np.float32(0.1) * level[: n // 3]  # values no double edge hits exactly
        level[n // 2] = -0.0
        resid = rng.normal(0, 2, n).astype(np.float32)
        f = float(np.float32(0.1))  # a level's exact value as a double
        edges = np.array([-np.inf, -1e300, -3.0, np.nextafter(-1.0, -2.0), -0.0, 0.0,
                          np.nextafter(f, 0.0), f, np.nextafter(f, 1.0), 0.15,
                          5.0 + 1e-12, 1e300, np.inf])
        for nt in (1, 2, 3):
            _assert_numpy_bins(_kernel.nlf_bins(level, resid, edges, nt), level, resid, edges)
        for where in (0, n - 1):  # a non-finite sample in the first or the last thread's share
            bad = level.copy()
            bad[where] = np.nan
            for nt in (1, 2, 3):
                with pytest.raises(ValueError):
                    _kernel.nlf_bins(bad, resid, edges, nt)
            bad_r = resid.copy()
            bad_r[where] = -np.inf
            with pytest.raises(ValueError):
                _kernel.nlf_bins(level, bad_r, edges, 2)


def _planes_and_mask(rng, kind):
    h, w = (int(v) for v in rng.integers(3, 260, 2))
    img = _image(rng, kind, h, w)
    if rng.random() < 0.3:
        img = np.stack([img, img[::-1].copy()])
    k = int(rng.integers(1, 6))
    nr, nc = (h - 2 + k - 1) // k, (w - 2 + k - 1) // k
    sm = np.ascontiguousarray(rng.random((nr, nc)) < rng.random()).view(np.uint8) if rng.random() < 0.6 else None
    return (img if img.ndim == 3 else img[None]), k, sm


@pytest.mark.parametrize("kind", ["u16", "u16-ties", "f32", "f32-zeros", "f32-negzero", "f32-subnormal", "f32-wide",
                                  "f32-const"])
def test_nlf_fit_is_samples_quantiles_and_bins(kind):
    """``nlf_fit`` (one C call) gives the samples of ``nlf_samples``, and
    the bins ``nlf_bins`` makes with ``numpy.quantile``'s own edges of the
    sorted levels, for the number of bins the function chooses; below 50
    samples, the samples and no bins."""
    rng = np.random.default_rng(100 + len(kind))
    seen_bins = set()
    for case in range(30):
        planes, k, sm = _planes_and_mask(rng, kind)
        max_bins = int(rng.choice([1, 2, 7, 24, 255]))
        nt = int(rng.integers(1, 4))
        fit = _kernel.nlf_fit(planes, k, sm, max_bins, nt)
        resid, level = _kernel.nlf_samples(planes, k, sm, 1)
        assert fit is not None
        for got, ref in zip(fit[:2], (resid, level)):
            np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))
        n = len(level)
        if n < 50:
            assert fit[2:] == (None, None, None, None)
            continue
        nb = max(1, min(max_bins, n // 500))
        seen_bins.add(nb)
        edges = np.quantile(np.sort(level), np.arange(1, nb) / nb)
        want = _kernel.nlf_bins(level, resid, edges, 1)
        assert len(fit[2]) == nb
        for got, ref in zip(fit[2:5], want):
            np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))
        _same(fit[5], S._nlf_of_bins(*want))  # the curve, as the NumPy code makes it
    assert len(seen_bins) >= 2  # more than one bin count was checked


def test_nlf_fit_refusals():
    rng = np.random.default_rng(8)
    img = rng.normal(100, 5, (1, 120, 110)).astype(np.float32)
    assert _kernel.nlf_fit(img, 1, None, 24, 2)[2] is not None
    for bad in (np.nan, np.inf):  # a non-finite sample: left to the NumPy code
        x = img.copy()
        x[0, 50, 51] = bad
        assert _kernel.nlf_fit(x, 1, None, 24, 2) is None
    for max_bins in (0, 256):
        with pytest.raises(ValueError):
            _kernel.nlf_fit(img, 1, None, max_bins)
    with pytest.raises(ValueError):
        _kernel.nlf_fit(img, 2, np.ones((3, 3), np.uint8))  # wrong sample-mask shape


def test_noise_level_function_takes_the_one_call(monkeypatch, spy):
    """With the kernel, noise_level_function makes its samples and bins in
    one nlf_fit call (and gives the NumPy path's result); with more than
    255 bins asked, the separate steps."""
    from napari_calc.core.phantom import make_phantom

    img = make_phantom(seed=2, spacing_mm=0.2).image.pixels
    real = _kernel.nlf_fit
    calls = spy(_kernel, "nlf_fit")
    ref = _nlf_both(monkeypatch, img, n_bins=30)
    _same(*ref)
    assert len(calls) == 1 and calls[0][3] == 30
    many = _nlf_both(monkeypatch, img, n_bins=300, max_samples=10**6)
    _same(*many)
    assert len(calls) == 1  # 300 bins: not through nlf_fit
    job = S.nlf_job(img, None, n_bins=30)
    _same(S.nlf_of_fit(real(*job)), ref[1])
    assert S.nlf_of_fit(None) is None


def test_nlf_curve_is_the_numpy_steps():
    """``nlf_curve`` (C) gives the curve ``_nlf_of_bins`` makes with NumPy,
    bit for bit: empty bins left out, the running median, the floor
    (1 when no value is positive), and numpy.unique of levels that tie,
    come unsorted, or are -0.0 and +0.0."""
    rng = np.random.default_rng(21)
    for case in range(400):
        nb = int(rng.choice([0, 1, 2, 3, 4, 7, 24, 255]))
        count = rng.integers(0, 3, nb).astype(np.int64) * int(rng.integers(0, 2) or rng.random() < 0.8)
        lev = rng.choice(np.array([-1.5, -0.0, 0.0, 0.25, 3.0, 7.5, 100.0], np.float32), nb)
        if rng.random() < 0.5:
            lev = np.sort(rng.normal(50, 20, nb).astype(np.float32))
        mad = (rng.integers(0, 4, nb) * rng.random(nb)).astype(np.float32)
        if rng.random() < 0.2:
            mad[:] = 0  # no positive noise: the floor is 1
        got = _kernel.nlf_curve(count, lev, mad)
        if not (count > 0).any():
            assert len(got[0]) == 0 and len(got[1]) == 0
            continue
        _same(got, S._nlf_of_bins(count, lev, mad))
    with pytest.raises(ValueError):
        _kernel.nlf_curve(np.ones(2, np.int64), np.ones(3, np.float32), np.ones(2, np.float32))


def test_nlf_fit_with_the_mask_as_blocks():
    """``nlf_fit(blocks=...)`` makes the sample mask from a BlockMask's
    blocks as ``BlockMask.sample`` does (all samples when fewer than
    ``min_masked`` are in it): the same fit as with that sample mask, and
    the job ``nlf_job`` makes for a BlockMask takes that way."""
    from napari_calc.core.mask import BlockMask, breast_mask_blocks
    from napari_calc.core.phantom import make_phantom

    rng = np.random.default_rng(12)
    img = make_phantom(seed=1, spacing_mm=0.2).image.pixels
    h, w = img.shape
    masks = [breast_mask_blocks(img, 0.2)[0], BlockMask.whole((h, w))]
    for _ in range(6):  # random blocks, sizes that do not divide the image
        fy, fx = (int(v) for v in rng.integers(1, 12, 2))
        masks.append(BlockMask(rng.random((h // fy, w // fx)) < rng.random(), fy, fx, (h, w)))
    for mask in masks:
        for k in (1, 3, 7):
            nr, nc = (h - 2 + k - 1) // k, (w - 2 + k - 1) // k
            sm = mask.sample(slice(1, h - 1, k), slice(1, w - 1, k))
            for min_masked in (1, 1000, 10**9):
                smask = sm.view(np.uint8) if sm.sum() >= min_masked else None
                want = _kernel.nlf_fit(img[None], k, smask, 24, 1)
                got = _kernel.nlf_fit(img[None], k, None, 24, 1, (mask.tissue, mask.fy, mask.fx), min_masked)
                for a, b in zip(got[:5], want[:5]):
                    if a is None:
                        assert b is None
                    else:
                        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
        job = S.nlf_job(img, mask)
        assert job[2] is None and job[5][0] is mask.tissue
        _same(S.nlf_of_fit(_kernel.nlf_fit(*job)), S.noise_level_function(img, mask))
    both = np.ones(((h - 2 + 1) // 2, (w - 2 + 1) // 2), np.uint8)
    _kernel.nlf_fit(img[None], 2, both, 24, 1)  # the right shape
    with pytest.raises(ValueError):  # but not with blocks too
        _kernel.nlf_fit(img[None], 2, both, 24, 1, (masks[0].tissue, 1, 1))
