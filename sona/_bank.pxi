# The pattern bank's C state: arrays owned here, a sona_bank struct pointing at them.


cdef class Pattern:
    """A stored query pattern (a snapshot taken when it was returned).

    id: its index in the bank; centroid: unit vector (float32); quality: the pattern's reward
    baseline; usage_count: how often queries returned it; cluster_size: how many queries joined it;
    route_stats: float32 (n_routes, 2) of (decayed count, decayed mean reward) per route;
    best_route: index of the route with the best decayed mean among those tried, or None.
    """
    cdef readonly Py_ssize_t id
    cdef readonly object centroid, route_stats, best_route
    cdef readonly double quality, cluster_size, score
    cdef readonly unsigned long long usage_count

    def __repr__(self):
        return (f"Pattern(id={self.id}, quality={self.quality:.3f}, cluster_size={self.cluster_size:g}, "
                f"usage_count={self.usage_count}, best_route={self.best_route})")


cdef class PatternStore:
    """Pattern centroids with per-pattern baselines and per-route decayed reward statistics.

    The compiled core of sona.bank.ReasoningBank: online leader clustering happens in C on every
    routed feedback; this class owns the arrays (numpy, float32) and exposes read-only views.
    """
    cdef sona_bank b
    cdef readonly object centroid, centroid_sum, hits, route_n, route_s, baseline, usage
    cdef float[::1] _scan

    def __init__(self, Py_ssize_t dim, Py_ssize_t n_routes, Py_ssize_t capacity, double new_cos=0.45,
                 double decay=0.995, double prior_count=1.0, double baseline_rate=0.05):
        if dim < 1 or capacity < 1 or n_routes < 0 or n_routes > SONA_MAX_ROUTES:
            raise ValueError(f"need dim >= 1, capacity >= 1 and 0 <= n_routes <= {SONA_MAX_ROUTES}; "
                             f"got dim={dim}, capacity={capacity}, n_routes={n_routes}")
        if not (-1.0 <= new_cos <= 1.0 and 0.0 < decay <= 1.0 and prior_count > 0
                and 0.0 < baseline_rate <= 1.0):
            raise ValueError("need new_cos in [-1, 1], decay in (0, 1], prior_count > 0 and "
                             "baseline_rate in (0, 1]")
        self.centroid = np.zeros((capacity, dim), np.float32)
        self.centroid_sum = np.zeros((capacity, dim), np.float32)
        self.hits = np.zeros(capacity, np.float32)
        self.route_n = np.zeros((capacity, max(n_routes, 1)), np.float32)
        self.route_s = np.zeros((capacity, max(n_routes, 1)), np.float32)
        self.baseline = np.zeros(capacity, np.float32)
        self.usage = np.zeros(capacity, np.uint64)
        self._scan = np.zeros(capacity, np.float32)
        self.b.dim, self.b.n_routes, self.b.capacity, self.b.n_patterns = dim, n_routes, capacity, 0
        self.b.new_cos, self.b.decay = new_cos, decay
        self.b.prior_count, self.b.baseline_rate = prior_count, baseline_rate
        self.b.centroid = _fptr(self.centroid)
        self.b.centroid_sum = _fptr(self.centroid_sum)
        self.b.hits = _fptr(self.hits)
        self.b.route_n = _fptr(self.route_n)
        self.b.route_s = _fptr(self.route_s)
        self.b.baseline = _fptr(self.baseline)

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
        if not 0 <= n <= self.b.capacity:
            raise ValueError(f"n_patterns must be in 0..{self.b.capacity}; got {n}")
        self.b.n_patterns = n

    def nearest(self, x):
        """(index, cosine) of the pattern nearest to x, or (-1, -inf) when the bank is empty."""
        cdef cnp.ndarray v = _vector(x, self.b.dim, "x")
        cdef cnp.ndarray xhat = np.empty(self.b.dim, np.float32)
        cdef float cos
        sona_unit(_fptr(v), self.b.dim, _fptr(xhat))
        cdef int j = sona_bank_nearest(&self.b, _fptr(xhat), &self._scan[0], &cos)
        return j, float(cos)

    def query(self, x, Py_ssize_t k=5):
        """The k stored patterns most similar (cosine) to x, most similar first, as Pattern
        snapshots; counts one use of each. Fewer than k when fewer are stored."""
        cdef cnp.ndarray v = _vector(x, self.b.dim, "x")
        if k < 0:
            raise ValueError(f"k must be >= 0; got {k}")
        cdef size_t n = self.b.n_patterns, d = self.b.dim, R = self.b.n_routes
        cdef cnp.npy_intp kk = min(<size_t>k, n)
        cdef int64_t idx[64]
        cdef float val[64]
        cdef int64_t *pidx = idx
        cdef float *pval = val
        cdef object big_i = None, big_v = None
        if kk > 64:
            big_i = np.empty(kk, np.int64)
            big_v = np.empty(kk, np.float32)
            pidx = <int64_t *>cnp.PyArray_DATA(big_i)
            pval = _fptr(big_v)
        sona_cosine_rows_f32(self.b.centroid, n, d, _fptr(v), NULL, &self._scan[0])
        sona_topk_f32(&self._scan[0], n, kk, pidx, pval)
        cdef list out = []
        cdef Pattern p
        cdef Py_ssize_t i, j, r
        cdef cnp.npy_intp dims[2]
        cdef float *stats
        cdef float *rn
        cdef float *rs
        cdef double best_mean
        cdef unsigned long long *usage = <unsigned long long *>cnp.PyArray_DATA(self.usage)
        cdef cnp.npy_intp dd = d
        dims[0], dims[1] = R, 2
        for i in range(kk):
            j = pidx[i]
            p = Pattern.__new__(Pattern)
            p.id, p.score = j, pval[i]
            p.centroid = cnp.PyArray_EMPTY(1, &dd, cnp.NPY_FLOAT32, 0)
            memcpy(_fptr(p.centroid), self.b.centroid + j * d, d * sizeof(float))
            p.quality, p.cluster_size = self.b.baseline[j], self.b.hits[j]
            usage[j] += 1
            p.usage_count = usage[j]
            p.route_stats = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
            stats = _fptr(p.route_stats)
            rn, rs = self.b.route_n + j * R, self.b.route_s + j * R
            p.best_route = None
            best_mean = -1.0
            for r in range(R):
                stats[2 * r] = rn[r]
                stats[2 * r + 1] = rs[r] / rn[r] if rn[r] > 0 else 0.0
                if rn[r] > 0 and stats[2 * r + 1] > best_mean:
                    best_mean, p.best_route = stats[2 * r + 1], r
            out.append(p)
        return out
