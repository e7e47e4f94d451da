/*
 * hessian.c -- Gaussian scale-space measurements at candidate positions
 * only (no full-size images): the smoothed value and the Hessian.
 * See ncalc.h for the contract.
 *
 * One pass over each candidate's window, separable: the window's rows are
 * combined column by column with the row weights w(dr), w(dr) dr and
 * w(dr) dr^2 (three float64 vectors of 2R + 1, loops the compiler
 * vectorises), then each vector is reduced with the column weights. The
 * pixels enter as v - v0 (v0: the candidate's own pixel, an exact float64
 * difference for uint16 and float32), so that a constant window gives
 * exactly 0 derivatives, and the sums stay small. The derivatives of
 * (img - g) are those of img - v0 minus (g - v0) times the sums of the
 * derivative weights.
 *
 * Speed (the same values bit for bit): on AVX2 CPUs the column sums of a
 * window inside the image's columns keep 8 columns' sums in registers over
 * all its rows (column_sums_*_avx2; with AVX-512, 16 columns for uint16
 * windows of 16 columns or more, column_sums_u16_avx512); the weights are
 * recomputed only when sigma changes from one candidate to the next (per
 * thread and scale); the next candidate's window is prefetched; each
 * thread takes runs of consecutive candidates (ncalc_run_chunk: about
 * eight a thread), so that in detect's raster order the windows it reads
 * overlap in its own caches;
 * ncalc_local_hessian3 does the three scales of a candidate together, its
 * window read once; a scale whose cross derivative is not asked for skips
 * its sums (a third of the column sums' work: detect needs it only for the
 * candidates it keeps).
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static inline ptrdiff_t reflect_index(ptrdiff_t i, ptrdiff_t n)
{
    /* SciPy "reflect": d c b a | a b c d | d c b a */
    if (n == 1) return 0;
    ptrdiff_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

static inline ptrdiff_t window_radius(double s, double truncate)
{
    ptrdiff_t R = (ptrdiff_t)(truncate * s + 0.5);
    return R > 1 ? R : 1;
}

/* target_clones needs GCC >= 6 and ifunc support (glibc on x86-64 Linux);
 * no FMA contraction (-std=c99 implies -ffp-contract=off): every clone
 * computes bit-identical results. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) && (__GNUC__ >= 6) && !defined(NCALC_NO_CLONES)
#define NCALC_HCLONES __attribute__((target_clones("avx2", "default")))
#else
#define NCALC_HCLONES
#endif

/* Pixel j of a row as float64 minus v0: columns c0 + j (ci NULL) or ci[j]. */
#define PIX(T, row, j) ((double)((const T *)(row))[ci ? ci[j] : c0 + (j)] - v0)

/* Column sums over the window's rows, the rows dr and -dr taken together
 * (the weights are even in dr):
 *   C0[j] = sum_dr w(dr) (v - v0),  C1[j] = sum_dr w(dr) dr (v - v0),
 *   C2[j] = sum_dr w(dr) dr^2 (v - v0),
 * for the window columns j < W = 2R + 1 (ci: reflected columns, or NULL
 * when they are c0 .. c0 + W - 1); rowoff[k]: offset of window row k. */
NCALC_HCLONES
static void column_sums(const void *img, int dtype, const ptrdiff_t *rowoff, const ptrdiff_t *ci,
                        ptrdiff_t c0, ptrdiff_t R, double v0, const double *wk,
                        double *restrict C0, double *restrict C1, double *restrict C2)
{
    const ptrdiff_t W = 2 * R + 1;
    {
        const double a = wk[R];
        if (dtype == NCALC_U16) {
            const uint16_t *row = (const uint16_t *)img + rowoff[R];
            if (!ci) for (ptrdiff_t j = 0; j < W; j++) { C0[j] = a * ((double)row[c0 + j] - v0); C2[j] = 0; }
            else for (ptrdiff_t j = 0; j < W; j++) { C0[j] = a * ((double)row[ci[j]] - v0); C2[j] = 0; }
        } else {
            const float *row = (const float *)img + rowoff[R];
            if (!ci) for (ptrdiff_t j = 0; j < W; j++) { C0[j] = a * ((double)row[c0 + j] - v0); C2[j] = 0; }
            else for (ptrdiff_t j = 0; j < W; j++) { C0[j] = a * ((double)row[ci[j]] - v0); C2[j] = 0; }
        }
        if (C1)
            for (ptrdiff_t j = 0; j < W; j++) C1[j] = 0;
    }
    for (ptrdiff_t d = 1; d <= R; d++) {
        const double a = wk[R + d], b = a * (double)d, c = a * (double)(d * d);
        /* CROSS: also C1 (a compile-time constant in each loop) */
#define PAIR_LOOP(T, IDX, CROSS)                                                   \
        {                                                                          \
            const T *restrict up = (const T *)img + rowoff[R - d];                 \
            const T *restrict dn = (const T *)img + rowoff[R + d];                 \
            for (ptrdiff_t j = 0; j < W; j++) {                                    \
                const double p = (double)dn[IDX] - v0, m = (double)up[IDX] - v0;   \
                const double sum = p + m;                                          \
                C0[j] += a * sum;                                                  \
                if (CROSS) C1[j] += b * (p - m);                                   \
                C2[j] += c * sum;                                                  \
            }                                                                      \
        }
        if (dtype == NCALC_U16) {
            if (C1) {
                if (!ci) PAIR_LOOP(uint16_t, c0 + j, 1) else PAIR_LOOP(uint16_t, ci[j], 1)
            } else {
                if (!ci) PAIR_LOOP(uint16_t, c0 + j, 0) else PAIR_LOOP(uint16_t, ci[j], 0)
            }
        } else {
            if (C1) {
                if (!ci) PAIR_LOOP(float, c0 + j, 1) else PAIR_LOOP(float, ci[j], 1)
            } else {
                if (!ci) PAIR_LOOP(float, c0 + j, 0) else PAIR_LOOP(float, ci[j], 0)
            }
        }
#undef PAIR_LOOP
    }
}


/* AVX2 versions of column_sums for a window that lies inside the image's
 * columns (c0 .. c0 + W - 1 valid), chosen at run time (x86-64 GCC;
 * NCALC_NO_CLONES disables them). Eight columns (four when W < 8) at a
 * time, their three sums held in registers over all the window's rows
 * instead of a pass over C0, C1, C2 in memory per row pair; the last block
 * is shifted left to end at W (it recomputes a few columns with the very
 * same operations). Every column gets the operations of column_sums in
 * the same order (IEEE mul, add, sub; no contraction), so the sums are
 * bit-identical. For uint16 the terms v - v0, p + m and p - m are computed
 * in int32: they are integers below 2^18 in magnitude, exact in float64
 * either way. wb[d] = wk[R + d] d and wc[d] = wk[R + d] d^2 as there. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && (__GNUC__ >= 6) && \
    !defined(NCALC_NO_CLONES)
#include <immintrin.h>
#define NCALC_HAVX2 1
#define NCALC_TARGET_AVX2 __attribute__((target("avx2")))

/* 0 or 1: __builtin_cpu_supports returns the feature's bit, not 1 */
static inline int have_avx2(void) { return __builtin_cpu_supports("avx2") != 0; }

/* acc += w * x for the two halves lo, hi */
#define ACC2(acc, w, lo, hi)                                                   \
    do {                                                                       \
        acc##l = _mm256_add_pd(acc##l, _mm256_mul_pd(w, lo));                  \
        acc##h = _mm256_add_pd(acc##h, _mm256_mul_pd(w, hi));                  \
    } while (0)

/* C1 NULL: no cross sums (C1 untouched; the loops are unswitched at -O3) */
NCALC_TARGET_AVX2
static void column_sums_u16_avx2(const uint16_t *img, const ptrdiff_t *rowoff, ptrdiff_t c0,
                                 ptrdiff_t R, double v0, const double *wk, const double *wb,
                                 const double *wc, double *restrict C0, double *restrict C1,
                                 double *restrict C2)
{
    const int cross = C1 != NULL;
    const ptrdiff_t W = 2 * R + 1;
    const int iv0 = (int)v0;
    const __m256i vv0 = _mm256_set1_epi32(iv0), vv0x2 = _mm256_set1_epi32(2 * iv0);
    const __m256d aR = _mm256_set1_pd(wk[R]);
    if (W >= 8) {
        for (ptrdiff_t jb = 0; jb < W; jb += 8) {
            const ptrdiff_t j0 = jb + 8 <= W ? jb : W - 8;
            const uint16_t *base = img + c0 + j0;
            __m256i x = _mm256_sub_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(base + rowoff[R]))), vv0);
            __m256d s0l = _mm256_mul_pd(aR, _mm256_cvtepi32_pd(_mm256_castsi256_si128(x)));
            __m256d s0h = _mm256_mul_pd(aR, _mm256_cvtepi32_pd(_mm256_extracti128_si256(x, 1)));
            __m256d s1l = _mm256_setzero_pd(), s1h = s1l, s2l = s1l, s2h = s1l;
            for (ptrdiff_t d = 1; d <= R; d++) {
                const __m256d a = _mm256_set1_pd(wk[R + d]), b = _mm256_set1_pd(wb[d]),
                              c = _mm256_set1_pd(wc[d]);
                const __m256i m = _mm256_cvtepu16_epi32(
                    _mm_loadu_si128((const __m128i *)(base + rowoff[R - d])));
                const __m256i p = _mm256_cvtepu16_epi32(
                    _mm_loadu_si128((const __m128i *)(base + rowoff[R + d])));
                const __m256i si = _mm256_sub_epi32(_mm256_add_epi32(p, m), vv0x2);
                const __m256d sl = _mm256_cvtepi32_pd(_mm256_castsi256_si128(si));
                const __m256d sh = _mm256_cvtepi32_pd(_mm256_extracti128_si256(si, 1));
                ACC2(s0, a, sl, sh);
                if (cross) {
                    const __m256i di = _mm256_sub_epi32(p, m);
                    const __m256d dl = _mm256_cvtepi32_pd(_mm256_castsi256_si128(di));
                    const __m256d dh = _mm256_cvtepi32_pd(_mm256_extracti128_si256(di, 1));
                    ACC2(s1, b, dl, dh);
                }
                ACC2(s2, c, sl, sh);
            }
            _mm256_storeu_pd(C0 + j0, s0l); _mm256_storeu_pd(C0 + j0 + 4, s0h);
            if (cross) { _mm256_storeu_pd(C1 + j0, s1l); _mm256_storeu_pd(C1 + j0 + 4, s1h); }
            _mm256_storeu_pd(C2 + j0, s2l); _mm256_storeu_pd(C2 + j0 + 4, s2h);
        }
    } else { /* 4 <= W < 8 */
        const __m128i v4 = _mm256_castsi256_si128(vv0), v4x2 = _mm256_castsi256_si128(vv0x2);
        for (ptrdiff_t jb = 0; jb < W; jb += 4) {
            const ptrdiff_t j0 = jb + 4 <= W ? jb : W - 4;
            const uint16_t *base = img + c0 + j0;
            __m128i x = _mm_sub_epi32(
                _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(base + rowoff[R]))), v4);
            __m256d s0 = _mm256_mul_pd(aR, _mm256_cvtepi32_pd(x));
            __m256d s1 = _mm256_setzero_pd(), s2 = s1;
            for (ptrdiff_t d = 1; d <= R; d++) {
                const __m256d a = _mm256_set1_pd(wk[R + d]), b = _mm256_set1_pd(wb[d]),
                              c = _mm256_set1_pd(wc[d]);
                const __m128i m = _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(base + rowoff[R - d])));
                const __m128i p = _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(base + rowoff[R + d])));
                const __m256d sd = _mm256_cvtepi32_pd(_mm_sub_epi32(_mm_add_epi32(p, m), v4x2));
                s0 = _mm256_add_pd(s0, _mm256_mul_pd(a, sd));
                if (cross) s1 = _mm256_add_pd(s1, _mm256_mul_pd(b, _mm256_cvtepi32_pd(_mm_sub_epi32(p, m))));
                s2 = _mm256_add_pd(s2, _mm256_mul_pd(c, sd));
            }
            _mm256_storeu_pd(C0 + j0, s0);
            if (cross) _mm256_storeu_pd(C1 + j0, s1);
            _mm256_storeu_pd(C2 + j0, s2);
        }
    }
}

NCALC_TARGET_AVX2
static void column_sums_f32_avx2(const float *img, const ptrdiff_t *rowoff, ptrdiff_t c0,
                                 ptrdiff_t R, double v0, const double *wk, const double *wb,
                                 const double *wc, double *restrict C0, double *restrict C1,
                                 double *restrict C2)
{
    const int cross = C1 != NULL;
    const ptrdiff_t W = 2 * R + 1;
    const __m256d vv0 = _mm256_set1_pd(v0), aR = _mm256_set1_pd(wk[R]);
    for (ptrdiff_t jb = 0; jb < W; jb += 4) {
        const ptrdiff_t j0 = jb + 4 <= W ? jb : W - 4;
        const float *base = img + c0 + j0;
        __m256d s0 = _mm256_mul_pd(aR, _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(base + rowoff[R])), vv0));
        __m256d s1 = _mm256_setzero_pd(), s2 = s1;
        for (ptrdiff_t d = 1; d <= R; d++) {
            const __m256d a = _mm256_set1_pd(wk[R + d]), b = _mm256_set1_pd(wb[d]),
                          c = _mm256_set1_pd(wc[d]);
            const __m256d p = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(base + rowoff[R + d])), vv0);
            const __m256d m = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(base + rowoff[R - d])), vv0);
            const __m256d sd = _mm256_add_pd(p, m);
            s0 = _mm256_add_pd(s0, _mm256_mul_pd(a, sd));
            if (cross) s1 = _mm256_add_pd(s1, _mm256_mul_pd(b, _mm256_sub_pd(p, m)));
            s2 = _mm256_add_pd(s2, _mm256_mul_pd(c, sd));
        }
        _mm256_storeu_pd(C0 + j0, s0);
        if (cross) _mm256_storeu_pd(C1 + j0, s1);
        _mm256_storeu_pd(C2 + j0, s2);
    }
}
#undef ACC2

/* AVX-512 (AVX512F) version of column_sums_u16_avx2 for windows of 16
 * columns or more (GCC >= 11; NCALC_NO_AVX512 leaves it out, so that the
 * AVX2 one can be tested on such a CPU): sixteen columns at a time, the
 * last block shifted left to end at W; each column gets the very
 * operations of column_sums_u16_avx2, in the same order. */
#if __GNUC__ >= 11 && !defined(NCALC_NO_AVX512)
#define NCALC_HAVX512 1
#define NCALC_TARGET_AVX512 __attribute__((target("avx512f")))

static inline int have_avx512(void) { return __builtin_cpu_supports("avx512f") != 0; }

/* acc += w * x for the two halves lo, hi */
#define ACC2X(acc, w, lo, hi)                                                  \
    do {                                                                       \
        acc##l = _mm512_add_pd(acc##l, _mm512_mul_pd(w, lo));                  \
        acc##h = _mm512_add_pd(acc##h, _mm512_mul_pd(w, hi));                  \
    } while (0)

NCALC_TARGET_AVX512
static void column_sums_u16_avx512(const uint16_t *img, const ptrdiff_t *rowoff, ptrdiff_t c0,
                                   ptrdiff_t R, double v0, const double *wk, const double *wb,
                                   const double *wc, double *restrict C0, double *restrict C1,
                                   double *restrict C2)
{
    const int cross = C1 != NULL;
    const ptrdiff_t W = 2 * R + 1; /* >= 16 */
    const int iv0 = (int)v0;
    const __m512i vv0 = _mm512_set1_epi32(iv0), vv0x2 = _mm512_set1_epi32(2 * iv0);
    const __m512d aR = _mm512_set1_pd(wk[R]);
    for (ptrdiff_t jb = 0; jb < W; jb += 16) {
        const ptrdiff_t j0 = jb + 16 <= W ? jb : W - 16;
        const uint16_t *base = img + c0 + j0;
        const __m512i x = _mm512_sub_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(base + rowoff[R]))), vv0);
        __m512d s0l = _mm512_mul_pd(aR, _mm512_cvtepi32_pd(_mm512_castsi512_si256(x)));
        __m512d s0h = _mm512_mul_pd(aR, _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(x, 1)));
        __m512d s1l = _mm512_setzero_pd(), s1h = s1l, s2l = s1l, s2h = s1l;
        for (ptrdiff_t d = 1; d <= R; d++) {
            const __m512d a = _mm512_set1_pd(wk[R + d]), b = _mm512_set1_pd(wb[d]),
                          c = _mm512_set1_pd(wc[d]);
            const __m512i m = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(base + rowoff[R - d])));
            const __m512i p = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(base + rowoff[R + d])));
            const __m512i si = _mm512_sub_epi32(_mm512_add_epi32(p, m), vv0x2);
            const __m512d sl = _mm512_cvtepi32_pd(_mm512_castsi512_si256(si));
            const __m512d sh = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(si, 1));
            ACC2X(s0, a, sl, sh);
            if (cross) {
                const __m512i di = _mm512_sub_epi32(p, m);
                const __m512d dl = _mm512_cvtepi32_pd(_mm512_castsi512_si256(di));
                const __m512d dh = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(di, 1));
                ACC2X(s1, b, dl, dh);
            }
            ACC2X(s2, c, sl, sh);
        }
        _mm512_storeu_pd(C0 + j0, s0l); _mm512_storeu_pd(C0 + j0 + 8, s0h);
        if (cross) { _mm512_storeu_pd(C1 + j0, s1l); _mm512_storeu_pd(C1 + j0 + 8, s1h); }
        _mm512_storeu_pd(C2 + j0, s2l); _mm512_storeu_pd(C2 + j0 + 8, s2h);
    }
}
#undef ACC2X
#endif
#endif

/* Hint the cache to fetch the window of candidate (cr, cc) with radius R
 * (clipped to the image; only a hint, nothing is read). */
static inline void prefetch_window(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                                   ptrdiff_t cr, ptrdiff_t cc, ptrdiff_t R)
{
#if defined(__GNUC__)
    const size_t esz = dtype == NCALC_U16 ? 2 : 4;
    const ptrdiff_t ra = cr - R < 0 ? 0 : cr - R, rb = cr + R >= rows ? rows - 1 : cr + R;
    const ptrdiff_t ca = cc - R < 0 ? 0 : cc - R, cb = cc + R >= cols ? cols - 1 : cc + R;
    for (ptrdiff_t r = ra; r <= rb; r++) {
        const char *a = (const char *)img + ((size_t)r * (size_t)cols + (size_t)ca) * esz;
        const char *b = (const char *)img + ((size_t)r * (size_t)cols + (size_t)cb) * esz;
        for (; a <= b; a += 64) __builtin_prefetch(a, 0, 3);
        __builtin_prefetch(b, 0, 3);
    }
#else
    (void)img; (void)dtype; (void)rows; (void)cols; (void)cr; (void)cc; (void)R;
#endif
}

/* Per-thread state of one scale: the weights of the last sigma seen
 * (they depend on sigma alone, so they are recomputed only when it
 * changes) and the scratch of one window. */
typedef struct {
    float sigma;                       /* the sigma of the weights (-1: none) */
    double w1, q, swd;
    double *wk, *wd, *wh, *wb, *wc;    /* 2 Rmax + 1 each */
} hess_weights;

typedef struct {
    double *C0, *C1, *C2;              /* column sums, 2 Rmax + 1 each */
    ptrdiff_t *ci, *rowoff;            /* reflected columns, row offsets */
} hess_scratch;

/* The four outputs of ncalc_local_hessian for one candidate at scale s
 * (validated): out = smooth, lrr, lrc, lcc. */
static void hess_one(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t cr,
                     ptrdiff_t cc, float sigma, double truncate, hess_weights *hw,
                     const hess_scratch *sc, int avx2, int cross, float out[4])
{
    const double s = sigma, s2 = s * s, s4 = s2 * s2;
    const ptrdiff_t R = window_radius(s, truncate), W = 2 * R + 1;
    double *wk = hw->wk, *wd = hw->wd, *wh = hw->wh, *wb = hw->wb, *wc = hw->wc;
    double *C0 = sc->C0, *C1 = cross ? sc->C1 : NULL, *C2 = sc->C2;
    ptrdiff_t *ci = sc->ci, *rowoff = sc->rowoff;
    (void)avx2; (void)wb; (void)wc;
    if (sigma != hw->sigma) {
        /* separable weights: w(dr, dc) = wk[dr] wk[dc], even in dr */
        double w1 = 0, q = 0, swd = 0;
        hw->sigma = sigma;
        for (ptrdiff_t k = 0; k <= R; k++) {
            const double d = (double)k;
            wk[R + k] = wk[R - k] = exp(-(d * d) / (2.0 * s2));
        }
        for (ptrdiff_t k = 0; k < W; k++) {
            const double d = (double)(k - R);
            w1 += wk[k];
            wd[k] = wk[k] * d;
            wh[k] = wk[k] * (d * d / s4 - 1.0 / s2);
            q += wh[k];
        }
        for (ptrdiff_t k = 0; k < W; k++) swd += wd[k];
        for (ptrdiff_t d = 1; d <= R; d++) {
            wb[d] = wk[R + d] * (double)d;
            wc[d] = wk[R + d] * (double)(d * d);
        }
        hw->w1 = w1; hw->q = q; hw->swd = swd;
    }
    const double w1 = hw->w1, q = hw->q, swd = hw->swd;
    const int inside = cc - R >= 0 && cc + R < cols;
    if (!inside)
        for (ptrdiff_t k = 0; k < W; k++) ci[k] = reflect_index(cc - R + k, cols);
    for (ptrdiff_t k = 0; k < W; k++) {
        const ptrdiff_t r = cr - R + k;
        rowoff[k] = (r >= 0 && r < rows ? r : reflect_index(r, rows)) * cols;
    }
    const double v0 = dtype == NCALC_U16 ? (double)((const uint16_t *)img)[cr * cols + cc]
                                         : (double)((const float *)img)[cr * cols + cc];
    double sv, t2, tc, tx;
    for (int plain = 0;; plain = 1) {
        int fast = 0;
        (void)plain;
#ifdef NCALC_HAVX2
        if (!plain && avx2 && inside && W >= 4) {
            fast = 1;
            if (dtype == NCALC_U16) {
#ifdef NCALC_HAVX512
                if (avx2 > 1 && W >= 16)
                    column_sums_u16_avx512((const uint16_t *)img, rowoff, cc - R, R, v0, wk, wb, wc, C0, C1,
                                           C2);
                else
#endif
                    column_sums_u16_avx2((const uint16_t *)img, rowoff, cc - R, R, v0, wk, wb, wc, C0, C1, C2);
            }
            else
                column_sums_f32_avx2((const float *)img, rowoff, cc - R, R, v0, wk, wb, wc, C0, C1, C2);
        } else
#endif
            column_sums(img, dtype, rowoff, inside ? NULL : ci, cc - R, R, v0, wk, C0, C1, C2);
        /* reduce with the column weights */
        sv = 0; t2 = 0; tc = 0; tx = 0;
        for (ptrdiff_t j = 0; j < W; j++) {
            sv += wk[j] * C0[j];           /* sum w (v - v0) */
            t2 += wk[j] * C2[j];           /* sum w dr^2 (v - v0) */
            tc += wh[j] * C0[j];           /* sum w (dc^2/s^4 - 1/s^2) (v - v0) */
        }
        if (cross)
            for (ptrdiff_t j = 0; j < W; j++) tx += wd[j] * C1[j]; /* sum w dr dc (v - v0) */
        /* A NaN in float32 input: the sums are NaN alike, but which NaN
         * (its sign) an add returns depends on its operand order, which
         * the compiler chooses; redo them with column_sums so that even
         * the NaN's bits are those of the plain path. (A NaN column sum
         * makes one of these NaN: wk > 0.) */
        if (!(fast && dtype == NCALC_F32 && (isnan(sv) || isnan(t2) || isnan(tc) || isnan(tx))))
            break;
    }
    const double sw = w1 * w1;
    const double gd = sv / sw;         /* g - v0 */
    /* of (img - g) = (img - v0) - gd: the d2/dr2 weights sum to w1 q,
     * likewise d2/dc2; the cross ones to swd^2 (zero up to rounding) */
    const double hrr = (t2 / s4 - sv / s2) - gd * w1 * q;
    const double hcc = tc - gd * w1 * q;
    const double hrc = tx / s4 - gd * swd * swd / s4;
    out[0] = (float)(v0 + gd);
    out[1] = (float)(hrr / sw);
    out[2] = cross ? (float)(hrc / sw) : NAN;
    out[3] = (float)(hcc / sw);
}

/* The candidates of ncalc_local_hessian at nscales scales each: sigma[k]
 * (n values) and out[k] (4 arrays of n, any may be NULL) for scale k.
 * Without out[k][2] the cross term's sums of that scale are skipped (the
 * other values do not use them). */
static int local_hessian_scales(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                                const int32_t *cand_rows, const int32_t *cand_cols,
                                const float *const *sigma, int nscales, ptrdiff_t n,
                                double truncate, float *const (*out)[4], int nthreads)
{
    if (!img || rows < 1 || cols < 1 || n < 0 || !(truncate > 0) || nscales < 1) return NCALC_EINVAL;
    if (dtype != NCALC_U16 && dtype != NCALC_F32) return NCALC_EINVAL;
    if (n > 0 && (!cand_rows || !cand_cols)) return NCALC_EINVAL;
    ptrdiff_t Rmax = 1;
    for (int k = 0; k < nscales; k++) {
        if (n > 0 && !sigma[k]) return NCALC_EINVAL;
        for (ptrdiff_t i = 0; i < n; i++) {
            if (!(sigma[k][i] > 0) || sigma[k][i] > 1000 || cand_rows[i] < 0 || cand_rows[i] >= rows ||
                cand_cols[i] < 0 || cand_cols[i] >= cols)
                return NCALC_EINVAL;
            ptrdiff_t R = window_radius(sigma[k][i], truncate);
            if (R > Rmax) Rmax = R;
        }
    }
    if (n == 0) return NCALC_OK;
    const size_t Wmax = (size_t)(2 * Rmax + 1);
    int status = NCALC_OK;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    /* runs of consecutive candidates (see ncalc_run_chunk) */
    const ptrdiff_t chunk = ncalc_run_chunk(n, nt);
    (void)chunk;
#if defined(NCALC_HAVX512)
    /* 2: AVX-512 for uint16 windows of 16 columns or more, else AVX2 */
    const int avx2 = have_avx512() && have_avx2() ? 2 : have_avx2();
#elif defined(NCALC_HAVX2)
    const int avx2 = have_avx2();
#else
    const int avx2 = 0;
#endif
#pragma omp parallel num_threads(nt)
    {
        /* per scale: wk, wd, wh, wb, wc; then C0, C1, C2 */
        double *buf = malloc(sizeof(double) * (5 * (size_t)nscales + 3) * Wmax);
        ptrdiff_t *ibuf = malloc(sizeof(ptrdiff_t) * 2 * Wmax);
        hess_weights *hw = malloc(sizeof(hess_weights) * (size_t)nscales);
        if (!buf || !ibuf || !hw) {
            free(buf); free(ibuf); free(hw);
            buf = NULL;
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
        hess_scratch sc = {0};
        if (buf) {
            for (int k = 0; k < nscales; k++) {
                double *b = buf + 5 * (size_t)k * Wmax;
                hw[k].sigma = -1.0f;
                hw[k].wk = b; hw[k].wd = b + Wmax; hw[k].wh = b + 2 * Wmax;
                hw[k].wb = b + 3 * Wmax; hw[k].wc = b + 4 * Wmax;
            }
            sc.C0 = buf + 5 * (size_t)nscales * Wmax; sc.C1 = sc.C0 + Wmax; sc.C2 = sc.C1 + Wmax;
            sc.ci = ibuf; sc.rowoff = ibuf + Wmax;
        }
#pragma omp for schedule(dynamic, chunk)
        for (ptrdiff_t i = 0; i < n; i++) {
            if (!buf) continue;
            if (i + 1 < n) {
                /* the next candidate's largest window */
                ptrdiff_t Rn = 1;
                for (int k = 0; k < nscales; k++) {
                    ptrdiff_t R = window_radius(sigma[k][i + 1], truncate);
                    if (R > Rn) Rn = R;
                }
                prefetch_window(img, dtype, rows, cols, cand_rows[i + 1], cand_cols[i + 1], Rn);
            }
            for (int k = 0; k < nscales; k++) {
                float o[4];
                hess_one(img, dtype, rows, cols, cand_rows[i], cand_cols[i], sigma[k][i], truncate,
                         &hw[k], &sc, avx2, out[k][2] != NULL, o);
                for (int m = 0; m < 4; m++)
                    if (out[k][m]) out[k][m][i] = o[m];
            }
        }
        if (buf) { free(buf); free(ibuf); free(hw); }
    }
    return status;
}

int ncalc_local_hessian(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                        const int32_t *cand_rows, const int32_t *cand_cols,
                        const float *sigma, ptrdiff_t n, double truncate,
                        float *smooth, float *lrr, float *lrc, float *lcc, int nthreads)
{
    if (n > 0 && !sigma) return NCALC_EINVAL;
    const float *const sig[1] = {sigma};
    float *const out[1][4] = {{smooth, lrr, lrc, lcc}};
    return local_hessian_scales(img, dtype, rows, cols, cand_rows, cand_cols, sig, 1, n, truncate,
                                out, nthreads);
}

int ncalc_local_hessian3(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                         const int32_t *cand_rows, const int32_t *cand_cols, ptrdiff_t n,
                         const float *sigma1, const float *sigma2, const float *sigma3,
                         double truncate, float *out, int nthreads)
{
    static const int all[3] = {1, 1, 1};
    return ncalc_local_hessian3_cross(img, dtype, rows, cols, cand_rows, cand_cols, n, sigma1,
                                      sigma2, sigma3, truncate, all, out, nthreads);
}

int ncalc_local_hessian3_cross(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                               const int32_t *cand_rows, const int32_t *cand_cols, ptrdiff_t n,
                               const float *sigma1, const float *sigma2, const float *sigma3,
                               double truncate, const int cross[3], float *out, int nthreads)
{
    if (n > 0 && (!sigma1 || !sigma2 || !sigma3 || !out || !cross)) return NCALC_EINVAL;
    const float *const sig[3] = {sigma1, sigma2, sigma3};
    float *const o[3][4] = {{out, out + n, cross[0] ? out + 2 * n : NULL, out + 3 * n},
                            {out + 4 * n, out + 5 * n, cross[1] ? out + 6 * n : NULL, out + 7 * n},
                            {out + 8 * n, out + 9 * n, cross[2] ? out + 10 * n : NULL, out + 11 * n}};
    return local_hessian_scales(img, dtype, rows, cols, cand_rows, cand_cols, sig, 3, n, truncate,
                                o, nthreads);
}
