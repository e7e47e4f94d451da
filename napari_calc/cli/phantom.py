"""``napari-calc phantom OUT --n N --seed S``: synthetic mammograms with truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from .demo import seed_arg


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return v


def register(subparsers) -> None:
    """Add the ``phantom`` sub-command."""
    p = subparsers.add_parser(
        "phantom",
        help="generate synthetic mammograms with known calcifications",
        description=(
            "Write N synthetic mammograms (seeds S, S+1, ...) as <OUT>/phantom-<seed>.tif "
            "(and/or .dcm) with the ground truth in <OUT>/phantom-<seed>.truth.json. "
            "An existing truth file other than the new one (corrected by hand, or made with "
            "other options) is first copied to <name>.bak (.bak.2, ...), and said so."
        ),
    )
    p.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    p.add_argument("--n", type=int, default=1, help="number of phantoms (default 1)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the first phantom (default 0)")
    p.add_argument("--spacing", type=_positive_float, default=0.1, metavar="MM",
                   help="pixel spacing in mm, 0.05-0.2 realistic (default 0.1)")
    p.add_argument("--difficulty", choices=("easy", "normal", "hard"), default="normal",
                   help="how faint the calcifications are (default normal)")
    p.add_argument("--density", type=float, default=0.5,
                   help="breast density 0 (fatty) to 1 (extremely dense), default 0.5")
    p.add_argument("--clusters", type=int, default=2, help="MC clusters per image (default 2)")
    p.add_argument("--singles", type=int, default=6, help="isolated MCs per image (default 6)")
    p.add_argument("--format", choices=("tiff", "dicom", "both"), default="tiff",
                   help="image format (default tiff)")
    p.add_argument("--stack", type=int, default=None, metavar="N",
                   help="write a tomosynthesis-like stack of N slices")
    p.add_argument("--slice-mm", type=_positive_float, default=1.0, help="slice spacing of stacks in mm (default 1.0)")
    p.add_argument("--for-processing", action="store_true",
                   help="raw linear-exposure data (dense is dark) instead of presentation data")
    p.add_argument("--no-equalize", action="store_true",
                   help="presentation data without the peripheral (thickness) equalisation")
    p.add_argument("--no-mcs", action="store_true", help="no microcalcifications (negative images)")
    p.add_argument("--no-vessels", action="store_true", help="no vessels or ducts")
    p.add_argument("--no-benign", action="store_true", help="no large benign calcifications")
    p.add_argument("--laterality", choices=("L", "R", "alternate"), default="L",
                   help="breast side; 'alternate' gives L, R, L, ... (default L)")
    p.add_argument("--mc-shapes", choices=("round", "linear", "mixed"), default="round",
                   help="MC morphology: nearly round (default), fine linear (rod-like), or "
                        "each cluster either")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import NapariCalcError, counted
    from ..core.phantom import make_phantom, write_phantom
    from . import error_line

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        error_line(f"{out}: exists and is not a folder")
        return 2
    if args.n < 1:
        error_line(f"{out}: --n must be >= 1")
        return 2
    formats = {"tiff": ("tiff",), "dicom": ("dicom",), "both": ("tiff", "dicom")}[args.format]
    for i in range(args.n):
        seed = args.seed + i
        lat = args.laterality
        if lat == "alternate":
            lat = "L" if i % 2 == 0 else "R"
        try:
            ph = make_phantom(
                seed,
                spacing_mm=args.spacing,
                n_clusters=args.clusters,
                n_singles=args.singles,
                difficulty=args.difficulty,
                density=args.density,
                vessels=not args.no_vessels,
                benign=not args.no_benign,
                mcs=not args.no_mcs,
                for_processing=args.for_processing,
                n_slices=args.stack,
                slice_mm=args.slice_mm,
                laterality=lat,
                equalize=not args.no_equalize,
                mc_shapes=args.mc_shapes,
            )
            kept = {}
            written = write_phantom(ph, out, formats=formats, kept=kept)
        except NapariCalcError as exc:
            error_line(f"{out}: {exc.reason}")
            return 2
        except OSError as exc:
            error_line(f"{out}: {exc.strerror or exc}")
            return 1
        for name, k in kept.items():  # a truth corrected by hand is never lost
            error_line(f"{out / name} {k['why']}: kept as {k['kept_as']} before writing the new one")
        n_mc = len(ph.truth["calcifications"])
        n_cl = len(ph.truth["clusters"])
        files = ", ".join(str(p) for k, p in written.items() if k != "truth")
        print(f"{files}: {counted(n_mc, 'calcification')}, {counted(n_cl, 'cluster')}")
    return 0
