#!/usr/bin/env python
"""Compare two builds of the C kernel in one process, call by call.

On a shared VM the wall time of the same command drifts by several
milliseconds from one minute to the next, which hides the sub-millisecond
effect of most kernel changes when two builds are timed in separate runs.
This script loads two built extension files (``napari_calc/_kernel*.so``
of two checkouts) side by side and runs ``napari_calc.detect`` with one,
then with the other, round after round, so that both see the same moments
of the machine. It prints each build's median and minimum, and the median
of the paired differences (A - B), which is what to read. First it says
whether the two builds give ``detect`` the same tables (calcifications,
clusters and extra, compared exactly, at each thread count timed): a
speed-up is meant to leave them as they were.

Only the kernel differs: the Python code is this checkout's, and it finds
the kernel as ``napari_calc.core._compiled.kernel`` at each call. Both builds must
therefore offer what this checkout's Python calls; one that does not (an
older kernel interface) is refused with one line.

Usage::

    python benchmarks/ab_kernel.py A.so B.so [--shape 4096 3328] [--spacing 0.07]
        [--seed 0] [--rounds 25] [--threads 1 2]

With ``--kernel NAME`` it times that kernel function alone instead, on the
arguments ``detect`` gives it (``dog_octaves`` or ``noise_nms``, as detect
calls them when they run apart, or ``dog_noise_nms``, the two in one call;
``local_hessian3`` or ``candidate_features``, the per-candidate measures).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import napari_calc  # noqa: E402
from napari_calc.core.phantom import make_phantom  # noqa: E402

#: The argument position of n_threads in the kernel functions --kernel takes.
_THREADS_ARG = {"dog_octaves": 5, "noise_nms": 6, "dog_noise_nms": 5, "local_hessian3": 7, "candidate_features": 4}


def load_kernel(path: str):
    """The extension module in ``path``, loaded under the kernel's own name
    (each file is a module of its own, with its own scratch pool)."""
    if not os.path.isfile(path):
        raise SystemExit(f"ab_kernel: {path}: no such file")
    spec = importlib.util.spec_from_file_location("napari_calc._kernel", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def use(mod) -> None:
    """Make ``mod`` the kernel that ``napari_calc`` finds at its next call
    (the core reads it from ``napari_calc.core._compiled.kernel``)."""
    napari_calc._kernel = mod
    sys.modules["napari_calc._kernel"] = mod
    importlib.import_module("napari_calc.core._compiled").kernel = mod


def check_build(path: str, mod, img, spacing) -> None:
    """One ``detect`` with ``mod``; a build whose functions do not take
    what this checkout's Python passes (an older kernel interface) is one
    line naming the file, not a traceback."""
    use(mod)
    try:
        napari_calc.detect(img, spacing, n_threads=1)
    except (TypeError, AttributeError) as e:
        raise SystemExit(f"ab_kernel: {path}: this build does not offer what this checkout's detect "
                         f"calls ({e}); build both from checkouts with the same kernel interface")


def compare_tables(builds, img, spacing, threads) -> str:
    """One line: whether ``detect`` gives the same calcifications, clusters
    and extra tables (``pandas.testing.assert_frame_equal``, exactly) with
    both builds at each thread count, or the first difference."""
    import pandas as pd

    for nt in threads:
        got = {}
        for key in ("A", "B"):
            use(builds[key])
            got[key] = napari_calc.detect(img, spacing, n_threads=nt)
        for name in ("calcifications", "clusters", "extra"):
            try:
                pd.testing.assert_frame_equal(getattr(got["A"], name), getattr(got["B"], name), check_exact=True)
            except AssertionError as e:
                first = " ".join(str(e).split())[:200]
                return f"# tables DIFFER at {nt} thread(s): {name}: {first}"
    counts = ", ".join(str(nt) for nt in threads)
    return f"# tables: identical with both builds (calcifications, clusters, extra; {counts} thread(s))"


def captured_args(img, spacing, names):
    """The arguments ``detect`` gives the kernel functions ``names``
    (``dog_octaves`` and ``noise_nms`` with the two in separate calls,
    ``dog_noise_nms`` in one)."""
    import importlib

    detect_module = importlib.import_module("napari_calc.core.detect")
    seen = {}
    kern = sys.modules["napari_calc._kernel"]
    orig = {n: getattr(kern, n) for n in names}
    one_call = detect_module._DOG_NOISE_KERNEL
    detect_module._DOG_NOISE_KERNEL = "dog_noise_nms" in names

    def spy(name):
        def f(*a, **k):
            seen[name] = (list(a), dict(k))
            return orig[name](*a, **k)
        return f

    for n in names:
        setattr(kern, n, spy(n))
    try:
        napari_calc.detect(img, spacing, n_threads=1)
    finally:
        detect_module._DOG_NOISE_KERNEL = one_call
        for n in names:
            setattr(kern, n, orig[n])
    return seen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="the first build's extension file")
    ap.add_argument("b", help="the second build's extension file")
    ap.add_argument("--shape", type=int, nargs=2, default=(4096, 3328))
    ap.add_argument("--spacing", type=float, default=0.07)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--kernel", choices=sorted(_THREADS_ARG), help="time this kernel function alone")
    args = ap.parse_args(argv)
    builds = {"A": load_kernel(args.a), "B": load_kernel(args.b)}
    img = make_phantom(seed=args.seed, spacing_mm=args.spacing, shape=tuple(args.shape)).image.pixels
    for key, path in (("A", args.a), ("B", args.b)):
        check_build(path, builds[key], img, args.spacing)
    use(builds["A"])
    if args.kernel:
        names = ["dog_octaves", "noise_nms"] if args.kernel == "noise_nms" else [args.kernel]
        seen = captured_args(img, args.spacing, names)
        missing = [n for n in names if n not in seen]
        if missing:
            raise SystemExit(f"ab_kernel: detect did not call {', '.join(missing)} on this image")
    print(f"# A = {args.a}\n# B = {args.b}\n# {args.shape[0]}x{args.shape[1]} at {args.spacing} mm, "
          f"{args.rounds} rounds; ms per call")
    if not args.kernel:
        print(compare_tables(builds, img, args.spacing, args.threads), flush=True)
        use(builds["A"])
    for nt in args.threads:
        if args.kernel:
            a, k = seen[args.kernel]
            a[_THREADS_ARG[args.kernel]] = nt
            if args.kernel == "noise_nms":  # on a response of this thread count's DoG (the same bits)
                d, dk = seen["dog_octaves"]
                d[_THREADS_ARG["dog_octaves"]] = nt
                a[0] = builds["A"].dog_octaves(*d, **dk)[0].copy()

            def call(mod, a=a, k=k):
                getattr(mod, args.kernel)(*a, **k)
        else:
            def call(mod, nt=nt):
                use(mod)
                napari_calc.detect(img, args.spacing, n_threads=nt)
        times = {"A": [], "B": []}
        for r in range(args.rounds + 2):
            for key in ("A", "B"):
                t = time.perf_counter()
                call(builds[key])
                if r >= 2:  # two warm-up rounds
                    times[key].append((time.perf_counter() - t) * 1e3)
        ta, tb = np.array(times["A"]), np.array(times["B"])
        what = args.kernel or "detect"
        print(f"{what} threads={nt}: A median {np.median(ta):.2f} min {ta.min():.2f} | "
              f"B median {np.median(tb):.2f} min {tb.min():.2f} | "
              f"A - B paired median {np.median(ta - tb):+.3f}")
    use(builds["A"])


if __name__ == "__main__":
    main()
