/*
 * noise.c -- robust noise estimates: the median absolute deviation of a
 * response image, globally and per tile. See ncalc.h for the contract.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* 1.4826 * MAD of buf[0..m-1] (m >= 2); overwrites buf. */
static double mad_of(float *buf, ptrdiff_t m, uint32_t *key)
{
    float med = select_kth(buf, m, (m - 1) / 2, key);
    for (ptrdiff_t i = 0; i < m; i++) buf[i] = fabsf(buf[i] - med);
    return 1.4826 * (double)select_kth(buf, m, (m - 1) / 2, key);
}

/* Gather the masked pixels of block [r0,r1) x [c0,c1) at the given stride. */
static ptrdiff_t gather(const float *x, ptrdiff_t cols, const uint8_t *mask,
                        ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t c0, ptrdiff_t c1,
                        ptrdiff_t stride, float *buf)
{
    ptrdiff_t m = 0;
    for (ptrdiff_t r = r0; r < r1; r += stride)
        for (ptrdiff_t c = c0; c < c1; c += stride) {
            ptrdiff_t p = r * cols + c;
            if (!mask || mask[p]) buf[m++] = x[p];
        }
    return m;
}

double ncalc_mad_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                       const uint8_t *mask, ptrdiff_t stride)
{
    if (!x || rows < 1 || cols < 1 || stride < 1) return NAN;
    ptrdiff_t cap = ((rows + stride - 1) / stride) * ((cols + stride - 1) / stride);
    float *buf = malloc(sizeof(float) * (size_t)cap);
    uint32_t *key = malloc(sizeof(uint32_t) * (size_t)cap);
    if (!buf || !key) { free(buf); free(key); return -1.0; }
    ptrdiff_t m = gather(x, cols, mask, 0, rows, 0, cols, stride, buf);
    double s = m >= 2 ? mad_of(buf, m, key) : NAN;
    free(buf);
    free(key);
    return s;
}

int ncalc_tile_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                     const uint8_t *mask, ptrdiff_t tile, ptrdiff_t min_count,
                     float *grid, int nthreads)
{
    if (!x || !grid || rows < 1 || cols < 1 || tile < 1) return NCALC_EINVAL;
    if (min_count < 2) min_count = 2;
    ptrdiff_t gh = (rows + tile - 1) / tile, gw = (cols + tile - 1) / tile;
    int status = NCALC_OK;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    size_t cap = (size_t)(tile < rows ? tile : rows) * (size_t)(tile < cols ? tile : cols);
#pragma omp parallel num_threads(nt)
    {
        float *buf = malloc(sizeof(float) * cap);
        uint32_t *key = malloc(sizeof(uint32_t) * cap);
        if (!buf || !key) {
            free(buf); free(key);
            buf = NULL; key = NULL;
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (ptrdiff_t b = 0; b < gh * gw; b++) {
            if (!buf) continue;
            ptrdiff_t br = b / gw, bc = b % gw;
            ptrdiff_t r0 = br * tile, c0 = bc * tile;
            ptrdiff_t r1 = r0 + tile < rows ? r0 + tile : rows;
            ptrdiff_t c1 = c0 + tile < cols ? c0 + tile : cols;
            ptrdiff_t m = gather(x, cols, mask, r0, r1, c0, c1, 1, buf);
            grid[b] = m >= min_count ? (float)mad_of(buf, m, key) : NAN;
        }
        free(buf);
        free(key);
    }
    return status;
}
