# The router policy's C state and its hot paths: route, feedback, scores.
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc


# Not no_gc: a Decision refers to its router, and a router that keeps decisions (a dict of
# pending ones) would otherwise form a cycle the collector cannot see.
@cython.freelist(64)
cdef class Decision:
    """One routing decision: the route taken and what is needed to learn from its outcome.

    Attributes: route (name), index, probs (the policy's probabilities when it decided, float32),
    trajectory_id (the engine trajectory recording it, or None). Pass it back to
    Router.feedback(decision, quality) exactly once.
    """
    cdef readonly str route
    cdef readonly Py_ssize_t index
    cdef readonly object trajectory_id
    cdef sona_policy_ctx ctx
    cdef Py_ssize_t n_routes
    cdef object owner
    cdef bint done
    cdef Py_ssize_t _probs_at  # where the probabilities start in ctx.buf

    def __dealloc__(self):
        PyMem_Free(self.ctx.buf)

    @property
    def probs(self):
        if self.ctx.buf == NULL:
            raise ValueError("this Decision was not made by Router.route(): it holds no "
                             "probabilities")
        cdef cnp.npy_intp k = self.n_routes
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &k, cnp.NPY_FLOAT32, 0)
        memcpy(_fptr(out), self.ctx.buf + self._probs_at, k * sizeof(float))
        return out

    @property
    def pattern(self):
        """Index of the stored pattern the query matched when routed, or -1 (a new kind of query)."""
        return self.ctx.pattern

    @property
    def consumed(self):
        """True once feedback was given."""
        return bool(self.done)

    def __reduce__(self):
        raise TypeError("a Decision belongs to the live router that made it and cannot be "
                        "pickled; give feedback in this process")

    def __repr__(self):
        return (f"Decision(route={self.route!r}, index={self.index}, "
                f"trajectory_id={self.trajectory_id})")


cdef class RouterCore:
    """Compiled core of sona.Router (use that: it builds the adapters, bank and hyper-parameters)."""
    cdef sona_policy p
    cdef readonly object keys, bias, rms, fisher, anchor, fisher_ckpt, omega, omega_theta, mu
    cdef object _work
    cdef LoRAAdapter _micro
    cdef LoRAAdapter _base
    cdef PatternStore _bank
    cdef readonly tuple routes
    cdef TrajectoryStore _store
    cdef size_t _ctx_floats
    cdef readonly unsigned long long decisions, feedbacks, trajectories_lost

    def __init__(self, tuple routes, LoRAAdapter micro, LoRAAdapter base, PatternStore bank, keys,
                 dict hp, unsigned long long seed, TrajectoryStore store=None):
        if self.p.dim != 0:  # decisions and the engine point into this router's C state
            raise RuntimeError(f"{type(self).__name__} is already initialised; create a new one")
        if micro is None or base is None or bank is None:
            raise TypeError("micro, base and bank must be a LoRAAdapter, a LoRAAdapter and a "
                            "PatternStore")
        micro._ready()
        base._ready()
        bank._ready()
        cdef Py_ssize_t K = len(routes), d = micro.dim
        if not 2 <= K <= SONA_MAX_ROUTES:
            raise ValueError(f"a router needs 2..{SONA_MAX_ROUTES} routes; got {K}")
        if base.dim != d or bank.dim != d or bank.n_routes < K:
            raise ValueError(f"adapters and bank must share dim={d} and the bank must track at "
                             f"least {K} routes; got base dim {base.dim}, bank dim {bank.dim}, "
                             f"bank routes {bank.n_routes}")
        self.routes, self._micro, self._base, self._bank = routes, micro, base, bank
        if store is not None and store.buffer.dim != d:
            raise ValueError(f"the trajectory store holds dim {store.buffer.dim}, not {d}")
        self._store = store
        self.keys = np.array(_as_f32(keys, "keys"), copy=True)
        if (<object>self.keys).shape != (K, d):
            raise ValueError(f"keys must have shape ({K}, {d}); got {self.keys.shape}")
        _check_finite(self.keys, "keys")
        cdef size_t n = sona_policy_n_params(d, K, micro.rank, base.rank)
        self.bias = np.zeros(K, np.float32)
        self.rms = np.zeros(sona_policy_n_rows(K, micro.rank, base.rank), np.float32)
        self.fisher = np.zeros(n, np.float32)
        self.anchor = np.zeros(n, np.float32)
        self.fisher_ckpt = np.zeros(n, np.float32)
        self.omega = np.zeros(n, np.float32)
        self.omega_theta = np.zeros(n, np.float32)
        self.mu = np.zeros(d, np.float32)
        self._work = np.zeros(sona_policy_work_floats(d, K, bank.capacity), np.float32)
        self._ctx_floats = sona_policy_ctx_floats(d, K, micro.rank, base.rank)
        memset(&self.p, 0, sizeof(sona_policy))
        self.p.dim, self.p.n_routes, self.p.micro_rank, self.p.base_rank = d, K, micro.rank, base.rank
        self.p.A_micro, self.p.Bt_micro = micro.pA, micro.pBt
        self.p.A_base, self.p.Bt_base = base.pA, base.pBt
        self.p.keys, self.p.bias = _fptr(self.keys), _fptr(self.bias)
        self.p.rms, self.p.fisher, self.p.anchor = _fptr(self.rms), _fptr(self.fisher), _fptr(self.anchor)
        self.p.fisher_ckpt, self.p.omega = _fptr(self.fisher_ckpt), _fptr(self.omega)
        self.p.omega_theta = _fptr(self.omega_theta)
        self.p.mu, self.p.work = _fptr(self.mu), _fptr(self._work)
        self.p.bank = &bank.b
        self.p.global_baseline = self.p.reward_short = self.p.reward_long = 0.5
        self._set_hp(hp)
        sona_pcg32_seed(&self.p.rng, seed, 2)

    cdef _set_hp(self, dict hp):
        cdef sona_policy_hp *h = &self.p.hp
        h.micro_scale, h.base_scale = self._micro.scale, self._base.scale
        h.tau, h.tau_prior, h.ts_scale = hp["tau"], hp["tau_prior"], hp["ts_scale"]
        h.explore, h.adv_clip = hp["explore"], hp["adv_clip"]
        h.lr, h.rms_decay, h.rms_eps = hp["lr"], hp["rms_decay"], hp["rms_eps"]
        h.weight_clip, h.global_rate = hp["weight_clip"], hp["global_rate"]
        h.ewc_alpha, h.ewc_lambda, h.ewc_margin = hp["ewc_alpha"], hp["ewc_lambda"], hp["ewc_margin"]
        h.ewc_memory, h.ewc_novelty = hp["ewc_memory"], hp["ewc_novelty"]
        h.mean_window, h.ewc_every = hp["mean_window"], hp["ewc_every"]
        h.fisher_every = hp["fisher_every"]
        h.use_micro, h.use_base, h.use_prior = hp["use_micro"], hp["use_base"], hp["use_prior"]
        h.learn_keys, h.learn_bias = hp["learn_keys"], hp["learn_bias"]
        h.unit_keys, h.ewc = hp["unit_keys"], hp["ewc"]

    def route(self, x):
        """Choose a route for the query embedding x (float32 (dim,), |x_i| <= 1e6); returns a
        Decision.

        Samples from the policy (Thompson draw in the pattern prior, plus `explore`), so repeated
        calls may differ; use scores() for the greedy view. Raises ValueError/TypeError for a bad
        embedding, changing nothing.
        """
        self._ready()
        cdef cnp.ndarray v = (<cnp.ndarray>x if _is_f32_vector(x, self.p.dim)
                              else _as_f32(x, "x"))
        if cnp.PyArray_NDIM(v) != 1 or cnp.PyArray_DIM(v, 0) != self.p.dim:
            raise ValueError(f"x must have shape ({self.p.dim},); got {_shape_str(v)}")
        _check_embedding(v, "x", INFINITY if self._store is None else self._store.buffer._limit)
        cdef Decision dec = Decision.__new__(Decision)
        dec.ctx.buf = <float *>PyMem_Malloc(self._ctx_floats * sizeof(float))
        if dec.ctx.buf == NULL:
            raise MemoryError()
        cdef uint32_t a = sona_policy_route(&self.p, _fptr(v), &dec.ctx)
        cdef uint64_t tid = 0
        if self._store is not None:  # the decision is a trajectory of the engine: one step
            sona_store_start(self._store._s, _fptr(v), &tid)
            sona_store_step(self._store._s, tid, a, dec.ctx.buf[3 * self.p.dim + a], 0.0, NAN)
            dec.trajectory_id = tid
        dec.index = a
        dec.route = self.routes[a]
        dec.n_routes = self.p.n_routes
        dec._probs_at = 3 * self.p.dim
        dec.owner = self
        self.decisions += 1
        return dec

    def feedback(self, Decision decision, quality):
        """Learn from the outcome of one decision: quality in [0, 1] (1 = best possible).

        Raises ValueError for a quality outside [0, 1], a decision already given feedback, or one
        made by another router; nothing changes then.
        """
        if decision is None:
            raise TypeError("decision must be a Decision returned by route()")
        if decision.owner is not self or decision.ctx.buf == NULL:
            raise ValueError("this decision was made by another router")
        cdef double q = _check_quality(quality)
        if self._store is not None:
            self._store._check()
        if decision.done:
            raise ValueError(f"feedback was already given for this decision (route "
                             f"{decision.route!r}, trajectory {decision.trajectory_id})")
        sona_policy_feedback(&self.p, &decision.ctx, decision.ctx.action, <float>q)
        if decision.trajectory_id is not None:
            # the record goes to the ring for the background loop; an evicted trajectory (too
            # many decisions pending) loses only that record: the decision carries what the
            # policy needs, so it still learns
            if sona_store_end(self._store._s, decision.trajectory_id, <float>q) < 0:
                self.trajectories_lost += 1
        decision.done = True
        self.feedbacks += 1

    def scores(self, x, out=None):
        """Greedy route probabilities for x (float32 (n_routes,)); no side effects, no exploration."""
        self._ready()
        cdef cnp.ndarray v = _vector(x, self.p.dim, "x")
        _check_embedding(v, "x", INFINITY)
        cdef cnp.npy_intp k = self.p.n_routes
        cdef cnp.ndarray o = _output(out, 1, &k, "out", v)
        sona_policy_scores(&self.p, _fptr(v), _fptr(o))
        return o

    cdef int _ready(self, bint store=True) except -1:
        """The C state exists (a half-constructed router has none) and, with store, the
        trajectory store it records into is still open."""
        if self.p.dim == 0:
            raise RuntimeError(f"{type(self).__name__} was not initialised (its __init__ did "
                               "not run)")
        if store and self._store is not None:
            self._store._check()
        return 0

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} cannot be pickled; save it with "
                        "router.save(path) and restore it with Router.load(path)")

    @property
    def n_parameters(self):
        """Learned floats: both adapters, keys and bias."""
        return int(sona_policy_n_params(self.p.dim, self.p.n_routes, self.p.micro_rank,
                                        self.p.base_rank))

    def _assign(self, str name, value):
        """Copy `value` into the owned array `name` (keys, bias, rms, fisher, anchor, fisher_ckpt,
        omega, omega_theta, mu): used by state loading. Shape and finiteness are checked; nothing
        changes on error."""
        if name not in ("keys", "bias", "rms", "fisher", "anchor", "fisher_ckpt", "omega",
                        "omega_theta", "mu"):
            raise ValueError(f"unknown router array {name!r}")
        self._ready(False)
        cdef cnp.ndarray dst = getattr(self, name)
        cdef cnp.ndarray src = _as_f32(np.ascontiguousarray(value), name)
        if (<object>src).shape != (<object>dst).shape:
            raise ValueError(f"{name} must have shape {_shape_str(dst)}; got {_shape_str(src)}")
        _check_finite(src, name)
        memcpy(_fptr(dst), _fptr(src), cnp.PyArray_NBYTES(dst))

    def _adapters_replaced(self):
        """The adapters' weights were re-factored (background consolidation): their RMSprop,
        Fisher and task-memory entries describe the old coordinates, so they restart from zero
        (the memory keeps the keys and the bias), and the EWC++ anchor takes the new weights (the
        function the adapters compute is unchanged)."""
        self._ready(False)
        cdef size_t d = self.p.dim, rm = self.p.micro_rank, rb = self.p.base_rank
        cdef size_t n_adapt = 2 * (rm + rb) * d
        memset(_fptr(self.rms), 0, 2 * (rm + rb) * sizeof(float))
        for arr in (self.fisher, self.fisher_ckpt, self.omega, self.omega_theta):
            memset(_fptr(arr), 0, n_adapt * sizeof(float))
        if self.p.tasks:
            self.p.omega_max = float(self.omega.max())
        cdef float *an = _fptr(self.anchor)
        memcpy(an, self.p.A_micro, rm * d * sizeof(float))
        memcpy(an + rm * d, self.p.Bt_micro, rm * d * sizeof(float))
        memcpy(an + 2 * rm * d, self.p.A_base, rb * d * sizeof(float))
        memcpy(an + 2 * rm * d + rb * d, self.p.Bt_base, rb * d * sizeof(float))

    def _set_totals(self, unsigned long long decisions, unsigned long long feedbacks):
        """Restore the decision and feedback counts (state loading)."""
        self.decisions, self.feedbacks = decisions, feedbacks

    def _set_counters(self, dict c):
        """Restore what _counters() returned (state loading)."""
        self.p.n_seen, self.p.t = c["n_seen"], c["t"]
        self.p.global_baseline = c["global_baseline"]
        self.p.reward_short, self.p.reward_long = c["reward_short"], c["reward_long"]
        self.p.fisher_max, self.p.has_anchor = c["fisher_max"], c["has_anchor"]
        self.p.checkpoints, self.p.task_boundaries = c["checkpoints"], c["task_boundaries"]
        self.p.omega_max, self.p.tasks = c["omega_max"], c["tasks"]
        self.p.novelty_short, self.p.novelty_long = c["novelty_short"], c["novelty_long"]
        self.p.ckpt_patterns = c["ckpt_patterns"]
        self.p.drifting = c["drifting"]
        self.p.rng.state, self.p.rng.inc = c["rng_state"], c["rng_inc"]

    def _counters(self):
        """Scalar learning state (for stats and state files)."""
        return {"n_seen": int(self.p.n_seen), "t": int(self.p.t),
                "global_baseline": float(self.p.global_baseline),
                "reward_short": float(self.p.reward_short), "reward_long": float(self.p.reward_long),
                "fisher_max": float(self.p.fisher_max), "has_anchor": bool(self.p.has_anchor),
                "checkpoints": int(self.p.checkpoints),
                "task_boundaries": int(self.p.task_boundaries),
                "omega_max": float(self.p.omega_max), "tasks": int(self.p.tasks),
                "novelty_short": float(self.p.novelty_short),
                "novelty_long": float(self.p.novelty_long),
                "ckpt_patterns": int(self.p.ckpt_patterns),
                "drifting": bool(self.p.drifting),
                "rng_state": int(self.p.rng.state), "rng_inc": int(self.p.rng.inc)}
