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

**Context (stage 2).** Calcifications that matter come in groups (BI-RADS
"grouped": 3 or more within 1 cm²), while noise peaks and texture are
scattered. A small second model combines two inputs: the candidate's own
stage-1 log-odds and ``log_context``, the log of 1 + the summed stage-1
probabilities of the *other* candidates within the grouping radius
(:data:`napari_calc.core.cluster.DEFAULT_CLUSTER_RADIUS_MM`). It is
piecewise linear and non-decreasing in both, so a likely neighbour never
lowers a score and the final score is monotonic in everything stage 1 is
monotonic in. It is trained on out-of-fold stage-1 probabilities. :func:`candidate_probability` gives the
final score (stage 2 when the model has it).

The cluster score is a further logistic model on cluster features (number of
members and their calcification log-odds), shipped in the same file.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources

import numpy as np

from . import _compiled
from .mask import BlockMask

__all__ = [
    "noise_level_function",
    "candidate_feature_matrix",
    "FEATURE_NAMES",
    "MONOTONE_FEATURES",
    "CLUSTER_FEATURE_NAMES",
    "calc_probability",
    "candidate_probability",
    "context_feature",
    "CONTEXT_FEATURE_NAMES",
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
    "log_blob_qsnr",    # log of the Hessian blob strength over its quantum-noise sd (matched SNR)
    "log_ring_cnr",     # log of contrast / ring standard deviation (vs. anatomical clutter)
    "eig_ratio",        # lambda_min / lambda_max of -H at the blob scale: 1 blob, 0 line
    "eig_ratio_2x",     # the same at twice the scale (linear context: vessels, ducts)
    "log_elongation",   # second-moment elongation of the excess
    "log_diameter",     # log of the estimated diameter / 0.3 mm
    "scale_ratio",      # blob strength at twice the scale over that at the scale (large objects)
    "log_area_ratio",   # log of half-maximum area over the expected blob area
    "large_ratio",      # blob strength at a 2 mm object scale over that at the scale (benign)
)

#: Features that grow with the candidate's contrast; their coefficients are >= 0.
MONOTONE_FEATURES = ("log_snr", "log_qcnr", "log_peak_qcnr", "log_blob_qsnr", "log_ring_cnr")

#: Inputs of the stage-2 (context) model: the stage-1 calibrated log-odds and the context.
CONTEXT_FEATURE_NAMES = ("stage1_logit", "log_context")

CLUSTER_FEATURE_NAMES = (
    "log_n",           # log of the number of members
    "top3_logit",      # mean calcification log-odds of the 3 best members
    "sum_prob",        # sum of member probabilities, log1p
)


def noise_level_function(img: np.ndarray, mask: np.ndarray | None = None, *, n_bins: int = 24,
                         max_samples: int = 150_000, n_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel noise as a function of the local mean signal, measured on the image.

    On a regular grid of sample pixels (every ``k``-th row and column, ``k``
    chosen for at most ``max_samples`` pixels, inside ``mask``), the
    pseudo-residual ``r = I - mean(4 neighbours)`` (variance 1.25 sigma^2
    for white noise, insensitive to smooth anatomy) is binned by the local
    mean (the 5-pixel cross mean) into quantile bins; each bin's noise is
    the robust ``1.4826 MAD(r) / sqrt(1.25)``. The bin values are smoothed
    by a running median of 3 and made positive.

    Parameters
    ----------
    img : ndarray, 2-D, or 3-D ``(plane, row, col)``
        The image (any grey-level units), or planes sharing one detector
        and noise (e.g. slices of a tomosynthesis stack): the samples of
        all planes are pooled.
    mask : ndarray of bool or :class:`~napari_calc.core.mask.BlockMask`, optional
        Where to measure (the breast; one plane's shape).
    n_bins : int
        Number of quantile bins of the local mean.
    max_samples : int
        Subsampling budget (a regular grid of rows and columns).
    n_threads : int
        Threads of the C kernel that gathers the samples and computes the
        bins' medians for uint16 and float32 images (0: OpenMP default);
        the result does not depend on it, nor on whether the kernel or
        the NumPy code path runs.

    Returns
    -------
    (levels, sd) : ndarray, ndarray
        Increasing local-mean levels (bin medians) and the noise standard
        deviation at each; evaluate with :func:`numpy.interp`.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"noise_level_function needs a 2-D image or a 3-D stack, got {img.ndim}-D")
    h, w = img.shape[-2:]
    n_planes = 1 if img.ndim == 2 else img.shape[0]
    if h < 3 or w < 3 or n_planes == 0:
        return np.array([0.0]), np.array([1.0])
    k = _nlf_step(n_planes, h, w, max_samples)
    rs, cs = slice(1, h - 1, k), slice(1, w - 1, k)
    kern = _nlf_kernel()
    args = _nlf_kernel_args(img, mask, k) if kern is not None else None
    if args is not None and n_bins <= 255:
        # samples, quantile edges and binned medians in one C call
        got = nlf_of_fit(kern.nlf_fit(*args, max(1, n_bins), n_threads))
        if got is not None:
            return got
    if args is not None:
        # the same samples from C (the same float32 arithmetic, no temporaries)
        resid, level = kern.nlf_samples(*args, n_threads)
    else:
        rs_up, rs_dn = slice(0, h - 2, k), slice(2, h, k)
        cs_lf, cs_rt = slice(0, w - 2, k), slice(2, w, k)
        c = img[..., rs, cs].astype(np.float32)
        nb = (img[..., rs_up, cs].astype(np.float32) + img[..., rs_dn, cs] + img[..., rs, cs_lf]
              + img[..., rs, cs_rt]) * np.float32(0.25)
        resid = (c - nb).ravel()
        level = ((c + 4 * nb) * np.float32(0.2)).ravel()
        if mask is not None:
            m = np.broadcast_to(_mask_sample(mask, rs, cs), c.shape).ravel()
            if m.sum() >= 1000:
                resid, level = resid[m], level[m]
    if resid.size < 50:
        return _nlf_few(resid, level)
    n_bins = int(max(1, min(n_bins, resid.size // 500)))
    # quantile bins of the level; the quantiles depend on the values only:
    # from a sorted copy (a radix sort in C when there is the kernel)
    edges = _quantiles(level, np.arange(1, n_bins) / n_bins, kern, n_threads)
    binned = None
    if kern is not None and level.dtype == np.float32 and resid.dtype == np.float32:
        try:
            # per bin: numpy.median of the levels and of |r - median(r)|, in C
            binned = kern.nlf_bins(level, resid, np.ascontiguousarray(edges, dtype=np.float64),
                                   n_threads)
        except ValueError:  # non-finite samples (or unordered edges): NumPy below
            binned = None
    if binned is not None:
        return _nlf_of_bins(*binned)
    # the samples grouped by bin with a stable integer (radix) sort
    b = np.searchsorted(edges, level, side="right").astype(np.uint8)
    order = np.argsort(b, kind="stable")
    chunks = [c for c in np.split(order, np.cumsum(np.bincount(b, minlength=n_bins))[:-1]) if len(c)]
    lev = np.empty(len(chunks))
    sd = np.empty(len(chunks))
    for i, idx in enumerate(chunks):  # n_bins (<= 24) iterations, vectorised inside
        r = resid[idx]
        lev[i] = float(np.median(level[idx]))
        sd[i] = 1.4826 * float(np.median(np.abs(r - np.median(r)))) / math.sqrt(1.25)
    return _nlf_smooth(lev, sd)


def _nlf_step(n_planes: int, h: int, w: int, max_samples: int) -> int:
    """The sample grid's step: every k-th row and column, at most
    ``max_samples`` samples."""
    return max(1, int(math.ceil(math.sqrt(n_planes * (h - 2) * (w - 2) / max_samples))))


def _nlf_kernel_args(img: np.ndarray, mask, k: int, blocks: bool = False):
    """``(planes, k, smask)`` of ``_kernel.nlf_samples`` / ``nlf_fit`` for
    the samples of :func:`noise_level_function`, or None when the kernel
    does not take ``img`` (dtype): the planes as a 3-D array, the mask's
    samples (None: all, as when fewer than 1000 samples are in it). With
    ``blocks`` and a :class:`~.mask.BlockMask`: ``(planes, k, None,
    (tissue, fy, fx))``, for ``nlf_fit`` to make those samples itself."""
    if img.dtype not in (np.uint16, np.float32):
        return None
    h, w = img.shape[-2:]
    n_planes = 1 if img.ndim == 2 else img.shape[0]
    m = None
    if blocks and isinstance(mask, BlockMask) and mask.shape == (h, w):
        return _nlf_planes(img), k, None, (mask.tissue, mask.fy, mask.fx)
    if mask is not None:
        sm = _mask_sample(mask, slice(1, h - 1, k), slice(1, w - 1, k))
        if n_planes * int(np.count_nonzero(sm)) >= 1000:
            m = sm.view(np.uint8)
    return _nlf_planes(img), k, m


def _nlf_planes(img: np.ndarray) -> np.ndarray:
    """``img`` as the 3-D stack of C-contiguous planes the kernel reads
    (a copy only when its planes are not so)."""
    h, w = img.shape[-2:]
    planes = img if img.ndim == 3 else img[None]
    if planes.strides[-1] != planes.itemsize or planes.strides[-2] != w * planes.itemsize or (
            len(planes) > 1 and planes.strides[0] < h * w * planes.itemsize):
        planes = np.ascontiguousarray(planes)
    return planes


def nlf_job(img: np.ndarray, mask=None, *, n_bins: int = 24, max_samples: int = 150_000):
    """The ``nlf`` argument of ``_kernel.dog_noise_nms`` (the positional
    arguments of ``_kernel.nlf_fit``) that makes the C steps of
    :func:`noise_level_function` with those parameters, or None when the
    kernel cannot take them (no kernel, another dtype, fewer than 3 rows
    or columns, more than 255 bins); :func:`nlf_of_fit` turns what it
    returns into the function's result."""
    kern = _nlf_kernel()
    img = np.asarray(img)
    if kern is None or img.ndim not in (2, 3) or n_bins > 255:
        return None
    h, w = img.shape[-2:]
    n_planes = 1 if img.ndim == 2 else img.shape[0]
    if h < 3 or w < 3 or n_planes == 0:
        return None
    args = _nlf_kernel_args(img, mask, _nlf_step(n_planes, h, w, max_samples), blocks=True)
    if args is None:
        return None
    planes, k, m = args[:3]
    # nlf_fit's arguments: one thread (it runs on one of the DoG's), and
    # the mask's blocks when it is a BlockMask (their samples made there)
    return planes, k, m, max(1, n_bins), 1, args[3] if len(args) == 4 else None


def nlf_of_fit(fit) -> tuple[np.ndarray, np.ndarray] | None:
    """The result of :func:`noise_level_function` from what
    ``_kernel.nlf_fit`` returned, or None when that is None (the kernel
    left it to the NumPy code, which the caller then runs)."""
    if fit is None:
        return None
    resid, level, count, lev32, mad32, curve = fit
    if count is None:
        return _nlf_few(resid, level)
    return curve  # _nlf_of_bins(count, lev32, mad32), made in C


def _nlf_few(resid: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fewer than 50 samples: one level, one robust noise."""
    sd = float(1.4826 * np.median(np.abs(resid - np.median(resid)))) / math.sqrt(1.25) if resid.size else 1.0
    return np.array([float(np.median(level)) if level.size else 0.0]), np.array([max(sd, _EPS)])


def _nlf_of_bins(count: np.ndarray, lev32: np.ndarray, mad32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The result from ``_kernel.nlf_bins``' count, median level and MAD
    per bin (empty bins left out)."""
    full = count > 0
    lev = lev32[full].astype(np.float64)
    sd = 1.4826 * mad32[full].astype(np.float64) / math.sqrt(1.25)
    return _nlf_smooth(lev, sd)


def _nlf_smooth(lev: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bins' noise smoothed by a running median of 3 and made
    positive; the levels strictly increasing (for interp)."""
    if len(sd) >= 3:
        sd = _running_median3(sd)
    pos = sd[sd > 0]
    floor = float(pos.min()) if pos.size else 1.0
    sd = np.maximum(sd, floor)
    lev, keep = np.unique(lev, return_index=True)
    return lev, sd[keep]


def _mask_sample(mask, rs: slice, cs: slice) -> np.ndarray:
    """``mask[rs, cs]`` as a C-contiguous bool array (from the blocks of a
    :class:`~napari_calc.core.mask.BlockMask`, without the full mask)."""
    if isinstance(mask, BlockMask):
        return mask.sample(rs, cs)
    return np.ascontiguousarray(np.asarray(mask, dtype=bool)[rs, cs])


def _running_median3(x: np.ndarray) -> np.ndarray:
    """The median of each value and its two neighbours (the end values
    repeated past the ends): ``numpy.median`` of the triples, whose middle
    value it is, as max(min(a, b), min(max(a, b), c)) without numpy.median's
    stack and partition (NaN where a triple holds one, as there)."""
    a = np.concatenate([x[:1], x[:-1]])
    c = np.concatenate([x[1:], x[-1:]])
    return np.maximum(np.minimum(a, x), np.minimum(np.maximum(a, x), c))


def _quantiles(x: np.ndarray, q: np.ndarray, kern=None, n_threads: int = 0) -> np.ndarray:
    """``numpy.quantile(x, q)`` (method "linear") of a 1-D float array.

    With the kernel (``kern``, not None) and NaN-free float32 ``x``, ``x``
    is sorted in C (``_kernel.sort_f32``, a radix sort on ``n_threads``) and the quantiles
    are :func:`_quantiles_of_sorted` of that; otherwise
    ``numpy.quantile(numpy.sort(x), q)``. The same floats either way.
    """
    if kern is not None and x.dtype == np.float32 and x.ndim == 1 and len(x):
        try:
            return _quantiles_of_sorted(kern.sort_f32(np.ascontiguousarray(x), int(n_threads)), q)
        except ValueError:  # NaNs: NumPy below
            pass
    return np.quantile(np.sort(x), q)


def _quantiles_of_sorted(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``numpy.quantile(s, q)`` (method "linear", NumPy 2's arithmetic) of
    a sorted, NaN-free, non-empty 1-D float array ``s`` for ``q`` a float64
    array in [0, 1], without NumPy's copy and partition of ``s``.

    As NumPy: the virtual index ``v = (n - 1) q``, ``i = floor(v)``,
    ``j = i + 1`` (both ``n - 1`` where ``v >= n - 1``, and then the weight
    is ``v + 1``, not ``v - i``), weight ``g = v - i``; with ``a = s[i]``,
    ``b = s[j]`` and ``d = b - a`` (in ``s``'s dtype), ``a + d g`` where
    ``g < 0.5`` and ``b - d (1 - g)`` elsewhere, in float64.
    """
    n = len(s)
    v = (n - 1) * np.asarray(q, dtype=np.float64)
    i = np.floor(v)
    j = i + 1
    top = v >= n - 1
    i[top] = -1  # NumPy's index -1 (the last value), also in the weight
    j[top] = -1
    g = v - i
    i = i.astype(np.intp)
    j = j.astype(np.intp)
    a, b = s[i], s[j]
    d = b - a
    out = a + d * g
    hi = g >= 0.5
    out[hi] = (b - d * (1 - g))[hi]
    return out


#: Use the C kernel in noise_level_function (tests switch it off to compare
#: with the NumPy code path).
_NLF_KERNEL = True


def _kernel_if(on: bool, name: str):
    """The compiled kernel module when ``on`` and it has ``name``, else
    None (not built, or switched off)."""
    if not on:
        return None
    _kernel = _compiled.kernel
    if _kernel is None:
        return None
    return _kernel if hasattr(_kernel, name) else None


#: Use the C kernel in :func:`interp` (tests switch it off to compare with
#: numpy.interp).
_INTERP_KERNEL = True


def interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray, n_threads: int = 0) -> np.ndarray:
    """``numpy.interp(x, xp, fp)``, bit for bit, for float64 ``x``: in C
    (``_kernel.interp``, in parallel, without numpy.interp's per-call
    overhead) when ``xp`` strictly increases and ``xp``, ``fp`` are finite,
    else numpy.interp itself.

    Parameters
    ----------
    x : ndarray
        Where to interpolate (1-D float64 for the kernel; anything else
        goes to numpy.interp).
    xp, fp : ndarray
        The points, as numpy.interp takes them.
    n_threads : int
        Threads of the C kernel (0: OpenMP default); the result does not
        depend on it.
    """
    kern = _kernel_if(_INTERP_KERNEL, "interp")
    xp, fp = np.asarray(xp), np.asarray(fp)
    if (kern is not None and isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype == np.float64
            and xp.dtype.kind in "biuf" and fp.dtype.kind in "biuf"):  # (complex fp: numpy's)
        try:
            return kern.interp(np.ascontiguousarray(x), np.ascontiguousarray(xp, dtype=np.float64),
                               np.ascontiguousarray(fp, dtype=np.float64), int(n_threads))
        except (ValueError, TypeError):  # points the kernel does not take: numpy decides
            pass
    return np.interp(x, xp, fp)


def _nlf_kernel():
    """The compiled kernel module for the NLF, or None (:func:`_kernel_if`)."""
    return _kernel_if(_NLF_KERNEL, "nlf_fit")


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


#: Use the C kernel in candidate_feature_matrix (tests switch it off to
#: compare with the NumPy code path).
_FEATURE_KERNEL = True

#: The raw measurements ``_kernel.feature_parts`` takes, in its order
#: (ncalc_feature_parts in csrc/ncalc.h).
_FEATURE_INPUTS = ("snr", "contrast", "peak", "bg_std", "nlf_sd", "sigma_px", "h1_rr", "h1_rc", "h1_cc",
                   "h2_rr", "h2_rc", "h2_cc", "elongation", "diameter_mm", "area_px", "sigma_large_px",
                   "h3_rr", "h3_cc")

#: The columns of the feature matrix that are logarithms, in the order of
#: ``feature_parts``' log arguments.
_LOG_COLUMNS = np.array([0, 1, 2, 3, 4, 7, 8, 10])


def candidate_feature_matrix(raw, n_threads: int = 0) -> np.ndarray:
    """Model features (columns in :data:`FEATURE_NAMES` order) from the raw
    per-candidate measurements of the detector.

    ``raw`` maps names to arrays (a dict, or the DataFrame
    ``Detections.extra`` joined with the public columns): ``snr``,
    ``contrast``, ``peak``, ``bg_std`` (ring standard deviation), ``nlf_sd``
    (NLF pixel noise at the candidate's background level), ``h1_g``,
    ``h1_rr``, ``h1_rc``, ``h1_cc`` (Gaussian-smoothed value and Hessian at
    the blob scale ``sigma_px``) and ``h2_*`` (the same at ``2 sigma_px``),
    ``area_px`` (half-maximum area), ``elongation`` and ``diameter_mm``.
    ``n_threads``: threads of the C kernel (0: OpenMP's default); the
    matrix does not depend on it.
    """
    def a(k):
        return np.asarray(raw[k], dtype=float)

    n = len(a("snr"))
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES)))
    kern = _kernel_if(_FEATURE_KERNEL, "feature_parts")
    if kern is not None:
        X, logarg = kern.feature_parts([np.ascontiguousarray(raw[k], dtype=float) for k in _FEATURE_INPUTS],
                                       int(n_threads))
        np.log(logarg, out=logarg)
        X[:, _LOG_COLUMNS] = logarg.T
        return X
    sd = np.maximum(a("nlf_sd"), _EPS)
    s1 = a("sigma_px")
    h1 = np.stack([a("h1_g"), a("h1_rr"), a("h1_rc"), a("h1_cc")])
    h2 = np.stack([a("h2_g"), a("h2_rr"), a("h2_rc"), a("h2_cc")])
    # scale-normalised blob strength -sigma^2 trace(H); in white noise of sd n
    # its standard deviation is n / (sigma sqrt(2 pi)), hence the matched SNR
    b1 = -(s1 ** 2) * (h1[1] + h1[3])
    b2 = -((2 * s1) ** 2) * (h2[1] + h2[3])
    blob_snr = b1 * s1 * math.sqrt(2 * math.pi) / sd

    def slog(x):
        return np.log(np.maximum(np.asarray(x, float), 0.0) + 1.0)

    expected_area = math.pi * (s1 * math.sqrt(2.0)) ** 2  # disc of the blob radius
    bg_std = a("bg_std")
    contrast = a("contrast")
    with np.errstate(divide="ignore", invalid="ignore"):
        ring_cnr = np.where(bg_std > 0, contrast / np.maximum(bg_std, _EPS), 0.0)
        sr = np.where(b1 > 0, b2 / np.where(b1 > 0, b1, 1.0), 2.0)
        sL = a("sigma_large_px")
        bL = -(sL ** 2) * (a("h3_rr") + a("h3_cc"))
        bL_ratio = np.where(b1 > 0, bL / np.where(b1 > 0, b1, 1.0), 2.0)
    X = np.column_stack([
        slog(a("snr")),
        slog(contrast / sd),
        slog(a("peak") / sd),
        slog(blob_snr),
        slog(ring_cnr),
        _eig_ratio(h1),
        _eig_ratio(h2),
        np.log(np.clip(a("elongation"), 1.0, 20.0)),
        np.log(a("diameter_mm") / 0.3),
        np.clip(sr, -2.0, 2.0),
        np.log((a("area_px") + 1.0) / (expected_area + 1.0)),
        np.clip(bL_ratio, -2.0, 2.0),
    ])
    return X


@lru_cache(maxsize=4)
def load_model(name: str = "calc_model.json") -> dict:
    """The shipped model coefficients (``napari_calc/data/<name>``)."""
    text = resources.files("napari_calc").joinpath("data", name).read_text(encoding="utf-8")
    model = json.loads(text)
    return model


def ramp_basis(X: np.ndarray, knots, interactions=()) -> np.ndarray:
    """Piecewise-linear additive basis of the features.

    For feature ``j`` with knots ``k_1 < ... < k_K``, the columns are
    ``min(x, k_1)``, ``clip(x, k_i, k_i+1) - k_i`` for each interval and
    ``max(x, k_K) - k_K``: a sum of them with non-negative coefficients is
    exactly a non-decreasing piecewise-linear function of ``x`` (the slopes
    on the intervals). Then, for each ``(i, j)`` in ``interactions``,
    ``max(x_i, 0) * (1 + x_j)`` (``x_j`` a ratio feature in [-1, 1]): with
    a non-negative coefficient it is non-decreasing in ``x_i``.
    """
    X = np.asarray(X, float)
    knots = [np.asarray(k, float) for k in knots]
    out = np.empty((len(X), len(basis_groups(knots, interactions))))
    c = 0  # the next column, written in place (no per-column temporaries)
    for j, k in enumerate(knots):
        x = X[:, j]
        if len(k) == 0:
            out[:, c] = x
            c += 1
            continue
        np.minimum(x, k[0], out=out[:, c])
        c += 1
        for a, b in zip(k[:-1], k[1:]):
            col = out[:, c]
            np.clip(x, a, b, out=col)
            col -= a
            c += 1
        col = out[:, c]
        np.maximum(x, k[-1], out=col)
        col -= k[-1]
        c += 1
    for i, j in interactions:
        col = out[:, c]
        np.clip(X[:, j], -1.0, 1.0, out=col)
        col += 1.0
        col *= np.maximum(X[:, i], 0.0)
        c += 1
    return out


def basis_groups(knots, interactions=()) -> list[int]:
    """Feature index of each basis column (interactions: their first feature)."""
    g = []
    for j, k in enumerate(knots):
        g += [j] * (len(k) + 1 if len(k) else 1)
    g += [i for i, _ in interactions]
    return g


#: Use the C kernel for the log-odds in _logistic_logit (tests switch it
#: off to compare with the NumPy code path).
_RAMP_KERNEL = True


def _ramp_logit_kernel(X: np.ndarray, part: dict, coef: np.ndarray, intercept: float,
                       n_threads: int = 0) -> np.ndarray | None:
    """The log-odds ``_dot_in_order(Z, coef) + intercept`` of a model
    part with knots, ``Z`` the standardised basis ``(ramp_basis(X, knots,
    interactions) - mean) / scale``, from the C kernel
    (``_kernel.ramp_logit``, one pass over the rows that never stores
    ``Z``): the same floats as NumPy. None (use NumPy) when the kernel is
    not there or switched off (:data:`_RAMP_KERNEL`), or when the part has
    a zero knot, a zero mean or knots that do not increase: where ``x``
    equals a bound NumPy's min/max/clip may return either signed zero,
    which a zero mean would carry into the result."""
    if not _RAMP_KERNEL:
        return None
    kern = _kernel_if(True, "ramp_logit")
    if kern is None:
        return None
    X = np.asarray(X)
    prepared = _ramp_args(part)
    if prepared is None or X.ndim != 2 or X.dtype != np.float64 or X.shape[1] != len(prepared[0]):
        return None
    z = np.empty(len(X))
    try:
        kern.ramp_logit(np.ascontiguousarray(X), *prepared, coef, float(intercept), z, None, int(n_threads))
    except ValueError:  # non-finite knots, sizes that do not fit: NumPy decides
        return None
    return z


def _dot_in_order(Z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Z @ w`` with each row's sum made from 0.0 in column order, one
    rounded product and one rounded sum per column: the order of the C
    kernel (``ncalc_ramp_logit``), where BLAS's depends on the library and
    the CPU."""
    z = np.zeros(len(Z))
    for j in range(Z.shape[1]):
        z += Z[:, j] * w[j]
    return z


#: _ramp_args of the model parts seen, by id (each with the objects it was
#: made from, which keeps their ids from being reused): the shipped model is
#: one long-lived dict (load_model is cached), and this saves re-reading
#: it per image.
_RAMP_ARGS: dict = {}


def _ramp_args(part: dict):
    """``(nknots, knots, interactions, mean, scale)`` of a model part as
    ``_kernel.ramp_logit`` takes them (the knot counts and the flat
    interaction pairs as C ints, all knots in one float64 array), or None
    when the kernel must not take the part (see
    :func:`_ramp_logit_kernel`). Remembered for the part and the very
    lists it holds: a list replaced is read anew (one changed in place,
    element by element, is not)."""
    src = (part, part["knots"], part.get("interactions"), part["mean"], part["scale"])
    got = _RAMP_ARGS.get(id(part))
    if got is not None and all(a is b for a, b in zip(got[0], src)):
        return got[1]
    knots = [np.asarray(k, float).ravel() for k in part["knots"]]
    inter = np.array([int(v) for t in part.get("interactions", []) for v in t], dtype=np.intc)
    mu = np.ascontiguousarray(part["mean"], dtype=float)
    sc = np.ascontiguousarray(part["scale"], dtype=float)
    ok = bool(knots) and not ((mu == 0).any() or any((k == 0).any() or (np.diff(k) <= 0).any() for k in knots))
    args = None
    if ok:
        nk = np.array([len(k) for k in knots], dtype=np.intc)
        args = (nk, np.ascontiguousarray(np.concatenate(knots)), inter, mu, sc)
    if len(_RAMP_ARGS) >= 16:
        _RAMP_ARGS.clear()
    _RAMP_ARGS[id(part)] = (src, args)
    return args


def _logistic_logit(X: np.ndarray, part: dict, n_threads: int = 0) -> np.ndarray:
    """The log-odds of a model part (with its calibration when it has
    one): the standardised features, or their basis when the part has
    knots, times the coefficients (:func:`_dot_in_order`), plus the
    intercept. In C for a part with knots (:func:`_ramp_logit_kernel`),
    else NumPy; the same floats."""
    w, b, cal, mu, sc = _logit_args(part)
    z = _ramp_logit_kernel(X, part, w, b, n_threads) if "knots" in part else None
    if z is None:
        if "knots" in part:
            X = ramp_basis(X, part["knots"], [tuple(t) for t in part.get("interactions", [])])
        Z = X - mu  # in place from here: the same values, no more temporaries
        Z /= sc
        z = _dot_in_order(Z, w) + b
    if cal is not None:  # monotone recalibration of the log-odds
        z = interp(z, *cal, n_threads=n_threads)
    return z


#: _logit_args of the model parts seen, by id (as _RAMP_ARGS).
_LOGIT_ARGS: dict = {}


def _logit_args(part: dict):
    """``(coef, intercept, calibration, mean, scale)`` of a model part as
    arrays (the calibration ``(z, logit)``, or None): the same values
    :func:`_logistic_logit` would convert from the part's lists at every
    call, remembered for the part and the very objects it holds (as
    :func:`_ramp_args`)."""
    cal = part.get("calibration")
    src = (part, part["coef"], part["intercept"], part["mean"], part["scale"], cal,
           None if cal is None else cal["z"], None if cal is None else cal["logit"])
    got = _LOGIT_ARGS.get(id(part))
    if got is not None and all(a is b for a, b in zip(got[0], src)):
        return got[1]
    args = (np.asarray(part["coef"], float), float(part["intercept"]),
            None if cal is None else (np.asarray(cal["z"], float), np.asarray(cal["logit"], float)),
            np.asarray(part["mean"], float), np.asarray(part["scale"], float))
    if len(_LOGIT_ARGS) >= 16:
        _LOGIT_ARGS.clear()
    _LOGIT_ARGS[id(part)] = (src, args)
    return args


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


def context_feature(positions_mm: np.ndarray, prob: np.ndarray, radius_mm: float | None = None, *,
                    n_threads: int = 0) -> np.ndarray:
    """``log(1 + sum of prob of the other candidates within radius_mm)``.

    Parameters
    ----------
    positions_mm : ndarray, shape (n, 2) or (n, 3)
        Candidate positions in mm (``y, x`` or ``z, y, x``).
    prob : ndarray, shape (n,)
        Their stage-1 probabilities.
    radius_mm : float, optional
        Neighbourhood radius; default the clustering radius (a 1 cm² disc).
    n_threads : int
        Threads of the C kernel (0: OpenMP default); the result does not
        depend on it.

    Returns
    -------
    ndarray, shape (n,)

    Notes
    -----
    The neighbours are the pairs of :meth:`scipy.spatial.cKDTree.query_pairs`
    (distance <= radius). Each sum adds, from 0.0, the neighbours'
    probabilities in increasing candidate order, so the value does not
    depend on how the pairs were found: in C (``_kernel.neighbour_sums``)
    for finite positions in 1 to 3 dimensions, else NumPy, bit for bit.
    """
    if radius_mm is None:
        from .cluster import DEFAULT_CLUSTER_RADIUS_MM  # (here: cluster imports this module)

        r = DEFAULT_CLUSTER_RADIUS_MM
    else:
        r = float(radius_mm)
    pts = np.asarray(positions_mm, float)
    prob = np.asarray(prob, float)
    if len(prob) < 2:
        return np.zeros(len(prob))
    total = _neighbour_sums_kernel(pts, prob, r, n_threads)
    if total is None:
        from scipy.spatial import cKDTree

        pairs = cKDTree(pts).query_pairs(r, output_type="ndarray")
        i = np.concatenate([pairs[:, 0], pairs[:, 1]])
        j = np.concatenate([pairs[:, 1], pairs[:, 0]])
        order = np.lexsort((j, i))  # by candidate, its neighbours in increasing order
        total = np.bincount(i[order], weights=prob[j[order]], minlength=len(prob))
    return np.log1p(total)


#: Use the C kernel in context_feature (tests switch it off to compare with
#: the NumPy code path).
_NEIGHBOUR_KERNEL = True


def _neighbour_sums_kernel(pts: np.ndarray, prob: np.ndarray, r: float, n_threads: int) -> np.ndarray | None:
    """The neighbour sums of :func:`context_feature` from
    ``_kernel.neighbour_sums``, or None (no kernel, switched off, or an
    input it does not take: NumPy decides)."""
    if not _NEIGHBOUR_KERNEL or pts.ndim != 2 or not 1 <= pts.shape[1] <= 3 or prob.ndim != 1:
        return None
    _kernel = _compiled.kernel
    if _kernel is None:
        return None
    if not hasattr(_kernel, "neighbour_sums"):
        return None
    try:
        return _kernel.neighbour_sums(np.ascontiguousarray(pts), np.ascontiguousarray(prob), r, int(n_threads))[0]
    except ValueError:  # non-finite positions or radius, lengths that differ
        return None


def candidate_probability(X: np.ndarray, positions_mm: np.ndarray, model: dict | None = None, *,
                          n_threads: int = 0) -> np.ndarray:
    """The final calibrated score of the candidates of one image.

    Stage 1 (:func:`calc_probability`) on each candidate's own features;
    then, when the model has a ``"context"`` part, stage 2 on the stage-1
    log-odds and :func:`context_feature` of the stage-1 probabilities.

    Parameters
    ----------
    X : ndarray, shape (n, len(FEATURE_NAMES))
        :func:`candidate_feature_matrix` of the candidates.
    positions_mm : ndarray, shape (n, 2) or (n, 3)
        Their positions in mm.
    model : dict, optional
        Default: the shipped model.
    n_threads : int
        Threads of the C kernels (0: OpenMP default); the result does not
        depend on it.
    """
    model = model or load_model()
    part = model.get("context")
    if part is None or len(X) == 0:
        return calc_probability(X, model)
    if list(model["calcification"]["features"]) != list(FEATURE_NAMES):
        raise ValueError("calcification model features do not match this version of napari-calc")
    if list(part["features"]) != list(CONTEXT_FEATURE_NAMES):
        raise ValueError("context model features do not match this version of napari-calc")
    z1 = _logistic_logit(X, model["calcification"], n_threads)
    p1 = _sigmoid(z1)  # calc_probability(X, model), without computing z1 twice
    Xc = np.column_stack([z1, context_feature(positions_mm, p1, part.get("radius_mm"), n_threads=n_threads)])
    return _sigmoid(_logistic_logit(Xc, part, n_threads))


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
