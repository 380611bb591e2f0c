# Scores of one vector against the rows of a matrix, and top-k selection.
from libc.math cimport sqrt
from libc.stdint cimport int64_t

# Above this many multiply-adds a call releases the GIL (below it, releasing costs more than the math).
cdef Py_ssize_t _NOGIL_WORK = 1 << 16


cdef tuple _matrix_and_query(object M, object x):
    cdef cnp.ndarray m = _rows(M, "M")
    cdef cnp.ndarray v = _vector(x, cnp.PyArray_DIM(m, 1), "x")
    return m, v


def dot_scores(M, x, out=None):
    """out[i] = M[i] · x for a row matrix M (n, d) and a vector x (d,). Returns float32 (n,).

    out must not overlap M or x; a result beyond float32's range raises ValueError."""
    cdef cnp.ndarray m, v, o
    m, v = _matrix_and_query(M, x)
    cdef size_t n = cnp.PyArray_DIM(m, 0), d = cnp.PyArray_DIM(m, 1)
    o = _output(out, 1, cnp.PyArray_DIMS(m), "out", m, v)
    cdef const float *pm = _fptr(m)
    cdef const float *pv = _fptr(v)
    cdef float *po = _fptr(o)
    if <Py_ssize_t>(n * d) >= _NOGIL_WORK:
        with nogil:
            sona_dot_rows_f32(pm, n, d, pv, po)
    else:
        sona_dot_rows_f32(pm, n, d, pv, po)
    _check_result(o, "M or x")
    return o


cdef int _cosine_into(cnp.ndarray m, object x, float *res) except -1:
    """Cosine scores of x against the rows of m (validated but for finiteness) into res[0:n]
    (res holds 2n floats: the second half is scratch). One pass over m gives the dot products
    and the row norms together, and m's finiteness is judged from those results."""
    cdef cnp.ndarray v = _vector(x, cnp.PyArray_DIM(m, 1), "x")
    cdef size_t n = cnp.PyArray_DIM(m, 0), d = cnp.PyArray_DIM(m, 1)
    cdef const float *pm = _fptr(m)
    cdef const float *pv = _fptr(v)
    cdef int bad
    if <Py_ssize_t>(n * d) >= _NOGIL_WORK:
        with nogil:
            bad = sona_cosine_rows_f32(pm, n, d, pv, res, res + n)
    else:
        bad = sona_cosine_rows_f32(pm, n, d, pv, res, res + n)
    if bad:
        raise ValueError("M contains NaN or Inf (or values whose squares overflow float32)")
    return 0


def cosine_scores(M, x, out=None):
    """out[i] = cos(M[i], x); 0 where M[i] or x is all zeros. Returns float32 (n,).

    A NaN/Inf in M (or a value whose square overflows float32) raises ValueError with out left
    untouched.
    """
    cdef cnp.ndarray m = _rows(M, "M", False)
    cdef cnp.ndarray o = _output(out, 1, cnp.PyArray_DIMS(m), "out")
    cdef size_t n = cnp.PyArray_DIM(m, 0)
    cdef float small[1024]  # scores and scratch; a heap buffer for more than 512 rows
    cdef cnp.ndarray big
    cdef float *res = small
    if 2 * n > 1024:
        big = np.empty(2 * n, np.float32)
        res = _fptr(big)
    _cosine_into(m, x, res)
    memcpy(_fptr(o), res, n * sizeof(float))
    return o


def sqdist_scores(M, x, out=None):
    """out[i] = |M[i] - x|² . Returns float32 (n,).

    out must not overlap M or x; a result beyond float32's range raises ValueError."""
    cdef cnp.ndarray m, v, o
    m, v = _matrix_and_query(M, x)
    cdef size_t n = cnp.PyArray_DIM(m, 0), d = cnp.PyArray_DIM(m, 1)
    o = _output(out, 1, cnp.PyArray_DIMS(m), "out", m, v)
    cdef const float *pm = _fptr(m)
    cdef const float *pv = _fptr(v)
    cdef float *po = _fptr(o)
    if <Py_ssize_t>(n * d) >= _NOGIL_WORK:
        with nogil:
            sona_sqdist_rows_f32(pm, n, d, pv, po)
    else:
        sona_sqdist_rows_f32(pm, n, d, pv, po)
    _check_result(o, "M or x")
    return o


def row_norms(M, out=None):
    """out[i] = |M[i]| (Euclidean). Returns float32 (n,).

    out must not overlap M; a norm beyond float32's range raises ValueError."""
    cdef cnp.ndarray m = _rows(M, "M")
    cdef size_t n = cnp.PyArray_DIM(m, 0), d = cnp.PyArray_DIM(m, 1)
    cdef cnp.ndarray o = _output(out, 1, cnp.PyArray_DIMS(m), "out", m)
    cdef const float *pm = _fptr(m)
    cdef float *po = _fptr(o)
    cdef size_t i
    sona_norm_rows_f32(pm, n, d, po)
    for i in range(n):  # squares past float32 while the norm is not: again in double
        if not po[i] < INFINITY:
            po[i] = <float>sqrt(_sumsq(pm + i * d, d))
    _check_result(o, "M")
    return o


def topk(scores, k):
    """Indices (int64) and values (float32) of the k largest scores, largest first.

    Ties go to the lower index; NaN ranks last. k is clipped to len(scores); k < 0 is an error.
    """
    cdef cnp.ndarray s = _as_f32(scores, "scores")
    if cnp.PyArray_NDIM(s) != 1:
        raise ValueError(f"scores must be 1-D; got shape {_shape_str(s)}")
    cdef Py_ssize_t n = cnp.PyArray_DIM(s, 0)
    cdef cnp.npy_intp kk = <cnp.npy_intp>min(_int_in(k, "k", 0, _U64_MAX), <uint64_t>n)
    cdef cnp.ndarray idx = cnp.PyArray_EMPTY(1, &kk, cnp.NPY_INT64, 0)
    cdef cnp.ndarray val = cnp.PyArray_EMPTY(1, &kk, cnp.NPY_FLOAT32, 0)
    sona_topk_f32(_fptr(s), n, kk, <int64_t *>cnp.PyArray_DATA(idx), _fptr(val))
    return idx, val


def cosine_topk(M, x, k):
    """Indices (int64) and cosine scores (float32) of the k rows of M most similar to x, most
    similar first; ties go to the lower index. k is clipped to len(M); k < 0 is an error."""
    cdef uint64_t kk64 = _int_in(k, "k", 0, _U64_MAX)
    cdef cnp.ndarray m = _rows(M, "M", False)
    cdef size_t n = cnp.PyArray_DIM(m, 0)
    cdef float small[1024]  # scores and scratch; a heap buffer for more than 512 rows
    cdef cnp.ndarray big
    cdef float *res = small
    if 2 * n > 1024:
        big = np.empty(2 * n, np.float32)
        res = _fptr(big)
    _cosine_into(m, x, res)
    cdef cnp.npy_intp kk = <cnp.npy_intp>min(kk64, <uint64_t>n)
    cdef cnp.ndarray idx = cnp.PyArray_EMPTY(1, &kk, cnp.NPY_INT64, 0)
    cdef cnp.ndarray val = cnp.PyArray_EMPTY(1, &kk, cnp.NPY_FLOAT32, 0)
    sona_topk_f32(res, n, kk, <int64_t *>cnp.PyArray_DATA(idx), _fptr(val))
    return idx, val
