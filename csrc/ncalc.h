/*
 * ncalc.h -- the hot loops of napari-calc, in plain C99.
 *
 * No Python API here: the Cython module napari_calc/_kernel.pyx wraps these
 * functions, and napari_calc/core/detect.py validates every argument before
 * they are called. Images are C-contiguous, row-major, (rows, cols).
 *
 * Boundary handling everywhere is SciPy's mode "reflect" (half-sample
 * symmetric: d c b a | a b c d | d c b a), so that scipy.ndimage is an exact
 * reference of the same math.
 *
 * Every function is thread-safe and uses OpenMP when compiled with it; the
 * results do not depend on the number of threads.
 */
#ifndef NCALC_H
#define NCALC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Pixel types accepted for the input image. */
enum ncalc_dtype { NCALC_U16 = 0, NCALC_F32 = 1 };

/* Status codes. */
enum ncalc_status {
    NCALC_OK = 0,
    NCALC_EINVAL = -1, /* bad argument */
    NCALC_ENOMEM = -2, /* allocation failed */
    NCALC_EFALLBACK = -3 /* not computed here: use the functions named */
};

/* 1 when built with OpenMP, else 0. */
int ncalc_have_openmp(void);

/* Threads OpenMP would use by default (1 for a serial build). */
int ncalc_max_threads(void);

/* Between the kernel's files: called in an OpenMP parallel region, the
 * team's size (*team), this thread's number (*me) and its contiguous share
 * [*lo, *hi) of n items (the shares in thread order); outside a region,
 * or without OpenMP, one thread and all of them. */
void ncalc_thread_share(ptrdiff_t n, int *team, int *me, ptrdiff_t *lo, ptrdiff_t *hi);

/* Between the kernel's files: the chunk of a dynamic schedule over n
 * items in their order that gives each of nthreads threads about eight
 * runs of consecutive items (at least 16 items a run). The per-candidate
 * loops use it: detect's candidates come in raster order, so a run keeps
 * a thread on one part of the image, whose windows overlap in its
 * caches, and eight runs a thread leave room to balance the work. */
ptrdiff_t ncalc_run_chunk(ptrdiff_t n, int nthreads);

/* Between the kernel's files: called by every thread of an OpenMP parallel
 * region (a barrier), 1 in all of them when mine is nonzero in any; *flag
 * is shared and 0 before the first call (it is set to 1 then). */
int ncalc_team_any(int mine, int *flag);

/* Radius in pixels of the sampled Gaussian of standard deviation sigma:
 * (int)(truncate * sigma + 0.5), as scipy.ndimage.gaussian_filter. */
int ncalc_gaussian_radius(double sigma, double truncate);

/*
 * Separable Gaussian smoothing (SciPy's gaussian_filter with mode "reflect").
 * img: rows x cols of dtype; out: rows x cols float32 (may not alias img).
 */
int ncalc_gaussian(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                   double sigma, double truncate, float *out, int nthreads);

/*
 * Multi-scale difference-of-Gaussians.
 * With sigmas s_0 < s_1 < ... < s_{n-1} (n >= 2), for each pixel
 *     dog_i = G(s_i) * img - G(s_{i+1}) * img,   i = 0 .. n-2
 *     resp  = max_i dog_i,   scale = argmax_i dog_i (first on ties).
 * Bright blobs give positive responses. resp: float32 rows x cols;
 * scale: uint8 rows x cols (may be NULL).
 * Fused row by row: no full-size temporary besides the outputs.
 */
int ncalc_dog_response(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                       const double *sigmas, int nsigmas, double truncate,
                       float *resp, uint8_t *scale, int nthreads);

/*
 * Robust noise: 1.4826 * median(|x - median(x)|) over the pixels of x
 * (rows x cols) with mask != 0 (mask may be NULL), sampled at every
 * stride-th pixel of every stride-th row. The median of m values is the
 * element of rank (m - 1) / 2 (the lower median).
 * Returns NAN when fewer than 2 pixels are sampled, -1 on allocation failure.
 */
double ncalc_mad_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                       const uint8_t *mask, ptrdiff_t stride);

/*
 * Local noise: the robust noise above computed on each tile x tile block
 * (the last row/column of blocks may be smaller). grid: ceil(rows/tile) x
 * ceil(cols/tile) float32; a block with fewer than min_count masked pixels
 * gets NAN. Blocks are computed in parallel.
 */
int ncalc_tile_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                     const uint8_t *mask, ptrdiff_t tile, ptrdiff_t min_count,
                     float *grid, int nthreads);

/*
 * The same on a regular subsample of each tile: the pixels at rows
 * r0, r0 + stride, ... and columns c0, c0 + stride, ... of the tile whose
 * first pixel is (r0, c0); min_count counts these sampled pixels.
 * stride = 1 is ncalc_tile_noise. A deterministic approximation for speed
 * (stride^2 fewer pixels): the values change (see tests and docs).
 */
int ncalc_tile_noise_strided(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                             const uint8_t *mask, ptrdiff_t tile, ptrdiff_t stride,
                             ptrdiff_t min_count, float *grid, int nthreads);

/*
 * ncalc_tile_noise with the mask's rows mask_ld >= cols bytes apart (row r
 * of the mask starts at mask + r mask_ld): a crop of a larger mask.
 */
int ncalc_tile_noise_ld(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                        const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t min_count,
                        float *grid, int nthreads);

/*
 * Non-maximum suppression and threshold.
 * A pixel p is a peak when mask[p] != 0 (mask may be NULL),
 *     resp[p] > k * grid[p_row / tile][p_col / tile]     (grid may be NULL:
 *                                                        then resp[p] > k)
 * and resp[p] >= resp[q] for every q in the (2 radius + 1)^2 window around p
 * that lies inside the image. Peaks are listed in raster order: rows/cols
 * receive at most max_out of them; the return value is the total number
 * (call again with more room when it exceeds max_out), or < 0 on error.
 */
ptrdiff_t ncalc_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                    const uint8_t *mask, const float *grid, ptrdiff_t tile,
                    float k, int radius,
                    int32_t *out_rows, int32_t *out_cols, ptrdiff_t max_out);

/* ncalc_nms with the mask's rows mask_ld >= cols bytes apart, on nthreads
 * threads (<= 0: the OpenMP default; ncalc_nms uses that). */
ptrdiff_t ncalc_nms_ld(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                       const uint8_t *mask, ptrdiff_t mask_ld, const float *grid, ptrdiff_t tile,
                       float k, int radius,
                       int32_t *out_rows, int32_t *out_cols, ptrdiff_t max_out, int nthreads);

/*
 * Local noise and non-maximum suppression in one pass: the same grid as
 * ncalc_tile_noise_ld (tile, min_count) after the fix-up of
 * napari_calc.core.detect, and the same peaks as ncalc_nms_ld with that
 * grid. A tile is bad unless its noise is finite and > 0 (too few masked
 * pixels, or flat); bad tiles take the median of the good ones (numpy's
 * median of float32: the middle value, or the float32 mean of the two
 * middle ones). Each band of tiles is scanned for peaks right after its
 * noise is computed, while its rows are in cache; in a band's bad tiles
 * the scan uses a threshold at or below any the median can give (0 for
 * k >= 0) and those peaks are filtered once the median is known. grid receives
 * ceil(rows / tile) x ceil(cols / tile) floats; rows/cols as ncalc_nms.
 * With out_value (not NULL), also the response at each peak written
 * (read while the band is in cache; ncalc_peak_values with resp NULL gives
 * the noise and SNR from them). Returns the number of
 * peaks, < 0 on error, or NCALC_EFALLBACK (grid and peaks not to be used)
 * when no tile is good or resp holds a NaN: then call ncalc_tile_noise_ld
 * and ncalc_nms_ld. Bands in parallel; the result does not
 * depend on the thread count.
 *
 * top > 0: only the peaks that can be among the top highest SNRs are
 * wanted (the SNR of a peak at (r, c) is resp[r][c] / grid[r / tile][c /
 * tile] in double, as ncalc_peak_values gives it). Let B be the lower
 * edge of the highest bin, of bins 32 an octave ([(1 + j / 32) 2^e,
 * (1 + (j + 1) / 32) 2^e), e >= -10; all SNRs from 2^21 up in the last
 * one), at or above which lie the SNRs of top peaks of good tiles (B = 0
 * when there are fewer). Then the peaks of good tiles with an SNR below B
 * are left out, and no others: the list is the full one (top = 0) without
 * them, in the same order, and it does not depend on the thread count
 * either. B is at most the top-th largest SNR, so ncalc_top_k(snr, top)
 * of the list selects the very peaks it selects of the full list. The
 * threads count the SNRs of the peaks of good tiles as they find them;
 * the bound this count gives (at most B) raises the scan's threshold in
 * good tiles to just under bound x noise, so most of the peaks below B
 * are never listed.
 */
ptrdiff_t ncalc_noise_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                          const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t min_count,
                          float k, int radius, float *grid,
                          int32_t *out_rows, int32_t *out_cols, float *out_value, ptrdiff_t max_out,
                          ptrdiff_t top, int nthreads);

/*
 * ncalc_noise_nms with the mask given as blocks, as ncalc_upscale_mask
 * would make it: mask[r][c] = (small[i][j] != 0) with
 * i = min((row0 + r) / fy, hh - 1) and j = min((col0 + c) / fx, ww - 1),
 * small hh x ww (hh, ww, fy, fx >= 1; row0, col0 >= 0: where resp sits in
 * the image the blocks cover). The same grid and peaks as ncalc_noise_nms
 * with that mask, without a full-size mask: each thread writes a band's
 * rows of it into its own buffer (in cache) just before the band is read.
 */
ptrdiff_t ncalc_noise_nms_blocks(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                                 const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t fy,
                                 ptrdiff_t fx, ptrdiff_t row0, ptrdiff_t col0, ptrdiff_t tile,
                                 ptrdiff_t min_count, float k, int radius, float *grid,
                                 int32_t *out_rows, int32_t *out_cols, float *out_value,
                                 ptrdiff_t max_out, ptrdiff_t top, int nthreads);

/*
 * The octave DoG and the noise pass in one call: ncalc_dog_octaves_rows
 * (img .. nthreads as there), then ncalc_noise_nms on its response (mask
 * and mask_ld as there, or the mask as blocks when small is not NULL,
 * as ncalc_noise_nms_blocks; tile .. top as there). The same resp, scale,
 * grid and peaks as those two calls, and the same return value as the
 * second. The difference is when the coarser levels' response is merged
 * into the full-resolution one: not in a pass of its own over resp and
 * scale, but band by band just before the noise pass reads the band (and
 * the rows its windows reach), so that the band is read from memory once,
 * not twice. On return every row is merged, as after
 * ncalc_dog_octaves_rows, also when the second step returns
 * NCALC_EFALLBACK or more peaks than max_out. Bands in parallel as in
 * ncalc_noise_nms; a row that two bands need is merged once, by the
 * first thread to reach it (GCC/Clang atomics; other compilers merge
 * one row at a time). The result does not depend on the thread count.
 * With row ranges, the pixels of resp outside them keep what resp held,
 * and the noise pass tests whole rows for NaN: a NaN there makes it
 * return NCALC_EFALLBACK. So resp should hold no NaN on entry (zeros, or
 * an earlier call's output).
 */
ptrdiff_t ncalc_dog_noise_nms(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                              const double *sigmas, int nsigmas, double truncate, double split_sigma,
                              int max_levels, const int32_t *lo, const int32_t *hi, float *resp,
                              uint8_t *scale, const uint8_t *mask, ptrdiff_t mask_ld,
                              const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t fy,
                              ptrdiff_t fx, ptrdiff_t row0, ptrdiff_t col0, ptrdiff_t tile,
                              ptrdiff_t min_count, float k, int radius, float *grid,
                              int32_t *out_rows, int32_t *out_cols, float *out_value,
                              ptrdiff_t max_out, ptrdiff_t top, int nthreads);

/*
 * Work of the caller to run on one of a kernel's threads while the others
 * compute (ncalc_dog_noise_nms_side): fn(arg), called once; done is set
 * to 1 when it has returned. fn must read and write none of the kernel's
 * arrays, and its own OpenMP regions (if any) run on its thread alone.
 */
typedef struct ncalc_side {
    void (*fn)(void *arg);
    void *arg;
    int done;
} ncalc_side;

/*
 * ncalc_dog_noise_nms, and side->fn (side may be NULL) run once on one
 * of its threads: at the start of the DoG's full-resolution pass, whose
 * rows the other threads share out meanwhile (and that thread too when
 * side->fn returns), so that independent work costs the call about its
 * time divided by the threads. When the DoG stops before that pass (an
 * error), side->fn runs on the calling thread before the return. With one
 * thread it runs first. The same results as ncalc_dog_noise_nms.
 */
ptrdiff_t ncalc_dog_noise_nms_side(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                                   ptrdiff_t ld, const double *sigmas, int nsigmas, double truncate,
                                   double split_sigma, int max_levels, const int32_t *lo,
                                   const int32_t *hi, float *resp, uint8_t *scale, const uint8_t *mask,
                                   ptrdiff_t mask_ld, const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww,
                                   ptrdiff_t fy, ptrdiff_t fx, ptrdiff_t row0, ptrdiff_t col0,
                                   ptrdiff_t tile, ptrdiff_t min_count, float k, int radius, float *grid,
                                   int32_t *out_rows, int32_t *out_cols, float *out_value,
                                   ptrdiff_t max_out, ptrdiff_t top, int nthreads, ncalc_side *side);

/*
 * Between the kernel's files (filters.c, for nms.c): ncalc_dog_octaves_rows
 * without its last step, the merge of the coarser levels into level 0.
 * *out (on NCALC_OK) holds what that merge needs; ncalc_dog_defer_rows
 * merges the rows [r0, r1) not merged yet (each row exactly once, whatever
 * threads call it at the same time: the others wait for a row being
 * merged), ncalc_dog_defer_finish merges every row left (not while other
 * threads call ncalc_dog_defer_rows), ncalc_dog_defer_free frees it.
 * side (may be NULL): run in level 0's pass as ncalc_dog_noise_nms_side
 * says (not run when the DoG stops before it: side->done tells).
 */
typedef struct ncalc_dog_defer ncalc_dog_defer;
int ncalc_dog_octaves_defer(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                            const double *sigmas, int nsigmas, double truncate, double split_sigma,
                            int max_levels, const int32_t *lo, const int32_t *hi, float *resp,
                            uint8_t *scale, int nthreads, ncalc_side *side, ncalc_dog_defer **out);
int ncalc_dog_defer_rows(ncalc_dog_defer *d, ptrdiff_t r0, ptrdiff_t r1);
int ncalc_dog_defer_finish(ncalc_dog_defer *d, int nthreads);
void ncalc_dog_defer_free(ncalc_dog_defer *d);

/*
 * Between the kernel's files (noise.c, for nms.c): numpy.median of the n >= 1
 * finite float32 values a[0 .. n) (the middle value, or the float32 mean of
 * the two middle ones), by selection; scratch: 3 n floats. a is not
 * modified.
 */
float ncalc_median_f32(const float *a, ptrdiff_t n, float *scratch);

/*
 * Between the kernel's files (noise.c, for nms.c): one thread's scratch
 * for the tiles of one band, and row br of the grid of
 * ncalc_tile_noise_strided computed with it. Mask row r is at
 * mask + (r - mask_r0) mask_ld (mask_r0: the row mask points at).
 */
typedef struct ncalc_tile_scratch ncalc_tile_scratch;
ncalc_tile_scratch *ncalc_tile_scratch_new(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t tile,
                                           ptrdiff_t stride);
void ncalc_tile_scratch_free(ncalc_tile_scratch *s);
void ncalc_tile_band(const float *x, ptrdiff_t rows, ptrdiff_t cols, const uint8_t *mask,
                     ptrdiff_t mask_ld, ptrdiff_t mask_r0, ptrdiff_t tile, ptrdiff_t stride,
                     ptrdiff_t min_count, ptrdiff_t br, float *grid_row, ncalc_tile_scratch *s);

/*
 * Suppression across the slices of a stack: keep[p] = 0 when another point
 * q on the same slice or an adjacent one (slice[q] = slice[p] - 1, +1)
 * lies within the radius, (row[q] - row[p])^2 + (col[q] - col[p])^2 <=
 * radius2 (the int64 sum converted to double), and is stronger: a higher
 * snr, a number stronger than NaN, and on ties (or between NaNs) the
 * earlier index. Else keep[p] = 1. k >= floor(sqrt(radius2)) bounds the
 * row distance searched (rows farther apart are never within the radius
 * when k = floor(radius)). The points must be sorted by slice, then row;
 * |row|, |col| <= 2^29. NCALC_EINVAL otherwise. Points in parallel; the
 * result does not depend on the thread count.
 */
int ncalc_merge_slices(const int64_t *slice, const int64_t *row, const int64_t *col,
                       const double *snr, ptrdiff_t n, double radius2, int64_t k,
                       uint8_t *keep, int nthreads);

/*
 * Candidate features, one candidate i at (rows[i], cols[i]) with blob radius
 * radius[i] (pixels, > 0). With d = distance to the centre:
 *   inner  = pixels with d <= max(radius, 1)
 *   ring   = pixels with r_in < d <= r_out, r_in = max(2 radius, radius + 2),
 *            r_out = r_in + max(radius, 2)
 *   contrast[i] = mean(img over inner) - mean(img over ring)
 *   bg_std[i]   = standard deviation of img over the ring
 *   peak[i]     = max(img over inner) - mean(img over ring)
 *   area[i]     = number of pixels with d <= 2 radius and
 *                 img - mean(ring) >= peak / 2       (pixels, >= 0)
 *   elongation[i] = sqrt(l1 / l2) of the second-moment matrix of the weights
 *                 w = max(img - mean(ring), 0) over d <= 2 radius
 *                 (1 for a disk; large for a line; 1 when undefined)
 * Only pixels inside the image count. Any output pointer may be NULL.
 */
int ncalc_candidate_features(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                             const int32_t *cand_rows, const int32_t *cand_cols,
                             const float *radius, ptrdiff_t n,
                             float *contrast, float *bg_std, float *peak,
                             float *area, float *elongation, int nthreads);

/*
 * Gaussian scale-space measurements at candidate positions only (no
 * full-size temporaries). For candidate i at (rows[i], cols[i]) with scale
 * s = sigma[i] (pixels, 0 < s <= 1000), over the window |dr|, |dc| <=
 * R = max(1, (int)(truncate * s + 0.5)) with SciPy "reflect" borders and
 * w = exp(-(dr^2 + dc^2) / (2 s^2)):
 *   smooth[i] = g = sum(w img) / sum(w)          (Gaussian-weighted mean)
 *   lrr[i] = sum(w (img - g) (dr^2 / s^4 - 1 / s^2)) / sum(w)
 *   lcc[i] = sum(w (img - g) (dc^2 / s^4 - 1 / s^2)) / sum(w)
 *   lrc[i] = sum(w (img - g) dr dc / s^4) / sum(w)
 * i.e. the Hessian of the Gaussian-smoothed image (not scale-normalised).
 * Any output pointer may be NULL (without lrc, the sums of the cross term
 * are skipped; the other values are the same).
 */
int ncalc_local_hessian(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                        const int32_t *cand_rows, const int32_t *cand_cols,
                        const float *sigma, ptrdiff_t n, double truncate,
                        float *smooth, float *lrr, float *lrc, float *lcc, int nthreads);

/*
 * ncalc_local_hessian at three scales per candidate, in one pass over the
 * candidates (each candidate's neighbourhood is read once while in cache):
 * with sigma_k = sigma1, sigma2, sigma3 (n values each, constraints as
 * there), out[(4 k + m) n + i] for k = 0, 1, 2 and m = 0 .. 3 is exactly
 * (bit for bit) what ncalc_local_hessian(..., sigma_k, ...) writes to
 * smooth, lrr, lrc, lcc (m = 0, 1, 2, 3) for candidate i. out: 12 n floats.
 */
int ncalc_local_hessian3(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                         const int32_t *cand_rows, const int32_t *cand_cols, ptrdiff_t n,
                         const float *sigma1, const float *sigma2, const float *sigma3,
                         double truncate, float *out, int nthreads);

/*
 * ncalc_local_hessian3 with the cross derivative (lrc) of scale k computed
 * only where cross[k] is nonzero: where it is zero, out[(4 k + 2) n + i] is
 * left as it was and the cross term's sums are skipped (faster); every
 * other value is bit for bit as ncalc_local_hessian3 writes it.
 */
int ncalc_local_hessian3_cross(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                               const int32_t *cand_rows, const int32_t *cand_cols, ptrdiff_t n,
                               const float *sigma1, const float *sigma2, const float *sigma3,
                               double truncate, const int cross[3], float *out, int nthreads);

/*
 * Octave-pyramid multi-scale DoG: the DoG of ncalc_dog_response with the
 * coarse scales computed on a 2x decimated image (recursively, at most
 * max_levels times). Exactly, with sigmas s_0 < ... < s_{n-1}:
 *   m = the first i <= n-2 with s_i >= split_sigma (max_levels > 0), else n-1.
 *   Pairs 0 .. m-1 are computed as in ncalc_dog_response (Gaussians
 *   s_0 .. s_m on the image itself).
 *   When m <= n-2: low = (G(prefilter_sigma) * img)[::2, ::2] (SciPy
 *   reflect borders), and the pairs m .. n-2 are the response R' and scale
 *   S' of this same function applied to low with sigmas
 *   sqrt(s_i^2 - prefilter_sigma^2) / 2 (i = m .. n-1) and max_levels - 1.
 *   R' is brought back by bilinear interpolation: node (j, l) sits at pixel
 *   (2j, 2l); an odd row takes the float32 mean 0.5f * (a + b) of its two
 *   neighbouring node rows (the last node row alone past the end), then an
 *   odd column the mean of its two neighbouring columns likewise. The
 *   upsampled value replaces the fine response where strictly larger (or
 *   everywhere when m = 0), with scale m + S'[r / 2][c / 2].
 * Needs split_sigma > prefilter_sigma > 0, 0 <= max_levels <= 16;
 * max_levels = 0 is ncalc_dog_response. Extra memory: 1.25 bytes/pixel.
 */
int ncalc_dog_pyramid(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                      const double *sigmas, int nsigmas, double truncate,
                      double split_sigma, double prefilter_sigma, int max_levels,
                      float *resp, uint8_t *scale, int nthreads);

/*
 * Octave multi-scale DoG, SIFT-like: each coarser level is the last
 * Gaussian of the level above sampled at even rows and columns, so no extra
 * pass over the input. Exactly, with sigmas s_0 < ... < s_{n-1} (n >= 2,
 * full-resolution pixels), level L (L = 0, 1, ..) has an image x_L
 * (x_0 = img, rows_L = ceil(rows_{L-1} / 2), likewise cols), a first pair
 * o_L (o_0 = 0) and a base sigma b_L (b_0 = 0):
 *   e_L = the first i with o_L < i <= n-2 and s_i >= split_sigma * 2^L,
 *         when L < max_levels and rows_L, cols_L >= 32; otherwise (or when
 *         there is no such i) e_L = n-1: the last level.
 *   g_i = G(t_i) * x_L for i = o_L .. e_L (SciPy gaussian_filter, reflect
 *         borders, the given truncate), with t_i = sqrt(s_i^2 - b_L^2) / 2^L
 *         (level pixels); at L > 0, t_{o_L} = 0: g_{o_L} = x_L itself.
 *   Pairs o_L .. e_L - 1 at this level: d_i = g_i - g_{i+1};
 *         R_L = max_i d_i, S_L = first argmax i (global pair index).
 *   When e_L < n-1: x_{L+1} = g_{e_L}[::2, ::2], o_{L+1} = e_L,
 *         b_{L+1} = s_{e_L}; the result (R', S') of level L+1 is brought to
 *         level L as in ncalc_dog_pyramid (node (j, l) at (2j, 2l); an odd
 *         row takes the float32 mean 0.5f * (a + b) of its two neighbouring
 *         node rows, the last node row alone past the end; then odd columns
 *         likewise), and replaces R_L where strictly larger, with scale
 *         S'[r / 2][c / 2].
 *   resp = R_0, scale = S_0 (scale may be NULL).
 * So pair i is computed on the coarsest level whose grid is still finer
 * than about s_i / split_sigma, from an image already smoothed by a
 * Gaussian >= split_sigma of the level above (anti-aliasing for free).
 * max_levels = 0 gives exactly ncalc_dog_response, as does an image under
 * 32 pixels in either direction. Needs split_sigma > 0,
 * 0 <= max_levels <= 16. Extra memory: at most 3 bytes/pixel (the coarser
 * levels' images and responses), plus a uint8 image when scale is NULL, plus
 * a few rows per thread. Results do not depend on nthreads.
 */
int ncalc_dog_octaves(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                      const double *sigmas, int nsigmas, double truncate, double split_sigma,
                      int max_levels, float *resp, uint8_t *scale, int nthreads);

/*
 * ncalc_dog_octaves on an image whose rows are ld >= cols pixels apart (row
 * r starts at pixel r ld of img): a crop of a larger image, with the same
 * result as on a contiguous copy of it.
 */
int ncalc_dog_octaves_ld(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                         const double *sigmas, int nsigmas, double truncate, double split_sigma,
                         int max_levels, float *resp, uint8_t *scale, int nthreads);

/*
 * ncalc_dog_octaves_ld where only some pixels are wanted: for each row r,
 * the columns lo[r] <= c < hi[r] (clipped to [0, cols); lo[r] >= hi[r]:
 * none). There resp and scale are exactly those of ncalc_dog_octaves_ld.
 * Each level computes only the columns those pixels depend on (through
 * the merges of the coarser levels and the decimated images), so the cost
 * follows the wanted area rather than the rectangle. Elsewhere resp and
 * scale may or may not be written: they hold what they held before, or
 * the response, or (a column or two from a range) an unmerged value, and
 * are not to be used. lo and hi both NULL: every pixel
 * (ncalc_dog_octaves_ld). When some level's kernel is longer than the
 * fused row kernel takes (radius > 8), every pixel is computed. Needs
 * cols <= INT32_MAX / 2.
 */
int ncalc_dog_octaves_rows(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                           const double *sigmas, int nsigmas, double truncate, double split_sigma,
                           int max_levels, const int32_t *lo, const int32_t *hi, float *resp,
                           uint8_t *scale, int nthreads);

/*
 * The column ranges of a mask grown by pad pixels (a square of side
 * 2 pad + 1): for each row r, [lo[r], hi[r]) is the smallest range holding
 * every column c with mask[r'][c'] != 0 for some |r' - r| <= pad and
 * |c' - c| <= pad, clipped to [0, cols); (0, 0) when there is none. Row r of
 * the mask starts at mask + r mask_ld (mask_ld >= cols). Rows in parallel.
 */
int ncalc_mask_row_ranges(const uint8_t *mask, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t mask_ld,
                          int pad, int32_t *lo, int32_t *hi, int nthreads);

/*
 * ncalc_mask_row_ranges of a mask given by its rows' extents and cropped:
 * the mask of n rows has row q set exactly within [lo[q], hi[q]) (nothing
 * when lo[q] >= hi[q]); for each row r of [r0, r1), the hull of the
 * extents of rows r - pad .. r + pad (those within [0, n)), grown by pad
 * columns each side, in the columns of [c0, c1) and counted from c0
 * (clipped to [0, c1 - c0]), into out_lo[r - r0], out_hi[r - r0]; (0, 0)
 * when there is nothing. For a crop that holds every set pixel, this is
 * ncalc_mask_row_ranges of the crop, without the mask in full.
 */
int ncalc_extent_ranges(const int32_t *lo, const int32_t *hi, ptrdiff_t n, ptrdiff_t r0, ptrdiff_t r1,
                        ptrdiff_t c0, ptrdiff_t c1, int pad, int32_t *out_lo, int32_t *out_hi);

/*
 * The bounding box and the rows' extents of the h x w mask that upscaling a
 * working-resolution mask makes (napari_calc.core.mask.upscale_mask: block
 * (i, j) covers rows i fy .. (i + 1) fy - 1 and columns j fx .. (j + 1) fx
 * - 1, the last block row and column also the rows and columns left over).
 * tissue: hh x ww bytes (non-zero: set), row i at tissue + i ld; h >= hh fy,
 * w >= ww fx. Row r of the mask (r < h) has the extent [lo[r], hi[r]) of its
 * block row min(r / fy, hh - 1): from its first set block's first column to
 * its last set block's end, (0, 0) when it has none. bbox: (r0, r1, c0, c1),
 * half-open, of all set pixels. Returns 1, or 0 when nothing is set (bbox
 * then untouched), NCALC_EINVAL for a bad argument.
 */
int ncalc_block_extents(const uint8_t *tissue, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t ld, ptrdiff_t fy,
                        ptrdiff_t fx, ptrdiff_t h, ptrdiff_t w, int32_t *lo, int32_t *hi, int64_t *bbox);

/*
 * The breast mask's steps after the block means, in one call
 * (napari_calc.core.mask.breast_mask_blocks): small, hh x ww block means;
 * Otsu's threshold of them with nbins bins (ncalc_otsu); the blocks above
 * it; when the air fraction 1 - (their number) / (hh ww) is below air_min
 * or above air_max, returns 0 (the whole image). Else the largest
 * component with its holes filled (ncalc_largest_component; 0 returned
 * when there is none), eroded by the city-block ball of radius margin
 * (ncalc_erode_l1) on the grid padded by margin blocks copied from its
 * edge (numpy.pad mode "edge"), into tissue (hh x ww, 0 or 1); then lo,
 * hi and bbox as ncalc_block_extents makes them of tissue (h, w the full
 * size). Returns 1, or 2 when the eroded mask is empty (bbox untouched);
 * NCALC_EINVAL for a NaN or infinite block mean (as ncalc_otsu) or a bad
 * argument. tissue is written only when 1 or 2 is returned. The
 * threshold's passes (the extremes, the histogram, the count above it) run
 * on contiguous parts of the blocks, one a thread (nthreads, 0: the
 * default; one part below 16384 blocks), with the same result whatever the
 * count; the rest is serial.
 */
int ncalc_breast_blocks(const double *small, ptrdiff_t hh, ptrdiff_t ww, int nbins, double air_min,
                        double air_max, ptrdiff_t margin, ptrdiff_t fy, ptrdiff_t fx, ptrdiff_t h, ptrdiff_t w,
                        uint8_t *tissue, int32_t *lo, int32_t *hi, int64_t *bbox, int nthreads);

/*
 * Samples of the noise-level function (napari_calc.core.score.
 * noise_level_function), exactly NumPy's float32 arithmetic. img: planes
 * images of rows x cols (rows >= 3, cols >= 3) of dtype, row r of plane p
 * starting at pixel p plane_ld + r ld. Sample (i, j) is pixel
 * (1 + i k, 1 + j k), i < nr = ceil((rows - 2) / k), j < nc =
 * ceil((cols - 2) / k); smask (nr x nc, may be NULL: all) selects samples.
 * With x the pixel and u, d, l, r its 4 neighbours (as float):
 *   nb = (((u + d) + l) + r) * 0.25f,  resid = x - nb,
 *   level = (x + 4 nb) * (float)0.2            (float32 throughout)
 * for the selected samples in (plane, i, j) order into resid, level
 * (room for planes nr nc). Returns their number, < 0 on error. Sample rows
 * in parallel (above 16384 samples).
 */
ptrdiff_t ncalc_nlf_samples(const void *img, int dtype, ptrdiff_t planes, ptrdiff_t plane_ld,
                            ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld, ptrdiff_t k,
                            const uint8_t *smask, float *resid, float *level, int nthreads);

/*
 * Binned medians of the noise-level function. Bin b of sample i is the
 * number of edges <= level[i] (edges: 0 <= nedges <= 254 non-decreasing
 * doubles, as
 * numpy.searchsorted(edges, level, side="right")); for each of the
 * nedges + 1 bins: count[b], lev_median[b] = median of its levels and
 * resid_mad[b] = median of |resid - median(resid)| (float32 differences),
 * with numpy.median's definition for float32 data: the middle value, or the
 * float32 mean of the two middle values (NaN for an empty bin). Needs
 * finite level and resid (NCALC_EINVAL otherwise, or when edges decrease).
 * Bins in parallel.
 */
int ncalc_nlf_bins(const float *level, const float *resid, ptrdiff_t n, const double *edges,
                   int nedges, ptrdiff_t *count, float *lev_median, float *resid_mad, int nthreads);

/*
 * The noise-level function's C steps in one call (napari_calc.core.score.
 * noise_level_function with the kernel): ncalc_nlf_samples (img .. smask
 * as there) into resid and level (room for planes nr nc each), their
 * number in *n_out; when it is 50 or more, nb = max(1, min(max_bins,
 * *n_out / 500)) bins (max_bins <= 255): the nb - 1 edges
 * numpy.quantile(level, i / nb), i = 1 .. nb - 1 (method "linear", NumPy
 * 2's arithmetic, bit for bit; the order statistics it reads are selected,
 * not sorted), and ncalc_nlf_bins with them into count, lev_median and
 * resid_mad (room for max_bins each); *nbins_out = nb. Below 50 samples
 * *nbins_out = 0 and no bins are made. NCALC_EINVAL for a NaN level, or a
 * non-finite level or residual (the caller's NumPy code decides those).
 * nthreads as those functions; the result does not depend on it.
 */
int ncalc_nlf_fit(const void *img, int dtype, ptrdiff_t planes, ptrdiff_t plane_ld, ptrdiff_t rows,
                  ptrdiff_t cols, ptrdiff_t ld, ptrdiff_t k, const uint8_t *smask, int max_bins,
                  float *resid, float *level, ptrdiff_t *n_out, int *nbins_out,
                  ptrdiff_t *count, float *lev_median, float *resid_mad, int nthreads);

/*
 * The noise-level function's curve from its bins (count, lev_median,
 * resid_mad of ncalc_nlf_bins, nbins of them), as noise_level_function
 * makes it: for the bins with samples, the level and the noise
 * sd = 1.4826 MAD / sqrt(1.25) (float64); with three bins or more, sd's
 * running median of 3 (the end values repeated); sd at least its
 * smallest positive value (1 if none); then numpy.unique of the levels
 * (increasing, the first of equal levels kept, with its sd). lev and sd
 * (room for nbins each) get the *m_out points. NaN as numpy.minimum and
 * numpy.maximum treat it.
 */
int ncalc_nlf_curve(const ptrdiff_t *count, const float *lev_median, const float *resid_mad, int nbins,
                    double *lev, double *sd, int *m_out);

/*
 * Block means: out[i][j] = mean of img over rows [i fy, (i + 1) fy) and
 * columns [j fx, (j + 1) fx), for i < rows / fy and j < cols / fx (the
 * remainder rows and columns are left out). out: (rows / fy) x (cols / fx)
 * float64. uint16 sums are exact integers, so out is exactly numpy's
 * img[:h, :w].reshape(h/fy, fy, w/fx, fx).mean(axis=(1, 3), dtype=float64);
 * float32 pixels are summed in float64 (a different order from numpy's: a
 * relative difference of the order of 1e-16). Block rows in parallel.
 */
int ncalc_block_mean(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                     ptrdiff_t fy, ptrdiff_t fx, double *out, int nthreads);

/*
 * Mean of planes: out[i] = (x_0[i] + x_1[i] + ... + x_{planes-1}[i]) /
 * planes in float32, the additions in plane order (numpy's float32 mean
 * over the outer axis, x.mean(axis=0, dtype=float32), bit for bit), with
 * x_k = img + k plane_ld (in pixels; plane_ld >= n), each plane n
 * contiguous uint16 or float32 pixels. Chunks of pixels in parallel.
 */
int ncalc_plane_mean(const void *img, int dtype, ptrdiff_t planes, ptrdiff_t plane_ld, ptrdiff_t n,
                     float *out, int nthreads);

/*
 * Sort: out = x[0..n-1] in increasing order (n >= 0; x and out may be the
 * same array). Exactly the values of numpy.sort(x), in its order, except
 * that -0 is placed before +0 (numpy.sort leaves equal values in any
 * order). NCALC_EINVAL when x holds a NaN (out is not written). A radix
 * sort on the float bits (three stable passes), on nthreads (<= 0: the
 * OpenMP default) for 32768 values or more; the result does not depend
 * on nthreads.
 */
int ncalc_sort_f32(const float *x, ptrdiff_t n, float *out, int nthreads);

/*
 * Upscaling of a working-resolution mask (napari_calc.core.mask.
 * breast_mask): out (rows x cols) [r][c] = (small[i][j] != 0) with
 * i = min(r / fy, hh - 1), j = min(c / fx, ww - 1), small hh x ww
 * (hh, ww >= 1), so that block (i, j) covers fy x fx pixels and the last
 * block row and column also the rows and columns left over. Needs
 * rows >= hh fy and cols >= ww fx. Block rows in parallel.
 */
int ncalc_upscale_mask(const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t fy, ptrdiff_t fx,
                       ptrdiff_t rows, ptrdiff_t cols, uint8_t *out, int nthreads);

/*
 * Values at the peaks of ncalc_nms. resp (and scale, which may be NULL) are
 * rows x cols, grid ceil(rows / tile) x ceil(cols / tile) as in ncalc_nms.
 * For i < n with (r, c) = (pr[i], pc[i]):
 *   value[i] = resp[r][c],  noise[i] = (double)grid[r / tile][c / tile],
 *   snr[i] = (double)value[i] / noise[i]   (IEEE double division),
 *   scale_out[i] = scale[r][c]             (only when scale is not NULL).
 * With resp NULL (and scale NULL), value is an input, the response at the
 * peaks (as ncalc_noise_nms gives it), and only noise and snr are written.
 * NCALC_EINVAL (nothing written) when a position is outside the image.
 */
int ncalc_peak_values(const float *resp, ptrdiff_t rows, ptrdiff_t cols, const float *grid,
                      ptrdiff_t tile, const uint8_t *scale, const int32_t *pr, const int32_t *pc,
                      ptrdiff_t n, float *value, double *noise, double *snr, int64_t *scale_out,
                      int nthreads);

/*
 * Top k: idx receives, in increasing order, the indices of the k largest of
 * v[0..n-1] (0 <= k <= n); of the values equal to the k-th largest, the
 * earliest are taken (the choice of a stable sort by decreasing value).
 * With t = numpy.partition(v, n - k)[n - k] (k < n), that is every i with
 * v[i] > t, then the first k - (their number) with v[i] == t, merged in
 * index order (-0 == +0). Returns k, or < 0 on error (NCALC_EINVAL when v
 * holds a NaN). A radix selection on the float bits, on nthreads (<= 0:
 * the OpenMP default) for 32768 values or more; the result does not
 * depend on nthreads.
 */
ptrdiff_t ncalc_top_k(const double *v, ptrdiff_t n, ptrdiff_t k, int64_t *idx, int nthreads);

/*
 * The candidates' model features (napari_calc.core.score.
 * candidate_feature_matrix) but for their logarithms, which the caller
 * takes (numpy's log, whose last bits differ from the C library's).
 * in: NCALC_FEATURE_INPUTS arrays of n doubles, in this order: snr,
 * contrast, peak, bg_std, nlf_sd, sigma_px, h1_rr, h1_rc, h1_cc, h2_rr,
 * h2_rc, h2_cc, elongation, diameter_mm, area_px, sigma_large_px, h3_rr,
 * h3_cc. X: n x NCALC_FEATURES, row-major; columns 5, 6, 9 and 11 are
 * written (the two eigenvalue ratios and the two clipped scale ratios),
 * the others left as they are. logarg: 8 x n, row-major, the arguments of
 * the logs of columns 0, 1, 2, 3, 4, 7, 8 and 10 in that order. With
 * sd = max(nlf_sd, 1e-6), s = sigma_px, b1 = -(s s)(h1_rr + h1_cc),
 * b2 = -((2s)(2s))(h2_rr + h2_cc), bL = -(sL sL)(h3_rr + h3_cc) and
 * slog(x) = log(max(x, 0) + 1):
 *   0 slog(snr)   1 slog(contrast / sd)   2 slog(peak / sd)
 *   3 slog(b1 s sqrt(2 pi) / sd)   4 slog(contrast / max(bg_std, 1e-6)
 *     where bg_std > 0, else 0)   5, 6 the eigenvalue ratio of the h1, h2
 *     Hessians (score._eig_ratio)   7 log(clip(elongation, 1, 20))
 *   8 log(diameter_mm / 0.3)   9 clip(b2 / b1 where b1 > 0, else 2; -2, 2)
 *   10 log((area_px + 1) / (pi (s sqrt 2)^2 + 1))   11 clip(bL / b1 where
 *     b1 > 0, else 2; -2, 2)
 * in double, each operation in numpy's order, max, min and clip keeping a
 * NaN (as numpy's): bit for bit the NumPy code's values. Rows in parallel
 * for more than 1024 of them.
 */
#define NCALC_FEATURE_INPUTS 18
#define NCALC_FEATURES 12
int ncalc_feature_parts(const double *const *in, ptrdiff_t n, double *X, double *logarg, int nthreads);

/*
 * Standardised basis of the score model (napari_calc.core.score: ramp_basis,
 * then minus the mean and over the scale). X: n x nfeat float64, row-major.
 * Feature j has nknots[j] >= 0 finite knots k_1 < ... < k_K, the next ones
 * of knots (feature 0's first). Output row i, column by column, B the basis
 * value of x = X[i][j]:
 *   K = 0:  B = x;
 *   else:   B = min(x, k_1); B = clip(x, k_q, k_q+1) - k_q for q = 1 .. K-1;
 *           B = max(x, k_K) - k_K;
 * then for each interaction t, (f, g) = (inter[2t], inter[2t+1]):
 *           B = (clip(X[i][g], -1, 1) + 1) * max(X[i][f], 0);
 * and out[i][c] = (B - mean[c]) / scale[c] (double arithmetic in this
 * order). min, max and clip keep a NaN x NaN, as numpy's do; they give the
 * same values as numpy's except, where x equals a bound, perhaps the sign
 * of a zero (so with no zero knot and no zero mean, out is bit for bit
 * numpy's). ncol = sum over j of (K_j ? K_j + 1 : 1) + ninter.
 * Outputs, either may be NULL:
 *   basis (n x ncol): the values out[i][c] above;
 *   z (n, needs coef, ncol values): the log-odds
 *       z[i] = ((0.0 + out[i][0] * coef[0]) + out[i][1] * coef[1] + ...) + intercept,
 *     each product and each sum rounded to double in that order (no fused
 *     multiply-add): score._dot_in_order, the same floats.
 * NCALC_EINVAL for a non-finite knot or an interaction index out of range.
 * Rows in parallel.
 */
int ncalc_ramp_logit(const double *X, ptrdiff_t n, int nfeat, const int *nknots, const double *knots,
                     int ninter, const int *inter, const double *mean, const double *scale,
                     const double *coef, double intercept, double *z, double *basis, int nthreads);

/*
 * numpy.interp(x, xp, fp) bit for bit (score.c), for the score model's
 * calibrations and the noise-level function: out[i] for x[i] (n values;
 * out may be x) with the m >= 2 points (xp, fp), xp strictly increasing.
 * NaN gives NaN; below xp[0] fp[0]; at or above xp[m - 1] fp[m - 1]; at
 * a knot xp[j] fp[j]; else, with xp[j] < x < xp[j + 1] and
 * s = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]), s * (x - xp[j]) + fp[j]
 * (two roundings, no fused multiply-add), as numpy computes it.
 * NCALC_EINVAL for fewer than two points, a non-finite xp or fp, or xp not
 * strictly increasing. Rows in parallel above 1,024 values.
 */
int ncalc_interp(const double *x, ptrdiff_t n, const double *xp, const double *fp, ptrdiff_t m,
                 double *out, int nthreads);

/*
 * Points within a radius (neighbours.c). pos: n x dim doubles (dim 1..3,
 * finite), radius > 0. Points i != j are neighbours when
 *     ((0 + (p_i0 - p_j0)^2) + (p_i1 - p_j1)^2) + ...  <= radius * radius
 * in double: the pairs of scipy.spatial.cKDTree.query_pairs(radius).
 * NCALC_EINVAL for a bad argument or a non-finite coordinate; NCALC_ENOMEM
 * when the grid and its sums (up to about 100 bytes a point) or, for ncalc_radius_clusters,
 * the neighbour lists (4 bytes per ordered pair) do not fit.
 *
 * ncalc_neighbour_sums: count[i] = the number of neighbours of i, and
 *     sum[i] = 0.0 + weight[j1] + weight[j2] + ...  over its neighbours in
 *     increasing index order j1 < j2 < ... (left to right, in double);
 *     either output may be NULL, not both (weight is needed for sum).
 * ncalc_radius_clusters: the clustering rule of
 *     napari_calc.core.cluster.cluster_calcifications: a core point has at
 *     least min_size (>= 2) points within the radius, itself included;
 *     clusters are the connected components of the core-core neighbour
 *     pairs, numbered from 0 in order of their lowest-index core point;
 *     labels[i] is that number for a core point, the lowest number among
 *     its core neighbours' for any other point, and -1 without one.
 * ncalc_radius_clusters lists each point's neighbours in parallel;
 * ncalc_neighbour_sums makes each point add its weight to its neighbours'
 * sums, points in increasing order (no lists), in parallel above 1,024
 * points: each thread for the neighbours in its strip of the grid. The
 * results do not depend on the thread count.
 */
int ncalc_neighbour_sums(const double *pos, ptrdiff_t n, int dim, double radius,
                         const double *weight, double *sum, int64_t *count, int nthreads);
int ncalc_radius_clusters(const double *pos, ptrdiff_t n, int dim, double radius, int64_t min_size,
                          int64_t *labels, int nthreads);

/*
 * The shape of each cluster for the cluster table (cluster_shape.c).
 * pos: n x dim doubles (dim 2 or 3, finite); the k groups are the rows
 * start[g] .. start[g + 1] - 1 (start: k + 1 values from 0 to n, not
 * decreasing). For each group g:
 *   extent[g] = sqrt of the largest over its ordered pairs (i, j) of
 *       ((p_i0 - p_j0)^2 + (p_i1 - p_j1)^2) + ...  in double: bit for bit
 *       numpy.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)).max() (0 for one
 *       point or none). In 2-D with more than 64 points, over the pairs of its hull
 *       vertices only (the same value but for rounding ties).
 *   area[g] = the area of the convex hull of its points' coordinates ay
 *       and ax (0 with fewer than three hull vertices: fewer than three
 *       points, or all on one line); Andrew's monotone chain, then the
 *       triangle fan from the first vertex. Equal to
 *       scipy.spatial.ConvexHull(...).volume up to rounding.
 * NCALC_EINVAL for a bad argument or a non-finite coordinate, NCALC_ENOMEM.
 * Serial.
 */
int ncalc_cluster_shape(const double *pos, ptrdiff_t n, int dim, const ptrdiff_t *start, ptrdiff_t k,
                        int ay, int ax, double *extent, double *area);

/*
 * Histogram with uniform bins, exactly numpy.histogram(x, bins=nbins,
 * range=(lo, hi)) for finite lo < hi, given edges = the nbins + 1 bin edges
 * numpy uses (numpy.linspace(lo, hi, nbins + 1)). Each x with
 * lo <= x <= hi (the others, NaN too, are left out) goes to bin
 *   i = (ptrdiff_t)(((x - lo) / (hi - lo)) * nbins), minus 1 if i == nbins,
 *   then minus 1 if x < edges[i], then plus 1 if x >= edges[i + 1] and
 *   i != nbins - 1                       (numpy's correction near an edge);
 * count: nbins int64. Serial. NCALC_ENOMEM when its scratch (4 nbins
 * int64) cannot be allocated.
 */
int ncalc_histogram(const double *x, ptrdiff_t n, double lo, double hi, int nbins, const double *edges,
                    int64_t *count);

/*
 * Otsu's threshold of x[0 .. n-1] (n >= 1) as
 * napari_calc.core.mask.otsu_threshold computes it, bit for bit: lo, hi
 * the extremes (*thr = lo when hi <= lo, a zero as +0.0); else nbins bins with
 * numpy.linspace's edges and numpy.histogram's counts (ncalc_histogram),
 * the bins' centres, the cumulative counts w0 and sums m0 of count x
 * centre (numpy.cumsum), mu0 = m0 / w0 and mu1 = (m0[-1] - m0) /
 * (w0[-1] - w0) (0 where the count is 0), and *thr = the centre of the
 * first bin with the largest w0 (w0[-1] - w0) (mu0 - mu1)^2.
 * NCALC_EINVAL for a NaN or, unless hi <= lo, an infinite value. Serial.
 */
int ncalc_otsu(const double *x, ptrdiff_t n, int nbins, double *thr);

/*
 * The noise-level function's sample mask from a mask given as blocks (as
 * ncalc_upscale_mask would make it: small hh x ww, blocks fy x fx, the
 * last block row and column also covering what is left over): out[i][j]
 * (nr x nc) = 1 where the pixel (1 + i k, 1 + j k) is in the mask, else 0.
 * Returns the number of 1s, < 0 on error.
 */
ptrdiff_t ncalc_block_sample(const uint8_t *small, ptrdiff_t hh, ptrdiff_t ww, ptrdiff_t fy, ptrdiff_t fx,
                             ptrdiff_t k, ptrdiff_t nr, ptrdiff_t nc, uint8_t *out);

/*
 * Erosion by the city-block ball of radius n (n >= 0): out[p] = 1 when the
 * city-block distance from p to the nearest pixel with a == 0, or to the
 * nearest pixel outside the rows x cols image, exceeds n; else 0. For
 * n >= 1 that is n erosions by the 3 x 3 cross with the outside as
 * background (scipy.ndimage.binary_erosion(a, iterations=n)); n = 0 gives
 * a != 0. a and out must not overlap. Serial.
 */
int ncalc_erode_l1(const uint8_t *a, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t n, uint8_t *out);

/*
 * The breast's component: with the 4-connected components of the pixels
 * with a != 0 numbered 1, 2, .. in the raster order of their first pixel
 * (as scipy.ndimage.label numbers them), the largest one (the first of
 * equal sizes) with its holes filled: out = 1 on it and on every pixel
 * not 4-connected to the image border through pixels outside it
 * (scipy.ndimage.binary_fill_holes). Returns the number of components
 * (out is not written when it is 0), < 0 on error. Serial.
 */
ptrdiff_t ncalc_largest_component(const uint8_t *a, ptrdiff_t rows, ptrdiff_t cols, uint8_t *out);

/*
 * Reusable scratch buffers (csrc/buffers.c). ncalc_buffer_get returns at
 * least n bytes (aligned as malloc's, uninitialised; NULL when out of
 * memory): a buffer given back earlier with ncalc_buffer_put when one of
 * n to 2n bytes is held, else a new one. ncalc_buffer_put gives a buffer
 * back (NULL: nothing); the pool keeps at most 16 buffers and 256 MiB,
 * dropping the ones given back longest ago. The kernels use them for
 * scratch whose fresh pages would otherwise be faulted in on every call
 * (the octave DoG's coarser levels). ncalc_buffers_held: the bytes held;
 * ncalc_release_buffers frees them all. Thread-safe. Compiled with
 * -DNCALC_NO_POOL (or where no lock is available) nothing is held:
 * buffers go straight to malloc and free.
 */
void *ncalc_buffer_get(size_t n);
void ncalc_buffer_put(void *buf);
size_t ncalc_buffers_held(void);
void ncalc_release_buffers(void);

#ifdef __cplusplus
}
#endif
#endif /* NCALC_H */
