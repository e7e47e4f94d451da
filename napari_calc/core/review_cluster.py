"""Fast re-clustering for the review loop.

The review recomputes clusters after every edit, on up to tens of
thousands of candidates. :func:`fast_cluster_labels` and
:class:`ClusterTableCache` give exactly the results of
:func:`napari_calc.core.cluster.cluster_calcifications` and
:func:`napari_calc.core.cluster.cluster_table` (tests check the
equivalence), but vectorised and incremental:

* labels from ``cKDTree.query_pairs`` + connected components instead of a
  Python breadth-first search;
* summary rows (from :func:`~napari_calc.core.cluster.cluster_table`
  itself) cached by member rows, so an edit only recomputes the clusters it
  changed.

:func:`max_pair_distance` (hull vertices only; the farthest pair of a
point set is always a pair of hull vertices) is offered to
``cluster_table``, whose all-pairs distance is quadratic in memory for a
cluster of thousands of candidates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError, cKDTree

from .cluster import cluster_table
from .columns import NO_CLUSTER, cluster_columns

__all__ = ["fast_cluster_labels", "max_pair_distance", "ClusterTableCache"]


def fast_cluster_labels(positions_mm: np.ndarray, *, radius_mm: float, min_size: int) -> np.ndarray:
    """Vectorised equivalent of :func:`napari_calc.core.cluster.cluster_calcifications`.

    Same definition (DBSCAN; ids from 0 in order of each cluster's first
    core point; a border point within reach of several clusters gets the
    lowest id) and the same labels.

    Parameters
    ----------
    positions_mm : ndarray, shape (N, D)
    radius_mm : float
    min_size : int

    Returns
    -------
    ndarray of int64, shape (N,)
    """
    pts = np.asarray(positions_mm, dtype=float)
    n = len(pts)
    labels = np.full(n, NO_CLUSTER, dtype=np.int64)
    if n == 0:
        return labels
    pairs = cKDTree(pts).query_pairs(r=radius_mm, output_type="ndarray")
    a = pairs[:, 0].astype(np.int64) if len(pairs) else np.empty(0, np.int64)
    b = pairs[:, 1].astype(np.int64) if len(pairs) else np.empty(0, np.int64)
    deg = 1 + np.bincount(a, minlength=n) + np.bincount(b, minlength=n)  # includes the point
    core = deg >= int(min_size)
    if not core.any():
        return labels
    cc = core[a] & core[b]
    g = coo_matrix((np.ones(int(cc.sum()), dtype=np.int8), (a[cc], b[cc])), shape=(n, n))
    _, comp = connected_components(g.tocsr(), directed=False)
    core_idx = np.flatnonzero(core)
    # number components by their first (lowest-index) core point
    comp_core = comp[core_idx]
    uniq, first_pos = np.unique(comp_core, return_index=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first_pos, kind="stable")] = np.arange(len(uniq))
    comp_id = np.full(comp.max() + 1, NO_CLUSTER, dtype=np.int64)
    comp_id[uniq] = rank
    labels[core_idx] = comp_id[comp_core]
    # border points: the lowest id among the clusters of their core neighbours
    m1 = core[a] & ~core[b]
    m2 = core[b] & ~core[a]
    tgt = np.concatenate([b[m1], a[m2]])
    lab = np.concatenate([labels[a[m1]], labels[b[m2]]])
    if len(tgt):
        big = np.iinfo(np.int64).max
        best = np.full(n, big, dtype=np.int64)
        np.minimum.at(best, tgt, lab)
        hit = best != big
        labels[hit] = best[hit]
    return labels


def _pairwise_max(sub: np.ndarray, block: int = 2048) -> float:
    """Max pairwise distance, by blocks (same arithmetic as cluster_table)."""
    best = 0.0
    for i in range(0, len(sub), block):
        d = np.sqrt(((sub[i:i + block, None, :] - sub[None, :, :]) ** 2).sum(-1)).max()
        best = max(best, float(d))
    return best


def _hull_vertices(pos: np.ndarray) -> np.ndarray | None:
    """Indices of the convex hull's vertices, in the affine span of the
    points (Qhull needs full-dimensional input); None when Qhull fails."""
    centred = pos - pos.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    rank = int((sv > sv[0] * 1e-9).sum()) if sv[0] > 0 else 0
    if rank < 2:
        return None
    proj = centred @ vt[:rank].T
    try:
        return np.unique(ConvexHull(proj).vertices)
    except (QhullError, ValueError):
        return None


def max_pair_distance(pos: np.ndarray) -> float:
    """Largest distance between two points (rows of ``pos``).

    The same arithmetic as :func:`~napari_calc.core.cluster.cluster_table`
    (so the same value to the bit), applied to the convex hull's vertices
    only -- the farthest pair of a point set is always a pair of hull
    vertices. Collinear points (no 2-D hull) take the two extreme ones
    along the line; when Qhull fails otherwise, all pairs by blocks.
    """
    pos = np.asarray(pos, dtype=float)
    n = len(pos)
    if n < 2:
        return 0.0
    if n <= 64:
        return _pairwise_max(pos)
    verts = _hull_vertices(pos)
    if verts is not None:
        return _pairwise_max(pos[verts])
    centred = pos - pos.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    if sv[0] == 0:
        return 0.0
    if (sv > sv[0] * 1e-9).sum() == 1:  # collinear: the extremes along the line
        t = centred @ vt[0]
        lo, hi = np.flatnonzero(t <= t.min() + 1e-12 * (1 + abs(t.min()))), \
            np.flatnonzero(t >= t.max() - 1e-12 * (1 + abs(t.max())))
        return _pairwise_max(pos[np.r_[lo, hi]])
    return _pairwise_max(pos)


class ClusterTableCache:
    """Builds the cluster table with :func:`napari_calc.core.cluster.cluster_table`
    (so it is the same table), but only for the clusters whose members
    changed since the last call; the others come from a cache keyed by
    their member rows."""

    #: columns whose values make up a cluster's cache key
    KEY_COLUMNS = ("calc_id", "row", "col", "y_mm", "x_mm", "diameter_mm", "contrast", "cnr", "score",
                   "status", "slice", "z_mm")

    def __init__(self, ndim: int = 2, spacing_mm=None):
        self.ndim = ndim
        self.spacing_mm = spacing_mm
        self._cache: dict[bytes, dict] = {}
        self._empty: pd.DataFrame | None = None

    def table(self, calcs: pd.DataFrame) -> pd.DataFrame:
        """The cluster table of ``calcs`` (``cluster_id`` already set)."""
        cid = calcs["cluster_id"].to_numpy()
        sel = np.flatnonzero(cid >= 0)
        if not len(sel):
            self._cache = {}
            if self._empty is None:
                self._empty = cluster_table(calcs.iloc[:0], self.spacing_mm, ndim=self.ndim)
            return self._empty.copy()
        order = sel[np.argsort(cid[sel], kind="stable")]  # groupby order: by id, rows in order
        cs = cid[order]
        starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
        ends = np.r_[starts[1:], len(cs)]
        keycols = []
        for k in self.KEY_COLUMNS:
            if k in calcs.columns:
                v = calcs[k].to_numpy()[order]
                if v.dtype == object:
                    v = np.array([str(x).encode() for x in v], dtype=object)
                keycols.append(v)

        def key(s, e):
            parts = []
            for v in keycols:
                parts.append(b"\0".join(v[s:e]) if v.dtype == object else np.ascontiguousarray(v[s:e]).tobytes())
            return b"\1".join(parts)

        keys = [key(s, e) for s, e in zip(starts, ends)]
        miss = [i for i, k in enumerate(keys) if k not in self._cache]
        fresh: dict[bytes, dict] = {}
        if miss:
            rows = np.concatenate([order[starts[i]:ends[i]] for i in miss])
            sub = cluster_table(calcs.iloc[np.sort(rows)], self.spacing_mm, ndim=self.ndim)
            by_id = {int(r["cluster_id"]): r for r in sub.to_dict("records")}
            for i in miss:
                rec = dict(by_id[int(cs[starts[i]])])
                rec.pop("cluster_id")
                fresh[keys[i]] = rec
        new_cache = {}
        out = []
        for i, k in enumerate(keys):
            rec = fresh.get(k) or self._cache[k]
            new_cache[k] = rec
            out.append({"cluster_id": int(cs[starts[i]]), **rec})
        self._cache = new_cache
        return pd.DataFrame(out, columns=cluster_columns(self.ndim))
