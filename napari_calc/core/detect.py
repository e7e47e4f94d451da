"""Microcalcification detection: the Python face of the C kernel.

The pipeline, for each 2-D image (each slice of a stack):

1. **Scales in mm.** Calcification diameters ``min_diameter_mm`` to
   ``max_diameter_mm`` are turned into Gaussian scales in pixels with the
   image's spacing (a disc of diameter d responds most to sigma = d / (2 sqrt 2)).
2. **Breast mask** (:mod:`napari_calc.core.mask`): air and a band along the
   skin line are excluded. Steps 3-5 run on the mask's bounding box plus a
   margin (the DoG's support and the NMS radius), aligned to the noise
   tiles and the pyramid's coarsest grid, which gives exactly what they give
   on the whole image (:func:`_crop_box`); no mask, no crop. The automatic
   mask is kept as its 1 mm blocks (:class:`~.mask.BlockMask`): the kernel
   reads it block-wise and no full-size mask is made.
3. **Multi-scale DoG** (C kernel): the maximum over scales of
   ``G(s_i) - G(s_i+1)``, so bright spots of the right size stand out. The
   coarse scales are computed on an octave pyramid (each level the last
   Gaussian of the one above, decimated by 2) and brought back bilinearly.
4. **Local noise** (C kernel): the robust standard deviation (1.4826 MAD) of
   the response in tiles of ``noise_tile_mm``; tiles with too few breast
   pixels take the median of the others (or, when no tile has enough, the
   robust noise of all breast pixels).
5. **Candidates** (C kernel): local maxima within ``nms_radius_mm`` whose
   response exceeds ``threshold`` times the local noise (a deliberately
   low threshold: the score decides), at most ``max_candidates``. Steps 4
   and 5 run in one pass over the response (``_kernel.noise_nms``: each
   band of tiles is searched for peaks, and their values read, while its
   rows are in cache). As the pass finds peaks it counts their SNRs, and
   the peaks that can no longer be among the ``max_candidates`` highest
   are never listed (its ``top``): the same candidates, without testing
   and keeping tens of thousands of weak ones. Steps 3 to 5 are one kernel
   call (``_kernel.dog_noise_nms``): the coarse scales are merged into the
   full-resolution response band by band, just before the pass reads the
   band, rather than in a pass of their own, so the response is read from
   memory once less.
6. **Candidate measurements** (C kernel, around each candidate only):
   contrast, ring background and its spread, peak, half-maximum area and
   elongation; the Gaussian-smoothed value and Hessian at the candidate's
   scale, at twice that scale and at a fixed 2 mm object scale
   (:data:`LARGE_OBJECT_SIGMA_MM`; the score needs only its trace, so its
   cross derivative, which is reported, is measured after step 8 for the
   candidates kept).
7. **Signal-dependent noise**: a noise-level function (pixel noise against
   local mean signal) measured on the image (once per stack, pooled over
   up to 8 slices)
   (:func:`napari_calc.core.score.noise_level_function`) gives the quantum
   noise at each candidate's background level. It needs neither the DoG
   nor the candidates: for a 2-D image it is made inside the call of
   steps 3 to 5, on one of its threads while the others filter.
8. **Calibrated score** (:mod:`napari_calc.core.score`): the probability of
   a true microcalcification from noise-normalised, dimensionless features
   (matched SNR, CNR, Hessian eigenvalue ratios that suppress vessels and
   ducts, size in mm, a large-object ratio that suppresses benign
   calcifications), by a model trained on generated phantoms and shipped
   as JSON. Monotonic in contrast. A second, context stage adds the summed
   probability of the other candidates within the grouping radius (true
   calcifications come in groups; noise peaks are scattered); a likely
   neighbour never lowers a score.
9. **Clustering** (:mod:`napari_calc.core.cluster`) of candidates scoring at
   least ``cluster_min_score``, each cluster with a calibrated score.

Everything per pixel and per candidate runs in C with the GIL released.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import _compiled
from ._frames import frame_of_arrays
from .cluster import DEFAULT_CLUSTER_RADIUS_MM, _cluster_table, cluster_calcifications
from .columns import NO_CLUSTER, calc_columns
from .detections import Detections
from .errors import DetectionCancelled, InvalidParameterError, MissingSpacingError, UnsupportedImageError
from .image import MammoImage
from .mask import BlockMask, breast_mask_blocks, breast_mask_parts
from .score import (candidate_feature_matrix, candidate_probability, interp, load_model, nlf_job, nlf_of_fit,
                    noise_level_function)

__all__ = ["detect", "DetectionParams", "dog_sigmas", "PRESETS", "IN_PLANE_SPACING_RANGE_MM"]

#: Scale ratio between consecutive Gaussians of the DoG stack.
SCALE_RATIO = 1.6
#: Smallest Gaussian scale in pixels (below this the sampled kernel is a spike).
MIN_SIGMA_PX = 0.5
#: The DoG's Gaussians are truncated at this many standard deviations
#: (0.27 % of the mass per axis is left out).
TRUNCATE = 3.0
#: Octave pyramid of the DoG (``_kernel.dog_octaves``): a pair whose smaller
#: Gaussian is at least this many pixels of its level is computed on the
#: next level down (half the resolution), as in SIFT. With TRUNCATE this
#: was chosen on validation phantoms (seeds 1100-1123) against (4.0, 1.9)
#: and the exact DoG: the same FROC; on 4096x3328 the DoG takes 46-62 ms
#: against 67-84 ms and 264-366 ms (benchmarks/speed.py, docs/performance-log.md).
OCTAVE_SPLIT_SIGMA = 1.2
#: Default operating threshold on the calibrated score (see DetectionParams.min_score):
#: a calcification is reported when it is more likely than not.
DEFAULT_MIN_SCORE = 0.5
#: Calcifications taking part in clustering: a group of several moderately
#: likely calcifications is itself strong evidence (the cluster score, trained
#: on phantoms, weighs it).
DEFAULT_CLUSTER_MIN_SCORE = 0.15
#: Gaussian scale (mm) of a 2 mm object (d / (2 sqrt 2)): larger than any
#: microcalcification, the scale of coarse benign calcifications.
LARGE_OBJECT_SIGMA_MM = 0.7
#: Truncation of the per-candidate Gaussian-derivative windows (Hessian).
HESSIAN_TRUNCATE = 3.5
#: A float image whose largest magnitude lies outside this range is
#: detected on a copy scaled by a power of two (:func:`_intensity_shift`),
#: and its intensity measurements are scaled back: below it the model's
#: small-noise guards (1e-6 of a grey level) would swamp the image's noise,
#: above it float32 sums can overflow. Scaling by a power of two is exact,
#: so an image in the range is detected as it is, and one outside it as
#: that image scaled into the range would be.
FLOAT_RANGE = (2.0 ** 4, 2.0 ** 64)
#: The per-candidate measurements in grey levels (scaled back when the
#: image was scaled; the others are ratios, lengths or counts).
_INTENSITY_KEYS = ("contrast", "noise", "peak", "response", "nlf_sd", "bg_std") + tuple(
    f"h{k}_{d}" for k in (1, 2, 3) for d in ("g", "rr", "rc", "cc"))


@dataclass
class DetectionParams:
    """Detection parameters, all physical.

    Attributes
    ----------
    min_diameter_mm, max_diameter_mm : float
        Range of calcification diameters to look for (MCs: 0.1-1.0 mm). The
        default smallest scale is that of a 0.15 mm disc: after the
        detector's blur a 0.1 mm MC is no smaller than that, and a finer
        scale only adds pixel noise (measured on training phantoms at
        0.07 mm: candidate recall 0.75 -> 0.90 at the same candidate budget).
    threshold : float
        A candidate's DoG response must exceed this many local noise
        standard deviations.
    nms_radius_mm : float
        Two candidates are never closer than this (non-maximum suppression).
    noise_tile_mm : float
        Side of the tiles the local noise is measured in.
    skin_margin_mm : float
        Band along the skin line excluded from detection.
    use_mask : bool
        Segment the breast and detect inside it only.
    max_candidates : int
        At most this many candidates per image (per slice of a stack, and
        again after the slices are merged): those of highest detection SNR
        (response over local noise), before scoring.
    cluster_radius_mm : float
        Neighbourhood radius for clustering (default: a disc of 1 cm²).
    min_cluster_size : int
        Calcifications needed to form a cluster (BI-RADS: 3).
    cluster_min_score : float
        Only candidates with at least this score take part in clustering
        (lower than ``min_score``: several moderately likely calcifications
        close together are evidence in themselves; the calibrated cluster
        score decides).
    min_score : float
        The operating threshold: candidates scoring at least this are the
        reported calcifications (CLI summary, review default). The score is
        a calibrated probability; the default 0.5 ("more likely than not")
        gives about 0.5 false calcifications per image on the training
        phantoms (docs/accuracy.md).
    keep_min_score : float
        Candidates scoring below this are dropped from the output table
        altogether (0 keeps every candidate).
    """

    min_diameter_mm: float = 0.15
    max_diameter_mm: float = 1.0
    threshold: float = 3.0
    nms_radius_mm: float = 0.3
    noise_tile_mm: float = 6.0
    skin_margin_mm: float = 1.5
    use_mask: bool = True
    max_candidates: int = 3000
    cluster_radius_mm: float = DEFAULT_CLUSTER_RADIUS_MM
    min_cluster_size: int = 3
    cluster_min_score: float = DEFAULT_CLUSTER_MIN_SCORE
    min_score: float = DEFAULT_MIN_SCORE
    keep_min_score: float = 0.02

    def validate(self) -> None:
        """Raise :class:`InvalidParameterError` (one line naming the
        parameter) for a value of the wrong type or out of range. Whole
        numbers given as floats (``3000.0``) become ints."""
        def bad(msg):
            raise InvalidParameterError(msg)

        for f in dataclasses.fields(self):
            v, kind = getattr(self, f.name), type(f.default)
            is_bool = isinstance(v, (bool, np.bool_))
            if kind is bool:
                if not is_bool:
                    bad(f"{f.name} must be true or false, got {v!r}")
            elif kind is int:
                if isinstance(v, numbers.Real) and not is_bool and math.isfinite(v) and float(v).is_integer():
                    setattr(self, f.name, int(v))
                else:
                    bad(f"{f.name} must be a whole number, got {v!r}")
            elif not (isinstance(v, numbers.Real) and not is_bool and math.isfinite(v)):
                bad(f"{f.name} must be a finite number, got {v!r}")
        if not (0 < self.min_diameter_mm < self.max_diameter_mm):
            bad(f"need 0 < min_diameter_mm < max_diameter_mm, got {self.min_diameter_mm}, "
                f"{self.max_diameter_mm}")
        if self.max_diameter_mm > 10:
            bad(f"max_diameter_mm {self.max_diameter_mm} is not a calcification size (<= 10 mm)")
        if not (self.threshold > 0):
            bad(f"threshold must be > 0, got {self.threshold}")
        if not (self.nms_radius_mm >= 0):
            bad(f"nms_radius_mm must be >= 0, got {self.nms_radius_mm}")
        if not (self.noise_tile_mm > 0):
            bad(f"noise_tile_mm must be > 0, got {self.noise_tile_mm}")
        if not (self.skin_margin_mm >= 0):
            bad(f"skin_margin_mm must be >= 0, got {self.skin_margin_mm}")
        if int(self.max_candidates) < 1:
            bad(f"max_candidates must be >= 1, got {self.max_candidates}")
        if not (self.cluster_radius_mm > 0):
            bad(f"cluster_radius_mm must be > 0, got {self.cluster_radius_mm}")
        for name in ("cluster_min_score", "min_score", "keep_min_score"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                bad(f"{name} must be in [0, 1], got {v}")
        if int(self.min_cluster_size) < 2:
            bad(f"min_cluster_size must be >= 2, got {self.min_cluster_size}")


#: Parameter presets by acquisition type (spacing still comes from the image).
PRESETS: dict[str, dict[str, Any]] = {
    "Full-field digital (50-100 µm)": dict(min_diameter_mm=0.15, max_diameter_mm=1.0, threshold=3.0,
                                           nms_radius_mm=0.3, noise_tile_mm=6.0),
    "Scanned film / CR (100-200 µm)": dict(min_diameter_mm=0.15, max_diameter_mm=1.0, threshold=3.0,
                                           nms_radius_mm=0.4, noise_tile_mm=8.0),
    "Tomosynthesis": dict(min_diameter_mm=0.15, max_diameter_mm=1.0, threshold=3.5,
                          nms_radius_mm=0.3, noise_tile_mm=6.0),
}


def dog_sigmas(spacing_mm: float, min_diameter_mm: float, max_diameter_mm: float,
               ratio: float = SCALE_RATIO) -> np.ndarray:
    """Gaussian scales (pixels) of the DoG stack for a diameter range.

    A disc of diameter d gives the strongest scale-normalised Laplacian
    response at sigma = d / (2 sqrt 2). The stack runs geometrically by
    ``ratio`` from that sigma for ``min_diameter_mm`` (at least
    :data:`MIN_SIGMA_PX`) until one step past the sigma for
    ``max_diameter_mm``, so every diameter in range falls between two
    scales. Always at least two scales.
    """
    lo = max(min_diameter_mm / (2 * math.sqrt(2)) / spacing_mm, MIN_SIGMA_PX)
    hi = max(max_diameter_mm / (2 * math.sqrt(2)) / spacing_mm, lo)
    sig = [lo]
    while sig[-1] < hi * ratio * 0.999 or len(sig) < 2:
        sig.append(sig[-1] * ratio)
    return np.asarray(sig, dtype=np.float64)


#: Largest ratio of the row and column spacings detection accepts.
MAX_PIXEL_ASPECT = 1.05

#: In-plane pixel spacings (mm) detection accepts as a mammogram's, low and
#: high (inclusive); outside, the spacing is wrong, not the image.
IN_PLANE_SPACING_RANGE_MM = (0.005, 2.0)


#: Progress of a 2-D detection after each stage, and what comes next (the
#: fractions are the stages' shares of the time on a full-field image).
_STAGES = {"mask": (0.08, "filtering"), "dog": (0.48, "estimating the noise"),
           "noise": (0.6, "finding peaks"), "peaks": (0.7, "measuring candidates"),
           "candidates": (0.75, "measuring candidates")}


def _as_image(image, spacing_mm) -> tuple[np.ndarray, tuple[float, ...], dict]:
    file_slice_mm = None  # a stack's own slice spacing, kept when only in-plane is given
    if isinstance(image, MammoImage):
        pixels, meta = image.pixels, dict(image.metadata)
        spacing = spacing_mm if spacing_mm is not None else image.spacing_mm
        if image.spacing_mm is not None and len(image.spacing_mm) == 3:
            file_slice_mm = float(image.spacing_mm[0])
    else:
        pixels, meta, spacing = image, {}, spacing_mm
    src = meta.get("source_path")
    pixels = np.asarray(pixels)
    if pixels.ndim not in (2, 3):
        raise UnsupportedImageError(f"expected a 2-D image or 3-D stack, got {pixels.ndim}-D data "
                                    f"of shape {pixels.shape}", src)
    if pixels.dtype.kind not in "uif" and pixels.dtype != bool:
        raise UnsupportedImageError(f"pixel type {pixels.dtype} is not a grey-level image", src)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and pixels.shape[0] > 4:
        # (rows, cols, RGB[A]); read as a stack it would be images 3 pixels wide
        raise UnsupportedImageError(f"a colour image (shape {pixels.shape}); give a greyscale one "
                                    "(rows, cols) or a stack (slices, rows, cols)", src)
    if min(pixels.shape[-2:]) < 2:
        raise UnsupportedImageError(
            f"image is {pixels.shape[-2]}x{pixels.shape[-1]} pixels, too small to detect on", src)
    least = min_image_side(IN_PLANE_SPACING_RANGE_MM[1])  # what the coarsest spacing needs
    if min(pixels.shape[-2:]) < least:  # said before asking for a spacing that cannot help
        raise UnsupportedImageError(
            f"image is {pixels.shape[-2]}x{pixels.shape[-1]} pixels, too small to search for "
            f"calcifications at any pixel spacing (at least {least}x{least} pixels)", src)
    if spacing is None:
        in_plane = meta.get("in_plane_spacing_mm")
        if np.ndim(pixels) == 3 and in_plane:  # a stack: only the slice spacing is missing
            raise MissingSpacingError(
                f"the slice spacing is unknown (in-plane {' x '.join(f'{float(v):g}' for v in in_plane)} mm); "
                "give all three in mm, slice first (--spacing S,ROW,COL / spacing_mm)", src)
        if np.ndim(pixels) == 3:
            raise MissingSpacingError("the pixel and slice spacings are unknown; give all three in mm, "
                                      "slice first (--spacing S,ROW,COL / spacing_mm)", src)
        raise MissingSpacingError("the pixel spacing is unknown; give it in mm (--spacing / spacing_mm)",
                                  src)
    sp = np.atleast_1d(np.asarray(spacing, dtype=float)).ravel()
    nd = pixels.ndim
    if len(sp) == 1:
        sp = np.repeat(sp, 2)
    if nd == 3 and len(sp) == 2:  # in-plane only: the stack's own slice spacing, never a guess
        if file_slice_mm is None:
            raise MissingSpacingError(
                "the slice spacing of this 3-D stack is unknown; give spacing_mm as "
                "(slice_mm, row_mm, col_mm)", src)
        sp = np.concatenate([[file_slice_mm], sp])
    if len(sp) != nd:
        raise InvalidParameterError(f"spacing {tuple(sp)} does not fit a {nd}-D image", src)
    sp = tuple(float(v) for v in sp)  # (plain floats: the checks below are on two or three numbers)
    if not all(math.isfinite(v) and v > 0 for v in sp):
        raise InvalidParameterError(f"spacing must be positive mm, got {' x '.join(f'{v:g}' for v in sp)}", src)
    lo, hi = IN_PLANE_SPACING_RANGE_MM
    if not all(lo <= v <= hi for v in sp[-2:]):
        raise InvalidParameterError(
            f"in-plane spacing {' x '.join(f'{v:g}' for v in sp[-2:])} mm is not a mammogram's "
            f"({lo:g}-{hi:g} mm per pixel)", src)
    if max(sp[-2:]) > MAX_PIXEL_ASPECT * min(sp[-2:]):
        # the filters are round in pixels: on such pixels every scale and
        # distance is wrong along one axis (a 2:1 image gave ten times the candidates)
        raise UnsupportedImageError(
            f"pixels are not square ({' x '.join(f'{v:g}' for v in sp[-2:])} mm); detection "
            "assumes square pixels: resample the image to square pixels first", src)
    return pixels, sp, meta


def min_image_side(spacing_mm: float, params: "DetectionParams | None" = None) -> int:
    """Fewest rows and columns (pixels) an image needs for a calcification
    search at this in-plane spacing: the window of the DoG's largest
    Gaussian (the one for ``max_diameter_mm``), ``2 r + 1`` with the
    kernel's radius ``r = int(TRUNCATE sigma + 0.5)``. On a smaller image
    that filter sees mostly the mirrored border, and what is found is not a
    finding (5.4 mm by default: 77 pixels at 0.07 mm, 55 at 0.1 mm)."""
    p = params or DetectionParams()
    sig = dog_sigmas(spacing_mm, p.min_diameter_mm, p.max_diameter_mm)
    return 2 * int(TRUNCATE * float(sig[-1]) + 0.5) + 1


def _check_size(shape, spacing_yx, p: "DetectionParams", src) -> None:
    """Refuse an image too small for a calcification search (:func:`min_image_side`)."""
    rows, cols = int(shape[-2]), int(shape[-1])
    sp = min(spacing_yx)
    need = min_image_side(sp, p)
    if min(rows, cols) < need:
        raise UnsupportedImageError(
            f"image is {rows}x{cols} pixels ({rows * spacing_yx[0]:.3g} x {cols * spacing_yx[1]:.3g} mm), "
            f"too small to search for calcifications: at least {need}x{need} pixels "
            f"({need * sp:.3g} mm) at {sp:g} mm per pixel", src)


def _intensity_shift(lo: float, hi: float) -> int:
    """The power of two ``k`` by which :func:`detect` scales a float image
    whose values lie in ``[lo, hi]`` (finite): 0 when its largest
    magnitude is in :data:`FLOAT_RANGE` (or it is all zeros), else the
    ``k`` that brings that magnitude into ``[2**15, 2**16)``, the range of
    a 16-bit detector's grey levels."""
    m = max(abs(lo), abs(hi))
    if m == 0.0 or FLOAT_RANGE[0] <= m <= FLOAT_RANGE[1]:
        return 0
    return 16 - math.frexp(m)[1]


def _scaled(pixels: np.ndarray, shift: int) -> np.ndarray:
    """``pixels * 2**shift`` as a new float32 array: computed in the
    pixels' own precision (float16 first widened to float32), then rounded
    once to float32, so a float64 image beyond float32's range scales
    without overflow. Exact but for that one rounding (values that would
    be subnormal aside)."""
    if pixels.dtype.itemsize < 4:
        pixels = pixels.astype(np.float32)
    out = np.empty(pixels.shape, dtype=np.float32)
    np.ldexp(pixels, shift, out=out, casting="same_kind")
    return out


def _kernel_input(plane: np.ndarray) -> np.ndarray:
    """uint16 and float32 go to C as they are (no copy when contiguous)."""
    if plane.dtype == np.uint16 or plane.dtype == np.float32:
        return np.ascontiguousarray(plane)
    if plane.dtype.kind in "u" and plane.dtype.itemsize <= 2:
        return np.ascontiguousarray(plane, dtype=np.uint16)
    return np.ascontiguousarray(plane, dtype=np.float32)


def _top_k(values: np.ndarray, k: int, n_threads: int = 0) -> np.ndarray:
    """Indices (increasing) of the ``k`` largest values; among equal values
    at the cut the earlier ones win (as a stable sort would choose).
    O(n) selection instead of a full sort: in C (``_kernel.top_k``) for
    NaN-free float64 values (on ``n_threads``), else with
    ``numpy.partition`` (the same indices)."""
    n = len(values)
    if k >= n:
        return np.arange(n)
    if values.dtype == np.float64 and _kernel_has("top_k"):
        _kernel = _compiled.kernel
        try:
            return _kernel.top_k(np.ascontiguousarray(values), int(k), int(n_threads))
        except ValueError:  # NaNs: NumPy below
            pass
    cut = np.partition(values, n - k)[n - k]  # the k-th largest value
    above = np.flatnonzero(values > cut)
    at = np.flatnonzero(values == cut)[: k - len(above)]
    return np.sort(np.concatenate([above, at]))


#: Use the C kernel for the peaks' values and the top-k selection (tests
#: switch it off to compare with the NumPy code path).
_PEAK_KERNEL = True


def _kernel_has(name: str) -> bool:
    """The compiled kernel is there, has ``name`` and is not switched off
    (:data:`_PEAK_KERNEL`)."""
    if not _PEAK_KERNEL:
        return False
    _kernel = _compiled.kernel
    if _kernel is None:
        return False
    return hasattr(_kernel, name)


#: Compute the DoG, the local noise and the candidates on the breast's
#: bounding box only (plus the margin that keeps them exact); tests switch
#: it off to compare with the whole-image computation.
_CROP_TO_MASK = True

#: Compute the DoG only where the mask, grown by the NMS radius, needs it
#: (``_kernel.mask_row_ranges``, the ``ranges`` of ``_kernel.dog_octaves``);
#: tests switch it off to compare with the whole box.
_ROW_RANGES = True

#: Compute the local noise and the peaks in one pass (``_kernel.noise_nms``);
#: tests switch it off to compare with the two steps.
_NOISE_NMS_KERNEL = True

#: Run the octave DoG and that pass in one kernel call
#: (``_kernel.dog_noise_nms``: the coarser levels merged band by band as the
#: pass reads them); tests switch it off to compare with the two calls.
_DOG_NOISE_KERNEL = True

#: Let noise_nms leave out peaks that cannot be among the ``max_candidates``
#: highest SNRs (its ``top``): the same candidates after the top-k
#: selection, without listing and testing the tens of thousands of weak
#: peaks (tests switch it off to compare).
_NOISE_NMS_TOP = True
#: Measure the cross derivative of the fixed large scale (``h3_rc``) for the
#: candidates detect keeps only, after scoring (the score uses that scale's
#: trace alone; its window is the largest, and the cross term is a third
#: of its sums). Tests switch it off to compare.
_LATE_LARGE_CROSS = True
#: Make a 2-D image's noise-level function inside the DoG's kernel call, on
#: one of its threads while the others filter (``dog_noise_nms(nlf=...)``),
#: rather than on its own after the candidates are measured (its sort and
#: bins hardly gain from a second thread, so the other core sat idle).
#: Tests switch it off to compare.
_SIDE_NLF = True
#: Make the DoG's row ranges from the mask's extents in C (tests switch it
#: off to compare with the NumPy code).
_CROP_RANGES_KERNEL = True


def _octave_plan(sig: np.ndarray, rows: int, cols: int, max_levels: int = 16) -> list[tuple[int, int, int]]:
    """The levels ``_kernel.dog_octaves`` uses on a ``rows`` x ``cols``
    image, as in ``ncalc_dog_octaves`` (csrc/ncalc.h): for each level its
    first and last Gaussian (``o``, ``e``) and its largest Gaussian radius
    in the level's pixels."""
    n = len(sig)
    o, base, f, level = 0, 0.0, 1.0, 0
    plan = []
    while True:
        e = n - 1
        if level < max_levels and rows >= 32 and cols >= 32:
            for i in range(o + 1, n - 1):
                if sig[i] >= OCTAVE_SPLIT_SIGMA * f:
                    e = i
                    break
        rmax = 0
        for i in range(o, e + 1):
            d = float(sig[i]) * float(sig[i]) - base * base
            t = 0.0 if (i == o and o > 0) else math.sqrt(d if d > 0 else 0.0) / f
            rmax = max(rmax, int(TRUNCATE * t + 0.5))
        plan.append((o, e, rmax))
        if e == n - 1:
            return plan
        rows, cols = (rows + 1) // 2, (cols + 1) // 2
        o, base, f, level = e, float(sig[e]), 2.0 * f, level + 1


def _dog_support(plan: list[tuple[int, int, int]]) -> int:
    """Distance (full-resolution pixels) from an edge of the image within
    which the octave DoG can depend on what lies beyond that edge.

    At level L the Gaussians read their input up to ``rmax_L`` level pixels
    away (a band ``G_L = D_L + rmax_L`` wide near an edge differs when
    the level's input differs within ``D_L``); the next level's input is
    every other pixel of that (``D_{L+1} <= ceil(G_L / 2)``, one more for
    safety); bringing a coarse response back reads the coarse nodes
    ``j`` and ``j + 1`` around a pixel, so a band ``E_{L+1}`` wide there
    is ``2 E_{L+1} + 2`` wide here, and ``E_L = max(G_L, 2 E_{L+1} + 2)``.
    Returns ``E_0``."""
    d, g = 0, []
    for _, _, rmax in plan:
        g.append(d + rmax)
        d = -(-(d + rmax) // 2) + 1
    e = g[-1]
    for level in range(len(plan) - 2, -1, -1):
        e = max(g[level], 2 * e + 2)
    return e


def _mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(r0, r1, c0, c1)`` (half-open) of a 2-D boolean
    mask, None when it is empty."""
    r = np.flatnonzero(mask.any(axis=1))
    if not len(r):
        return None
    c = np.flatnonzero(mask[r[0]: r[-1] + 1].any(axis=0))
    return int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1


def _crop_box(shape: tuple[int, int], bbox: tuple[int, int, int, int], sig: np.ndarray, tile: int,
              radius: int) -> tuple[int, int, int, int] | None:
    """The part ``(r0, r1, c0, c1)`` of an image of ``shape`` on which the
    DoG, the tile noise and the non-maximum suppression give, at every
    pixel of the mask whose bounding box is ``bbox``, exactly what they give
    on the whole image; None when that is the whole image (or when no crop
    is exact).

    The crop holds the box plus a margin of the DoG's support
    (:func:`_dog_support`) plus the NMS radius on every side that is not
    an image edge, so every response a masked pixel's NMS window reads is
    the same. Its origin is a multiple of the noise tile and of the
    coarsest pyramid level's pixel, so the tile grid and every level's
    sampling grid are those of the whole image: tiles see the same mask
    pixels (there are none outside the box) and the same responses. The
    pyramid must have the same levels on the crop (they depend on its size).
    """
    rows, cols = shape
    plan = _octave_plan(sig, rows, cols)
    margin = _dog_support(plan) + radius
    align = math.lcm(tile, 2 ** (len(plan) - 1))
    r0 = max(0, bbox[0] - margin) // align * align
    c0 = max(0, bbox[2] - margin) // align * align
    r1 = min(rows, bbox[1] + margin)
    c1 = min(cols, bbox[3] + margin)
    if (r1 - r0) * (c1 - c0) >= rows * cols:
        return None
    if [pl[:2] for pl in _octave_plan(sig, r1 - r0, c1 - c0)] != [pl[:2] for pl in plan]:
        return None
    return r0, r1, c0, c1


def _crop_ranges(extents: tuple[np.ndarray, np.ndarray], box: tuple[int, int, int, int],
                 pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``_kernel.mask_row_ranges(mask[r0:r1, c0:c1], pad)`` from the mask's
    row extents ``(lo, hi)`` (``mask[r]`` is False outside ``lo[r] <= c <
    hi[r]`` and True at both ends; ``(0, 0)``: no mask) for a box holding
    every masked pixel: per row of the box, the hull of the extents of the
    rows within ``pad``, grown by ``pad`` and clipped to the box, in the
    box's columns. In C (``_kernel.extent_ranges``) when there is the
    kernel, else NumPy (the same values)."""
    r0, r1, c0, c1 = box
    if _CROP_RANGES_KERNEL and _kernel_has("extent_ranges"):
        _kernel = _compiled.kernel

        return _kernel.extent_ranges(extents[0], extents[1], r0, r1, c0, c1, int(pad))
    lo, hi = (np.asarray(a, dtype=np.int64) for a in extents)
    rows = np.arange(r0 - pad, r1 + pad)
    inside = (rows >= 0) & (rows < len(lo))
    first = np.full(len(rows), np.iinfo(np.int32).max, dtype=np.int64)
    end = np.full(len(rows), np.iinfo(np.int32).min, dtype=np.int64)
    q = rows[inside]
    has = lo[q] < hi[q]
    first[inside] = np.where(has, lo[q], first[inside])
    end[inside] = np.where(has, hi[q], end[inside])
    n = r1 - r0
    a, b = first[:n].copy(), end[:n].copy()
    for k in range(1, 2 * pad + 1):  # the window's rows, a whole column at a time
        np.minimum(a, first[k:k + n], out=a)
        np.maximum(b, end[k:k + n], out=b)
    a = np.clip(a - pad - c0, 0, c1 - c0)
    b = np.clip(b + pad - c0, 0, c1 - c0)
    empty = a >= b
    a[empty] = 0
    b[empty] = 0
    return a.astype(np.int32), b.astype(np.int32)


#: ``_detect_plane(bbox=...)`` default: compute the mask's bounding box.
_UNKNOWN = object()

# The DoG response and its scale map are scratch of _plane_candidates: each
# thread keeps one pair of flat buffers and carves every plane's arrays
# from it, so a run of images (a batch, the slices of a stack, the same
# image again) writes into memory it already has instead of fresh pages
# (which the system must fault in and zero: about 5 ms per full-field
# image). Images above the cap are served fresh arrays; the memory is
# held until the thread ends or release_buffers() is called.
_SCRATCH = threading.local()
_SCRATCH_MAX_PIXELS = 48_000_000  # 240 MB of response + scale


def _dog_scratch(shape: tuple[int, int]):
    """(resp float32, scale uint8) arrays of ``shape`` in this thread's
    reusable buffers, or None above the cap (the kernel then allocates).

    The buffers start as zeros, and then hold only the kernel's output:
    the DoG with row ranges leaves the pixels outside them as they were,
    and the noise pass after it tests whole rows for NaN (a NaN there
    sends the call down the slow two-step path). Memory fresh from the
    allocator may hold any bits, NaNs included (a freed array of -1s, for
    one)."""
    n = int(shape[0]) * int(shape[1])
    if n > _SCRATCH_MAX_PIXELS:
        return None
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None or bufs[0].size < n:
        _SCRATCH.bufs = None  # the old pair goes before the new one comes
        bufs = _SCRATCH.bufs = (np.zeros(n, np.float32), np.zeros(n, np.uint8))
    return bufs[0][:n].reshape(shape), bufs[1][:n].reshape(shape)


def release_buffers() -> None:
    """Free the calling thread's reusable detection buffers (about 5 bytes
    per pixel of the largest image it has processed) and the kernel's
    reusable scratch (at most 256 MiB, shared by all threads: about 3 bytes
    per pixel of the octave DoG's coarser levels)."""
    _SCRATCH.bufs = None
    _kernel = _compiled.kernel
    if _kernel is None:  # a checkout without the built kernel: nothing held
        return
    if hasattr(_kernel, "release_buffers"):
        _kernel.release_buffers()


def _detect_plane(plane: np.ndarray, spacing_yx: tuple[float, float], p: DetectionParams,
                  nthreads: int, mask: np.ndarray | None, check: Callable[..., None] = lambda done=None: None,
                  nlf: tuple[np.ndarray, np.ndarray] | None = None, bbox: Any = _UNKNOWN,
                  large_cross: bool = True):
    """Candidates of one 2-D plane as a dict of arrays (raw measurements and
    the model features, see :mod:`napari_calc.core.score`). ``check`` is
    called between the stages (it raises to cancel). ``nlf``: the
    noise-level function to use (default: measured on this plane).
    ``bbox``: the mask's bounding box (:func:`_mask_bbox`) when the caller
    knows it (default: computed here). ``large_cross``: as :func:`_measure`.

    :func:`_plane_candidates`, then :func:`_measure`."""
    img, mask, sig, cand, side_nlf = _plane_candidates(plane, spacing_yx, p, nthreads, mask, check, bbox,
                                                       with_nlf=nlf is None)
    check("candidates")
    return _measure(img, mask, spacing_yx, p, nthreads, sig, nlf if nlf is not None else side_nlf, *cand,
                    large_cross=large_cross)


def _plane_candidates(plane: np.ndarray, spacing_yx: tuple[float, float], p: DetectionParams,
                      nthreads: int, mask: np.ndarray | None, check: Callable[..., None] = lambda done=None: None,
                      bbox: Any = _UNKNOWN, extents: tuple[np.ndarray, np.ndarray] | None = None,
                      with_nlf: bool = False):
    """The candidates of one 2-D plane before they are measured:
    ``(img, mask, sigmas, (rows, cols, snr, noise, response, pair), nlf)``, with
    ``img`` the plane as the kernel reads it, ``mask`` the mask used (None:
    the whole plane; the automatic one as a :class:`~.mask.BlockMask`, which
    the noise-level function also takes), rows and cols int32, the response
    float32, the DoG pair int64, at most ``max_candidates`` (the highest SNR).

    The DoG, the local noise and the non-maximum suppression run on the
    mask's bounding box plus a margin (:func:`_crop_box`), and the DoG only
    on each row's part of the mask grown by the NMS radius
    (:func:`_crop_ranges`), with the same results as on the whole image.
    ``extents``: the mask's row extents (``breast_mask_parts``) when the
    caller knows them (default: found here). ``with_nlf``: ``nlf`` is the
    plane's :func:`~.score.noise_level_function` within ``mask``, made in
    the DoG's call on one of its threads while the others filter (the
    function's C steps need neither the DoG nor the candidates); None
    when it was not made so (not asked, another code path, or left to the
    NumPy code), for the caller to make."""
    _kernel = _compiled.kernel
    if _kernel is None:  # (the DoG and the noise pass have no NumPy path)
        raise ImportError("napari_calc._kernel, napari-calc's compiled C kernel, is missing: build it with "
                          "'python setup.py build_ext --inplace' or 'pip install .' in the checkout")

    img = _kernel_input(plane)
    sp = min(spacing_yx)
    sig = dog_sigmas(sp, p.min_diameter_mm, p.max_diameter_mm)
    if mask is None and p.use_mask:
        # the automatic mask stays as its 1 mm blocks: noise_nms reads it so
        mask, bbox, extents = breast_mask_blocks(img, spacing_yx, skin_margin_mm=p.skin_margin_mm,
                                                 n_threads=nthreads)
        check("mask")
    blocks = mask if isinstance(mask, BlockMask) else None
    if mask is None:
        m8 = None
    elif blocks is not None:
        m8 = blocks  # (made in full only for the two-step path below)
    elif mask.dtype == bool and mask.flags.c_contiguous:
        m8 = mask.view(np.uint8)  # no copy
    else:
        m8 = np.ascontiguousarray(mask, dtype=np.uint8)

    tile = max(8, int(round(p.noise_tile_mm / sp)))
    radius = int(round(p.nms_radius_mm / sp))
    box = None
    if m8 is not None:
        if bbox is _UNKNOWN:
            bbox = _mask_bbox(mask)
        if bbox is None:
            # an empty mask: no candidates (whatever the response)
            return img, mask, sig, _no_candidates(), None
        if _CROP_TO_MASK:
            box = _crop_box(img.shape, bbox, sig, tile, radius)
    if box is not None:
        r0, r1, c0, c1 = box
        img_c = img[r0:r1, c0:c1]  # a view: the kernel reads crops
    else:
        r0, r1, c0, c1 = 0, img.shape[0], 0, img.shape[1]
        img_c = img
    # the mask's crop (blocks: none, noise_nms reads them)
    m8_c = None if m8 is None or blocks is not None else m8[r0:r1, c0:c1]
    ranges = None
    if m8 is not None and _ROW_RANGES and _kernel_has("mask_row_ranges"):
        # only the mask grown by the NMS radius is wanted of the response
        # (noise_nms reads the rest but uses none of it): per row, the DoG
        # computes just the columns those pixels depend on (the breast's curved
        # edge leaves about a fifth of its box out)
        if extents is not None:
            ranges = _crop_ranges(extents, (r0, r0 + img_c.shape[0], c0, c0 + img_c.shape[1]), radius)
        else:
            ranges = _kernel.mask_row_ranges(m8_c, radius, nthreads)
    min_count = max(16, tile * tile // 8)
    fused = None
    side_nlf = None
    noise_args = dict(blocks=None if blocks is None else (blocks.tissue, blocks.fy, blocks.fx, r0, c0),
                      top=int(p.max_candidates) if _NOISE_NMS_TOP else 0)
    # resp and scale are scratch (see _dog_scratch): nothing below keeps a view of them
    if _NOISE_NMS_KERNEL and _DOG_NOISE_KERNEL and _kernel_has("dog_noise_nms"):
        # the DoG and the noise pass below in one call: the coarser levels
        # are merged into the response band by band as the noise pass
        # reaches it (the same values, one read of the response less)
        job = nlf_job(img, mask) if with_nlf and _SIDE_NLF else None
        if job is not None:
            # and the noise-level function's C steps on one of its threads
            noise_args["nlf"] = job
        got = _kernel.dog_noise_nms(img_c, sig, TRUNCATE, OCTAVE_SPLIT_SIGMA, 16, nthreads,
                                    _dog_scratch(img_c.shape), ranges, tile, m8_c, min_count,
                                    float(p.threshold), radius, **noise_args)
        resp, scale, fused = got[:3]
        if job is not None:
            side_nlf = nlf_of_fit(got[3])
        check("dog")
    else:
        resp, scale = _kernel.dog_octaves(img_c, sig, TRUNCATE, OCTAVE_SPLIT_SIGMA, 16, nthreads,
                                          _dog_scratch(img_c.shape), ranges=ranges)
        check("dog")
        if _NOISE_NMS_KERNEL and _kernel_has("noise_nms"):
            # the local noise, its fix-up below, the peaks and their values
            # in one pass over the response (each band's peaks while its
            # rows are in cache); None where the kernel leaves it to the
            # steps below (no valid tile, NaNs)
            fused = _kernel.noise_nms(resp, tile, m8_c, min_count, float(p.threshold), radius, nthreads,
                                      values=True, **noise_args)
    if fused is not None:
        grid, rr, cc, r_at, noise, snr = fused
        check("noise")
        check("peaks")
    else:
        if ranges is not None:
            # the steps below read every pixel of the response: all of it
            resp, scale = _kernel.dog_octaves(img_c, sig, TRUNCATE, OCTAVE_SPLIT_SIGMA, 16, nthreads,
                                              (resp, scale))
        if blocks is not None:  # and the mask in full
            m8_c = blocks.full(nthreads)[r0:r1, c0:c1].view(np.uint8)
        grid = _noise_grid(img, resp, m8_c, sig, tile, min_count, (r0, c0), box is not None, nthreads)
        check("noise")
        rr, cc = _kernel.nms(resp, float(p.threshold), radius, m8_c, grid, tile, nthreads)
        check("peaks")
        if _kernel_has("peak_values"):
            # the same gathers and division in one C pass
            r_at, noise, snr, _ = _kernel.peak_values(resp, grid, tile, rr, cc, None, nthreads)
        else:
            noise = grid[rr // tile, cc // tile].astype(np.float64)
            r_at = resp[rr, cc]
            snr = r_at.astype(np.float64) / noise
    top = None
    if (_PEAK_KERNEL and _kernel_has("top_peaks") and rr.dtype == cc.dtype == np.int32 and r_at.dtype == np.float32
            and noise.dtype == snr.dtype == np.float64):
        try:  # the selection and the gathers below in one C call
            top = _kernel.top_peaks(rr, cc, r_at, noise, snr, scale, int(p.max_candidates), nthreads,
                                    *((r0, c0) if box is not None else (0, 0)))
        except ValueError:  # NaNs: as below
            pass
    if top is not None:
        rr, cc, r_at, noise, snr, s_idx = top  # (rr, cc in image coordinates)
    else:
        if len(rr) > p.max_candidates:
            keep = _top_k(snr, p.max_candidates, nthreads)
            rr, cc, snr, noise, r_at = rr[keep], cc[keep], snr[keep], noise[keep], r_at[keep]
        s_idx = scale[rr, cc].astype(np.int64)  # the kept ones only: a cache miss each
        if box is not None:
            rr, cc = rr + r0, cc + c0  # back to image coordinates
    return img, mask, sig, (rr, cc, snr, noise, r_at, s_idx), side_nlf


def _noise_grid(img, resp, m8_c, sig, tile: int, min_count: int, origin: tuple[int, int], cropped: bool,
                nthreads: int) -> np.ndarray:
    """The local noise of :func:`_plane_candidates`, per tile of ``resp``
    (the response of ``img``'s crop at ``origin``, whole when not
    ``cropped``): the tiles' robust noise, and where a tile has too few
    breast pixels or is flat, the median of the others (or, when no tile
    is valid, the robust noise of the whole image). ``_kernel.noise_nms``
    gives the same grid."""
    _kernel = _compiled.kernel

    r0, c0 = origin
    grid = _kernel.tile_noise(resp, tile, m8_c, min_count=min_count, nthreads=nthreads)
    # tiles with too few breast pixels, or flat ones, take the median of the
    # others (or, when no tile is valid, the robust noise of the whole image)
    bad = ~np.isfinite(grid) | (grid <= 0)
    if bad.any():
        if bad.all():
            # sampled as on the whole image: every stride-th pixel of every
            # stride-th row of the image (none of the mask is outside the crop)
            stride = max(1, int(math.sqrt(img.size / 1e6)))
            sub = np.s_[(-r0) % stride:: stride, (-c0) % stride:: stride]
            global_noise = _kernel.mad_noise(np.ascontiguousarray(resp[sub]),
                                             None if m8_c is None else np.ascontiguousarray(m8_c[sub]), 1)
            if not np.isfinite(global_noise) or global_noise <= 0:
                full = resp if not cropped else _kernel.dog_octaves(
                    img, sig, TRUNCATE, OCTAVE_SPLIT_SIGMA, 16, nthreads)[0]
                global_noise = float(np.std(full)) or 1.0
        else:
            global_noise = _median_f32(grid[~bad])
        grid[bad] = global_noise

    return grid


def _median_f32(a: np.ndarray) -> float:
    """``float(numpy.median(a))`` of a non-empty 1-D float32 array without
    NaN, bit for bit, without numpy.median's overhead (a tenth of a
    millisecond a call). numpy.median takes numpy.mean of the middle value
    or the two middle values, a float32 sum that starts from +0 (so -0
    becomes +0) divided by the count: the same here."""
    n = a.size
    h = n // 2
    zero = np.float32(0.0)
    if n % 2:
        return float(zero + np.partition(a, h)[h])
    part = np.partition(a, (h - 1, h))
    return float((zero + part[h - 1] + part[h]) / np.float32(2))


def _mean_projection(planes: np.ndarray, nthreads: int) -> np.ndarray:
    """``planes.mean(axis=0, dtype=np.float32)``, bit for bit: in C
    (``_kernel.plane_mean``, the same float32 additions in plane order, in
    parallel) for uint16/float32 planes, else NumPy."""
    if _kernel_has("plane_mean") and planes.dtype in (np.uint16, np.float32):
        _kernel = _compiled.kernel

        try:
            return _kernel.plane_mean(planes, nthreads)
        except ValueError:  # a layout the kernel does not read: NumPy
            pass
    return planes.mean(axis=0, dtype=np.float32)


def _no_candidates() -> tuple:
    """An empty candidate tuple of :func:`_plane_candidates`."""
    empty = np.empty(0, dtype=np.int32)
    return empty, empty, np.empty(0), np.empty(0), np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)


def _measure(img, mask, spacing_yx, p, nthreads, sig, nlf, rr, cc, snr, noise, r_at, s_idx,
             large_cross: bool = True) -> dict:
    """The candidate measurements and model features of
    :func:`_detect_plane` at image positions ``rr``, ``cc`` (int32), with
    their SNR, noise, DoG response ``r_at`` and DoG pair ``s_idx`` (see
    :func:`_plane_candidates`). Each candidate's values depend on the
    image and on it alone. ``large_cross`` false: ``h3_rc`` is left NaN,
    for :func:`_large_cross` to measure on the candidates kept."""
    _kernel = _compiled.kernel

    sp = min(spacing_yx)
    sigma_eff = sig[s_idx] * math.sqrt(SCALE_RATIO)  # geometric mean of the pair
    diameter_mm = np.minimum(np.maximum(2 * math.sqrt(2) * sigma_eff * sp, p.min_diameter_mm),
                             p.max_diameter_mm)  # (np.clip of finite values, without its Python layer)
    blob_radius_px = (sigma_eff * math.sqrt(2)).astype(np.float32)
    r32, c32 = np.ascontiguousarray(rr, dtype=np.int32), np.ascontiguousarray(cc, dtype=np.int32)
    feats = _kernel.candidate_features(img, r32, c32, np.ascontiguousarray(blob_radius_px), nthreads)
    contrast, bg_std, peak, area, elong = feats.astype(np.float64)  # one conversion, five rows
    s32 = np.ascontiguousarray(sigma_eff, dtype=np.float32)
    # a fixed physical scale beyond any MC: large (benign) objects respond there
    sL = np.full(len(rr), LARGE_OBJECT_SIGMA_MM / sp, dtype=np.float32)
    # the three scales in one pass (each the same as local_hessian at that sigma)
    h1, h2, h3 = _kernel.local_hessian3(img, r32, c32, s32, np.ascontiguousarray(2 * s32), sL,
                                        HESSIAN_TRUNCATE, nthreads, cross=(True, True, large_cross)
                                        ).astype(np.float64)
    lev, nsd = nlf if nlf is not None else noise_level_function(img, mask, n_threads=nthreads)
    nlf_sd = interp(h2[0], lev, nsd, nthreads)
    cnr = np.divide(contrast, nlf_sd, out=np.zeros(len(contrast)), where=nlf_sd > 0)  # 0 where no noise level
    out = dict(row=rr.astype(np.int64), col=cc.astype(np.int64), snr=snr, noise=noise,
               diameter_mm=diameter_mm, contrast=contrast, cnr=cnr, peak=peak,
               area_mm2=area * spacing_yx[0] * spacing_yx[1], elongation=elong,
               response=r_at.astype(np.float64), nlf_sd=nlf_sd, bg_std=bg_std,
               sigma_px=sigma_eff, area_px=area)
    for k, name in enumerate(("g", "rr", "rc", "cc")):
        out["h1_" + name] = h1[k]
        out["h2_" + name] = h2[k]
        out["h3_" + name] = h3[k]
    out["sigma_large_px"] = sL.astype(np.float64)
    return out


def _large_cross(c: dict, planes: np.ndarray, nthreads: int) -> None:
    """Set ``c["h3_rc"]``, the large scale's cross derivative that
    :func:`_measure` left out (``large_cross=False``), for the candidates
    in ``c`` (the kept ones), on their planes: the very values
    ``_measure`` gives (``local_hessian3`` computes each scale as
    ``local_hessian`` does)."""
    _kernel = _compiled.kernel

    sl = c["slice"]
    for s in np.unique(sl) if len(planes) > 1 else (0,):
        at = np.flatnonzero(sl == s) if len(planes) > 1 else slice(None)  # (one plane: every candidate)
        h = _kernel.local_hessian(_kernel_input(planes[s]), c["row"][at].astype(np.int32),
                                  c["col"][at].astype(np.int32),
                                  c["sigma_large_px"][at].astype(np.float32), HESSIAN_TRUNCATE, nthreads)
        c["h3_rc"][at] = h[2]


def _score(c: dict, spacing: tuple[float, ...], n_threads: int = 0) -> np.ndarray:
    """Calibrated probability of being a microcalcification, from the
    shipped model (:mod:`napari_calc.core.score`; its context stage uses
    the candidates' positions in mm)."""
    X = candidate_feature_matrix(c, n_threads)
    try:
        model = load_model()
    except (FileNotFoundError, OSError):
        # no shipped model (a development checkout before training): a
        # logistic of the detection SNR, 0.5 at 6 sigma
        return 1.0 / (1.0 + np.exp(-(c["snr"] - 6.0) / 1.5))
    pos = [c["row"] * spacing[-2], c["col"] * spacing[-1]]
    if len(spacing) == 3:
        pos.insert(0, c["slice"] * spacing[0])
    return candidate_probability(X, np.column_stack(pos).astype(float), model, n_threads=n_threads)


def _near_pairs(ra, ca, rb, cb, radius: float, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` of points ``a[i]``, ``b[j]`` (integer rows and
    columns) at most ``radius`` apart; with ``same`` (``a`` is ``b``) each
    pair once, ``i < j``. Sort by row, then for each point of ``a`` the run
    of ``b`` within ``radius`` rows, filtered by the exact distance."""
    ob = np.argsort(rb, kind="stable")
    rbs = rb[ob]
    k = int(math.floor(radius))
    lo = np.searchsorted(rbs, ra - k, side="left")
    hi = np.searchsorted(rbs, ra + k, side="right")
    cnt = hi - lo
    i = np.repeat(np.arange(len(ra)), cnt)
    j = ob[np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))]
    ok = (ra[i] - rb[j]) ** 2 + (ca[i] - cb[j]) ** 2 <= radius ** 2
    if same:
        ok &= i < j
    return i[ok], j[ok]


#: Use the C kernel for the suppression across slices (tests switch it off
#: to compare with the NumPy code).
_MERGE_KERNEL = True


def _merge_keep_kernel(sl, row, col, snr, radius_px: float, nthreads: int = 0) -> np.ndarray | None:
    """The keep flags of :func:`_merge_slices` from the C kernel
    (``_kernel.merge_slices``: each point looks for a stronger one in the
    row window of its slice and the adjacent ones), or None to use NumPy:
    no kernel, switched off (:data:`_MERGE_KERNEL`), or points not in
    slice-then-row order (the slices' candidates come in raster order)."""
    if not _MERGE_KERNEL or not _kernel_has("merge_slices"):
        return None
    _kernel = _compiled.kernel

    sl = np.ascontiguousarray(sl, dtype=np.int64)
    if len(sl) > 1 and not ((np.diff(sl) > 0) | ((sl[1:] == sl[:-1]) & (row[1:] >= row[:-1]))).all():
        return None
    try:
        return _kernel.merge_slices(sl, np.ascontiguousarray(row), np.ascontiguousarray(col),
                                    np.ascontiguousarray(snr, dtype=np.float64), float(radius_px) ** 2,
                                    int(math.floor(radius_px)), int(nthreads))
    except ValueError:  # coordinates out of the kernel's range: NumPy decides
        return None


def _merge_slices(per_slice: list[dict], radius_px: float, nthreads: int = 0) -> dict:
    """3-D non-maximum suppression: one calcification spans a few slices;
    a detection is dropped when a stronger one (higher SNR; on ties, the
    earlier one in slice order) lies within ``radius_px`` in-plane on the
    same or an adjacent slice. Vectorised over the candidate pairs of each
    slice and of each pair of adjacent slices."""
    if not per_slice:
        return {}
    allc = {k: np.concatenate([d[k] for d in per_slice]) for k in per_slice[0]}
    n = len(allc["row"])
    if n == 0:
        return allc
    row = allc["row"].astype(np.int64)
    col = allc["col"].astype(np.int64)
    sl = allc["slice"]
    keep = _merge_keep_kernel(sl, row, col, allc["snr"], radius_px, nthreads)
    if keep is not None:
        return {k: v[keep] for k, v in allc.items()}
    by_slice = {int(v): np.flatnonzero(sl == v) for v in np.unique(sl)}
    found_i, found_j = [], []
    for v, ia in by_slice.items():
        for w, same in ((v, True), (v + 1, False)):
            ib = by_slice.get(w)
            if ib is None:
                continue
            i, j = _near_pairs(row[ia], col[ia], row[ib], col[ib], radius_px, same)
            found_i.append(ia[i])
            found_j.append(ib[j])
    keep = np.ones(n, dtype=bool)
    i = np.concatenate(found_i)
    j = np.concatenate(found_j)
    if len(i):
        # the stronger of a linked pair: higher SNR, NaN weakest, ties to the
        # earlier index (the order of a stable sort by decreasing SNR)
        si, sj = allc["snr"][i], allc["snr"][j]
        ni, nj = np.isnan(si), np.isnan(sj)
        first = i < j
        i_wins = (si > sj) | ((si == sj) & first) | (~ni & nj) | (ni & nj & first)
        keep[np.where(i_wins, j, i)] = False
    return {k: v[keep] for k, v in allc.items()}


def _merge_and_measure(planes, pre: list[tuple], spacing_yx, p: DetectionParams, nthreads: int,
                       sig: np.ndarray, nlf, check: Callable[[], None], large_cross: bool = True) -> dict:
    """The candidates of a stack: the slices' candidates (``pre``: for each
    slice its mask and candidates from :func:`_plane_candidates`) merged
    across slices (:func:`_merge_slices`),
    the ``max_candidates`` of highest SNR kept, and only those measured
    (:func:`_measure`, on their slice). Neither step looks at the
    measurements, and a candidate's measurements depend on its slice alone,
    so this is measuring every slice's candidates, merging and keeping the
    strongest, in the same order -- without measuring what is dropped."""
    lite = [dict(row=rr.astype(np.int64), col=cc.astype(np.int64), snr=snr,
                 slice=np.full(len(rr), s, dtype=np.int64), k=np.arange(len(rr)))
            for s, (_, (rr, cc, snr, *_rest)) in enumerate(pre)]
    m = _merge_slices(lite, p.nms_radius_mm / min(spacing_yx), nthreads)
    if len(m["row"]) > p.max_candidates:
        keep = _top_k(m["snr"], p.max_candidates, nthreads)
        m = {key: v[keep] for key, v in m.items()}
    parts = []
    for s in np.unique(m["slice"]):  # increasing: the merged order is by slice
        check()
        k = m["k"][m["slice"] == s]
        mask, cand = pre[s]
        d = _measure(_kernel_input(planes[s]), mask, spacing_yx, p, nthreads, sig, nlf,
                     *(a[k] for a in cand), large_cross=large_cross)
        d["slice"] = np.full(len(k), s, dtype=np.int64)
        parts.append(d)
    if not parts:  # nothing anywhere: the empty columns, as measured
        d = _measure(_kernel_input(planes[0]), pre[0][0], spacing_yx, p, nthreads, sig, nlf,
                     *_no_candidates())
        d["slice"] = np.empty(0, dtype=np.int64)
        parts.append(d)
    return {key: np.concatenate([d[key] for d in parts]) for key in parts[0]}


def detect(image, spacing_mm=None, *, mask=None, progress: Callable[[float, str], None] | None = None,
           cancel: Callable[[], bool] | None = None, n_threads: int = 0, **params) -> Detections:
    """Detect microcalcifications and group them into clusters.

    Parameters
    ----------
    image : MammoImage or ndarray
        A :class:`~napari_calc.core.image.MammoImage` (spacing from its
        metadata) or a bare 2-D array / 3-D stack ``(slice, row, col)`` in
        presentation polarity (bright = dense). Float pixels may be in any
        unit: an image whose largest magnitude is outside
        :data:`FLOAT_RANGE` is detected on a copy scaled by a power of two
        (exact), and its grey-level measurements (``contrast``, and those
        of ``extra``) are scaled back to the image's unit.
    spacing_mm : float or tuple of float, optional
        Pixel spacing in mm, ``(row_mm, col_mm)`` or
        ``(slice_mm, row_mm, col_mm)``. Required for bare arrays; overrides
        the image's own spacing when given. A scalar or a pair for a stack
        sets the in-plane spacing and keeps the image's slice spacing; a
        bare 3-D array needs all three.
    mask : ndarray of bool, optional
        Where to detect (same shape as one plane). By default the breast is
        segmented automatically (``use_mask=True``).
    progress : callable(fraction, message), optional
        Called as work advances, ``fraction`` from 0 to 1.
    cancel : callable() -> bool, optional
        Polled between steps; when it returns True, :class:`DetectionCancelled`
        is raised.
    n_threads : int
        Kernel threads (0: OpenMP default). Results do not depend on it.
    **params
        Fields of :class:`DetectionParams`.

    Returns
    -------
    Detections
        ``calcifications`` (one row per candidate, with ``status``
        ``"candidate"``) and ``clusters``, with exactly the public columns.

    Raises
    ------
    MissingSpacingError
        No spacing known.
    UnsupportedImageError
        Not a 2-D/3-D grey-level image, or too small for a calcification
        search (:func:`min_image_side`: 77x77 pixels at 0.07 mm by default).
    InvalidParameterError
        A parameter out of range (or an unknown parameter name).
    DetectionCancelled
        ``cancel()`` returned True.

    Examples
    --------
    >>> from napari_calc.core.phantom import make_phantom
    >>> ph = make_phantom(seed=1)
    >>> det = detect(ph.image)
    >>> list(det.calcifications.columns)[:3]
    ['calc_id', 'row', 'col']
    """
    unknown = set(params) - set(DetectionParams.__dataclass_fields__)
    if unknown:
        raise InvalidParameterError(
            f"unknown detection parameter(s): {', '.join(sorted(unknown))}; valid: "
            f"{', '.join(DetectionParams.__dataclass_fields__)}")
    p = DetectionParams(**params)
    p.validate()
    pixels, spacing, meta = _as_image(image, spacing_mm)
    src = meta.get("source_path")
    _check_size(pixels.shape, spacing[-2:], p, src)
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint16)
    shift = 0
    if pixels.dtype.kind == "f":
        lo, hi = float(pixels.min()), float(pixels.max())  # NaN if any is NaN
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise UnsupportedImageError("image contains NaN or infinite values", src)
        shift = _intensity_shift(lo, hi)
        if shift:
            pixels = _scaled(pixels, shift)
    planes = pixels if pixels.ndim == 3 else pixels[None]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != planes.shape[1:]:
            raise InvalidParameterError(f"mask shape {mask.shape} differs from image {planes.shape[1:]}", src)

    t0 = time.perf_counter()
    report = progress or (lambda f, m: None)
    spacing_yx = spacing[-2:]
    shared_mask = mask
    shared_bbox = _UNKNOWN
    shared_extents = None  # the shared mask's row extents (breast_mask_parts)
    def check(done=None):
        """Cancel here if asked; after a stage of a 2-D image (``done``), report progress."""
        if cancel is not None and cancel():
            raise DetectionCancelled("detection cancelled")
        if done in _STAGES and pixels.ndim == 2:
            report(*_STAGES[done])

    nd = pixels.ndim
    # the large scale's cross derivative for the kept candidates only, when
    # the planes go to the kernel as they are (a second conversion would
    # cost more than it saves) and not every candidate is kept
    late_cross = (_LATE_LARGE_CROSS and p.keep_min_score > 0 and planes.dtype in (np.uint16, np.float32)
                  and planes.flags.c_contiguous)
    pre = []
    stack_nlf = None  # a stack of one slice: that slice's own mask and NLF
    for s, plane in enumerate(planes):
        check()
        report(s / len(planes), f"detecting slice {s + 1}/{len(planes)}" if len(planes) > 1
               else "finding the breast" if shared_mask is None and p.use_mask else "filtering")
        if nd == 2:
            c = _detect_plane(plane, spacing_yx, p, n_threads, shared_mask, check, large_cross=not late_cross)
            c["slice"] = np.zeros(len(c["row"]), dtype=np.int64)
            break
        if s == 0 and len(planes) > 1:
            # one breast outline and one noise-level function for the whole
            # stack (same breast, same detector), from (at most 8) evenly
            # spread slices
            some = planes[:: max(1, len(planes) // 8)]
            if shared_mask is None and p.use_mask:
                proj = _mean_projection(some, n_threads)
                shared_mask, shared_bbox, shared_extents = breast_mask_parts(  # one crop for all slices
                    proj, spacing_yx, skin_margin_mm=p.skin_margin_mm, n_threads=n_threads)
            elif shared_mask is not None:
                shared_bbox = _mask_bbox(shared_mask)
                if _kernel_has("mask_row_ranges"):
                    _kernel = _compiled.kernel

                    shared_extents = _kernel.mask_row_ranges(np.ascontiguousarray(shared_mask).view(np.uint8), 0,
                                                             n_threads)
            stack_nlf = noise_level_function(some, shared_mask, n_threads=n_threads)
        _, mask_s, sig, cand, _ = _plane_candidates(plane, spacing_yx, p, n_threads, shared_mask, check,
                                                    shared_bbox, shared_extents)
        pre.append((mask_s, cand))
    check()
    report(0.9 if nd == 3 else 0.95, "measuring" if nd == 3 else "clustering")
    if nd == 3:
        c = _merge_and_measure(planes, pre, spacing_yx, p, n_threads, sig, stack_nlf, check,
                               large_cross=not late_cross)
        report(0.95, "clustering")
    if len(c["row"]) > p.max_candidates:
        keep = _top_k(c["snr"], p.max_candidates, n_threads)
        c = {k: v[keep] for k, v in c.items()}
    score = _score(c, spacing, n_threads)
    # order: by slice, then row, col (deterministic, independent of threads);
    # the kept candidates in that order, taken from each array at once
    if p.keep_min_score > 0 and len(score):
        kept = np.flatnonzero(score >= p.keep_min_score)
        order = kept[np.lexsort((c["col"][kept], c["row"][kept], c["slice"][kept]))]
    else:
        order = np.lexsort((c["col"], c["row"], c["slice"]))
    c = {k: v[order] for k, v in c.items()}
    score = score[order]
    n = len(c["row"])
    if late_cross and n:
        _large_cross(c, planes, n_threads)
    for k in _INTENSITY_KEYS if shift else ():
        c[k] = np.ldexp(c[k], -shift)  # exact: the grey levels of the image given
    y_mm, x_mm = c["row"] * spacing_yx[0], c["col"] * spacing_yx[1]
    # clusters as assign_clusters() sets them (every status is "candidate"),
    # from the arrays rather than through the DataFrame
    pos = [y_mm, x_mm] if nd == 2 else [c["slice"] * spacing[0], y_mm, x_mm]
    cluster_id = _cluster_ids(np.column_stack(pos), score >= p.cluster_min_score, p, n_threads)
    columns = {
        "calc_id": np.arange(n, dtype=np.int64),
        "row": c["row"],
        "col": c["col"],
        "y_mm": y_mm,
        "x_mm": x_mm,
        "diameter_mm": c["diameter_mm"],
        "contrast": c["contrast"],
        "cnr": c["cnr"],
        "score": score,
        "cluster_id": cluster_id,
        "status": np.full(n, "candidate", dtype=object),
    }
    if nd == 3:
        columns["z_mm"] = pos[0]
        columns["slice"] = c["slice"]
    # built in the public column order (no reordering copy)
    calcs = frame_of_arrays({k: columns[k] for k in calc_columns(nd)})
    # cluster_table(calcs), from the arrays the columns were made of
    clusters = _cluster_table(cluster_id, score, columns, nd)
    public = {"row", "col", "slice", "diameter_mm", "contrast", "cnr"}
    extra = frame_of_arrays({k: v for k, v in c.items() if k not in public})
    params_used = dict(p.__dict__)
    params_used["spacing_mm"] = list(spacing)
    params_used["dog_sigmas_px"] = dog_sigmas(min(spacing_yx), p.min_diameter_mm, p.max_diameter_mm).tolist()
    params_used["seconds"] = round(time.perf_counter() - t0, 4)
    report(1.0, "done")
    return Detections(calcifications=calcs, clusters=clusters, spacing_mm=spacing,
                      image_shape=tuple(int(s) for s in pixels.shape), params=params_used,
                      metadata=meta, extra=extra)


def assign_clusters(calcs: pd.DataFrame, p: DetectionParams | None = None, ndim: int = 2) -> None:
    """Set ``calcs["cluster_id"]`` in place from positions in mm.

    Rejected calcifications and those scoring below
    ``p.cluster_min_score`` take no part (cluster_id -1). Used after
    detection and again after every review edit.
    """
    p = p or DetectionParams()
    take = ((calcs["status"] != "rejected") & (calcs["score"] >= p.cluster_min_score)).to_numpy()
    cols = ["z_mm", "y_mm", "x_mm"] if ndim == 3 else ["y_mm", "x_mm"]
    calcs["cluster_id"] = _cluster_ids(calcs[cols].to_numpy(float), take, p)


def _cluster_ids(points_mm: np.ndarray, take: np.ndarray, p: DetectionParams, n_threads: int = 0) -> np.ndarray:
    """Cluster id of each point (:data:`NO_CLUSTER` where ``take`` is False
    or the point is in no cluster): the clustering rule of
    :func:`assign_clusters`, on arrays."""
    ids = np.full(len(points_mm), NO_CLUSTER, dtype=np.int64)
    ids[take] = cluster_calcifications(points_mm[take], radius_mm=p.cluster_radius_mm,
                                       min_size=int(p.min_cluster_size), n_threads=n_threads)
    return ids
