"""The review model: triage, annotate and edit detections, with undo/redo
and a crash-safe autosave. No Qt, no napari: the review panel is a thin view
on :class:`ReviewSession`.

A session holds the current calcification table (the public columns plus
:data:`REVIEW_COLUMNS`) and recomputes ``cluster_id`` and the cluster table
after every edit. Every edit is an *action*: a small delta recording the old
and new values of the rows it touches, which makes undo and redo exact and
lets the journal (see :mod:`napari_calc.core.review_sidecar`) be replayed.

Examples
--------
>>> import pandas as pd
>>> from napari_calc.core.detections import Detections
>>> calcs = pd.DataFrame({"calc_id": [0, 1, 2], "row": [100, 120, 110], "col": [100, 110, 130],
...                       "y_mm": [10.0, 12.0, 11.0], "x_mm": [10.0, 11.0, 13.0],
...                       "diameter_mm": 0.3, "contrast": 1.0, "cnr": 3.0, "score": 0.9,
...                       "cluster_id": -1, "status": "candidate"})
>>> det = Detections(calcs, pd.DataFrame(), spacing_mm=(0.1, 0.1), image_shape=(1000, 1000))
>>> s = ReviewSession(det, annotator="ada")
>>> len(s.detections.clusters)
1
>>> s.reject([1])
>>> len(s.detections.clusters), s.row(1)["status"], s.row(1)["annotator"]
(0, 'rejected', 'ada')
>>> s.undo()
True
>>> len(s.detections.clusters)
1
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import fields as dc_fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .columns import NO_CLUSTER, STATUSES, calc_columns
from .detect import DetectionParams
from .detections import Detections
from .errors import InvalidParameterError, NapariCalcError
from .cluster import cluster_calcifications
from .review_cluster import ClusterTableCache
from .review_sidecar import (
    COMPACT_EVERY,
    FORMAT,
    VERSION,
    SidecarError,
    SidecarWriter,
    check_unlocked,
    column_values,
    decode_table,
    encode_table,
    frame_from_arrays,
    jsonable,
    read_sidecar,
    sidecar_path_for,
)

__all__ = [
    "MORPHOLOGIES",
    "DISTRIBUTIONS",
    "SUSPICION",
    "REVIEW_COLUMNS",
    "ACTIONS",
    "ReviewSession",
    "reviewed_mask",
    "carry_over",
    "sidecar_path_for",
    "SidecarError",
]

#: BI-RADS calcification morphologies (plus "" = not set).
MORPHOLOGIES = ("punctate", "amorphous", "coarse heterogeneous", "fine pleomorphic",
                "fine linear/branching")
#: BI-RADS distributions (plus "" = not set).
DISTRIBUTIONS = ("diffuse", "regional", "grouped", "linear", "segmental")
#: Suspicion flag (plus "" = not set).
SUSPICION = ("benign", "suspicious")
#: Columns the review adds after the contract columns (all strings, "" when
#: unset; timestamps ISO-8601 UTC).
REVIEW_COLUMNS = ["morphology", "distribution", "suspicion", "annotator", "reviewed_at", "created_at"]
#: Names passed to :meth:`ReviewSession.subscribe` callbacks.
ACTIONS = ("accept", "reject", "reset", "add", "delete", "move", "labels", "undo", "redo",
           "threshold")

_LABEL_CHOICES = {"morphology": MORPHOLOGIES, "distribution": DISTRIBUTIONS, "suspicion": SUSPICION}
_INT_COLS = ("calc_id", "row", "col", "cluster_id", "slice")
_STR_COLS = ("status", *REVIEW_COLUMNS)
#: Actions kept for undo (older ones are forgotten).
UNDO_LIMIT = 10000
#: Diameter given to an added calcification when none is given (clipped to
#: the detection's diameter range).
DEFAULT_ADDED_DIAMETER_MM = 0.3


def now_utc() -> str:
    """The current time, ISO-8601 UTC with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- clustering

def _params_of(params) -> DetectionParams:
    if isinstance(params, DetectionParams):
        return params
    names = {f.name for f in dc_fields(DetectionParams)}
    return DetectionParams(**{k: v for k, v in dict(params or {}).items() if k in names})


# --------------------------------------------------------------------------- session

#: A reviewed calcification and a candidate of a new run are the same when
#: they are at most half the reviewed one's diameter apart, and never less
#: than this (mm); in a stack they must also be at most one slice apart.
CARRY_OVER_MIN_MM = 0.2


def reviewed_mask(calcs: pd.DataFrame) -> np.ndarray:
    """Rows a reviewer decided on or labelled."""
    st = calcs["status"].astype(str).to_numpy()
    out = st != "candidate"
    for c in _LABEL_CHOICES:
        if c in calcs.columns:
            out |= calcs[c].fillna("").astype(str).to_numpy() != ""
    return out


def carry_over(previous: pd.DataFrame, detections: Detections) -> tuple[Detections, dict]:
    """Put the review of an earlier run onto a new detection of the same image.

    Re-running detection (other parameters, another version) must not throw
    away a review. Each reviewed row of ``previous`` (accepted, rejected,
    added or labelled) is matched to the nearest free candidate of the new
    run within max(:data:`CARRY_OVER_MIN_MM`, half its diameter), closest
    pairs first; the candidate takes its status (``added`` becomes
    ``accepted``: the detector now finds it; but a row that is ``added`` in
    the new table too stays ``added``: a reviewer's, not the detector's) and
    review columns. Accepted or
    added calcifications without a match are kept as ``added`` (the reviewer
    said they are there); rejected or only labelled ones without a match are
    dropped, since the new run does not propose them. The unreviewed rows
    are matched too (after the reviewed ones), only to pass their
    ``cluster_id`` on, so that the session keeps the cluster numbers.

    Parameters
    ----------
    previous : DataFrame
        The earlier review's calcification table.
    detections : Detections
        The new run.

    Returns
    -------
    Detections
        The new run with the review carried over (a copy).
    dict
        ``matched``, ``kept_as_added`` and ``dropped`` row counts.
    """
    from scipy.spatial import cKDTree

    nd = detections.ndim
    new = detections.calcifications.copy()
    for c in REVIEW_COLUMNS:
        if c not in new.columns:
            new[c] = ""
        new[c] = new[c].fillna("").astype(object)
    new["status"] = new["status"].astype(object)
    summary = {"matched": 0, "kept_as_added": 0, "dropped": 0}
    if not len(previous) or not reviewed_mask(previous).any():
        return _with_calcs(detections, new), summary
    # every earlier row is matched (reviewed ones first), so that clusters can
    # keep their numbers: a matched row's earlier cluster_id is the hint the
    # session names the new clusters after (see ReviewSession._stable_ids)
    old = previous.reset_index(drop=True)
    rev = reviewed_mask(old)
    hint = pd.to_numeric(old["cluster_id"], errors="coerce").fillna(NO_CLUSTER).to_numpy(np.int64)
    new["cluster_id"] = NO_CLUSTER
    yx = ["y_mm", "x_mm"]
    radius = np.maximum(CARRY_OVER_MIN_MM, 0.5 * pd.to_numeric(old["diameter_mm"], errors="coerce")
                        .fillna(0).to_numpy(float))
    pairs = []
    if len(new):
        p_old, p_new = old[yx].to_numpy(float), new[yx].to_numpy(float)
        s_old = old["slice"].to_numpy(np.int64) if nd == 3 else None
        s_new = new["slice"].to_numpy(np.int64) if nd == 3 else None
        for i, js in enumerate(cKDTree(p_new).query_ball_point(p_old, radius)):
            for j in js:
                if nd == 3 and abs(s_old[i] - s_new[j]) > 1:
                    continue
                pairs.append((not rev[i], float(np.hypot(*(p_old[i] - p_new[j]))), i, j))
    pairs.sort()  # reviewed rows first, then closest first; ties by row order
    used_old, used_new = set(), set()
    copy_cols = ["status", *REVIEW_COLUMNS]
    for _, _, i, j in pairs:
        if i in used_old or j in used_new:
            continue
        used_old.add(i)
        used_new.add(j)
        new.at[j, "cluster_id"] = hint[i]
        if not rev[i]:
            continue
        was_added = new.at[j, "status"] == "added"
        for c in copy_cols:
            v = old[c].iloc[i] if c in old.columns else ""
            v = "" if not isinstance(v, str) else v
            if c == "status" and was_added and v in ("accepted", "added"):
                v = "added"  # a reviewer's row in the new table too: not a detector finding
            elif c == "status" and v == "added":
                v = "accepted"  # the detector finds it now
            elif c == "created_at" and was_added and not v:
                continue  # an added row keeps its creation time
            new.at[j, c] = v
        if new.at[j, "status"] != "added":
            new.at[j, "created_at"] = ""  # a detector row: reset and accept keep it one
    summary["matched"] = sum(1 for i in used_old if rev[i])
    keep = [i for i in range(len(old)) if rev[i] and i not in used_old
            and str(old["status"].iloc[i]) in ("accepted", "added")]
    summary["dropped"] = int(rev.sum()) - summary["matched"] - len(keep)
    if keep:
        start = int(max(new["calc_id"].max() if len(new) else -1,
                        previous["calc_id"].max() if len(previous) else -1) + 1)
        rows = {}
        for c in new.columns:
            if c in old.columns and (c in calc_columns(nd) or c in REVIEW_COLUMNS):
                rows[c] = old[c].to_numpy()[keep]
            elif new[c].dtype.kind in "iufb":
                rows[c] = np.full(len(keep), np.nan)
            else:
                rows[c] = [""] * len(keep)
        rows["calc_id"] = np.arange(start, start + len(keep))
        rows["status"] = ["added"] * len(keep)
        # an added row has its creation time (reset and accept keep it added)
        def _text(col, i):
            v = old[col].iloc[i] if col in old.columns else ""
            return v if isinstance(v, str) else ""

        rows["created_at"] = [_text("created_at", i) or _text("reviewed_at", i) or now_utc() for i in keep]
        rows["score"] = np.ones(len(keep))  # as an added calcification
        rows["contrast"] = rows["cnr"] = np.full(len(keep), np.nan)
        rows["cluster_id"] = hint[keep]
        new = pd.concat([new, pd.DataFrame(rows)[list(new.columns)]], ignore_index=True)
        summary["kept_as_added"] = len(keep)
    return _with_calcs(detections, new), summary


def _with_calcs(det: Detections, calcs: pd.DataFrame) -> Detections:
    """``det`` with another calcification table (the session reclusters)."""
    return Detections(calcifications=calcs, clusters=det.clusters, spacing_mm=tuple(det.spacing_mm),
                      image_shape=tuple(det.image_shape), params=dict(det.params or {}),
                      metadata=dict(det.metadata or {}), extra=None)


def _detector_rows(df: pd.DataFrame) -> set:
    """(slice,) row, col of the detector's rows (all but ``added``)."""
    if not len(df):
        return set()
    keep = df["status"].astype(str).to_numpy() != "added"
    cols = [c for c in ("slice", "row", "col") if c in df.columns]
    return set(map(tuple, df.loc[keep, cols].to_numpy(np.int64).tolist()))


#: The parameters a review clusters with.
_CLUSTER_PARAMS = ("cluster_radius_mm", "min_cluster_size", "cluster_min_score")


def _other_clustering(current: DetectionParams, params) -> bool:
    """``params`` (of a new run) set other clustering parameters than the
    review's; a run that does not say (a table without parameters) does not."""
    params = dict(params or {})
    return any(k in params and params[k] != getattr(current, k) for k in _CLUSTER_PARAMS)


def _same_candidates(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """The detector's rows are at the same pixels in both."""
    return _detector_rows(a) == _detector_rows(b)


def _newer_file_review(det: Detections, restored: pd.DataFrame, sidecar: Path) -> str | None:
    """The exported file ``det`` was read from (``metadata["export_path"]``)
    when it was written after the autosave ``sidecar`` and its review
    (statuses, labels, rows) differs from the autosave's ``restored`` table;
    else None (a table with no review in it, such as a detection run written
    again; the same review; or an older file: the autosave is the newer work)."""
    src = det.metadata.get("export_path")
    try:
        if not src or os.path.getmtime(src) <= os.path.getmtime(sidecar):
            return None
    except OSError:
        return None
    a = det.calcifications
    if "calc_id" not in a.columns or "status" not in a.columns:
        return None
    cols = ["status"] + [c for c in REVIEW_COLUMNS[:3] if c in a.columns or c in restored.columns]

    def review(t: pd.DataFrame) -> dict:
        t = t.reindex(columns=["calc_id"] + cols)
        vals = t[cols].astype(object).where(t[cols].notna(), "").astype(str)
        return dict(zip(pd.to_numeric(t["calc_id"], errors="coerce").tolist(), map(tuple, vals.to_numpy())))

    mine = review(a)
    if all(v[0] in ("", "candidate") and not any(v[1:]) for v in mine.values()):
        return None  # no review in the file (a detection run written again): the autosave's stands
    return None if mine == review(restored) else os.fspath(src)


def run_key(calcs: pd.DataFrame) -> str:
    """A digest of a detection run's candidate positions: a review started on
    a run is restored for that run even after rows were deleted or moved."""
    import hashlib

    return hashlib.sha256(repr(sorted(_detector_rows(calcs))).encode()).hexdigest()


def backup_path(sidecar) -> Path:
    """Where an earlier review is kept: ``<sidecar>.bak``, or ``.bak.2``,
    ``.bak.3``, ... when that is taken (a backup is never overwritten)."""
    sidecar = Path(sidecar)
    cand = sidecar.with_name(sidecar.name + ".bak")
    k = 2
    while cand.exists():
        cand = sidecar.with_name(f"{sidecar.name}.bak.{k}")
        k += 1
    return cand


class ReviewSession:
    """Review state of one image's detections, with undo/redo and autosave.

    Parameters
    ----------
    detections : Detections
        What to review (typically from :func:`napari_calc.detect`). Not
        modified: the session works on a copy. Columns from
        :data:`REVIEW_COLUMNS` already present (a reloaded review) are kept;
        any further columns follow them (numeric ones as float, NaN for
        added calcifications; others as strings). ``detections.extra`` is
        not carried (rows change with add/delete).
    sidecar : str or os.PathLike, optional
        Autosave file (see :func:`sidecar_path_for`). It is created (an
        existing one is kept as ``<sidecar>.bak``) with a snapshot of the
        detections, and every action is appended to it durably. ``None``:
        no autosave.
    annotator : str
        Name recorded in the rows each action touches.
    params : dict or DetectionParams, optional
        Clustering parameters (default: ``detections.params``).
    fsync : bool
        Force every journal line to disk (default True).

    Attributes
    ----------
    detections : Detections
        The current state. ``calcifications`` and ``clusters`` are replaced
        by new DataFrames after every change (never mutate them).
    annotator : str
        Settable; recorded from the next action on.
    history : list of dict
        One summary per journal entry (``seq``, ``op``, ``time``,
        ``annotator``, ``ids``), oldest first.
    threshold : float
        Score threshold (see :meth:`set_threshold`).
    """

    def __init__(self, detections: Detections, *, sidecar=None, annotator: str = "", params=None,
                 fsync: bool = True, _restoring: bool = False):
        if not isinstance(detections, Detections):
            raise InvalidParameterError("ReviewSession needs a Detections object")
        self._ndim = detections.ndim
        self._params = _params_of(detections.params if params is None else params)
        self.annotator = str(annotator or "")
        self.threshold = float(self._params.cluster_min_score)
        self._undo: list[dict] = []
        self._redo: list[dict] = []
        self.history: list[dict] = []
        self._seq = 0
        self._subscribers: list[Callable[[str], None]] = []
        self._take: tuple | None = None
        # every cluster this session has shown: id -> its member calc_ids (see _stable_ids)
        self._cluster_members: dict[int, np.ndarray] | None = None
        self._tables = ClusterTableCache(self._ndim, tuple(detections.spacing_mm))
        self._pos_cache: tuple | None = None
        self._order_cache: tuple | None = None
        df = self._normalise(detections.calcifications, detections)
        #: :func:`run_key` of the detection the review started on (``None``: not known).
        self.run_key: str | None = None if _restoring else run_key(df)
        self.detections = Detections(
            calcifications=df, clusters=detections.clusters, spacing_mm=tuple(detections.spacing_mm),
            image_shape=tuple(detections.image_shape), params=dict(detections.params),
            metadata=dict(detections.metadata), extra=None)
        self._writer: SidecarWriter | None = None
        self.sidecar = None if sidecar is None else Path(sidecar)
        #: Where the sidecar found at creation was moved (``None``: there was none).
        self.backup: Path | None = None
        #: Why the last rewrite of the journal failed (see :meth:`_maybe_compact`).
        self.compact_error: str | None = None
        #: What :meth:`start_over` carried over (``None``: nothing was).
        self.carried_over: dict | None = None
        #: The file whose review, newer than the autosave and different from
        #: it, :meth:`open_or_create` kept (the autosave is in ``backup``).
        self.newer_file: str | None = None
        if not _restoring:
            self._recluster(force=True, fresh=True)
            self._remember_clusters(self._df)  # the clusters as the review starts
        if self.sidecar is not None and not _restoring:
            self._writer = SidecarWriter(self.sidecar, fsync=fsync)
            check_unlocked(self.sidecar)
            self.backup = None
            if self.sidecar.exists() and self.sidecar.stat().st_size > 0:
                self.backup = backup_path(self.sidecar)
                os.replace(self.sidecar, self.backup)
            self._writer.write_header(self._header())

    # ------------------------------------------------------------------ construction helpers
    def _normalise(self, calcs: pd.DataFrame, det: Detections) -> pd.DataFrame:
        cols = calc_columns(self._ndim)
        missing = [c for c in cols if c not in calcs.columns]
        if missing:
            raise InvalidParameterError(f"calcification table lacks column(s) {', '.join(missing)}")
        out = {}
        for c in cols:
            v = calcs[c].to_numpy()
            if c in _INT_COLS:
                vv = pd.to_numeric(calcs[c], errors="coerce").fillna(NO_CLUSTER if c == "cluster_id" else 0)
                out[c] = np.round(vv.to_numpy(float)).astype(np.int64)
            elif c == "status":
                out[c] = column_values([str(x) if isinstance(x, str) else "candidate" for x in v], "object")
            else:
                out[c] = pd.to_numeric(calcs[c], errors="coerce").to_numpy(np.float64)
        for c in REVIEW_COLUMNS:
            if c in calcs.columns:
                out[c] = column_values([x if isinstance(x, str) else "" for x in calcs[c].to_numpy()], "object")
            else:
                out[c] = column_values([""] * len(calcs), "object")
        extras = [c for c in calcs.columns if c not in out and isinstance(c, str)]
        for c in extras:  # further feature columns ride along (NaN / "" for added rows)
            ser = calcs[c]
            if ser.dtype.kind in "iufb":
                out[c] = ser.to_numpy(np.float64)
            else:
                out[c] = column_values([x if isinstance(x, str) else "" for x in ser.to_numpy()], "object")
        df = frame_from_arrays(out, cols + REVIEW_COLUMNS + extras)
        bad = sorted(set(df["status"]) - set(STATUSES))
        if bad:
            raise InvalidParameterError(f"unknown status value(s) {bad}; allowed: {list(STATUSES)}")
        if df["calc_id"].duplicated().any():
            raise InvalidParameterError("calc_id values are not unique")
        return df

    def _image_info(self) -> dict:
        d = self.detections
        return {"source_path": jsonable(d.metadata.get("source_path")), "shape": list(d.image_shape),
                "spacing_mm": [float(s) for s in d.spacing_mm]}

    def _header(self) -> dict:
        d = self.detections
        return {
            "format": FORMAT, "version": VERSION, "written_at": now_utc(),
            "image": self._image_info(),
            "metadata": jsonable(d.metadata),
            "params": jsonable(d.params),
            "cluster_params": jsonable(self._params.__dict__),
            "threshold": self.threshold,
            "clusters_at_start": {str(k): v.tolist() for k, v in (self._cluster_members or {}).items()},
            "run_key": self.run_key,
            "seq": self._seq,
            "detections": encode_table(self._df),
            "undo": self._undo, "redo": self._redo, "history": self.history,
        }

    # ------------------------------------------------------------------ restore
    @classmethod
    def restore(cls, sidecar, detections: Detections | None = None, *, annotator: str = "",
                fsync: bool = True, read_only: bool = False) -> "ReviewSession":
        """Rebuild a session from its sidecar and continue autosaving to it.

        Parameters
        ----------
        sidecar : path-like
            The journal.
        detections : Detections, optional
            The image's detections, for the metadata only (the rows come
            from the sidecar). Must be of the same image shape.
        annotator : str
            Annotator for the actions from now on.
        read_only : bool
            Only read the review (e.g. to count its decisions): the file is
            neither locked nor opened for writing, a review of this process
            open on it stays open, and the session autosaves nothing.

        Raises
        ------
        SidecarError
            (a :class:`NapariCalcError`, message naming the file) when the
            file is missing, not a review sidecar, or corrupt anywhere but in
            its last line (a partial last line is an action lost in a crash;
            it is dropped).
        """
        path = Path(sidecar)
        if not read_only:
            check_unlocked(path)
        header, actions, good, dropped = read_sidecar(path)
        try:
            image = header["image"]
            shape = tuple(int(s) for s in image["shape"])
            spacing = tuple(float(s) for s in image["spacing_mm"])
            table = decode_table(header["detections"])
            meta = dict(header.get("metadata") or {})
            params = dict(header.get("params") or {})
            cparams = _params_of(header.get("cluster_params") or params)
            threshold = float(header.get("threshold", cparams.cluster_min_score))
            seq0 = int(header.get("seq", 0))
            undo, redo = list(header.get("undo") or []), list(header.get("redo") or [])
            history = list(header.get("history") or [])
        except (KeyError, TypeError, ValueError) as e:
            raise SidecarError(f"review sidecar header is corrupt ({type(e).__name__}: {e})", path) from None
        if detections is not None:
            if tuple(detections.image_shape) != shape:
                raise SidecarError(f"review sidecar is for an image of shape {shape}, not "
                                   f"{tuple(detections.image_shape)}", path)
            meta = {**meta, **dict(detections.metadata)}
        nd = len(shape)
        det = Detections(calcifications=table, clusters=pd.DataFrame(), spacing_mm=spacing,
                         image_shape=shape, params=params, metadata=meta)
        try:
            self = cls(det, sidecar=path, annotator=annotator, params=cparams, fsync=fsync, _restoring=True)
        except NapariCalcError as e:
            raise SidecarError(f"review sidecar snapshot is invalid: {e.reason}", path) from None
        assert self._ndim == nd
        self.threshold = threshold
        self._seq = seq0
        self._undo, self._redo, self.history = undo, redo, history
        self.run_key = header.get("run_key") if isinstance(header.get("run_key"), str) else None
        start = header.get("clusters_at_start")
        if isinstance(start, dict):
            try:
                self._cluster_members = {int(k): np.asarray(v, dtype=np.int64) for k, v in start.items()}
            except (TypeError, ValueError) as e:
                raise SidecarError(f"review sidecar header is corrupt (clusters_at_start: {e})", path) from None
        else:  # a sidecar from before stable cluster ids: relative to its snapshot
            self._remember_clusters(self._df)
        df = self._df.copy()
        for k, a in enumerate(actions):
            last = k == len(actions) - 1
            try:
                # the last line may be rejected: replay it on a copy
                df = self._replay(df.copy() if last else df, a)
            except (KeyError, TypeError, ValueError, IndexError, NapariCalcError) as e:
                if last and not dropped:
                    # an unusable final line is a lost action, like a partial one
                    dropped = True
                    actions = actions[:-1]
                    good = None
                    break
                raise SidecarError(f"review sidecar is corrupt at action {a.get('seq', '?')} "
                                   f"({type(e).__name__}: {e})", path) from None
        if good is None:  # recompute the valid prefix without the rejected final line
            raw = path.read_bytes()
            good = len(b"\n".join(raw.split(b"\n")[: len(actions) + 1])) + 1
        self.detections.calcifications = df
        self._pos_cache = None
        self._recluster(force=True, fresh=True)
        self.restored_dropped_last_line = dropped
        if read_only:
            self.sidecar = None  # nothing is written
            return self
        self._writer = SidecarWriter(path, fsync=fsync)
        self._writer.open_existing(good, len(actions))
        return self

    @classmethod
    def open_or_create(cls, detections: Detections, sidecar, *, annotator: str = "",
                       fsync: bool = True) -> "ReviewSession":
        """Restore the review of this image if its sidecar exists, else start one.

        A sidecar of another image (different shape, spacing or file name)
        is kept as ``<sidecar>.bak`` and a new review starts. A corrupt
        sidecar raises :class:`SidecarError` (it is never overwritten).
        """
        path = Path(sidecar)
        if path.exists() and path.stat().st_size > 0:
            header, _, _, _ = read_sidecar(path)
            if cls._matches(header, detections):
                old = cls.restore(path, detections, annotator=annotator, fsync=fsync)
                # the run the review started on (deletions and moves since do not
                # make it another run), or the table as the review left it
                same_run = (old.run_key is not None and old.run_key == run_key(detections.calcifications)) \
                    or _same_candidates(old._df, detections.calcifications)
                if same_run and not _other_clustering(old._params, detections.params):
                    newer = _newer_file_review(detections, old._df, path)
                    if newer is None:
                        return old
                    # a table edited after the autosave (in a spreadsheet, by
                    # a script): what was opened is shown, the autosave kept
                    old.close()
                    fresh = cls(detections, sidecar=path, annotator=annotator, fsync=fsync)
                    fresh.newer_file = newer
                    return fresh
                # another run on this image (other parameters, another version):
                # its candidates, with this review carried over
                previous = old._df
                old.close()
                return cls.start_over(previous, detections, path, annotator=annotator, fsync=fsync)
        return cls(detections, sidecar=path, annotator=annotator, fsync=fsync)

    @classmethod
    def start_over(cls, previous: pd.DataFrame, detections: Detections, sidecar=None, *,
                   annotator: str = "", fsync: bool = True) -> "ReviewSession":
        """A session on a new run of the image, with the review of ``previous``
        carried over (see :func:`carry_over`); ``carried_over`` says what was.
        The earlier sidecar is kept as :func:`backup_path` names it."""
        det, summary = carry_over(previous, detections)
        self = cls(det, sidecar=sidecar, annotator=annotator, fsync=fsync)
        self.carried_over = summary
        return self

    @staticmethod
    def _matches(header: dict, det: Detections) -> bool:
        """The sidecar is of this image (shape, spacing, file name)."""
        image = header.get("image") or {}
        try:
            if tuple(int(s) for s in image["shape"]) != tuple(det.image_shape):
                return False
            sp = [float(s) for s in image["spacing_mm"]]
        except (KeyError, TypeError, ValueError):
            return False
        if len(sp) != len(det.spacing_mm) or not np.allclose(sp, det.spacing_mm, rtol=1e-6, atol=0):
            return False
        a, b = image.get("source_path"), det.metadata.get("source_path")
        if a and b:  # by name: a study folder moved or mounted elsewhere keeps its reviews
            return os.path.basename(os.fspath(a).rstrip("/")) == os.path.basename(os.fspath(b).rstrip("/"))
        return True

    # ------------------------------------------------------------------ accessors
    @property
    def _df(self) -> pd.DataFrame:
        return self.detections.calcifications

    @property
    def params(self) -> DetectionParams:
        """The clustering parameters in use."""
        return self._params

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_ids(self) -> list[int]:
        """calc_ids of the action :meth:`undo` would undo ([] when none)."""
        return [int(i) for i in self._undo[-1].get("ids") or ()] if self._undo else []

    @property
    def redo_ids(self) -> list[int]:
        """calc_ids of the action :meth:`redo` would redo ([] when none)."""
        return [int(i) for i in self._redo[-1].get("ids") or ()] if self._redo else []

    def _lookup(self, df: pd.DataFrame):
        """(calc_id array, sorted?) of a frame, cached for the current one."""
        c = self._pos_cache
        if c is not None and c[0] is df:
            return c[1], c[2]
        ids = df["calc_id"].to_numpy()
        srt = bool(len(ids) < 2 or np.all(ids[1:] > ids[:-1]))
        if df is self._df:
            self._pos_cache = (df, ids, srt)
        return ids, srt

    def _positions(self, ids, df: pd.DataFrame | None = None) -> np.ndarray:
        """Row positions of calc_ids (binary search when, as usual, calc_id
        is increasing; a hash lookup otherwise)."""
        df = self._df if df is None else df
        all_ids, srt = self._lookup(df)
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if srt:
            pos = np.searchsorted(all_ids, ids)
            pos[pos >= len(all_ids)] = 0
            ok = (all_ids[pos] == ids) if len(all_ids) else np.zeros(len(ids), bool)
            pos = np.where(ok, pos, -1)
        else:
            pos = pd.Index(all_ids).get_indexer(ids)
        if (pos < 0).any():
            missing = ids[pos < 0][:10].tolist()
            raise InvalidParameterError(f"unknown calc_id(s): {missing}")
        return pos

    @staticmethod
    def _ids(calc_ids) -> list[int]:
        if calc_ids is None:
            return []
        if np.isscalar(calc_ids):
            calc_ids = [calc_ids]
        out = []
        seen = set()
        for c in np.asarray(list(calc_ids)).ravel().tolist():
            if isinstance(c, float) and not c.is_integer():
                raise InvalidParameterError(f"calc_id {c} is not an integer")
            c = int(c)
            if c not in seen:
                seen.add(c)
                out.append(c)
        return out

    def row(self, calc_id: int) -> dict:
        """One calcification's row as a dict."""
        pos = self._positions([calc_id])[0]
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self._df.iloc[pos].items()}

    def cluster_members(self, cluster_id: int) -> np.ndarray:
        """calc_ids of the calcifications in a cluster."""
        df = self._df
        return df.loc[df["cluster_id"] == int(cluster_id), "calc_id"].to_numpy()

    def visible_mask(self) -> np.ndarray:
        """Per row of ``detections.calcifications``: score at or above the
        threshold, or accepted/added (rejected ones stay visible when their
        score passes, so they can be seen and undone)."""
        df = self._df
        return ((df["score"].to_numpy() >= self.threshold)
                | df["status"].isin(("accepted", "added")).to_numpy())

    def visible_ids(self) -> np.ndarray:
        """calc_ids of the rows :meth:`visible_mask` selects."""
        return self._df["calc_id"].to_numpy()[self.visible_mask()]

    # ------------------------------------------------------------------ navigation
    def _order(self) -> np.ndarray:
        df = self._df
        c = self._order_cache
        if c is not None and c[0] is df:
            return c[1]
        order = np.lexsort((df["calc_id"].to_numpy(), -df["score"].to_numpy(float)))
        self._order_cache = (df, order)
        return order

    def next_id(self, current_id=None, *, direction: int = +1, status_filter=None,
                visible_only: bool = True) -> int | None:
        """The next (``direction=+1``) or previous (-1) calcification in score
        order (highest first, ties by calc_id).

        Parameters
        ----------
        current_id : int or None
            Where we are; ``None`` starts from the first (or last) one. An id
            that no longer exists or does not pass the filter still counts by
            its place in the order when it exists.
        direction : {+1, -1}
            Next (+1) or previous (-1).
        status_filter : str or iterable of str, optional
            Only these statuses (e.g. ``"candidate"`` to jump to the next
            unreviewed one).
        visible_only : bool
            Skip rows below the score threshold (see :meth:`visible_mask`).

        Returns
        -------
        int or None
            None when there is no further one.
        """
        if direction not in (1, -1):
            raise InvalidParameterError("direction must be +1 or -1")
        df = self._df
        order = self._order()
        ok = np.ones(len(df), dtype=bool)
        if status_filter is not None:
            sf = [status_filter] if isinstance(status_filter, str) else list(status_filter)
            ok &= df["status"].isin(sf).to_numpy()
        if visible_only:
            ok &= self.visible_mask()
        ok_sorted = ok[order]
        ids_sorted = df["calc_id"].to_numpy()[order]
        if current_id is None:
            cand = np.flatnonzero(ok_sorted)
            if not len(cand):
                return None
            return int(ids_sorted[cand[0] if direction > 0 else cand[-1]])
        where = np.flatnonzero(ids_sorted == int(current_id))
        if not len(where):
            return self.next_id(None, direction=direction, status_filter=status_filter,
                                visible_only=visible_only)
        k = int(where[0])
        rng = np.flatnonzero(ok_sorted[k + 1:]) + k + 1 if direction > 0 else np.flatnonzero(ok_sorted[:k])
        if not len(rng):
            return None
        return int(ids_sorted[rng[0] if direction > 0 else rng[-1]])

    def next_cluster(self, current_cluster_id=None, *, direction: int = +1) -> int | None:
        """The next (or previous) cluster in score order (highest first, ties
        by cluster_id); ``None`` when there is none further."""
        cl = self.detections.clusters
        if cl is None or cl.empty:
            return None
        order = np.lexsort((cl["cluster_id"].to_numpy(), -cl["score"].to_numpy(float)))
        ids = cl["cluster_id"].to_numpy()[order].astype(int)
        if current_cluster_id is None or int(current_cluster_id) not in ids:
            return int(ids[0] if direction > 0 else ids[-1])
        k = int(np.flatnonzero(ids == int(current_cluster_id))[0]) + (1 if direction > 0 else -1)
        return int(ids[k]) if 0 <= k < len(ids) else None

    # ------------------------------------------------------------------ events
    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(action_name)`` after every change; returns an
        unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe():
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, name: str) -> None:
        for cb in list(self._subscribers):
            cb(name)

    # ------------------------------------------------------------------ actions
    def _new_action(self, op: str, ids, changes: list[dict]) -> dict:
        return {"op": op, "time": now_utc(), "annotator": self.annotator, "ids": list(ids),
                "changes": changes}

    def _set_change(self, ids: list[int], new: dict[str, Any]) -> dict:
        """A 'set' change: columns to new values (scalar or per-id list)."""
        pos = self._positions(ids)
        df = self._df
        cols = {}
        for c, v in new.items():
            old = df[c].to_numpy()[pos]
            vals = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v] * len(ids)
            cols[c] = {"old": jsonable(old.tolist()), "new": jsonable(vals)}
        return {"kind": "set", "ids": list(ids), "cols": cols}

    def _commit(self, action: dict) -> None:
        """Journal (durably), apply, push on the undo stack, notify."""
        self._seq += 1
        action["seq"] = self._seq
        try:
            if self._writer is not None:
                self._writer.append(action)
        except BaseException:
            self._seq -= 1
            raise
        self._set_df(self._apply(self._df.copy(), action["changes"], inverse=False))
        self._undo.append(action)
        if len(self._undo) > UNDO_LIMIT:
            del self._undo[: len(self._undo) - UNDO_LIMIT]
        self._redo.clear()
        self._log(action)
        self._maybe_compact()
        self._emit(action["op"])

    def _log(self, entry: dict) -> None:
        ids = entry.get("ids")
        h = {"seq": entry["seq"], "op": entry["op"], "time": entry.get("time", ""),
             "annotator": entry.get("annotator", "")}
        if ids is not None:
            h["ids"] = ids if len(ids) <= 50 else ids[:50] + ["..."]
        if "value" in entry:
            h["value"] = entry["value"]
        if "target" in entry:
            h["target"] = entry["target"]
        self.history.append(h)

    def _stamp(self, extra: dict | None = None) -> dict:
        d = {"annotator": self.annotator, "reviewed_at": now_utc()}
        if extra:
            d.update(extra)
        return d

    def _status_action(self, op: str, calc_ids, target: str) -> None:
        ids = self._ids(calc_ids)
        if not ids:
            return
        pos = self._positions(ids)
        created = self._df["created_at"].to_numpy()[pos]
        if target == "accepted":
            new = ["added" if c else "accepted" for c in created]
        elif target == "candidate":
            new = ["added" if c else "candidate" for c in created]
        else:
            new = [target] * len(ids)
        ch = self._set_change(ids, {"status": new, **self._stamp()})
        self._commit(self._new_action(op, ids, [ch]))

    def accept(self, calc_ids) -> None:
        """Mark calcifications accepted (added ones stay ``"added"``)."""
        self._status_action("accept", calc_ids, "accepted")

    def reject(self, calc_ids) -> None:
        """Mark calcifications rejected (they leave their clusters)."""
        self._status_action("reject", calc_ids, "rejected")

    def reset(self, calc_ids) -> None:
        """Back to ``"candidate"`` (``"added"`` for ones added in review);
        labels are kept."""
        self._status_action("reset", calc_ids, "candidate")

    def _check_point(self, row, col, slice_) -> tuple[int, int, int | None]:
        shape = self.detections.image_shape
        try:
            r, c = int(round(float(row))), int(round(float(col)))
        except (TypeError, ValueError):
            raise InvalidParameterError(f"position ({row}, {col}) is not numeric") from None
        if not (0 <= r < shape[-2] and 0 <= c < shape[-1]):
            raise InvalidParameterError(f"position (row {r}, col {c}) is outside the image "
                                        f"({shape[-2]}x{shape[-1]})")
        s = None
        if self._ndim == 3:
            if slice_ is None:
                raise InvalidParameterError("a 3-D image needs the slice of the point")
            s = int(round(float(slice_)))
            if not (0 <= s < shape[0]):
                raise InvalidParameterError(f"slice {s} is outside the stack (0-{shape[0] - 1})")
        elif slice_ not in (None, 0):
            raise InvalidParameterError("a 2-D image has no slices")
        return r, c, s

    def _geometry(self, r: int, c: int, s: int | None) -> dict:
        sp = self.detections.spacing_mm
        g = {"row": r, "col": c, "y_mm": r * float(sp[-2]), "x_mm": c * float(sp[-1])}
        if s is not None:
            g["slice"] = s
            g["z_mm"] = s * float(sp[0])
        return g

    @staticmethod
    def _check_labels(labels: dict) -> dict:
        out = {}
        for k, v in labels.items():
            if k not in _LABEL_CHOICES:
                raise InvalidParameterError(f"unknown label {k!r}; labels are {', '.join(_LABEL_CHOICES)}")
            if v is None:
                continue
            v = str(v)
            if v != "" and v not in _LABEL_CHOICES[k]:
                raise InvalidParameterError(f"{k} {v!r} is not one of {', '.join(_LABEL_CHOICES[k])} (or '')")
            out[k] = v
        return out

    def add(self, row, col, slice=None, *, diameter_mm=None, **labels) -> int:
        """Add a calcification the detector missed.

        Parameters
        ----------
        row, col : float
            Pixel position (rounded to the nearest pixel).
        slice : int, optional
            Slice (3-D images only, required there).
        diameter_mm : float, optional
            Default :data:`DEFAULT_ADDED_DIAMETER_MM` clipped to the
            detection's diameter range.
        **labels
            ``morphology``, ``distribution``, ``suspicion``.

        Returns
        -------
        int
            The new calc_id (one more than the largest ever used here).
        """
        r, c, s = self._check_point(row, col, slice)
        lab = self._check_labels(labels)
        p = self._params
        if diameter_mm is None:
            diameter_mm = min(max(DEFAULT_ADDED_DIAMETER_MM, p.min_diameter_mm), p.max_diameter_mm)
        diameter_mm = float(diameter_mm)
        if not (math.isfinite(diameter_mm) and diameter_mm > 0):
            raise InvalidParameterError(f"diameter_mm must be > 0, got {diameter_mm}")
        df = self._df
        ids_now = df["calc_id"].to_numpy()
        new_id = int(max(ids_now.max() if len(ids_now) else -1, self._max_id_seen) + 1)
        t = now_utc()
        rec = {c_: (float("nan") if df[c_].dtype.kind == "f" else "") for c_ in df.columns}
        rec.update(self._geometry(r, c, s))
        rec.update(calc_id=new_id, diameter_mm=diameter_mm, contrast=float("nan"), cnr=float("nan"),
                   score=1.0, cluster_id=NO_CLUSTER, status="added",
                   annotator=self.annotator, reviewed_at=t, created_at=t, **lab)
        data = {k: [jsonable(rec[k])] for k in df.columns}
        ch = {"kind": "insert", "pos": [len(df)], "data": data}
        self._commit(self._new_action("add", [new_id], [ch]))
        return new_id

    @property
    def _max_id_seen(self) -> int:
        """Largest calc_id in the state or in the undo/redo stacks (so an id
        is never reused by an add after an undone add)."""
        m = -1
        for a in (*self._undo, *self._redo):
            for ch in a["changes"]:
                if ch["kind"] in ("insert", "remove"):
                    m = max(m, max(ch["data"]["calc_id"], default=-1))
        return m

    def delete(self, calc_ids) -> None:
        """Remove calcifications (undoable). For detector candidates prefer
        :meth:`reject`, which keeps the record of the decision."""
        ids = self._ids(calc_ids)
        if not ids:
            return
        pos = np.sort(self._positions(ids))
        df = self._df
        data = {k: jsonable(df[k].to_numpy()[pos].tolist()) for k in df.columns}
        ch = {"kind": "remove", "pos": pos.tolist(), "data": data}
        self._commit(self._new_action("delete", df["calc_id"].to_numpy()[pos].tolist(), [ch]))

    def move(self, calc_id, row, col, slice=None) -> None:
        """Move a calcification to another pixel (its mm position follows)."""
        ids = self._ids(calc_id)
        if len(ids) != 1:
            raise InvalidParameterError("move takes exactly one calc_id")
        cur_slice = None
        if self._ndim == 3 and slice is None:
            cur_slice = self.row(ids[0])["slice"]
        r, c, s = self._check_point(row, col, slice if slice is not None else cur_slice)
        ch = self._set_change(ids, {**self._geometry(r, c, s), **self._stamp()})
        self._commit(self._new_action("move", ids, [ch]))

    def set_labels(self, calc_ids, *, morphology=None, distribution=None, suspicion=None) -> None:
        """Set BI-RADS labels; ``None`` leaves a label as it is, ``""`` clears it.

        Raises
        ------
        InvalidParameterError
            A value not in :data:`MORPHOLOGIES` / :data:`DISTRIBUTIONS` /
            :data:`SUSPICION`.
        """
        lab = self._check_labels(dict(morphology=morphology, distribution=distribution,
                                      suspicion=suspicion))
        ids = self._ids(calc_ids)
        if not ids or not lab:
            return
        ch = self._set_change(ids, {**lab, **self._stamp()})
        self._commit(self._new_action("labels", ids, [ch]))

    def set_threshold(self, score_threshold: float) -> None:
        """Set the score threshold: candidates below it are hidden from
        :meth:`visible_ids` / navigation and take no part in clustering
        (accepted and added ones always do; rejected ones never). A view
        setting: saved, but not an undoable action."""
        t = float(score_threshold)
        if not math.isfinite(t):
            raise InvalidParameterError(f"score threshold must be finite, got {score_threshold}")
        if t == self.threshold:
            return
        self._seq += 1
        entry = {"op": "threshold", "seq": self._seq, "time": now_utc(), "annotator": self.annotator,
                 "value": t}
        try:
            if self._writer is not None:
                self._writer.append(entry)
        except BaseException:
            self._seq -= 1
            raise
        self.threshold = t
        self._log(entry)
        self._recluster()
        self._maybe_compact()
        self._emit("threshold")

    def _undo_redo(self, op: str) -> bool:
        src, dst = (self._undo, self._redo) if op == "undo" else (self._redo, self._undo)
        if not src:
            return False
        self._seq += 1
        target = src[-1]
        entry = {"op": op, "seq": self._seq, "time": now_utc(), "annotator": self.annotator,
                 "target": target["seq"]}
        try:
            if self._writer is not None:
                self._writer.append(entry)
        except BaseException:
            self._seq -= 1
            raise
        src.pop()
        self._set_df(self._apply(self._df.copy(), target["changes"], inverse=(op == "undo")))
        dst.append(target)
        self._log(entry)
        self._maybe_compact()
        self._emit(op)
        return True

    def undo(self) -> bool:
        """Undo the last action; False when there is nothing to undo."""
        return self._undo_redo("undo")

    def redo(self) -> bool:
        """Redo the last undone action; False when there is nothing to redo."""
        return self._undo_redo("redo")

    # ------------------------------------------------------------------ applying deltas
    def _apply(self, df: pd.DataFrame, changes: list[dict], *, inverse: bool) -> pd.DataFrame:
        seq = reversed(changes) if inverse else changes
        for ch in seq:
            kind = ch["kind"]
            if kind == "set":
                pos = self._positions(ch["ids"], df)
                for c, ov in ch["cols"].items():
                    if c not in df.columns:
                        raise KeyError(c)
                    arr = df[c].to_numpy(copy=True)
                    vals = column_values(ov["old" if inverse else "new"], str(arr.dtype))
                    if len(vals) != len(pos):
                        raise ValueError("value count differs from id count")
                    arr[pos] = vals
                    df[c] = pd.Series(arr, index=df.index, dtype=arr.dtype, copy=False)
            elif (kind == "insert") != inverse:  # insert, or undo of remove
                df = self._insert(df, ch["pos"], ch["data"])
            elif kind in ("insert", "remove"):  # remove, or undo of insert
                df = self._remove(df, ch["pos"], ch["data"]["calc_id"])
            else:
                raise ValueError(f"unknown change kind {kind!r}")
        return df

    @staticmethod
    def _insert(df: pd.DataFrame, pos: list[int], data: dict) -> pd.DataFrame:
        """Insert rows so that they end up at positions ``pos`` (ascending)."""
        pos = np.asarray(pos, dtype=np.int64)
        at = pos - np.arange(len(pos))  # indices in the frame before insertion
        if len(pos) and (at.min() < 0 or at.max() > len(df) or np.any(np.diff(pos) <= 0)):
            raise ValueError("insert positions out of range")
        if set(data) != set(df.columns):
            raise ValueError("inserted rows have other columns")
        if df["calc_id"].isin(data["calc_id"]).any():
            raise ValueError("inserted calc_id already present")
        out = {}
        for c in df.columns:
            arr = df[c].to_numpy()
            out[c] = np.insert(arr, at, column_values(data[c], str(arr.dtype)))
        return frame_from_arrays(out, df.columns)

    @staticmethod
    def _remove(df: pd.DataFrame, pos: list[int], ids: list[int]) -> pd.DataFrame:
        pos = np.asarray(pos, dtype=np.int64)
        if len(pos) and (pos.min() < 0 or pos.max() >= len(df)):
            raise ValueError("remove positions out of range")
        if not np.array_equal(df["calc_id"].to_numpy()[pos], np.asarray(ids, dtype=np.int64)):
            raise ValueError("removed rows are not the recorded ones")
        keep = np.ones(len(df), dtype=bool)
        keep[pos] = False
        return df.loc[keep].reset_index(drop=True)

    def _replay(self, df: pd.DataFrame, a: dict) -> pd.DataFrame:
        """Apply one journal line during restore (no clustering, no journal)."""
        seq = int(a["seq"])
        if seq != self._seq + 1:
            raise ValueError(f"sequence number {seq} follows {self._seq}")
        op = a["op"]
        self.detections.calcifications = df  # _positions needs the current frame
        if op == "threshold":
            self.threshold = float(a["value"])
        elif op in ("undo", "redo"):
            src, dst = (self._undo, self._redo) if op == "undo" else (self._redo, self._undo)
            if not src or int(src[-1]["seq"]) != int(a.get("target", src[-1]["seq"])):
                raise ValueError(f"{op} does not match the recorded stack")
            df = self._apply(df, src[-1]["changes"], inverse=(op == "undo"))
            dst.append(src.pop())
        elif op in ACTIONS:
            df = self._apply(df, a["changes"], inverse=False)
            self._undo.append(a)
            if len(self._undo) > UNDO_LIMIT:
                del self._undo[: len(self._undo) - UNDO_LIMIT]
            self._redo.clear()
        else:
            raise ValueError(f"unknown action {op!r}")
        self._seq = seq
        self._log(a)
        return df

    # ------------------------------------------------------------------ clustering
    def _set_df(self, df: pd.DataFrame) -> None:
        self.detections.calcifications = df
        self._pos_cache = None
        self._recluster(fresh=True)

    def _cluster_take(self, df: pd.DataFrame) -> np.ndarray:
        st = df["status"].to_numpy()
        return (st != "rejected") & ((df["score"].to_numpy(float) >= self.threshold)
                                     | (st == "accepted") | (st == "added"))

    def _recluster(self, force: bool = False, fresh: bool = False) -> None:
        """Recompute ``cluster_id`` and the cluster table (skipped when the
        set of clustered points and their positions did not change)."""
        df = self._df
        take = self._cluster_take(df)
        cols = ["z_mm", "y_mm", "x_mm"] if self._ndim == 3 else ["y_mm", "x_mm"]
        key_ids = df["calc_id"].to_numpy()[take]
        pts = df.loc[take, cols].to_numpy(float)
        key = (key_ids.tobytes(), pts.tobytes())
        if not force and self._take is not None and key == self._take:
            return  # same clustered points: labels and table unchanged
        labels = cluster_calcifications(pts, radius_mm=self._params.cluster_radius_mm,
                                     min_size=int(self._params.min_cluster_size))
        cid = np.full(len(df), NO_CLUSTER, dtype=np.int64)
        cid[take] = labels
        cid = self._stable_ids(cid, df)
        if not np.array_equal(cid, df["cluster_id"].to_numpy()):
            if not fresh:  # callers may hold the current frame: replace, never mutate
                df = df.copy()
                self.detections.calcifications = df
                self._pos_cache = None
            df["cluster_id"] = cid
        self.detections.clusters = self._tables.table(df)
        self._take = key

    def _stable_ids(self, cid: np.ndarray, df: pd.DataFrame) -> np.ndarray:
        """Cluster labels renamed so that a cluster keeps its id through edits.

        Each cluster takes the id of the cluster the review started with
        (see :meth:`_remember_clusters`) it shares the most calcifications
        with, largest overlaps first, each id once; the others get ids above
        those, in the order of their first calcification. Rejecting a member
        of cluster #0 no longer renumbers #1 to #0, and undoing the rejection
        that dissolved a cluster brings back its id. A function of the
        starting clusters and the current table only, so a replayed journal,
        a compacted one and a session without autosave agree.
        """
        ids = df["calc_id"].to_numpy()
        if self._cluster_members is None:  # what the table came with (a detection)
            self._remember_clusters(df)
        known = self._cluster_members
        labels = np.unique(cid[cid >= 0])
        if not len(labels):
            return cid
        sel = cid >= 0
        pairs = []
        if known:  # (count, known id, label) of the calcifications they share, vectorised
            kid = np.concatenate([np.full(len(m), k, dtype=np.int64) for k, m in known.items()])
            kcalc = np.concatenate([np.asarray(m, dtype=np.int64) for m in known.values()])
            o = np.argsort(kcalc, kind="stable")
            kcalc, kid = kcalc[o], kid[o]
            c_ids, c_lab = ids[sel].astype(np.int64), cid[sel]
            at = np.clip(np.searchsorted(kcalc, c_ids), 0, len(kcalc) - 1)
            hit = kcalc[at] == c_ids
            if hit.any():
                both, n = np.unique(np.column_stack([kid[at[hit]], c_lab[hit]]), axis=0, return_counts=True)
                pairs = sorted(zip((-n).tolist(), both[:, 0].tolist(), both[:, 1].tolist()))
        # most shared first; then the smaller id
        name: dict[int, int] = {}
        taken = set()
        for _, old_id, k in pairs:
            if k not in name and old_id not in taken:
                name[k] = old_id
                taken.add(old_id)
        nxt = max(known, default=-1) + 1
        first = {int(k): ids[cid == k].min() for k in labels if int(k) not in name}
        for k in sorted(first, key=first.get):  # the others, by their first calcification
            name[k] = nxt
            nxt += 1
        lut = np.full(int(labels.max()) + 1, NO_CLUSTER, dtype=np.int64)
        for k, v in name.items():
            lut[k] = v
        out = cid.copy()
        out[sel] = lut[cid[sel]]
        return out

    def _remember_clusters(self, df: pd.DataFrame) -> None:
        """The clusters ids are kept relative to: those the review started
        with. Saved in the sidecar's header (``clusters_at_start``), so that
        a restored session names its clusters as the live one did."""
        ids, cid = df["calc_id"].to_numpy(), df["cluster_id"].to_numpy()
        self._cluster_members = {int(k): ids[cid == k] for k in np.unique(cid[cid >= 0])}

    # ------------------------------------------------------------------ sidecar
    def _maybe_compact(self) -> None:
        """Rewrite the journal as a snapshot now and then. Called after an
        action is journalled and applied: a failed rewrite (a folder no
        longer writable, a full disk) must not report that action as failed.
        The journal stays complete and appendable; the rewrite is tried again
        after another :data:`COMPACT_EVERY` actions, and
        ``compact_error`` says why it failed (``None`` once it works)."""
        w = self._writer
        if w is not None and w.lines_since_header >= COMPACT_EVERY:
            try:
                self.compact()
                self.compact_error = None
            except SidecarError as e:
                self.compact_error = str(e)
                w.lines_since_header = 0  # try again later

    def compact(self) -> None:
        """Rewrite the sidecar as one fresh snapshot (atomic rename)."""
        if self._writer is not None:
            self._writer.write_header(self._header())

    def move_to(self, sidecar) -> None:
        """Autosave to ``sidecar`` from now on, the whole review with it.

        The table, the undo and redo stacks and the history go into one
        snapshot there, so undo reaches back past the move. A file already
        there is kept as :func:`backup_path` names it (``backup`` says
        where). The file at the old place is closed as it was, complete.
        ``None``: stop autosaving (undo still works in this session).

        Raises
        ------
        SidecarError
            The new file cannot be written; the session goes on saving
            where it did, and a file that was there is put back.
        """
        old = self._writer
        if sidecar is None:
            if old is not None:
                old.close()
            self._writer, self.sidecar, self.backup = None, None, None
            return
        new = Path(sidecar)
        if self.sidecar is not None and old is not None and not old.closed and \
                os.path.abspath(new) == os.path.abspath(self.sidecar):
            return
        check_unlocked(new)
        writer = SidecarWriter(new, fsync=old.fsync if old is not None else True)
        backup = None
        try:
            if new.exists() and new.stat().st_size > 0:
                backup = backup_path(new)
                os.replace(new, backup)
        except OSError as e:
            raise SidecarError(f"cannot keep the review saved there: {e.strerror or e}", new) from None
        try:
            writer.write_header(self._header())
        except SidecarError:
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.replace(backup, new)
            raise
        if old is not None:
            old.close()
        self._writer, self.sidecar, self.backup = writer, new, backup

    def close(self) -> None:
        """Close (and unlock) the sidecar, which stays complete. Later edits
        of an autosaved session raise :class:`SidecarError` rather than go
        unsaved. Opening the same sidecar again in this process closes the
        previous session on it the same way."""
        if self._writer is not None:
            self._writer.close()

    @property
    def closed(self) -> bool:
        """True once an autosaved session's sidecar is closed or superseded."""
        return self._writer is not None and self._writer.closed

    def __repr__(self) -> str:
        st = self._df["status"].value_counts().to_dict()
        return (f"ReviewSession({len(self._df)} calcifications {st}, {len(self.detections.clusters)} "
                f"clusters, sidecar={os.fspath(self.sidecar) if self.sidecar else None})")
