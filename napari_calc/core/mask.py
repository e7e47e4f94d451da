"""Breast segmentation: where in the image detection should look."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from . import _compiled

__all__ = ["BlockMask", "block_mean", "breast_mask", "breast_mask_and_bbox", "breast_mask_blocks",
           "breast_mask_parts", "otsu_threshold", "upscale_mask"]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (between-class variance maximum)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    kern = _kernel_with("otsu")
    if kern is not None and values.size:
        try:
            return kern.otsu(np.ascontiguousarray(values), int(bins))  # all of the below, in C
        except ValueError:  # NaN or infinite values: as below
            pass
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        # every value equal: that value, a zero as +0.0 (which zero min
        # returns of a sample of both depends on NumPy's loops)
        return lo + 0.0
    kern = _kernel_with("histogram")
    if kern is not None and np.isfinite(lo) and np.isfinite(hi):
        # numpy.histogram's counts in one pass in C, from numpy's own edges
        edges = np.linspace(lo, hi, bins + 1, endpoint=True, dtype=np.float64)
        hist = kern.histogram(np.ascontiguousarray(values), lo, hi, edges)
    else:
        hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


#: Use the C kernels of the mask: the histogram of otsu_threshold, the
#: erosion, and breast_mask_blocks's steps after the block means in one
#: call (tests switch them off to compare with the NumPy/SciPy code).
_MASK_KERNEL = True
#: Below this air fraction, or above the other, the image shows no clear
#: air background and the whole image is kept (see breast_mask).
_AIR_MIN, _AIR_MAX = 0.03, 0.97


def _kernel_with(name: str):
    """The compiled kernel module when it has ``name`` and is not switched
    off (:data:`_MASK_KERNEL`), else None."""
    if not _MASK_KERNEL:
        return None
    _kernel = _compiled.kernel
    if _kernel is None:  # a checkout without the built kernel
        return None
    return _kernel if hasattr(_kernel, name) else None


def block_mean(pixels: np.ndarray, fy: int, fx: int, n_threads: int = 0) -> np.ndarray:
    """Means of the ``fy`` x ``fx`` blocks of a 2-D image, float64.

    The rows and columns left over by the block size are left out, as in
    ``pixels[:h, :w].reshape(h // fy, fy, w // fx, fx).mean(axis=(1, 3),
    dtype=np.float64)``, which this is: uint16 images go to the C kernel
    (exact integer sums: bit-identical to NumPy), float32 ones too (float64
    sums in another order than NumPy's: equal to ~1e-16 relative), other
    pixel types to NumPy.

    Parameters
    ----------
    pixels : ndarray, 2-D
    fy, fx : int
        Block height and width (>= 1).
    n_threads : int
        Kernel threads (0: OpenMP default); the result does not depend on it.

    Returns
    -------
    ndarray of float64, shape ``(h // fy, w // fx)``.
    """
    pixels = np.asarray(pixels)
    h, w = pixels.shape
    hh, ww = h // fy, w // fx
    if pixels.dtype in (np.uint16, np.float32) and pixels.flags.c_contiguous and hh and ww:
        _kernel = _compiled.kernel  # (None in a checkout without the built kernel)
        if _kernel is not None and hasattr(_kernel, "block_mean"):
            return _kernel.block_mean(pixels, int(fy), int(fx), int(n_threads))
    return pixels[: hh * fy, : ww * fx].reshape(hh, fy, ww, fx).mean(axis=(1, 3), dtype=np.float64)


def _fill_holes(tissue: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` (4-connected background): the background
    components that do not touch the image edge become foreground. One
    labelling instead of a dilation iterated to convergence."""
    lab, _ = ndi.label(~tissue)
    edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    outside = np.zeros(lab.max() + 1, dtype=bool)
    outside[edge] = True
    outside[0] = True   # label 0 is the foreground itself
    return tissue | ~outside[lab]


def _erode_diamond(a: np.ndarray, n: int) -> np.ndarray:
    """``ndi.binary_erosion(a, iterations=n)`` with the default cross (n
    cross erosions = one erosion by the L1 ball of radius n; outside the
    array counts as background): a pixel stays when its city-block distance
    to the nearest background pixel, the outside included, exceeds n
    (two raster passes in C, ``_kernel.erode_l1``, when there is the
    kernel)."""
    kern = _kernel_with("erode_l1")
    if kern is not None and a.ndim == 2 and a.size:
        return kern.erode_l1(a, int(n))
    if a.all():
        d = np.full(a.shape, np.iinfo(np.int32).max, dtype=np.int64)
    else:
        d = ndi.distance_transform_cdt(a, metric="taxicab").astype(np.int64)
    rows = np.arange(a.shape[0])
    cols = np.arange(a.shape[1])
    to_edge = np.minimum.outer(np.minimum(rows + 1, a.shape[0] - rows), np.minimum(cols + 1, a.shape[1] - cols))
    return np.minimum(d, to_edge) > n


def breast_mask(pixels: np.ndarray, spacing_mm, *, skin_margin_mm: float = 1.5,
                work_mm: float = 1.0, n_threads: int = 0) -> np.ndarray:
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
    n_threads : int
        Threads of the block averaging (0: OpenMP default); the result does
        not depend on it.

    Returns
    -------
    ndarray of bool, same shape as ``pixels``.
    """
    return breast_mask_and_bbox(pixels, spacing_mm, skin_margin_mm=skin_margin_mm, work_mm=work_mm,
                                n_threads=n_threads)[0]


def breast_mask_and_bbox(pixels: np.ndarray, spacing_mm, *, skin_margin_mm: float = 1.5,
                         work_mm: float = 1.0, n_threads: int = 0
                         ) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """:func:`breast_mask` and the mask's bounding box ``(r0, r1, c0, c1)``
    (half-open; None when the mask is empty), the box taken from the
    working-resolution mask rather than by scanning the full-size one."""
    mask, bbox, _ = breast_mask_parts(pixels, spacing_mm, skin_margin_mm=skin_margin_mm, work_mm=work_mm,
                                      n_threads=n_threads)
    return mask, bbox


def breast_mask_parts(pixels: np.ndarray, spacing_mm, *, skin_margin_mm: float = 1.5,
                      work_mm: float = 1.0, n_threads: int = 0
                      ) -> tuple[np.ndarray, tuple[int, int, int, int] | None, tuple[np.ndarray, np.ndarray]]:
    """:func:`breast_mask_and_bbox`, and each row's extent: ``(lo, hi)``,
    int32 arrays with ``mask[r, c]`` False for ``c < lo[r]`` and
    ``c >= hi[r]`` and True at both ends (``(0, 0)`` for a row without
    mask), taken from the working-resolution mask like the box."""
    blocks, bbox, extents = breast_mask_blocks(pixels, spacing_mm, skin_margin_mm=skin_margin_mm,
                                               work_mm=work_mm, n_threads=n_threads)
    return blocks.full(n_threads), bbox, extents


class BlockMask:
    """A full-size mask kept as its working-resolution blocks: block
    ``(i, j)`` of ``tissue`` covers rows ``i fy`` to ``(i + 1) fy`` and
    columns ``j fx`` to ``(j + 1) fx`` of an image of ``shape``, the last
    block row and column also the rows and columns left over (the mask
    :func:`upscale_mask` makes). Detection reads it block-wise (the
    ``blocks`` of ``_kernel.dog_noise_nms`` and ``_kernel.noise_nms``)
    and never makes it in full.

    Attributes
    ----------
    tissue : ndarray of bool, 2-D, at least 1 x 1
    fy, fx : int
        Block height and width (>= 1).
    shape : (int, int)
        The full size, at least ``tissue``'s times the blocks'.
    """

    __slots__ = ("tissue", "fy", "fx", "shape")

    def __init__(self, tissue: np.ndarray, fy: int, fx: int, shape: tuple[int, int]):
        self.tissue = np.ascontiguousarray(tissue, dtype=bool)
        self.fy, self.fx = int(fy), int(fx)
        self.shape = (int(shape[0]), int(shape[1]))

    @classmethod
    def whole(cls, shape: tuple[int, int]) -> "BlockMask":
        """Every pixel of an image of ``shape``."""
        return cls(np.ones((1, 1), dtype=bool), max(1, shape[0]), max(1, shape[1]), shape)

    def full(self, n_threads: int = 0) -> np.ndarray:
        """The full-size bool mask."""
        h, w = self.shape
        if self.tissue.all():
            return np.ones((h, w), dtype=bool)
        return upscale_mask(self.tissue, self.fy, self.fx, h, w, n_threads)

    def sample(self, rows: slice, cols: slice) -> np.ndarray:
        """``self.full()[rows, cols]`` (a C-contiguous copy), made from the
        blocks."""
        hh, ww = self.tissue.shape
        i = np.minimum(np.arange(self.shape[0])[rows] // self.fy, hh - 1)
        j = np.minimum(np.arange(self.shape[1])[cols] // self.fx, ww - 1)
        # (columns first, then whole rows; take on bytes beats fancy indexing)
        return np.take(np.take(self.tissue.view(np.uint8), j, axis=1), i, axis=0).view(bool)


def breast_mask_blocks(pixels: np.ndarray, spacing_mm, *, skin_margin_mm: float = 1.5,
                       work_mm: float = 1.0, n_threads: int = 0
                       ) -> tuple[BlockMask, tuple[int, int, int, int] | None, tuple[np.ndarray, np.ndarray]]:
    """:func:`breast_mask_parts` with the mask as a :class:`BlockMask`
    (the working-resolution mask, not upscaled)."""
    pixels = np.asarray(pixels)
    if isinstance(spacing_mm, tuple) and len(spacing_mm) == 2:  # (detect's: two floats)
        sy, sx = float(spacing_mm[0]), float(spacing_mm[1])
    else:
        sy, sx = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    fy = max(1, int(round(work_mm / sy)))
    fx = max(1, int(round(work_mm / sx)))
    h, w = pixels.shape
    hh, ww = h // fy, w // fx

    def no_mask():  # the whole image: no breast found, or too small to look
        whole = (0, h, 0, w) if h and w else None
        return BlockMask.whole((h, w)), whole, (np.zeros(h, np.int32), np.full(h, w, np.int32))

    if hh < 4 or ww < 4:
        return no_mask()
    small = block_mean(pixels, fy, fx, n_threads)
    margin = int(round(skin_margin_mm / work_mm))
    kern = _kernel_with("breast_blocks")
    if kern is not None:
        # the steps below in one C call (a NaN block mean: as below)
        try:
            got = kern.breast_blocks(np.ascontiguousarray(small), 256, _AIR_MIN, _AIR_MAX, max(margin, 0),
                                     fy, fx, h, w, int(n_threads))
        except ValueError:
            got = False
        if got is None:
            return no_mask()
        if got is not False:
            tissue, bbox, extents = got
            return BlockMask(tissue, fy, fx, (h, w)), bbox, extents
    thr = otsu_threshold(small)
    tissue = small > thr
    frac_air = 1.0 - tissue.mean()
    if frac_air < _AIR_MIN or frac_air > _AIR_MAX:
        return no_mask()
    kern = _kernel_with("largest_component")
    if kern is not None:
        # the same labelling, choice and hole filling in one C call
        n, tissue = kern.largest_component(tissue)
    else:
        labels, n = ndi.label(tissue)
        if n:
            sizes = ndi.sum_labels(tissue, labels, index=np.arange(1, n + 1))
            tissue = _fill_holes(labels == (1 + int(np.argmax(sizes))))
    if n == 0:
        return no_mask()
    if margin > 0:
        # the image border is not skin: pad with tissue before eroding
        tissue = _erode_diamond(np.pad(tissue, margin, mode="edge"), margin)[margin:-margin, margin:-margin]
    kern = _kernel_with("block_extents")
    if kern is not None:  # the box and the extents in one C call
        bbox, extents = kern.block_extents(tissue, fy, fx, h, w)
    else:
        bbox, extents = _upscaled_bbox(tissue, fy, fx, h, w), _upscaled_extents(tissue, fy, fx, h, w)
    return BlockMask(tissue, fy, fx, (h, w)), bbox, extents


def upscale_mask(tissue: np.ndarray, fy: int, fx: int, h: int, w: int, n_threads: int = 0) -> np.ndarray:
    """The ``h`` x ``w`` mask of a working-resolution one: block ``(i, j)``
    of ``tissue`` covers ``fy`` x ``fx`` pixels, and the rows and columns
    cut off by the block size take the nearest block's value.

    Parameters
    ----------
    tissue : ndarray of bool, 2-D ``(hh, ww)``, ``hh, ww >= 1``
        The mask at the working resolution, ``hh <= h // fy``,
        ``ww <= w // fx``.
    fy, fx : int
        Block height and width (>= 1).
    h, w : int
        The full size.
    n_threads : int
        Threads of the C kernel (0: OpenMP default); the result does not
        depend on it, nor on whether the kernel or NumPy runs.

    Returns
    -------
    ndarray of bool, shape ``(h, w)``.
    """
    hh, ww = tissue.shape
    _kernel = _compiled.kernel  # (None in a checkout without the built kernel)
    if _kernel is not None and hasattr(_kernel, "upscale_mask"):
        return _kernel.upscale_mask(np.ascontiguousarray(tissue, dtype=bool), int(fy), int(fx), int(h),
                                    int(w), int(n_threads))
    # one full-width row per block row, broadcast down its fy rows
    rowpat = np.empty((hh, w), dtype=bool)
    rowpat[:, : ww * fx] = np.repeat(tissue, fx, axis=1)
    rowpat[:, ww * fx:] = tissue[:, -1:]
    out = np.empty((h, w), dtype=bool)
    out[: hh * fy].reshape(hh, fy, w)[...] = rowpat[:, None, :]
    out[hh * fy:] = rowpat[-1]
    return out


def _upscaled_bbox(tissue: np.ndarray, fy: int, fx: int, h: int, w: int) -> tuple[int, int, int, int] | None:
    """Bounding box of the ``h`` x ``w`` mask that :func:`breast_mask`
    makes from the working-resolution ``tissue`` (block ``(i, j)`` covers
    rows ``i fy`` to ``(i + 1) fy``, the last block row and column also
    the rows and columns left over), None when it is empty."""
    r = np.flatnonzero(tissue.any(axis=1))
    if not len(r):
        return None
    c = np.flatnonzero(tissue.any(axis=0))
    hh, ww = tissue.shape
    r1 = h if r[-1] == hh - 1 else (int(r[-1]) + 1) * fy
    c1 = w if c[-1] == ww - 1 else (int(c[-1]) + 1) * fx
    return int(r[0]) * fy, r1, int(c[0]) * fx, c1


def _upscaled_extents(tissue: np.ndarray, fy: int, fx: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's extent ``(lo, hi)`` (see :func:`breast_mask_parts`) of
    the ``h`` x ``w`` mask :func:`upscale_mask` makes of ``tissue``: a row
    has its block row's blocks, the first one's first column to the last
    one's end (the image's end for the last block column)."""
    hh, ww = tissue.shape
    has = tissue.any(axis=1)
    first = np.argmax(tissue, axis=1)
    last = ww - 1 - np.argmax(tissue[:, ::-1], axis=1)
    lo = np.where(has, first * fx, 0).astype(np.int32)
    hi = np.where(has, np.where(last == ww - 1, w, (last + 1) * fx), 0).astype(np.int32)
    block_row = np.minimum(np.arange(h) // fy, hh - 1)
    return lo[block_row], hi[block_row]
