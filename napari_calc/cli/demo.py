"""``napari-calc demo``: the main job on the built-in synthetic mammogram."""

from __future__ import annotations

from pathlib import Path

from .detect import parse_formats

SAMPLE_STEM = "sample-mammogram"


def seed_arg(text: str) -> int:
    """argparse type: a seed, 0 or more (numpy refuses negative ones)."""
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of 0 or more, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the built-in sample (no data needed)",
                       description="Make the built-in synthetic mammogram (known calcifications), "
                                   "detect, cluster and export, and compare with the truth.")
    p.add_argument("--out", default="napari-calc-out", metavar="DIR",
                   help="output folder (default: ./napari-calc-out)")
    p.add_argument("--formats", default="csv,json,mrk.json", metavar="LIST",
                   help="outputs besides the CSVs (default: csv,json,mrk.json)")
    p.add_argument("--seed", type=seed_arg, default=0, help="phantom seed (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.evaluate import match_calcifications
    from ..core.phantom import make_phantom, write_phantom
    from ..core.pipeline import process_image

    import sys

    from ..core.errors import NapariCalcError, counted, os_reason

    out = Path(args.out)
    formats = parse_formats(args.formats)
    if out.exists() and not out.is_dir():
        raise NapariCalcError("not a folder (give --out a folder to write into)", out)
    ph = make_phantom(seed=args.seed)
    try:
        kept_truth = {}
        written = write_phantom(ph, out, stem=SAMPLE_STEM, kept=kept_truth)
        image = ph.image
        image.metadata["source_path"] = str(written.get("tiff", ""))
        # a second demo into the same folder keeps a table reviewed since
        summary = process_image(image, out, SAMPLE_STEM, formats=formats, keep_edited=True)
    except OSError as e:
        raise NapariCalcError(os_reason(e), e.filename or out) from None
    for name, k in {**kept_truth, **(summary.get("kept") or {})}.items():
        print(f"napari-calc: {out / name} {k['why']}: kept as {k['kept_as']} before writing the "
              "new outputs", file=sys.stderr)

    import pandas as pd

    from ..core.detect import DetectionParams
    from ..core.evaluate import match_clusters

    calcs = pd.read_csv(summary["outputs"]["csv"])
    clusters = pd.read_csv(summary["outputs"]["clusters.csv"])
    truth = ph.truth["calcifications"]
    op = DetectionParams().min_score  # the detector's operating point
    likely = calcs[calcs["score"] >= op]
    m = match_calcifications(likely, truth)
    sens = (m["n_truth"] - m["fn"]) / max(m["n_truth"], 1)
    likely_cl = clusters[clusters["score"] >= op]
    mc = match_clusters(likely_cl, ph.truth)
    print(f"sample: {image.pixels.shape[0]}x{image.pixels.shape[1]} px at "
          f"{image.spacing_mm[0]} mm, {counted(len(truth), 'true calcification')}, "
          f"{counted(len(ph.truth['clusters']), 'true cluster')}")
    print(f"calcifications: {counted(len(calcs), 'candidate')}; {len(likely)} with score >= {op:g}: "
          f"{m['tp']} true, {m['fp']} false (sensitivity {sens:.2f})")
    print(f"clusters: {len(clusters)} found; {len(likely_cl)} with score >= {op:g}: "
          f"{mc['tp']} true, {mc['fp']} false")
    print(f"outputs in {out.resolve()}:")
    for path in sorted(set(map(str, list(written.values()) + list(summary["outputs"].values())))):
        print(f"  {Path(path).name}")
    return 0
