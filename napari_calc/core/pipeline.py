"""One image, end to end: read -> detect -> cluster -> export.

The CLI, the batch runner and the dask workers all call
:func:`process_file`, so every path produces identical outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .detect import detect
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

    Returns a summary: ``stem``, ``n_calcifications``, ``n_clusters``,
    ``outputs`` (format -> path) and ``seconds``.
    """
    from .export import write_outputs

    det = detect(image, spacing_mm=spacing_mm, n_threads=n_threads, **(params or {}))
    outputs = write_outputs(det, out_dir, stem, formats=formats, deidentify=deidentify)
    return {
        "stem": stem,
        "n_calcifications": int(len(det.calcifications)),
        "n_clusters": int(len(det.clusters)),
        "outputs": {k: str(v) for k, v in outputs.items()},
        "seconds": det.params.get("seconds"),
    }


def process_file(path, out_dir, *, stem: str | None = None, formats=("csv",), params=None,
                 spacing_mm=None, n_threads: int = 0, deidentify: bool = False) -> dict[str, Any]:
    """Read ``path``, detect, and write ``<stem>.*`` into ``out_dir``.

    Raises a :class:`~napari_calc.core.errors.NapariCalcError` naming the
    file for any bad input; nothing is written for that input then.
    """
    from .read import read_image

    image = read_image(path, spacing_mm=spacing_mm) if spacing_mm is not None else read_image(path)
    summary = process_image(image, Path(out_dir), stem or output_stem(path), formats=formats,
                            params=params, n_threads=n_threads, deidentify=deidentify)
    summary["input"] = os.fspath(path)
    return summary
