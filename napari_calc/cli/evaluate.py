"""``napari-calc evaluate DETECTIONS TRUTH``: FROC against phantom truth."""

from __future__ import annotations

import math
from pathlib import Path

CALC_SUFFIX = ".calcifications.csv"
CLUSTER_SUFFIX = ".clusters.csv"
TRUTH_SUFFIX = ".truth.json"


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="FROC of detections against ground truth",
        description=(
            "Pair <stem>.calcifications.csv (and <stem>.clusters.csv next to it) with "
            "<stem>.truth.json by stem, print the individual and cluster FROC and the "
            "sensitivity at 0.125 to 4 false positives per image, and save froc.csv "
            "and froc.png in --out."
        ),
    )
    p.add_argument("detections", metavar="DETECTIONS",
                   help="a <stem>.calcifications.csv or a folder of them")
    p.add_argument("truth", metavar="TRUTH", help="a <stem>.truth.json or a folder of them")
    p.add_argument("--out", default="napari-calc-eval", metavar="DIR",
                   help="folder for froc.csv and froc.png (default ./napari-calc-eval)")
    p.add_argument("--match-mm", type=float, default=None, metavar="R",
                   help="fixed matching radius in mm (default: max(0.5 mm, truth diameter))")
    p.add_argument("--cluster-margin-mm", type=float, default=None, metavar="M",
                   help="margin added to a truth cluster's radius (default 2.5 mm)")
    p.set_defaults(func=run)


def _err(path, reason) -> None:
    from . import error_line

    error_line(f"{path}: {reason}")


def _out_problem(out: Path) -> tuple[Path, str] | None:
    """(path, reason) when froc.csv and froc.png could not be written in
    ``out``: it, or the nearest of its folders that exists, is a file or
    cannot be written to. Checked before the work, not after it."""
    import os

    if out.exists():
        return None if out.is_dir() else (out, "--out names a file; give a folder for froc.csv and froc.png")
    for parent in out.parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            return (out, f"cannot make this --out folder: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            return (out, f"cannot make this --out folder: {parent} is not writable (permission denied)")
        return None
    return None


def _collect(path: Path, suffix: str) -> dict[str, Path] | None:
    if path.is_dir():
        return {p.name[: -len(suffix)]: p for p in sorted(path.iterdir()) if p.name.endswith(suffix)}
    if path.is_file():
        name = path.name
        stem = name[: -len(suffix)] if name.endswith(suffix) else path.stem
        return {stem: path}
    return None


def _read_csv(path: Path):
    from ..core.export import ExportError
    from ..core.export.csv_io import read_table

    try:
        # as written, or as a spreadsheet saved it (semicolons, decimal commas)
        df = read_table(path)
    except ExportError as exc:
        raise ValueError(exc.reason) from None
    missing = [c for c in ("y_mm", "x_mm") if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    from ..core.export.csv_io import CALC_NUMERIC, CLUSTER_NUMERIC, clean_table

    # the same reading rules as everywhere: numbers or nothing, a known status
    numeric = CLUSTER_NUMERIC if path.name.endswith(CLUSTER_SUFFIX) else CALC_NUMERIC
    # a blank score would drop the row from every operating point, unsaid
    required = ("y_mm", "x_mm") + (("score",) if "score" in df.columns else ())
    return clean_table(df, numeric=numeric, required=required)


def run(args) -> int:
    import pandas as pd

    from ..core.errors import NapariCalcError, counted
    from ..core.evaluate import (
        CLUSTER_MARGIN_MM,
        cluster_froc,
        froc,
        froc_summary,
        plot_froc,
    )
    from ..core.phantom import load_truth
    from ..core.atomic import atomic_write_text

    det_path, truth_path, out = Path(args.detections), Path(args.truth), Path(args.out)
    # an option's mistake names the option and its value, not a file
    if args.match_mm is not None and not 0 < args.match_mm < math.inf:
        _err(f"--match-mm {args.match_mm:g}", "must be a positive number of mm")
        return 2
    if args.cluster_margin_mm is not None and not 0 <= args.cluster_margin_mm < math.inf:
        _err(f"--cluster-margin-mm {args.cluster_margin_mm:g}", "must be 0 or more mm")
        return 2
    bad_out = _out_problem(out)  # found now, not after the whole evaluation
    if bad_out:
        _err(*bad_out)
        return 2
    if det_path.is_file() and det_path.name.endswith(CLUSTER_SUFFIX):
        _err(det_path, f"a cluster table, not the calcifications; give the *{CALC_SUFFIX} beside it")
        return 2
    if truth_path.is_file() and not truth_path.name.endswith(TRUTH_SUFFIX):
        _err(truth_path, f"not a truth file: truth is a *{TRUTH_SUFFIX} ('napari-calc phantom' writes "
                         "them); a reviewed table cannot serve as truth")
        return 2
    if det_path.is_file() and not det_path.name.lower().endswith(".csv"):
        _err(det_path, f"not a detections table; give the *{CALC_SUFFIX} that "
                       "'napari-calc detect' wrote, or a folder of them")
        return 2
    dets = _collect(det_path, CALC_SUFFIX)
    if dets is None:
        _err(det_path, "no such file or folder")
        return 2
    truths = _collect(truth_path, TRUTH_SUFFIX)
    if truths is None:
        _err(truth_path, "no such file or folder")
        return 2
    if not truths:
        _err(truth_path, f"no *{TRUTH_SUFFIX} files")
        return 2
    if not dets:
        _err(det_path, f"no *{CALC_SUFFIX} files (the tables of 'napari-calc detect')")
        return 2
    if det_path.is_file() != truth_path.is_file():
        _err(det_path, "give a folder of detections with a folder of truths, or one "
                       f"*{CALC_SUFFIX} file with one *{TRUTH_SUFFIX} file")
        return 2
    single_pair = det_path.is_file() and truth_path.is_file()
    if single_pair:
        (ds,), (ts,) = dets.keys(), truths.keys()
        if ds != ts:  # given so, but a mix-up is the likelier story
            _err(det_path, f"paired with the truth of another image name ({truth_path.name}); "
                           "the results below are for this pair as given")
        dets, truths = {ts: dets[ds]}, {ts: truths[ts]}

    status = 0
    det_list, clu_list, truth_list, stems = [], [], [], []
    for stem, tpath in truths.items():
        try:
            truth = load_truth(tpath)
        except NapariCalcError as exc:
            _err(tpath, exc.reason)
            if single_pair:
                return 1
            status = 1
            continue
        dpath = dets.get(stem)
        if dpath is None:
            # a missing result counts as an image with no detections
            _err(det_path / f"{stem}{CALC_SUFFIX}" if det_path.is_dir() else det_path,
                 "no detections for this truth; counted as an image with no detections")
            status = 1
            cdf = pd.DataFrame(columns=["y_mm", "x_mm", "score", "status"])
            kdf = pd.DataFrame(columns=["y_mm", "x_mm", "score"])
        else:
            try:
                cdf = _read_csv(dpath)
            except (ValueError, OSError) as exc:
                _err(dpath, str(exc) if isinstance(exc, ValueError) else (exc.strerror or exc))
                if single_pair:  # that line says it all
                    return 1
                status = 1
                continue
            name = dpath.name
            base = name[: -len(CALC_SUFFIX)] if name.endswith(CALC_SUFFIX) else dpath.stem
            cpath = dpath.with_name(base + CLUSTER_SUFFIX)
            kdf = pd.DataFrame(columns=["y_mm", "x_mm", "score"])
            if cpath.is_file():
                try:
                    kdf = _read_csv(cpath)
                except (ValueError, OSError) as exc:
                    _err(cpath, str(exc) if isinstance(exc, ValueError) else (exc.strerror or exc))
                    status = 1
            else:
                _err(cpath, "not found beside the calcification table; the cluster FROC counts "
                            "this image as one with no clusters found")
        det_list.append(cdf)
        clu_list.append(kdf)
        truth_list.append(truth)
        stems.append(stem)
    for stem, dpath in dets.items():
        if stem not in truths:
            _err(dpath, "no matching truth file; ignored")
    if not truth_list:
        _err(truth_path, "nothing to evaluate")
        return 2

    margin = CLUSTER_MARGIN_MM if args.cluster_margin_mm is None else args.cluster_margin_mm
    f_calc = froc(det_list, truth_list, radius_mm=args.match_mm)
    f_clu = cluster_froc(clu_list, truth_list, margin_mm=margin)

    n_img = len(truth_list)
    n_mc = int(f_calc["n_truth"].iloc[0])
    n_cl = int(f_clu["n_truth"].iloc[0])
    rule = f"{args.match_mm} mm" if args.match_mm else "max(0.5 mm, diameter)"
    print(f"{counted(n_img, 'image')}, {counted(n_mc, 'truth calcification')}, "
          f"{counted(n_cl, 'truth cluster')}")
    print(f"matching: calcification within {rule}; cluster centroid within radius + {margin} mm")
    s_calc = froc_summary(f_calc)
    s_clu = froc_summary(f_clu)
    table = pd.DataFrame(
        {
            "fp_per_image": s_calc["fp_per_image"],
            "calc_sensitivity": s_calc["sensitivity"].round(3),
            "calc_threshold": s_calc["threshold"].round(4),
            "cluster_sensitivity": s_clu["sensitivity"].round(3),
            "cluster_threshold": s_clu["threshold"].round(4),
        }
    )
    print(table.to_string(index=False))
    last = f_calc.iloc[-1]
    print(
        f"all detections: calcification sensitivity {last['sensitivity']:.3f} at "
        f"{last['fp_per_image']:.2f} FP/image; cluster sensitivity "
        f"{f_clu.iloc[-1]['sensitivity']:.3f} at {f_clu.iloc[-1]['fp_per_image']:.2f} FP/image"
    )

    try:
        out.mkdir(parents=True, exist_ok=True)
        both = pd.concat(
            [f_calc.assign(level="calcification"), f_clu.assign(level="cluster")],
            ignore_index=True,
        )
        both = both[["level"] + [c for c in both.columns if c != "level"]]
        atomic_write_text(out / "froc.csv", both.to_csv(index=False))
        plot_froc(f_calc, f_clu, out / "froc.png", title=counted(n_img, "image"))
    except OSError as exc:
        _err(out, exc.strerror or exc)
        return 1
    print(f"wrote {out / 'froc.csv'} and {out / 'froc.png'}")
    return status
