/*
 * hessian.c -- Gaussian scale-space measurements at candidate positions
 * only (no full-size images): the smoothed value and the Hessian.
 * See ncalc.h for the contract.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>

static inline ptrdiff_t reflect_index(ptrdiff_t i, ptrdiff_t n)
{
    /* SciPy "reflect": d c b a | a b c d | d c b a */
    if (n == 1) return 0;
    ptrdiff_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

static inline double pix(const void *img, int dtype, ptrdiff_t p)
{
    return dtype == NCALC_U16 ? (double)((const uint16_t *)img)[p] : (double)((const float *)img)[p];
}

int ncalc_local_hessian(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                        const int32_t *cand_rows, const int32_t *cand_cols,
                        const float *sigma, ptrdiff_t n, double truncate,
                        float *smooth, float *lrr, float *lrc, float *lcc, int nthreads)
{
    if (!img || rows < 1 || cols < 1 || n < 0 || !(truncate > 0)) return NCALC_EINVAL;
    if (dtype != NCALC_U16 && dtype != NCALC_F32) return NCALC_EINVAL;
    if (n > 0 && (!cand_rows || !cand_cols || !sigma)) return NCALC_EINVAL;
    for (ptrdiff_t i = 0; i < n; i++)
        if (!(sigma[i] > 0) || sigma[i] > 1000 || cand_rows[i] < 0 || cand_rows[i] >= rows ||
            cand_cols[i] < 0 || cand_cols[i] >= cols)
            return NCALC_EINVAL;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
    for (ptrdiff_t i = 0; i < n; i++) {
        const double s = sigma[i], s2 = s * s, s4 = s2 * s2;
        const ptrdiff_t R = (ptrdiff_t)(truncate * s + 0.5) > 1 ? (ptrdiff_t)(truncate * s + 0.5) : 1;
        const ptrdiff_t cr = cand_rows[i], cc = cand_cols[i];
        double *wk = malloc(sizeof(double) * (size_t)(2 * R + 1));
        ptrdiff_t *ci = malloc(sizeof(ptrdiff_t) * (size_t)(2 * R + 1));
        if (!wk || !ci) {
            free(wk); free(ci);
            if (smooth) smooth[i] = NAN;
            if (lrr) lrr[i] = NAN;
            if (lrc) lrc[i] = NAN;
            if (lcc) lcc[i] = NAN;
            continue;
        }
        /* separable weights: w(dr, dc) = wk[dr] wk[dc] */
        double w1 = 0;
        for (ptrdiff_t k = -R; k <= R; k++) {
            wk[k + R] = exp(-(double)(k * k) / (2.0 * s2));
            w1 += wk[k + R];
            ci[k + R] = reflect_index(cc + k, cols);
        }
        const double sw = w1 * w1;
        /* pass 1: Gaussian-weighted mean */
        double sv = 0;
        for (ptrdiff_t dr = -R; dr <= R; dr++) {
            const ptrdiff_t row = reflect_index(cr + dr, rows) * cols;
            double acc = 0;
            for (ptrdiff_t k = 0; k <= 2 * R; k++) acc += wk[k] * pix(img, dtype, row + ci[k]);
            sv += wk[dr + R] * acc;
        }
        const double g = sv / sw;
        /* pass 2: second derivatives of the Gaussian, applied to (img - g) so
         * that a constant image gives exactly zero */
        double hrr = 0, hrc = 0, hcc = 0;
        for (ptrdiff_t dr = -R; dr <= R; dr++) {
            const ptrdiff_t row = reflect_index(cr + dr, rows) * cols;
            double a0 = 0, a1 = 0, a2 = 0; /* sum w v, sum w v dc, sum w v dc^2 */
            for (ptrdiff_t k = 0; k <= 2 * R; k++) {
                const double dc = (double)(k - R);
                const double wv = wk[k] * (pix(img, dtype, row + ci[k]) - g);
                a0 += wv; a1 += wv * dc; a2 += wv * dc * dc;
            }
            const double wr = wk[dr + R], drr = (double)dr;
            hrr += wr * a0 * (drr * drr / s4 - 1.0 / s2);
            hcc += wr * (a2 / s4 - a0 / s2);
            hrc += wr * drr * a1 / s4;
        }
        free(wk); free(ci);
        if (smooth) smooth[i] = (float)g;
        if (lrr) lrr[i] = (float)(hrr / sw);
        if (lrc) lrc[i] = (float)(hrc / sw);
        if (lcc) lcc[i] = (float)(hcc / sw);
    }
    return NCALC_OK;
}
