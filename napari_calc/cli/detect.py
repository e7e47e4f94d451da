"""``napari-calc detect INPUT...``: the pipeline over files and folders."""

from __future__ import annotations

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
    if not vals or len(vals) > 3 or any(not (0 < v < float("inf")) for v in vals):
        raise NapariCalcError(f"--spacing {text!r} must be 1 to 3 positive numbers in mm")
    return vals[0] if len(vals) == 1 else tuple(vals)


def add_common_arguments(p) -> None:
    p.add_argument("--out", default="napari-calc-out", metavar="DIR",
                   help="output folder (default: ./napari-calc-out)")
    p.add_argument("--spacing", default=None, metavar="MM",
                   help="pixel spacing in mm when the file has none (e.g. 0.07 or 0.07,0.07; "
                        "a stack without slice spacing needs all three, slice first: 1,0.1,0.1); "
                        "overrides the file's own")
    p.add_argument("--formats", default="csv", metavar="LIST",
                   help="comma-separated extra outputs: csv (always), json, mrk.json (3D Slicer), "
                        "sr.dcm (DICOM SR TID 1500), cad-sr.dcm (Mammography CAD SR)")


def parse_param(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` of ``--param`` -> (name, value); the value as JSON when it parses."""
    import json

    name, sep, value = str(text).partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise NapariCalcError(f"--param {text!r} is not NAME=VALUE (e.g. threshold=4.5)")
    value = value.strip()
    try:
        parsed = json.loads(value.lower() if value.lower() in ("true", "false") else value)
    except ValueError:
        parsed = value
    return name, parsed


def parse_params(texts) -> dict[str, object]:
    """The ``--param`` options -> {name: value}. A parameter given twice
    (``threshold=4 ... threshold=5``, also as ``use-mask`` and ``use_mask``)
    is refused: which one was meant is the user's to say, not ours to guess."""
    params: dict[str, object] = {}
    given: dict[str, str] = {}
    for text in texts:
        name, value = parse_param(text)
        if name in params:
            raise NapariCalcError(f"--param {name} is given twice ({given[name]!r} and {str(text)!r}); "
                                  "give each parameter once")
        params[name], given[name] = value, str(text)
    return params


def register(sub) -> None:
    p = sub.add_parser("detect", help="detect calcifications in images or folders",
                       description="Detect microcalcifications and clusters in mammograms "
                                   "(DICOM with or without .dcm, TIFF/OME-TIFF) and write "
                                   "<stem>.calcifications.csv and <stem>.clusters.csv per input. "
                                   "Folders are searched recursively; a rerun skips inputs whose "
                                   "outputs are complete (<stem>.done.json); a run manifest goes "
                                   "to DIR/napari-calc-run.json.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    add_common_arguments(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="parallel local worker processes (default: number of cores; "
                        "1 runs in this process)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="send the work to a running dask.distributed scheduler (tcp://host:8786, "
                        "or a scheduler file); inputs and --out must be paths the workers can reach")
    p.add_argument("--force", action="store_true",
                   help="recompute inputs whose outputs are already complete")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on an input after this many seconds (its worker is killed); "
                        "counted from when the worker process is ready, so its start-up does not count")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="detection parameter, repeatable for different parameters (e.g. --param "
                        "threshold=4.5 --param nms_radius_mm=0.4); the same NAME twice is refused")
    p.add_argument("--deidentify", action="store_true",
                   help="dataset exports without patient identifiers, dates and paths")
    p.add_argument("--no-recursive", dest="recursive", action="store_false",
                   help="do not descend into sub-folders")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show the progress bar even when stderr is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.batch import run_batch

    formats = parse_formats(args.formats)
    spacing = parse_spacing(args.spacing)
    params = parse_params(args.param)
    result = run_batch(args.inputs, Path(args.out), formats=formats, params=params,
                       spacing_mm=spacing, deidentify=args.deidentify, workers=args.workers,
                       scheduler=args.scheduler, timeout=args.timeout, force=args.force,
                       progress=args.progress, recursive=args.recursive,
                       command={k: v for k, v in vars(args).items() if k != "func"})
    for line in result.summary_lines():
        print(line)
    return result.exit_code
