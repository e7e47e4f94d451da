"""The two CSV tables of the public contract.

``<stem>.calcifications.csv`` and ``<stem>.clusters.csv`` hold the columns of
``shared/INTERFACE.md`` in order (``slice``, ``z_mm`` first for 3-D); columns
added by the review workflow (morphology, annotator, ...) follow them.
Floats are written with Python's shortest round-tripping representation and
read back with ``float_precision="round_trip"``, so values survive exactly.
``cluster_id`` is -1 for a calcification in no cluster.

A CSV alone does not store the image shape, parameters or metadata. When a
sibling ``<stem>.detections.json`` exists, :func:`read_csv_detections` takes
them from it; otherwise the spacing is recovered from ``y_mm / row`` (and
``x_mm / col``, ``z_mm / slice``) and the shape is the bounding extent of the
positions (``max + 1``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_write_text
from ..columns import calc_columns, cluster_columns
from ..detections import Detections
from ._common import ExportError, normalize_calcifications, normalize_clusters

__all__ = ["CALC_SUFFIX", "CLUSTER_SUFFIX", "write_csv", "read_csv_detections",
           "frame_to_csv_text"]

CALC_SUFFIX = ".calcifications.csv"
# pandas >= 3 parses floats exactly by default (and deprecates the option)
_READ_KW = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
CLUSTER_SUFFIX = ".clusters.csv"


def frame_to_csv_text(df: pd.DataFrame) -> str:
    """CSV text of ``df`` with exact float round trip and ``\\n`` line ends."""
    buf = io.StringIO()
    # float_format=None -> repr(float), the shortest string that round-trips
    df.to_csv(buf, index=False, lineterminator="\n", float_format=None)
    return buf.getvalue()


def write_csv(det: Detections, calc_path, cluster_path, ndim: int) -> None:
    """Write the calcification and cluster tables (each atomically)."""
    calcs = normalize_calcifications(det.calcifications, ndim)
    clus = normalize_clusters(det.clusters, ndim)
    atomic_write_text(calc_path, frame_to_csv_text(calcs))
    atomic_write_text(cluster_path, frame_to_csv_text(clus))


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **_READ_KW)
    except FileNotFoundError:
        raise ExportError("file not found", path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ExportError(f"not a readable CSV table ({type(e).__name__})", path) from None


def siblings(path) -> tuple[Path, Path, str]:
    """(calcifications csv, clusters csv, stem) for either of the two files."""
    p = Path(path)
    name = p.name
    if name.endswith(CALC_SUFFIX):
        stem = name[: -len(CALC_SUFFIX)]
    elif name.endswith(CLUSTER_SUFFIX):
        stem = name[: -len(CLUSTER_SUFFIX)]
    else:
        raise ExportError(
            f"not a napari-calc table (expected a name ending in {CALC_SUFFIX} "
            f"or {CLUSTER_SUFFIX})", p)
    return p.with_name(stem + CALC_SUFFIX), p.with_name(stem + CLUSTER_SUFFIX), stem


def _infer_spacing(calcs: pd.DataFrame, clus: pd.DataFrame, ndim: int) -> tuple[float, ...]:
    pairs = [("row", "y_mm"), ("col", "x_mm")]
    if ndim == 3:
        pairs.insert(0, ("slice", "z_mm"))
    out = []
    for px, mm in pairs:
        num = np.concatenate([pd.to_numeric(t[mm], errors="coerce").to_numpy(float)
                              for t in (calcs, clus) if mm in t and len(t)] or [np.empty(0)])
        den = np.concatenate([pd.to_numeric(t[px], errors="coerce").to_numpy(float)
                              for t in (calcs, clus) if px in t and len(t)] or [np.empty(0)])
        ok = np.isfinite(num) & np.isfinite(den) & (np.abs(den) > 1e-9)
        out.append(float(np.median(num[ok] / den[ok])) if ok.any() else float("nan"))
    return tuple(out)


def read_csv_detections(path) -> Detections:
    """Read our calcification CSV (and its sibling cluster CSV) back.

    Parameters
    ----------
    path : str or os.PathLike
        ``<stem>.calcifications.csv`` or ``<stem>.clusters.csv``. The other
        table is loaded from the same folder when it exists (an absent
        cluster table means no clusters).

    Returns
    -------
    Detections
    """
    calc_p, clus_p, stem = siblings(path)
    if not calc_p.exists() and not clus_p.exists():
        raise ExportError("file not found", path)
    calcs = _read_table(calc_p) if calc_p.exists() else None
    clus = _read_table(clus_p) if clus_p.exists() else None
    ref = calcs if calcs is not None else clus
    ndim = 3 if "slice" in ref.columns else 2
    if calcs is None:
        calcs = pd.DataFrame({c: [] for c in calc_columns(ndim)})
    if clus is None:
        clus = pd.DataFrame({c: [] for c in cluster_columns(ndim)})
    try:
        calcs = normalize_calcifications(calcs, ndim)
        clus = normalize_clusters(clus, ndim)
    except Exception as e:
        raise ExportError(getattr(e, "reason", str(e)), calc_p if calcs is not None else clus_p) from None

    side = calc_p.with_name(stem + ".detections.json")
    if side.exists():
        from .json_io import read_json_header

        try:
            shape, spacing, params, metadata = read_json_header(side)
            return Detections(calcs, clus, spacing, shape, params, metadata)
        except ExportError:
            pass
    spacing = _infer_spacing(calcs, clus, ndim)
    axes = (["slice"] if ndim == 3 else []) + ["row", "col"]
    shape = []
    for a in axes:
        vals = pd.to_numeric(calcs[a], errors="coerce").to_numpy(float) if len(calcs) else np.empty(0)
        vals = vals[np.isfinite(vals)]
        shape.append(int(np.floor(vals.max())) + 1 if len(vals) else 0)
    metadata = {"export_source_path": os.fspath(calc_p)}
    return Detections(calcs, clus, spacing, tuple(shape), {}, metadata)
