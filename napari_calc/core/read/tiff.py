"""Read TIFF, ImageJ-TIFF and OME-TIFF mammograms and stacks (via tifffile).

Geometry (spacing precedence)
-----------------------------
1. OME-XML ``Pixels`` ``PhysicalSizeY`` / ``PhysicalSizeX`` (and
   ``PhysicalSizeZ`` for stacks) with their ``...Unit`` (default µm; pm, nm,
   µm/um, mm, cm, dm, m, in accepted), converted to mm.
   ``spacing_source = "OME PhysicalSize"``.
2. ImageJ metadata: ``unit`` (mm, cm, µm/micron, nm, inch...) with
   ``XResolution``/``YResolution`` in pixels per unit, and ``spacing`` for the
   slice spacing. ``spacing_source = "TIFF resolution"``.
3. ``XResolution``/``YResolution`` with ``ResolutionUnit`` inch or centimetre.
   ``spacing_source = "TIFF resolution"``. A resolution without unit (or the
   placeholder 1/1) is *unknown*, and so are the 72 and 96 dots-per-inch
   defaults that many writers put in regardless of the image (recorded in
   ``metadata["spacing_note"]``).
4. Otherwise ``spacing_mm is None``; no default is invented.

For stacks the slice spacing comes from OME ``PhysicalSizeZ`` or ImageJ
``spacing``; when unknown, ``spacing_mm`` is ``None`` and the known in-plane
part is in ``metadata["in_plane_spacing_mm"]``.

Intensity
---------
8-bit, 16-bit (and other integer) and float data are returned unchanged
(``MINISBLACK``), except ``MINISWHITE`` (the TIFF analogue of MONOCHROME1),
which is inverted exactly: ``x' = 2**bits - 1 - x`` for unsigned integers,
``min + max - x`` otherwise. RGB / palette / multi-sample data are refused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from typing import Any

import numpy as np

from ..errors import MissingDecoderError, NapariCalcError, UnreadableImageError, UnsupportedImageError
from ..image import MammoImage
from .limits import check_dimensions, normalise_user_spacing

__all__ = ["read_tiff", "OME_UNITS_MM", "DICOM_ONLY_KEYS", "WRITER_DEFAULT_DPI"]

#: Metadata keys only DICOM fills; TIFF images carry them as ``None``.
DICOM_ONLY_KEYS = (
    "manufacturer_model_name",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_class_uid",
    "frame_of_reference_uid",
    "image_position_patient",
    "image_orientation_patient",
    "patient_name",
    "patient_id",
    "patient_birth_date",
    "patient_sex",
    "study_id",
    "study_date",
    "study_time",
    "study_description",
    "series_number",
    "instance_number",
    "accession_number",
    "referring_physician_name",
)

#: Length units (OME and ImageJ spellings) in millimetres.
OME_UNITS_MM = {
    "pm": 1e-9,
    "nm": 1e-6,
    "µm": 1e-3,
    "μm": 1e-3,
    "um": 1e-3,
    "micron": 1e-3,
    "microns": 1e-3,
    "\\u00b5m": 1e-3,
    "mm": 1.0,
    "cm": 10.0,
    "dm": 100.0,
    "m": 1000.0,
    "in": 25.4,
    "inch": 25.4,
    "inches": 25.4,
}

#: Resolutions (dots per inch) image writers store when they know none: a
#: resolution of exactly these is not a measured pixel size and is ignored.
WRITER_DEFAULT_DPI = (72.0, 96.0)
_JUNK_DPI = WRITER_DEFAULT_DPI


def _unit_mm(unit, path, default: str | None = None) -> float | None:
    if unit is None or str(unit).strip() == "":
        unit = default
    if unit is None:
        return None
    key = str(unit).strip().lower().replace("\u00b5", "µ")
    if key in OME_UNITS_MM:
        return OME_UNITS_MM[key]
    key2 = key.replace("μ", "µ")
    return OME_UNITS_MM.get(key2)


def _pos(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _ome_spacing(tif, path):
    """(z_mm, y_mm, x_mm) from OME-XML, each possibly None."""
    import tifffile

    try:
        ome = tifffile.xml2dict(tif.ome_metadata)
    except Exception:
        return None, None, None
    image = ome.get("OME", {}).get("Image")
    if isinstance(image, list):
        image = image[0] if image else None
    if not isinstance(image, dict):
        return None, None, None
    pixels = image.get("Pixels", {})
    out = []
    for axis in ("Z", "Y", "X"):
        size = _pos(pixels.get(f"PhysicalSize{axis}"))
        factor = _unit_mm(pixels.get(f"PhysicalSize{axis}Unit"), path, default="µm")
        out.append(None if size is None or factor is None else size * factor)
    return tuple(out)


def _resolution(page, name) -> float | None:
    tag = page.tags.get(name)
    if tag is None:
        return None
    value = tag.value
    try:
        if isinstance(value, tuple):
            num, den = value[0], value[1]
            if den == 0:
                return None
            return _pos(num / den)
        return _pos(value)
    except (TypeError, ValueError, IndexError):
        return None


def _tiff_spacing(tif, page, path, meta) -> tuple[float | None, float | None, float | None, str | None]:
    """(z_mm, y_mm, x_mm, source) from the TIFF tags / ImageJ metadata."""
    xres = _resolution(page, "XResolution")
    yres = _resolution(page, "YResolution")
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    ij = tif.imagej_metadata if tif.is_imagej else None
    z = None
    if ij:
        z = _pos(ij.get("spacing"))
        factor = _unit_mm(ij.get("unit"), path)
        if z is not None and factor is not None:
            z = z * factor
        elif factor is None:
            z = None
        if factor is not None and xres is not None:
            yres = yres or xres
            return z, factor / yres, factor / xres, "TIFF resolution"
    if xres is None:
        return z, None, None, None
    yres = yres or xres
    if unit == 2:
        if xres in _JUNK_DPI and yres in _JUNK_DPI:
            meta["spacing_note"] = (
                f"resolution {xres:g} dpi ignored: a writer default, not a measured spacing"
            )
            return z, None, None, None
        return z, 25.4 / yres, 25.4 / xres, "TIFF resolution"
    if unit == 3:
        return z, 10.0 / yres, 10.0 / xres, "TIFF resolution"
    return z, None, None, None  # no unit (1/1 or anything): unknown


_QUIET = threading.local()


class _WhileReading(logging.Filter):
    """Keeps tifffile's log records (e.g. "ImageJ series metadata invalid or
    corrupted file") emitted by this thread inside :func:`read_tiff` from the
    user's terminal, and hands them to the reader: a damaged file gets our
    one error line, not tifffile's remarks before it."""

    def filter(self, record: logging.LogRecord) -> bool:
        notes = getattr(_QUIET, "notes", None)
        if notes is None:
            return True
        notes.append(record.getMessage())
        return False


logging.getLogger("tifffile").addFilter(_WhileReading())


@contextlib.contextmanager
def _tifffile_notes():
    """tifffile's log messages of this thread while inside, as a list."""
    outer = getattr(_QUIET, "notes", None)
    _QUIET.notes = notes = []
    try:
        yield notes
    finally:
        _QUIET.notes = outer
        if outer is not None:
            outer.extend(notes)


def read_tiff(path: str | os.PathLike, *, spacing_mm=None) -> MammoImage:
    """Read a greyscale TIFF / OME-TIFF image or stack.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    spacing_mm : float or tuple of float, optional
        Overrides the file's spacing (``spacing_source = "user"``).

    Returns
    -------
    MammoImage
        2-D for one page, 3-D ``(slice, row, col)`` for a multi-page stack.

    Raises
    ------
    UnreadableImageError
        Truncated or corrupt file.
    UnsupportedImageError
        RGB / multi-sample, palette, more than 3 dimensions, too small.
    ImageTooLargeError
        Absurd declared dimensions (checked before reading the pixels).
    """
    with _tifffile_notes() as notes:
        image = _read_tiff(path, spacing_mm)
    # pages linked past the end of the file: tifffile reads the pages before
    # the break and goes on; a truncated stack must not become a shorter one
    broken = [m for m in notes if "invalid page offset" in m]
    if broken:
        raise UnreadableImageError("truncated TIFF: its list of pages points past the end of the file",
                                   os.fspath(path))
    return image


def _read_tiff(path, spacing_mm) -> MammoImage:
    import tifffile

    path = os.fspath(path)
    try:
        tif = tifffile.TiffFile(path)
    except FileNotFoundError:
        raise UnreadableImageError("file not found", path) from None
    except Exception as exc:
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size is not None and size < 16:
            raise UnreadableImageError(f"not a readable TIFF file (only {size} bytes)", path) from None
        raise UnreadableImageError(f"not a readable TIFF file ({type(exc).__name__}: {exc})", path) from None
    with tif:
        try:
            series = tif.series[0]
            page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
        except IndexError:
            raise UnreadableImageError("corrupt TIFF file (no image in it: truncated or damaged)", path) from None
        except Exception as exc:
            raise UnreadableImageError(f"corrupt TIFF file ({type(exc).__name__}: {exc})", path) from None
        photometric = int(getattr(page, "photometric", 1))
        samples = int(getattr(page, "samplesperpixel", 1))
        extras = getattr(page, "extrasamples", ()) or ()
        if samples - len(extras) > 1 or photometric in (2, 3, 5, 6, 8, 9, 10):
            name = {2: "RGB", 3: "palette", 5: "CMYK", 6: "YCbCr", 8: "CIELab"}.get(photometric, "multi-sample")
            raise UnsupportedImageError(
                f"colour image ({name}, {samples} samples per pixel); only greyscale mammograms are supported",
                path,
            )
        shape = tuple(int(s) for s in series.shape)
        axes = str(series.axes)
        # drop singleton axes other than Y and X
        keep = [i for i, (a, s) in enumerate(zip(axes, shape)) if a in "YX" or s != 1]
        squeezed = tuple(shape[i] for i in keep)
        sq_axes = "".join(axes[i] for i in keep)
        if "S" in sq_axes or "C" in sq_axes:
            raise UnsupportedImageError(
                f"multi-channel image (axes {axes}); only greyscale mammograms are supported", path
            )
        if len(squeezed) not in (2, 3):
            raise UnsupportedImageError(
                f"image has {len(squeezed)} dimensions (axes {axes}); expected 2-D or a 3-D stack", path
            )
        check_dimensions(squeezed, path)
        # truncation: strips / tiles that point past the end of the file
        fsize = os.path.getsize(path)
        for pg in tif.pages:
            offsets = getattr(pg, "dataoffsets", ()) or ()
            counts = getattr(pg, "databytecounts", ()) or ()
            if any(o + c > fsize for o, c in zip(offsets, counts)) or (counts and sum(counts) == 0):
                raise UnreadableImageError("truncated TIFF: image data extend past the end of the file", path)
        try:
            arr = series.asarray()
        except MemoryError:
            raise UnsupportedImageError("not enough memory to read the image", path) from None
        except NapariCalcError:
            raise
        except Exception as exc:
            if "imagecodecs" in str(exc):
                comp = getattr(getattr(page, "compression", None), "name", "this compression")
                raise MissingDecoderError(
                    f"TIFF compressed with {comp} and no decoder is installed; "
                    "install imagecodecs (pip install imagecodecs)",
                    path,
                ) from None
            raise UnreadableImageError(
                f"cannot decode the TIFF data (truncated or corrupt? {type(exc).__name__}: {exc})", path
            ) from None
        arr = np.asarray(arr).reshape(squeezed)
        if arr.dtype.kind not in "uif" or arr.dtype.kind == "b":
            raise UnsupportedImageError(f"pixel type {arr.dtype} is not supported", path)

        meta: dict[str, Any] = {
            "source_path": path,
            "format": "ome-tiff" if tif.is_ome else "tiff",
            "modality": None,
            "laterality": None,
            "view": None,
            "presentation_intent": None,
            "photometric": "MINISWHITE" if photometric == 0 else "MINISBLACK",
            "manufacturer": None,
            "bits_stored": int(getattr(page, "bitspersample", arr.dtype.itemsize * 8)),
            "voi_window": None,
            "transfer_syntax_uid": None,
            "tiff_axes": sq_axes,
        }
        # DICOM-only keys present (None) so that every image has the same keys
        for key in DICOM_ONLY_KEYS:
            meta.setdefault(key, None)
        transforms: list[str] = []
        if photometric == 0:
            if arr.dtype.kind == "u":
                hi = 2 ** meta["bits_stored"] - 1
                arr = (hi - arr.astype(np.int64)).astype(arr.dtype)
            else:
                lo, hi = arr.min(), arr.max()
                arr = (lo + hi) - arr
            transforms.append("invert_miniswhite")
        meta["intensity_transforms"] = transforms

        z = y = x = None
        source = None
        if tif.is_ome:
            z, y, x = _ome_spacing(tif, path)
            if y is not None and x is not None:
                source = "OME PhysicalSize"
        if source is None:
            z2, y, x, source = _tiff_spacing(tif, page, path, meta)
            z = z if z is not None else z2
    if arr.ndim == 3:
        meta["slice_spacing_mm"] = z
        if source is not None and z is not None:
            spacing = (float(z), float(y), float(x))
        else:
            spacing = None
            if source is not None:
                meta["in_plane_spacing_mm"] = [float(y), float(x)]
            source = None
    else:
        spacing = None if source is None else (float(y), float(x))
    if spacing is not None:
        # resolution tags are rationals (e.g. 1/0.007 cm): 0.06999999999999999 -> 0.07
        spacing = tuple(float(f"{s:.12g}") for s in spacing)
    if spacing_mm is not None:
        spacing = normalise_user_spacing(spacing_mm, arr.ndim, path, file_slice_mm=meta.get("slice_spacing_mm"))
        source = "user"
    meta["spacing_source"] = source if spacing is not None else None
    return MammoImage(pixels=arr, spacing_mm=spacing, metadata=meta)
