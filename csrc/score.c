/*
 * score.c -- the standardised piecewise-linear basis of the score model
 * (napari_calc.core.score). See ncalc.h for the contract.
 */
#include "ncalc.h"

#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* numpy.minimum / numpy.maximum / numpy.clip of x with finite bounds: a NaN
 * x stays NaN. (Where x equals a bound the value is the same either way,
 * but for the sign of a zero: the caller has no zero bound.) */
static inline double min_nan(double x, double k) { return isnan(x) || x < k ? x : k; }
static inline double max_nan(double x, double k) { return isnan(x) || x > k ? x : k; }
static inline double clip_nan(double x, double a, double b)
{
    return isnan(x) ? x : (x < a ? a : (x > b ? b : x));
}

int ncalc_ramp_z(const double *X, ptrdiff_t n, int nfeat, const int *nknots, const double *knots,
                 int ninter, const int *inter, const double *mean, const double *scale, double *out,
                 int nthreads)
{
    if (n < 0 || nfeat < 1 || ninter < 0 || !nknots || (ninter > 0 && !inter) || !mean || !scale)
        return NCALC_EINVAL;
    if (n > 0 && (!X || !out)) return NCALC_EINVAL;
    ptrdiff_t ncol = 0, nk = 0;
    for (int j = 0; j < nfeat; j++) {
        if (nknots[j] < 0) return NCALC_EINVAL;
        ncol += nknots[j] ? nknots[j] + 1 : 1;
        nk += nknots[j];
    }
    if (nk > 0 && !knots) return NCALC_EINVAL;
    for (ptrdiff_t k = 0; k < nk; k++)
        if (!isfinite(knots[k])) return NCALC_EINVAL;
    for (int t = 0; t < 2 * ninter; t++)
        if (inter[t] < 0 || inter[t] >= nfeat) return NCALC_EINVAL;
    ncol += ninter;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 1024)
    for (ptrdiff_t i = 0; i < n; i++) {
        const double *x = X + i * nfeat;
        double *o = out + i * ncol;
        ptrdiff_t c = 0;
        const double *k = knots;
        for (int j = 0; j < nfeat; j++) {
            const int m = nknots[j];
            const double v = x[j];
            if (m == 0) {
                o[c] = (v - mean[c]) / scale[c];
                c++;
                continue;
            }
            o[c] = (min_nan(v, k[0]) - mean[c]) / scale[c];
            c++;
            for (int q = 0; q + 1 < m; q++, c++)
                o[c] = ((clip_nan(v, k[q], k[q + 1]) - k[q]) - mean[c]) / scale[c];
            o[c] = ((max_nan(v, k[m - 1]) - k[m - 1]) - mean[c]) / scale[c];
            c++;
            k += m;
        }
        for (int t = 0; t < ninter; t++, c++) {
            const double a = clip_nan(x[inter[2 * t + 1]], -1.0, 1.0) + 1.0;
            o[c] = (a * max_nan(x[inter[2 * t]], 0.0) - mean[c]) / scale[c];
        }
    }
    return NCALC_OK;
}
