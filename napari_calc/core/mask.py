"""Breast segmentation: where in the image detection should look."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["breast_mask", "otsu_threshold"]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (between-class variance maximum)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def breast_mask(pixels: np.ndarray, spacing_mm, *, skin_margin_mm: float = 1.5,
                work_mm: float = 1.0) -> np.ndarray:
    """Boolean mask of the breast, excluding a margin along the skin line.

    The image is averaged down to ``work_mm`` pixels, split into air and
    tissue with Otsu's threshold, reduced to its largest connected tissue
    component with holes filled, eroded by ``skin_margin_mm`` and scaled
    back up. When the image shows no clear air background (less than 3 % or
    more than 97 % of it below the threshold, e.g. a crop inside the breast),
    the whole image is kept.

    Parameters
    ----------
    pixels : ndarray, 2-D
        Presentation-polarity image (dense = bright, air = dark).
    spacing_mm : float or (float, float)
        Pixel spacing.
    skin_margin_mm : float
        Width of the band along the skin line excluded from detection.
    work_mm : float
        Resolution the segmentation is computed at.

    Returns
    -------
    ndarray of bool, same shape as ``pixels``.
    """
    pixels = np.asarray(pixels)
    sy, sx = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    fy = max(1, int(round(work_mm / sy)))
    fx = max(1, int(round(work_mm / sx)))
    h, w = pixels.shape
    hh, ww = h // fy, w // fx
    full = np.ones((h, w), dtype=bool)
    if hh < 4 or ww < 4:
        return full
    small = pixels[: hh * fy, : ww * fx].reshape(hh, fy, ww, fx).mean(axis=(1, 3), dtype=np.float64)
    thr = otsu_threshold(small)
    tissue = small > thr
    frac_air = 1.0 - tissue.mean()
    if frac_air < 0.03 or frac_air > 0.97:
        return full
    labels, n = ndi.label(tissue)
    if n == 0:
        return full
    sizes = ndi.sum_labels(tissue, labels, index=np.arange(1, n + 1))
    tissue = labels == (1 + int(np.argmax(sizes)))
    tissue = ndi.binary_fill_holes(tissue)
    margin = int(round(skin_margin_mm / work_mm))
    if margin > 0:
        # the image border is not skin: pad with tissue before eroding
        tissue = ndi.binary_erosion(np.pad(tissue, margin, mode="edge"), iterations=margin)[
            margin:-margin, margin:-margin]
    up = np.repeat(np.repeat(tissue, fy, axis=0), fx, axis=1)
    out = np.zeros((h, w), dtype=bool)
    out[: up.shape[0], : up.shape[1]] = up
    # rows/cols cut off by the block size take the nearest block's value
    if up.shape[0] < h:
        out[up.shape[0]:, : up.shape[1]] = up[-1:, :]
    if up.shape[1] < w:
        out[:, up.shape[1]:] = out[:, up.shape[1] - 1: up.shape[1]]
    return out
