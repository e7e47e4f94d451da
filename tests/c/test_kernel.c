/*
 * C-level smoke and memory-safety test of the kernel (the csrc C files), meant to
 * run under AddressSanitizer / UndefinedBehaviorSanitizer or valgrind:
 *
 *   cc -O1 -g -std=c99 -fsanitize=address,undefined -fno-omit-frame-pointer \
 *      -Icsrc csrc/[a-z]*.c tests/c/test_kernel.c -lm -o /tmp/ncalc_test && /tmp/ncalc_test
 *   cc -O1 -g -std=c99 -Icsrc csrc/[a-z]*.c tests/c/test_kernel.c -lm -o /tmp/ncalc_vg && \
 *      valgrind --error-exitcode=1 --leak-check=full /tmp/ncalc_vg
 *
 * Every entry point runs on images from 1x1 up, including shapes much
 * smaller than the kernels, both dtypes, and with masks and grids. The
 * numerical agreement with SciPy is tests/test_kernel_reference.py's job;
 * this program checks invariants that need no reference (finite outputs,
 * counts, symmetric images give symmetric responses) and exits non-zero on
 * any failure.
 */
#if (defined(__unix__) || defined(__APPLE__)) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* fork, waitpid, _exit */
#endif
#include "ncalc.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)

static unsigned long long rng_state = 88172645463325252ULL;
static unsigned rnd(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 11);
}

static void run_shape(ptrdiff_t rows, ptrdiff_t cols, int dtype)
{
    size_t n = (size_t)rows * (size_t)cols;
    /* exact-size heap blocks so that ASan / valgrind see any overrun */
    void *img = malloc(n * (dtype == NCALC_U16 ? 2 : 4));
    for (size_t i = 0; i < n; i++) {
        if (dtype == NCALC_U16) ((uint16_t *)img)[i] = (uint16_t)(rnd() % 4096);
        else ((float *)img)[i] = (float)(rnd() % 10000) / 7.0f;
    }
    float *g = malloc(n * sizeof(float));
    float *resp = malloc(n * sizeof(float));
    uint8_t *scale = malloc(n);
    uint8_t *mask = malloc(n);
    for (size_t i = 0; i < n; i++) mask[i] = (uint8_t)(rnd() % 4 != 0);
    const double sig[] = {0.5, 0.8, 1.28, 2.05, 3.28, 5.24, 8.4};
    const int nsig = 7;

    for (int t = 1; t <= 2; t++) {
        CHECK(ncalc_gaussian(img, dtype, rows, cols, 3.1, 4.0, g, t) == NCALC_OK, "gaussian");
        for (size_t i = 0; i < n; i++) CHECK(isfinite(g[i]), "gaussian finite");
        CHECK(ncalc_dog_response(img, dtype, rows, cols, sig, nsig, 4.0, resp, scale, t) == NCALC_OK, "dog");
        for (size_t i = 0; i < n; i++) {
            CHECK(isfinite(resp[i]), "dog finite %zu", i);
            CHECK(scale[i] < nsig - 1, "dog scale");
        }
        CHECK(ncalc_dog_response(img, dtype, rows, cols, sig, nsig, 4.0, resp, NULL, t) == NCALC_OK, "dog no scale");
        for (int lev = 0; lev <= 2; lev += 2) {
            CHECK(ncalc_dog_pyramid(img, dtype, rows, cols, sig, nsig, 4.0, 2.0, 1.5, lev, resp, scale, t)
                  == NCALC_OK, "pyramid");
            for (size_t i = 0; i < n; i++) {
                CHECK(isfinite(resp[i]), "pyramid finite");
                CHECK(scale[i] < nsig - 1, "pyramid scale %d", scale[i]);
            }
        }
        /* octave DoG: exact DoG at levels 0, deeper levels otherwise */
        for (int lev = 0; lev <= 16; lev += lev < 2 ? 1 : 14)
            for (int sp = 0; sp < 2; sp++) {
                CHECK(ncalc_dog_octaves(img, dtype, rows, cols, sig, nsig, 4.0, sp ? 1.9 : 1.0, lev, resp,
                                        sp ? scale : NULL, t) == NCALC_OK, "octaves");
                for (size_t i = 0; i < n; i++) CHECK(isfinite(resp[i]), "octaves finite");
                if (sp)
                    for (size_t i = 0; i < n; i++) CHECK(scale[i] < nsig - 1, "octaves scale %d", scale[i]);
            }
        /* all scales coarse (m = 0) */
        CHECK(ncalc_dog_pyramid(img, dtype, rows, cols, sig + 3, 4, 4.0, 2.0, 1.5, 2, resp, NULL, t) == NCALC_OK,
              "pyramid all coarse");

        ptrdiff_t tile = 3;
        ptrdiff_t gh = (rows + tile - 1) / tile, gw = (cols + tile - 1) / tile;
        float *grid = malloc(sizeof(float) * (size_t)(gh * gw));
        CHECK(ncalc_tile_noise(resp, rows, cols, mask, tile, 2, grid, t) == NCALC_OK, "tile noise");
        CHECK(ncalc_tile_noise(resp, rows, cols, NULL, tile, 2, grid, t) == NCALC_OK, "tile noise");
        for (ptrdiff_t i = 0; i < gh * gw; i++) if (isnan(grid[i])) grid[i] = 1.0f;
        double s = ncalc_mad_noise(resp, rows, cols, mask, 2);
        CHECK(n < 2 || s >= 0 || isnan(s), "mad");
        int32_t *rr = malloc(sizeof(int32_t) * n), *cc = malloc(sizeof(int32_t) * n);
        ptrdiff_t np_ = ncalc_nms(resp, rows, cols, mask, grid, tile, 0.5f, 2, rr, cc, (ptrdiff_t)n);
        CHECK(np_ >= 0 && np_ <= (ptrdiff_t)n, "nms count");
        ptrdiff_t np2 = ncalc_nms(resp, rows, cols, NULL, NULL, 1, -1e30f, 0, rr, cc, 1);
        CHECK(np2 == (ptrdiff_t)n, "nms every pixel a peak at radius 0: %td of %zu", np2, n);
        float *f = malloc(sizeof(float) * 5 * n);
        float *rad = malloc(sizeof(float) * n);
        /* candidates: the four corners, then a sparse lattice (at most ~300) */
        ptrdiff_t nc = 0, step = 1;
        while ((rows / step + 1) * (cols / step + 1) > 300) step++;
        const ptrdiff_t corner[4][2] = {{0, 0}, {0, cols - 1}, {rows - 1, 0}, {rows - 1, cols - 1}};
        for (int q = 0; q < 4 && nc < (ptrdiff_t)n; q++) {
            rr[nc] = (int32_t)corner[q][0]; cc[nc] = (int32_t)corner[q][1];
            rad[nc] = 0.5f + (float)(rnd() % 60) / 10.0f;
            nc++;
        }
        for (ptrdiff_t r = 0; r < rows; r += step)
            for (ptrdiff_t c = 0; c < cols && nc < (ptrdiff_t)n; c += step) {
                rr[nc] = (int32_t)r; cc[nc] = (int32_t)c;
                rad[nc] = 0.5f + (float)(rnd() % 60) / 10.0f;
                nc++;
            }
        CHECK(ncalc_candidate_features(img, dtype, rows, cols, rr, cc, rad, nc, f, f + n, f + 2 * n,
                                       f + 3 * n, f + 4 * n, t) == NCALC_OK, "features");
        CHECK(ncalc_local_hessian(img, dtype, rows, cols, rr, cc, rad, nc, 3.5, f, f + n, f + 2 * n,
                                  f + 3 * n, t) == NCALC_OK, "local hessian");
        for (int q = 0; q < 4; q++)
            for (ptrdiff_t i = 0; i < nc; i++) CHECK(isfinite(f[q * n + i]), "hessian finite");
        /* three scales in one pass: the same bits as three separate calls
         * (sigma up to 6.4, 12.8 and 10: windows of many sizes, reflected) */
        {
            float *s2 = malloc(sizeof(float) * n), *s3 = malloc(sizeof(float) * n);
            float *h3 = malloc(sizeof(float) * 12 * n), *h1 = malloc(sizeof(float) * 4 * n);
            for (ptrdiff_t i = 0; i < nc; i++) { s2[i] = 2.0f * rad[i]; s3[i] = 10.0f; }
            CHECK(ncalc_local_hessian3(img, dtype, rows, cols, rr, cc, nc, rad, s2, s3, 3.5, h3, t)
                  == NCALC_OK, "local hessian3");
            const float *sk[3] = {rad, s2, s3};
            for (int k = 0; k < 3; k++) {
                CHECK(ncalc_local_hessian(img, dtype, rows, cols, rr, cc, sk[k], nc, 3.5, h1, h1 + nc,
                                          h1 + 2 * nc, h1 + 3 * nc, t) == NCALC_OK, "local hessian k");
                CHECK(memcmp(h1, h3 + 4 * k * nc, sizeof(float) * 4 * (size_t)nc) == 0,
                      "local hessian3 scale %d as a separate call", k);
            }
            /* without some scales' cross derivative: those rows untouched,
             * every other value the same bits */
            {
                float *hx = malloc(sizeof(float) * 12 * n);
                for (int mask = 0; mask < 8; mask++) {
                    const int cross[3] = {mask & 1, (mask >> 1) & 1, (mask >> 2) & 1};
                    for (ptrdiff_t i = 0; i < 12 * nc; i++) hx[i] = -12345.0f;
                    CHECK(ncalc_local_hessian3_cross(img, dtype, rows, cols, rr, cc, nc, rad, s2, s3, 3.5,
                                                     cross, hx, t) == NCALC_OK, "local hessian3 cross");
                    for (int k = 0; k < 3; k++)
                        for (int m = 0; m < 4; m++) {
                            const float *got = hx + (4 * k + m) * nc, *want = h3 + (4 * k + m) * nc;
                            if (m == 2 && !cross[k]) {
                                int untouched = 1;
                                for (ptrdiff_t i = 0; i < nc; i++) untouched &= got[i] == -12345.0f;
                                CHECK(untouched, "cross %d: scale %d's cross term untouched", mask, k);
                            } else {
                                CHECK(memcmp(got, want, sizeof(float) * (size_t)nc) == 0,
                                      "cross %d: scale %d output %d as local hessian3", mask, k, m);
                            }
                        }
                }
                CHECK(ncalc_local_hessian3_cross(img, dtype, rows, cols, rr, cc, nc, rad, s2, s3, 3.5,
                                                 NULL, hx, t) == NCALC_EINVAL, "local hessian3 cross NULL");
                free(hx);
            }
            free(s2); free(s3); free(h3); free(h1);
        }
        free(f); free(rad); free(rr); free(cc); free(grid);
    }
    free(img); free(g); free(resp); free(scale); free(mask);
}

static void symmetry(void)
{
    /* an image symmetric under left-right flip gives a flipped response */
    ptrdiff_t rows = 33, cols = 40;
    float *img = malloc(sizeof(float) * rows * cols), *resp = malloc(sizeof(float) * rows * cols);
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t c = 0; c < cols / 2; c++)
            img[r * cols + c] = img[r * cols + cols - 1 - c] = (float)(rnd() % 1000);
    const double sig[] = {0.6, 1.0, 1.6, 2.6, 4.1};
    CHECK(ncalc_dog_pyramid(img, NCALC_F32, rows, cols, sig, 5, 4.0, 2.0, 1.5, 0, resp, NULL, 1) == NCALC_OK, "sym");
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t c = 0; c < cols; c++)
            CHECK(fabsf(resp[r * cols + c] - resp[r * cols + cols - 1 - c]) <= 1e-3f, "symmetry");
    free(img); free(resp);
}

static void bad_arguments(void)
{
    float x[4] = {0};
    float out[4];
    const double good[] = {1.0, 2.0}, bad[] = {2.0, 1.0};
    CHECK(ncalc_gaussian(NULL, NCALC_F32, 2, 2, 1.0, 4.0, out, 1) == NCALC_EINVAL, "null");
    CHECK(ncalc_gaussian(x, 7, 2, 2, 1.0, 4.0, out, 1) == NCALC_EINVAL, "dtype");
    CHECK(ncalc_gaussian(x, NCALC_F32, 0, 2, 1.0, 4.0, out, 1) == NCALC_EINVAL, "rows");
    CHECK(ncalc_dog_response(x, NCALC_F32, 2, 2, bad, 2, 4.0, out, NULL, 1) == NCALC_EINVAL, "order");
    CHECK(ncalc_dog_response(x, NCALC_F32, 2, 2, good, 1, 4.0, out, NULL, 1) == NCALC_EINVAL, "n");
    CHECK(ncalc_dog_pyramid(x, NCALC_F32, 2, 2, good, 2, 4.0, 1.0, 1.5, 1, out, NULL, 1) == NCALC_EINVAL, "split");
    CHECK(ncalc_dog_octaves(x, NCALC_F32, 2, 2, good, 2, 4.0, 0.0, 1, out, NULL, 1) == NCALC_EINVAL, "oct split");
    CHECK(ncalc_dog_octaves(x, NCALC_F32, 2, 2, good, 2, 4.0, 1.9, 17, out, NULL, 1) == NCALC_EINVAL, "oct levels");
    CHECK(ncalc_dog_octaves(x, NCALC_F32, 2, 2, bad, 2, 4.0, 1.9, 1, out, NULL, 1) == NCALC_EINVAL, "oct order");
    CHECK(ncalc_tile_noise(x, 2, 2, NULL, 0, 2, out, 1) == NCALC_EINVAL, "tile");
    CHECK(ncalc_nms(x, 2, 2, NULL, NULL, 1, 0.f, -1, NULL, NULL, 0) == NCALC_EINVAL, "radius");
}

/* The paths of the noise, NMS and block-mean code that small tiles and
 * finite data do not reach: tiles of more than 1024 pixels (the
 * sample-bracketed selection, with heavy tails and ties), NaNs and
 * infinities (the radix selection; the NMS rerun in exact order), and
 * block means of every size around the image's. */
static void stage_paths(void)
{
    const ptrdiff_t rows = 131, cols = 97, n = rows * cols;
    float *x = malloc(sizeof(float) * n);
    uint8_t *mask = malloc(n);
    uint16_t *u = malloc(sizeof(uint16_t) * n);
    for (ptrdiff_t i = 0; i < n; i++) {
        unsigned r = rnd();
        x[i] = (r % 7 == 0) ? (float)(r % 5) : ((float)(r % 100000) - 50000.f) / (float)(1 + r % 13);
        mask[i] = (uint8_t)(rnd() % 5 != 0);
        u[i] = (uint16_t)(rnd() % 65536);
    }
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) { x[5] = NAN; x[n / 2] = INFINITY; x[n - 3] = -INFINITY; }
        for (ptrdiff_t tile = 33; tile <= 140; tile += 107) {
            ptrdiff_t gh = (rows + tile - 1) / tile, gw = (cols + tile - 1) / tile;
            float *grid = malloc(sizeof(float) * (size_t)(gh * gw));
            for (int t = 1; t <= 2; t++) {
                CHECK(ncalc_tile_noise(x, rows, cols, mask, tile, 16, grid, t) == NCALC_OK, "tile noise big");
                for (ptrdiff_t i = 0; i < gh * gw; i++) CHECK(pass || grid[i] >= 0, "tile noise value");
                CHECK(ncalc_tile_noise(x, rows, cols, NULL, tile, 16, grid, t) == NCALC_OK, "tile noise big");
                for (ptrdiff_t st = 2; st <= 3; st++) {
                    CHECK(ncalc_tile_noise_strided(x, rows, cols, mask, tile, st, 16, grid, t) == NCALC_OK,
                          "tile noise strided");
                    CHECK(ncalc_tile_noise_strided(x, rows, cols, NULL, tile, st, 2, grid, t) == NCALC_OK,
                          "tile noise strided");
                }
            }
            free(grid);
        }
        for (ptrdiff_t stride = 1; stride <= 3; stride++) {
            double s = ncalc_mad_noise(x, rows, cols, mask, stride);
            CHECK(pass || s >= 0, "mad big");
            s = ncalc_mad_noise(x, rows, cols, NULL, stride);
            CHECK(pass || s >= 0, "mad big");
        }
        int32_t *rr = malloc(sizeof(int32_t) * n), *cc = malloc(sizeof(int32_t) * n);
        /* radii up to 5, windows wider than 16 columns, a radius wider than a chunk of rows */
        const int radii[] = {0, 1, 2, 3, 4, 5, 8, 9, 70};
        for (size_t ri = 0; ri < sizeof radii / sizeof radii[0]; ri++) {
            const int radius = radii[ri];
            ptrdiff_t np_ = ncalc_nms(x, rows, cols, mask, NULL, 1, 0.0f, radius, rr, cc, n);
            CHECK(np_ >= 0 && np_ <= n, "nms count");
            ptrdiff_t np2 = ncalc_nms(x, rows, cols, NULL, NULL, 1, -1e30f, radius, rr, cc, 7);
            CHECK(np2 >= 0 && np2 <= n, "nms count short buffer");
        }
        free(rr); free(cc);
    }
    double *out = malloc(sizeof(double) * n);
    const ptrdiff_t fs[] = {1, 2, 3, 14, 96, 97, 98, 131, 132};
    for (size_t a = 0; a < sizeof fs / sizeof fs[0]; a++)
        for (size_t b = 0; b < sizeof fs / sizeof fs[0]; b++)
            for (int t = 1; t <= 2; t++) {
                CHECK(ncalc_block_mean(u, NCALC_U16, rows, cols, fs[a], fs[b], out, t) == NCALC_OK, "block mean");
                ptrdiff_t m = (rows / fs[a]) * (cols / fs[b]);
                for (ptrdiff_t i = 0; i < m; i++) CHECK(out[i] >= 0 && out[i] <= 65535, "block mean range");
                CHECK(ncalc_block_mean(x, NCALC_F32, rows, cols, fs[a], fs[b], out, t) == NCALC_OK, "block mean");
            }
    CHECK(ncalc_block_mean(u, NCALC_U16, rows, cols, 0, 1, out, 1) == NCALC_EINVAL, "block mean fy");
    CHECK(ncalc_tile_noise_strided(x, rows, cols, NULL, 8, 0, 2, (float *)out, 1) == NCALC_EINVAL, "stride");
    CHECK(ncalc_block_mean(u, 9, rows, cols, 1, 1, out, 1) == NCALC_EINVAL, "block mean dtype");
    free(out); free(x); free(mask); free(u);
}

/* The row-pitch (_ld) entry points read a crop of a larger buffer exactly
 * as their contiguous counterparts read a copy of it; the noise-level
 * function's sampling and binned medians on shapes from 3x3 up. Buffers
 * end at the last pixel read, so any overrun shows under ASan. */
static void crops_and_nlf(void)
{
    const ptrdiff_t shapes[][2] = {{1, 1}, {2, 3}, {3, 3}, {5, 40}, {33, 32}, {67, 131}, {131, 67}};
    const double sig[] = {0.5, 0.8, 1.28, 2.05, 3.28, 5.24, 8.4};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const ptrdiff_t rows = shapes[s][0], cols = shapes[s][1], ld = cols + 5;
        const size_t n = (size_t)rows * (size_t)cols, big = (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
        for (int dtype = 0; dtype < 2; dtype++) {
            const size_t item = dtype == NCALC_U16 ? 2 : 4;
            unsigned char *wide = malloc(big * item), *copy = malloc(n * item);
            for (size_t i = 0; i < big; i++) {
                if (dtype == NCALC_U16) ((uint16_t *)wide)[i] = (uint16_t)(rnd() % 4096);
                else ((float *)wide)[i] = (float)(rnd() % 10000) / 7.0f;
            }
            for (ptrdiff_t r = 0; r < rows; r++)
                memcpy(copy + (size_t)r * cols * item, wide + (size_t)r * ld * item, (size_t)cols * item);
            float *r1 = malloc(n * 4), *r2 = malloc(n * 4);
            uint8_t *s1 = malloc(n), *s2 = malloc(n);
            for (int t = 1; t <= 2; t++) {
                CHECK(ncalc_dog_octaves_ld(wide, dtype, rows, cols, ld, sig, 7, 3.0, 1.2, 16, r1, s1, t)
                      == NCALC_OK, "octaves ld");
                CHECK(ncalc_dog_octaves(copy, dtype, rows, cols, sig, 7, 3.0, 1.2, 16, r2, s2, t) == NCALC_OK,
                      "octaves");
                CHECK(memcmp(r1, r2, n * 4) == 0 && memcmp(s1, s2, n) == 0, "octaves ld = copy %tdx%td",
                      rows, cols);
            }
            CHECK(ncalc_dog_octaves_ld(wide, dtype, rows, cols, cols - 1, sig, 7, 3.0, 1.2, 16, r1, s1, 1)
                  == NCALC_EINVAL, "octaves ld < cols");
            /* masks rows ld apart: tile noise and NMS as with a copy */
            uint8_t *mwide = malloc(big), *mcopy = malloc(n);
            for (size_t i = 0; i < big; i++) mwide[i] = (uint8_t)(rnd() % 3 != 0);
            for (ptrdiff_t r = 0; r < rows; r++) memcpy(mcopy + r * cols, mwide + r * ld, (size_t)cols);
            const ptrdiff_t tile = 4, gn = ((rows + 3) / 4) * ((cols + 3) / 4);
            float *g1 = malloc(sizeof(float) * (size_t)gn), *g2 = malloc(sizeof(float) * (size_t)gn);
            CHECK(ncalc_tile_noise_ld(r2, rows, cols, mwide, ld, tile, 2, g1, 2) == NCALC_OK, "tile ld");
            CHECK(ncalc_tile_noise(r2, rows, cols, mcopy, tile, 2, g2, 2) == NCALC_OK, "tile");
            CHECK(memcmp(g1, g2, sizeof(float) * (size_t)gn) == 0, "tile ld = copy");
            CHECK(ncalc_tile_noise_ld(r2, rows, cols, mwide, cols - 1, tile, 2, g1, 2) == NCALC_EINVAL,
                  "tile ld < cols");
            for (ptrdiff_t i = 0; i < gn; i++) g2[i] = isnan(g2[i]) ? 1.0f : g2[i] * 0.01f;
            int32_t *a = malloc(sizeof(int32_t) * 4 * n);
            ptrdiff_t na = ncalc_nms_ld(r2, rows, cols, mwide, ld, g2, tile, 0.5f, 2, a, a + n, (ptrdiff_t)n, 0);
            ptrdiff_t nb = ncalc_nms(r2, rows, cols, mcopy, g2, tile, 0.5f, 2, a + 2 * n, a + 3 * n, (ptrdiff_t)n);
            CHECK(na == nb && na >= 0, "nms ld count %td %td", na, nb);
            for (ptrdiff_t i = 0; i < na && na == nb; i++)
                CHECK(a[i] == a[2 * n + i] && a[n + i] == a[3 * n + i], "nms ld = copy");
            CHECK(ncalc_nms_ld(r2, rows, cols, mwide, cols - 1, g2, tile, 0.5f, 2, a, a + n, 1, 0) == NCALC_EINVAL,
                  "nms ld < cols");
            free(a); free(g1); free(g2); free(mwide); free(mcopy);

            /* noise-level-function samples: planes of the copy, k = 1..3 */
            for (ptrdiff_t k = 1; k <= 3; k++) {
                if (rows < 3 || cols < 3) {
                    CHECK(ncalc_nlf_samples(copy, dtype, 1, 0, rows, cols, cols, k, NULL, r1, r1, 1)
                          == NCALC_EINVAL, "nlf small");
                    continue;
                }
                const ptrdiff_t nr = (rows - 2 + k - 1) / k, nc = (cols - 2 + k - 1) / k;
                uint8_t *sm = malloc((size_t)(nr * nc));
                ptrdiff_t want = 0;
                for (ptrdiff_t i = 0; i < nr * nc; i++) want += (sm[i] = (uint8_t)(rnd() % 2));
                float *res = malloc(sizeof(float) * (size_t)(2 * nr * nc)), *lev = malloc(sizeof(float) * (size_t)(2 * nr * nc));
                ptrdiff_t got = ncalc_nlf_samples(copy, dtype, 1, 0, rows, cols, cols, k, sm, res, lev, 1);
                CHECK(got == want, "nlf samples %td of %td", got, want);
                for (ptrdiff_t i = 0; i < got; i++) CHECK(isfinite(res[i]) && isfinite(lev[i]), "nlf finite");
                got = ncalc_nlf_samples(wide, dtype, 1, 0, rows, cols, ld, k, NULL, res, lev, 1);
                CHECK(got == nr * nc, "nlf samples all");
                ptrdiff_t cnt[4];
                float lm[4], md[4];
                const double edges[3] = {100.0, 200.0, 400.0};
                CHECK(ncalc_nlf_bins(lev, res, got, edges, 3, cnt, lm, md, 2) == NCALC_OK, "nlf bins");
                CHECK(cnt[0] + cnt[1] + cnt[2] + cnt[3] == got, "nlf bins count");
                for (int b = 0; b < 4; b++)
                    CHECK(cnt[b] ? (isfinite(lm[b]) && md[b] >= 0) : isnan(lm[b]), "nlf bins values");
                free(sm); free(res); free(lev);
            }
            free(wide); free(copy); free(r1); free(r2); free(s1); free(s2);
        }
    }
    /* bins: no samples, one bin, bad arguments */
    ptrdiff_t cnt[3];
    float lm[3], md[3], v[2] = {1.0f, 2.0f}, inf[2] = {1.0f, INFINITY};
    const double e2[2] = {1.5, 0.5};
    CHECK(ncalc_nlf_bins(v, v, 0, NULL, 0, cnt, lm, md, 1) == NCALC_OK && cnt[0] == 0, "nlf bins empty");
    CHECK(ncalc_nlf_bins(v, v, 2, NULL, 0, cnt, lm, md, 1) == NCALC_OK && cnt[0] == 2 && lm[0] == 1.5f &&
          md[0] == 0.5f, "nlf bins one bin");
    CHECK(ncalc_nlf_bins(v, v, 2, e2, 2, cnt, lm, md, 1) == NCALC_EINVAL, "nlf bins decreasing edges");
    CHECK(ncalc_nlf_bins(inf, v, 2, NULL, 0, cnt, lm, md, 1) == NCALC_EINVAL, "nlf bins non-finite");
    {
        /* the curve: empty bins out, running median, floor, unique levels */
        const ptrdiff_t c5[5] = {3, 0, 2, 4, 1};
        const float l5[5] = {1.0f, 9.0f, 2.0f, 2.0f, 0.5f}, m5[5] = {0.0f, 5.0f, 2.0f, 1.0f, 4.0f};
        double lv[5], sd[5];
        int m = -1;
        CHECK(ncalc_nlf_curve(c5, l5, m5, 5, lv, sd, &m) == NCALC_OK && m == 3, "nlf curve count %d", m);
        /* sd before: k (0, 2, 1, 4), k = 1.4826 / sqrt(1.25); running median
         * (0, 1, 2, 4) k; floor k: (1, 1, 2, 4) k; levels (1, 2, 2, 0.5)
         * sorted: 0.5 (4k), 1 (k), 2 (the first: k) */
        const double k = 1.4826 / sqrt(1.25);
        CHECK(m == 3 && lv[0] == 0.5 && lv[1] == 1.0 && lv[2] == 2.0 && sd[0] == 4.0 * k && sd[1] == 1.0 * k &&
                  sd[2] == 1.0 * k,
              "nlf curve values");
        CHECK(ncalc_nlf_curve(c5, l5, m5, 0, NULL, NULL, &m) == NCALC_OK && m == 0, "nlf curve empty");
        CHECK(ncalc_nlf_curve(c5, l5, m5, -1, lv, sd, &m) == NCALC_EINVAL, "nlf curve bad count");
    }

    /* many samples (the bins found on the threads): each bin's count is
     * the number of levels with that many edges at or below them, and the
     * results do not depend on the thread count; a NaN in the last share */
    {
        const ptrdiff_t n = 70001;
        float *lev = malloc(sizeof(float) * (size_t)n), *res = malloc(sizeof(float) * (size_t)n);
        for (ptrdiff_t i = 0; i < n; i++) {
            lev[i] = (float)(rnd() % 2001) * 0.1f - 50.0f;
            res[i] = (float)(rnd() % 1000) * 0.01f;
        }
        const double ed[6] = {-1e300, -20.0, -0.1, 0.1 + 1e-12, 7.3, 1e300};
        ptrdiff_t want[7] = {0}, c1[7], cn[7];
        float l1[7], m1[7], ln[7], mn[7];
        for (ptrdiff_t i = 0; i < n; i++) {
            int b = 0;
            for (int e = 0; e < 6; e++) b += ed[e] <= (double)lev[i];
            want[b]++;
        }
        CHECK(ncalc_nlf_bins(lev, res, n, ed, 6, c1, l1, m1, 1) == NCALC_OK, "nlf bins large");
        for (int b = 0; b < 7; b++) CHECK(c1[b] == want[b], "nlf bins large count %d", b);
        for (int nt = 2; nt <= 3; nt++) {
            CHECK(ncalc_nlf_bins(lev, res, n, ed, 6, cn, ln, mn, nt) == NCALC_OK, "nlf bins large threads");
            for (int b = 0; b < 7; b++)
                CHECK(cn[b] == c1[b] && memcmp(&ln[b], &l1[b], sizeof(float)) == 0 &&
                      memcmp(&mn[b], &m1[b], sizeof(float)) == 0, "nlf bins threads %d bin %d", nt, b);
        }
        lev[n - 1] = NAN;
        CHECK(ncalc_nlf_bins(lev, res, n, ed, 6, cn, ln, mn, 3) == NCALC_EINVAL, "nlf bins large NaN");
        free(lev);
        free(res);
    }
}

/* The entry points of the serial steps of detect: sort, mask upscaling,
 * peak values, top k; sizes from 0 up, checked against plain loops. */
static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void serial_steps(void)
{
    /* (from 32768 values the sort and the top k share their passes between threads) */
    for (ptrdiff_t n = 0; n <= 70001; n = n < 20 ? n + 1 : n < 300 ? n + 37 : n < 32768 ? 32768 : n + 37233) {
        const int nt = 1 + (int)(n % 3);
        float *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
        float *o = malloc(sizeof(float) * (size_t)(n ? n : 1));
        float *r = malloc(sizeof(float) * (size_t)(n ? n : 1));
        for (ptrdiff_t i = 0; i < n; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) * 0.37f;
        if (n > 3) { x[0] = INFINITY; x[1] = -INFINITY; x[2] = 1e-45f; }
        memcpy(r, x, sizeof(float) * (size_t)n);
        qsort(r, (size_t)n, sizeof(float), cmp_float);
        CHECK(ncalc_sort_f32(x, n, o, nt) == NCALC_OK, "sort");
        for (ptrdiff_t i = 0; i < n; i++) CHECK(o[i] == r[i], "sort %td at %td", n, i);
        CHECK(ncalc_sort_f32(x, n, x, 4 - nt) == NCALC_OK, "sort in place"); /* x and out the same */
        for (ptrdiff_t i = 0; i < n; i++) CHECK(x[i] == r[i], "sort in place %td at %td", n, i);
        if (n) {
            x[n / 2] = NAN;
            CHECK(ncalc_sort_f32(x, n, o, nt) == NCALC_EINVAL, "sort NaN");
        }
        /* top k of doubles with ties, k = 0 .. n */
        double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
        int64_t *idx = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
        for (ptrdiff_t i = 0; i < n; i++) v[i] = (double)(rnd() % 7) - 3.0;
        if (n > 2) { v[0] = -0.0; v[1] = 0.0; }
        for (ptrdiff_t k = 0; k <= n; k += 1 + n / 7) {
            CHECK(ncalc_top_k(v, n, k, idx, 1 + (int)(k % 3)) == k, "top k count");
            /* every index taken has a value >= every one not taken, the
             * indices increase, and of equal values the earliest are taken */
            ptrdiff_t j = 0, last_lo = -1;
            double lo = INFINITY;
            for (ptrdiff_t i = 0; i < k; i++) {
                CHECK(idx[i] >= 0 && idx[i] < n && (i == 0 || idx[i] > idx[i - 1]), "top k order");
                if (v[idx[i]] < lo) lo = v[idx[i]];
            }
            for (ptrdiff_t i = 0; i < k; i++)
                if (v[idx[i]] == lo) last_lo = idx[i];
            for (ptrdiff_t i = 0; i < n; i++) {
                if (j < k && idx[j] == i) { j++; continue; }
                CHECK(v[i] <= lo, "top k value");
                CHECK(!(v[i] == lo && i < last_lo), "top k earliest"); /* a later equal one was taken */
            }
        }
        if (n) {
            v[n - 1] = NAN;
            CHECK(ncalc_top_k(v, n, n / 2, idx, nt) == NCALC_EINVAL, "top k NaN");
        }
        CHECK(ncalc_top_k(v, n, n + 1, idx, nt) == NCALC_EINVAL, "top k k > n");
        free(x); free(o); free(r); free(v); free(idx);
    }
    /* mask upscaling, with rows and columns left over */
    for (ptrdiff_t hh = 1; hh <= 5; hh += 2)
        for (ptrdiff_t ww = 1; ww <= 6; ww += 5)
            for (ptrdiff_t f = 1; f <= 3; f++) {
                const ptrdiff_t rows = hh * f + (f > 1), cols = ww * (f + 1) + 2;
                uint8_t *sm = malloc((size_t)(hh * ww)), *out = malloc((size_t)(rows * cols));
                for (ptrdiff_t i = 0; i < hh * ww; i++) sm[i] = (uint8_t)(rnd() % 3); /* 2: nonzero */
                for (int t = 1; t <= 3; t++) {
                    CHECK(ncalc_upscale_mask(sm, hh, ww, f, f + 1, rows, cols, out, t) == NCALC_OK, "upscale");
                    for (ptrdiff_t r = 0; r < rows; r++)
                        for (ptrdiff_t c = 0; c < cols; c++) {
                            const ptrdiff_t i = r / f < hh ? r / f : hh - 1;
                            const ptrdiff_t j = c / (f + 1) < ww ? c / (f + 1) : ww - 1;
                            CHECK(out[r * cols + c] == (sm[i * ww + j] != 0), "upscale at %td %td", r, c);
                        }
                }
                CHECK(ncalc_upscale_mask(sm, hh, ww, f, f + 1, hh * f - 1, cols, out, 1) == NCALC_EINVAL,
                      "upscale too few rows");
                free(sm); free(out);
            }
    /* erosion by the city-block ball against brute force, shapes from 1x1 */
    for (ptrdiff_t rows = 1; rows <= 9; rows += 4)
        for (ptrdiff_t cols = 1; cols <= 10; cols += 3) {
            uint8_t *a = malloc((size_t)(rows * cols)), *out = malloc((size_t)(rows * cols));
            /* (any non-zero byte is set; radii up to 8 are eroded by the cross, above by distances) */
            for (ptrdiff_t i = 0; i < rows * cols; i++) a[i] = rnd() % 5 != 0 ? (uint8_t)(1 + rnd() % 255) : 0;
            for (ptrdiff_t n = 0; n <= 10; n++) {
                CHECK(ncalc_erode_l1(a, rows, cols, n, out) == NCALC_OK, "erode");
                for (ptrdiff_t r = 0; r < rows; r++)
                    for (ptrdiff_t c = 0; c < cols; c++) {
                        /* the nearest background or outside pixel, by brute force */
                        ptrdiff_t best = r + 1;
                        if (rows - r < best) best = rows - r;
                        if (c + 1 < best) best = c + 1;
                        if (cols - c < best) best = cols - c;
                        for (ptrdiff_t q = 0; q < rows * cols; q++)
                            if (!a[q]) {
                                const ptrdiff_t dr = q / cols - r, dc = q % cols - c;
                                const ptrdiff_t dd = (dr < 0 ? -dr : dr) + (dc < 0 ? -dc : dc);
                                if (dd < best) best = dd;
                            }
                        CHECK(out[r * cols + c] == (best > n), "erode %td x %td at %td %td", rows, cols, r, c);
                    }
            }
            free(a); free(out);
        }
    /* the largest component, holes filled: a known case, and random
     * shapes from 1x1 (memory safety; the values are checked against
     * scipy in tests/test_serial_steps.py) */
    {
        /* 0 1 1 0 0      two components: {1, 2, 6, 7} and the larger one
         * 0 1 1 0 1      from 9 down to the bottom rows, whose hole (21)
         * 0 0 0 1 1      is filled; the background at 23 reaches the
         * 1 1 1 1 0      border
         * 1 0 1 0 0
         * 1 1 1 0 0 */
        const uint8_t known[30] = {0, 1, 1, 0, 0,  0, 1, 1, 0, 1,  0, 0, 0, 1, 1,  1, 1, 1, 1, 0,
                                   1, 0, 1, 0, 0,  1, 1, 1, 0, 0};
        uint8_t out[30];
        CHECK(ncalc_largest_component(known, 6, 5, out) == 2, "largest count");
        for (int i = 0; i < 30; i++) {
            const int want = (known[i] && i != 1 && i != 2 && i != 6 && i != 7) || i == 21;
            CHECK(out[i] == want, "largest at %d", i);
        }
        const uint8_t zeros[4] = {0, 0, 0, 0};
        CHECK(ncalc_largest_component(zeros, 2, 2, out) == 0, "largest none");
        for (ptrdiff_t rows = 1; rows <= 12; rows += 5)
            for (ptrdiff_t cols = 1; cols <= 12; cols += 4) {
                uint8_t *a = malloc((size_t)(rows * cols)), *o = malloc((size_t)(rows * cols));
                for (ptrdiff_t i = 0; i < rows * cols; i++) a[i] = rnd() % 3 != 0;
                const ptrdiff_t nc = ncalc_largest_component(a, rows, cols, o);
                CHECK(nc >= 0, "largest random");
                for (ptrdiff_t i = 0; nc > 0 && i < rows * cols; i++)
                    CHECK(o[i] <= 1, "largest boolean");
                free(a); free(o);
            }
    }
    {   /* histogram: values on the edges and outside the range */
        const double hx[7] = {0.0, 0.25, 0.5, 1.0, -1.0, 2.0, NAN}, he[5] = {0.0, 0.25, 0.5, 0.75, 1.0};
        int64_t hc[4];
        CHECK(ncalc_histogram(hx, 7, 0.0, 1.0, 4, he, hc) == NCALC_OK && hc[0] == 1 && hc[1] == 1 &&
              hc[2] == 1 && hc[3] == 1, "histogram");
        CHECK(ncalc_histogram(hx, 0, 0.0, 1.0, 4, he, hc) == NCALC_OK && hc[3] == 0, "histogram empty");
        CHECK(ncalc_histogram(hx, 7, 1.0, 1.0, 4, he, hc) == NCALC_EINVAL, "histogram range");
    }
    /* the score model's basis and log-odds: sizes from 0 rows (and enough
     * for the parallel loop), one feature without knots, interactions;
     * every value against its formula, the log-odds with and without the
     * basis written */
    {
        const int nknots[3] = {2, 0, 1}, inter[4] = {0, 2, 1, 0};
        const double knots[3] = {-0.5, 1.5, 0.25};
        double mean[8], scale[8], coef[8];
        for (int c = 0; c < 8; c++) {
            mean[c] = 0.1 * (c + 1);
            scale[c] = 0.5 + 0.25 * c;
            coef[c] = 0.3 * (c - 3.5);
        }
        const ptrdiff_t sizes[6] = {0, 1, 2, 5, 1025, 1500};
        for (int si = 0; si < 6; si++) {
            const ptrdiff_t n = sizes[si];
            double *X = malloc(sizeof(double) * (size_t)(3 * n + 1)), *out = malloc(sizeof(double) * (size_t)(8 * n + 1));
            double *z = malloc(sizeof(double) * (size_t)(n + 1)), *z2 = malloc(sizeof(double) * (size_t)(n + 1));
            for (ptrdiff_t i = 0; i < 3 * n; i++) X[i] = (double)((int)(rnd() % 9) - 4) * 0.5;
            for (int t = 1; t <= 2; t++) {
                CHECK(ncalc_ramp_logit(X, n, 3, nknots, knots, 2, inter, mean, scale, NULL, 0.0, NULL, out, t)
                      == NCALC_OK, "ramp");
                CHECK(ncalc_ramp_logit(X, n, 3, nknots, knots, 2, inter, mean, scale, coef, -0.25, z, NULL, t)
                      == NCALC_OK, "ramp logit");
                CHECK(ncalc_ramp_logit(X, n, 3, nknots, knots, 2, inter, mean, scale, coef, -0.25, z2, out, t)
                      == NCALC_OK, "ramp logit and basis");
                for (ptrdiff_t i = 0; i < n; i++) {
                    const double *x = X + 3 * i, *o = out + 8 * i; /* 3 + 1 + 2 + 2 columns */
                    const double b[8] = {
                        x[0] < -0.5 ? x[0] : -0.5,
                        (x[0] < -0.5 ? -0.5 : (x[0] > 1.5 ? 1.5 : x[0])) + 0.5,
                        (x[0] > 1.5 ? x[0] : 1.5) - 1.5,
                        x[1],
                        x[2] < 0.25 ? x[2] : 0.25,
                        (x[2] > 0.25 ? x[2] : 0.25) - 0.25,
                        ((x[2] < -1 ? -1 : (x[2] > 1 ? 1 : x[2])) + 1.0) * (x[0] > 0 ? x[0] : 0.0),
                        ((x[0] < -1 ? -1 : (x[0] > 1 ? 1 : x[0])) + 1.0) * (x[1] > 0 ? x[1] : 0.0)};
                    double acc = 0.0;
                    for (int c = 0; c < 8; c++) {
                        const double v = (b[c] - mean[c]) / scale[c];
                        CHECK(o[c] == v, "ramp row %td col %d", i, c);
                        const double p = v * coef[c];
                        acc += p;
                    }
                    CHECK(z[i] == acc + -0.25 && z2[i] == z[i], "ramp logit row %td", i);
                }
            }
            free(X); free(out); free(z); free(z2);
        }
        const double bad_knots[3] = {-0.5, INFINITY, 0.25};
        const int bad_inter[4] = {0, 3, 1, 0};
        double x1[3] = {0, 0, 0}, o1[8], z1[1];
        CHECK(ncalc_ramp_logit(x1, 1, 3, nknots, bad_knots, 2, inter, mean, scale, NULL, 0.0, NULL, o1, 1)
              == NCALC_EINVAL, "ramp knot");
        CHECK(ncalc_ramp_logit(x1, 1, 3, nknots, knots, 2, bad_inter, mean, scale, NULL, 0.0, NULL, o1, 1)
              == NCALC_EINVAL, "ramp interaction");
        CHECK(ncalc_ramp_logit(x1, 1, 3, nknots, knots, 2, inter, mean, scale, NULL, 0.0, z1, NULL, 1)
              == NCALC_EINVAL, "ramp logit without coefficients");
    }
    /* numpy.interp: every branch against its formula, from 0 values to
     * enough for the parallel loop, the output over the input too */
    {
        const double xp[5] = {-2.0, -0.5, 0.0, 1.25, 4.0}, fp[5] = {3.0, -1.0, -1.0, 0.5, 8.0};
        const ptrdiff_t sizes[4] = {0, 1, 7, 5000};
        for (int si = 0; si < 4; si++) {
            const ptrdiff_t n = sizes[si];
            double *x = malloc(sizeof(double) * (size_t)(n + 1)), *o = malloc(sizeof(double) * (size_t)(n + 1));
            for (ptrdiff_t i = 0; i < n; i++)
                x[i] = i % 97 == 3 ? NAN : i % 5 == 0 ? xp[i % 25 / 5] : (double)((int)(rnd() % 1401) - 700) / 100.0;
            for (int t = 1; t <= 2; t++) {
                CHECK(ncalc_interp(x, n, xp, fp, 5, o, t) == NCALC_OK, "interp");
                for (ptrdiff_t i = 0; i < n; i++) {
                    const double v = x[i];
                    double want;
                    if (v != v) want = v;
                    else if (v < xp[0]) want = fp[0];
                    else if (v >= xp[4]) want = fp[4];
                    else {
                        int j = 0;
                        while (xp[j + 1] <= v) j++;
                        const double sl = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
                        want = v == xp[j] ? fp[j] : sl * (v - xp[j]) + fp[j];
                    }
                    CHECK(want != want ? o[i] != o[i] : o[i] == want, "interp %td at %g", i, v);
                }
            }
            if (n) {
                CHECK(ncalc_interp(x, n, xp, fp, 5, o, 2) == NCALC_OK, "interp copy");
                CHECK(ncalc_interp(x, n, xp, fp, 5, x, 2) == NCALC_OK, "interp in place");
                for (ptrdiff_t i = 0; i < n; i++)
                    CHECK(o[i] != o[i] ? x[i] != x[i] : x[i] == o[i], "interp in place %td", i);
            }
            free(x); free(o);
        }
        const double same[3] = {0.0, 1.0, 1.0}, inf[2] = {0.0, INFINITY}, two[2] = {0.0, 1.0};
        double x1 = 0.5, o1;
        CHECK(ncalc_interp(&x1, 1, same, fp, 3, &o1, 1) == NCALC_EINVAL, "interp repeated point");
        CHECK(ncalc_interp(&x1, 1, inf, two, 2, &o1, 1) == NCALC_EINVAL, "interp infinite point");
        CHECK(ncalc_interp(&x1, 1, two, inf, 2, &o1, 1) == NCALC_EINVAL, "interp infinite value");
        CHECK(ncalc_interp(&x1, 1, two, two, 1, &o1, 1) == NCALC_EINVAL, "interp one point");
        CHECK(ncalc_interp(&x1, 1, two, two, 2, &o1, 1) == NCALC_OK && o1 == 0.5, "interp two points");
    }
    /* peak values on a small response, tiles with leftover rows/columns */
    {
        const ptrdiff_t rows = 7, cols = 5, tile = 3, n = 6;
        float resp[35], grid[3 * 2], value[6];
        uint8_t scale[35];
        double noise[6], snr[6];
        int64_t so[6];
        for (int i = 0; i < 35; i++) { resp[i] = (float)i * 0.5f; scale[i] = (uint8_t)(i % 4); }
        for (int i = 0; i < 6; i++) grid[i] = 1.0f + (float)i;
        const int32_t pr[6] = {0, 6, 3, 2, 6, 5}, pc[6] = {0, 4, 2, 4, 0, 3};
        CHECK(ncalc_peak_values(resp, rows, cols, grid, tile, scale, pr, pc, n, value, noise, snr, so, 2)
              == NCALC_OK, "peak values");
        for (int i = 0; i < n; i++) {
            const float g = grid[(pr[i] / tile) * 2 + pc[i] / tile];
            CHECK(value[i] == resp[pr[i] * cols + pc[i]] && noise[i] == (double)g &&
                  snr[i] == (double)value[i] / (double)g && so[i] == scale[pr[i] * cols + pc[i]], "peak %d", i);
        }
        CHECK(ncalc_peak_values(resp, rows, cols, grid, tile, NULL, pr, pc, 0, NULL, NULL, NULL, NULL, 1)
              == NCALC_OK, "peak values none");
        const int32_t out_r[1] = {7}, out_c[1] = {-1};
        CHECK(ncalc_peak_values(resp, rows, cols, grid, tile, NULL, out_r, pc, 1, value, noise, snr, NULL, 1)
              == NCALC_EINVAL, "peak values row outside");
        CHECK(ncalc_peak_values(resp, rows, cols, grid, tile, NULL, pr, out_c, 1, value, noise, snr, NULL, 1)
              == NCALC_EINVAL, "peak values col outside");
    }
}

/* The stack steps: the planes' mean and the suppression across slices. */
static void stack_steps(void)
{
    const ptrdiff_t planes = 3, n = 35, ld = 40;
    uint16_t *u = malloc(sizeof(uint16_t) * (size_t)(planes * ld));
    float *f = malloc(sizeof(float) * (size_t)(planes * ld));
    float *out = malloc(sizeof(float) * (size_t)n);
    for (ptrdiff_t i = 0; i < planes * ld; i++) {
        u[i] = (uint16_t)(rnd() & 0xffff);
        f[i] = (float)(rnd() % 100000) * 0.37f;
    }
    for (int t = 1; t <= 2; t++) {
        CHECK(ncalc_plane_mean(u, NCALC_U16, planes, ld, n, out, t) == NCALC_OK, "plane mean u16");
        for (ptrdiff_t i = 0; i < n; i++) {
            float s = (float)u[i];
            for (ptrdiff_t k = 1; k < planes; k++) s += (float)u[k * ld + i];
            CHECK(out[i] == s / 3.0f, "plane mean u16 %td", i);
        }
        CHECK(ncalc_plane_mean(f, NCALC_F32, planes, ld, n, out, t) == NCALC_OK, "plane mean f32");
        for (ptrdiff_t i = 0; i < n; i++) {
            float s = f[i];
            for (ptrdiff_t k = 1; k < planes; k++) s += f[k * ld + i];
            CHECK(out[i] == s / 3.0f, "plane mean f32 %td", i);
        }
    }
    CHECK(ncalc_plane_mean(u, NCALC_U16, 0, ld, n, out, 1) == NCALC_EINVAL, "plane mean no plane");
    CHECK(ncalc_plane_mean(u, NCALC_U16, planes, n - 1, n, out, 1) == NCALC_EINVAL, "plane mean overlap");
    CHECK(ncalc_plane_mean(u, NCALC_U16, 1, 0, 0, out, 1) == NCALC_OK, "plane mean empty");
    free(u);
    free(f);
    free(out);

    /* slices 0, 0, 1, 3: point 1 beats point 0 (same slice, closer than 2),
     * point 2 (adjacent slice, weaker) loses to point 1, point 3 is alone
     * (slice 3 is not next to 1) */
    const int64_t sl[4] = {0, 0, 1, 3}, rw[4] = {5, 6, 6, 6}, cl[4] = {5, 5, 6, 6};
    const double snr[4] = {1.0, 2.0, 1.5, 0.5};
    uint8_t keep[4];
    for (int t = 1; t <= 3; t++) {
        CHECK(ncalc_merge_slices(sl, rw, cl, snr, 4, 4.0, 2, keep, t) == NCALC_OK, "merge");
        CHECK(keep[0] == 0 && keep[1] == 1 && keep[2] == 0 && keep[3] == 1, "merge flags %d%d%d%d",
              keep[0], keep[1], keep[2], keep[3]);
    }
    const double tie[4] = {NAN, NAN, 2.0, 2.0}; /* NaN weakest; ties to the earlier */
    CHECK(ncalc_merge_slices(sl, rw, cl, tie, 4, 4.0, 2, keep, 1) == NCALC_OK, "merge ties");
    CHECK(keep[0] == 0 && keep[1] == 0 && keep[2] == 1 && keep[3] == 1, "merge tie flags");
    const int64_t back[4] = {0, 1, 0, 1};
    CHECK(ncalc_merge_slices(back, rw, cl, snr, 4, 4.0, 2, keep, 1) == NCALC_EINVAL, "merge unsorted");
    CHECK(ncalc_merge_slices(sl, rw, cl, snr, 0, 4.0, 2, NULL, 1) == NCALC_OK, "merge empty");
    CHECK(ncalc_merge_slices(sl, rw, cl, snr, 4, -1.0, 2, keep, 1) == NCALC_EINVAL, "merge radius");
}

/* Points within a radius (csrc/neighbours.c) against brute force: counts,
 * sums in index order and the clustering rule, on both cell layouts (a
 * table, and bisection when there are far more cells than points). */
static void neighbours(void)
{
    const ptrdiff_t n = 1500; /* (the sums in parallel above 1,024 points) */
    double *pos = malloc(sizeof(double) * (size_t)(3 * n)), *w = malloc(sizeof(double) * (size_t)n);
    double *sum = malloc(sizeof(double) * (size_t)n), *sum1 = malloc(sizeof(double) * (size_t)n);
    int64_t *count = malloc(sizeof(int64_t) * (size_t)n), *lab = malloc(sizeof(int64_t) * (size_t)n);
    int64_t *count1 = malloc(sizeof(int64_t) * (size_t)n);
    for (int dim = 1; dim <= 3; dim++) {
        for (int layout = 0; layout < 2; layout++) {
            const double r = layout ? 0.01 : 1.0; /* 1e-2: millions of cells */
            for (ptrdiff_t i = 0; i < n * dim; i++) /* a lattice of 0.5: distances of exactly 1 */
                pos[i] = layout ? (double)(rnd() % 100000) * 1e-3 : 0.5 * (double)(rnd() % 12);
            for (ptrdiff_t i = 0; i < n; i++) w[i] = (double)(rnd() % 1000) / 7.0;
            for (int t = 1; t <= 2; t++) {
                CHECK(ncalc_neighbour_sums(pos, n, dim, r, w, sum, count, t) == NCALC_OK, "neighbour sums");
                /* either output alone: the same values */
                CHECK(ncalc_neighbour_sums(pos, n, dim, r, w, sum1, NULL, t) == NCALC_OK, "sums alone");
                CHECK(ncalc_neighbour_sums(pos, n, dim, r, NULL, NULL, count1, t) == NCALC_OK, "counts alone");
                for (ptrdiff_t i = 0; i < n; i++)
                    CHECK(sum1[i] == sum[i] && count1[i] == count[i], "one output, point %td", i);
                CHECK(ncalc_radius_clusters(pos, n, dim, r, 3, lab, t) == NCALC_OK, "radius clusters");
                for (ptrdiff_t i = 0; i < n; i++) {
                    double s = 0.0;
                    int64_t c = 0;
                    for (ptrdiff_t j = 0; j < n; j++) {
                        double d2 = 0.0;
                        for (int k = 0; k < dim; k++) {
                            const double d = pos[i * dim + k] - pos[j * dim + k];
                            d2 += d * d;
                        }
                        if (j != i && d2 <= r * r) {
                            s += w[j];
                            c++;
                        }
                    }
                    CHECK(count[i] == c && sum[i] == s, "neighbours of %td (dim %d)", i, dim);
                    CHECK((lab[i] >= 0) == (c + 1 >= 3) || (c + 1 < 3), "core point %td unlabelled", i);
                    CHECK(lab[i] >= -1 && lab[i] < n, "label %td", i);
                }
            }
        }
    }
    /* a border point within reach of two clusters takes the lower id */
    const double x[10] = {0.0, 1.0, 1.1, 1.2, 1.3, -1.0, -1.1, -1.2, -1.3, 7.0};
    const int64_t want[10] = {0, 0, 0, 0, 0, 1, 1, 1, 1, -1};
    CHECK(ncalc_radius_clusters(x, 10, 1, 1.0, 4, lab, 1) == NCALC_OK, "border");
    for (int i = 0; i < 10; i++) CHECK(lab[i] == want[i], "border label %d: %lld", i, (long long)lab[i]);
    CHECK(ncalc_neighbour_sums(x, 10, 1, 0.0, w, sum, count, 1) == NCALC_EINVAL, "radius 0");
    CHECK(ncalc_neighbour_sums(x, 10, 4, 1.0, w, sum, count, 1) == NCALC_EINVAL, "4 dimensions");
    CHECK(ncalc_radius_clusters(x, 10, 1, 1.0, 1, lab, 1) == NCALC_EINVAL, "min size 1");
    const double bad[2] = {0.0, NAN};
    CHECK(ncalc_neighbour_sums(bad, 2, 1, 1.0, w, sum, count, 1) == NCALC_EINVAL, "NaN position");
    CHECK(ncalc_neighbour_sums(x, 0, 2, 1.0, NULL, NULL, count, 1) == NCALC_OK, "no points");
    free(pos);
    free(w);
    free(sum);
    free(sum1);
    free(count);
    free(count1);
    free(lab);
}

/* The clusters' size and hull area (csrc/cluster_shape.c): known shapes,
 * every pair against a brute force, groups of every size up to 150 (the
 * 2-D hull-vertex path above 64 points), ties and bad arguments. */
static void cluster_shape(void)
{
    /* the unit square's corners, its centre and an edge midpoint, twice */
    const double sq[14] = {0, 0, 1, 0, 1, 1, 0, 1, 0.5, 0.5, 0.5, 0, 0, 0};
    const ptrdiff_t one[2] = {0, 7};
    double ext[8], area[8];
    CHECK(ncalc_cluster_shape(sq, 7, 2, one, 1, 0, 1, ext, area) == NCALC_OK, "square");
    CHECK(area[0] == 1.0 && ext[0] == sqrt(2.0), "square: area %g extent %g", area[0], ext[0]);
    /* a line, one point, two points, no points: no area */
    const double line[10] = {0, 0, 1, 2, 2, 4, 3, 6, 9, 9};
    const ptrdiff_t groups[6] = {0, 4, 4, 5, 5, 5};
    CHECK(ncalc_cluster_shape(line, 4, 2, groups, 5, 0, 1, ext, area) == NCALC_EINVAL, "start[k] != n");
    const ptrdiff_t g4[5] = {0, 4, 4, 5, 5};
    CHECK(ncalc_cluster_shape(line, 5, 2, g4, 4, 0, 1, ext, area) == NCALC_OK, "line");
    CHECK(area[0] == 0.0 && ext[0] == sqrt(45.0), "line: area %g extent %g", area[0], ext[0]);
    CHECK(area[2] == 0.0 && ext[2] == 0.0 && area[1] == 0.0 && ext[1] == 0.0 && area[3] == 0.0 && ext[3] == 0.0,
          "empty and single groups");
    /* random groups against the brute force, in 2-D and 3-D: the extent
     * exactly; the area (in the last two coordinates) at least that of the
     * largest triangle of the group's points and at most the 20 x 20
     * square they lie in (tests/test_cluster_shape.py compares it with
     * Qhull's) */
    const ptrdiff_t nmax = 150 * 151 / 2;
    double *pos = (double *)malloc(sizeof(double) * 3 * (size_t)nmax);
    ptrdiff_t *start = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * 152);
    double *e = (double *)malloc(sizeof(double) * 151), *a = (double *)malloc(sizeof(double) * 151);
    for (int dim = 2; dim <= 3; dim++) {
        ptrdiff_t n = 0;
        start[0] = 0;
        for (ptrdiff_t g = 0; g < 151; g++) {
            for (ptrdiff_t i = 0; i < g; i++, n++)
                for (int k = 0; k < dim; k++) pos[n * dim + k] = g % 3 ? (double)(rnd() % 2001) / 100.0 - 10.0
                                                                       : (double)(rnd() % 5); /* ties */
            start[g + 1] = n;
        }
        CHECK(ncalc_cluster_shape(pos, n, dim, start, 151, dim - 2, dim - 1, e, a) == NCALC_OK, "random groups");
        for (ptrdiff_t g = 0; g < 151; g++) {
            double best = 0.0, tri = 0.0;
            for (ptrdiff_t i = start[g]; i < start[g + 1]; i++)
                for (ptrdiff_t j = start[g]; j < start[g + 1]; j++) {
                    double s = 0.0;
                    for (int k = 0; k < dim; k++) s += (pos[i * dim + k] - pos[j * dim + k]) * (pos[i * dim + k] - pos[j * dim + k]);
                    if (s > best) best = s;
                    for (ptrdiff_t l = start[g]; l < start[g + 1] && g <= 40; l++) {
                        const double *p = pos + i * dim + dim - 2, *q = pos + j * dim + dim - 2, *r = pos + l * dim + dim - 2;
                        const double t = 0.5 * fabs((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]));
                        if (t > tri) tri = t;
                    }
                }
            CHECK(e[g] == sqrt(best), "group %td (%dD): extent %.17g, brute force %.17g", g, dim, e[g], sqrt(best));
            CHECK(a[g] >= tri * (1 - 1e-12) && a[g] <= 400.0, "group %td (%dD): area %g, largest triangle %g",
                  g, dim, a[g], tri);
        }
    }
    const double nan_pos[6] = {0, 0, 1, NAN, 2, 2};
    const ptrdiff_t g1[2] = {0, 3};
    CHECK(ncalc_cluster_shape(nan_pos, 3, 2, g1, 1, 0, 1, ext, area) == NCALC_EINVAL, "NaN position");
    CHECK(ncalc_cluster_shape(sq, 7, 1, one, 1, 0, 1, ext, area) == NCALC_EINVAL, "1 dimension");
    CHECK(ncalc_cluster_shape(sq, 7, 2, one, 1, 0, 0, ext, area) == NCALC_EINVAL, "same axis twice");
    const ptrdiff_t down[3] = {0, 5, 3};
    CHECK(ncalc_cluster_shape(sq, 3, 2, down, 2, 0, 1, ext, area) == NCALC_EINVAL, "decreasing start");
    free(pos);
    free(start);
    free(e);
    free(a);
}

/* The scratch pool (csrc/buffers.c): reuse, the size rule, eviction,
 * the byte limit, alignment, concurrent use and release. */
static void buffer_pool(void)
{
#ifdef NCALC_NO_POOL
    /* built without the pool: buffers go straight to malloc and free */
    void *z = ncalc_buffer_get(1000);
    CHECK(z && ((uintptr_t)z % 16) == 0, "no pool alignment");
    memset(z, 3, 1000);
    ncalc_buffer_put(z);
    CHECK(ncalc_buffers_held() == 0, "no pool holds nothing");
    return;
#endif
    ncalc_release_buffers();
    CHECK(ncalc_buffers_held() == 0, "pool empty");
    unsigned char *p = ncalc_buffer_get(1000);
    CHECK(p && ((uintptr_t)p % 16) == 0, "pool alignment");
    memset(p, 7, 1000);
    ncalc_buffer_put(p);
    CHECK(ncalc_buffers_held() == 1000, "pool holds %zu", ncalc_buffers_held());
    unsigned char *q = ncalc_buffer_get(900); /* 900 <= 1000 <= 1800: reused */
    CHECK(q == p && ncalc_buffers_held() == 0, "pool reuse");
    memset(q, 1, 900);
    unsigned char *r = ncalc_buffer_get(400); /* nothing held: a new one */
    CHECK(r && r != q, "pool new");
    ncalc_buffer_put(q);
    unsigned char *t = ncalc_buffer_get(400); /* 1000 > 2 x 400: not reused */
    CHECK(t && t != q && ncalc_buffers_held() == 1000, "pool size rule %zu", ncalc_buffers_held());
    ncalc_buffer_put(t);
    ncalc_buffer_put(r);
    ncalc_buffer_put(NULL);
    CHECK(ncalc_buffers_held() == 1800, "pool holds %zu", ncalc_buffers_held());
    ncalc_release_buffers();
    CHECK(ncalc_buffers_held() == 0, "pool released");

    /* 20 buffers given back: the 16 given back last are kept */
    void *b[20];
    for (int i = 0; i < 20; i++) b[i] = ncalc_buffer_get((size_t)(100 + i));
    for (int i = 0; i < 20; i++) ncalc_buffer_put(b[i]);
    size_t want = 0;
    for (int i = 4; i < 20; i++) want += (size_t)(100 + i);
    CHECK(ncalc_buffers_held() == want, "pool eviction %zu != %zu", ncalc_buffers_held(), want);
    ncalc_release_buffers();

    /* at most 256 MiB held (the pages are never touched) */
    void *big1 = ncalc_buffer_get((size_t)150 << 20), *big2 = ncalc_buffer_get((size_t)150 << 20);
    CHECK(big1 && big2, "pool big");
    ncalc_buffer_put(big1);
    ncalc_buffer_put(big2);
    CHECK(ncalc_buffers_held() == (size_t)150 << 20, "pool limit %zu", ncalc_buffers_held());
    void *huge = ncalc_buffer_get((size_t)300 << 20);
    CHECK(huge != NULL, "pool huge");
    ncalc_buffer_put(huge); /* above the limit: freed, the held one stays */
    CHECK(ncalc_buffers_held() == (size_t)150 << 20, "pool over limit %zu", ncalc_buffers_held());
    ncalc_release_buffers();

    /* concurrent use (OpenMP build): each buffer is one thread's alone */
    int bad = 0;
#pragma omp parallel for reduction(+ : bad)
    for (int i = 0; i < 400; i++) {
        const size_t n = (size_t)(64 + (i % 7) * 50);
        unsigned char *x = ncalc_buffer_get(n);
        if (!x) { bad++; continue; }
        memset(x, i & 255, n);
        for (size_t k = 0; k < n; k++) bad += x[k] != (unsigned char)(i & 255);
        ncalc_buffer_put(x);
    }
    CHECK(bad == 0, "pool concurrent %d", bad);
    ncalc_release_buffers();
    CHECK(ncalc_buffers_held() == 0, "pool released at the end");
#if defined(__unix__) || defined(__APPLE__)
    /* a child process can use the pool that its parent had in use */
    void *held = ncalc_buffer_get(3000);
    ncalc_buffer_put(held);
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        void *c1 = ncalc_buffer_get(2000);
        ncalc_buffer_put(c1);
        const int ok = ncalc_buffers_held() == 3000;
        ncalc_release_buffers();
        _exit(ok ? 0 : 3);
    }
    int wst = 0;
    CHECK(pid > 0 && waitpid(pid, &wst, 0) == pid && WIFEXITED(wst) && WEXITSTATUS(wst) == 0,
          "pool after fork (status %d)", wst);
    ncalc_release_buffers();
#endif
}

static int cmp_f32(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* ncalc_noise_nms against its two steps: ncalc_tile_noise_ld, the fix-up
 * (bad tiles take numpy's median of the good ones) and ncalc_nms_ld, on
 * shapes from 1x1 up, masks rows ld apart (sparse edge tiles), flat tiles,
 * 1 to 3 threads and too little room for the peaks; NaNs and masks without
 * a valid tile are left to the steps (NCALC_EFALLBACK). */
static void noise_nms_steps(void)
{
    const ptrdiff_t shapes[][2] = {{1, 1}, {2, 9}, {9, 2}, {17, 13}, {70, 64}, {131, 67}, {3, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const ptrdiff_t rows = shapes[s][0], cols = shapes[s][1], ld = cols + 3;
        const size_t n = (size_t)(rows * cols);
        float *x = malloc(n * 4);
        uint8_t *m = malloc((size_t)(rows * ld));
        for (size_t i = 0; i < n; i++) x[i] = (float)(rnd() % 200) / 8.0f - 12.0f;
        for (ptrdiff_t i = 0; i < rows * cols / 3; i++) x[i] = 1.0f; /* flat tiles */
        for (ptrdiff_t r = 0; r < rows; r++)
            for (ptrdiff_t c = 0; c < ld; c++) /* dense on the left, sparse on the right */
                m[r * ld + c] = (uint8_t)(c < cols / 2 ? 1 : rnd() % 9 == 0);
        for (ptrdiff_t tile = 1; tile <= 40; tile += 13) {
            const ptrdiff_t gn = ((rows + tile - 1) / tile) * ((cols + tile - 1) / tile);
            float *g1 = malloc(sizeof(float) * (size_t)gn), *g2 = malloc(sizeof(float) * (size_t)gn);
            float *good = malloc(sizeof(float) * (size_t)gn);
            int32_t *a = malloc(sizeof(int32_t) * 4 * n);
            float *val = malloc(sizeof(float) * n);
            double *noise = malloc(sizeof(double) * n), *snr = malloc(sizeof(double) * n);
            for (int radius = 0; radius <= 5; radius += 2)
                for (int use_mask = 0; use_mask <= 1; use_mask++) {
                    const uint8_t *mk = use_mask ? m : NULL;
                    const ptrdiff_t min_count = 6;
                    CHECK(ncalc_tile_noise_ld(x, rows, cols, mk, ld, tile, min_count, g1, 1) == NCALC_OK,
                          "tile ld");
                    ptrdiff_t ng = 0;
                    for (ptrdiff_t i = 0; i < gn; i++)
                        if (g1[i] > 0.0f && g1[i] <= 3.4e38f) good[ng++] = g1[i];
                    for (int t = 1; t <= 3; t++) {
                        /* (the values asked for on the odd thread counts) */
                        ptrdiff_t nf = ncalc_noise_nms(x, rows, cols, mk, ld, tile, min_count, 0.5f, radius, g2,
                                                       a, a + n, t % 2 ? val : NULL, (ptrdiff_t)n, 0, t);
                        if (ng == 0) {
                            CHECK(nf == NCALC_EFALLBACK, "noise_nms no valid tile: %td", nf);
                            continue;
                        }
                        qsort(good, (size_t)ng, sizeof(float), cmp_f32);
                        const float med = ng % 2 ? good[ng / 2] : (good[ng / 2 - 1] + good[ng / 2]) / 2.0f;
                        for (ptrdiff_t i = 0; i < gn; i++) {
                            const float want = g1[i] > 0.0f && g1[i] <= 3.4e38f ? g1[i] : med;
                            CHECK(g2[i] == want, "noise_nms grid %td: %g %g", i, (double)g2[i], (double)want);
                        }
                        ptrdiff_t ns = ncalc_nms_ld(x, rows, cols, mk, ld, g2, tile, 0.5f, radius, a + 2 * n,
                                                    a + 3 * n, (ptrdiff_t)n, 1);
                        CHECK(nf == ns && nf >= 0, "noise_nms count %td %td", nf, ns);
                        for (ptrdiff_t i = 0; i < nf && nf == ns; i++)
                            CHECK(a[i] == a[2 * n + i] && a[n + i] == a[3 * n + i], "noise_nms peak %td", i);
                        if (t % 2 && nf == ns && nf > 0) {
                            /* the values read in the pass, and from them what
                             * ncalc_peak_values gives reading resp itself */
                            const ptrdiff_t gw = (cols + tile - 1) / tile;
                            for (ptrdiff_t i = 0; i < nf; i++)
                                CHECK(val[i] == x[a[i] * cols + a[n + i]], "noise_nms value %td", i);
                            CHECK(ncalc_peak_values(NULL, rows, cols, g2, tile, NULL, a, a + n, nf, val, noise, snr,
                                                    NULL, t) == NCALC_OK, "peak_values from values");
                            for (ptrdiff_t i = 0; i < nf; i++) {
                                const double g = (double)g2[(a[i] / tile) * gw + a[n + i] / tile];
                                CHECK(noise[i] == g && snr[i] == (double)val[i] / g, "peak snr %td", i);
                            }
                        }
                        /* room for one peak: the total still comes back */
                        CHECK(ncalc_noise_nms(x, rows, cols, mk, ld, tile, min_count, 0.5f, radius, g2, a, a + n,
                                              t % 2 ? val : NULL, 1, 0, t) == ns, "noise_nms short buffer");
                    }
                }
            CHECK(ncalc_noise_nms(x, rows, cols, m, cols - 1, tile, 2, 0.5f, 1, g2, a, a + n, NULL, (ptrdiff_t)n,
                                  0, 1) == NCALC_EINVAL, "noise_nms ld < cols");
            x[n / 2] = NAN;
            CHECK(ncalc_noise_nms(x, rows, cols, NULL, cols, tile, 2, 0.5f, 1, g2, a, a + n, val, (ptrdiff_t)n, 0, 2)
                  == NCALC_EFALLBACK, "noise_nms NaN");
            CHECK(ncalc_noise_nms(x, rows, cols, NULL, cols, tile, 2, 0.5f, 1, g2, a, a + n, val, (ptrdiff_t)n, 5, 2)
                  == NCALC_EFALLBACK, "noise_nms NaN, top");
            x[n / 2] = 0.0f;
            CHECK(ncalc_peak_values(NULL, rows, cols, g2, tile, (const uint8_t *)m, a, a + n, 0, val, noise, snr,
                                    (int64_t *)a, 1) == NCALC_EINVAL, "peak_values scale without resp");
            free(g1); free(g2); free(good); free(a); free(val); free(noise); free(snr);
        }
        CHECK(ncalc_noise_nms(x, rows, cols, NULL, cols, 0, 2, 0.5f, 1, x, NULL, NULL, NULL, 0, 0, 1)
              == NCALC_EINVAL, "noise_nms tile 0");
        CHECK(ncalc_noise_nms(x, rows, cols, NULL, cols, 4, 2, 0.5f, -1, x, NULL, NULL, NULL, 0, 0, 1)
              == NCALC_EINVAL, "noise_nms radius");
        CHECK(ncalc_noise_nms(x, rows, cols, NULL, cols, 4, 2, 0.5f, 1, x, NULL, NULL, NULL, 0, -1, 1)
              == NCALC_EINVAL, "noise_nms top < 0");
        free(x);
        free(m);
    }
}

/* The lower edge of the bin of x of ncalc_noise_nms's top (32 bins an
 * octave from 2^-10; from 2^21 up the last one), found another way than
 * the kernel does (frexp, not the bits); 0 below 2^-10. */
static double top_bin_edge(double x)
{
    if (!(x >= 0x1p-10)) return 0.0;
    if (!(x < 0x1p21)) x = 0x1.fffffffffffffp20;
    int e;
    const double m = 2.0 * frexp(x, &e); /* x = m 2^(e - 1), 1 <= m < 2 */
    return ldexp(1.0 + floor((m - 1.0) * 32.0) / 32.0, e - 1);
}

static int cmp_f64_desc(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Many peaks (over 4096, in chunks of every band) on a larger image than
 * the tests above: the same lists, values and totals on 1, 2 and 3
 * threads from ncalc_noise_nms (bad tiles filtered after the median, with
 * and without a top, and with room for only some of the peaks) and from
 * ncalc_nms_ld. */
static void many_peaks_threads(void)
{
    const ptrdiff_t rows = 211, cols = 307, n = rows * cols, tile = 16;
    const ptrdiff_t gn = ((rows + tile - 1) / tile) * ((cols + tile - 1) / tile);
    float *x = malloc(sizeof(float) * (size_t)n), *g = malloc(sizeof(float) * (size_t)gn * 2);
    uint8_t *m = malloc((size_t)n);
    int32_t *a = malloc(sizeof(int32_t) * 4 * (size_t)n);
    float *v = malloc(sizeof(float) * 2 * (size_t)n);
    for (ptrdiff_t i = 0; i < n; i++) {
        x[i] = (float)(rnd() % 1000) / 10.0f;
        m[i] = (uint8_t)(rnd() % 5 != 0);
    }
    for (ptrdiff_t r = 0; r < 40; r++) /* flat tiles, and tiles masked out: bad */
        for (ptrdiff_t c = 0; c < 48; c++) {
            x[r * cols + c] = 3.0f;
            m[(rows - 1 - r) * cols + c] = 0;
        }
    for (int radius = 0; radius <= 1; radius++) {
        ptrdiff_t all = 0;
        for (int top = 0; top <= 1; top++) {
            const ptrdiff_t want_top = top ? 3 * all / 4 : 0; /* (most of them listed before the filter) */
            const ptrdiff_t full = ncalc_noise_nms(x, rows, cols, m, cols, tile, 8, 0.2f, radius, g, a, a + n, v,
                                                   n, want_top, 1);
            if (!top) all = full;
            CHECK(full >= (top ? want_top : 4096), "many peaks: %td, want at least %td", full,
                  top ? want_top : (ptrdiff_t)4096);
            for (ptrdiff_t room = n; room > 0; room = room == n ? full / 3 : 0)
                for (int nt = 2; nt <= 3; nt++) {
                    const ptrdiff_t got = ncalc_noise_nms(x, rows, cols, m, cols, tile, 8, 0.2f, radius, g + gn,
                                                          a + 2 * n, a + 3 * n, v + n, room, want_top, nt);
                    const ptrdiff_t w = full < room ? full : room;
                    CHECK(got == full && memcmp(g, g + gn, sizeof(float) * (size_t)gn) == 0 &&
                              memcmp(a, a + 2 * n, sizeof(int32_t) * (size_t)w) == 0 &&
                              memcmp(a + n, a + 3 * n, sizeof(int32_t) * (size_t)w) == 0 &&
                              memcmp(v, v + n, sizeof(float) * (size_t)w) == 0,
                          "many peaks, radius %d, top %td, room %td, %d threads: %td of %td", radius, want_top,
                          room, nt, got, full);
                }
        }
    }
    const ptrdiff_t one = ncalc_nms_ld(x, rows, cols, m, cols, NULL, tile, 0.2f, 0, a, a + n, n, 1);
    const ptrdiff_t two = ncalc_nms_ld(x, rows, cols, m, cols, NULL, tile, 0.2f, 0, a + 2 * n, a + 3 * n, n, 2);
    CHECK(one >= 4096 && two == one && memcmp(a, a + 2 * n, sizeof(int32_t) * (size_t)one) == 0 &&
              memcmp(a + n, a + 3 * n, sizeof(int32_t) * (size_t)one) == 0,
          "many peaks, nms_ld: %td and %td", one, two);
    free(x); free(g); free(m); free(a); free(v);
}

/* ncalc_noise_nms with a top: the full list (top 0) without the peaks of
 * good tiles whose SNR is below B, the edge of the bin of the top-th
 * largest SNR of good tiles' peaks (0 with fewer), in the same order, on
 * 1 to 3 threads, with and without values; ncalc_top_k of both lists
 * picks the same peaks. Responses of many peaks of spread heights, some
 * tiles bad (masked out, or flat). */
static void noise_nms_top(void)
{
    for (int t = 0; t < 40; t++) {
        const ptrdiff_t rows = 20 + rnd() % 150, cols = 20 + rnd() % 150, n = rows * cols;
        const ptrdiff_t tile = 4 + rnd() % 24;
        const int radius = (int)(rnd() % 4);
        float *x = malloc(sizeof(float) * (size_t)n);
        uint8_t *m = malloc((size_t)n);
        for (ptrdiff_t i = 0; i < n; i++) {
            /* heights over decades (SNRs from below 1 to thousands), a
             * flat block (a bad tile: zero noise), some masked out */
            x[i] = (float)(rnd() % 1000) * (float)(1u << (rnd() % 12)) / 64.0f;
            m[i] = (uint8_t)(rnd() % 7 != 0);
        }
        for (ptrdiff_t r = 0; r < rows / 3; r++)
            for (ptrdiff_t c = 0; c < cols / 3; c++) x[r * cols + c] = 5.0f;
        const ptrdiff_t gn = ((rows + tile - 1) / tile) * ((cols + tile - 1) / tile);
        const ptrdiff_t gw = (cols + tile - 1) / tile;
        float *g0 = malloc(sizeof(float) * (size_t)gn), *g1 = malloc(sizeof(float) * (size_t)gn);
        float *g2 = malloc(sizeof(float) * (size_t)gn);
        int32_t *a = malloc(sizeof(int32_t) * 4 * (size_t)n);
        float *v1 = malloc(sizeof(float) * (size_t)n), *v2 = malloc(sizeof(float) * (size_t)n);
        double *snr = malloc(sizeof(double) * (size_t)n);
        int64_t *i1 = malloc(sizeof(int64_t) * (size_t)n), *i2 = malloc(sizeof(int64_t) * (size_t)n);
        const uint8_t *mk = t % 3 ? m : NULL;
        const float k = t % 2 ? 0.5f : 2.0f;
        /* the raw noise says which tiles are good */
        CHECK(ncalc_tile_noise_ld(x, rows, cols, mk, cols, tile, 8, g0, 1) == NCALC_OK, "top raw grid");
        const ptrdiff_t full = ncalc_noise_nms(x, rows, cols, mk, cols, tile, 8, k, radius, g1, a, a + n, v1, n,
                                               0, 1);
        if (full == NCALC_EFALLBACK) goto next; /* no good tile */
        CHECK(full >= 0, "top full list %td", full);
        if (full < 0) goto next;
        ptrdiff_t ngood = 0;
        for (ptrdiff_t i = 0; i < full; i++) {
            const ptrdiff_t gi = (a[i] / tile) * gw + a[n + i] / tile;
            if (g0[gi] > 0.0f && g0[gi] <= 3.4e38f) snr[ngood++] = (double)v1[i] / (double)g1[gi];
        }
        qsort(snr, (size_t)ngood, sizeof(double), cmp_f64_desc);
        const ptrdiff_t tops[] = {1, 2, 1 + full / 10, 1 + full / 2, full, full + 5};
        for (int q = 0; q < 6; q++) {
            const ptrdiff_t top = tops[q];
            const double B = top <= ngood ? top_bin_edge(snr[top - 1]) : 0.0;
            for (int nt = 1; nt <= 3; nt++) {
                const ptrdiff_t got = ncalc_noise_nms(x, rows, cols, mk, cols, tile, 8, k, radius, g2, a + 2 * n,
                                                      a + 3 * n, nt == 2 ? NULL : v2, n, top, nt);
                CHECK(memcmp(g1, g2, sizeof(float) * (size_t)gn) == 0, "top grid");
                ptrdiff_t j = 0, bad = 0;
                for (ptrdiff_t i = 0; i < full; i++) {
                    const ptrdiff_t gi = (a[i] / tile) * gw + a[n + i] / tile;
                    const int good = g0[gi] > 0.0f && g0[gi] <= 3.4e38f;
                    if (good && (double)v1[i] / (double)g1[gi] < B) continue; /* left out */
                    if (j >= got || a[2 * n + j] != a[i] || a[3 * n + j] != a[n + i] ||
                        (nt != 2 && v2[j] != v1[i]))
                        bad++;
                    j++;
                }
                CHECK(got == j && bad == 0, "top %td of %td (B %g), %d threads: %td peaks, want %td, %td differ",
                      top, full, B, nt, got, j, bad);
                if (got != j || bad || top > got) continue;
                /* the same top k, by position in each list */
                double *s1 = malloc(sizeof(double) * (size_t)full), *s2 = malloc(sizeof(double) * (size_t)got);
                for (ptrdiff_t i = 0; i < full; i++)
                    s1[i] = (double)v1[i] / (double)g1[(a[i] / tile) * gw + a[n + i] / tile];
                for (ptrdiff_t i = 0; i < got; i++)
                    s2[i] = (double)x[a[2 * n + i] * cols + a[3 * n + i]] /
                            (double)g2[(a[2 * n + i] / tile) * gw + a[3 * n + i] / tile];
                CHECK(ncalc_top_k(s1, full, top, i1, 1) == top && ncalc_top_k(s2, got, top, i2, nt) == top,
                      "top_k of the lists");
                for (ptrdiff_t i = 0; i < top; i++)
                    CHECK(a[i1[i]] == a[2 * n + i2[i]] && a[n + i1[i]] == a[3 * n + i2[i]], "top %td pick %td", top, i);
                free(s1);
                free(s2);
            }
        }
    next:
        free(x); free(m); free(g0); free(g1); free(g2); free(a); free(v1); free(v2); free(snr); free(i1); free(i2);
    }
}

/* ncalc_noise_nms_blocks: the grid, peaks and values of ncalc_noise_nms
 * with the mask ncalc_upscale_mask makes of the blocks, for crops at any
 * offset (rows and columns left over by the blocks included), bands of
 * one row to more than the image, 1 to 3 threads; bad blocks refused. */
static void noise_nms_blocks(void)
{
    for (int t = 0; t < 60; t++) {
        const ptrdiff_t fy = 1 + rnd() % 7, fx = 1 + rnd() % 7, hh = 1 + rnd() % 12, ww = 1 + rnd() % 12;
        const ptrdiff_t H = hh * fy + rnd() % (fy + 2), W = ww * fx + rnd() % (fx + 2);
        const ptrdiff_t r0 = rnd() % H, c0 = rnd() % W;
        const ptrdiff_t rows = 1 + rnd() % (H - r0), cols = 1 + rnd() % (W - c0);
        const ptrdiff_t tile = t % 5 == 0 ? 1000 : 1 + rnd() % 20, n = rows * cols;
        uint8_t *small = malloc((size_t)(hh * ww)), *full = malloc((size_t)(H * W));
        float *x = malloc(sizeof(float) * (size_t)n);
        const ptrdiff_t gn = ((rows + tile - 1) / tile) * ((cols + tile - 1) / tile);
        float *g1 = malloc(sizeof(float) * (size_t)gn), *g2 = malloc(sizeof(float) * (size_t)gn);
        int32_t *a = malloc(sizeof(int32_t) * 4 * (size_t)n);
        float *v1 = malloc(sizeof(float) * (size_t)n), *v2 = malloc(sizeof(float) * (size_t)n);
        for (ptrdiff_t i = 0; i < hh * ww; i++) small[i] = (uint8_t)(rnd() % 4 != 0);
        for (ptrdiff_t i = 0; i < n; i++) x[i] = (float)(rnd() % 400) / 16.0f;
        CHECK(ncalc_upscale_mask(small, hh, ww, fy, fx, H, W, full, 1) == NCALC_OK, "blocks upscale");
        for (int nt = 1; nt <= 3; nt++) {
            const int radius = nt - 1;
            /* (with a top on the third pass: the same list either way) */
            const ptrdiff_t top = nt == 3 ? 1 + rnd() % 8 : 0;
            const ptrdiff_t k1 = ncalc_noise_nms(x, rows, cols, full + r0 * W + c0, W, tile, 4, 1.0f, radius, g1,
                                                 a, a + n, v1, n, top, nt);
            const ptrdiff_t k2 = ncalc_noise_nms_blocks(x, rows, cols, small, hh, ww, fy, fx, r0, c0, tile, 4, 1.0f,
                                                        radius, g2, a + 2 * n, a + 3 * n, v2, n, top, nt);
            CHECK(k1 == k2, "blocks count %td %td", k1, k2);
            if (k1 < 0 || k1 != k2) continue;
            CHECK(memcmp(g1, g2, sizeof(float) * (size_t)gn) == 0, "blocks grid");
            for (ptrdiff_t i = 0; i < k1; i++)
                CHECK(a[i] == a[2 * n + i] && a[n + i] == a[3 * n + i] && v1[i] == v2[i], "blocks peak %td", i);
        }
        CHECK(ncalc_noise_nms_blocks(x, rows, cols, small, 0, ww, fy, fx, 0, 0, tile, 4, 1.0f, 1, g2, a, a + n,
                                     NULL, n, 0, 1) == NCALC_EINVAL, "blocks hh 0");
        CHECK(ncalc_noise_nms_blocks(x, rows, cols, small, hh, ww, fy, 0, 0, 0, tile, 4, 1.0f, 1, g2, a, a + n,
                                     NULL, n, 0, 1) == NCALC_EINVAL, "blocks fx 0");
        CHECK(ncalc_noise_nms_blocks(x, rows, cols, small, hh, ww, fy, fx, 0, -1, tile, 4, 1.0f, 1, g2, a, a + n,
                                     NULL, n, 0, 1) == NCALC_EINVAL, "blocks col0 < 0");
        free(small); free(full); free(x); free(g1); free(g2); free(a); free(v1); free(v2);
    }
}

/* ncalc_dog_octaves_rows: the wanted pixels as ncalc_dog_octaves_ld's, bit
 * for bit, with ranges from ncalc_mask_row_ranges (checked against a brute
 * force) and random ones, crops (ld > cols), 1 and 2 threads. The outputs
 * are left uninitialised and the scratch pool emptied first, so that
 * valgrind sees any read of a pixel no level wrote. */
static void row_ranges(void)
{
    const ptrdiff_t shapes[][2] = {{1, 1}, {2, 3}, {5, 40}, {33, 32}, {40, 90}, {67, 131}, {131, 67}, {150, 140}};
    const double sig[] = {0.758, 1.212, 1.939, 3.103, 4.965, 7.944, 12.71};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const ptrdiff_t rows = shapes[s][0], cols = shapes[s][1], ld = cols + 3;
        const size_t n = (size_t)rows * (size_t)cols, big = (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
        uint8_t *mask = calloc(n, 1);
        const double cy = (double)(rnd() % (unsigned)rows), cx = (double)(rnd() % (unsigned)cols);
        const double rad = 0.6 * (double)(rows > cols ? rows : cols);
        for (ptrdiff_t r = 0; r < rows; r++)
            for (ptrdiff_t c = 0; c < cols; c++)
                mask[r * cols + c] = (uint8_t)((r - cy) * (r - cy) + (c - cx) * (c - cx) < rad * rad);
        int32_t *lo = malloc(sizeof(int32_t) * (size_t)rows), *hi = malloc(sizeof(int32_t) * (size_t)rows);
        for (int pad = 0; pad <= 5; pad += 5) {
            CHECK(ncalc_mask_row_ranges(mask, rows, cols, cols, pad, lo, hi, 2) == NCALC_OK, "row ranges");
            for (ptrdiff_t r = 0; r < rows; r++) { /* brute force */
                ptrdiff_t a = cols, b = 0;
                for (ptrdiff_t q = r - pad; q <= r + pad; q++)
                    for (ptrdiff_t c = 0; q >= 0 && q < rows && c < cols; c++)
                        if (mask[q * cols + c]) {
                            if (c - pad < a) a = c - pad;
                            if (c + pad + 1 > b) b = c + pad + 1;
                        }
                if (a >= b) a = b = 0;
                if (a < 0) a = 0;
                if (b > cols) b = cols;
                CHECK(lo[r] == a && hi[r] == b, "row ranges %tdx%td row %td: %d %d, not %td %td", rows, cols,
                      r, lo[r], hi[r], a, b);
            }
        }
        CHECK(ncalc_mask_row_ranges(mask, rows, cols, cols - 1, 0, lo, hi, 1) == NCALC_EINVAL, "ranges ld");
        for (int dtype = 0; dtype < 2; dtype++) {
            const size_t item = dtype == NCALC_U16 ? 2 : 4;
            unsigned char *wide = malloc(big * item);
            for (size_t i = 0; i < big; i++) {
                if (dtype == NCALC_U16) ((uint16_t *)wide)[i] = (uint16_t)(rnd() % 4096);
                else ((float *)wide)[i] = (float)(rnd() % 10000) / 7.0f;
            }
            unsigned char *junk = malloc(big * item);
            for (size_t i = 0; i < big; i++) {
                if (dtype == NCALC_U16) ((uint16_t *)junk)[i] = (uint16_t)(4095 - ((uint16_t *)wide)[i]);
                else ((float *)junk)[i] = -((float *)wide)[i];
            }
            float *r1 = malloc(n * 4), *r2 = malloc(n * 4);
            uint8_t *s1 = malloc(n), *s2 = malloc(n);
            for (int k = 0; k < 3; k++) {
                if (k >= 1) /* random ranges, some empty or past the edges; then most rows empty (the
                             * input rows a range reads are then those of its own row alone) */
                    for (ptrdiff_t r = 0; r < rows; r++) {
                        lo[r] = (int32_t)(rnd() % (unsigned)(cols + 6)) - 3;
                        hi[r] = k == 2 && rnd() % 8 ? lo[r] : lo[r] + (int32_t)(rnd() % (unsigned)(cols + 1)) - 2;
                    }
                for (int t = 1; t <= 2; t++) {
                    CHECK(ncalc_dog_octaves_ld(wide, dtype, rows, cols, ld, sig, 7, 3.0, 1.2, 16, r1, s1, t)
                          == NCALC_OK, "octaves ld");
                    /* a call on other pixels just before: the row caches it leaves in memory (which the
                     * next call's may reuse) hold none of the values a column left out would need */
                    CHECK(ncalc_dog_octaves_ld(junk, dtype, rows, cols, ld, sig, 7, 3.0, 1.2, 16, r2, s2, t)
                          == NCALC_OK, "octaves ld, other pixels");
                    ncalc_release_buffers(); /* fresh (uninitialised) coarse levels */
                    CHECK(ncalc_dog_octaves_rows(wide, dtype, rows, cols, ld, sig, 7, 3.0, 1.2, 16, lo, hi, r2,
                                                 s2, t) == NCALC_OK, "octaves rows");
                    for (ptrdiff_t r = 0; r < rows; r++) {
                        const ptrdiff_t a = lo[r] < 0 ? 0 : lo[r], b = hi[r] > cols ? cols : hi[r];
                        if (a < b)
                            CHECK(memcmp(r1 + r * cols + a, r2 + r * cols + a, (size_t)(b - a) * 4) == 0 &&
                                  memcmp(s1 + r * cols + a, s2 + r * cols + a, (size_t)(b - a)) == 0,
                                  "octaves rows = ld %tdx%td row %td", rows, cols, r);
                    }
                }
            }
            /* one row's range alone (starting at an even column, where the computed range starts too):
             * the columns of every input row converted from uint16 come from that range only */
            for (ptrdiff_t lone = 0; dtype == NCALC_U16 && rows <= 67 && lone < rows; lone++) {
                for (ptrdiff_t r = 0; r < rows; r++) lo[r] = hi[r] = 0;
                lo[lone] = (int32_t)(2 * (rnd() % (unsigned)((cols + 1) / 2)));
                hi[lone] = lo[lone] + 1 + (int32_t)(rnd() % (unsigned)(cols - lo[lone]));
                const int t = 1 + (int)(lone % 2);
                CHECK(ncalc_dog_octaves_ld(wide, dtype, rows, cols, ld, sig, 7, 3.0, 1.2, 16, r1, s1, t)
                      == NCALC_OK, "octaves ld");
                CHECK(ncalc_dog_octaves_ld(junk, dtype, rows, cols, ld, sig, 7, 3.0, 1.2, 16, r2, s2, t)
                      == NCALC_OK, "octaves ld, other pixels");
                ncalc_release_buffers();
                CHECK(ncalc_dog_octaves_rows(wide, dtype, rows, cols, ld, sig, 7, 3.0, 1.2, 16, lo, hi, r2, s2, t)
                      == NCALC_OK, "octaves rows, one range");
                const ptrdiff_t o = lone * cols + lo[lone], w = hi[lone] - lo[lone];
                CHECK(memcmp(r1 + o, r2 + o, (size_t)w * 4) == 0 && memcmp(s1 + o, s2 + o, (size_t)w) == 0,
                      "octaves rows = ld %tdx%td, row %td's range alone", rows, cols, lone);
            }
            CHECK(ncalc_dog_octaves_rows(wide, dtype, rows, cols, ld, sig, 7, 3.0, 1.2, 16, lo, NULL, r2, s2, 1)
                  == NCALC_EINVAL, "octaves rows: lo without hi");
            free(wide);
            free(junk);
            free(r1);
            free(r2);
            free(s1);
            free(s2);
        }
        free(mask);
        free(lo);
        free(hi);
    }
}

/* ncalc_dog_noise_nms: the coarser levels merged band by band as the noise
 * pass reads them give the response, scale, grid, peaks and values of
 * ncalc_dog_octaves_rows then ncalc_noise_nms (or _blocks), bit for bit:
 * small and odd shapes, both dtypes, no mask, a full mask (with the DoG's
 * row ranges or without), blocks, bands of 1 row to the whole image, 1-3
 * threads, too little room for the peaks. */
/* ncalc_extent_ranges of a whole mask given by its extents: those of
 * ncalc_mask_row_ranges on the mask; then a crop, checked by hand. */
static void extent_ranges(void)
{
    for (int t = 0; t < 200; t++) {
        const ptrdiff_t n = 1 + rnd() % 40, w = 1 + rnd() % 50;
        const int pad = (int)(rnd() % 6);
        int32_t *lo = malloc(sizeof(int32_t) * 4 * (size_t)n), *hi = lo + n, *a = hi + n, *b = a + n;
        int32_t *ra = malloc(sizeof(int32_t) * 2 * (size_t)n), *rb = ra + n;
        uint8_t *mask = calloc((size_t)(n * w), 1);
        for (ptrdiff_t q = 0; q < n; q++) {
            lo[q] = (int32_t)(rnd() % w);
            hi[q] = (int32_t)(rnd() % 4 == 0 ? lo[q] : lo[q] + 1 + rnd() % (w - lo[q]));
            for (ptrdiff_t c = lo[q]; c < hi[q]; c++) mask[q * w + c] = 1;
        }
        CHECK(ncalc_extent_ranges(lo, hi, n, 0, n, 0, w, pad, a, b) == NCALC_OK, "extent ranges");
        CHECK(ncalc_mask_row_ranges(mask, n, w, w, pad, ra, rb, 1) == NCALC_OK, "extent ranges: mask");
        for (ptrdiff_t r = 0; r < n; r++)
            CHECK(a[r] == ra[r] && b[r] == rb[r], "extent ranges row %td: %d %d against %d %d", r, a[r], b[r],
                  ra[r], rb[r]);
        free(lo); free(ra); free(mask);
    }
    const int32_t lo1[3] = {5, 0, 2}, hi1[3] = {9, 0, 4};
    int32_t a[2], b[2];
    /* rows 1 and 2 of columns [3, 8), pad 1: row 1 sees rows 0-2 (2..9 grown
     * to 1..10, in the crop 0..5), row 2 sees rows 1-2 (2..4 grown to 1..5:
     * 0..2) */
    CHECK(ncalc_extent_ranges(lo1, hi1, 3, 1, 3, 3, 8, 1, a, b) == NCALC_OK && a[0] == 0 && b[0] == 5 &&
              a[1] == 0 && b[1] == 2,
          "extent ranges crop: %d %d %d %d", a[0], b[0], a[1], b[1]);
    CHECK(ncalc_extent_ranges(lo1, hi1, 3, 2, 1, 0, 1, 0, a, b) == NCALC_EINVAL, "extent ranges refusal");
}

/* ncalc_block_sample: the samples of the mask ncalc_upscale_mask makes. */
static void block_sample(void)
{
    for (int t = 0; t < 100; t++) {
        const ptrdiff_t rows = 3 + rnd() % 60, cols = 3 + rnd() % 60;
        const ptrdiff_t fy = 1 + rnd() % 9, fx = 1 + rnd() % 9, k = 1 + rnd() % 5;
        const ptrdiff_t hh = rows / fy > 0 ? rows / fy : 1, ww = cols / fx > 0 ? cols / fx : 1;
        if (hh * fy > rows || ww * fx > cols) continue;
        const ptrdiff_t nr = (rows - 2 + k - 1) / k, nc = (cols - 2 + k - 1) / k;
        uint8_t *small = malloc((size_t)(hh * ww)), *full = malloc((size_t)(rows * cols));
        uint8_t *got = malloc((size_t)(nr * nc + 1));
        for (ptrdiff_t i = 0; i < hh * ww; i++) small[i] = rnd() % 3 == 0 ? (uint8_t)(1 + rnd() % 255) : 0; /* any non-zero byte is set */
        CHECK(ncalc_upscale_mask(small, hh, ww, fy, fx, rows, cols, full, 1) == NCALC_OK, "block sample: upscale");
        ptrdiff_t set = 0;
        for (ptrdiff_t i = 0; i < nr; i++)
            for (ptrdiff_t j = 0; j < nc; j++) set += full[(1 + i * k) * cols + 1 + j * k] != 0;
        CHECK(ncalc_block_sample(small, hh, ww, fy, fx, k, nr, nc, got) == set, "block sample count");
        for (ptrdiff_t i = 0; i < nr; i++)
            for (ptrdiff_t j = 0; j < nc; j++)
                CHECK(got[i * nc + j] == (full[(1 + i * k) * cols + 1 + j * k] != 0), "block sample %td %td", i, j);
        free(small); free(full); free(got);
    }
    uint8_t one = 1, out = 0;
    CHECK(ncalc_block_sample(&one, 1, 1, 0, 1, 1, 1, 1, &out) == NCALC_EINVAL, "block sample refusal");
}

/* ncalc_otsu: two groups, one value, refusals. */
static void otsu(void)
{
    double x[10] = {1, 1, 1, 1, 1, 9, 9, 9, 9, 9}, thr = -1;
    /* 4 bins of [1, 9]: centres 2, 4, 6, 8; any split between the groups
     * is best, the first (after bin 0) wins */
    CHECK(ncalc_otsu(x, 10, 4, &thr) == NCALC_OK && thr == 2.0, "otsu two groups: %g", thr);
    CHECK(ncalc_otsu(x, 3, 4, &thr) == NCALC_OK && thr == 1.0, "otsu one value: %g", thr);
    x[3] = NAN;
    CHECK(ncalc_otsu(x, 10, 4, &thr) == NCALC_EINVAL, "otsu NaN");
    x[3] = INFINITY;
    CHECK(ncalc_otsu(x, 10, 4, &thr) == NCALC_EINVAL, "otsu inf");
    CHECK(ncalc_otsu(x, 0, 4, &thr) == NCALC_EINVAL && ncalc_otsu(x, 10, 0, &thr) == NCALC_EINVAL, "otsu args");
}

static void count_call(void *arg) { ++*(int *)arg; }

static void dog_noise_one_call(void)
{
    const ptrdiff_t shapes[][2] = {{1, 1}, {2, 3}, {5, 40}, {33, 32}, {40, 90}, {67, 131}, {131, 67}, {150, 140}};
    const double sig[] = {0.758, 1.212, 1.939, 3.103, 4.965, 7.944, 12.71};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const ptrdiff_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
        const ptrdiff_t fy = 1 + rnd() % (rows < 6 ? rows : 6), fx = 1 + rnd() % (cols < 6 ? cols : 6);
        const ptrdiff_t hh = rows / fy, ww = cols / fx;
        uint8_t *small = malloc((size_t)(hh * ww)), *mask = malloc((size_t)n);
        for (ptrdiff_t i = 0; i < hh * ww; i++) small[i] = (uint8_t)(rnd() % 5 != 0);
        CHECK(ncalc_upscale_mask(small, hh, ww, fy, fx, rows, cols, mask, 1) == NCALC_OK, "one call upscale");
        int32_t *lo = malloc(sizeof(int32_t) * (size_t)rows), *hi = malloc(sizeof(int32_t) * (size_t)rows);
        for (int dtype = 0; dtype < 2; dtype++) {
            void *img = malloc((size_t)n * (dtype == NCALC_U16 ? 2 : 4));
            for (ptrdiff_t i = 0; i < n; i++) {
                const unsigned v = rnd() % 4096 + (rnd() % 50 == 0 ? 3000 : 0); /* noise and spikes */
                if (dtype == NCALC_U16) ((uint16_t *)img)[i] = (uint16_t)v;
                else ((float *)img)[i] = (float)v / 3.0f;
            }
            float *r1 = malloc(sizeof(float) * (size_t)n), *r2 = malloc(sizeof(float) * (size_t)n);
            uint8_t *s1 = malloc((size_t)n), *s2 = malloc((size_t)n);
            for (int variant = 0; variant < 4; variant++) {
                /* 0: no mask; 1: mask; 2: mask and its row ranges; 3: blocks and ranges */
                const int radius = variant, nt = 1 + variant % 3;
                const ptrdiff_t tile = variant == 0 ? 1 : variant == 3 ? 1000 : 2 + rnd() % 30;
                const ptrdiff_t gn = ((rows + tile - 1) / tile) * ((cols + tile - 1) / tile);
                const ptrdiff_t room = variant == 1 ? 3 : n; /* variant 1: too little room */
                const ptrdiff_t top = variant == 2 ? 5 : 0;
                float *g1 = malloc(sizeof(float) * (size_t)gn), *g2 = malloc(sizeof(float) * (size_t)gn);
                int32_t *a = malloc(sizeof(int32_t) * 4 * (size_t)n);
                float *v1 = malloc(sizeof(float) * (size_t)n), *v2 = malloc(sizeof(float) * (size_t)n);
                const int ranged = variant >= 2;
                if (ranged) CHECK(ncalc_mask_row_ranges(mask, rows, cols, cols, radius, lo, hi, 1) == NCALC_OK,
                                  "one call ranges");
                const uint8_t *mk = variant == 1 || variant == 2 ? mask : NULL;
                const uint8_t *sm = variant == 3 ? small : NULL;
                memset(r1, 0, sizeof(float) * (size_t)n);
                memset(r2, 0, sizeof(float) * (size_t)n);
                memset(s1, 0, (size_t)n);
                memset(s2, 0, (size_t)n);
                CHECK(ncalc_dog_octaves_rows(img, dtype, rows, cols, cols, sig, 7, 3.0, 1.2, 16, ranged ? lo : NULL,
                                             ranged ? hi : NULL, r1, s1, nt) == NCALC_OK, "one call: dog");
                const ptrdiff_t k1 = sm ? ncalc_noise_nms_blocks(r1, rows, cols, sm, hh, ww, fy, fx, 0, 0, tile, 4,
                                                                 1.5f, radius, g1, a, a + n, v1, room, top, nt)
                                        : ncalc_noise_nms(r1, rows, cols, mk, cols, tile, 4, 1.5f, radius, g1, a,
                                                          a + n, v1, room, top, nt);
                ncalc_release_buffers(); /* fresh coarse levels */
                const ptrdiff_t k2 = ncalc_dog_noise_nms(img, dtype, rows, cols, cols, sig, 7, 3.0, 1.2, 16,
                                                         ranged ? lo : NULL, ranged ? hi : NULL, r2, s2, mk, cols,
                                                         sm, hh, ww, fy, fx, 0, 0, tile, 4, 1.5f, radius, g2,
                                                         a + 2 * n, a + 3 * n, v2, room, top, nt);
                CHECK(k1 == k2, "one call %tdx%td variant %d: count %td %td", rows, cols, variant, k1, k2);
                {
                    /* with a side job: called once, the same results */
                    float *r3 = malloc(sizeof(float) * (size_t)n), *g3 = malloc(sizeof(float) * (size_t)gn);
                    float *v3 = malloc(sizeof(float) * (size_t)n);
                    uint8_t *s3 = malloc((size_t)n);
                    int32_t *a3 = malloc(sizeof(int32_t) * 2 * (size_t)n);
                    int calls = 0;
                    ncalc_side side = {count_call, &calls, 0};
                    memset(r3, 0, sizeof(float) * (size_t)n);
                    memset(s3, 0, (size_t)n);
                    const ptrdiff_t k3 = ncalc_dog_noise_nms_side(
                        img, dtype, rows, cols, cols, sig, 7, 3.0, 1.2, 16, ranged ? lo : NULL, ranged ? hi : NULL,
                        r3, s3, mk, cols, sm, hh, ww, fy, fx, 0, 0, tile, 4, 1.5f, radius, g3, a3, a3 + n, v3, room,
                        top, nt, &side);
                    CHECK(calls == 1 && side.done == 1, "side job: called %d times", calls);
                    CHECK(k3 == k1 && memcmp(r1, r3, sizeof(float) * (size_t)n) == 0 &&
                              memcmp(s1, s3, (size_t)n) == 0,
                          "side job %tdx%td variant %d: results", rows, cols, variant);
                    if (k1 >= 0 && k3 == k1) {
                        CHECK(memcmp(g1, g3, sizeof(float) * (size_t)gn) == 0, "side job grid");
                        for (ptrdiff_t i = 0; i < (k1 < room ? k1 : room); i++)
                            CHECK(a[i] == a3[i] && a[n + i] == a3[n + i] && v1[i] == v3[i], "side job peak %td", i);
                    }
                    /* a refused call runs it too, once */
                    calls = 0;
                    CHECK(ncalc_dog_noise_nms_side(img, dtype, rows, cols, cols, sig, 7, 3.0, 1.2, 16, NULL, NULL,
                                                   r3, s3, mask, cols, small, hh, ww, fy, fx, 0, 0, tile, 4, 1.5f,
                                                   radius, g3, a3, a3 + n, v3, room, 0, nt,
                                                   &side) == NCALC_EINVAL &&
                              calls == 1 && side.done == 1,
                          "side job on a refused call: called %d times", calls);
                    free(r3); free(g3); free(v3); free(s3); free(a3);
                }
                CHECK(memcmp(r1, r2, sizeof(float) * (size_t)n) == 0 && memcmp(s1, s2, (size_t)n) == 0,
                      "one call %tdx%td variant %d: response", rows, cols, variant);
                if (k1 >= 0 && k1 == k2) {
                    CHECK(memcmp(g1, g2, sizeof(float) * (size_t)gn) == 0, "one call grid");
                    for (ptrdiff_t i = 0; i < (k1 < room ? k1 : room); i++)
                        CHECK(a[i] == a[2 * n + i] && a[n + i] == a[3 * n + i] && v1[i] == v2[i],
                              "one call peak %td", i);
                }
                CHECK(ncalc_dog_noise_nms(img, dtype, rows, cols, cols, sig, 7, 3.0, 1.2, 16, NULL, NULL, r2, s2,
                                          mask, cols, small, hh, ww, fy, fx, 0, 0, tile, 4, 1.5f, radius, g2, a,
                                          a + n, v2, room, 0, nt) == NCALC_EINVAL, "one call: mask and blocks");
                CHECK(ncalc_dog_noise_nms(img, dtype, rows, cols, cols, sig, 7, 3.0, 1.2, 16, NULL, NULL, r2, s2,
                                          mask, cols - 1, NULL, 0, 0, 0, 0, 0, 0, tile, 4, 1.5f, radius, g2, a,
                                          a + n, v2, room, 0, nt) == NCALC_EINVAL, "one call: mask_ld < cols");
                free(g1); free(g2); free(a); free(v1); free(v2);
            }
            free(img); free(r1); free(r2); free(s1); free(s2);
        }
        free(small); free(mask); free(lo); free(hi);
    }
}

/* ncalc_block_extents against the upscaled mask (ncalc_upscale_mask): the
 * extents are its rows' ncalc_mask_row_ranges (pad 0), the box that of its
 * set pixels; a view with a row pitch; nothing set; refusals. */
static void block_extents(void)
{
    for (int it = 0; it < 200; it++) {
        const ptrdiff_t hh = 1 + rnd() % 12, ww = 1 + rnd() % 12, fy = 1 + rnd() % 5, fx = 1 + rnd() % 5;
        const ptrdiff_t h = hh * fy + rnd() % fy, w = ww * fx + rnd() % fx, ld = ww + rnd() % 3;
        const unsigned dens = rnd() % 4; /* none, sparse, half, all */
        uint8_t *small = malloc((size_t)(hh * ld)), *packed = malloc((size_t)(hh * ww)),
                *mask = malloc((size_t)(h * w));
        int any = 0;
        for (ptrdiff_t i = 0; i < hh; i++)
            for (ptrdiff_t j = 0; j < ld; j++) {
                const uint8_t v = j >= ww ? 7 : (uint8_t)(dens == 3 || (dens == 1 && rnd() % 9 == 0) ||
                                                          (dens == 2 && rnd() % 2));
                small[i * ld + j] = v; /* (beyond ww: the pitch's padding, never read as mask) */
                if (j < ww) { packed[i * ww + j] = v; any |= v; }
            }
        CHECK(ncalc_upscale_mask(packed, hh, ww, fy, fx, h, w, mask, 1) == NCALC_OK, "block extents upscale");
        int32_t *lo = malloc(sizeof(int32_t) * (size_t)h), *hi = malloc(sizeof(int32_t) * (size_t)h);
        int32_t *wlo = malloc(sizeof(int32_t) * (size_t)h), *whi = malloc(sizeof(int32_t) * (size_t)h);
        int64_t box[4] = {-9, -9, -9, -9};
        const int got = ncalc_block_extents(small, hh, ww, ld, fy, fx, h, w, lo, hi, box);
        CHECK(got == any, "block extents: any %d, got %d", any, got);
        CHECK(ncalc_mask_row_ranges(mask, h, w, w, 0, wlo, whi, 1) == NCALC_OK, "block extents ranges");
        ptrdiff_t r0 = h, r1 = 0, c0 = w, c1 = 0;
        for (ptrdiff_t r = 0; r < h; r++) {
            CHECK(lo[r] == wlo[r] && hi[r] == whi[r], "block extents row %td: (%d, %d) for (%d, %d)", r, lo[r],
                  hi[r], wlo[r], whi[r]);
            for (ptrdiff_t c = 0; c < w; c++)
                if (mask[r * w + c]) {
                    if (r < r0) r0 = r;
                    if (r + 1 > r1) r1 = r + 1;
                    if (c < c0) c0 = c;
                    if (c + 1 > c1) c1 = c + 1;
                }
        }
        if (any)
            CHECK(box[0] == r0 && box[1] == r1 && box[2] == c0 && box[3] == c1, "block extents box");
        else
            CHECK(box[0] == -9 && box[3] == -9, "block extents: box untouched");
        free(small); free(packed); free(mask); free(lo); free(hi); free(wlo); free(whi);
    }
    uint8_t one = 1;
    int32_t a[4], b[4];
    int64_t box[4];
    CHECK(ncalc_block_extents(&one, 1, 1, 1, 2, 2, 1, 2, a, b, box) == NCALC_EINVAL, "block extents: h < hh fy");
    CHECK(ncalc_block_extents(&one, 1, 2, 1, 1, 1, 1, 2, a, b, box) == NCALC_EINVAL, "block extents: ld < ww");
    CHECK(ncalc_block_extents(&one, 1, 1, 1, 1, 1, 1, 1, NULL, b, box) == NCALC_EINVAL, "block extents: NULL");
}

/* ncalc_breast_blocks against its steps called one by one (ncalc_otsu,
 * the blocks above the threshold, ncalc_largest_component, the edge-padded
 * grid through ncalc_erode_l1, ncalc_block_extents): a disc of tissue in
 * air at random places and sizes (air fractions from about 0 to 1), noise,
 * half of them with blocks on the threshold itself, margins 0 to 5; NaN
 * refused; tissue untouched for the whole image. */
static void breast_blocks(void)
{
    int kinds[3] = {0, 0, 0};
    for (int it = 0; it < 300; it++) {
        /* every eighth grid of 16384 blocks or more: the threshold's passes
         * on parts, 1 to 3 threads (the steps below: one) */
        const int big = it % 8 == 3, nt = 1 + it % 3;
        const ptrdiff_t hh = big ? 130 + rnd() % 90 : 4 + rnd() % 30, ww = big ? 130 + rnd() % 90 : 4 + rnd() % 30;
        const ptrdiff_t fy = 1 + rnd() % 4, fx = 1 + rnd() % 4;
        const ptrdiff_t h = hh * fy + rnd() % fy, w = ww * fx + rnd() % fx, n = hh * ww;
        const ptrdiff_t margin = rnd() % 6;
        /* (the centre up to half a side outside: the disc also widens towards an edge) */
        const double cy = ((double)(rnd() % 200) / 100.0 - 0.5) * (double)hh;
        const double cx = ((double)(rnd() % 200) / 100.0 - 0.5) * (double)ww;
        const double rad = (double)(rnd() % 100) / 100.0 * (double)(hh + ww);
        double *small = malloc(sizeof(double) * (size_t)n);
        uint8_t *t = malloc((size_t)n), *comp = malloc((size_t)n), *want = malloc((size_t)n),
                *got = malloc((size_t)n);
        int32_t *lo = malloc(sizeof(int32_t) * (size_t)h), *hi = malloc(sizeof(int32_t) * (size_t)h);
        int32_t *wlo = malloc(sizeof(int32_t) * (size_t)h), *whi = malloc(sizeof(int32_t) * (size_t)h);
        for (ptrdiff_t i = 0; i < hh; i++)
            for (ptrdiff_t j = 0; j < ww; j++) {
                const double d = hypot((double)i - cy, (double)j - cx);
                small[i * ww + j] = it % 2 ? (d < rad ? 1000.0 : 100.0) + (double)(rnd() % 300)
                                           : (d < rad ? 300.0 : 0.0) + (double)(rnd() % 213);
            }
        if (it % 2 == 0) { /* range [0, 512]: the bins' centres are the odd integers, so some blocks
                            * lie on the threshold itself (not tissue: above it only) */
            small[0] = 0.0;
            small[n - 1] = 512.0;
        }
        if (it % 16 == 11 || it % 16 == 3) { /* zeros of both signs: the first in raster order is the minimum */
            small[0] = 12.0;
            small[n / 3] = it % 16 == 3 ? -0.0 : 0.0;
            small[2 * n / 3] = it % 16 == 3 ? 0.0 : -0.0;
        }
        if (it % 15 < 2 && n >= 40) { /* one air block in tissue, or one tissue block in air: the whole image */
            for (ptrdiff_t i = 0; i < n; i++) small[i] = (it % 15 ? 100.0 : 1000.0) + (double)(rnd() % 30);
            small[rnd() % n] = it % 15 ? 1000.0 : 100.0;
        }
        /* the steps one by one */
        double thr;
        CHECK(ncalc_otsu(small, n, 256, &thr) == NCALC_OK, "breast blocks: otsu");
        ptrdiff_t set = 0;
        for (ptrdiff_t i = 0; i < n; i++) set += t[i] = small[i] > thr;
        const double air = 1.0 - (double)set / (double)n;
        int64_t wbox[4] = {-9, -9, -9, -9}, box[4] = {-9, -9, -9, -9};
        int expect = 0;
        if (!(air < 0.03 || air > 0.97) && ncalc_largest_component(t, hh, ww, comp) > 0) {
            const ptrdiff_t ph = hh + 2 * margin, pw = ww + 2 * margin;
            uint8_t *pad = malloc((size_t)(ph * pw)), *er = malloc((size_t)(ph * pw));
            for (ptrdiff_t r = 0; r < ph; r++)
                for (ptrdiff_t c = 0; c < pw; c++) {
                    const ptrdiff_t sr = r < margin ? 0 : r >= margin + hh ? hh - 1 : r - margin;
                    const ptrdiff_t sc = c < margin ? 0 : c >= margin + ww ? ww - 1 : c - margin;
                    pad[r * pw + c] = comp[sr * ww + sc];
                }
            CHECK(ncalc_erode_l1(pad, ph, pw, margin, er) == NCALC_OK, "breast blocks: erode");
            for (ptrdiff_t r = 0; r < hh; r++)
                for (ptrdiff_t c = 0; c < ww; c++) want[r * ww + c] = er[(r + margin) * pw + margin + c];
            expect = ncalc_block_extents(want, hh, ww, ww, fy, fx, h, w, wlo, whi, wbox) == 1 ? 1 : 2;
            free(pad); free(er);
        }
        memset(got, 7, (size_t)n);
        const int st = ncalc_breast_blocks(small, hh, ww, 256, 0.03, 0.97, margin, fy, fx, h, w, got, lo, hi, box, nt);
        CHECK(st == expect, "breast blocks %d: %d for %d", it, st, expect);
        kinds[st >= 0 && st <= 2 ? st : 0]++;
        if (st == 0)
            for (ptrdiff_t i = 0; i < n; i++) CHECK(got[i] == 7, "breast blocks: tissue untouched");
        if (st > 0 && st == expect) {
            CHECK(memcmp(got, want, (size_t)n) == 0, "breast blocks %d: tissue", it);
            CHECK(memcmp(lo, wlo, sizeof(int32_t) * (size_t)h) == 0 &&
                  memcmp(hi, whi, sizeof(int32_t) * (size_t)h) == 0, "breast blocks %d: extents", it);
            CHECK(memcmp(box, wbox, sizeof box) == 0, "breast blocks %d: box", it);
        }
        if (it == 0) {
            small[n / 2] = NAN;
            CHECK(ncalc_breast_blocks(small, hh, ww, 256, 0.03, 0.97, margin, fy, fx, h, w, got, lo, hi, box, nt) ==
                  NCALC_EINVAL, "breast blocks: NaN");
            CHECK(ncalc_breast_blocks(small, hh, ww, 256, 0.03, 0.97, margin, fy, fx, hh * fy - 1, w, got, lo, hi,
                                      box, nt) == NCALC_EINVAL, "breast blocks: h < hh fy");
        }
        free(small); free(t); free(comp); free(want); free(got); free(lo); free(hi); free(wlo); free(whi);
    }
    CHECK(kinds[0] > 10 && kinds[1] > 10 && kinds[2] > 0, "breast blocks: cases %d %d %d", kinds[0], kinds[1],
          kinds[2]);
}

/* ncalc_feature_parts on rows worked by hand. */
static void feature_parts(void)
{
    /* snr, contrast, peak, bg_std, nlf_sd, sigma, h1 rr rc cc, h2 rr rc cc, elongation, diameter,
     * area, sigma_large, h3 rr cc; row 1: no blob (b1 = 0), a NaN SNR, a zero ring deviation, a
     * saddle at the blob scale */
    const double v[NCALC_FEATURE_INPUTS][2] = {
        {3, NAN}, {2, 2}, {4, 4}, {0.5, 0}, {0.5, 0.5}, {1, 1}, {-1, 1}, {0, 0}, {-1, -1},
        {-0.25, -1}, {0, 0}, {-0.25, -1}, {1.5, 30}, {0.3, 0.3}, {2, 2}, {10, 10}, {-0.002, 0}, {-0.002, 0}};
    const double *in[NCALC_FEATURE_INPUTS];
    for (int k = 0; k < NCALC_FEATURE_INPUTS; k++) in[k] = v[k];
    double X[2 * NCALC_FEATURES], la[8 * 2];
    CHECK(ncalc_feature_parts(in, 2, X, la, 1) == NCALC_OK, "feature parts");
    const double pi = 3.141592653589793, blob = 2.0 * 2.5066282746310002 / 0.5;
    const double want0[8] = {4, 5, 9, blob + 1, 5, 1.5, 1, 3 / (2 * pi + 1)};
    const double want1[8] = {NAN, 5, 9, 1, 1, 20, 1, 3 / (2 * pi + 1)};
    for (int k = 0; k < 8; k++) {
        CHECK(fabs(la[k * 2] - want0[k]) < 1e-12, "feature parts row 0 log %d: %g", k, la[k * 2]);
        CHECK(isnan(want1[k]) ? isnan(la[k * 2 + 1]) : fabs(la[k * 2 + 1] - want1[k]) < 1e-12,
              "feature parts row 1 log %d: %g", k, la[k * 2 + 1]);
    }
    /* row 0: an isotropic blob at both scales (ratios 1), b2 / b1 = 2 / 2, bL / b1 = 0.4 / 2;
     * row 1: h1 a saddle (l1 = -1, l2 = 1: -1), h2 isotropic, b1 = 0 (both scale ratios 2) */
    const double x0[4] = {1, 1, 1, 0.2}, x1[4] = {-1, 1, 2, 2};
    const int col[4] = {5, 6, 9, 11};
    for (int k = 0; k < 4; k++) {
        CHECK(fabs(X[col[k]] - x0[k]) < 1e-12, "feature parts row 0 column %d: %g", col[k], X[col[k]]);
        CHECK(fabs(X[NCALC_FEATURES + col[k]] - x1[k]) < 1e-12, "feature parts row 1 column %d: %g", col[k],
              X[NCALC_FEATURES + col[k]]);
    }
    CHECK(ncalc_feature_parts(in, 0, NULL, NULL, 1) == NCALC_OK, "feature parts: none");
    CHECK(ncalc_feature_parts(in, 2, NULL, la, 1) == NCALC_EINVAL, "feature parts: no X");
    in[3] = NULL;
    CHECK(ncalc_feature_parts(in, 2, X, la, 1) == NCALC_EINVAL, "feature parts: an input missing");
}

/* ncalc_nlf_fit: its edges are numpy.quantile's of the sorted levels
 * (order statistics selected, not sorted): the same bins as ncalc_nlf_bins
 * with edges from a sorted copy (ncalc_sort_f32), bit for bit. Images with
 * many ties, a wide range, a crowd near one value, constant values. */
static void nlf_fit_edges(void)
{
    for (int t = 0; t < 24; t++) {
        const ptrdiff_t rows = 40 + rnd() % 200, cols = 40 + rnd() % 200, k = 1 + rnd() % 3;
        const int kind = t % 4, dtype = kind == 0 ? NCALC_U16 : NCALC_F32;
        const ptrdiff_t np = rows * cols;
        void *img = malloc((size_t)np * 4);
        for (ptrdiff_t i = 0; i < np; i++) {
            if (kind == 0) ((uint16_t *)img)[i] = (uint16_t)(rnd() % 6); /* ties */
            else if (kind == 1) ((float *)img)[i] = rnd() % 50 == 0 ? (rnd() % 2 ? 8e37f : -8e37f)
                                                                    : (float)(rnd() % 1000) * 1e-3f;
            else if (kind == 2) ((float *)img)[i] = 7.25f; /* one level */
            else ((float *)img)[i] = (float)(rnd() % 100000) - 5e4f;
        }
        const ptrdiff_t nr = (rows - 2 + k - 1) / k, nc = (cols - 2 + k - 1) / k, cap = nr * nc;
        float *res = malloc(sizeof(float) * (size_t)cap), *lev = malloc(sizeof(float) * (size_t)cap);
        float *r2 = malloc(sizeof(float) * (size_t)cap), *l2 = malloc(sizeof(float) * (size_t)cap);
        float *srt = malloc(sizeof(float) * (size_t)cap);
        ptrdiff_t cnt[255], cnt2[255], n = 0;
        float lm[255], md[255], lm2[255], md2[255];
        int nb = 0;
        const int max_bins = 1 + (int)(rnd() % 40);
        CHECK(ncalc_nlf_fit(img, dtype, 1, 0, rows, cols, cols, k, NULL, max_bins, res, lev, &n, &nb, cnt, lm, md,
                            1 + t % 3) == NCALC_OK, "nlf fit");
        CHECK(ncalc_nlf_samples(img, dtype, 1, 0, rows, cols, cols, k, NULL, r2, l2, 1) == n, "nlf fit: samples");
        const ptrdiff_t by = n / 500;
        const int want_nb = n < 50 ? 0 : (int)(by < 1 ? 1 : by < max_bins ? by : max_bins);
        CHECK(nb == want_nb, "nlf fit: %d bins, %d wanted", nb, want_nb);
        if (nb > 0) {
            CHECK(ncalc_sort_f32(l2, n, srt, 1) == NCALC_OK, "nlf fit: sort");
            double edges[254];
            for (int e = 1; e < nb; e++) { /* numpy.quantile, method "linear" (as ncalc.h) */
                const double v = (double)(n - 1) * ((double)e / (double)nb);
                double fi = floor(v);
                ptrdiff_t i = (ptrdiff_t)fi, j = i + 1;
                if (v >= (double)(n - 1)) { fi = -1.0; i = j = n - 1; }
                const double g = v - fi;
                const float a = srt[i], b = srt[j], d = b - a;
                edges[e - 1] = g < 0.5 ? (double)a + (double)d * g : (double)b - (double)d * (1.0 - g);
            }
            CHECK(ncalc_nlf_bins(l2, r2, n, edges, nb - 1, cnt2, lm2, md2, 1) == NCALC_OK, "nlf fit: bins");
            for (int b = 0; b < nb; b++)
                CHECK(cnt[b] == cnt2[b] && memcmp(&lm[b], &lm2[b], 4) == 0 && memcmp(&md[b], &md2[b], 4) == 0,
                      "nlf fit kind %d bin %d of %d", kind, b, nb);
        }
        free(img); free(res); free(lev); free(r2); free(l2); free(srt);
    }
    /* a NaN level: refused, as the sort refuses it */
    float x[64 * 64];
    for (int i = 0; i < 64 * 64; i++) x[i] = (float)(i % 7);
    x[65 + 64] = NAN;
    float res[64 * 64], lev[64 * 64], lm[24], md[24];
    ptrdiff_t cnt[24], n;
    int nb;
    CHECK(ncalc_nlf_fit(x, NCALC_F32, 1, 0, 64, 64, 64, 1, NULL, 24, res, lev, &n, &nb, cnt, lm, md, 1)
          == NCALC_EINVAL, "nlf fit NaN");
}

int main(void)
{
    const ptrdiff_t shapes[][2] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}, {2, 9}, {9, 2}, {3, 5}, {5, 3},
                                   {17, 13}, {64, 70}, {1, 300}, {300, 1}, {67, 131},
                                   {33, 32}, {32, 33}, {131, 67}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        run_shape(shapes[s][0], shapes[s][1], NCALC_U16);
        run_shape(shapes[s][0], shapes[s][1], NCALC_F32);
    }
    symmetry();
    bad_arguments();
    stage_paths();
    crops_and_nlf();
    row_ranges();
    serial_steps();
    stack_steps();
    neighbours();
    noise_nms_steps();
    noise_nms_blocks();
    noise_nms_top();
    many_peaks_threads();
    dog_noise_one_call();
    extent_ranges();
    otsu();
    block_sample();
    nlf_fit_edges();
    block_extents();
    breast_blocks();
    feature_parts();
    cluster_shape();
    buffer_pool();
    ncalc_release_buffers(); /* nothing left for the leak checkers */
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("ncalc C tests: all passed (openmp=%d)\n", ncalc_have_openmp());
    return 0;
}
