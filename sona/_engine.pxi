# The engine's hot path: trajectories in and out of the C store, and the instant loop.

cdef class EngineCore:
    """Compiled core of sona.SonaEngine (use that: it builds the parts from a SonaConfig).

    Holds the trajectory store (open table + ring), the two adapters, the pattern bank and the
    global reward baseline, and runs the instant loop: on every ended
    trajectory, one MicroLoRA step whose sign is the quality minus the running baseline kept
    across queries. The most recently ended trajectories stay available for late
    feedback through learn_from_feedback().
    """
    cdef readonly TrajectoryStore store
    cdef readonly LoRAAdapter micro
    cdef readonly LoRAAdapter base
    cdef readonly PatternStore bank
    cdef readonly double micro_lr
    cdef readonly unsigned long long n_seen, instant_updates, late_feedbacks, updates_skipped
    cdef float _global_baseline
    cdef object _recent_emb, _recent_ids, _recent_node, _work
    cdef Py_ssize_t _n_recent
    cdef dict _activations

    def __init__(self, LoRAAdapter micro not None, LoRAAdapter base not None,
                 PatternStore bank not None, TrajectoryStore store not None, double micro_lr,
                 Py_ssize_t late_feedback_window):
        if self.store is not None:  # routers share these parts: never swap them underneath
            raise RuntimeError(f"{type(self).__name__} is already initialised; create a new one")
        micro._ready()
        base._ready()
        bank._ready()
        store._check()
        cdef Py_ssize_t d = micro.dim
        if base.dim != d or bank.dim != d or store.buffer.dim != d:
            raise ValueError(f"adapters, bank and trajectory buffer must share dim={d}")
        if not (isfinite(micro_lr) and micro_lr > 0):
            raise ValueError(f"micro_lr must be a finite number > 0; got {micro_lr}")
        if late_feedback_window < 1:
            raise ValueError(f"late_feedback_window must be >= 1; got {late_feedback_window}")
        self.micro, self.base, self.bank, self.store = micro, base, bank, store
        self.micro_lr = micro_lr
        self._n_recent = late_feedback_window
        self._recent_emb = np.zeros((late_feedback_window, d), np.float32)
        self._recent_ids = np.zeros(late_feedback_window, np.uint64)
        self._recent_node = np.zeros(late_feedback_window, np.uint32)
        self._work = np.zeros(2 * d + bank.capacity, np.float32)
        self._global_baseline = 0.5
        self._activations = {}

    cdef int _ready(self) except -1:
        """Initialised, and the trajectory store (with its buffer) still open."""
        if self.store is None:
            raise RuntimeError(f"{type(self).__name__} was not initialised (its __init__ did "
                               "not run)")
        self.store._check()
        return 0

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} cannot be pickled; save it with "
                        "engine.save(path) and restore it with SonaEngine.load(path)")

    @property
    def global_baseline(self):
        """Running mean reward over all queries (the baseline of a new pattern)."""
        return float(self._global_baseline)

    def _counters(self):
        """Scalar learning state (for stats and state files)."""
        return {"global_baseline": float(self._global_baseline), "n_seen": int(self.n_seen),
                "instant_updates": int(self.instant_updates),
                "late_feedbacks": int(self.late_feedbacks),
                "updates_skipped": int(self.updates_skipped)}

    def _set_counters(self, dict c):
        """Restore what _counters() returned (state loading)."""
        self._global_baseline = c["global_baseline"]
        self.n_seen, self.instant_updates = c["n_seen"], c["instant_updates"]
        self.late_feedbacks, self.updates_skipped = c["late_feedbacks"], c["updates_skipped"]

    # -- trajectories ----------------------------------------------------------------------------
    def start_trajectory(self, query_embedding):
        """Open a trajectory for a query embedding (float32 (dim,), finite, |x_i| <= 1e6);
        returns its id. May evict the oldest open trajectory when max_open are open (counted)."""
        self._ready()
        cdef cnp.ndarray a = (<cnp.ndarray>query_embedding
                              if _is_f32_vector(query_embedding, self.micro.dim)
                              else _vector(query_embedding, self.micro.dim, "query_embedding"))
        _check_embedding(a, "query_embedding", self.store.buffer._limit)
        cdef uint64_t tid
        sona_store_start(self.store._s, _fptr(a), &tid)
        return tid

    def record_step(self, trajectory_id, node_id, score, latency_us, activations=None):
        """Append a step: the node (route/model/tool id, 0..2**32-1) that acted, its score, its
        latency in µs (>= 0) and optionally its activations (float32 (dim,)), which become the
        direction the instant loop pulls the adapted query towards (away from, for a quality
        below the baseline). Raises UnknownTrajectoryError (a KeyError and ValueError) for an id
        that is not open, ValueError for bad values or a full trajectory; state unchanged."""
        self._ready()
        cdef uint64_t tid = _as_u64(trajectory_id, "trajectory_id", _U64_MAX)
        cdef uint32_t node = <uint32_t>_as_u64(node_id, "node_id", 0xFFFFFFFF)
        cdef float s = _finite_f32(_real(score, "score"), "score")
        cdef float lat = _finite_f32(_real(latency_us, "latency_us"), "latency_us")
        if lat < 0:
            raise ValueError(f"latency_us must be >= 0; got {latency_us!r}")
        cdef cnp.ndarray act = None
        if activations is not None:
            act = _vector(activations, self.micro.dim, "activations")
        cdef int rc = sona_store_step(self.store._s, tid, node, s, lat, NAN)
        if rc != 0:
            self.store._fail(rc, tid)
        if act is not None:
            self._add_activations(tid, act)

    cdef _add_activations(self, uint64_t tid, cnp.ndarray act):
        entry = self._activations.get(tid)
        if entry is None:
            if len(self._activations) >= self.store.max_open:  # bounded: drop the oldest
                del self._activations[next(iter(self._activations))]
            self._activations[tid] = [act.astype(np.float32, copy=True), 1]
        else:
            entry[0] += act
            entry[1] += 1

    def end_trajectory(self, trajectory_id, quality):
        """Close a trajectory with its quality in [0, 1] and learn from it now (instant loop).

        Raises UnknownTrajectoryError for an id that is not open (never started, already ended,
        or evicted) and ValueError for a quality outside [0, 1]; nothing changes then."""
        self._ready()
        cdef uint64_t tid = _as_u64(trajectory_id, "trajectory_id", _U64_MAX)
        cdef float q = <float>_check_quality(quality)
        self._end_and_learn(tid, q)

    cdef _end_and_learn(self, uint64_t tid, float q):
        cdef Py_ssize_t slot = tid % self._n_recent
        cdef float *emb = _fptr(self._recent_emb) + slot * self.micro.dim
        cdef uint32_t node
        cdef int rc = sona_store_end_ex(self.store._s, tid, q, emb, &node)
        if rc < 0:
            self.store._fail(rc, tid)
        (<uint64_t *>cnp.PyArray_DATA(self._recent_ids))[slot] = tid
        (<uint32_t *>cnp.PyArray_DATA(self._recent_node))[slot] = node
        entry = self._activations.pop(tid, None) if self._activations else None
        self._learn(emb, q, node, None if entry is None else entry[0] / entry[1])

    def learn_from_feedback(self, signal):
        """Learn from a LearningSignal: about an open trajectory (it is ended with the signal's
        quality), a recently ended one (late feedback: its stored embedding is learnt from
        again), or a query embedding carried by the signal itself.

        Raises UnknownTrajectoryError for a trajectory id that is neither open nor still stored
        (never started, or ended too long ago), ValueError for a signal with neither a
        trajectory id nor an embedding; nothing changes then."""
        self._ready()
        if not hasattr(signal, "quality"):
            raise TypeError(f"signal must be a sona.LearningSignal; got {type(signal).__name__}")
        cdef float q = <float>_check_quality(signal.quality, "signal.quality")
        cdef uint64_t tid
        cdef Py_ssize_t slot
        cdef cnp.ndarray e
        if signal.trajectory_id is not None:
            tid = _as_u64(signal.trajectory_id, "trajectory_id", _U64_MAX)
            slot = tid % self._n_recent
            if tid != 0 and (<uint64_t *>cnp.PyArray_DATA(self._recent_ids))[slot] == tid:
                self._learn(_fptr(self._recent_emb) + slot * self.micro.dim, q,
                            (<uint32_t *>cnp.PyArray_DATA(self._recent_node))[slot], None)
                self.late_feedbacks += 1
                return
            self._end_and_learn(tid, q)  # open: end it now; otherwise this raises
            return
        if signal.query_embedding is None:
            raise ValueError("the signal names no trajectory_id and carries no query_embedding: "
                             "there is nothing to learn about")
        e = _vector(signal.query_embedding, self.micro.dim, "query_embedding")
        _check_embedding(e, "query_embedding", _MAX_EMBEDDING_ABS)
        self._learn(_fptr(e), q, 0xFFFFFFFF, None)

    cdef _learn(self, const float *x, float q, uint32_t node, object target):
        """The instant loop for one outcome: a MicroLoRA step of size ∝ q − baseline."""
        cdef size_t d = self.micro.dim
        cdef float *t = _fptr(self._work)
        cdef float *xhat = t + d
        cdef float *scan = xhat + d
        sona_unit(x, d, xhat)
        cdef int32_t j = sona_bank_match(&self.bank.b, xhat, scan)
        j = sona_bank_claim(&self.bank.b, j, xhat, self._global_baseline, scan)
        # The baseline is the running reward over ALL queries: without a choice of action, what
        # an outcome says is whether this kind of query goes better or worse than queries in
        # general; a per-pattern baseline would cancel exactly that. (The router, which does
        # choose, uses per-pattern baselines: there the signal is which route did better.)
        cdef float adv = q - self._global_baseline
        cdef cnp.ndarray tgt
        if target is None:
            t = xhat  # the query's own direction
        else:
            tgt = np.ascontiguousarray(target, np.float32)
            sona_unit(_fptr(tgt), d, t)
        # loss gradient at y is -adv·t: descending it moves y = x + B A x towards t for a quality
        # above the baseline and away from it below; adv = 0 gives an exactly zero step. The
        # adapter sees x as apply_micro_lora() will (no centring: that is the router's business).
        if self.micro._outer_step(x, t, -adv, self.micro_lr):
            self.instant_updates += 1
        else:
            self.updates_skipped += 1
        sona_bank_observe(&self.bank.b, j, xhat, <int32_t>node if node < self.bank.b.n_routes else -1,
                          q, 1)
        self._global_baseline += 0.01 * (q - self._global_baseline)
        self.n_seen += 1
        global _state_epoch
        _state_epoch += 1

    # -- adapters --------------------------------------------------------------------------------
    def apply_micro_lora(self, x, out=None):
        """x through MicroLoRA: y = x + s·B(A x); (dim,) or (n, dim), out= supported."""
        return _lora_forward(self.micro, x, out)

    def apply_base_lora(self, x, out=None):
        """x through BaseLoRA: y = x + s·B(A x); (dim,) or (n, dim), out= supported."""
        return _lora_forward(self.base, x, out)

    def apply_lora(self, x, out=None):
        """x through both tiers: y = x + s_m B_m A_m x + s_b B_b A_b x (out= supported, and may
        be x itself)."""
        cdef cnp.ndarray v = _vector_or_rows(x, self.micro.dim, "x")
        cdef size_t n = 1 if cnp.PyArray_NDIM(v) == 1 else cnp.PyArray_DIM(v, 0)
        cdef size_t d = self.micro.dim, r = self.base.rank, row, k
        # the base tier's projections first: the micro pass may overwrite x (out=x)
        cdef cnp.ndarray ub = np.empty(n * r, np.float32)
        cdef float *pu = _fptr(ub)
        for row in range(n):
            sona_dot_rows_f32(self.base.pA, r, d, _fptr(v) + row * d, pu + row * r)
        cdef cnp.ndarray yy = <cnp.ndarray>_lora_forward(self.micro, v, out)
        for row in range(n):
            for k in range(r):
                sona_axpy_f32(d, self.base.scale * pu[row * r + k], self.base.pBt + k * d,
                              _fptr(yy) + row * d)
        _check_result(yy, "x")
        return yy

