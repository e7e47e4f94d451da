"""Build the C detection kernel (csrc/) with its Cython wrapper.

OpenMP is used when a small program compiles and links with ``-fopenmp``;
otherwise the kernel is built serial. ``NAPARI_CALC_NO_OPENMP=1`` forces a
serial build. ``napari_calc._kernel.openmp_enabled()`` tells which one you got.

The C code is portable C99 at -O3 (no ``-march=native``). On x86-64 Linux
with GCC, the filter row functions are also compiled for AVX2 and (GCC >= 11)
for AVX-512 (x86-64-v4) with ``target_clones`` and the CPU picks at load time
(results are bit-identical: no FMA contraction); ``NAPARI_CALC_NO_CLONES=1``
disables that.

The sources compile in parallel, one compiler process per CPU (the longest
first: filters.c, with its three clones, and the Cython module take most of
the build). ``NAPARI_CALC_BUILD_JOBS=N`` sets the number; 1 compiles them
one after another, as setuptools does.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _compiler_supports_openmp(compiler) -> bool:
    """Compile and link a tiny OpenMP program with the build's compiler."""
    if os.environ.get("NAPARI_CALC_NO_OPENMP", "") not in ("", "0"):
        return False
    tmp = tempfile.mkdtemp(prefix="napari-calc-omp-")
    try:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(
                "#include <omp.h>\n"
                "int main(void) { int n = 0;\n"
                "#pragma omp parallel reduction(+:n)\n"
                "n += 1; return omp_get_max_threads() > 0 && n > 0 ? 0 : 1; }\n"
            )
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, "omp_test", output_dir=tmp, extra_postargs=["-fopenmp"])
        except Exception:
            return False
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_jobs() -> int:
    """Compiler processes to run at once: NAPARI_CALC_BUILD_JOBS (below 1:
    one), else the CPUs this process may use. A value that is not a whole
    number is named on stderr and the CPUs are used."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # (not Linux)
        cpus = os.cpu_count() or 1
    value = os.environ.get("NAPARI_CALC_BUILD_JOBS", "").strip()
    if not value:
        return max(1, cpus)
    try:
        return max(1, int(value))
    except ValueError:
        print(f"napari-calc: NAPARI_CALC_BUILD_JOBS={value!r} is not a whole number; "
              f"compiling with {cpus} jobs", file=sys.stderr)
        return max(1, cpus)


def _compile_in_parallel(compiler, jobs: int) -> None:
    """Make ``compiler.compile`` build its objects ``jobs`` at a time.

    The same steps as distutils' ``CCompiler.compile`` (the same command for
    each object, the objects returned in the sources' order, so the link and
    the library are the same), only run concurrently, the largest source
    first. Left as it is for compilers that do not work that way (MSVC's
    ``compile`` is its own) or when one job is asked for.
    """
    needed = ("_setup_compile", "_get_cc_args", "_compile")
    if jobs < 2 or compiler.compiler_type == "msvc" or not all(hasattr(compiler, n) for n in needed):
        return

    def compile(sources, output_dir=None, macros=None, include_dirs=None, debug=False,
                extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
        todo = [obj for obj in objects if obj in build]

        def size(obj):
            try:
                return os.path.getsize(build[obj][0])
            except OSError:
                return 0

        def one(obj):
            src, ext = build[obj]
            compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPoolExecutor(max_workers=min(jobs, max(1, len(todo)))) as pool:
            for _ in pool.map(one, sorted(todo, key=size, reverse=True)):
                pass  # (re-raises the first compiler error)
        return objects

    compiler.compile = compile


class BuildExt(build_ext):
    def build_extensions(self):
        _compile_in_parallel(self.compiler, _build_jobs())
        use_omp = self.compiler.compiler_type != "msvc" and _compiler_supports_openmp(self.compiler)
        for ext in self.extensions:
            if use_omp:
                ext.extra_compile_args += ["-fopenmp"]
                ext.extra_link_args += ["-fopenmp"]
        print(f"napari-calc: building the kernel {'with' if use_omp else 'without'} OpenMP",
              file=sys.stderr)
        super().build_extensions()


compile_args = [] if sys.platform == "win32" else ["-O3", "-std=c99", "-Wall", "-Wno-unused-function"]

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if os.environ.get("NAPARI_CALC_NO_CLONES", "") not in ("", "0"):
    macros.append(("NCALC_NO_CLONES", "1"))

ext = Extension(
    "napari_calc._kernel",
    sources=["napari_calc/_kernel.pyx"] + sorted(glob("csrc/*.c")),
    include_dirs=[np.get_include(), "csrc"],
    define_macros=macros,
    extra_compile_args=compile_args,
    extra_link_args=[],
)

setup(
    ext_modules=cythonize([ext], compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
