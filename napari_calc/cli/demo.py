"""``napari-calc demo``: the main job on the built-in synthetic mammogram."""

from __future__ import annotations

from pathlib import Path

from .detect import parse_formats

SAMPLE_STEM = "sample-mammogram"


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the built-in sample (no data needed)",
                       description="Make the built-in synthetic mammogram (known calcifications), "
                                   "detect, cluster and export, and compare with the truth.")
    p.add_argument("--out", default="napari-calc-out", metavar="DIR",
                   help="output folder (default: ./napari-calc-out)")
    p.add_argument("--formats", default="csv,json,mrk.json", metavar="LIST",
                   help="outputs besides the CSVs (default: csv,json,mrk.json)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.evaluate import match_calcifications
    from ..core.phantom import make_phantom, write_phantom
    from ..core.pipeline import process_image

    out = Path(args.out)
    ph = make_phantom(seed=args.seed)
    written = write_phantom(ph, out, stem=SAMPLE_STEM)
    image = ph.image
    image.metadata["source_path"] = str(written.get("tiff", ""))
    summary = process_image(image, out, SAMPLE_STEM, formats=parse_formats(args.formats))

    import pandas as pd

    calcs = pd.read_csv(summary["outputs"]["csv"])
    truth = ph.truth["calcifications"]
    from ..core.detect import DetectionParams

    op = getattr(DetectionParams(), "min_score", 0.5)  # the detector's operating point
    likely = calcs[calcs["score"] >= op]
    m = match_calcifications(likely, truth)
    sens = (m["n_truth"] - m["fn"]) / max(m["n_truth"], 1)
    print(f"sample: {image.pixels.shape[0]}x{image.pixels.shape[1]} px at "
          f"{image.spacing_mm[0]} mm, {len(truth)} true calcifications in "
          f"{len(ph.truth['clusters'])} clusters")
    print(f"found {summary['n_calcifications']} candidates ({len(likely)} with score >= {op:g}: "
          f"{m['tp']} true, {m['fp']} false; sensitivity {sens:.2f}), "
          f"{summary['n_clusters']} clusters")
    print("outputs:")
    for kind, path in sorted(list(written.items()) + list(summary["outputs"].items())):
        print(f"  {kind:<22} {Path(path).resolve()}")
    return 0
