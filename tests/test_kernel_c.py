"""The C-level kernel test (tests/c/test_kernel.c) under AddressSanitizer and
UndefinedBehaviorSanitizer, in the serial and the OpenMP build: every entry
point on images from 1x1 up, so any out-of-bounds access fails here. The
serial build also leaves out the AVX2 clones and paths (NCALC_NO_CLONES),
so that the portable loops run too; the OpenMP build takes the ones the
CPU picks."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _cbuild import build_c

ROOT = Path(__file__).resolve().parents[1]


def _cc():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def sanitizer_builds(tmp_path_factory):
    """Both builds, started together on first use, as ``{openmp:
    (executable, compiler result)}`` futures; None without a compiler.
    (Each build's files compile in parallel too; on 2 cores the pair took
    48-51 s this way against 60 s one after the other: the OpenMP build's
    filters.c, with its clones, is most of either.)"""
    cc = _cc()
    if cc is None:
        yield None
        return
    srcs = sorted(str(p) for p in (ROOT / "csrc").glob("*.c")) + [str(ROOT / "tests" / "c" / "test_kernel.c")]
    base = ["-O1", "-g", "-std=c99", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer"]

    # (the folders made here: tmp_path_factory is not for other threads)
    exes = {omp: tmp_path_factory.mktemp(f"sanitizer-omp{int(omp)}") / "ncalc_test" for omp in (True, False)}

    def build(openmp):
        flags = base + (["-fopenmp"] if openmp else ["-DNCALC_NO_CLONES"])
        return exes[openmp], build_c(cc, flags, srcs, exes[openmp], include=ROOT / "csrc")

    with ThreadPoolExecutor(max_workers=2) as pool:
        # the longer (OpenMP, with the clones) first
        futures = {True: pool.submit(build, True), False: pool.submit(build, False)}
        yield futures


@pytest.mark.parametrize("openmp", [False, True])
def test_c_kernel_under_sanitizers(sanitizer_builds, openmp):
    if sanitizer_builds is None:
        pytest.skip("no C compiler")
    exe, build = sanitizer_builds[openmp].result()
    if build.returncode != 0 and ("sanitize" in build.stderr or "asan" in build.stderr.lower()
                                  or (openmp and "omp" in build.stderr)):
        pytest.skip(f"compiler lacks the sanitizer/OpenMP runtime: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", OMP_NUM_THREADS="2")
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all passed" in run.stdout
