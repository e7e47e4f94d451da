/*
 * features.c -- per-candidate features measured on the input image around
 * each candidate. See ncalc.h for the exact definitions.
 */
#include "ncalc.h"

#include <math.h>

static float pixel_at(const void *img, int dtype, ptrdiff_t p)
{
    return dtype == NCALC_U16 ? (float)((const uint16_t *)img)[p] : ((const float *)img)[p];
}

int ncalc_candidate_features(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                             const int32_t *cand_rows, const int32_t *cand_cols,
                             const float *radius, ptrdiff_t n,
                             float *contrast, float *bg_std, float *peak,
                             float *area, float *elongation, int nthreads)
{
    if (!img || rows < 1 || cols < 1 || n < 0) return NCALC_EINVAL;
    if (dtype != NCALC_U16 && dtype != NCALC_F32) return NCALC_EINVAL;
    if (n > 0 && (!cand_rows || !cand_cols || !radius)) return NCALC_EINVAL;
    for (ptrdiff_t i = 0; i < n; i++)
        if (!(radius[i] > 0) || cand_rows[i] < 0 || cand_rows[i] >= rows ||
            cand_cols[i] < 0 || cand_cols[i] >= cols)
            return NCALC_EINVAL;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
    for (ptrdiff_t i = 0; i < n; i++) {
        const double rad = radius[i];
        const double r_inner = rad > 1.0 ? rad : 1.0;
        const double r_in = 2.0 * rad > rad + 2.0 ? 2.0 * rad : rad + 2.0;
        const double r_out = r_in + (rad > 2.0 ? rad : 2.0);
        const double r_fg = 2.0 * rad > r_inner ? 2.0 * rad : r_inner;
        const ptrdiff_t R = (ptrdiff_t)ceil(r_out);
        const ptrdiff_t cr = cand_rows[i], cc = cand_cols[i];
        const ptrdiff_t ra = cr - R < 0 ? 0 : cr - R, rb = cr + R >= rows ? rows - 1 : cr + R;
        const ptrdiff_t ca = cc - R < 0 ? 0 : cc - R, cb = cc + R >= cols ? cols - 1 : cc + R;

        /* pass 1: inner mean and max, ring mean and variance */
        double s_in = 0, n_in = 0, mx = -INFINITY, s_ring = 0, s2_ring = 0, n_ring = 0;
        for (ptrdiff_t r = ra; r <= rb; r++)
            for (ptrdiff_t c = ca; c <= cb; c++) {
                double dr = (double)(r - cr), dc = (double)(c - cc);
                double d = sqrt(dr * dr + dc * dc);
                double v = pixel_at(img, dtype, r * cols + c);
                if (d <= r_inner) {
                    s_in += v; n_in += 1;
                    if (v > mx) mx = v;
                } else if (d > r_in && d <= r_out) {
                    s_ring += v; s2_ring += v * v; n_ring += 1;
                }
            }
        double bg = n_ring > 0 ? s_ring / n_ring : (n_in > 0 ? s_in / n_in : 0.0);
        double var = n_ring > 1 ? (s2_ring - s_ring * s_ring / n_ring) / (n_ring - 1) : 0.0;
        double pk = mx - bg;

        /* pass 2: area at half maximum and second moments of the excess */
        double cnt = 0, sw = 0, sr = 0, sc = 0, srr = 0, scc = 0, src = 0;
        for (ptrdiff_t r = ra; r <= rb; r++)
            for (ptrdiff_t c = ca; c <= cb; c++) {
                double dr = (double)(r - cr), dc = (double)(c - cc);
                if (sqrt(dr * dr + dc * dc) > r_fg) continue;
                double e = pixel_at(img, dtype, r * cols + c) - bg;
                if (pk > 0 && e >= 0.5 * pk) cnt += 1;
                if (e > 0) {
                    sw += e; sr += e * dr; sc += e * dc;
                    srr += e * dr * dr; scc += e * dc * dc; src += e * dr * dc;
                }
            }
        double el = 1.0;
        if (sw > 0) {
            double mr = sr / sw, mc = sc / sw;
            double a = srr / sw - mr * mr, b = src / sw - mr * mc, d = scc / sw - mc * mc;
            double tr = a + d, det = a * d - b * b;
            double disc = sqrt(fmax(tr * tr / 4.0 - det, 0.0));
            double l1 = tr / 2.0 + disc, l2 = tr / 2.0 - disc;
            if (l2 > 1e-12 && l1 > 0) el = sqrt(l1 / l2);
            else if (l1 > 1e-12) el = 1e3;
        }
        if (contrast) contrast[i] = (float)((n_in > 0 ? s_in / n_in : 0.0) - bg);
        if (bg_std) bg_std[i] = (float)sqrt(var > 0 ? var : 0.0);
        if (peak) peak[i] = (float)pk;
        if (area) area[i] = (float)cnt;
        if (elongation) elongation[i] = (float)el;
    }
    return NCALC_OK;
}
