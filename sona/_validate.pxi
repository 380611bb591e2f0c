# Array validation shared by every entry point of the boundary.
#
# The fast path (already float32, C-contiguous, right shape) costs a few pointer checks plus one
# finiteness pass in C. Other real dtypes (float64, float16, integers) are converted with a copy to
# float32 -- a documented cost of roughly one allocation and one pass. Non-contiguous arrays are
# rejected rather than silently copied, so a hot loop never pays a hidden copy. Byte order is part
# of the type: a non-native float32 array ('>f4' on x86) is converted like any other dtype (an
# in-place or out= array is refused), never read as native bytes.
import numbers

import numpy as np
from libc.math cimport INFINITY, isfinite
from libc.stdint cimport uint64_t

cdef float _F16_MAX = 65504.0
cdef float _F32_MAX = 3.4028234663852886e38


cdef inline str _shape_str(cnp.ndarray a):
    return "(" + ", ".join([str(a.shape[i]) for i in range(a.ndim)]) + ("," if a.ndim == 1 else "") + ")"


cdef inline bint _native_f32(cnp.ndarray a) noexcept:
    """a holds float32 in this machine's byte order (the only layout the kernels read)."""
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 and cnp.PyArray_ISNOTSWAPPED(a)


cdef cnp.ndarray _as_f32(object x, str name):
    """x as a C-contiguous float32 ndarray: x itself when it already is one, else a float32 copy
    (also of a float32 array in the other byte order)."""
    cdef cnp.ndarray a
    if cnp.PyArray_Check(x):
        a = <cnp.ndarray>x
        if _native_f32(a) and cnp.PyArray_IS_C_CONTIGUOUS(a):
            return a
    else:
        try:
            a = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"{name} must be a float32 array; got {type(x).__name__}") from exc
    if (<object>a).dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a float32 array (other real dtypes are copied to float32); "
                        f"got dtype {(<object>a).dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} must be C-contiguous; got shape {_shape_str(a)} with strides "
                         f"{(<object>a).strides} (np.ascontiguousarray makes a contiguous copy)")
    cdef cnp.ndarray out
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(np.float32)  # native byte order whatever a's is
    if (<object>a).dtype.itemsize > 4 and cnp.PyArray_SIZE(out):
        _check_cast(a, out, name)
    return out


cdef int _check_cast(cnp.ndarray a, cnp.ndarray out, str name) except -1:
    """A finite value of a wider dtype that became Inf in float32 is named as what it is."""
    if sona_maxabs_f32(_fptr(out), <size_t>cnp.PyArray_SIZE(out)) < <float>INFINITY:
        return 0
    src = np.abs(a[np.isfinite(a)]) if (<object>a).dtype.kind == "f" else np.abs(a)
    big = float(src.max()) if src.size else 0.0
    if big > _F32_MAX:
        raise ValueError(f"{name} has a value of magnitude {big:.3g}, beyond float32's range "
                         f"(+-{_F32_MAX:.4g})")
    return 0


cdef inline int _check_finite(cnp.ndarray a, str name) except -1:
    if not (sona_maxabs_f32(<const float *>cnp.PyArray_DATA(a), <size_t>cnp.PyArray_SIZE(a))
            < <float>INFINITY):
        raise ValueError(f"{name} contains NaN or Inf")
    return 0


cdef inline int _check_result(cnp.ndarray o, str inputs) except -1:
    """A kernel's output is finite: finite inputs whose result passes float32's range are an
    error, never a silent Inf."""
    if not (sona_maxabs_f32(<const float *>cnp.PyArray_DATA(o), <size_t>cnp.PyArray_SIZE(o))
            < <float>INFINITY):
        raise ValueError(f"the result overflows float32 (beyond +-{_F32_MAX:.4g}): {inputs} "
                         f"too large in magnitude; scale the input down")
    return 0


cdef cnp.ndarray _vector(object x, Py_ssize_t d, str name):
    """A finite float32 vector of length d (see _as_f32 for conversions)."""
    cdef cnp.ndarray a = _as_f32(x, name)
    if cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_DIM(a, 0) != d:
        raise ValueError(f"{name} must have shape ({d},); got {_shape_str(a)}")
    _check_finite(a, name)
    return a


cdef cnp.ndarray _vector_or_rows(object x, Py_ssize_t d, str name, bint check_finite=True):
    """A float32 array of shape (d,) or (n, d), finite unless the caller checks that itself."""
    cdef cnp.ndarray a = _as_f32(x, name)
    cdef int nd = cnp.PyArray_NDIM(a)
    if not ((nd == 1 or nd == 2) and cnp.PyArray_DIM(a, nd - 1) == d):
        raise ValueError(f"{name} must have shape ({d},) or (n, {d}); got {_shape_str(a)}")
    if check_finite:
        _check_finite(a, name)
    return a


cdef inline bint _is_f32_vector(object x, Py_ssize_t d) noexcept:
    """The fast path's test: x is already a C-contiguous native float32 vector of length d."""
    return (cnp.PyArray_Check(x) and _native_f32(<cnp.ndarray>x)
            and cnp.PyArray_NDIM(<cnp.ndarray>x) == 1 and cnp.PyArray_DIM(<cnp.ndarray>x, 0) == d
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x))


cdef cnp.ndarray _rows(object x, str name, bint check_finite=True):
    """A float32 2-D array (n, d), finite unless the caller checks that itself."""
    cdef cnp.ndarray a = _as_f32(x, name)
    if cnp.PyArray_NDIM(a) != 2:
        raise ValueError(f"{name} must be 2-D (n, d); got shape {_shape_str(a)}")
    if check_finite:
        _check_finite(a, name)
    return a


cdef cnp.ndarray _output(object out, int nd, cnp.npy_intp *dims, str name,
                        cnp.ndarray src=None, cnp.ndarray src2=None, bint same_ok=False):
    """`out` checked to be a writeable C-contiguous native float32 array of shape dims that
    shares no memory with the inputs src and src2 (except being src itself when same_ok: the
    kernel reads each element before writing it), or a new uninitialised one when out is
    None."""
    cdef cnp.ndarray o
    cdef int i
    if out is None:
        return cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)
    if not cnp.PyArray_Check(out):
        raise TypeError(f"{name} must be a numpy float32 array; got {type(out).__name__}")
    o = <cnp.ndarray>out
    if not _native_f32(o):
        raise TypeError(f"{name} must have dtype float32 in native byte order; got "
                        f"{(<object>o).dtype.str!r}")
    cdef bint same = cnp.PyArray_NDIM(o) == nd
    if same:
        for i in range(nd):
            same = same and cnp.PyArray_DIM(o, i) == dims[i]
    if not same:
        want = "(" + ", ".join([str(dims[i]) for i in range(nd)]) + ("," if nd == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {want}; got {_shape_str(o)}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(o):
        raise ValueError(f"{name} must be C-contiguous")
    if not cnp.PyArray_ISWRITEABLE(o):
        raise ValueError(f"{name} is read-only")
    _check_apart(o, src, name, same_ok)
    _check_apart(o, src2, name, False)
    return o


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    """The memory ranges of two C-contiguous arrays intersect."""
    cdef char *pa = <char *>cnp.PyArray_DATA(a)
    cdef char *pb = <char *>cnp.PyArray_DATA(b)
    return (cnp.PyArray_NBYTES(a) > 0 and cnp.PyArray_NBYTES(b) > 0
            and pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a))


cdef int _check_apart(cnp.ndarray o, cnp.ndarray src, str name, bint same_ok) except -1:
    """o (written) and src (read) do not overlap in memory, or are the very same array when
    same_ok: an output written while its input is still being read gives wrong results."""
    if src is None or not _overlap(o, src):
        return 0
    if same_ok and cnp.PyArray_DATA(o) == cnp.PyArray_DATA(src) and \
            cnp.PyArray_NBYTES(o) == cnp.PyArray_NBYTES(src):
        return 0
    raise ValueError(f"{name} overlaps an input array in memory (the same buffer or a view of "
                     f"it); pass a separate array" + (" or the input itself" if same_ok else ""))


# Embedding components beyond this are rejected by the engine and the router: no embedding model
# produces them (normalise raw features first), and it keeps every product in the adapters, the
# norms and the gradients (|x| up to 1e6 times weights clipped to a few units, squared, summed
# over up to 65536 components) far from float32 overflow, so weights stay finite (R6).
cdef float _MAX_EMBEDDING_ABS = 1e6


cdef int _check_embedding(cnp.ndarray a, str name, float limit) except -1:
    """a (validated float32) is finite with every |component| <= min(limit, 1e6)."""
    cdef float lim = min(limit, _MAX_EMBEDDING_ABS)
    cdef float m = sona_maxabs_f32(<const float *>cnp.PyArray_DATA(a), <size_t>cnp.PyArray_SIZE(a))
    if not m <= lim:
        if not m < INFINITY:
            raise ValueError(f"{name} contains NaN or Inf")
        raise ValueError(f"{name} has a component of magnitude {m:g}; accepted: <= {lim:g}")
    return 0


cdef inline float *_fptr(cnp.ndarray a):
    return <float *>cnp.PyArray_DATA(a)


cpdef double _check_quality(object value, str name="quality") except? -1.0:
    """value as a quality: a real number (not a bool, which is a flag and not a score) in
    [0, 1]; TypeError or ValueError naming `name` otherwise. The one check every learning entry
    point uses."""
    cdef double q
    if type(value) is float or type(value) is int:  # the common case, without the ABC check
        q = value
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1]; got {type(value).__name__} "
                        f"{value!r}")
    else:
        q = value
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {q!r}")
    return q


cdef uint64_t _int_in(object x, str what, uint64_t lo, uint64_t hi) except? 0xFFFFFFFFFFFFFFFF:
    """x as an integer in lo..hi (ints, numpy integers; bool is refused: a flag is not a count),
    TypeError/ValueError naming `what` (never a nameless OverflowError)."""
    if isinstance(x, (bool, np.bool_)) or not hasattr(x, "__index__"):
        raise TypeError(f"{what} must be an integer; got {type(x).__name__}")
    v = x.__index__()
    if not lo <= v <= hi:
        raise ValueError(f"{what} must be an integer in {lo}..{hi}; got {v}")
    return <uint64_t>v


cdef double _real(object value, str name) except? -1.0:
    """value as a real number (int, float, numpy scalar; not bool, not str), for parameters the
    C side takes as double: TypeError naming the parameter instead of Cython's generic one."""
    if type(value) is float or type(value) is int:  # the hot paths' case, without the ABC check
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    return value

