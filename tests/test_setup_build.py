"""setup.py's parallel compile: the same objects as distutils' one-at-a-time
compile, in the sources' order, and a compiler error still stops the build."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_py():
    """setup.py's globals, without building anything (setup() and cythonize
    replaced for the run)."""
    mp = pytest.MonkeyPatch()
    import Cython.Build
    import setuptools

    mp.setattr(setuptools, "setup", lambda **kw: None)
    mp.setattr(Cython.Build, "cythonize", lambda exts, **kw: exts)
    mp.chdir(ROOT)
    try:
        yield runpy.run_path(str(ROOT / "setup.py"), run_name="napari_calc_setup")
    finally:
        mp.undo()


def _compiler(setup_py, jobs):
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    if shutil.which(cc.compiler[0]) is None:
        pytest.skip("no C compiler")
    setup_py["_compile_in_parallel"](cc, jobs)
    return cc


def _sources(tmp_path, n, bad=None):
    out = []
    for i in range(n):
        body = "int f%d(int x) { return x * %d + %d; }\n" % (i, i + 2, i)
        if i == bad:
            body = "int f%d(void) { return syntax error }\n" % i
        # sizes differ, so the longest-first order is not the sources' order
        p = tmp_path / f"s{i}.c"
        p.write_text(body + "/* pad */\n" * (i * 40))
        out.append(str(p))
    return out


def test_parallel_compile_gives_the_serial_objects_in_source_order(setup_py, tmp_path, monkeypatch):
    srcs = _sources(tmp_path, 5)
    monkeypatch.chdir(tmp_path)
    serial = _compiler(setup_py, 1).compile(srcs, output_dir="serial")
    par = _compiler(setup_py, 3)
    assert par.compile.__name__ == "compile" and par.compile.__qualname__.startswith("_compile_in_parallel")
    objs = par.compile(srcs, output_dir="parallel")
    assert [Path(o).name for o in objs] == [Path(o).name for o in serial]
    assert [Path(o).stem for o in objs] == [Path(s).stem for s in srcs]
    for a, b in zip(serial, objs):
        assert (tmp_path / b).read_bytes() == (tmp_path / a).read_bytes()


def test_parallel_compile_stops_on_a_compiler_error(setup_py, tmp_path, monkeypatch):
    from setuptools._distutils.errors import CompileError

    srcs = _sources(tmp_path, 4, bad=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CompileError, match="s2.c"):
        _compiler(setup_py, 2).compile(srcs, output_dir="o")


def test_one_job_leaves_the_compiler_as_it_is(setup_py):
    from setuptools._distutils.ccompiler import new_compiler

    cc = new_compiler()
    before = cc.compile
    setup_py["_compile_in_parallel"](cc, 1)
    assert cc.compile == before


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("0", 1)])
def test_build_jobs_from_the_environment(setup_py, monkeypatch, value, expected):
    monkeypatch.setenv("NAPARI_CALC_BUILD_JOBS", value)
    assert setup_py["_build_jobs"]() == expected


def test_build_jobs_default_to_the_usable_cpus(setup_py, monkeypatch):
    import os

    monkeypatch.delenv("NAPARI_CALC_BUILD_JOBS", raising=False)
    assert setup_py["_build_jobs"]() == len(os.sched_getaffinity(0))


def test_build_jobs_not_a_number_is_named_and_the_cpus_used(setup_py, monkeypatch, capsys):
    import os

    monkeypatch.setenv("NAPARI_CALC_BUILD_JOBS", "four")
    assert setup_py["_build_jobs"]() == len(os.sched_getaffinity(0))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NAPARI_CALC_BUILD_JOBS='four' is not a whole number" in err[0]
