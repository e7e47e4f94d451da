#!/usr/bin/env python
"""Where the time of one ``napari_calc.detect`` call goes, stage by stage.

Wraps each kernel call and each Python stage of
:mod:`napari_calc.core.detect` with a timer (wall clock), runs ``detect``
``--repeats`` times on a generated 4096x3328 phantom at 0.07 mm (after one
warm-up) and prints the mean time per call of every stage. Stages nest
(``_detect_plane`` contains the kernel calls), so the column does not add
up to the total.

Usage::

    python benchmarks/stages.py [--repeats 5] [--shape 4096 3328] [--spacing 0.07] [--threads 0]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import napari_calc  # noqa: E402,F401
from napari_calc import _kernel  # noqa: E402
from napari_calc.core.phantom import make_phantom  # noqa: E402

DETECT_MOD = sys.modules["napari_calc.core.detect"]
KERNEL_STAGES = ("dog_octaves", "dog_response", "tile_noise", "mad_noise", "nms", "noise_nms", "candidate_features",
                 "local_hessian", "local_hessian3", "mask_row_ranges")
PY_STAGES = ("breast_mask", "breast_mask_and_bbox", "breast_mask_parts", "breast_mask_blocks", "_crop_ranges",
             "noise_level_function", "_score", "_cluster_table", "assign_clusters", "_merge_slices", "_detect_plane",
             "_plane_candidates", "_measure", "_merge_and_measure")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shape", type=int, nargs=2, default=(4096, 3328))
    ap.add_argument("--spacing", type=float, default=0.07)
    ap.add_argument("--threads", type=int, default=0, help="kernel threads (0: OpenMP default)")
    ap.add_argument("--seed", type=int, default=1,
                    help="phantom seed (benchmarks/speed.py uses 0 for the full-field image, 1 for the mid one)")
    args = ap.parse_args(argv)
    img = make_phantom(seed=args.seed, spacing_mm=args.spacing, shape=tuple(args.shape)).image.pixels
    acc = collections.defaultdict(float)

    def wrap(mod, name):
        f = getattr(mod, name, None)
        if f is None:
            return

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[name] += time.perf_counter() - t

        setattr(mod, name, timed)

    for n in KERNEL_STAGES:
        wrap(_kernel, n)
    for n in PY_STAGES:
        wrap(DETECT_MOD, n)
    DETECT_MOD.detect(img, args.spacing, n_threads=args.threads)  # warm-up
    acc.clear()
    t = time.perf_counter()
    for _ in range(args.repeats):
        DETECT_MOD.detect(img, args.spacing, n_threads=args.threads)
    total = (time.perf_counter() - t) / args.repeats
    print(f"# detect on {args.shape[0]}x{args.shape[1]} at {args.spacing} mm, mean of {args.repeats} calls "
          f"(wall ms), load average {os.getloadavg()[0]:.1f}")
    print(f"{'detect (total)':28s} {total * 1e3:8.1f}")
    for k, v in sorted(acc.items(), key=lambda kv: -kv[1]):
        print(f"{k:28s} {v / args.repeats * 1e3:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
