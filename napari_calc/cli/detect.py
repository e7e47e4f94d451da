"""``napari-calc detect INPUT...``: the pipeline over files and folders."""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.errors import NapariCalcError


def parse_formats(text: str) -> tuple[str, ...]:
    from ..core.export import FORMATS

    out = []
    for f in (t.strip().lower().lstrip(".") for t in text.split(",")):
        if not f:
            continue
        if f not in FORMATS:
            raise NapariCalcError(f"unknown format {f!r}; choose from {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    if "csv" not in out:
        out.insert(0, "csv")
    return tuple(out)


def parse_spacing(text):
    if text is None:
        return None
    try:
        vals = [float(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise NapariCalcError(f"--spacing {text!r} is not a number in mm (e.g. 0.07 or 0.07,0.07)")
    if not vals or len(vals) > 3 or any(not (v > 0) for v in vals):
        raise NapariCalcError(f"--spacing {text!r} must be 1 to 3 positive numbers in mm")
    return vals[0] if len(vals) == 1 else tuple(vals)


def add_common_arguments(p) -> None:
    p.add_argument("--out", default="napari-calc-out", metavar="DIR",
                   help="output folder (default: ./napari-calc-out)")
    p.add_argument("--spacing", default=None, metavar="MM",
                   help="pixel spacing in mm when the file has none (e.g. 0.07 or 0.07,0.07); "
                        "overrides the file's own")
    p.add_argument("--formats", default="csv", metavar="LIST",
                   help="comma-separated extra outputs: csv (always), json, mrk.json (3D Slicer), "
                        "sr.dcm (DICOM SR TID 1500), cad-sr.dcm (Mammography CAD SR)")


def register(sub) -> None:
    p = sub.add_parser("detect", help="detect calcifications in images or folders",
                       description="Detect microcalcifications and clusters in mammograms "
                                   "(DICOM with or without .dcm, TIFF/OME-TIFF) and write "
                                   "<stem>.calcifications.csv and <stem>.clusters.csv per input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    add_common_arguments(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="parallel local worker processes (default: number of cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="send the work to a running dask.distributed scheduler (tcp://host:8786)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.pipeline import process_file
    from ..core.read import find_inputs

    formats = parse_formats(args.formats)
    spacing = parse_spacing(args.spacing)
    failed = 0
    inputs, problems = [], []
    for item in args.inputs:
        try:
            inputs.extend(find_inputs([item]))
        except NapariCalcError as exc:
            problems.append(exc)
    for exc in problems:
        print(f"napari-calc: {exc}", file=sys.stderr)
        failed += 1
    total_c = total_k = 0
    for path in inputs:
        try:
            s = process_file(path, Path(args.out), formats=formats, spacing_mm=spacing)
        except NapariCalcError as exc:
            print(f"napari-calc: {exc}", file=sys.stderr)
            failed += 1
            continue
        total_c += s["n_calcifications"]
        total_k += s["n_clusters"]
        print(f"{path}: {s['n_calcifications']} calcifications, {s['n_clusters']} clusters")
    print(f"{len(inputs) - (failed - len(problems))} of {len(inputs) + len(problems)} inputs done, "
          f"{total_c} calcifications, {total_k} clusters -> {Path(args.out).resolve()}")
    return 1 if failed else 0
