"""The C-level kernel test (tests/c/test_kernel.c) under AddressSanitizer and
UndefinedBehaviorSanitizer, in the serial and the OpenMP build: every entry
point on images from 1x1 up, so any out-of-bounds access fails here. The
serial build also leaves out the AVX2 clones and paths (NCALC_NO_CLONES),
so that the portable loops run too; the OpenMP build takes the ones the
CPU picks."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _background import BACKGROUND, job
from _cbuild import build_c

ROOT = Path(__file__).resolve().parents[1]


def _cc():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@job("sanitizer_runs", timeout=900)
def _sanitizer_runs(folder: Path, run):
    """Both builds, made at once, and their runs (2 OpenMP threads), as
    ``{openmp: (compiler result, test run or None)}``; None without a
    compiler. A background job (_background.py), started when the tests
    are collected: the builds take about a minute of one core, most of it
    the OpenMP build's filters.c with its clones, and each run about 10 s.
    ``-g1`` (line tables, no variable locations) is enough for the
    sanitizers' reports and takes a third less time than ``-g`` there
    (62 s -> 42 s for that file on an AMD EPYC, 2026-12-07)."""
    cc = _cc()
    if cc is None:
        return None
    srcs = sorted(str(p) for p in (ROOT / "csrc").glob("*.c")) + [str(ROOT / "tests" / "c" / "test_kernel.c")]
    base = ["-O1", "-g1", "-std=c99", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer"]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", OMP_NUM_THREADS="2")

    def build_and_run(openmp):
        exe = folder / f"omp{int(openmp)}" / "ncalc_test"
        exe.parent.mkdir()
        flags = base + (["-fopenmp"] if openmp else ["-DNCALC_NO_CLONES"])
        build = build_c(cc, flags, srcs, exe, include=ROOT / "csrc", run=run)
        return build, run([exe], env=env) if build.returncode == 0 else None

    with ThreadPoolExecutor(max_workers=2) as pool:
        # the longer (OpenMP, with the clones) first
        futures = {True: pool.submit(build_and_run, True), False: pool.submit(build_and_run, False)}
        return {omp: fut.result() for omp, fut in futures.items()}


@pytest.fixture(scope="module")
def sanitizer_runs():
    return BACKGROUND.result("sanitizer_runs")


@pytest.mark.parametrize("openmp", [False, True])
def test_c_kernel_under_sanitizers(sanitizer_runs, openmp):
    if sanitizer_runs is None:
        pytest.skip("no C compiler")
    build, run = sanitizer_runs[openmp]
    if build.returncode != 0 and ("sanitize" in build.stderr or "asan" in build.stderr.lower()
                                  or (openmp and "omp" in build.stderr)):
        pytest.skip(f"compiler lacks the sanitizer/OpenMP runtime: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all passed" in run.stdout
