"""The C entry points that replace serial NumPy steps of ``detect`` give
exactly what those NumPy steps give: the sort behind the noise-level
function's quantile bins (``_kernel.sort_f32``), the mask upscaling
(``_kernel.upscale_mask``), the values at the NMS peaks
(``_kernel.peak_values``) and the top-k selection (``_kernel.top_k``)."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
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

@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000, 32_767, 32_768, 70_001])
def test_sort_f32_is_numpy_sort(n):
    """On 1, 2 and 3 threads (from 32768 values the passes are shared)."""
    rng = np.random.default_rng(n)
    for x in (rng.normal(0, 300, n), rng.integers(0, 4, n), rng.exponential(1e-30, n),
              rng.uniform(1000, 4000, n), np.full(n, 7.0)):
        x = x.astype(np.float32)
        if n > 4:
            x[:3] = (np.inf, -np.inf, np.float32(1e-45))
        want = np.sort(x).view(np.uint32)
        for nt in (1, 2, 3):
            got = _kernel.sort_f32(x, nt)
            assert got.dtype == np.float32 and got.shape == (n,)
            np.testing.assert_array_equal(got.view(np.uint32), want)


@pytest.mark.parametrize("n", [6, 50_000])
def test_sort_f32_signed_zeros_and_nan(n):
    rng = np.random.default_rng(n)
    x = np.resize(np.array([0.0, -0.0, 1.0, -0.0, 0.0, -1.0], np.float32), n)
    rng.shuffle(x)
    for nt in (1, 2, 3):
        got = _kernel.sort_f32(x, nt)
        np.testing.assert_array_equal(got, np.sort(x))           # the same values
        zeros = np.signbit(got[got == 0])
        assert zeros[: (zeros).sum()].all() and not zeros[zeros.sum():].any()  # -0 before +0
        y = x.copy()
        y[rng.integers(n)] = np.nan  # anywhere, in any thread's share
        with pytest.raises(ValueError):
            _kernel.sort_f32(y, nt)
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


def test_running_median3_is_numpy_median_of_the_triples():
    rng = np.random.default_rng(3)
    for n in [1, 2, 3, 4, 24] * 40:
        x = rng.choice([rng.random(n), rng.integers(0, 3, n).astype(float)])
        if rng.random() < 0.2:
            x[rng.integers(n)] = np.nan
        padded = np.concatenate([x[:1], x, x[-1:]])
        want = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
        np.testing.assert_array_equal(S._running_median3(x).view(np.uint64), want.view(np.uint64))


def test_noise_level_function_same_with_numpy_quantiles(monkeypatch):
    """The whole NLF with the C sort and with numpy.quantile (the kernel's
    other steps in place)."""
    img = make_phantom(seed=3, spacing_mm=0.1).image.pixels
    mask = M.breast_mask(img, 0.1)
    got = S.noise_level_function(img, mask)
    monkeypatch.setattr(S, "_quantiles", lambda x, q, kern=None, n_threads=0: np.quantile(np.sort(x), q))
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


def _numpy_path(monkeypatch, module, switch, f, *args):
    """f(*args) with the kernel switch ``module.switch`` off."""
    monkeypatch.setattr(module, switch, False)
    try:
        return f(*args)
    finally:
        monkeypatch.setattr(module, switch, True)


def _top_k_numpy(monkeypatch, values, k):
    return _numpy_path(monkeypatch, D, "_PEAK_KERNEL", D._top_k, values, k)


@pytest.mark.parametrize("n", [0, 1, 2, 10, 5000, 32_768, 83_000])
def test_top_k_kernel_matches_numpy_path(monkeypatch, n):
    """On 1, 2 and 3 threads (from 32768 values the passes are shared)."""
    rng = np.random.default_rng(n + 1)
    cases = [rng.normal(size=n), rng.integers(0, 5, n).astype(float), rng.exponential(3, n) + 3,
             np.where(rng.random(n) < 0.5, -0.0, 0.0), np.full(n, 2.5)]
    if n > 3:
        cases[0][:3] = (np.inf, -np.inf, 5e-324)
    for vals in cases:
        assert len(_kernel.top_k(vals, 0)) == 0   # (k >= 1 in detect: max_candidates)
        for k in sorted({1, n // 3, n - 1, n, n + 5} - {-1, 0}):
            want = _top_k_numpy(monkeypatch, vals, k)
            np.testing.assert_array_equal(want, np.sort(np.argsort(-vals, kind="stable")[:k]))
            for nt in (1, 2, 3):
                got = D._top_k(vals, k, nt)
                assert got.dtype == np.int64 == want.dtype
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [5, 40_000])
def test_top_k_with_nan_falls_back_to_numpy(monkeypatch, n):
    rng = np.random.default_rng(n)
    vals = rng.normal(size=n)
    vals[[1, rng.integers(n)]] = np.nan  # anywhere, in any thread's share
    for nt in (1, 2, 3):
        for k in (0, 2, n):
            with pytest.raises(ValueError):
                _kernel.top_k(vals, k, nt)
        np.testing.assert_array_equal(D._top_k(vals, 2, nt), _top_k_numpy(monkeypatch, vals, 2))


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


# --- the score model's standardised basis --------------------------------

def _logit_numpy(monkeypatch, X, part):
    return _numpy_path(monkeypatch, S, "_RAMP_KERNEL", S._logistic_logit, X, part)


def _ramp_data(rng, n, nfeat, knots):
    X = rng.normal(0.5, 1.5, (n, nfeat))
    if n >= 8:
        X[:4] = np.nan            # NaNs, infinities, signed zeros, values on the knots
        X[1], X[2], X[3] = np.inf, -np.inf, -0.0
        X[4] = 0.0
        for j, k in enumerate(knots):
            if len(k):
                X[5:8, j] = np.resize(k, 3)
        X[6, :] = 1.0              # the interactions' clip bounds
        X[7, :] = -1.0
    return X


def _ramp_kernel_out(X, part, nt, basis=True, logit=True):
    """``_kernel.ramp_logit`` of a part: (z or None, basis or None)."""
    nk, kv, it, mu, sc = S._ramp_args(part)
    ncol = len(mu)
    z = np.full(len(X), 7.0) if logit else None
    out = np.full((len(X), ncol), 7.0) if basis else None
    got = _kernel.ramp_logit(np.ascontiguousarray(X), nk, kv, it, mu, sc,
                             np.asarray(part["coef"], float) if logit else None, float(part["intercept"]),
                             z, out, nt)
    assert got[0] is z and got[1] is out
    return z, out


def _in_order(Z, coef, intercept):
    """Each row's sum of products, column by column from 0.0, then the
    intercept (written out here, not taken from the module)."""
    z = np.zeros(len(Z))
    for j in range(Z.shape[1]):
        z = z + Z[:, j] * coef[j]
    return z + intercept


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("n", [0, 1, 9, 13, 1027, 3000, 5000])   # (rows in parallel above 1024)
def test_ramp_kernel_gives_numpys_basis_and_logit(monkeypatch, n):
    rng = np.random.default_rng(n + 7)
    knots = [[-1.0, 0.5, 2.5], [], [0.3], [-2.0, 1.0], [0.1, 0.2, 0.4, 0.8]]
    inter = [(0, 3), (2, 1), (4, 4)]
    ncol = len(S.basis_groups(knots, inter))
    part = dict(knots=knots, interactions=[list(t) for t in inter], mean=list(rng.normal(0.3, 1, ncol)),
                scale=list(rng.uniform(0.1, 2, ncol)), coef=list(rng.normal(0, 1, ncol)), intercept=-0.7)
    X = _ramp_data(rng, n, len(knots), knots)
    ref = (S.ramp_basis(X, knots, inter) - np.asarray(part["mean"])) / np.asarray(part["scale"])
    zref = _in_order(ref, np.asarray(part["coef"]), -0.7)
    fin = np.isfinite(ref)
    zfin = np.isfinite(zref)
    if n >= 3000:
        assert zfin.sum() > n - 10
    for nt in (1, 2):   # rows in parallel above 1024
        for basis, logit in ((True, False), (False, True), (True, True)):
            z, got = _ramp_kernel_out(X, part, nt, basis, logit)
            if basis:
                assert got.shape == ref.shape
                np.testing.assert_array_equal(got, ref)                       # NaN where NaN
                np.testing.assert_array_equal(got[fin].view(np.uint64), ref[fin].view(np.uint64))
            if logit:
                np.testing.assert_array_equal(z, zref)
                np.testing.assert_array_equal(z[zfin].view(np.uint64), zref[zfin].view(np.uint64))
    kz = S._ramp_logit_kernel(X, part, np.asarray(part["coef"]), -0.7, 2)
    assert kz is not None
    np.testing.assert_array_equal(kz, zref)
    a, b = S._logistic_logit(X, part), _logit_numpy(monkeypatch, X, part)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[zfin].view(np.uint64), b[zfin].view(np.uint64))
    # a dot product: within rounding of BLAS's
    np.testing.assert_allclose(zref[zfin], (ref @ np.asarray(part["coef"]) - 0.7)[zfin], rtol=1e-12, atol=1e-12)


def test_dot_in_order_sums_column_by_column():
    """The order shows where it loses digits: 1e16 + 1 is 1e16 in double,
    so (1e16 + 1) - 1e16 is 0, where a sum taken in another order gives 1."""
    Z = np.array([[1e16, 1.0, -1e16], [1.0, 1e16, -1e16], [-0.0, -0.0, -0.0]])
    z = S._dot_in_order(Z, np.ones(3))
    assert z[0] == 0.0 and z[1] == 0.0
    assert z[2] == 0.0 and not np.signbit(z[2])   # 0.0 + -0.0 is +0.0


def test_ramp_kernel_on_the_shipped_model(monkeypatch):
    """Both stages of the shipped model on detector candidates: the final
    score with and without the kernel, to the bit."""
    model = S.load_model()
    img = make_phantom(seed=2, spacing_mm=0.1).image.pixels
    seen = {}

    def keep(c, spacing, *args):
        seen["c"], seen["sp"] = c, spacing
        return orig(c, spacing, *args)

    orig = D._score
    monkeypatch.setattr(D, "_score", keep)
    napari_calc.detect(img, 0.1)
    monkeypatch.undo()
    c = seen["c"]
    X = S.candidate_feature_matrix(c)
    assert len(X) > 500
    pos = np.column_stack([c["row"] * 0.1, c["col"] * 0.1]).astype(float)
    for part in (model["calcification"], model["context"]):
        Xp = X if part is model["calcification"] else X[:, :2].copy()
        assert S._ramp_logit_kernel(Xp, part, *S._logit_args(part)[:2]) is not None
    got = S.candidate_probability(X, pos, model)
    monkeypatch.setattr(S, "_RAMP_KERNEL", False)
    ref = S.candidate_probability(X, pos, model)
    np.testing.assert_array_equal(got.view(np.uint64), ref.view(np.uint64))


def test_ramp_kernel_declines_zero_knots_and_means():
    knots = [[0.0, 1.0], [0.5]]
    part = dict(knots=knots, interactions=[], mean=[1.0] * 5, scale=[1.0] * 5, coef=[0.0] * 5, intercept=0.0)
    X = np.ones((4, 2))
    w = np.zeros(5)

    def kern(X, part):
        return S._ramp_logit_kernel(X, part, w, 0.0)

    assert kern(X, part) is None                       # a zero knot
    part["knots"] = [[0.5, 1.0], [0.5]]
    assert kern(X, part) is not None
    assert kern(X, dict(part, mean=[1.0, 0.0, 1.0, 1.0, 1.0])) is None   # a zero mean
    assert kern(X, dict(part, knots=[[1.0, 0.5], [0.5]])) is None       # not increasing
    assert kern(X.astype(np.float32), part) is None
    assert kern(np.ones((4, 3)), part) is None                         # another number of features
    nk = np.array([2, 1], dtype=np.intc)
    none = np.zeros(0, dtype=np.intc)
    with pytest.raises(ValueError):   # a knot not finite
        _kernel.ramp_logit(X, nk, np.array([0.5, np.inf, 0.5]), none, np.ones(5), np.ones(5), None, 0.0, None,
                           np.empty((4, 5)))
    with pytest.raises(ValueError):   # an interaction's feature out of range
        _kernel.ramp_logit(X, nk, np.array([0.5, 1.0, 0.5]), np.array([0, 2], dtype=np.intc), np.ones(6),
                           np.ones(6), None, 0.0, None, np.empty((4, 6)))
    with pytest.raises(ValueError):   # too few basis columns
        _kernel.ramp_logit(X, nk, np.array([0.5, 1.0, 0.5]), none, np.ones(4), np.ones(4), None, 0.0, None,
                           np.empty((4, 4)))
    with pytest.raises(ValueError):   # coefficients without z
        _kernel.ramp_logit(X, nk, np.array([0.5, 1.0, 0.5]), none, np.ones(5), np.ones(5), np.ones(5), 0.0,
                           None, None)
    with pytest.raises(ValueError):   # z of another length
        _kernel.ramp_logit(X, nk, np.array([0.5, 1.0, 0.5]), none, np.ones(5), np.ones(5), np.ones(5), 0.0,
                           np.empty(3), None)


# --- the mask's histogram and erosion ------------------------------------

def test_histogram_kernel_is_numpy_histogram():
    rng = np.random.default_rng(21)
    for t in range(300):
        n = int(rng.integers(1, 5000))
        x = rng.normal(0, 1, n) * rng.choice([1.0, 1e-7, 1e5]) + rng.choice([0.0, 1000.0])
        if t % 3 == 0:
            x = np.round(x * 4) / 4                   # many values on the bin edges
        bins = int(rng.choice([1, 2, 7, 256]))
        lo, hi = float(x.min()), float(x.max())
        if t % 5 == 0 and n > 2:                       # a range narrower than the data
            lo, hi = float(np.quantile(x, 0.2)), float(np.quantile(x, 0.8))
        if not lo < hi:
            continue
        ref, edges = np.histogram(x, bins=bins, range=(lo, hi))
        np.testing.assert_array_equal(edges, np.linspace(lo, hi, bins + 1))
        got = _kernel.histogram(x, lo, hi, edges)
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)
    # every edge and its neighbouring floats: where numpy corrects the index
    for lo, hi, bins in ((0.1, 0.7, 256), (-3.3, 1e3 / 7, 256), (1e-3, 1e-3 + 1e-9, 97), (5.0, 6.0, 3)):
        edges = np.linspace(lo, hi, bins + 1)
        x = np.clip(np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)]), lo, hi)
        ref = np.histogram(x, bins=bins, range=(lo, hi))[0]
        np.testing.assert_array_equal(_kernel.histogram(x, lo, hi, edges), ref)
    x = np.array([np.nan, 1.0, 2.0, np.nan, 3.0])     # NaN left out, as numpy does
    np.testing.assert_array_equal(_kernel.histogram(x, 1.0, 3.0, np.linspace(1.0, 3.0, 5)), [1, 0, 1, 1])
    for lo, hi in ((1.0, 1.0), (2.0, 1.0), (0.0, np.inf)):
        with pytest.raises(ValueError):
            _kernel.histogram(x, lo, hi, np.linspace(0.0, 1.0, 3))


def test_otsu_threshold_same_with_and_without_kernel(monkeypatch):
    rng = np.random.default_rng(5)
    samples = [rng.normal(0, 1, 999), np.concatenate([rng.normal(100, 5, 3000), rng.normal(900, 50, 2000)]),
               np.round(rng.uniform(0, 8, 500)), np.array([3.0, 3.0]), np.array([1.0, 2.0])]
    got = [M.otsu_threshold(v) for v in samples]
    monkeypatch.setattr(M, "_MASK_KERNEL", False)
    assert got == [M.otsu_threshold(v) for v in samples]


def test_otsu_in_c_is_the_numpy_code(monkeypatch, spy):
    # _kernel.otsu (the whole threshold in C) against the NumPy code with
    # numpy.histogram, bit for bit: random samples of many shapes and
    # scales, negative values and signed zeros, few distinct values, bin
    # counts 1 to 300; NaN and infinite values go to the NumPy code
    rng = np.random.default_rng(9)
    real = _kernel.otsu
    calls = spy(_kernel, "otsu")
    for case in range(300):
        n = int(rng.integers(1, 3000))
        kind = case % 5
        if kind == 0:
            v = rng.normal(rng.normal(0, 100), rng.uniform(1e-6, 50), n)
        elif kind == 1:
            v = np.concatenate([rng.normal(100, 5, n), rng.normal(900, 50, n // 2 + 1)])
        elif kind == 2:
            v = np.round(rng.uniform(-4, 4, n)) * rng.choice([1.0, 0.1, 1e-3])
            v[v == 0] = rng.choice([0.0, -0.0], int((v == 0).sum()))
        elif kind == 3:
            v = np.full(n, rng.normal())  # one value
        else:
            v = rng.uniform(0, 1, n) ** 8 * 1e4  # skewed
        bins = int(rng.choice([1, 2, 3, 17, 256, 300]))
        monkeypatch.setattr(M, "_MASK_KERNEL", True)
        got = M.otsu_threshold(v, bins)
        monkeypatch.setattr(M, "_MASK_KERNEL", False)
        want = M.otsu_threshold(v, bins)
        assert float(got).hex() == float(want).hex(), (case, got, want)
    assert len(calls) == 300
    # every value equal, signed zeros among them: that value, a zero as
    # +0.0, on both paths (NumPy's min of mixed zeros may return either)
    for case in range(60):
        n = int(rng.integers(1, 200))
        v = rng.choice([0.0, -0.0], n) if case % 3 else np.full(n, rng.choice([-0.0, 0.0, 2.5, -7.0]))
        monkeypatch.setattr(M, "_MASK_KERNEL", True)
        got = M.otsu_threshold(v)
        monkeypatch.setattr(M, "_MASK_KERNEL", False)
        want = M.otsu_threshold(v)
        assert float(got).hex() == float(want).hex() == (float(v[0]) + 0.0).hex(), (case, got, want)
    assert len(calls) == 360
    for bad in (np.array([1.0, np.nan, 2.0]), np.array([0.0, np.inf])):
        with pytest.raises(ValueError):
            real(bad, 256)
    monkeypatch.setattr(M, "_MASK_KERNEL", True)
    with np.errstate(all="ignore"):
        assert M.otsu_threshold(np.array([np.inf, np.inf])) == np.inf  # all equal: no bins


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (2, 2), (13, 11), (64, 90)])
def test_erode_l1_is_the_numpy_scipy_erosion(monkeypatch, shape):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    cases = [np.ones(shape, bool), np.zeros(shape, bool)] + [rng.random(shape) < p for p in (0.5, 0.9, 0.99)]
    for a in cases:
        for n in range(0, 12):   # (the kernel erodes by the cross up to 8 times, above by distances)
            got = M._erode_diamond(a, n)
            assert got.dtype == bool and got.shape == a.shape
            ref = _numpy_path(monkeypatch, M, "_MASK_KERNEL", M._erode_diamond, a, n)
            np.testing.assert_array_equal(got, ref)
            if n >= 1:
                np.testing.assert_array_equal(got, ndi.binary_erosion(a, iterations=n))


def test_mask_same_with_and_without_kernel(monkeypatch):
    img = make_phantom(seed=6, spacing_mm=0.1).image.pixels
    for margin in (0.0, 1.5, 3.0):
        got = M.breast_mask_and_bbox(img, 0.1, skin_margin_mm=margin)
        ref = _numpy_path(monkeypatch, M, "_MASK_KERNEL",
                          lambda: M.breast_mask_and_bbox(img, 0.1, skin_margin_mm=margin))
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1] == ref[1]
        assert 0.1 < got[0].mean() < 0.95


def test_nlf_samples_parallel_rows_are_the_serial_ones():
    """Above 16384 samples the sample rows run in parallel: the same
    samples, in the same order, on 1, 2 and 3 threads (and a stack)."""
    rng = np.random.default_rng(8)
    img = rng.integers(0, 60000, (700, 905)).astype(np.uint16)
    stack = np.stack([img, img[::-1].copy()])
    for im in (img, img.astype(np.float32), stack):
        k = 2
        nr, nc = -(-(im.shape[-2] - 2) // k), -(-(im.shape[-1] - 2) // k)
        for smask in (None, (rng.random((nr, nc)) < 0.7).view(np.uint8)):
            ref = _kernel.nlf_samples(im, k, smask, 1)
            assert len(ref[0]) > 16384
            for nt in (2, 3):
                for a, b in zip(_kernel.nlf_samples(im, k, smask, nt), ref):
                    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def _largest_filled_scipy(a):
    from scipy import ndimage as ndi

    labels, n = ndi.label(a)
    if n == 0:
        return 0, None
    sizes = ndi.sum_labels(a, labels, index=np.arange(1, n + 1))
    return n, ndi.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))


def _connectivity_cases(shape):
    """Masks whose components join late or only at corners: a
    checkerboard (corners only: 4-connected, every pixel its own
    component), combs joined at their bottom or top row, a spiral,
    a ring holding another component in its hole, and two ties between
    components of the same size (the first in raster order wins, whichever
    ends first)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    out = [(yy + xx) % 2 == 0, (yy + xx) % 2 == 1]
    comb = (xx % 3 == 0)
    comb_b, comb_t = comb.copy(), comb.copy()
    comb_b[-1] = True
    comb_t[0] = True
    out += [comb_b, comb_t, comb_b & (yy % 4 != 1)]
    spiral = np.zeros(shape, bool)
    r0, r1, c0, c1, k = 0, h - 1, 0, w - 1, 0
    while r0 <= r1 and c0 <= c1:
        if k % 2 == 0:
            spiral[r0, c0:c1 + 1] = True
            spiral[r0:r1 + 1, c1] = True
            spiral[r1, c0:c1 + 1] = True
            spiral[r0 + 2:r1 + 1, c0] = True
        r0, r1, c0, c1, k = r0 + 2, r1 - 2, c0 + 2, c1 - 2, k + 1
    out.append(spiral)
    if min(shape) >= 9:
        ring = np.zeros(shape, bool)
        ring[1:h - 1, 1:w - 1] = True
        ring[3:h - 3, 3:w - 3] = False
        ring[h // 2, w // 2] = True       # another component, in the ring's hole
        out.append(ring)
        bars = np.zeros(shape, bool)
        bars[2:h - 1, 1] = True           # the later one in raster order ...
        bars[1:h - 2, w - 2] = True       # ... and this one, the same size, a row higher: the first
        out.append(bars)
        tie = np.zeros(shape, bool)
        s = min(h, w) - 4
        tie[1:1 + s, w - 2] = True         # first in raster order, and ends last
        tie[2, 1:1 + s] = True             # the same size, within one row
        out.append(tie)
    return out


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (8, 1), (3, 3), (17, 23), (120, 97), (1, 300), (300, 1),
                                   (292, 237)])
def test_largest_component_is_scipys(shape):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    cases = [np.zeros(shape, bool), np.ones(shape, bool)]
    for p in (0.3, 0.5, 0.6, 0.8):
        for _ in range(6):
            a = rng.random(shape) < p
            if min(shape) > 2 and rng.random() < 0.5:
                a = ndi.binary_opening(a)
            cases.append(a)
    # two equal squares (the first in raster order wins), one with a hole,
    # and a ring whose hole touches the border
    if min(shape) >= 17:
        a = np.zeros(shape, bool)
        a[1:6, 10:15] = True
        a[8:13, 1:6] = True
        a[10, 3] = False
        cases.append(a)
        b = np.zeros(shape, bool)
        b[0:7, 0:7] = True
        b[0:3, 2:4] = False
        cases.append(b)
    cases += _connectivity_cases(shape)
    for a in cases:
        n, got = _kernel.largest_component(a)
        n_ref, ref = _largest_filled_scipy(a)
        assert n == n_ref
        if n:
            assert got.dtype == bool and got.shape == a.shape
            np.testing.assert_array_equal(got, ref)
        else:
            assert got is None


# --- stacks: the mean projection, and the tile grid's median ---------------

@pytest.mark.parametrize("planes,rows,cols", [(1, 1, 1), (1, 5, 3), (3, 7, 9), (9, 64, 70), (60, 33, 17)])
def test_plane_mean_is_numpys_float32_mean(planes, rows, cols):
    """``_kernel.plane_mean`` is ``x.mean(axis=0, dtype=np.float32)`` bit for
    bit (float32 additions in plane order: values large enough that another
    order would round differently), for uint16 and float32 planes,
    contiguous or every k-th plane of a stack, on 1-3 threads."""
    rng = np.random.default_rng(planes * 100 + rows)
    st = rng.integers(0, 65536, (2 * planes, rows, cols)).astype(np.uint16)
    for x in (st[:planes], st[::2], st[:planes].astype(np.float32) * np.float32(1e3),
              (rng.standard_normal((planes, rows, cols)) * 1e4).astype(np.float32)):
        want = x.mean(axis=0, dtype=np.float32)
        for nt in (1, 2, 3):
            got = _kernel.plane_mean(x, nt)
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
            np.testing.assert_array_equal(D._mean_projection(x, nt).view(np.uint32), want.view(np.uint32))


def test_plane_mean_refuses_other_layouts():
    x = np.zeros((3, 4, 6), np.uint16)
    for bad in (x[:, :, ::2], x[:, ::2], x[::-1], np.zeros((0, 4, 6), np.uint16), x[0]):
        with pytest.raises(ValueError):
            _kernel.plane_mean(bad)
    with pytest.raises(TypeError):
        _kernel.plane_mean(x.astype(np.int32))
    # detect's helper then takes NumPy's mean (the same values)
    y = np.arange(3 * 4 * 6, dtype=np.uint16).reshape(3, 4, 6)[:, :, ::2]
    np.testing.assert_array_equal(D._mean_projection(y, 0), y.mean(axis=0, dtype=np.float32))


def test_median_f32_is_numpys_median():
    """Odd and even lengths, ties, signed zeros (numpy.median's mean turns
    -0 into +0), infinities and huge values."""
    rng = np.random.default_rng(9)
    cases = [np.array([-0.0], np.float32), np.array([-0.0, -0.0], np.float32),
             np.array([0.0, -0.0, -0.0], np.float32), np.array([np.inf, 1, 2], np.float32),
             np.array([3e38, 3e38], np.float32), np.array([-np.inf, np.inf], np.float32)]
    for t in range(400):
        n = int(rng.integers(1, 300))
        a = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e5])).astype(np.float32)
        if t % 3 == 0:
            a = np.round(a, 1)
        if t % 5 == 0:
            a[rng.random(n) < 0.5] = rng.choice([0.0, -0.0])
        cases.append(a)
    with np.errstate(over="ignore", invalid="ignore"):
        for a in cases:
            got, want = D._median_f32(a), float(np.median(a))
            assert got == want or (np.isnan(got) and np.isnan(want)), (a, got, want)
            assert np.signbit(got) == np.signbit(want), (a, got, want)


def test_stack_detect_same_with_and_without_the_kernels(monkeypatch):
    """A stack: the mean projection, the tile grids and the suppression
    across slices in C give what the NumPy code gives."""
    ph = make_phantom(seed=4, spacing_mm=0.2, n_slices=10)
    got = napari_calc.detect(ph.image)
    monkeypatch.setattr(D, "_PEAK_KERNEL", False)
    monkeypatch.setattr(D, "_MERGE_KERNEL", False)
    ref = napari_calc.detect(ph.image)
    assert len(ref.calcifications) > 0
    assert got.calcifications.equals(ref.calcifications)
    assert got.clusters.equals(ref.clusters)
    assert got.extra.equals(ref.extra)


def test_model_arrays_remembered_follow_the_model():
    """_logistic_logit converts a part's coefficients and calibration once
    (_logit_args): the same log-odds as from the lists themselves, and a
    list or calibration replaced is read anew."""
    import copy

    S = importlib.import_module("napari_calc.core.score")
    part = copy.deepcopy(S.load_model()["calcification"])
    X = np.random.default_rng(3).normal(0, 1, (200, len(part["features"])))

    def by_hand(part):
        Z = (S.ramp_basis(X, part["knots"], [tuple(t) for t in part.get("interactions", [])])
             - np.asarray(part["mean"], float)) / np.asarray(part["scale"], float)
        z = Z @ np.asarray(part["coef"], float) + float(part["intercept"])
        return np.interp(z, np.asarray(part["calibration"]["z"], float),
                         np.asarray(part["calibration"]["logit"], float))

    first = S._logistic_logit(X, part)
    np.testing.assert_allclose(first, by_hand(part), rtol=0, atol=1e-12)
    assert S._logistic_logit(X, part).tobytes() == first.tobytes()  # remembered: the same
    part["coef"] = [2 * c for c in part["coef"]]  # replaced lists are read anew
    part["calibration"] = {"z": [-50.0, 50.0], "logit": [-50.0, 50.0]}
    second = S._logistic_logit(X, part)
    assert second.tobytes() != first.tobytes()
    np.testing.assert_allclose(second, by_hand(part), rtol=0, atol=1e-12)
    # a part without knots (the cluster model's kind): its mean and scale too
    clu = copy.deepcopy(S.load_model()["cluster"])
    Xc = np.random.default_rng(4).normal(0, 1, (50, len(clu["features"])))
    a = S._logistic_logit(Xc, clu)
    clu["mean"] = [m + 1.0 for m in clu["mean"]]
    b = S._logistic_logit(Xc, clu)
    want = _in_order((Xc - np.asarray(clu["mean"])) / np.asarray(clu["scale"]), np.asarray(clu["coef"]),
                     clu["intercept"])
    assert a.tobytes() != b.tobytes() and b.tobytes() == want.tobytes()


# --- the candidates' model features ----------------------------------------

def _feature_raw(rng, n):
    """Raw measurements as detect makes them, with the awkward values mixed
    in: NaN, infinities, signed zeros, values on the clip bounds, a zero
    blob strength, a zero ring deviation and a zero smaller eigenvalue."""
    raw = {k: rng.normal(0, 3, n) for k in S._FEATURE_INPUTS + ("h1_g", "h2_g")}
    raw["sigma_px"] = rng.uniform(0.3, 6, n)
    raw["sigma_large_px"] = rng.uniform(3, 20, n)
    raw["nlf_sd"] = rng.uniform(-1e-6, 40, n)
    raw["bg_std"] = rng.exponential(10, n) * rng.choice([0.0, 1.0], n, p=[0.1, 0.9])
    raw["elongation"] = rng.uniform(0.5, 25, n)
    raw["diameter_mm"] = rng.uniform(0.05, 1.0, n)
    raw["area_px"] = rng.uniform(0, 400, n)
    odd = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300, 1.0, 20.0, 1e-6, 5e-324, 1e300])
    for k in raw:
        hit = rng.random(n) < 0.04
        raw[k][hit] = rng.choice(odd, hit.sum())
    if n >= 4:
        raw["h1_rr"][0], raw["h1_cc"][0] = 2.0, -2.0      # b1 = 0
        raw["h1_rr"][1], raw["h1_rc"][1], raw["h1_cc"][1] = 0.0, 0.0, 1.0  # l1 = 0
        raw["h2_rr"][2], raw["h2_rc"][2], raw["h2_cc"][2] = -1.0, 0.0, -1.0  # an isotropic blob
        raw["bg_std"][3], raw["nlf_sd"][3] = 0.0, 0.0
    return raw


def _same_bits_or_both_nan(a, b):
    """Equal to the bit where not NaN, NaN at the same places (a NaN's
    payload may come from either operand)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    np.testing.assert_array_equal(a[~nan].view(np.uint64), b[~nan].view(np.uint64))


@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:divide by zero",
                            "ignore:overflow encountered")
@pytest.mark.parametrize("n", [1, 4, 9, 3000, 5000])
def test_feature_kernel_is_the_numpy_feature_matrix(monkeypatch, n):
    """``candidate_feature_matrix`` from ``_kernel.feature_parts`` (then
    numpy's log) against its NumPy code, on 1 to 3 threads (rows in
    parallel above 4096), and on the dtypes and containers it is given."""
    for seed in range(4):
        raw = _feature_raw(np.random.default_rng(seed * 100 + n), n)
        monkeypatch.setattr(S, "_FEATURE_KERNEL", False)
        want = S.candidate_feature_matrix(raw)
        monkeypatch.setattr(S, "_FEATURE_KERNEL", True)
        got = S.candidate_feature_matrix(raw)
        assert got.flags.c_contiguous and got.shape == (n, len(S.FEATURE_NAMES))
        _same_bits_or_both_nan(got, want)
        if seed == 0:
            if n >= 3000:   # the odd values reached the features
                assert np.isnan(want).any() and np.isinf(want).any()
            as32 = {k: v.astype(np.float32) for k, v in raw.items()}   # converted as NumPy converts
            monkeypatch.setattr(S, "_FEATURE_KERNEL", False)
            want32 = S.candidate_feature_matrix(pd.DataFrame(as32))
            monkeypatch.setattr(S, "_FEATURE_KERNEL", True)
            _same_bits_or_both_nan(S.candidate_feature_matrix(pd.DataFrame(as32)), want32)
        args = [np.ascontiguousarray(raw[k]) for k in S._FEATURE_INPUTS]
        for nt in (1, 2, 3):
            X, logarg = _kernel.feature_parts(args, nt)
            np.log(logarg, out=logarg)
            X[:, S._LOG_COLUMNS] = logarg.T
            _same_bits_or_both_nan(X, want)


def test_feature_kernel_used_and_its_refusals(monkeypatch, spy):
    raw = _feature_raw(np.random.default_rng(1), 50)
    calls = spy(_kernel, "feature_parts")
    with np.errstate(all="ignore"):
        S.candidate_feature_matrix(raw)
    assert len(calls) == 1
    assert S.candidate_feature_matrix({k: v[:0] for k, v in raw.items()}).shape == (0, len(S.FEATURE_NAMES))
    assert len(calls) == 1   # no candidates: nothing to compute
    args = [np.ascontiguousarray(raw[k]) for k in S._FEATURE_INPUTS]
    with pytest.raises(ValueError):
        _kernel.feature_parts(args[:-1])          # one array short
    with pytest.raises(ValueError):
        _kernel.feature_parts(args[:-1] + [args[-1][:10]])   # lengths differ
    for bad in (np.resize(args[-1], 100)[::2], args[-1].astype(np.float32)):   # strided; not float64
        with pytest.raises(ValueError):
            _kernel.feature_parts(args[:-1] + [bad])
    X, logarg = _kernel.feature_parts([a[:0] for a in args])
    assert X.shape == (0, 12) and logarg.shape == (8, 0)


@pytest.mark.parametrize("n,k", [(0, 5), (1, 1), (7, 3), (7, 7), (7, 20), (5000, 3000), (70_000, 3000)])
def test_top_peaks_is_top_k_then_the_gathers(n, k, spy):
    """``_kernel.top_peaks``: the peaks ``_top_k`` keeps (ties at the cut
    included), in their order, and the scale under each, as the NumPy
    indexing gives them; refusals."""
    rng = np.random.default_rng(n + k)
    rows, cols = 300, 250
    scale = rng.integers(0, 7, (rows, 2 * cols), dtype=np.uint8)[:, ::2]   # a strided view, as any
    rr = rng.integers(0, rows, n).astype(np.int32)
    cc = rng.integers(0, cols, n).astype(np.int32)
    val = rng.normal(0, 5, n).astype(np.float32)
    noise = rng.uniform(0.5, 2, n)
    snr = np.round(rng.normal(3, 2, n), 1)   # many ties
    keep = D._top_k(snr, k) if n > k else np.arange(n)
    want = (rr[keep], cc[keep], val[keep], noise[keep], snr[keep], scale[rr[keep], cc[keep]].astype(np.int64))
    for origin in ((0, 0), (40, 3)):   # (a crop's origin: added to the rows and columns returned)
        got = _kernel.top_peaks(rr, cc, val, noise, snr, scale, k, 2, *origin)
        for a, b, add in zip(got, want, origin + (0, 0, 0, 0)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b + add)
    if n:
        bad = snr.copy()
        bad[n // 2] = np.nan
        if n > k:
            with pytest.raises(ValueError):
                _kernel.top_peaks(rr, cc, val, noise, bad, scale, k)
        off = rr.copy()
        off[-1] = rows
        with pytest.raises(ValueError):
            _kernel.top_peaks(off, cc, val, noise, snr, scale, k)
        with pytest.raises(ValueError):
            _kernel.top_peaks(rr, cc[:-1], val, noise, snr, scale, k)


def test_detect_takes_its_peaks_from_top_peaks(monkeypatch, spy):
    """One ``top_peaks`` call per plane, and the same tables without it
    (the noise pass listing every peak: the selection is top_peaks')."""
    img = make_phantom(seed=4, spacing_mm=0.1).image
    monkeypatch.setattr(D, "_NOISE_NMS_TOP", False)
    calls = spy(_kernel, "top_peaks")
    got = napari_calc.detect(img, max_candidates=60)
    assert len(calls) == 1 and len(calls[0][0]) > 60 and calls[0][6] == 60
    monkeypatch.delattr(_kernel, "top_peaks")
    want = napari_calc.detect(img, max_candidates=60)
    for f in ("calcifications", "clusters", "extra"):
        pd.testing.assert_frame_equal(getattr(got, f), getattr(want, f), check_exact=True)


# --- the public tables from arrays -----------------------------------------

def _frame_path(monkeypatch, path):
    """Make frame_of_arrays take ``path``: pandas 3's blocks, pandas'
    private ``_from_arrays``, or the public constructor."""
    from napari_calc.core import _frames

    if path == "blocks":
        assert _frames._from_blocks is not None or pd.__version__ < "3"
    else:
        monkeypatch.setattr(_frames, "_from_blocks", None)
    if path == "public":
        monkeypatch.delattr(pd.DataFrame, "_from_arrays")


@pytest.mark.parametrize("n", [0, 1, 83])
@pytest.mark.parametrize("path", ["blocks", "private", "public"])
def test_frame_of_arrays_is_the_constructors_frame(monkeypatch, n, path):
    """frame_of_arrays (pandas 3's create_dataframe_from_blocks, pandas'
    _from_arrays, or the public constructor where neither is there) gives
    pd.DataFrame's frame: the same columns in order, dtypes (object stays
    object, as a Series of dtype object keeps it), values and index; and it
    does not depend on which path ran."""
    from napari_calc.core._frames import frame_of_arrays

    rng = np.random.default_rng(n)
    cols = {"calc_id": np.arange(n, dtype=np.int64), "y_mm": rng.normal(size=n),
            "flag": rng.random(n) > 0.5, "cluster_id": rng.integers(-1, 3, n),
            "score": rng.random(n).astype(np.float32), "status": np.full(n, "candidate", dtype=object),
            "x_mm": rng.normal(size=n), "c": rng.normal(size=n) + 1j}
    want = pd.DataFrame({k: pd.Series(v, dtype=object) if v.dtype == object else v for k, v in cols.items()})
    _frame_path(monkeypatch, path)
    before = {k: v.copy() for k, v in cols.items()}
    got = frame_of_arrays(cols)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert list(got.dtypes) == [np.dtype(np.int64), np.dtype(np.float64), np.dtype(bool), np.dtype(np.int64),
                                np.dtype(np.float32), np.dtype(object), np.dtype(np.float64),
                                np.dtype(np.complex128)]
    assert got.columns.dtype == want.columns.dtype
    assert isinstance(got.index, pd.RangeIndex) and len(got) == n
    if n:
        got.loc[0, "status"] = "accepted"   # an ordinary frame: edits go in
        assert got["status"].iloc[0] == "accepted" and (n == 1 or got["status"].iloc[1] == "candidate")
        got.loc[0, "y_mm"] = 99.0
        got.iloc[0, 0] = 7
        assert got["y_mm"].iloc[0] == 99.0 and got["calc_id"].iloc[0] == 7
        if path == "blocks":  # the frame owns its data
            for k, v in cols.items():
                np.testing.assert_array_equal(v, before[k])
    # one dtype, and one column
    for one in ({"a": rng.random(n), "b": rng.random(n), "c": rng.random(n)}, {"k": rng.integers(0, 9, n)}):
        pd.testing.assert_frame_equal(frame_of_arrays(one), pd.DataFrame(one), check_exact=True)
    # the column index is a view per frame: renaming one touches no other
    a, b = frame_of_arrays(cols), frame_of_arrays(cols)
    a.columns.name = "renamed"
    assert b.columns.name is None and frame_of_arrays(cols).columns.name is None


def test_frame_of_arrays_leaves_other_dtypes_to_pandas(monkeypatch):
    """Columns NumPy blocks do not hold as they are (datetimes, fixed-width
    strings) go through pandas, as before."""
    from napari_calc.core._frames import frame_of_arrays

    cols = {"t": np.array(["2026-12-07", "2026-12-08"], dtype="datetime64[ns]"), "s": np.array(["a", "b"])}
    pd.testing.assert_frame_equal(frame_of_arrays(cols), pd.DataFrame(cols), check_exact=True)


@pytest.mark.parametrize("path", ["private", "public"])
def test_detect_tables_same_with_and_without_pandas_fast_path(monkeypatch, path):
    """detect's tables (the extra table too) are the same through each
    path of frame_of_arrays (a 2-D image and a stack)."""
    for img in (make_phantom(seed=5, spacing_mm=0.1).image, make_phantom(seed=7, spacing_mm=0.2, n_slices=3).image):
        fast = napari_calc.detect(img)
        with monkeypatch.context() as m:
            _frame_path(m, path)
            slow = napari_calc.detect(img)
        assert len(fast.calcifications) > 5 and len(fast.clusters) > 0
        for f in ("calcifications", "clusters", "extra"):
            pd.testing.assert_frame_equal(getattr(fast, f), getattr(slow, f), check_exact=True)
        assert fast.calcifications["status"].dtype == object
        assert fast.calcifications._mgr.nblocks == 3 and fast.extra._mgr.nblocks == 1  # one block per dtype


# --- numpy.interp in C (the calibrations, the noise-level function) ------------

def _interp_cases(rng):
    """(x, xp, fp): points at spacings from 1e-5 to 1e4, some centred on 0,
    a flat stretch, values overflowing the slope; x everywhere, on the
    points and one ulp either side, beyond both ends, NaN and infinities."""
    for t in range(300):
        m = int(rng.integers(2, 40))
        xp = np.cumsum(rng.exponential(1, m)) * 10.0 ** int(rng.integers(-5, 5))
        if t % 5 == 0:
            xp -= xp.mean()
        fp = rng.normal(0, 10.0 ** int(rng.integers(-3, 3)), m)
        if t % 7 == 0:
            fp[: m // 2] = fp[0]   # flat
        if t % 11 == 0:
            fp[::2] = 1e308        # slopes of +-inf between the points
            fp[1::2] = -1e308
            if t % 2:              # and of NaN where their distance is infinite too
                h = m // 2
                xp = np.concatenate([-1.5e308 * np.linspace(1, 0.9, h), 1.5e308 * np.linspace(0.9, 1, m - h)])
        j, u = rng.integers(0, m - 1, 300), rng.random(300)
        between = xp[j] * (1 - u) + xp[j + 1] * u
        x = np.concatenate([between, xp[0] - rng.random(20) * (1 + abs(xp[0])), xp[-1] + rng.random(20) * (1 + abs(xp[-1])), xp, np.nextafter(xp, np.inf),
                            np.nextafter(xp, -np.inf), [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, -1e308]])
        yield x, xp, fp


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_interp_kernel_is_numpy_interp():
    rng = np.random.default_rng(12)
    for x, xp, fp in _interp_cases(rng):
        want = np.interp(x, xp, fp)
        for nt in (1, 2, 3):
            got = _kernel.interp(x, xp, fp, nt)
            assert got.tobytes() == want.tobytes(), (xp, fp)
    x = rng.normal(0, 3, 20_000)   # rows in parallel (above 4,096)
    xp, fp = np.linspace(-8, 8, 35), np.sort(rng.normal(0, 4, 35))
    for nt in (1, 2, 3):
        assert _kernel.interp(x, xp, fp, nt).tobytes() == np.interp(x, xp, fp).tobytes()
    assert _kernel.interp(x[:0], xp, fp).shape == (0,)


def test_interp_refusals_go_to_numpy(spy):
    x = np.array([0.25, 1.5, np.nan])
    for xp, fp in (([0.0, 1.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]),   # not strictly increasing
                   ([1.0, 0.0], [0.0, 1.0]),                        # decreasing
                   ([0.0], [1.0]),                                  # one point
                   ([0.0, np.inf], [0.0, 1.0]), ([0.0, 1.0], [np.nan, 1.0])):
        xp, fp = np.array(xp), np.array(fp)
        with pytest.raises(ValueError):
            _kernel.interp(x, xp, fp)
        np.testing.assert_array_equal(S.interp(x, xp, fp), np.interp(x, xp, fp))
    with pytest.raises(ValueError):
        _kernel.interp(x, np.arange(3.0), np.arange(4.0))   # lengths differ
    calls = spy(_kernel, "interp")
    xp, fp = np.arange(4.0), np.array([0.0, 2.0, 1.0, 5.0])
    assert S.interp(x, xp, fp).tobytes() == np.interp(x, xp, fp).tobytes() and len(calls) == 1
    for other in (x.astype(np.float32), x.reshape(3, 1), [0.25, 1.5]):   # numpy.interp's own
        np.testing.assert_array_equal(S.interp(other, xp, fp), np.interp(other, xp, fp))
    np.testing.assert_array_equal(S.interp(x, xp, fp * 1j), np.interp(x, xp, fp * 1j))   # complex values
    assert len(calls) == 1


@pytest.mark.parametrize("n_slices", [None, 3])
def test_detect_same_with_and_without_the_interp_kernel(monkeypatch, spy, n_slices):
    image = make_phantom(seed=8, spacing_mm=0.1, n_slices=n_slices).image
    calls = spy(_kernel, "interp")
    on = napari_calc.detect(image, keep_min_score=0.0)
    # the noise-level function's (once per slice measured) and the two calibrations
    assert len(calls) == (n_slices or 1) + 2
    monkeypatch.setattr(S, "_INTERP_KERNEL", False)
    off = napari_calc.detect(image, keep_min_score=0.0)
    assert len(calls) == (n_slices or 1) + 2
    assert len(on.calcifications) > 20
    for a, b in ((on.calcifications, off.calcifications), (on.clusters, off.clusters), (on.extra, off.extra)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 300])
def test_runs_are_numpy_unique_of_sorted_ids(n):
    """cluster._runs (the run boundaries of a sorted array) gives
    np.unique's values, first indices and counts, with its dtypes."""
    from napari_calc.core.cluster import _runs

    rng = np.random.default_rng(n)
    for ids in (np.sort(rng.integers(-1, 5, n)), np.sort(rng.integers(0, 10**12, n)), np.zeros(n, np.int64)):
        ids = ids.astype(np.int64)
        got = _runs(ids)
        want = np.unique(ids, return_index=True, return_counts=True)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
            assert g.dtype == w.dtype


# --- the kernel looked up once -------------------------------------------

def test_core_reads_the_kernel_through_compiled(monkeypatch):
    """``detect``'s steps in C find the extension through
    ``napari_calc.core._compiled.kernel`` (what ``benchmarks/ab_kernel.py``
    swaps), not each through an import of their own: a stand-in put there
    sees the calls of every module (detect, mask, score, cluster), and the
    tables are those of the extension itself."""
    from napari_calc.core import _compiled

    real = _compiled.kernel
    assert real is _kernel
    seen = set()

    class Seen:
        def __getattr__(self, name):
            seen.add(name)
            return getattr(real, name)

    img = make_phantom(seed=4, spacing_mm=0.1).image.pixels
    ref = napari_calc.detect(img, 0.1)
    monkeypatch.setattr(_compiled, "kernel", Seen())
    got = napari_calc.detect(img, 0.1)
    assert {"dog_noise_nms", "block_mean", "breast_blocks", "candidate_features", "local_hessian3",
            "ramp_logit", "neighbour_sums", "radius_clusters"} <= seen, sorted(seen)
    pd.testing.assert_frame_equal(got.calcifications, ref.calcifications, check_exact=True)
    pd.testing.assert_frame_equal(got.clusters, ref.clusters, check_exact=True)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_detect_gives_every_kernel_its_thread_count(monkeypatch, n_threads):
    """``detect(..., n_threads=n)`` runs every C step on n threads: each
    kernel call that takes ``nthreads`` gets n (a batch that runs one
    image a process with ``n_threads=1`` must not start more), for an
    image and for a stack. (The feature matrix's call once took the
    OpenMP default.)"""
    import inspect

    from napari_calc.core import _compiled

    real = _compiled.kernel
    got = []

    class Counted:
        def __getattr__(self, name):
            f = getattr(real, name)
            try:
                sig = inspect.signature(f)
            except (TypeError, ValueError):
                return f
            if "nthreads" not in sig.parameters:
                return f

            def call(*a, **k):
                b = sig.bind(*a, **k)
                b.apply_defaults()
                got.append((name, b.arguments["nthreads"]))
                return f(*a, **k)
            return call

    img = make_phantom(seed=4, spacing_mm=0.1).image.pixels
    monkeypatch.setattr(_compiled, "kernel", Counted())
    napari_calc.detect(img, 0.1, n_threads=n_threads)
    napari_calc.detect(np.stack([img, img[::-1].copy()]), (1.0, 0.1, 0.1), n_threads=n_threads)
    names = {name for name, _ in got}
    assert {"dog_noise_nms", "block_mean", "breast_blocks", "candidate_features", "local_hessian3",
            "feature_parts", "ramp_logit", "interp", "neighbour_sums", "radius_clusters"} <= names, sorted(names)
    assert [(name, nt) for name, nt in got if nt != n_threads] == []


def test_no_kernel_import_inside_the_cores_functions():
    """No function of ``napari_calc.core`` imports the extension itself: a
    function-level ``from .. import _kernel`` runs importlib's Python code
    at every call (a few microseconds each once the kernels have been
    through the caches, 20 times a ``detect`` call)."""
    import ast
    from pathlib import Path

    core = Path(napari_calc.__file__).parent / "core"
    found = []
    for path in sorted(core.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if (isinstance(node, ast.ImportFrom) and node.level >= 1
                        and any(a.name == "_kernel" for a in node.names)):
                    found.append(f"{path.name}:{node.lineno} in {fn.name}")
    # batch's environment report imports it once, off the detection path
    assert found == [f for f in found if f.startswith("batch.py:")] and len(found) <= 1, found


def test_core_steps_without_the_kernel(monkeypatch):
    """With no compiled kernel (``_compiled.kernel`` None, as in a source
    checkout without the built extension) the mask, the noise-level
    function, the context feature, ``interp`` and the clustering take
    their NumPy paths, with the same results as through the kernel."""
    from napari_calc.core import _compiled
    from napari_calc.core.cluster import cluster_calcifications

    ph = make_phantom(seed=6, spacing_mm=0.1)
    img = ph.image.pixels
    rng = np.random.default_rng(6)
    pts = rng.uniform(0, 40, (300, 2))
    prob = rng.uniform(0, 1, 300)
    x = rng.uniform(-5, 105, 1000)
    xp, fp = np.linspace(0, 100, 17), rng.normal(size=17)

    def run():
        tissue, bbox, extents = M.breast_mask_blocks(img, 0.1)
        return (tissue.tissue, bbox, extents, M.block_mean(img, 10, 10),
                M.upscale_mask(tissue.tissue, 10, 10, *img.shape),
                S.noise_level_function(img, tissue), S.context_feature(pts, prob, 5.0), S.interp(x, xp, fp),
                cluster_calcifications(pts, radius_mm=5.0, min_size=3))

    calls = []
    for name in ("breast_blocks", "block_mean", "upscale_mask", "interp", "neighbour_sums", "radius_clusters"):
        real = getattr(_kernel, name)
        monkeypatch.setattr(_kernel, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    with_kernel = run()
    assert {"breast_blocks", "block_mean", "upscale_mask", "interp", "neighbour_sums", "radius_clusters"} <= set(calls)
    calls.clear()
    monkeypatch.setattr(_compiled, "kernel", None)
    without = run()
    assert calls == []
    for a, b in zip(with_kernel, without):
        if isinstance(a, tuple):
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_array_equal(a, b)


def test_detect_without_the_kernel_says_how_to_build_it(monkeypatch):
    """``detect`` has no NumPy path for the DoG and the noise pass: with no
    compiled kernel it raises one ImportError that says how to build it."""
    from napari_calc.core import _compiled

    monkeypatch.setattr(_compiled, "kernel", None)
    with pytest.raises(ImportError, match="compiled C kernel, is missing: build it with"):
        napari_calc.detect(np.zeros((64, 64), np.uint16), 0.1)
