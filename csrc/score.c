/*
 * score.c -- the score model's standardised piecewise-linear basis and its
 * log-odds, its calibration's interpolation, and the feature parts
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
/* (One comparison each, which a NaN fails.) */
static inline double min_nan(double x, double k) { return !(x >= k) ? x : k; }
static inline double max_nan(double x, double k) { return !(x <= k) ? x : k; }
static inline double clip_nan(double x, double a, double b) { return min_nan(max_nan(x, a), b); }

/* One row of the basis (see ncalc_ramp_logit in ncalc.h): each value into
 * o[c] when o is not NULL, and, when coef is not NULL, the sum of value
 * times coef[c] in column order from 0.0 returned (one product, then one
 * addition: two roundings, as NumPy makes them). Inlined with constant
 * NULLs, each caller gets its own loop. */
static inline double ramp_row(const double *x, int nfeat, const int *nknots, const double *knots,
                              int ninter, const int *inter, const double *mean, const double *scale,
                              const double *coef, double *o)
{
    double acc = 0.0;
    ptrdiff_t c = 0;
    const double *k = knots;
#define NCALC_RAMP_PUT(value)                  \
    do {                                       \
        const double b_ = (value);             \
        if (o) o[c] = b_;                      \
        if (coef) {                            \
            const double p_ = b_ * coef[c];    \
            acc += p_;                         \
        }                                      \
        c++;                                   \
    } while (0)
    for (int j = 0; j < nfeat; j++) {
        const int m = nknots[j];
        const double v = x[j];
        if (m == 0) {
            NCALC_RAMP_PUT((v - mean[c]) / scale[c]);
            continue;
        }
        NCALC_RAMP_PUT((min_nan(v, k[0]) - mean[c]) / scale[c]);
        for (int q = 0; q + 1 < m; q++)
            NCALC_RAMP_PUT(((clip_nan(v, k[q], k[q + 1]) - k[q]) - mean[c]) / scale[c]);
        NCALC_RAMP_PUT(((max_nan(v, k[m - 1]) - k[m - 1]) - mean[c]) / scale[c]);
        k += m;
    }
    for (int t = 0; t < ninter; t++) {
        const double a = clip_nan(x[inter[2 * t + 1]], -1.0, 1.0) + 1.0;
        NCALC_RAMP_PUT((a * max_nan(x[inter[2 * t]], 0.0) - mean[c]) / scale[c]);
    }
#undef NCALC_RAMP_PUT
    return acc;
}

/* Rows a block of the log-odds takes at a time (ramp_logit_block). */
#define RAMP_BLOCK 64

/* z[i] for the rows X[0 .. nb) (nb <= RAMP_BLOCK) of the log-odds alone:
 * ramp_row's operations on each row, in its order, but column by column
 * over the block's rows, so that the rows' divisions and running sums are
 * independent and the compiler vectorises across the rows (a row's sum is
 * a chain of additions, each waiting for the one before). The same floats
 * as ramp_row. */
static void ramp_logit_block(const double *X, ptrdiff_t nb, int nfeat, const int *nknots,
                             const double *knots, int ninter, const int *inter, const double *mean,
                             const double *scale, const double *coef, double intercept, double *z)
{
    double acc[RAMP_BLOCK], v[RAMP_BLOCK], u[RAMP_BLOCK];
    for (ptrdiff_t i = 0; i < nb; i++) acc[i] = 0.0;
    ptrdiff_t c = 0;
    const double *k = knots;
    /* acc += ((value of row i) - mean[c]) / scale[c] * coef[c], column c */
#define NCALC_RAMP_COL(value)                                  \
    do {                                                       \
        const double mu_ = mean[c], s_ = scale[c], w_ = coef[c]; \
        for (ptrdiff_t i = 0; i < nb; i++) {                   \
            const double b_ = ((value) - mu_) / s_;            \
            const double p_ = b_ * w_;                         \
            acc[i] += p_;                                      \
        }                                                      \
        c++;                                                   \
    } while (0)
    for (int j = 0; j < nfeat; j++) {
        const int m = nknots[j];
        for (ptrdiff_t i = 0; i < nb; i++) v[i] = X[i * nfeat + j];
        if (m == 0) {
            NCALC_RAMP_COL(v[i]);
            continue;
        }
        const double k0 = k[0];
        NCALC_RAMP_COL(min_nan(v[i], k0));
        for (int q = 0; q + 1 < m; q++) {
            const double ka = k[q], kb = k[q + 1];
            NCALC_RAMP_COL(clip_nan(v[i], ka, kb) - ka);
        }
        const double kl = k[m - 1];
        NCALC_RAMP_COL(max_nan(v[i], kl) - kl);
        k += m;
    }
    for (int t = 0; t < ninter; t++) {
        const int ja = inter[2 * t], jb = inter[2 * t + 1];
        for (ptrdiff_t i = 0; i < nb; i++) {
            v[i] = X[i * nfeat + ja];
            u[i] = X[i * nfeat + jb];
        }
        NCALC_RAMP_COL((clip_nan(u[i], -1.0, 1.0) + 1.0) * max_nan(v[i], 0.0));
    }
#undef NCALC_RAMP_COL
    for (ptrdiff_t i = 0; i < nb; i++) z[i] = acc[i] + intercept;
}

int ncalc_ramp_logit(const double *X, ptrdiff_t n, int nfeat, const int *nknots, const double *knots,
                     int ninter, const int *inter, const double *mean, const double *scale,
                     const double *coef, double intercept, double *z, double *basis, int nthreads)
{
    if (n < 0 || nfeat < 1 || ninter < 0 || !nknots || (ninter > 0 && !inter) || !mean || !scale)
        return NCALC_EINVAL;
    if (z && !coef) return NCALC_EINVAL;
    if (n > 0 && !X) return NCALC_EINVAL;
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
    if (z && !basis) {
        /* the log-odds alone (detect's call): no basis written */
        const ptrdiff_t nblk = (n + RAMP_BLOCK - 1) / RAMP_BLOCK;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 1024)
        for (ptrdiff_t bl = 0; bl < nblk; bl++) {
            const ptrdiff_t i0 = bl * RAMP_BLOCK;
            ramp_logit_block(X + i0 * nfeat, n - i0 < RAMP_BLOCK ? n - i0 : RAMP_BLOCK, nfeat, nknots, knots,
                             ninter, inter, mean, scale, coef, intercept, z + i0);
        }
    } else if (basis) {
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 1024)
        for (ptrdiff_t i = 0; i < n; i++) {
            const double acc = ramp_row(X + i * nfeat, nfeat, nknots, knots, ninter, inter, mean, scale,
                                        z ? coef : NULL, basis + i * ncol);
            if (z) z[i] = acc + intercept;
        }
    }
    return NCALC_OK;
}

/* numpy.interp(v, xp, fp) for one finite-or-NaN v, xp strictly increasing
 * (m >= 2): numpy's branches in numpy's order (compiled_base.c, arr_interp).
 * j is the largest index with xp[j] <= v, which numpy's search with a
 * guess finds too when xp strictly increases. */
static inline double interp_one(double v, const double *xp, const double *fp, ptrdiff_t m)
{
    if (v != v) return v;
    if (v < xp[0]) return fp[0];
    if (v >= xp[m - 1]) return fp[m - 1]; /* (above: the right value; at: fp[m - 1]) */
    /* xp[lo] <= v < xp[lo + len] (or the end): halved without a branch */
    ptrdiff_t lo = 0, len = m - 1;
    while (len > 1) {
        const ptrdiff_t half = len / 2;
        lo = xp[lo + half] <= v ? lo + half : lo;
        len -= half;
    }
    if (xp[lo] == v) return fp[lo];
    /* (numpy tries the other end when this gives NaN, and then fp[lo] when
     * the two values are equal: with finite points that changes nothing, as
     * v - xp[lo] > 0 and a NaN slope needs an infinite difference of fp) */
    const double slope = (fp[lo + 1] - fp[lo]) / (xp[lo + 1] - xp[lo]);
    return slope * (v - xp[lo]) + fp[lo];
}

int ncalc_interp(const double *x, ptrdiff_t n, const double *xp, const double *fp, ptrdiff_t m,
                 double *out, int nthreads)
{
    if (n < 0 || m < 2 || !xp || !fp || (n > 0 && (!x || !out))) return NCALC_EINVAL;
    for (ptrdiff_t k = 0; k < m; k++)
        if (!isfinite(xp[k]) || !isfinite(fp[k]) || (k + 1 < m && !(xp[k] < xp[k + 1])))
            return NCALC_EINVAL;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 1024)
    for (ptrdiff_t i = 0; i < n; i++) out[i] = interp_one(x[i], xp, fp, m);
    return NCALC_OK;
}

/* The eigenvalue ratio of score._eig_ratio: l1 <= l2 the eigenvalues of
 * [[rr, rc], [rc, cc]], clip(l2 / l1, -1, 1) where l1 < 0, else -1. */
static inline double eig_ratio(double rr, double rc, double cc)
{
    const double tr = 0.5 * (rr + cc);
    const double d = 0.5 * (rr - cc);
    const double disc = sqrt(max_nan(d * d + rc * rc, 0.0));
    const double l1 = tr - disc, l2 = tr + disc;
    const double q = l2 / (l1 < 0 ? l1 : -1.0); /* as numpy: divide everywhere, then select */
    return clip_nan(l1 < 0 ? q : -1.0, -1.0, 1.0);
}

int ncalc_feature_parts(const double *const *in, ptrdiff_t n, double *X, double *logarg, int nthreads)
{
    if (n < 0 || !in) return NCALC_EINVAL;
    if (n == 0) return NCALC_OK;
    if (!X || !logarg) return NCALC_EINVAL;
    for (int k = 0; k < NCALC_FEATURE_INPUTS; k++)
        if (!in[k]) return NCALC_EINVAL;
    const double *snr = in[0], *contrast = in[1], *peak = in[2], *bg_std = in[3], *nlf_sd = in[4],
                 *sigma = in[5], *h1rr = in[6], *h1rc = in[7], *h1cc = in[8], *h2rr = in[9],
                 *h2rc = in[10], *h2cc = in[11], *elong = in[12], *diam = in[13], *area = in[14],
                 *sigma_l = in[15], *h3rr = in[16], *h3cc = in[17];
    const double eps = 1e-6;
    const double sqrt_2pi = 2.5066282746310002; /* math.sqrt(2 * math.pi) */
    const double sqrt2 = 1.4142135623730951;    /* math.sqrt(2.0) */
    const double pi = 3.141592653589793;        /* math.pi */
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 1024)
    for (ptrdiff_t i = 0; i < n; i++) {
        const double sd = max_nan(nlf_sd[i], eps);
        const double s1 = sigma[i];
        const double s2 = 2.0 * s1;
        const double b1 = -(s1 * s1) * (h1rr[i] + h1cc[i]);
        const double b2 = -(s2 * s2) * (h2rr[i] + h2cc[i]);
        const double blob_snr = b1 * s1 * sqrt_2pi / sd;
        const double u = s1 * sqrt2;
        const double expected_area = pi * (u * u);
        /* each quotient everywhere, then the selection, as numpy does it */
        const double rq = contrast[i] / max_nan(bg_std[i], eps);
        const double ring_cnr = bg_std[i] > 0 ? rq : 0.0;
        const double b1d = b1 > 0 ? b1 : 1.0;
        const double srq = b2 / b1d;
        const double sr = b1 > 0 ? srq : 2.0;
        const double sl = sigma_l[i];
        const double bl = -(sl * sl) * (h3rr[i] + h3cc[i]);
        const double blq = bl / b1d;
        const double bl_ratio = b1 > 0 ? blq : 2.0;
        double *x = X + i * NCALC_FEATURES;
        x[5] = eig_ratio(h1rr[i], h1rc[i], h1cc[i]);
        x[6] = eig_ratio(h2rr[i], h2rc[i], h2cc[i]);
        x[9] = clip_nan(sr, -2.0, 2.0);
        x[11] = clip_nan(bl_ratio, -2.0, 2.0);
        logarg[0 * n + i] = max_nan(snr[i], 0.0) + 1.0;
        logarg[1 * n + i] = max_nan(contrast[i] / sd, 0.0) + 1.0;
        logarg[2 * n + i] = max_nan(peak[i] / sd, 0.0) + 1.0;
        logarg[3 * n + i] = max_nan(blob_snr, 0.0) + 1.0;
        logarg[4 * n + i] = max_nan(ring_cnr, 0.0) + 1.0;
        logarg[5 * n + i] = clip_nan(elong[i], 1.0, 20.0);
        logarg[6 * n + i] = diam[i] / 0.3;
        logarg[7 * n + i] = (area[i] + 1.0) / (expected_area + 1.0);
    }
    return NCALC_OK;
}
