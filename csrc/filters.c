/*
 * filters.c -- separable Gaussian smoothing, the fused multi-scale
 * difference-of-Gaussians response, and its octave-pyramid variant.
 * See ncalc.h for the contracts.
 *
 * How it is fast without changing the math of scipy.ndimage.gaussian_filter:
 *
 *  - One output row at a time, all scales at once. The vertical pass reads
 *    the 2R+1 input rows around the output row once per tap offset k,
 *    converts uint16 to float once, forms the symmetric pair sum
 *    x[r-k] + x[r+k] once, and adds w_i[k] times it to every scale i whose
 *    kernel reaches k. It runs over column blocks of NCALC_BLK floats so
 *    that the accumulators of all scales stay in L1.
 *  - The horizontal pass runs on each scale's vertically smoothed row,
 *    reflect-padded in place, over the same column blocks, and the DoG
 *    maximum over scales is taken while the block is in L1. Nothing of image
 *    size is allocated besides the caller's outputs.
 *  - Inner loops are plain float32 loops over contiguous memory that the
 *    compiler vectorises at -O3 (SSE2 baseline). On x86-64 Linux with GCC
 *    the row functions are also cloned for AVX2 and for AVX-512
 *    (x86-64-v4; target_clones, chosen at load time by the CPU); no FMA
 *    contraction is enabled (-std=c99 implies -ffp-contract=off), so every
 *    clone computes bit-identical results (each pixel's arithmetic is the
 *    same scalar sequence; only how many pixels one instruction takes
 *    differs).
 *  - OpenMP shares out rows; each pixel's arithmetic does not depend on the
 *    partition, so results are identical whatever the thread count.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* target_clones needs GCC >= 6 and ifunc support (glibc on x86-64 Linux);
 * "arch=x86-64-v4" (AVX-512) needs GCC >= 11. NCALC_NO_AVX512 leaves that
 * clone out, so that a CPU with AVX-512 runs the AVX2 one (the tests build
 * the kernel so to compare the two). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) && (__GNUC__ >= 6) && !defined(NCALC_NO_CLONES)
#if __GNUC__ >= 11 && !defined(NCALC_NO_AVX512)
#define NCALC_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define NCALC_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#else
#define NCALC_CLONES
#endif

/* Helpers of the row functions are inlined into each clone, so that they
 * are compiled for its instruction set too. */
#if defined(__GNUC__)
#define NCALC_INLINE static inline __attribute__((always_inline))
#else
#define NCALC_INLINE static inline
#endif

/* Column block: accumulators of all scales (<= ~16 x 4 x BLK bytes) fit L1. */
#define NCALC_BLK 256

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

ptrdiff_t ncalc_run_chunk(ptrdiff_t n, int nthreads)
{
    const ptrdiff_t runs = 8 * (ptrdiff_t)(nthreads > 1 ? nthreads : 1);
    const ptrdiff_t c = (n + runs - 1) / runs;
    return c > 16 ? c : 16;
}

void ncalc_thread_share(ptrdiff_t n, int *team, int *me, ptrdiff_t *lo, ptrdiff_t *hi)
{
#ifdef _OPENMP
    const int T = omp_get_num_threads(), t = omp_get_thread_num();
#else
    const int T = 1, t = 0;
#endif
    *team = T;
    *me = t;
    *lo = n * t / T;
    *hi = n * (t + 1) / T;
}

int ncalc_team_any(int mine, int *flag)
{
    if (mine) {
#pragma omp atomic write
        *flag = 1;
    }
#pragma omp barrier
    int any;
#pragma omp atomic read
    any = *flag;
    return any;
}

int ncalc_gaussian_radius(double sigma, double truncate)
{
    return (int)(truncate * sigma + 0.5);
}

/* SciPy "reflect": half-sample symmetric extension with period 2n. */
NCALC_INLINE ptrdiff_t reflect_index(ptrdiff_t i, ptrdiff_t n)
{
    if (n == 1) return 0;
    if (i >= 0 && i < n) return i;
    ptrdiff_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

/* Normalised half kernel w[0..radius] (w[k] for offsets +-k), computed in
 * double as SciPy does, stored as float, followed by zeros up to w[len]. */
static float *gaussian_half_kernel(double sigma, int radius, int len)
{
    float *w = calloc((size_t)(len + 1), sizeof(float));
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

/* A bank of Gaussians with ascending radii. */
typedef struct {
    int n, rmax;  /* rmax: the largest radius */
    int *radius;
    float **w;    /* w[i][0 .. radius[i]], then zeros up to a multiple of 4 */
} bank_t;

/* Radius rounded up to a multiple of 4 (taps are summed four at a time). */
static int pad4(int r) { return (r + 3) & ~3; }

static void bank_free(bank_t *b)
{
    if (b->w)
        for (int i = 0; i < b->n; i++) free(b->w[i]);
    free(b->w);
    free(b->radius);
    b->w = NULL;
    b->radius = NULL;
}

static int bank_init(bank_t *b, const double *sigmas, int n, double truncate)
{
    b->n = n;
    b->rmax = 0;
    b->radius = malloc(sizeof(int) * (size_t)n);
    b->w = calloc((size_t)n, sizeof(float *));
    if (!b->radius || !b->w) { bank_free(b); return NCALC_ENOMEM; }
    for (int i = 0; i < n; i++) {
        int r = ncalc_gaussian_radius(sigmas[i], truncate);
        b->radius[i] = r;
        if (r > b->rmax) b->rmax = r;
        b->w[i] = gaussian_half_kernel(sigmas[i], r, pad4(r));
        if (!b->w[i]) { bank_free(b); return NCALC_ENOMEM; }
    }
    return NCALC_OK;
}

/* Per-thread row buffers: n padded rows of cols + 2 rmax floats, plus
 * block scratch. */
typedef struct {
    float *mem;
    float **v;   /* v[i]: start of scale i's data (rmax floats of left pad) */
    float *p;    /* NCALC_BLK scratch: converted row / pair sum */
    float *h0, *h1;
    float *m0, *m1; /* running maximum, ping-pong */
    int32_t *bi;    /* 2 x NCALC_BLK best scale indices, ping-pong */
} work_t;

static void work_free(work_t *t)
{
    free(t->mem);
    free(t->v);
    free(t->bi);
    t->mem = NULL; t->v = NULL; t->bi = NULL;
}

static int work_init(work_t *t, const bank_t *b, ptrdiff_t cols)
{
    size_t stride = (size_t)(cols + 2 * (ptrdiff_t)b->rmax + 16);
    t->mem = malloc(sizeof(float) * (stride * (size_t)b->n + 8 * NCALC_BLK));
    t->v = malloc(sizeof(float *) * (size_t)b->n);
    t->bi = malloc(sizeof(int32_t) * 2 * NCALC_BLK);
    if (!t->mem || !t->v || !t->bi) { work_free(t); return 0; }
    for (int i = 0; i < b->n; i++) t->v[i] = t->mem + stride * (size_t)i + b->rmax;
    t->p = t->mem + stride * (size_t)b->n;
    t->h0 = t->p + 4 * NCALC_BLK;
    t->h1 = t->h0 + NCALC_BLK;
    t->m0 = t->h1 + NCALC_BLK;
    t->m1 = t->m0 + NCALC_BLK;
    return 1;
}

NCALC_INLINE void load_block(const void *img, int dtype, ptrdiff_t off, ptrdiff_t nb,
                              float *restrict p)
{
    if (dtype == NCALC_U16) {
        const uint16_t *restrict s = (const uint16_t *)img + off;
        for (ptrdiff_t c = 0; c < nb; c++) p[c] = (float)s[c];
    } else {
        const float *restrict s = (const float *)img + off;
        for (ptrdiff_t c = 0; c < nb; c++) p[c] = s[c];
    }
}

NCALC_INLINE void pair_block(const void *img, int dtype, ptrdiff_t offa, ptrdiff_t offb,
                              ptrdiff_t nb, float *restrict p)
{
    if (dtype == NCALC_U16) {
        const uint16_t *restrict a = (const uint16_t *)img + offa;
        const uint16_t *restrict b = (const uint16_t *)img + offb;
        for (ptrdiff_t c = 0; c < nb; c++) p[c] = (float)a[c] + (float)b[c];
    } else {
        const float *restrict a = (const float *)img + offa;
        const float *restrict b = (const float *)img + offb;
        for (ptrdiff_t c = 0; c < nb; c++) p[c] = a[c] + b[c];
    }
}

/* Vertical pass of input row r for every scale of the bank into t->v[i].
 * Taps are taken four at a time (a scale's last group may be shorter): the pair sums x[r-k] + x[r+k] are
 * formed once (uint16 converted once) and each scale's accumulator is
 * loaded and stored once per four taps. */
NCALC_INLINE void vertical_bank(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                                 ptrdiff_t ld, ptrdiff_t r, const bank_t *b, work_t *t)
{
    float *restrict p0 = t->p, *restrict p1 = t->p + NCALC_BLK;
    float *restrict p2 = t->p + 2 * NCALC_BLK, *restrict p3 = t->p + 3 * NCALC_BLK;
    for (ptrdiff_t c0 = 0; c0 < cols; c0 += NCALC_BLK) {
        ptrdiff_t nb = cols - c0 < NCALC_BLK ? cols - c0 : NCALC_BLK;
        load_block(img, dtype, r * ld + c0, nb, p0);
        for (int i = 0; i < b->n; i++) {
            float *restrict acc = t->v[i] + c0;
            const float w0 = b->w[i][0];
            for (ptrdiff_t c = 0; c < nb; c++) acc[c] = w0 * p0[c];
        }
        for (int k = 1; k <= b->rmax; k += 4) {
            const int np = b->rmax - k + 1 < 4 ? b->rmax - k + 1 : 4;
            float *const pp[4] = {p0, p1, p2, p3};
            for (int j = 0; j < np; j++)
                pair_block(img, dtype, reflect_index(r - k - j, rows) * ld + c0,
                           reflect_index(r + k + j, rows) * ld + c0, nb, pp[j]);
            for (int i = b->n - 1; i >= 0 && b->radius[i] >= k; i--) {
                float *restrict acc = t->v[i] + c0;
                const float *w = b->w[i] + k;
                const float wa = w[0], wb = w[1], wc = w[2], wd = w[3];
                const int nt = b->radius[i] - k + 1;
                if (nt >= 4) {
                    for (ptrdiff_t c = 0; c < nb; c++)
                        acc[c] += (wa * p0[c] + wb * p1[c]) + (wc * p2[c] + wd * p3[c]);
                } else if (nt == 3) {
                    for (ptrdiff_t c = 0; c < nb; c++)
                        acc[c] += (wa * p0[c] + wb * p1[c]) + wc * p2[c];
                } else if (nt == 2) {
                    for (ptrdiff_t c = 0; c < nb; c++) acc[c] += wa * p0[c] + wb * p1[c];
                } else {
                    for (ptrdiff_t c = 0; c < nb; c++) acc[c] += wa * p0[c];
                }
            }
        }
    }
}

NCALC_INLINE void pad_row(float *v, ptrdiff_t cols, int radius)
{
    for (ptrdiff_t k = 1; k <= radius; k++) {
        v[-k] = v[reflect_index(-k, cols)];
        v[cols - 1 + k] = v[reflect_index(cols - 1 + k, cols)];
    }
}

/* Horizontal pass of padded row v over columns [c0, c0 + nb) into h,
 * four taps at a time. */
NCALC_INLINE void horizontal_block(const float *v, ptrdiff_t c0, ptrdiff_t nb, const float *w,
                                    int radius, float *restrict h)
{
    const float *restrict s = v + c0;
    const float w0 = w[0];
    for (ptrdiff_t c = 0; c < nb; c++) h[c] = w0 * s[c];
    int k = 1;
    for (; k + 3 <= radius; k += 4) {
        const float wa = w[k], wb = w[k + 1], wc = w[k + 2], wd = w[k + 3];
        const float *restrict a0 = s - k, *restrict b0 = s + k;
        const float *restrict a1 = s - k - 1, *restrict b1 = s + k + 1;
        const float *restrict a2 = s - k - 2, *restrict b2 = s + k + 2;
        const float *restrict a3 = s - k - 3, *restrict b3 = s + k + 3;
        for (ptrdiff_t c = 0; c < nb; c++)
            h[c] += (wa * (a0[c] + b0[c]) + wb * (a1[c] + b1[c])) +
                    (wc * (a2[c] + b2[c]) + wd * (a3[c] + b3[c]));
    }
    const int nt = radius - k + 1; /* 0 .. 3 taps left */
    if (nt > 0) {
        const float wa = w[k], wb = w[k + 1], wc = w[k + 2];
        const float *restrict a0 = s - k, *restrict b0 = s + k;
        const float *restrict a1 = s - k - 1, *restrict b1 = s + k + 1;
        const float *restrict a2 = s - k - 2, *restrict b2 = s + k + 2;
        if (nt == 3) {
            for (ptrdiff_t c = 0; c < nb; c++)
                h[c] += (wa * (a0[c] + b0[c]) + wb * (a1[c] + b1[c])) + wc * (a2[c] + b2[c]);
        } else if (nt == 2) {
            for (ptrdiff_t c = 0; c < nb; c++) h[c] += wa * (a0[c] + b0[c]) + wb * (a1[c] + b1[c]);
        } else {
            for (ptrdiff_t c = 0; c < nb; c++) h[c] += wa * (a0[c] + b0[c]);
        }
    }
}

/* Smoothed row r (single Gaussian, bank of one) into out. */
NCALC_CLONES
static void gaussian_row(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t r,
                         const bank_t *b, work_t *t, float *out)
{
    vertical_bank(img, dtype, rows, cols, cols, r, b, t);
    pad_row(t->v[0], cols, b->radius[0]);
    for (ptrdiff_t c0 = 0; c0 < cols; c0 += NCALC_BLK) {
        ptrdiff_t nb = cols - c0 < NCALC_BLK ? cols - c0 : NCALC_BLK;
        horizontal_block(t->v[0], c0, nb, b->w[0], b->radius[0], out + c0);
    }
}

/* Row r of (G * img) sampled at even columns, into out (ceil(cols/2)). */
NCALC_CLONES
static void gaussian_row_even_cols(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                                   ptrdiff_t r, const bank_t *b, work_t *t, float *out)
{
    vertical_bank(img, dtype, rows, cols, cols, r, b, t);
    const int R = b->radius[0];
    const float *w = b->w[0];
    float *v = t->v[0];
    pad_row(v, cols, R);
    ptrdiff_t ccols = (cols + 1) / 2;
    for (ptrdiff_t l = 0; l < ccols; l++) {
        const float *s = v + 2 * l;
        float acc = w[0] * s[0];
        for (int k = 1; k <= R; k++) acc += w[k] * (s[-k] + s[k]);
        out[l] = acc;
    }
}

/* DoG maximum over the bank's consecutive pairs for row r:
 * resp[c] = max_i (G_i - G_{i+1}), scale[c] = first argmax + scale_offset. */
NCALC_CLONES
static void dog_row(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                    ptrdiff_t r, const bank_t *b, work_t *t, float *resp, uint8_t *scale,
                    int scale_offset, const float *urow, const int32_t *us, float *lowrow)
{
    vertical_bank(img, dtype, rows, cols, ld, r, b, t);
    for (int i = 0; i < b->n; i++) pad_row(t->v[i], cols, b->radius[i]);
    for (ptrdiff_t c0 = 0; c0 < cols; c0 += NCALC_BLK) {
        ptrdiff_t nb = cols - c0 < NCALC_BLK ? cols - c0 : NCALC_BLK;
        float *prev = t->h0, *cur = t->h1;
        /* the running maximum and its scale go back and forth between two
         * buffers: every store is unconditional (a blend), never a masked
         * store, which is slow on some CPUs */
        float *mx = t->m0, *mx2 = t->m1;
        int32_t *bi = t->bi, *bi2 = t->bi + NCALC_BLK;
        horizontal_block(t->v[0], c0, nb, b->w[0], b->radius[0], prev);
        for (int i = 1; i < b->n; i++) {
            horizontal_block(t->v[i], c0, nb, b->w[i], b->radius[i], cur);
            const float *restrict pv = prev, *restrict cu = cur;
            if (i == 1) {
                float *restrict m = mx;
                int32_t *restrict s0 = bi;
                for (ptrdiff_t c = 0; c < nb; c++) { m[c] = pv[c] - cu[c]; s0[c] = 0; }
            } else {
                const int32_t idx = i - 1;
                const float *restrict m = mx;
                const int32_t *restrict s0 = bi;
                float *restrict m2 = mx2;
                int32_t *restrict s2 = bi2;
                for (ptrdiff_t c = 0; c < nb; c++) {
                    const float d = pv[c] - cu[c];
                    const int gt = d > m[c];
                    m2[c] = gt ? d : m[c];
                    s2[c] = gt ? idx : s0[c];
                }
                float *tf = mx; mx = mx2; mx2 = tf;
                int32_t *ti = bi; bi = bi2; bi2 = ti;
            }
            float *tmp = prev; prev = cur; cur = tmp;
        }
        if (lowrow) {
            /* the last scale's row at even columns (c0 is even) */
            const float *restrict g = prev;
            float *restrict lo = lowrow + (c0 >> 1);
            for (ptrdiff_t j = 0; 2 * j < nb; j++) lo[j] = g[2 * j];
        }
        float *restrict out = resp + c0;
        if (urow) {
            /* the upsampled coarse scales win only when strictly larger */
            const float *restrict u = urow + c0;
            const int32_t *restrict su = us + c0;
            const float *restrict m = mx;
            int32_t *restrict s0 = bi;
            for (ptrdiff_t c = 0; c < nb; c++) {
                const int gt = u[c] > m[c];
                out[c] = gt ? u[c] : m[c];
                s0[c] = gt ? su[c] : s0[c];
            }
        } else {
            memcpy(out, mx, sizeof(float) * (size_t)nb);
        }
        if (scale) {
            const int32_t *restrict s0 = bi;
            for (ptrdiff_t c = 0; c < nb; c++) scale[c0 + c] = (uint8_t)(s0[c] + scale_offset);
        }
    }
}

/* Row r of the bilinearly upsampled coarse response (urow) and scale (us):
 * coarse node (j, l) sits at full-resolution pixel (2j, 2l); odd rows and
 * columns take the float32 mean of their two neighbouring nodes (the single
 * nearest node past the last one); the scale comes from node (r/2, c/2),
 * plus offset. trow: ccols floats of scratch. */
static void upsample_row(ptrdiff_t r, ptrdiff_t cols, const float *cresp, const uint8_t *cscale,
                         ptrdiff_t crows, ptrdiff_t ccols, int offset,
                         float *restrict trow, float *restrict urow, int32_t *restrict us)
{
    ptrdiff_t j0 = r >> 1;
    const float *restrict a = cresp + j0 * ccols;
    if ((r & 1) && j0 + 1 < crows) {
        const float *restrict bb = a + ccols;
        for (ptrdiff_t l = 0; l < ccols; l++) trow[l] = 0.5f * (a[l] + bb[l]);
    } else {
        memcpy(trow, a, sizeof(float) * (size_t)ccols);
    }
    ptrdiff_t half = cols / 2; /* odd columns 1, 3, .., 2 half - 1 */
    for (ptrdiff_t l = 0; l < ccols; l++) urow[2 * l] = trow[l];
    for (ptrdiff_t l = 0; l < half; l++)
        urow[2 * l + 1] = l + 1 < ccols ? 0.5f * (trow[l] + trow[l + 1]) : trow[l];
    const uint8_t *cs = cscale + j0 * ccols;
    for (ptrdiff_t c = 0; c < cols; c++) us[c] = (int32_t)cs[c >> 1] + offset;
}

static int check_image(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols)
{
    if (!img || rows < 1 || cols < 1) return 0;
    return dtype == NCALC_U16 || dtype == NCALC_F32;
}

static int resolve_threads(int nthreads)
{
    return nthreads > 0 ? nthreads : ncalc_max_threads();
}

int ncalc_gaussian(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                   double sigma, double truncate, float *out, int nthreads)
{
    if (!check_image(img, dtype, rows, cols) || !out || !(sigma >= 0) || !(truncate > 0))
        return NCALC_EINVAL;
    bank_t b;
    if (bank_init(&b, &sigma, 1, truncate) != NCALC_OK) return NCALC_ENOMEM;
    int status = NCALC_OK;
    int nt = resolve_threads(nthreads);
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        work_t t;
        int ok = work_init(&t, &b, cols);
        if (!ok) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(static)
        for (ptrdiff_t r = 0; r < rows; r++) {
            if (!ok) continue;
            gaussian_row(img, dtype, rows, cols, r, &b, &t, out + r * cols);
        }
        if (ok) work_free(&t);
    }
    bank_free(&b);
    return status;
}

/* (G(sigma) * img) sampled at even rows and columns: ceil(rows/2) x
 * ceil(cols/2) floats. */
static int gaussian_decimate(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                             double sigma, double truncate, float *out, int nt)
{
    bank_t b;
    if (bank_init(&b, &sigma, 1, truncate) != NCALC_OK) return NCALC_ENOMEM;
    int status = NCALC_OK;
    ptrdiff_t crows = (rows + 1) / 2, ccols = (cols + 1) / 2;
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        work_t t;
        int ok = work_init(&t, &b, cols);
        if (!ok) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(static)
        for (ptrdiff_t j = 0; j < crows; j++) {
            if (!ok) continue;
            gaussian_row_even_cols(img, dtype, rows, cols, 2 * j, &b, &t, out + j * ccols);
        }
        if (ok) work_free(&t);
    }
    bank_free(&b);
    return status;
}

static int check_sigmas(const double *sigmas, int nsigmas)
{
    if (!sigmas || nsigmas < 2 || nsigmas > 255) return 0;
    for (int i = 0; i < nsigmas; i++)
        if (!(sigmas[i] > 0) || (i > 0 && !(sigmas[i] > sigmas[i - 1]))) return 0;
    return 1;
}

/* The recursion behind ncalc_dog_pyramid (levels = 0: plain DoG). */
static int dog_level(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                     const double *sigmas, int n, double truncate, double split, double pre,
                     int levels, float *resp, uint8_t *scale, int nt)
{
    /* pairs 0 .. m-1 here (Gaussians 0 .. m), pairs m .. n-2 one octave down */
    int m = n - 1;
    if (levels > 0)
        for (int i = 0; i < n - 1; i++)
            if (sigmas[i] >= split) { m = i; break; }

    int status = NCALC_OK;
    float *cresp = NULL;
    uint8_t *cscale = NULL;
    ptrdiff_t crows = (rows + 1) / 2, ccols = (cols + 1) / 2;
    if (m < n - 1) {
        size_t cn = (size_t)crows * (size_t)ccols;
        float *low = malloc(sizeof(float) * cn);
        cresp = malloc(sizeof(float) * cn);
        cscale = malloc(cn);
        double *sub = malloc(sizeof(double) * (size_t)(n - m));
        if (!low || !cresp || !cscale || !sub) status = NCALC_ENOMEM;
        if (status == NCALC_OK)
            status = gaussian_decimate(img, dtype, rows, cols, pre, truncate, low, nt);
        if (status == NCALC_OK) {
            for (int i = m; i < n; i++) sub[i - m] = sqrt(sigmas[i] * sigmas[i] - pre * pre) / 2.0;
            status = dog_level(low, NCALC_F32, crows, ccols, sub, n - m, truncate, split, pre,
                               levels - 1, cresp, cscale, nt);
        }
        free(low);
        free(sub);
        if (status != NCALC_OK) { free(cresp); free(cscale); return status; }
    }

    bank_t b = {0, 0, NULL, NULL};
    if (m >= 1 && bank_init(&b, sigmas, m + 1, truncate) != NCALC_OK) status = NCALC_ENOMEM;
    if (status == NCALC_OK) {
        (void)nt;
#pragma omp parallel num_threads(nt)
        {
            work_t t = {0};
            float *trow = NULL, *urow = NULL;
            int32_t *us = NULL;
            if (cresp) {
                trow = malloc(sizeof(float) * (size_t)(ccols + cols));
                us = malloc(sizeof(int32_t) * (size_t)cols);
                urow = trow ? trow + ccols : NULL;
            }
            int ok = (m < 1 || work_init(&t, &b, cols)) && (!cresp || (trow && us));
            if (!ok) {
#pragma omp atomic write
                status = NCALC_ENOMEM;
            }
#pragma omp for schedule(static)
            for (ptrdiff_t r = 0; r < rows; r++) {
                if (!ok) continue;
                float *out = resp + r * cols;
                uint8_t *sc = scale ? scale + r * cols : NULL;
                if (cresp) upsample_row(r, cols, cresp, cscale, crows, ccols, m, trow, urow, us);
                if (m >= 1) {
                    dog_row(img, dtype, rows, cols, cols, r, &b, &t, out, sc, 0, urow, us, NULL);
                } else {
                    memcpy(out, urow, sizeof(float) * (size_t)cols);
                    if (sc)
                        for (ptrdiff_t c = 0; c < cols; c++) sc[c] = (uint8_t)us[c];
                }
            }
            free(us);
            if (m >= 1 && t.mem) work_free(&t);
            free(trow);
        }
    }
    bank_free(&b);
    free(cresp);
    free(cscale);
    return status;
}

int ncalc_dog_response(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                       const double *sigmas, int nsigmas, double truncate,
                       float *resp, uint8_t *scale, int nthreads)
{
    if (!check_image(img, dtype, rows, cols) || !resp || !check_sigmas(sigmas, nsigmas) ||
        !(truncate > 0))
        return NCALC_EINVAL;
    return dog_level(img, dtype, rows, cols, sigmas, nsigmas, truncate, 0.0, 0.0, 0, resp, scale,
                     resolve_threads(nthreads));
}

int ncalc_dog_pyramid(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                      const double *sigmas, int nsigmas, double truncate,
                      double split_sigma, double prefilter_sigma, int max_levels,
                      float *resp, uint8_t *scale, int nthreads)
{
    if (!check_image(img, dtype, rows, cols) || !resp || !check_sigmas(sigmas, nsigmas) ||
        !(truncate > 0) || max_levels < 0 || max_levels > 16 || !(prefilter_sigma > 0) ||
        !(split_sigma > prefilter_sigma))
        return NCALC_EINVAL;
    return dog_level(img, dtype, rows, cols, sigmas, nsigmas, truncate, split_sigma,
                     prefilter_sigma, max_levels, resp, scale, resolve_threads(nthreads));
}


/* ------------------------------------------------------------------------
 * Octave DoG (ncalc_dog_octaves): SIFT-like pyramid whose coarser level is
 * the last Gaussian of the level above, decimated 2x -- no extra pass over
 * the input. See ncalc.h for the exact definition.
 * ------------------------------------------------------------------------ */

#define NCALC_OCT_MIN_SIDE 32

/* The merge of merge_up_row_v at columns 2 l and 2 l + 1 for l < n: the
 * coarse values t[l] and the mean of t[l] and t[l + 1], with scale cs[l],
 * win where strictly larger. keep (a constant after inlining): where they
 * do not win, sc keeps its value; else it becomes f8. Branch-free (masks),
 * so that the loop vectorises. */
NCALC_INLINE void merge_pairs(const float *restrict t, const uint8_t *restrict cs, ptrdiff_t n,
                              float *restrict out, uint8_t *restrict sc, const int keep,
                              const uint8_t f8)
{
    for (ptrdiff_t l = 0; l < n; l++) {
        const float u0 = t[l], u1 = 0.5f * (t[l] + t[l + 1]);
        const float o0 = out[2 * l], o1 = out[2 * l + 1];
        const uint8_t c8 = cs[l];
        const uint8_t k0 = keep ? sc[2 * l] : f8, k1 = keep ? sc[2 * l + 1] : f8;
        const uint8_t m0 = (uint8_t)-(int)(u0 > o0), m1 = (uint8_t)-(int)(u1 > o1);
        out[2 * l] = u0 > o0 ? u0 : o0;
        out[2 * l + 1] = u1 > o1 ? u1 : o1;
        sc[2 * l] = (uint8_t)((c8 & m0) | (k0 & (uint8_t)~m0));
        sc[2 * l + 1] = (uint8_t)((c8 & m1) | (k1 & (uint8_t)~m1));
    }
}

/* Merge row r of the bilinearly upsampled coarse response into resp/scale
 * (strictly larger wins, with scale cscale[r/2][c/2]) at columns [a, b)
 * (a even; b even or cols): each pair of columns straight from the coarse
 * row (merge_pairs), without writing the upsampled row first. It reads
 * the coarse nodes [a / 2, min(ccols, b / 2 + 1)) of row r / 2 (and of the
 * next row when r is odd). trow: ccols floats of scratch (odd rows: the
 * mean of two coarse rows). fine >= 0: the fine scale is that constant
 * (sc is only written), else sc is read. */
NCALC_CLONES
static void merge_up_row_v(ptrdiff_t r, ptrdiff_t cols, ptrdiff_t a, ptrdiff_t b, const float *cresp,
                           const uint8_t *cscale, ptrdiff_t crows, ptrdiff_t ccols,
                           float *restrict trow, float *restrict out, uint8_t *restrict sc, int fine)
{
    ptrdiff_t j0 = r >> 1;
    const ptrdiff_t la = a >> 1, lb = (b >> 1) + 1 < ccols ? (b >> 1) + 1 : ccols;
    const float *restrict ra = cresp + j0 * ccols;
    const float *restrict t = ra;
    if ((r & 1) && j0 + 1 < crows) {
        const float *restrict rb = ra + ccols;
        for (ptrdiff_t l = la; l < lb; l++) trow[l] = 0.5f * (ra[l] + rb[l]);
        t = trow;
    }
    const uint8_t *restrict cs = cscale + j0 * ccols;
    const ptrdiff_t inner = cols / 2 < ccols - 1 ? cols / 2 : ccols - 1;
    const ptrdiff_t pe = inner < (b >> 1) ? inner : (b >> 1); /* the pairs [la, pe) */
    if (pe > la) {
        if (fine >= 0)
            merge_pairs(t + la, cs + la, pe - la, out + 2 * la, sc + 2 * la, 0, (uint8_t)fine);
        else
            merge_pairs(t + la, cs + la, pe - la, out + 2 * la, sc + 2 * la, 1, 0);
    }
    for (ptrdiff_t c = 2 * pe > a ? 2 * pe : a; c < b; c++) { /* past the last node: that node */
        const float u = t[c >> 1], o = out[c];
        out[c] = u > o ? u : o;
        if (u > o) sc[c] = cs[c >> 1];
        else if (fine >= 0) sc[c] = (uint8_t)fine;
    }
}

/* ---- The octave DoG's row kernel ----------------------------------------
 * The same float operations in the same order as dog_row (vertical_bank +
 * horizontal_block), fused so that each value stays in a register: each
 * scale's vertical pass reads the 2R+1 rows (float) and writes its row
 * once (for the banks detect's scales give, the two or three scales'
 * passes in one loop that shares the rows' loads and pair sums:
 * oct_vert_bank); the horizontal pass of each scale computes its value
 * and the DoG maximum update in one loop. The radius is a compile-time
 * constant in each instance (a switch over 0 .. 8), so the tap loops
 * unroll. */

#if defined(__GNUC__) && !defined(__clang__)
#define NCALC_IVDEP _Pragma("GCC ivdep")
#else
#define NCALC_IVDEP
#endif

/* w0 x0 + the tap groups of four, as vertical_bank / horizontal_block:
 * acc = w0 p0, then acc += ((wa pa + wb pb) + (wc pc + wd pd)) per group
 * (a shorter last group: (wa pa + wb pb) + wc pc, wa pa + wb pb, wa pa),
 * the pair sums being A(k) + B(k). */
#define NCALC_SYM_FIR(acc, w, R, x0, A, B)                                                      \
    do {                                                                                        \
        acc = (w)[0] * (x0);                                                                    \
        int k_ = 1;                                                                             \
        for (; k_ + 3 <= (R); k_ += 4)                                                          \
            acc += ((w)[k_] * (A(k_) + B(k_)) + (w)[k_ + 1] * (A(k_ + 1) + B(k_ + 1))) +        \
                   ((w)[k_ + 2] * (A(k_ + 2) + B(k_ + 2)) + (w)[k_ + 3] * (A(k_ + 3) + B(k_ + 3))); \
        const int nt_ = (R) - k_ + 1;                                                           \
        if (nt_ == 3)                                                                           \
            acc += ((w)[k_] * (A(k_) + B(k_)) + (w)[k_ + 1] * (A(k_ + 1) + B(k_ + 1))) +        \
                   (w)[k_ + 2] * (A(k_ + 2) + B(k_ + 2));                                       \
        else if (nt_ == 2)                                                                      \
            acc += (w)[k_] * (A(k_) + B(k_)) + (w)[k_ + 1] * (A(k_ + 1) + B(k_ + 1));            \
        else if (nt_ == 1)                                                                      \
            acc += (w)[k_] * (A(k_) + B(k_));                                                   \
    } while (0)

/* Vertical pass: out[c] for c < n from the rows rp[-R] .. rp[R]. */
NCALC_INLINE void oct_vert_r(const float *const *rp, const float *w, const int R, ptrdiff_t n,
                             float *restrict out)
{
    const float *x0 = rp[0];
    NCALC_IVDEP
    for (ptrdiff_t c = 0; c < n; c++) {
        float a;
#define NCALC_VA(k) rp[-(k)][c]
#define NCALC_VB(k) rp[(k)][c]
        NCALC_SYM_FIR(a, w, R, x0[c], NCALC_VA, NCALC_VB);
#undef NCALC_VA
#undef NCALC_VB
        out[c] = a;
    }
}

/* The vertical passes of two or three scales (R2 < 0: two) in one loop:
 * each value the same expression as oct_vert_r's (the same bits), the
 * loads of the rows and their pair sums rp[-k][c] + rp[k][c] shared by
 * the scales. */
NCALC_INLINE void oct_vert3_r(const float *const *rp, const float *w0, const float *w1,
                              const float *w2, const int R0, const int R1, const int R2, ptrdiff_t n,
                              float *restrict o0, float *restrict o1, float *restrict o2)
{
    const float *x0 = rp[0];
    NCALC_IVDEP
    for (ptrdiff_t c = 0; c < n; c++) {
        float a, b;
#define NCALC_VA(k) rp[-(k)][c]
#define NCALC_VB(k) rp[(k)][c]
        NCALC_SYM_FIR(a, w0, R0, x0[c], NCALC_VA, NCALC_VB);
        NCALC_SYM_FIR(b, w1, R1, x0[c], NCALC_VA, NCALC_VB);
        if (R2 >= 0) {
            float d;
            NCALC_SYM_FIR(d, w2, R2, x0[c], NCALC_VA, NCALC_VB);
            o2[c] = d;
        }
#undef NCALC_VA
#undef NCALC_VB
        o0[c] = a;
        o1[c] = b;
    }
}

/* The vertical passes of a bank of two or three scales in one loop
 * (oct_vert3_r), for the radii of the banks detect's scales give at
 * 0.035-0.2 mm (truncate 3, octave split 1.2; the first scale of a
 * coarser level has radius 0): rp[-rmax .. rmax] the rows, n columns,
 * o[i] scale i's output. Returns 0, having done nothing, for another
 * bank (each scale's pass then runs on its own). */
NCALC_INLINE int oct_vert_bank(const float *const *rp, const bank_t *b, ptrdiff_t n, float *const *o)
{
    const int *r = b->radius;
    float *const *w = b->w;
#define NCALC_V3(A, B, C)                                                                      \
    if (r[0] == (A) && r[1] == (B) && r[2] == (C)) {                                           \
        oct_vert3_r(rp, w[0], w[1], w[2], A, B, C, n, o[0], o[1], o[2]);                       \
        return 1;                                                                              \
    }
#define NCALC_V2(A, B)                                                                         \
    if (r[0] == (A) && r[1] == (B)) {                                                          \
        oct_vert3_r(rp, w[0], w[1], NULL, A, B, -1, n, o[0], o[1], NULL);                      \
        return 1;                                                                              \
    }
    if (b->n == 3) {
        NCALC_V3(2, 2, 4)
        NCALC_V3(2, 3, 4)
        NCALC_V3(2, 3, 5)
        NCALC_V3(0, 2, 4)
        NCALC_V3(0, 2, 5)
        NCALC_V3(0, 3, 5)
    } else if (b->n == 2) {
        NCALC_V2(2, 4)
        NCALC_V2(3, 4)
        NCALC_V2(3, 5)
        NCALC_V2(4, 6)
        NCALC_V2(5, 7)
        NCALC_V2(0, 2)
        NCALC_V2(0, 3)
        NCALC_V2(0, 4)
        NCALC_V2(0, 5)
    }
#undef NCALC_V3
#undef NCALC_V2
    return 0;
}

NCALC_INLINE void oct_vert(const float *const *rp, const float *w, int R, ptrdiff_t n, float *out)
{
    switch (R) {
    case 0: oct_vert_r(rp, w, 0, n, out); break;
    case 1: oct_vert_r(rp, w, 1, n, out); break;
    case 2: oct_vert_r(rp, w, 2, n, out); break;
    case 3: oct_vert_r(rp, w, 3, n, out); break;
    case 4: oct_vert_r(rp, w, 4, n, out); break;
    case 5: oct_vert_r(rp, w, 5, n, out); break;
    case 6: oct_vert_r(rp, w, 6, n, out); break;
    case 7: oct_vert_r(rp, w, 7, n, out); break;
    case 8: oct_vert_r(rp, w, 8, n, out); break;
    default: oct_vert_r(rp, w, R, n, out); break;
    }
}

/* Horizontal pass of the padded row v at columns [c0, c0 + nb), fused with
 * the DoG maximum. hp holds the previous scale's values and receives this
 * scale's. mode 0: first scale (hp only); mode 1: second scale, m2 = the
 * first pair, bi2 = 0; mode 2: later scales, (m, bi) -> (m2, bi2) with pair
 * index idx winning where strictly larger. Modes 3 and 4: mode 1 without
 * bi2 (two scales: the pair index is 0), 4 without hp either; mode 5: mode
 * 2 without hp (the last scale, when its values are not needed). */
NCALC_INLINE void oct_horiz_r(const float *v, const float *w, const int R, ptrdiff_t c0,
                              ptrdiff_t nb, const int mode, float *restrict hp,
                              const float *restrict m, const int32_t *restrict bi,
                              float *restrict m2, int32_t *restrict bi2, int32_t idx)
{
    const float *restrict s = v + c0;
    for (ptrdiff_t c = 0; c < nb; c++) {
        float h;
#define NCALC_HA(k) s[c - (k)]
#define NCALC_HB(k) s[c + (k)]
        NCALC_SYM_FIR(h, w, R, s[c], NCALC_HA, NCALC_HB);
#undef NCALC_HA
#undef NCALC_HB
        if (mode == 1 || mode == 3 || mode == 4) {
            m2[c] = hp[c] - h;
            if (mode == 1) bi2[c] = 0;
        } else if (mode == 2 || mode == 5) {
            const float d = hp[c] - h;
            const int gt = d > m[c];
            m2[c] = gt ? d : m[c];
            bi2[c] = gt ? idx : bi[c];
        }
        if (mode != 4 && mode != 5) hp[c] = h;
    }
}

#define NCALC_HORIZ_CASE(RR)                                                                    \
    case RR:                                                                                    \
        switch (mode) {                                                                         \
        case 0: oct_horiz_r(v, w, RR, c0, nb, 0, hp, m, bi, m2, bi2, idx); break;               \
        case 1: oct_horiz_r(v, w, RR, c0, nb, 1, hp, m, bi, m2, bi2, idx); break;               \
        case 2: oct_horiz_r(v, w, RR, c0, nb, 2, hp, m, bi, m2, bi2, idx); break;               \
        case 3: oct_horiz_r(v, w, RR, c0, nb, 3, hp, m, bi, m2, bi2, idx); break;               \
        case 4: oct_horiz_r(v, w, RR, c0, nb, 4, hp, m, bi, m2, bi2, idx); break;               \
        default: oct_horiz_r(v, w, RR, c0, nb, 5, hp, m, bi, m2, bi2, idx); break;              \
        }                                                                                       \
        break;

NCALC_INLINE void oct_horiz(const float *v, const float *w, int R, ptrdiff_t c0, ptrdiff_t nb,
                            int mode, float *hp, const float *m, const int32_t *bi, float *m2,
                            int32_t *bi2, int32_t idx)
{
    switch (R) {
    NCALC_HORIZ_CASE(0)
    NCALC_HORIZ_CASE(1)
    NCALC_HORIZ_CASE(2)
    NCALC_HORIZ_CASE(3)
    NCALC_HORIZ_CASE(4)
    NCALC_HORIZ_CASE(5)
    NCALC_HORIZ_CASE(6)
    NCALC_HORIZ_CASE(7)
    NCALC_HORIZ_CASE(8)
    default:
        switch (mode) {
        case 0: oct_horiz_r(v, w, R, c0, nb, 0, hp, m, bi, m2, bi2, idx); break;
        case 1: oct_horiz_r(v, w, R, c0, nb, 1, hp, m, bi, m2, bi2, idx); break;
        case 2: oct_horiz_r(v, w, R, c0, nb, 2, hp, m, bi, m2, bi2, idx); break;
        case 3: oct_horiz_r(v, w, R, c0, nb, 3, hp, m, bi, m2, bi2, idx); break;
        case 4: oct_horiz_r(v, w, R, c0, nb, 4, hp, m, bi, m2, bi2, idx); break;
        default: oct_horiz_r(v, w, R, c0, nb, 5, hp, m, bi, m2, bi2, idx); break;
        }
        break;
    }
}
#undef NCALC_HORIZ_CASE

/* d[c] = src[c] as float. */
NCALC_CLONES
static void u16_to_float(const uint16_t *restrict src, ptrdiff_t n, float *restrict d)
{
    for (ptrdiff_t c = 0; c < n; c++) d[c] = (float)src[c];
}

/* The columns [*va, *vb) of a row's vertical pass (radius R) that its
 * outputs [a, b) (0 <= a < b <= cols) need: those the horizontal pass
 * reads, and at an image edge those the reflection reads. */
static void vert_range(ptrdiff_t a, ptrdiff_t b, int R, ptrdiff_t cols, ptrdiff_t *va, ptrdiff_t *vb)
{
    ptrdiff_t lo = a - R, hi = b + R;
    if (lo <= 0) {
        lo = 0;
        if (hi < R + 1) hi = R + 1;
    }
    if (hi >= cols) {
        hi = cols;
        if (lo > cols - R - 1) lo = cols - R - 1 > 0 ? cols - R - 1 : 0;
    }
    *va = lo;
    *vb = hi;
}

/* pad_row's two sides apart (the same values). */
NCALC_INLINE void pad_left(float *v, ptrdiff_t cols, int radius)
{
    for (ptrdiff_t k = 1; k <= radius; k++) v[-k] = v[reflect_index(-k, cols)];
}

NCALC_INLINE void pad_right(float *v, ptrdiff_t cols, int radius)
{
    for (ptrdiff_t k = 1; k <= radius; k++) v[cols - 1 + k] = v[reflect_index(cols - 1 + k, cols)];
}

/* One row of a level of the octave DoG at columns [a, b) (a even, a < b <=
 * cols): rp[-rmax .. rmax] (rmax <= 8) are the float input rows around it
 * (reflected at the borders), read at the columns of vert_range. Writes
 * resp/scale (pair index + offset; scale may be NULL) over [a, b), and when
 * lowrow is given the last scale's values at the even columns there
 * (lowrow[c / 2]). Each value is the same whatever [a, b). */
NCALC_CLONES
static void oct_row(const float *const *rp, ptrdiff_t cols, ptrdiff_t a, ptrdiff_t b_end, const bank_t *b,
                    work_t *t, float *resp, uint8_t *scale, int offset, float *lowrow)
{
    const float *sh[2 * 8 + 1];
    /* two or three scales of the usual radii: their vertical passes in one
     * loop over the columns of the largest radius's range (those the
     * smaller radii need lie within it, and the input rows are there) */
    int together = 0;
    if (b->n == 2 || b->n == 3) {
        const int R = b->rmax;
        ptrdiff_t va, vb;
        vert_range(a, b_end, R, cols, &va, &vb);
        for (int k = -R; k <= R; k++) sh[k + R] = rp[k] + va;
        float *o[3] = {t->v[0] + va, t->v[1] + va, b->n == 3 ? t->v[2] + va : NULL};
        together = oct_vert_bank(sh + R, b, vb - va, o);
    }
    for (int i = 0; i < b->n; i++) {
        const int R = b->radius[i];
        ptrdiff_t va, vb;
        vert_range(a, b_end, R, cols, &va, &vb);
        if (!together) {
            for (int k = -R; k <= R; k++) sh[k + R] = rp[k] + va;
            oct_vert(sh + R, b->w[i], R, vb - va, t->v[i] + va);
        }
        if (va == 0) pad_left(t->v[i], cols, R);
        if (vb == cols) pad_right(t->v[i], cols, R);
    }
    for (ptrdiff_t c0 = a; c0 < b_end; c0 += NCALC_BLK) {
        ptrdiff_t nb = b_end - c0 < NCALC_BLK ? b_end - c0 : NCALC_BLK;
        float *hp = t->h0;
        float *mx = t->m0, *mx2 = t->m1;
        int32_t *bi = t->bi, *bi2 = t->bi + NCALC_BLK;
        oct_horiz(t->v[0], b->w[0], b->radius[0], c0, nb, 0, hp, mx, bi, mx2, bi2, 0);
        for (int i = 1; i < b->n; i++) {
            /* the last scale writes the maximum straight into resp */
            const int last = i == b->n - 1;
            int mode = i == 1 ? 1 : 2;
            if (last) {
                mx2 = resp + c0;
                if (b->n == 2) mode = lowrow ? 3 : 4;
                else if (!lowrow) mode = 5;
            }
            oct_horiz(t->v[i], b->w[i], b->radius[i], c0, nb, mode, hp, mx, bi, mx2, bi2, i - 1);
            /* the running maximum goes back and forth between two buffers */
            float *tf = mx; mx = mx2; mx2 = tf;
            int32_t *ti = bi; bi = bi2; bi2 = ti;
        }
        if (lowrow) {
            const float *restrict g = hp;
            float *restrict lo = lowrow + (c0 >> 1);
            for (ptrdiff_t j = 0; 2 * j < nb; j++) lo[j] = g[2 * j];
        }
        if (scale && b->n == 2) {
            memset(scale + c0, offset, (size_t)nb); /* the one pair */
        } else if (scale) {
            const int32_t *restrict s0 = bi;
            uint8_t *restrict so = scale + c0;
            for (ptrdiff_t c = 0; c < nb; c++) so[c] = (uint8_t)(s0[c] + offset);
        }
    }
}

/* A level of the octave DoG (see ncalc_dog_octaves in ncalc.h): its
 * Gaussians o .. e, its size and its bank. With column ranges, per row r
 * of the level, [nlo[r], nhi[r]) are the columns whose response must be
 * exact once the coarser levels are merged (need), [olo[r], ohi[r]) those
 * the row kernel computes (need, and at even rows the next level's input
 * there), and [ilo[q], ihi[q]) the columns of input row q the vertical
 * passes read. Empty ranges are (0, 0). */
typedef struct {
    int o, e, fused;
    ptrdiff_t rows, cols;
    bank_t b;
    int32_t *nlo, *nhi, *olo, *ohi, *ilo, *ihi; /* one block; NULL without ranges */
} oct_lvl_t;

/* levels: at most max_levels (<= 16) + 1 */
#define NCALC_OCT_LEVELS 17

static void oct_free(oct_lvl_t *lv, int nlev)
{
    for (int L = 0; L < nlev; L++) {
        bank_free(&lv[L].b);
        free(lv[L].nlo);
    }
}

/* The levels of the definition: sizes, Gaussians and banks (lv[0 ..
 * *nlev - 1]; oct_free frees them, also after a failure). */
static int oct_plan(const double *s, int n, ptrdiff_t rows, ptrdiff_t cols, double truncate,
                    double split, int max_levels, oct_lvl_t *lv, int *nlev)
{
    int o = 0, levels = max_levels;
    double base = 0.0, f = 1.0;
    *nlev = 0;
    for (int L = 0; L < NCALC_OCT_LEVELS; L++) {
        oct_lvl_t *l = &lv[L];
        memset(l, 0, sizeof(*l));
        (*nlev)++;
        int e = n - 1;
        if (levels > 0 && rows >= NCALC_OCT_MIN_SIDE && cols >= NCALC_OCT_MIN_SIDE)
            for (int i = o + 1; i <= n - 2; i++)
                if (s[i] >= split * f) { e = i; break; }
        const int ng = e - o + 1; /* Gaussians o .. e, pairs o .. e-1 */
        double *t = malloc(sizeof(double) * (size_t)ng);
        if (!t) return NCALC_ENOMEM;
        for (int i = o; i <= e; i++) {
            double d = s[i] * s[i] - base * base;
            t[i - o] = i == o && o > 0 ? 0.0 : sqrt(d > 0 ? d : 0.0) / f;
        }
        int status = bank_init(&l->b, t, ng, truncate);
        free(t);
        if (status != NCALC_OK) return status;
        l->o = o;
        l->e = e;
        l->rows = rows;
        l->cols = cols;
        /* The fused row kernel (oct_row) has its tap loops unrolled for radii
         * up to 8; beyond, its generic loop is up to 7x slower than dog_row's
         * vertical bank (measured with truncate 4 at 0.035-0.1 mm; see
         * docs/performance-log.md), so longer kernels take dog_row. Both give the
         * same bits. */
        l->fused = l->b.rmax <= 8;
        if (e == n - 1) return NCALC_OK;
        rows = (rows + 1) / 2;
        cols = (cols + 1) / 2;
        o = e;
        base = s[e];
        f *= 2.0;
        levels--;
    }
    return NCALC_EINVAL; /* not reached: levels <= 16 */
}

/* [lo, hi) grown to hold [a, b) (a < b); empty as (cols, 0) while building. */
static inline void hull(int32_t *lo, int32_t *hi, ptrdiff_t a, ptrdiff_t b)
{
    if (a < *lo) *lo = (int32_t)a;
    if (b > *hi) *hi = (int32_t)b;
}

/* A range made even at both ends (b may stay cols), or (0, 0) when empty. */
static inline void even_out(int32_t *lo, int32_t *hi, ptrdiff_t cols)
{
    if (*lo >= *hi) {
        *lo = *hi = 0;
        return;
    }
    *lo &= ~1;
    if ((*hi & 1) && *hi < cols) (*hi)++;
}

/* The ranges of every level from the caller's (lo, hi), clipped, at level 0. */
static int oct_ranges(oct_lvl_t *lv, int nlev, const int32_t *lo, const int32_t *hi)
{
    for (int L = 0; L < nlev; L++) {
        oct_lvl_t *l = &lv[L];
        const size_t nr = (size_t)l->rows;
        l->nlo = malloc(sizeof(int32_t) * 6 * nr);
        if (!l->nlo) return NCALC_ENOMEM;
        l->nhi = l->nlo + nr;
        l->olo = l->nhi + nr;
        l->ohi = l->olo + nr;
        l->ilo = l->ohi + nr;
        l->ihi = l->ilo + nr;
    }
    /* need, from the top: the merge at level L reads the coarse nodes of
     * merge_up_row_v */
    for (ptrdiff_t r = 0; r < lv[0].rows; r++) {
        ptrdiff_t a = lo[r] < 0 ? 0 : lo[r], b = hi[r] > lv[0].cols ? lv[0].cols : hi[r];
        lv[0].nlo[r] = (int32_t)a;
        lv[0].nhi[r] = (int32_t)b;
        even_out(&lv[0].nlo[r], &lv[0].nhi[r], lv[0].cols);
    }
    for (int L = 0; L + 1 < nlev; L++) {
        const oct_lvl_t *l = &lv[L];
        oct_lvl_t *c = &lv[L + 1];
        for (ptrdiff_t j = 0; j < c->rows; j++) {
            c->nlo[j] = (int32_t)c->cols;
            c->nhi[j] = 0;
        }
        for (ptrdiff_t r = 0; r < l->rows; r++) {
            if (l->nlo[r] >= l->nhi[r]) continue;
            const ptrdiff_t a = l->nlo[r] >> 1;
            const ptrdiff_t b = (l->nhi[r] >> 1) + 1 < c->cols ? (l->nhi[r] >> 1) + 1 : c->cols;
            const ptrdiff_t j0 = r >> 1;
            hull(&c->nlo[j0], &c->nhi[j0], a, b);
            if ((r & 1) && j0 + 1 < c->rows) hull(&c->nlo[j0 + 1], &c->nhi[j0 + 1], a, b);
        }
        for (ptrdiff_t j = 0; j < c->rows; j++) even_out(&c->nlo[j], &c->nhi[j], c->cols);
    }
    /* out and in, from the bottom: a level computes its need and, at even
     * rows, what the next level reads of its input there */
    int32_t *va = malloc(sizeof(int32_t) * 2 * (size_t)lv[0].rows); /* (level 0 has the most rows) */
    if (!va) return NCALC_ENOMEM;
    int32_t *vb = va + lv[0].rows;
    for (int L = nlev - 1; L >= 0; L--) {
        oct_lvl_t *l = &lv[L];
        const int rm = l->b.rmax;
        for (ptrdiff_t r = 0; r < l->rows; r++) {
            l->olo[r] = l->nlo[r] < l->nhi[r] ? l->nlo[r] : (int32_t)l->cols;
            l->ohi[r] = l->nlo[r] < l->nhi[r] ? l->nhi[r] : 0;
            if (L + 1 < nlev && !(r & 1)) {
                const oct_lvl_t *c = &lv[L + 1];
                const ptrdiff_t q = r >> 1;
                if (c->ilo[q] < c->ihi[q])
                    hull(&l->olo[r], &l->ohi[r], 2 * (ptrdiff_t)c->ilo[q],
                         2 * (ptrdiff_t)c->ihi[q] < l->cols ? 2 * (ptrdiff_t)c->ihi[q] : l->cols);
            }
            even_out(&l->olo[r], &l->ohi[r], l->cols);
            l->ilo[r] = (int32_t)l->cols;
            l->ihi[r] = 0;
        }
        /* row r's vertical pass reads [va[r], vb[r]) of the rows r - rm ..
         * r + rm (reflected at the borders); (cols, 0) when it computes
         * nothing, which leaves every hull as it is */
        for (ptrdiff_t r = 0; r < l->rows; r++) {
            ptrdiff_t a = l->cols, b = 0;
            if (l->olo[r] < l->ohi[r]) vert_range(l->olo[r], l->ohi[r], rm, l->cols, &a, &b);
            va[r] = (int32_t)a;
            vb[r] = (int32_t)b;
        }
        /* the rows whose window needs no reflection: one pass per offset,
         * which vectorises (a hull is a min and a max: any order gives the
         * same); the others one by one */
        const ptrdiff_t in0 = rm < l->rows ? rm : l->rows;
        const ptrdiff_t in1 = l->rows - rm > in0 ? l->rows - rm : in0;
        for (int k = -rm; k <= rm; k++) {
            int32_t *restrict il = l->ilo + k, *restrict ih = l->ihi + k;
            for (ptrdiff_t r = in0; r < in1; r++) {
                il[r] = va[r] < il[r] ? va[r] : il[r];
                ih[r] = vb[r] > ih[r] ? vb[r] : ih[r];
            }
        }
        for (ptrdiff_t r = 0; r < l->rows; r++) {
            if (r == in0) r = in1;
            if (r >= l->rows) break;
            for (int k = -rm; k <= rm; k++) {
                const ptrdiff_t q = reflect_index(r + k, l->rows);
                hull(&l->ilo[q], &l->ihi[q], va[r], vb[r]);
            }
        }
        for (ptrdiff_t q = 0; q < l->rows; q++)
            if (l->ilo[q] >= l->ihi[q]) l->ilo[q] = l->ihi[q] = 0;
    }
    free(va);
    return NCALC_OK;
}

/* What ncalc_dog_octaves_defer leaves of level 0 for later: the coarser
 * levels' response and scale, to merge row by row (ncalc_dog_defer_rows). */
struct ncalc_dog_defer {
    oct_lvl_t lv[NCALC_OCT_LEVELS];
    int nlev;
    ptrdiff_t rows, cols;
    float *resp;
    uint8_t *scale, *own_scale; /* own_scale: the scratch used when scale was NULL */
    float *cresp;               /* NULL: one level, nothing to merge */
    uint8_t *cscale;
    ptrdiff_t crows, ccols;
    int fine;
    int *state; /* per row: 0 to merge, 1 being merged, 2 done */
};

/* Level L of the octave DoG and, below it, the coarser ones. x: the level
 * image (rows x cols of dtype, row r starting at x + r ld). With the
 * levels' ranges (oct_ranges), only their columns are computed; the rest of
 * resp and scale is left as it was. defer (level 0 only, else NULL): the
 * coarser levels' result is left in it, not merged into resp and scale. */
static int oct_run(const oct_lvl_t *lv, int nlev, int L, const void *x, int dtype, ptrdiff_t ld,
                   float *resp, uint8_t *scale, int nt, ncalc_dog_defer *defer, ncalc_side *side)
{
    const oct_lvl_t *l = &lv[L];
    const bank_t *bk = &l->b;
    const ptrdiff_t rows = l->rows, cols = l->cols;
    const int o = l->o, fused = l->fused, last = L == nlev - 1;
    /* a single pair here, and a coarser level to merge: the scale here is o
     * everywhere, written by the merge only */
    const int fine = fused && l->e - o == 1 && !last ? o : -1;
    int status = NCALC_OK;

    ptrdiff_t crows = (rows + 1) / 2, ccols = (cols + 1) / 2;
    float *low = NULL;
    if (!last) {
        low = ncalc_buffer_get(sizeof(float) * (size_t)crows * (size_t)ccols);
        if (!low) return NCALC_ENOMEM;
    }
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        work_t w;
        const int rm = bk->rmax, nslots = 2 * bk->rmax + 1;
        /* row pointers rp[-rmax .. rmax]; uint16 rows converted to float once
         * each into nslots slots (slot = row % nslots: the rows one output
         * row needs lie within 2 rmax + 1 consecutive indices), tag = row */
        const float **rpm = fused ? malloc(sizeof(const float *) * (size_t)nslots) : NULL;
        float *cache = NULL;
        ptrdiff_t *tag = NULL;
        if (fused && dtype == NCALC_U16) {
            cache = malloc(sizeof(float) * (size_t)nslots * (size_t)cols);
            tag = malloc(sizeof(ptrdiff_t) * (size_t)nslots);
        }
        int ok = work_init(&w, bk, cols);
        if (fused && (!rpm || (dtype == NCALC_U16 && (!cache || !tag)))) {
            if (ok) work_free(&w);
            ok = 0;
        }
        if (!ok) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        } else if (tag) {
            for (int j = 0; j < nslots; j++) tag[j] = -1;
        }
        if (side) {
            /* the caller's work on one thread; the others take the rows
             * meanwhile (dynamic), and so does this one after it */
#pragma omp single nowait
            {
                side->fn(side->arg);
                side->done = 1;
            }
        }
#pragma omp for schedule(dynamic, 32)
        for (ptrdiff_t r = 0; r < rows; r++) {
            if (!ok) continue;
            const ptrdiff_t a = l->olo ? l->olo[r] : 0, b = l->olo ? l->ohi[r] : cols;
            if (a >= b) continue;
            float *lr = low && !(r & 1) ? low + (r >> 1) * ccols : NULL;
            if (!fused) { /* (no ranges: every level is fused when there are) */
                dog_row(x, dtype, rows, cols, ld, r, bk, &w, resp + r * cols, scale + r * cols, o, NULL,
                        NULL, lr);
                continue;
            }
            for (int k = -rm; k <= rm; k++) {
                const ptrdiff_t q = reflect_index(r + k, rows);
                if (dtype == NCALC_U16) {
                    const ptrdiff_t sl = q % nslots;
                    float *restrict d = cache + sl * cols;
                    if (tag[sl] != q) {
                        const ptrdiff_t ca = l->ilo ? l->ilo[q] : 0, cb = l->ilo ? l->ihi[q] : cols;
                        u16_to_float((const uint16_t *)x + q * ld + ca, cb - ca, d + ca);
                        tag[sl] = q;
                    }
                    rpm[k + rm] = d;
                } else {
                    rpm[k + rm] = (const float *)x + q * ld;
                }
            }
            oct_row(rpm + rm, cols, a, b, bk, &w, resp + r * cols, fine >= 0 ? NULL : scale + r * cols, o,
                    lr);
        }
        if (ok) work_free(&w);
        free(rpm);
        free(cache);
        free(tag);
    }
    if (status != NCALC_OK || !low) { ncalc_buffer_put(low); return status; }

    size_t cn = (size_t)crows * (size_t)ccols;
    float *cresp = ncalc_buffer_get(sizeof(float) * cn);
    uint8_t *cscale = ncalc_buffer_get(cn);
    if (!cresp || !cscale) status = NCALC_ENOMEM;
    if (status == NCALC_OK)
        status = oct_run(lv, nlev, L + 1, low, NCALC_F32, ccols, cresp, cscale, nt, NULL, NULL);
    ncalc_buffer_put(low);
    if (status == NCALC_OK && defer) {
        /* the merge is the caller's, row by row (ncalc_dog_defer_rows) */
        defer->cresp = cresp;
        defer->cscale = cscale;
        defer->crows = crows;
        defer->ccols = ccols;
        defer->fine = fine;
        return NCALC_OK;
    }
    if (status == NCALC_OK) {
#pragma omp parallel num_threads(nt)
        {
            float *buf = malloc(sizeof(float) * (size_t)ccols);
            if (!buf) {
#pragma omp atomic write
                status = NCALC_ENOMEM;
            }
#pragma omp for schedule(dynamic, 32)
            for (ptrdiff_t r = 0; r < rows; r++) {
                if (!buf) continue;
                const ptrdiff_t a = l->nlo ? l->nlo[r] : 0, b = l->nlo ? l->nhi[r] : cols;
                if (a < b)
                    merge_up_row_v(r, cols, a, b, cresp, cscale, crows, ccols, buf, resp + r * cols,
                                   scale + r * cols, fine);
            }
            free(buf);
        }
    }
    ncalc_buffer_put(cresp);
    ncalc_buffer_put(cscale);
    return status;
}

int ncalc_dog_octaves(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                      const double *sigmas, int nsigmas, double truncate, double split_sigma,
                      int max_levels, float *resp, uint8_t *scale, int nthreads)
{
    return ncalc_dog_octaves_ld(img, dtype, rows, cols, cols, sigmas, nsigmas, truncate, split_sigma,
                                max_levels, resp, scale, nthreads);
}

int ncalc_dog_octaves_ld(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                         const double *sigmas, int nsigmas, double truncate, double split_sigma,
                         int max_levels, float *resp, uint8_t *scale, int nthreads)
{
    return ncalc_dog_octaves_rows(img, dtype, rows, cols, ld, sigmas, nsigmas, truncate, split_sigma,
                                  max_levels, NULL, NULL, resp, scale, nthreads);
}

int ncalc_dog_octaves_rows(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                           const double *sigmas, int nsigmas, double truncate, double split_sigma,
                           int max_levels, const int32_t *lo, const int32_t *hi, float *resp,
                           uint8_t *scale, int nthreads)
{
    if (!check_image(img, dtype, rows, cols) || ld < cols || !resp ||
        !check_sigmas(sigmas, nsigmas) || !(truncate > 0) || max_levels < 0 || max_levels > 16 ||
        !(split_sigma > 0) || (!lo) != (!hi) || cols > INT32_MAX / 2)
        return NCALC_EINVAL;
    const int nt = resolve_threads(nthreads);
    uint8_t *sc = scale;
    if (!sc) {
        sc = ncalc_buffer_get((size_t)rows * (size_t)cols);
        if (!sc) return NCALC_ENOMEM;
    }
    oct_lvl_t lv[NCALC_OCT_LEVELS];
    int nlev = 0;
    int st = oct_plan(sigmas, nsigmas, rows, cols, truncate, split_sigma, max_levels, lv, &nlev);
    int fused = 1;
    for (int L = 0; L < nlev; L++) fused &= lv[L].fused;
    /* only the ranges' columns computed when every level has the fused row
     * kernel (dog_row computes whole rows; then every pixel is written) */
    if (st == NCALC_OK && lo && fused) st = oct_ranges(lv, nlev, lo, hi);
    if (st == NCALC_OK) st = oct_run(lv, nlev, 0, img, dtype, ld, resp, sc, nt, NULL, NULL);
    oct_free(lv, nlev);
    if (sc != scale) ncalc_buffer_put(sc);
    return st;
}

int ncalc_dog_octaves_defer(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                            const double *sigmas, int nsigmas, double truncate, double split_sigma,
                            int max_levels, const int32_t *lo, const int32_t *hi, float *resp,
                            uint8_t *scale, int nthreads, ncalc_side *side, ncalc_dog_defer **out)
{
    if (!out) return NCALC_EINVAL;
    *out = NULL;
    if (!check_image(img, dtype, rows, cols) || ld < cols || !resp ||
        !check_sigmas(sigmas, nsigmas) || !(truncate > 0) || max_levels < 0 || max_levels > 16 ||
        !(split_sigma > 0) || (!lo) != (!hi) || cols > INT32_MAX / 2)
        return NCALC_EINVAL;
    const int nt = resolve_threads(nthreads);
    ncalc_dog_defer *d = calloc(1, sizeof(ncalc_dog_defer));
    int *state = calloc((size_t)rows, sizeof(int));
    uint8_t *sc = scale ? scale : ncalc_buffer_get((size_t)rows * (size_t)cols);
    if (!d || !state || !sc) {
        free(d);
        free(state);
        if (sc != scale) ncalc_buffer_put(sc);
        return NCALC_ENOMEM;
    }
    d->rows = rows;
    d->cols = cols;
    d->resp = resp;
    d->scale = sc;
    d->own_scale = sc != scale ? sc : NULL;
    d->state = state;
    int st = oct_plan(sigmas, nsigmas, rows, cols, truncate, split_sigma, max_levels, d->lv, &d->nlev);
    int fused = 1;
    for (int L = 0; L < d->nlev; L++) fused &= d->lv[L].fused;
    if (st == NCALC_OK && lo && fused) st = oct_ranges(d->lv, d->nlev, lo, hi);
    if (st == NCALC_OK) st = oct_run(d->lv, d->nlev, 0, img, dtype, ld, resp, sc, nt, d, side);
    if (st != NCALC_OK) {
        ncalc_dog_defer_free(d);
        return st;
    }
    *out = d;
    return NCALC_OK;
}

/* Merge row r of d (its state is 1: this thread's). */
static void defer_merge_row(const ncalc_dog_defer *d, ptrdiff_t r, float *trow)
{
    const oct_lvl_t *l = &d->lv[0];
    const ptrdiff_t a = l->nlo ? l->nlo[r] : 0, b = l->nlo ? l->nhi[r] : d->cols;
    if (a < b)
        merge_up_row_v(r, d->cols, a, b, d->cresp, d->cscale, d->crows, d->ccols, trow,
                       d->resp + r * d->cols, d->scale + r * d->cols, d->fine);
}

int ncalc_dog_defer_rows(ncalc_dog_defer *d, ptrdiff_t r0, ptrdiff_t r1)
{
    if (!d) return NCALC_EINVAL;
    if (r0 < 0) r0 = 0;
    if (r1 > d->rows) r1 = d->rows;
    if (r0 >= r1 || !d->cresp) return NCALC_OK;
    float *trow = malloc(sizeof(float) * (size_t)d->ccols);
    if (!trow) return NCALC_ENOMEM;
    for (ptrdiff_t r = r0; r < r1; r++) {
        int *s = &d->state[r];
#if defined(__GNUC__) || defined(__clang__)
        /* the first thread to claim the row (0 -> 1) merges it (-> 2); the
         * others wait for that, a row's work */
        if (__atomic_load_n(s, __ATOMIC_ACQUIRE) == 2) continue;
        int expected = 0;
        if (__atomic_compare_exchange_n(s, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            defer_merge_row(d, r, trow);
            __atomic_store_n(s, 2, __ATOMIC_RELEASE);
        } else {
            while (__atomic_load_n(s, __ATOMIC_ACQUIRE) != 2) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            }
        }
#else
        /* (no atomics: one merge at a time) */
#ifdef _OPENMP
#pragma omp critical(ncalc_dog_defer)
#endif
        {
            if (*s != 2) {
                defer_merge_row(d, r, trow);
                *s = 2;
            }
        }
#endif
    }
    free(trow);
    return NCALC_OK;
}

int ncalc_dog_defer_finish(ncalc_dog_defer *d, int nthreads)
{
    if (!d) return NCALC_EINVAL;
    if (!d->cresp) return NCALC_OK;
    ptrdiff_t left = 0; /* (none, after a full noise pass: no team woken for nothing) */
    for (ptrdiff_t r = 0; r < d->rows; r++) left += d->state[r] != 2;
    if (!left) return NCALC_OK;
    const int nt = resolve_threads(nthreads);
    int status = NCALC_OK;
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        float *trow = malloc(sizeof(float) * (size_t)d->ccols);
        if (!trow) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(dynamic, 32)
        for (ptrdiff_t r = 0; r < d->rows; r++)
            if (trow && d->state[r] != 2) { /* (no other thread merges now) */
                defer_merge_row(d, r, trow);
                d->state[r] = 2;
            }
        free(trow);
    }
    return status;
}

void ncalc_dog_defer_free(ncalc_dog_defer *d)
{
    if (!d) return;
    ncalc_buffer_put(d->cresp);
    ncalc_buffer_put(d->cscale);
    ncalc_buffer_put(d->own_scale);
    oct_free(d->lv, d->nlev);
    free(d->state);
    free(d);
}
