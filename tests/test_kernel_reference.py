"""The C kernel against SciPy / NumPy references of the same math.

Every test runs twice: on the compiled extension ``napari_calc._kernel``
(OpenMP build when the compiler has it) and on a serial build of the same
``csrc/*.c`` compiled here without ``-fopenmp`` and loaded with ctypes, so
both build modes are checked against the reference.

Tolerances: smoothed images and DoG responses within 1e-4 relative to the
image's value range (float32 accumulation against SciPy's float64); peaks,
noise estimates and thread-count invariance exactly.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_calc import _kernel
from _cbuild import build_c

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
TRUNCATE = 4.0


# ----------------------------------------------------------------------------
# serial build of the C sources, loaded with ctypes, with _kernel's API
# ----------------------------------------------------------------------------

_P = ctypes.c_void_p
_SZ = ctypes.c_ssize_t


def _ptr(a):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


class SerialKernel:
    """The subset of ``napari_calc._kernel`` the tests use, over a ctypes
    library built from ``csrc/*.c`` without OpenMP."""

    def __init__(self, path):
        lib = ctypes.CDLL(str(path))
        self.lib = lib
        lib.ncalc_have_openmp.restype = ctypes.c_int
        lib.ncalc_gaussian.argtypes = [_P, ctypes.c_int, _SZ, _SZ, ctypes.c_double, ctypes.c_double,
                                       _P, ctypes.c_int]
        lib.ncalc_dog_response.argtypes = [_P, ctypes.c_int, _SZ, _SZ, _P, ctypes.c_int,
                                           ctypes.c_double, _P, _P, ctypes.c_int]
        lib.ncalc_mad_noise.argtypes = [_P, _SZ, _SZ, _P, _SZ]
        lib.ncalc_mad_noise.restype = ctypes.c_double
        lib.ncalc_tile_noise.argtypes = [_P, _SZ, _SZ, _P, _SZ, _SZ, _P, ctypes.c_int]
        lib.ncalc_nms.argtypes = [_P, _SZ, _SZ, _P, _P, _SZ, ctypes.c_float, ctypes.c_int,
                                  _P, _P, _SZ]
        lib.ncalc_nms.restype = _SZ
        lib.ncalc_candidate_features.argtypes = [_P, ctypes.c_int, _SZ, _SZ, _P, _P, _P, _SZ,
                                                 _P, _P, _P, _P, _P, ctypes.c_int]
        lib.ncalc_local_hessian.argtypes = [_P, ctypes.c_int, _SZ, _SZ, _P, _P, _P, _SZ, ctypes.c_double,
                                            _P, _P, _P, _P, ctypes.c_int]
        lib.ncalc_block_mean.argtypes = [_P, ctypes.c_int, _SZ, _SZ, _SZ, _SZ, _P, ctypes.c_int]
        lib.ncalc_tile_noise_strided.argtypes = [_P, _SZ, _SZ, _P, _SZ, _SZ, _SZ, _P, ctypes.c_int]
        lib.ncalc_noise_nms.argtypes = [_P, _SZ, _SZ, _P, _SZ, _SZ, _SZ, ctypes.c_float, ctypes.c_int, _P,
                                        _P, _P, _P, _SZ, _SZ, ctypes.c_int]
        lib.ncalc_noise_nms.restype = _SZ
        lib.ncalc_noise_nms_blocks.argtypes = [_P, _SZ, _SZ, _P, _SZ, _SZ, _SZ, _SZ, _SZ, _SZ, _SZ, _SZ,
                                               ctypes.c_float, ctypes.c_int, _P, _P, _P, _P, _SZ, _SZ,
                                               ctypes.c_int]
        lib.ncalc_noise_nms_blocks.restype = _SZ
        lib.ncalc_peak_values.argtypes = [_P, _SZ, _SZ, _P, _SZ, _P, _P, _P, _SZ, _P, _P, _P, _P,
                                          ctypes.c_int]
        self.has_pyramid = hasattr(lib, "ncalc_dog_pyramid")
        if self.has_pyramid:
            lib.ncalc_dog_pyramid.argtypes = [_P, ctypes.c_int, _SZ, _SZ, _P, ctypes.c_int,
                                              ctypes.c_double, ctypes.c_double, ctypes.c_double,
                                              ctypes.c_int, _P, _P, ctypes.c_int]

        self.has_octaves = hasattr(lib, "ncalc_dog_octaves")
        if self.has_octaves:
            lib.ncalc_dog_octaves.argtypes = [_P, ctypes.c_int, _SZ, _SZ, _P, ctypes.c_int,
                                              ctypes.c_double, ctypes.c_double, ctypes.c_int,
                                              _P, _P, ctypes.c_int]
            lib.ncalc_dog_octaves_rows.argtypes = [_P, ctypes.c_int, _SZ, _SZ, _SZ, _P, ctypes.c_int,
                                                   ctypes.c_double, ctypes.c_double, ctypes.c_int,
                                                   _P, _P, _P, _P, ctypes.c_int]
            lib.ncalc_mask_row_ranges.argtypes = [_P, _SZ, _SZ, _SZ, ctypes.c_int, _P, _P, ctypes.c_int]
        self.has_dog_noise = hasattr(lib, "ncalc_dog_noise_nms")
        if self.has_dog_noise:
            lib.ncalc_dog_noise_nms.argtypes = [_P, ctypes.c_int, _SZ, _SZ, _SZ, _P, ctypes.c_int,
                                                ctypes.c_double, ctypes.c_double, ctypes.c_int, _P, _P, _P,
                                                _P, _P, _SZ, _P, _SZ, _SZ, _SZ, _SZ, _SZ, _SZ, _SZ, _SZ,
                                                ctypes.c_float, ctypes.c_int, _P, _P, _P, _P, _SZ, _SZ,
                                                ctypes.c_int]
            lib.ncalc_dog_noise_nms.restype = _SZ

    @staticmethod
    def _dt(img):
        if img.dtype == np.uint16:
            return 0
        if img.dtype == np.float32:
            return 1
        raise TypeError("kernel input must be uint16 or float32")

    @staticmethod
    def _check(st):
        if st == -2:
            raise MemoryError
        if st != 0:
            raise ValueError("invalid argument")

    def openmp_enabled(self):
        return bool(self.lib.ncalc_have_openmp())

    def gaussian(self, img, sigma, truncate=4.0, nthreads=0):
        out = np.empty(img.shape, np.float32)
        self._check(self.lib.ncalc_gaussian(_ptr(img), self._dt(img), img.shape[0], img.shape[1],
                                            sigma, truncate, _ptr(out), nthreads))
        return out

    def dog_response(self, img, sigmas, truncate=4.0, nthreads=0):
        sig = np.ascontiguousarray(sigmas, np.float64)
        resp = np.empty(img.shape, np.float32)
        scale = np.empty(img.shape, np.uint8)
        self._check(self.lib.ncalc_dog_response(_ptr(img), self._dt(img), img.shape[0], img.shape[1],
                                                _ptr(sig), len(sig), truncate, _ptr(resp),
                                                _ptr(scale), nthreads))
        return resp, scale

    def dog_pyramid(self, img, sigmas, truncate=4.0, split_sigma=2.0, prefilter_sigma=1.5,
                    max_levels=1, nthreads=0):
        sig = np.ascontiguousarray(sigmas, np.float64)
        resp = np.empty(img.shape, np.float32)
        scale = np.empty(img.shape, np.uint8)
        self._check(self.lib.ncalc_dog_pyramid(_ptr(img), self._dt(img), img.shape[0], img.shape[1],
                                               _ptr(sig), len(sig), truncate, split_sigma,
                                               prefilter_sigma, max_levels, _ptr(resp), _ptr(scale),
                                               nthreads))
        return resp, scale

    def dog_octaves(self, img, sigmas, truncate=4.0, split_sigma=1.9, max_levels=16, nthreads=0, out=None,
                    ranges=None):
        sig = np.ascontiguousarray(sigmas, np.float64)
        resp, scale = out if out is not None else (np.empty(img.shape, np.float32),
                                                   np.empty(img.shape, np.uint8))
        if ranges is None:
            self._check(self.lib.ncalc_dog_octaves(_ptr(img), self._dt(img), img.shape[0], img.shape[1],
                                                   _ptr(sig), len(sig), truncate, split_sigma, max_levels,
                                                   _ptr(resp), _ptr(scale), nthreads))
        else:
            lo, hi = (np.ascontiguousarray(a, np.int32) for a in ranges)
            self._check(self.lib.ncalc_dog_octaves_rows(_ptr(img), self._dt(img), img.shape[0], img.shape[1],
                                                        img.shape[1], _ptr(sig), len(sig), truncate,
                                                        split_sigma, max_levels, _ptr(lo), _ptr(hi),
                                                        _ptr(resp), _ptr(scale), nthreads))
        return resp, scale

    def mask_row_ranges(self, mask, pad=0, nthreads=0):
        lo = np.empty(mask.shape[0], np.int32)
        hi = np.empty(mask.shape[0], np.int32)
        self._check(self.lib.ncalc_mask_row_ranges(_ptr(mask), mask.shape[0], mask.shape[1], mask.shape[1], pad,
                                                   _ptr(lo), _ptr(hi), nthreads))
        return lo, hi

    def mad_noise(self, x, mask=None, stride=1):
        s = self.lib.ncalc_mad_noise(_ptr(x), x.shape[0], x.shape[1], _ptr(mask), stride)
        if s == -1.0:
            raise MemoryError
        return s

    def tile_noise(self, x, tile, mask=None, min_count=16, nthreads=0, stride=1):
        gh, gw = -(-x.shape[0] // tile), -(-x.shape[1] // tile)
        grid = np.empty((gh, gw), np.float32)
        if stride == 1:
            self._check(self.lib.ncalc_tile_noise(_ptr(x), x.shape[0], x.shape[1], _ptr(mask), tile,
                                                  min_count, _ptr(grid), nthreads))
        else:
            self._check(self.lib.ncalc_tile_noise_strided(_ptr(x), x.shape[0], x.shape[1], _ptr(mask),
                                                          tile, stride, min_count, _ptr(grid), nthreads))
        return grid

    def nms(self, resp, k, radius, mask=None, grid=None, tile=1):
        cap = 4096
        while True:
            rr = np.empty(cap, np.int32)
            cc = np.empty(cap, np.int32)
            n = self.lib.ncalc_nms(_ptr(resp), resp.shape[0], resp.shape[1], _ptr(mask), _ptr(grid),
                                   tile, k, radius, _ptr(rr), _ptr(cc), cap)
            if n < 0:
                self._check(n)
            if n <= cap:
                return rr[:n].copy(), cc[:n].copy()
            cap = n

    def noise_nms(self, resp, tile, mask=None, min_count=16, k=3.0, radius=1, nthreads=0, values=False,
                  blocks=None, top=0):
        grid = np.empty((-(-resp.shape[0] // tile), -(-resp.shape[1] // tile)), np.float32)
        ld = resp.shape[1] if mask is None else mask.strides[0]
        if blocks is not None:
            small, fy, fx, row0, col0 = blocks
            small = np.ascontiguousarray(small, dtype=np.uint8)
        cap = 4096
        while True:
            rr = np.empty(cap, np.int32)
            cc = np.empty(cap, np.int32)
            val = np.empty(cap, np.float32) if values else None
            if blocks is not None:
                n = self.lib.ncalc_noise_nms_blocks(
                    _ptr(resp), resp.shape[0], resp.shape[1], _ptr(small), small.shape[0], small.shape[1],
                    fy, fx, row0, col0, tile, min_count, k, radius, _ptr(grid), _ptr(rr), _ptr(cc),
                    _ptr(val), cap, top, nthreads)
            else:
                n = self.lib.ncalc_noise_nms(_ptr(resp), resp.shape[0], resp.shape[1], _ptr(mask), ld, tile,
                                             min_count, k, radius, _ptr(grid), _ptr(rr), _ptr(cc), _ptr(val),
                                             cap, top, nthreads)
            if n == -3:
                return None
            if n < 0:
                self._check(n)
            if n <= cap:
                break
            cap = n
        rr, cc = rr[:n].copy(), cc[:n].copy()
        if not values:
            return grid, rr, cc
        val = val[:n].copy()
        noise = np.empty(max(n, 1))
        snr = np.empty(max(n, 1))
        self._check(self.lib.ncalc_peak_values(None, resp.shape[0], resp.shape[1], _ptr(grid), tile, None,
                                               _ptr(rr), _ptr(cc), n, _ptr(val), _ptr(noise), _ptr(snr),
                                               None, nthreads))
        return grid, rr, cc, val, noise[:n], snr[:n]

    def dog_noise_nms(self, img, sigmas, truncate, split_sigma, max_levels, nthreads, out, ranges, tile,
                      mask=None, min_count=16, k=3.0, radius=1, blocks=None, top=0, cap=4096):
        """As ``_kernel.dog_noise_nms``; ``cap``: the peaks' room of the
        combined call (more peaks: noise_nms again on the merged response,
        as the extension does)."""
        sig = np.ascontiguousarray(sigmas, np.float64)
        resp, scale = out
        lo = hi = None
        if ranges is not None:
            lo, hi = (np.ascontiguousarray(a, np.int32) for a in ranges)
        small, hh, ww, fy, fx, row0, col0 = None, 0, 0, 0, 0, 0, 0
        if blocks is not None:
            small, fy, fx, row0, col0 = blocks
            small = np.ascontiguousarray(small, dtype=np.uint8)
            hh, ww = small.shape
        ld = img.shape[1] if mask is None else mask.strides[0]
        grid = np.empty((-(-img.shape[0] // tile), -(-img.shape[1] // tile)), np.float32)
        rr = np.empty(cap, np.int32)
        cc = np.empty(cap, np.int32)
        val = np.empty(cap, np.float32)
        n = self.lib.ncalc_dog_noise_nms(
            _ptr(img), self._dt(img), img.shape[0], img.shape[1], img.shape[1], _ptr(sig), len(sig), truncate,
            split_sigma, max_levels, _ptr(lo), _ptr(hi), _ptr(resp), _ptr(scale), _ptr(mask), ld, _ptr(small),
            hh, ww, fy, fx, row0, col0, tile, min_count, k, radius, _ptr(grid), _ptr(rr), _ptr(cc), _ptr(val),
            cap, top, nthreads)
        if n == -3:
            return resp, scale, None
        if n < 0:
            self._check(n)
        if n > cap:
            return resp, scale, self.noise_nms(resp, tile, mask, min_count, k, radius, nthreads, values=True,
                                               blocks=blocks, top=top)
        noise = np.empty(max(n, 1))
        snr = np.empty(max(n, 1))
        self._check(self.lib.ncalc_peak_values(None, resp.shape[0], resp.shape[1], _ptr(grid), tile, None,
                                               _ptr(rr), _ptr(cc), n, _ptr(val), _ptr(noise), _ptr(snr),
                                               None, nthreads))
        return resp, scale, (grid, rr[:n].copy(), cc[:n].copy(), val[:n].copy(), noise[:n], snr[:n])

    def candidate_features(self, img, rows, cols, radius, nthreads=0):
        n = len(rows)
        out = np.zeros((5, max(n, 1)), np.float32)
        if n:
            self._check(self.lib.ncalc_candidate_features(
                _ptr(img), self._dt(img), img.shape[0], img.shape[1], _ptr(rows), _ptr(cols),
                _ptr(radius), n, _ptr(out[0]), _ptr(out[1]), _ptr(out[2]), _ptr(out[3]),
                _ptr(out[4]), nthreads))
        return out[:, :n]


    def local_hessian(self, img, rows, cols, sigma, truncate=3.5, nthreads=0):
        n = len(rows)
        out = np.zeros((4, max(n, 1)), np.float32)
        if n:
            self._check(self.lib.ncalc_local_hessian(
                _ptr(img), self._dt(img), img.shape[0], img.shape[1], _ptr(rows), _ptr(cols),
                _ptr(sigma), n, truncate, _ptr(out[0]), _ptr(out[1]), _ptr(out[2]), _ptr(out[3]),
                nthreads))
        return out[:, :n]

    def block_mean(self, img, fy, fx, nthreads=0):
        out = np.empty((img.shape[0] // fy, img.shape[1] // fx), np.float64)
        if out.size:
            self._check(self.lib.ncalc_block_mean(_ptr(img), self._dt(img), img.shape[0], img.shape[1],
                                                  fy, fx, _ptr(out), nthreads))
        return out


def build_serial_kernel(folder: Path, run=None) -> SerialKernel:
    """``csrc/*.c`` built into ``folder`` without OpenMP and loaded with
    ctypes (the ``serial_kernel`` fixture of conftest.py: one build for the
    whole session, whichever module asks first); ``run`` runs the compiler
    calls (``build_c``'s)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the serial kernel")
    out = folder / "libncalc_serial.so"
    srcs = sorted(str(p) for p in CSRC.glob("*.c"))
    # the flags of setup.py, without -fopenmp, and without the AVX2 clones
    # (so that comparing with the extension also checks that the SSE2 and
    # AVX2 code paths give bit-identical results)
    res = build_c(cc, ["-O3", "-std=c99", "-DNCALC_NO_CLONES"], srcs, out, shared=True, include=CSRC,
                  **({"run": run} if run else {}))
    assert res.returncode == 0, res.stderr
    k = SerialKernel(out)
    assert not k.openmp_enabled()
    return k


@pytest.fixture(params=["extension", "serial"])
def kern(request):
    """The compiled extension (OpenMP when available) and the serial build."""
    if request.param == "extension":
        return _kernel
    return request.getfixturevalue("serial_kernel")


# ----------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------

def ref_gaussian(img, sigma, truncate=TRUNCATE):
    return ndi.gaussian_filter(np.asarray(img, np.float64), sigma, mode="reflect", truncate=truncate)


def ref_dog(img, sigmas, truncate=TRUNCATE):
    """All DoG levels G(s_i) - G(s_i+1), float64, shape (n-1, rows, cols)."""
    g = [ref_gaussian(img, s, truncate) for s in sigmas]
    return np.stack([g[i] - g[i + 1] for i in range(len(g) - 1)])


def ref_nms(resp, k, radius, mask=None, grid=None, tile=1):
    """Window maxima (outside the image does not count) above the threshold."""
    resp = np.asarray(resp, np.float32)
    mx = ndi.maximum_filter(resp, size=2 * radius + 1, mode="constant", cval=-np.inf)
    if grid is None:
        thr = np.float32(k)
    else:
        r_idx = np.arange(resp.shape[0]) // tile
        c_idx = np.arange(resp.shape[1]) // tile
        thr = np.float32(k) * grid[np.ix_(r_idx, c_idx)]
    peaks = (resp >= mx) & (resp > thr)
    if mask is not None:
        peaks &= mask != 0
    return np.nonzero(peaks)


def lower_median(v):
    return np.partition(v, (len(v) - 1) // 2)[(len(v) - 1) // 2]


def ref_mad(values):
    v = np.asarray(values, np.float32)
    if len(v) < 2:
        return math.nan
    med = lower_median(v)
    return 1.4826 * float(lower_median(np.abs(v - med)))


def ref_tile_mad(x, tile, mask, min_count):
    """Per tile x tile block the MAD of its masked pixels (ref_mad), float32;
    NaN with fewer than max(min_count, 2) of them."""
    gh, gw = -(-x.shape[0] // tile), -(-x.shape[1] // tile)
    grid = np.empty((gh, gw), np.float32)
    for i in range(gh):
        for j in range(gw):
            blk = x[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile]
            if mask is not None:
                blk = blk[mask[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] != 0]
            blk = blk.ravel()
            grid[i, j] = np.float32(ref_mad(blk)) if len(blk) >= max(min_count, 2) else np.nan
    return grid


def ref_features(img, rows, cols, radius):
    """NumPy version of the candidate feature definitions in csrc/ncalc.h."""
    img = np.asarray(img, np.float64)
    h, w = img.shape
    out = np.zeros((5, len(rows)))
    yy, xx = np.mgrid[0:h, 0:w]
    for i, (r, c, rad) in enumerate(zip(rows, cols, radius)):
        rad = float(rad)
        d = np.sqrt((yy - r) ** 2.0 + (xx - c) ** 2.0)
        r_inner = max(rad, 1.0)
        r_in = max(2 * rad, rad + 2)
        r_out = r_in + max(rad, 2.0)
        inner = d <= r_inner
        ring = (d > r_in) & (d <= r_out)
        vin, vring = img[inner], img[ring]
        bg = vring.mean() if vring.size else vin.mean()
        std = vring.std(ddof=1) if vring.size > 1 else 0.0
        pk = vin.max() - bg
        fg = d <= max(2 * rad, r_inner)
        e = img[fg] - bg
        area = np.count_nonzero(e >= 0.5 * pk) if pk > 0 else 0
        wgt = np.maximum(e, 0)
        el = 1.0
        if wgt.sum() > 0:
            dr, dc = (yy[fg] - r).astype(float), (xx[fg] - c).astype(float)
            sw = wgt.sum()
            mr, mc = (wgt * dr).sum() / sw, (wgt * dc).sum() / sw
            a = (wgt * dr * dr).sum() / sw - mr * mr
            b = (wgt * dr * dc).sum() / sw - mr * mc
            dd = (wgt * dc * dc).sum() / sw - mc * mc
            tr, det = a + dd, a * dd - b * b
            disc = math.sqrt(max(tr * tr / 4 - det, 0.0))
            l1, l2 = tr / 2 + disc, tr / 2 - disc
            if l2 > 1e-12 and l1 > 0:
                el = math.sqrt(l1 / l2)
            elif l1 > 1e-12:
                el = 1e3
        out[:, i] = [vin.mean() - bg, std, pk, area, el]
    return out


def close_to_ref(got, ref, img):
    """Within 1e-4 of the image's value range (and 1e-4 relative)."""
    scale = max(float(np.max(np.abs(np.asarray(img, np.float64)))), 1e-30)
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=1e-4, atol=1e-4 * scale)


# ----------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------

def _random_u16(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 4096, size=shape, dtype=np.uint16)


def _random_f32(shape, seed=0):
    return np.random.default_rng(seed).normal(100.0, 30.0, size=shape).astype(np.float32)


@pytest.fixture(scope="module")
def phantom_img():
    from napari_calc.core.phantom import make_phantom

    ph = make_phantom(seed=3, spacing_mm=0.4, shape=(240, 200))
    return np.ascontiguousarray(ph.image.pixels)


TINY_SHAPES = [(1, 1), (2, 7), (7, 2), (1, 9), (9, 1), (2, 2), (3, 5)]
SIGMAS = [0.5, 1.3, 3.7, 9.0]


# ----------------------------------------------------------------------------
# Gaussian
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(37, 53), (64, 31)])
def test_gaussian_matches_scipy(kern, dtype, shape):
    img = _random_u16(shape) if dtype == np.uint16 else _random_f32(shape)
    for s in SIGMAS:
        close_to_ref(kern.gaussian(img, s, TRUNCATE, 0), ref_gaussian(img, s), img)


@pytest.mark.parametrize("shape", TINY_SHAPES)
def test_gaussian_tiny_and_borders(kern, shape):
    # kernels much wider than the image: SciPy's reflect repeats with period 2n
    img = _random_u16(shape, seed=7)
    for s in SIGMAS:
        close_to_ref(kern.gaussian(img, s, TRUNCATE, 0), ref_gaussian(img, s), img)


def test_gaussian_zero_sigma_is_identity(kern):
    img = _random_f32((9, 11))
    np.testing.assert_array_equal(kern.gaussian(img, 0.0, TRUNCATE, 0), img)


def test_gaussian_truncate(kern):
    img = _random_f32((40, 45), seed=2)
    for t in (1.0, 2.5):
        close_to_ref(kern.gaussian(img, 2.0, t, 0), ref_gaussian(img, 2.0, t), img)


def test_gaussian_phantom(kern, phantom_img):
    close_to_ref(kern.gaussian(phantom_img, 1.7, TRUNCATE, 0), ref_gaussian(phantom_img, 1.7), phantom_img)


# ----------------------------------------------------------------------------
# DoG response and best scale
# ----------------------------------------------------------------------------

DOG_SIGMAS = [0.5, 0.8, 1.28, 2.05, 3.28, 5.24]


def check_dog(resp, scale, img, sigmas):
    dogs = ref_dog(img, sigmas)
    ref_resp = dogs.max(axis=0)
    close_to_ref(resp, ref_resp, img)
    # best scale: exact wherever the winner is clear beyond the tolerance
    tol = 1e-4 * float(np.max(np.abs(np.asarray(img, np.float64))))
    srt = np.sort(dogs, axis=0)
    clear = (srt[-1] - srt[-2] > 2 * tol) if len(dogs) > 1 else np.ones(img.shape, bool)
    ref_scale = dogs.argmax(axis=0)
    assert clear.mean() > 0.3  # the check below is not vacuous
    np.testing.assert_array_equal(scale[clear], ref_scale[clear])
    assert scale.max() <= len(sigmas) - 2


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_dog_matches_scipy_random(kern, dtype):
    img = _random_u16((61, 47), 1) if dtype == np.uint16 else _random_f32((61, 47), 1)
    resp, scale = kern.dog_response(img, DOG_SIGMAS, TRUNCATE, 0)
    check_dog(resp, scale, img, DOG_SIGMAS)


def test_dog_matches_scipy_phantom(kern, phantom_img):
    resp, scale = kern.dog_response(phantom_img, DOG_SIGMAS, TRUNCATE, 0)
    check_dog(resp, scale, phantom_img, DOG_SIGMAS)


@pytest.mark.parametrize("shape", TINY_SHAPES)
def test_dog_tiny(kern, shape):
    img = _random_u16(shape, seed=5)
    resp, scale = kern.dog_response(img, DOG_SIGMAS[:3], TRUNCATE, 0)
    close_to_ref(resp, ref_dog(img, DOG_SIGMAS[:3]).max(axis=0), img)


def test_dog_bright_blob_at_border(kern):
    # a blob on the corner: reflect mode mirrors it, so the response peaks there
    img = _random_u16((40, 50), 15) // 64 + 100
    img[0:2, 0:2] = 1000
    img[20:23, 48:50] = 1000
    resp, scale = kern.dog_response(img, DOG_SIGMAS, TRUNCATE, 0)
    check_dog(resp, scale, img, DOG_SIGMAS)
    assert resp[0, 0] == resp[:8, :8].max() > 0


def test_dog_rejects_bad_sigmas(kern):
    img = _random_u16((8, 8))
    with pytest.raises(ValueError):
        kern.dog_response(img, [2.0, 1.0], TRUNCATE, 0)
    with pytest.raises(ValueError):
        kern.dog_response(img, [1.0], TRUNCATE, 0)


# ----------------------------------------------------------------------------
# octave-pyramid DoG (ncalc_dog_pyramid): the same recursion in SciPy
# ----------------------------------------------------------------------------

def ref_upsample(c, shape):
    """Node (j, l) at pixel (2j, 2l); odd rows/cols: mean of the two
    neighbouring nodes (the last node alone past the end)."""
    rows, cols = shape
    cr, cc = c.shape
    r = np.arange(rows)
    j0 = r // 2
    j1 = np.where((r % 2 == 1) & (j0 + 1 < cr), j0 + 1, j0)
    t = 0.5 * (c[j0] + c[j1])
    col = np.arange(cols)
    l0 = col // 2
    l1 = np.where((col % 2 == 1) & (l0 + 1 < cc), l0 + 1, l0)
    return 0.5 * (t[:, l0] + t[:, l1])


def ref_pyramid(img, sigmas, truncate, split, pre, levels, tol):
    """(resp, scale, clear): clear marks pixels whose winning scale beats the
    runner-up by more than 2 tol (there the scale must agree exactly)."""
    sigmas = list(sigmas)
    n = len(sigmas)
    m = n - 1
    if levels > 0:
        for i in range(n - 1):
            if sigmas[i] >= split:
                m = i
                break
    resp = scale = clear = None
    if m >= 1:
        dogs = ref_dog(img, sigmas[: m + 1], truncate)
        resp, scale = dogs.max(axis=0), dogs.argmax(axis=0)
        srt = np.sort(dogs, axis=0)
        clear = (srt[-1] - srt[-2] > 2 * tol) if m > 1 else np.ones(resp.shape, bool)
    if m < n - 1:
        low = ref_gaussian(img, pre, truncate)[::2, ::2]
        sub = [math.sqrt(s * s - pre * pre) / 2 for s in sigmas[m:]]
        cr, cs, ccl = ref_pyramid(low, sub, truncate, split, pre, levels - 1, tol)
        up = ref_upsample(cr, img.shape)
        ri, ci = np.arange(img.shape[0]) // 2, np.arange(img.shape[1]) // 2
        us = cs[np.ix_(ri, ci)] + m
        ucl = ccl[np.ix_(ri, ci)]
        if resp is None:
            resp, scale, clear = up, us, ucl
        else:
            gt = up > resp
            clear = np.where(gt, ucl, clear) & (np.abs(up - resp) > 2 * tol)
            resp, scale = np.where(gt, up, resp), np.where(gt, us, scale)
    return resp, scale, clear


PYR_SIGMAS = [0.5, 0.8, 1.28, 2.05, 3.28, 5.24, 8.4]


def check_pyramid(kern, img, sigmas, split=2.0, pre=1.5, levels=1, min_clear=0.3):
    resp, scale = kern.dog_pyramid(img, sigmas, TRUNCATE, split, pre, levels, 0)
    tol = 1e-4 * float(np.max(np.abs(np.asarray(img, np.float64))))
    rr, rs, clear = ref_pyramid(np.asarray(img, np.float64), sigmas, TRUNCATE, split, pre, levels, tol)
    close_to_ref(resp, rr, img)
    assert clear.mean() > min_clear  # the check below is not vacuous
    np.testing.assert_array_equal(scale[clear], rs[clear])
    assert scale.max() <= len(sigmas) - 2
    return resp, scale


@pytest.mark.parametrize("levels", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_pyramid_matches_scipy_random(kern, dtype, levels):
    img = _random_u16((67, 81), 21) if dtype == np.uint16 else _random_f32((67, 81), 21)
    check_pyramid(kern, img, PYR_SIGMAS, levels=levels)


@pytest.mark.parametrize("levels", [1, 2])
def test_pyramid_matches_scipy_phantom(kern, phantom_img, levels):
    check_pyramid(kern, phantom_img, PYR_SIGMAS, levels=levels)


def test_pyramid_odd_and_even_shapes(kern):
    for shape in [(40, 41), (41, 40), (33, 33), (34, 34)]:
        check_pyramid(kern, _random_u16(shape, 22), PYR_SIGMAS, levels=2)


def test_pyramid_all_scales_coarse(kern):
    img = _random_f32((50, 44), 23)
    check_pyramid(kern, img, [2.5, 4.0, 6.4], levels=1)
    check_pyramid(kern, img, [2.5, 4.0, 6.4, 10.2], split=2.2, pre=1.2, levels=3)


@pytest.mark.parametrize("shape", TINY_SHAPES)
def test_pyramid_tiny(kern, shape):
    img = _random_u16(shape, 24)
    resp, _ = kern.dog_pyramid(img, PYR_SIGMAS, TRUNCATE, 2.0, 1.5, 2, 0)
    tol = 1e-4 * float(img.max())
    rr, _, _ = ref_pyramid(img.astype(np.float64), PYR_SIGMAS, TRUNCATE, 2.0, 1.5, 2, tol)
    close_to_ref(resp, rr, img)


def test_pyramid_level0_is_dog_response(kern, phantom_img):
    a = kern.dog_pyramid(phantom_img, PYR_SIGMAS, TRUNCATE, 2.0, 1.5, 0, 0)
    b = kern.dog_response(phantom_img, PYR_SIGMAS, TRUNCATE, 0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_pyramid_rejects_bad_arguments(kern):
    img = _random_u16((8, 8))
    with pytest.raises(ValueError):
        kern.dog_pyramid(img, PYR_SIGMAS, TRUNCATE, 1.0, 1.5, 1, 0)  # split <= prefilter
    with pytest.raises(ValueError):
        kern.dog_pyramid(img, PYR_SIGMAS, TRUNCATE, 2.0, 1.5, -1, 0)


def test_pyramid_close_to_exact_dog_on_phantom(phantom_img):
    """Not a tolerance of the same math: how far the octave approximation is
    from the full-resolution DoG, bounded so a regression shows."""
    exact, _ = _kernel.dog_response(phantom_img, PYR_SIGMAS, TRUNCATE, 0)
    approx, _ = _kernel.dog_pyramid(phantom_img, PYR_SIGMAS, TRUNCATE, 2.0, 1.5, 1, 0)
    err = np.abs(approx.astype(np.float64) - exact)
    assert np.percentile(err, 99) < 0.1 * np.percentile(np.abs(exact), 99)


# ----------------------------------------------------------------------------
# octave DoG (ncalc_dog_octaves): each coarser level is the last Gaussian of
# the level above, decimated; the same recursion in SciPy
# ----------------------------------------------------------------------------

OCT_MIN_SIDE = 32  # a level smaller than this in either direction is the last
# detect's scales at 0.07 mm (dog_sigmas(0.07, 0.15, 1.0)), rounded
SIGMAS_007 = [0.758, 1.212, 1.939, 3.103, 4.965, 7.944, 12.71]


def ref_octaves(img, sigmas, truncate, split, max_levels, tol, level=0, first=0, base=0.0):
    """(resp, scale, clear) of the definition in ncalc.h, in float64; clear
    marks pixels whose winning pair beats the runner-up by more than 2 tol."""
    sigmas = list(sigmas)
    n = len(sigmas)
    f = 2.0 ** level
    e = n - 1
    if level < max_levels and min(img.shape) >= OCT_MIN_SIDE:
        for i in range(first + 1, n - 1):
            if sigmas[i] >= split * f:
                e = i
                break
    g = []
    for i in range(first, e + 1):
        t = 0.0 if level > 0 and i == first else math.sqrt(max(sigmas[i] ** 2 - base ** 2, 0.0)) / f
        g.append(ref_gaussian(img, t, truncate) if t > 0 else np.asarray(img, np.float64))
    dogs = np.stack([g[i] - g[i + 1] for i in range(len(g) - 1)])
    resp, scale = dogs.max(axis=0), dogs.argmax(axis=0) + first
    if len(dogs) > 1:
        srt = np.sort(dogs, axis=0)
        clear = srt[-1] - srt[-2] > 2 * tol
    else:
        clear = np.ones(resp.shape, bool)
    if e < n - 1:
        low = g[-1][::2, ::2]
        cr, cs, ccl = ref_octaves(low, sigmas, truncate, split, max_levels, tol, level + 1, e, sigmas[e])
        up = ref_upsample(cr, img.shape)
        ri, ci = np.arange(img.shape[0]) // 2, np.arange(img.shape[1]) // 2
        us, ucl = cs[np.ix_(ri, ci)], ccl[np.ix_(ri, ci)]
        gt = up > resp
        clear = np.where(gt, ucl, clear) & (np.abs(up - resp) > 2 * tol)
        resp, scale = np.where(gt, up, resp), np.where(gt, us, scale)
    return resp, scale, clear


def octave_levels(shape, sigmas, split, max_levels):
    """How many levels the definition uses (to make sure a test reaches deep)."""
    rows, cols = shape
    first, level = 0, 0
    while True:
        e = len(sigmas) - 1
        if level < max_levels and min(rows, cols) >= OCT_MIN_SIDE:
            e = next((i for i in range(first + 1, len(sigmas) - 1) if sigmas[i] >= split * 2.0 ** level), e)
        if e == len(sigmas) - 1:
            return level + 1
        first, level = e, level + 1
        rows, cols = (rows + 1) // 2, (cols + 1) // 2


def check_octaves(kern, img, sigmas, split=1.9, levels=16, min_clear=0.3, min_levels=1):
    assert octave_levels(img.shape, sigmas, split, levels) >= min_levels
    resp, scale = kern.dog_octaves(img, sigmas, TRUNCATE, split, levels, 0)
    tol = 1e-4 * float(np.max(np.abs(np.asarray(img, np.float64))))
    rr, rs, clear = ref_octaves(np.asarray(img, np.float64), sigmas, TRUNCATE, split, levels, tol)
    close_to_ref(resp, rr, img)
    assert clear.mean() > min_clear  # the check below is not vacuous
    np.testing.assert_array_equal(scale[clear], rs[clear])
    assert scale.max() <= len(sigmas) - 2
    return resp, scale


@pytest.mark.parametrize("levels", [1, 2, 16])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_octaves_matches_scipy_random(kern, dtype, levels):
    img = _random_u16((163, 141), 31) if dtype == np.uint16 else _random_f32((163, 141), 31)
    check_octaves(kern, img, SIGMAS_007, levels=levels, min_levels=min(levels, 3) + 1)


@pytest.mark.parametrize("truncate", [3.0, 4.0])
def test_octaves_fast_setting_matches_scipy(kern, truncate):
    # the faster operating point: only pair 0 at full resolution, shorter kernels
    img = _random_u16((150, 131), 34)
    resp, scale = kern.dog_octaves(img, SIGMAS_007, truncate, 1.2, 16, 0)
    tol = 1e-4 * float(img.max())
    rr, rs, clear = ref_octaves(img.astype(np.float64), SIGMAS_007, truncate, 1.2, 16, tol)
    assert octave_levels(img.shape, SIGMAS_007, 1.2, 16) >= 3
    close_to_ref(resp, rr, img)
    assert clear.mean() > 0.3
    np.testing.assert_array_equal(scale[clear], rs[clear])


@pytest.mark.parametrize("split", [1.2, 1.9, 2.5])
def test_octaves_matches_scipy_phantom(kern, phantom_img, split):
    check_octaves(kern, phantom_img, PYR_SIGMAS, split=split, min_levels=2)


def test_octaves_odd_and_even_shapes(kern):
    for shape in [(64, 65), (65, 64), (67, 67), (66, 66), (33, 97)]:
        check_octaves(kern, _random_u16(shape, 32), PYR_SIGMAS, split=1.2, min_levels=2)


@pytest.mark.parametrize("shape", TINY_SHAPES + [(31, 200), (200, 31)])
def test_octaves_small_images_stay_at_full_resolution(kern, shape):
    # a level under 32 pixels in either direction is the last one: the exact DoG
    img = _random_u16(shape, 33)
    assert octave_levels(shape, PYR_SIGMAS, 1.9, 16) == 1
    resp, scale = kern.dog_octaves(img, PYR_SIGMAS, TRUNCATE, 1.9, 16, 0)
    exact = kern.dog_response(img, PYR_SIGMAS, TRUNCATE, 0)
    np.testing.assert_array_equal(resp, exact[0])
    np.testing.assert_array_equal(scale, exact[1])
    close_to_ref(resp, ref_dog(img, PYR_SIGMAS).max(axis=0), img)


def test_octaves_level0_is_dog_response(kern, phantom_img):
    a = kern.dog_octaves(phantom_img, PYR_SIGMAS, TRUNCATE, 1.9, 0, 0)
    b = kern.dog_response(phantom_img, PYR_SIGMAS, TRUNCATE, 0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# radius int(3 s + 0.5) = 0, 1, 2, .. 9, 12: every radius the fused row kernel
# of the octave DoG has an instance for (0 .. 8) and the generic one above
ALL_RADII_SIGMAS = [0.1, 0.2, 0.5, 0.85, 1.2, 1.5, 1.9, 2.2, 2.5, 3.0, 4.0]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(1, 1), (2, 9), (5, 3), (7, 40), (40, 7), (30, 37), (65, 64)])
def test_octaves_row_kernel_is_dog_response_bitwise(kern, dtype, shape):
    # one level (max_levels = 0, or an image under 32 pixels): the octave
    # DoG's fused row kernel must give the bits of ncalc_dog_response's, for
    # every radius, two or many scales, images shorter than the kernels
    # (rows reflected several times, the uint16 row cache), any thread count
    img = _random_u16(shape, 35) if dtype == np.uint16 else _random_f32(shape, 35)
    for sig in (ALL_RADII_SIGMAS, ALL_RADII_SIGMAS[:2], ALL_RADII_SIGMAS[3:5], ALL_RADII_SIGMAS[8:],
                ALL_RADII_SIGMAS[::3]):
        exact = kern.dog_response(img, sig, 3.0, 1)
        for nthreads in (1, 2):
            for levels in (0, 16):
                if levels and min(shape) >= 32:
                    continue
                _assert_same_dog(kern.dog_octaves(img, sig, 3.0, 1.2, levels, nthreads), exact)
        if kern is _kernel:
            # the same on a crop of a larger image (rows ld pixels apart)
            _assert_same_dog(_octaves_of_a_crop(img, sig), exact)


def _assert_same_dog(got, exact):
    """(resp, scale) of two DoG calls, the response bit for bit."""
    np.testing.assert_array_equal(got[0].view(np.uint32), exact[0].view(np.uint32))
    np.testing.assert_array_equal(got[1], exact[1])


def _octaves_of_a_crop(img, sig):
    """One level of ``dog_octaves`` (truncate 3) on ``img`` placed inside a
    larger array and passed as a view (rows a pitch apart), 2 threads."""
    big = np.zeros((img.shape[0] + 4, img.shape[1] + 7), img.dtype)
    big[3:3 + img.shape[0], 5:5 + img.shape[1]] = img
    return _kernel.dog_octaves(big[3:3 + img.shape[0], 5:5 + img.shape[1]], sig, 3.0, 1.2, 0, 2)


# The banks whose vertical passes the octave DoG's row kernel runs in one
# loop (oct_vert_bank in csrc/filters.c: detect's banks at 0.035-0.2 mm):
# their radii; sigma (R + 0.1 (i + 1)) / 3 has radius int(3 sigma + 0.5) = R.
FUSED_VERTICAL_RADII = [(2, 2, 4), (2, 3, 4), (2, 3, 5), (0, 2, 4), (0, 2, 5), (0, 3, 5),
                        (2, 4), (3, 4), (3, 5), (4, 6), (5, 7), (0, 2), (0, 3), (0, 4), (0, 5),
                        (1, 2, 4), (2, 2), (3, 3, 5, 6)]  # (the last three: not fused, for contrast)


@pytest.mark.parametrize("radii", FUSED_VERTICAL_RADII)
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_octaves_banks_with_one_vertical_loop_are_dog_response_bitwise(kern, radii, dtype):
    """The banks whose scales' vertical passes share one loop give the bits
    of ncalc_dog_response's separate passes, on images shorter and narrower
    than the kernels (reflected rows and columns), wide ones, and crops."""
    sig = [(r + 0.1 * (i + 1)) / 3 for i, r in enumerate(radii)]
    assert [int(3.0 * s + 0.5) for s in sig] == list(radii)
    for shape in [(1, 1), (3, 2), (9, 5), (7, 40), (40, 7), (33, 67)]:
        img = _random_u16(shape, 41) if dtype == np.uint16 else _random_f32(shape, 41)
        exact = kern.dog_response(img, sig, 3.0, 1)
        for nthreads in (1, 2):
            _assert_same_dog(kern.dog_octaves(img, sig, 3.0, 1.2, 0, nthreads), exact)
        if kern is _kernel:
            _assert_same_dog(_octaves_of_a_crop(img, sig), exact)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_octaves_independent_of_threads_and_pitch(kern, dtype):
    # the detection's setting (a single pair at full resolution, its scale
    # written by the merge; levels of two and three Gaussians below)
    img = _random_u16((301, 263), 36) if dtype == np.uint16 else _random_f32((301, 263), 36)
    assert octave_levels(img.shape, SIGMAS_007, 1.2, 16) >= 3
    a = kern.dog_octaves(img, SIGMAS_007, 3.0, 1.2, 16, 1)
    b = kern.dog_octaves(img, SIGMAS_007, 3.0, 1.2, 16, 2)
    np.testing.assert_array_equal(a[0].view(np.uint32), b[0].view(np.uint32))
    np.testing.assert_array_equal(a[1], b[1])
    if kern is _kernel:
        big = np.zeros((305, 300), dtype)
        big[2:303, 30:293] = img
        c = _kernel.dog_octaves(big[2:303, 30:293], SIGMAS_007, 3.0, 1.2, 16, 2)
        np.testing.assert_array_equal(a[0].view(np.uint32), c[0].view(np.uint32))
        np.testing.assert_array_equal(a[1], c[1])


def test_octaves_rejects_bad_arguments(kern):
    img = _random_u16((40, 40))
    for args in [(PYR_SIGMAS, 0.0, 1), (PYR_SIGMAS, 1.9, -1), (PYR_SIGMAS, 1.9, 17),
                 ([2.0, 1.0], 1.9, 1), ([1.0], 1.9, 1)]:
        with pytest.raises(ValueError):
            kern.dog_octaves(img, args[0], TRUNCATE, args[1], args[2], 0)


@pytest.fixture(scope="module")
def phantom_007():
    """A patch of a mammogram-like phantom at 0.07 mm, with calcifications."""
    from napari_calc.core.phantom import make_phantom

    ph = make_phantom(seed=11, spacing_mm=0.07, shape=(640, 512))
    return np.ascontiguousarray(ph.image.pixels)


def test_octaves_close_to_exact_dog_on_phantom(phantom_img, phantom_007):
    """Not a tolerance of the same math: how far the octave approximation is
    from the full-resolution DoG, bounded so a regression shows. Measured
    with this version: 99th percentile of the error / 99th percentile of
    |exact| = 0.071 on the 0.4 mm phantom (dog_pyramid: 0.043) and 0.093 on
    the 0.07 mm one (0.032 on a 4096x3328 one); on the strongest 0.5 % of
    pixels a median relative error of 0.079 (bilinear interpolation flattens
    the coarse levels' peaks) and a best pair always within one of the
    exact one's."""
    exact, _ = _kernel.dog_response(phantom_img, PYR_SIGMAS, TRUNCATE, 0)
    approx, _ = _kernel.dog_octaves(phantom_img, PYR_SIGMAS, TRUNCATE, 1.9, 16, 0)
    err = np.abs(approx.astype(np.float64) - exact)
    assert np.percentile(err, 99) < 0.1 * np.percentile(np.abs(exact), 99)

    img = phantom_007
    exact, exact_scale = _kernel.dog_response(img, SIGMAS_007, TRUNCATE, 0)
    approx, scale = _kernel.dog_octaves(img, SIGMAS_007, TRUNCATE, 1.9, 16, 0)
    assert octave_levels(img.shape, SIGMAS_007, 1.9, 16) == 4
    err = np.abs(approx.astype(np.float64) - exact)
    assert np.percentile(err, 99) < 0.13 * np.percentile(np.abs(exact), 99)
    # where the response is strong (candidate calcifications), it is close too
    strong = exact > np.percentile(exact, 99.5)
    assert np.median(err[strong] / exact[strong]) < 0.11
    assert np.mean(np.abs(scale[strong].astype(int) - exact_scale[strong]) <= 1) > 0.97


def test_octaves_identical_for_1_and_2_threads_and_serial(serial_kernel, phantom_007):
    img = phantom_007
    a = _kernel.dog_octaves(img, SIGMAS_007, TRUNCATE, 1.9, 16, 1)
    b = _kernel.dog_octaves(img, SIGMAS_007, TRUNCATE, 1.9, 16, 2)
    c = serial_kernel.dog_octaves(img, SIGMAS_007, TRUNCATE, 1.9, 16, 0)
    f = _kernel.dog_octaves(img.astype(np.float32), SIGMAS_007, TRUNCATE, 1.9, 16, 2)
    for x in (b, c, f):
        np.testing.assert_array_equal(a[0], x[0])
        np.testing.assert_array_equal(a[1], x[1])


def ref_row_ranges(mask, pad):
    """ncalc_mask_row_ranges by SciPy: the mask dilated by a square of side
    2 pad + 1, then each row's first and one-past-last set column."""
    grown = ndi.binary_dilation(mask != 0, np.ones((2 * pad + 1, 2 * pad + 1), bool)) if pad else mask != 0
    lo = np.zeros(mask.shape[0], np.int32)
    hi = np.zeros(mask.shape[0], np.int32)
    for r, row in enumerate(grown):
        c = np.flatnonzero(row)
        if len(c):
            lo[r], hi[r] = c[0], c[-1] + 1
    return lo, hi


@pytest.mark.parametrize("pad", [0, 1, 4, 9])
def test_mask_row_ranges_match_scipy(kern, pad):
    rng = np.random.default_rng(pad)
    for shape in [(1, 1), (1, 40), (40, 1), (37, 29), (120, 203)]:
        masks = [np.zeros(shape, np.uint8), np.ones(shape, np.uint8),
                 (rng.random(shape) < 0.02).astype(np.uint8), (rng.random(shape) < 0.5).astype(np.uint8)]
        yy, xx = np.mgrid[:shape[0], :shape[1]]
        ring = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 3) ** 2)
        masks.append(((ring < (shape[0] / 2) ** 2) & (ring > (shape[0] / 5) ** 2)).astype(np.uint8))
        for m in masks:
            for nthreads in (1, 2):
                lo, hi = kern.mask_row_ranges(m, pad, nthreads)
                rlo, rhi = ref_row_ranges(m, pad)
                np.testing.assert_array_equal(lo, rlo)
                np.testing.assert_array_equal(hi, rhi)
    # a crop of a larger mask (rows mask_ld apart), any nonzero byte
    big = (rng.random((90, 140)) < 0.05).astype(np.uint8) * 7
    lo, hi = _kernel.mask_row_ranges(big[10:80, 20:110], pad, 2)
    rlo, rhi = ref_row_ranges(big[10:80, 20:110], pad)
    np.testing.assert_array_equal(lo, rlo)
    np.testing.assert_array_equal(hi, rhi)


def _wanted(ranges, shape):
    lo, hi = ranges
    want = np.zeros(shape, bool)
    for r in range(shape[0]):
        a, b = max(int(lo[r]), 0), min(int(hi[r]), shape[1])
        want[r, a:b] = True
    return want


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_octaves_ranges_are_the_whole_response_where_wanted(kern, dtype):
    # with per-row column ranges, the wanted pixels are the whole DoG's to
    # the bit, whatever the output held before (NaN here), the shape (odd,
    # even, under the 32-pixel level minimum), the levels (0: one level whose
    # long kernels take dog_row, every pixel computed), the thread count;
    # ranges may be empty, reversed or reach past the image
    rng = np.random.default_rng(11 if dtype == np.uint16 else 12)
    sigma_sets = [SIGMAS_007, PYR_SIGMAS, np.array([0.7, 1.0, 1.5, 2.3, 3.4, 5.1])]
    n_ranged = 0
    for trial in range(24):
        shape = (int(rng.integers(20, 260)), int(rng.integers(20, 260)))
        img = _random_u16(shape, trial) if dtype == np.uint16 else _random_f32(shape, trial)
        sig = sigma_sets[trial % 3]
        truncate, split = [(3.0, 1.2), (4.0, 1.9)][trial % 2]
        levels = [0, 1, 2, 16][trial % 4]
        if trial % 3 == 0:
            lo = rng.integers(-5, shape[1] + 5, shape[0]).astype(np.int32)
            hi = (lo + rng.integers(-4, shape[1], shape[0])).astype(np.int32)
        else:
            yy, xx = np.mgrid[:shape[0], :shape[1]]
            d2 = (yy - rng.random() * shape[0]) ** 2 + (xx - rng.random() * shape[1]) ** 2
            mask = (d2 < (rng.random() * max(shape)) ** 2).astype(np.uint8)
            lo, hi = kern.mask_row_ranges(mask, int(rng.integers(0, 6)), 1)
        nthreads = int(rng.integers(1, 4))
        whole = kern.dog_octaves(img, sig, truncate, split, levels, nthreads)
        out = (np.full(shape, np.nan, np.float32), np.full(shape, 255, np.uint8))
        part = kern.dog_octaves(img, sig, truncate, split, levels, nthreads, out, (lo, hi))
        want = _wanted((lo, hi), shape)
        np.testing.assert_array_equal(part[0][want].view(np.uint32), whole[0][want].view(np.uint32))
        np.testing.assert_array_equal(part[1][want], whole[1][want])
        n_ranged += int(levels > 0 and not want.all() and np.isnan(part[0][~want]).any())
    # some draws did leave pixels out. Most compute everything anyway: with
    # random ranges the rows' supports cover the image, and a last level
    # with a kernel over radius 8 (small images, truncate 4) takes dog_row.
    # test_octaves_ranges_of_a_breast checks the saving itself.
    assert n_ranged >= 2


def test_octaves_ranges_of_a_breast(phantom_007):
    # a phantom's breast mask grown by the NMS radius: the wanted pixels
    # are exact, most of the rest is left alone, and the serial build agrees
    from napari_calc.core.mask import breast_mask

    img = phantom_007
    mask = breast_mask(img, (0.07, 0.07)).view(np.uint8)
    ranges = _kernel.mask_row_ranges(mask, 4, 2)
    want = _wanted(ranges, img.shape)
    assert 0.3 < want.mean() < 0.95
    whole = _kernel.dog_octaves(img, SIGMAS_007, 3.0, 1.2, 16, 2)
    out = (np.full(img.shape, np.nan, np.float32), np.zeros(img.shape, np.uint8))
    part = _kernel.dog_octaves(img, SIGMAS_007, 3.0, 1.2, 16, 2, out, ranges)
    np.testing.assert_array_equal(part[0][want], whole[0][want])
    np.testing.assert_array_equal(part[1][want], whole[1][want])
    assert np.isnan(part[0][~want]).mean() > 0.5


def test_octaves_ranges_serial_and_threads_agree(serial_kernel, phantom_007):
    img = phantom_007
    mask = np.zeros(img.shape, np.uint8)
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    mask[(yy - img.shape[0] / 2) ** 2 + xx ** 2 < (0.45 * img.shape[0]) ** 2] = 1
    ranges = serial_kernel.mask_row_ranges(mask, 4, 0)
    want = _wanted(ranges, img.shape)
    got = [serial_kernel.dog_octaves(img, SIGMAS_007, 3.0, 1.2, 16, 0, None, ranges)]
    got += [_kernel.dog_octaves(img, SIGMAS_007, 3.0, 1.2, 16, t, None, ranges) for t in (1, 2, 3)]
    for resp, scale in got[1:]:
        np.testing.assert_array_equal(resp[want], got[0][0][want])
        np.testing.assert_array_equal(scale[want], got[0][1][want])


def test_octaves_ranges_reject_bad_arguments():
    img = _random_u16((40, 40))
    lo = np.zeros(39, np.int32)
    with pytest.raises(ValueError):
        _kernel.dog_octaves(img, SIGMAS_007, 3.0, 1.2, 16, 1, None, (lo, lo))
    with pytest.raises(ValueError):
        _kernel.mask_row_ranges(np.zeros((0, 4), np.uint8), 1)
    with pytest.raises(ValueError):
        _kernel.mask_row_ranges(np.ones((4, 4), np.uint8), -1)


# ----------------------------------------------------------------------------
# noise
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [1, 3])
def test_mad_noise_matches_numpy(kern, stride):
    x = _random_f32((57, 43), 4)
    mask = np.zeros(x.shape, np.uint8)
    mask[5:50, 10:40] = 1
    assert kern.mad_noise(x, None, stride) == pytest.approx(ref_mad(x[::stride, ::stride].ravel()), rel=1e-12)
    ref = ref_mad(x[::stride, ::stride][mask[::stride, ::stride] != 0])
    assert kern.mad_noise(x, mask, stride) == pytest.approx(ref, rel=1e-12)


def test_mad_noise_too_few_pixels(kern):
    assert math.isnan(kern.mad_noise(np.ones((1, 1), np.float32), None, 1))
    x = _random_f32((4, 4))
    assert math.isnan(kern.mad_noise(x, np.zeros((4, 4), np.uint8), 1))


def test_mad_noise_ties(kern):
    x = np.zeros((10, 10), np.float32)
    x[0, :7] = 5
    assert kern.mad_noise(x, None, 1) == pytest.approx(ref_mad(x.ravel()), abs=0)


@pytest.mark.parametrize("shape,tile", [((50, 37), 8), ((64, 64), 16), ((5, 3), 8), ((1, 1), 1)])
def test_tile_noise_matches_numpy(kern, shape, tile):
    x = _random_f32(shape, 6)
    mask = (np.random.default_rng(1).random(shape) > 0.3).astype(np.uint8)
    for m, min_count in ((None, 2), (mask, 20)):
        grid = kern.tile_noise(x, tile, m, min_count, 0)
        assert grid.shape == (-(-shape[0] // tile), -(-shape[1] // tile))
        np.testing.assert_array_equal(grid, ref_tile_mad(x, tile, m, min_count))  # NaNs where NaN


def test_tile_noise_phantom_response(kern, phantom_img):
    resp, _ = _kernel.dog_response(phantom_img, DOG_SIGMAS, TRUNCATE, 0)
    grid = kern.tile_noise(resp, 32, None, 16, 0)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            blk = resp[i * 32:(i + 1) * 32, j * 32:(j + 1) * 32].ravel()
            assert grid[i, j] == np.float32(ref_mad(blk))


# ----------------------------------------------------------------------------
# non-maximum suppression
# ----------------------------------------------------------------------------

def _nms_equal(kern, resp, k, radius, mask=None, grid=None, tile=1):
    rr, cc = kern.nms(resp, k, radius, mask, grid, tile)
    er, ec = ref_nms(resp, k, radius, mask, grid, tile)
    np.testing.assert_array_equal(rr, er)
    np.testing.assert_array_equal(cc, ec)
    return rr, cc


@pytest.mark.parametrize("radius", [0, 1, 3, 6])
def test_nms_matches_maximum_filter(kern, radius):
    resp = _random_f32((70, 55), 8) - 100
    _nms_equal(kern, resp, 20.0, radius)
    mask = np.zeros(resp.shape, np.uint8)
    mask[10:60, 5:40] = 1
    grid = np.abs(_random_f32((9, 7), 9)) / 10
    _nms_equal(kern, resp, 2.0, radius, mask, grid, 8)


def test_nms_plateaus_and_ties(kern):
    # equal neighbours are all maxima (>=); quantised values make many ties
    resp = np.round(_random_f32((40, 40), 10) / 40).astype(np.float32)
    rr, _ = _nms_equal(kern, resp, 1.0, 2)
    assert len(rr) > 0


def test_nms_borders_and_tiny(kern):
    resp = np.zeros((20, 30), np.float32)
    resp[0, 0] = resp[19, 29] = resp[0, 29] = 5
    resp[10, 0] = 4
    rr, cc = _nms_equal(kern, resp, 1.0, 3)
    assert set(zip(rr.tolist(), cc.tolist())) == {(0, 0), (0, 29), (10, 0), (19, 29)}
    for shape in TINY_SHAPES:
        r = _random_f32(shape, 11)
        _nms_equal(kern, r, 50.0, 1)
        _nms_equal(kern, r, 50.0, 4)


def test_nms_more_peaks_than_first_buffer(kern):
    resp = _random_f32((100, 90), 12)
    rr, _ = _nms_equal(kern, resp, -1e9, 0)   # every pixel is a peak
    assert len(rr) == resp.size > 4096


@pytest.mark.parametrize("shape", [(150, 97), (131, 64), (70, 33), (40, 32), (45, 31), (3, 40)])
def test_nms_word_edges_windows_and_chunks(kern, shape):
    # the vector scan's paths: rows in words of 32 pixels with and without a
    # tail, 8-neighbour tests at the first and last columns, windows of 8 to
    # 16 columns and wider ones, windows across chunks of 64 rows (and a
    # radius larger than a chunk), ties (quantised values) and infinities,
    # a mask whose rows are longer than the image's
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    resp = np.round(_random_f32(shape, 41 + shape[1]) / 25).astype(np.float32)
    resp[rng.random(shape) < 0.01] = np.inf
    resp[rng.random(shape) < 0.01] = -np.inf
    wide = (rng.random((shape[0], shape[1] + 13)) > 0.15).astype(np.uint8)
    mask = wide[:, 5:5 + shape[1]]
    if kern is not _kernel:
        mask = np.ascontiguousarray(mask)   # the serial wrapper takes no pitch
    tile = 13
    grid = rng.uniform(0.5, 1.5, (-(-shape[0] // tile), -(-shape[1] // tile))).astype(np.float32)
    grid[0, -1] = np.nan   # nothing passes a NaN threshold
    for radius in (0, 1, 2, 3, 4, 5, 7, 8, 9, 70):
        _nms_equal(kern, resp, 3.0, radius)
        _nms_equal(kern, resp, 3.0, radius, mask, grid, tile)


@pytest.mark.parametrize("radius", [3, 9, 70])
def test_nms_nans_near_chunk_edges(kern, radius):
    # a NaN in the rows just outside a chunk of 64 rows, at the first tap of
    # a window row, or far away for a radius larger than a chunk: the chunks
    # it reaches are done in the exact order, the others are not affected
    base = np.round(_random_f32((200, 75), 51) / 20).astype(np.float32)
    for nan_at in ((63, 10), (64, 40), (64 - radius, 74), (127 + radius, 0), (199, 37)):
        resp = base.copy()
        if nan_at[0] < resp.shape[0]:
            resp[nan_at] = np.nan
        rr, cc = kern.nms(resp, 5.0, radius)
        er, ec = ref_nms_separable(resp, 5.0, radius)
        np.testing.assert_array_equal(rr, er)
        np.testing.assert_array_equal(cc, ec)
    # NaN first taps (column c - radius) where they change the answer: in a
    # window's first row (its maximum is NaN: no peak) and in a later row
    # (that row's larger pixel is not seen: a peak), away from the image's
    # edge columns (so in the words a vector scan reads)
    resp = np.zeros((200, 75), np.float32)
    c = radius + 2
    resp[100, c] = 10
    resp[100 - radius, c - radius] = np.nan
    resp[30, c] = 10
    resp[31, c + 1] = 11
    resp[31, c - radius] = np.nan
    rr, cc = kern.nms(resp, 1.0, radius)
    er, ec = ref_nms_separable(resp, 1.0, radius)
    np.testing.assert_array_equal(rr, er)
    np.testing.assert_array_equal(cc, ec)
    ignoring = ref_nms(np.where(np.isnan(resp), -np.inf, resp), 1.0, radius)
    assert set(zip(*ignoring)) != set(zip(er, ec))   # the case tells the two apart


def test_nms_on_phantom_response(kern, phantom_img):
    resp, _ = kern.dog_response(phantom_img, DOG_SIGMAS, TRUNCATE, 0)
    grid = kern.tile_noise(resp, 16, None, 16, 0)
    rr, _ = _nms_equal(kern, resp, 4.0, 2, None, grid, 16)
    assert len(rr) > 0


# ----------------------------------------------------------------------------
# candidate features
# ----------------------------------------------------------------------------

def test_features_match_numpy(kern, phantom_img):
    img = phantom_img
    rng = np.random.default_rng(13)
    n = 40
    rows = rng.integers(0, img.shape[0], n).astype(np.int32)
    cols = rng.integers(0, img.shape[1], n).astype(np.int32)
    rows[:4] = [0, 0, img.shape[0] - 1, 5]   # borders
    cols[:4] = [0, img.shape[1] - 1, 3, 0]
    radius = rng.uniform(0.4, 5.0, n).astype(np.float32)
    got = kern.candidate_features(img, rows, cols, radius, 0)
    ref = ref_features(img, rows, cols, radius)
    scale = float(img.max())
    np.testing.assert_allclose(got[[0, 1, 2]], ref[[0, 1, 2]], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_array_equal(got[3], ref[3])
    np.testing.assert_allclose(got[4], ref[4], rtol=1e-4)


def test_features_float_tiny(kern):
    img = _random_f32((2, 6), 14)
    rows = np.array([0, 1], np.int32)
    cols = np.array([0, 5], np.int32)
    radius = np.array([1.0, 2.5], np.float32)
    got = kern.candidate_features(img, rows, cols, radius, 0)
    ref = ref_features(img, rows, cols, radius)
    np.testing.assert_allclose(got[[0, 1, 2]], ref[[0, 1, 2]], rtol=1e-4, atol=1e-4 * float(img.max()))
    np.testing.assert_array_equal(got[3], ref[3])


def ref_nms_separable(resp, k, radius, mask=None, grid=None, tile=1):
    """The peaks of a separable max filter taken in its plain order (each
    row's window from the left with ``v > m ? v : m``, -inf outside, then the
    rows from the top): the same as :func:`ref_nms` on finite data, and the
    definition the kernel keeps when NaNs are present."""
    resp = np.asarray(resp, np.float32)
    h, w = resp.shape
    pad = np.full((h, w + 2 * radius), -np.inf, np.float32)
    pad[:, radius:radius + w] = resp
    hm = pad[:, 0:w].copy()
    for j in range(1, 2 * radius + 1):
        q = pad[:, j:j + w]
        hm = np.where(q > hm, q, hm)
    vm = np.empty_like(hm)
    for r in range(h):
        r0, r1 = max(0, r - radius), min(h - 1, r + radius)
        m = hm[r0].copy()
        for q in range(r0 + 1, r1 + 1):
            m = np.where(hm[q] > m, hm[q], m)
        vm[r] = m
    if grid is None:
        thr = np.float32(k)
    else:
        thr = np.float32(k) * grid[np.ix_(np.arange(h) // tile, np.arange(w) // tile)]
    peaks = (resp > thr) & (resp >= vm)
    if mask is not None:
        peaks &= mask != 0
    return np.nonzero(peaks)


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_nms_with_nans_keeps_the_separable_order(kern, radius):
    # NaNs never come out of the DoG of a finite image, but the peaks with
    # them are still those of the max-filter definition, exactly
    resp = _random_f32((150, 61), 21) - 100
    rng = np.random.default_rng(22)
    resp[rng.integers(0, 150, 40), rng.integers(0, 61, 40)] = np.nan
    mask = (rng.random(resp.shape) > 0.2).astype(np.uint8)
    grid = np.abs(_random_f32((19, 8), 23)) / 10
    for args in ((resp, 10.0, radius), (resp, 1.0, radius, mask, grid, 8)):
        rr, cc = kern.nms(*args)
        er, ec = ref_nms_separable(*args)
        np.testing.assert_array_equal(rr, er)
        np.testing.assert_array_equal(cc, ec)
    # one NaN only in the rows below a chunk of rows (the window reaches it)
    resp2 = _random_f32((150, 61), 24) - 100
    resp2[65, 30] = np.nan
    rr, cc = kern.nms(resp2, 10.0, radius)
    er, ec = ref_nms_separable(resp2, 10.0, radius)
    np.testing.assert_array_equal(rr, er)
    np.testing.assert_array_equal(cc, ec)


# ----------------------------------------------------------------------------
# local noise and suppression in one pass (noise_nms)
# ----------------------------------------------------------------------------

def ref_tile_grid(x, tile, mask, min_count):
    """ref_tile_mad, then detect's fix-up: tiles whose noise is not finite
    and > 0 take numpy.median of the others (None when there are none)."""
    grid = ref_tile_mad(x, tile, mask, min_count)
    bad = ~np.isfinite(grid) | (grid <= 0)
    if bad.all():
        return None
    grid[bad] = np.median(grid[~bad])
    return grid


def _noise_nms_case(seed):
    """A response (with ties, a flat region or a mask edge as the seed
    picks), its mask (sometimes a crop of a wider one), tile, min_count,
    k and radius."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(3, 160, 2))
    resp = rng.normal(size=(h, w)).astype(np.float32)
    if seed % 3 == 0:
        resp = np.round(resp * 2).astype(np.float32)  # plateaus and ties
    if seed % 5 == 0:
        resp[: h // 3] = 1.0  # flat tiles: MAD 0
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - h / 2) ** 2 + xx ** 2 < (rng.uniform(0.3, 1.2) * max(h, w)) ** 2).astype(np.uint8)
    if seed % 4 == 1:
        wide = np.zeros((h, w + 5), np.uint8)
        wide[:, :w] = mask
        mask = wide[:, :w]  # rows mask_ld > cols bytes apart
    elif seed % 4 == 2:
        mask = None
    tile = int(rng.integers(1, 70))
    min_count = int(rng.integers(0, 120))
    k = float(rng.choice([3.0, 1.5, 0.0, -2.0, np.inf]))
    radius = int(rng.choice([0, 1, 2, 5, 9, 200]))
    return resp, mask, tile, min_count, k, radius


@pytest.mark.parametrize("seed", range(40))
def test_noise_nms_is_tile_noise_fixup_and_nms(kern, seed):
    # the grid as detect fixes it up and exactly the peaks of the
    # max-filter definition with it, whatever the thread count
    resp, mask, tile, min_count, k, radius = _noise_nms_case(seed)
    grid = ref_tile_grid(resp, tile, mask, min_count)
    for nt in (1, 2, 3):
        got = kern.noise_nms(resp, tile, mask, min_count, k, radius, nt)
        if grid is None:  # no valid tile: left to the two steps
            assert got is None
            continue
        g, rr, cc = got
        np.testing.assert_array_equal(g, grid)
        er, ec = ref_nms(resp, k, radius, mask, grid, tile)
        np.testing.assert_array_equal(rr, er)
        np.testing.assert_array_equal(cc, ec)
        # with the values at the peaks: the same grid and peaks, and the
        # values peak_values (and detect's NumPy path) gives
        g2, r2, c2, val, noise, snr = kern.noise_nms(resp, tile, mask, min_count, k, radius, nt, values=True)
        np.testing.assert_array_equal(g2, grid)
        np.testing.assert_array_equal(r2, er)
        np.testing.assert_array_equal(c2, ec)
        _assert_peak_values(resp, grid, tile, er, ec, val, noise, snr)


@pytest.mark.parametrize("seed", range(24))
def test_noise_nms_with_blocks_is_noise_nms_with_their_mask(kern, seed):
    # the mask as blocks (each thread writing a band's rows of it) gives
    # the grid and peaks of the full-size mask upscale_mask makes of them,
    # at any offset of the response in the image, with bands of one row to
    # more than the image
    from napari_calc.core.mask import upscale_mask

    rng = np.random.default_rng(seed)
    fy, fx = (int(v) for v in rng.integers(1, 9, 2))
    hh, ww = (int(v) for v in rng.integers(1, 24, 2))
    h, w = hh * fy + int(rng.integers(0, fy + 3)), ww * fx + int(rng.integers(0, fx + 3))
    small = rng.random((hh, ww)) < rng.choice([0.3, 0.8, 1.0])
    full = upscale_mask(small, fy, fx, h, w).view(np.uint8)
    r0, c0 = int(rng.integers(0, h)), int(rng.integers(0, w))
    r1, c1 = int(rng.integers(r0 + 1, h + 1)), int(rng.integers(c0 + 1, w + 1))
    resp = rng.normal(size=(r1 - r0, c1 - c0)).astype(np.float32)
    resp += 6 * (rng.random(resp.shape) < 0.02)
    tile = int(rng.choice([1, 3, int(rng.integers(4, 40)), 500]))
    min_count = int(rng.integers(0, 30))
    radius = int(rng.choice([0, 1, 3]))
    crop = np.ascontiguousarray(full[r0:r1, c0:c1])
    for nt in (1, 2, 3):
        want = kern.noise_nms(resp, tile, crop, min_count, 3.0, radius, nt, values=True)
        got = kern.noise_nms(resp, tile, None, min_count, 3.0, radius, nt, values=True,
                             blocks=(small, fy, fx, r0, c0))
        assert (got is None) == (want is None)
        for a, b in zip(got or (), want or ()):
            np.testing.assert_array_equal(a, b)


def _dog_noise_case(seed):
    """An image (uint16 or float32, with blobs), the DoG sigmas of a
    spacing (one to four octave levels), and the noise pass's mask (none,
    full, a crop of a wider one, or blocks) with or without the DoG's row
    ranges, tile, min_count, k, radius and top."""
    import importlib

    from napari_calc.core.mask import upscale_mask

    D = importlib.import_module("napari_calc.core.detect")
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(40, 260, 2))
    yy, xx = np.mgrid[:h, :w]
    img = 1000 + 300 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / (0.3 * max(h, w)) ** 2)
    img = img + rng.normal(0, 20, (h, w))
    for _ in range(int(rng.integers(0, 40))):
        y, x, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.7, 4)
        img += rng.uniform(20, 200) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    img = img.astype(np.uint16) if seed % 2 else img.astype(np.float32)
    sig = D.dog_sigmas(float(rng.choice([0.05, 0.07, 0.1, 0.14, 0.2])), 0.15, 1.0)
    radius = int(rng.choice([0, 1, 2, 4, 7]))
    mask = blocks = ranges = None
    kind = seed % 4
    if kind in (1, 2):
        mask = ((yy - h / 2) ** 2 + xx ** 2 < (rng.uniform(0.4, 1.1) * max(h, w)) ** 2).astype(np.uint8)
        if kind == 2:  # rows mask_ld > cols bytes apart
            wide = np.zeros((h, w + 7), np.uint8)
            wide[:, :w] = mask
            mask = wide[:, :w]
        if seed % 3:
            ranges = _kernel.mask_row_ranges(np.ascontiguousarray(mask), radius, 1)
    elif kind == 3:
        fy, fx = (int(v) for v in rng.integers(2, 12, 2))
        small = rng.random((max(1, h // fy), max(1, w // fx))) < 0.7
        blocks = (small, fy, fx, 0, 0)
        if seed % 3:
            full = upscale_mask(small, fy, fx, h, w).view(np.uint8)
            ranges = _kernel.mask_row_ranges(np.ascontiguousarray(full), radius, 1)
    tile = int(rng.integers(4, 80))
    min_count = int(rng.integers(0, 60))
    k = float(rng.choice([3.0, 1.5, 0.0]))
    top = int(rng.choice([0, 0, 25]))
    return img, sig, mask, blocks, ranges, tile, min_count, k, radius, top


def _dog_then_noise(kern, img, sig, nt, ranges, tile, mask, min_count, k, radius, blocks, top):
    """dog_octaves, then noise_nms: the two calls dog_noise_nms does in one."""
    import importlib

    D = importlib.import_module("napari_calc.core.detect")
    out = (np.zeros(img.shape, np.float32), np.zeros(img.shape, np.uint8))
    resp, scale = kern.dog_octaves(img, sig, D.TRUNCATE, D.OCTAVE_SPLIT_SIGMA, 16, nt, out, ranges=ranges)
    return resp, scale, kern.noise_nms(resp, tile, mask, min_count, k, radius, nt, values=True, blocks=blocks,
                                       top=top)


def _assert_same_dog_noise(got, want):
    np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))  # resp, every pixel
    np.testing.assert_array_equal(got[1], want[1])  # scale
    assert (got[2] is None) == (want[2] is None)
    for a, b in zip(got[2] or (), want[2] or ()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(32))
def test_dog_noise_nms_is_dog_octaves_then_noise_nms(kern, seed):
    # the coarser levels merged band by band as the noise pass reads them
    # (each row once, by whichever thread needs it first) give the response,
    # scale, grid, peaks and values of the two calls, bit for bit
    import importlib

    D = importlib.import_module("napari_calc.core.detect")
    img, sig, mask, blocks, ranges, tile, min_count, k, radius, top = _dog_noise_case(seed)
    for nt in (1, 2, 3):
        want = _dog_then_noise(kern, img, sig, nt, ranges, tile, mask, min_count, k, radius, blocks, top)
        out = (np.zeros(img.shape, np.float32), np.zeros(img.shape, np.uint8))
        got = kern.dog_noise_nms(img, sig, D.TRUNCATE, D.OCTAVE_SPLIT_SIGMA, 16, nt, out, ranges, tile, mask,
                                 min_count, k, radius, blocks=blocks, top=top)
        assert got[0] is out[0] and got[1] is out[1]
        _assert_same_dog_noise(got, want)


@pytest.mark.parametrize("case", ["nan", "more peaks than room", "one level"])
def test_dog_noise_nms_fallback_and_retry(kern, case):
    # NaNs: the noise pass leaves it to the two steps (None), with the
    # response merged in full; more peaks than the call has room for: the
    # noise pass again on the merged response; one octave level: nothing
    # to merge
    import importlib

    D = importlib.import_module("napari_calc.core.detect")
    rng = np.random.default_rng(7)
    img = (1000 + rng.normal(0, 30, (100, 120))).astype(np.float32)
    sig, k, radius, levels = D.dog_sigmas(0.07, 0.15, 1.0), 3.0, 2, 16
    if case == "nan":
        img[40, 50] = np.nan
    elif case == "more peaks than room":
        k, radius = -np.inf, 0  # every pixel is a peak
    else:
        levels = 0
    for nt in (1, 2):
        want = _dog_then_noise(kern, img, sig, nt, None, 16, None, 16, k, radius, None, 0)
        if levels == 0:
            out = (np.zeros(img.shape, np.float32), np.zeros(img.shape, np.uint8))
            want = kern.dog_octaves(img, sig, D.TRUNCATE, D.OCTAVE_SPLIT_SIGMA, 0, nt, out)
            want = (*want, kern.noise_nms(want[0], 16, None, 16, k, radius, nt, values=True))
        kw = dict(cap=64) if kern is not _kernel else {}
        out = (np.zeros(img.shape, np.float32), np.zeros(img.shape, np.uint8))
        got = kern.dog_noise_nms(img, sig, D.TRUNCATE, D.OCTAVE_SPLIT_SIGMA, levels, nt, out, None, 16, None,
                                 16, k, radius, **kw)
        _assert_same_dog_noise(got, want)
        if case == "nan":
            assert got[2] is None
        if case == "more peaks than room":
            assert len(got[2][1]) == img.size


def test_noise_nms_blocks_refuses_bad_blocks(kern):
    resp = np.zeros((8, 8), np.float32)
    small = np.ones((2, 2), bool)
    for bad in [(small[:0], 1, 1, 0, 0), (small, 0, 1, 0, 0), (small, 1, 1, -1, 0)]:
        with pytest.raises((ValueError, RuntimeError)):
            kern.noise_nms(resp, 4, None, 2, 3.0, 1, 1, blocks=bad)


def _assert_peak_values(resp, grid, tile, rr, cc, val, noise, snr):
    """val, noise, snr are what detect's NumPy path computes at the peaks
    (rr, cc): the response, the tile's noise in float64 and their ratio,
    bit for bit."""
    ev = resp[rr, cc]
    en = grid[rr // tile, cc // tile].astype(np.float64)
    assert val.dtype == np.float32 and noise.dtype == np.float64 and snr.dtype == np.float64
    np.testing.assert_array_equal(val.view(np.uint32), ev.view(np.uint32))
    np.testing.assert_array_equal(noise.view(np.uint64), en.view(np.uint64))
    with np.errstate(divide="ignore", invalid="ignore"):
        es = ev.astype(np.float64) / en
    np.testing.assert_array_equal(snr.view(np.uint64), es.view(np.uint64))


def _top_bin_edge(x: float) -> float:
    """The lower edge of the bin of an SNR ``x`` for ``noise_nms``'s
    ``top``: 32 bins an octave from 2**-10 (0 below), every SNR from 2**21
    up in the last bin (computed with frexp, not from the bits as the
    kernel does)."""
    if not x >= 2.0 ** -10:
        return 0.0
    x = min(x, math.nextafter(2.0 ** 21, 0.0))
    m, e = math.frexp(x)  # x = m 2**e, 0.5 <= m < 1
    return math.ldexp(1.0 + math.floor((2.0 * m - 1.0) * 32.0) / 32.0, e - 1)


def _top_case(seed):
    """Noise with isolated spikes whose SNRs sit on bin edges of the top's
    count and a float either side of them, many equal: the response, its
    mask (or None), tile, min_count, k and radius."""
    rng = np.random.default_rng(seed)
    rows, cols = (int(v) for v in rng.integers(90, 240, 2))
    tile, radius, k, min_count = int(rng.integers(10, 40)), int(rng.integers(1, 4)), 3.0, 16
    resp = rng.normal(size=(rows, cols)).astype(np.float32)
    mask = None
    if seed % 2:
        yy, xx = np.mgrid[:rows, :cols]
        mask = ((yy - rows / 2) ** 2 + xx ** 2 < (0.8 * max(rows, cols)) ** 2).astype(np.uint8)
    if seed % 3 == 0:
        resp[: rows // 4] = 0.5  # flat tiles: bad, their peaks never left out
    step = 2 * radius + 2
    pr, pc = (a.ravel() for a in np.meshgrid(np.arange(radius, rows - radius, step),
                                            np.arange(radius, cols - radius, step), indexing="ij"))
    take = rng.random(len(pr)) < 0.6
    pr, pc = pr[take], pc[take]
    resp[pr, pc] = 1e3  # outliers: each tile's median and MAD no longer depend on their values
    grid = ref_tile_mad(resp, tile, mask, min_count)
    g = grid[pr // tile, pc // tile]
    # the tiles' medians: a spike moved to edge x noise must stay above the
    # median plus two MADs, so that the tile's median and MAD do not move
    m = np.ones(resp.shape, bool) if mask is None else mask.astype(bool)
    med = np.array([np.median(resp[a:a + tile, b:b + tile][m[a:a + tile, b:b + tile]])
                    if m[a:a + tile, b:b + tile].any() else np.nan
                    for a, b in zip(pr // tile * tile, pc // tile * tile)])
    edges = np.array([3.25, 4.0, 4.125, 5.0, 6.5, 8.0, 8.25, 11.0, 16.0, 23.0])
    with np.errstate(invalid="ignore"):
        target = rng.choice(edges, len(pr)) * g
        ok = np.isfinite(g) & (g > 0) & (target > med + 2 * g / 1.4826)
    v = target[ok].astype(np.float32)
    nudge = rng.integers(-1, 2, len(v))  # a float below, on, above
    v = np.where(nudge < 0, np.nextafter(v, np.float32(-np.inf)),
                 np.where(nudge > 0, np.nextafter(v, np.float32(np.inf)), v)).astype(np.float32)
    resp[pr[ok], pc[ok]] = v
    assert ok.mean() > 0.5
    assert np.array_equal(ref_tile_mad(resp, tile, mask, min_count), grid, equal_nan=True)
    return resp, mask, tile, min_count, k, radius


@pytest.mark.parametrize("seed", range(12))
def test_noise_nms_top_leaves_out_only_peaks_below_the_bound(kern, seed):
    # with a top, the list is the full one without the good tiles' peaks
    # whose SNR is below B (the edge of the bin of the top-th largest SNR
    # of good tiles' peaks), in the same order, for any thread count; the
    # top-k of both lists picks the same peaks
    resp, mask, tile, min_count, k, radius = _top_case(seed)
    raw = ref_tile_mad(resp, tile, mask, min_count)
    full = kern.noise_nms(resp, tile, mask, min_count, k, radius, 1, values=True)
    assert full is not None
    g, rr, cc, val, noise, snr = full
    good = (np.isfinite(raw) & (raw > 0))[rr // tile, cc // tile]
    ranked = np.sort(snr[good])[::-1]
    assert len(ranked) > 50
    # SNRs on an edge, just below and just above one (what the bound must split exactly)
    assert any(float(s) == _top_bin_edge(float(s)) for s in ranked)
    for top in (1, 7, len(ranked) // 5, len(ranked) // 2, len(ranked) - 1, len(ranked), len(ranked) + 3):
        bound = _top_bin_edge(float(ranked[top - 1])) if top <= len(ranked) else 0.0
        keep = ~(good & (snr < bound))
        for nt in (1, 2, 3):
            got = kern.noise_nms(resp, tile, mask, min_count, k, radius, nt, values=True, top=top)
            np.testing.assert_array_equal(got[0], g)
            for a, b in zip(got[1:], (rr, cc, val, noise, snr)):
                np.testing.assert_array_equal(a, b[keep])
            if top < len(rr):
                want = _kernel.top_k(snr, top, 1)
                pick = _kernel.top_k(got[5], top, nt)
                np.testing.assert_array_equal(got[1][pick], rr[want])
                np.testing.assert_array_equal(got[2][pick], cc[want])
        # the left-out peaks were most of them, not a few at the end
        if top == len(ranked) // 5:
            assert keep.sum() < 0.5 * len(rr)


def test_noise_nms_top_with_blocks_and_arguments(kern):
    # the blocks' path leaves out the same peaks; a negative top is refused
    from napari_calc.core.mask import upscale_mask

    resp, _, tile, min_count, k, radius = _top_case(0)
    small = np.ones((5, 4), bool)
    small[0, 0] = small[4, 3] = False
    fy, fx = resp.shape[0] // 5, resp.shape[1] // 4
    full = np.ascontiguousarray(upscale_mask(small, fy, fx, resp.shape[0], resp.shape[1]).view(np.uint8))
    for top in (1, 40, 300):
        want = kern.noise_nms(resp, tile, full, min_count, k, radius, 2, values=True, top=top)
        got = kern.noise_nms(resp, tile, None, min_count, k, radius, 2, values=True, top=top,
                             blocks=(small, fy, fx, 0, 0))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        kern.noise_nms(resp, tile, None, min_count, k, radius, 1, top=-1)


def test_noise_nms_peaks_in_sparse_edge_tiles(kern):
    # tiles with a few breast pixels (too few for their own noise) that hold
    # peaks above and below k times the median of the others: the kernel
    # scans them with a provisional threshold and must keep exactly those
    # above the final one
    resp = _random_f32((130, 97), 30) - 100
    mask = np.zeros(resp.shape, np.uint8)
    mask[:, :60] = 1
    mask[::7, 64:70] = 1  # sparse breast pixels in the tiles of columns 64..
    resp[21, 66] = 500.0
    resp[47:52, 65:70] = -50.0
    resp[49, 67] = 0.5  # a window maximum above 0, below 3 x the median noise
    grid = ref_tile_grid(resp, 32, mask, 200)
    assert not np.isfinite(kern.tile_noise(resp, 32, mask, 200, 1)[0, 2])  # a bad tile
    g, rr, cc = kern.noise_nms(resp, 32, mask, 200, 3.0, 2, 2)
    np.testing.assert_array_equal(g, grid)
    er, ec = ref_nms(resp, 3.0, 2, mask, grid, 32)
    np.testing.assert_array_equal(rr, er)
    np.testing.assert_array_equal(cc, ec)
    found = set(zip(rr.tolist(), cc.tolist()))
    assert (21, 66) in found and (49, 67) not in found
    # the kept peak in the bad tile takes the median's noise in its SNR
    _, _, _, val, noise, snr = kern.noise_nms(resp, 32, mask, 200, 3.0, 2, 2, values=True)
    _assert_peak_values(resp, grid, 32, rr, cc, val, noise, snr)
    i = list(zip(rr.tolist(), cc.tolist())).index((21, 66))
    raw = ref_tile_mad(resp, 32, mask, 200)
    assert not np.isfinite(raw[21 // 32, 66 // 32])
    assert noise[i] == np.median(raw[np.isfinite(raw) & (raw > 0)])


def test_noise_nms_leaves_nans_and_empty_masks_to_the_steps(kern):
    resp = _random_f32((90, 70), 31)
    resp[40, 33] = np.nan
    assert kern.noise_nms(resp, 16, None, 16, 3.0, 2, 2) is None
    empty = np.zeros(resp.shape, np.uint8)
    assert kern.noise_nms(_random_f32((90, 70), 32), 16, empty, 16, 3.0, 2, 2) is None


def test_noise_nms_more_peaks_than_first_buffer(kern):
    resp = _random_f32((100, 90), 33)
    g, rr, cc = kern.noise_nms(resp, 16, None, 16, -1e9, 0, 2)  # every pixel a peak
    assert len(rr) == resp.size > 4096
    np.testing.assert_array_equal(rr, np.repeat(np.arange(100), 90))
    g, rr, cc, val, noise, snr = kern.noise_nms(resp, 16, None, 16, -1e9, 0, 2, values=True)
    assert len(val) == resp.size
    _assert_peak_values(resp, g, 16, rr, cc, val, noise, snr)


def test_nms_finite_reference_agrees_with_separable_one():
    resp = np.round(_random_f32((60, 50), 25) / 30).astype(np.float32)
    for radius in (0, 1, 3):
        for a, b in zip(ref_nms(resp, 1.0, radius), ref_nms_separable(resp, 1.0, radius)):
            np.testing.assert_array_equal(a, b)


def _noise_images():
    """Responses that exercise the selection: a normal one, heavy tails,
    quantised values (ties), a spike of equal values and a shifted scale."""
    rng = np.random.default_rng(31)
    shape = (230, 170)
    normal = rng.normal(0, 3, shape).astype(np.float32)
    heavy = (rng.standard_cauchy(shape) * 2).astype(np.float32)
    ties = np.round(rng.normal(0, 2, shape)).astype(np.float32)
    spike = rng.normal(0, 1, shape).astype(np.float32)
    spike[rng.random(shape) < 0.6] = 0.25
    trend = (rng.normal(0, 1, shape) + np.linspace(-50, 50, shape[1])[None]).astype(np.float32)
    return [normal, heavy, ties, spike, trend]


@pytest.mark.parametrize("tile", [40, 64, 113])
def test_tile_noise_large_tiles_exact(kern, tile):
    """Tiles of more than 1024 pixels take the sample-bracketed selection:
    still exactly numpy's lower-median MAD."""
    mask = (np.random.default_rng(32).random((230, 170)) > 0.25).astype(np.uint8)
    mask[:, :30] = 0
    for x in _noise_images():
        for m in (None, mask):
            grid = kern.tile_noise(x, tile, m, 16, 0)
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    blk = x[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile]
                    if m is not None:
                        blk = blk[m[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] != 0]
                    blk = blk.ravel()
                    if len(blk) < 16:
                        assert math.isnan(grid[i, j])
                    else:
                        assert grid[i, j] == np.float32(ref_mad(blk)), (i, j)


@pytest.mark.parametrize("tile,stride", [(40, 2), (64, 3), (9, 2), (113, 2)])
def test_tile_noise_strided_is_the_subsample(kern, tile, stride):
    """stride > 1: exactly the MAD of every stride-th pixel of every
    stride-th row of each tile (from its first pixel); min_count counts
    those."""
    mask = (np.random.default_rng(34).random((230, 170)) > 0.25).astype(np.uint8)
    for x in _noise_images()[:3]:
        for m in (None, mask):
            grid = kern.tile_noise(x, tile, m, 16, 0, stride)
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    blk = x[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile][::stride, ::stride]
                    if m is not None:
                        blk = blk[m[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile][::stride, ::stride] != 0]
                    blk = blk.ravel()
                    if len(blk) < 16:
                        assert math.isnan(grid[i, j])
                    else:
                        assert grid[i, j] == np.float32(ref_mad(blk)), (i, j)
    np.testing.assert_array_equal(kern.tile_noise(x, 40, mask, 16, 0, 1), kern.tile_noise(x, 40, mask, 16, 0))


def test_mad_noise_large_exact(kern):
    mask = (np.random.default_rng(33).random((230, 170)) > 0.5).astype(np.uint8)
    for x in _noise_images():
        for stride in (1, 2, 5):
            assert kern.mad_noise(x, None, stride) == pytest.approx(
                ref_mad(x[::stride, ::stride].ravel()), rel=1e-12)
            assert kern.mad_noise(x, mask, stride) == pytest.approx(
                ref_mad(x[::stride, ::stride][mask[::stride, ::stride] != 0]), rel=1e-12)


def test_noise_with_nans_and_infinities(kern):
    """Non-finite values take the radix selection (they order as their
    bits: +NaN and +inf above everything), like numpy's partition for
    +NaN and infinities."""
    x = _noise_images()[0].copy()
    x[3, 4] = np.inf
    x[100, 100] = -np.inf
    x[50, 7] = np.nan
    assert kern.mad_noise(x, None, 1) == pytest.approx(ref_mad(x.ravel()), rel=1e-12)
    grid = kern.tile_noise(x, 64, None, 16, 0)
    assert grid[0, 0] == np.float32(ref_mad(x[:64, :64].ravel()))
    assert grid[1, 1] == np.float32(ref_mad(x[64:128, 64:128].ravel()))



def _at_page_end(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` (C order) that ends at a page whose next page may
    not be touched: a read past its last byte kills the process (Linux)."""
    import mmap

    page = mmap.PAGESIZE
    pages = -(-a.nbytes // page)
    mm = mmap.mmap(-1, (pages + 1) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + pages * page, page, 0) == 0, os.strerror(ctypes.get_errno())
    out = np.frombuffer(mm, dtype=a.dtype, count=a.size, offset=pages * page - a.nbytes).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages with mprotect (Linux)")
@pytest.mark.parametrize("cols", [31, 33, 63, 64, 65, 95, 100])
def test_noise_and_peak_scans_read_nothing_past_their_arrays(cols):
    """The vector loops of the tile noise and the peak scan (AVX-512 where
    the CPU has it: masked loads at the rows' ends) read nothing past the
    last row of the response or of the mask: with the page after each
    unreadable they run, and give what ordinary copies give."""
    rng = np.random.default_rng(cols)
    resp = _random_f32((37, cols), cols)
    mask = (rng.random((37, cols)) > 0.3).astype(np.uint8)
    mask[5:20, : cols // 2] = 1  # runs inside the mask, as the breast's
    r2, m2 = _at_page_end(resp), _at_page_end(mask)
    for tile in (7, 16, 17, 43):
        for m, mm in ((None, None), (mask, m2)):
            for nt in (1, 2):
                np.testing.assert_array_equal(_kernel.tile_noise(r2, tile, mm, 2, nt),
                                              _kernel.tile_noise(resp, tile, m, 2, nt))
        grid = _kernel.tile_noise(resp, tile, mask, 2, 1)
        grid[~np.isfinite(grid)] = 1.0
        for radius in (1, 2, 5):
            got = _kernel.nms(r2, 0.5, radius, m2, grid, tile, 2)
            want = _kernel.nms(resp, 0.5, radius, mask, grid, tile, 2)
            for x, y in zip(got, want):
                np.testing.assert_array_equal(x, y)

@pytest.mark.parametrize("tile", [7, 15, 16, 17, 33, 43, 64])
def test_tile_noise_reads_only_the_masked_values(kern, tile):
    """A tile's noise is that of its masked values alone, gathered row by
    row across the tiles: NaN and infinities outside the mask change
    nothing; inside it they are counted (the radix selection, as numpy
    orders them). The mask is made of 7-pixel blocks, as the breast
    mask's are, with single pixels flipped; the tiles' rows are of every
    length around whole vectors of 16, and the last column of tiles is
    cut short."""
    rng = np.random.default_rng(tile)
    for x in _noise_images()[:3]:
        h, w = x.shape
        blocks = rng.random((-(-h // 7), -(-w // 7))) < 0.6
        mask = np.kron(blocks, np.ones((7, 7), np.uint8))[:h, :w].astype(np.uint8)
        mask[rng.random((h, w)) < 0.05] ^= 1
        want = ref_tile_mad(x, tile, mask, 2)
        y = x.copy()
        out = np.flatnonzero(mask.ravel() == 0)
        y.ravel()[out[::5]] = np.nan
        y.ravel()[out[2::9]] = np.inf
        y.ravel()[out[4::13]] = -np.inf
        for nt in (1, 2):
            np.testing.assert_array_equal(kern.tile_noise(y, tile, mask, 2, nt), want)
        z = x.copy()
        inside = np.flatnonzero(mask.ravel())
        z.ravel()[inside[:: len(inside) // 6]] = [np.inf, -np.inf, np.nan, np.inf, np.nan, -np.inf,
                                                  np.inf][: len(inside[:: len(inside) // 6])]
        np.testing.assert_array_equal(kern.tile_noise(z, tile, mask, 2, 2), ref_tile_mad(z, tile, mask, 2))


# ----------------------------------------------------------------------------
# local Hessian and block means
# ----------------------------------------------------------------------------

def ref_local_hessian(img, rows, cols, sigma, truncate):
    im = np.asarray(img, np.float64)
    out = np.zeros((4, len(rows)))
    for i, (r, c, s) in enumerate(zip(rows, cols, sigma)):
        s = float(s)
        g = ndi.gaussian_filter(im, s, truncate=truncate, mode="reflect")[r, c]
        out[0, i] = g
        for k, order in enumerate([(2, 0), (1, 1), (0, 2)], start=1):
            out[k, i] = ndi.gaussian_filter(im - g, s, order=order, truncate=truncate, mode="reflect")[r, c]
    return out


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_local_hessian_matches_scipy_both_builds(kern, dtype, phantom_img):
    img = phantom_img.astype(dtype)
    rng = np.random.default_rng(41)
    n = 12
    rows = rng.integers(0, img.shape[0], n).astype(np.int32)
    cols = rng.integers(0, img.shape[1], n).astype(np.int32)
    rows[:3], cols[:3] = [0, img.shape[0] - 1, 100], [5, img.shape[1] - 1, 0]   # window over the borders
    sig = rng.uniform(0.5, 12.0, n).astype(np.float32)
    sig[0] = 40.0   # window larger than the image: reflected more than once
    got = kern.local_hessian(img, rows, cols, sig, 3.5, 0)
    ref = ref_local_hessian(img, rows, cols, sig, 3.5)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    for k in range(1, 4):
        scale = np.abs(ref[k]).max()
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5 * scale)


def test_local_hessian_constant_image_is_exactly_flat(kern):
    img = np.full((30, 40), 1234.567, np.float32)
    r = np.array([0, 15, 29], np.int32)
    c = np.array([0, 20, 39], np.int32)
    out = kern.local_hessian(img, r, c, np.array([1.0, 3.3, 9.0], np.float32), 3.5, 0)
    np.testing.assert_array_equal(out[0], np.float32(1234.567))
    np.testing.assert_array_equal(out[1:], 0)


def test_local_hessian_serial_identical_to_extension(serial_kernel, phantom_img):
    """The serial build (no OpenMP, no AVX2 clones) and the extension at 1
    and 2 threads give bit-identical results."""
    rng = np.random.default_rng(42)
    n = 200
    rows = rng.integers(0, phantom_img.shape[0], n).astype(np.int32)
    cols = rng.integers(0, phantom_img.shape[1], n).astype(np.int32)
    sig = rng.uniform(0.5, 15.0, n).astype(np.float32)
    a = serial_kernel.local_hessian(phantom_img, rows, cols, sig, 3.5, 0)
    np.testing.assert_array_equal(a, _kernel.local_hessian(phantom_img, rows, cols, sig, 3.5, 1))
    np.testing.assert_array_equal(a, _kernel.local_hessian(phantom_img, rows, cols, sig, 3.5, 2))


@pytest.mark.parametrize("shape,fy,fx", [((57, 43), 14, 14), ((56, 42), 14, 14), ((57, 43), 1, 1),
                                         ((57, 43), 3, 7), ((5, 9), 5, 9), ((5, 9), 6, 2),
                                         ((71, 1003), 14, 14), ((33, 517), 3, 1),  # long rows: vector loops
                                         ((300, 260), 300, 250)])  # a block of > 65537 pixels: 64-bit sums
def test_block_mean_matches_numpy(kern, shape, fy, fx):
    u = np.random.default_rng(51).integers(0, 65536, shape, dtype=np.uint16)
    f = _random_f32(shape, 52) * 1000
    for img in (u, f):
        hh, ww = shape[0] // fy, shape[1] // fx
        ref = img[: hh * fy, : ww * fx].reshape(hh, fy, ww, fx).mean(axis=(1, 3), dtype=np.float64)
        got = kern.block_mean(img, fy, fx, 0)
        assert got.shape == ref.shape and got.dtype == np.float64
        if img.dtype == np.uint16:
            np.testing.assert_array_equal(got, ref)   # exact integer sums: numpy's own result
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-12)
        for nt in (1, 2):
            np.testing.assert_array_equal(_kernel.block_mean(img, fy, fx, nt), got)


def test_block_mean_of_blocks_whose_sums_pass_32_bits(kern):
    # 300 x 250 pixels of 65535 sum to about 4.9e9: past 32 bits
    img = np.full((300, 260), 65535, np.uint16)
    img[::7, ::3] = 1
    ref = img[:, :250].mean(dtype=np.float64)
    for nt in (1, 2):
        got = kern.block_mean(img, 300, 250, nt)
        assert got.shape == (1, 1) and got[0, 0] == ref


def test_block_mean_rejects_bad_input():
    img = _random_u16((20, 30))
    with pytest.raises(ValueError):
        _kernel.block_mean(img, 0, 2)
    with pytest.raises(ValueError):
        _kernel.block_mean(img[:, ::2], 2, 2)
    with pytest.raises(TypeError):
        _kernel.block_mean(img.astype(np.int32), 2, 2)


# ----------------------------------------------------------------------------
# thread count and build mode do not change results
# ----------------------------------------------------------------------------

def test_results_identical_for_1_and_2_threads(phantom_img):
    img = phantom_img
    for a, b in [(_kernel.gaussian(img, 2.3, TRUNCATE, 1), _kernel.gaussian(img, 2.3, TRUNCATE, 2))]:
        np.testing.assert_array_equal(a, b)
    r1, s1 = _kernel.dog_response(img, DOG_SIGMAS, TRUNCATE, 1)
    r2, s2 = _kernel.dog_response(img, DOG_SIGMAS, TRUNCATE, 2)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    p1 = _kernel.dog_pyramid(img, PYR_SIGMAS, TRUNCATE, 2.0, 1.5, 2, 1)
    p2 = _kernel.dog_pyramid(img, PYR_SIGMAS, TRUNCATE, 2.0, 1.5, 2, 2)
    np.testing.assert_array_equal(p1[0], p2[0])
    np.testing.assert_array_equal(p1[1], p2[1])
    g1 = _kernel.tile_noise(r1, 24, None, 16, 1)
    g2 = _kernel.tile_noise(r1, 24, None, 16, 2)
    np.testing.assert_array_equal(g1, g2)
    rr, cc = _kernel.nms(r1, 3.0, 2, None, g1, 24, 1)
    for a, b in zip((rr, cc), _kernel.nms(r1, 3.0, 2, None, g1, 24, 2)):
        np.testing.assert_array_equal(a, b)
    assert len(rr) > 0
    rad = np.full(len(rr), 2.0, np.float32)
    np.testing.assert_array_equal(_kernel.candidate_features(img, rr, cc, rad, 1),
                                  _kernel.candidate_features(img, rr, cc, rad, 2))


def test_per_candidate_kernels_same_for_any_thread_count_and_order(phantom_007):
    # the Hessians and the ring features take runs of consecutive
    # candidates per thread (ncalc_run_chunk): 3,000 candidates in raster
    # order, as detect gives them, and shuffled, on 1 to 3 threads, give
    # each candidate the same values
    img = phantom_007
    rng = np.random.default_rng(21)
    n = 3000
    rr = np.sort(rng.integers(0, img.shape[0], n)).astype(np.int32)
    cc = rng.integers(0, img.shape[1], n).astype(np.int32)
    s1 = rng.uniform(0.7, 3.0, n).astype(np.float32)
    sL = np.full(n, 10.0, np.float32)
    rad = rng.uniform(1.0, 4.0, n).astype(np.float32)

    def run(order, nt):
        r, c = np.ascontiguousarray(rr[order]), np.ascontiguousarray(cc[order])
        h = _kernel.local_hessian3(img, r, c, np.ascontiguousarray(s1[order]), np.ascontiguousarray(2 * s1[order]),
                                   np.ascontiguousarray(sL[order]), 3.5, nt, cross=(True, True, True))
        f = _kernel.candidate_features(img, r, c, np.ascontiguousarray(rad[order]), nt)
        back = np.argsort(order)
        return h[..., back], f[..., back]

    ident = np.arange(n)
    h1, f1 = run(ident, 1)
    assert np.isfinite(h1).all() and np.isfinite(f1).all()
    for order in (ident, rng.permutation(n)):
        for nt in (1, 2, 3):
            h, f = run(order, nt)
            assert h.tobytes() == h1.tobytes() and f.tobytes() == f1.tobytes(), nt


def test_serial_build_identical_to_extension(serial_kernel, phantom_img):
    img = phantom_img
    np.testing.assert_array_equal(serial_kernel.gaussian(img, 1.9, TRUNCATE, 0),
                                  _kernel.gaussian(img, 1.9, TRUNCATE, 0))
    ra, sa = serial_kernel.dog_response(img, DOG_SIGMAS, TRUNCATE, 0)
    rb, sb = _kernel.dog_response(img, DOG_SIGMAS, TRUNCATE, 2)
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(sa, sb)
    ra, sa = serial_kernel.dog_pyramid(img, PYR_SIGMAS, TRUNCATE, 2.0, 1.5, 2, 0)
    rb, sb = _kernel.dog_pyramid(img, PYR_SIGMAS, TRUNCATE, 2.0, 1.5, 2, 2)
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(sa, sb)
    g = _kernel.tile_noise(rb, 24, None, 16, 2)
    np.testing.assert_array_equal(serial_kernel.tile_noise(rb, 24, None, 16, 0), g)
    for a, b in zip(serial_kernel.nms(rb, 3.0, 2, None, g, 24), _kernel.nms(rb, 3.0, 2, None, g, 24)):
        np.testing.assert_array_equal(a, b)


def test_detect_identical_for_1_and_2_threads():
    import napari_calc
    from napari_calc.core.phantom import make_phantom

    ph = make_phantom(seed=5, spacing_mm=0.2, shape=(500, 400))
    d1 = napari_calc.detect(ph.image, n_threads=1)
    d2 = napari_calc.detect(ph.image, n_threads=2)
    assert len(d1.calcifications) > 0
    import pandas as pd

    pd.testing.assert_frame_equal(d1.calcifications, d2.calcifications)
    pd.testing.assert_frame_equal(d1.clusters, d2.clusters)


def test_extension_rejects_non_contiguous_or_non_2d_input():
    img = _random_u16((20, 30))
    for bad in (img[:, ::2], img.T, img[None], img.ravel()):
        with pytest.raises(ValueError):
            _kernel.dog_response(bad, DOG_SIGMAS[:3], TRUNCATE, 0)
        with pytest.raises(ValueError):
            _kernel.gaussian(bad, 1.0, TRUNCATE, 0)
        with pytest.raises(ValueError):
            _kernel.dog_octaves(bad, DOG_SIGMAS[:3], TRUNCATE, 1.9, 16, 0)
    with pytest.raises(TypeError):
        _kernel.gaussian(img.astype(np.int32), 1.0, TRUNCATE, 0)


def test_module_reports_build_mode():
    assert isinstance(_kernel.openmp_enabled(), bool)
    assert _kernel.max_threads() >= 1


def test_dog_octaves_writes_into_given_arrays(phantom_img):
    img = phantom_img
    ref = _kernel.dog_octaves(img, PYR_SIGMAS, TRUNCATE, 1.5, 16, 0)
    out = (np.full(img.shape, np.nan, np.float32), np.full(img.shape, 255, np.uint8))
    got = _kernel.dog_octaves(img, PYR_SIGMAS, TRUNCATE, 1.5, 16, 0, out)
    assert got[0] is out[0] and got[1] is out[1]
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    bad = [(np.empty((img.shape[0] - 1, img.shape[1]), np.float32), out[1]),
           (out[0], np.empty(img.shape, np.uint8)[:, ::-1]),
           (np.empty(img.shape, np.float32).T.copy().T, out[1])]
    ro = np.empty(img.shape, np.float32)
    ro.flags.writeable = False
    bad.append((ro, out[1]))
    for b in bad:
        with pytest.raises(ValueError):
            _kernel.dog_octaves(img, PYR_SIGMAS, TRUNCATE, 1.5, 16, 0, b)
    with pytest.raises((TypeError, ValueError)):  # wrong dtype
        _kernel.dog_octaves(img, PYR_SIGMAS, TRUNCATE, 1.5, 16, 0, (out[0].astype(np.float64), out[1]))
