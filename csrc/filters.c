/*
 * filters.c -- separable Gaussian smoothing and the fused multi-scale
 * difference-of-Gaussians response. See ncalc.h for the contract.
 *
 * Each output row is computed independently: for one row, the vertical pass
 * reads the 2R+1 input rows around it (they stay in cache), then the
 * horizontal pass runs over a reflect-padded copy of that one row. Nothing
 * of image size is allocated besides the caller's outputs, and rows are
 * shared out between OpenMP threads, so results do not depend on the thread
 * count.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

int ncalc_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int ncalc_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int ncalc_gaussian_radius(double sigma, double truncate)
{
    return (int)(truncate * sigma + 0.5);
}

/* SciPy "reflect": half-sample symmetric extension with period 2n. */
static ptrdiff_t reflect_index(ptrdiff_t i, ptrdiff_t n)
{
    if (n == 1) return 0;
    ptrdiff_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

/* Normalised half kernel w[0..radius] (w[k] for offsets +-k), computed in
 * double as SciPy does, stored as float. */
static float *gaussian_half_kernel(double sigma, int radius)
{
    float *w = malloc(sizeof(float) * (size_t)(radius + 1));
    double *d = malloc(sizeof(double) * (size_t)(radius + 1));
    if (!w || !d) { free(w); free(d); return NULL; }
    double sum = 0.0;
    for (int k = 0; k <= radius; k++) {
        d[k] = sigma > 0 ? exp(-0.5 * (double)k * (double)k / (sigma * sigma)) : (k == 0);
        sum += k == 0 ? d[k] : 2.0 * d[k];
    }
    for (int k = 0; k <= radius; k++) w[k] = (float)(d[k] / sum);
    free(d);
    return w;
}

/* Load input row r (any dtype) as float into dst. */
static void load_row(const void *img, int dtype, ptrdiff_t cols, ptrdiff_t r, float *dst)
{
    if (dtype == NCALC_U16) {
        const uint16_t *s = (const uint16_t *)img + r * cols;
        for (ptrdiff_t c = 0; c < cols; c++) dst[c] = (float)s[c];
    } else {
        memcpy(dst, (const float *)img + r * cols, sizeof(float) * (size_t)cols);
    }
}

/* Vertical pass for output row r into dst (cols floats). */
static void vertical_row(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                         ptrdiff_t r, const float *w, int radius, float *dst)
{
    if (dtype == NCALC_U16) {
        const uint16_t *base = (const uint16_t *)img;
        const uint16_t *s0 = base + r * cols;
        for (ptrdiff_t c = 0; c < cols; c++) dst[c] = w[0] * (float)s0[c];
        for (int k = 1; k <= radius; k++) {
            const uint16_t *a = base + reflect_index(r - k, rows) * cols;
            const uint16_t *b = base + reflect_index(r + k, rows) * cols;
            const float wk = w[k];
            for (ptrdiff_t c = 0; c < cols; c++) dst[c] += wk * ((float)a[c] + (float)b[c]);
        }
    } else {
        const float *base = (const float *)img;
        const float *s0 = base + r * cols;
        for (ptrdiff_t c = 0; c < cols; c++) dst[c] = w[0] * s0[c];
        for (int k = 1; k <= radius; k++) {
            const float *a = base + reflect_index(r - k, rows) * cols;
            const float *b = base + reflect_index(r + k, rows) * cols;
            const float wk = w[k];
            for (ptrdiff_t c = 0; c < cols; c++) dst[c] += wk * (a[c] + b[c]);
        }
    }
}

/* Horizontal pass of src (cols) into dst using pad (cols + 2 radius). */
static void horizontal_row(const float *src, ptrdiff_t cols, const float *w, int radius,
                           float *pad, float *dst)
{
    for (ptrdiff_t i = -radius; i < cols + radius; i++)
        pad[i + radius] = src[reflect_index(i, cols)];
    const float *p = pad + radius;
    for (ptrdiff_t c = 0; c < cols; c++) dst[c] = w[0] * p[c];
    for (int k = 1; k <= radius; k++) {
        const float wk = w[k];
        const float *a = p - k, *b = p + k;
        for (ptrdiff_t c = 0; c < cols; c++) dst[c] += wk * (a[c] + b[c]);
    }
}

static int check_image(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols)
{
    if (!img || rows < 1 || cols < 1) return 0;
    return dtype == NCALC_U16 || dtype == NCALC_F32;
}


int ncalc_gaussian(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                   double sigma, double truncate, float *out, int nthreads)
{
    if (!check_image(img, dtype, rows, cols) || !out || !(sigma >= 0) || !(truncate > 0))
        return NCALC_EINVAL;
    int radius = ncalc_gaussian_radius(sigma, truncate);
    float *w = gaussian_half_kernel(sigma, radius);
    if (!w) return NCALC_ENOMEM;
    int status = NCALC_OK;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        float *v = malloc(sizeof(float) * (size_t)cols);
        float *pad = malloc(sizeof(float) * (size_t)(cols + 2 * radius));
        int ok = v && pad;
        if (!ok) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(static)
        for (ptrdiff_t r = 0; r < rows; r++) {
            if (!ok) continue;
            vertical_row(img, dtype, rows, cols, r, w, radius, v);
            horizontal_row(v, cols, w, radius, pad, out + r * cols);
        }
        free(v);
        free(pad);
    }
    free(w);
    return status;
}

int ncalc_dog_response(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                       const double *sigmas, int nsigmas, double truncate,
                       float *resp, uint8_t *scale, int nthreads)
{
    if (!check_image(img, dtype, rows, cols) || !resp || !sigmas || nsigmas < 2 ||
        nsigmas > 255 || !(truncate > 0))
        return NCALC_EINVAL;
    for (int i = 0; i < nsigmas; i++)
        if (!(sigmas[i] > 0) || (i > 0 && !(sigmas[i] > sigmas[i - 1]))) return NCALC_EINVAL;

    int *radius = malloc(sizeof(int) * (size_t)nsigmas);
    float **w = calloc((size_t)nsigmas, sizeof(float *));
    int status = NCALC_OK, rmax = 0;
    if (!radius || !w) { free(radius); free(w); return NCALC_ENOMEM; }
    for (int i = 0; i < nsigmas; i++) {
        radius[i] = ncalc_gaussian_radius(sigmas[i], truncate);
        if (radius[i] > rmax) rmax = radius[i];
        w[i] = gaussian_half_kernel(sigmas[i], radius[i]);
        if (!w[i]) status = NCALC_ENOMEM;
    }
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    if (status == NCALC_OK) {
#pragma omp parallel num_threads(nt)
        {
            float *v = malloc(sizeof(float) * (size_t)cols);
            float *pad = malloc(sizeof(float) * (size_t)(cols + 2 * rmax));
            float *g0 = malloc(sizeof(float) * (size_t)cols);
            float *g1 = malloc(sizeof(float) * (size_t)cols);
            int ok = v && pad && g0 && g1;
            if (!ok) {
#pragma omp atomic write
                status = NCALC_ENOMEM;
            }
#pragma omp for schedule(static)
            for (ptrdiff_t r = 0; r < rows; r++) {
                if (!ok) continue;
                float *out = resp + r * cols;
                uint8_t *sc = scale ? scale + r * cols : NULL;
                float *prev = g0, *cur = g1;
                vertical_row(img, dtype, rows, cols, r, w[0], radius[0], v);
                horizontal_row(v, cols, w[0], radius[0], pad, prev);
                for (int i = 1; i < nsigmas; i++) {
                    vertical_row(img, dtype, rows, cols, r, w[i], radius[i], v);
                    horizontal_row(v, cols, w[i], radius[i], pad, cur);
                    if (i == 1) {
                        for (ptrdiff_t c = 0; c < cols; c++) out[c] = prev[c] - cur[c];
                        if (sc) memset(sc, 0, (size_t)cols);
                    } else {
                        for (ptrdiff_t c = 0; c < cols; c++) {
                            float d = prev[c] - cur[c];
                            if (d > out[c]) {
                                out[c] = d;
                                if (sc) sc[c] = (uint8_t)(i - 1);
                            }
                        }
                    }
                    float *t = prev; prev = cur; cur = t;
                }
            }
            free(v); free(pad); free(g0); free(g1);
        }
    }
    for (int i = 0; i < nsigmas; i++) free(w[i]);
    free(w);
    free(radius);
    return status;
}
