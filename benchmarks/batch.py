"""Batch throughput of ``napari-calc detect`` (issue 8).

Makes N synthetic mammograms (:func:`napari_calc.core.phantom.make_phantom`,
written as TIFF with resolution tags) in a temporary folder and measures,
each into a fresh output folder:

* a bare :func:`napari_calc.detect` call per image already in memory (the
  floor: no reading, no writing, no process management), paired per image
  with the batch unit of work (:func:`~napari_calc.core.batch.process_input`:
  read, detect, atomic writes, marker) to get the per-image overhead;
* ``run_batch`` in-process (``--workers 1``);
* ``run_batch`` with 2 local worker processes (``--workers 2``);
* ``run_batch`` through a local dask cluster (``LocalCluster(n_workers=2,
  threads_per_worker=1)``; cluster start-up reported separately);
* the two parallel runs once more, with their worker processes already
  started and napari-calc imported (steady-state throughput).

and prints images/s, and the per-image overhead of the batch path over the
bare ``detect`` call. Usage::

    python benchmarks/batch.py [--n 50] [--size-mm 120x96] [--formats csv]

Wall times include everything the user waits for after the command started
(worker start-up, reading, writing, the manifest), except the Python import
of napari-calc in the calling process.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_inputs(folder: Path, n: int, size_mm) -> list[Path]:
    """``n`` phantoms as TIFF (+ their ``.truth.json``, which the batch skips)."""
    from napari_calc.core.phantom import make_phantom, write_phantom

    return [write_phantom(make_phantom(i, size_mm=size_mm), folder, stem=f"phantom{i:03d}")["tiff"]
            for i in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="number of phantoms (default 50)")
    ap.add_argument("--size-mm", default="120x96", help="phantom field of view HxW in mm (default 120x96)")
    ap.add_argument("--formats", default="csv", help="export formats (default csv)")
    ap.add_argument("--no-dask", action="store_true", help="skip the dask cluster")
    args = ap.parse_args(argv)
    size_mm = tuple(float(v) for v in args.size_mm.lower().split("x"))

    import napari_calc
    from napari_calc.core.batch import (InputItem, assign_stems, available_cores, make_task, process_input,
                                        run_batch, versions)
    from napari_calc.core.read import read_image

    tmp = Path(tempfile.mkdtemp(prefix="napari-calc-bench-"))
    rows = []
    try:
        t0 = time.perf_counter()
        (tmp / "in").mkdir()
        inputs = make_inputs(tmp / "in", args.n, size_mm)
        t_make = time.perf_counter() - t0
        images = [read_image(p) for p in inputs]
        shape = images[0].pixels.shape
        cores = available_cores()

        # Per-image overhead, paired: for each image, a bare detect() on the
        # loaded image, then the whole batch unit of work on its file (read,
        # detect, write the CSVs atomically, write the marker), same process,
        # same threads, back to back -- so that machine load hits both alike.
        items = assign_stems([InputItem(path=str(p), root=str(tmp / "in")) for p in inputs])
        tasks = [make_task(it, tmp / "paired", formats=args.formats.split(","), params={}, spacing_mm=None,
                           deidentify=False, n_threads=cores) for it in items]
        napari_calc.detect(images[0], n_threads=cores)  # warm-up
        process_input(tasks[0])
        bare, unit = [], []
        n_calc_bare = 0
        for im, task in zip(images, tasks):
            t = time.perf_counter()
            n_calc_bare += len(napari_calc.detect(im, n_threads=cores).calcifications)
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert process_input(task)["status"] == "done"
            unit.append(time.perf_counter() - t)
        t_bare = sum(bare)
        rows.append(("bare detect() in memory", t_bare, None))

        def batch(label, **kw):
            out = tmp / f"out-{len(rows)}"
            t = time.perf_counter()
            res = run_batch([tmp / "in"], out, formats=args.formats.split(","), progress=False, **kw)
            dt = time.perf_counter() - t
            assert res.exit_code == 0 and res.n_done == len(inputs), res.summary_lines()
            assert res.n_calcifications == n_calc_bare, (res.n_calcifications, n_calc_bare)
            rows.append((label, dt, out))
            return out

        batch("detect --workers 1 (in-process)", workers=1)
        batch("detect --workers 2 (local processes)", workers=2)
        batch("  same, again (forkserver warm)", workers=2)
        t_cluster = None
        if not args.no_dask:
            from distributed import LocalCluster

            t = time.perf_counter()
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                              host="127.0.0.1") as cluster:
                t_cluster = time.perf_counter() - t
                batch("detect --scheduler (LocalCluster 2x1)", scheduler=cluster.scheduler_address)
                batch("  same, again (dask workers warm)", scheduler=cluster.scheduler_address)

        # all backends wrote the same CSVs
        ref = {p.name: p.read_bytes() for p in rows[1][2].glob("*.csv")}
        for _, _, out in rows[2:]:
            assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == ref

        n = len(inputs)
        v = versions()
        print(f"machine: {cores} cores ({os.cpu_count()} online), {cpu_model()}, Python {v['python']}, "
              f"numpy {v['numpy']}, kernel OpenMP {v['kernel_openmp']}")
        print(f"inputs: {n} phantoms {shape[0]}x{shape[1]} px at 0.1 mm ({size_mm[0]:g}x{size_mm[1]:g} mm), "
              f"made in {t_make:.1f} s; formats {args.formats}; {n_calc_bare} candidates in total")
        print()
        print(f"| {'configuration':<40} | {'wall s':>7} | {'images/s':>8} | {'ms/image':>8} | {'vs workers 1':>12} |")
        print(f"|{'-' * 42}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 14}|")
        t1 = rows[1][1]
        for label, dt, _ in rows:
            print(f"| {label:<40} | {dt:7.2f} | {n / dt:8.2f} | {1000 * dt / n:8.1f} | {t1 / dt:11.2f}x |")
        print()
        import statistics

        diff = [u - b for u, b in zip(unit, bare)]
        med_bare = statistics.median(bare)
        print(f"per-image overhead of the batch unit of work (read + write + marker) over a bare detect() "
              f"on the loaded image, paired per image: median {1000 * statistics.median(diff):.1f} ms "
              f"(mean {1000 * statistics.mean(diff):.1f} ms), i.e. {100 * statistics.median(diff) / med_bare:.0f}% "
              f"of the median detect time {1000 * med_bare:.0f} ms")
        over = (t1 - t_bare) / n
        print(f"whole-run overhead, --workers 1 wall vs the sum of bare detect() times: {1000 * over:.1f} ms/image")
        if t_cluster is not None:
            print(f"LocalCluster start-up (not included above): {t_cluster:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
