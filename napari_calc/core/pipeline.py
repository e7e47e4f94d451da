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

__all__ = ["process_file", "process_image", "output_stem"]


def output_stem(path) -> str:
    """File name without the image extensions (``a.ome.tif`` -> ``a``)."""
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    low = name.lower()
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".dcm", ".dicom"):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def process_image(image: MammoImage, out_dir, stem: str, *, formats=("csv",), params=None,
                  spacing_mm=None, n_threads: int = 0, deidentify: bool = False) -> dict[str, Any]:
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

    Returns
    -------
    dict
        ``stem``, ``n_calcifications`` and ``n_clusters`` (all candidates and
        clusters in the tables), ``n_likely`` and ``n_likely_clusters`` (those
        scoring at least ``min_score``, the operating point), ``outputs`` (format
        -> path, as :func:`~napari_calc.core.export.write_outputs` keys them:
        ``"csv"``, ``"clusters.csv"``, ``"json"``, ...) and ``seconds`` (the
        detection time, which is deliberately *not* written into the
        exports so that they are reproducible byte for byte).
    """
    from .export import write_outputs

    det = detect(image, spacing_mm=spacing_mm, n_threads=n_threads, **(params or {}))
    # The detection time goes to the summary (and the batch run manifest), not
    # into the exports: the same image and parameters then give byte-identical
    # files on every run, on every machine (resumable batches rely on it).
    seconds = det.params.pop("seconds", None)
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
    }


def process_file(path, out_dir, *, stem: str | None = None, formats=("csv",), params=None,
                 spacing_mm=None, n_threads: int = 0, deidentify: bool = False) -> dict[str, Any]:
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
    formats, params, spacing_mm, n_threads, deidentify
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
                            params=params, n_threads=n_threads, deidentify=deidentify)
    summary["input"] = os.fspath(path)
    return summary
