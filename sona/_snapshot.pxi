# Consistent copies of live learning state for save(): taken in one stretch that holds the GIL.
#
# Learning (route/feedback, the instant loop, the bank's online clustering) runs in compiled
# code under the GIL, so no other thread changes anything while this runs. numpy's own copies
# may release the GIL inside a large array (and Python code between two copies may switch
# threads), which let a save mix two states and even checksum one and write another.


def _snapshot(dict arrays, tuple calls=()):
    """(copies of `arrays`, results of `calls`), all taken without releasing the GIL.

    arrays: name -> C- or F-contiguous numpy array (copied with the same layout);
    calls: compiled zero-argument callables (bound methods of the cdef classes,
    functools.partial(getattr, obj, name)) whose results complete the snapshot.
    """
    cdef dict out = {}
    cdef cnp.ndarray a, c
    cdef int fortran
    for name, value in arrays.items():
        if not cnp.PyArray_Check(value):
            raise TypeError(f"{name} must be a numpy array; got {type(value).__name__}")
        a = <cnp.ndarray>value
        if cnp.PyArray_IS_C_CONTIGUOUS(a):
            fortran = 0
        elif cnp.PyArray_IS_F_CONTIGUOUS(a):
            fortran = 1
        else:
            raise ValueError(f"{name} must be contiguous to be snapshotted")
        c = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a),
                              fortran)
        memcpy(cnp.PyArray_DATA(c), cnp.PyArray_DATA(a), cnp.PyArray_NBYTES(a))
        out[name] = c
    return out, tuple([f() for f in calls])
