"""Build the C detection kernel (csrc/) with its Cython wrapper.

OpenMP is used when a small program compiles and links with ``-fopenmp``;
otherwise the kernel is built serial. ``NAPARI_CALC_NO_OPENMP=1`` forces a
serial build. ``napari_calc._kernel.openmp_enabled()`` tells which one you got.

The C code is portable C99 at -O3 (no ``-march=native``). On x86-64 Linux
with GCC, the filter row functions are also compiled for AVX2 and (GCC >= 11)
for AVX-512 (x86-64-v4) with ``target_clones`` and the CPU picks at load time
(results are bit-identical: no FMA contraction); ``NAPARI_CALC_NO_CLONES=1``
disables that.
"""

import os
import shutil
import subprocess
import sys
import tempfile
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


class BuildExt(build_ext):
    def build_extensions(self):
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
