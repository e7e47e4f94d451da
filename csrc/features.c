/*
 * features.c -- per-candidate features measured on the input image around
 * each candidate. See ncalc.h for the exact definitions.
 *
 * features_plain reads the definition directly; features_span (windows up
 * to SPAN_RMAX) gets the same values bit for bit from per-radius tables
 * of the discs' row spans (no sqrt per pixel, only the pixels that count),
 * cached per thread while the radius stays the same.
 */
#include "ncalc.h"

#include <math.h>

static float pixel_at(const void *img, int dtype, ptrdiff_t p)
{
    return dtype == NCALC_U16 ? (float)((const uint16_t *)img)[p] : ((const float *)img)[p];
}

/* The outputs of candidate i from its sums (features_plain and
 * features_span): contrast, ring standard deviation, peak, half-maximum
 * area and the elongation of the excess's second-moment matrix. */
static void store_features(ptrdiff_t i, double s_in, double n_in, double bg, double var, double pk,
                           double cnt, double sw, double sr, double sc, double srr, double scc,
                           double src, float *contrast, float *bg_std, float *peak, float *area,
                           float *elongation)
{
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

/* One candidate, the definition read directly (any radius). */
static void features_plain(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                           const int32_t *cand_rows, const int32_t *cand_cols,
                           const float *radius, ptrdiff_t i,
                           float *contrast, float *bg_std, float *peak,
                           float *area, float *elongation)
{
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
    store_features(i, s_in, n_in, bg, var, pk, cnt, sw, sr, sc, srr, scc, src,
                   contrast, bg_std, peak, area, elongation);
}

/* Largest radius (r_out) for the span tables below; larger ones take
 * features_plain. With r_out <= SPAN_RMAX the window has at most
 * (2 SPAN_RMAX + 1)^2 = 16641 pixels, so the uint16 sums below (values
 * and squares < 2^32) stay under 2^53: exact in float64 in any order. */
#define SPAN_RMAX 64

/* The disc {sqrt(dr^2 + dc^2) <= x} row by row: h[dr] = the largest dc in
 * 0 .. R inside it (-1: none), for dr = 0 .. R. The same double
 * expression as the definition: sqrt is correctly rounded, hence
 * monotone in dc, so each row of the disc is the one span |dc| <= h[dr]. */
static void disc_spans(double x, ptrdiff_t R, int *h)
{
    for (ptrdiff_t k = 0; k <= R; k++) {
        const double dr = (double)k;
        int m = -1;
        for (ptrdiff_t c = 0; c <= R; c++) {
            const double dc = (double)c;
            if (sqrt(dr * dr + dc * dc) <= x) m = (int)c;
            else break;
        }
        h[k] = m;
    }
}

/* The per-radius tables of features_span. */
typedef struct {
    float radius;                  /* the radius they are for (-1: none) */
    double r_inner, r_in, r_out, r_fg;
    ptrdiff_t R;
    int h_inner[SPAN_RMAX + 1], h_ring_lo[SPAN_RMAX + 1], h_out[SPAN_RMAX + 1], h_fg[SPAN_RMAX + 1];
} span_tab;

static void span_tab_set(span_tab *t, float radius)
{
    const double rad = radius;
    t->radius = radius;
    t->r_inner = rad > 1.0 ? rad : 1.0;
    t->r_in = 2.0 * rad > rad + 2.0 ? 2.0 * rad : rad + 2.0;
    t->r_out = t->r_in + (rad > 2.0 ? rad : 2.0);
    t->r_fg = 2.0 * rad > t->r_inner ? 2.0 * rad : t->r_inner;
    t->R = (ptrdiff_t)ceil(t->r_out);
    int h_rin[SPAN_RMAX + 1];
    disc_spans(t->r_inner, t->R, t->h_inner);
    disc_spans(t->r_in, t->R, h_rin);
    disc_spans(t->r_out, t->R, t->h_out);
    disc_spans(t->r_fg, t->R, t->h_fg);
    /* ring: not inner, d > r_in, d <= r_out: h_ring_lo < |dc| <= h_out */
    for (ptrdiff_t k = 0; k <= t->R; k++)
        t->h_ring_lo[k] = h_rin[k] > t->h_inner[k] ? h_rin[k] : t->h_inner[k];
}

/* One candidate with the tables of its radius: the pixels of features_plain
 * taken span by span, row by row, each sum over its own pixels in the
 * same (row-major) order, so the same values bit for bit. uint16: the
 * inner and ring sums in exact integers (see SPAN_RMAX). Pass 2 adds
 * max(e, 0) terms instead of skipping e <= 0: the added +-0 change no sum
 * (none is ever -0: they start at +0 and a sum is -0 only if both terms
 * are), and a NaN e is skipped either way. */
static void features_span(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                          ptrdiff_t cr, ptrdiff_t cc, const span_tab *t, ptrdiff_t i,
                          float *contrast, float *bg_std, float *peak,
                          float *area, float *elongation)
{
    const ptrdiff_t R = t->R;
    const ptrdiff_t ra = cr - R < 0 ? 0 : cr - R, rb = cr + R >= rows ? rows - 1 : cr + R;
    const ptrdiff_t ca = cc - R < 0 ? 0 : cc - R, cb = cc + R >= cols ? cols - 1 : cc + R;
#define CLIP_LO(x) ((x) < ca ? ca : (x))
#define CLIP_HI(x) ((x) > cb ? cb : (x))
    double s_in = 0, n_in = 0, mx = -INFINITY, s_ring = 0, s2_ring = 0, n_ring = 0;
    if (dtype == NCALC_U16) {
        uint64_t si = 0, sr = 0, s2 = 0;
        ptrdiff_t ni = 0, nr = 0;
        unsigned m = 0;
        for (ptrdiff_t r = ra; r <= rb; r++) {
            const ptrdiff_t k = r < cr ? cr - r : r - cr;
            const uint16_t *row = (const uint16_t *)img + r * cols;
            const ptrdiff_t hi = t->h_inner[k], lo = t->h_ring_lo[k], ho = t->h_out[k];
            for (ptrdiff_t c = CLIP_LO(cc - hi), e = CLIP_HI(cc + hi); c <= e; c++) {
                const unsigned v = row[c];
                si += v; ni++;
                m = v > m ? v : m;
            }
            if (ho > lo) {
                /* |dc| in (lo, ho]: one span through the centre column when lo < 0 */
                const ptrdiff_t l1 = lo < 0 ? cc + ho : cc - lo - 1, r0 = lo < 0 ? cc + ho + 1 : cc + lo + 1;
                for (ptrdiff_t c = CLIP_LO(cc - ho), e = CLIP_HI(l1); c <= e; c++) {
                    const uint64_t v = row[c];
                    sr += v; s2 += v * v; nr++;
                }
                for (ptrdiff_t c = CLIP_LO(r0), e = CLIP_HI(cc + ho); c <= e; c++) {
                    const uint64_t v = row[c];
                    sr += v; s2 += v * v; nr++;
                }
            }
        }
        s_in = (double)si; n_in = (double)ni; s_ring = (double)sr; s2_ring = (double)s2;
        n_ring = (double)nr;
        if (ni > 0) mx = (double)m;  /* ni >= 1: the centre is always inner */
    } else {
        for (ptrdiff_t r = ra; r <= rb; r++) {
            const ptrdiff_t k = r < cr ? cr - r : r - cr;
            const float *row = (const float *)img + r * cols;
            const ptrdiff_t hi = t->h_inner[k], lo = t->h_ring_lo[k], ho = t->h_out[k];
            /* |dc| in (lo, ho]: one span through the centre column when lo < 0 */
            const ptrdiff_t l1 = lo < 0 ? cc + ho : cc - lo - 1, r0 = lo < 0 ? cc + ho + 1 : cc + lo + 1;
            if (ho > lo)
                for (ptrdiff_t c = CLIP_LO(cc - ho), e = CLIP_HI(l1); c <= e; c++) {
                    const double v = row[c];
                    s_ring += v; s2_ring += v * v; n_ring += 1;
                }
            for (ptrdiff_t c = CLIP_LO(cc - hi), e = CLIP_HI(cc + hi); c <= e; c++) {
                const double v = row[c];
                s_in += v; n_in += 1;
                if (v > mx) mx = v;
            }
            if (ho > lo)
                for (ptrdiff_t c = CLIP_LO(r0), e = CLIP_HI(cc + ho); c <= e; c++) {
                    const double v = row[c];
                    s_ring += v; s2_ring += v * v; n_ring += 1;
                }
        }
    }
    double bg = n_ring > 0 ? s_ring / n_ring : (n_in > 0 ? s_in / n_in : 0.0);
    double var = n_ring > 1 ? (s2_ring - s_ring * s_ring / n_ring) / (n_ring - 1) : 0.0;
    double pk = mx - bg;

    /* pass 2: area at half maximum and second moments of the excess */
    double cnt = 0, sw = 0, sr = 0, sc = 0, srr = 0, scc = 0, src = 0;
    const double half = 0.5 * pk;
    const int pkpos = pk > 0;
    for (ptrdiff_t r = ra; r <= rb; r++) {
        const ptrdiff_t k = r < cr ? cr - r : r - cr;
        const ptrdiff_t hf = t->h_fg[k];
        if (hf < 0) continue;
        const double dr = (double)(r - cr);
        for (ptrdiff_t c = CLIP_LO(cc - hf), e = CLIP_HI(cc + hf); c <= e; c++) {
            const double dc = (double)(c - cc);
            const double ex = (dtype == NCALC_U16 ? (double)(float)((const uint16_t *)img)[r * cols + c]
                                                  : (double)((const float *)img)[r * cols + c]) - bg;
            if (pkpos && ex >= half) cnt += 1;
            const double w = ex > 0 ? ex : 0.0;
            sw += w; sr += w * dr; sc += w * dc;
            srr += w * dr * dr; scc += w * dc * dc; src += w * dr * dc;
        }
    }
#undef CLIP_LO
#undef CLIP_HI
    store_features(i, s_in, n_in, bg, var, pk, cnt, sw, sr, sc, srr, scc, src,
                   contrast, bg_std, peak, area, elongation);
}

/* Hint the cache to fetch the rows of a window (clipped to the image). */
static inline void prefetch_window(const void *img, int dtype, ptrdiff_t rows, ptrdiff_t cols,
                                   ptrdiff_t cr, ptrdiff_t cc, ptrdiff_t R)
{
#if defined(__GNUC__)
    const size_t esz = dtype == NCALC_U16 ? 2 : 4;
    const ptrdiff_t ra = cr - R < 0 ? 0 : cr - R, rb = cr + R >= rows ? rows - 1 : cr + R;
    const ptrdiff_t ca = cc - R < 0 ? 0 : cc - R, cb = cc + R >= cols ? cols - 1 : cc + R;
    for (ptrdiff_t r = ra; r <= rb; r++) {
        const char *a = (const char *)img + ((size_t)r * (size_t)cols + (size_t)ca) * esz;
        const char *b = (const char *)img + ((size_t)r * (size_t)cols + (size_t)cb) * esz;
        for (; a <= b; a += 64) __builtin_prefetch(a, 0, 3);
        __builtin_prefetch(b, 0, 3);
    }
#else
    (void)img; (void)dtype; (void)rows; (void)cols; (void)cr; (void)cc; (void)R;
#endif
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
    /* runs of consecutive candidates (see ncalc_run_chunk) */
    const ptrdiff_t chunk = ncalc_run_chunk(n, nt);
    (void)chunk;
#pragma omp parallel num_threads(nt)
    {
        /* the span tables of the last radius this thread saw */
        span_tab tab;
        tab.radius = -1.0f;
#pragma omp for schedule(dynamic, chunk)
        for (ptrdiff_t i = 0; i < n; i++) {
            const double rad = radius[i];
            const double r_in = 2.0 * rad > rad + 2.0 ? 2.0 * rad : rad + 2.0;
            const double r_out = r_in + (rad > 2.0 ? rad : 2.0);
            if (!(r_out <= SPAN_RMAX)) {
                features_plain(img, dtype, rows, cols, cand_rows, cand_cols, radius, i,
                               contrast, bg_std, peak, area, elongation);
                continue;
            }
            if (radius[i] != tab.radius) span_tab_set(&tab, radius[i]);
            if (i + 1 < n && radius[i + 1] == radius[i])
                prefetch_window(img, dtype, rows, cols, cand_rows[i + 1], cand_cols[i + 1], tab.R);
            features_span(img, dtype, rows, cols, cand_rows[i], cand_cols[i], &tab, i,
                          contrast, bg_std, peak, area, elongation);
        }
    }
    return NCALC_OK;
}
