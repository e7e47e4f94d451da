"""Helpers shared by the export writers and readers.

Nothing here is public API; see :mod:`napari_calc.core.export`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._json import jsonable  # noqa: F401  (re-exported for the exporters)
from ..columns import NO_CLUSTER, calc_columns, cluster_columns
from ..detections import Detections
from ..errors import InvalidParameterError, NapariCalcError

#: Columns holding integers (written without a decimal point when integral).
INT_COLUMNS = ("calc_id", "cluster_id", "n_calcifications")

#: Metadata keys that are always safe (no patient information) - used as the
#: allowlist of de-identified exports, and as the first keys written.
SAFE_METADATA_KEYS = (
    "modality", "laterality", "view", "presentation_intent", "photometric",
    "manufacturer", "manufacturer_model_name", "spacing_source",
    "intensity_transforms", "voi_window", "body_part_examined",
    "sop_class_uid", "study_instance_uid", "series_instance_uid",
    "sop_instance_uid", "frame_of_reference_uid",
    "image_position_patient", "image_orientation_patient", "frame_positions_patient",
)


class ExportError(NapariCalcError):
    """A file we are asked to read back is not one of our exports."""


def software_version() -> str:
    """napari-calc's version string, imported lazily."""
    try:
        import napari_calc

        v = getattr(napari_calc, "__version__", None)
        if v:
            return str(v)
    except Exception:  # pragma: no cover - package half-initialised
        pass
    try:
        from importlib.metadata import version

        return version("napari-calc")
    except Exception:
        return "unknown"


def ndim_of(det: Detections) -> int:
    """2 or 3: the image dimensionality of ``det``."""
    nd = len(det.image_shape) if det.image_shape else 0
    if nd not in (2, 3):
        nd = 3 if "slice" in det.calcifications.columns else 2
    return nd


def _as_int_if_integral(s: pd.Series) -> pd.Series:
    vals = pd.to_numeric(s, errors="coerce")
    arr = vals.to_numpy(dtype=float, na_value=np.nan)
    if len(arr) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return pd.Series(arr.astype(np.int64), index=s.index, name=s.name)
    return vals


def normalize_calcifications(df: pd.DataFrame, ndim: int, *, path=None) -> pd.DataFrame:
    """Contract columns in order, then any extra (review) columns.

    ``cluster_id`` missing values become -1; id columns become int64.
    """
    cols = calc_columns(ndim)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InvalidParameterError(
            f"calcification table lacks the column(s) {', '.join(missing)}", path)
    out = df[cols + [c for c in df.columns if c not in cols]].copy()
    out = out.reset_index(drop=True)
    cid = pd.to_numeric(out["cluster_id"], errors="coerce").fillna(NO_CLUSTER)
    out["cluster_id"] = cid
    for c in ("calc_id", "cluster_id", "slice", "row", "col"):
        if c in out.columns:
            out[c] = _as_int_if_integral(out[c])
    out["status"] = out["status"].fillna("candidate").astype(str) if len(out) else out["status"].astype(object)
    return out


def normalize_clusters(df: pd.DataFrame, ndim: int, *, path=None) -> pd.DataFrame:
    """Contract cluster columns in order, then any extras."""
    cols = cluster_columns(ndim)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InvalidParameterError(
            f"cluster table lacks the column(s) {', '.join(missing)}", path)
    out = df[cols + [c for c in df.columns if c not in cols]].copy()
    out = out.reset_index(drop=True)
    for c in ("cluster_id", "n_calcifications", "slice"):
        if c in out.columns:
            out[c] = _as_int_if_integral(out[c])
    return out


def metadata_for_export(metadata: dict, *, deidentified: bool) -> dict:
    """The metadata subset written to exports.

    When ``deidentified`` only :data:`SAFE_METADATA_KEYS` survive (the caller
    has already remapped UIDs); otherwise every key whose value is a plain
    scalar or a short list of scalars.
    """
    out: dict[str, Any] = {}
    for k in SAFE_METADATA_KEYS:
        if k in metadata and metadata[k] is not None:
            out[k] = jsonable(metadata[k])
    if deidentified:
        for k in ("deidentified", "deidentification_method"):
            if k in metadata:
                out[k] = jsonable(metadata[k])
        return out
    for k, v in metadata.items():
        if k in out or v is None:
            continue
        j = jsonable(v)
        if isinstance(j, (str, int, float, bool)):
            out[str(k)] = j
        elif isinstance(j, list) and len(j) <= 64 and all(
            isinstance(x, (str, int, float, bool, type(None))) or
            (isinstance(x, list) and len(x) <= 16) for x in j):
            out[str(k)] = j
        elif isinstance(j, dict) and len(j) <= 64:
            out[str(k)] = j
    return out


def check_not_source(paths, metadata: dict) -> None:
    """Refuse to write over the input image (``metadata['source_path']``)."""
    src = metadata.get("source_path") if metadata else None
    if not src:
        return
    srcp = Path(os.fspath(src))
    try:
        src_res = srcp.resolve()
    except OSError:  # pragma: no cover
        src_res = srcp.absolute()
    for p in paths:
        p = Path(p)
        same = False
        try:
            same = p.exists() and srcp.exists() and os.path.samefile(p, srcp)
        except OSError:
            same = False
        if same or p.resolve() == src_res:
            raise InvalidParameterError(
                "refusing to write an export over the input image", p)


def member_table(calcs: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Calcifications grouped by their cluster id (cluster -1 excluded)."""
    if not len(calcs):
        return {}
    cid = pd.to_numeric(calcs["cluster_id"], errors="coerce").fillna(NO_CLUSTER).astype(np.int64)
    return {int(k): g for k, g in calcs.groupby(cid.to_numpy()) if int(k) != NO_CLUSTER}


def cluster_outline_px(members: pd.DataFrame, cluster_row: pd.Series,
                       spacing_mm) -> tuple[str, np.ndarray]:
    """Outline of a cluster in pixel (row, col) coordinates.

    Returns ``("polygon", (K, 2))`` - the convex hull of the member centres,
    counter-clockwise, not closed - when there are at least 3 non-collinear
    members; otherwise ``("ellipse", (4, 2))``: the end points of the major
    then minor axis of an ellipse around the centroid. The major axis joins
    the two members (when there are two) extended by their radii; the
    minor axis is the larger member diameter (at least one pixel).
    """
    row_mm, col_mm = float(spacing_mm[-2]), float(spacing_mm[-1])
    pts = np.empty((0, 2))
    if members is not None and len(members):
        pts = members[["row", "col"]].to_numpy(dtype=float)
    if len(pts) >= 3:
        try:
            from scipy.spatial import ConvexHull

            # hull in mm so that anisotropic pixels do not change the hull
            mm = pts * [row_mm, col_mm]
            hull = ConvexHull(mm)
            return "polygon", pts[hull.vertices]
        except Exception:  # collinear / degenerate: fall through to ellipse
            pass
    cr, cc = float(cluster_row["row"]), float(cluster_row["col"])
    diam = 0.0
    if members is not None and len(members):
        diam = float(np.nanmax(pd.to_numeric(members["diameter_mm"], errors="coerce"))) \
            if members["diameter_mm"].notna().any() else 0.0
    r_mm = max(diam / 2.0, max(row_mm, col_mm))
    if len(pts) >= 2:
        mm = pts * [row_mm, col_mm]
        d = mm[:, None, :] - mm[None, :, :]
        dist = np.sqrt((d ** 2).sum(-1))
        i, j = np.unravel_index(np.argmax(dist), dist.shape)
        half = dist[i, j] / 2.0 + r_mm
        u = (mm[j] - mm[i]) / max(dist[i, j], 1e-12)
    else:
        half = r_mm
        u = np.array([0.0, 1.0])
    v = np.array([-u[1], u[0]])
    c_mm = np.array([cr * row_mm, cc * col_mm])
    ends_mm = np.array([c_mm - u * half, c_mm + u * half, c_mm - v * r_mm, c_mm + v * r_mm])
    return "ellipse", ends_mm / [row_mm, col_mm]
