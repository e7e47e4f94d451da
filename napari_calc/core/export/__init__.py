"""Exports of detections for biopsy planning and for datasets, and reading them back.

Files written by :func:`write_outputs` into ``out_dir`` for an image ``stem``:

============  ==================================  =========================================
format        file                                content
============  ==================================  =========================================
(always)      ``<stem>.calcifications.csv``       INTERFACE calcification columns
(always)      ``<stem>.clusters.csv``             INTERFACE cluster columns
``csv``       (the two CSVs; accepted, implied)
``json``      ``<stem>.detections.json``          metadata, parameters, software version,
                                                  calcifications, clusters with bounding
                                                  boxes (:mod:`.json_io`)
``mrk.json``  ``<stem>.mrk.json``                 3D Slicer markups v1.0.3, LPS mm
                                                  (:mod:`.slicer_markups`)
``sr.dcm``    ``<stem>.sr.dcm``                   DICOM Comprehensive 3D SR, TID 1500
                                                  Measurement Report (highdicom, :mod:`.sr`)
``cad-sr.dcm`` ``<stem>.cad-sr.dcm``              DICOM Mammography CAD SR, TID 4000
                                                  (pydicom, :mod:`.cad_sr`)
============  ==================================  =========================================

Every file is written atomically (temporary file + rename); nothing is
written when an output path would be the input image
(``metadata["source_path"]``). ``deidentify=True`` makes dataset exports
(see :mod:`.deidentify`); the default keeps identifiers for biopsy planning.

:func:`write_format` writes one format to an exact path (the napari writers
use it). A failed write (full disk, read-only folder) raises
:class:`ExportError` naming the file; the previous file, if any, is intact.

:func:`read_detections` reads the CSV (with its sibling), JSON and both SR
flavours back into :class:`~napari_calc.core.detections.Detections`: the CSV,
JSON and TID 1500 SR exactly (positions and features bit for bit), the
Mammography CAD SR approximately (32-bit SCOORD positions, scores as
Certainty of Finding in %; no contrast or cnr, see :mod:`.cad_sr`).

SR files are reproducible byte for byte when ``$SOURCE_DATE_EPOCH`` is set
(their UIDs derive from their content; see :mod:`._dicom`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..detections import Detections
from ..errors import InvalidParameterError, os_reason
from ._common import ExportError, check_not_source, ndim_of

__all__ = ["FORMATS", "SUFFIXES", "write_outputs", "write_format", "read_detections",
           "output_paths", "ExportError"]

#: Supported export format names (``csv`` is always written).
FORMATS = ("csv", "json", "mrk.json", "sr.dcm", "cad-sr.dcm")

#: File name suffix for each format (``csv`` -> the calcification table).
SUFFIXES = {
    "csv": ".calcifications.csv",
    "clusters.csv": ".clusters.csv",
    "json": ".detections.json",
    "mrk.json": ".mrk.json",
    "sr.dcm": ".sr.dcm",
    "cad-sr.dcm": ".cad-sr.dcm",
}

_ALIASES = {"sr": "sr.dcm", "cad-sr": "cad-sr.dcm", "cadsr": "cad-sr.dcm",
            "mrk": "mrk.json", "markups": "mrk.json", "slicer": "mrk.json"}


def _normalize_formats(formats) -> list[str]:
    if formats is None:
        formats = ()
    if isinstance(formats, str):
        formats = [f for f in formats.replace(";", ",").split(",")]
    out = []
    for f in formats:
        key = str(f).strip().lower().lstrip(".")
        if not key:
            continue
        key = _ALIASES.get(key, key)
        if key not in FORMATS:
            raise InvalidParameterError(
                f"unknown export format {f!r}; valid formats: {', '.join(FORMATS)}")
        if key not in out:
            out.append(key)
    return out


def output_paths(out_dir, stem: str, formats=("csv",)) -> dict[str, Path]:
    """The files :func:`write_outputs` would write, keyed by format.

    The keys are ``"csv"`` (calcification table), ``"clusters.csv"`` and
    each requested format.
    """
    fmts = _normalize_formats(formats)
    out_dir = Path(out_dir)
    keys = ["csv", "clusters.csv"] + [f for f in fmts if f != "csv"]
    return {k: out_dir / f"{stem}{SUFFIXES[k]}" for k in keys}


def write_outputs(det: Detections, out_dir, stem: str, formats=("csv",), *,
                  deidentify: bool = False, deid_salt: str | None = None) -> dict[str, Path]:
    """Write the exports of one image's detections.

    Parameters
    ----------
    det : Detections
        Calcifications and clusters (with ``spacing_mm``, ``image_shape``,
        ``params`` and the source ``metadata``).
    out_dir : str or os.PathLike
        Output folder (created when missing).
    stem : str
        File name stem, usually the image's name.
    formats : iterable of str or str
        Any of :data:`FORMATS` (a comma-separated string is accepted). The two
        CSV tables are always written.
    deidentify : bool
        Dataset export: remove patient attributes, dates and paths and
        remap UIDs (:mod:`napari_calc.core.export.deidentify`).
    deid_salt : str, optional
        Salt of the UID remapping (default: ``$NAPARI_CALC_DEID_SALT`` or a
        project constant).

    Returns
    -------
    dict of str to pathlib.Path
        Written files keyed by ``"csv"``, ``"clusters.csv"`` and each format.

    Raises
    ------
    InvalidParameterError
        Unknown format, malformed tables, or an output path that is the
        input image.
    """
    stem = str(stem)
    if not stem or os.sep in stem or (os.altsep and os.altsep in stem):
        raise InvalidParameterError(f"invalid output stem {stem!r}")
    paths = output_paths(out_dir, stem, formats)
    check_not_source(paths.values(), det.metadata or {})
    _write(det, paths, deidentify=deidentify, deid_salt=deid_salt)
    return paths


def write_format(det: Detections, path, fmt: str, *, deidentify: bool = False,
                 deid_salt: str | None = None) -> list[Path]:
    """Write one export format to an exact path (used by the napari writers).

    Parameters
    ----------
    det : Detections
    path : str or os.PathLike
        Destination. For ``fmt="csv"`` this is the calcification table; the
        cluster table goes next to it (``<stem>.clusters.csv`` when ``path``
        ends in ``.calcifications.csv``, else ``<path stem>.clusters.csv``).
    fmt : str
        One of :data:`FORMATS`.
    deidentify, deid_salt
        As for :func:`write_outputs`.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    fmt = _normalize_formats([fmt])[0]
    path = Path(path)
    paths = {fmt: path}
    if fmt == "csv":
        name = path.name
        base = name[: -len(SUFFIXES["csv"])] if name.endswith(SUFFIXES["csv"]) else path.stem
        paths["clusters.csv"] = path.with_name(base + SUFFIXES["clusters.csv"])
    check_not_source(paths.values(), det.metadata or {})
    _write(det, paths, deidentify=deidentify, deid_salt=deid_salt)
    return list(paths.values())


def _stem_of(path: Path, fmt: str) -> str:
    name = Path(path).name
    return name[: -len(SUFFIXES[fmt])] if name.endswith(SUFFIXES[fmt]) else Path(path).stem


def _write(det: Detections, paths: dict, *, deidentify: bool, deid_salt) -> None:
    """Write every format in ``paths`` as one step: each file goes to a
    temporary name beside its destination, and only when all are written
    are they moved into place, so a failure leaves no part of the set (nor
    touches the files of an earlier run). An OSError becomes one clear
    ExportError naming the file."""
    final = {k: Path(v) for k, v in paths.items()}
    for k, dest in final.items():
        if dest.is_dir():
            raise ExportError(f"cannot write {dest.name}: a folder of that name is in the way", dest)
    tmp = {k: dest.with_name(f".{dest.name}.{os.getpid()}.partial.tmp") for k, dest in final.items()}
    try:
        _write_each(det, tmp, final, deidentify=deidentify, deid_salt=deid_salt)
        for k, dest in final.items():
            try:
                os.replace(tmp[k], dest)
            except OSError as e:
                raise ExportError(f"cannot write {dest.name} ({os_reason(e)})", dest) from None
    finally:
        for t in tmp.values():
            with contextlib.suppress(OSError):
                os.unlink(t)


def _write_each(det: Detections, paths: dict, final: dict, *, deidentify: bool, deid_salt) -> None:
    """The writers of :func:`_write`, into ``paths`` (temporary names; the
    SR keys come from the ``final`` names)."""
    metadata = dict(det.metadata or {})
    ndim = ndim_of(det)
    if deidentify:
        from .deidentify import deidentify_metadata

        metadata = deidentify_metadata(metadata, deid_salt)

    def csv_():
        from .csv_io import write_csv

        write_csv(det, paths["csv"], paths["clusters.csv"], ndim)

    def json_():
        from .json_io import write_json

        write_json(det, paths["json"], ndim, metadata, deidentified=deidentify)

    def markups_():
        from .slicer_markups import write_markups

        write_markups(det, paths["mrk.json"], ndim, metadata)

    def sr_():
        from .sr import write_sr

        write_sr(det, paths["sr.dcm"], ndim, metadata, deidentified=deidentify,
                 salt=deid_salt, fallback_key=_stem_of(final["sr.dcm"], "sr.dcm"))

    def cad_sr_():
        from .cad_sr import write_cad_sr

        write_cad_sr(det, paths["cad-sr.dcm"], ndim, metadata, deidentified=deidentify,
                     salt=deid_salt, fallback_key=_stem_of(final["cad-sr.dcm"], "cad-sr.dcm"))

    steps = {"csv": csv_, "json": json_, "mrk.json": markups_, "sr.dcm": sr_,
             "cad-sr.dcm": cad_sr_}
    for fmt, step in steps.items():
        if fmt not in paths:
            continue
        try:
            step()
        except OSError as e:  # full disk, read-only folder ...: one clear line
            raise ExportError(f"cannot write {final[fmt].name} ({os_reason(e)})", final[fmt]) from None


def read_detections(path) -> Detections:
    """Read one of our exports back, so that review can continue.

    Parameters
    ----------
    path : str or os.PathLike
        ``<stem>.calcifications.csv`` (the sibling ``<stem>.clusters.csv`` is
        loaded too) or ``<stem>.clusters.csv``, ``<stem>.detections.json``
        (any ``.json`` of ours), or a DICOM SR written by us
        (``.sr.dcm`` TID 1500 or ``.cad-sr.dcm`` Mammography CAD SR).

    Returns
    -------
    Detections

    Raises
    ------
    ExportError
        The file is missing or is not one of our exports.
    """
    p = Path(path)
    name = p.name.lower()
    try:
        if name.endswith(".csv"):
            from .csv_io import read_csv_detections

            return read_csv_detections(p)
        if name.endswith(".mrk.json"):
            stem = p.name[: -len(".mrk.json")]
            raise ExportError(f"3D Slicer markups are written for Slicer and not read back; open "
                              f"{stem}.calcifications.csv, {stem}.detections.json or "
                              f"{stem}.sr.dcm instead", p)
        if name.endswith(".json"):
            from .json_io import read_json_detections

            return read_json_detections(p)
        if not p.exists():
            raise ExportError("file not found", p)
        from .sr import read_sr_detections

        return read_sr_detections(p)
    except ExportError:
        raise
    except (KeyError, AttributeError, IndexError, TypeError, ValueError) as e:
        raise ExportError(f"not a napari-calc export or damaged ({type(e).__name__}: {e})",
                          p) from None
