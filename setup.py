"""Build sona._core: one Cython extension over every C file in csrc/.

AVX2 code is confined to target regions inside csrc/*_avx2.c (see csrc/target.h), so no ISA flags
are passed here and the same binary runs, on the scalar kernels, on CPUs without AVX2.
"""

import os
import shlex
import sys
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args = ["/O2", "/std:c11", "/experimental:c11atomics"]
else:
    # -fno-math-errno: nothing reads errno, so sqrtf compiles to one instruction (no error branch)
    compile_args = ["-O3", "-std=c11", "-fno-strict-aliasing", "-fno-math-errno"]
# Appended after the flags above, so they win where they conflict (setuptools puts CFLAGS
# first): scripts/sanitize.sh passes "-O1 -g -fsanitize=..." here. Never set for release builds.
compile_args += shlex.split(os.environ.get("SONA_EXTRA_COMPILE_ARGS", ""))

extension = Extension(
    "sona._core",
    sources=["sona/_core.pyx", *sorted(glob("csrc/*.c"))],
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION")],
    extra_compile_args=compile_args,
)

setup(
    ext_modules=cythonize(
        [extension],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
