"""FROC evaluation of calcification detections against ground truth.

Matching rules (all distances in mm, so they do not depend on the pixel
spacing):

Individual calcifications
    A detection *can* match a truth MC when the distance between their
    centres is at most ``radius_mm`` if given, otherwise
    ``max(0.5 mm, truth diameter_mm)``.  For 3-D data (both tables carry
    ``z_mm``) the depths must also agree within ``z_tol_mm`` (default
    2 mm).  Detections whose ``status`` is ``"rejected"`` are ignored.
    Matching is one-to-one and greedy: candidate pairs are taken in order of
    decreasing detection score, then increasing distance; a pair is kept
    when neither side is already matched.  Every kept detection is a true
    positive (TP), every other detection a false positive (FP): two
    detections on one MC give 1 TP and 1 FP.  Because a detection's fate
    depends only on detections with higher scores, thresholding the matched
    detections at any score gives exactly the greedy matching of the
    detections above that score, so one matching yields the whole FROC
    curve, and sensitivity and FP rate are both non-increasing in the
    threshold.

Clusters
    A detected cluster is a TP when its centroid lies within
    ``R + margin_mm`` (default margin 2.5 mm) of a truth cluster's
    centroid, where ``R`` is the truth cluster's radius: the largest
    distance from its centroid to one of its MCs (or
    ``max_extent_mm / 2`` when the MCs are not listed).  Matching is again
    one-to-one, greedy by score then distance; a second detected cluster
    on an already-found truth cluster is a false cluster (FP), as is every
    detected cluster near no truth cluster.  The cluster score is the
    ``score`` column (or ``n_calcifications`` when there is none).

FROC
    Sensitivity = matched truth objects / all truth objects over all
    images; FP per image = false detections / number of images, both at
    every score threshold ``t`` (a detection counts when ``score >= t``).
"""

from __future__ import annotations

import io
import math
from typing import Iterable

import numpy as np
import pandas as pd

from .atomic import atomic_write_bytes
from .errors import counted

__all__ = [
    "match_calcifications",
    "match_clusters",
    "froc",
    "cluster_froc",
    "sensitivity_at",
    "froc_summary",
    "plot_froc",
    "MIN_MATCH_MM",
    "CLUSTER_MARGIN_MM",
    "Z_TOL_MM",
]

#: Smallest matching radius for an individual MC (mm).
MIN_MATCH_MM = 0.5
#: Margin added to a truth cluster's radius (mm).
CLUSTER_MARGIN_MM = 2.5
#: Depth tolerance for 3-D matching (mm).
Z_TOL_MM = 2.0

#: FP-per-image operating points reported by :func:`froc_summary`.
STANDARD_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


# --------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------
def _as_frame(obj, what: str) -> pd.DataFrame:
    """Accept a DataFrame, a Detections object, a list of dicts or None."""
    if obj is None:
        return pd.DataFrame()
    if isinstance(obj, pd.DataFrame):
        return obj
    if hasattr(obj, "calcifications") and what == "calcifications":
        return obj.calcifications
    if hasattr(obj, "clusters") and what == "clusters":
        return obj.clusters
    if isinstance(obj, dict) and what in obj:
        return pd.DataFrame(obj[what])
    return pd.DataFrame(list(obj))


def _positions(df: pd.DataFrame, spacing=None) -> np.ndarray:
    """(n, 2) array of (y_mm, x_mm); from row/col * spacing if needed."""
    if len(df) == 0:
        return np.zeros((0, 2))
    if "y_mm" in df and "x_mm" in df:
        return df[["y_mm", "x_mm"]].to_numpy(float)
    if "row" in df and "col" in df and spacing is not None:
        sp = np.broadcast_to(np.atleast_1d(np.asarray(spacing, float))[-2:], (2,))
        return df[["row", "col"]].to_numpy(float) * sp
    raise ValueError("detections need y_mm and x_mm columns (or row, col and a spacing)")


def _depths(df: pd.DataFrame) -> np.ndarray | None:
    if len(df) and "z_mm" in df:
        return df["z_mm"].to_numpy(float)
    return None


def _scores(df: pd.DataFrame, fallback: str | None = None) -> np.ndarray:
    if len(df) == 0:
        return np.zeros(0)
    if "score" in df:
        s = pd.to_numeric(df["score"], errors="coerce").to_numpy(float)
    elif fallback and fallback in df:
        s = pd.to_numeric(df[fallback], errors="coerce").to_numpy(float)
    else:
        s = np.ones(len(df))
    return np.where(np.isnan(s), -np.inf, s)


def _kept(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rejected detections."""
    if len(df) and "status" in df:
        st = df["status"].astype(str).str.strip().str.lower()
        return df.loc[st != "rejected"]
    return df


def _greedy(scores, dist, allowed):
    """One-to-one greedy matching.

    ``dist`` is (n_det, n_truth); ``allowed`` a boolean mask of candidate
    pairs.  Pairs are taken by decreasing score, then increasing distance.
    Returns ``det_to_truth`` (index or -1) and ``det_dist``.
    """
    n_det = dist.shape[0]
    det_to_truth = np.full(n_det, -1, int)
    det_dist = np.full(n_det, np.nan)
    if n_det == 0 or dist.shape[1] == 0:
        return det_to_truth, det_dist
    di, ti = np.nonzero(allowed)
    if len(di) == 0:
        return det_to_truth, det_dist
    order = np.lexsort((ti, dist[di, ti], -scores[di]))  # last key is primary
    truth_used = np.zeros(dist.shape[1], bool)
    for k in order:
        d, t = di[k], ti[k]
        if det_to_truth[d] >= 0 or truth_used[t]:
            continue
        det_to_truth[d] = t
        det_dist[d] = dist[d, t]
        truth_used[t] = True
    return det_to_truth, det_dist


# --------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------
def _match(det: pd.DataFrame, truth: pd.DataFrame, scores: np.ndarray, dist: np.ndarray,
           rad: np.ndarray, z_tol_mm: float) -> dict:
    """One-to-one greedy matching of detections to truth items within
    ``rad`` (per truth item, mm) and, when both carry ``z_mm``, within
    ``z_tol_mm`` in depth; the result dict of :func:`match_calcifications`."""
    allowed = dist <= rad[None, :] + 1e-9
    zd, zt = _depths(det), _depths(truth)
    if zd is not None and zt is not None:
        allowed &= np.abs(zd[:, None] - zt[None, :]) <= z_tol_mm + 1e-9
    d2t, ddist = _greedy(scores, dist, allowed)
    n_truth = len(truth)
    is_tp = d2t >= 0
    truth_detected = np.zeros(n_truth, bool)
    truth_detected[d2t[is_tp]] = True
    best = np.full(n_truth, -np.inf)
    best[d2t[is_tp]] = scores[is_tp]
    return {
        "tp": int(is_tp.sum()),
        "fp": int((~is_tp).sum()),
        "fn": int(n_truth - truth_detected.sum()),
        "n_truth": int(n_truth),
        "n_detections": int(len(det)),
        "scores": scores,
        "is_tp": is_tp,
        "det_index": np.asarray(det.index),
        "matched_truth": d2t,
        "distance_mm": ddist,
        "truth_detected": truth_detected,
        "truth_best_score": best,
    }


def match_calcifications(
    detected_df,
    truth_calcs,
    *,
    radius_mm: float | None = None,
    z_tol_mm: float = Z_TOL_MM,
    spacing_mm=None,
) -> dict:
    """Match detected calcifications to truth MCs of one image.

    Parameters
    ----------
    detected_df : pandas.DataFrame or Detections
        Detected calcifications with ``y_mm``, ``x_mm`` (or ``row``,
        ``col`` and ``spacing_mm``), optionally ``score``, ``status``,
        ``z_mm``.  Rows with ``status == "rejected"`` are ignored.
    truth_calcs : list of dict, pandas.DataFrame or truth dict
        Truth MCs (``y_mm``, ``x_mm``, ``diameter_mm``, optionally
        ``z_mm``, ``calc_id``), e.g. ``truth["calcifications"]``.
    radius_mm : float, optional
        Fixed matching radius; default ``max(0.5 mm, truth diameter)``.
    z_tol_mm : float
        Depth tolerance when both sides carry ``z_mm``.
    spacing_mm : float or tuple, optional
        Only used when detections lack ``y_mm``/``x_mm``.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``n_truth``, ``n_detections`` (kept),
        ``scores`` (kept detections' scores), ``is_tp`` (bool per kept
        detection), ``det_index`` (index labels of the kept detections in
        ``detected_df``), ``matched_truth`` (truth position per kept
        detection or -1), ``distance_mm``, ``truth_detected`` (bool per
        truth MC) and ``truth_best_score`` (score of the matching detection
        per truth MC, ``-inf`` if missed).
    """
    det = _kept(_as_frame(detected_df, "calcifications"))
    truth = _as_frame(truth_calcs, "calcifications")
    if radius_mm is not None and not radius_mm > 0:
        raise ValueError("radius_mm must be > 0")
    pd_ = _positions(det, spacing_mm)
    pt = _positions(truth) if len(truth) else np.zeros((0, 2))
    scores = _scores(det)
    dist = np.hypot(pd_[:, None, 0] - pt[None, :, 0], pd_[:, None, 1] - pt[None, :, 1])
    if radius_mm is not None:
        rad = np.full(len(pt), float(radius_mm))
    elif len(truth):
        dia = truth["diameter_mm"].to_numpy(float) if "diameter_mm" in truth else np.zeros(len(pt))
        rad = np.maximum(MIN_MATCH_MM, np.nan_to_num(dia))
    else:
        rad = np.zeros(0)
    return _match(det, truth, scores, dist, rad, z_tol_mm)


def _cluster_radius(truth_clusters: pd.DataFrame, truth_calcs: pd.DataFrame | None) -> np.ndarray:
    rad = np.zeros(len(truth_clusters))
    for k, (_, cl) in enumerate(truth_clusters.iterrows()):
        r = None
        if truth_calcs is not None and len(truth_calcs) and "cluster_id" in truth_calcs:
            m = truth_calcs[truth_calcs["cluster_id"] == cl["cluster_id"]]
            if len(m):
                r = float(np.max(np.hypot(m["y_mm"] - cl["y_mm"], m["x_mm"] - cl["x_mm"])))
        if r is None:
            r = 0.5 * float(cl.get("max_extent_mm", 0.0) or 0.0)
        rad[k] = r
    return rad


def match_clusters(
    detected_clusters,
    truth,
    *,
    margin_mm: float = CLUSTER_MARGIN_MM,
    z_tol_mm: float = Z_TOL_MM * 2,
    spacing_mm=None,
) -> dict:
    """Match detected clusters to truth clusters of one image.

    Parameters
    ----------
    detected_clusters : pandas.DataFrame or Detections
        ``y_mm``, ``x_mm`` (centroid), ``score`` (else
        ``n_calcifications`` ranks them), optionally ``z_mm``.
    truth : dict or pandas.DataFrame
        A truth dict (``truth["clusters"]`` and ``truth["calcifications"]``
        are used) or a DataFrame of truth clusters.
    margin_mm : float
        Added to each truth cluster's radius (see the module docstring).
    z_tol_mm : float
        Depth tolerance when both sides carry ``z_mm``.
    spacing_mm : float or tuple of float, optional
        Pixel spacing, for detections that have ``row``, ``col`` but no
        ``y_mm``, ``x_mm``.

    Returns
    -------
    dict
        Same keys as :func:`match_calcifications`.
    """
    det = _as_frame(detected_clusters, "clusters")
    if isinstance(truth, dict):
        tcl = pd.DataFrame(truth.get("clusters", []))
        tcalc = pd.DataFrame(truth.get("calcifications", []))
    else:
        tcl, tcalc = _as_frame(truth, "clusters"), None
    pd_ = _positions(det, spacing_mm)
    pt = _positions(tcl) if len(tcl) else np.zeros((0, 2))
    scores = _scores(det, fallback="n_calcifications")
    dist = np.hypot(pd_[:, None, 0] - pt[None, :, 0], pd_[:, None, 1] - pt[None, :, 1])
    rad = _cluster_radius(tcl, tcalc) + margin_mm if len(tcl) else np.zeros(0)
    return _match(det, tcl, scores, dist, rad, z_tol_mm)


# --------------------------------------------------------------------------
# FROC
# --------------------------------------------------------------------------
def _froc_from_matches(matches: list[dict], thresholds=None) -> pd.DataFrame:
    n_images = len(matches)
    n_truth = sum(m["n_truth"] for m in matches)
    scores = np.concatenate([m["scores"] for m in matches]) if matches else np.zeros(0)
    is_tp = np.concatenate([m["is_tp"] for m in matches]) if matches else np.zeros(0, bool)
    if thresholds is None:
        thr = np.unique(scores[np.isfinite(scores)])[::-1]
        thr = np.concatenate([[np.inf], thr])
    else:
        thr = np.sort(np.asarray(list(thresholds), float))[::-1]
    tp_scores = np.sort(scores[is_tp])
    fp_scores = np.sort(scores[~is_tp])
    # number of scores >= t
    tp = len(tp_scores) - np.searchsorted(tp_scores, thr, side="left")
    fp = len(fp_scores) - np.searchsorted(fp_scores, thr, side="left")
    return pd.DataFrame(
        {
            "threshold": thr,
            "sensitivity": tp / n_truth if n_truth else np.full(len(thr), np.nan),
            "fp_per_image": fp / n_images if n_images else np.full(len(thr), np.nan),
            "tp": tp.astype(int),
            "fp": fp.astype(int),
            "n_truth": n_truth,
            "n_images": n_images,
        }
    )


def _check_lists(detections_list, truths_list):
    detections_list = list(detections_list)
    truths_list = list(truths_list)
    if len(detections_list) != len(truths_list):
        raise ValueError(
            f"{counted(len(detections_list), 'detection table')} for {counted(len(truths_list), 'truth')}"
        )
    return detections_list, truths_list


def froc(
    detections_list: Iterable,
    truths_list: Iterable,
    *,
    radius_mm: float | None = None,
    thresholds=None,
    z_tol_mm: float = Z_TOL_MM,
) -> pd.DataFrame:
    """Individual-MC FROC over a set of images.

    Parameters
    ----------
    detections_list : iterable
        Per image: detected calcifications (DataFrame or Detections).
    truths_list : iterable
        Per image: a truth dict (``load_truth``) or its list of
        calcifications.
    radius_mm : float, optional
        Fixed matching radius (default: ``max(0.5 mm, diameter)``).
    thresholds : iterable of float, optional
        Score thresholds (default: ``inf`` then every distinct score).
    z_tol_mm : float
        Depth tolerance for 3-D data.

    Returns
    -------
    pandas.DataFrame
        ``threshold``, ``sensitivity``, ``fp_per_image``, ``tp``, ``fp``,
        ``n_truth``, ``n_images``, one row per threshold (decreasing), so
        sensitivity and FP rate are non-decreasing down the table.
    """
    dets, truths = _check_lists(detections_list, truths_list)
    matches = [
        match_calcifications(d, t, radius_mm=radius_mm, z_tol_mm=z_tol_mm)
        for d, t in zip(dets, truths)
    ]
    return _froc_from_matches(matches, thresholds)


def cluster_froc(
    clusters_list: Iterable,
    truths_list: Iterable,
    *,
    margin_mm: float = CLUSTER_MARGIN_MM,
    thresholds=None,
) -> pd.DataFrame:
    """Cluster-level FROC over a set of images.

    Parameters
    ----------
    clusters_list : iterable
        Per image: detected clusters (DataFrame or Detections).
    truths_list : iterable
        Per image: a truth dict (``load_truth``).
    margin_mm : float
        Added to the truth cluster radius (module docstring).
    thresholds : iterable of float, optional
        Score thresholds (default: ``inf`` then every distinct score).

    Returns
    -------
    pandas.DataFrame
        As :func:`froc`; ``fp_per_image`` counts false clusters.
    """
    dets, truths = _check_lists(clusters_list, truths_list)
    matches = [match_clusters(d, t, margin_mm=margin_mm) for d, t in zip(dets, truths)]
    return _froc_from_matches(matches, thresholds)


def sensitivity_at(froc_df: pd.DataFrame, fp_per_image: float) -> float:
    """Sensitivity at a given FP rate.

    The best sensitivity among the curve's operating points whose FP rate
    does not exceed ``fp_per_image`` (no interpolation, so never
    optimistic); 0 when no operating point qualifies.
    """
    if len(froc_df) == 0:
        return 0.0
    ok = froc_df["fp_per_image"].to_numpy(float) <= fp_per_image + 1e-12
    if not ok.any():
        return 0.0
    s = froc_df["sensitivity"].to_numpy(float)[ok]
    s = s[np.isfinite(s)]
    return float(s.max()) if len(s) else float("nan")


def froc_summary(froc_df: pd.DataFrame, rates=STANDARD_FP_RATES) -> pd.DataFrame:
    """Sensitivity (and the threshold achieving it) at standard FP rates."""
    rows = []
    for r in rates:
        ok = froc_df["fp_per_image"].to_numpy(float) <= r + 1e-12
        if ok.any():
            sub = froc_df[ok]
            best = sub.iloc[int(np.argmax(sub["sensitivity"].to_numpy(float)))]
            rows.append(
                {"fp_per_image": r, "sensitivity": float(best["sensitivity"]),
                 "threshold": float(best["threshold"])}
            )
        else:
            rows.append({"fp_per_image": r, "sensitivity": 0.0, "threshold": math.inf})
    return pd.DataFrame(rows)


def plot_froc(froc_df: pd.DataFrame, cluster_froc_df: pd.DataFrame | None, path, *, title=None) -> None:
    """Plot the individual and cluster FROC curves to a PNG file.

    Parameters
    ----------
    froc_df, cluster_froc_df : pandas.DataFrame
        Outputs of :func:`froc` and :func:`cluster_froc` (the latter may be
        None or empty).
    path : str or os.PathLike
        PNG file, written atomically.
    title : str, optional
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5), dpi=100)
    panels = [("Individual microcalcifications", froc_df, "FP calcifications per image")]
    if cluster_froc_df is not None and len(cluster_froc_df):
        panels.append(("Clusters", cluster_froc_df, "false clusters per image"))
    for k, (name, df, xlabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        if len(df):
            x = df["fp_per_image"].to_numpy(float)
            y = df["sensitivity"].to_numpy(float)
            ax.step(x, y, where="post", lw=2)
            for r in (0.25, 0.5, 1.0, 2.0):
                s = sensitivity_at(df, r)
                ax.plot([r], [s], "o", color="C3", ms=4)
                ax.annotate(f"{s:.2f}", (r, s), textcoords="offset points", xytext=(3, -12), fontsize=8)
            xmax = max(4.0, float(np.nanmax(x[np.isfinite(x)])) if np.isfinite(x).any() else 4.0)
            ax.set_xlim(0, min(xmax, 8.0))
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("sensitivity")
        n_img = int(df["n_images"].iloc[0]) if len(df) else 0
        n_tr = int(df["n_truth"].iloc[0]) if len(df) else 0
        ax.set_title(f"{name} ({n_tr} in {counted(n_img, 'image')})", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
