"""The kernel releases the GIL for the whole of every C call, so a GUI (or
any other Python thread) keeps running while detection is in flight."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np

from napari_calc import _kernel

PYX = Path(__file__).resolve().parents[1] / "napari_calc" / "_kernel.pyx"


def _opener(src, i):
    """The line opening the block that holds line i, through any if, elif,
    else, for or while blocks in between."""
    while True:
        indent = len(src[i]) - len(src[i].lstrip())
        j = i - 1
        while j >= 0 and (not src[j].strip() or len(src[j]) - len(src[j].lstrip()) >= indent):
            j -= 1
        if not re.match(r"(if|elif|else|for|while)\b", src[j].strip()):
            return src[j].strip()
        i = j


def test_every_c_call_is_inside_with_nogil():
    # a C call sits in a `with nogil:` block, or in a `cdef ... nogil:`
    # function that is itself only called inside `with nogil:` (or handed
    # to the C code as a pointer, which calls it without the GIL)
    src = PYX.read_text().splitlines()
    nogil_funcs = {}
    for i, line in enumerate(src):
        m = re.match(r"cdef \w+ (\w+)\(.*\) noexcept nogil:$", line)
        if m:
            nogil_funcs[m.group(1)] = i
    assert "_nlf_job_run" in nogil_funcs  # the pattern does find them
    for name, at in nogil_funcs.items():
        for i, line in enumerate(src):
            if i != at and re.search(rf"\b{name}\s*\(", line):
                assert _opener(src, i) == "with nogil:", f"_kernel.pyx line {i + 1}: {name} holds the GIL"
    calls = 0
    in_extern = False
    for i, line in enumerate(src):
        if line.startswith("cdef extern"):
            in_extern = True
            continue
        if in_extern and line and not line.startswith(" "):
            in_extern = False
        if in_extern:
            continue
        m = re.search(r"\b(ncalc_\w+)\s*\(", line)
        if not m or m.group(1) in ("ncalc_have_openmp", "ncalc_max_threads"):
            continue
        calls += 1
        # the enclosing block opener: `with nogil:`, or a nogil function's
        opener = _opener(src, i)
        assert opener == "with nogil:" or any(opener.startswith(f"cdef void {f}(") for f in nogil_funcs), \
            f"_kernel.pyx line {i + 1}: {m.group(1)} holds the GIL"
    assert calls >= 6  # gaussian, dog_response, dog_pyramid, noise x2, nms, features, ...


def test_python_threads_run_during_a_long_kernel_call():
    """While one thread is inside a long DoG call, another Python thread keeps
    running: the largest pause it sees is a small part of the call. (A call
    holding the GIL would freeze it for the whole call.)"""
    img = np.random.default_rng(0).integers(0, 4096, size=(1536, 1536), dtype=np.uint16)
    sig = [1.0, 2.0, 4.0, 8.0, 16.0]
    span = {}

    def work():
        span["t0"] = time.perf_counter()
        _kernel.dog_response(img, sig, 4.0, 1)
        span["t1"] = time.perf_counter()

    th = threading.Thread(target=work)
    stamps = []
    th.start()
    while th.is_alive():
        stamps.append(time.perf_counter())
    th.join()
    inside = [t for t in stamps if span["t0"] <= t <= span["t1"]]
    duration = span["t1"] - span["t0"]
    assert len(inside) > 10
    gaps = np.diff([span["t0"], *inside, span["t1"]])
    assert gaps.max() < 0.5 * duration, (gaps.max(), duration)
