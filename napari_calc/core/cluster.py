"""Grouping calcifications into clusters (BI-RADS "grouped").

BI-RADS calls calcifications *grouped* when at least 3 lie within 1 cm². We
implement that as density-based clustering (DBSCAN) in millimetres: a
calcification is a *core* point when at least ``min_size`` calcifications,
itself included, lie within ``radius_mm`` of it, and a cluster is a set of
core points linked through each other's neighbourhoods plus the
calcifications within reach of them. The default ``radius_mm`` is that of a
disc of 1 cm² (sqrt(100 / pi) = 5.64 mm), so every core point has its group
of ``min_size`` inside a 1 cm² disc.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError, cKDTree

from . import _compiled
from ._frames import frame_of_arrays
from .columns import NO_CLUSTER, cluster_columns
from .errors import InvalidParameterError
from .score import cluster_feature_matrix, cluster_probability, load_model, logit

__all__ = ["cluster_calcifications", "DEFAULT_CLUSTER_RADIUS_MM", "cluster_table", "cluster_features",
           "max_pair_distance"]

#: Radius of a disc of area 1 cm², in mm.
DEFAULT_CLUSTER_RADIUS_MM = math.sqrt(100.0 / math.pi)


def cluster_calcifications(positions_mm: np.ndarray, *, radius_mm: float = DEFAULT_CLUSTER_RADIUS_MM,
                           min_size: int = 3, n_threads: int = 0) -> np.ndarray:
    """Cluster labels of calcifications.

    Parameters
    ----------
    positions_mm : ndarray, shape (N, D)
        Positions in mm (``(y, x)`` or ``(z, y, x)``).
    radius_mm : float
        Neighbourhood radius (default: a 1 cm² disc).
    min_size : int
        Calcifications, including the point itself, needed in a
        neighbourhood to make a core point (BI-RADS: 3).
    n_threads : int
        Threads of the C kernel (0: OpenMP default); the labels do not
        depend on it.

    Returns
    -------
    ndarray of int, shape (N,)
        Cluster id from 0 in order of each cluster's first core point, or
        -1 (:data:`~napari_calc.core.columns.NO_CLUSTER`) when in no
        cluster. A border point within reach of several clusters takes the
        lowest id.

    Notes
    -----
    The neighbour pairs are those of :meth:`scipy.spatial.cKDTree.query_pairs`
    (distance <= ``radius_mm``). In C (``_kernel.radius_clusters``) for
    finite positions in 1 to 3 dimensions; else vectorised NumPy/SciPy
    (pairs from a k-d tree, clusters as the connected components of the
    core-core pairs). The same labels either way.
    """
    if not (radius_mm > 0):
        raise InvalidParameterError(f"cluster radius must be > 0 mm, got {radius_mm}")
    if int(min_size) < 2:
        raise InvalidParameterError(f"min cluster size must be >= 2, got {min_size}")
    pts = np.asarray(positions_mm, dtype=float)
    n = len(pts)
    labels = np.full(n, NO_CLUSTER, dtype=np.int64)
    if n == 0:
        return labels
    fast = _radius_clusters_kernel(pts, float(radius_mm), int(min_size), int(n_threads))
    if fast is not None:
        return fast
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


#: Use the C kernel in cluster_calcifications (tests switch it off to
#: compare with the NumPy code path).
_CLUSTER_KERNEL = True


def _radius_clusters_kernel(pts: np.ndarray, radius_mm: float, min_size: int, n_threads: int) -> np.ndarray | None:
    """The labels of :func:`cluster_calcifications` from
    ``_kernel.radius_clusters``, or None (no kernel, switched off, or
    positions it does not take: NumPy decides)."""
    if not _CLUSTER_KERNEL or pts.ndim != 2 or not 1 <= pts.shape[1] <= 3:
        return None
    _kernel = _compiled.kernel
    if _kernel is None:
        return None
    if not hasattr(_kernel, "radius_clusters"):
        return None
    try:
        return _kernel.radius_clusters(np.ascontiguousarray(pts), radius_mm, min_size, n_threads)
    except ValueError:  # non-finite positions: NumPy decides
        return None


def _pairwise_max(sub: np.ndarray, block: int = 2048) -> float:
    """Max pairwise distance, by blocks of rows (bounded memory)."""
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

    Computed on the convex hull's vertices only -- the farthest pair of a
    point set is always a pair of hull vertices -- so a cluster of
    thousands of candidates costs little time and memory. Collinear points (no 2-D hull) take the two extreme ones
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


def _hull_area(points: np.ndarray) -> float:
    if len(points) < 3:
        return 0.0
    try:
        return float(ConvexHull(points).volume)  # in 2-D, volume is the area
    except (QhullError, ValueError):
        return 0.0  # collinear or coincident


#: Measure the clusters' size and hull area in C (tests switch it off to
#: compare with max_pair_distance and Qhull).
_SHAPE_KERNEL = True


def _cluster_shapes(pos: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest distance between two members (:func:`max_pair_distance`)
    and the area of the members' hull in the last two coordinates
    (:func:`_hull_area`) of each cluster, whose members are the rows
    ``pos[start[k]:end[k]]`` (the kernel takes consecutive clusters,
    ``end[k] == start[k + 1]``, as the cluster table makes them).

    In C (``_kernel.cluster_shape``) when it is there: the same distances
    bit for bit, and hull areas equal to Qhull's up to rounding (a few
    units in the last place), without building a Qhull object per cluster.
    """
    pos = np.ascontiguousarray(pos, dtype=np.float64)
    if (_SHAPE_KERNEL and pos.ndim == 2 and pos.shape[1] in (2, 3) and len(start)
            and np.array_equal(start[1:], end[:-1])):
        try:
            _kernel = _compiled.kernel
            bounds = np.append(start, end[-1]).astype(np.intp)
            return _kernel.cluster_shape(pos, bounds, pos.shape[1] - 2, pos.shape[1] - 1)
        except (AttributeError, ValueError):
            pass  # no kernel, or a position it does not take: NumPy and Qhull decide
    far = np.array([max_pair_distance(pos[s:e]) for s, e in zip(start, end)], dtype=np.float64)
    area = np.array([_hull_area(pos[s:e, -2:]) for s, e in zip(start, end)], dtype=np.float64)
    return far, area


def cluster_features(calcs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids (sorted) and their score features.

    Features (:data:`napari_calc.core.score.CLUSTER_FEATURE_NAMES`): log of
    the number of members, the mean log-odds of the 3 highest member scores,
    and log(1 + sum of member scores). Computed without per-cluster Python
    loops.
    """
    cid = calcs["cluster_id"].to_numpy(np.int64)
    if not (cid >= 0).any():
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3))
    return _cluster_features(cid, _member_scores(calcs))


def _member_scores(calcs: pd.DataFrame) -> np.ndarray:
    """The ``score`` column as float64, NaN where it is not a number."""
    score = calcs["score"]
    if score.dtype != np.float64:  # (to_numeric returns a float64 column as it is)
        score = pd.to_numeric(score, errors="coerce")
    return score.to_numpy(float)


def _runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(ids, return_index=True, return_counts=True)`` of a
    sorted 1-D array (its distinct values, where each run starts, and its
    length), from the run boundaries: several times faster on the few
    hundred values of a cluster table."""
    start = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1]))) if len(ids) else np.zeros(0, np.intp)
    return ids[start], start, np.diff(np.append(start, len(ids)))


def _cluster_features(cid: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cluster_features` of arrays: ``cid`` the int64 cluster id and
    ``score`` the float score (NaN counts as 0) of each calcification."""
    take = cid >= 0
    if not take.any():
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3))
    cid = cid[take]
    sc = np.clip(score[take], 0.0, 1.0)  # (+-inf to 1 and 0, as from nan_to_num)
    sc[np.isnan(sc)] = 0.0
    order = np.lexsort((-sc, cid))  # by cluster, best score first
    cid, sc = cid[order], sc[order]
    ids, start, n = _runs(cid)  # (cid sorted)
    rank = np.arange(len(cid)) - np.repeat(start, n)
    top = rank < 3
    lo = logit(sc)
    top3 = np.bincount(np.repeat(np.arange(len(ids)), n)[top], weights=lo[top], minlength=len(ids))
    top3 /= np.minimum(n, 3)
    sump = np.add.reduceat(sc, start)
    return ids.astype(np.int64), cluster_feature_matrix(n.astype(float), top3, sump)


def _cluster_probability(X: np.ndarray) -> np.ndarray:
    """Calibrated cluster probability of each row of cluster features ``X``
    (:func:`cluster_features`) from the shipped model, or a heuristic when
    no model is shipped: the mean of the three highest member scores times
    ``1 - 0.5 ** (n - 2)``."""
    try:
        model = load_model()
    except (FileNotFoundError, OSError, ValueError):
        model = None
    if model is not None and "cluster" in model and len(X):
        return cluster_probability(X, model)
    n = np.exp(X[:, 0]) if len(X) else np.zeros(0)
    top = 1.0 / (1.0 + np.exp(-X[:, 1])) if len(X) else np.zeros(0)
    return top * np.where(n >= 2, 1.0 - 0.5 ** np.maximum(n - 2, 0), 0.5)


def _cluster_scores(calcs: pd.DataFrame, ids: np.ndarray) -> dict:
    """Calibrated cluster probability per cluster id (see
    :func:`_cluster_probability`)."""
    ids2, X = cluster_features(calcs)
    return {int(i): float(v) for i, v in zip(ids2, _cluster_probability(X))}


def cluster_table(calcs: pd.DataFrame, spacing_mm, *, ndim: int = 2) -> pd.DataFrame:
    """Summarise clusters from a calcification table with ``cluster_id`` set.

    ``row``/``col`` (and ``slice``) are the centroid of the members;
    ``max_extent_mm`` the largest distance between two member centres plus
    the mean member diameter (so a cluster of one spot has that spot's
    size); ``area_mm2`` the area of the members' convex hull in the image
    plane; ``score`` the calibrated probability that the cluster is a true
    microcalcification cluster (a logistic model on the number of members
    and their scores, trained on phantoms -- see
    :mod:`napari_calc.core.score`).
    """
    if not (calcs["cluster_id"].to_numpy() >= 0).any():
        return _empty_cluster_table(ndim)
    cid = calcs["cluster_id"].to_numpy(np.int64)
    score = _member_scores(calcs)
    values = {k: calcs[k].to_numpy() for k in _member_columns(ndim)}
    return _cluster_table(cid, score, values, ndim)


def _member_columns(ndim: int) -> list[str]:
    """The calcification columns :func:`cluster_table` reads besides
    ``cluster_id`` and ``score``."""
    return ["row", "col", "y_mm", "x_mm", "diameter_mm"] + (["slice", "z_mm"] if ndim == 3 else [])


def _empty_cluster_table(ndim: int) -> pd.DataFrame:
    cols = cluster_columns(ndim)
    return pd.DataFrame({c: pd.Series(dtype=float) for c in cols}).astype(
        {"cluster_id": "int64", "n_calcifications": "int64"})


def _cluster_table(cid: np.ndarray, score: np.ndarray, values: dict, ndim: int) -> pd.DataFrame:
    """:func:`cluster_table` of arrays, one element per calcification:
    ``cid`` the int64 cluster id, ``score`` the float score (as
    :func:`_member_scores` makes it) and ``values`` the columns of
    :func:`_member_columns` (a dict of 1-D arrays; it may hold others)."""
    if not (cid >= 0).any():
        return _empty_cluster_table(ndim)
    _, X = _cluster_features(cid, score)  # one row per cluster, by increasing id (as `ids` below)
    prob = np.asarray(_cluster_probability(X), dtype=np.float64)
    idx = np.flatnonzero(cid >= 0)
    idx = idx[np.argsort(cid[idx], kind="stable")]  # by cluster, table order within each
    ids, start, _ = _runs(cid[idx])  # (sorted)
    end = np.append(start[1:], len(idx))
    # the members' values gathered once, in that order: each cluster is the
    # slice start[k]:end[k] of these arrays
    arr = {k: np.asarray(values[k])[idx] for k in _member_columns(ndim)}
    yx = np.column_stack([arr["y_mm"], arr["x_mm"]]).astype(float)
    pos = np.column_stack([arr["z_mm"], yx]).astype(float) if ndim == 3 else yx

    def mean(a):  # as pandas' Series.mean: a float64 sum over the count
        return float(a.sum(dtype=np.float64) / len(a))

    centre = ["row", "col", "y_mm", "x_mm"] + (["slice", "z_mm"] if ndim == 3 else [])
    out = {k: np.empty(len(ids)) for k in centre + ["max_extent_mm", "area_mm2"]}
    far, out["area_mm2"] = _cluster_shapes(pos, start, end)
    for k, (s, e) in enumerate(zip(start, end)):
        for name in centre:
            out[name][k] = mean(arr[name][s:e])
        out["max_extent_mm"][k] = float(far[k] + mean(arr["diameter_mm"][s:e]))
    out["cluster_id"] = ids.astype(np.int64)
    out["n_calcifications"] = (end - start).astype(np.int64)
    out["score"] = prob
    return frame_of_arrays({c: out[c] for c in cluster_columns(ndim)})  # (in column order)
