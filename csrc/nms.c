/*
 * nms.c -- non-maximum suppression with a (local) noise-scaled threshold.
 * See ncalc.h for the contract.
 *
 * Rows are cut into fixed chunks of NMS_CHUNK rows (independent of the
 * thread count) that threads scan in parallel; each chunk lists its peaks in
 * raster order and the lists are concatenated in chunk order, so the output
 * is the same whatever the number of threads. The threshold is constant
 * over each tile's run of columns (no division per pixel) and is tested
 * first, 32 pixels at a time with a branch-free loop: almost every pixel of
 * a response fails it, so the whole pass costs about one read of resp (and
 * mask). The pixels above threshold are compared with their 8 neighbours,
 * four at a time (SSE2), and only those with no larger neighbour are
 * compared with their whole (2 radius + 1)^2 window. When the rows a chunk
 * reaches hold a NaN, the chunk is done again comparing each pixel above
 * threshold with its window maximum reduced in the order a separable max
 * filter would use. So the peaks (ties and NaNs included) are those of
 * (resp > thr) & (resp >= max_filter(resp)) & mask.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define NCALC_SSE2 1
#endif

#define NMS_CHUNK 64

typedef struct {
    int32_t *rc; /* interleaved (row, col) */
    ptrdiff_t n, cap;
    int failed;
} peaks_t;

static void push(peaks_t *p, ptrdiff_t r, ptrdiff_t c)
{
    if (p->failed) return;
    if (p->n == p->cap) {
        ptrdiff_t cap = p->cap ? 2 * p->cap : 256;
        int32_t *rc = realloc(p->rc, sizeof(int32_t) * 2 * (size_t)cap);
        if (!rc) { p->failed = 1; return; }
        p->rc = rc;
        p->cap = cap;
    }
    p->rc[2 * p->n] = (int32_t)r;
    p->rc[2 * p->n + 1] = (int32_t)c;
    p->n++;
}

/* 1 when resp[r][c] is not below any pixel of its window (clipped to the
 * image). The window maximum is reduced in exactly the order of a
 * separable max filter (each row's horizontal maximum from the left edge of
 * the window, then the rows from the top, with v > m ? v : m), so the
 * result, NaNs included, is that of comparing with such a filtered image. */
static inline int window_peak(const float *resp, ptrdiff_t rows, ptrdiff_t cols, int radius,
                              ptrdiff_t r, ptrdiff_t c)
{
    const ptrdiff_t r0 = r - radius < 0 ? 0 : r - radius;
    const ptrdiff_t r1 = r + radius >= rows ? rows - 1 : r + radius;
    const ptrdiff_t c0 = c - radius, c1 = c + radius;
    const ptrdiff_t a = c0 < 0 ? 0 : c0, b = c1 >= cols ? cols - 1 : c1;
    float vm = 0;
    for (ptrdiff_t q = r0; q <= r1; q++) {
        const float *row = resp + q * cols;
        /* the filter's first tap is column c - radius (-inf outside) */
        float h = c0 < 0 ? -INFINITY : row[c0];
        for (ptrdiff_t x = (c0 < 0 ? a : c0 + 1); x <= b; x++) h = row[x] > h ? row[x] : h;
        /* taps right of the image are -inf: -inf > h never holds */
        vm = q == r0 ? h : (h > vm ? h : vm);
    }
    return resp[r * cols + c] >= vm;
}

/* The same answer when no pixel of the window is NaN: then the window
 * maximum is the true maximum, and the pixel is a peak when no pixel of the
 * window is larger (branch-free within a row). */
static inline int window_peak_finite(const float *resp, ptrdiff_t rows, ptrdiff_t cols, int radius,
                                     ptrdiff_t r, ptrdiff_t c)
{
    const float v = resp[r * cols + c];
    const ptrdiff_t a = c - radius < 0 ? 0 : c - radius, b = c + radius >= cols ? cols - 1 : c + radius;
    const ptrdiff_t r0 = r - radius < 0 ? 0 : r - radius, r1 = r + radius >= rows ? rows - 1 : r + radius;
#ifdef NCALC_SSE2
    const __m128 vv = _mm_set1_ps(v);
#endif
    for (ptrdiff_t q = r0; q <= r1; q++) {
        const float *row = resp + q * cols;
        int gt = 0;
        ptrdiff_t x = a;
#ifdef NCALC_SSE2
        for (; x + 4 <= b + 1; x += 4) gt |= _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(row + x), vv));
#endif
        for (; x <= b; x++) gt |= row[x] > v;
        if (gt) return 0;
    }
    return 1;
}

/* 1 when rows [r0, r1) of resp hold a NaN. */
static int has_nan(const float *resp, ptrdiff_t cols, ptrdiff_t r0, ptrdiff_t r1)
{
    int bad = 0;
    for (ptrdiff_t r = r0; r < r1; r++) {
        const float *restrict row = resp + r * cols;
        for (ptrdiff_t c = 0; c < cols; c++) bad |= row[c] != row[c];
    }
    return bad;
}

/* Index of the lowest set bit of a non-zero word. */
static inline int lowest_bit(unsigned w)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(w);
#else
    int i = 0;
    while (!(w & 1u)) { w >>= 1; i++; }
    return i;
#endif
}

/* Bit j of the result: row[j] > thr[j] and (no mask or mrow[j] != 0), for
 * j < 16; *nan gets 1 when one of the 16 is NaN. */
static inline unsigned above16(const float *row, const float *thr, const uint8_t *mrow, int *nan)
{
#ifdef NCALC_SSE2
    unsigned bits = 0, un = 0;
    for (int q = 0; q < 4; q++) {
        __m128 v = _mm_loadu_ps(row + 4 * q);
        bits |= (unsigned)_mm_movemask_ps(_mm_cmpgt_ps(v, _mm_loadu_ps(thr + 4 * q))) << (4 * q);
        un |= (unsigned)_mm_movemask_ps(_mm_cmpunord_ps(v, v));
    }
    if (mrow) {
        __m128i m = _mm_loadu_si128((const __m128i *)mrow);
        bits &= ~(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(m, _mm_setzero_si128())) & 0xffffu;
    }
    *nan |= un != 0;
    return bits;
#else
    unsigned bits = 0;
    int un = 0;
    for (int j = 0; j < 16; j++) {
        bits |= (unsigned)((row[j] > thr[j]) & (!mrow || mrow[j] != 0)) << j;
        un |= row[j] != row[j];
    }
    *nan |= un;
    return bits;
#endif
}

/* 1 when a pixel of the 3 x 3 block around (r, c) is larger (all finite). */
static inline int larger_neighbour(const float *resp, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t r,
                                   ptrdiff_t c)
{
    const float v = resp[r * cols + c];
    const ptrdiff_t a = c - 1 < 0 ? 0 : c - 1, b = c + 1 >= cols ? cols - 1 : c + 1;
    const ptrdiff_t q0 = r - 1 < 0 ? 0 : r - 1, q1 = r + 1 >= rows ? rows - 1 : r + 1;
    int gt = 0;
    for (ptrdiff_t q = q0; q <= q1; q++) {
        const float *row = resp + q * cols;
        for (ptrdiff_t x = a; x <= b; x++) gt |= row[x] > v;
    }
    return gt;
}

/* Of the pixels c + j (bit j of bits, j < 16) of row r, those with no
 * larger pixel in their 3 x 3 block clipped to the image: the bits that
 * pass !larger_neighbour(). Away from the first and last columns, four
 * pixels at a time with SSE2 (the rows above and below are clamped to the
 * image as larger_neighbour() clamps them: comparing with the pixel's own
 * row again changes nothing). The same comparisons (n > v), so the same
 * answer, NaNs included. */
static inline unsigned no_larger3(const float *resp, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t r,
                                  ptrdiff_t c, unsigned bits)
{
#ifdef NCALC_SSE2
    if (c >= 1 && c + 17 <= cols) {
        const float *mid = resp + r * cols + c;
        const float *up = resp + (r > 0 ? r - 1 : r) * cols + c;
        const float *dn = resp + (r + 1 < rows ? r + 1 : r) * cols + c;
        unsigned keep = 0;
        for (int q = 0; q < 16; q += 4) {
            if (!((bits >> q) & 0xfu)) continue;
            const __m128 v = _mm_loadu_ps(mid + q);
            __m128 g = _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(mid + q - 1), v),
                                 _mm_cmpgt_ps(_mm_loadu_ps(mid + q + 1), v));
            g = _mm_or_ps(g, _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(up + q - 1), v),
                                       _mm_cmpgt_ps(_mm_loadu_ps(up + q), v)));
            g = _mm_or_ps(g, _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(up + q + 1), v),
                                       _mm_cmpgt_ps(_mm_loadu_ps(dn + q - 1), v)));
            g = _mm_or_ps(g, _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(dn + q), v),
                                       _mm_cmpgt_ps(_mm_loadu_ps(dn + q + 1), v)));
            keep |= (~(unsigned)_mm_movemask_ps(g) & 0xfu) << q;
        }
        return bits & keep;
    }
#endif
    unsigned keep = bits;
    for (unsigned w = bits; w; w &= w - 1) {
        const int j = lowest_bit(w);
        if (larger_neighbour(resp, rows, cols, r, c + j)) keep &= ~(1u << j);
    }
    return keep;
}

/* Peaks of rows [ra, rb). The threshold (and mask) test comes first, 16
 * pixels at a time without branches (SSE2 where available): almost every
 * pixel fails it. The pixels that pass are listed, and looked at once the
 * test has streamed the last row their window reaches (so that those rows
 * are in cache). When no pixel the chunk's windows reach is NaN, each is
 * compared with its 8 neighbours and, if none is larger, with its whole
 * window. Otherwise the chunk is done again, each pixel above threshold
 * compared with its window maximum reduced in the exact order of a
 * separable max filter. Either way the result is that of
 * (resp > thr) & (resp >= window max) & mask for every pixel.
 * thr: cols floats of scratch; above: an empty list. */
static void scan_rows(const float *resp, ptrdiff_t rows, ptrdiff_t cols, const uint8_t *mask,
                      ptrdiff_t mask_ld, const float *grid, ptrdiff_t tile, float k, int radius,
                      ptrdiff_t ra, ptrdiff_t rb, float *thr, peaks_t *above, peaks_t *out)
{
    const ptrdiff_t gw = grid ? (cols + tile - 1) / tile : 0;
    /* NaNs in the rows the windows reach above and below the chunk */
    int bad = has_nan(resp, cols, ra - radius < 0 ? 0 : ra - radius, ra) |
              has_nan(resp, cols, rb, rb + radius > rows ? rows : rb + radius);
    for (int exact = bad; exact < 2; exact++) {
        out->n = 0;
        above->n = 0;
        ptrdiff_t done = 0;     /* entries of above looked at */
        ptrdiff_t thr_row = -1; /* the grid row thr holds */
        for (ptrdiff_t r = ra; r < rb + radius; r++) {
            if (r < rb) {
                const float *row = resp + r * cols;
                const uint8_t *mrow = mask ? mask + r * mask_ld : NULL;
                ptrdiff_t gr = grid ? r / tile : 0;
                if (gr != thr_row) {
                    /* NaN thresholds compare false: nothing passes there */
                    const ptrdiff_t seg = grid ? tile : cols;
                    for (ptrdiff_t s0 = 0, g = 0; s0 < cols; s0 += seg, g++) {
                        const ptrdiff_t s1 = s0 + seg < cols ? s0 + seg : cols;
                        const float t = grid ? k * grid[gr * gw + g] : k;
                        for (ptrdiff_t c = s0; c < s1; c++) thr[c] = t;
                    }
                    thr_row = gr;
                }
                for (ptrdiff_t c = 0; c < cols; c += 16) {
                    unsigned bits = 0;
                    if (c + 16 <= cols) {
                        bits = above16(row + c, thr + c, mrow ? mrow + c : NULL, &bad);
                    } else {
                        for (ptrdiff_t x = c; x < cols; x++) {
                            bad |= row[x] != row[x];
                            bits |= (unsigned)((row[x] > thr[x]) & (!mrow || mrow[x] != 0)) << (x - c);
                        }
                    }
                    /* first pass: only the pixels with no larger 8-neighbour are
                     * listed (the exact pass compares each with its window) */
                    if (bits && !exact && radius > 0) bits = no_larger3(resp, rows, cols, r, c, bits);
                    while (bits) {
                        push(above, r, c + lowest_bit(bits));
                        bits &= bits - 1;
                    }
                }
            }
            /* rows up to r are read: look at the pixels of row r - radius
             * (all of them after the last row) */
            const ptrdiff_t upto = r + 1 >= rb + radius ? rb : r - radius + 1;
            if (bad && !exact) continue; /* done again below */
            for (; done < above->n && above->rc[2 * done] < upto; done++) {
                const ptrdiff_t pr = above->rc[2 * done], pc = above->rc[2 * done + 1];
                int peak;
                if (exact)
                    peak = window_peak(resp, rows, cols, radius, pr, pc);
                else /* listed: no 8-neighbour is larger */
                    peak = radius <= 1 || window_peak_finite(resp, rows, cols, radius, pr, pc);
                if (peak) push(out, pr, pc);
            }
        }
        if (!bad) break;
    }
    out->failed |= above->failed;
}

ptrdiff_t ncalc_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                    const uint8_t *mask, const float *grid, ptrdiff_t tile,
                    float k, int radius,
                    int32_t *out_rows, int32_t *out_cols, ptrdiff_t max_out)
{
    return ncalc_nms_ld(resp, rows, cols, mask, cols, grid, tile, k, radius, out_rows, out_cols,
                        max_out, 0);
}

ptrdiff_t ncalc_nms_ld(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                       const uint8_t *mask, ptrdiff_t mask_ld, const float *grid, ptrdiff_t tile,
                       float k, int radius,
                       int32_t *out_rows, int32_t *out_cols, ptrdiff_t max_out, int nthreads)
{
    if (!resp || rows < 1 || cols < 1 || radius < 0 || max_out < 0) return NCALC_EINVAL;
    if (mask && mask_ld < cols) return NCALC_EINVAL;
    if (grid && tile < 1) return NCALC_EINVAL;
    if (max_out > 0 && (!out_rows || !out_cols)) return NCALC_EINVAL;
    /* a window wider than the image sees all of it */
    ptrdiff_t big = rows > cols ? rows : cols;
    if (radius > big) radius = (int)big;
    ptrdiff_t nchunks = (rows + NMS_CHUNK - 1) / NMS_CHUNK;
    peaks_t *chunks = calloc((size_t)nchunks, sizeof(peaks_t));
    if (!chunks) return NCALC_ENOMEM;
    const int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (ptrdiff_t ch = 0; ch < nchunks; ch++) {
        ptrdiff_t ra = ch * NMS_CHUNK, rb = ra + NMS_CHUNK < rows ? ra + NMS_CHUNK : rows;
        float *thr = malloc(sizeof(float) * (size_t)cols);
        peaks_t above = {0};
        if (!thr) { chunks[ch].failed = 1; continue; }
        scan_rows(resp, rows, cols, mask, mask_ld, grid, tile, k, radius, ra, rb, thr, &above,
                  &chunks[ch]);
        free(thr);
        free(above.rc);
    }
    ptrdiff_t n = 0;
    int failed = 0;
    for (ptrdiff_t ch = 0; ch < nchunks; ch++) {
        const peaks_t *p = &chunks[ch];
        failed |= p->failed;
        for (ptrdiff_t i = 0; i < p->n; i++, n++)
            if (n < max_out) {
                out_rows[n] = p->rc[2 * i];
                out_cols[n] = p->rc[2 * i + 1];
            }
        free(p->rc);
    }
    free(chunks);
    return failed ? NCALC_ENOMEM : n;
}
