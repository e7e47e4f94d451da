/*
 * hessian.c -- Gaussian scale-space measurements at candidate positions
 * only (no full-size images): the smoothed value and the Hessian.
 * See ncalc.h for the contract.
 */
#include "ncalc.h"

#include <math.h>

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
        /* pass 1: Gaussian-weighted mean */
        double sw = 0, sv = 0;
        for (ptrdiff_t dr = -R; dr <= R; dr++) {
            const ptrdiff_t r = reflect_index(cr + dr, rows);
            for (ptrdiff_t dc = -R; dc <= R; dc++) {
                const ptrdiff_t c = reflect_index(cc + dc, cols);
                const double w = exp(-(double)(dr * dr + dc * dc) / (2.0 * s2));
                sw += w;
                sv += w * pix(img, dtype, r * cols + c);
            }
        }
        const double g = sv / sw;
        /* pass 2: second derivatives of the Gaussian, applied to (img - g) so
         * that a constant image gives exactly zero */
        double hrr = 0, hrc = 0, hcc = 0;
        for (ptrdiff_t dr = -R; dr <= R; dr++) {
            const ptrdiff_t r = reflect_index(cr + dr, rows);
            for (ptrdiff_t dc = -R; dc <= R; dc++) {
                const ptrdiff_t c = reflect_index(cc + dc, cols);
                const double w = exp(-(double)(dr * dr + dc * dc) / (2.0 * s2));
                const double v = pix(img, dtype, r * cols + c) - g;
                hrr += v * w * ((double)(dr * dr) / s4 - 1.0 / s2);
                hcc += v * w * ((double)(dc * dc) / s4 - 1.0 / s2);
                hrc += v * w * ((double)(dr * dc) / s4);
            }
        }
        if (smooth) smooth[i] = (float)g;
        if (lrr) lrr[i] = (float)(hrr / sw);
        if (lrc) lrc[i] = (float)(hrc / sw);
        if (lcc) lcc[i] = (float)(hcc / sw);
    }
    return NCALC_OK;
}
