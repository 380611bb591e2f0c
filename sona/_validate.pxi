# Array validation shared by every entry point of the boundary.
#
# The fast path (already float32, C-contiguous, right shape) costs a few pointer checks plus one
# finiteness pass in C. Other real dtypes (float64, float16, integers) are converted with a copy to
# float32 -- a documented cost of roughly one allocation and one pass. Non-contiguous arrays are
# rejected rather than silently copied, so a hot loop never pays a hidden copy.
import numpy as np
from libc.math cimport INFINITY, isfinite


cdef inline str _shape_str(cnp.ndarray a):
    return "(" + ", ".join([str(a.shape[i]) for i in range(a.ndim)]) + ("," if a.ndim == 1 else "") + ")"


cdef cnp.ndarray _as_f32(object x, str name):
    """x as a C-contiguous float32 ndarray: x itself when it already is one, else a float32 copy."""
    cdef cnp.ndarray a
    if cnp.PyArray_Check(x):
        a = <cnp.ndarray>x
        if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 and cnp.PyArray_IS_C_CONTIGUOUS(a):
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
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(np.float32)


cdef inline int _check_finite(cnp.ndarray a, str name) except -1:
    if not (sona_maxabs_f32(<const float *>cnp.PyArray_DATA(a), <size_t>cnp.PyArray_SIZE(a))
            < <float>INFINITY):
        raise ValueError(f"{name} contains NaN or Inf")
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
    """The fast path's test: x is already a C-contiguous float32 vector of length d."""
    return (cnp.PyArray_Check(x) and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_FLOAT32
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


cdef cnp.ndarray _output(object out, int nd, cnp.npy_intp *dims, str name):
    """`out` checked to be a writeable C-contiguous float32 array of shape dims, or a new
    uninitialised one when out is None."""
    cdef cnp.ndarray o
    cdef int i
    if out is None:
        return cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)
    if not cnp.PyArray_Check(out):
        raise TypeError(f"{name} must be a numpy float32 array; got {type(out).__name__}")
    o = <cnp.ndarray>out
    if cnp.PyArray_TYPE(o) != cnp.NPY_FLOAT32:
        raise TypeError(f"{name} must have dtype float32; got {(<object>o).dtype}")
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
    return o


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
