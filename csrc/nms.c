/*
 * nms.c -- non-maximum suppression with a (local) noise-scaled threshold.
 * See ncalc.h for the contract.
 *
 * Rows are cut into fixed chunks of NMS_CHUNK rows (independent of the
 * thread count) that threads scan in parallel; each chunk lists its peaks in
 * raster order and the lists are concatenated in chunk order, so the output
 * is the same whatever the number of threads. The threshold is constant
 * over each tile's run of columns (no division per pixel). The window
 * maximum is separable: each row's horizontal window maxima are computed
 * once and kept in a ring of 2 radius + 1 rows, and their vertical maximum
 * is compared with the pixel -- branch-free loops the compiler vectorises,
 * O(radius) per pixel whatever the number of pixels above threshold.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
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

/* Maximum of row over the window [c - radius, c + radius] clipped to the
 * row, for every c. pad: cols + 2 radius floats of scratch. */
static void row_window_max(const float *row, ptrdiff_t cols, int radius, float *restrict pad,
                           float *restrict out)
{
    for (int k = 0; k < radius; k++) {
        pad[k] = -INFINITY;
        pad[cols + radius + k] = -INFINITY;
    }
    memcpy(pad + radius, row, sizeof(float) * (size_t)cols);
    memcpy(out, pad, sizeof(float) * (size_t)cols);
    for (int k = 1; k <= 2 * radius; k++) {
        const float *restrict q = pad + k;
        for (ptrdiff_t c = 0; c < cols; c++) out[c] = q[c] > out[c] ? q[c] : out[c];
    }
}

/* Peaks of rows [ra, rb): above the threshold, inside the mask, and not
 * below the maximum of the window. Returns 0 when out of memory. */
static int scan_rows(const float *resp, ptrdiff_t rows, ptrdiff_t cols, const uint8_t *mask,
                     const float *grid, ptrdiff_t tile, float k, int radius,
                     ptrdiff_t ra, ptrdiff_t rb, peaks_t *out)
{
    const ptrdiff_t W = 2 * (ptrdiff_t)radius + 1;
    float *ring = malloc(sizeof(float) * (size_t)W * (size_t)cols);
    float *pad = malloc(sizeof(float) * (size_t)(cols + 2 * (ptrdiff_t)radius));
    float *vm = malloc(sizeof(float) * (size_t)cols);
    float *thr = malloc(sizeof(float) * (size_t)cols);
    uint8_t *flag = malloc((size_t)cols);
    if (!ring || !pad || !vm || !thr || !flag) {
        free(ring); free(pad); free(vm); free(thr); free(flag);
        return 0;
    }
    ptrdiff_t gw = grid ? (cols + tile - 1) / tile : 0;
    ptrdiff_t next = ra - radius < 0 ? 0 : ra - radius; /* next row to enter the ring */
    for (ptrdiff_t r = ra; r < rb; r++) {
        ptrdiff_t r0 = r - radius < 0 ? 0 : r - radius;
        ptrdiff_t r1 = r + radius >= rows ? rows - 1 : r + radius;
        for (; next <= r1; next++)
            row_window_max(resp + next * cols, cols, radius, pad, ring + (next % W) * cols);
        memcpy(vm, ring + (r0 % W) * cols, sizeof(float) * (size_t)cols);
        for (ptrdiff_t q = r0 + 1; q <= r1; q++) {
            const float *restrict h = ring + (q % W) * cols;
            for (ptrdiff_t c = 0; c < cols; c++) vm[c] = h[c] > vm[c] ? h[c] : vm[c];
        }
        if (grid) {
            const float *grow = grid + (r / tile) * gw;
            for (ptrdiff_t s0 = 0, g = 0; s0 < cols; s0 += tile, g++) {
                ptrdiff_t s1 = s0 + tile < cols ? s0 + tile : cols;
                const float t = k * grow[g];
                for (ptrdiff_t c = s0; c < s1; c++) thr[c] = t;
            }
        } else {
            for (ptrdiff_t c = 0; c < cols; c++) thr[c] = k;
        }
        const float *restrict row = resp + r * cols;
        /* NaN thresholds compare false: nothing passes there */
        if (mask) {
            const uint8_t *restrict mrow = mask + r * cols;
            for (ptrdiff_t c = 0; c < cols; c++)
                flag[c] = (uint8_t)((row[c] > thr[c]) & (row[c] >= vm[c]) & (mrow[c] != 0));
        } else {
            for (ptrdiff_t c = 0; c < cols; c++)
                flag[c] = (uint8_t)((row[c] > thr[c]) & (row[c] >= vm[c]));
        }
        for (ptrdiff_t c = 0; c < cols; c++)
            if (flag[c]) push(out, r, c);
    }
    free(ring); free(pad); free(vm); free(thr); free(flag);
    return 1;
}

ptrdiff_t ncalc_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                    const uint8_t *mask, const float *grid, ptrdiff_t tile,
                    float k, int radius,
                    int32_t *out_rows, int32_t *out_cols, ptrdiff_t max_out)
{
    if (!resp || rows < 1 || cols < 1 || radius < 0 || max_out < 0) return NCALC_EINVAL;
    if (grid && tile < 1) return NCALC_EINVAL;
    if (max_out > 0 && (!out_rows || !out_cols)) return NCALC_EINVAL;
    /* a window wider than the image sees all of it */
    ptrdiff_t big = rows > cols ? rows : cols;
    if (radius > big) radius = (int)big;
    ptrdiff_t nchunks = (rows + NMS_CHUNK - 1) / NMS_CHUNK;
    peaks_t *chunks = calloc((size_t)nchunks, sizeof(peaks_t));
    if (!chunks) return NCALC_ENOMEM;
#pragma omp parallel for schedule(dynamic, 1)
    for (ptrdiff_t ch = 0; ch < nchunks; ch++) {
        ptrdiff_t ra = ch * NMS_CHUNK, rb = ra + NMS_CHUNK < rows ? ra + NMS_CHUNK : rows;
        if (!scan_rows(resp, rows, cols, mask, grid, tile, k, radius, ra, rb, &chunks[ch]))
            chunks[ch].failed = 1;
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
