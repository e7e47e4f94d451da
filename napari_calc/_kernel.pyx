# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin Cython layer over the C kernel in ``csrc/`` (see ``csrc/ncalc.h``).

It checks nothing beyond what it needs to pass pointers safely; the Python
functions in :mod:`napari_calc.core.detect` validate and document. Every
call releases the GIL for the whole C call.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, int32_t

cnp.import_array()

cdef extern from "ncalc.h" nogil:
    int NCALC_U16
    int NCALC_F32
    int ncalc_have_openmp()
    int ncalc_max_threads()
    int ncalc_gaussian_radius(double sigma, double truncate)
    int ncalc_gaussian(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                       double sigma, double truncate, float *out, int nthreads)
    int ncalc_dog_response(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                           const double *sigmas, int nsigmas, double truncate,
                           float *resp, uint8_t *scale, int nthreads)
    double ncalc_mad_noise(const float *x, Py_ssize_t rows, Py_ssize_t cols,
                           const uint8_t *mask, Py_ssize_t stride)
    int ncalc_tile_noise_strided(const float *x, Py_ssize_t rows, Py_ssize_t cols,
                                 const uint8_t *mask, Py_ssize_t tile, Py_ssize_t stride,
                                 Py_ssize_t min_count, float *grid, int nthreads)
    Py_ssize_t ncalc_nms(const float *resp, Py_ssize_t rows, Py_ssize_t cols,
                         const uint8_t *mask, const float *grid, Py_ssize_t tile,
                         float k, int radius, int32_t *out_rows, int32_t *out_cols,
                         Py_ssize_t max_out)
    int ncalc_candidate_features(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                                 const int32_t *cand_rows, const int32_t *cand_cols,
                                 const float *radius, Py_ssize_t n,
                                 float *contrast, float *bg_std, float *peak,
                                 float *area, float *elongation, int nthreads)


def openmp_enabled():
    """True when the kernel was compiled with OpenMP."""
    return bool(ncalc_have_openmp())


def max_threads():
    """Threads the kernel uses by default."""
    return ncalc_max_threads()


cdef int _dtype_code(cnp.ndarray img) except -1:
    # the C code reads rows x cols contiguous pixels: anything else would be
    # read out of bounds
    if img.ndim != 2 or not img.flags['C_CONTIGUOUS']:
        raise ValueError("kernel input must be a C-contiguous 2-D array")
    if img.dtype == np.uint16:
        return NCALC_U16
    if img.dtype == np.float32:
        return NCALC_F32
    raise TypeError("kernel input must be uint16 or float32")


cdef void _check(int status) except *:
    if status == -2:
        raise MemoryError("napari-calc kernel: out of memory")
    if status != 0:
        raise ValueError("napari-calc kernel: invalid argument")


def gaussian(cnp.ndarray img not None, double sigma, double truncate=4.0, int nthreads=0):
    """Gaussian smoothing of a C-contiguous 2-D uint16/float32 image."""
    cdef int dt = _dtype_code(img)
    cdef Py_ssize_t rows = img.shape[0], cols = img.shape[1]
    cdef cnp.ndarray[cnp.float32_t, ndim=2] out = np.empty((rows, cols), np.float32)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int st
    with nogil:
        st = ncalc_gaussian(src, dt, rows, cols, sigma, truncate, &out[0, 0], nthreads)
    _check(st)
    return out


def dog_response(cnp.ndarray img not None, sigmas, double truncate=4.0, int nthreads=0):
    """Multi-scale DoG response and best-scale index of a 2-D image."""
    cdef int dt = _dtype_code(img)
    cdef Py_ssize_t rows = img.shape[0], cols = img.shape[1]
    cdef cnp.ndarray[cnp.float64_t, ndim=1] sig = np.ascontiguousarray(sigmas, dtype=np.float64)
    cdef cnp.ndarray[cnp.float32_t, ndim=2] resp = np.empty((rows, cols), np.float32)
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] scale = np.empty((rows, cols), np.uint8)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int n = <int>sig.shape[0]
    cdef int st
    with nogil:
        st = ncalc_dog_response(src, dt, rows, cols, &sig[0], n, truncate,
                                &resp[0, 0], &scale[0, 0], nthreads)
    _check(st)
    return resp, scale


def mad_noise(cnp.float32_t[:, ::1] x not None, cnp.uint8_t[:, ::1] mask=None, Py_ssize_t stride=1):
    """1.4826 * MAD of the (masked, strided) pixels of x."""
    cdef const uint8_t *m = NULL
    cdef double s
    if mask is not None:
        m = &mask[0, 0]
    with nogil:
        s = ncalc_mad_noise(&x[0, 0], x.shape[0], x.shape[1], m, stride)
    if s == -1.0:
        raise MemoryError("napari-calc kernel: out of memory")
    return s


def tile_noise(cnp.float32_t[:, ::1] x not None, Py_ssize_t tile, cnp.uint8_t[:, ::1] mask=None,
               Py_ssize_t min_count=16, int nthreads=0, Py_ssize_t stride=1):
    """Robust noise per tile x tile block; NaN where too few masked pixels.
    stride > 1: on every stride-th pixel of every stride-th row of each
    tile (min_count then counts those), an approximation."""
    cdef Py_ssize_t gh = (x.shape[0] + tile - 1) // tile, gw = (x.shape[1] + tile - 1) // tile
    cdef cnp.ndarray[cnp.float32_t, ndim=2] grid = np.empty((gh, gw), np.float32)
    cdef const uint8_t *m = NULL
    cdef int st
    if mask is not None:
        m = &mask[0, 0]
    with nogil:
        st = ncalc_tile_noise_strided(&x[0, 0], x.shape[0], x.shape[1], m, tile, stride, min_count,
                                      &grid[0, 0], nthreads)
    _check(st)
    return grid


def nms(cnp.float32_t[:, ::1] resp not None, float k, int radius,
        cnp.uint8_t[:, ::1] mask=None, cnp.float32_t[:, ::1] grid=None, Py_ssize_t tile=1):
    """Peaks of resp above k (times the noise grid) that are window maxima."""
    cdef const uint8_t *m = NULL
    cdef const float *g = NULL
    # room for 1 peak in 16 pixels (a response has far fewer; untouched
    # pages of np.empty cost nothing): one C call, not one to count and one
    # to fill
    cdef Py_ssize_t cap = max(4096, resp.shape[0] * resp.shape[1] // 16 + 1), n
    cdef cnp.ndarray[cnp.int32_t, ndim=1] rr, cc
    if mask is not None:
        m = &mask[0, 0]
    if grid is not None:
        g = &grid[0, 0]
    while True:
        rr = np.empty(cap, np.int32)
        cc = np.empty(cap, np.int32)
        with nogil:
            n = ncalc_nms(&resp[0, 0], resp.shape[0], resp.shape[1], m, g, tile, k, radius,
                          &rr[0], &cc[0], cap)
        if n < 0:
            _check(<int>n)
        if n <= cap:
            return rr[:n].copy(), cc[:n].copy()
        cap = n


def candidate_features(cnp.ndarray img not None, cnp.int32_t[::1] rows not None,
                       cnp.int32_t[::1] cols not None, cnp.float32_t[::1] radius not None,
                       int nthreads=0):
    """contrast, bg_std, peak, area, elongation for each candidate."""
    cdef int dt = _dtype_code(img)
    cdef Py_ssize_t n = rows.shape[0]
    cdef cnp.ndarray[cnp.float32_t, ndim=2] out = np.zeros((5, max(n, 1)), np.float32)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int st = 0
    if n:
        with nogil:
            st = ncalc_candidate_features(src, dt, img.shape[0], img.shape[1],
                                          &rows[0], &cols[0], &radius[0], n,
                                          &out[0, 0], &out[1, 0], &out[2, 0],
                                          &out[3, 0], &out[4, 0], nthreads)
    _check(st)
    return out[:, :n]


cdef extern from "ncalc.h" nogil:
    int ncalc_local_hessian(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                            const int32_t *cand_rows, const int32_t *cand_cols,
                            const float *sigma, Py_ssize_t n, double truncate,
                            float *smooth, float *lrr, float *lrc, float *lcc, int nthreads)


def local_hessian(cnp.ndarray img not None, cnp.int32_t[::1] rows not None,
                  cnp.int32_t[::1] cols not None, cnp.float32_t[::1] sigma not None,
                  double truncate=3.5, int nthreads=0):
    """Gaussian-smoothed value and Hessian (rr, rc, cc) at each candidate,
    at the candidate's own scale sigma (pixels). Returns a (4, n) float32 array."""
    cdef int dt = _dtype_code(img)
    cdef Py_ssize_t n = rows.shape[0]
    if cols.shape[0] != n or sigma.shape[0] != n:
        raise ValueError("rows, cols and sigma must have the same length")
    cdef cnp.ndarray[cnp.float32_t, ndim=2] out = np.zeros((4, max(n, 1)), np.float32)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int st = 0
    if not img.flags['C_CONTIGUOUS'] or img.ndim != 2:
        raise ValueError("kernel input must be a C-contiguous 2-D array")
    if n:
        with nogil:
            st = ncalc_local_hessian(src, dt, img.shape[0], img.shape[1],
                                     &rows[0], &cols[0], &sigma[0], n, truncate,
                                     &out[0, 0], &out[1, 0], &out[2, 0], &out[3, 0], nthreads)
    _check(st)
    return out[:, :n]


cdef extern from "ncalc.h" nogil:
    int ncalc_dog_pyramid(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                          const double *sigmas, int nsigmas, double truncate,
                          double split_sigma, double prefilter_sigma, int max_levels,
                          float *resp, uint8_t *scale, int nthreads)


def dog_pyramid(cnp.ndarray img not None, sigmas, double truncate=4.0, double split_sigma=2.0,
                double prefilter_sigma=1.5, int max_levels=1, int nthreads=0):
    """Multi-scale DoG with the scales >= split_sigma computed one octave
    down (see ncalc_dog_pyramid in csrc/ncalc.h). Returns (resp, scale)."""
    cdef int dt = _dtype_code(img)
    if not img.flags['C_CONTIGUOUS'] or img.ndim != 2:
        raise ValueError("kernel input must be a C-contiguous 2-D array")
    cdef Py_ssize_t rows = img.shape[0], cols = img.shape[1]
    cdef cnp.ndarray[cnp.float64_t, ndim=1] sig = np.ascontiguousarray(sigmas, dtype=np.float64)
    if sig.shape[0] < 2:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef cnp.ndarray[cnp.float32_t, ndim=2] resp = np.empty((rows, cols), np.float32)
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] scale = np.empty((rows, cols), np.uint8)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int n = <int>sig.shape[0]
    cdef int st
    with nogil:
        st = ncalc_dog_pyramid(src, dt, rows, cols, &sig[0], n, truncate, split_sigma,
                               prefilter_sigma, max_levels, &resp[0, 0], &scale[0, 0], nthreads)
    _check(st)
    return resp, scale


cdef extern from "ncalc.h" nogil:
    int ncalc_dog_octaves(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                          const double *sigmas, int nsigmas, double truncate, double split_sigma,
                          int max_levels, float *resp, uint8_t *scale, int nthreads)


def dog_octaves(cnp.ndarray img not None, sigmas, double truncate=4.0, double split_sigma=1.9,
                int max_levels=16, int nthreads=0):
    """Multi-scale DoG on a SIFT-like octave pyramid: pair i is computed
    at level L (grid 2^L pixels) while sigmas[i] < split_sigma * 2^L, each
    level being the previous level's last Gaussian decimated 2x, and the
    coarse responses are brought back bilinearly (see ncalc_dog_octaves in
    csrc/ncalc.h). max_levels=0 is dog_response. Returns (resp float32,
    scale uint8) like dog_response."""
    cdef int dt = _dtype_code(img)
    cdef Py_ssize_t rows = img.shape[0], cols = img.shape[1]
    cdef cnp.ndarray[cnp.float64_t, ndim=1] sig = np.ascontiguousarray(sigmas, dtype=np.float64)
    if sig.ndim != 1 or sig.shape[0] < 2:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef cnp.ndarray[cnp.float32_t, ndim=2] resp = np.empty((rows, cols), np.float32)
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] scale = np.empty((rows, cols), np.uint8)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int n = <int>sig.shape[0]
    cdef int st
    with nogil:
        st = ncalc_dog_octaves(src, dt, rows, cols, &sig[0], n, truncate, split_sigma,
                               max_levels, &resp[0, 0], &scale[0, 0], nthreads)
    _check(st)
    return resp, scale


cdef extern from "ncalc.h" nogil:
    int ncalc_block_mean(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                         Py_ssize_t fy, Py_ssize_t fx, double *out, int nthreads)


def block_mean(cnp.ndarray img not None, Py_ssize_t fy, Py_ssize_t fx, int nthreads=0):
    """Means of the fy x fx blocks of a C-contiguous 2-D uint16/float32
    image, float64 (rows // fy, cols // fx): the remainder rows and columns
    are left out (see ncalc_block_mean in csrc/ncalc.h)."""
    cdef int dt = _dtype_code(img)
    if fy < 1 or fx < 1:
        raise ValueError("block sizes must be >= 1")
    cdef Py_ssize_t rows = img.shape[0], cols = img.shape[1]
    cdef cnp.ndarray[cnp.float64_t, ndim=2] out = np.empty((rows // fy, cols // fx), np.float64)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int st = 0
    if out.shape[0] and out.shape[1]:
        with nogil:
            st = ncalc_block_mean(src, dt, rows, cols, fy, fx, &out[0, 0], nthreads)
    _check(st)
    return out
