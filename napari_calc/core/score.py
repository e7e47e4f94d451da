"""Candidate features and the calibrated calcification score.

Every feature is dimensionless and physically motivated, so that the same
model applies at any pixel spacing, dose or grey-level scale:

* intensities are divided by the **local quantum noise**, read from a
  noise-level function (NLF): the pixel noise standard deviation as a
  function of the local mean signal, measured robustly on the image itself
  (:func:`noise_level_function`), so it follows the signal-dependent noise
  whatever the detector's output mapping;
* sizes are in mm;
* shape features (Hessian eigenvalue ratio, elongation, scale ratio) are
  ratios and do not depend on contrast.

The score is a logistic regression on these features, trained on generated
phantoms (``scripts/train_classifier.py``, seeds disjoint from the
benchmark), with the coefficients shipped in
``napari_calc/data/calc_model.json``. It is the probability that a
candidate is a true microcalcification for the candidate population of the
detector (calibrated on the training phantoms). The coefficients of the
features that grow with contrast are constrained to be >= 0, so for
otherwise equal candidates the score rises with contrast.

The cluster score is a second logistic model on cluster features (number of
members and their calcification log-odds), shipped in the same file.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = [
    "noise_level_function",
    "candidate_feature_matrix",
    "FEATURE_NAMES",
    "MONOTONE_FEATURES",
    "CLUSTER_FEATURE_NAMES",
    "calc_probability",
    "cluster_feature_matrix",
    "cluster_probability",
    "load_model",
]

_EPS = 1e-6

#: Candidate features used by the calcification model, in model order.
FEATURE_NAMES = (
    "log_snr",          # log of the DoG response over the local (tile) response noise
    "log_qcnr",         # log of contrast / NLF pixel noise (quantum CNR)
    "log_peak_qcnr",    # log of peak excess / NLF pixel noise
    "log_blob_qsnr",    # log of -sigma^2 trace(H) / NLF pixel noise (blob strength)
    "log_ring_cnr",     # log of contrast / ring standard deviation (vs. anatomical clutter)
    "eig_ratio",        # lambda_min / lambda_max of -H at the blob scale: 1 blob, 0 line
    "eig_ratio_2x",     # the same at twice the scale (linear context: vessels, ducts)
    "log_elongation",   # second-moment elongation of the excess
    "log_diameter",     # log of the estimated diameter / 0.3 mm
    "scale_ratio",      # blob strength at twice the scale over that at the scale (large objects)
    "log_area_ratio",   # log of half-maximum area over the expected blob area
)

#: Features that grow with the candidate's contrast; their coefficients are >= 0.
MONOTONE_FEATURES = ("log_snr", "log_qcnr", "log_peak_qcnr", "log_blob_qsnr", "log_ring_cnr")

CLUSTER_FEATURE_NAMES = (
    "log_n",           # log of the number of members
    "top3_logit",      # mean calcification log-odds of the 3 best members
    "sum_prob",        # sum of member probabilities, log1p
)


def noise_level_function(img: np.ndarray, mask: np.ndarray | None = None, *, n_bins: int = 24,
                         max_samples: int = 400_000) -> tuple[np.ndarray, np.ndarray]:
    """Pixel noise as a function of the local mean signal, measured on the image.

    On a subsample of rows (at most ``max_samples`` pixels, inside ``mask``),
    the pseudo-residual ``r = I - mean(4 neighbours)`` (variance 1.25
    sigma^2 for white noise, insensitive to smooth anatomy) is binned by the
    local mean (the 5-pixel cross mean) into quantile bins; each bin's noise
    is the robust ``1.4826 MAD(r) / sqrt(1.25)``. The bin values are
    smoothed by a running median of 3 and made positive.

    Parameters
    ----------
    img : ndarray, 2-D
        The image (any grey-level units).
    mask : ndarray of bool, optional
        Where to measure (the breast).
    n_bins : int
        Number of quantile bins of the local mean.
    max_samples : int
        Subsampling budget (rows are taken with a regular stride).

    Returns
    -------
    (levels, sd) : ndarray, ndarray
        Increasing local-mean levels (bin medians) and the noise standard
        deviation at each; evaluate with :func:`numpy.interp`.
    """
    h, w = img.shape
    if h < 3 or w < 3:
        return np.array([0.0]), np.array([1.0])
    stride = max(1, int(math.ceil((h - 2) * (w - 2) / max_samples)))
    rows = np.arange(1, h - 1, stride)
    c = img[rows, 1:-1].astype(np.float32)
    up = img[rows - 1, 1:-1].astype(np.float32)
    dn = img[rows + 1, 1:-1].astype(np.float32)
    lf = img[rows, :-2].astype(np.float32)
    rt = img[rows, 2:].astype(np.float32)
    nb = (up + dn + lf + rt) * np.float32(0.25)
    resid = (c - nb).ravel()
    level = ((c + 4 * nb) * np.float32(0.2)).ravel()
    if mask is not None:
        m = np.asarray(mask, dtype=bool)[rows, 1:-1].ravel()
        if m.sum() >= 1000:
            resid, level = resid[m], level[m]
    if resid.size < 50:
        sd = float(1.4826 * np.median(np.abs(resid - np.median(resid)))) / math.sqrt(1.25) if resid.size else 1.0
        return np.array([float(np.median(level)) if level.size else 0.0]), np.array([max(sd, _EPS)])
    n_bins = int(max(1, min(n_bins, resid.size // 500)))
    order = np.argsort(level, kind="stable")
    chunks = np.array_split(order, n_bins)
    lev = np.empty(n_bins)
    sd = np.empty(n_bins)
    for i, idx in enumerate(chunks):  # n_bins (<= 24) iterations, vectorised inside
        r = resid[idx]
        lev[i] = float(np.median(level[idx]))
        sd[i] = 1.4826 * float(np.median(np.abs(r - np.median(r)))) / math.sqrt(1.25)
    if n_bins >= 3:
        padded = np.concatenate([[sd[0]], sd, [sd[-1]]])
        sd = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    pos = sd[sd > 0]
    floor = float(pos.min()) if pos.size else 1.0
    sd = np.maximum(sd, floor)
    # strictly increasing levels for interp
    lev, keep = np.unique(lev, return_index=True)
    return lev, sd[keep]


def _eig_sorted(hrr, hrc, hcc):
    """Eigenvalues of the 2x2 symmetric matrices, (smaller, larger)."""
    tr = 0.5 * (hrr + hcc)
    disc = np.sqrt(np.maximum((0.5 * (hrr - hcc)) ** 2 + hrc ** 2, 0.0))
    return tr - disc, tr + disc


def _eig_ratio(h):
    """Blobness of a bright spot from the Hessian of the smoothed image:
    with l1 <= l2 the eigenvalues, ``clip(l2 / l1, -1, 1)`` when l1 < 0 -- 1 for
    an isotropic bright blob, about 0 for a bright line, negative for a
    saddle -- and -1 when there is no bright curvature at all."""
    l1, l2 = _eig_sorted(h[1], h[2], h[3])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(l1 < 0, l2 / np.where(l1 < 0, l1, -1.0), -1.0)
    return np.clip(r, -1.0, 1.0)


def candidate_feature_matrix(raw: dict) -> np.ndarray:
    """Model features (columns in :data:`FEATURE_NAMES` order) from the raw
    per-candidate measurements computed by the detector.

    ``raw`` holds arrays: ``snr``, ``contrast``, ``peak``, ``bg_std``,
    ``nlf_sd`` (NLF noise at the candidate's background level), ``h1``
    and ``h2`` (smoothed value and Hessian rows g, rr, rc, cc at the blob
    scale sigma and at 2 sigma, shape (4, n)), ``sigma_px``, ``area_px``,
    ``elongation`` and ``diameter_mm``.
    """
    n = len(raw["snr"])
    sd = np.maximum(np.asarray(raw["nlf_sd"], float), _EPS)
    s1 = np.asarray(raw["sigma_px"], float)
    h1 = np.asarray(raw["h1"], float).reshape(4, n)
    h2 = np.asarray(raw["h2"], float).reshape(4, n)
    # scale-normalised blob strength -sigma^2 (Lrr + Lcc), in noise units
    b1 = -(s1 ** 2) * (h1[1] + h1[3])
    b2 = -((2 * s1) ** 2) * (h2[1] + h2[3])

    def slog(x):
        return np.log(np.maximum(np.asarray(x, float), 0.0) + 1.0)

    expected_area = math.pi * (s1 * math.sqrt(2.0)) ** 2  # disc of the blob radius
    with np.errstate(divide="ignore", invalid="ignore"):
        ring_cnr = np.where(raw["bg_std"] > 0, raw["contrast"] / np.maximum(raw["bg_std"], _EPS), 0.0)
        sr = np.where(b1 > 0, b2 / np.where(b1 > 0, b1, 1.0), 2.0)
    X = np.column_stack([
        slog(raw["snr"]),
        slog(raw["contrast"] / sd),
        slog(raw["peak"] / sd),
        slog(b1 / sd),
        slog(ring_cnr),
        _eig_ratio(h1),
        _eig_ratio(h2),
        np.log(np.clip(np.asarray(raw["elongation"], float), 1.0, 20.0)),
        np.log(np.asarray(raw["diameter_mm"], float) / 0.3),
        np.clip(sr, -2.0, 2.0),
        np.log((np.asarray(raw["area_px"], float) + 1.0) / (expected_area + 1.0)),
    ])
    return X


@lru_cache(maxsize=4)
def load_model(name: str = "calc_model.json") -> dict:
    """The shipped model coefficients (``napari_calc/data/<name>``)."""
    text = resources.files("napari_calc").joinpath("data", name).read_text(encoding="utf-8")
    model = json.loads(text)
    return model


def _logistic_logit(X: np.ndarray, part: dict) -> np.ndarray:
    mu = np.asarray(part["mean"], float)
    sc = np.asarray(part["scale"], float)
    w = np.asarray(part["coef"], float)
    return ((X - mu) / sc) @ w + float(part["intercept"])


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, float)))


def calc_probability(X: np.ndarray, model: dict | None = None) -> np.ndarray:
    """Calibrated probability that each candidate is a microcalcification."""
    model = model or load_model()
    part = model["calcification"]
    if list(part["features"]) != list(FEATURE_NAMES):
        raise ValueError("calcification model features do not match this version of napari-calc")
    if len(X) == 0:
        return np.zeros(0)
    return _sigmoid(_logistic_logit(X, part))


def cluster_feature_matrix(n_members: np.ndarray, top3_logit: np.ndarray, sum_prob: np.ndarray) -> np.ndarray:
    """Cluster features in :data:`CLUSTER_FEATURE_NAMES` order."""
    return np.column_stack([np.log(np.asarray(n_members, float)), np.asarray(top3_logit, float),
                            np.log1p(np.asarray(sum_prob, float))])


def cluster_probability(X: np.ndarray, model: dict | None = None) -> np.ndarray:
    """Calibrated probability that each cluster is a true MC cluster."""
    model = model or load_model()
    part = model.get("cluster")
    if part is None or len(X) == 0:
        return np.zeros(len(X))
    return _sigmoid(_logistic_logit(X, part))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))
