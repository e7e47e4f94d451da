"""Builds of the kernel's C sources for the tests (the serial and AVX2
libraries, the sanitizer executable): each source file compiled on its
own, as many at once as there are CPUs, the largest first, then linked.
One compiler call for all of them uses one core. filters.c, the longest
file (its row functions cloned for three instruction sets), sets the
floor: 28 s of the sanitizer build's 33 s on an Intel Xeon; 42 s alone
for its OpenMP build on an AMD EPYC (Zen 3). The builds run in the
background (_background.py)."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def build_c(cc: str, flags: list[str], sources: list[str], out: Path, *, shared: bool = False,
            include: Path | None = None, libs: tuple[str, ...] = ("-lm",),
            run: Callable[[list[str]], subprocess.CompletedProcess] = _run) -> subprocess.CompletedProcess:
    """Compile ``sources`` with ``flags`` (``-I include``; ``-fPIC`` when
    ``shared``) and link them into ``out`` (a shared library when
    ``shared``, else an executable) with the same flags and ``libs``.
    ``run(command)`` runs each compiler call and returns its result with
    the output captured as text (a background job's runner: see
    _background.py).

    Returns the first failing compiler call's result, or the link's: its
    ``returncode`` and ``stderr`` are what one call for everything would
    give the caller to check.
    """
    objdir = out.parent / (out.name + ".objs")
    objdir.mkdir(exist_ok=True)
    inc = ["-I", str(include)] if include is not None else []
    pic = ["-fPIC"] if shared else []
    objs = [objdir / f"{i}_{Path(src).stem}.o" for i, src in enumerate(sources)]

    def compile_one(k: int) -> subprocess.CompletedProcess:
        return run([cc, *flags, *pic, *inc, "-c", str(sources[k]), "-o", str(objs[k])])

    # the largest files first: the last one to start should be a short one
    order = sorted(range(len(sources)), key=lambda k: -os.path.getsize(sources[k]))
    with ThreadPoolExecutor(max_workers=max(1, min(len(sources), os.cpu_count() or 1))) as pool:
        done = dict(zip(order, pool.map(compile_one, order)))
    results = [done[k] for k in range(len(sources))]
    for res in results:
        if res.returncode != 0:
            return res
    link = [cc, *flags, *(["-shared", "-fPIC"] if shared else []), *map(str, objs), *libs, "-o", str(out)]
    return run(link)
