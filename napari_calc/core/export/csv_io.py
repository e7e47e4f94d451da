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
from ..columns import STATUSES, calc_columns, cluster_columns
from ..detections import Detections
from ..errors import InvalidParameterError
from ._common import ExportError, normalize_calcifications, normalize_clusters

__all__ = ["CALC_SUFFIX", "CLUSTER_SUFFIX", "write_csv", "read_csv_detections",
           "frame_to_csv_text", "clean_table", "read_table", "CALC_NUMERIC", "CLUSTER_NUMERIC"]

#: The numeric columns of the two tables (the contract's, whatever the order)
CALC_NUMERIC = ("calc_id", "slice", "row", "col", "z_mm", "y_mm", "x_mm", "diameter_mm", "contrast", "cnr",
                "score", "cluster_id")
CLUSTER_NUMERIC = ("cluster_id", "slice", "row", "col", "z_mm", "y_mm", "x_mm", "n_calcifications",
                   "max_extent_mm", "area_mm2", "score")

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


def _separator(path) -> tuple[str, str]:
    """``(sep, decimal)`` of a table: ``(";", ",")`` when its header line is
    separated by semicolons and holds no comma (what a spreadsheet saves as
    "CSV" where the decimal separator is a comma), else ``(",", ".")``."""
    with open(path, "rb") as f:
        head = f.read(65536)
    first = head.split(b"\n", 1)[0]
    if b";" in first and b"," not in first:
        return ";", ","
    return ",", "."


def read_table(path) -> pd.DataFrame:
    """One CSV table as a spreadsheet may have saved it.

    Comma-separated with decimal points, as napari-calc writes it, or
    semicolon-separated with decimal commas, as a spreadsheet saves "CSV"
    where the comma is the decimal separator (the two are told apart by
    the header line). A UTF-8 byte order mark is ignored. Floats are read
    exactly (round trip).

    Raises
    ------
    ExportError
        Missing, empty or unparsable file (one line naming it).
    """
    try:
        sep, decimal = _separator(path)
        return pd.read_csv(path, sep=sep, decimal=decimal, encoding="utf-8-sig", **_READ_KW)
    except FileNotFoundError:
        raise ExportError("file not found", path) from None
    except IsADirectoryError:
        raise ExportError("is a folder, not a CSV table", path) from None
    except pd.errors.EmptyDataError:
        raise ExportError("file is empty", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ExportError(f"not a readable CSV table ({type(e).__name__})", path) from None



def clean_table(df: pd.DataFrame, *, numeric, required=(), unique=(), path=None) -> pd.DataFrame:
    """A table as a spreadsheet saved it, checked and made uniform.

    Rows with no value at all are dropped (a spreadsheet's ",,,," line).
    The ``numeric`` columns present must hold numbers or nothing (text such
    as ``abc`` or a decimal comma is refused: it would silently become NaN),
    the ``required`` ones a number in every row, the ``unique`` ones no
    value twice. ``status``, when present, is read without case or
    surrounding spaces (``Accepted``), blank meaning ``candidate``; other
    values are refused.

    Raises
    ------
    InvalidParameterError
        One line naming the column, the data row (1 = first after the
        header) and the value.
    """
    import re

    df = df.dropna(how="all").reset_index(drop=True)
    for c in numeric:
        if c not in df.columns:
            continue
        raw = df[c]
        num = pd.to_numeric(raw, errors="coerce")
        blank = raw.isna() | raw.astype(str).str.strip().eq("")
        bad = np.flatnonzero((num.isna() & ~blank).to_numpy())
        if len(bad):
            v = str(raw.iloc[bad[0]]).strip()
            hint = " (a decimal comma? use a point)" if re.fullmatch(r"[-+]?\d+,\d+", v) else ""
            raise InvalidParameterError(f"column {c} is not numeric: {v!r} in data row {bad[0] + 1}{hint}", path)
        if c in required and blank.any():
            raise InvalidParameterError(
                f"column {c} is empty in data row {int(np.flatnonzero(blank.to_numpy())[0]) + 1}", path)
        df[c] = num
    for c in unique:
        if c in df.columns:
            dup = df[c].duplicated(keep=False).to_numpy() & df[c].notna().to_numpy()
            if dup.any():
                rows = np.flatnonzero(dup)[:2] + 1
                raise InvalidParameterError(
                    f"{c} {df[c].iloc[rows[0] - 1]:g} appears more than once (data rows {rows[0]} and "
                    f"{rows[1]})", path)
    if "status" in df.columns:
        st = df["status"].fillna("").astype(str).str.strip().str.lower()
        st = st.mask(st == "", "candidate")
        bad = np.flatnonzero(~st.isin(STATUSES).to_numpy())
        if len(bad):
            raise InvalidParameterError(
                f"status {str(df['status'].iloc[bad[0]]).strip()!r} in data row {bad[0] + 1} is not one of "
                f"{', '.join(STATUSES)}", path)
        df["status"] = st
    return df


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
    calcs = read_table(calc_p) if calc_p.exists() else None
    clus = read_table(clus_p) if clus_p.exists() else None
    ref = calcs if calcs is not None else clus
    ndim = 3 if "slice" in ref.columns else 2
    if calcs is None:
        calcs = pd.DataFrame({c: [] for c in calc_columns(ndim)})
    if clus is None:
        clus = pd.DataFrame({c: [] for c in cluster_columns(ndim)})
    where = (["slice", "z_mm"] if ndim == 3 else []) + ["row", "col", "y_mm", "x_mm"]
    try:
        calcs = clean_table(calcs, numeric=CALC_NUMERIC, required=["calc_id"] + where, unique=["calc_id"],
                            path=calc_p)
    except InvalidParameterError as e:
        raise ExportError(e.reason, calc_p) from None
    try:
        clus = clean_table(clus, numeric=CLUSTER_NUMERIC, required=["cluster_id"] + where,
                           unique=["cluster_id"], path=clus_p)
    except InvalidParameterError as e:
        raise ExportError(e.reason, clus_p) from None
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
        vals = np.concatenate([pd.to_numeric(t[a], errors="coerce").to_numpy(float)
                               for t in (calcs, clus) if len(t)] or [np.empty(0)])
        vals = vals[np.isfinite(vals)]
        shape.append(int(np.floor(vals.max())) + 1 if len(vals) else 0)
    metadata = {"export_source_path": os.fspath(calc_p)}
    return Detections(calcs, clus, spacing, tuple(shape), {}, metadata)
