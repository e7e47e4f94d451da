"""Read mammograms and tomosynthesis stacks: DICOM, TIFF and OME-TIFF.

The format is recognised by content, never by the file name:

* DICOM: ``DICM`` at byte 128 (Part 10 file), or a dataset without the
  preamble that starts with a group 0x0002 / 0x0008 element (checked by
  parsing the header);
* TIFF / BigTIFF: the ``II*\\0``, ``MM\\0*``, ``II+\\0`` or ``MM\\0+`` magic;
* a folder: one DICOM series (see :func:`.dicom.read_dicom_series`).

Geometry and intensity rules are documented in :mod:`.dicom` and
:mod:`.tiff`. In short: ``pixels`` are dense-bright with the modality LUT
applied and no VOI window; ``spacing_mm`` is ``(row_mm, col_mm)`` or
``(slice_mm, row_mm, col_mm)``, or ``None`` when unknown;
``metadata["spacing_source"]`` tells where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..errors import UnreadableImageError, UnsupportedImageError
from ..image import MammoImage

__all__ = [
    "read_image",
    "check_input",
    "is_dicom",
    "is_tiff",
    "is_dicom_image",
    "sniff_format",
    "find_inputs",
    "misnamed_files",
    "OUTPUT_SUFFIXES",
    "IMAGE_SUFFIXES",
]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: File name endings of napari-calc's own outputs, never taken as inputs when
#: a folder is expanded.
OUTPUT_SUFFIXES = (
    ".calcifications.csv",
    ".clusters.csv",
    ".csv",
    ".json",
    ".mrk.json",
    ".sr.dcm",
)


def _head(path: str, n: int = 256) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A dataset without preamble: first tag in group 0002 or 0008, LE."""
    if len(head) < 8:
        return False
    group = int.from_bytes(head[0:2], "little")
    element = int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008) or element > 0x0FFF:
        # big endian raw datasets are vanishingly rare; group 0x0008 BE
        group_be = int.from_bytes(head[0:2], "big")
        if group_be != 0x0008:
            return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():  # explicit VR
        return True
    # implicit VR: 4-byte length must be plausible
    length = int.from_bytes(head[4:8], "little")
    return length < 1 << 24


def sniff_format(path: str | os.PathLike) -> str | None:
    """Recognise a file by content.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str or None
        ``"dicom"``, ``"tiff"``, ``"folder"`` or ``None`` (not recognised).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return "folder"
    try:
        head = _head(path, 256)
    except OSError:
        return None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if _looks_like_raw_dicom(head):
        try:
            import pydicom

            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, defer_size=1024)
            if len(ds) > 0 and any(
                k in ds for k in ("SOPClassUID", "Modality", "StudyInstanceUID", "Rows")
            ) or getattr(ds, "file_meta", None) and "TransferSyntaxUID" in ds.file_meta:
                return "dicom"
        except Exception:
            return None
    return None


def is_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM file (by content, extension ignored)."""
    return os.path.isfile(path) and sniff_format(path) == "dicom"


def is_tiff(path: str | os.PathLike) -> bool:
    """True when ``path`` is a TIFF / BigTIFF / OME-TIFF file (by content)."""
    return os.path.isfile(path) and sniff_format(path) == "tiff"


def _means_folder(path: str) -> bool:
    """``path`` ends with a path separator (``scans/``): meant as a folder."""
    return path.endswith(tuple(s for s in (os.sep, os.altsep) if s))


def check_input(path: str) -> None:
    """Raise :class:`UnreadableImageError` (one line naming ``path``) when
    ``path`` cannot be an input: missing ("folder not found" when written
    as a folder, ``scans/``), unreadable, or an empty file. A folder that
    exists passes (what it holds is checked where it is read)."""
    if not os.path.exists(path):
        raise UnreadableImageError("folder not found" if _means_folder(path) else "file not found", path)
    if os.path.isdir(path):
        return
    if not os.access(path, os.R_OK):
        raise UnreadableImageError("file is not readable (permission denied)", path)
    if os.path.getsize(path) == 0:
        raise UnreadableImageError("file is empty", path)


def read_image(path: str | os.PathLike, *, spacing_mm=None) -> MammoImage:
    """Read a mammogram, tomosynthesis stack or DICOM series folder.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM file (with or without ``.dcm``), a TIFF / OME-TIFF file, or a
        folder holding one DICOM series. The format is recognised by content.
    spacing_mm : float or tuple of float, optional
        Pixel spacing in mm overriding / supplying the file's: a scalar (row =
        col), ``(row_mm, col_mm)``, or ``(slice_mm, row_mm, col_mm)`` for a
        stack. For a stack given a scalar or a pair, the slice spacing stays
        the file's; if the file has none, a scalar is used for it too and a
        pair is refused. ``metadata["spacing_source"]`` is then ``"user"``.

    Returns
    -------
    MammoImage
        ``pixels`` (row, col) or (slice, row, col), dense-bright;
        ``spacing_mm`` or ``None`` when unknown; ``metadata`` (JSON-ready).

    Raises
    ------
    UnreadableImageError
        Missing, empty, truncated, unrecognised (e.g. text) file.
    UnsupportedImageError
        Non-image DICOM (SR, SEG...), no pixel data, RGB, too small.
    MissingDecoderError
        Compressed DICOM whose decoder package is not installed.
    ImageTooLargeError
        Absurd declared dimensions, refused before allocating.
    InvalidParameterError
        Bad ``spacing_mm``.
    """
    path = os.fspath(path)
    check_input(path)
    fmt = sniff_format(path)
    if fmt == "folder":
        from .dicom import read_dicom_series

        return read_dicom_series(path, spacing_mm=spacing_mm)
    if fmt == "dicom":
        from .dicom import read_dicom

        return read_dicom(path, spacing_mm=spacing_mm)
    if fmt == "tiff":
        from .tiff import read_tiff

        return read_tiff(path, spacing_mm=spacing_mm)
    raise UnreadableImageError("not a DICOM or TIFF image (format not recognised)", path)


def _is_own_output(name: str) -> bool:
    low = name.lower()
    return any(low.endswith(s) for s in OUTPUT_SUFFIXES)


def _dicom_image_header(path: str):
    """Header of a DICOM image file, or None for non-image or unreadable DICOM."""
    from .dicom import _check_is_image, read_dicom_header

    try:
        ds = read_dicom_header(path)
        _check_is_image(ds, path)
    except (UnreadableImageError, UnsupportedImageError):
        return None
    return ds


def is_dicom_image(path: str | os.PathLike) -> bool:
    """True for a readable DICOM file holding an image (not SR, SEG, ...).

    Only the header is read (pixel data deferred).
    """
    return is_dicom(path) and _dicom_image_header(os.fspath(path)) is not None


def _classify_dicom(path: str):
    """('image', ds) / ('non-image', None) / ('broken', None) for a DICOM file."""
    from .dicom import non_image_reason, read_dicom_header

    try:
        ds = read_dicom_header(path)
    except (UnreadableImageError, UnsupportedImageError):
        return "broken", None
    if non_image_reason(ds) is not None:
        return "non-image", None
    return "image", ds


#: File name endings that promise an image: a file so named that is not
#: recognised (or a dangling symbolic link so named) is reported, not
#: silently skipped.
IMAGE_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima", ".tif", ".tiff")


def _expand_folder(folder: str, recursive: bool, _seen: set | None = None,
                   errors: list | None = None) -> list[str]:
    from ..errors import os_reason
    from .dicom import looks_like_slices, series_is_volume

    # each real folder once: a symlink back up the tree (a loop) or to a
    # folder met before adds nothing
    _seen = set() if _seen is None else _seen
    try:
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
    except OSError:
        key = None
    if key is not None:
        if key in _seen:
            return []
        _seen.add(key)

    out: list[str] = []
    dicoms: list[tuple[str, object]] = []
    broken: list[str] = []
    subdirs: list[str] = []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if name.startswith("."):
            continue
        if os.path.isdir(full):
            subdirs.append(full)
            continue
        if not os.path.isfile(full) or _is_own_output(name):
            if (errors is not None and os.path.islink(full) and not os.path.exists(full)
                    and name.lower().endswith(IMAGE_SUFFIXES)):
                errors.append((full, "broken symbolic link: its target does not exist"))
            continue
        fmt = sniff_format(full)
        if fmt == "tiff":
            out.append(full)
        elif fmt == "dicom":
            kind, ds = _classify_dicom(full)
            if kind == "image":
                dicoms.append((full, ds))
            elif kind == "broken":
                broken.append(full)  # reading it will report why
    # a folder whose DICOM images are exactly one volume series -> the folder
    series_uids = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in dicoms}
    headers = [d for _, d in dicoms]
    if len(dicoms) >= 2 and len(series_uids) == 1 and (series_is_volume(headers) or looks_like_slices(headers)):
        # a volume; or slices that do not stack: the folder, so that reading it
        # says why (not each slice detected as a mammogram of its own)
        out.append(folder)
    else:
        out.extend(f for f, _ in dicoms)
    out.extend(broken)
    out.sort()
    if recursive:
        for sub in subdirs:
            if errors is None:
                out.extend(_expand_folder(sub, recursive, _seen))
                continue
            try:  # one unreadable sub-folder: said, and its siblings still done
                out.extend(_expand_folder(sub, recursive, _seen, errors))
            except OSError as exc:
                errors.append((sub, f"cannot list folder ({os_reason(exc)})"))
    return out


def misnamed_files(folder: str, found: list[str], recursive: bool) -> list[str]:
    """Files under ``folder`` named like images whose content is not recognised.

    :func:`find_inputs` skips unrecognised files (a
    folder may hold notes, spreadsheets...), but an empty or corrupt
    ``x.dcm`` / ``x.tif`` is a broken image the user wants to hear about.
    They are returned so that reading them reports the reason. Non-image
    DICOM (SR, SEG, our ``*.sr.dcm``) is recognised, hence not returned.
    """
    taken = {os.path.abspath(f) for f in found}
    series = {f for f in taken if os.path.isdir(f)}
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        if os.path.abspath(dirpath) in series:
            continue
        for name in sorted(filenames):
            low = name.lower()
            if name.startswith(".") or not low.endswith(IMAGE_SUFFIXES):
                continue
            if any(low.endswith(s) for s in OUTPUT_SUFFIXES):
                continue
            full = os.path.join(dirpath, name)
            if os.path.abspath(full) in taken or not os.path.isfile(full):
                continue
            if sniff_format(full) is None:
                out.append(full)
    return out


def find_inputs(paths: Iterable[str | os.PathLike] | str | os.PathLike, recursive: bool = True,
                *, errors: list | None = None) -> list[str]:
    """Expand files and folders into the images to process.

    Parameters
    ----------
    paths : path or iterable of paths
        Files and/or folders.
    recursive : bool
        Descend into sub-folders.
    errors : list, optional
        Receives ``(path, reason)`` for a sub-folder that cannot be listed
        and a dangling symbolic link named like an image; the rest is still
        searched. Without it, such a sub-folder raises :class:`OSError`.

    Returns
    -------
    list of str
        Explicitly named files are kept as given (even unrecognised ones, so
        that reading them reports a clear error). Folders are expanded into
        the image files they hold, recognised by content: DICOM images with
        or without ``.dcm`` and TIFF / OME-TIFF; non-image DICOM (SR such as
        our ``*.sr.dcm``, SEG, DICOMDIR), our other outputs (``*.csv``,
        ``*.json``, ``*.mrk.json``) and other files are skipped. DICOM files
        whose header cannot be read (truncated...) or that lack pixel data are
        kept, so that reading them reports the reason. A folder
        whose DICOM images form one volume series (slices) is returned as the
        folder itself, which :func:`read_image` stacks; so is a folder of
        one series' slices of one view that do not stack (a duplicate
        position, an odd size), so that reading it says why rather than
        each slice being detected as a mammogram. Duplicates are removed;
        order is stable.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result: list[str] = []
    seen: set[str] = set()
    for p in paths:
        p = os.fspath(p)
        items = _expand_folder(p, recursive, errors=errors) if os.path.isdir(p) else [p]
        for it in items:
            key = os.path.abspath(it)
            if key not in seen:
                seen.add(key)
                result.append(it)
    return result
