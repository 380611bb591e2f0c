# Backend selection: which kernel table the dispatched entry points call; and how this build
# was made.
import json as _json

_KNOWN_BACKENDS = ("auto", "avx2", "scalar")


def backends():
    """Kernel backends usable on this machine, best first, e.g. ["avx2", "scalar"]."""
    cdef const char *names[8]
    cdef int n = sona_backends(names, 8)
    return [names[i].decode() for i in range(n)]


def get_backend():
    """Name of the backend the kernels currently run on."""
    return sona_kernels().name.decode()


def set_backend(name):
    """Select the kernel backend: "auto" (best available), "avx2" or "scalar".

    Raises ValueError for an unknown name and RuntimeError when this CPU (or this build) lacks it.
    Switching is process-wide and takes effect for the next kernel call.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str; got {type(name).__name__}")
    rc = sona_set_backend(name.encode())
    if rc == -1:
        raise ValueError(f"unknown backend {name!r}; valid names: {', '.join(_KNOWN_BACKENDS)}")
    if rc == -2:
        raise RuntimeError(f"backend {name!r} is not supported on this CPU or build; "
                           f"available here: {', '.join(backends())}")


def cpu_features():
    """CPU features relevant to sona's kernels, as detected at import: {"avx2": bool, ...}.

    "avx2" means AVX2 and FMA with OS support for the YMM registers.
    """
    cdef unsigned f = sona_cpu_features()
    return {"avx2": bool(f & SONA_CPU_AVX2), "avx512f": bool(f & SONA_CPU_AVX512F)}


def build_info():
    """How this build of sona._core was made, recorded by setup.py at compile time.

    Returns a dict: "compile_command" (the compiler and every flag, the interpreter's and
    sona's, as used for the C files), "extra_compile_args" (sona's own flags), "compiler",
    "cython", "numpy" and "python" (versions at build time), "platform" and
    "compiled_backends" (kernel tables in this binary, best first, whether or not this CPU
    runs them: see backends() for those it does).

    >>> "scalar" in build_info()["compiled_backends"]
    True
    """
    cdef const char *names[8]
    cdef int n = sona_compiled_backends(names, 8)
    info = _json.loads(SONA_BUILD_INFO.decode())
    info["compiled_backends"] = [names[i].decode() for i in range(n)]
    return info
