# Weighted spherical k-means (csrc/kmeans.c) at the boundary: validation, buffers, GIL release.


cdef cnp.ndarray _kmeans_weights(object weights, Py_ssize_t n):
    """Validated weights: n finite values >= 0 with a positive sum (float32), or None."""
    if weights is None:
        return None
    cdef cnp.ndarray w = _vector(weights, n, "weights")
    if n and float(np.min(w)) < 0.0:
        raise ValueError(f"weights must be >= 0; got a minimum of {float(np.min(w))}")
    cdef double total = float(np.sum(w, dtype=np.float64))
    if not total > 0.0:
        raise ValueError("weights must have a positive sum; got all zeros")
    # a cluster's weighted sum of unit rows and its inertia (<= 4 x weight) stay in float32
    if total > _MAX_TOTAL_WEIGHT:
        raise ValueError(f"weights must sum to at most {_MAX_TOTAL_WEIGHT:g}; got {total:g} "
                         "(only their ratios matter: scale them down)")
    return w


cdef double _MAX_TOTAL_WEIGHT = 1e37


cdef class _KMeansRun:
    """Caller-owned buffers and results of one sona_kmeans_f32 call (k clusters of n points)."""
    cdef readonly object centroids, sums, weight, count, labels
    cdef readonly double inertia
    cdef readonly unsigned int n_iter, k_found
    cdef readonly bint converged


cdef _KMeansRun _kmeans_run(cnp.ndarray X, cnp.ndarray w, Py_ssize_t k, uint32_t max_iter,
                            uint32_t trials, uint32_t n_init, uint64_t seed, object work):
    """Runs the C k-means on validated float32 (n, d) X and weights (or None), the GIL released.
    work: a float32 scratch array of at least sona_kmeans_work_floats(n, k, d, trials, n_init)
    elements, or None to allocate one."""
    cdef size_t n = <size_t>cnp.PyArray_DIM(X, 0), d = <size_t>cnp.PyArray_DIM(X, 1)
    cdef size_t kk = <size_t>k
    cdef size_t need = sona_kmeans_work_floats(n, kk, d, trials, n_init)
    if work is None or (<cnp.ndarray>work).shape[0] < <Py_ssize_t>need:
        work = np.empty(need, np.float32)
    cdef _KMeansRun r = _KMeansRun.__new__(_KMeansRun)
    r.centroids = np.empty((k, d), np.float32)
    r.sums = np.empty((k, d), np.float32)
    r.weight = np.empty(k, np.float32)
    r.count = np.empty(k, np.uint32)
    r.labels = np.empty(n, np.int32)
    cdef const float *xp = _fptr(X)
    cdef const float *wp = NULL if w is None else _fptr(w)
    cdef float *cp = _fptr(r.centroids)
    cdef float *sp = _fptr(r.sums)
    cdef float *wtp = _fptr(r.weight)
    cdef uint32_t *np_ = <uint32_t *>cnp.PyArray_DATA(r.count)
    cdef int32_t *lp = <int32_t *>cnp.PyArray_DATA(r.labels)
    cdef float *wk = _fptr(work)
    cdef sona_kmeans_info info
    cdef int rc
    with nogil:
        rc = sona_kmeans_f32(xp, wp, n, d, kk, max_iter, trials, n_init, seed, cp, sp, wtp, np_,
                             lp, wk, &info)
    if rc != 0:
        raise ValueError("X has no non-zero row with a positive weight: nothing to cluster")
    r.inertia, r.n_iter, r.k_found = info.inertia, info.n_iter, info.k_found
    r.converged = info.converged != 0
    return r


def spherical_kmeans(X, k, weights=None, seed=0, max_iter=50, *, n_init=3,
                     n_local_trials=None):
    """Weighted spherical k-means: k-means++ seeding, then Lloyd iterations, in C (GIL released).

    Rows of X are compared by direction only (each is normalised; D² = 2 - 2 cos). Seeding is
    greedy k-means++: each seed is the best, by the resulting weighted potential, of
    n_local_trials rows drawn with probability ∝ weight × D² to the nearest seed so far
    (zero-weight rows are never seeds). Each centroid is the normalised weighted sum of its
    members. Iterations stop after max_iter or when no label changes. Of n_init such runs, the
    one with the lowest inertia is returned: a run that put two seeds in one cluster and none in
    another cannot recover, a restart can. The same seed, data and backend give the same result.

    Parameters
    ----------
    X : (n, d) array of real numbers (float32 is used as is; other real dtypes are copied), finite,
        C-contiguous. An all-zero row is assigned a cluster but carries no weight.
    k : int, 1 <= k <= n.
    weights : (n,) finite values >= 0 with a positive sum, or None (all ones).
    seed : int in 0..2**64-1.
    max_iter : int >= 0 (0: the k-means++ seeds' assignment only).
    n_init : int in 1..1000, runs to choose from (each costs a seeding plus its iterations).
    n_local_trials : int in 1..64, or None for 2 + floor(ln k) (as scikit-learn); 1 is plain
        k-means++. Seeding costs n_local_trials·n·k·d multiply-adds.

    Returns
    -------
    (centroids, labels, inertia): centroids (k, d) float32 unit rows (a row is zero when fewer than
    k distinct weighted directions exist and that cluster stayed empty), labels (n,) int64 in 0..k-1,
    inertia = Σ weight·(2 - 2 cos(x, its centroid)).

    Raises
    ------
    TypeError: X or weights not real numbers; k, seed or max_iter not integers.
    ValueError: wrong shape, empty X, NaN/Inf, non-contiguous input, k out of 1..n, negative or
    all-zero weights, no non-zero row with a positive weight, seed/max_iter/n_init/n_local_trials
    out of range.

    >>> import numpy as np, sona
    >>> X = np.array([[1, 0.1], [1, -0.1], [-0.1, 1], [0.1, 1]], np.float32)
    >>> c, labels, inertia = sona.spherical_kmeans(X, 2, seed=0)
    >>> len(set(labels[:2])), len(set(labels[2:])), labels[0] != labels[2]
    (1, 1, True)
    """
    cdef cnp.ndarray A = _as_f32(X, "X")
    if cnp.PyArray_NDIM(A) != 2:
        raise ValueError(f"X must be 2-D (n, d); got shape {_shape_str(A)}")
    cdef Py_ssize_t n = cnp.PyArray_DIM(A, 0), d = cnp.PyArray_DIM(A, 1)
    if n < 1 or d < 1:
        raise ValueError(f"X must have at least one row and one column; got shape {_shape_str(A)}")
    _check_finite(A, "X")
    cdef Py_ssize_t kk = <Py_ssize_t>_int_in(k, "k", 1, <uint64_t>n)
    cdef cnp.ndarray w = _kmeans_weights(weights, n)
    cdef uint64_t s = _int_in(seed, "seed", 0, 0xFFFFFFFFFFFFFFFF)
    cdef uint32_t it = <uint32_t>_int_in(max_iter, "max_iter", 0, 0xFFFFFFFF)
    cdef uint32_t trials = 0
    if n_local_trials is not None:
        trials = <uint32_t>_int_in(n_local_trials, "n_local_trials", 1, 64)
    cdef uint32_t runs = <uint32_t>_int_in(n_init, "n_init", 1, 1000)
    cdef _KMeansRun r = _kmeans_run(A, w, kk, it, trials, runs, s, None)
    return r.centroids, r.labels.astype(np.int64), float(r.inertia)
