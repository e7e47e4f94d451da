/*
 * downsample.c -- the breast mask: block means (its working resolution),
 * the histogram of its threshold, its erosion and its upscaling.
 * See ncalc.h for the contract.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* target_clones needs GCC >= 6 and ifunc support (glibc on x86-64 Linux). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) && (__GNUC__ >= 6) && !defined(NCALC_NO_CLONES)
#if __GNUC__ >= 11 && !defined(NCALC_NO_AVX512)
#define NCALC_SUM_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define NCALC_SUM_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#else
#define NCALC_SUM_CLONES
#endif

/* s[c] += row[c] for c < n (exact: the caller keeps s below 2^32). */
NCALC_SUM_CLONES
static void add_u16_row(uint32_t *restrict s, const uint16_t *restrict row, ptrdiff_t n)
{
    for (ptrdiff_t c = 0; c < n; c++) s[c] += row[c];
}

/* s[c] = a[c] + b[c] for c < n. */
NCALC_SUM_CLONES
static void set_u16_rows(uint32_t *restrict s, const uint16_t *restrict a, const uint16_t *restrict b,
                         ptrdiff_t n)
{
    for (ptrdiff_t c = 0; c < n; c++) s[c] = (uint32_t)a[c] + b[c];
}

/* Block sums of one block row of a uint16 image whose blocks hold at most
 * 65537 pixels (each sum below 2^32): the fy rows from row0 on summed
 * column by column, then each block's fx columns; o[j] = sum / count, as
 * the 64-bit path (the same exact sums). */
static void block_row_u16(const uint16_t *row0, ptrdiff_t cols, ptrdiff_t fy, ptrdiff_t fx, ptrdiff_t ww,
                          double count, uint32_t *restrict s, double *restrict o)
{
    const ptrdiff_t wc = ww * fx;
    if (fy == 1) {
        for (ptrdiff_t c = 0; c < wc; c++) s[c] = row0[c];
    } else {
        set_u16_rows(s, row0, row0 + cols, wc);
        for (ptrdiff_t r = 2; r < fy; r++) add_u16_row(s, row0 + r * cols, wc);
    }
    for (ptrdiff_t j = 0; j < ww; j++) {
        const uint32_t *restrict b = s + j * fx;
        uint32_t t = 0;
        for (ptrdiff_t c = 0; c < fx; c++) t += b[c];
        o[j] = (double)t / count;
    }
}

int ncalc_block_mean(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                     ptrdiff_t fy, ptrdiff_t fx, double *out, int nthreads)
{
    if (!img || !out || rows < 1 || cols < 1 || fy < 1 || fx < 1) return NCALC_EINVAL;
    if (dtype != NCALC_U16 && dtype != NCALC_F32) return NCALC_EINVAL;
    const ptrdiff_t hh = rows / fy, ww = cols / fx, wc = ww * fx;
    if (hh < 1 || ww < 1) return NCALC_OK;
    const double count = (double)fy * (double)fx;
    int status = NCALC_OK;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        /* column sums of one block row: exact integers for uint16 */
        uint64_t *isum = dtype == NCALC_U16 ? malloc(sizeof(uint64_t) * (size_t)wc) : NULL;
        uint32_t *s32 = dtype == NCALC_U16 ? malloc(sizeof(uint32_t) * (size_t)wc) : NULL;
        double *fsum = dtype == NCALC_F32 ? malloc(sizeof(double) * (size_t)wc) : NULL;
        if (dtype == NCALC_U16 && (!isum || !s32)) {
            free(isum); free(s32);
            isum = NULL; s32 = NULL;
        }
        if (!isum && !fsum) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (ptrdiff_t i = 0; i < hh; i++) {
            if (!isum && !fsum) continue;
            double *o = out + i * ww;
            if (isum && fy * fx <= 65537) {
                block_row_u16((const uint16_t *)img + i * fy * cols, cols, fy, fx, ww, count, s32, o);
            } else if (isum) {
                /* 32-bit column sums of at most 65537 rows (no overflow),
                 * vectorised, added into 64-bit ones */
                memset(isum, 0, sizeof(uint64_t) * (size_t)wc);
                for (ptrdiff_t r0 = i * fy; r0 < (i + 1) * fy; r0 += 65537) {
                    const ptrdiff_t r1 = r0 + 65537 < (i + 1) * fy ? r0 + 65537 : (i + 1) * fy;
                    uint32_t *restrict s = s32;
                    memset(s, 0, sizeof(uint32_t) * (size_t)wc);
                    for (ptrdiff_t r = r0; r < r1; r++)
                        add_u16_row(s, (const uint16_t *)img + r * cols, wc);
                    for (ptrdiff_t c = 0; c < wc; c++) isum[c] += s[c];
                }
                for (ptrdiff_t j = 0; j < ww; j++) {
                    uint64_t t = 0;
                    for (ptrdiff_t c = j * fx; c < (j + 1) * fx; c++) t += isum[c];
                    /* an exact sum divided by the count: numpy's mean */
                    o[j] = (double)t / count;
                }
            } else {
                memset(fsum, 0, sizeof(double) * (size_t)wc);
                for (ptrdiff_t r = i * fy; r < (i + 1) * fy; r++) {
                    const float *restrict row = (const float *)img + r * cols;
                    double *restrict s = fsum;
                    for (ptrdiff_t c = 0; c < wc; c++) s[c] += (double)row[c];
                }
                for (ptrdiff_t j = 0; j < ww; j++) {
                    double t = 0;
                    for (ptrdiff_t c = j * fx; c < (j + 1) * fx; c++) t += fsum[c];
                    o[j] = t / count;
                }
            }
        }
        free(isum);
        free(s32);
        free(fsum);
    }
    return status;
}

int ncalc_upscale_mask(const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t fy, ptrdiff_t fx,
                       ptrdiff_t rows, ptrdiff_t cols, uint8_t *out, int nthreads)
{
    if (!small || !out || hh < 1 || ww < 1 || fy < 1 || fx < 1 || rows < hh * fy || cols < ww * fx)
        return NCALC_EINVAL;
    const ptrdiff_t wc = ww * fx;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    /* block row i covers rows i fy .. (i + 1) fy - 1, the last one also the
     * rows left over; its first row is built and copied to the others */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (ptrdiff_t i = 0; i < hh; i++) {
        const uint8_t *s = small + i * ww;
        uint8_t *first = out + i * fy * cols;
        for (ptrdiff_t j = 0; j < ww; j++) {
            const uint8_t v = s[j] != 0;
            uint8_t *o = first + j * fx;
            for (ptrdiff_t c = 0; c < fx; c++) o[c] = v;
        }
        if (cols > wc) memset(first + wc, s[ww - 1] != 0, (size_t)(cols - wc));
        const ptrdiff_t r1 = i == hh - 1 ? rows : (i + 1) * fy;
        for (ptrdiff_t r = i * fy + 1; r < r1; r++) memcpy(out + r * cols, first, (size_t)cols);
    }
    return NCALC_OK;
}

/* GCC: the value's division (and subtraction) may be done for every value
 * and the result selected -- what numpy's own loops do -- which lets the
 * loop vectorise (it changes no value, only when floating-point exception
 * flags may be raised). */
#if defined(__GNUC__) && !defined(__clang__)
#define NCALC_NO_TRAPS __attribute__((optimize("no-trapping-math")))
#else
#define NCALC_NO_TRAPS
#endif

/* The values ncalc_histogram counts per chunk of this many. */
#define HIST_CHUNK 1024

/* numpy.histogram's first guess of each value's bin, ((v - lo) / denom)
 * num truncated, or -1 for a value outside [lo, hi] (NaN too); every value
 * divided, so that the loop has no branch and vectorises (a quarter less
 * time for the histogram of a full-field image's 1 mm blocks). */
NCALC_SUM_CLONES NCALC_NO_TRAPS
static void hist_first_index(const double *restrict x, ptrdiff_t m, double lo, double hi, double denom,
                             double num, int32_t *restrict idx)
{
    for (ptrdiff_t j = 0; j < m; j++) {
        const double v = x[j];
        const int in = (v >= lo) & (v <= hi);
        const double q = ((v - lo) / denom) * num; /* (in [0, num] when in) */
        const double qc = in ? q : -1.0;
        idx[j] = (int32_t)qc;
    }
}

/* Below this many values the threshold's passes stay on one thread (a
 * team costs more than it saves); at most this many parts. */
#define PAR_MIN 16384
#define PAR_MAX 16

/* The number of contiguous parts the threshold's passes over n values take
 * (one a thread). */
static int value_parts(ptrdiff_t n, int nthreads)
{
    int np = nthreads > 0 ? nthreads : ncalc_max_threads();
    if (np > PAR_MAX) np = PAR_MAX;
    return n < PAR_MIN || np < 1 ? 1 : np;
}

/* Part k of np of n values: [n k / np, n (k + 1) / np). */
static inline ptrdiff_t part_start(ptrdiff_t n, int k, int np)
{
    return (n / np) * k + (n % np) * k / np; /* floor(n k / np), without overflow */
}

/* ncalc_histogram's counts of x[0 .. n-1] added into part (4 nbins: value j
 * into quarter j % 4, so that neighbouring values in one bin do not wait
 * for each other's increments). */
static void histogram_into(const double *x, ptrdiff_t n, double lo, double hi, int nbins, const double *edges,
                           int64_t *part)
{
    const double denom = hi - lo, num = (double)nbins;
    int32_t idx[HIST_CHUNK];
    for (ptrdiff_t k0 = 0; k0 < n; k0 += HIST_CHUNK) {
        const ptrdiff_t m = n - k0 < HIST_CHUNK ? n - k0 : HIST_CHUNK;
        hist_first_index(x + k0, m, lo, hi, denom, num, idx);
        for (ptrdiff_t j = 0; j < m; j++) {
            ptrdiff_t i = idx[j];
            if (i < 0) continue;
            const double v = x[k0 + j];
            if (i == nbins) i--;
            if (v < edges[i]) i--;
            if (v >= edges[i + 1] && i != nbins - 1) i++;
            part[(j & 3) * nbins + i]++;
        }
    }
}

/* ncalc_histogram on np contiguous parts of x, one a thread: the same
 * counts (integers, added up at the end). */
static int histogram_parts(const double *x, ptrdiff_t n, double lo, double hi, int nbins, const double *edges,
                           int64_t *count, int np)
{
    if (n < 0 || (n > 0 && !x) || nbins < 1 || !edges || !count || !(lo < hi) || !isfinite(lo) ||
        !isfinite(hi))
        return NCALC_EINVAL;
    const size_t per = 4 * (size_t)nbins;
    int64_t *part = calloc(per * (size_t)np, sizeof(int64_t));
    if (!part) return NCALC_ENOMEM;
#pragma omp parallel for num_threads(np) schedule(static) if (np > 1)
    for (int k = 0; k < np; k++) {
        const ptrdiff_t a = part_start(n, k, np), b = part_start(n, k + 1, np);
        histogram_into(x + a, b - a, lo, hi, nbins, edges, part + per * (size_t)k);
    }
    for (int b = 0; b < nbins; b++) {
        int64_t c = 0;
        for (size_t q = 0; q < 4 * (size_t)np; q++) c += part[q * (size_t)nbins + (size_t)b];
        count[b] = c;
    }
    free(part);
    return NCALC_OK;
}

int ncalc_histogram(const double *x, ptrdiff_t n, double lo, double hi, int nbins, const double *edges,
                    int64_t *count)
{
    return histogram_parts(x, n, lo, hi, nbins, edges, count, 1);
}

/* The smallest and largest of x[0..n-1] (n >= 1), as a scan from x[0]
 * that takes a value only when it is strictly smaller (larger), and
 * whether any is NaN. Eight running extremes, value k in lane k % 8, so
 * that eight comparisons are in flight at once (the plain scan waits for
 * each minimum before the next; GCC does not vectorise a float min or max
 * without -ffinite-math-only); they are the same values, except that a
 * zero extreme may have another sign: then the plain scan decides. */
NCALC_SUM_CLONES
static int min_max_nan(const double *restrict x, ptrdiff_t n, double *lo_out, double *hi_out)
{
    double lo8[8], hi8[8];
    int nan8[8];
    for (int j = 0; j < 8; j++) {
        lo8[j] = hi8[j] = x[0];
        nan8[j] = 0;
    }
    ptrdiff_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) {
            const double v = x[k + j];
            nan8[j] |= v != v;
            lo8[j] = v < lo8[j] ? v : lo8[j];
            hi8[j] = v > hi8[j] ? v : hi8[j];
        }
    double lo = lo8[0], hi = hi8[0];
    int nan = nan8[0];
    for (int j = 1; j < 8; j++) {
        nan |= nan8[j];
        lo = lo8[j] < lo ? lo8[j] : lo;
        hi = hi8[j] > hi ? hi8[j] : hi;
    }
    for (; k < n; k++) {
        const double v = x[k];
        nan |= v != v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (!nan && (lo == 0.0 || hi == 0.0)) {
        lo = hi = x[0];
        for (k = 0; k < n; k++) {
            lo = x[k] < lo ? x[k] : lo;
            hi = x[k] > hi ? x[k] : hi;
        }
    }
    *lo_out = lo;
    *hi_out = hi;
    return nan;
}

/* min_max_nan of np contiguous parts of x, one a thread, taken in order
 * with the same strict comparisons: the plain scan's extremes (a part's
 * zero extreme is its plain scan's, so the first zero of the first part
 * with one is the whole scan's). */
static int min_max_nan_parts(const double *x, ptrdiff_t n, double *lo_out, double *hi_out, int np)
{
    if (np <= 1) return min_max_nan(x, n, lo_out, hi_out);
    double lo[PAR_MAX], hi[PAR_MAX];
    int nan[PAR_MAX];
#pragma omp parallel for num_threads(np) schedule(static)
    for (int k = 0; k < np; k++) {
        const ptrdiff_t a = part_start(n, k, np), b = part_start(n, k + 1, np);
        nan[k] = min_max_nan(x + a, b - a, &lo[k], &hi[k]);
    }
    double l = lo[0], h = hi[0];
    int any = nan[0];
    for (int k = 1; k < np; k++) {
        any |= nan[k];
        l = lo[k] < l ? lo[k] : l;
        h = hi[k] > h ? hi[k] : h;
    }
    *lo_out = l;
    *hi_out = h;
    return any;
}

/* ncalc_otsu with its passes over x on np parts (value_parts). */
static int otsu_parts(const double *x, ptrdiff_t n, int nbins, double *thr, int np)
{
    if (n < 1 || !x || nbins < 1 || !thr) return NCALC_EINVAL;
    double lo, hi;
    if (min_max_nan_parts(x, n, &lo, &hi, np)) return NCALC_EINVAL;
    if (hi <= lo) {
        /* every value equal: that value, a zero as +0.0 (which zero
         * numpy's min returns of a sample of both depends on its loops) */
        *thr = lo + 0.0;
        return NCALC_OK;
    }
    if (!isfinite(lo) || !isfinite(hi)) return NCALC_EINVAL;
    double *e = malloc(sizeof(double) * (size_t)(4 * nbins + 1));
    int64_t *count = malloc(sizeof(int64_t) * (size_t)nbins);
    if (!e || !count) {
        free(e);
        free(count);
        return NCALC_ENOMEM;
    }
    double *centre = e + nbins + 1, *mu0 = centre + nbins, *mu1 = mu0 + nbins;
    /* numpy.linspace(lo, hi, nbins + 1): i step + lo, the last one hi */
    const double delta = hi - lo, step = delta / (double)nbins;
    for (int i = 0; i <= nbins; i++)
        e[i] = (step == 0.0 ? (double)i / (double)nbins * delta : (double)i * step) + lo;
    e[nbins] = hi;
    int st = histogram_parts(x, n, lo, hi, nbins, e, count, np);
    if (st == NCALC_OK) {
        /* w0, m0: cumulative count and count x centre (in order, as
         * numpy.cumsum); mu0 = m0 / w0, mu1 = (m0[-1] - m0) / (w0[-1] - w0)
         * (0 where the count is 0); the first largest w0 w1 (mu0 - mu1)^2 */
        int64_t w0 = 0;
        double m0 = 0.0;
        for (int i = 0; i < nbins; i++) {
            centre[i] = 0.5 * (e[i] + e[i + 1]);
            const double prod = (double)count[i] * centre[i];
            w0 += count[i];
            m0 = i == 0 ? prod : m0 + prod; /* numpy.cumsum starts from the first term (-0.0 stays) */
            mu0[i] = m0;       /* m0 so far; divided below */
            mu1[i] = (double)w0; /* w0 so far */
        }
        const int64_t wt = w0;
        const double mt = m0;
        int best = 0;
        double top = 0.0;
        for (int i = 0; i < nbins; i++) {
            const int64_t a = (int64_t)mu1[i], b = wt - a;
            const double u0 = a > 0 ? mu0[i] / (double)a : 0.0, u1 = b > 0 ? (mt - mu0[i]) / (double)b : 0.0;
            const double d = u0 - u1;
            const double between = (double)(a * b) * (d * d);
            if (i == 0 || between > top || (isnan(between) && !isnan(top))) {
                top = between;
                best = i;
            }
        }
        *thr = centre[best];
    }
    free(e);
    free(count);
    return st;
}

int ncalc_otsu(const double *x, ptrdiff_t n, int nbins, double *thr)
{
    return otsu_parts(x, n, nbins, thr, 1);
}

/* One erosion by the 3 x 3 cross, the outside as background: dst = 1 where
 * src and its 4 neighbours are all non-zero, else 0 (byte loops that
 * vectorise). */
static void erode_cross(const uint8_t *src, ptrdiff_t rows, ptrdiff_t cols, uint8_t *dst)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        uint8_t *restrict o = dst + r * cols;
        if (r == 0 || r == rows - 1 || cols < 3) {
            memset(o, 0, (size_t)cols);
            continue;
        }
        const uint8_t *s = src + r * cols, *u = s - cols, *d = s + cols;
        o[0] = o[cols - 1] = 0;
        for (ptrdiff_t c = 1; c < cols - 1; c++)
            o[c] = (uint8_t)((s[c] != 0) & (u[c] != 0) & (d[c] != 0) & (s[c - 1] != 0) & (s[c + 1] != 0));
    }
}

/* Up to this radius ncalc_erode_l1 erodes by the cross n times (each pass
 * a few byte operations per pixel); above, the distance transform's two
 * passes (serial, but independent of n). */
#define ERODE_CROSS_MAX 8

int ncalc_erode_l1(const uint8_t *a, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t n, uint8_t *out)
{
    if (!a || !out || rows < 1 || cols < 1 || n < 0) return NCALC_EINVAL;
    if (n == 0) {
        for (ptrdiff_t i = 0; i < rows * cols; i++) out[i] = a[i] != 0;
        return NCALC_OK;
    }
    if (n <= ERODE_CROSS_MAX) {
        uint8_t *t = n > 1 ? malloc((size_t)(rows * cols)) : NULL;
        if (n > 1 && !t) return NCALC_ENOMEM;
        /* pass k into out or t, alternately, so that the last is into out */
        const uint8_t *src = a;
        for (ptrdiff_t k = 0; k < n; k++) {
            uint8_t *dst = (n - 1 - k) % 2 == 0 ? out : t;
            erode_cross(src, rows, cols, dst);
            src = dst;
        }
        free(t);
        return NCALC_OK;
    }
    int32_t *d = malloc(sizeof(int32_t) * (size_t)(rows * cols));
    if (!d) return NCALC_ENOMEM;
    /* city-block distance to the nearest background pixel, the outside
     * included (at distance 0 beyond the edge): two raster passes, each
     * taking the smaller of a pixel's two neighbours behind it plus one */
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t c = 0; c < cols; c++) {
            const ptrdiff_t i = r * cols + c;
            if (!a[i]) {
                d[i] = 0;
                continue;
            }
            const int32_t up = r > 0 ? d[i - cols] : 0, left = c > 0 ? d[i - 1] : 0;
            d[i] = (up < left ? up : left) + 1;
        }
    for (ptrdiff_t r = rows - 1; r >= 0; r--)
        for (ptrdiff_t c = cols - 1; c >= 0; c--) {
            const ptrdiff_t i = r * cols + c;
            const int32_t down = r < rows - 1 ? d[i + cols] : 0, right = c < cols - 1 ? d[i + 1] : 0;
            const int32_t m = (down < right ? down : right) + 1;
            if (m < d[i]) d[i] = m;
            out[i] = d[i] > n;
        }
    free(d);
    return NCALC_OK;
}

/* Runs of a row: [c0, c1) of consecutive set pixels. */
typedef struct {
    int32_t c0, c1;
} run_t;

/* The root of i (union-find with path halving). */
static int32_t uf_find(int32_t *par, int32_t i)
{
    while (par[i] != i) {
        par[i] = par[par[i]];
        i = par[i];
    }
    return i;
}

/* Joins the sets of a and b under the smaller root: a set's root is then
 * its first run in raster order. */
static void uf_union(int32_t *par, int32_t a, int32_t b)
{
    a = uf_find(par, a);
    b = uf_find(par, b);
    if (a < b) par[b] = a;
    else if (b < a) par[a] = b;
}

/* Joins each run of row r (runs start[r] .. start[r + 1] - 1) with the runs
 * of row r - 1 it touches on a side (4-connected: their columns overlap). */
static void join_rows(const run_t *run, const int32_t *start, ptrdiff_t r, int32_t *par)
{
    int32_t p = start[r - 1], q = start[r];
    const int32_t pe = start[r], qe = start[r + 1];
    while (p < pe && q < qe) {
        if (run[p].c1 <= run[q].c0) {
            p++;
        } else if (run[q].c1 <= run[p].c0) {
            q++;
        } else {
            uf_union(par, p, q);
            if (run[p].c1 < run[q].c1) p++;
            else q++;
        }
    }
}

/* The first c' in [c, n) with (m[c'] != 0) == set, or n: past the other
 * bytes eight at a time (a word with a zero byte: the bit trick's lowest
 * flagged byte is exact, and the byte loop finds it in any byte order). */
static ptrdiff_t next_with(const uint8_t *m, ptrdiff_t c, ptrdiff_t n, int set)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    for (; c + 8 <= n; c += 8) {
        uint64_t w;
        memcpy(&w, m + c, 8);
        if (set ? w != 0 : ((w - ones) & ~w & highs) != 0) break;
    }
    while (c < n && (m[c] != 0) != set) c++;
    return c;
}

/* The runs of the pixels with a != 0 when set, == 0 when not, rows x
 * cols; start: rows + 1 run indices. Returns their number. */
static int32_t row_runs(const uint8_t *a, ptrdiff_t rows, ptrdiff_t cols, int set, run_t *run, int32_t *start)
{
    int32_t n = 0;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const uint8_t *ar = a + r * cols;
        start[r] = n;
        ptrdiff_t c = 0;
        while (c < cols) {
            c = next_with(ar, c, cols, set);
            if (c == cols) break;
            const ptrdiff_t c0 = c;
            c = next_with(ar, c, cols, !set);
            run[n].c0 = (int32_t)c0;
            run[n].c1 = (int32_t)c;
            n++;
        }
    }
    start[rows] = n;
    return n;
}

ptrdiff_t ncalc_largest_component(const uint8_t *a, ptrdiff_t rows, ptrdiff_t cols, uint8_t *out)
{
    if (!a || !out || rows < 1 || cols < 1 || rows > INT32_MAX / cols) return NCALC_EINVAL;
    /* The components as runs of set pixels joined with union-find: each
     * component's root is its first run in raster order, so the raster
     * order of the roots is scipy.ndimage.label's numbering. */
    const ptrdiff_t max_runs = rows * ((cols + 1) / 2);
    run_t *run = malloc(sizeof(run_t) * (size_t)max_runs);
    int32_t *start = malloc(sizeof(int32_t) * (size_t)(rows + 1));
    int32_t *par = malloc(sizeof(int32_t) * (size_t)max_runs);
    int64_t *size = malloc(sizeof(int64_t) * (size_t)max_runs);
    uint8_t *edge = malloc((size_t)max_runs), *keep = malloc((size_t)(rows * cols));
    if (!run || !start || !par || !size || !edge || !keep) {
        free(run); free(start); free(par); free(size); free(edge); free(keep);
        return NCALC_ENOMEM;
    }
    const int32_t n = row_runs(a, rows, cols, 1, run, start);
    for (int32_t k = 0; k < n; k++) par[k] = k;
    for (ptrdiff_t r = 1; r < rows; r++) join_rows(run, start, r, par);
    ptrdiff_t ncomp = 0;
    int32_t best = -1;
    for (int32_t k = 0; k < n; k++) size[k] = 0;
    for (int32_t k = 0; k < n; k++) size[uf_find(par, k)] += run[k].c1 - run[k].c0;
    for (int32_t k = 0; k < n; k++)
        if (par[k] == k) { /* a root: one per component */
            ncomp++;
            if (best < 0 || size[k] > size[best]) best = k; /* the first of the largest */
        }
    if (ncomp > 0) {
        /* keep: the chosen component; then the runs of everything else,
         * joined the same way: those of a set reaching the image border
         * stay background, the others (holes) are filled */
        memset(keep, 0, (size_t)(rows * cols));
        for (ptrdiff_t r = 0; r < rows; r++)
            for (int32_t k = start[r]; k < start[r + 1]; k++)
                if (uf_find(par, k) == best) memset(keep + r * cols + run[k].c0, 1, (size_t)(run[k].c1 - run[k].c0));
        const int32_t m = row_runs(keep, rows, cols, 0, run, start);
        for (int32_t k = 0; k < m; k++) par[k] = k;
        for (ptrdiff_t r = 1; r < rows; r++) join_rows(run, start, r, par);
        memset(edge, 0, (size_t)m);
        for (ptrdiff_t r = 0; r < rows; r++)
            for (int32_t k = start[r]; k < start[r + 1]; k++)
                if (r == 0 || r == rows - 1 || run[k].c0 == 0 || run[k].c1 == cols) edge[uf_find(par, k)] = 1;
        memset(out, 1, (size_t)(rows * cols));
        for (ptrdiff_t r = 0; r < rows; r++)
            for (int32_t k = start[r]; k < start[r + 1]; k++)
                if (edge[uf_find(par, k)]) memset(out + r * cols + run[k].c0, 0, (size_t)(run[k].c1 - run[k].c0));
    }
    free(run); free(start); free(par); free(size); free(edge); free(keep);
    return ncomp;
}

int ncalc_plane_mean(const void *img, int dtype, ptrdiff_t planes, ptrdiff_t plane_ld, ptrdiff_t n,
                     float *out, int nthreads)
{
    if (!img || !out || planes < 1 || n < 0 || plane_ld < n) return NCALC_EINVAL;
    if (dtype != NCALC_U16 && dtype != NCALC_F32) return NCALC_EINVAL;
    const float div = (float)planes;
    const ptrdiff_t chunk = 4096;
    const ptrdiff_t nchunks = (n + chunk - 1) / chunk;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (nchunks > 1)
    for (ptrdiff_t b = 0; b < nchunks; b++) {
        const ptrdiff_t i0 = b * chunk, m = n - i0 < chunk ? n - i0 : chunk;
        float *restrict o = out + i0;
        /* the planes in order, one float32 addition each (numpy's order
         * for a reduction over the outer axis), then one division */
        if (dtype == NCALC_U16) {
            const uint16_t *x = (const uint16_t *)img + i0;
            for (ptrdiff_t j = 0; j < m; j++) o[j] = (float)x[j];
            for (ptrdiff_t k = 1; k < planes; k++) {
                const uint16_t *restrict xk = x + k * plane_ld;
                for (ptrdiff_t j = 0; j < m; j++) o[j] += (float)xk[j];
            }
        } else {
            const float *x = (const float *)img + i0;
            for (ptrdiff_t j = 0; j < m; j++) o[j] = x[j];
            for (ptrdiff_t k = 1; k < planes; k++) {
                const float *restrict xk = x + k * plane_ld;
                for (ptrdiff_t j = 0; j < m; j++) o[j] += xk[j];
            }
        }
        for (ptrdiff_t j = 0; j < m; j++) o[j] /= div;
    }
    return NCALC_OK;
}

/* First nonzero byte of m[0 .. n-1], or n (eight bytes at a time). */
static ptrdiff_t first_set(const uint8_t *m, ptrdiff_t n)
{
    ptrdiff_t c = 0;
    for (; c + 8 <= n; c += 8) {
        uint64_t w;
        memcpy(&w, m + c, 8);
        if (w) break;
    }
    while (c < n && !m[c]) c++;
    return c;
}

/* One past the last nonzero byte of m[0 .. n-1], or 0. */
static ptrdiff_t last_set(const uint8_t *m, ptrdiff_t n)
{
    ptrdiff_t c = n;
    for (; c >= 8; c -= 8) {
        uint64_t w;
        memcpy(&w, m + c - 8, 8);
        if (w) break;
    }
    while (c > 0 && !m[c - 1]) c--;
    return c;
}

int ncalc_mask_row_ranges(const uint8_t *mask, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t mask_ld,
                          int pad, int32_t *lo, int32_t *hi, int nthreads)
{
    if (!mask || !lo || !hi || rows < 1 || cols < 1 || mask_ld < cols || pad < 0 || cols > INT32_MAX)
        return NCALC_EINVAL;
    int32_t *f = malloc(sizeof(int32_t) * 2 * (size_t)rows);
    if (!f) return NCALC_ENOMEM;
    int32_t *g = f + rows;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    /* each row's first and one-past-last set column ((cols, 0) when none) */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (ptrdiff_t r = 0; r < rows; r++) {
        const uint8_t *m = mask + r * mask_ld;
        const ptrdiff_t a = first_set(m, cols);
        f[r] = (int32_t)a;
        g[r] = (int32_t)(a < cols ? last_set(m, cols) : 0);
    }
    const ptrdiff_t p = pad < rows ? pad : rows;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (ptrdiff_t r = 0; r < rows; r++) {
        ptrdiff_t a = cols, b = 0;
        const ptrdiff_t r0 = r - p < 0 ? 0 : r - p, r1 = r + p >= rows ? rows - 1 : r + p;
        for (ptrdiff_t q = r0; q <= r1; q++) {
            if (f[q] < a) a = f[q];
            if (g[q] > b) b = g[q];
        }
        if (a >= b) {
            lo[r] = hi[r] = 0;
        } else {
            a -= pad;
            b += pad;
            lo[r] = (int32_t)(a < 0 ? 0 : a);
            hi[r] = (int32_t)(b > cols ? cols : b);
        }
    }
    free(f);
    return NCALC_OK;
}

int ncalc_extent_ranges(const int32_t *lo, const int32_t *hi, ptrdiff_t n, ptrdiff_t r0, ptrdiff_t r1,
                        ptrdiff_t c0, ptrdiff_t c1, int pad, int32_t *out_lo, int32_t *out_hi)
{
    if (!lo || !hi || !out_lo || !out_hi || n < 0 || r0 > r1 || c0 > c1 || c1 - c0 > INT32_MAX || pad < 0)
        return NCALC_EINVAL;
    const ptrdiff_t width = c1 - c0;
    for (ptrdiff_t r = r0; r < r1; r++) {
        /* the hull of the extents of rows r - pad .. r + pad that have one */
        const ptrdiff_t qa = r - pad < 0 ? 0 : r - pad, qb = r + pad >= n ? n - 1 : r + pad;
        int64_t a = INT64_MAX, b = INT64_MIN;
        for (ptrdiff_t q = qa; q <= qb; q++)
            if (lo[q] < hi[q]) {
                if (lo[q] < a) a = lo[q];
                if (hi[q] > b) b = hi[q];
            }
        int64_t ga = 0, gb = 0;
        if (a <= b) { /* some row has one: grown by pad, in the box's columns */
            ga = a - pad - c0;
            gb = b + pad - c0;
            ga = ga < 0 ? 0 : ga > width ? width : ga;
            gb = gb < 0 ? 0 : gb > width ? width : gb;
            if (ga >= gb) ga = gb = 0;
        }
        out_lo[r - r0] = (int32_t)ga;
        out_hi[r - r0] = (int32_t)gb;
    }
    return NCALC_OK;
}

int ncalc_block_extents(const uint8_t *tissue, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t ld, ptrdiff_t fy,
                        ptrdiff_t fx, ptrdiff_t h, ptrdiff_t w, int32_t *lo, int32_t *hi, int64_t *bbox)
{
    if (!tissue || !lo || !hi || !bbox || hh < 1 || ww < 1 || ld < ww || fy < 1 || fx < 1 || h < hh * fy ||
        w < ww * fx || w > INT32_MAX)
        return NCALC_EINVAL;
    int64_t br0 = -1, br1 = -1, bc0 = INT64_MAX, bc1 = -1; /* the set blocks' box, in blocks */
    ptrdiff_t r = 0;
    for (ptrdiff_t i = 0; i < hh; i++) {
        const uint8_t *row = tissue + i * ld;
        const ptrdiff_t first = first_set(row, ww);
        int32_t a = 0, b = 0;
        if (first < ww) {
            const ptrdiff_t last = last_set(row, ww) - 1;
            a = (int32_t)(first * fx);
            b = (int32_t)(last == ww - 1 ? w : (last + 1) * fx);
            if (br0 < 0) br0 = i;
            br1 = i;
            if (first < bc0) bc0 = first;
            if (last > bc1) bc1 = last;
        }
        /* this block row's image rows; the last one also those left over */
        const ptrdiff_t end = i == hh - 1 ? h : (i + 1) * fy;
        for (; r < end; r++) {
            lo[r] = a;
            hi[r] = b;
        }
    }
    if (br0 < 0) return 0;
    bbox[0] = br0 * fy;
    bbox[1] = br1 == hh - 1 ? h : (br1 + 1) * fy;
    bbox[2] = bc0 * fx;
    bbox[3] = bc1 == ww - 1 ? w : (bc1 + 1) * fx;
    return 1;
}

ptrdiff_t ncalc_block_sample(const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t fy, ptrdiff_t fx,
                             ptrdiff_t k, ptrdiff_t nr, ptrdiff_t nc, uint8_t *out)
{
    if (!small || !out || hh < 1 || ww < 1 || fy < 1 || fx < 1 || k < 1 || nr < 0 || nc < 0)
        return NCALC_EINVAL;
    if (nr == 0 || nc == 0) return 0;
    /* the block column of each sample column, once; a row of samples in
     * the same block row as the one before is a copy of it */
    ptrdiff_t *bcol = malloc(sizeof(ptrdiff_t) * (size_t)nc);
    if (!bcol) return NCALC_ENOMEM;
    for (ptrdiff_t j = 0; j < nc; j++) {
        const ptrdiff_t bj = (1 + j * k) / fx;
        bcol[j] = bj < ww ? bj : ww - 1;
    }
    ptrdiff_t set = 0, prev = -1, prev_set = 0;
    for (ptrdiff_t i = 0; i < nr; i++) {
        ptrdiff_t bi = (1 + i * k) / fy;
        bi = bi < hh ? bi : hh - 1;
        uint8_t *restrict o = out + i * nc;
        if (bi == prev) {
            memcpy(o, o - nc, (size_t)nc);
        } else {
            const uint8_t *restrict row = small + bi * ww;
            ptrdiff_t s = 0;
            for (ptrdiff_t j = 0; j < nc; j++) {
                const uint8_t v = row[bcol[j]] != 0;
                o[j] = v;
                s += v;
            }
            prev = bi;
            prev_set = s;
        }
        set += prev_set;
    }
    free(bcol);
    return set;
}

int ncalc_breast_blocks(const double *small, ptrdiff_t hh, ptrdiff_t ww, int nbins, double air_min,
                        double air_max, ptrdiff_t margin, ptrdiff_t fy, ptrdiff_t fx, ptrdiff_t h, ptrdiff_t w,
                        uint8_t *tissue, int32_t *lo, int32_t *hi, int64_t *bbox, int nthreads)
{
    if (!small || !tissue || !lo || !hi || !bbox || hh < 1 || ww < 1 || hh > PTRDIFF_MAX / ww ||
        nbins < 1 || margin < 0 || fy < 1 || fx < 1 || h < hh * fy || w < ww * fx || w > INT32_MAX)
        return NCALC_EINVAL;
    const ptrdiff_t n = hh * ww;
    const int np = value_parts(n, nthreads);
    double thr;
    int st = otsu_parts(small, n, nbins, &thr, np); /* NCALC_EINVAL for NaN: the caller's code decides */
    if (st != NCALC_OK) return st;
    /* tissue = small > thr; the air fraction 1 - mean(tissue), as NumPy:
     * the count (exact in float64) over the size */
    uint8_t *t = malloc((size_t)n);
    if (!t) return NCALC_ENOMEM;
    ptrdiff_t set = 0;
#pragma omp parallel for num_threads(np) schedule(static) reduction(+ : set) if (np > 1)
    for (ptrdiff_t i = 0; i < n; i++) {
        t[i] = small[i] > thr;
        set += t[i];
    }
    const double frac_air = 1.0 - (double)set / (double)n;
    if (frac_air < air_min || frac_air > air_max) {
        free(t);
        return 0;
    }
    const ptrdiff_t ncomp = ncalc_largest_component(t, hh, ww, tissue);
    if (ncomp <= 0) {
        free(t);
        return ncomp < 0 ? (int)ncomp : 0;
    }
    if (margin > 0) {
        /* the image border is not skin: the grid padded by margin blocks
         * copied from its edge (numpy.pad mode "edge"), eroded, cropped */
        const ptrdiff_t ph = hh + 2 * margin, pw = ww + 2 * margin;
        uint8_t *pad = ph <= PTRDIFF_MAX / pw ? malloc((size_t)(ph * pw)) : NULL;
        uint8_t *er = pad ? malloc((size_t)(ph * pw)) : NULL;
        if (!er) {
            free(pad);
            free(t);
            return NCALC_ENOMEM;
        }
        for (ptrdiff_t r = 0; r < ph; r++) {
            const ptrdiff_t sr = r < margin ? 0 : r >= margin + hh ? hh - 1 : r - margin;
            const uint8_t *src = tissue + sr * ww;
            uint8_t *dst = pad + r * pw;
            memset(dst, src[0], (size_t)margin);
            memcpy(dst + margin, src, (size_t)ww);
            memset(dst + margin + ww, src[ww - 1], (size_t)margin);
        }
        st = ncalc_erode_l1(pad, ph, pw, margin, er);
        if (st == NCALC_OK)
            for (ptrdiff_t r = 0; r < hh; r++) memcpy(tissue + r * ww, er + (r + margin) * pw + margin, (size_t)ww);
        free(er);
        free(pad);
        if (st != NCALC_OK) {
            free(t);
            return st;
        }
    }
    free(t);
    st = ncalc_block_extents(tissue, hh, ww, ww, fy, fx, h, w, lo, hi, bbox);
    return st < 0 ? st : st == 1 ? 1 : 2;
}
