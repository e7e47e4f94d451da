"""Bit-exactness of the per-candidate measurements' fast paths.

``local_hessian``: the AVX2 column sums (8 or 4 columns at a time, the last
block shifted to end at the window's edge; windows inside the image's
columns) against the serial build, which has no AVX2 code
(``NCALC_NO_CLONES``) and takes the plain column sums; ``local_hessian3``
against three ``local_hessian`` calls. ``candidate_features``: the row-span
path (radius tables, integer sums for uint16) against the definition in
csrc/ncalc.h evaluated in Python with the C code's float64 operations in
its order (Python floats are IEEE doubles, math.sqrt is correctly rounded),
so equality is exact, not within a tolerance. ``local_hessian3`` without a
scale's cross derivative: the other values the same bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_calc import _kernel


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _cases(shape, n, seed):
    """Candidates over the image, a quarter of them on its borders."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rows = rng.integers(0, h, n).astype(np.int32)
    cols = rng.integers(0, w, n).astype(np.int32)
    q = n // 16
    rows[:q], cols[q:2 * q] = 0, 0
    rows[2 * q:3 * q], cols[3 * q:4 * q] = h - 1, w - 1
    return rng, rows, cols


def _images(seed):
    rng = np.random.default_rng(seed)
    u16 = (rng.random((120, 157)) * 65535).astype(np.uint16)
    u16[40:60, 30:90] = 65535                      # saturated block
    f32 = (rng.normal(size=(120, 157)) * 300 + 2000).astype(np.float32)
    f32[::7, ::5] = -0.0
    nanf = f32.copy()
    for v, p in ((np.nan, 0.01), (np.inf, 0.005), (-np.inf, 0.005)):
        nanf[rng.random(nanf.shape) < p] = v
    return {"u16": u16, "f32": f32, "f32_nan_inf": nanf}


# window widths 2R + 1 at truncate 3.5: 3 (plain), 5, 7 (4-column blocks),
# 9, 11, 15, 71, 141 (8-column blocks, last block shifted when W % 8 != 0)
HESS_SIGMAS = np.array([0.3, 0.6, 0.958, 1.2, 1.5, 1.9166, 10.0, 20.0973, 2.45, 3.07, 4.9],
                       np.float32)


@pytest.mark.parametrize("name", ["u16", "f32", "f32_nan_inf"])
def test_local_hessian_simd_identical_to_serial_build(serial_kernel, name):
    img = _images(5)[name]
    rng, rows, cols = _cases(img.shape, 400, 6)
    sig = rng.choice(HESS_SIGMAS, len(rows)).astype(np.float32)
    sig[::9] = rng.uniform(0.2, 30.0, len(sig[::9])).astype(np.float32)
    for tr in (3.5, 4.0):
        ref = serial_kernel.local_hessian(img, rows, cols, sig, tr, 0)
        if name != "f32_nan_inf":
            assert np.isfinite(ref).all()
        else:
            assert np.isnan(ref).any() and np.isfinite(ref).any()
        for nt in (1, 2):
            got = _kernel.local_hessian(img, rows, cols, sig, tr, nt)
            # NaN at the same places; every other value with the same bits
            # (a NaN's sign depends on the operand order the compiler
            # chose, and differs between main's own two builds)
            nan = np.isnan(ref)
            np.testing.assert_array_equal(np.isnan(got), nan)
            np.testing.assert_array_equal(_bits(got)[~nan], _bits(ref)[~nan])


@pytest.mark.parametrize("name", ["u16", "f32", "f32_nan_inf"])
def test_local_hessian3_is_three_calls(name):
    img = _images(7)[name]
    rng, rows, cols = _cases(img.shape, 300, 8)
    s1 = rng.choice(HESS_SIGMAS[:6], len(rows)).astype(np.float32)
    s2 = np.ascontiguousarray(2 * s1)
    s3 = np.full(len(rows), 10.0, np.float32)
    for nt in (1, 2):
        got = _kernel.local_hessian3(img, rows, cols, s1, s2, s3, 3.5, nt)
        assert got.shape == (3, 4, len(rows))
        for k, s in enumerate((s1, s2, s3)):
            np.testing.assert_array_equal(_bits(got[k]), _bits(_kernel.local_hessian(img, rows, cols, s, 3.5, nt)))
        # a scale's cross derivative left out: NaN there, every other value
        # the same bits (windows inside the image: AVX2 sums; on its
        # borders: the plain ones)
        for cross in ((True, True, False), (False, True, True), (False, False, False)):
            part = _kernel.local_hessian3(img, rows, cols, s1, s2, s3, 3.5, nt, cross=cross)
            for k in range(3):
                for m in range(4):
                    if m == 2 and not cross[k]:
                        assert np.isnan(part[k, m]).all()
                    else:
                        np.testing.assert_array_equal(_bits(part[k, m]), _bits(got[k, m]))
    empty = np.zeros(0, np.int32)
    assert _kernel.local_hessian3(img, empty, empty, *(np.zeros(0, np.float32),) * 3).shape == (3, 4, 0)
    with pytest.raises(ValueError):
        _kernel.local_hessian3(img, rows, cols, s1, s2, s3, cross=(True, False))
    with pytest.raises(ValueError):
        _kernel.local_hessian3(img, rows, cols, s1, s2, s3[:-1])
    bad = s3.copy()
    bad[5] = 0
    with pytest.raises(Exception):
        _kernel.local_hessian3(img, rows, cols, s1, s2, bad)


def _features_exact(img, rows, cols, radius):
    """The definition of ncalc_candidate_features with the float64 operations
    of its plain loops, in their order."""
    h, w = img.shape
    out = np.zeros((5, len(rows)), np.float32)
    for i, (cr, cc, rad) in enumerate(zip(rows.tolist(), cols.tolist(), radius.tolist())):
        r_inner = rad if rad > 1.0 else 1.0
        r_in = 2.0 * rad if 2.0 * rad > rad + 2.0 else rad + 2.0
        r_out = r_in + (rad if rad > 2.0 else 2.0)
        r_fg = 2.0 * rad if 2.0 * rad > r_inner else r_inner
        R = math.ceil(r_out)
        ra, rb, ca, cb = max(cr - R, 0), min(cr + R, h - 1), max(cc - R, 0), min(cc + R, w - 1)
        win = img[ra:rb + 1, ca:cb + 1].tolist()   # uint16 -> int, float32 -> exact float
        s_in = n_in = s_ring = s2_ring = n_ring = 0.0
        mx = -math.inf
        for r in range(ra, rb + 1):
            for c in range(ca, cb + 1):
                dr, dc = float(r - cr), float(c - cc)
                d = math.sqrt(dr * dr + dc * dc)
                v = float(win[r - ra][c - ca])
                if d <= r_inner:
                    s_in += v; n_in += 1
                    if v > mx:
                        mx = v
                elif d > r_in and d <= r_out:
                    s_ring += v; s2_ring += v * v; n_ring += 1
        bg = s_ring / n_ring if n_ring > 0 else (s_in / n_in if n_in > 0 else 0.0)
        var = (s2_ring - s_ring * s_ring / n_ring) / (n_ring - 1) if n_ring > 1 else 0.0
        pk = mx - bg
        cnt = sw = sr = sc = srr = scc = src = 0.0
        for r in range(ra, rb + 1):
            for c in range(ca, cb + 1):
                dr, dc = float(r - cr), float(c - cc)
                if math.sqrt(dr * dr + dc * dc) > r_fg:
                    continue
                e = float(win[r - ra][c - ca]) - bg
                if pk > 0 and e >= 0.5 * pk:
                    cnt += 1
                if e > 0:
                    sw += e; sr += e * dr; sc += e * dc
                    srr += e * dr * dr; scc += e * dc * dc; src += e * dr * dc
        el = 1.0
        if sw > 0:
            mr, mc = sr / sw, sc / sw
            a, b, dd = srr / sw - mr * mr, src / sw - mr * mc, scc / sw - mc * mc
            tr, det = a + dd, a * dd - b * b
            disc = math.sqrt(max(tr * tr / 4.0 - det, 0.0))
            l1, l2 = tr / 2.0 + disc, tr / 2.0 - disc
            if l2 > 1e-12 and l1 > 0:
                el = math.sqrt(l1 / l2)
            elif l1 > 1e-12:
                el = 1e3
        out[:, i] = [(s_in / n_in if n_in > 0 else 0.0) - bg, math.sqrt(var if var > 0 else 0.0), pk,
                     cnt, el]
    return out


@pytest.mark.parametrize("name", ["u16", "f32"])
def test_candidate_features_exact_definition(serial_kernel, name):
    img = _images(9)[name]
    rng, rows, cols = _cases(img.shape, 160, 10)
    # the detector's radii, others, tiny ones, and r_out > 64 (the plain path)
    radius = rng.choice(np.array([1.3552618, 2.168419, 3.4694703, 8.8818445, 14.210951, 0.05, 0.7,
                                  1.0, 2.0, 4.5, 21.0, 22.0], np.float32), len(rows))
    radius[::11] = rng.uniform(0.1, 30.0, len(radius[::11])).astype(np.float32)
    ref = _features_exact(img, rows, cols, radius)
    for got in (_kernel.candidate_features(img, rows, cols, radius, 1),
                _kernel.candidate_features(img, rows, cols, radius, 2),
                serial_kernel.candidate_features(img, rows, cols, radius, 0)):
        np.testing.assert_array_equal(_bits(got), _bits(ref))
