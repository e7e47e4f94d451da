/*
 * cluster_shape.c -- the size and hull area of each cluster, for the
 * cluster table (napari_calc.core.cluster). See ncalc.h for the contract.
 *
 * The hull is Andrew's monotone chain on the points sorted by their two
 * plane coordinates; points on a hull edge are left out. Its area is the
 * shoelace sum of the fan of triangles from the first vertex. The largest
 * distance is the largest of the pair sums in double, square-rooted once
 * (the square root is correctly rounded and monotone, so this is the
 * largest of the rounded distances). In 2-D, when a group has more than
 * HULL_PAIRS points, only pairs of hull vertices are looked at: the
 * farthest pair of a point set is a pair of its hull's vertices.
 */
#include "ncalc.h"

#include <math.h>
#include <stdlib.h>

/* above this many points, a 2-D group's largest distance is taken over its
 * hull vertices only (as napari_calc.core.cluster.max_pair_distance) */
#define HULL_PAIRS 64

typedef struct {
    double a, b; /* the plane coordinates (ay, ax) */
    ptrdiff_t row; /* the point's row of pos */
} plane_pt;

static int cmp_plane(const void *p, const void *q)
{
    const plane_pt *u = (const plane_pt *)p, *v = (const plane_pt *)q;
    if (u->a != v->a) return (u->a > v->a) - (u->a < v->a);
    if (u->b != v->b) return (u->b > v->b) - (u->b < v->b);
    return (u->row > v->row) - (u->row < v->row);
}

/* twice the signed area of the triangle o, p, q (> 0 counter-clockwise in
 * the (a, b) plane) */
static inline double cross(const plane_pt *o, const plane_pt *p, const plane_pt *q)
{
    return (p->a - o->a) * (q->b - o->b) - (p->b - o->b) * (q->a - o->a);
}

/* hull vertices of pts[0 .. m-1] (sorted by cmp_plane) into hull, counter-
 * clockwise, each once; returns their number (1 or 2 when all points lie
 * on one line or coincide). hull: room for m + 1 points. */
static ptrdiff_t monotone_chain(const plane_pt *pts, ptrdiff_t m, plane_pt *hull)
{
    ptrdiff_t h = 0;
    for (ptrdiff_t i = 0; i < m; i++) { /* lower chain */
        while (h >= 2 && cross(&hull[h - 2], &hull[h - 1], &pts[i]) <= 0) h--;
        hull[h++] = pts[i];
    }
    for (ptrdiff_t i = m - 2, lo = h + 1; i >= 0; i--) { /* upper chain */
        while (h >= lo && cross(&hull[h - 2], &hull[h - 1], &pts[i]) <= 0) h--;
        hull[h++] = pts[i];
    }
    return h > 1 ? h - 1 : h; /* the last point is the first again */
}

static double largest_sq_distance(const double *pos, int dim, const ptrdiff_t *rows, ptrdiff_t m,
                                  ptrdiff_t first)
{
    double best = 0.0;
    for (ptrdiff_t i = 0; i < m; i++) {
        const double *p = pos + (rows ? rows[i] : first + i) * dim;
        for (ptrdiff_t j = 0; j < m; j++) { /* every ordered pair, as numpy's (m, m) matrix */
            const double *q = pos + (rows ? rows[j] : first + j) * dim;
            double s = (p[0] - q[0]) * (p[0] - q[0]);
            for (int k = 1; k < dim; k++) s += (p[k] - q[k]) * (p[k] - q[k]);
            if (s > best) best = s;
        }
    }
    return best;
}

int ncalc_cluster_shape(const double *pos, ptrdiff_t n, int dim, const ptrdiff_t *start, ptrdiff_t k,
                        int ay, int ax, double *extent, double *area)
{
    if (!pos || !start || !extent || !area || n < 0 || k < 0 || dim < 2 || dim > 3 || ay < 0 || ay >= dim
        || ax < 0 || ax >= dim || ay == ax || start[0] != 0 || start[k] != n)
        return NCALC_EINVAL;
    ptrdiff_t mmax = 0;
    for (ptrdiff_t g = 0; g < k; g++) {
        if (start[g + 1] < start[g]) return NCALC_EINVAL;
        if (start[g + 1] - start[g] > mmax) mmax = start[g + 1] - start[g];
    }
    for (ptrdiff_t i = 0; i < n * dim; i++)
        if (!isfinite(pos[i])) return NCALC_EINVAL;
    plane_pt *pts = (plane_pt *)malloc((size_t)(mmax + 1) * sizeof(plane_pt));
    plane_pt *hull = (plane_pt *)malloc((size_t)(mmax + 1) * sizeof(plane_pt));
    ptrdiff_t *rows = (ptrdiff_t *)malloc((size_t)(mmax + 1) * sizeof(ptrdiff_t));
    if (!pts || !hull || !rows) {
        free(pts);
        free(hull);
        free(rows);
        return NCALC_ENOMEM;
    }
    for (ptrdiff_t g = 0; g < k; g++) {
        const ptrdiff_t s = start[g], m = start[g + 1] - s;
        for (ptrdiff_t i = 0; i < m; i++) {
            pts[i].a = pos[(s + i) * dim + ay];
            pts[i].b = pos[(s + i) * dim + ax];
            pts[i].row = s + i;
        }
        qsort(pts, (size_t)m, sizeof(plane_pt), cmp_plane);
        const ptrdiff_t h = m ? monotone_chain(pts, m, hull) : 0;
        double twice = 0.0;
        for (ptrdiff_t i = 1; i + 1 < h; i++) twice += cross(&hull[0], &hull[i], &hull[i + 1]);
        area[g] = h >= 3 ? 0.5 * fabs(twice) : 0.0;
        if (dim == 2 && m > HULL_PAIRS) {
            for (ptrdiff_t i = 0; i < h; i++) rows[i] = hull[i].row;
            extent[g] = sqrt(largest_sq_distance(pos, dim, rows, h, 0));
        } else {
            extent[g] = sqrt(largest_sq_distance(pos, dim, NULL, m, s));
        }
    }
    free(pts);
    free(hull);
    free(rows);
    return NCALC_OK;
}
