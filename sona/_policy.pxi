# The router policy's C state and its hot paths: route, feedback, scores.
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport NAN, isfinite

import os
from collections import deque as _deque
from weakref import WeakValueDictionary as _WeakValueDictionary

# How many decision ids a router remembers having learnt from (feedback() or learn()), to
# refuse a second learning from the same decision; saved in its state. A live Decision also
# carries its own flag (feedback(), or learn() of its outcome()), whatever its age.
LEARNT_WINDOW = 1 << 16
cdef Py_ssize_t _LEARNT_WINDOW = LEARNT_WINDOW

cdef class RouterCore


cdef str _decision_id(unsigned long long nonce, unsigned long long serial):
    """The one form of a decision id: the router's random nonce and the decision's serial, hex."""
    return f"{nonce:016x}-{serial:x}"


# Bound on a cost per call and on cost_weight: their product stays far inside float32.
MAX_COST = 1e30
cdef double _MAX_COST = MAX_COST


# Not no_gc: a Decision refers to its router, and a router that keeps decisions (a dict of
# pending ones) would otherwise form a cycle the collector cannot see.
@cython.freelist(64)
cdef class Decision:
    """One routing decision: the route taken and what is needed to learn from its outcome.

    Attributes: route (name), index, prob (the probability with which this route was actually
    drawn: exploration, cost trade-off and allowed routes included), probs (that whole
    distribution, float32, one entry per route the router had then, 0 for routes that were not
    allowed or retired), decision_id (unique across
    routers and processes), trajectory_id (the engine trajectory recording it once learnt from,
    or None). Learn from it exactly once: Router.feedback(decision, quality), or
    Router.learn(decision.outcome(quality, cost=...)).
    """
    cdef readonly str route
    cdef readonly Py_ssize_t index
    cdef readonly object trajectory_id
    cdef readonly float prob
    cdef sona_policy_ctx ctx
    cdef Py_ssize_t n_routes, dim, x_off
    cdef RouterCore owner
    cdef bint done
    cdef object __weakref__  # the router's map of decisions whose outcome() was taken
    cdef unsigned long long serial, epoch_t, epoch_m

    def __dealloc__(self):
        PyMem_Free(self.ctx.buf)

    cdef int _check_built(self) except -1:
        if self.ctx.buf == NULL:
            raise ValueError("this Decision was not made by Router.route()")
        return 0

    @property
    def probs(self):
        self._check_built()
        cdef cnp.npy_intp k = self.n_routes
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &k, cnp.NPY_FLOAT32, 0)
        memcpy(_fptr(out), self.ctx.buf + 3 * self.dim + self.n_routes, k * sizeof(float))
        return out

    @property
    def embedding(self):
        """The query embedding routed (float32 copy)."""
        self._check_built()
        cdef cnp.npy_intp d = self.dim
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &d, cnp.NPY_FLOAT32, 0)
        memcpy(_fptr(out), self.ctx.buf + self.x_off, d * sizeof(float))
        return out

    @property
    def decision_id(self):
        """A string naming this decision uniquely (the router's random nonce and a counter)."""
        self._check_built()
        return _decision_id(self.owner._nonce, self.serial)

    @property
    def pattern(self):
        """Index of the stored pattern the query matched when routed, or -1 (a new kind of query)."""
        return self.ctx.pattern

    @property
    def consumed(self):
        """True once the router learnt from this decision (feedback or learn)."""
        return bool(self.done)

    def outcome(self, quality, cost=None, latency_ms=None):
        """The outcome of this decision as a sona.Outcome (plain data: embedding, route, prob,
        quality, cost, latency, decision_id, timestamp), to learn from now or later, here or in
        another process: router.learn(decision.outcome(0.9, cost=0.002)).

        Raises ValueError/TypeError for a bad quality, cost or latency (see sona.Outcome)."""
        self._check_built()
        outcome = self.owner._make_outcome(self, quality, cost, latency_ms)
        self.owner._issued[self.serial] = self  # learn(outcome) marks this decision learnt
        return outcome

    def __reduce__(self):
        raise TypeError("a Decision belongs to the live router that made it and cannot be "
                        "pickled; ship decision.outcome(quality) (a sona.Outcome: pickles, "
                        "to_bytes) and learn it with router.learn() wherever the router is")

    def __repr__(self):
        return (f"Decision(route={self.route!r}, index={self.index}, prob={self.prob:.4g}, "
                f"trajectory_id={self.trajectory_id})")


cdef class RouterCore:
    """Compiled core of sona.Router (use that: it builds the adapters, bank and hyper-parameters)."""
    cdef sona_policy p
    cdef readonly object keys, bias, rms, fisher, anchor, fisher_ckpt, omega, omega_theta, mu
    cdef readonly object global_n, global_s, global_q, route_cost, cost_n, shrink
    cdef object _work, _mask
    cdef object _live  # uint8 per route: 0 once retired (p.live points here then)
    cdef LoRAAdapter _micro
    cdef LoRAAdapter _base
    cdef PatternStore _bank
    cdef readonly tuple routes
    cdef TrajectoryStore _store
    cdef size_t _ctx_floats
    cdef float *_lctx  # prepared context for learning from an outcome (no Decision)
    cdef readonly unsigned long long decisions, feedbacks
    cdef readonly object route_decisions  # uint64 per route: decisions since built or loaded
    cdef readonly double exploration  # EMA (1/1000) of decisions that were not the greedy route
    cdef readonly unsigned long long _nonce
    cdef object _learnt, _learnt_order  # set and FIFO of outcome decision ids learnt (bounded)
    cdef readonly object _issued  # serial -> live Decision whose outcome() was taken (weak)
    cdef readonly dict _params  # the validated hyper-parameters the C struct holds

    def __init__(self, tuple routes, LoRAAdapter micro, LoRAAdapter base, PatternStore bank, keys,
                 dict hp, unsigned long long seed, TrajectoryStore store=None, costs=None):
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
        self.route_cost = np.zeros(K, np.float32)
        self.cost_n = np.zeros(K, np.float32)
        if costs is not None:
            c = np.asarray(costs, dtype=np.float64)
            if (c.shape != (K,) or not np.isfinite(c).all() or (c < 0).any()
                    or (c > _MAX_COST).any()):
                raise ValueError(f"costs must be {K} finite numbers in [0, 1e30], one per route; "
                                 f"got {costs!r}")
            self.route_cost[:] = c
            self.cost_n[:] = 1.0
        cdef size_t n = sona_policy_n_params(d, K, micro.rank, base.rank)
        self.bias = np.zeros(K, np.float32)
        self.rms = np.zeros(sona_policy_n_rows(K, micro.rank, base.rank), np.float32)
        self.fisher = np.zeros(n, np.float32)
        self.anchor = np.zeros(n, np.float32)
        self.fisher_ckpt = np.zeros(n, np.float32)
        self.omega = np.zeros(n, np.float32)
        self.omega_theta = np.zeros(n, np.float32)
        self.mu = np.zeros(d, np.float32)
        self.global_n = np.zeros(K, np.float32)
        self.global_s = np.zeros(K, np.float32)
        self.global_q = np.zeros(K, np.float32)
        self.shrink = np.full(K, bank.params["prior_count"], np.float32)
        self._mask = np.zeros(K, np.uint8)
        self._live = np.ones(K, np.uint8)
        self.route_decisions = np.zeros(K, np.uint64)
        self._work = np.zeros(sona_policy_work_floats(d, K, bank.capacity), np.float32)
        self._ctx_floats = sona_policy_ctx_floats(d, K, micro.rank, base.rank)
        PyMem_Free(self._lctx)
        self._lctx = <float *>PyMem_Malloc(self._ctx_floats * sizeof(float))
        if self._lctx == NULL:
            raise MemoryError()
        memset(&self.p, 0, sizeof(sona_policy))
        self.p.dim, self.p.n_routes, self.p.micro_rank, self.p.base_rank = d, K, micro.rank, base.rank
        self.p.A_micro, self.p.Bt_micro = micro.pA, micro.pBt
        self.p.A_base, self.p.Bt_base = base.pA, base.pBt
        self.p.mu = _fptr(self.mu)
        self._point_routes()
        self.p.bank = &bank.b
        self.p.global_baseline = self.p.reward_short = self.p.reward_long = 0.5
        self._set_hp(hp)
        sona_pcg32_seed(&self.p.rng, seed, 2)
        self._nonce = int.from_bytes(os.urandom(8), "little")
        self._learnt, self._learnt_order = set(), _deque()
        self._issued = _WeakValueDictionary()

    def __dealloc__(self):
        PyMem_Free(self._lctx)

    cdef _point_routes(self):
        """Points the C state at the arrays whose size depends on the number of routes (at
        construction, and again when add_route replaced them)."""
        self.p.keys, self.p.bias = _fptr(self.keys), _fptr(self.bias)
        self.p.rms, self.p.fisher, self.p.anchor = _fptr(self.rms), _fptr(self.fisher), _fptr(self.anchor)
        self.p.fisher_ckpt, self.p.omega = _fptr(self.fisher_ckpt), _fptr(self.omega)
        self.p.omega_theta = _fptr(self.omega_theta)
        self.p.work = _fptr(self._work)
        self.p.global_n, self.p.global_s = _fptr(self.global_n), _fptr(self.global_s)
        self.p.global_q = _fptr(self.global_q)
        self.p.route_cost, self.p.cost_n = _fptr(self.route_cost), _fptr(self.cost_n)
        self.p.shrink = _fptr(self.shrink)
        # NULL while every route is live: the hot paths then skip the mask. A C loop, not
        # numpy (which may release the GIL): the caller relies on holding it throughout
        cdef const uint8_t *live = <const uint8_t *>cnp.PyArray_DATA(self._live)
        cdef Py_ssize_t k
        self.p.live = NULL
        for k in range(cnp.PyArray_DIM(self._live, 0)):
            if not live[k]:
                self.p.live = live
                break

    cdef _set_hp(self, dict hp):
        """The C struct from the validated parameters (sona.params.check_params). Cython fills
        a struct from a mapping by field name, so a parameter whose field carries its name needs
        no line here; the scales come from the (possibly shared) adapters, the statistics'
        decay per feedback from prior_window. All fields convert before the struct is stored.
        """
        cdef sona_policy_hp h = {**hp, "micro_scale": self._micro.scale,
                                 "base_scale": self._base.scale,
                                 "global_decay": 1.0 - 1.0 / hp["prior_window"]}
        self.p.hp = h
        self._params = hp  # with the struct, in one step no other thread can interleave

    def _apply_params(self, dict hp):
        """Live parameter change (Router.set_params, hp validated): contexts prepared before it
        (pending decisions) are prepared again when learnt from."""
        global _state_epoch
        self._ready(False)
        self._set_hp(hp)
        _state_epoch += 1

    cdef const uint8_t *_allowed_mask(self, object allowed) except? NULL:
        """The mask of the routes in `allowed` (names or indices) that are live, or NULL for
        None while no route is retired. A retired route in `allowed` is one not available."""
        if allowed is None:
            return self.p.live
        if isinstance(allowed, (str, bytes)):
            raise TypeError(f"allowed must be a collection of route names or indices, not a "
                            f"single {type(allowed).__name__} ({allowed!r})")
        mask = np.zeros(self.p.n_routes, np.uint8)
        for r in allowed:
            mask[self.index(r)] = 1
        if self.p.live != NULL:
            mask &= self._live
        if not mask.any():
            retired = "" if self.p.live == NULL else f" (retired: {self._retired_names()})"
            raise ValueError(f"allowed names no route that can be chosen{retired}: at least one "
                             "route must be allowed")
        self._mask[:] = mask
        return <const uint8_t *>cnp.PyArray_DATA(self._mask)

    cdef float _cost_weight(self, object cost_weight) except -1.0:
        cdef double w
        if isinstance(cost_weight, bool):
            raise TypeError("cost_weight must be a number >= 0; got bool")
        try:
            w = cost_weight
        except TypeError as exc:
            raise TypeError(f"cost_weight must be a number >= 0; got "
                            f"{type(cost_weight).__name__}") from exc
        if not (isfinite(w) and 0.0 <= w <= _MAX_COST):
            raise ValueError(f"cost_weight must be a finite number in [0, 1e30]; got {w}")
        return <float>w

    def _route_cost_arg(self, cost):
        """A cost per call given for one route (add_route) as a float, or None: a number in
        [0, _MAX_COST], the bound the constructor's costs have."""
        if cost is None:
            return None
        if not isinstance(cost, (int, float, np.integer, np.floating)) or isinstance(
                cost, (bool, np.bool_)):
            raise TypeError(f"cost must be a number or None; got {type(cost).__name__}")
        if not (np.isfinite(cost) and 0 <= cost <= _MAX_COST):
            raise ValueError(f"cost must be a finite number in [0, 1e30] or None; "
                             f"got {cost!r}")
        return float(cost)

    def route(self, x, cost_weight=0.0, allowed=None):
        """Choose a route for the query embedding x (float32 (dim,), |x_i| <= 1e6); returns a
        Decision.

        cost_weight: the trade-off, in quality per unit of cost: routes are ranked by expected
        quality - cost_weight * cost per call (costs given to the router or learnt from outcomes,
        per kind of query where outcomes reported them: see sona.Router's costs). While routes
        gather their first outcomes, one whose known cost exceeds the cheapest allowed route's
        by 1 / cost_weight or more is not tried: it cannot rank above that one at this weight.
        allowed: route names or indices that may be chosen (e.g. the models up now); None: all.
        Retired routes (sona.Router.retire_route) are never chosen, named in allowed or not.
        Samples from the policy (Thompson draws in the prior, plus `explore`), so repeated calls
        may differ; use scores() for the greedy view. Decision.prob is the probability with which
        the chosen route was drawn. Raises ValueError/TypeError for a bad embedding, cost_weight
        or allowed, changing nothing.
        """
        self._ready()
        cdef cnp.ndarray v = (<cnp.ndarray>x if _is_f32_vector(x, self.p.dim)
                              else _as_f32(x, "x"))
        if cnp.PyArray_NDIM(v) != 1 or cnp.PyArray_DIM(v, 0) != self.p.dim:
            raise ValueError(f"x must have shape ({self.p.dim},); got {_shape_str(v)}")
        _check_embedding(v, "x", INFINITY if self._store is None else self._store.buffer._limit)
        cdef float w = 0.0
        if cost_weight is not 0.0:
            w = self._cost_weight(cost_weight)
        cdef const uint8_t *mask = self._allowed_mask(allowed)
        cdef size_t d = self.p.dim
        cdef Decision dec = Decision.__new__(Decision)
        dec.ctx.buf = <float *>PyMem_Malloc((self._ctx_floats + d) * sizeof(float))
        if dec.ctx.buf == NULL:
            raise MemoryError()
        dec.x_off = self._ctx_floats
        memcpy(dec.ctx.buf + self._ctx_floats, _fptr(v), d * sizeof(float))
        dec.epoch_t, dec.epoch_m = self.p.t, _state_epoch
        cdef uint32_t a = sona_policy_route(&self.p, _fptr(v), w, mask, &dec.ctx)
        dec.prob = dec.ctx.buf[3 * d + self.p.n_routes + a]
        (<uint64_t *>cnp.PyArray_DATA(self.route_decisions))[a] += 1
        cdef const float *pil = dec.ctx.buf + 3 * d  # the learning policy's probabilities
        cdef uint32_t k, greedy = 0
        for k in range(1, self.p.n_routes):
            if pil[k] > pil[greedy]:
                greedy = k
        self.exploration += 0.001 * ((a != greedy) - self.exploration)
        dec.index = a
        dec.route = self.routes[a]
        dec.n_routes, dec.dim = self.p.n_routes, d
        dec.owner = self
        dec.serial = self.decisions
        self.decisions += 1
        return dec

    def _decision_key(self, decision_id):
        """The at-most-once key of an outcome's decision_id: the serial (an int) of a decision
        this router made (exactly the id _decision_id wrote), the id itself for a foreign one,
        None without an id."""
        if decision_id is None:
            return None
        nonce, sep, serial = decision_id.partition("-")
        if sep and nonce == f"{self._nonce:016x}":
            try:
                key = int(serial, 16)
            except ValueError:
                return decision_id
            if 0 <= key < 2**64 and _decision_id(self._nonce, key) == decision_id:
                return key
        return decision_id

    cdef object _record(self, const float *x, uint32_t a, float prob, float q):
        """A learnt outcome becomes a finished one-step trajectory of the engine (the record goes
        to the ring for the background loop); returns its id, or None without an engine. It is
        recorded only once learnt, so no engine call can learn from a decision still pending."""
        cdef uint64_t tid = 0
        if self._store is None:
            return None
        sona_store_start(self._store._s, x, &tid)
        sona_store_step(self._store._s, tid, a, prob, 0.0, NAN)
        sona_store_end(self._store._s, tid, q)
        return tid

    cdef _remember(self, object key):
        self._learnt.add(key)
        self._learnt_order.append(key)
        if len(self._learnt_order) > _LEARNT_WINDOW:
            self._learnt.discard(self._learnt_order.popleft())

    def _learnt_ids(self):
        """The decision ids learnt from, oldest first (at most LEARNT_WINDOW): what the state
        file keeps of the at-most-once rule."""
        return [_decision_id(self._nonce, k) if isinstance(k, int) else k
                for k in self._learnt_order]

    def _set_learnt(self, ids):
        """Replaces the learnt window by `ids` (decision ids, oldest first; checked by the
        loader). Ids of this router's own decisions map to their serials."""
        self._learnt, self._learnt_order = set(), _deque()
        for decision_id in ids:
            self._remember(self._decision_key(decision_id))

    def feedback(self, Decision decision, quality):
        """Learn from the outcome of one decision: quality in [0, 1] (1 = best possible).

        The same learning step as learn(decision.outcome(quality)). Raises ValueError for a
        quality outside [0, 1], a decision already learnt from, or one made by another router;
        nothing changes then.
        """
        if decision is None:
            raise TypeError("decision must be a Decision returned by route()")
        if decision.owner is not self or decision.ctx.buf == NULL:
            raise ValueError("this decision was made by another router")
        cdef float q = <float>_check_quality(quality)
        if self._store is not None:
            self._store._check()
        if decision.done:
            raise ValueError(f"this decision was already learnt from (route "
                             f"{decision.route!r}, decision {decision.decision_id})")
        cdef sona_policy_ctx ctx
        if decision.n_routes != self.p.n_routes:
            # routed before add_route: its context is laid out for fewer routes, so prepare
            # afresh in the router's own (route indices never move: the route is the same)
            ctx.buf = self._lctx
            sona_policy_prepare(&self.p, decision.ctx.buf + decision.x_off, &ctx)
            sona_policy_learn(&self.p, &ctx, decision.index, decision.prob, q, NAN, 1)
        else:
            if decision.epoch_t != self.p.t or decision.epoch_m != _state_epoch:
                # the state changed since routing: learn as from a logged outcome (the same
                # result as a fresh prepare, which is what replay does)
                sona_policy_prepare(&self.p, decision.ctx.buf + decision.x_off, &decision.ctx)
            sona_policy_learn(&self.p, &decision.ctx, decision.index, decision.prob, q, NAN, 1)
        decision.trajectory_id = self._record(decision.ctx.buf + decision.x_off, decision.index,
                                              decision.prob, q)
        decision.done = True
        self._remember(decision.serial)  # its outcome may come back later, by learn()
        self.feedbacks += 1

    def _learn_raw(self, x, Py_ssize_t index, double prob, quality, double cost, key,
                   bint new_hit=True):
        """The learning step for one outcome whose fields sona.Router.learn validated: query x,
        route index, the probability it was chosen with, quality, cost (NaN: not reported), and
        the decision key (a serial of this router, a foreign decision id, or None) for the
        at-most-once rule; new_hit False: another route's outcome of the query just learnt
        (Router.fit). Raises ValueError for a key already learnt; nothing changes then."""
        self._ready()
        cdef cnp.ndarray v = _vector(x, self.p.dim, "embedding")
        _check_embedding(v, "embedding", _MAX_EMBEDDING_ABS)
        cdef float q = <float>_check_quality(quality)
        if not 0 <= index < self.p.n_routes:
            raise ValueError(f"route index must be in 0..{self.p.n_routes - 1}; got {index}")
        if not (0.0 < prob <= 1.0):
            raise ValueError(f"prob must be in (0, 1]; got {prob}")
        if key is not None and key in self._learnt:
            shown = _decision_id(self._nonce, key) if isinstance(key, int) else key
            raise ValueError(f"decision {shown} was already learnt from")
        cdef Decision own = self._issued.get(key) if isinstance(key, int) else None
        if own is not None and own.done:
            raise ValueError(f"decision {own.decision_id} was already learnt from (feedback)")
        cdef sona_policy_ctx ctx
        ctx.buf = self._lctx
        sona_policy_prepare(&self.p, _fptr(v), &ctx)
        sona_policy_learn(&self.p, &ctx, <uint32_t>index, <float>prob, q, <float>cost, new_hit)
        self._record(_fptr(v), <uint32_t>index, <float>prob, q)
        if own is not None:
            own.done = True
        if key is not None:
            self._remember(key)
        self.feedbacks += 1

    def scores(self, x, out=None, cost_weight=0.0, allowed=None):
        """Greedy route probabilities for x: (dim,) -> (n_routes,), or a batch (n, dim) ->
        (n, n_routes); float32. No side effects, no exploration. cost_weight and allowed as in
        route(): ranked by quality - cost_weight * cost, routes not allowed (or retired) get 0."""
        self._ready()
        cdef cnp.ndarray v = _vector_or_rows(x, self.p.dim, "x")
        _check_embedding(v, "x", INFINITY)
        cdef float w = self._cost_weight(cost_weight)
        cdef const uint8_t *mask = self._allowed_mask(allowed)
        cdef cnp.npy_intp dims[2]
        cdef Py_ssize_t i, n
        cdef size_t d = self.p.dim, K = self.p.n_routes
        cdef cnp.ndarray o
        if cnp.PyArray_NDIM(v) == 1:
            dims[0] = K
            o = _output(out, 1, dims, "out", v)
            sona_policy_scores(&self.p, _fptr(v), w, mask, _fptr(o))
            return o
        n = cnp.PyArray_DIM(v, 0)
        dims[0], dims[1] = n, K
        o = _output(out, 2, dims, "out", v)
        for i in range(n):
            sona_policy_scores(&self.p, _fptr(v) + i * d, w, mask, _fptr(o) + i * K)
        return o

    def route_batch(self, X, cost_weight=0.0, allowed=None):
        """route() for each row of X (n, dim), in order: a list of n Decisions, each exactly what
        route(X[i], cost_weight, allowed) returns at its turn. Every row, cost_weight and allowed
        are checked before any is routed: a bad one raises ValueError/TypeError, routing
        nothing."""
        self._ready()
        cdef cnp.ndarray v = _as_f32(X, "X")
        if cnp.PyArray_NDIM(v) != 2 or cnp.PyArray_DIM(v, 1) != self.p.dim:
            raise ValueError(f"X must have shape (n, {self.p.dim}); got {_shape_str(v)}")
        _check_embedding(v, "X", INFINITY if self._store is None else self._store.buffer._limit)
        self._cost_weight(cost_weight)
        self._allowed_mask(allowed)
        return [self.route(row, cost_weight, allowed) for row in v]

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
        global _state_epoch
        if name not in ("keys", "bias", "rms", "fisher", "anchor", "fisher_ckpt", "omega",
                        "omega_theta", "mu", "global_n", "global_s", "global_q", "route_cost",
                        "cost_n", "shrink"):
            raise ValueError(f"unknown router array {name!r}")
        self._ready(False)
        cdef cnp.ndarray dst = getattr(self, name)
        cdef cnp.ndarray src = _as_f32(np.ascontiguousarray(value), name)
        if (<object>src).shape != (<object>dst).shape:
            raise ValueError(f"{name} must have shape {_shape_str(dst)}; got {_shape_str(src)}")
        _check_finite(src, name)
        memcpy(_fptr(dst), _fptr(src), cnp.PyArray_NBYTES(dst))
        _state_epoch += 1

    def _adapters_replaced(self):
        """The adapters' weights were re-factored (background consolidation): their RMSprop,
        Fisher and task-memory entries describe the old coordinates, so they restart from zero
        (the memory keeps the keys and the bias), and the EWC++ anchor takes the new weights (the
        function the adapters compute is unchanged)."""
        self._ready(False)
        cdef size_t d = self.p.dim, rm = self.p.micro_rank, rb = self.p.base_rank
        cdef size_t n_adapt = 2 * (rm + rb) * d
        global _state_epoch
        _state_epoch += 1
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

    def _retired_names(self):
        """The names of the retired routes, in index order."""
        return tuple(r for r, live in zip(self.routes, self._live) if not live)

    def _retire_route(self, Py_ssize_t k):
        """Route k is chosen no more: probability 0 in route(), scores() and the learning policy
        (sona.Router.retire_route checks that another route stays live)."""
        self._ready(False)
        if not 0 <= k < self.p.n_routes:
            raise ValueError(f"route index must be in 0..{self.p.n_routes - 1}; got {k}")
        global _state_epoch
        self._live[k] = 0
        self._point_routes()
        _state_epoch += 1

    def _fresh_route(self, Py_ssize_t k, key, float shrink, cost):
        """Route k starts over as in a fresh router, and live: the unit `key`, bias 0, no
        optimiser, Fisher or task-memory entries (the anchor holds the key: EWC++ pulls it
        nowhere), no traffic-wide or per-pattern statistics (the pattern prior shrinks it
        towards the traffic-wide prior with pseudo-count `shrink`), cost `cost` (None: unknown).
        Every other route's values are left as they are."""
        self._ready(False)
        cdef Py_ssize_t K = self.p.n_routes, d = self.p.dim
        if not 0 <= k < K or self._bank.b.n_routes <= k:
            raise ValueError(f"route index must be in 0..{K - 1} and tracked by the bank; got {k}")
        cdef cnp.ndarray kv = _vector(key, d, "key")
        cdef Py_ssize_t rows = 2 * (self.p.micro_rank + self.p.base_rank)
        cdef Py_ssize_t key_at = rows * d + k * d, bias_at = rows * d + K * d + k
        global _state_epoch
        self.keys[k] = kv
        self.bias[k] = 0.0
        self.rms[rows + k] = 0.0
        for arr in (self.fisher, self.fisher_ckpt, self.omega, self.omega_theta, self.anchor):
            arr[key_at:key_at + d] = 0.0
            arr[bias_at] = 0.0
        self.anchor[key_at:key_at + d] = kv
        if self.p.tasks:
            self.p.omega_max = float(self.omega.max())
        for arr in (self.global_n, self.global_s, self.global_q):
            arr[k] = 0.0
        self.route_cost[k], self.cost_n[k] = (0.0, 0.0) if cost is None else (cost, 1.0)
        self.shrink[k] = shrink
        self.route_decisions[k] = 0
        for name in self._bank.ROUTE_ARRAYS:
            getattr(self._bank, name)[:, k] = 0.0
        self._live[k] = 1
        self._point_routes()
        _state_epoch += 1  # last: a decision routed while numpy ran above is prepared afresh

    def _append_route(self, str name, key, float shrink, cost):
        """A new route `name` at index K: every array sized by the routes one route longer, the
        others' values copied bit-exactly, the new one set by _fresh_route. The bank must track
        K + 1 routes already (PatternStore._grow_routes)."""
        self._ready(False)
        cdef Py_ssize_t K = self.p.n_routes, d = self.p.dim
        if K >= SONA_MAX_ROUTES:
            raise ValueError(f"a router has at most {SONA_MAX_ROUTES} routes")
        if self._bank.b.n_routes <= K:
            raise ValueError(f"the pattern bank tracks {self._bank.b.n_routes} routes; "
                             f"route {K} needs {K + 1}")
        _vector(key, d, "key")
        cdef Py_ssize_t rows = 2 * (self.p.micro_rank + self.p.base_rank)
        cdef Py_ssize_t cut = rows * d + K * d  # per weight: the adapters and the keys, then bias
        one = np.zeros(1, np.float32)
        per_weight = [np.concatenate([a[:cut], np.zeros(d, np.float32), a[cut:], one])
                      for a in (self.fisher, self.anchor, self.fisher_ckpt, self.omega,
                                self.omega_theta)]
        per_route = [np.concatenate([a, one]) for a in (self.bias, self.global_n, self.global_s,
                                                         self.global_q, self.route_cost,
                                                         self.cost_n)]
        # the prior divides by the pseudo-count even for a route masked out: never 0
        shrinks = np.append(self.shrink, np.float32(shrink))
        keys = np.concatenate([self.keys, np.zeros((1, d), np.float32)])
        rms = np.concatenate([self.rms[:rows + K], one, self.rms[rows + K:]])
        work = np.zeros(sona_policy_work_floats(d, K + 1, self._bank.b.capacity), np.float32)
        # retired until _fresh_route has set it up: another thread may route while numpy runs
        # without the GIL there
        mask, live = np.zeros(K + 1, np.uint8), np.append(self._live, np.uint8(0))
        decisions = np.append(self.route_decisions, np.uint64(0))
        cdef size_t ctx_floats = sona_policy_ctx_floats(d, K + 1, self.p.micro_rank,
                                                         self.p.base_rank)
        cdef float *lctx = <float *>PyMem_Malloc(ctx_floats * sizeof(float))
        if lctx == NULL:
            raise MemoryError()
        # nothing releases the GIL from here to _fresh_route: routing sees K or K + 1 routes
        PyMem_Free(self._lctx)
        self._lctx, self._ctx_floats, self._work = lctx, ctx_floats, work
        self.fisher, self.anchor, self.fisher_ckpt, self.omega, self.omega_theta = per_weight
        self.bias, self.global_n, self.global_s, self.global_q, self.route_cost, self.cost_n = (
            per_route)
        self.shrink, self.keys, self.rms = shrinks, keys, rms
        self._mask, self._live, self.route_decisions = mask, live, decisions
        self.routes = self.routes + (name,)
        self._point_routes()
        self.p.n_routes = K + 1
        self._fresh_route(K, key, shrink, cost)

    def _set_totals(self, unsigned long long decisions, unsigned long long feedbacks):
        """Restore the decision and feedback counts (state loading)."""
        self.decisions, self.feedbacks = decisions, feedbacks

    def _set_counters(self, dict c):
        """Restore what _counters() returned (state loading)."""
        global _state_epoch
        _state_epoch += 1
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
