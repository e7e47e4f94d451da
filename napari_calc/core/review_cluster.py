"""Incremental cluster table for the review loop.

The review recomputes clusters after every edit, on up to tens of
thousands of candidates. Labels come from the vectorised
:func:`napari_calc.core.cluster.cluster_calcifications`;
:class:`ClusterTableCache` builds the summary rows with
:func:`~napari_calc.core.cluster.cluster_table` itself, caching them by
member rows, so an edit only recomputes the clusters it changed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .cluster import cluster_table
from .columns import cluster_columns

__all__ = ["ClusterTableCache"]


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
