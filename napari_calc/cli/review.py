"""``napari-calc review DIR``: go through a batch's images in napari, one by one."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "review", help="review a batch's detections in napari, image by image",
        description="Open napari on the --out folder DIR of a 'napari-calc detect' run with its "
                    "worklist: the images in name order, how far each review has got, and the next "
                    "one still to review open (Shift-N: next image to review, Shift-P: previous). "
                    "Reviews are autosaved in DIR, and each reviewed image's tables (and detections "
                    "JSON) are written back over its outputs in DIR as you go.")
    p.add_argument("folder", metavar="DIR", help="the --out folder of a napari-calc detect run")
    p.add_argument("--start", metavar="IMAGE", default=None,
                   help="open this image first (its path or output stem) instead of the first one "
                        "still to review")
    p.add_argument("--images", metavar="IMAGES_DIR", default=None,
                   help="where the images are now, when not where the batch read them (results "
                        "reviewed on another machine): each is looked for there by the tail of its "
                        "path, e.g. site1/a.dcm, then a.dcm")
    p.add_argument("--annotator", metavar="NAME", default=None,
                   help="your name, recorded with every decision (default: $NAPARI_CALC_ANNOTATOR)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import NapariCalcError, counted, printable
    from ..core.worklist import read_worklist
    from .view import check_viewer_can_start

    wl = read_worklist(args.folder, args.images)  # a wrong folder: one line, before any window opens
    for line in wl.problems:  # first: they may be why --start finds nothing
        print(f"napari-calc: {printable(line)}", file=sys.stderr)
    start = None
    if args.start is not None:
        start = wl.find(args.start)
        if start is None:
            raise NapariCalcError(f"no image {args.start!r} in the worklist ({counted(len(wl.items), 'image')})", wl.out_dir)
    check_viewer_can_start()
    import napari

    from ..plugin.viewer import open_worklist

    viewer, _ = open_worklist(wl, start=start, annotator=args.annotator)
    napari.run()
    del viewer
    return 0
