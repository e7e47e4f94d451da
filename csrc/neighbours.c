/*
 * neighbours.c -- points within a radius of each other: the context sums of
 * the score model and the clustering rule (napari_calc.core.score,
 * napari_calc.core.cluster). See ncalc.h for the contract.
 *
 * The pairs are those scipy.spatial.cKDTree.query_pairs(r) finds: i != j
 * with the squared distance, summed over the dimensions in order from 0,
 * <= r * r in double. (cKDTree compares the same sum with r ** 2; whole
 * nodes it accepts or rejects without looking at their points agree with
 * that test, rounding being monotone.)
 *
 * Candidate pairs come from a grid over the two coordinates of largest
 * spread, its cells a little wider than r: the 3 x 3 cells around a point
 * hold all its neighbours, and the distance test above decides. For the
 * clusters, each point's neighbours are listed in increasing index order;
 * for the sums, the points in increasing order add their weights to their
 * neighbours' sums (in parallel, each thread for the targets in its strip
 * of cell rows). Either way what is computed does not depend on the
 * thread count or on how the pairs were found.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int64_t key;
    int32_t idx;
} keyed_t;

static int cmp_keyed(const void *a, const void *b)
{
    const keyed_t *x = (const keyed_t *)a, *y = (const keyed_t *)b;
    if (x->key != y->key) return (x->key > y->key) - (x->key < y->key);
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static inline double sqdist(const double *p, const double *q, int dim)
{
    double s = 0.0;
    for (int k = 0; k < dim; k++) {
        const double d = p[k] - q[k];
        s += d * d;
    }
    return s;
}

/* The grid of cells (at least the radius wide) over the two coordinates of
 * largest spread; points sorted by cell, then index. With few enough cells
 * (a counting sort) the cells' first points are in a table, else found by
 * bisection of the sorted keys. */
typedef struct {
    const double *pos;
    int dim;
    double r2;
    int64_t ncx;
    ptrdiff_t n;
    int64_t *cell;    /* cell of point i: cy * ncx + cx */
    int32_t *cxy;     /* and its cx, cy (2 n values) */
    int32_t *ord;     /* the points by (cell, index) */
    int64_t *key;     /* their cells (bisection), or NULL */
    ptrdiff_t *first; /* first[k]: where cell k starts in ord (table), or NULL */
    double *spos;     /* the positions in that order (n x dim), or NULL */
} grid_t;

/* where cell k starts in g->ord */
static ptrdiff_t cell_start(const grid_t *g, int64_t k)
{
    if (g->first) return g->first[k];
    ptrdiff_t lo = 0, hi = g->n;
    while (lo < hi) {
        const ptrdiff_t mid = lo + (hi - lo) / 2;
        if (g->key[mid] < k) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The 3 x 3 cells around point i's cell: rows y0..y1 of cells, cells
 * x0..x1 of each (one run of g->ord). */
typedef struct {
    int64_t x0, x1, y0, y1;
} around_t;

static inline around_t around(const grid_t *g, ptrdiff_t i, int64_t ncy)
{
    const int64_t cx = g->cxy[2 * i], cy = g->cxy[2 * i + 1];
    around_t a = {cx > 0 ? cx - 1 : 0, cx + 1 < g->ncx ? cx + 1 : cx, cy > 0 ? cy - 1 : 0,
                  cy + 1 < ncy ? cy + 1 : cy};
    return a;
}

/* how many points the cells around point i hold (i included) */
static int64_t candidates_of(const grid_t *g, ptrdiff_t i, int64_t ncy)
{
    const around_t a = around(g, i, ncy);
    int64_t c = 0;
    for (int64_t y = a.y0; y <= a.y1; y++)
        c += cell_start(g, y * g->ncx + a.x1 + 1) - cell_start(g, y * g->ncx + a.x0);
    return c;
}

/* The neighbours of point i, in increasing order, into out (room for
 * candidates_of(g, i) of them, i itself included); returns their number. The distance test is
 * written out for each dimension so the compiler unrolls it (the same
 * sum, in the same order). */
static int64_t neighbours_of(const grid_t *g, ptrdiff_t i, int64_t ncy, int32_t *out)
{
    const double *p = g->pos + i * g->dim;
    const around_t a = around(g, i, ncy);
    int64_t c = 0;
    for (int64_t y = a.y0; y <= a.y1; y++) {
        const ptrdiff_t s0 = cell_start(g, y * g->ncx + a.x0), s1 = cell_start(g, y * g->ncx + a.x1 + 1);
#define NCALC_SCAN(DIM)                                                                       \
        for (ptrdiff_t s = s0; s < s1; s++) {                                                 \
            const int32_t j = g->ord[s];                                                      \
            out[c] = j; /* kept when it passes: no branch to mispredict */                  \
            c += (sqdist(p, g->pos + (ptrdiff_t)j * (DIM), (DIM)) <= g->r2) & (j != i);     \
        }
        switch (g->dim) {
        case 1: NCALC_SCAN(1) break;
        case 2: NCALC_SCAN(2) break;
        default: NCALC_SCAN(3) break;
        }
#undef NCALC_SCAN
    }
    /* insertion sort: the lists are short, and already in order within
     * each cell */
    for (int64_t k = 1; k < c; k++) {
        const int32_t v = out[k];
        int64_t m = k;
        for (; m > 0 && out[m - 1] > v; m--) out[m] = out[m - 1];
        out[m] = v;
    }
    return c;
}

/* The grid of the points (see grid_t): cells a little wider than the
 * radius over the two coordinates of largest spread, the points sorted
 * by cell, then index. *ncy_out: its rows of cells. grid_free frees it
 * (also after a failure). */
static int grid_make(const double *pos, ptrdiff_t n, int dim, double radius, int sorted_pos,
                     grid_t *g_out, int64_t *ncy_out)
{
    memset(g_out, 0, sizeof(*g_out));
    /* the two coordinates of largest spread (ax: most, ay: next, or none) */
    int ax = -1, ay = -1;
    double lo[3], spread[3];
    for (int k = 0; k < dim; k++) {
        double a = pos[k], b = pos[k];
        for (ptrdiff_t i = 1; i < n; i++) {
            const double v = pos[i * dim + k];
            a = v < a ? v : a;
            b = v > b ? v : b;
        }
        lo[k] = a;
        spread[k] = b - a;
        if (ax < 0 || spread[k] > spread[ax]) {
            ay = ax;
            ax = k;
        } else if (ay < 0 || spread[k] > spread[ay]) {
            ay = k;
        }
    }
    /* cells wider than r by far more than any rounding of the distance
     * test or of the cell index: neighbours are in adjacent cells. Few
     * enough cells for an int64 key (at most 2^30 a side). */
    double cs = radius * (1.0 + 1e-6) + 1e-300;
    if (spread[ax] / cs > 1073741824.0) cs = spread[ax] / 1073741824.0;
    if (ay >= 0 && spread[ay] / cs > 1073741824.0) cs = spread[ay] / 1073741824.0;
    const int64_t ncx = (int64_t)(spread[ax] / cs) + 1;
    const int64_t ncy = ay < 0 ? 1 : (int64_t)(spread[ay] / cs) + 1;
    const int table = ncx * ncy <= 4 * (int64_t)n + 4096;
    grid_t g = {pos, dim, radius * radius, ncx, n, NULL, NULL, NULL, NULL, NULL, NULL};
    g.cell = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    g.cxy = (int32_t *)malloc((size_t)n * 2 * sizeof(int32_t));
    g.ord = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    if (table) g.first = (ptrdiff_t *)calloc((size_t)(ncx * ncy + 1), sizeof(ptrdiff_t));
    else g.key = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    keyed_t *srt = table ? NULL : (keyed_t *)malloc((size_t)n * sizeof(keyed_t));
    if (sorted_pos) g.spos = (double *)malloc((size_t)n * (size_t)dim * sizeof(double));
    *g_out = g;
    *ncy_out = ncy;
    if (!g.cell || !g.cxy || !g.ord || (table ? !g.first : (!g.key || !srt)) || (sorted_pos && !g.spos)) {
        free(srt);
        return NCALC_ENOMEM;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        int64_t cx = (int64_t)((pos[i * dim + ax] - lo[ax]) / cs);
        int64_t cy = ay < 0 ? 0 : (int64_t)((pos[i * dim + ay] - lo[ay]) / cs);
        cx = cx < ncx ? cx : ncx - 1;
        cy = cy < ncy ? cy : ncy - 1;
        g.cell[i] = cy * ncx + cx;
        g.cxy[2 * i] = (int32_t)cx;
        g.cxy[2 * i + 1] = (int32_t)cy;
    }
    if (table) {  /* counting sort: in each cell the points in index order */
        for (ptrdiff_t i = 0; i < n; i++) g.first[g.cell[i] + 1]++;
        for (int64_t k = 0; k < ncx * ncy; k++) g.first[k + 1] += g.first[k];
        for (ptrdiff_t i = 0; i < n; i++) g.ord[g.first[g.cell[i]]++] = (int32_t)i;
        for (int64_t k = ncx * ncy; k > 0; k--) g.first[k] = g.first[k - 1];
        g.first[0] = 0;
    } else {
        for (ptrdiff_t i = 0; i < n; i++) {
            srt[i].key = g.cell[i];
            srt[i].idx = (int32_t)i;
        }
        qsort(srt, (size_t)n, sizeof(keyed_t), cmp_keyed);
        for (ptrdiff_t i = 0; i < n; i++) {
            g.key[i] = srt[i].key;
            g.ord[i] = srt[i].idx;
        }
        free(srt);
    }
    if (g.spos)
        for (ptrdiff_t s = 0; s < n; s++)
            for (int k = 0; k < dim; k++) g.spos[s * dim + k] = pos[(ptrdiff_t)g.ord[s] * dim + k];
    return NCALC_OK;
}

static void grid_free(grid_t *g)
{
    free(g->spos);
    free(g->cell);
    free(g->cxy);
    free(g->ord);
    free(g->first);
    free(g->key);
    memset(g, 0, sizeof(*g));
}

/* The neighbour lists: for point i, nbr[start[i] .. start[i] + count[i])
 * in increasing order (start from a bound on each list's length: the
 * points of the cells around). One pass, in parallel over the points.
 * *start, *count and *nbr are malloc'ed (free them). */
static int neighbour_lists(const double *pos, ptrdiff_t n, int dim, double radius, int nthreads,
                           int64_t **start_out, int64_t **count_out, int32_t **nbr_out)
{
    *start_out = *count_out = NULL;
    *nbr_out = NULL;
    grid_t g;
    int64_t ncy;
    const int gst = grid_make(pos, n, dim, radius, 0, &g, &ncy);
    int64_t *start = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    if (gst != NCALC_OK || !start) {
        grid_free(&g);
        free(start);
        return NCALC_ENOMEM;
    }
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;

    int64_t *count = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    if (!count) goto nomem;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 4096)
    for (ptrdiff_t i = 0; i < n; i++) count[i] = candidates_of(&g, i, ncy);
    int64_t total = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        start[i] = total;
        total += count[i];
    }
    int32_t *nbr = (int32_t *)malloc((size_t)(total > 0 ? total : 1) * sizeof(int32_t));
    if (!nbr) {
        free(count);
        goto nomem;
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 64) if (n > 1024)
    for (ptrdiff_t i = 0; i < n; i++) count[i] = neighbours_of(&g, i, ncy, nbr + start[i]);
    grid_free(&g);
    *start_out = start;
    *count_out = count;
    *nbr_out = nbr;
    return NCALC_OK;
nomem:
    grid_free(&g);
    free(start);
    return NCALC_ENOMEM;
}

static int check_points(const double *pos, ptrdiff_t n, int dim, double radius)
{
    if (n < 0 || n > INT32_MAX - 1 || dim < 1 || dim > 3 || !(radius > 0) || !isfinite(radius))
        return NCALC_EINVAL;
    if (n > 0 && !pos) return NCALC_EINVAL;
    for (ptrdiff_t i = 0; i < n * dim; i++)
        if (!isfinite(pos[i])) return NCALC_EINVAL;
    return NCALC_OK;
}

/* The pass of ncalc_neighbour_sums for the targets in cell rows [ya, yb):
 * every point j, in increasing order, adds its weight to the sums of its
 * neighbours there. The sums and counts are in the grid's order (ssum[s]
 * for point g->ord[s]): a strip's are one run, apart from the others'. */
static void sums_rows(const grid_t *g, int64_t ncy, int64_t ya, int64_t yb, const double *weight,
                      double *ssum, int64_t *scount)
{
    const double r2 = g->r2;
    const int dim = g->dim;
    for (ptrdiff_t j = 0; j < g->n; j++) {
        const around_t a = around(g, j, ncy);
        const int64_t y0 = a.y0 > ya ? a.y0 : ya, y1 = a.y1 < yb - 1 ? a.y1 : yb - 1;
        if (y0 > y1) continue;
        const double *p = g->pos + j * dim;
        const double add[2] = {0.0, ssum ? weight[j] : 0.0};
        for (int64_t y = y0; y <= y1; y++) {
            const ptrdiff_t s0 = cell_start(g, y * g->ncx + a.x0), s1 = cell_start(g, y * g->ncx + a.x1 + 1);
#define NCALC_ADD(DIM)                                                                        \
            for (ptrdiff_t s = s0; s < s1; s++) {                                             \
                const int32_t i = g->ord[s];                                                  \
                const int hit = (sqdist(p, g->spos + s * (DIM), (DIM)) <= r2) & (i != j);     \
                /* without a branch (+0.0 leaves a sum as it is: a sum is never -0.0) */      \
                if (ssum) ssum[s] += add[hit];                                                \
                if (scount) scount[s] += hit;                                                 \
            }
            switch (dim) {
            case 1: NCALC_ADD(1) break;
            case 2: NCALC_ADD(2) break;
            default: NCALC_ADD(3) break;
            }
#undef NCALC_ADD
        }
    }
}

int ncalc_neighbour_sums(const double *pos, ptrdiff_t n, int dim, double radius,
                         const double *weight, double *sum, int64_t *count, int nthreads)
{
    int st = check_points(pos, n, dim, radius);
    if (st != NCALC_OK) return st;
    if (n > 0 && ((sum && !weight) || (!sum && !count))) return NCALC_EINVAL;
    if (n == 0) return NCALC_OK;
    grid_t g;
    int64_t ncy;
    if (grid_make(pos, n, dim, radius, 1, &g, &ncy) != NCALC_OK) {
        grid_free(&g);
        return NCALC_ENOMEM;
    }
    double *ssum = sum ? (double *)calloc((size_t)n, sizeof(double)) : NULL;
    int64_t *scount = count ? (int64_t *)calloc((size_t)n, sizeof(int64_t)) : NULL;
    if ((sum && !ssum) || (count && !scount)) {
        free(ssum);
        free(scount);
        grid_free(&g);
        return NCALC_ENOMEM;
    }
    /* Each point j, in increasing order, adds its weight to the sum of
     * every neighbour i: so each sum adds its neighbours' weights in
     * increasing index order, with no list to build or sort. (The test
     * from j's side is the same: (p_j - p_i)^2 is (p_i - p_j)^2 to the
     * bit.) In parallel, each thread takes the targets of a strip of cell
     * rows (about as many points each) and walks every j in that order for
     * them: no sum is shared, and each keeps its order. The sums are kept
     * in the grid's order meanwhile (a strip's in one run: no cache line
     * written by two threads but at a strip's ends), then put in place. */
    const int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel num_threads(nt) if (n > 1024 && ncy > 1)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
#else
        const int t = 0, team = 1;
#endif
        /* this thread's cell rows: from the first whose points before it
         * reach t / team of all to the first reaching (t + 1) / team */
        int64_t ya = 0, yb = ncy;
        if (team > 1) {
            const ptrdiff_t want_a = (ptrdiff_t)((double)n * t / team),
                            want_b = (ptrdiff_t)((double)n * (t + 1) / team);
            ya = yb = -1;
            for (int64_t y = 0; y <= ncy && yb < 0; y++) {
                const ptrdiff_t before = y < ncy ? cell_start(&g, y * g.ncx) : n;
                if (ya < 0 && (before >= want_a || y == ncy)) ya = y;
                if (before >= want_b || y == ncy) yb = y;
            }
            if (t == team - 1) yb = ncy;
            if (t == 0) ya = 0;
        }
        if (ya < yb) sums_rows(&g, ncy, ya, yb, weight, ssum, scount);
    }
    for (ptrdiff_t s = 0; s < n; s++) {
        if (sum) sum[g.ord[s]] = ssum[s];
        if (count) count[g.ord[s]] = scount[s];
    }
    free(ssum);
    free(scount);
    grid_free(&g);
    return NCALC_OK;
}

static int32_t uf_find(int32_t *parent, int32_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

int ncalc_radius_clusters(const double *pos, ptrdiff_t n, int dim, double radius, int64_t min_size,
                          int64_t *labels, int nthreads)
{
    int st = check_points(pos, n, dim, radius);
    if (st != NCALC_OK) return st;
    if (min_size < 2 || (n > 0 && !labels)) return NCALC_EINVAL;
    if (n == 0) return NCALC_OK;
    int64_t *start, *len;
    int32_t *nbr;
    st = neighbour_lists(pos, n, dim, radius, nthreads, &start, &len, &nbr);
    if (st != NCALC_OK) return st;
    int32_t *parent = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    uint8_t *core = (uint8_t *)malloc((size_t)n);
    int64_t *comp_id = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    if (!parent || !core || !comp_id) {
        free(parent);
        free(core);
        free(comp_id);
        free(start);
        free(nbr);
        return NCALC_ENOMEM;
    }
    /* a core point has min_size points, itself included, within reach */
    for (ptrdiff_t i = 0; i < n; i++) {
        core[i] = 1 + len[i] >= min_size;
        parent[i] = (int32_t)i;
        labels[i] = -1;
        comp_id[i] = -1;
    }
    /* clusters: the connected components of the core-core pairs */
    for (ptrdiff_t i = 0; i < n; i++) {
        if (!core[i]) continue;
        for (int64_t k = start[i]; k < start[i] + len[i]; k++) {
            const int32_t j = nbr[k];
            if (j <= i || !core[j]) continue;
            const int32_t a = uf_find(parent, (int32_t)i), b = uf_find(parent, j);
            if (a != b) parent[a > b ? a : b] = a < b ? a : b;
        }
    }
    /* numbered in order of their first (lowest-index) core point */
    int64_t next = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        if (!core[i]) continue;
        const int32_t root = uf_find(parent, (int32_t)i);
        if (comp_id[root] < 0) comp_id[root] = next++;
        labels[i] = comp_id[root];
    }
    /* a border point takes the lowest id among its core neighbours' */
    for (ptrdiff_t i = 0; i < n; i++) {
        if (core[i]) continue;
        int64_t lab = -1;
        for (int64_t k = start[i]; k < start[i] + len[i]; k++) {
            const int32_t j = nbr[k];
            if (core[j] && (lab < 0 || labels[j] < lab)) lab = labels[j];
        }
        labels[i] = lab;
    }
    free(parent);
    free(core);
    free(comp_id);
    free(start);
    free(len);
    free(nbr);
    return NCALC_OK;
}
