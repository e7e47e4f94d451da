"""The kernel's AVX-512 and AVX2 code paths give the same bits.

csrc/filters.c compiles its row functions three times (``target_clones``:
x86-64-v4, AVX2 and the SSE2 default), csrc/noise.c has AVX-512 and AVX2
versions of its selection's counting and compaction loops, and
csrc/hessian.c of its uint16 column sums; the CPU picks at load or run
time. test_kernel_reference.py compares the extension (the paths this CPU
picks) with a build without them (the SSE2 default).
On a CPU with AVX-512 the extension runs the AVX-512 paths, so the AVX2
ones would go unchecked: here a second OpenMP build of ``csrc/*.c`` without
the AVX-512 paths (``-DNCALC_NO_AVX512``), loaded with ctypes, runs the
AVX2 ones on the same inputs, and every output must equal the extension's
bit for bit. On a CPU without AVX-512 the extension itself runs the AVX2
paths (checked there against the default by test_kernel_reference.py) and
these tests are skipped.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_calc import _kernel
from _background import BACKGROUND, job
from _cbuild import build_c
from test_kernel_reference import (ALL_RADII_SIGMAS, DOG_SIGMAS, PYR_SIGMAS, SIGMAS_007,  # noqa: F401
                                   SerialKernel, _dog_noise_case, _random_f32, _random_u16, phantom_007,
                                   phantom_img)

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"


def _cpu_has_avx512f() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and " avx512f" in line for line in text.splitlines())


#: a symbol of each AVX-512 path (filters.c's clones, noise.c's loops,
#: hessian.c's column sums)
AVX512_SYMBOLS = (b"oct_row.arch_x86_64_v4", b"bracket_pass_avx512", b"column_sums_u16_avx512")


def _extension_has_v4_clones() -> bool:
    so = Path(_kernel.__file__).read_bytes()
    return all(sym in so for sym in AVX512_SYMBOLS)


needs_avx512 = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64" and _cpu_has_avx512f()),
    reason="the CPU has no AVX-512: the extension runs the AVX2 clone itself")


def _gcc_major(cc: str) -> int:
    """The major version of the GCC ``cc`` is (0: not GCC or unknown)."""
    try:
        res = subprocess.run([cc, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True)
        ident = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return 0
    if res.returncode != 0 or "clang" in ident.lower():
        return 0
    try:
        return int(res.stdout.strip().split(".")[0])
    except ValueError:
        return 0


def test_extension_has_the_avx512_paths_on_x86_64_linux():
    # the comparisons below mean something only if the extension has them
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
        pytest.skip("target_clones: x86-64 Linux only")
    so = Path(_kernel.__file__).read_bytes()
    if b"oct_row.avx2" not in so:
        pytest.skip("extension built without clones (NAPARI_CALC_NO_CLONES, or not GCC)")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or _gcc_major(cc) < 11:
        pytest.skip("the AVX-512 paths need GCC >= 11")
    assert _extension_has_v4_clones()


@job("avx2_kernel")
def _build_avx2_kernel(folder: Path, run):
    """The build without the AVX-512 paths (a background job: see
    _background.py), or None on a CPU without AVX-512, where the tests
    that use it are skipped (``needs_avx512``)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    if not _extension_has_v4_clones():
        pytest.skip("the extension has no AVX-512 clone to compare with")
    if not _cpu_has_avx512f():
        return None
    out = folder / "libncalc_avx2.so"
    srcs = sorted(str(p) for p in CSRC.glob("*.c"))
    # setup.py's flags, with OpenMP, without the x86-64-v4 clone
    res = build_c(cc, ["-O3", "-std=c99", "-fopenmp", "-DNCALC_NO_AVX512"], srcs, out, shared=True, include=CSRC,
                  run=run)
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert b"oct_row.avx2" in data and b"bracket_pass_avx2" in data
    assert not any(sym in data for sym in AVX512_SYMBOLS)
    return SerialKernel(out)


@pytest.fixture(scope="module")
def avx2_kernel():
    kernel = BACKGROUND.result("avx2_kernel")
    if kernel is None:
        pytest.skip("the CPU has no AVX-512: the extension runs the AVX2 clone itself")
    return kernel


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype == np.float32:
        a, b = a.view(np.uint32), b.view(np.uint32)
    np.testing.assert_array_equal(a, b)


@needs_avx512
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(1, 1), (3, 70), (70, 3), (31, 17), (33, 129), (97, 64)])
def test_filters_clones_identical_on_random_images(avx2_kernel, dtype, shape):
    # every radius, images narrower than a vector and than the kernels,
    # column counts around the vector widths (tails of 1..15 floats)
    img = _random_u16(shape, 7) if dtype == np.uint16 else _random_f32(shape, 7)
    for s in (0.5, 1.3, 3.7):
        _same_bits(avx2_kernel.gaussian(img, s, 4.0, 2), _kernel.gaussian(img, s, 4.0, 2))
    for sig in (ALL_RADII_SIGMAS, ALL_RADII_SIGMAS[3:5], ALL_RADII_SIGMAS[::3]):
        for a, b in zip(avx2_kernel.dog_response(img, sig, 3.0, 2), _kernel.dog_response(img, sig, 3.0, 2)):
            _same_bits(a, b)
        for levels in (0, 16):
            for nt in (1, 2):
                for a, b in zip(avx2_kernel.dog_octaves(img, sig, 3.0, 1.2, levels, nt),
                                _kernel.dog_octaves(img, sig, 3.0, 1.2, levels, nt)):
                    _same_bits(a, b)


@needs_avx512
def test_filters_clones_identical_on_phantoms(avx2_kernel, phantom_img, phantom_007):
    for img in (phantom_img, phantom_007, phantom_007.astype(np.float32)):
        for a, b in zip(avx2_kernel.dog_response(img, DOG_SIGMAS, 4.0, 2),
                        _kernel.dog_response(img, DOG_SIGMAS, 4.0, 2)):
            _same_bits(a, b)
        for a, b in zip(avx2_kernel.dog_pyramid(img, PYR_SIGMAS, 4.0, 2.0, 1.5, 2, 2),
                        _kernel.dog_pyramid(img, PYR_SIGMAS, 4.0, 2.0, 1.5, 2, 2)):
            _same_bits(a, b)
        for split in (1.2, 1.9):
            for a, b in zip(avx2_kernel.dog_octaves(img, SIGMAS_007, 3.0, split, 16, 2),
                            _kernel.dog_octaves(img, SIGMAS_007, 3.0, split, 16, 2)):
                _same_bits(a, b)


@needs_avx512
@pytest.mark.parametrize("seed", range(16))
def test_dog_noise_nms_clones_identical(avx2_kernel, seed):
    # detect's call: the octave DoG on the mask's rows, the coarser levels
    # merged inside the noise pass, the grid and the peaks with their values
    D = importlib.import_module("napari_calc.core.detect")
    img, sig, mask, blocks, ranges, tile, min_count, k, radius, top = _dog_noise_case(seed)
    for nt in (1, 2):
        a, b = (kern.dog_noise_nms(img, sig, D.TRUNCATE, D.OCTAVE_SPLIT_SIGMA, 16, nt,
                                   (np.zeros(img.shape, np.float32), np.zeros(img.shape, np.uint8)), ranges,
                                   tile, mask, min_count, k, radius, blocks=blocks, top=top)
                for kern in (avx2_kernel, _kernel))
        _same_bits(a[0], b[0])
        _same_bits(a[1], b[1])
        assert (a[2] is None) == (b[2] is None)
        for x, y in zip(a[2] or (), b[2] or ()):
            np.testing.assert_array_equal(x, y)


@needs_avx512
@pytest.mark.parametrize("seed", range(6))
def test_noise_selection_paths_identical(avx2_kernel, seed):
    # the tiles' and the image's MAD: the counting and compaction loops
    # (AVX-512 in the extension, AVX2 here) on values with many ties, a
    # constant patch, tiles of 2 to 300 values, lengths around 16 and 32
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(30, 400, 2))
    x = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    if seed % 2:
        x = np.round(x * 4) / 4  # ties
    x[: h // 5, : w // 4] = 0.5  # a constant patch
    mask = (rng.random((h, w)) < 0.8).astype(np.uint8)
    for tile in (2, 5, 16, 17, 33, 64):
        for m in (None, mask):
            _same_bits(avx2_kernel.tile_noise(x, tile, m, 2, 2), _kernel.tile_noise(x, tile, m, 2, 2))
    for m in (None, mask):
        for stride in (1, 3):
            assert avx2_kernel.mad_noise(x, m, stride) == _kernel.mad_noise(x, m, stride)


@needs_avx512
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_local_hessian_paths_identical(avx2_kernel, phantom_007, dtype):
    # windows of 3 to 141 columns (the AVX-512 column sums take uint16
    # windows of 16 or more, the last block shifted), inside the image and
    # over its borders, with and without the cross sums
    img = phantom_007.astype(dtype)
    rng = np.random.default_rng(5)
    n = 400
    rows = rng.integers(0, img.shape[0], n).astype(np.int32)
    cols = rng.integers(0, img.shape[1], n).astype(np.int32)
    sig = rng.uniform(0.4, 20.0, n).astype(np.float32)
    for nt in (1, 2):
        _same_bits(avx2_kernel.local_hessian(img, rows, cols, sig, 3.5, nt),
                   _kernel.local_hessian(img, rows, cols, sig, 3.5, nt))
    three = [np.ascontiguousarray(sig * f) for f in (0.5, 1.0, 1.7)]
    for cross in ((True, True, True), (True, False, False)):
        got = _kernel.local_hessian3(img, rows, cols, *three, 3.5, 2, cross=cross)
        for k in range(3):
            want = avx2_kernel.local_hessian(img, rows, cols, three[k], 3.5, 2)
            if not cross[k]:
                want[2] = np.nan  # local_hessian3 leaves the cross term out
            _same_bits(got[k], want)
