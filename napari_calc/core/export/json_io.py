"""JSON export: ``<stem>.detections.json``.

Layout (``version`` 1)::

    {
      "format": "napari-calc detections",
      "version": 1,
      "software": {"name": "napari-calc", "version": "..."},
      "image": {<metadata subset>, "shape": [...], "spacing_mm": [...],
                "units": "mm", "laterality": ..., "view": ...},
      "parameters": {...},              # Detections.params
      "calcifications": [ {<CSV columns>, ...extra columns}, ... ],
      "clusters": [ {<CSV columns>, "centroid_mm": {"y":..,"x":..[, "z":..]},
                     "bounding_box": {"row_min", "row_max", "col_min", "col_max",
                                      "y_min_mm", "y_max_mm", "x_min_mm", "x_max_mm"
                                      [, "slice_min", "slice_max", "z_min_mm", "z_max_mm"]},
                     "calc_ids": [...], "laterality": ..., "view": ...}, ... ]
    }

``spacing_mm`` is ``(row_mm, col_mm)`` or ``(slice_mm, row_mm, col_mm)``.
The cluster bounding box encloses its member calcifications including their
radius (``diameter_mm / 2``), in pixels and in mm; without members it
collapses to the centroid. Missing values are ``null``. Floats are written
with Python's shortest round-tripping repr, so positions read back exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_write_text
from ..columns import calc_columns, cluster_columns
from ..detections import Detections
from ._common import (ExportError, jsonable, member_table, metadata_for_export,
                      normalize_calcifications, normalize_clusters, software_version)

__all__ = ["JSON_SUFFIX", "FORMAT_NAME", "detections_to_dict", "write_json",
           "read_json_detections", "read_json_header"]

JSON_SUFFIX = ".detections.json"
FORMAT_NAME = "napari-calc detections"
#: Keys of a cluster record that are derived (not table columns).
DERIVED_CLUSTER_KEYS = ("centroid_mm", "bounding_box", "calc_ids", "laterality", "view")
_IMAGE_KEYS = ("shape", "spacing_mm", "units")


def _records(df: pd.DataFrame) -> list[dict]:
    cols = list(df.columns)
    return [{c: jsonable(v) for c, v in zip(cols, row)}
            for row in df.itertuples(index=False, name=None)]


def _bbox(members: pd.DataFrame, cl: pd.Series, spacing, ndim: int) -> dict:
    row_mm, col_mm = float(spacing[-2]), float(spacing[-1])
    if members is not None and len(members):
        r = members["row"].to_numpy(float)
        c = members["col"].to_numpy(float)
        rad = pd.to_numeric(members["diameter_mm"], errors="coerce").fillna(0).to_numpy(float) / 2
        y = members["y_mm"].to_numpy(float)
        x = members["x_mm"].to_numpy(float)
    else:
        r, c, y, x = (np.array([float(cl[k])]) for k in ("row", "col", "y_mm", "x_mm"))
        rad = np.zeros(1)
    bb = {
        "row_min": float(np.min(r - rad / row_mm)), "row_max": float(np.max(r + rad / row_mm)),
        "col_min": float(np.min(c - rad / col_mm)), "col_max": float(np.max(c + rad / col_mm)),
        "y_min_mm": float(np.min(y - rad)), "y_max_mm": float(np.max(y + rad)),
        "x_min_mm": float(np.min(x - rad)), "x_max_mm": float(np.max(x + rad)),
    }
    if ndim == 3:
        if members is not None and len(members):
            s = members["slice"].to_numpy(float)
            z = members["z_mm"].to_numpy(float)
        else:
            s, z = np.array([float(cl["slice"])]), np.array([float(cl["z_mm"])])
        bb.update(slice_min=float(s.min()), slice_max=float(s.max()),
                  z_min_mm=float(z.min()), z_max_mm=float(z.max()))
    return bb


def detections_to_dict(det: Detections, ndim: int, metadata: dict, *,
                       deidentified: bool = False) -> dict:
    """The JSON document (a dict) for ``det``; ``metadata`` already processed."""
    calcs = normalize_calcifications(det.calcifications, ndim)
    clus = normalize_clusters(det.clusters, ndim)
    members = member_table(calcs)
    lat, view = metadata.get("laterality"), metadata.get("view")
    image = metadata_for_export(metadata, deidentified=deidentified)
    image.update(shape=[int(s) for s in det.image_shape],
                 spacing_mm=[float(s) for s in det.spacing_mm],
                 units="mm", laterality=jsonable(lat), view=jsonable(view))
    clusters = []
    for rec, (_, cl) in zip(_records(clus), clus.iterrows()):
        cid = int(cl["cluster_id"])
        m = members.get(cid)
        cen = {"y": rec["y_mm"], "x": rec["x_mm"]}
        if ndim == 3:
            cen["z"] = rec["z_mm"]
        rec.update(
            centroid_mm=cen,
            bounding_box=_bbox(m, cl, det.spacing_mm, ndim),
            calc_ids=[] if m is None else [int(i) for i in m["calc_id"]],
            laterality=jsonable(lat), view=jsonable(view),
        )
        clusters.append(rec)
    return {
        "format": FORMAT_NAME,
        "version": 1,
        "software": {"name": "napari-calc", "version": software_version()},
        "image": image,
        "parameters": jsonable(det.params or {}),
        "calcifications": _records(calcs),
        "clusters": clusters,
    }


def write_json(det: Detections, path, ndim: int, metadata: dict, *,
               deidentified: bool = False) -> None:
    """Write ``<stem>.detections.json`` atomically."""
    doc = detections_to_dict(det, ndim, metadata, deidentified=deidentified)
    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def _load(path) -> dict:
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ExportError("file not found", p) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"not valid JSON ({e.__class__.__name__})", p) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ExportError(f"not a napari-calc detections JSON (no \"format\": \"{FORMAT_NAME}\")", p)
    if doc.get("version") != 1:
        raise ExportError(f"unsupported napari-calc JSON version {doc.get('version')!r}", p)
    return doc


def read_json_header(path):
    """(shape, spacing_mm, params, metadata) of one of our JSON files."""
    doc = _load(path)
    image = dict(doc.get("image") or {})
    shape = tuple(int(s) for s in image.get("shape") or ())
    spacing = tuple(float(s) for s in image.get("spacing_mm") or ())
    metadata = {k: v for k, v in image.items() if k not in _IMAGE_KEYS}
    return shape, spacing, dict(doc.get("parameters") or {}), metadata


def read_json_detections(path) -> Detections:
    """Read ``<stem>.detections.json`` back into :class:`Detections`."""
    doc = _load(path)
    shape, spacing, params, metadata = read_json_header(path)
    ndim = len(shape) if len(shape) in (2, 3) else (
        3 if any("slice" in r for r in doc.get("calcifications", [])) else 2)
    calc_recs = doc.get("calcifications") or []
    clus_recs = [{k: v for k, v in r.items() if k not in DERIVED_CLUSTER_KEYS}
                 for r in doc.get("clusters") or []]
    calcs = pd.DataFrame.from_records(calc_recs) if calc_recs else \
        pd.DataFrame({c: [] for c in calc_columns(ndim)})
    clus = pd.DataFrame.from_records(clus_recs) if clus_recs else \
        pd.DataFrame({c: [] for c in cluster_columns(ndim)})
    try:
        calcs = normalize_calcifications(calcs, ndim)
        clus = normalize_clusters(clus, ndim)
    except Exception as e:
        raise ExportError(getattr(e, "reason", str(e)), path) from None
    for df in (calcs, clus):  # JSON null -> NaN for numeric columns
        for c in df.columns:
            if df[c].dtype == object and c != "status":
                conv = pd.to_numeric(df[c], errors="coerce")
                if conv.notna().sum() == df[c].notna().sum() and df[c].notna().any():
                    df[c] = conv
    return Detections(calcs, clus, spacing, shape, params, metadata)
