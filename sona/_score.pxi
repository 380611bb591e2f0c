# Scores of one vector against the rows of a matrix, and top-k selection.
from libc.stdint cimport int64_t

# Above this many multiply-adds a call releases the GIL (below it, releasing costs more than the math).
cdef Py_ssize_t _NOGIL_WORK = 1 << 16


cdef tuple _matrix_and_query(object M, object x):
    cdef cnp.ndarray m = _rows(M, "M")
    cdef cnp.ndarray v = _vector(x, cnp.PyArray_DIM(m, 1), "x")
    return m, v


def dot_scores(M, x, out=None):
    """out[i] = M[i] · x for a row matrix M (n, d) and a vector x (d,). Returns float32 (n,)."""
    cdef cnp.ndarray m, v, o
    m, v = _matrix_and_query(M, x)
    cdef size_t n = cnp.PyArray_DIM(m, 0), d = cnp.PyArray_DIM(m, 1)
    o = _output(out, 1, cnp.PyArray_DIMS(m), "out")
    cdef const float *pm = _fptr(m)
    cdef const float *pv = _fptr(v)
    cdef float *po = _fptr(o)
    if <Py_ssize_t>(n * d) >= _NOGIL_WORK:
        with nogil:
            sona_dot_rows_f32(pm, n, d, pv, po)
    else:
        sona_dot_rows_f32(pm, n, d, pv, po)
    return o


def cosine_scores(M, x, out=None):
    """out[i] = cos(M[i], x); 0 where M[i] or x is all zeros. Returns float32 (n,)."""
    cdef cnp.ndarray m, v, o
    m, v = _matrix_and_query(M, x)
    cdef size_t n = cnp.PyArray_DIM(m, 0), d = cnp.PyArray_DIM(m, 1)
    o = _output(out, 1, cnp.PyArray_DIMS(m), "out")
    cdef const float *pm = _fptr(m)
    cdef const float *pv = _fptr(v)
    cdef float *po = _fptr(o)
    if <Py_ssize_t>(n * d) >= _NOGIL_WORK:
        with nogil:
            sona_cosine_rows_f32(pm, n, d, pv, NULL, po)
    else:
        sona_cosine_rows_f32(pm, n, d, pv, NULL, po)
    return o


def sqdist_scores(M, x, out=None):
    """out[i] = |M[i] - x|² . Returns float32 (n,)."""
    cdef cnp.ndarray m, v, o
    m, v = _matrix_and_query(M, x)
    cdef size_t n = cnp.PyArray_DIM(m, 0), d = cnp.PyArray_DIM(m, 1)
    o = _output(out, 1, cnp.PyArray_DIMS(m), "out")
    cdef const float *pm = _fptr(m)
    cdef const float *pv = _fptr(v)
    cdef float *po = _fptr(o)
    if <Py_ssize_t>(n * d) >= _NOGIL_WORK:
        with nogil:
            sona_sqdist_rows_f32(pm, n, d, pv, po)
    else:
        sona_sqdist_rows_f32(pm, n, d, pv, po)
    return o


def row_norms(M, out=None):
    """out[i] = |M[i]| (Euclidean). Returns float32 (n,)."""
    cdef cnp.ndarray m = _rows(M, "M")
    cdef size_t n = cnp.PyArray_DIM(m, 0), d = cnp.PyArray_DIM(m, 1)
    cdef cnp.ndarray o = _output(out, 1, cnp.PyArray_DIMS(m), "out")
    sona_norm_rows_f32(_fptr(m), n, d, _fptr(o))
    return o


def topk(scores, Py_ssize_t k):
    """Indices (int64) and values (float32) of the k largest scores, largest first.

    Ties go to the lower index; NaN ranks last. k is clipped to len(scores); k < 0 is an error.
    """
    cdef cnp.ndarray s = _as_f32(scores, "scores")
    if cnp.PyArray_NDIM(s) != 1:
        raise ValueError(f"scores must be 1-D; got shape {_shape_str(s)}")
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}")
    cdef Py_ssize_t n = cnp.PyArray_DIM(s, 0)
    cdef cnp.npy_intp kk = min(k, n)
    cdef cnp.ndarray idx = cnp.PyArray_EMPTY(1, &kk, cnp.NPY_INT64, 0)
    cdef cnp.ndarray val = cnp.PyArray_EMPTY(1, &kk, cnp.NPY_FLOAT32, 0)
    sona_topk_f32(_fptr(s), n, kk, <int64_t *>cnp.PyArray_DATA(idx), _fptr(val))
    return idx, val


def cosine_topk(M, x, Py_ssize_t k):
    """Indices and cosine scores of the k rows of M most similar to x, most similar first."""
    return topk(cosine_scores(M, x), k)
