/*
 * noise.c -- robust noise estimates: the median absolute deviation of a
 * response image, globally and per tile. See ncalc.h for the contract.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>

/* k-th smallest of a[0..n-1] (0-based); reorders a. Hoare's selection. */
static float select_kth(float *a, ptrdiff_t n, ptrdiff_t k)
{
    ptrdiff_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        ptrdiff_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                float t = a[i]; a[i] = a[j]; a[j] = t;
                i++; j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return a[k];
}

/* 1.4826 * MAD of buf[0..m-1] (m >= 2); reorders buf. */
static double mad_of(float *buf, ptrdiff_t m)
{
    float med = select_kth(buf, m, (m - 1) / 2);
    for (ptrdiff_t i = 0; i < m; i++) buf[i] = fabsf(buf[i] - med);
    return 1.4826 * (double)select_kth(buf, m, (m - 1) / 2);
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
    if (!buf) return -1.0;
    ptrdiff_t m = gather(x, cols, mask, 0, rows, 0, cols, stride, buf);
    double s = m >= 2 ? mad_of(buf, m) : NAN;
    free(buf);
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
#pragma omp parallel num_threads(nt)
    {
        float *buf = malloc(sizeof(float) * (size_t)(tile * tile));
        if (!buf) {
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
            grid[b] = m >= min_count ? (float)mad_of(buf, m) : NAN;
        }
        free(buf);
    }
    return status;
}
