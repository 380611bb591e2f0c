# The pattern bank's C state: arrays owned here, a sona_bank struct pointing at them.


cdef class PatternStore:
    """Pattern centroids with per-pattern baselines and per-route decayed reward statistics.

    The compiled core of sona.bank.ReasoningBank: online leader clustering happens in C on every
    routed feedback; this class owns the arrays (numpy, float32) and exposes read-only views.
    """
    cdef sona_bank b
    cdef readonly object centroid, centroid_sum, hits, route_n, route_s, baseline
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
