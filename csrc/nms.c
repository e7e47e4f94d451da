/*
 * nms.c -- non-maximum suppression with a (local) noise-scaled threshold.
 * See ncalc.h for the contract.
 *
 * Rows are cut into fixed chunks of NMS_CHUNK rows (independent of the
 * thread count) that threads scan in parallel; each chunk lists its peaks in
 * raster order and the lists are concatenated in chunk order, so the output
 * is the same whatever the number of threads. The threshold is constant
 * over each tile's run of columns (a row of thresholds is filled once per
 * row of tiles, no division per pixel) and is tested first, branch-free, 32
 * pixels at a time with AVX2 (chosen at run time) or 16 with SSE2, together
 * with the mask bytes: almost every pixel fails it, so the pass costs about
 * one read of resp and mask. The pixels above threshold are compared with
 * their 8 neighbours, and only those with no larger neighbour are compared
 * with their whole (2 radius + 1)^2 window, once the rows it reaches have
 * been streamed (they are in cache). With AVX2 the scan has no branch on
 * the data: the test gives a word of bits per 32 pixels and its bytes
 * that are not 0 are listed; a row later (its neighbours' rows read) the
 * 8-neighbour test takes all 8 pixels of each listed byte and the
 * survivors' columns are stored 8 lanes at a time (a table of lane
 * orders); each window test is a running maximum of the window's rows, 8
 * columns a load, and its peak is stored and counted by the truth of the
 * test. Without AVX2: 16 pixels at a time with SSE2, the 8-neighbour test
 * 4 at a time.
 *
 * These comparisons (n > v) ignore NaNs, which a separable max filter does
 * not: a NaN first tap of a window row hides that row, and one in the
 * window's first row makes its maximum NaN. So the scan also notes which
 * rows hold a NaN, and after it every chunk whose windows reach such a row
 * is done again comparing each pixel above threshold with its window
 * maximum reduced in the exact order of a separable max filter. So the
 * peaks (ties and NaNs included) are those of
 * (resp > thr) & (resp >= max_filter(resp)) & mask.
 *
 * ncalc_noise_nms with a top (detect's max_candidates) lists only the
 * peaks that can be among the top highest SNRs: the pass counts the SNRs
 * of the peaks it finds, and the threshold of the scan rises with the bound
 * that count gives (see "Top" below). On the full-field phantom it returns
 * 3,361 peaks instead of 76,230.
 */
#include "ncalc.h"

#include <float.h>
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

/* AVX2 versions of the scan, chosen at run time (x86-64 GCC;
 * NCALC_NO_CLONES disables them). They make the same float comparisons as
 * the portable scan (ordered >, a maximum compared with > only where the
 * portable code ORs the comparisons with each element, which is the same
 * on NaN-free data: NaN data take the exact pass either way), so the peaks
 * are identical. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && (__GNUC__ >= 6) && \
    !defined(NCALC_NO_CLONES)
#include <immintrin.h>
#define NCALC_AVX2 1
#define NCALC_TARGET_AVX2 __attribute__((target("avx2,popcnt")))

/* The CPU's features, known from libgcc's start-up (no state here). */
static inline int have_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

/* The scan's threshold test also has an AVX-512 (F, BW, VL) version, taken
 * before the AVX2 one when the CPU has it (GCC >= 11; NCALC_NO_AVX512
 * leaves it out). The same comparisons, so the same bits. */
#if __GNUC__ >= 11 && !defined(NCALC_NO_AVX512)
#define NCALC_AVX512 1
#define NCALC_TARGET_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl,avx2,popcnt")))

static inline int have_avx512bw(void)
{
    return have_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
}
#endif
#endif

#define NMS_CHUNK 64

typedef struct {
    int32_t *rc; /* interleaved (row, col) */
    ptrdiff_t n, cap;
    int failed;
    float *val; /* NULL, or the response at each peak (peaks_values) */
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


/* A tile's noise is usable (detect's "good"): finite and > 0. */
static inline int good_noise(float g) { return g > 0.0f && g <= FLT_MAX; }

/* A float t with (double)v / (double)g < bound for every float v <= t
 * (bound > 0 and finite, g a good noise): bound g less a relative 1e-6,
 * rounded down to a float. Then v / g <= bound (1 - 1e-6) (1 + 2^-52),
 * and its double quotient, off by at most 2^-53 relative, stays below
 * bound: a pixel at or below t has an SNR below the bound, exactly. */
static float top_thr(double bound, float g)
{
    const double x = bound * (double)g * (1.0 - 1e-6);
    float t = (float)x;
    if ((double)t > x) t = nextafterf(t, -INFINITY);
    return t;
}

/* thr[c] = the threshold of column c in the row of tiles gr (k without a
 * grid); with bound > 0, in a good tile at least top_thr(bound, noise).
 * NaN thresholds compare false: nothing passes there. */
static void fill_thr(float *thr, ptrdiff_t cols, const float *grid, ptrdiff_t tile, float k,
                     ptrdiff_t gr, double bound)
{
    const ptrdiff_t gw = grid ? (cols + tile - 1) / tile : 0;
    const ptrdiff_t seg = grid ? tile : cols;
    for (ptrdiff_t s0 = 0, g = 0; s0 < cols; s0 += seg, g++) {
        const ptrdiff_t s1 = s0 + seg < cols ? s0 + seg : cols;
        float t = grid ? k * grid[gr * gw + g] : k;
        if (grid && bound > 0.0 && good_noise(grid[gr * gw + g])) {
            const float tb = top_thr(bound, grid[gr * gw + g]);
            if (tb > t) t = tb;
        }
        for (ptrdiff_t c = s0; c < s1; c++) thr[c] = t;
    }
}

/* The arguments of a chunk's scan. */
typedef struct {
    const float *resp;
    ptrdiff_t rows, cols;
    const uint8_t *mask; /* mask row r at mask + (r - mask_r0) mask_ld */
    ptrdiff_t mask_ld;
    const float *grid;
    ptrdiff_t tile;
    float k;
    int radius;
    ptrdiff_t mask_r0;
    double bound; /* > 0: an SNR no peak below which is wanted (see top_thr) */
} nms_args_t;

/* The peaks of rows [ra, rb) into out (emptied first), for data whose
 * windows hold no NaN; nan_rows[r] = 1 for each row r in [ra, rb) that
 * holds a NaN, else 0 (then out is not to be used: see scan_exact). The
 * threshold (and mask) test comes first, 16 pixels at a time without
 * branches (SSE2 where available); the pixels that pass with no larger
 * 8-neighbour are listed, and compared with their window once the test has
 * streamed the last row it reaches (so that those rows are in cache).
 * thr: cols floats of scratch; above: a list to reuse. */
static void scan_fast(const nms_args_t *A, ptrdiff_t ra, ptrdiff_t rb, float *thr, peaks_t *above,
                      peaks_t *out, uint8_t *nan_rows)
{
    const float *resp = A->resp;
    const ptrdiff_t rows = A->rows, cols = A->cols;
    const int radius = A->radius;
    ptrdiff_t done = 0;     /* entries of above looked at */
    ptrdiff_t thr_row = -1; /* the grid row thr holds */
    out->n = 0;
    above->n = 0;
    for (ptrdiff_t r = ra; r < rb + radius; r++) {
        if (r < rb) {
            const float *row = resp + r * cols;
            const uint8_t *mrow = A->mask ? A->mask + (r - A->mask_r0) * A->mask_ld : NULL;
            const ptrdiff_t gr = A->grid ? r / A->tile : 0;
            int bad = 0;
            if (gr != thr_row) {
                fill_thr(thr, cols, A->grid, A->tile, A->k, gr, A->bound);
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
                /* only the pixels with no larger 8-neighbour are listed */
                if (bits && radius > 0) bits = no_larger3(resp, rows, cols, r, c, bits);
                while (bits) {
                    push(above, r, c + lowest_bit(bits));
                    bits &= bits - 1;
                }
            }
            nan_rows[r] = (uint8_t)(bad != 0);
        }
        /* rows up to r are read: look at the pixels of row r - radius
         * (all of them after the last row) */
        const ptrdiff_t upto = r + 1 >= rb + radius ? rb : r - radius + 1;
        for (; done < above->n && above->rc[2 * done] < upto; done++) {
            const ptrdiff_t pr = above->rc[2 * done], pc = above->rc[2 * done + 1];
            /* listed: no 8-neighbour is larger */
            if (radius <= 1 || window_peak_finite(resp, rows, cols, radius, pr, pc)) push(out, pr, pc);
        }
    }
    out->failed |= above->failed;
}

#ifdef NCALC_AVX2
/* Byte i of lanes8[bits]: the lane of the i-th set bit of bits (i <
 * popcount(bits)). */
static const uint64_t lanes8[256] = {
    0x0000000000000000ull, 0x0000000000000000ull, 0x0000000000000001ull, 0x0000000000000100ull,
    0x0000000000000002ull, 0x0000000000000200ull, 0x0000000000000201ull, 0x0000000000020100ull,
    0x0000000000000003ull, 0x0000000000000300ull, 0x0000000000000301ull, 0x0000000000030100ull,
    0x0000000000000302ull, 0x0000000000030200ull, 0x0000000000030201ull, 0x0000000003020100ull,
    0x0000000000000004ull, 0x0000000000000400ull, 0x0000000000000401ull, 0x0000000000040100ull,
    0x0000000000000402ull, 0x0000000000040200ull, 0x0000000000040201ull, 0x0000000004020100ull,
    0x0000000000000403ull, 0x0000000000040300ull, 0x0000000000040301ull, 0x0000000004030100ull,
    0x0000000000040302ull, 0x0000000004030200ull, 0x0000000004030201ull, 0x0000000403020100ull,
    0x0000000000000005ull, 0x0000000000000500ull, 0x0000000000000501ull, 0x0000000000050100ull,
    0x0000000000000502ull, 0x0000000000050200ull, 0x0000000000050201ull, 0x0000000005020100ull,
    0x0000000000000503ull, 0x0000000000050300ull, 0x0000000000050301ull, 0x0000000005030100ull,
    0x0000000000050302ull, 0x0000000005030200ull, 0x0000000005030201ull, 0x0000000503020100ull,
    0x0000000000000504ull, 0x0000000000050400ull, 0x0000000000050401ull, 0x0000000005040100ull,
    0x0000000000050402ull, 0x0000000005040200ull, 0x0000000005040201ull, 0x0000000504020100ull,
    0x0000000000050403ull, 0x0000000005040300ull, 0x0000000005040301ull, 0x0000000504030100ull,
    0x0000000005040302ull, 0x0000000504030200ull, 0x0000000504030201ull, 0x0000050403020100ull,
    0x0000000000000006ull, 0x0000000000000600ull, 0x0000000000000601ull, 0x0000000000060100ull,
    0x0000000000000602ull, 0x0000000000060200ull, 0x0000000000060201ull, 0x0000000006020100ull,
    0x0000000000000603ull, 0x0000000000060300ull, 0x0000000000060301ull, 0x0000000006030100ull,
    0x0000000000060302ull, 0x0000000006030200ull, 0x0000000006030201ull, 0x0000000603020100ull,
    0x0000000000000604ull, 0x0000000000060400ull, 0x0000000000060401ull, 0x0000000006040100ull,
    0x0000000000060402ull, 0x0000000006040200ull, 0x0000000006040201ull, 0x0000000604020100ull,
    0x0000000000060403ull, 0x0000000006040300ull, 0x0000000006040301ull, 0x0000000604030100ull,
    0x0000000006040302ull, 0x0000000604030200ull, 0x0000000604030201ull, 0x0000060403020100ull,
    0x0000000000000605ull, 0x0000000000060500ull, 0x0000000000060501ull, 0x0000000006050100ull,
    0x0000000000060502ull, 0x0000000006050200ull, 0x0000000006050201ull, 0x0000000605020100ull,
    0x0000000000060503ull, 0x0000000006050300ull, 0x0000000006050301ull, 0x0000000605030100ull,
    0x0000000006050302ull, 0x0000000605030200ull, 0x0000000605030201ull, 0x0000060503020100ull,
    0x0000000000060504ull, 0x0000000006050400ull, 0x0000000006050401ull, 0x0000000605040100ull,
    0x0000000006050402ull, 0x0000000605040200ull, 0x0000000605040201ull, 0x0000060504020100ull,
    0x0000000006050403ull, 0x0000000605040300ull, 0x0000000605040301ull, 0x0000060504030100ull,
    0x0000000605040302ull, 0x0000060504030200ull, 0x0000060504030201ull, 0x0006050403020100ull,
    0x0000000000000007ull, 0x0000000000000700ull, 0x0000000000000701ull, 0x0000000000070100ull,
    0x0000000000000702ull, 0x0000000000070200ull, 0x0000000000070201ull, 0x0000000007020100ull,
    0x0000000000000703ull, 0x0000000000070300ull, 0x0000000000070301ull, 0x0000000007030100ull,
    0x0000000000070302ull, 0x0000000007030200ull, 0x0000000007030201ull, 0x0000000703020100ull,
    0x0000000000000704ull, 0x0000000000070400ull, 0x0000000000070401ull, 0x0000000007040100ull,
    0x0000000000070402ull, 0x0000000007040200ull, 0x0000000007040201ull, 0x0000000704020100ull,
    0x0000000000070403ull, 0x0000000007040300ull, 0x0000000007040301ull, 0x0000000704030100ull,
    0x0000000007040302ull, 0x0000000704030200ull, 0x0000000704030201ull, 0x0000070403020100ull,
    0x0000000000000705ull, 0x0000000000070500ull, 0x0000000000070501ull, 0x0000000007050100ull,
    0x0000000000070502ull, 0x0000000007050200ull, 0x0000000007050201ull, 0x0000000705020100ull,
    0x0000000000070503ull, 0x0000000007050300ull, 0x0000000007050301ull, 0x0000000705030100ull,
    0x0000000007050302ull, 0x0000000705030200ull, 0x0000000705030201ull, 0x0000070503020100ull,
    0x0000000000070504ull, 0x0000000007050400ull, 0x0000000007050401ull, 0x0000000705040100ull,
    0x0000000007050402ull, 0x0000000705040200ull, 0x0000000705040201ull, 0x0000070504020100ull,
    0x0000000007050403ull, 0x0000000705040300ull, 0x0000000705040301ull, 0x0000070504030100ull,
    0x0000000705040302ull, 0x0000070504030200ull, 0x0000070504030201ull, 0x0007050403020100ull,
    0x0000000000000706ull, 0x0000000000070600ull, 0x0000000000070601ull, 0x0000000007060100ull,
    0x0000000000070602ull, 0x0000000007060200ull, 0x0000000007060201ull, 0x0000000706020100ull,
    0x0000000000070603ull, 0x0000000007060300ull, 0x0000000007060301ull, 0x0000000706030100ull,
    0x0000000007060302ull, 0x0000000706030200ull, 0x0000000706030201ull, 0x0000070603020100ull,
    0x0000000000070604ull, 0x0000000007060400ull, 0x0000000007060401ull, 0x0000000706040100ull,
    0x0000000007060402ull, 0x0000000706040200ull, 0x0000000706040201ull, 0x0000070604020100ull,
    0x0000000007060403ull, 0x0000000706040300ull, 0x0000000706040301ull, 0x0000070604030100ull,
    0x0000000706040302ull, 0x0000070604030200ull, 0x0000070604030201ull, 0x0007060403020100ull,
    0x0000000000070605ull, 0x0000000007060500ull, 0x0000000007060501ull, 0x0000000706050100ull,
    0x0000000007060502ull, 0x0000000706050200ull, 0x0000000706050201ull, 0x0000070605020100ull,
    0x0000000007060503ull, 0x0000000706050300ull, 0x0000000706050301ull, 0x0000070605030100ull,
    0x0000000706050302ull, 0x0000070605030200ull, 0x0000070605030201ull, 0x0007060503020100ull,
    0x0000000007060504ull, 0x0000000706050400ull, 0x0000000706050401ull, 0x0000070605040100ull,
    0x0000000706050402ull, 0x0000070605040200ull, 0x0000070605040201ull, 0x0007060504020100ull,
    0x0000000706050403ull, 0x0000070605040300ull, 0x0000070605040301ull, 0x0007060504030100ull,
    0x0000070605040302ull, 0x0007060504030200ull, 0x0007060504030201ull, 0x0706050403020100ull,
};

/* The scratch of a thread's AVX2 scans. The candidates of row ra + i are
 * col[start[i]] .. col[start[i + 1] - 1]. words[(r & 1) nw + w]: the
 * threshold bits of pixels 32 w .. 32 w + 31 of row r, so byte g of
 * words + (r & 1) nw those of pixels 8 g .. 8 g + 7 (x86 is little-endian);
 * the nz[r & 1] bytes of row r that are not 0 are listed at
 * nzw + (r & 1) 4 nw. */
typedef struct {
    int32_t *col;
    ptrdiff_t cap;
    ptrdiff_t start[NMS_CHUNK + 1];
    uint32_t *words;
    int32_t *nzw;
    ptrdiff_t nz[2];
    int failed;
} cands_t;

/* Room for n more entries in c (+ 8 for the last 8-lane store). */
static int cands_room(cands_t *c, ptrdiff_t used, ptrdiff_t n)
{
    if (used + n + 8 <= c->cap) return 1;
    ptrdiff_t cap = 2 * c->cap > used + n + 8 ? 2 * c->cap : used + n + 8;
    int32_t *col = realloc(c->col, sizeof(int32_t) * (size_t)cap);
    if (!col) return 0;
    c->col = col;
    c->cap = cap;
    return 1;
}

/* Room for n more peaks in p. */
static int peaks_room(peaks_t *p, ptrdiff_t n)
{
    if (p->n + n <= p->cap) return 1;
    ptrdiff_t cap = 2 * p->cap > p->n + n ? 2 * p->cap : p->n + n;
    if (cap < 256) cap = 256;
    int32_t *rc = realloc(p->rc, sizeof(int32_t) * 2 * (size_t)cap);
    if (!rc) return 0;
    p->rc = rc;
    p->cap = cap;
    return 1;
}

/* Bit j of the result: a pixel of the 3 x 3 block around (r, c + j) is
 * larger than it, j < 8, for 1 <= c and c + 9 <= cols (the rows above and
 * below clamped to the image as larger_neighbour() clamps them). The
 * maximum of the 8 neighbours is compared with each pixel: the same answer
 * as comparing each neighbour when none is NaN. */
NCALC_TARGET_AVX2
static inline unsigned larger3_8_avx2(const float *resp, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t r,
                                      ptrdiff_t c)
{
    const float *mid = resp + r * cols + c;
    const float *up = resp + (r > 0 ? r - 1 : r) * cols + c;
    const float *dn = resp + (r + 1 < rows ? r + 1 : r) * cols + c;
    const __m256 v = _mm256_loadu_ps(mid);
    __m256 m0 = _mm256_max_ps(_mm256_loadu_ps(mid - 1), _mm256_loadu_ps(mid + 1));
    __m256 m1 = _mm256_max_ps(_mm256_loadu_ps(up - 1), _mm256_loadu_ps(up));
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(up + 1));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(dn - 1));
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(dn));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(dn + 1));
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_max_ps(m0, m1), v, _CMP_GT_OQ));
}

/* window_peak_finite with AVX2: 1 when no pixel of the window is larger,
 * for a window whose clipped rows have b - a + 1 >= 8 columns. Each row is
 * read 8 columns a load, the last load overlapping the one before; up to
 * 16 columns without a branch but the loop's, wider with a test a row. The
 * same answer when the window holds no NaN. */
NCALC_TARGET_AVX2
static inline int window_peak_avx2(const float *resp, ptrdiff_t cols, ptrdiff_t r0, ptrdiff_t r1,
                                   ptrdiff_t a, ptrdiff_t b, float v)
{
    const __m256 vv = _mm256_set1_ps(v);
    const ptrdiff_t last = b - 7; /* the last load of a row: columns b - 7 .. b */
    const float *row = resp + r0 * cols;
    if (last - a <= 8) {
        const float *p = row + a;
        const ptrdiff_t d = last - a;
        __m256 m0 = vv, m1 = vv;
        for (ptrdiff_t q = r1 - r0; q >= 0; q--, p += cols) {
            m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p));
            m1 = _mm256_max_ps(m1, _mm256_loadu_ps(p + d));
        }
        return !_mm256_movemask_ps(_mm256_cmp_ps(_mm256_max_ps(m0, m1), vv, _CMP_GT_OQ));
    }
    for (ptrdiff_t q = r0; q <= r1; q++, row += cols) {
        __m256 m = _mm256_loadu_ps(row + last);
        for (ptrdiff_t x = a; x < last; x += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(row + x));
        if (_mm256_movemask_ps(_mm256_cmp_ps(m, vv, _CMP_GT_OQ))) return 0;
    }
    return 1;
}

/* The same with SSE for 4 <= b - a + 1 <= 8 columns (two loads a row). */
NCALC_TARGET_AVX2
static inline int window_peak_sse_avx2(const float *resp, ptrdiff_t cols, ptrdiff_t r0, ptrdiff_t r1,
                                       ptrdiff_t a, ptrdiff_t b, float v)
{
    const __m128 vv = _mm_set1_ps(v);
    const float *p = resp + r0 * cols + a;
    const ptrdiff_t d = b - 3 - a;
    __m128 m0 = vv, m1 = vv;
    for (ptrdiff_t q = r1 - r0; q >= 0; q--, p += cols) {
        m0 = _mm_max_ps(m0, _mm_loadu_ps(p));
        m1 = _mm_max_ps(m1, _mm_loadu_ps(p + d));
    }
    return !_mm_movemask_ps(_mm_cmpgt_ps(_mm_max_ps(m0, m1), vv));
}

/* Lists the candidates of row r (its threshold bits are in cand): for each
 * byte of 8 pixels that holds some, the 8-neighbour test of all 8 (when
 * radius > 0), then the columns of those that pass both stored 8 lanes at a
 * time (a table of lane orders), popcount of them taken. */
NCALC_TARGET_AVX2 __attribute__((noinline))
static void list_row_avx2(const nms_args_t *A, ptrdiff_t r, ptrdiff_t nw, cands_t *cand, ptrdiff_t *n_io)
{
    const float *resp = A->resp;
    const ptrdiff_t rows = A->rows, cols = A->cols;
    const uint8_t *gbits = (const uint8_t *)(cand->words + (r & 1) * nw);
    const int32_t *nzw = cand->nzw + (r & 1) * 4 * nw;
    const ptrdiff_t nz = cand->nz[r & 1];
    int32_t *col = cand->col;
    ptrdiff_t n = *n_io;
    for (ptrdiff_t i = 0; i < nz; i++) {
        const ptrdiff_t c = (ptrdiff_t)nzw[i] * 8;
        unsigned bits = gbits[nzw[i]];
        if (A->radius > 0) {
            if (c >= 1 && c + 9 <= cols) {
                bits &= ~larger3_8_avx2(resp, rows, cols, r, c);
            } else {
                for (unsigned w = bits; w; w &= w - 1) {
                    const int j = __builtin_ctz(w);
                    if (larger_neighbour(resp, rows, cols, r, c + j)) bits &= ~(1u << j);
                }
            }
        }
        const __m256i lane = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)&lanes8[bits]));
        _mm256_storeu_si256((__m256i *)(col + n), _mm256_add_epi32(lane, _mm256_set1_epi32((int32_t)c)));
        n += __builtin_popcount(bits);
    }
    *n_io = n;
}

/* The candidates col[0 .. nc - 1] of row r compared with their windows:
 * each is stored into rc as (r, col) and counted when it is a peak (no
 * branch on the answer). Returns the count. */
NCALC_TARGET_AVX2 __attribute__((noinline))
static ptrdiff_t peaks_of_row_avx2(const float *resp, ptrdiff_t rows, ptrdiff_t cols, int radius,
                                   ptrdiff_t r, const int32_t *col, ptrdiff_t nc, int32_t *rc)
{
    const ptrdiff_t r0 = r - radius < 0 ? 0 : r - radius;
    const ptrdiff_t r1 = r + radius >= rows ? rows - 1 : r + radius;
    const float *top = resp + r0 * cols, *mid = resp + r * cols;
    ptrdiff_t m = 0;
    for (ptrdiff_t i = 0; i < nc; i++) {
        const ptrdiff_t pc = col[i];
        const ptrdiff_t a = pc - radius < 0 ? 0 : pc - radius;
        const ptrdiff_t b = pc + radius >= cols ? cols - 1 : pc + radius;
        const float v = mid[pc];
        int peak;
        if (radius <= 1) /* listed: no 8-neighbour is larger */
            peak = 1;
        else if (b - a >= 7 && b - a <= 15) {
            /* two loads a row, the second overlapping the first */
            const __m256 vv = _mm256_set1_ps(v);
            const float *p = top + a;
            const ptrdiff_t d = b - 7 - a;
            __m256 m0 = vv, m1 = vv;
            ptrdiff_t q = r1 - r0 + 1;
            for (; q >= 2; q -= 2, p += 2 * cols) {
                m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p));
                m1 = _mm256_max_ps(m1, _mm256_loadu_ps(p + d));
                m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p + cols));
                m1 = _mm256_max_ps(m1, _mm256_loadu_ps(p + cols + d));
            }
            if (q) {
                m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p));
                m1 = _mm256_max_ps(m1, _mm256_loadu_ps(p + d));
            }
            peak = !_mm256_movemask_ps(_mm256_cmp_ps(_mm256_max_ps(m0, m1), vv, _CMP_GT_OQ));
        } else if (b - a >= 7)
            peak = window_peak_avx2(resp, cols, r0, r1, a, b, v);
        else if (b - a >= 3)
            peak = window_peak_sse_avx2(resp, cols, r0, r1, a, b, v);
        else
            peak = window_peak_finite(resp, rows, cols, radius, r, pc);
        rc[2 * m] = (int32_t)r;
        rc[2 * m + 1] = (int32_t)pc;
        m += peak;
    }
    return m;
}

#ifdef NCALC_AVX512
/* scan_fast_avx2's threshold and mask test of a row's whole words of 32
 * pixels (the first cols / 32), 64 pixels at a time, then 32: each word's
 * bits stored in words[w], and the index (4 w + j) of each of its bytes j
 * that is not 0 in nzw, in order (the number of them returned; nothing is
 * stored past them). *nan set when one of the pixels is NaN. The same
 * comparisons as the AVX2 loop: the same words and list. */
NCALC_TARGET_AVX512BW __attribute__((noinline))
static ptrdiff_t row_bits_avx512(const float *restrict row, const float *restrict thr,
                                 const uint8_t *restrict mrow, ptrdiff_t cols, uint32_t *restrict words,
                                 int32_t *restrict nzw, int *nan)
{
    const ptrdiff_t nw = cols / 32;
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __mmask16 un = 0;
    ptrdiff_t nz = 0, w = 0;
    for (; w < nw; w += 2) {
        const int two = w + 2 <= nw; /* 64 pixels, or the last 32 */
        const ptrdiff_t c = 32 * w;
        uint64_t bits = 0;
        for (int q = 0; q < (two ? 4 : 2); q += 2) {
            const __m512 v0 = _mm512_loadu_ps(row + c + 16 * q), v1 = _mm512_loadu_ps(row + c + 16 * q + 16);
            bits |= ((uint64_t)_mm512_cmp_ps_mask(v0, _mm512_loadu_ps(thr + c + 16 * q), _CMP_GT_OQ) |
                     (uint64_t)_mm512_cmp_ps_mask(v1, _mm512_loadu_ps(thr + c + 16 * q + 16), _CMP_GT_OQ) << 16)
                    << (16 * q);
            un |= _mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q);
        }
        if (mrow) {
            const __mmask64 k = two ? ~(__mmask64)0 : (__mmask64)0xffffffffu;
            const __m512i m = _mm512_maskz_loadu_epi8(k, mrow + c);
            bits &= (uint64_t)_mm512_test_epi8_mask(m, m);
        }
        words[w] = (uint32_t)bits;
        if (two) words[w + 1] = (uint32_t)(bits >> 32);
        /* the bytes that are not 0, as byte indices */
        const __m128i b = _mm_cvtsi64_si128((long long)bits);
        const __mmask8 nzb = (__mmask8)(_mm_test_epi8_mask(b, b) & 0xffu);
        const int n_nz = __builtin_popcount((unsigned)nzb);
        _mm256_mask_storeu_epi32(nzw + nz, (__mmask8)((1u << n_nz) - 1u),
                                 _mm256_maskz_compress_epi32(nzb, _mm256_add_epi32(lanes, _mm256_set1_epi32((int)(4 * w)))));
        nz += n_nz;
    }
    *nan |= un != 0;
    return nz;
}
#endif

/* scan_fast with AVX2, without a branch on the data but at the edges. The
 * threshold and mask test of 32 pixels at a time (the NaN test two vectors
 * a comparison: unordered is true when either is NaN) gives a word of bits;
 * its bytes that are not 0 are listed. Once row r is read, the candidates
 * of row r - 1 are listed (list_row_avx2: the rows of its 8-neighbour test
 * are in cache), and those of row r - radius compared with their windows,
 * each peak stored and counted by the truth of the test. cand: the
 * thread's scratch, words of 2 nw entries and nzw of 8 nw. */
NCALC_TARGET_AVX2
static void scan_fast_avx2(const nms_args_t *A, ptrdiff_t ra, ptrdiff_t rb, float *thr,
                           cands_t *cand, peaks_t *out, uint8_t *nan_rows)
{
    const float *resp = A->resp;
    const ptrdiff_t rows = A->rows, cols = A->cols;
    const int radius = A->radius;
    const ptrdiff_t nw = (cols + 31) / 32;
    const __m256i zero = _mm256_setzero_si256();
    ptrdiff_t n = 0;        /* candidates listed */
    ptrdiff_t next = ra;    /* the next row whose candidates are looked at */
    ptrdiff_t thr_row = -1; /* the grid row thr holds */
    const ptrdiff_t rend = rb + (radius > 1 ? radius : 1);
#ifdef NCALC_AVX512
    const int avx512 = have_avx512bw();
#endif
    out->n = 0;
    cand->start[0] = 0;
    for (ptrdiff_t r = ra; r < rend; r++) {
        if (r < rb) {
            const float *row = resp + r * cols;
            const uint8_t *mrow = A->mask ? A->mask + (r - A->mask_r0) * A->mask_ld : NULL;
            const ptrdiff_t gr = A->grid ? r / A->tile : 0;
            uint32_t *words = cand->words + (r & 1) * nw;
            int32_t *nzw = cand->nzw + (r & 1) * 4 * nw;
            ptrdiff_t nz = 0;
            if (gr != thr_row) {
                fill_thr(thr, cols, A->grid, A->tile, A->k, gr, A->bound);
                thr_row = gr;
            }
            __m256 un = _mm256_setzero_ps();
            int bad = 0;
            ptrdiff_t c = 0, w = 0;
#ifdef NCALC_AVX512
            if (avx512) {
                nz = row_bits_avx512(row, thr, mrow, cols, words, nzw, &bad);
                w = cols / 32;
                c = 32 * w;
            }
#endif
            for (; c + 32 <= cols; c += 32, w++) {
                const __m256 v0 = _mm256_loadu_ps(row + c), v1 = _mm256_loadu_ps(row + c + 8);
                const __m256 v2 = _mm256_loadu_ps(row + c + 16), v3 = _mm256_loadu_ps(row + c + 24);
                uint32_t bits =
                    (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v0, _mm256_loadu_ps(thr + c), _CMP_GT_OQ)) |
                    (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v1, _mm256_loadu_ps(thr + c + 8), _CMP_GT_OQ)) << 8 |
                    (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v2, _mm256_loadu_ps(thr + c + 16), _CMP_GT_OQ)) << 16 |
                    (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v3, _mm256_loadu_ps(thr + c + 24), _CMP_GT_OQ)) << 24;
                un = _mm256_or_ps(un, _mm256_or_ps(_mm256_cmp_ps(v0, v1, _CMP_UNORD_Q),
                                                   _mm256_cmp_ps(v2, v3, _CMP_UNORD_Q)));
                if (mrow) {
                    const __m256i m = _mm256_loadu_si256((const __m256i *)(mrow + c));
                    bits &= ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(m, zero));
                }
                words[w] = bits;
                for (int j = 0; j < 4; j++) {
                    nzw[nz] = (int32_t)(4 * w + j);
                    nz += ((bits >> (8 * j)) & 0xffu) != 0;
                }
            }
            if (c < cols) {
                uint32_t bits = 0;
                for (ptrdiff_t x = c; x < cols; x++) {
                    bad |= row[x] != row[x];
                    bits |= (uint32_t)((row[x] > thr[x]) & (!mrow || mrow[x] != 0)) << (x - c);
                }
                words[w] = bits;
                for (int j = 0; j < 4; j++) {
                    nzw[nz] = (int32_t)(4 * w + j);
                    nz += ((bits >> (8 * j)) & 0xffu) != 0;
                }
            }
            cand->nz[r & 1] = nz;
            nan_rows[r] = (uint8_t)(bad | (_mm256_movemask_ps(un) != 0));
        }
        /* rows up to r are read: list the candidates of row r - 1 (rows
         * r - 2 .. r are in cache) */
        if (r - 1 >= ra && r - 1 < rb) {
            if (!cands_room(cand, n, cols)) {
                cand->failed = 1;
                return;
            }
            list_row_avx2(A, r - 1, nw, cand, &n);
            cand->start[r - ra] = n;
        }
        /* and look at those of row r - radius (all of them after the last
         * row): rows up to r - 1 are listed */
        ptrdiff_t upto = r - radius + 1 < r ? r - radius + 1 : r;
        if (r + 1 >= rend) upto = rb;
        for (; next < upto; next++) {
            const ptrdiff_t i0 = cand->start[next - ra], i1 = cand->start[next - ra + 1];
            if (!peaks_room(out, i1 - i0)) {
                out->failed = 1;
                return;
            }
            out->n += peaks_of_row_avx2(resp, rows, cols, radius, next, cand->col + i0, i1 - i0,
                                        out->rc + 2 * out->n);
        }
    }
}
#endif

/* The peaks of rows [ra, rb) into out (emptied first), NaNs included: each
 * pixel above threshold is compared with its window maximum reduced in the
 * order of a separable max filter (window_peak). thr: cols floats. */
static void scan_exact(const nms_args_t *A, ptrdiff_t ra, ptrdiff_t rb, float *thr, peaks_t *out)
{
    const ptrdiff_t cols = A->cols;
    ptrdiff_t thr_row = -1;
    out->n = 0;
    for (ptrdiff_t r = ra; r < rb; r++) {
        const float *row = A->resp + r * cols;
        const uint8_t *mrow = A->mask ? A->mask + (r - A->mask_r0) * A->mask_ld : NULL;
        const ptrdiff_t gr = A->grid ? r / A->tile : 0;
        if (gr != thr_row) {
            fill_thr(thr, cols, A->grid, A->tile, A->k, gr, A->bound);
            thr_row = gr;
        }
        for (ptrdiff_t c = 0; c < cols; c++)
            if (row[c] > thr[c] && (!mrow || mrow[c] != 0) &&
                window_peak(A->resp, A->rows, cols, A->radius, r, c))
                push(out, r, c);
    }
}

ptrdiff_t ncalc_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                    const uint8_t *mask, const float *grid, ptrdiff_t tile,
                    float k, int radius,
                    int32_t *out_rows, int32_t *out_cols, ptrdiff_t max_out)
{
    return ncalc_nms_ld(resp, rows, cols, mask, cols, grid, tile, k, radius, out_rows, out_cols,
                        max_out, 0);
}

/* One thread's scan: its threshold row and candidate lists. */
typedef struct {
    float *thr;
    peaks_t above;
    int avx2, failed;
#ifdef NCALC_AVX2
    cands_t cand;
#endif
} scanner_t;

static void scanner_init(scanner_t *S, ptrdiff_t cols, int avx2)
{
    memset(S, 0, sizeof(*S));
    S->avx2 = avx2;
    S->thr = malloc(sizeof(float) * (size_t)cols);
    S->failed = !S->thr;
#ifdef NCALC_AVX2
    if (avx2) {
        const ptrdiff_t nw = (cols + 31) / 32;
        S->cand.words = malloc(sizeof(uint32_t) * 2 * (size_t)nw);
        S->cand.nzw = malloc(sizeof(int32_t) * 8 * (size_t)nw);
        if (!S->cand.words || !S->cand.nzw) S->failed = 1;
    }
#endif
}

static void scanner_free(scanner_t *S)
{
    free(S->thr);
    free(S->above.rc);
#ifdef NCALC_AVX2
    free(S->cand.col);
    free(S->cand.words);
    free(S->cand.nzw);
#endif
}

/* The peaks of rows [ra, rb), ra < rb <= ra + NMS_CHUNK, into out (see
 * scan_fast); 0 when out of memory. */
static int scan_chunk(scanner_t *S, const nms_args_t *A, ptrdiff_t ra, ptrdiff_t rb, peaks_t *out,
                      uint8_t *nan_rows)
{
    if (S->failed) return 0;
#ifdef NCALC_AVX2
    if (S->avx2) {
        scan_fast_avx2(A, ra, rb, S->thr, &S->cand, out, nan_rows);
        S->failed |= S->cand.failed;
        return !S->failed;
    }
#endif
    scan_fast(A, ra, rb, S->thr, &S->above, out, nan_rows);
    return 1;
}

static int use_avx2(void)
{
#ifdef NCALC_AVX2
    return have_avx2();
#else
    return 0;
#endif
}

/* The response at each of p's peaks, read while the rows are in cache
 * (into p->val); 0 when out of memory. */
static int peaks_values(peaks_t *p, const float *resp, ptrdiff_t cols)
{
    if (p->failed || p->n == 0) return !p->failed;
    p->val = malloc(sizeof(float) * (size_t)p->n);
    if (!p->val) return 0;
    for (ptrdiff_t i = 0; i < p->n; i++) p->val[i] = resp[(ptrdiff_t)p->rc[2 * i] * cols + p->rc[2 * i + 1]];
    return 1;
}

/* Writes the peaks of chunks[0 .. nchunks - 1] in order (at most max_out)
 * and frees their lists; the total, or NCALC_ENOMEM when failed or one
 * failed. With keep (not NULL), only the peaks with keep(ctx, r, c, v) stay
 * (v: the peak's value when the chunks have them, else NULL).
 * With out_val (not NULL), also the peaks' values (chunks' val). */
static ptrdiff_t gather_peaks(peaks_t *chunks, ptrdiff_t nchunks, int failed, int32_t *out_rows,
                              int32_t *out_cols, float *out_val, ptrdiff_t max_out,
                              int (*keep)(const void *, ptrdiff_t, ptrdiff_t, const float *),
                              const void *ctx)
{
    ptrdiff_t n = 0;
    for (ptrdiff_t ch = 0; ch < nchunks; ch++) {
        const peaks_t *p = &chunks[ch];
        failed |= p->failed || (out_val && p->n && !p->val);
        for (ptrdiff_t i = 0; i < p->n; i++) {
            const ptrdiff_t r = p->rc[2 * i], c = p->rc[2 * i + 1];
            if (keep && !keep(ctx, r, c, p->val ? &p->val[i] : NULL)) continue;
            if (n < max_out && !failed) {
                out_rows[n] = (int32_t)r;
                out_cols[n] = (int32_t)c;
                if (out_val) out_val[n] = p->val[i];
            }
            n++;
        }
        free(p->rc);
        free(p->val);
    }
    return failed ? NCALC_ENOMEM : n;
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
    const nms_args_t A = {resp, rows, cols, mask, mask_ld, grid, tile, k, radius, 0, 0.0};
    const ptrdiff_t nchunks = (rows + NMS_CHUNK - 1) / NMS_CHUNK;
    peaks_t *chunks = calloc((size_t)nchunks, sizeof(peaks_t));
    uint8_t *nan_rows = calloc((size_t)rows, 1);
    ptrdiff_t *redo = malloc(sizeof(ptrdiff_t) * (size_t)nchunks);
    if (!chunks || !nan_rows || !redo) {
        free(chunks);
        free(nan_rows);
        free(redo);
        return NCALC_ENOMEM;
    }
    const int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    const int avx2 = use_avx2();
    int failed = 0;
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        scanner_t S;
        scanner_init(&S, cols, avx2);
#pragma omp for schedule(dynamic, 1)
        for (ptrdiff_t ch = 0; ch < nchunks; ch++) {
            const ptrdiff_t ra = ch * NMS_CHUNK, rb = ra + NMS_CHUNK < rows ? ra + NMS_CHUNK : rows;
            failed |= !scan_chunk(&S, &A, ra, rb, &chunks[ch], nan_rows);
        }
        scanner_free(&S);
    }
    /* the chunks whose windows reach a row holding a NaN: done again */
    ptrdiff_t nredo = 0;
    if (!failed && memchr(nan_rows, 1, (size_t)rows)) {
        ptrdiff_t ch = 0;
        for (ptrdiff_t r = 0; r < rows && ch < nchunks; r++) {
            if (!nan_rows[r]) continue;
            /* the chunks whose rows are within radius of row r */
            const ptrdiff_t lo = r - radius < 0 ? 0 : r - radius;
            const ptrdiff_t hi = r + radius < rows ? r + radius : rows - 1;
            if (ch < lo / NMS_CHUNK) ch = lo / NMS_CHUNK;
            for (; ch <= hi / NMS_CHUNK; ch++) redo[nredo++] = ch;
        }
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) reduction(| : failed)
    for (ptrdiff_t i = 0; i < nredo; i++) {
        const ptrdiff_t ra = redo[i] * NMS_CHUNK, rb = ra + NMS_CHUNK < rows ? ra + NMS_CHUNK : rows;
        float *thr = malloc(sizeof(float) * (size_t)cols);
        if (!thr) {
            failed = 1;
            continue;
        }
        scan_exact(&A, ra, rb, thr, &chunks[redo[i]]);
        free(thr);
    }
    const ptrdiff_t n = gather_peaks(chunks, nchunks, failed, out_rows, out_cols, NULL, max_out, NULL, NULL);
    free(chunks);
    free(nan_rows);
    free(redo);
    return n;
}

/* ------------------------------------------------------------------------
 * Local noise and suppression in one pass (ncalc_noise_nms).
 * ------------------------------------------------------------------------ */

/* idx[i] = i / tile for i < n: the tile of each row (or column). */
static void tile_index(int32_t *idx, ptrdiff_t n, ptrdiff_t tile)
{
    for (ptrdiff_t i = 0, t = 0, next = tile; i < n; i++) {
        if (i == next) {
            t++;
            next += tile;
        }
        idx[i] = (int32_t)t;
    }
}

/* A mask given as blocks (ncalc_noise_nms_blocks). */
typedef struct {
    const uint8_t *small;
    ptrdiff_t hh, ww, fy, fx, row0, col0;
} blocks_t;

/* Rows [ra, rb) of the mask of B into out ((rb - ra) x cols bytes): as
 * ncalc_upscale_mask writes them; the rows of one block row are copies. */
static void block_rows(const blocks_t *B, ptrdiff_t ra, ptrdiff_t rb, ptrdiff_t cols, uint8_t *out)
{
    const uint8_t *prev = NULL;
    ptrdiff_t prev_i = -1;
    for (ptrdiff_t r = ra; r < rb; r++) {
        uint8_t *o = out + (r - ra) * cols;
        ptrdiff_t i = (B->row0 + r) / B->fy;
        if (i > B->hh - 1) i = B->hh - 1;
        if (i == prev_i) {
            memcpy(o, prev, (size_t)cols);
            continue;
        }
        const uint8_t *s = B->small + i * B->ww;
        for (ptrdiff_t c = 0; c < cols;) {
            ptrdiff_t j = (B->col0 + c) / B->fx, end = cols; /* the last block: to the end */
            if (j < B->ww - 1) {
                end = (j + 1) * B->fx - B->col0;
                if (end > cols) end = cols;
            } else {
                j = B->ww - 1;
            }
            memset(o + c, s[j] != 0, (size_t)(end - c));
            c = end;
        }
        prev = o;
        prev_i = i;
    }
}

/* ------------------------------------------------------------------------
 * Top: the peaks that cannot be among the `top` highest SNRs (ncalc.h).
 *
 * A peak of a good tile has its final SNR, v / g in double, as soon as it
 * is found. The threads count these SNRs (the witnesses) in a shared
 * histogram of fine bins (32 an octave, each bin's lower edge an exact
 * double); the lower edge of the highest bin at or above which `top`
 * witnesses lie is a bound: every peak of the whole list that ranks in
 * the top has an SNR at or above it (at least `top` peaks do). Peaks
 * below the bound are not wanted, so the scan raises its threshold in good
 * tiles to just under bound x noise (top_thr), and the list drops the rest
 * at the end. The peaks at or above the final bin edge B of ncalc.h are
 * never left out by the scan (every bound on the way is at most B), so
 * they are all counted by the end and the last bound is B: the list,
 * those peaks and the bad tiles' ones, is the same for any timing.
 * ------------------------------------------------------------------------ */

#define TOP_SUB 32                 /* bins an octave */
#define TOP_EMIN (-10)             /* the lowest octave: [2^-10, 2^-9) */
#define TOP_NB (31 * TOP_SUB)      /* up to 2^21 (the top bin takes all above) */

/* The bin of an SNR x > 0 (-1 below 2^TOP_EMIN, where no bound is of use):
 * its exponent and first 5 bits of mantissa, from the double's bits. */
static inline int top_bin(double x)
{
    if (!(x >= 0x1p-10)) return -1;
    if (!(x < 0x1p21)) return TOP_NB - 1;
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    const int e = (int)(u >> 52) - 1023;
    return (e - TOP_EMIN) * TOP_SUB + (int)((u >> 47) & (TOP_SUB - 1));
}

/* The lower edge of bin i: (1 + sub / 32) 2^e, exactly. */
static inline double top_edge(int i)
{
    return ldexp(1.0 + (double)(i % TOP_SUB) / TOP_SUB, i / TOP_SUB + TOP_EMIN);
}

/* The shared count of the witnesses and the bound it gives. */
typedef struct {
    int64_t hist[TOP_NB];
    ptrdiff_t top;
    double bound; /* 0: none yet */
} witness_t;

/* Counts the SNRs of p's peaks in good tiles (values: p->val, or resp)
 * into W and raises its bound; bins: p->n ints of scratch (the thread's).
 * g: the noise of the band's tiles (the band holds p's rows). */
static void witness_add(witness_t *W, const peaks_t *p, const float *resp, ptrdiff_t cols, const float *g,
                        ptrdiff_t tile, int *bins)
{
    ptrdiff_t m = 0;
    for (ptrdiff_t i = 0; i < p->n; i++) {
        const ptrdiff_t r = p->rc[2 * i], c = p->rc[2 * i + 1];
        const float noise = g[c / tile];
        if (!good_noise(noise)) continue;
        const float v = p->val ? p->val[i] : resp[r * cols + c];
        const int b = top_bin((double)v / (double)noise);
        if (b >= 0) bins[m++] = b;
    }
    if (!m) return;
#pragma omp critical(ncalc_noise_nms_top)
    {
        for (ptrdiff_t i = 0; i < m; i++) W->hist[bins[i]]++;
        int64_t above = 0;
        for (int b = TOP_NB - 1; b >= 0; b--) {
            above += W->hist[b];
            if (above >= W->top) {
                const double e = top_edge(b);
                if (e > W->bound) {
#pragma omp atomic write
                    W->bound = e;
                }
                break;
            }
        }
    }
}

/* What gather_peaks keeps of the scan: a peak in a good tile (at or above
 * the bound, when there is one), or one in a bad tile above k times the
 * median. */
typedef struct {
    const float *resp;
    ptrdiff_t cols, gw;
    const int32_t *trow, *tcol; /* each row's and column's tile (tile_index) */
    const uint8_t *bad;
    float thr;       /* k * median, as fill_thr computes it */
    const float *grid;
    double bound;    /* 0: none */
} bad_filter_t;

static int keep_peak(const void *ctx, ptrdiff_t r, ptrdiff_t c, const float *value)
{
    const bad_filter_t *F = ctx;
    const ptrdiff_t t = (ptrdiff_t)F->trow[r] * F->gw + F->tcol[c];
    const float v = value ? *value : F->resp[r * F->cols + c]; /* (the same float) */
    if (F->bad[t]) return v > F->thr;
    return !(F->bound > 0.0) || (double)v / (double)F->grid[t] >= F->bound;
}

static ptrdiff_t noise_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols, const uint8_t *mask,
                           ptrdiff_t mask_ld, const blocks_t *B, ptrdiff_t tile, ptrdiff_t min_count,
                           float k, int radius, float *grid, int32_t *out_rows, int32_t *out_cols,
                           float *out_value, ptrdiff_t max_out, ptrdiff_t top, int nthreads,
                           ncalc_dog_defer *defer);

ptrdiff_t ncalc_noise_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                          const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t min_count,
                          float k, int radius, float *grid,
                          int32_t *out_rows, int32_t *out_cols, float *out_value, ptrdiff_t max_out,
                          ptrdiff_t top, int nthreads)
{
    if (mask && mask_ld < cols) return NCALC_EINVAL;
    return noise_nms(resp, rows, cols, mask, mask_ld, NULL, tile, min_count, k, radius, grid, out_rows,
                     out_cols, out_value, max_out, top, nthreads, NULL);
}

ptrdiff_t ncalc_noise_nms_blocks(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                                 const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t fy,
                                 ptrdiff_t fx, ptrdiff_t row0, ptrdiff_t col0, ptrdiff_t tile,
                                 ptrdiff_t min_count, float k, int radius, float *grid,
                                 int32_t *out_rows, int32_t *out_cols, float *out_value,
                                 ptrdiff_t max_out, ptrdiff_t top, int nthreads)
{
    if (!small || hh < 1 || ww < 1 || fy < 1 || fx < 1 || row0 < 0 || col0 < 0) return NCALC_EINVAL;
    const blocks_t B = {small, hh, ww, fy, fx, row0, col0};
    return noise_nms(resp, rows, cols, NULL, 0, &B, tile, min_count, k, radius, grid, out_rows,
                     out_cols, out_value, max_out, top, nthreads, NULL);
}

ptrdiff_t ncalc_dog_noise_nms(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                              const double *sigmas, int nsigmas, double truncate, double split_sigma,
                              int max_levels, const int32_t *lo, const int32_t *hi, float *resp,
                              uint8_t *scale, const uint8_t *mask, ptrdiff_t mask_ld,
                              const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t fy,
                              ptrdiff_t fx, ptrdiff_t row0, ptrdiff_t col0, ptrdiff_t tile,
                              ptrdiff_t min_count, float k, int radius, float *grid,
                              int32_t *out_rows, int32_t *out_cols, float *out_value,
                              ptrdiff_t max_out, ptrdiff_t top, int nthreads)
{
    return ncalc_dog_noise_nms_side(img, dtype, rows, cols, ld, sigmas, nsigmas, truncate, split_sigma,
                                    max_levels, lo, hi, resp, scale, mask, mask_ld, small, hh, ww, fy,
                                    fx, row0, col0, tile, min_count, k, radius, grid, out_rows, out_cols,
                                    out_value, max_out, top, nthreads, NULL);
}

ptrdiff_t ncalc_dog_noise_nms_side(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                                   ptrdiff_t ld, const double *sigmas, int nsigmas, double truncate,
                                   double split_sigma, int max_levels, const int32_t *lo,
                                   const int32_t *hi, float *resp, uint8_t *scale, const uint8_t *mask,
                                   ptrdiff_t mask_ld, const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww,
                                   ptrdiff_t fy, ptrdiff_t fx, ptrdiff_t row0, ptrdiff_t col0,
                                   ptrdiff_t tile, ptrdiff_t min_count, float k, int radius, float *grid,
                                   int32_t *out_rows, int32_t *out_cols, float *out_value,
                                   ptrdiff_t max_out, ptrdiff_t top, int nthreads, ncalc_side *side)
{
    if (side && (!side->fn)) return NCALC_EINVAL;
    if (side) side->done = 0;
    ptrdiff_t n = NCALC_EINVAL;
    if (small ? !(mask || hh < 1 || ww < 1 || fy < 1 || fx < 1 || row0 < 0 || col0 < 0)
              : !(mask && mask_ld < cols)) {
        const blocks_t B = {small, hh, ww, fy, fx, row0, col0};
        ncalc_dog_defer *d = NULL;
        int st = ncalc_dog_octaves_defer(img, dtype, rows, cols, ld, sigmas, nsigmas, truncate,
                                         split_sigma, max_levels, lo, hi, resp, scale, nthreads, side, &d);
        if (st != NCALC_OK) {
            n = st;
        } else {
            n = noise_nms(resp, rows, cols, mask, mask_ld, small ? &B : NULL, tile, min_count, k, radius,
                          grid, out_rows, out_cols, out_value, max_out, top, nthreads, d);
            /* the rows no band reached (after an error): merged now */
            st = ncalc_dog_defer_finish(d, nthreads);
            ncalc_dog_defer_free(d);
            if (st != NCALC_OK) n = st;
        }
    }
    if (side && !side->done) { /* the DoG stopped before its pass: run it here */
        side->fn(side->arg);
        side->done = 1;
    }
    return n;
}

/* mask (mask_ld bytes a row), the blocks B, or neither (no mask). */
static ptrdiff_t noise_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols, const uint8_t *mask,
                           ptrdiff_t mask_ld, const blocks_t *B, ptrdiff_t tile, ptrdiff_t min_count,
                           float k, int radius, float *grid, int32_t *out_rows, int32_t *out_cols,
                           float *out_value, ptrdiff_t max_out, ptrdiff_t top, int nthreads,
                           ncalc_dog_defer *defer)
{
    if (!resp || !grid || rows < 1 || cols < 1 || tile < 1 || radius < 0 || max_out < 0 || top < 0)
        return NCALC_EINVAL;
    if (max_out > 0 && (!out_rows || !out_cols)) return NCALC_EINVAL;
    const int values = out_value != NULL;
    ptrdiff_t big = rows > cols ? rows : cols;
    if (radius > big) radius = (int)big;
    const ptrdiff_t gh = (rows + tile - 1) / tile, gw = (cols + tile - 1) / tile;
    const ptrdiff_t band = tile < rows ? tile : rows;
    const ptrdiff_t per_band = (band + NMS_CHUNK - 1) / NMS_CHUNK; /* chunks of a band */
    const ptrdiff_t nchunks = gh * per_band;
    /* The scan's grid: a good tile's noise; in a bad one a value v with
     * k v at or below k m for any median m > 0 (NaN only where k m is NaN
     * or +inf too: nothing passes either way). */
    const float low = k < 0.0f ? INFINITY : 0.0f;
    float *scan_grid = malloc(sizeof(float) * (size_t)(gh * gw));
    uint8_t *bad = malloc((size_t)(gh * gw));
    peaks_t *chunks = calloc((size_t)nchunks, sizeof(peaks_t));
    uint8_t *nan_rows = calloc((size_t)rows, 1);
    if (!scan_grid || !bad || !chunks || !nan_rows) {
        free(scan_grid);
        free(bad);
        free(chunks);
        free(nan_rows);
        return NCALC_ENOMEM;
    }
    const nms_args_t A = {resp, rows, cols, mask, mask_ld, scan_grid, tile, k, radius, 0, 0.0};
    const int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    const int avx2 = use_avx2();
    int failed = 0;
    witness_t *W = top > 0 ? calloc(1, sizeof(witness_t)) : NULL;
    if (top > 0 && !W) {
        free(scan_grid);
        free(bad);
        free(chunks);
        free(nan_rows);
        return NCALC_ENOMEM;
    }
    if (W) W->top = top;
    /* a band's noise, then at once its peaks: its rows are still in cache */
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        int *bins = NULL; /* witness_add's scratch */
        ptrdiff_t nbins = 0;
        scanner_t S;
        scanner_init(&S, cols, avx2);
        ncalc_tile_scratch *ts = ncalc_tile_scratch_new(rows, cols, tile, 1);
        /* with blocks: this thread's band of the mask */
        uint8_t *bm = B ? ncalc_buffer_get((size_t)(band * cols)) : NULL;
        if (!ts || (B && !bm)) S.failed = 1;
        nms_args_t Ab = A;
#pragma omp for schedule(dynamic, 1)
        for (ptrdiff_t br = 0; br < gh; br++) {
            if (S.failed) {
                failed = 1;
                continue;
            }
            float *g = grid + br * gw;
            const ptrdiff_t r_end = br * tile + band < rows ? br * tile + band : rows;
            /* with the DoG's merge deferred: the band's rows and those its
             * windows reach merged first (each row once, by whichever
             * thread comes first) */
            if (defer && ncalc_dog_defer_rows(defer, br * tile - radius - 2, r_end + radius + 2) != NCALC_OK) {
                failed = 1;
                continue;
            }
            if (B) {
                block_rows(B, br * tile, r_end, cols, bm);
                Ab.mask = bm;
                Ab.mask_ld = cols;
                Ab.mask_r0 = br * tile;
            }
            ncalc_tile_band(resp, rows, cols, Ab.mask, Ab.mask_ld, Ab.mask_r0, tile, 1, min_count, br, g, ts);
            for (ptrdiff_t bc = 0; bc < gw; bc++) {
                bad[br * gw + bc] = (uint8_t)!good_noise(g[bc]);
                scan_grid[br * gw + bc] = bad[br * gw + bc] ? low : g[bc];
            }
            for (ptrdiff_t j = 0; j < per_band; j++) {
                const ptrdiff_t ra = br * tile + j * NMS_CHUNK;
                if (ra >= r_end) break;
                const ptrdiff_t rb = ra + NMS_CHUNK < r_end ? ra + NMS_CHUNK : r_end;
                peaks_t *p = &chunks[br * per_band + j];
                if (W) {
#pragma omp atomic read
                    Ab.bound = W->bound;
                }
                failed |= !scan_chunk(&S, &Ab, ra, rb, p, nan_rows);
                if (values) failed |= !peaks_values(p, resp, cols);
                if (W && !p->failed && p->n) {
                    if (p->n > nbins) {
                        free(bins);
                        nbins = p->n;
                        bins = malloc(sizeof(int) * (size_t)nbins);
                    }
                    if (bins) witness_add(W, p, resp, cols, g, tile, bins);
                    else failed = 1;
                }
            }
        }
        free(bins);
        ncalc_buffer_put(bm);
        ncalc_tile_scratch_free(ts);
        scanner_free(&S);
    }
    /* the median of the good tiles' noise, as numpy.median of float32 */
    ptrdiff_t ngood = 0;
    float med = 0.0f;
    if (!failed) {
        for (ptrdiff_t i = 0; i < gh * gw; i++)
            if (!bad[i]) scan_grid[ngood++] = grid[i];
        if (ngood) {
            float *scratch = malloc(sizeof(float) * 3 * (size_t)ngood);
            if (scratch) med = ncalc_median_f32(scan_grid, ngood, scratch);
            else failed = 1;
            free(scratch);
        }
    }
    ptrdiff_t n;
    if (!failed && (ngood == 0 || memchr(nan_rows, 1, (size_t)rows))) {
        /* no tile to take the median of, or NaNs (whose windows the exact
         * scan of ncalc_nms_ld handles): the caller's two-step path */
        n = gather_peaks(chunks, nchunks, 0, NULL, NULL, NULL, 0, NULL, NULL) < 0 ? NCALC_ENOMEM
                                                                                  : NCALC_EFALLBACK;
    } else {
        if (!failed) /* (after a failure some bands were never looked at) */
            for (ptrdiff_t i = 0; i < gh * gw; i++)
                if (bad[i]) grid[i] = med;
        /* (after a failure only the lists are freed: no filter) */
        int32_t *trow = failed ? NULL : malloc(sizeof(int32_t) * (size_t)(rows + cols));
        bad_filter_t F = {resp, cols, gw, NULL, NULL, bad, k * med, grid, W ? W->bound : 0.0};
        if (trow) {
            F.trow = trow;
            F.tcol = trow + rows;
            tile_index(trow, rows, tile);
            tile_index(trow + rows, cols, tile);
        }
        n = gather_peaks(chunks, nchunks, failed || !trow, out_rows, out_cols, out_value, max_out,
                         trow ? keep_peak : NULL, &F);
        free(trow);
    }
    free(scan_grid);
    free(bad);
    free(chunks);
    free(nan_rows);
    free(W);
    return n;
}

int ncalc_peak_values(const float *resp, ptrdiff_t rows, ptrdiff_t cols, const float *grid,
                      ptrdiff_t tile, const uint8_t *scale, const int32_t *pr, const int32_t *pc,
                      ptrdiff_t n, float *value, double *noise, double *snr, int64_t *scale_out,
                      int nthreads)
{
    if (!grid || rows < 1 || cols < 1 || tile < 1 || n < 0 || (!resp && scale)) return NCALC_EINVAL;
    if (n > 0 && (!pr || !pc || !value || !noise || !snr || (scale && !scale_out)))
        return NCALC_EINVAL;
    for (ptrdiff_t i = 0; i < n; i++)
        if (pr[i] < 0 || pr[i] >= rows || pc[i] < 0 || pc[i] >= cols) return NCALC_EINVAL;
    const ptrdiff_t gcols = (cols + tile - 1) / tile;
    /* each row's and column's tile, looked up: a 64-bit division per peak
     * took most of the time */
    int32_t *trow = malloc(sizeof(int32_t) * (size_t)(rows + cols));
    if (!trow) return NCALC_ENOMEM;
    int32_t *tcol = trow + rows;
    tile_index(trow, rows, tile);
    tile_index(tcol, cols, tile);
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 16384)
    for (ptrdiff_t i = 0; i < n; i++) {
        const ptrdiff_t r = pr[i], c = pc[i];
        const float v = resp ? resp[r * cols + c] : value[i];
        const double g = (double)grid[(ptrdiff_t)trow[r] * gcols + tcol[c]];
        value[i] = v;
        noise[i] = g;
        snr[i] = (double)v / g;
        if (scale) scale_out[i] = scale[r * cols + c];
    }
    free(trow);
    return NCALC_OK;
}

/* Order-preserving map of a (non-NaN) double to an unsigned key. */
static inline uint64_t d2key(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

static inline double key2d(uint64_t k)
{
    uint64_t u = (k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k;
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* From this many values ncalc_top_k shares its passes between threads. */
#define TOPK_PAR_MIN 32768
#define TOPK_MAX_THREADS 64

ptrdiff_t ncalc_top_k(const double *v, ptrdiff_t n, ptrdiff_t k, int64_t *idx, int nthreads)
{
    if (n < 0 || k < 0 || k > n || (n > 0 && !v) || (k > 0 && !idx)) return NCALC_EINVAL;
    if (k == 0 || k == n) {
        for (ptrdiff_t i = 0; i < n; i++)
            if (isnan(v[i])) return NCALC_EINVAL;
        for (ptrdiff_t i = 0; i < k; i++) idx[i] = i;
        return k;
    }
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    if (nt > TOPK_MAX_THREADS) nt = TOPK_MAX_THREADS;
    if (n < TOPK_PAR_MIN || nt < 1) nt = 1;
    /* The value t of ascending rank n - k (numpy.partition(v, n - k)[n - k])
     * by a radix selection on the keys, 11 bits a digit from the top. Each
     * thread keeps the candidates of its own contiguous share of v at the
     * front of that share of key (the order of the candidates does not
     * matter to the selection); the digit is chosen from all threads'
     * counts, the same in every thread. Four counts per digit and thread:
     * the values are often in a few bins, and one counter incremented back
     * to back waits on itself. */
    /* (the keys from the pool: their fresh pages would be faulted in on every call) */
    uint64_t *key = ncalc_buffer_get(sizeof(uint64_t) * (size_t)n);
    ptrdiff_t *hist = malloc(sizeof(ptrdiff_t) * 4 * 2048 * (size_t)nt);
    ptrdiff_t *cnt = malloc(sizeof(ptrdiff_t) * 2 * (size_t)nt);
    if (!key || !hist || !cnt) {
        ncalc_buffer_put(key);
        free(hist);
        free(cnt);
        return NCALC_ENOMEM;
    }
    int bad = 0;
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        int T, th;
        ptrdiff_t lo, hi;
        ncalc_thread_share(n, &T, &th, &lo, &hi);
        int nan_here = 0;
        for (ptrdiff_t i = lo; i < hi; i++) {
            nan_here |= isnan(v[i]) != 0;
            key[i] = d2key(v[i]);
        }
        const int stop = ncalc_team_any(nan_here, &bad);
        ptrdiff_t mine = hi - lo, rank = n - k;
        uint64_t prefix = 0;
        ptrdiff_t *h = hist + (size_t)4 * 2048 * th;
        for (int shift = 53; shift > -11 && !stop; shift -= 11) {
            const int sh = shift < 0 ? 0 : shift;
            const uint64_t mask = shift < 0 ? (1u << (11 + shift)) - 1 : 0x7ff;
            uint64_t *kk = key + lo;
            memset(h, 0, sizeof(ptrdiff_t) * 4 * 2048);
            ptrdiff_t i = 0;
            for (; i + 4 <= mine; i += 4) {
                h[(kk[i] >> sh) & mask]++;
                h[2048 + ((kk[i + 1] >> sh) & mask)]++;
                h[4096 + ((kk[i + 2] >> sh) & mask)]++;
                h[6144 + ((kk[i + 3] >> sh) & mask)]++;
            }
            for (; i < mine; i++) h[(kk[i] >> sh) & mask]++;
            for (int b = 0; b < 2048; b++) h[b] += h[2048 + b] + h[4096 + b] + h[6144 + b];
#pragma omp barrier
            uint64_t d = 0;
            ptrdiff_t before = 0;
            for (;; d++) {
                ptrdiff_t c = 0;
                for (int u = 0; u < T; u++) c += hist[(size_t)4 * 2048 * u + d];
                if (before + c > rank) break;
                before += c;
            }
            rank -= before;
            ptrdiff_t kept = 0;
            for (ptrdiff_t j = 0; j < mine; j++) { /* branch-free: the test is a coin toss */
                const uint64_t kj = kk[j];
                kk[kept] = kj;
                kept += ((kj >> sh) & mask) == d;
            }
            mine = kept;
            prefix |= d << sh;
#pragma omp barrier /* every count read before the next pass's */
        }
        if (!stop) {
            /* t is the value of that key; the values above it, and the
             * earliest of those equal to it (-0 == +0 here, as in numpy's
             * comparisons), in index order: each share's counts give where
             * its indices go and how many of its equal values are taken */
            const double t = key2d(prefix);
            ptrdiff_t above = 0, equal = 0;
            for (ptrdiff_t i = lo; i < hi; i++) {
                above += v[i] > t;
                equal += v[i] == t;
            }
            cnt[2 * th] = above;
            cnt[2 * th + 1] = equal;
#pragma omp barrier
            ptrdiff_t all_above = 0;
            for (int u = 0; u < T; u++) all_above += cnt[2 * u];
            ptrdiff_t need = k - all_above, out = 0;
            for (int u = 0; u < th; u++) {
                const ptrdiff_t take = cnt[2 * u + 1] < need ? cnt[2 * u + 1] : need;
                need -= take;
                out += cnt[2 * u] + take;
            }
            for (ptrdiff_t i = lo; i < hi; i++) {
                if (v[i] > t) idx[out++] = i;
                else if (v[i] == t && need > 0) {
                    idx[out++] = i;
                    need--;
                }
            }
        }
    }
    ncalc_buffer_put(key);
    free(hist);
    free(cnt);
    return bad ? NCALC_EINVAL : k;
}

/* ------------------------------------------------------------------------
 * Suppression across the slices of a stack (ncalc_merge_slices; see
 * ncalc.h): each point looks through the row window of its own slice and
 * of the two adjacent ones (the points are sorted by slice, then row) for
 * a stronger neighbour. Each point decides only its own flag, so the
 * points are shared out between threads in any way.
 * ------------------------------------------------------------------------ */

/* q beats p: higher SNR; NaN weakest; on ties (and between NaNs) the
 * earlier index. */
static inline int merge_beats(double sq, double sp, ptrdiff_t q, ptrdiff_t p)
{
    const int nq = isnan(sq), np_ = isnan(sp);
    if (!nq && !np_) return sq > sp || (sq == sp && q < p);
    if (nq != np_) return np_;
    return q < p;
}

/* First index in [lo, hi) whose row is >= r (row[] is sorted there). */
static ptrdiff_t merge_lower(const int64_t *row, ptrdiff_t lo, ptrdiff_t hi, int64_t r)
{
    while (lo < hi) {
        const ptrdiff_t mid = lo + (hi - lo) / 2;
        if (row[mid] < r) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int ncalc_merge_slices(const int64_t *slice, const int64_t *row, const int64_t *col,
                       const double *snr, ptrdiff_t n, double radius2, int64_t k,
                       uint8_t *keep, int nthreads)
{
    if (n < 0 || k < 0 || !(radius2 >= 0) || (n > 0 && (!slice || !row || !col || !snr || !keep)))
        return NCALC_EINVAL;
    if (n == 0) return NCALC_OK;
    if (k > ((int64_t)1 << 30)) k = (int64_t)1 << 30; /* rows differ by at most 2^30 anyway */
    for (ptrdiff_t i = 1; i < n; i++)
        if (slice[i] < slice[i - 1] || (slice[i] == slice[i - 1] && row[i] < row[i - 1]))
            return NCALC_EINVAL;
    for (ptrdiff_t i = 0; i < n; i++)
        if (row[i] < -((int64_t)1 << 29) || row[i] > ((int64_t)1 << 29) ||
            col[i] < -((int64_t)1 << 29) || col[i] > ((int64_t)1 << 29) ||
            slice[i] == INT64_MIN || slice[i] == INT64_MAX)
            return NCALC_EINVAL; /* no int64 overflow below */
    /* runs of equal slice: [start[g], start[g + 1]) has slice value sv[g] */
    ptrdiff_t ng = 1;
    for (ptrdiff_t i = 1; i < n; i++) ng += slice[i] != slice[i - 1];
    ptrdiff_t *start = malloc(sizeof(ptrdiff_t) * (size_t)(ng + 1));
    ptrdiff_t *grp = malloc(sizeof(ptrdiff_t) * (size_t)n);
    if (!start || !grp) {
        free(start);
        free(grp);
        return NCALC_ENOMEM;
    }
    ptrdiff_t g = 0;
    start[0] = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        if (i > 0 && slice[i] != slice[i - 1]) start[++g] = i;
        grp[i] = g;
    }
    start[ng] = n;
    const int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1024) if (n > 4096)
    for (ptrdiff_t p = 0; p < n; p++) {
        const ptrdiff_t gp = grp[p];
        const int64_t rp = row[p], cp = col[p];
        const double sp = snr[p];
        int beaten = 0;
        for (ptrdiff_t h = gp - 1; h <= gp + 1 && !beaten; h++) {
            if (h < 0 || h >= ng) continue;
            if (h == gp - 1 && slice[start[h]] != slice[p] - 1) continue; /* not adjacent */
            if (h == gp + 1 && slice[start[h]] != slice[p] + 1) continue;
            for (ptrdiff_t q = merge_lower(row, start[h], start[h + 1], rp - k);
                 q < start[h + 1] && row[q] <= rp + k; q++) {
                if (q == p) continue;
                const int64_t dr = row[q] - rp, dc = col[q] - cp;
                if ((double)(dr * dr + dc * dc) <= radius2 && merge_beats(snr[q], sp, q, p)) {
                    beaten = 1;
                    break;
                }
            }
        }
        keep[p] = (uint8_t)!beaten;
    }
    free(start);
    free(grp);
    return NCALC_OK;
}
