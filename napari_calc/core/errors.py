"""Exceptions raised for user mistakes and bad input.

Every error a user can cause derives from :class:`NapariCalcError`. Its
``str()`` is one line naming the file (when there is one) and the reason, so
the CLI and the GUI can show it as is, without a traceback.
"""

from __future__ import annotations

import os

__all__ = [
    "NapariCalcError",
    "UnreadableImageError",
    "UnsupportedImageError",
    "MissingDecoderError",
    "MissingSpacingError",
    "ImageTooLargeError",
    "InvalidParameterError",
    "DetectionCancelled",
    "printable",
    "counted",
]


class NapariCalcError(Exception):
    """Base class of every error a user can cause.

    Parameters
    ----------
    reason : str
        What is wrong, in words a user understands.
    path : str or os.PathLike, optional
        The file concerned, if any.
    """

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        self.reason = str(reason).strip().replace("\n", " ")
        self.path = None if path is None else os.fspath(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path:
            return f"{self.path}: {self.reason}"
        return self.reason


class UnreadableImageError(NapariCalcError):
    """The file is missing, empty, truncated or not an image format we read."""


class UnsupportedImageError(NapariCalcError):
    """The file is readable but holds something we cannot detect on
    (RGB data, a DICOM SR or SEG, no pixel data, a 1x1 image, ...)."""


class MissingDecoderError(UnsupportedImageError):
    """The pixel data is compressed and the decoder package is not installed."""


class MissingSpacingError(NapariCalcError):
    """The image carries no pixel spacing and none was given."""


class ImageTooLargeError(UnsupportedImageError):
    """The declared dimensions are absurd; refused before allocating memory."""


class InvalidParameterError(NapariCalcError, ValueError):
    """A detection or export parameter is out of range."""


class DetectionCancelled(Exception):
    """Raised inside :func:`napari_calc.detect` when its ``cancel`` callback
    returns True. Not an error: the caller asked for it."""


def os_reason(exc: BaseException) -> str:
    """The one-line reason of an OS error: ``No space left on device``, also
    when a library re-raised it with its own text (pydicom adds the tag and
    a traceback) -- the errno of the error or of its cause, else the first
    line of its text."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return os.strerror(e.errno)
        e = e.__cause__ or e.__context__
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip()
    return text.splitlines()[0] if text else type(exc).__name__



def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular for one: ``"1 image"``, ``"0 images"``,
    ``"2 images"`` (``plural`` when not the noun plus "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def printable(text) -> str:
    """``text`` kept on one line: control and other unprintable characters
    (a newline or a tab in a file name, an undecodable byte) written as
    Python escapes (``\\n``), so that an error line stays one line."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in s)
