"""The C entry points that replace serial NumPy steps of ``detect`` give
exactly what those NumPy steps give: the sort behind the noise-level
function's quantile bins (``_kernel.sort_f32``), the mask upscaling
(``_kernel.upscale_mask``), the values at the NMS peaks
(``_kernel.peak_values``) and the top-k selection (``_kernel.top_k``)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import napari_calc
from napari_calc import _kernel
from napari_calc.core.phantom import make_phantom

D = importlib.import_module("napari_calc.core.detect")
M = importlib.import_module("napari_calc.core.mask")
S = importlib.import_module("napari_calc.core.score")


def _bits_equal_or_both_zero(a, b):
    """Equal to the bit, except that a zero may have either sign."""
    assert a.dtype == b.dtype and a.shape == b.shape
    same = (a.view(np.uint64) == b.view(np.uint64)) | ((a == 0) & (b == 0))
    assert same.all(), (a[~same], b[~same])


# --- sort and quantiles ---------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000, 70_001])
def test_sort_f32_is_numpy_sort(n):
    rng = np.random.default_rng(n)
    for x in (rng.normal(0, 300, n), rng.integers(0, 4, n), rng.exponential(1e-30, n),
              rng.uniform(1000, 4000, n)):
        x = x.astype(np.float32)
        if n > 4:
            x[:3] = (np.inf, -np.inf, np.float32(1e-45))
        got = _kernel.sort_f32(x)
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_array_equal(got.view(np.uint32), np.sort(x).view(np.uint32))


def test_sort_f32_signed_zeros_and_nan():
    x = np.array([0.0, -0.0, 1.0, -0.0, 0.0, -1.0], np.float32)
    got = _kernel.sort_f32(x)
    np.testing.assert_array_equal(got, np.sort(x))           # the same values
    assert list(np.signbit(got[1:5])) == [True, True, False, False]  # -0 before +0
    with pytest.raises(ValueError):
        _kernel.sort_f32(np.array([1.0, np.nan, 0.0], np.float32))
    with pytest.raises(ValueError):
        _kernel.sort_f32(np.zeros((2, 2), np.float32))       # 1-D only


def test_quantiles_are_numpy_quantile():
    rng = np.random.default_rng(11)
    for t in range(600):
        n = int(rng.integers(1, 3000))
        x = rng.normal(0, 1, n) * rng.choice([1.0, 1e-3, 1e4])
        if t % 3 == 0:
            x = np.round(x)                    # ties, and zeros of both signs
        if t % 4 == 0:
            x = np.abs(x) + 0.0                # no negative zero: the bits must agree
        x = x.astype(np.float32)
        nb = int(rng.integers(1, 40))
        q = np.arange(1, nb) / nb
        if t % 5 == 0:
            q = np.concatenate([q, [0.0, 1.0, 0.5]])
        ref = np.quantile(x, q)
        for kern in (_kernel, None):
            got = S._quantiles(x, q, kern)
            if t % 4 == 0:
                np.testing.assert_array_equal(got.view(np.uint64), ref.view(np.uint64))
            else:                              # -0 and +0 may swap places in numpy's partition
                _bits_equal_or_both_zero(got, ref)
        _bits_equal_or_both_zero(S._quantiles_of_sorted(np.sort(x), q), ref)


def test_quantiles_with_nan_fall_back_to_numpy():
    x = np.array([3.0, np.nan, 1.0, 2.0], np.float32)
    q = np.array([0.25, 0.5])
    np.testing.assert_array_equal(S._quantiles(x, q, _kernel), np.quantile(np.sort(x), q))


def test_noise_level_function_same_with_numpy_quantiles(monkeypatch):
    """The whole NLF with the C sort and with numpy.quantile (the kernel's
    other steps in place)."""
    img = make_phantom(seed=3, spacing_mm=0.1).image.pixels
    mask = M.breast_mask(img, 0.1)
    got = S.noise_level_function(img, mask)
    monkeypatch.setattr(S, "_quantiles", lambda x, q, kern=None: np.quantile(np.sort(x), q))
    ref = S.noise_level_function(img, mask)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.view(np.uint64), b.view(np.uint64))


# --- mask upscaling -------------------------------------------------------

def _upscale_ref(tissue, fy, fx, h, w):
    hh, ww = tissue.shape
    i = np.minimum(np.arange(h) // fy, hh - 1)
    j = np.minimum(np.arange(w) // fx, ww - 1)
    return tissue[i[:, None], j[None, :]]


@pytest.mark.parametrize("hh,ww,fy,fx,extra_r,extra_c", [
    (1, 1, 1, 1, 0, 0), (1, 1, 3, 2, 2, 1), (4, 5, 14, 14, 13, 9), (7, 3, 2, 5, 0, 4), (3, 9, 1, 1, 5, 0),
    (30, 23, 14, 14, 3, 11)])
def test_upscale_mask_matches_numpy(monkeypatch, hh, ww, fy, fx, extra_r, extra_c):
    rng = np.random.default_rng(hh * 100 + ww)
    tissue = rng.random((hh, ww)) < 0.5
    h, w = hh * fy + extra_r, ww * fx + extra_c
    ref = _upscale_ref(tissue, fy, fx, h, w)
    for nt in (1, 2, 3):
        got = _kernel.upscale_mask(tissue, fy, fx, h, w, nt)
        assert got.dtype == bool and got.shape == (h, w) and got.flags.c_contiguous
        np.testing.assert_array_equal(got, ref)
        assert got.view(np.uint8).max(initial=0) <= 1   # proper booleans
    np.testing.assert_array_equal(M.upscale_mask(tissue, fy, fx, h, w), ref)
    monkeypatch.delattr(_kernel, "upscale_mask")          # the NumPy path
    np.testing.assert_array_equal(M.upscale_mask(tissue, fy, fx, h, w), ref)


def test_upscale_mask_bad_arguments():
    t = np.ones((3, 4), bool)
    for args in ((t, 2, 2, 5, 8), (t, 2, 2, 6, 7), (t, 0, 2, 6, 8), (np.ones((0, 4), bool), 2, 2, 6, 8)):
        with pytest.raises(ValueError):
            _kernel.upscale_mask(*args)


# --- peak values and top k ------------------------------------------------

@pytest.mark.parametrize("rows,cols,tile,n", [(1, 1, 1, 1), (7, 5, 3, 0), (64, 70, 8, 300), (203, 111, 16, 20_000)])
def test_peak_values_match_numpy_gathers(rows, cols, tile, n):
    rng = np.random.default_rng(rows)
    resp = rng.normal(0, 3, (rows, cols)).astype(np.float32)
    scale = rng.integers(0, 7, (rows, cols)).astype(np.uint8)
    grid = rng.uniform(0.1, 2, (-(-rows // tile), -(-cols // tile))).astype(np.float32)
    rr = rng.integers(0, rows, n).astype(np.int32)
    cc = rng.integers(0, cols, n).astype(np.int32)
    noise = grid[rr // tile, cc // tile].astype(np.float64)
    r_at = resp[rr, cc]
    snr = r_at.astype(np.float64) / noise
    for nt in (1, 2):
        v, nz, s, sc = _kernel.peak_values(resp, grid, tile, rr, cc, scale, nt)
        np.testing.assert_array_equal(v.view(np.uint32), r_at.view(np.uint32))
        np.testing.assert_array_equal(nz.view(np.uint64), noise.view(np.uint64))
        np.testing.assert_array_equal(s.view(np.uint64), snr.view(np.uint64))
        assert sc.dtype == np.int64
        np.testing.assert_array_equal(sc, scale[rr, cc].astype(np.int64))
    assert _kernel.peak_values(resp, grid, tile, rr, cc)[3] is None


def test_peak_values_bad_arguments():
    resp = np.zeros((6, 6), np.float32)
    grid = np.ones((2, 2), np.float32)
    ok = np.array([1], np.int32)
    for r, c in ((np.array([6], np.int32), ok), (ok, np.array([-1], np.int32))):
        with pytest.raises(ValueError):
            _kernel.peak_values(resp, grid, 3, r, c)
    with pytest.raises(ValueError):
        _kernel.peak_values(resp, np.ones((3, 2), np.float32), 3, ok, ok)     # not the tile grid
    with pytest.raises(ValueError):
        _kernel.peak_values(resp, grid, 3, ok, np.array([1, 2], np.int32))    # lengths differ
    with pytest.raises(ValueError):
        _kernel.peak_values(resp, grid, 3, ok, ok, np.zeros((5, 6), np.uint8))  # scale's shape


def _top_k_numpy(monkeypatch, values, k):
    monkeypatch.setattr(D, "_PEAK_KERNEL", False)
    try:
        return D._top_k(values, k)
    finally:
        monkeypatch.setattr(D, "_PEAK_KERNEL", True)


@pytest.mark.parametrize("n", [0, 1, 2, 10, 5000, 83_000])
def test_top_k_kernel_matches_numpy_path(monkeypatch, n):
    rng = np.random.default_rng(n + 1)
    cases = [rng.normal(size=n), rng.integers(0, 5, n).astype(float), rng.exponential(3, n) + 3,
             np.where(rng.random(n) < 0.5, -0.0, 0.0), np.full(n, 2.5)]
    if n > 3:
        cases[0][:3] = (np.inf, -np.inf, 5e-324)
    for vals in cases:
        assert len(_kernel.top_k(vals, 0)) == 0   # (k >= 1 in detect: max_candidates)
        for k in sorted({1, n // 3, n - 1, n, n + 5} - {-1, 0}):
            got = D._top_k(vals, k)
            want = _top_k_numpy(monkeypatch, vals, k)
            assert got.dtype == np.int64 == want.dtype
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, np.sort(np.argsort(-vals, kind="stable")[:k]))


def test_top_k_with_nan_falls_back_to_numpy(monkeypatch):
    vals = np.array([1.0, np.nan, 3.0, 2.0, np.nan])
    with pytest.raises(ValueError):
        _kernel.top_k(vals, 2)
    np.testing.assert_array_equal(D._top_k(vals, 2), _top_k_numpy(monkeypatch, vals, 2))


@pytest.mark.parametrize("kw", [dict(), dict(max_candidates=40), dict(max_candidates=40, use_mask=False)])
def test_detect_same_with_and_without_the_peak_kernel(monkeypatch, kw):
    """detect with the C peak values and top k and with the NumPy code
    (max_candidates=40: the selection cuts), on 1 and 2 threads."""
    img = make_phantom(seed=5, spacing_mm=0.1).image.pixels
    got = [napari_calc.detect(img, 0.1, n_threads=nt, **kw) for nt in (1, 2)]
    monkeypatch.setattr(D, "_PEAK_KERNEL", False)
    ref = napari_calc.detect(img, 0.1, n_threads=1, **kw)
    assert len(ref.calcifications) > 0
    for d in got:
        assert d.calcifications.equals(ref.calcifications)
        assert d.clusters.equals(ref.clusters)
        assert d.extra.equals(ref.extra)
