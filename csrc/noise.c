/*
 * noise.c -- robust noise estimates: the median absolute deviation of a
 * response image, globally and per tile. See ncalc.h for the contract.
 *
 * Exact selection, fast: a regular sample brackets the wanted rank; one
 * branch-free pass (SSE2: 4 values at a time, lanes packed by a table)
 * counts the values below the bracket and copies those inside; the k-th
 * of those few is found by bisection on the value with vectorised
 * counting. The sample only decides the speed, never the result (a missed
 * bracket falls back to all values). Non-finite data take the older radix
 * selection on the float bits. Tiles are gathered a band of tiles at a
 * time (streaming rows); runs wholly inside or outside the mask are
 * copied or skipped.
 */
#include "ncalc.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define NCALC_SSE2 1
#endif

/* Order-preserving map of a (non-NaN) float to an unsigned key. */
static inline uint32_t f2key(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float key2f(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Keep the keys whose digit (key >> shift) & mask is the one holding rank
 * *k; update *k to the rank among them. Returns how many were kept. */
static ptrdiff_t radix_pass(uint32_t *key, ptrdiff_t n, int shift, uint32_t mask, ptrdiff_t *k,
                            uint32_t *digit)
{
    ptrdiff_t hist[2048];
    memset(hist, 0, sizeof(ptrdiff_t) * (mask + 1));
    for (ptrdiff_t i = 0; i < n; i++) hist[(key[i] >> shift) & mask]++;
    uint32_t d = 0;
    ptrdiff_t before = 0;
    while (before + hist[d] <= *k) before += hist[d++];
    *k -= before;
    ptrdiff_t m = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        if (((key[i] >> shift) & mask) == d) key[m++] = key[i];
    *digit = d;
    return m;
}

/* k-th smallest (0-based) of a[0..n-1], exactly, by a three-digit radix
 * selection on the float bits (11 + 11 + 10 bits): branch-light, O(n).
 * key: n words of scratch. a is not modified. */
static float select_kth(const float *a, ptrdiff_t n, ptrdiff_t k, uint32_t *key)
{
    for (ptrdiff_t i = 0; i < n; i++) key[i] = f2key(a[i]);
    uint32_t d0, d1, d2;
    ptrdiff_t m = radix_pass(key, n, 21, 0x7ff, &k, &d0);
    m = radix_pass(key, m, 10, 0x7ff, &k, &d1);
    radix_pass(key, m, 0, 0x3ff, &k, &d2);
    return key2f((d0 << 21) | (d1 << 10) | d2);
}

/* 1.4826 * MAD of buf[0..m-1] (m >= 2), by radix selection on the float
 * bits; overwrites buf. Used when buf holds NaNs or infinities. */
static double mad_of_radix(float *buf, ptrdiff_t m, uint32_t *key)
{
    float med = select_kth(buf, m, (m - 1) / 2, key);
    for (ptrdiff_t i = 0; i < m; i++) buf[i] = fabsf(buf[i] - med);
    return 1.4826 * (double)select_kth(buf, m, (m - 1) / 2, key);
}

static inline void swapf(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

/* k-th smallest (0-based) of a[0..n-1] (finite values), in place:
 * quickselect with a median-of-three pivot and insertion sort on short
 * ranges; after 2 log2(n) + 8 rounds without converging (an adversarial
 * order) it finishes with the radix selection. key: n words of scratch. */
static float quickselect(float *a, ptrdiff_t n, ptrdiff_t k, uint32_t *key)
{
    ptrdiff_t lo = 0, hi = n - 1;
    int budget = 8;
    for (ptrdiff_t m = n; m > 1; m >>= 1) budget += 2;
    while (hi - lo > 16) {
        if (--budget < 0) return select_kth(a + lo, hi - lo + 1, k - lo, key);
        ptrdiff_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swapf(&a[mid], &a[lo]);
        if (a[hi] < a[lo]) swapf(&a[hi], &a[lo]);
        if (a[hi] < a[mid]) swapf(&a[hi], &a[mid]);
        const float piv = a[mid];
        ptrdiff_t i = lo, j = hi;
        /* Hoare partition: a[lo..j] <= piv <= a[i..hi] */
        while (i <= j) {
            while (a[i] < piv) i++;
            while (piv < a[j]) j--;
            if (i <= j) {
                swapf(&a[i], &a[j]);
                i++;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k]; /* between the two parts: equal to the pivot */
    }
    for (ptrdiff_t i = lo + 1; i <= hi; i++) {
        float v = a[i];
        ptrdiff_t j = i - 1;
        while (j >= lo && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
    return a[k];
}

/* The value of element i: x itself, or its deviation |x - center|. */
static inline float val(const float *a, ptrdiff_t i, int dev, float center)
{
    return dev ? fabsf(a[i] - center) : a[i];
}

/* Number of a[0..n-1] <= t (vectorised). */
static ptrdiff_t count_le(const float *restrict a, ptrdiff_t n, float t)
{
    ptrdiff_t c = 0;
    for (ptrdiff_t i0 = 0; i0 < n; i0 += (ptrdiff_t)1 << 30) {
        const ptrdiff_t i1 = n - i0 < ((ptrdiff_t)1 << 30) ? n : i0 + ((ptrdiff_t)1 << 30);
        int32_t ci = 0; /* 32-bit lanes: vectorised */
        for (ptrdiff_t i = i0; i < i1; i++) ci += a[i] <= t;
        c += ci;
    }
    return c;
}

/* Count the val(a, i) < lo into *below and copy those within [lo, hi]
 * to mid (in order; mid: n + 3 floats), their number into *m. With SSE2,
 * 4 values at a time: the in-bracket lanes are moved to the front by a
 * 16-entry table and all 4 stored, the count advancing by those kept
 * (no branches). The values are bit-identical to val(). */
static void bracket_pass(const float *restrict a, ptrdiff_t n, int dev, float center, float lo,
                         float hi, float *restrict mid, ptrdiff_t *below_out, ptrdiff_t *m_out)
{
    ptrdiff_t below = 0, m = 0, i = 0;
#ifdef NCALC_SSE2
    static const uint8_t order[16][4] = {
        {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {2, 0, 0, 0}, {0, 2, 0, 0},
        {1, 2, 0, 0}, {0, 1, 2, 0}, {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0},
        {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3}};
    static const uint8_t ones[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};
    const __m128 vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi), vc = _mm_set1_ps(center);
    const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    float lane[4];
    while (i + 4 <= n) {
    /* 32-bit lane counts: flushed every 2^30 values */
    const ptrdiff_t iend = n - i > ((ptrdiff_t)1 << 30) ? i + ((ptrdiff_t)1 << 30) : n;
    __m128i vb = _mm_setzero_si128();
    for (; i + 4 <= iend; i += 4) {
        __m128 v = _mm_loadu_ps(a + i);
        if (dev) v = _mm_and_ps(_mm_sub_ps(v, vc), absmask); /* fabsf(a - center) */
        vb = _mm_sub_epi32(vb, _mm_castps_si128(_mm_cmplt_ps(v, vlo)));
        const int bits = _mm_movemask_ps(_mm_and_ps(_mm_cmpge_ps(v, vlo), _mm_cmple_ps(v, vhi)));
        _mm_storeu_ps(lane, v);
        const uint8_t *o = order[bits];
        mid[m] = lane[o[0]];
        mid[m + 1] = lane[o[1]];
        mid[m + 2] = lane[o[2]];
        mid[m + 3] = lane[o[3]];
        m += ones[bits];
    }
    int32_t cb[4];
    _mm_storeu_si128((__m128i *)cb, vb);
    below += (ptrdiff_t)cb[0] + cb[1] + cb[2] + cb[3];
    }
#endif
    for (; i < n; i++) {
        const float v = val(a, i, dev, center);
        below += v < lo;
        mid[m] = v;
        m += (v >= lo) & (v <= hi);
    }
    *below_out = below;
    *m_out = m;
}

/* Smallest and largest of the finite a[0..n-1], n >= 1. */
static void min_max(const float *restrict a, ptrdiff_t n, float *mn, float *mx)
{
    float lo = a[0], hi = a[0];
    ptrdiff_t i0 = 1;
#ifdef NCALC_SSE2
    if (n >= 8) {
        __m128 vlo = _mm_loadu_ps(a), vhi = vlo;
        ptrdiff_t i = 4;
        for (; i + 4 <= n; i += 4) {
            const __m128 v = _mm_loadu_ps(a + i);
            vlo = _mm_min_ps(vlo, v);
            vhi = _mm_max_ps(vhi, v);
        }
        float l[4], h[4];
        _mm_storeu_ps(l, vlo);
        _mm_storeu_ps(h, vhi);
        for (int j = 0; j < 4; j++) {
            lo = l[j] < lo ? l[j] : lo;
            hi = h[j] > hi ? h[j] : hi;
        }
        i0 = i;
    }
#endif
    for (ptrdiff_t i = i0; i < n; i++) {
        lo = a[i] < lo ? a[i] : lo;
        hi = a[i] > hi ? a[i] : hi;
    }
    *mn = lo;
    *mx = hi;
}

#define FEW 16

/* k-th smallest (0-based) of the finite a[0..n-1], all within [lo, hi],
 * exactly. Bisection on the value: [lo, hi] starts as given; each step counts
 * (vectorised) the values <= the midpoint and keeps the half that holds
 * the k-th, until at most FEW values remain in (lo, hi]; those are copied
 * out (branch-free) and sorted. tmp: n + 3 floats; key: n words. */
static float kth_bisect_in(const float *restrict a, ptrdiff_t n, ptrdiff_t k, float lo, float hi,
                           float *restrict tmp, uint32_t *key)
{
    if (n <= FEW) {
        memcpy(tmp, a, sizeof(float) * (size_t)n);
        return quickselect(tmp, n, k, key);
    }
    ptrdiff_t clo = count_le(a, n, lo), chi = n; /* k-th in (lo, hi] when clo <= k */
    if (clo > k) return lo;
    for (int it = 0; it < 64 && chi - clo > FEW; it++) {
        const float t = 0.5f * lo + 0.5f * hi;
        if (!(t > lo && t < hi)) break; /* no float in between */
        const ptrdiff_t c = count_le(a, n, t);
        if (c > k) { hi = t; chi = c; }
        else { lo = t; clo = c; }
    }
    /* the few values left in (lo, hi] = [next float above lo, hi] */
    ptrdiff_t below, m;
    bracket_pass(a, n, 0, 0.0f, nextafterf(lo, INFINITY), hi, tmp, &below, &m);
    return quickselect(tmp, m, k - clo, key);
}

/* The same, a[0..n-1] anywhere. */
static float kth_bisect(const float *restrict a, ptrdiff_t n, ptrdiff_t k, float *restrict tmp,
                        uint32_t *key)
{
    if (n <= FEW) {
        memcpy(tmp, a, sizeof(float) * (size_t)n);
        return quickselect(tmp, n, k, key);
    }
    float lo, hi;
    min_max(a, n, &lo, &hi);
    return kth_bisect_in(a, n, k, lo, hi, tmp, key);
}

/* Values lo <= hi with at most kl of a[0..n-1] below lo (lo = -inf when
 * kl < 0) and at most n - 1 - kh above hi (hi = +inf when kh >= n), for a
 * bracket about as narrow as [kl-th, kh-th smallest]; by bisection with
 * vectorised counts. */
static void rank_bracket(const float *restrict a, ptrdiff_t n, ptrdiff_t kl, ptrdiff_t kh,
                         float *plo, float *phi)
{
    float mn, mx;
    min_max(a, n, &mn, &mx);
    /* the ends need not be exact sample quantiles: within tol ranks */
    const ptrdiff_t tol = 2 + (kh - kl) / 8;
    for (int side = 0; side < 2; side++) {
        const ptrdiff_t k = side ? kh : kl;
        if (k < 0 || k >= n) continue;
        /* count(<= lo) <= k < count(<= hi) */
        float lo = mn, hi = mx;
        ptrdiff_t clo = count_le(a, n, lo), chi = n;
        if (clo > k) {
            hi = lo;
        } else {
            for (int it = 0; it < 64 && chi - clo > tol; it++) {
                const float t = 0.5f * lo + 0.5f * hi;
                if (!(t > lo && t < hi)) break;
                const ptrdiff_t c = count_le(a, n, t);
                if (c > k) { hi = t; chi = c; }
                else { lo = t; clo = c; }
            }
        }
        /* fewer than kl values are < lo (<= k are <= lo); more than kh
         * are <= hi */
        if (side) *phi = hi;
        else *plo = clo > k ? -INFINITY : lo;
    }
}

#define SAMPLE 256

/* k-th smallest (0-based) of the n >= 2 finite values val(a, i), exactly.
 * A regular sample of SAMPLE values brackets the rank: [lo, hi] holds the
 * k-th value unless the sample is very unrepresentative. One pass counts
 * the values below lo and copies those within [lo, hi] (branch-free), and
 * only those few are selected from. If the bracket missed, all the values
 * are selected from. The sample only decides how fast: the result is the
 * exact k-th value, the same for any sample. mid, tmp, key: n words of
 * scratch. */
static float select_bracketed(const float *a, ptrdiff_t n, ptrdiff_t k, int dev, float center,
                              float *mid, float *tmp, uint32_t *key)
{
    if (n > 4 * SAMPLE) {
        /* SAMPLE .. 16 SAMPLE values, about n / 16: the bracket narrows as
         * 1 / sqrt(sample) */
        float samp[16 * SAMPLE];
        const ptrdiff_t S = n / 16 < SAMPLE ? SAMPLE : (n / 16 > 16 * SAMPLE ? 16 * SAMPLE : n / 16);
        const double step = (double)n / (double)S;
        for (ptrdiff_t j = 0; j < S; j++) {
            ptrdiff_t idx = (ptrdiff_t)(((double)j + 0.5) * step);
            samp[j] = val(a, idx < n ? idx : n - 1, dev, center);
        }
        const double p = ((double)k + 0.5) / (double)n;
        const double ks = p * (double)S, d = 3.0 * sqrt((double)S * p * (1 - p)) + 2.0;
        const ptrdiff_t kl = (ptrdiff_t)floor(ks - d), kh = (ptrdiff_t)ceil(ks + d);
        float lo = -INFINITY, hi = INFINITY;
        rank_bracket(samp, S, kl, kh, &lo, &hi);
        ptrdiff_t below = 0, m = 0;
        bracket_pass(a, n, dev, center, lo, hi, mid, &below, &m);
        if (below <= k && k < below + m)
            return lo > -INFINITY && hi < INFINITY ? kth_bisect_in(mid, m, k - below, lo, hi, tmp, key)
                                                   : kth_bisect(mid, m, k - below, tmp, key);
    }
    for (ptrdiff_t i = 0; i < n; i++) mid[i] = val(a, i, dev, center);
    return kth_bisect(mid, n, k, tmp, key);
}

/* 1.4826 * MAD of buf[0..m-1] (m >= 2). finite: no NaN or infinity in
 * buf; else the radix path (which orders them by their bits) is taken.
 * buf is left alone when finite; mid, tmp, key: m words of scratch. */
static double mad_of(float *buf, ptrdiff_t m, int finite, float *mid, float *tmp, uint32_t *key)
{
    if (!finite) return mad_of_radix(buf, m, key);
    const ptrdiff_t k = (m - 1) / 2;
    const float med = select_bracketed(buf, m, k, 0, 0.0f, mid, tmp, key);
    /* the same deviations as fabsf(buf[i] - med) in the radix path */
    return 1.4826 * (double)select_bracketed(buf, m, k, 1, med, mid, tmp, key);
}

/* Gather the masked pixels of block [r0,r1) x [c0,c1) at the given stride
 * (branch-free); *finite gets 0 if one of them is NaN or infinite. */
static ptrdiff_t gather(const float *x, ptrdiff_t cols, const uint8_t *mask, ptrdiff_t mask_ld,
                        ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t c0, ptrdiff_t c1,
                        ptrdiff_t stride, float *buf, int *finite)
{
    ptrdiff_t m = 0;
    int bad = 0;
    for (ptrdiff_t r = r0; r < r1; r += stride) {
        const float *restrict row = x + r * cols;
        if (!mask) {
            if (stride == 1) {
                for (ptrdiff_t c = c0; c < c1; c++) {
                    buf[m + c - c0] = row[c];
                    bad |= !(fabsf(row[c]) <= FLT_MAX);
                }
                m += c1 - c0;
            } else {
                for (ptrdiff_t c = c0; c < c1; c += stride) {
                    buf[m++] = row[c];
                    bad |= !(fabsf(row[c]) <= FLT_MAX);
                }
            }
        } else {
            const uint8_t *restrict mrow = mask + r * mask_ld;
            int all = 0, none = 0;
            if (stride == 1) {
                /* runs inside or outside the mask (most): a copy, or nothing */
                int32_t in = 0;
                for (ptrdiff_t c = c0; c < c1; c++) in += mrow[c] != 0;
                all = in == c1 - c0;
                none = in == 0;
            }
            if (none) continue;
            if (all) {
                for (ptrdiff_t c = c0; c < c1; c++) {
                    buf[m + c - c0] = row[c];
                    bad |= !(fabsf(row[c]) <= FLT_MAX);
                }
                m += c1 - c0;
                continue;
            }
            for (ptrdiff_t c = c0; c < c1; c += stride) {
                const int in = mrow[c] != 0;
                buf[m] = row[c];
                m += in;
                bad |= in & !(fabsf(row[c]) <= FLT_MAX);
            }
        }
    }
    *finite = !bad;
    return m;
}

double ncalc_mad_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                       const uint8_t *mask, ptrdiff_t stride)
{
    if (!x || rows < 1 || cols < 1 || stride < 1) return NAN;
    ptrdiff_t cap = ((rows + stride - 1) / stride) * ((cols + stride - 1) / stride);
    /* one more slot: the branch-free gather writes one past the last kept */
    float *buf = malloc(sizeof(float) * (size_t)(cap + 1));
    float *mid = malloc(sizeof(float) * (size_t)(cap + 4)); /* + 3: see bracket_pass */
    float *tmp = malloc(sizeof(float) * (size_t)(cap + 4));
    uint32_t *key = malloc(sizeof(uint32_t) * (size_t)cap);
    if (!buf || !mid || !tmp || !key) { free(buf); free(mid); free(tmp); free(key); return -1.0; }
    int finite;
    ptrdiff_t m = gather(x, cols, mask, cols, 0, rows, 0, cols, stride, buf, &finite);
    double s = m >= 2 ? mad_of(buf, m, finite, mid, tmp, key) : NAN;
    free(buf);
    free(mid);
    free(tmp);
    free(key);
    return s;
}

static int tile_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                      const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t stride,
                      ptrdiff_t min_count, float *grid, int nthreads);

int ncalc_tile_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                     const uint8_t *mask, ptrdiff_t tile, ptrdiff_t min_count,
                     float *grid, int nthreads)
{
    return tile_noise(x, rows, cols, mask, cols, tile, 1, min_count, grid, nthreads);
}

int ncalc_tile_noise_ld(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                        const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t min_count,
                        float *grid, int nthreads)
{
    return tile_noise(x, rows, cols, mask, mask_ld, tile, 1, min_count, grid, nthreads);
}

int ncalc_tile_noise_strided(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                             const uint8_t *mask, ptrdiff_t tile, ptrdiff_t stride,
                             ptrdiff_t min_count, float *grid, int nthreads)
{
    return tile_noise(x, rows, cols, mask, cols, tile, stride, min_count, grid, nthreads);
}

/* ncalc_tile_noise_strided with the mask's rows mask_ld bytes apart. */
static int tile_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                      const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t stride,
                      ptrdiff_t min_count, float *grid, int nthreads)
{
    if (!x || !grid || rows < 1 || cols < 1 || tile < 1 || stride < 1 || (mask && mask_ld < cols))
        return NCALC_EINVAL;
    if (min_count < 2) min_count = 2;
    ptrdiff_t gh = (rows + tile - 1) / tile, gw = (cols + tile - 1) / tile;
    int status = NCALC_OK;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    const ptrdiff_t th = tile < rows ? tile : rows, tw = tile < cols ? tile : cols;
    const size_t cap = (size_t)((th + stride - 1) / stride) * (size_t)((tw + stride - 1) / stride);
    /* A thread takes a band of tiles (tile rows of the image) at a time and
     * gathers the pixels of all its tiles in one sweep down the rows (a
     * streaming read, where tile by tile would read short runs of widely
     * spaced rows); then each tile's noise. */
#pragma omp parallel num_threads(nt)
    {
        float *buf = malloc(sizeof(float) * cap * (size_t)gw);
        ptrdiff_t *cnt = malloc(sizeof(ptrdiff_t) * (size_t)gw);
        int *fin = malloc(sizeof(int) * (size_t)gw);
        float *mid = malloc(sizeof(float) * (cap + 4)); /* + 3: see bracket_pass */
        float *tmp = malloc(sizeof(float) * (cap + 4));
        uint32_t *key = malloc(sizeof(uint32_t) * cap);
        int ok = buf && cnt && fin && mid && tmp && key;
        if (!ok) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (ptrdiff_t br = 0; br < gh; br++) {
            if (!ok) continue;
            const ptrdiff_t r0 = br * tile, r1 = r0 + tile < rows ? r0 + tile : rows;
            for (ptrdiff_t bc = 0; bc < gw; bc++) {
                cnt[bc] = 0;
                fin[bc] = 1;
            }
            for (ptrdiff_t r = r0; r < r1; r += stride)
                for (ptrdiff_t bc = 0; bc < gw; bc++) {
                    const ptrdiff_t c0 = bc * tile, c1 = c0 + tile < cols ? c0 + tile : cols;
                    int finite;
                    cnt[bc] += gather(x, cols, mask, mask_ld, r, r + 1, c0, c1, stride,
                                      buf + (size_t)bc * cap + cnt[bc], &finite);
                    fin[bc] &= finite;
                }
            for (ptrdiff_t bc = 0; bc < gw; bc++)
                grid[br * gw + bc] = cnt[bc] >= min_count
                    ? (float)mad_of(buf + (size_t)bc * cap, cnt[bc], fin[bc], mid, tmp, key) : NAN;
        }
        free(buf);
        free(cnt);
        free(fin);
        free(mid);
        free(tmp);
        free(key);
    }
    return status;
}

/* ------------------------------------------------------------------------
 * Noise-level function (napari_calc.core.score.noise_level_function): the
 * samples, and their binned medians, with NumPy's float32 arithmetic and
 * numpy.median's definition, so that the Python reference and this give
 * bit-identical results.
 * ------------------------------------------------------------------------ */


static inline float pix(const void *img, int dtype, ptrdiff_t i)
{
    return dtype == NCALC_U16 ? (float)((const uint16_t *)img)[i] : ((const float *)img)[i];
}

ptrdiff_t ncalc_nlf_samples(const void *img, int dtype, ptrdiff_t planes, ptrdiff_t plane_ld,
                            ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld, ptrdiff_t k,
                            const uint8_t *smask, float *resid, float *level, int nthreads)
{
    if (!img || !resid || !level || (dtype != NCALC_U16 && dtype != NCALC_F32) || planes < 1 ||
        rows < 3 || cols < 3 || ld < cols || k < 1 || (planes > 1 && plane_ld < rows * ld))
        return NCALC_EINVAL;
    const ptrdiff_t nr = (rows - 2 + k - 1) / k, nc = (cols - 2 + k - 1) / k;
    /* first output of sample row i of plane 0: masked samples before it */
    ptrdiff_t *start = malloc(sizeof(ptrdiff_t) * (size_t)(nr + 1));
    if (!start) return NCALC_ENOMEM;
    start[0] = 0;
    for (ptrdiff_t i = 0; i < nr; i++) {
        ptrdiff_t n = nc;
        if (smask) {
            n = 0;
            for (ptrdiff_t j = 0; j < nc; j++) n += smask[i * nc + j] != 0;
        }
        start[i + 1] = start[i] + n;
    }
    const ptrdiff_t per_plane = start[nr];
    const float quarter = (float)0.25, fifth = (float)0.2; /* np.float32(0.25), np.float32(0.2) */
    /* serial: at most max_samples (~1e5) samples, well under a millisecond */
    (void)nthreads;
    for (ptrdiff_t pi = 0; pi < planes * nr; pi++) {
        const ptrdiff_t p = pi / nr, i = pi % nr, r = 1 + i * k;
        const char *base = (const char *)img + (size_t)(p * plane_ld) * (dtype == NCALC_U16 ? 2 : 4);
        const uint8_t *mrow = smask ? smask + i * nc : NULL;
        float *ro = resid + p * per_plane + start[i], *lo = level + p * per_plane + start[i];
        ptrdiff_t m = 0;
        for (ptrdiff_t j = 0; j < nc; j++) {
            if (mrow && !mrow[j]) continue;
            const ptrdiff_t c = 1 + j * k, o = r * ld + c;
            const float x = pix(base, dtype, o);
            /* NumPy: (up + down + left + right) * 0.25, left to right */
            const float nb = (((pix(base, dtype, o - ld) + pix(base, dtype, o + ld)) +
                               pix(base, dtype, o - 1)) + pix(base, dtype, o + 1)) * quarter;
            ro[m] = x - nb;
            lo[m] = (x + 4.0f * nb) * fifth;
            m++;
        }
    }
    free(start);
    return planes * per_plane;
}

/* numpy.median of the n >= 1 finite values val(a, i, dev, center): the
 * middle value, or for even n the float32 mean of the two middle ones,
 * summed as numpy's add.reduce does (from 0: +0 + -0 is +0). */
static float np_median(const float *a, ptrdiff_t n, int dev, float center, float *mid, float *tmp,
                       uint32_t *key)
{
    if (n == 1) return (0.0f + val(a, 0, dev, center)) / 1.0f;
    const ptrdiff_t h = n / 2;
    const float hi = select_bracketed(a, n, h, dev, center, mid, tmp, key);
    if (n % 2) return (0.0f + hi) / 1.0f;
    const float lo = select_bracketed(a, n, h - 1, dev, center, mid, tmp, key);
    return ((0.0f + lo) + hi) / 2.0f;
}

int ncalc_nlf_bins(const float *level, const float *resid, ptrdiff_t n, const double *edges,
                   int nedges, ptrdiff_t *count, float *lev_median, float *resid_mad, int nthreads)
{
    if (!level || !resid || n < 0 || nedges < 0 || nedges > 254 || (nedges > 0 && !edges) ||
        !count || !lev_median || !resid_mad)
        return NCALC_EINVAL;
    for (int e = 1; e < nedges; e++)
        if (!(edges[e] >= edges[e - 1])) return NCALC_EINVAL;
    const int nb = nedges + 1;
    for (ptrdiff_t i = 0; i < n; i++)
        if (!(fabsf(level[i]) <= FLT_MAX) || !(fabsf(resid[i]) <= FLT_MAX)) return NCALC_EINVAL;
    uint8_t *bin = malloc((size_t)(n ? n : 1));
    float *gl = malloc(sizeof(float) * (size_t)(n ? n : 1));
    float *gr = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ptrdiff_t *off = malloc(sizeof(ptrdiff_t) * (size_t)(nb + 1));
    if (!bin || !gl || !gr || !off) {
        free(bin); free(gl); free(gr); free(off);
        return NCALC_ENOMEM;
    }
    /* bin = number of edges <= level (numpy.searchsorted(edges, level,
     * side="right") for sorted edges); a stable counting sort by bin */
    for (int b = 0; b < nb; b++) count[b] = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const double v = (double)level[i];
        int b = 0;
        for (int e = 0; e < nedges; e++) b += edges[e] <= v;
        bin[i] = (uint8_t)b;
        count[b]++;
    }
    off[0] = 0;
    for (int b = 0; b < nb; b++) off[b + 1] = off[b] + count[b];
    {
        ptrdiff_t *pos = malloc(sizeof(ptrdiff_t) * (size_t)nb);
        if (!pos) { free(bin); free(gl); free(gr); free(off); return NCALC_ENOMEM; }
        memcpy(pos, off, sizeof(ptrdiff_t) * (size_t)nb);
        for (ptrdiff_t i = 0; i < n; i++) {
            const ptrdiff_t q = pos[bin[i]]++;
            gl[q] = level[i];
            gr[q] = resid[i];
        }
        free(pos);
    }
    free(bin);
    ptrdiff_t cap = 1;
    for (int b = 0; b < nb; b++) cap = count[b] > cap ? count[b] : cap;
    int status = NCALC_OK;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        float *mid = malloc(sizeof(float) * (size_t)(cap + 4)); /* + 3: see bracket_pass */
        float *tmp = malloc(sizeof(float) * (size_t)(cap + 4));
        uint32_t *key = malloc(sizeof(uint32_t) * (size_t)cap);
        const int ok = mid && tmp && key;
        if (!ok) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < nb; b++) {
            if (!ok) continue;
            const ptrdiff_t m = count[b];
            if (m == 0) {
                lev_median[b] = NAN;
                resid_mad[b] = NAN;
                continue;
            }
            lev_median[b] = np_median(gl + off[b], m, 0, 0.0f, mid, tmp, key);
            const float med = np_median(gr + off[b], m, 0, 0.0f, mid, tmp, key);
            resid_mad[b] = np_median(gr + off[b], m, 1, med, mid, tmp, key);
        }
        free(mid);
        free(tmp);
        free(key);
    }
    free(gl);
    free(gr);
    free(off);
    return status;
}
