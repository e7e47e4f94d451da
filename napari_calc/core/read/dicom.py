"""Read DICOM mammograms and breast tomosynthesis into a :class:`MammoImage`.

Supported objects
-----------------
Digital Mammography X-Ray (For Presentation and For Processing), Digital
X-Ray, Computed Radiography, Secondary Capture and any other single-sample
greyscale image; Breast Tomosynthesis as an enhanced multi-frame object (with
Shared / Per-frame Functional Groups) or as a simple multi-frame object; and a
folder holding one series of single-frame slices (see :func:`read_dicom_series`).

Geometry (spacing precedence)
-----------------------------
In-plane spacing ``(row_mm, col_mm)`` is taken from the first of:

1. ``PixelSpacing`` (0028,0030): top level, or for enhanced objects the
   ``PixelMeasuresSequence`` in the Shared, else the first Per-frame
   Functional Groups. This is the spacing in the patient (object) plane.
   ``spacing_source = "PixelSpacing"``.
2. ``ImagerPixelSpacing`` (0018,1164) divided by
   ``EstimatedRadiographicMagnificationFactor`` (0018,1114): the detector
   spacing corrected to the object plane.
   ``spacing_source = "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"``.
3. ``ImagerPixelSpacing`` alone (no magnification factor): detector plane.
   ``spacing_source = "ImagerPixelSpacing"``.
4. ``NominalScannedPixelSpacing`` (0018,2010) for digitised film.
   ``spacing_source = "NominalScannedPixelSpacing"``.
5. Otherwise unknown: ``spacing_mm is None`` and ``spacing_source is None``.
   No default is invented; callers raise
   :class:`~napari_calc.core.errors.MissingSpacingError` or ask the user.

For 3-D data ``spacing_mm = (slice_mm, row_mm, col_mm)``; ``slice_mm`` is
``SpacingBetweenSlices`` (functional groups or top level), else the distance
between consecutive ``ImagePositionPatient`` along the slice normal, else
``SliceThickness``. If the slice spacing is unknown the whole ``spacing_mm``
is ``None`` and the known in-plane part is kept in
``metadata["in_plane_spacing_mm"]``. Slice ``k`` is at ``k * slice_mm``, so
a stack whose frame positions are not one even step apart and in order (a
missing slice, shuffled frames), or disagree with its SpacingBetweenSlices,
is refused unless the user gives the spacing (:data:`SLICE_STEP_TOLERANCE`).

Frames of a multi-frame object are kept in stored order (frame ``k`` of
``pixels`` is DICOM frame ``k + 1``); ``metadata["frame_positions_patient"]``
lists their ImagePositionPatient. A folder of single-frame slices is sorted
along the slice normal (else by InstanceNumber).

A user-given ``spacing_mm`` overrides the file (``spacing_source = "user"``).

Intensity (what ``pixels`` holds)
---------------------------------
``pixels`` are in presentation polarity, bright = dense:

* the Modality LUT / Rescale Slope & Intercept is applied
  (:func:`pydicom.pixels.apply_modality_lut`; per frame for enhanced objects
  from ``PixelValueTransformationSequence``). Integer results are kept as
  integers.
* ``MONOCHROME1`` is inverted: ``x' = lo + hi - x`` where ``[lo, hi]`` is the
  representable range after the modality LUT (for unrescaled unsigned data
  ``x' = 2**BitsStored - 1 - x``), so the inversion is exact and reversible.
* the VOI window / LUT is *never* applied; the first window is kept in
  ``metadata["voi_window"] = (center, width)`` (translated into the inverted
  scale for MONOCHROME1) for display only.
* ``FOR PROCESSING`` data (raw detector data) follow the
  ``PixelIntensityRelationship`` (0028,1040) and its sign (0028,1041)
  instead of the photometric interpretation. With ``LIN`` (or absent) and
  sign +1 (or absent: dense tissue = low signal, the usual raw case) the
  pixels become ``float32`` log-attenuation ``ln(I_max / max(I, 1))`` where
  ``I_max`` is the image maximum: a line integral of attenuation, 0 at the
  brightest (least attenuated) pixel and larger where denser, so
  calcifications are bright. With ``LOG`` and sign +1 the values are
  inverted within their range; with sign -1 (higher value = less beam
  intensity) they are already dense-bright and kept.

Every step done is listed in ``metadata["intensity_transforms"]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import (
    ImageTooLargeError,
    MissingDecoderError,
    NapariCalcError,
    UnreadableImageError,
    UnsupportedImageError,
)
from ..image import MammoImage
from .limits import check_dimensions, normalise_user_spacing

__all__ = [
    "read_dicom",
    "read_dicom_series",
    "read_dicom_header",
    "in_plane_spacing",
    "non_image_reason",
    "series_is_volume",
    "volume_problem",
    "looks_like_slices",
    "NON_IMAGE_SOP_CLASSES",
    "NON_IMAGE_MODALITIES",
]

# --------------------------------------------------------------------------
# constants

#: SOP classes that never hold an image we can detect on (prefix match).
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88": "structured report (SR)",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation (SEG)",
    "1.2.840.10008.5.1.4.1.1.66": "raw data / registration / spatial fiducials",
    "1.2.840.10008.5.1.4.1.1.11": "presentation state (PR)",
    "1.2.840.10008.5.1.4.1.1.481": "radiotherapy object (RT)",
    "1.2.840.10008.5.1.4.1.1.104": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9": "waveform",
    "1.2.840.10008.5.1.4.1.1.91": "real-world value mapping",
    "1.2.840.10008.1.3.10": "media directory (DICOMDIR)",
    "1.2.840.10008.5.1.4.1.1.67": "real-world value mapping",
}

#: Modalities that never hold an image we can detect on.
NON_IMAGE_MODALITIES = {
    "SR": "structured report (SR)",
    "SEG": "segmentation (SEG)",
    "KO": "key object selection (KO)",
    "PR": "presentation state (PR)",
    "RTSTRUCT": "RT structure set",
    "RTPLAN": "RT plan",
    "RTDOSE": "RT dose",
    "REG": "registration (REG)",
    "FID": "spatial fiducials (FID)",
    "DOC": "encapsulated document (DOC)",
    "ECG": "waveform (ECG)",
    "AU": "audio (AU)",
}

_NON_GREY = ("RGB", "YBR", "PALETTE", "HSV", "ARGB", "CMYK")

#: Decoder packages, by transfer syntax UID, for the error message.
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls (or pylibjpeg and pylibjpeg-libjpeg)",
    "1.2.840.10008.1.2.4.81": "pyjpegls (or pylibjpeg and pylibjpeg-libjpeg)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle (or numpy)",
}


# --------------------------------------------------------------------------
# small helpers


def _quiet(fn):
    """Run a reader with pydicom's warnings held back.

    pydicom parses elements lazily and warns on the way (an ``IS`` value
    ``'X'``, more pixel bytes than the frames declared). Printed, they come
    as two lines with a library path before our own one-line message or a
    clean result; what matters is raised as an error by the checks here.
    """
    import functools
    import warnings

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            return fn(*args, **kwargs)

    return wrapper


def _get(ds, keyword, default=None):
    """``ds.keyword`` or ``default`` when absent or empty."""
    try:
        value = ds.get(keyword, None)
    except Exception:  # malformed value
        return default
    if value is None:
        return default
    if isinstance(value, (str, bytes)) and len(value) == 0:
        return default
    try:
        if hasattr(value, "__len__") and len(value) == 0:
            return default
    except TypeError:
        pass
    return value


def _str(value) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _floats(value) -> list[float] | None:
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            return [float(value)]
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _positive_float(value) -> float | None:
    vals = _floats(value)
    if not vals:
        return None
    v = vals[0]
    if not math.isfinite(v) or v <= 0:
        return None
    return v


def _spacing_pair(value) -> tuple[float, float] | None:
    vals = _floats(value)
    if not vals:
        return None
    if len(vals) == 1:
        vals = [vals[0], vals[0]]
    r, c = vals[0], vals[1]
    if not (math.isfinite(r) and math.isfinite(c)) or r <= 0 or c <= 0:
        return None
    return (r, c)


def _first_item(seq):
    try:
        if seq is not None and len(seq) > 0:
            return seq[0]
    except TypeError:
        pass
    return None


def _fg_item(ds, group_keyword: str, frame: int | None = None):
    """Item of functional group ``group_keyword`` (shared, else per-frame)."""
    shared = _first_item(_get(ds, "SharedFunctionalGroupsSequence"))
    if shared is not None:
        item = _first_item(_get(shared, group_keyword))
        if item is not None:
            return item
    per = _get(ds, "PerFrameFunctionalGroupsSequence")
    if per is not None:
        idx = 0 if frame is None else frame
        if idx < len(per):
            item = _first_item(_get(per[idx], group_keyword))
            if item is not None:
                return item
    return None


def _per_frame_items(ds, group_keyword: str, n_frames: int) -> list | None:
    """One item per frame of ``group_keyword`` (per-frame overriding shared)."""
    per = _get(ds, "PerFrameFunctionalGroupsSequence")
    shared = _first_item(_get(ds, "SharedFunctionalGroupsSequence"))
    shared_item = _first_item(_get(shared, group_keyword)) if shared is not None else None
    if per is None and shared_item is None:
        return None
    out = []
    for i in range(n_frames):
        item = None
        if per is not None and i < len(per):
            item = _first_item(_get(per[i], group_keyword))
        out.append(item if item is not None else shared_item)
    return out


def _pixel_data_keyword(ds) -> str | None:
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in ds:
            return kw
    return None


def _transfer_syntax(ds) -> str | None:
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        ts = _str(_get(meta, "TransferSyntaxUID"))
        if ts:
            return ts
    return None


# --------------------------------------------------------------------------
# reading the header


def read_dicom_header(path: str | os.PathLike, *, force: bool = True):
    """Read a DICOM header without pixel data.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    force : bool
        Accept files without the 128-byte preamble and ``DICM`` prefix.

    Returns
    -------
    pydicom.Dataset
        The dataset, pixel data deferred (not loaded).

    Raises
    ------
    UnreadableImageError
        The file cannot be parsed as DICOM.
    """
    import pydicom

    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(os.fspath(path), force=force, defer_size=256 * 1024)
    except FileNotFoundError:
        raise UnreadableImageError("file not found", path) from None
    except (EOFError, OSError) as exc:
        raise UnreadableImageError(f"truncated or unreadable DICOM file ({exc})", path) from None
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise UnreadableImageError(
            f"not a readable DICOM file ({type(exc).__name__}: {exc})", path
        ) from None
    del caught  # pydicom's warnings are not shown; truncation is checked structurally
    _check_complete(ds, path)
    if len(ds) == 0:
        meta = getattr(ds, "file_meta", None)
        if meta is not None and len(meta) > 0:
            raise UnreadableImageError("truncated DICOM file (file meta but no data set)", path)
        raise UnreadableImageError("not a DICOM file (no data elements)", path)
    if _transfer_syntax(ds) is None:
        # a bare dataset (no file meta): the encoding pydicom detected is
        # the transfer syntax (native only; encapsulated data needs the meta)
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = getattr(ds, "original_encoding", (None, None))
        if implicit is not None:
            if getattr(ds, "file_meta", None) is None:
                ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            )
    return ds


def _check_complete(ds, path) -> None:
    """Refuse a file that ends inside its last data element.

    pydicom stops silently when the file ends inside an element header and
    reads a short value without complaint, so compare where the last
    top-level element should end with the file size.
    """
    if _transfer_syntax(ds) == "1.2.840.10008.1.2.1.99":  # deflated: offsets not in file
        return
    filename = getattr(ds, "filename", None)
    if not isinstance(filename, str) or not os.path.isfile(filename):
        return
    size = os.path.getsize(filename)
    tags = list(ds.keys())
    if not tags:
        return
    elem = ds.get_item(max(tags))
    tell = getattr(elem, "value_tell", None)
    length = getattr(elem, "length", None)
    if tell is None or length is None:
        return
    if length == 0xFFFFFFFF:
        # undefined length (encapsulated pixel data, sequence): the file must
        # end with the Sequence Delimitation Item (FFFE,E0DD), length 0
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        delim = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" if little else b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"
        with open(filename, "rb") as fh:
            fh.seek(max(size - 8, 0))
            tail = fh.read(8)
        if tail != delim:
            raise UnreadableImageError("truncated DICOM file (it ends inside a data element)", path)
        return
    end = tell + length
    if end > size:
        raise UnreadableImageError(
            f"truncated DICOM file (the last element needs {end - size} more bytes)", path
        )
    if 0 < size - end < 8:
        raise UnreadableImageError("truncated DICOM file (it ends inside an element header)", path)


def non_image_reason(ds) -> str | None:
    """Why the DICOM dataset ``ds`` is not an image, or None if it may be one.

    Decided by SOP Class UID (also from the file meta) and Modality only:
    SR, SEG, KO, PR, RT, documents, waveforms, DICOMDIR...
    """
    meta = getattr(ds, "file_meta", None)
    sop = _str(_get(ds, "SOPClassUID")) or (
        _str(_get(meta, "MediaStorageSOPClassUID")) if meta is not None else None
    )
    if sop:
        for prefix, what in NON_IMAGE_SOP_CLASSES.items():
            if sop == prefix or sop.startswith(prefix + "."):
                return f"DICOM {what} is not an image"
    modality = (_str(_get(ds, "Modality")) or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"DICOM {NON_IMAGE_MODALITIES[modality]} is not an image"
    if "DirectoryRecordSequence" in ds:
        return "DICOM media directory (DICOMDIR) is not an image"
    return None


#: Breast Projection X-Ray Image Storage (For Presentation, For Processing):
#: the projections a tomosynthesis is reconstructed from. Stacked, they are
#: views from different angles, not slices.
PROJECTION_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.13.1.4", "1.2.840.10008.5.1.4.1.1.13.1.5")


def _check_is_image(ds, path) -> None:
    reason = non_image_reason(ds)
    if reason:
        raise UnsupportedImageError(reason, path)
    if _str(_get(ds, "SOPClassUID")) in PROJECTION_SOP_CLASSES:
        raise UnsupportedImageError(
            "Breast Projection X-Ray: the projections of a tomosynthesis acquisition, taken from "
            "different angles, not slices; open the reconstructed tomosynthesis or a 2-D mammogram", path)
    if _pixel_data_keyword(ds) is None:
        hint = " (the header describes an image: truncated file?)" if "Rows" in ds else ""
        raise UnsupportedImageError(f"DICOM file has no pixel data{hint}", path)


def _frames(ds) -> int:
    try:
        n = int(_get(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n = 1
    return max(n, 1)


def _check_layout(ds, path) -> tuple[int, int, int]:
    """Validate samples, photometric and dimensions; return (frames, rows, cols)."""
    try:
        rows = int(_get(ds, "Rows", 0) or 0)
        cols = int(_get(ds, "Columns", 0) or 0)
    except (TypeError, ValueError):
        raise UnreadableImageError("DICOM Rows/Columns are not integers", path) from None
    if rows <= 0 or cols <= 0:
        raise UnsupportedImageError(f"DICOM image has no valid size (Rows={rows}, Columns={cols})", path)
    declared = _get(ds, "NumberOfFrames", None)
    if declared is not None and str(declared).strip() != "":
        try:
            ok = int(declared) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UnsupportedImageError(f"DICOM NumberOfFrames is {str(declared).strip()!r}, not a count of "
                                        "frames", path)
    frames = _frames(ds)
    photometric = (_str(_get(ds, "PhotometricInterpretation")) or "").upper()
    try:
        samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        samples = 1
    if samples != 1 or any(photometric.startswith(p) for p in _NON_GREY):
        raise UnsupportedImageError(
            f"colour image (PhotometricInterpretation {photometric or '?'}, SamplesPerPixel {samples}); "
            "only greyscale mammograms are supported",
            path,
        )
    shape = (frames, rows, cols) if frames > 1 else (rows, cols)
    check_dimensions(shape, path)
    return frames, rows, cols


def _check_decoder(ds, path) -> str | None:
    """Raise :class:`MissingDecoderError` when the syntax cannot be decoded."""
    ts = _transfer_syntax(ds)
    if not ts:
        return None
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(ts)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise MissingDecoderError(
            f"transfer syntax {uid.name} ({ts}) is not supported by any pydicom decoder", path
        ) from None
    if not decoder.is_available:
        pkgs = _DECODER_PACKAGES.get(ts, "a pydicom pixel data plugin")
        raise MissingDecoderError(
            f"pixel data is compressed as {uid.name} and no decoder is installed; "
            f"install {pkgs} (pip install {pkgs.split(' (')[0].replace(' and ', ' ')})",
            path,
        )
    return ts


def _check_native_length(ds, path, frames, rows, cols) -> None:
    """Refuse native pixel data shorter than the header says (truncation)."""
    ts = _transfer_syntax(ds)
    from pydicom.uid import UID

    if ts and UID(ts).is_compressed:
        return
    kw = _pixel_data_keyword(ds)
    if kw != "PixelData":
        return
    try:
        bits_alloc = int(_get(ds, "BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        bits_alloc = 16
    expected_bits = frames * rows * cols * bits_alloc
    expected = (expected_bits + 7) // 8
    elem = ds.get_item(kw)
    length = getattr(elem, "length", None)
    if length is None or length == 0xFFFFFFFF:
        value = ds[kw].value
        length = len(value) if value is not None else 0
    if length < expected:
        raise UnreadableImageError(
            f"truncated DICOM: pixel data holds {length} bytes, header declares {expected}", path
        )
    # elements whose value was deferred may point past the end of the file
    try:
        offset = getattr(elem, "value_tell", None)
        deflated = ts == "1.2.840.10008.1.2.1.99"
        if not deflated and offset is not None and isinstance(ds.filename, str) and os.path.exists(ds.filename):
            if offset + expected > os.path.getsize(ds.filename):
                raise UnreadableImageError(
                    "truncated DICOM: the file ends before the pixel data does", path
                )
    except UnreadableImageError:
        raise
    except Exception:
        pass


# --------------------------------------------------------------------------
# geometry


def _in_plane_spacing(ds) -> tuple[tuple[float, float] | None, str | None]:
    item = _fg_item(ds, "PixelMeasuresSequence")
    if item is not None:
        sp = _spacing_pair(_get(item, "PixelSpacing"))
        if sp:
            return sp, "PixelSpacing"
    sp = _spacing_pair(_get(ds, "PixelSpacing"))
    if sp:
        return sp, "PixelSpacing"
    imager = _spacing_pair(_get(ds, "ImagerPixelSpacing"))
    if imager is None:
        # enhanced DX / MG may carry it in a functional group
        for group in ("XRayGeometrySequence", "DetectorPositionSequence"):
            item = _fg_item(ds, group)
            if item is not None:
                imager = _spacing_pair(_get(item, "ImagerPixelSpacing"))
                if imager:
                    break
    if imager:
        mag = _positive_float(_get(ds, "EstimatedRadiographicMagnificationFactor"))
        if mag is None:
            item = _fg_item(ds, "XRayGeometrySequence")
            if item is not None:
                mag = _positive_float(_get(item, "EstimatedRadiographicMagnificationFactor"))
        if mag is not None:
            return (
                (imager[0] / mag, imager[1] / mag),
                "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
            )
        return imager, "ImagerPixelSpacing"
    sp = _spacing_pair(_get(ds, "NominalScannedPixelSpacing"))
    if sp:
        return sp, "NominalScannedPixelSpacing"
    return None, None


def in_plane_spacing(ds) -> tuple[tuple[float, float] | None, str | None]:
    """The in-plane spacing napari-calc reads from a DICOM header.

    Parameters
    ----------
    ds : pydicom.Dataset
        A header, e.g. from :func:`read_dicom_header` (pixel data not needed).

    Returns
    -------
    spacing : (row_mm, col_mm) or None
        By the precedence of the module docstring (``ImagerPixelSpacing``
        divided by ``EstimatedRadiographicMagnificationFactor`` when there
        is no ``PixelSpacing``), or None when the header gives none.
    source : str or None
        The ``spacing_source`` :func:`read_dicom` would record.
    """
    return _in_plane_spacing(ds)


def _normal(orientation: list[float] | None) -> np.ndarray | None:
    if not orientation or len(orientation) != 6:
        return None
    r = np.asarray(orientation[:3], float)
    c = np.asarray(orientation[3:], float)
    n = np.cross(r, c)
    norm = np.linalg.norm(n)
    if not np.isfinite(norm) or norm == 0:
        return None
    return n / norm


def _spacing_from_positions(positions, orientation) -> float | None:
    if not positions or len(positions) < 2 or any(p is None or len(p) != 3 for p in positions):
        return None
    pos = np.asarray(positions, float)
    n = _normal(orientation)
    if n is not None:
        d = np.diff(pos @ n)
    else:
        d = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    d = np.abs(d)
    if d.size == 0 or not np.all(np.isfinite(d)):
        return None
    med = float(np.median(d))
    return med if med > 0 else None


#: How far a slice step may stray from the median step (a fraction of it)
#: before the stack counts as unevenly spaced: z_mm is slice x spacing, and
#: positions are decimal strings rounded by some vendors.
SLICE_STEP_TOLERANCE = 0.1


def _check_slice_positions(positions, orientation, declared, path) -> None:
    """Refuse a stack whose frames are not one even step apart along the
    slice normal, in order, or whose declared SpacingBetweenSlices
    disagrees with its positions. napari-calc places slice ``k`` at
    ``k * slice_mm`` (CSV, JSON, SR, 3-D clusters) while the Slicer markups
    follow the positions: both must tell the same story. Nothing to check
    without positions for every frame, or when they are all the same (the
    markups then step along the normal by the slice spacing)."""
    if not positions or len(positions) < 2 or any(p is None or len(p) != 3 for p in positions):
        return
    pos = np.asarray(positions, float)
    n = _normal(orientation)
    d = np.diff(pos @ n) if n is not None else np.linalg.norm(np.diff(pos, axis=0), axis=1)
    if not np.all(np.isfinite(d)) or np.all(d == 0):
        return  # every frame at one position: they say nothing about the slices
    if np.any(d == 0):
        raise UnsupportedImageError("two slices of the stack are at the same position", path)
    if n is not None and np.any(d > 0) and np.any(d < 0):
        raise UnsupportedImageError(
            "the frames are not in slice order (their positions go back and forth along the slice normal)",
            path)
    step = np.abs(d)
    med = float(np.median(step))
    tol = max(0.01, SLICE_STEP_TOLERANCE * med)
    if float(np.max(np.abs(step - med))) > tol:
        raise UnsupportedImageError(
            f"the slices are not evenly spaced ({float(step.min()):g} to {float(step.max()):g} mm apart: "
            f"a missing slice?); give --spacing S,ROW,COL to use one spacing anyway", path)
    if declared is not None and abs(float(declared) - med) > tol:
        raise UnsupportedImageError(
            f"SpacingBetweenSlices ({float(declared):g} mm) disagrees with the slice positions "
            f"({med:g} mm apart); give --spacing S,ROW,COL to choose", path)


def _check_frame_pixel_spacing(ds, n_frames: int, path) -> None:
    """Refuse a multi-frame object whose frames have different PixelSpacing
    (per-frame Pixel Measures): one in-plane spacing is used for all."""
    items = _per_frame_items(ds, "PixelMeasuresSequence", n_frames)
    pairs = {_spacing_pair(_get(it, "PixelSpacing")) for it in items or () if it is not None} - {None}
    if len(pairs) > 1:
        lo, hi = min(min(p) for p in pairs), max(max(p) for p in pairs)
        raise UnsupportedImageError(
            f"the frames have different pixel spacings ({lo:g} to {hi:g} mm); give --spacing S,ROW,COL "
            f"to use one anyway", path)


def _declared_slice_spacing(ds) -> float | None:
    """SpacingBetweenSlices (pixel measures functional group, else top level)."""
    measures = _fg_item(ds, "PixelMeasuresSequence")
    v = _positive_float(_get(measures, "SpacingBetweenSlices")) if measures is not None else None
    return v if v is not None else _positive_float(_get(ds, "SpacingBetweenSlices"))


def _slice_spacing_enhanced(ds, n_frames: int) -> tuple[float | None, list | None, list | None]:
    """(slice spacing, per-frame positions, orientation) of an enhanced object."""
    measures = _fg_item(ds, "PixelMeasuresSequence")
    spacing = None
    thickness = None
    if measures is not None:
        spacing = _positive_float(_get(measures, "SpacingBetweenSlices"))
        thickness = _positive_float(_get(measures, "SliceThickness"))
    pos_items = _per_frame_items(ds, "PlanePositionSequence", n_frames)
    positions = None
    if pos_items is not None:
        positions = [_floats(_get(it, "ImagePositionPatient")) if it is not None else None for it in pos_items]
        if any(p is None for p in positions):
            positions = None
    orient_item = _fg_item(ds, "PlaneOrientationSequence")
    orientation = _floats(_get(orient_item, "ImageOrientationPatient")) if orient_item is not None else None
    if spacing is None:
        spacing = _positive_float(_get(ds, "SpacingBetweenSlices"))
    if spacing is None:
        spacing = _spacing_from_positions(positions, orientation)
    if spacing is None:
        spacing = thickness or _positive_float(_get(ds, "SliceThickness"))
    return spacing, positions, orientation


# --------------------------------------------------------------------------
# intensity


def _stored_range(ds) -> tuple[int, int]:
    try:
        bits = int(_get(ds, "BitsStored", None) or _get(ds, "BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        bits = 16
    signed = int(_get(ds, "PixelRepresentation", 0) or 0) == 1
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _rescale_params(ds, n_frames: int) -> list[tuple[float, float]] | None:
    """Per-frame (slope, intercept) or None when no rescale is present."""
    items = _per_frame_items(ds, "PixelValueTransformationSequence", n_frames)
    if items is not None and any(it is not None for it in items):
        out = []
        for it in items:
            if it is None or "RescaleSlope" not in it or "RescaleIntercept" not in it:
                out.append((1.0, 0.0))
            else:
                out.append((float(it.RescaleSlope), float(it.RescaleIntercept)))
        return out
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        try:
            return [(float(ds.RescaleSlope), float(ds.RescaleIntercept))] * n_frames
        except (TypeError, ValueError):
            return None
    return None


def _to_compact_int(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Cast float data that are whole numbers to the smallest integer dtype."""
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32):
        info = np.iinfo(dt)
        if lo >= info.min and hi <= info.max:
            return arr.astype(dt)
    return arr


def _apply_modality(arr: np.ndarray, ds, n_frames: int, transforms: list[str], path=None):
    """Apply the modality LUT; return (array, (lo, hi) representable range)."""
    from pydicom import Dataset
    from pydicom.pixels import apply_modality_lut

    lo, hi = _stored_range(ds)
    if arr.dtype.kind == "f":  # float pixel data: no LUT, range from data
        return arr, (float(np.nanmin(arr)), float(np.nanmax(arr)))
    if _get(ds, "ModalityLUTSequence") is not None:
        out = apply_modality_lut(arr, ds)
        # representable output range: the LUT applied to every stored value
        if hi - lo <= 2**20:
            every = np.arange(lo, hi + 1, dtype=np.int64 if lo < 0 else np.uint32).astype(arr.dtype)
            mapped = apply_modality_lut(every, ds)
            rlo, rhi = float(mapped.min()), float(mapped.max())
        else:
            rlo, rhi = float(out.min()), float(out.max())
        transforms.append("modality_lut")
        return out, (rlo, rhi)
    params = _rescale_params(ds, n_frames)
    if params is not None:
        bad = next(((sl, b) for sl, b in params if sl == 0 or not (math.isfinite(sl) and math.isfinite(b))),
                   None)
        if bad is not None:  # every pixel would map to one value (or to NaN)
            raise UnsupportedImageError(f"Rescale Slope/Intercept {bad[0]:g}/{bad[1]:g} would map every "
                                        "pixel to one value", path)
    if params is None or all(p == (1.0, 0.0) for p in params):
        return arr, (float(lo), float(hi))
    if arr.ndim == 3 and len(set(params)) > 1:
        frames = []
        for i in range(arr.shape[0]):
            tmp = Dataset()
            tmp.RescaleSlope, tmp.RescaleIntercept = params[i]
            frames.append(apply_modality_lut(arr[i], tmp))
        out = np.stack(frames)
    else:
        tmp = Dataset()
        tmp.RescaleSlope, tmp.RescaleIntercept = params[0]
        out = apply_modality_lut(arr, tmp)
    ends = [s * v + b for s, b in params for v in (lo, hi)]
    rlo, rhi = float(min(ends)), float(max(ends))
    transforms.append("modality_lut")
    integral = all(float(s).is_integer() and float(b).is_integer() for s, b in params)
    if integral:
        out = _to_compact_int(out, rlo, rhi)
    else:
        out = out.astype(np.float32)
    return out, (rlo, rhi)


def _invert(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo + hi - arr`` keeping an integer dtype when the result fits.

    Values outside ``[lo, hi]`` (bits above BitsStored) are clipped first.
    """
    if arr.dtype.kind in "ui" and float(lo).is_integer() and float(hi).is_integer():
        lo_i, hi_i = int(lo), int(hi)
        info = np.iinfo(arr.dtype)
        if info.min <= lo_i and hi_i <= info.max and info.min <= lo_i + hi_i <= info.max:
            clipped = np.clip(arr, lo_i, hi_i)
            return np.subtract(np.asarray(lo_i + hi_i, dtype=arr.dtype), clipped, dtype=arr.dtype)
        wide = np.clip(arr.astype(np.int64), lo_i, hi_i)
        return _to_compact_int((lo_i + hi_i) - wide, lo, hi)
    out = (lo + hi) - np.clip(arr, lo, hi)
    return out.astype(arr.dtype if arr.dtype.kind == "f" else np.float32)


def _first_window(ds) -> tuple[float, float] | None:
    center = _get(ds, "WindowCenter")
    width = _get(ds, "WindowWidth")
    if center is None or width is None:
        item = _fg_item(ds, "FrameVOILUTSequence")
        if item is not None:
            center = _get(item, "WindowCenter")
            width = _get(item, "WindowWidth")
    c, w = _floats(center), _floats(width)
    if c and w and math.isfinite(c[0]) and math.isfinite(w[0]) and w[0] > 0:
        return (float(c[0]), float(w[0]))
    # a VOI LUT Sequence: the window spanning the LUT's input domain
    lut = _first_item(_get(ds, "VOILUTSequence"))
    if lut is not None:
        desc = _floats(_get(lut, "LUTDescriptor"))
        if desc and len(desc) >= 2:
            n = desc[0] or 65536.0
            first = desc[1]
            if first > 32767 and int(_get(ds, "PixelRepresentation", 0) or 0) == 1:
                first -= 65536  # first mapped value is signed for signed data
            return (first + (n - 1) / 2.0, float(n))
    return None


def _for_processing(arr, ds, rng, transforms, window):
    """Make raw (FOR PROCESSING) data dense-bright; see module docstring."""
    relation = (_str(_get(ds, "PixelIntensityRelationship")) or "LIN").upper()
    try:
        sign = int(_get(ds, "PixelIntensityRelationshipSign", 1) or 1)
    except (TypeError, ValueError):
        sign = 1
    lo, hi = rng
    if relation == "LIN" and sign >= 0:
        a = np.maximum(arr.astype(np.float64), 1.0)
        imax = float(a.max())
        out = (np.log(imax) - np.log(a)).astype(np.float32)
        transforms.append("for_processing_log_attenuation")
        return out, None  # the window no longer applies
    if relation == "LOG" and sign >= 0:
        transforms.append("for_processing_invert_log")
        out = _invert(arr, lo, hi)
        if window is not None:
            window = (lo + hi - window[0], window[1])
        return out, window
    transforms.append(f"for_processing_kept({relation},sign={sign})")
    return arr, window


# --------------------------------------------------------------------------
# metadata


def _laterality(ds) -> str | None:
    lat = _str(_get(ds, "ImageLaterality")) or _str(_get(ds, "Laterality"))
    if not lat:
        item = _fg_item(ds, "FrameAnatomySequence")
        if item is not None:
            lat = _str(_get(item, "FrameLaterality"))
    if not lat:
        # ViewCodeSequence does not hold laterality, but some writers put
        # it into the view modifier or the code meaning
        code = _first_item(_get(ds, "ViewCodeSequence"))
        meaning = (_str(_get(code, "CodeMeaning")) or "").lower() if code is not None else ""
        if meaning.startswith("left") or " left" in meaning:
            lat = "L"
        elif meaning.startswith("right") or " right" in meaning:
            lat = "R"
    if lat:
        lat = lat.upper()[:1] if lat.upper()[:1] in "LRB" else lat.upper()
    return lat or None


_VIEW_CODES = {
    "R-10242": "CC", "399162004": "CC",
    "R-10226": "MLO", "399368009": "MLO",
    "R-10224": "ML", "399260004": "ML",
    "R-10228": "LM", "399352003": "LM",
    "R-10230": "LMO", "399099002": "LMO",
    "R-10236": "SIO", "399188001": "SIO",
    "R-10244": "FB", "399196006": "FB",
    "R-40AAA": "XCCL", "399192008": "XCCL",
    "R-1024A": "XCCM", "399101009": "XCCM",
    "R-10216": "XCC",
    "R-102D0": "AT",
    "R-10238": "ISO", "441555000": "ISO",
}  # SNOMED CT codes as in CID 4014 (pydicom.sr.codedict.codes.cid4014)


def _view(ds) -> str | None:
    view = _str(_get(ds, "ViewPosition"))
    if view:
        return view.upper()
    code = _first_item(_get(ds, "ViewCodeSequence"))
    if code is not None:
        value = _str(_get(code, "CodeValue"))
        if value in _VIEW_CODES:
            return _VIEW_CODES[value]
        meaning = _str(_get(code, "CodeMeaning"))
        if meaning:
            return meaning
    return None


def _person_name(value) -> str | None:
    s = _str(value)
    return s


def _header_metadata(ds, path) -> dict[str, Any]:
    intent = _str(_get(ds, "PresentationIntentType"))
    meta: dict[str, Any] = {
        "source_path": os.fspath(path),
        "format": "dicom",
        "modality": _str(_get(ds, "Modality")),
        "laterality": _laterality(ds),
        "view": _view(ds),
        "presentation_intent": intent.upper() if intent else None,
        "photometric": _str(_get(ds, "PhotometricInterpretation")),
        "manufacturer": _str(_get(ds, "Manufacturer")),
        "manufacturer_model_name": _str(_get(ds, "ManufacturerModelName")),
        "study_instance_uid": _str(_get(ds, "StudyInstanceUID")),
        "series_instance_uid": _str(_get(ds, "SeriesInstanceUID")),
        "sop_instance_uid": _str(_get(ds, "SOPInstanceUID")),
        "sop_class_uid": _str(_get(ds, "SOPClassUID")),
        "frame_of_reference_uid": _str(_get(ds, "FrameOfReferenceUID")),
        "image_position_patient": _floats(_get(ds, "ImagePositionPatient")),
        "image_orientation_patient": _floats(_get(ds, "ImageOrientationPatient")),
        "patient_name": _person_name(_get(ds, "PatientName")),
        "patient_id": _str(_get(ds, "PatientID")),
        "patient_birth_date": _str(_get(ds, "PatientBirthDate")),
        "patient_sex": _str(_get(ds, "PatientSex")),
        "study_id": _str(_get(ds, "StudyID")),
        "study_date": _str(_get(ds, "StudyDate")),
        "study_time": _str(_get(ds, "StudyTime")),
        "study_description": _str(_get(ds, "StudyDescription")),
        "series_number": _int_or_none(_get(ds, "SeriesNumber")),
        "instance_number": _int_or_none(_get(ds, "InstanceNumber")),
        "accession_number": _str(_get(ds, "AccessionNumber")),
        "referring_physician_name": _str(_get(ds, "ReferringPhysicianName")),
        "bits_stored": _int_or_none(_get(ds, "BitsStored")),
        "transfer_syntax_uid": _transfer_syntax(ds),
    }
    if meta["image_orientation_patient"] is None:
        item = _fg_item(ds, "PlaneOrientationSequence")
        if item is not None:
            meta["image_orientation_patient"] = _floats(_get(item, "ImageOrientationPatient"))
    if meta["image_position_patient"] is None:
        item = _fg_item(ds, "PlanePositionSequence", 0)
        if item is not None:
            meta["image_position_patient"] = _floats(_get(item, "ImagePositionPatient"))
    return meta


def _int_or_none(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------
# public readers


#: Longest decoder reason kept in an error line: each plugin's, and all of them.
_PLUGIN_REASON_CHARS = 90
_DECODER_REASON_CHARS = 220


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _decoder_reason(exc: BaseException) -> str:
    """A decoder's failure in a few words, on one line. pydicom says
    "...raised by all available plugins:" and then, a line each, every
    plugin's reason (which may run over lines, quote Python objects or
    dump the codestream): each kept to its first sentence-sized part,
    without object reprs, and the whole clipped."""
    import re

    def tidy(s: str) -> str:
        s = re.sub(r"<[^<>]*\bat 0x[0-9a-fA-F]+>", "", s)  # <_io.BytesIO object at 0x7f...>
        return " ".join(s.split()).rstrip(" :;,")

    lines = [ln for ln in (str(exc) or "").splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].rstrip().endswith("plugins:"):
        plugins = [ln.strip() for ln in lines[1:] if re.match(r"\s+\S+: ", ln)] or lines[1:]
        reason = "failed in all plugins: " + "; ".join(_clip(tidy(p), _PLUGIN_REASON_CHARS) for p in plugins)
    else:
        reason = f"{type(exc).__name__}: {tidy(' '.join(lines)) or 'no reason given'}"
    return _clip(reason, _DECODER_REASON_CHARS)


def _decode(ds, path) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except MemoryError:
        raise ImageTooLargeError("not enough memory to decode the pixel data", path) from None
    except NapariCalcError:
        raise
    except Exception as exc:
        text = str(exc) or type(exc).__name__
        first = text.splitlines()[0]
        if "missing" in first.lower() and "plugin" in first.lower():
            raise MissingDecoderError(first, path) from None
        # one readable line: the transfer syntax by name, the decoders' reasons summarised
        ts = _transfer_syntax(ds)
        if ts:
            from pydicom.uid import UID

            name = UID(ts).name
            what = f"the {name} pixel data" if name and name != ts else f"the pixel data ({ts})"
        else:
            what = "the pixel data"
        raise UnreadableImageError(
            f"cannot decode {what} (truncated or corrupt? {_decoder_reason(exc)})", path
        ) from None
    arr = np.asarray(arr)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _dataset_to_image(ds, path, *, spacing_mm=None) -> MammoImage:
    """Decode ``ds`` into a :class:`MammoImage` (after all checks)."""
    _check_is_image(ds, path)
    frames, rows, cols = _check_layout(ds, path)
    _check_decoder(ds, path)
    _check_native_length(ds, path, frames, rows, cols)

    arr = _decode(ds, path)
    expected = (frames, rows, cols) if frames > 1 else (rows, cols)
    if arr.shape != expected:
        if arr.size == int(np.prod(expected)):
            arr = arr.reshape(expected)
        else:
            raise UnreadableImageError(
                f"decoded pixel data has shape {arr.shape}, header declares {expected}", path
            )
    if min(rows, cols) < 2:
        raise UnsupportedImageError(f"image is {rows}x{cols}, too small to detect on", path)

    meta = _header_metadata(ds, path)
    transforms: list[str] = []
    arr, rng = _apply_modality(arr, ds, frames, transforms, path)
    window = _first_window(ds)
    photometric = (meta["photometric"] or "").upper()
    if meta["presentation_intent"] == "FOR PROCESSING":
        arr, window = _for_processing(arr, ds, rng, transforms, window)
    elif photometric == "MONOCHROME1":
        arr = _invert(arr, *rng)
        transforms.append("invert_monochrome1")
        if window is not None:
            window = (rng[0] + rng[1] - window[0], window[1])
    meta["voi_window"] = None if window is None else (float(window[0]), float(window[1]))
    meta["voi_lut_function"] = _str(_get(ds, "VOILUTFunction")) if window is not None else None
    meta["intensity_transforms"] = transforms
    meta["intensity_range"] = [float(rng[0]), float(rng[1])]

    in_plane, source = _in_plane_spacing(ds)
    spacing: tuple[float, ...] | None
    if arr.ndim == 3:
        slice_mm, positions, orientation = _slice_spacing_enhanced(ds, frames)
        if spacing_mm is None:
            _check_frame_pixel_spacing(ds, frames, path)
            _check_slice_positions(positions, orientation, _declared_slice_spacing(ds), path)
        meta["frame_positions_patient"] = positions
        if meta["image_orientation_patient"] is None and orientation:
            meta["image_orientation_patient"] = orientation
        meta["slice_spacing_mm"] = slice_mm
        if in_plane is not None and slice_mm is not None:
            spacing = (float(slice_mm), float(in_plane[0]), float(in_plane[1]))
        else:
            spacing = None
            if in_plane is not None:
                meta["in_plane_spacing_mm"] = [float(in_plane[0]), float(in_plane[1])]
                source = None
    else:
        spacing = None if in_plane is None else (float(in_plane[0]), float(in_plane[1]))
    if spacing_mm is not None:
        spacing = normalise_user_spacing(
            spacing_mm, arr.ndim, path, file_slice_mm=meta.get("slice_spacing_mm")
        )
        source = "user"
    meta["spacing_source"] = source if spacing is not None else None
    meta["number_of_frames"] = frames
    return MammoImage(pixels=arr, spacing_mm=spacing, metadata=meta)


@_quiet
def read_dicom(path: str | os.PathLike, *, spacing_mm=None) -> MammoImage:
    """Read one DICOM file (single- or multi-frame) as a :class:`MammoImage`.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM file, with or without preamble or ``.dcm`` extension.
    spacing_mm : float or tuple of float, optional
        Overrides the file's spacing (``spacing_source = "user"``).

    Returns
    -------
    MammoImage
        See the module docstring for geometry and intensity rules.

    Raises
    ------
    UnreadableImageError, UnsupportedImageError, MissingDecoderError, ImageTooLargeError
        With a one-line message naming ``path``.
    """
    ds = read_dicom_header(path)
    return _dataset_to_image(ds, path, spacing_mm=spacing_mm)


def _series_key(ds) -> str:
    return _str(_get(ds, "SeriesInstanceUID")) or "<no SeriesInstanceUID>"


@_quiet
def read_dicom_series(
    folder: str | os.PathLike, files: Sequence[str | os.PathLike] | None = None, *, spacing_mm=None
) -> MammoImage:
    """Read a folder holding one DICOM series.

    A single image (or one multi-frame object) is returned as is. Several
    single-frame images are stacked into ``(slice, row, col)`` when they form
    a volume: same size, laterality and view, sorted by
    ``ImagePositionPatient`` along the slice normal (else ``InstanceNumber``).
    Non-image objects (SR, SEG, DICOMDIR, ...) in the folder are ignored.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder (used in messages and as ``source_path``).
    files : sequence of path, optional
        The DICOM files to consider; default: every DICOM file in ``folder``
        (not recursive), recognised by content.
    spacing_mm : float or tuple of float, optional
        Overrides the spacing.

    Raises
    ------
    UnsupportedImageError
        No image, several series, or several images that do not form a volume.
    """
    from . import is_dicom  # local import: package __init__ imports us

    folder = os.fspath(folder)
    if files is None:
        if not os.path.isdir(folder):
            raise UnreadableImageError("folder not found", folder)
        files = sorted(
            os.path.join(folder, f)
            for f in os.listdir(folder)
            if os.path.isfile(os.path.join(folder, f)) and is_dicom(os.path.join(folder, f))
        )
    headers = []
    for f in files:
        ds = read_dicom_header(f)
        if non_image_reason(ds) is not None:
            continue  # SR, SEG, DICOMDIR... next to the images
        headers.append((os.fspath(f), ds))
    if not headers:
        raise UnsupportedImageError("folder holds no DICOM image", folder)
    series: dict[str, list] = {}
    for f, ds in headers:
        series.setdefault(_series_key(ds), []).append((f, ds))
    if len(series) > 1:
        raise UnsupportedImageError(
            f"folder holds {len(series)} DICOM series, expected one; open the files or sub-folders separately",
            folder,
        )
    items = next(iter(series.values()))
    if len(items) == 1:
        f, ds = items[0]
        return _dataset_to_image(ds, f, spacing_mm=spacing_mm)
    return _stack_series(folder, items, spacing_mm=spacing_mm)


def series_is_volume(headers: Sequence) -> bool:
    """True when single-frame datasets ``headers`` can be stacked as a volume."""
    return volume_problem(headers) is None


def volume_problem(headers: Sequence) -> str | None:
    """Why single-frame datasets ``headers`` cannot be stacked as a volume
    (None: they can)."""
    if len(headers) < 2:
        return "fewer than 2 images"
    if any(_frames(ds) != 1 for ds in headers):
        return "some are multi-frame"
    keys = {}
    for ds in headers:
        keys.setdefault(("size", _get(ds, "Rows"), _get(ds, "Columns")), None)
        keys.setdefault(("view", _laterality(ds), _view(ds)), None)
        keys.setdefault(("photometric", (_str(_get(ds, "PhotometricInterpretation")) or "").upper()), None)
    for what, label in (("size", "different sizes"), ("view", "different views or lateralities"),
                        ("photometric", "different photometric interpretations")):
        if sum(k[0] == what for k in keys) > 1:
            return label
    positions = [_floats(_get(ds, "ImagePositionPatient")) for ds in headers]
    if all(p is not None and len(p) == 3 for p in positions):
        if len({tuple(p) for p in positions}) != len(positions):
            return "two images at the same position"
        return None
    numbers = [_int_or_none(_get(ds, "InstanceNumber")) for ds in headers]
    modalities = {(_str(_get(ds, "Modality")) or "").upper() for ds in headers}
    # projection images (MG/DX/CR) without positions are separate views
    if modalities & {"MG", "DX", "CR", "IO", "PX", "RG"}:
        return "projection images without slice positions"
    if not (all(n is not None for n in numbers) and len(set(numbers)) == len(numbers)):
        return "no slice positions and no distinct instance numbers"
    return None


def looks_like_slices(headers: Sequence) -> bool:
    """Single-frame images of one view and laterality that all carry an
    ImagePositionPatient: slices of a volume, whether or not they stack
    (projection mammograms have no position, and a series of views differs
    in view or laterality)."""
    if len(headers) < 2 or len({(_laterality(ds), _view(ds)) for ds in headers}) != 1:
        return False
    return all((p := _floats(_get(ds, "ImagePositionPatient"))) is not None and len(p) == 3 for ds in headers)


def _stack_series(folder, items, *, spacing_mm=None) -> MammoImage:
    headers = [ds for _, ds in items]
    problem = volume_problem(headers)
    if problem is not None:
        raise UnsupportedImageError(
            f"folder holds {len(items)} images of one series that do not form a volume ({problem}); "
            "open the files separately", folder)
    orientation = _floats(_get(headers[0], "ImageOrientationPatient"))
    positions = [_floats(_get(ds, "ImagePositionPatient")) for ds in headers]
    n = _normal(orientation)
    if all(p is not None and len(p) == 3 for p in positions):
        pos = np.asarray(positions, float)
        key = pos @ n if n is not None else pos[:, 2]
        order = list(np.argsort(key, kind="stable"))
    else:
        order = sorted(range(len(headers)), key=lambda i: _int_or_none(_get(headers[i], "InstanceNumber")))
    items = [items[i] for i in order]
    slices = []
    first_meta = None
    for f, ds in items:
        img = _dataset_to_image(ds, f)
        if first_meta is None:
            first_meta = img.metadata
        elif img.metadata["intensity_transforms"] != first_meta["intensity_transforms"]:
            raise UnsupportedImageError("slices of the series have different intensity encodings", folder)
        slices.append(img.pixels)
    dtype = np.result_type(*[s.dtype for s in slices])
    arr = np.stack([s.astype(dtype, copy=False) for s in slices])
    meta = dict(first_meta)
    meta["source_path"] = folder
    meta["source_files"] = [f for f, _ in items]
    meta["sop_instance_uids"] = [_str(_get(ds, "SOPInstanceUID")) for _, ds in items]
    meta["number_of_frames"] = len(items)
    sorted_positions = [_floats(_get(ds, "ImagePositionPatient")) for _, ds in items]
    meta["frame_positions_patient"] = (
        sorted_positions if all(p is not None for p in sorted_positions) else None
    )
    if spacing_mm is None:
        _check_slice_positions(meta["frame_positions_patient"], orientation,
                               _declared_slice_spacing(headers[0]), folder)
    slice_mm = _spacing_from_positions(meta["frame_positions_patient"], orientation)
    if slice_mm is None:
        slice_mm = _positive_float(_get(headers[0], "SpacingBetweenSlices")) or _positive_float(
            _get(headers[0], "SliceThickness")
        )
    meta["slice_spacing_mm"] = slice_mm
    in_plane, source = _in_plane_spacing(headers[0])
    if in_plane is not None and slice_mm is not None:
        spacing = (float(slice_mm), float(in_plane[0]), float(in_plane[1]))
    else:
        spacing = None
        source = None
        if in_plane is not None:
            meta["in_plane_spacing_mm"] = [float(in_plane[0]), float(in_plane[1])]
    if spacing_mm is not None:
        spacing = normalise_user_spacing(spacing_mm, 3, folder, file_slice_mm=slice_mm)
        source = "user"
    meta["spacing_source"] = source if spacing is not None else None
    return MammoImage(pixels=arr, spacing_mm=spacing, metadata=meta)
