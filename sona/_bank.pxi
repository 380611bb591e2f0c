# The pattern bank's C state: arrays owned here, a sona_bank struct pointing at them.
from libc.math cimport sqrtf

# Refinement checks every pair of patterns for duplicates up to this many patterns (O(n² dim)
# dot products: ~60 µs at 100 x 256), above it only the patterns the cycle created or updated.
cdef enum:
    _DEDUPE_ALL_PAIRS_MAX = 128


cdef class Pattern:
    """A stored query pattern, as returned by query_patterns().

    id: its index in the bank; quality: the pattern's reward baseline; usage_count: how often
    queries returned it; cluster_size: how many queries joined it; score: its cosine to the query;
    best_route: the route with the best decayed mean reward among those tried, or None (all
    snapshots taken when it was returned). centroid (unit vector, float32) and route_stats
    (float32 (n_routes, 2): decayed count and decayed mean reward per route) are copied from the
    bank when first read.
    """
    cdef readonly Py_ssize_t id
    cdef readonly object best_route
    cdef readonly double quality, cluster_size, score
    cdef readonly unsigned long long usage_count
    cdef PatternStore _store
    cdef object _centroid, _route_stats

    cdef int _check(self) except -1:
        if self._store is None:
            raise ValueError("this Pattern was not returned by query_patterns(): it refers to no "
                             "pattern bank")
        return 0

    @property
    def centroid(self):
        self._check()
        if self._centroid is None:
            self._centroid = np.array(self._store.centroid[self.id])
        return self._centroid

    @property
    def route_stats(self):
        self._check()
        if self._route_stats is None:
            n = self._store.route_n[self.id]
            s = self._store.route_s[self.id]
            mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
            self._route_stats = np.stack([n, mean], axis=1).astype(np.float32)
        return self._route_stats

    def __repr__(self):
        return (f"Pattern(id={self.id}, quality={self.quality:.3f}, "
                f"cluster_size={self.cluster_size:g}, usage_count={self.usage_count}, "
                f"best_route={self.best_route})")


cdef class PatternStore:
    """Pattern centroids with per-pattern baselines and per-route decayed reward statistics.

    The compiled core of sona.bank.ReasoningBank: online leader clustering happens in C on every
    routed feedback; this class owns the arrays (numpy, float32) and exposes read-only views.
    Every parameter is given (sona.bank.new_bank passes sona.params' defaults): no second copy
    of the defaults lives here.
    """
    #: The per-pattern, per-route arrays (capacity x n_routes; csrc/bank.c keeps the same list)
    ROUTE_ARRAYS = ("route_n", "route_s", "route_cn", "route_c")

    cdef sona_bank b
    cdef readonly object centroid, centroid_sum, hits, route_n, route_s, route_cn, route_c
    cdef readonly object baseline, usage
    cdef float[::1] _scan
    cdef object _touched, _refine_scratch, _km_work
    cdef bint _refining

    def __init__(self, dim, n_routes, capacity, new_cos, decay, prior_count, baseline_rate):
        if self.b.centroid != NULL:  # routers and engines point at this bank: never reallocate
            raise RuntimeError("PatternStore is already initialised; create a new one")
        cdef Py_ssize_t nd = <Py_ssize_t>_int_in(dim, "dim", 1, SONA_RING_MAX_DIM)
        cdef Py_ssize_t nr = <Py_ssize_t>_int_in(n_routes, "n_routes", 0, SONA_MAX_ROUTES)
        cdef Py_ssize_t cap = <Py_ssize_t>_int_in(capacity, "capacity", 1, SONA_STORE_MAX_OPEN)
        new_cos, decay = _real(new_cos, "new_pattern_cos"), _real(decay, "decay")
        prior_count = _real(prior_count, "prior_count")
        baseline_rate = _real(baseline_rate, "baseline_rate")
        if not (-1.0 <= new_cos <= 1.0 and 0.0 < decay <= 1.0 and 0 < prior_count <= 1e6
                and 0.0 < baseline_rate <= 1.0):
            raise ValueError("need new_pattern_cos in [-1, 1], decay in (0, 1], prior_count in "
                             "(0, 1e6] and baseline_rate in (0, 1]; got "
                             f"{new_cos}, {decay}, {prior_count}, {baseline_rate}")
        self.centroid = np.zeros((cap, nd), np.float32)
        self.centroid_sum = np.zeros((cap, nd), np.float32)
        self.hits = np.zeros(cap, np.float32)
        self.route_n = np.zeros((cap, max(nr, 1)), np.float32)
        self.route_s = np.zeros((cap, max(nr, 1)), np.float32)
        self.route_cn = np.zeros((cap, max(nr, 1)), np.float32)
        self.route_c = np.zeros((cap, max(nr, 1)), np.float32)
        self.baseline = np.zeros(cap, np.float32)
        self.usage = np.zeros(cap, np.uint64)
        self._scan = np.zeros(cap, np.float32)
        self._touched = np.zeros(cap, np.uint8)
        self._refine_scratch = np.zeros(cap + nd, np.float32)
        self._km_work = None
        self.b.dim, self.b.n_routes, self.b.capacity, self.b.n_patterns = nd, nr, cap, 0
        self.b.new_cos, self.b.decay = new_cos, decay
        self.b.prior_count, self.b.baseline_rate = prior_count, baseline_rate
        self.b.centroid = _fptr(self.centroid)
        self.b.centroid_sum = _fptr(self.centroid_sum)
        self.b.hits = _fptr(self.hits)
        self.b.route_n = _fptr(self.route_n)
        self.b.route_s = _fptr(self.route_s)
        self.b.route_cn = _fptr(self.route_cn)
        self.b.route_c = _fptr(self.route_c)
        self.b.baseline = _fptr(self.baseline)

    cdef int _ready(self) except -1:
        if self.b.centroid == NULL:
            raise RuntimeError("PatternStore was not initialised (its __init__ did not run)")
        return 0

    def __reduce__(self):
        raise TypeError("a PatternStore cannot be pickled; save the engine or router that owns "
                        "it")

    @property
    def dim(self):
        return self.b.dim

    @property
    def n_routes(self):
        return self.b.n_routes

    @property
    def capacity(self):
        return self.b.capacity

    @property
    def n_patterns(self):
        return self.b.n_patterns

    @property
    def params(self):
        """The clustering and statistics parameters, as given to the constructor."""
        return {"new_pattern_cos": float(self.b.new_cos), "decay": float(self.b.decay),
                "prior_count": float(self.b.prior_count),
                "baseline_rate": float(self.b.baseline_rate)}

    def _set_n_patterns(self, Py_ssize_t n):
        """Used by state loading and background refinement after they rewrote the arrays."""
        self._ready()
        if not 0 <= n <= self.b.capacity:
            raise ValueError(f"n_patterns must be in 0..{self.b.capacity}; got {n}")
        self.b.n_patterns = n
        global _state_epoch
        _state_epoch += 1

    def _grow_routes(self, Py_ssize_t n):
        """Track n routes, more than now (sona.Router.add_route): the ROUTE_ARRAYS gain zero
        columns, the others' values copied. Routers and engines hold the sona_bank struct, which
        now points at the new arrays; views of the old arrays taken before stay stale."""
        self._ready()
        cdef Py_ssize_t old = self.b.n_routes
        if not old < n <= SONA_MAX_ROUTES:
            raise ValueError(f"n must be in {old + 1}..{SONA_MAX_ROUTES}; got {n}")
        grown = {}
        for name in self.ROUTE_ARRAYS:
            g = grown[name] = np.zeros((self.b.capacity, n), np.float32)
            g[:, :old] = getattr(self, name)[:, :old]
        self.route_n, self.route_s = grown["route_n"], grown["route_s"]
        self.route_cn, self.route_c = grown["route_cn"], grown["route_c"]
        self.b.route_n, self.b.route_s = _fptr(self.route_n), _fptr(self.route_s)
        self.b.route_cn, self.b.route_c = _fptr(self.route_cn), _fptr(self.route_c)
        self.b.n_routes = n
        global _state_epoch
        _state_epoch += 1

    def nearest(self, x):
        """(index, cosine) of the pattern nearest to x, or (-1, -inf) when the bank is empty."""
        self._ready()
        cdef cnp.ndarray v = _vector(x, self.b.dim, "x")
        cdef cnp.ndarray xhat = np.empty(self.b.dim, np.float32)
        cdef float cos
        sona_unit(_fptr(v), self.b.dim, _fptr(xhat))
        cdef int j = sona_bank_nearest(&self.b, _fptr(xhat), &self._scan[0], &cos)
        return j, float(cos)

    def query(self, x, k=5):
        """The k stored patterns most similar (cosine) to x, most similar first, as Pattern
        objects; counts one use of each. Fewer than k when fewer are stored."""
        self._ready()
        cdef cnp.ndarray v = _vector(x, self.b.dim, "x")
        cdef size_t n = self.b.n_patterns, d = self.b.dim, R = self.b.n_routes
        cdef size_t kk = <size_t>min(_int_in(k, "k", 0, _U64_MAX), <uint64_t>n)
        cdef int64_t small_idx[64]
        cdef int64_t *idx = small_idx
        cdef object big = None
        if kk > 64:
            big = np.empty(kk, np.int64)
            idx = <int64_t *>cnp.PyArray_DATA(big)
        # centroids are unit rows: cosine = dot / |x|, and the ranking needs only the dot
        sona_dot_rows_f32(self.b.centroid, n, d, _fptr(v), &self._scan[0])
        sona_topk_f32(&self._scan[0], n, kk, idx, NULL)
        cdef float xn = sqrtf(sona_dot_f32(_fptr(v), _fptr(v), d))
        cdef float inv = 1.0 / xn if xn > 0 else 0.0
        cdef list out = []
        cdef Pattern p
        cdef Py_ssize_t i, j, r
        cdef float *rn
        cdef float *rs
        cdef double best_mean, mean
        cdef unsigned long long *usage = <unsigned long long *>cnp.PyArray_DATA(self.usage)
        for i in range(kk):
            j = idx[i]
            p = Pattern.__new__(Pattern)
            p._store, p.id, p.score = self, j, self._scan[j] * inv
            p.quality, p.cluster_size = self.b.baseline[j], self.b.hits[j]
            usage[j] += 1
            p.usage_count = usage[j]
            rn, rs = self.b.route_n + j * R, self.b.route_s + j * R
            p.best_route = None
            best_mean = -1.0
            for r in range(R):
                if rn[r] > 0:
                    mean = rs[r] / rn[r]
                    if mean > best_mean:
                        best_mean, p.best_route = mean, r
            out.append(p)
        return out

    def refine(self, embeddings, qualities, k, *, seed=0, max_iter=50, merge_cos=0.9,
               quality_threshold=0.0, max_points=0, n_local_trials=1):
        """Background refinement of the bank from a batch of queries and their qualities.

        (a) Weighted spherical k-means (k = min(k, n) clusters; weight = quality, 0 below
        quality_threshold) over the queries -- or, when max_points > 0 and there are more, over a
        uniform sample of max_points of them whose cluster sums and sizes are scaled by
        n / max_points, which bounds a cycle's cost whatever the batch size -- in C with the GIL
        released; (b) each cluster either
        updates the pattern it matches (its members' weighted mean cosine to the pattern reaches
        new_pattern_cos, the online test for one query: its weighted sum is added to the
        pattern's centroid_sum; route statistics, baseline and hits stay the online path's)
        or becomes a new pattern (hits = members, baseline = their mean quality); (d) when the
        bank is full, the pattern with the lowest hits x baseline among those no cluster reached
        this time is replaced; (c) patterns whose cosine reaches merge_cos are merged (counts and
        sums add up, the baseline is hits-weighted), keeping indices 0..n_patterns-1 compact.
        Steps (b)-(d) hold the GIL: the router reads the bank under it. Pattern indices held
        by pending router decisions may now name another pattern (or none: see csrc/bank.h).

        Returns a dict: clustered (queries with positive weight, all represented; 0 means no
        k-means ran), sampled (points k-means saw), clusters (non-empty seeds found), created,
        updated, merged, pruned, n_iter, inertia (of the sample).
        Raises TypeError/ValueError for bad input (nothing changed), RuntimeError when another
        thread is refining this bank.
        """
        self._ready()
        cdef cnp.ndarray X = _as_f32(embeddings, "embeddings")
        if cnp.PyArray_NDIM(X) != 2 or cnp.PyArray_DIM(X, 1) != self.b.dim:
            raise ValueError(f"embeddings must have shape (n, {self.b.dim}); got {_shape_str(X)}")
        _check_finite(X, "embeddings")
        cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0)
        cdef cnp.ndarray q = _vector(qualities, n, "qualities")
        if n and not (0.0 <= float(np.min(q)) and float(np.max(q)) <= 1.0):
            raise ValueError(f"qualities must be in [0, 1]; got values in "
                             f"[{float(np.min(q))}, {float(np.max(q))}]")
        cdef Py_ssize_t kk = <Py_ssize_t>_int_in(k, "k", 1, 0xFFFFFFFF)
        cdef Py_ssize_t m = <Py_ssize_t>_int_in(max_points, "max_points", 0, 0xFFFFFFFF)
        cdef uint32_t trials = <uint32_t>_int_in(n_local_trials, "n_local_trials", 1, 64)
        cdef uint64_t s = _int_in(seed, "seed", 0, 0xFFFFFFFFFFFFFFFF)
        cdef uint32_t it = <uint32_t>_int_in(max_iter, "max_iter", 0, 0xFFFFFFFF)
        if not -1.0 <= merge_cos <= 1.0:
            raise ValueError(f"merge_cos must be in [-1, 1]; got {merge_cos}")
        if not 0.0 <= quality_threshold <= 1.0:
            raise ValueError(f"quality_threshold must be in [0, 1]; got {quality_threshold}")
        if self._refining:
            raise RuntimeError("another thread is refining this PatternStore")
        out = {"clustered": 0, "sampled": 0, "clusters": 0, "created": 0, "updated": 0, "merged": 0,
               "pruned": 0, "n_iter": 0, "inertia": 0.0}
        w = np.where(q >= quality_threshold, q, np.float32(0)).astype(np.float32)
        cdef Py_ssize_t positive = int(np.count_nonzero(w))
        if positive == 0:
            return out
        scale = 1.0
        if 0 < m < n:
            pick = np.sort(np.random.default_rng(s).choice(n, m, replace=False))
            X, q, w = np.ascontiguousarray(X[pick]), q[pick], w[pick]
            scale, n = <double>n / m, m
            if not w.any():
                return out
        kk = min(kk, n)
        cdef _KMeansRun r
        self._refining = True
        try:
            need = sona_kmeans_work_floats(n, kk, self.b.dim, trials, 1)
            if self._km_work is None or self._km_work.shape[0] < need:
                self._km_work = np.empty(need, np.float32)
            r = _kmeans_run(X, w, kk, it, trials, 1, s, self._km_work)
        except ValueError:  # every row with weight is the zero vector
            return out
        finally:
            self._refining = False
        count, sums, weight = r.count, r.sums, r.weight
        mean_q = (np.bincount(r.labels, weights=q, minlength=kk)
                  / np.maximum(count, 1)).astype(np.float32)
        if scale != 1.0:  # the sample stands for the whole batch
            sums = (sums * np.float32(scale)).astype(np.float32)
            weight = (weight * np.float32(scale)).astype(np.float32)
            count = np.round(count * scale).astype(np.uint32)
        cdef sona_bank_refine_stats st
        st.created = st.updated = st.merged = st.pruned = 0
        cdef uint64_t *usage = <uint64_t *>cnp.PyArray_DATA(self.usage)
        cdef uint8_t *touched = <uint8_t *>cnp.PyArray_DATA(self._touched)
        cdef float *scratch = _fptr(self._refine_scratch)
        self._touched[:] = 0
        sona_bank_absorb(&self.b, _fptr(sums), _fptr(weight),
                         <uint32_t *>cnp.PyArray_DATA(count), _fptr(mean_q), <size_t>kk, usage,
                         touched, scratch, &st)
        sona_bank_dedupe(&self.b, <float>merge_cos, self.b.n_patterns <= _DEDUPE_ALL_PAIRS_MAX,
                         usage, touched, scratch, &st)
        global _state_epoch
        _state_epoch += 1
        out.update(clustered=positive, sampled=n, clusters=int(r.k_found), created=st.created,
                   updated=st.updated, merged=st.merged, pruned=st.pruned, n_iter=r.n_iter,
                   inertia=r.inertia)
        return out
