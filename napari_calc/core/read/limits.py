"""Size limits and user-spacing normalisation shared by the readers."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from ..errors import ImageTooLargeError, InvalidParameterError, UnsupportedImageError

__all__ = [
    "MAX_PIXELS",
    "MAX_SIDE",
    "MAX_SLICES",
    "check_dimensions",
    "normalise_user_spacing",
]

#: Largest number of pixels (all frames together) a reader will allocate.
MAX_PIXELS = 2**31
#: Largest row or column count of one image (a 2-D mammogram is < 10,000).
MAX_SIDE = 65535
#: Largest number of slices / frames of a stack.
MAX_SLICES = 65535


def check_dimensions(shape: Sequence[int], path: str | os.PathLike | None) -> None:
    """Refuse absurd or degenerate image dimensions before allocating memory.

    Parameters
    ----------
    shape : sequence of int
        ``(rows, cols)`` or ``(frames, rows, cols)`` as declared by the header.
    path : str or os.PathLike
        The file, for the message.

    Raises
    ------
    ImageTooLargeError
        A side above :data:`MAX_SIDE`, more than :data:`MAX_SLICES` frames, or
        more than :data:`MAX_PIXELS` pixels in total.
    UnsupportedImageError
        Fewer than 2 rows or columns (e.g. a 1x1 image).
    """
    shape = tuple(int(s) for s in shape)
    rows, cols = shape[-2], shape[-1]
    frames = shape[0] if len(shape) == 3 else 1
    if rows > MAX_SIDE or cols > MAX_SIDE:
        raise ImageTooLargeError(
            f"declared image size {rows}x{cols} exceeds the limit of {MAX_SIDE} pixels per side", path
        )
    if frames > MAX_SLICES:
        raise ImageTooLargeError(f"declared {frames} frames exceeds the limit of {MAX_SLICES}", path)
    total = frames * rows * cols
    if total > MAX_PIXELS:
        raise ImageTooLargeError(
            f"declared size {'x'.join(map(str, shape))} ({total} pixels) exceeds the limit of {MAX_PIXELS} pixels",
            path,
        )
    if rows < 2 or cols < 2 or frames < 1:
        raise UnsupportedImageError(f"image is {rows}x{cols}, too small to detect on", path)


def _positive(v, path) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"spacing {v!r} is not a number", path) from None
    if not math.isfinite(f) or f <= 0:
        raise InvalidParameterError(f"spacing must be a positive number of mm, got {v!r}", path)
    return f


def normalise_user_spacing(spacing, ndim: int, path=None, *, file_slice_mm=None):
    """Turn a user spacing into a full ``spacing_mm`` tuple.

    Parameters
    ----------
    spacing : float or sequence of float
        A scalar is the in-plane pixel size (row = col); a pair is
        ``(row_mm, col_mm)``; a triple ``(slice_mm, row_mm, col_mm)`` (3-D
        only). For a 3-D image given a scalar or pair, the slice spacing comes
        from the file; when the file has none, both are refused (a stack's
        slices are rarely as far apart as its pixels: never a guess).
    ndim : int
        2 or 3.
    path : str, optional
        The file, for the message.
    file_slice_mm : float, optional
        The file's own slice spacing (3-D data), if known.

    Returns
    -------
    tuple of float

    Raises
    ------
    InvalidParameterError
        Not positive, wrong number of values.
    """
    if isinstance(spacing, (str, bytes)) or not hasattr(spacing, "__len__"):
        vals = [_positive(spacing, path)]
        scalar = True
    else:
        vals = [_positive(v, path) for v in spacing]
        scalar = False
    if not vals or len(vals) > 3:
        raise InvalidParameterError(f"spacing needs 1 to 3 values, got {len(vals)}", path)
    if ndim == 2:
        if len(vals) == 3:
            raise InvalidParameterError("spacing has 3 values but the image is 2-D", path)
        return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])
    # 3-D
    if len(vals) == 3:
        return tuple(vals)
    row, col = (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])
    slice_mm = file_slice_mm
    if slice_mm is None:
        raise InvalidParameterError(
            f"the stack has no slice spacing; give 3 values (slice_mm, row_mm, col_mm), not "
            f"{'one' if scalar else len(vals)}", path
        )
    return (float(slice_mm), row, col)
