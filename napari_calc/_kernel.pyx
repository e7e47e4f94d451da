# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin Cython layer over the C kernel in ``csrc/`` (see ``csrc/ncalc.h``).

It checks nothing beyond what it needs to pass pointers safely; the Python
functions in :mod:`napari_calc.core.detect` validate and document. Every
call releases the GIL for the whole C call.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, int32_t, int64_t

cnp.import_array()

cdef extern from "ncalc.h" nogil:
    int NCALC_U16
    int NCALC_F32
    int NCALC_EFALLBACK
    int NCALC_EINVAL
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
    int ncalc_tile_noise_ld(const float *x, Py_ssize_t rows, Py_ssize_t cols,
                            const uint8_t *mask, Py_ssize_t mask_ld, Py_ssize_t tile,
                            Py_ssize_t min_count, float *grid, int nthreads)
    Py_ssize_t ncalc_nms_ld(const float *resp, Py_ssize_t rows, Py_ssize_t cols,
                            const uint8_t *mask, Py_ssize_t mask_ld, const float *grid,
                            Py_ssize_t tile, float k, int radius, int32_t *out_rows,
                            int32_t *out_cols, Py_ssize_t max_out, int nthreads)
    Py_ssize_t ncalc_noise_nms(const float *resp, Py_ssize_t rows, Py_ssize_t cols,
                               const uint8_t *mask, Py_ssize_t mask_ld, Py_ssize_t tile,
                               Py_ssize_t min_count, float k, int radius, float *grid,
                               int32_t *out_rows, int32_t *out_cols, float *out_value,
                               Py_ssize_t max_out, Py_ssize_t top, int nthreads)
    Py_ssize_t ncalc_noise_nms_blocks(const float *resp, Py_ssize_t rows, Py_ssize_t cols,
                                      const uint8_t *small, Py_ssize_t hh, Py_ssize_t ww,
                                      Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t row0,
                                      Py_ssize_t col0, Py_ssize_t tile, Py_ssize_t min_count,
                                      float k, int radius, float *grid, int32_t *out_rows,
                                      int32_t *out_cols, float *out_value, Py_ssize_t max_out,
                                      Py_ssize_t top, int nthreads)
    Py_ssize_t ncalc_dog_noise_nms(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                                   Py_ssize_t ld, const double *sigmas, int nsigmas, double truncate,
                                   double split_sigma, int max_levels, const int32_t *lo,
                                   const int32_t *hi, float *resp, uint8_t *scale, const uint8_t *mask,
                                   Py_ssize_t mask_ld, const uint8_t *small, Py_ssize_t hh,
                                   Py_ssize_t ww, Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t row0,
                                   Py_ssize_t col0, Py_ssize_t tile, Py_ssize_t min_count, float k,
                                   int radius, float *grid, int32_t *out_rows, int32_t *out_cols,
                                   float *out_value, Py_ssize_t max_out, Py_ssize_t top, int nthreads)
    ctypedef struct ncalc_side:
        void (*fn)(void *arg) noexcept nogil
        void *arg
        int done
    Py_ssize_t ncalc_dog_noise_nms_side(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                                        Py_ssize_t ld, const double *sigmas, int nsigmas,
                                        double truncate, double split_sigma, int max_levels,
                                        const int32_t *lo, const int32_t *hi, float *resp,
                                        uint8_t *scale, const uint8_t *mask, Py_ssize_t mask_ld,
                                        const uint8_t *small, Py_ssize_t hh, Py_ssize_t ww,
                                        Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t row0,
                                        Py_ssize_t col0, Py_ssize_t tile, Py_ssize_t min_count,
                                        float k, int radius, float *grid, int32_t *out_rows,
                                        int32_t *out_cols, float *out_value, Py_ssize_t max_out,
                                        Py_ssize_t top, int nthreads, ncalc_side *side)
    int ncalc_nlf_fit(const void *img, int dtype, Py_ssize_t planes, Py_ssize_t plane_ld,
                      Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld, Py_ssize_t k,
                      const uint8_t *smask, int max_bins, float *resid, float *level,
                      Py_ssize_t *n_out, int *nbins_out, Py_ssize_t *count, float *lev_median,
                      float *resid_mad, int nthreads)
    int ncalc_nlf_curve(const Py_ssize_t *count, const float *lev_median, const float *resid_mad,
                        int nbins, double *lev, double *sd, int *m_out)
    Py_ssize_t ncalc_block_sample(const uint8_t *small, Py_ssize_t hh, Py_ssize_t ww, Py_ssize_t fy,
                                  Py_ssize_t fx, Py_ssize_t k, Py_ssize_t nr, Py_ssize_t nc,
                                  uint8_t *out)
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


cdef extern from "ncalc.h" nogil:
    size_t ncalc_buffers_held()
    void ncalc_release_buffers()


def buffers_held():
    """Bytes of scratch the kernel keeps for reuse (see ncalc_buffer_get in
    csrc/ncalc.h)."""
    cdef size_t n
    with nogil:
        n = ncalc_buffers_held()
    return n


def release_buffers():
    """Free the scratch the kernel keeps for reuse."""
    with nogil:
        ncalc_release_buffers()


cdef int _dtype_code(cnp.ndarray img) except -1:
    # the C code reads rows x cols contiguous pixels: anything else would be
    # read out of bounds
    if img.ndim != 2 or not img.flags['C_CONTIGUOUS']:
        raise ValueError("kernel input must be a C-contiguous 2-D array")
    return _pixel_code(img)


cdef int _pixel_code(cnp.ndarray img) except -1:
    # the kernel's code for the pixel type (the layout is checked elsewhere)
    if img.dtype == np.uint16:
        return NCALC_U16
    if img.dtype == np.float32:
        return NCALC_F32
    raise TypeError("kernel input must be uint16 or float32")


cdef Py_ssize_t _row_pitch(cnp.ndarray img) except -1:
    # pixels from one row to the next of a 2-D array whose rows are each
    # contiguous (a C-contiguous array or a crop of one); anything else
    # would be read wrongly
    cdef Py_ssize_t item = img.itemsize
    if img.ndim != 2:
        raise ValueError("kernel input must be a 2-D array")
    if img.flags['C_CONTIGUOUS'] or img.shape[0] <= 1:
        return img.shape[1]
    if (img.strides[1] != item or img.strides[0] % item != 0
            or img.strides[0] < img.shape[1] * item):
        raise ValueError("kernel input must be a 2-D array with contiguous rows")
    return img.strides[0] // item


cdef Py_ssize_t _mask_pitch(const uint8_t[:, :] mask, Py_ssize_t rows, Py_ssize_t cols) except -1:
    # bytes from one mask row to the next; the mask must have the image's
    # shape and contiguous rows
    if mask.shape[0] != rows or mask.shape[1] != cols:
        raise ValueError(f"mask shape ({mask.shape[0]}, {mask.shape[1]}) differs from the "
                         f"image's ({rows}, {cols})")
    if rows > 1 and (mask.strides[1] != 1 or mask.strides[0] < cols):
        raise ValueError("the mask's rows must be contiguous")
    return mask.strides[0] if rows > 1 else cols


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


def tile_noise(cnp.float32_t[:, ::1] x not None, Py_ssize_t tile, mask=None,
               Py_ssize_t min_count=16, int nthreads=0, Py_ssize_t stride=1):
    """Robust noise per tile x tile block; NaN where too few masked pixels.
    stride > 1: on every stride-th pixel of every stride-th row of each
    tile (min_count then counts those), an approximation. mask: uint8 of
    x's shape whose rows are contiguous (a crop of a larger mask works
    without a copy)."""
    cdef Py_ssize_t gh = (x.shape[0] + tile - 1) // tile, gw = (x.shape[1] + tile - 1) // tile
    cdef cnp.ndarray[cnp.float32_t, ndim=2] grid = np.empty((gh, gw), np.float32)
    cdef const uint8_t *m = NULL
    cdef const uint8_t[:, :] mv
    cdef Py_ssize_t ld = x.shape[1]
    cdef int st
    if mask is not None:
        if stride != 1:
            mask = np.ascontiguousarray(mask)
        mv = mask
        ld = _mask_pitch(mv, x.shape[0], x.shape[1])
        m = &mv[0, 0]
    if stride == 1:
        with nogil:
            st = ncalc_tile_noise_ld(&x[0, 0], x.shape[0], x.shape[1], m, ld, tile, min_count,
                                     &grid[0, 0], nthreads)
    else:
        with nogil:
            st = ncalc_tile_noise_strided(&x[0, 0], x.shape[0], x.shape[1], m, tile, stride,
                                          min_count, &grid[0, 0], nthreads)
    _check(st)
    return grid


def nms(cnp.float32_t[:, ::1] resp not None, float k, int radius,
        mask=None, cnp.float32_t[:, ::1] grid=None, Py_ssize_t tile=1, int nthreads=0):
    """Peaks of resp above k (times the noise grid) that are window maxima.
    mask: uint8 of resp's shape whose rows are contiguous (a crop of a
    larger mask works without a copy)."""
    cdef const uint8_t *m = NULL
    cdef const uint8_t[:, :] mv
    cdef Py_ssize_t ld = resp.shape[1]
    cdef const float *g = NULL
    # room for 1 peak in 16 pixels (a response has far fewer; untouched
    # pages of np.empty cost nothing): one C call, not one to count and one
    # to fill
    cdef Py_ssize_t cap = max(4096, resp.shape[0] * resp.shape[1] // 16 + 1), n
    cdef cnp.ndarray[cnp.int32_t, ndim=1] rr, cc
    if mask is not None:
        mv = mask
        ld = _mask_pitch(mv, resp.shape[0], resp.shape[1])
        m = &mv[0, 0]
    if grid is not None:
        g = &grid[0, 0]
    while True:
        rr = np.empty(cap, np.int32)
        cc = np.empty(cap, np.int32)
        with nogil:
            n = ncalc_nms_ld(&resp[0, 0], resp.shape[0], resp.shape[1], m, ld, g, tile, k, radius,
                             &rr[0], &cc[0], cap, nthreads)
        if n < 0:
            _check(<int>n)
        if n <= cap:
            # views, not copies: the pages beyond n were never touched, so
            # they cost no memory, and a copy would fault in new ones
            return rr[:n], cc[:n]
        cap = n


cdef tuple _dog_buffers(Py_ssize_t rows, Py_ssize_t cols, sigmas, out):
    """The sigmas of dog_octaves and dog_noise_nms as float64, and their
    resp and scale: ``out`` checked, or new arrays of zeros (with row
    ranges, the pixels left out keep what the arrays held, and the noise
    pass's NaN test reads them: never what the allocator left there)."""
    cdef cnp.ndarray[cnp.float64_t, ndim=1] sig = np.ascontiguousarray(sigmas, dtype=np.float64)
    if sig.ndim != 1 or sig.shape[0] < 2:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef cnp.ndarray[cnp.float32_t, ndim=2] resp
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] scale
    if out is None:
        return sig, np.zeros((rows, cols), np.float32), np.zeros((rows, cols), np.uint8)
    resp, scale = out
    if (resp.shape[0] != rows or resp.shape[1] != cols or scale.shape[0] != rows
            or scale.shape[1] != cols or not resp.flags.c_contiguous
            or not scale.flags.c_contiguous or not resp.flags.writeable
            or not scale.flags.writeable):
        raise ValueError("napari-calc kernel: out must be writeable C-contiguous arrays of "
                         "the image's shape")
    return sig, resp, scale


cdef tuple _row_ranges(ranges, Py_ssize_t rows):
    """The DoG's ``ranges`` (lo, hi), checked: contiguous int32, one entry a row."""
    cdef const int32_t[::1] lov, hiv
    lov, hiv = ranges
    if lov.shape[0] != rows or hiv.shape[0] != rows:
        raise ValueError("napari-calc kernel: ranges must have one entry per row")
    return lov, hiv


cdef tuple _noise_mask(mask, blocks, Py_ssize_t rows, Py_ssize_t cols, str who):
    """The noise pass's mask (rows x cols, its row pitch) or blocks
    ``(small, fy, fx, row0, col0)``, checked: ``(mask, ld, small uint8,
    hh, ww, fy, fx, row0, col0)`` with None for the one not given."""
    cdef const uint8_t[:, :] mv
    cdef Py_ssize_t ld = cols, fy = 0, fx = 0, row0 = 0, col0 = 0
    if mask is not None and blocks is not None:
        raise ValueError(f"{who} takes a mask or blocks, not both")
    if mask is not None:
        mv = mask
        ld = _mask_pitch(mv, rows, cols)
    if blocks is None:
        return mask, ld, None, 0, 0, 0, 0, 0, 0
    small, fy, fx, row0, col0 = blocks
    small = np.ascontiguousarray(small).view(np.uint8)
    if small.ndim != 2 or small.shape[0] < 1 or small.shape[1] < 1 or fy < 1 or fx < 1 or row0 < 0 or col0 < 0:
        raise ValueError("blocks: need a non-empty mask, block sizes >= 1 and offsets >= 0")
    return None, ld, small, small.shape[0], small.shape[1], fy, fx, row0, col0


def noise_nms(cnp.float32_t[:, ::1] resp not None, Py_ssize_t tile, mask=None,
              Py_ssize_t min_count=16, float k=3.0, int radius=1, int nthreads=0, bint values=False,
              blocks=None, Py_ssize_t top=0):
    """tile_noise, its fix-up (bad tiles take the good ones' median) and
    nms with that grid, in one pass: ``(grid, rows, cols)``, or None when
    the kernel leaves it to those steps (no good tile, or NaNs in resp).
    mask as in nms. With ``values``: ``(grid, rows, cols, value, noise,
    snr)``, the last three those of :func:`peak_values` (the values read
    during the pass).

    ``blocks=(small, fy, fx, row0, col0)`` instead of ``mask``: the mask
    upscale_mask would make of ``small`` (2-D bool or uint8), at rows
    ``row0 ...`` and columns ``col0 ...`` of it (see
    ncalc_noise_nms_blocks in csrc/ncalc.h), never made in full.

    ``top > 0``: the peaks of good tiles (noise finite and > 0 before the
    fix-up) whose SNR is below a bound B are left out, B at most the
    ``top``-th largest SNR (the lower edge of a bin, 32 an octave, that
    ``top`` such peaks reach; see ncalc_noise_nms in csrc/ncalc.h). The
    rest of the list is the same, in the same order, for any thread count,
    and :func:`top_k` of its SNRs selects the very peaks it selects of the
    full list."""
    cdef const uint8_t *m = NULL
    cdef const uint8_t[:, :] mv
    cdef const uint8_t[:, ::1] sv
    cdef const uint8_t *ps = NULL
    cdef Py_ssize_t hh, ww, fy, fx, row0, col0, ld
    mask, ld, small, hh, ww, fy, fx, row0, col0 = _noise_mask(mask, blocks, resp.shape[0], resp.shape[1],
                                                             "noise_nms")
    if mask is not None:
        mv = mask
        m = &mv[0, 0]
    if small is not None:
        sv = small
        ps = &sv[0, 0]
    cdef Py_ssize_t gh = (resp.shape[0] + tile - 1) // tile if tile > 0 else 0
    cdef Py_ssize_t gw = (resp.shape[1] + tile - 1) // tile if tile > 0 else 0
    cdef cnp.ndarray[cnp.float32_t, ndim=2] grid = np.empty((max(gh, 1), max(gw, 1)), np.float32)
    cdef Py_ssize_t cap = max(4096, resp.shape[0] * resp.shape[1] // 16 + 1), n
    cdef cnp.ndarray[cnp.int32_t, ndim=1] rr, cc
    cdef cnp.ndarray[cnp.float32_t, ndim=1] val
    cdef cnp.ndarray[cnp.float64_t, ndim=1] noise, snr
    cdef float *pv = NULL
    while True:
        rr = np.empty(cap, np.int32)  # room as in nms
        cc = np.empty(cap, np.int32)
        if values:
            val = np.empty(cap, np.float32)
            pv = &val[0]
        if ps != NULL:
            with nogil:
                n = ncalc_noise_nms_blocks(&resp[0, 0], resp.shape[0], resp.shape[1], ps, hh, ww, fy,
                                           fx, row0, col0, tile, min_count, k, radius, &grid[0, 0],
                                           &rr[0], &cc[0], pv, cap, top, nthreads)
        else:
            with nogil:
                n = ncalc_noise_nms(&resp[0, 0], resp.shape[0], resp.shape[1], m, ld, tile, min_count,
                                    k, radius, &grid[0, 0], &rr[0], &cc[0], pv, cap, top, nthreads)
        if n == NCALC_EFALLBACK:
            return None
        if n < 0:
            _check(<int>n)
        if n <= cap:
            break
        cap = n
    if not values:
        return grid, rr[:n], cc[:n]
    return _with_values(resp.shape[0], resp.shape[1], grid, tile, rr, cc, val, n, nthreads)


cdef tuple _with_values(Py_ssize_t rows, Py_ssize_t cols, cnp.ndarray[cnp.float32_t, ndim=2] grid,
                        Py_ssize_t tile, cnp.ndarray[cnp.int32_t, ndim=1] rr,
                        cnp.ndarray[cnp.int32_t, ndim=1] cc, cnp.ndarray[cnp.float32_t, ndim=1] val,
                        Py_ssize_t n, int nthreads):
    """noise_nms's result with values: the noise and SNR of the n peaks
    from their values (ncalc_peak_values without resp)."""
    # (allocated at their size: more arrays of cap's size made glibc give
    # memory back and fault it in again on every call)
    cdef cnp.ndarray[cnp.float64_t, ndim=1] noise = np.empty(max(n, 1), np.float64)
    cdef cnp.ndarray[cnp.float64_t, ndim=1] snr = np.empty(max(n, 1), np.float64)
    cdef int st
    with nogil:
        st = ncalc_peak_values(NULL, rows, cols, &grid[0, 0], tile, NULL,
                               &rr[0], &cc[0], n, &val[0], &noise[0], &snr[0], NULL, nthreads)
    _check(st)
    return grid, rr[:n], cc[:n], val[:n], noise[:n], snr[:n]


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
    int ncalc_local_hessian3_cross(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                                   const int32_t *cand_rows, const int32_t *cand_cols, Py_ssize_t n,
                                   const float *sigma1, const float *sigma2, const float *sigma3,
                                   double truncate, const int *cross, float *out, int nthreads)


def local_hessian3(cnp.ndarray img not None, cnp.int32_t[::1] rows not None,
                   cnp.int32_t[::1] cols not None, cnp.float32_t[::1] sigma1 not None,
                   cnp.float32_t[::1] sigma2 not None, cnp.float32_t[::1] sigma3 not None,
                   double truncate=3.5, int nthreads=0, cross=(True, True, True)):
    """:func:`local_hessian` at three scales per candidate in one pass:
    a (3, 4, n) float32 array, [k] the same as ``local_hessian`` at the
    k-th sigma. ``cross[k]`` false: the cross derivative ``[k, 2]`` of that
    scale is not computed (NaN; the others are the same, sooner)."""
    cdef int dt = _dtype_code(img)
    cdef Py_ssize_t n = rows.shape[0]
    if cols.shape[0] != n or sigma1.shape[0] != n or sigma2.shape[0] != n or sigma3.shape[0] != n:
        raise ValueError("rows, cols and the sigmas must have the same length")
    if len(cross) != 3:
        raise ValueError("cross must have three values, one per scale")
    cdef int cr[3]
    cdef int k
    for k in range(3):
        cr[k] = 1 if cross[k] else 0
    cdef cnp.ndarray[cnp.float32_t, ndim=3] out = np.zeros((3, 4, max(n, 1)), np.float32)
    for k in range(3):
        if not cr[k]:
            out[k, 2, :] = np.nan
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int st = 0
    if not img.flags['C_CONTIGUOUS'] or img.ndim != 2:
        raise ValueError("kernel input must be a C-contiguous 2-D array")
    if n:
        with nogil:
            st = ncalc_local_hessian3_cross(src, dt, img.shape[0], img.shape[1], &rows[0], &cols[0], n,
                                            &sigma1[0], &sigma2[0], &sigma3[0], truncate, cr,
                                            &out[0, 0, 0], nthreads)
    _check(st)
    return out[:, :, :n]


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
    int ncalc_dog_octaves_rows(const void *img, int dtype, Py_ssize_t rows, Py_ssize_t cols,
                               Py_ssize_t ld, const double *sigmas, int nsigmas, double truncate,
                               double split_sigma, int max_levels, const int32_t *lo,
                               const int32_t *hi, float *resp, uint8_t *scale, int nthreads)
    int ncalc_mask_row_ranges(const uint8_t *mask, Py_ssize_t rows, Py_ssize_t cols,
                              Py_ssize_t mask_ld, int pad, int32_t *lo, int32_t *hi, int nthreads)


cdef extern from "ncalc.h" nogil:
    int ncalc_extent_ranges(const int32_t *lo, const int32_t *hi, Py_ssize_t n, Py_ssize_t r0,
                            Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1, int pad, int32_t *out_lo,
                            int32_t *out_hi)


def extent_ranges(lo not None, hi not None, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1,
                  int pad=0):
    """``mask_row_ranges`` of the crop ``[r0, r1) x [c0, c1)`` of a mask
    given by its rows' extents ``[lo[q], hi[q])`` (int32; empty where
    ``lo >= hi``), ``pad`` as there: ``(lo, hi)`` for the crop's rows, in
    its columns (see ncalc_extent_ranges in csrc/ncalc.h)."""
    cdef const int32_t[::1] lv = np.ascontiguousarray(lo, dtype=np.int32)
    cdef const int32_t[::1] hv = np.ascontiguousarray(hi, dtype=np.int32)
    cdef Py_ssize_t n = lv.shape[0]
    if hv.shape[0] != n or r0 > r1 or c0 > c1 or pad < 0:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef cnp.ndarray[cnp.int32_t, ndim=1] a = np.empty(max(r1 - r0, 1), np.int32)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] b = np.empty(max(r1 - r0, 1), np.int32)
    cdef int32_t dummy = 0
    cdef const int32_t *pl = &lv[0] if n else &dummy
    cdef const int32_t *ph = &hv[0] if n else &dummy
    cdef int st
    with nogil:
        st = ncalc_extent_ranges(pl, ph, n, r0, r1, c0, c1, pad, &a[0], &b[0])
    _check(st)
    return a[:r1 - r0], b[:r1 - r0]


cdef extern from "ncalc.h" nogil:
    int ncalc_block_extents(const uint8_t *tissue, Py_ssize_t hh, Py_ssize_t ww, Py_ssize_t ld,
                            Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t h, Py_ssize_t w, int32_t *lo,
                            int32_t *hi, int64_t *bbox)


def block_extents(tissue not None, Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t h, Py_ssize_t w):
    """The bounding box ``(r0, r1, c0, c1)`` (None when nothing is set) and
    the rows' extents ``(lo, hi)`` (int32, h each) of the h x w mask that
    upscaling the working-resolution mask ``tissue`` (2-D bool or uint8,
    rows contiguous) by blocks of fy x fx makes, see ncalc_block_extents
    in csrc/ncalc.h."""
    cdef const uint8_t[:, :] mv = tissue.view(np.uint8) if tissue.dtype == np.bool_ else tissue
    cdef Py_ssize_t hh = mv.shape[0], ww = mv.shape[1]
    if hh < 1 or ww < 1:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef Py_ssize_t ld = _mask_pitch(mv, hh, ww)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] lo = np.empty(max(h, 1), np.int32)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] hi = np.empty(max(h, 1), np.int32)
    cdef int64_t box[4]
    cdef int st
    with nogil:
        st = ncalc_block_extents(&mv[0, 0], hh, ww, ld, fy, fx, h, w, <int32_t *>&lo[0],
                                 <int32_t *>&hi[0], box)
    if st < 0:
        _check(st)
    bbox = (int(box[0]), int(box[1]), int(box[2]), int(box[3])) if st else None
    return bbox, (lo[:h], hi[:h])


cdef extern from "ncalc.h" nogil:
    int ncalc_breast_blocks(const double *small, Py_ssize_t hh, Py_ssize_t ww, int nbins, double air_min,
                            double air_max, Py_ssize_t margin, Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t h,
                            Py_ssize_t w, uint8_t *tissue, int32_t *lo, int32_t *hi, int64_t *bbox,
                            int nthreads)


def breast_blocks(const cnp.float64_t[:, ::1] small not None, int nbins, double air_min, double air_max,
                  Py_ssize_t margin, Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t h, Py_ssize_t w,
                  int nthreads=0):
    """The breast mask's steps after the block means in one call (see
    ncalc_breast_blocks in csrc/ncalc.h): ``None`` when the whole image is
    kept, else ``(tissue, bbox, (lo, hi))``: the eroded working-resolution
    mask (bool, hh x ww), the box (None when it is empty) and the rows'
    extents (int32, h each), as ``block_extents(tissue, fy, fx, h, w)``
    gives them. ValueError for a NaN or infinite block mean. ``nthreads``:
    the threshold's passes on that many threads (0: the default); the same
    result whatever the count."""
    cdef Py_ssize_t hh = small.shape[0], ww = small.shape[1]
    if hh < 1 or ww < 1 or fy < 1 or fx < 1 or h < hh * fy or w < ww * fx:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] tissue = np.empty((hh, ww), np.uint8)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] lo = np.empty(h, np.int32)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] hi = np.empty(h, np.int32)
    cdef int64_t box[4]
    cdef int st
    with nogil:
        st = ncalc_breast_blocks(&small[0, 0], hh, ww, nbins, air_min, air_max, margin, fy, fx, h, w,
                                 &tissue[0, 0], <int32_t *>&lo[0], <int32_t *>&hi[0], box, nthreads)
    if st < 0:
        _check(st)
    if st == 0:
        return None
    bbox = (int(box[0]), int(box[1]), int(box[2]), int(box[3])) if st == 1 else None
    return tissue.view(bool), bbox, (lo, hi)


def mask_row_ranges(mask not None, int pad=0, int nthreads=0):
    """Per row, the column range ``[lo, hi)`` of a 2-D uint8 mask (rows
    contiguous) grown by ``pad`` pixels in every direction: ``(lo, hi)``,
    two int32 arrays, (0, 0) for a row with nothing near it (see
    ncalc_mask_row_ranges in csrc/ncalc.h)."""
    cdef const uint8_t[:, :] mv = mask
    cdef Py_ssize_t rows = mv.shape[0], cols = mv.shape[1]
    if rows < 1 or cols < 1:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef Py_ssize_t ld = _mask_pitch(mv, rows, cols)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] lo = np.empty(rows, np.int32)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] hi = np.empty(rows, np.int32)
    cdef int st
    with nogil:
        st = ncalc_mask_row_ranges(&mv[0, 0], rows, cols, ld, pad, &lo[0], &hi[0], nthreads)
    _check(st)
    return lo, hi


def dog_octaves(cnp.ndarray img not None, sigmas, double truncate=4.0, double split_sigma=1.9,
                int max_levels=16, int nthreads=0, out=None, ranges=None):
    """Multi-scale DoG on a SIFT-like octave pyramid: pair i is computed
    at level L (grid 2^L pixels) while sigmas[i] < split_sigma * 2^L, each
    level being the previous level's last Gaussian decimated 2x, and the
    coarse responses are brought back bilinearly (see ncalc_dog_octaves in
    csrc/ncalc.h). max_levels=0 is dog_response. Returns (resp float32,
    scale uint8) like dog_response. img may be a crop of a larger
    C-contiguous image (rows contiguous, no copy): the result is that of a
    copy. out: an optional (resp, scale) pair of C-contiguous float32 and
    uint8 arrays of img's shape to write into (memory reused across calls
    costs no page faults); they are returned. ranges: an optional (lo, hi)
    pair of int32 arrays, one entry per row: only columns lo[r] <= c < hi[r]
    of row r are wanted (the same values there), and only what they depend
    on is computed; the rest of resp and scale is not to be used (it may
    hold what out held before; see ncalc_dog_octaves_rows)."""
    cdef Py_ssize_t ld = _row_pitch(img)
    cdef int dt = _pixel_code(img)
    cdef Py_ssize_t rows = img.shape[0], cols = img.shape[1]
    cdef cnp.ndarray[cnp.float64_t, ndim=1] sig
    cdef cnp.ndarray[cnp.float32_t, ndim=2] resp
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] scale
    sig, resp, scale = _dog_buffers(rows, cols, sigmas, out)
    cdef const int32_t[::1] lov, hiv
    cdef const int32_t *plo = NULL
    cdef const int32_t *phi = NULL
    if ranges is not None:
        lov, hiv = _row_ranges(ranges, rows)
        plo, phi = &lov[0], &hiv[0]
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int n = <int>sig.shape[0]
    cdef int st
    with nogil:
        st = ncalc_dog_octaves_rows(src, dt, rows, cols, ld, &sig[0], n, truncate, split_sigma,
                                    max_levels, plo, phi, &resp[0, 0], &scale[0, 0], nthreads)
    _check(st)
    return resp, scale


def dog_noise_nms(cnp.ndarray img not None, sigmas, double truncate, double split_sigma, int max_levels,
                  int nthreads, out, ranges, Py_ssize_t tile, mask=None, Py_ssize_t min_count=16,
                  float k=3.0, int radius=1, blocks=None, Py_ssize_t top=0, nlf=None):
    """``dog_octaves(img, sigmas, truncate, split_sigma, max_levels,
    nthreads, out, ranges)`` and then ``noise_nms(resp, tile, mask,
    min_count, k, radius, nthreads, values=True, blocks=blocks, top=top)``
    in one call: ``(resp, scale, fused)``, ``fused`` what that noise_nms
    returns (None: use the two-step path). The same values as the two
    calls; the coarser levels' response is merged into ``resp`` band by
    band as the noise pass reaches it, instead of in a pass of its own
    (see ncalc_dog_noise_nms in csrc/ncalc.h). ``out`` and ``ranges`` as
    in dog_octaves (None: new arrays, every pixel).

    ``nlf``: positional arguments of :func:`nlf_fit` (``planes, k, smask,
    max_bins[, nthreads[, blocks[, min_masked]]]``; its own image, any
    size): that fit is made too, on one of the threads while the others
    filter (ncalc_dog_noise_nms_side), and what it returns is a fourth
    item, ``(resp, scale, fused, fit)``."""
    cdef Py_ssize_t ld = _row_pitch(img)
    cdef int dt = _pixel_code(img)
    cdef Py_ssize_t rows = img.shape[0], cols = img.shape[1]
    cdef cnp.ndarray[cnp.float64_t, ndim=1] sig
    cdef cnp.ndarray[cnp.float32_t, ndim=2] resp
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] scale
    sig, resp, scale = _dog_buffers(rows, cols, sigmas, out)
    cdef const int32_t[::1] lov, hiv
    cdef const int32_t *plo = NULL
    cdef const int32_t *phi = NULL
    if ranges is not None:
        lov, hiv = _row_ranges(ranges, rows)
        plo, phi = &lov[0], &hiv[0]
    cdef const uint8_t *m = NULL
    cdef const uint8_t[:, :] mv
    cdef const uint8_t[:, ::1] sv
    cdef const uint8_t *ps = NULL
    cdef Py_ssize_t hh, ww, fy, fx, row0, col0, mld
    mask, mld, small, hh, ww, fy, fx, row0, col0 = _noise_mask(mask, blocks, rows, cols, "dog_noise_nms")
    if mask is not None:
        mv = mask
        m = &mv[0, 0]
    if small is not None:
        sv = small
        ps = &sv[0, 0]
    cdef Py_ssize_t gh = (rows + tile - 1) // tile if tile > 0 else 0
    cdef Py_ssize_t gw = (cols + tile - 1) // tile if tile > 0 else 0
    cdef cnp.ndarray[cnp.float32_t, ndim=2] grid = np.empty((max(gh, 1), max(gw, 1)), np.float32)
    cdef Py_ssize_t cap = max(4096, rows * cols // 16 + 1), n
    cdef cnp.ndarray[cnp.int32_t, ndim=1] rr = np.empty(cap, np.int32)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] cc = np.empty(cap, np.int32)
    cdef cnp.ndarray[cnp.float32_t, ndim=1] val = np.empty(cap, np.float32)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int ns = <int>sig.shape[0]
    cdef _NlfJob job = None
    cdef ncalc_side side
    cdef ncalc_side *pside = NULL
    if nlf is not None:
        job = _NlfJob(*nlf)
        side.fn = _nlf_job_run
        side.arg = &job.a
        side.done = 0
        pside = &side
    with nogil:
        n = ncalc_dog_noise_nms_side(src, dt, rows, cols, ld, &sig[0], ns, truncate, split_sigma,
                                     max_levels, plo, phi, &resp[0, 0], &scale[0, 0], m, mld, ps, hh,
                                     ww, fy, fx, row0, col0, tile, min_count, k, radius, &grid[0, 0],
                                     &rr[0], &cc[0], &val[0], cap, top, nthreads, pside)
    if n == NCALC_EFALLBACK:
        fused = None
    else:
        if n < 0:
            _check(<int>n)
        if n > cap:  # more peaks than room: the noise pass again, on the merged response
            fused = noise_nms(resp, tile, mask, min_count, k, radius, nthreads, values=True,
                              blocks=blocks, top=top)
        else:
            fused = _with_values(rows, cols, grid, tile, rr, cc, val, n, nthreads)
    if job is None:
        return resp, scale, fused
    return resp, scale, fused, job.result()


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


cdef extern from "ncalc.h" nogil:
    int ncalc_plane_mean(const void *img, int dtype, Py_ssize_t planes, Py_ssize_t plane_ld,
                         Py_ssize_t n, float *out, int nthreads)


def plane_mean(cnp.ndarray img not None, int nthreads=0):
    """img.mean(axis=0, dtype=float32) of a 3-D stack of uint16/float32
    planes, each plane C-contiguous (planes may be any whole number of
    pixels apart), bit for bit (see ncalc_plane_mean in csrc/ncalc.h)."""
    cdef int dt = _pixel_code(img)
    if img.ndim != 3 or img.shape[0] < 1:
        raise ValueError("plane_mean needs a 3-D stack of at least one plane")
    cdef Py_ssize_t item = img.itemsize, rows = img.shape[1], cols = img.shape[2]
    if img.strides[2] != item or img.strides[1] != cols * item:
        raise ValueError("each plane must be C-contiguous")
    if img.shape[0] > 1 and (img.strides[0] % item != 0 or img.strides[0] < rows * cols * item):
        raise ValueError("planes must not overlap")
    cdef Py_ssize_t ld = img.strides[0] // item if img.shape[0] > 1 else rows * cols
    cdef cnp.ndarray[cnp.float32_t, ndim=2] out = np.empty((rows, cols), np.float32)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef int st = 0
    if rows and cols:
        with nogil:
            st = ncalc_plane_mean(src, dt, img.shape[0], ld, rows * cols, &out[0, 0], nthreads)
    _check(st)
    return out


cdef extern from "ncalc.h" nogil:
    Py_ssize_t ncalc_nlf_samples(const void *img, int dtype, Py_ssize_t planes,
                                 Py_ssize_t plane_ld, Py_ssize_t rows, Py_ssize_t cols,
                                 Py_ssize_t ld, Py_ssize_t k, const uint8_t *smask, float *resid,
                                 float *level, int nthreads)
    int ncalc_nlf_bins(const float *level, const float *resid, Py_ssize_t n, const double *edges,
                       int nedges, Py_ssize_t *count, float *lev_median, float *resid_mad,
                       int nthreads)


def _nlf_geometry(cnp.ndarray img, Py_ssize_t k, smask):
    """The checks of nlf_samples: (planes, plane_ld, rows, cols, samples
    per plane, smask as C-contiguous uint8 or None)."""
    _pixel_code(img)
    if img.ndim not in (2, 3):
        raise ValueError("kernel input must be a 2-D image or a 3-D stack")
    cdef Py_ssize_t item = img.itemsize
    cdef Py_ssize_t planes = 1 if img.ndim == 2 else img.shape[0]
    cdef Py_ssize_t rows = img.shape[img.ndim - 2], cols = img.shape[img.ndim - 1]
    if rows < 3 or cols < 3 or k < 1 or planes < 1:
        raise ValueError("napari-calc kernel: invalid argument")
    if img.strides[img.ndim - 1] != item or img.strides[img.ndim - 2] != cols * item:
        raise ValueError("each plane must be C-contiguous")
    cdef Py_ssize_t plane_ld = 0
    if img.ndim == 3 and planes > 1:
        if img.strides[0] % item != 0 or img.strides[0] < rows * cols * item:
            raise ValueError("planes must not overlap")
        plane_ld = img.strides[0] // item
    cdef Py_ssize_t nr = (rows - 2 + k - 1) // k, nc = (cols - 2 + k - 1) // k
    cdef const uint8_t[:, ::1] mv
    if smask is not None:
        mv = smask
        if mv.shape[0] != nr or mv.shape[1] != nc:
            raise ValueError(f"sample mask must be {nr}x{nc}")
    return planes, plane_ld, rows, cols, nr * nc, smask


def nlf_samples(cnp.ndarray img not None, Py_ssize_t k, smask=None, int nthreads=0):
    """Noise-level-function samples (see ncalc_nlf_samples in csrc/ncalc.h)
    of a 2-D image or a 3-D stack of uint16/float32 planes, each plane
    C-contiguous (planes may be any number of planes apart): (resid,
    level), float32, of the samples every k-th row and column from (1, 1)
    where smask (uint8, C-contiguous, one per sample of a plane) is
    non-zero, in (plane, row, col) order."""
    cdef Py_ssize_t planes, plane_ld, rows, cols, per_plane
    planes, plane_ld, rows, cols, per_plane, smask = _nlf_geometry(img, k, smask)
    cdef int dt = _pixel_code(img)
    cdef const uint8_t[:, ::1] mv
    cdef const uint8_t *m = NULL
    if smask is not None:
        mv = smask
        m = &mv[0, 0]
    cdef cnp.ndarray[cnp.float32_t, ndim=1] resid = np.empty(max(1, planes * per_plane), np.float32)
    cdef cnp.ndarray[cnp.float32_t, ndim=1] level = np.empty(max(1, planes * per_plane), np.float32)
    cdef const void *src = cnp.PyArray_DATA(img)
    cdef Py_ssize_t n
    with nogil:
        n = ncalc_nlf_samples(src, dt, planes, plane_ld, rows, cols, cols, k, m, &resid[0],
                              &level[0], nthreads)
    if n < 0:
        _check(<int>n)
    return resid[:n], level[:n]


cdef struct nlf_job_args:
    const void *img
    int dtype
    Py_ssize_t planes, plane_ld, rows, cols, k
    const uint8_t *smask
    const uint8_t *small
    Py_ssize_t hh, ww, fy, fx, nr, nc, min_masked
    uint8_t *bsample
    int max_bins
    float *resid
    float *level
    Py_ssize_t *count
    float *lev
    float *mad
    double *curve_lev
    double *curve_sd
    int nthreads
    Py_ssize_t n
    int nbins
    int m
    int status


cdef void _nlf_job_run(void *arg) noexcept nogil:
    cdef nlf_job_args *a = <nlf_job_args *>arg
    cdef Py_ssize_t set
    if a.small != NULL:  # the sample mask from the blocks; all samples when it holds too few
        set = ncalc_block_sample(a.small, a.hh, a.ww, a.fy, a.fx, a.k, a.nr, a.nc, a.bsample)
        if set < 0:
            a.status = <int>set
            return
        a.smask = a.bsample if a.planes * set >= a.min_masked else NULL
    a.status = ncalc_nlf_fit(a.img, a.dtype, a.planes, a.plane_ld, a.rows, a.cols, a.cols, a.k,
                             a.smask, a.max_bins, a.resid, a.level, &a.n, &a.nbins,
                             a.count, a.lev, a.mad, a.nthreads)
    if a.status == 0 and a.nbins > 0:
        a.status = ncalc_nlf_curve(a.count, a.lev, a.mad, a.nbins, a.curve_lev, a.curve_sd, &a.m)


cdef class _NlfJob:
    """The arguments and outputs of one call of ncalc_nlf_fit: the arrays it
    reads and writes are held here."""
    cdef nlf_job_args a
    cdef object keep

    def __init__(self, cnp.ndarray img not None, Py_ssize_t k, smask=None, int max_bins=24,
                 int nthreads=1, blocks=None, Py_ssize_t min_masked=1000):
        if max_bins < 1 or max_bins > 255:
            raise ValueError("max_bins must be 1 to 255")
        cdef Py_ssize_t planes, plane_ld, rows, cols, per_plane
        planes, plane_ld, rows, cols, per_plane, smask = _nlf_geometry(img, k, smask)
        cdef const uint8_t[:, ::1] bv
        cdef cnp.ndarray[cnp.uint8_t, ndim=1] bsample = None
        self.a.small = NULL
        if blocks is not None:
            if smask is not None:
                raise ValueError("a sample mask or blocks, not both")
            small, fy, fx = blocks
            small = np.ascontiguousarray(small).view(np.uint8)
            bv = small
            if bv.shape[0] < 1 or bv.shape[1] < 1 or fy < 1 or fx < 1:
                raise ValueError("napari-calc kernel: invalid argument")
            bsample = np.empty(max(1, per_plane), np.uint8)
            self.a.small, self.a.hh, self.a.ww, self.a.fy, self.a.fx = &bv[0, 0], bv.shape[0], bv.shape[1], fy, fx
            self.a.nr, self.a.nc = (rows - 2 + k - 1) // k, (cols - 2 + k - 1) // k
            self.a.bsample, self.a.min_masked = &bsample[0], min_masked
            blocks = (small, bsample)
        cdef Py_ssize_t size = max(1, planes * per_plane)
        cdef cnp.ndarray[cnp.float32_t, ndim=1] resid = np.empty(size, np.float32)
        cdef cnp.ndarray[cnp.float32_t, ndim=1] level = np.empty(size, np.float32)
        cdef cnp.ndarray[cnp.int64_t, ndim=1] count = np.zeros(max_bins, np.int64)
        cdef cnp.ndarray[cnp.float32_t, ndim=1] lev = np.zeros(max_bins, np.float32)
        cdef cnp.ndarray[cnp.float32_t, ndim=1] mad = np.zeros(max_bins, np.float32)
        cdef cnp.ndarray[cnp.float64_t, ndim=1] clev = np.zeros(max_bins, np.float64)
        cdef cnp.ndarray[cnp.float64_t, ndim=1] csd = np.zeros(max_bins, np.float64)
        cdef const uint8_t[:, ::1] mv
        self.a.smask = NULL
        if smask is not None:
            mv = smask
            self.a.smask = &mv[0, 0]
        self.keep = (img, smask, resid, level, count, lev, mad, clev, csd, blocks)
        self.a.img = cnp.PyArray_DATA(img)
        self.a.dtype = _pixel_code(img)
        self.a.planes, self.a.plane_ld, self.a.rows, self.a.cols, self.a.k = planes, plane_ld, rows, cols, k
        self.a.max_bins = max_bins
        self.a.resid, self.a.level = &resid[0], &level[0]
        self.a.count, self.a.lev, self.a.mad = <Py_ssize_t *>&count[0], &lev[0], &mad[0]
        self.a.curve_lev, self.a.curve_sd = &clev[0], &csd[0]
        self.a.nthreads = nthreads
        self.a.n, self.a.nbins, self.a.m, self.a.status = 0, 0, 0, NCALC_EINVAL

    def run(self):
        with nogil:
            _nlf_job_run(&self.a)

    def result(self):
        """What nlf_fit returns of the run."""
        if self.a.status == NCALC_EINVAL:
            return None
        _check(self.a.status)
        cdef Py_ssize_t n = self.a.n
        cdef int nb = self.a.nbins, m = self.a.m
        _, _, resid, level, count, lev, mad, clev, csd, _ = self.keep
        if nb == 0:
            return resid[:n], level[:n], None, None, None, None
        return resid[:n], level[:n], count[:nb], lev[:nb], mad[:nb], (clev[:m], csd[:m])


def nlf_curve(cnp.int64_t[::1] count not None, cnp.float32_t[::1] lev_median not None,
              cnp.float32_t[::1] resid_mad not None):
    """The noise-level function's curve ``(lev, sd)`` (float64) from its
    bins (``nlf_bins``' count, median level and MAD), as
    noise_level_function makes it (see ncalc_nlf_curve in csrc/ncalc.h)."""
    cdef Py_ssize_t nb = count.shape[0]
    if lev_median.shape[0] != nb or resid_mad.shape[0] != nb or nb > 255:
        raise ValueError("count, lev_median and resid_mad must have one length, at most 255")
    cdef cnp.ndarray[cnp.float64_t, ndim=1] lev = np.empty(max(nb, 1), np.float64)
    cdef cnp.ndarray[cnp.float64_t, ndim=1] sd = np.empty(max(nb, 1), np.float64)
    cdef int m = 0, st = 0
    cdef int64_t zero = 0
    cdef float fzero = 0
    cdef const Py_ssize_t *pc = <const Py_ssize_t *>&count[0] if nb else <const Py_ssize_t *>&zero
    cdef const float *pl = &lev_median[0] if nb else &fzero
    cdef const float *pm = &resid_mad[0] if nb else &fzero
    with nogil:
        st = ncalc_nlf_curve(pc, pl, pm, <int>nb, &lev[0], &sd[0], &m)
    _check(st)
    return lev[:m], sd[:m]


def nlf_fit(cnp.ndarray img not None, Py_ssize_t k, smask=None, int max_bins=24, int nthreads=0,
            blocks=None, Py_ssize_t min_masked=1000):
    """The noise-level function's C steps in one call (see ncalc_nlf_fit
    in csrc/ncalc.h): ``nlf_samples(img, k, smask)``, the quantile edges
    of the levels and ``nlf_bins`` with them, for
    ``max(1, min(max_bins, n // 500))`` bins of the ``n`` samples, and
    the curve ``nlf_curve`` makes of those. Returns ``(resid, level,
    count, lev_median, resid_mad, (lev, sd))``; the last four are None
    below 50 samples. None when a sample is not finite (the caller's
    NumPy code decides then).

    ``blocks``: ``(small, fy, fx)``, a mask as blocks (see
    ``upscale_mask``) instead of ``smask``: the samples in it, or all
    samples when fewer than ``min_masked`` (over all planes) are."""
    job = _NlfJob(img, k, smask, max_bins, nthreads, blocks, min_masked)
    job.run()
    return job.result()


def nlf_bins(cnp.float32_t[::1] level not None, cnp.float32_t[::1] resid not None,
             cnp.float64_t[::1] edges not None, int nthreads=0):
    """Binned medians of the noise-level function (see ncalc_nlf_bins in
    csrc/ncalc.h): (count int64, median level float32, MAD of resid
    float32), one per bin (len(edges) + 1 bins). ValueError for non-finite
    data or decreasing edges."""
    if level.shape[0] != resid.shape[0]:
        raise ValueError("level and resid differ in length")
    if edges.shape[0] > 254:
        raise ValueError("at most 254 edges")
    cdef Py_ssize_t nb = edges.shape[0] + 1
    cdef cnp.ndarray[cnp.int64_t, ndim=1] count = np.empty(nb, np.int64)
    cdef cnp.ndarray[cnp.float32_t, ndim=1] lev = np.empty(nb, np.float32)
    cdef cnp.ndarray[cnp.float32_t, ndim=1] mad = np.empty(nb, np.float32)
    cdef const float *pl = &level[0] if level.shape[0] else NULL
    cdef const float *pr = &resid[0] if resid.shape[0] else NULL
    cdef const double *pe = &edges[0] if edges.shape[0] else NULL
    cdef float dummy = 0
    if pl == NULL:
        pl = &dummy
        pr = &dummy
    cdef int st
    with nogil:
        st = ncalc_nlf_bins(pl, pr, level.shape[0], pe, <int>edges.shape[0],
                            <Py_ssize_t *>&count[0], &lev[0], &mad[0], nthreads)
    _check(st)
    return count, lev, mad


cdef extern from "ncalc.h" nogil:
    int ncalc_sort_f32(const float *x, Py_ssize_t n, float *out, int nthreads)
    int ncalc_upscale_mask(const uint8_t *small, Py_ssize_t hh, Py_ssize_t ww, Py_ssize_t fy,
                           Py_ssize_t fx, Py_ssize_t rows, Py_ssize_t cols, uint8_t *out,
                           int nthreads)
    int ncalc_peak_values(const float *resp, Py_ssize_t rows, Py_ssize_t cols, const float *grid,
                          Py_ssize_t tile, const uint8_t *scale, const int32_t *pr,
                          const int32_t *pc, Py_ssize_t n, float *value, double *noise,
                          double *snr, int64_t *scale_out, int nthreads)
    Py_ssize_t ncalc_top_k(const double *v, Py_ssize_t n, Py_ssize_t k, int64_t *idx, int nthreads)


def sort_f32(const cnp.float32_t[::1] x not None, int nthreads=0):
    """A sorted copy of a 1-D float32 array (see ncalc_sort_f32 in
    csrc/ncalc.h): the values of numpy.sort, whatever nthreads (0: the
    OpenMP default). ValueError when x holds a NaN."""
    cdef Py_ssize_t n = x.shape[0]
    cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(n, np.float32)
    cdef int st = 0
    if n:
        with nogil:
            st = ncalc_sort_f32(&x[0], n, &out[0], nthreads)
    _check(st)
    return out


def upscale_mask(small not None, Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t rows, Py_ssize_t cols,
                 int nthreads=0):
    """A rows x cols bool mask from a working-resolution one (2-D bool or
    uint8, hh x ww, hh <= rows // fy, ww <= cols // fx): each value covers
    an fy x fx block, the last block row and column also the rows and
    columns left over (see ncalc_upscale_mask in csrc/ncalc.h)."""
    cdef const uint8_t[:, ::1] s = np.ascontiguousarray(small).view(np.uint8)
    cdef Py_ssize_t hh = s.shape[0], ww = s.shape[1]
    if hh < 1 or ww < 1 or fy < 1 or fx < 1 or hh * fy > rows or ww * fx > cols:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] out = np.empty((rows, cols), np.uint8)
    cdef int st
    with nogil:
        st = ncalc_upscale_mask(&s[0, 0], hh, ww, fy, fx, rows, cols, &out[0, 0], nthreads)
    _check(st)
    return out.view(bool)


def peak_values(const cnp.float32_t[:, ::1] resp not None, const cnp.float32_t[:, ::1] grid not None,
                Py_ssize_t tile, const cnp.int32_t[::1] rows not None,
                const cnp.int32_t[::1] cols not None, scale=None, int nthreads=0):
    """The response, tile noise and SNR at the peaks (rows, cols) of
    :func:`nms`, and the scale there when ``scale`` (uint8, resp's shape)
    is given: (value float32, noise float64, snr float64, scale int64 or
    None), see ncalc_peak_values in csrc/ncalc.h."""
    cdef Py_ssize_t n = rows.shape[0]
    if cols.shape[0] != n:
        raise ValueError("rows and cols must have the same length")
    if tile < 1 or grid.shape[0] != (resp.shape[0] + tile - 1) // tile or \
            grid.shape[1] != (resp.shape[1] + tile - 1) // tile:
        raise ValueError("grid must be ceil(rows / tile) x ceil(cols / tile)")
    cdef const uint8_t[:, ::1] sv
    cdef const uint8_t *ps = NULL
    if scale is not None:
        sv = scale
        if sv.shape[0] != resp.shape[0] or sv.shape[1] != resp.shape[1]:
            raise ValueError("scale must have resp's shape")
        ps = &sv[0, 0]
    cdef cnp.ndarray[cnp.float32_t, ndim=1] value = np.empty(max(n, 1), np.float32)
    cdef cnp.ndarray[cnp.float64_t, ndim=1] noise = np.empty(max(n, 1), np.float64)
    cdef cnp.ndarray[cnp.float64_t, ndim=1] snr = np.empty(max(n, 1), np.float64)
    cdef cnp.ndarray[cnp.int64_t, ndim=1] sc = np.empty(max(n, 1) if scale is not None else 1, np.int64)
    cdef const int32_t *pr = &rows[0] if n else NULL
    cdef const int32_t *pc = &cols[0] if n else NULL
    cdef int st
    with nogil:
        st = ncalc_peak_values(&resp[0, 0], resp.shape[0], resp.shape[1], &grid[0, 0], tile, ps,
                               pr, pc, n, &value[0], &noise[0], &snr[0], <int64_t *>&sc[0],
                               nthreads)
    if st == -1:
        raise ValueError("napari-calc kernel: a peak outside the image")
    _check(st)
    return value[:n], noise[:n], snr[:n], (sc[:n] if scale is not None else None)


cdef extern from "ncalc.h" nogil:
    int ncalc_merge_slices(const int64_t *slice, const int64_t *row, const int64_t *col,
                           const double *snr, Py_ssize_t n, double radius2, int64_t k,
                           uint8_t *keep, int nthreads)


def merge_slices(const int64_t[::1] slice not None, const int64_t[::1] row not None,
                 const int64_t[::1] col not None, const cnp.float64_t[::1] snr not None,
                 double radius2, int64_t k, int nthreads=0):
    """Keep flags (bool) of the points after suppression across slices (see
    ncalc_merge_slices in csrc/ncalc.h). ValueError when the points are not
    sorted by slice, then row, or lie too far out."""
    cdef Py_ssize_t n = slice.shape[0]
    if row.shape[0] != n or col.shape[0] != n or snr.shape[0] != n:
        raise ValueError("slice, row, col and snr differ in length")
    cdef cnp.ndarray[cnp.uint8_t, ndim=1] keep = np.empty(max(n, 1), np.uint8)
    cdef const int64_t *ps = &slice[0] if n else NULL
    cdef const int64_t *pr = &row[0] if n else NULL
    cdef const int64_t *pc = &col[0] if n else NULL
    cdef const double *pv = &snr[0] if n else NULL
    cdef int st
    with nogil:
        st = ncalc_merge_slices(ps, pr, pc, pv, n, radius2, k, <uint8_t *>&keep[0], nthreads)
    if st == -1:
        raise ValueError("merge_slices: points not sorted by slice and row, or out of range")
    _check(st)
    return keep[:n].view(bool)


def top_k(const cnp.float64_t[::1] values not None, Py_ssize_t k, int nthreads=0):
    """Indices (increasing, int64) of the k largest values, the earliest
    among those equal to the k-th largest (see ncalc_top_k in
    csrc/ncalc.h); all of them when k >= len(values), whatever nthreads
    (0: the OpenMP default). ValueError when values holds a NaN."""
    cdef Py_ssize_t n = values.shape[0]
    if k < 0:
        raise ValueError("k must be >= 0")
    if k > n:
        k = n
    cdef cnp.ndarray[cnp.int64_t, ndim=1] idx = np.empty(max(k, 1), np.int64)
    cdef const double *pv = &values[0] if n else NULL
    cdef Py_ssize_t got
    with nogil:
        got = ncalc_top_k(pv, n, k, <int64_t *>&idx[0], nthreads)
    if got < 0:
        _check(<int>got)
    return idx[:k]


def top_peaks(rr not None, cc not None, val not None, noise not None, snr not None, scale not None,
              Py_ssize_t k, int nthreads=0, int32_t r0=0, int32_t c0=0):
    """The peaks of a ``dog_noise_nms`` result that ``detect`` keeps and
    each one's DoG pair: of the peaks ``rr``, ``cc`` (int32), ``val``
    (float32), ``noise``, ``snr`` (float64), the k with the highest SNR,
    the earliest among equal ones, in their order (:func:`top_k`; all of
    them when k >= their number), as ``(rr, cc, val, noise, snr, s_idx)``
    with ``s_idx`` (int64) the value of ``scale`` (uint8, rows x cols, any
    strides) at each; the rows and columns returned plus ``r0`` and ``c0``
    (a crop's origin). ValueError when snr holds a NaN or a peak lies
    outside scale."""
    cdef const int32_t[::1] r = rr
    cdef const int32_t[::1] c = cc
    cdef const float[::1] v = val
    cdef const double[::1] nz = noise
    cdef const double[::1] s = snr
    cdef const uint8_t[:, :] sc = scale
    cdef Py_ssize_t n = r.shape[0], i, j, m
    if c.shape[0] != n or v.shape[0] != n or nz.shape[0] != n or s.shape[0] != n or k < 0:
        raise ValueError("napari-calc kernel: invalid argument")
    for i in range(n):
        if r[i] < 0 or r[i] >= sc.shape[0] or c[i] < 0 or c[i] >= sc.shape[1]:
            raise ValueError("a peak lies outside the scale array")
    cdef cnp.ndarray[cnp.int64_t, ndim=1] idx
    cdef Py_ssize_t got
    if k >= n:
        m = n
        out = [np.empty(m, np.int32), np.empty(m, np.int32), val, noise, snr]
    else:
        m = k
        idx = np.empty(max(k, 1), np.int64)
        with nogil:
            got = ncalc_top_k(&s[0], n, k, <int64_t *>&idx[0], nthreads)
        if got < 0:
            _check(<int>got)
        out = [np.empty(m, np.int32), np.empty(m, np.int32), np.empty(m, np.float32), np.empty(m, np.float64),
               np.empty(m, np.float64)]
    cdef cnp.ndarray[cnp.int64_t, ndim=1] s_idx = np.empty(m, np.int64)
    cdef int32_t[::1] r2, c2
    cdef float[::1] v2
    cdef double[::1] nz2, s2
    if k >= n:
        r2, c2 = out[0], out[1]
        with nogil:
            for i in range(m):
                r2[i] = r[i] + r0
                c2[i] = c[i] + c0
                s_idx[i] = sc[r[i], c[i]]
    else:
        r2, c2, v2, nz2, s2 = out
        with nogil:
            for i in range(m):
                j = idx[i]
                r2[i] = r[j] + r0
                c2[i] = c[j] + c0
                v2[i] = v[j]
                nz2[i] = nz[j]
                s2[i] = s[j]
                s_idx[i] = sc[r[j], c[j]]
    return (*out, s_idx)


cdef extern from "ncalc.h" nogil:
    int ncalc_ramp_logit(const double *X, Py_ssize_t n, int nfeat, const int *nknots,
                         const double *knots, int ninter, const int *inter, const double *mean,
                         const double *scale, const double *coef, double intercept, double *z,
                         double *basis, int nthreads)


def ramp_logit(const cnp.float64_t[:, ::1] X not None, const int[::1] nknots not None,
               const cnp.float64_t[::1] knots not None, const int[::1] inter not None,
               const cnp.float64_t[::1] mean not None, const cnp.float64_t[::1] scale not None,
               coef, double intercept, z, basis, int nthreads=0):
    """The score model's log-odds and/or standardised basis, see
    ncalc_ramp_logit in csrc/ncalc.h: nknots (intc) the knot count of each
    column of X, knots (float64) all knots one column after the other,
    inter (intc) the interactions' (i, j) pairs flat; coef (float64, one
    per basis column) with z (float64, n), or both None; basis (n x ncol
    C-contiguous float64) or None. Fills the outputs given; returns
    (z, basis)."""
    cdef Py_ssize_t n = X.shape[0]
    cdef int nfeat = <int>X.shape[1]
    cdef Py_ssize_t j, nk_sum = 0, ncol = 0
    if nknots.shape[0] != nfeat or nfeat < 1:
        raise ValueError("one knot count per feature")
    for j in range(nfeat):
        if nknots[j] < 0:
            raise ValueError("a negative knot count")
        nk_sum += nknots[j]
        ncol += nknots[j] + 1 if nknots[j] else 1
    if knots.shape[0] != nk_sum or inter.shape[0] % 2:
        raise ValueError("knots do not match the knot counts, or an odd interaction list")
    ncol += inter.shape[0] // 2
    if mean.shape[0] != ncol or scale.shape[0] != ncol:
        raise ValueError(f"mean and scale need {ncol} basis columns")
    cdef const cnp.float64_t[::1] cv
    cdef cnp.float64_t[::1] zv
    cdef cnp.float64_t[:, ::1] bv
    cdef const double *pc = NULL
    cdef double *pz = NULL
    cdef double *pb = NULL
    if (coef is None) != (z is None):
        raise ValueError("coef and z go together")
    if coef is not None:
        cv = coef
        zv = z
        if cv.shape[0] != ncol or zv.shape[0] != n:
            raise ValueError(f"coef needs {ncol} values and z {n}")
        pc = &cv[0]
        pz = &zv[0] if n else NULL
    if basis is not None:
        bv = basis
        if bv.shape[0] != n or bv.shape[1] != ncol:
            raise ValueError(f"basis needs {n} x {ncol} values")
        pb = &bv[0, 0] if n else NULL
    cdef const double *px = &X[0, 0] if n else NULL
    cdef const double *pk = &knots[0] if nk_sum else NULL
    cdef const int *pi = &inter[0] if inter.shape[0] else NULL
    cdef int ninter = <int>(inter.shape[0] // 2)
    cdef int st
    with nogil:
        st = ncalc_ramp_logit(px, n, nfeat, &nknots[0], pk, ninter, pi, &mean[0], &scale[0], pc,
                              intercept, pz, pb, nthreads)
    _check(st)
    return z, basis


cdef extern from "ncalc.h" nogil:
    int ncalc_interp(const double *x, Py_ssize_t n, const double *xp, const double *fp, Py_ssize_t m,
                     double *out, int nthreads)


def interp(const cnp.float64_t[::1] x not None, const cnp.float64_t[::1] xp not None,
           const cnp.float64_t[::1] fp not None, int nthreads=0):
    """``numpy.interp(x, xp, fp)`` bit for bit (float64, a new array), see
    ncalc_interp in csrc/ncalc.h; ValueError unless xp and fp are of one
    length >= 2, finite, and xp strictly increases."""
    if fp.shape[0] != xp.shape[0]:
        raise ValueError("xp and fp differ in length")
    cdef Py_ssize_t n = x.shape[0]
    cdef cnp.ndarray[cnp.float64_t, ndim=1] out = np.empty(n, np.float64)
    cdef const double *px = &x[0] if n else NULL
    cdef double *po = &out[0] if n else NULL
    cdef const double *pxp = &xp[0] if xp.shape[0] else NULL
    cdef const double *pfp = &fp[0] if fp.shape[0] else NULL
    cdef int st
    with nogil:
        st = ncalc_interp(px, n, pxp, pfp, xp.shape[0], po, nthreads)
    _check(st)
    return out


cdef extern from "ncalc.h" nogil:
    enum:
        NCALC_FEATURE_INPUTS
        NCALC_FEATURES
    int ncalc_feature_parts(const double **inp, Py_ssize_t n, double *X, double *logarg, int nthreads)


def feature_parts(inputs, int nthreads=0):
    """The candidates' model features but for their logs, see
    ncalc_feature_parts in csrc/ncalc.h: inputs its 18 float64 arrays
    (1-D, C-contiguous, of one length n), in its order. Returns ``(X,
    logarg)``: X (n x 12, the non-log columns filled, the others
    uninitialised) and logarg (8 x n, the logs' arguments)."""
    if len(inputs) != NCALC_FEATURE_INPUTS:
        raise ValueError(f"need {NCALC_FEATURE_INPUTS} input arrays")
    cdef const double *ptrs[NCALC_FEATURE_INPUTS]
    cdef const cnp.float64_t[::1] v
    cdef Py_ssize_t n = -1
    cdef int k
    for k in range(NCALC_FEATURE_INPUTS):
        v = inputs[k]
        if n < 0:
            n = v.shape[0]
        elif v.shape[0] != n:
            raise ValueError("the input arrays differ in length")
        ptrs[k] = &v[0] if n else NULL
    cdef cnp.ndarray[cnp.float64_t, ndim=2] X = np.empty((n, NCALC_FEATURES), np.float64)
    cdef cnp.ndarray[cnp.float64_t, ndim=2] logarg = np.empty((8, n), np.float64)
    cdef double *px = &X[0, 0] if n else NULL
    cdef double *pl = &logarg[0, 0] if n else NULL
    cdef int st
    with nogil:
        st = ncalc_feature_parts(ptrs, n, px, pl, nthreads)
    _check(st)
    return X, logarg


cdef extern from "ncalc.h" nogil:
    int ncalc_histogram(const double *x, Py_ssize_t n, double lo, double hi, int nbins,
                        const double *edges, int64_t *count)
    int ncalc_erode_l1(const uint8_t *a, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t n,
                       uint8_t *out)


def histogram(const cnp.float64_t[::1] x not None, double lo, double hi,
              const cnp.float64_t[::1] edges not None):
    """Counts (int64) of numpy.histogram(x, bins=len(edges) - 1,
    range=(lo, hi)) given its edges numpy.linspace(lo, hi, len(edges)), see
    ncalc_histogram in csrc/ncalc.h; ValueError unless lo < hi are finite."""
    cdef int nbins = <int>edges.shape[0] - 1
    if nbins < 1:
        raise ValueError("need at least two edges")
    cdef cnp.ndarray[cnp.int64_t, ndim=1] count = np.empty(nbins, np.int64)
    cdef const double *px = &x[0] if x.shape[0] else NULL
    cdef int st
    with nogil:
        st = ncalc_histogram(px, x.shape[0], lo, hi, nbins, &edges[0], <int64_t *>&count[0])
    _check(st)
    return count


cdef extern from "ncalc.h" nogil:
    int ncalc_otsu(const double *x, Py_ssize_t n, int nbins, double *thr)


def otsu(const cnp.float64_t[::1] x not None, int nbins=256):
    """Otsu's threshold of a non-empty 1-D float64 array with ``nbins``
    histogram bins, as ``napari_calc.core.mask.otsu_threshold`` computes
    it (see ncalc_otsu in csrc/ncalc.h); ValueError for NaN or infinite
    values (unless all are equal)."""
    if x.shape[0] < 1 or nbins < 1:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef double thr = 0
    cdef int st
    with nogil:
        st = ncalc_otsu(&x[0], x.shape[0], nbins, &thr)
    _check(st)
    return thr


def erode_l1(a not None, Py_ssize_t n):
    """Erosion of a 2-D boolean array by the city-block ball of radius n,
    the outside counting as background (see ncalc_erode_l1 in
    csrc/ncalc.h): a new bool array."""
    cdef const uint8_t[:, ::1] av = np.ascontiguousarray(a, dtype=bool).view(np.uint8)
    if n < 0:
        raise ValueError("n must be >= 0")
    cdef Py_ssize_t rows = av.shape[0], cols = av.shape[1]
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] out = np.empty((rows, cols), np.uint8)
    cdef int st = 0
    if rows and cols:
        with nogil:
            st = ncalc_erode_l1(&av[0, 0], rows, cols, n, &out[0, 0])
    _check(st)
    return out.view(bool)


cdef extern from "ncalc.h" nogil:
    Py_ssize_t ncalc_largest_component(const uint8_t *a, Py_ssize_t rows, Py_ssize_t cols,
                                       uint8_t *out)


def largest_component(a not None):
    """(n, mask): the number of 4-connected components of a 2-D boolean
    array and the largest one (the first in raster order of equal ones)
    with its holes filled, None when n is 0 (see ncalc_largest_component
    in csrc/ncalc.h)."""
    cdef const uint8_t[:, ::1] av = np.ascontiguousarray(a, dtype=bool).view(np.uint8)
    cdef Py_ssize_t rows = av.shape[0], cols = av.shape[1]
    if rows < 1 or cols < 1:
        raise ValueError("napari-calc kernel: invalid argument")
    cdef cnp.ndarray[cnp.uint8_t, ndim=2] out = np.empty((rows, cols), np.uint8)
    cdef Py_ssize_t n
    with nogil:
        n = ncalc_largest_component(&av[0, 0], rows, cols, &out[0, 0])
    if n < 0:
        _check(<int>n)
    return int(n), (out.view(bool) if n else None)


cdef extern from "ncalc.h" nogil:
    int ncalc_neighbour_sums(const double *pos, Py_ssize_t n, int dim, double radius,
                             const double *weight, double *sum, int64_t *count, int nthreads)
    int ncalc_radius_clusters(const double *pos, Py_ssize_t n, int dim, double radius,
                              int64_t min_size, int64_t *labels, int nthreads)
    int ncalc_cluster_shape(const double *pos, Py_ssize_t n, int dim, const Py_ssize_t *start,
                            Py_ssize_t k, int ay, int ax, double *extent, double *area)


def neighbour_sums(const cnp.float64_t[:, ::1] pos not None, const cnp.float64_t[::1] weight not None,
                   double radius, int nthreads=0):
    """(sum, count): for each point, the sum of weight over the other points
    within radius (in increasing index order) and their number (float64,
    int64); see ncalc_neighbour_sums in csrc/ncalc.h. ValueError for a
    non-finite position or radius <= 0."""
    cdef Py_ssize_t n = pos.shape[0]
    cdef int dim = <int>pos.shape[1]
    if weight.shape[0] != n:
        raise ValueError("pos and weight differ in length")
    cdef cnp.ndarray[cnp.float64_t, ndim=1] total = np.zeros(max(n, 1), np.float64)
    cdef cnp.ndarray[cnp.int64_t, ndim=1] count = np.zeros(max(n, 1), np.int64)
    cdef const double *pp = &pos[0, 0] if n else NULL
    cdef const double *pw = &weight[0] if n else NULL
    cdef int st
    with nogil:
        st = ncalc_neighbour_sums(pp, n, dim, radius, pw, &total[0], <int64_t *>&count[0], nthreads)
    _check(st)
    return total[:n], count[:n]


def cluster_shape(const cnp.float64_t[:, ::1] pos not None, const cnp.intp_t[::1] start not None,
                  int ay=0, int ax=1):
    """(extent, area), float64, one value per group of rows
    ``pos[start[g]:start[g + 1]]``: the largest distance between two of
    its points, and the area of the convex hull of its columns ``ay`` and
    ``ax``; see ncalc_cluster_shape in csrc/ncalc.h. ValueError for a
    non-finite position or bad groups."""
    cdef Py_ssize_t n = pos.shape[0], k = start.shape[0] - 1
    cdef int dim = <int>pos.shape[1]
    if k < 0:
        raise ValueError("start needs at least one value")
    cdef cnp.ndarray[cnp.float64_t, ndim=1] extent = np.empty(max(k, 1), np.float64)
    cdef cnp.ndarray[cnp.float64_t, ndim=1] area = np.empty(max(k, 1), np.float64)
    cdef double dummy = 0.0
    cdef const double *pp = &pos[0, 0] if n else &dummy
    cdef int st
    with nogil:
        st = ncalc_cluster_shape(pp, n, dim, <const Py_ssize_t *>&start[0], k, ay, ax, &extent[0], &area[0])
    _check(st)
    return extent[:k], area[:k]


def radius_clusters(const cnp.float64_t[:, ::1] pos not None, double radius, int64_t min_size,
                    int nthreads=0):
    """Cluster label (int64, -1 for none) of each point under the rule of
    napari_calc.core.cluster.cluster_calcifications; see
    ncalc_radius_clusters in csrc/ncalc.h. ValueError for a non-finite
    position, radius <= 0 or min_size < 2."""
    cdef Py_ssize_t n = pos.shape[0]
    cdef int dim = <int>pos.shape[1]
    cdef cnp.ndarray[cnp.int64_t, ndim=1] labels = np.empty(max(n, 1), np.int64)
    cdef const double *pp = &pos[0, 0] if n else NULL
    cdef int st
    with nogil:
        st = ncalc_radius_clusters(pp, n, dim, radius, min_size, <int64_t *>&labels[0], nthreads)
    _check(st)
    return labels[:n]
