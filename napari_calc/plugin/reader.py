"""napari reader: mammograms and tomosynthesis stacks (DICOM, TIFF, OME-TIFF).

The format is recognised by content (DICOM files often have no extension),
so the manifest registers this reader for every file name; it declines
(returns None) for anything that is not an image we read, including
napari-calc's own exports (``*.calcifications.csv``, ``*.sr.dcm``, ...)
which :mod:`.export_reader` opens. A file named like an image (``.dcm``,
``.tif``, ...) that is not one is taken, so that reading it raises the
reason in one line instead of napari's "the reader refused the file".

A folder is read as one volume when its DICOM images form one (a DICOM
series of slices); otherwise each image in it (an exam's views: R CC,
L CC, R MLO, L MLO) becomes a layer of its own. An image of the folder that
cannot be read is named with its reason in a warning (napari shows it), and
the others still open.
"""

from __future__ import annotations

import os

from ..core.image import MammoImage
from .layers import axis_labels

__all__ = ["get_reader", "read_layers", "image_layer_data"]

_EXPORT_SUFFIXES = (".calcifications.csv", ".clusters.csv", ".csv", ".json", ".mrk.json", ".sr.dcm",
                    ".cad-sr.dcm")


def _accepts(path: str) -> bool:
    low = path.lower()
    if any(low.endswith(s) for s in _EXPORT_SUFFIXES):
        return False
    if os.path.isdir(path):
        try:
            from ..core.read import sniff_format

            return any(sniff_format(os.path.join(path, f)) in ("dicom", "tiff")
                       for f in sorted(os.listdir(path))[:50] if os.path.isfile(os.path.join(path, f)))
        except OSError:
            return False
    if not os.path.isfile(path):
        return False
    from ..core.read import sniff_format

    fmt = sniff_format(path)
    if fmt == "tiff":
        return True
    if fmt == "dicom":
        from ..core.read import is_dicom_image  # declines SR / SEG / presentation states

        return is_dicom_image(path)
    return False


#: Names that say "image": a file with one of these that is not an image we
#: read gets our one-line reason (napari said only that the reader refused it).
_IMAGE_SUFFIXES = (".dcm", ".dicom", ".tif", ".tiff")


def _claims(path: str) -> bool:
    low = path.lower()
    return (os.path.isfile(path) and low.endswith(_IMAGE_SUFFIXES)
            and not any(low.endswith(s) for s in _EXPORT_SUFFIXES))


def get_reader(path):
    """npe2 reader contribution: a reader function, or None if not ours.

    Parameters
    ----------
    path : str or list of str

    Returns
    -------
    callable or None
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    paths = [os.fspath(p) for p in paths]
    if not all(_accepts(p) or _claims(p) for p in paths):
        return None
    return read_layers  # for a claimed file that is no image: raises the reason


def image_layer_data(image: MammoImage, name: str | None = None):
    """``(data, kwargs, "image")`` for one :class:`MammoImage`.

    The layer's ``scale`` is the pixel spacing in mm (``units`` mm) when the
    file gives it; otherwise the scale stays 1 and
    ``metadata["napari_calc"]["spacing_mm"]`` is None, which the detect
    panel flags.
    """
    meta = dict(image.metadata or {})
    spacing = None if image.spacing_mm is None else tuple(float(s) for s in image.spacing_mm)
    kw = {
        "name": name or image.name,
        "colormap": "gray",
        "metadata": {"napari_calc": {"spacing_mm": spacing, "image_metadata": meta}},
    }
    if spacing is not None:
        kw["scale"] = spacing
        kw["units"] = ("mm",) * len(spacing)
    if image.pixels.ndim in (2, 3):
        kw["axis_labels"] = axis_labels(image.pixels.ndim)
    win = meta.get("voi_window")
    if win:
        c, w = float(win[0]), float(win[1])
        if w > 0:
            kw["contrast_limits"] = (c - w / 2.0, c + w / 2.0)
    return (image.pixels, kw, "image")


def read_layers(path):
    """Read one or more images into napari layer data tuples.

    Errors (unreadable, unsupported file) are raised as
    :class:`~napari_calc.core.errors.NapariCalcError` whose message names
    the file and the reason; napari shows it to the user.
    """
    from ..core.read import read_image

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out = []
    for p in paths:
        p = os.fspath(p)
        out.extend(_folder_layers(p) if os.path.isdir(p) else [image_layer_data(read_image(p))])
    return out


#: The most images a folder opened in napari may hold (an exam has 4-8 views;
#: a folder of a whole dataset is for ``napari-calc detect`` / ``review``).
MAX_FOLDER_IMAGES = 16


def _folder_layers(folder: str) -> list:
    """Layers of a folder: its volume, or each of its images (see module doc)."""
    import warnings

    from ..core.errors import NapariCalcError, UnreadableImageError, UnsupportedImageError
    from ..core.read import find_inputs, misnamed_files, read_image

    items = find_inputs([folder], recursive=False)
    items += misnamed_files(folder, items, False)  # a damaged x.dcm: said why, not skipped
    if not items:
        raise UnreadableImageError("no DICOM or TIFF images in this folder", folder)
    if os.path.abspath(items[0]) == os.path.abspath(folder) and len(items) == 1:
        return [image_layer_data(read_image(folder))]  # one volume series
    if len(items) > MAX_FOLDER_IMAGES:
        raise UnsupportedImageError(
            f"folder holds {len(items)} images, more than the {MAX_FOLDER_IMAGES} napari-calc opens as "
            "layers at once; open the files of one exam, or run 'napari-calc detect' then "
            "'napari-calc review' on the folder", folder)
    layers, failed = [], []
    for item in items:
        try:
            layers.append(image_layer_data(read_image(item)))
        except NapariCalcError as exc:
            failed.append(exc)
    if not layers:
        raise failed[0]
    for exc in failed:
        warnings.warn(f"{exc} (the folder's other images are open)", stacklevel=2)
    return layers
