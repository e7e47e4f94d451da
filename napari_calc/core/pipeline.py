"""One image, end to end: read -> detect -> cluster -> export.

The CLI, the batch runner and the dask workers all call
:func:`process_file`, so every path produces identical outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .detect import DetectionParams, detect
from .image import MammoImage

__all__ = ["process_file", "process_image", "output_stem", "file_digest", "keep_edited_outputs"]

#: Outputs whose content says whether someone reviewed them (status and label columns).
_REVIEWABLE = ("csv", "json")


def file_digest(path) -> str:
    """SHA-256 of a file's bytes, in hex."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _holds_review(path: Path) -> bool:
    """The table at ``path`` has an accepted, rejected, added or labelled row
    (or cannot be read as our table at all: then it is not ours to replace)."""
    from .errors import NapariCalcError
    from .export import read_detections
    from .review import reviewed_mask

    try:
        calcs = read_detections(path).calcifications
    except (NapariCalcError, OSError, ValueError):
        return True
    return bool(len(calcs)) and "status" in calcs.columns and bool(reviewed_mask(calcs).any())


def keep_edited_outputs(paths: dict[str, Path], written: dict[str, str] | None = None) -> dict[str, dict]:
    """Copy aside the existing outputs that a new run would replace and that
    hold someone's work, so that a re-run never loses an annotation.

    An existing file is kept when ``written`` (file name -> SHA-256 recorded
    when napari-calc wrote it) has it and its bytes changed since (edited in a
    spreadsheet, in 3D Slicer, by a script); or, for the files without a
    record, when it is a calcification table or JSON export holding a review
    (:func:`napari_calc.core.review.reviewed_mask`) or one that cannot be read.
    The copy goes to ``<name>.bak`` (``.bak.2``, ... when taken: a backup is
    never overwritten), written atomically.

    Parameters
    ----------
    paths : dict of str to pathlib.Path
        The outputs about to be written, keyed by format
        (:func:`napari_calc.core.export.output_paths`).
    written : dict of str to str, optional
        Digests of the previous run's outputs (its ``.done.json`` marker).

    Returns
    -------
    dict of str to dict
        File name -> ``{"kept_as": backup file name, "why": reason}`` for
        each file copied.
    """
    import shutil

    from .atomic import atomic_write
    from .review import backup_path

    written = written or {}
    kept = {}
    for fmt, path in paths.items():
        if not path.is_file():
            continue
        if path.name in written:
            if file_digest(path) == written[path.name]:
                continue
            why = "changed since napari-calc wrote it"
        elif fmt in _REVIEWABLE and _holds_review(path):
            why = "holds a review"
        else:
            continue
        bak = backup_path(path)
        with open(path, "rb") as src, atomic_write(bak, "wb", encoding=None) as dst:
            shutil.copyfileobj(src, dst)
        kept[path.name] = {"kept_as": bak.name, "why": why}
    return kept


def output_stem(path) -> str:
    """File name without its image extension, in any case (``a.ome.tif`` ->
    ``a``, ``scan.IMA`` -> ``scan``; every ending of
    :data:`napari_calc.core.read.IMAGE_SUFFIXES`)."""
    from .read import IMAGE_SUFFIXES

    name = os.path.basename(os.path.normpath(os.fspath(path)))
    low = name.lower()
    for ext in (".ome.tiff", ".ome.tif") + IMAGE_SUFFIXES:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def process_image(image: MammoImage, out_dir, stem: str, *, formats=("csv",), params=None,
                  spacing_mm=None, n_threads: int = 0, deidentify: bool = False,
                  keep_edited: bool = False, written: dict[str, str] | None = None) -> dict[str, Any]:
    """Detect on an image already in memory and write its outputs.

    Parameters
    ----------
    image : MammoImage
        The image (spacing from its metadata unless ``spacing_mm`` is given).
    out_dir : str or os.PathLike
        Output folder (created when missing).
    stem : str
        File name stem of the outputs (``<stem>.calcifications.csv`` ...).
    formats : iterable of str
        Export formats (:data:`napari_calc.core.export.FORMATS`); the two
        CSV tables are always written.
    params : dict, optional
        Detection parameters (fields of
        :class:`~napari_calc.core.detect.DetectionParams`).
    spacing_mm : float or tuple of float, optional
        Overrides the image's spacing.
    n_threads : int
        Kernel threads (0: OpenMP default); results do not depend on it.
    deidentify : bool
        Dataset exports without patient identifiers.
    keep_edited : bool
        Before replacing existing outputs, copy aside those holding someone's
        work (:func:`keep_edited_outputs`, with ``written``).
    written : dict of str to str, optional
        The previous run's output digests, for ``keep_edited``.

    Returns
    -------
    dict
        ``stem``, ``n_calcifications`` and ``n_clusters`` (all candidates and
        clusters in the tables), ``n_likely`` and ``n_likely_clusters`` (those
        scoring at least ``min_score``, the operating point), ``outputs`` (format
        -> path, as :func:`~napari_calc.core.export.write_outputs` keys them:
        ``"csv"``, ``"clusters.csv"``, ``"json"``, ...) and ``seconds`` (the
        detection time, which is deliberately *not* written into the
        exports so that they are reproducible byte for byte), and ``kept``
        (:func:`keep_edited_outputs`; empty without ``keep_edited``).
    """
    from .export import output_paths, write_outputs

    det = detect(image, spacing_mm=spacing_mm, n_threads=n_threads, **(params or {}))
    # The detection time goes to the summary (and the batch run manifest), not
    # into the exports: the same image and parameters then give byte-identical
    # files on every run, on every machine (resumable batches rely on it).
    seconds = det.params.pop("seconds", None)
    kept = keep_edited_outputs(output_paths(out_dir, stem, formats), written) if keep_edited else {}
    outputs = write_outputs(det, out_dir, stem, formats=formats, deidentify=deidentify)
    op = float(det.params.get("min_score", DetectionParams().min_score))
    return {
        "stem": stem,
        "n_calcifications": int(len(det.calcifications)),
        "n_clusters": int(len(det.clusters)),
        "n_likely": int((det.calcifications["score"] >= op).sum()),
        "n_likely_clusters": int((det.clusters["score"] >= op).sum()),
        "outputs": {k: str(v) for k, v in outputs.items()},
        "seconds": seconds,
        "kept": kept,
    }


def process_file(path, out_dir, *, stem: str | None = None, formats=("csv",), params=None,
                 spacing_mm=None, n_threads: int = 0, deidentify: bool = False,
                 keep_edited: bool = False, written: dict[str, str] | None = None) -> dict[str, Any]:
    """Read ``path``, detect, and write ``<stem>.*`` into ``out_dir``.

    The single code path of every image in the CLI, the local batch runner
    and the dask workers (:mod:`napari_calc.core.batch`).

    Parameters
    ----------
    path : str or os.PathLike
        Image file (DICOM by content, TIFF / OME-TIFF) or DICOM series folder.
    out_dir : str or os.PathLike
        Output folder.
    stem : str, optional
        Output stem (default :func:`output_stem` of ``path``).
    formats, params, spacing_mm, n_threads, deidentify, keep_edited, written
        As for :func:`process_image`.

    Returns
    -------
    dict
        The :func:`process_image` summary plus ``input``.

    Raises
    ------
    NapariCalcError
        Any bad input, naming the file; nothing is written for that input.
    """
    from .read import read_image

    image = read_image(path, spacing_mm=spacing_mm) if spacing_mm is not None else read_image(path)
    summary = process_image(image, Path(out_dir), stem or output_stem(path), formats=formats,
                            params=params, n_threads=n_threads, deidentify=deidentify,
                            keep_edited=keep_edited, written=written)
    summary["input"] = os.fspath(path)
    return summary
