"""npe2 writers: napari-calc result layers -> the core exports.

Writers (npe2 multi-layer signature ``(path, layer_data) -> list[str]``, with
``layer_data`` napari's ``(data, attributes, layer_type)`` tuples). Each takes
a calcifications Points layer and, optionally, its clusters Shapes layer, so
that *File > Save Selected Layers* offers every type whether the Points layer
is selected alone or with its clusters:

=================================  ==============  ==================================================
function                           layers          file(s)
=================================  ==============  ==================================================
``write_calcifications_csv``       points, shapes  ``<stem>.calcifications.csv`` + ``<stem>.clusters.csv``
``write_calcifications_json``      points, shapes  ``<stem>.detections.json``
``write_calcifications_markups``   points, shapes  ``<stem>.mrk.json`` (3D Slicer)
``write_calcifications_sr``        points, shapes  ``<stem>.sr.dcm`` (TID 1500)
``write_calcifications_cad_sr``    points, shapes  ``<stem>.cad-sr.dcm`` (Mammography CAD SR)
``write_detections``               points, shapes  one of the above, from the file name
                                                   (``.calcifications.csv``, ``.csv``,
                                                   ``.detections.json``, ``.json``, ``.mrk.json``,
                                                   ``.sr.dcm``, ``.cad-sr.dcm``)
=================================  ==============  ==================================================

and the single-layer ``write_clusters_csv(path, data, attributes)`` (a
clusters Shapes layer alone -> the cluster table only).

Layer -> :class:`~napari_calc.core.detections.Detections`: the Points
``features`` hold the calcification columns; positions come from the layer
``data`` (pixel coordinates), so points moved in napari are exported where
they now are (``y_mm = row * row_mm`` ...); points added with napari's tools
get a new ``calc_id``, status ``added`` and ``cluster_id`` -1. Spacing,
image shape, parameters and the source image metadata come from
``metadata["napari_calc"]`` (else spacing from ``scale``). Without a clusters
layer the cluster table is recomputed from the calcifications' ``cluster_id``
(:func:`napari_calc.core.cluster.cluster_table`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.columns import NO_CLUSTER, calc_columns, cluster_columns
from ..core.detections import Detections
from ..core.export import SUFFIXES, write_format
from .layers import clusters_of_features

__all__ = [
    "write_calcifications_csv",
    "write_calcifications_json",
    "write_calcifications_markups",
    "write_calcifications_sr",
    "write_calcifications_cad_sr",
    "write_clusters_csv",
    "write_detections",
    "detections_from_layer_data",
]

_GENERIC = {"csv": ".csv", "json": ".json", "mrk.json": ".json", "sr.dcm": ".dcm",
            "cad-sr.dcm": ".dcm"}


def _nc_meta(attributes: dict) -> dict:
    md = (attributes or {}).get("metadata") or {}
    return dict(md.get("napari_calc") or {})


def _spacing(attributes: dict, ndim: int) -> tuple[float, ...]:
    sp = _nc_meta(attributes).get("spacing_mm")
    if sp is None:
        sp = (attributes or {}).get("scale")
    if sp is None:
        sp = (1.0,) * ndim
    sp = tuple(float(s) for s in sp)
    if len(sp) < ndim:
        sp = (1.0,) * (ndim - len(sp)) + sp
    return sp[-ndim:]


def detections_from_layer_data(data, attributes: dict, shapes_attributes: dict | None = None
                               ) -> Detections:
    """Build :class:`Detections` from a Points layer's data/attributes.

    Parameters
    ----------
    data : array_like
        ``(N, 2)`` (row, col) or ``(N, 3)`` (slice, row, col) pixel coordinates.
    attributes : dict
        The layer state napari passes to writers (``features``, ``scale``,
        ``metadata``, ...).
    shapes_attributes : dict, optional
        The clusters Shapes layer state; its ``features`` become the cluster
        table.

    Returns
    -------
    Detections
    """
    coords = np.asarray(data, dtype=float)
    ndim = int(attributes.get("ndim") or (coords.shape[1] if coords.ndim == 2 else 2))
    if coords.size == 0:
        coords = coords.reshape(0, ndim)
    ndim = coords.shape[1]
    sp = _spacing(attributes, ndim)
    feats = attributes.get("features")
    feats = pd.DataFrame(feats).reset_index(drop=True) if feats is not None else pd.DataFrame()
    n = len(coords)
    if len(feats) != n:
        feats = feats.reindex(range(n))
    calcs = feats.copy()
    axes = (["slice", "row", "col"] if ndim == 3 else ["row", "col"])
    mm = {"slice": "z_mm", "row": "y_mm", "col": "x_mm"}
    for i, ax in enumerate(axes):
        new = coords[:, i]
        old = pd.to_numeric(calcs[ax], errors="coerce").to_numpy(float) if ax in calcs else \
            np.full(n, np.nan)
        moved = ~(np.isfinite(old) & (np.abs(old - new) <= 1e-9))
        # pixel indices, as the contract has them (a point dragged in napari
        # lands between pixels; the review model rounds the same way)
        vals = np.where(moved, np.rint(new), old)
        calcs[ax] = vals
        mm_old = pd.to_numeric(calcs[mm[ax]], errors="coerce").to_numpy(float) if mm[ax] in calcs \
            else np.full(n, np.nan)
        calcs[mm[ax]] = np.where(moved | ~np.isfinite(mm_old), vals * sp[i], mm_old)
    # ids, statuses and clusters of points added in napari
    ids = pd.to_numeric(calcs["calc_id"], errors="coerce") if "calc_id" in calcs else \
        pd.Series(np.nan, index=calcs.index)
    missing = ids.isna() | ids.duplicated()
    start = int(np.nanmax(ids[~missing])) + 1 if (~missing).any() else 1
    ids[missing] = np.arange(start, start + int(missing.sum()))
    calcs["calc_id"] = ids.astype(np.int64)
    status = calcs["status"] if "status" in calcs else pd.Series(None, index=calcs.index, dtype=object)
    calcs["status"] = status.where(status.notna() & (status.astype(str) != ""), "added").astype(str)
    cid = pd.to_numeric(calcs["cluster_id"], errors="coerce") if "cluster_id" in calcs else \
        pd.Series(np.nan, index=calcs.index)
    calcs["cluster_id"] = cid.fillna(NO_CLUSTER).astype(np.int64)
    if missing.any():
        # points added with napari's own tools: what the Review panel's "Add"
        # gives them (score 1, the default diameter), not empty cells that
        # evaluate and the score threshold pass over
        from ..core.review import DEFAULT_ADDED_DIAMETER_MM

        for c, v in (("score", 1.0), ("diameter_mm", DEFAULT_ADDED_DIAMETER_MM)):
            cur = pd.to_numeric(calcs[c], errors="coerce") if c in calcs else pd.Series(np.nan, index=calcs.index)
            calcs[c] = cur.mask(missing.to_numpy() & cur.isna().to_numpy(), v)
    for c in calc_columns(ndim):
        if c not in calcs:
            calcs[c] = np.nan
    calcs = calcs[calc_columns(ndim) + [c for c in calcs.columns if c not in calc_columns(ndim)]]

    md = _nc_meta(attributes)
    clusters = None
    if shapes_attributes is not None:
        sf = shapes_attributes.get("features")
        if sf is not None and all(c in sf for c in cluster_columns(ndim)):
            clusters = clusters_of_features(sf)[cluster_columns(ndim)]
    if clusters is None:
        from ..core.cluster import cluster_table

        clusters = cluster_table(calcs, sp, ndim=ndim)
    shape = tuple(int(s) for s in (md.get("image_shape") or ()))
    if len(shape) != ndim:
        shape = tuple(int(np.floor(np.nanmax(coords[:, i]))) + 1 if n else 0 for i in range(ndim))
    return Detections(calcifications=calcs.reset_index(drop=True), clusters=clusters,
                      spacing_mm=sp, image_shape=shape, params=dict(md.get("params") or {}),
                      metadata=dict(md.get("image_metadata") or {}))


def _target(path, fmt: str) -> Path:
    """``path`` named as the reader, ``evaluate`` and the CLI expect: its stem
    plus the format's suffix. A generic suffix from the save dialog
    (``a.csv``, ``j.dcm``) or another format's (``k.mrk.json`` given to the
    JSON writer) is replaced: saved as ``a.csv`` the table did not reopen."""
    p = Path(path)
    low = p.name.lower()
    if low.endswith(SUFFIXES[fmt]):
        return p
    for suf in sorted(set(SUFFIXES.values()) | set(_GENERIC.values()), key=len, reverse=True):
        if low.endswith(suf):
            return p.with_name(p.name[: -len(suf)] + SUFFIXES[fmt])
    return p.with_name(p.name + SUFFIXES[fmt])


def _write_layers(path, layer_data, fmt: str) -> list[str]:
    """The Points layer (and the Shapes layer, when one is given) -> ``fmt``."""
    points = [ld for ld in layer_data if ld[2] == "points"]
    shapes = [ld for ld in layer_data if ld[2] == "shapes"]
    if len(points) != 1 or len(shapes) > 1:
        from ..core.errors import InvalidParameterError

        raise InvalidParameterError("select one calcifications Points layer (and its clusters "
                                    "Shapes layer) to export", path)
    data, attrs, _ = points[0]
    det = detections_from_layer_data(data, attrs, shapes[0][1] if shapes else None)
    return [str(p) for p in write_format(det, _target(path, fmt), fmt)]


def write_calcifications_csv(path: str, layer_data: list) -> list[str]:
    """Calcifications (+ clusters) -> ``<stem>.calcifications.csv`` and ``<stem>.clusters.csv``."""
    return _write_layers(path, layer_data, "csv")


def write_calcifications_json(path: str, layer_data: list) -> list[str]:
    """Calcifications (+ clusters) -> ``<stem>.detections.json``."""
    return _write_layers(path, layer_data, "json")


def write_calcifications_markups(path: str, layer_data: list) -> list[str]:
    """Calcifications (+ clusters) -> 3D Slicer ``<stem>.mrk.json``."""
    return _write_layers(path, layer_data, "mrk.json")


def write_calcifications_sr(path: str, layer_data: list) -> list[str]:
    """Calcifications (+ clusters) -> DICOM SR TID 1500 ``<stem>.sr.dcm``."""
    return _write_layers(path, layer_data, "sr.dcm")


def write_calcifications_cad_sr(path: str, layer_data: list) -> list[str]:
    """Calcifications (+ clusters) -> Mammography CAD SR ``<stem>.cad-sr.dcm``."""
    return _write_layers(path, layer_data, "cad-sr.dcm")


def write_clusters_csv(path: str, data: Any, attributes: dict) -> list[str]:
    """Clusters Shapes layer -> ``<stem>.clusters.csv`` (INTERFACE columns first)."""
    from ..core.atomic import atomic_write_text
    from ..core.export._common import check_not_source, normalize_clusters
    from ..core.export.csv_io import frame_to_csv_text

    feats = clusters_of_features(attributes.get("features"))
    ndim = 3 if "slice" in feats.columns else 2
    if not len(feats.columns):
        feats = pd.DataFrame({c: [] for c in cluster_columns(ndim)})
    extra = [c for c in feats.columns if c not in cluster_columns(ndim) and c != "label"]
    table = normalize_clusters(feats[[c for c in feats.columns if c != "label"]], ndim)
    table = table[cluster_columns(ndim) + extra]
    # always <stem>.clusters.csv: given "a.calcifications.csv" (or "a.csv") it
    # replaced the calcification table, or wrote a file that does not reopen
    p = _target(path, "clusters.csv")
    check_not_source([p], _nc_meta(attributes).get("image_metadata") or {})
    atomic_write_text(p, frame_to_csv_text(table))
    return [str(p)]


def _format_of(path) -> str:
    low = Path(path).name.lower()
    for fmt, suf in sorted(SUFFIXES.items(), key=lambda kv: -len(kv[1])):
        if low.endswith(suf):
            return "csv" if fmt == "clusters.csv" else fmt
    if low.endswith(".json"):
        return "json"
    if low.endswith(".dcm"):
        return "sr.dcm"
    return "csv"


def write_detections(path: str, layer_data: list) -> list[str]:
    """Multi-layer writer: calcifications Points (+ clusters Shapes) -> one export.

    Parameters
    ----------
    path : str
        Destination; its suffix picks the format (CSV when unknown).
    layer_data : list of (data, attributes, layer_type)
        napari's FullLayerData tuples.

    Returns
    -------
    list of str
        Written files.
    """
    return _write_layers(path, layer_data, _format_of(path))
