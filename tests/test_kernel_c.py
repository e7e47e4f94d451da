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
from pathlib import Path

import pytest
from _cbuild import build_c

ROOT = Path(__file__).resolve().parents[1]


def _cc():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@pytest.mark.parametrize("openmp", [False, True])
def test_c_kernel_under_sanitizers(tmp_path, openmp):
    cc = _cc()
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "ncalc_test"
    srcs = sorted(str(p) for p in (ROOT / "csrc").glob("*.c"))
    flags = ["-O1", "-g", "-std=c99", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
             "-fno-omit-frame-pointer"] + (["-fopenmp"] if openmp else ["-DNCALC_NO_CLONES"])
    build = build_c(cc, flags, [*srcs, str(ROOT / "tests" / "c" / "test_kernel.c")], exe, include=ROOT / "csrc")
    if build.returncode != 0 and ("sanitize" in build.stderr or "asan" in build.stderr.lower()
                                  or (openmp and "omp" in build.stderr)):
        pytest.skip(f"compiler lacks the sanitizer/OpenMP runtime: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", OMP_NUM_THREADS="2")
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all passed" in run.stdout
