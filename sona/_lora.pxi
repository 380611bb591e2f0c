# The low-rank adapter y = x + scale·B(Ax): weights, gradient accumulators, and their update.
from libc.math cimport sqrt, fabs
from libc.string cimport memset, memcpy

# Accumulated gradients are refused before any element could pass this magnitude, so float32
# accumulators can never overflow (FLT_MAX is 3.4e38).
cdef double _GRAD_LIMIT = 1e36
# Largest adapter output scale (and step clip): with |x| <= 1e6 and unit-scale weights the
# adapter's terms stay below 1e6·1e3·sqrt(65536)·(a few), far from float32's 3.4e38.
cdef double _MAX_SCALE = 1e3


cdef double _sumsq(const float *x, size_t n) noexcept nogil:
    """Sum of squares, overflow-free: the float32 kernel when its result is finite (the common
    case: one fast pass), else accumulated again in double."""
    cdef float f = sona_dot_f32(x, x, n)
    if f < INFINITY:
        return f
    cdef double s0 = 0, s1 = 0
    cdef size_t i = 0
    while i + 2 <= n:
        s0 += <double>x[i] * x[i]
        s1 += <double>x[i + 1] * x[i + 1]
        i += 2
    if i < n:
        s0 += <double>x[i] * x[i]
    return s0 + s1


cdef class LoRAAdapter:
    """Low-rank adapter y = x + scale·B(A x) with A (rank, dim) and B (dim, rank).

    The compiled base of sona.MicroLoRA and sona.BaseLoRA (use those: they choose the initial
    weights). B is stored transposed, (rank, dim), so both passes of the kernels stream rows.
    """
    cdef readonly Py_ssize_t dim
    cdef readonly Py_ssize_t rank
    cdef readonly float scale
    cdef readonly double max_step
    cdef readonly Py_ssize_t pending
    cdef cnp.ndarray _A, _Bt, _gA, _gBt
    cdef float *pA
    cdef float *pBt
    cdef float *pgA
    cdef float *pgBt
    cdef double _grad_bound     # bound on |element| of the accumulators since the last apply

    def __init__(self, dim, rank, scale, max_step, Py_ssize_t max_rank, str kind):
        if self.pA != NULL:  # routers and engines point at these weights: never reallocate
            raise RuntimeError(f"{type(self).__name__} is already initialised; create a new one")
        if isinstance(dim, (bool, np.bool_)) or not hasattr(dim, "__index__"):
            raise TypeError(f"{kind} dim must be an integer; got {type(dim).__name__}")
        if isinstance(rank, (bool, np.bool_)) or not hasattr(rank, "__index__"):
            raise TypeError(f"{kind} rank must be an integer; got {type(rank).__name__}")
        if dim < 1:
            raise ValueError(f"{kind} dim must be >= 1; got {dim}")
        if dim > SONA_RING_MAX_DIM:
            raise ValueError(f"{kind} dim must be <= {SONA_RING_MAX_DIM}; got {dim}")
        cdef Py_ssize_t d = dim
        cdef Py_ssize_t hi = min(max_rank, d)
        if not 1 <= rank <= hi:
            raise ValueError(f"{kind} rank must be in 1..{hi} (at most {max_rank} and at most "
                             f"dim={dim}); got {rank}")
        # bounded so that scale·(A x) and the steps stay far inside float32 for any accepted x
        cdef double sc = _real(scale, f"{kind} scale"), ms = _real(max_step, f"{kind} max_step")
        if not (isfinite(sc) and 0 < sc <= _MAX_SCALE):
            raise ValueError(f"{kind} scale must be a number in (0, {_MAX_SCALE:g}]; got {scale}")
        if not (isfinite(ms) and 0 < ms <= _MAX_SCALE):
            raise ValueError(f"{kind} max_step must be a number in (0, {_MAX_SCALE:g}]; got "
                             f"{max_step}")
        self.dim, self.rank, self.scale, self.max_step = d, rank, sc, ms
        self._A = np.zeros((rank, dim), np.float32)
        self._Bt = np.zeros((rank, dim), np.float32)
        self._gA = np.zeros((rank, dim), np.float32)
        self._gBt = np.zeros((rank, dim), np.float32)
        self.pA, self.pBt = _fptr(self._A), _fptr(self._Bt)
        self.pgA, self.pgBt = _fptr(self._gA), _fptr(self._gBt)
        self.pending = 0
        self._grad_bound = 0.0

    cdef int _ready(self) except -1:
        if self.pA == NULL:
            raise RuntimeError(f"{type(self).__name__} was not initialised (its __init__ did not run)")
        return 0

    @property
    def A(self):
        """A (rank, dim), a read-only view of the live weights."""
        self._ready()
        a = self._A.view()
        a.flags.writeable = False
        return a

    @property
    def B(self):
        """B (dim, rank), a read-only view of the live weights (stored transposed)."""
        self._ready()
        b = self._Bt.T
        b.flags.writeable = False
        return b

    def set_weights(self, A, B):
        """Replace both factors: A of shape (rank, dim), B of shape (dim, rank), both finite.

        Pending accumulated gradients are discarded. Raises ValueError/TypeError with the expected
        and actual shapes, leaving the adapter unchanged.
        """
        self._ready()
        # Not a hot path: any memory layout is accepted (e.g. another adapter's B view).
        cdef cnp.ndarray a = _as_f32(np.ascontiguousarray(A), "A")
        cdef cnp.ndarray b = _as_f32(np.ascontiguousarray(B), "B")
        if (<object>a).shape != (self.rank, self.dim):
            raise ValueError(f"A must have shape ({self.rank}, {self.dim}); got {_shape_str(a)}")
        if (<object>b).shape != (self.dim, self.rank):
            raise ValueError(f"B must have shape ({self.dim}, {self.rank}); got {_shape_str(b)}")
        cdef cnp.ndarray bt = np.ascontiguousarray((<object>b).T)
        _check_finite(a, "A")
        _check_finite(bt, "B")
        memcpy(self.pA, _fptr(a), self.rank * self.dim * sizeof(float))
        memcpy(self.pBt, _fptr(bt), self.rank * self.dim * sizeof(float))
        self.zero_grad()
        global _state_epoch
        _state_epoch += 1

    def zero_grad(self):
        """Discard the accumulated gradients."""
        self._ready()
        self._zero_grad()

    cdef void _zero_grad(self) noexcept:
        memset(self.pgA, 0, self.rank * self.dim * sizeof(float))
        memset(self.pgBt, 0, self.rank * self.dim * sizeof(float))
        self.pending = 0
        self._grad_bound = 0.0

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} cannot be pickled; pickle (A, B) and restore "
                        "them with set_weights(), or save the engine or router that owns it")

    def forward(self, x, out=None):
        """y = x + scale·B(A x) for x of shape (dim,) or (n, dim); returns float32 of x's shape.

        out: optional writeable C-contiguous float32 array of the same shape (may be x itself).
        float64/float16/integer input is copied to float32 first; non-contiguous input, NaN/Inf
        and wrong shapes raise ValueError, non-numeric dtypes TypeError. A single vector with
        NaN/Inf leaves out untouched; for a batch, rows before the bad one are already written.
        """
        if self.pA == NULL:
            self._ready()  # raises
        return _lora_forward(self, x, out)

    def accumulate_gradient(self, x, grad_y, weight=1.0):
        """Add weight·dL/dA and weight·dL/dB, given x and grad_y = dL/dy (shape (dim,) or (n, dim)).

        The rank-r outer products: dB += weight·scale·grad_y (A x)ᵀ, dA += weight·scale·(Bᵀ grad_y) xᵀ,
        summed over rows for a batch. Nothing moves until apply_accumulated(lr). Raises ValueError
        (nothing accumulated) for mismatched shapes, NaN/Inf, or a gradient so large that the
        float32 accumulators could overflow.
        """
        cdef cnp.ndarray a, g
        cdef size_t n = 1
        self._ready()
        cdef double w = _real(weight, "weight")
        if not (isfinite(w) and fabs(w) <= _F32_MAX):
            raise ValueError(f"weight must be a finite float32 number; got {weight}")
        if _is_f32_vector(x, self.dim) and _is_f32_vector(grad_y, self.dim):
            a, g = <cnp.ndarray>x, <cnp.ndarray>grad_y
        else:
            a = _as_f32(x, "x")
            g = _as_f32(grad_y, "grad_y")
            if not (1 <= cnp.PyArray_NDIM(a) <= 2
                    and cnp.PyArray_DIM(a, cnp.PyArray_NDIM(a) - 1) == self.dim):
                raise ValueError(f"x must have shape ({self.dim},) or (n, {self.dim}); "
                                 f"got {_shape_str(a)}")
            if (<object>a).shape != (<object>g).shape:
                raise ValueError(f"x and grad_y must have the same shape; got {_shape_str(a)} and "
                                 f"{_shape_str(g)}")
            if cnp.PyArray_NDIM(a) == 2:
                n = cnp.PyArray_DIM(a, 0)
        cdef size_t d = self.dim, i
        cdef const float *px = _fptr(a)
        cdef const float *pg = _fptr(g)
        cdef float coef[2 * SONA_MAX_RANK]
        cdef double room = _GRAD_LIMIT - self._grad_bound, total = 0
        cdef float added
        if n > 1:  # a batch is measured first, so a refused row leaves nothing half-added
            for i in range(n):
                added = sona_lora_grad_f32(px + i * d, pg + i * d, self.pA, self.pBt, d,
                                           self.rank, self.scale, <float>w, <float>room,
                                           NULL, NULL, coef)
                if added < 0:
                    self._refuse(px, pg, n)
                total += added
            if not total <= room:
                self._refuse(px, pg, n)
        for i in range(n):
            # the kernel adds nothing unless every element it adds is finite and <= room
            added = sona_lora_grad_f32(px + i * d, pg + i * d, self.pA, self.pBt, d, self.rank,
                                       self.scale, <float>w, <float>room, self.pgA,
                                       self.pgBt, coef)
            if added < 0:
                self._refuse(px, pg, n)
            self._grad_bound += added
        self.pending += n

    cdef int _refuse(self, const float *px, const float *pg, size_t n) except -1:
        """Raise the reason the gradient kernel refused to accumulate."""
        if not sona_maxabs_f32(px, n * self.dim) < INFINITY:
            raise ValueError("x contains NaN or Inf")
        if not sona_maxabs_f32(pg, n * self.dim) < INFINITY:
            raise ValueError("grad_y contains NaN or Inf")
        raise ValueError(f"gradient too large to accumulate in float32 (an element would pass "
                         f"{_GRAD_LIMIT - self._grad_bound:.3g}, the room left under "
                         f"{_GRAD_LIMIT:.0e}); scale x, grad_y or weight down, or "
                         f"apply_accumulated() first")

    def apply_accumulated(self, lr):
        """Gradient-descent step on BOTH factors: θ ← θ − lr·g, then clear the accumulators.

        The step's joint Euclidean norm over A and B is clipped to max_step, so weights stay finite
        and bounded for any accepted input. Returns the norm of the step taken. Raises ValueError
        for a negative or non-finite lr and RuntimeError when nothing was accumulated.
        """
        self._ready()
        cdef double step_lr = _real(lr, "lr")
        if not (isfinite(step_lr) and step_lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0; got {lr}")
        if self.pending == 0:
            raise RuntimeError("no accumulated gradient to apply: call accumulate_gradient() first")
        return self._apply_unchecked(step_lr)

    cdef double _apply_unchecked(self, double lr) noexcept:
        """The descent step itself (lr validated, something pending); returns the step norm."""
        cdef size_t n = self.rank * self.dim
        cdef double gnorm = sqrt(_sumsq(self.pgA, n) + _sumsq(self.pgBt, n)), step
        cdef double factor = self._clipped(lr, gnorm, &step)
        sona_axpy_f32(n, <float>-factor, self.pgA, self.pA)
        sona_axpy_f32(n, <float>-factor, self.pgBt, self.pBt)
        self._zero_grad()
        global _state_epoch
        _state_epoch += 1
        return step

    cdef bint _outer_step(self, const float *x, const float *g, double weight,
                          double lr) noexcept:
        """accumulate_gradient(x, g, weight) then apply_accumulated(lr) in one go, for compiled
        callers (the engine's instant loop): the gradient is rank-r, so its norm comes from 2r
        coefficients and two dot products, and no accumulator is touched. Returns False, and
        changes nothing, when the step would not be finite."""
        cdef size_t d = self.dim, r = self.rank, j
        cdef float u[SONA_MAX_RANK]
        cdef float h[SONA_MAX_RANK]
        sona_dot_rows_f32(self.pA, r, d, x, u)
        sona_dot_rows_f32(self.pBt, r, d, g, h)
        cdef double xx = sona_dot_f32(x, x, d), gg = sona_dot_f32(g, g, d)
        cdef double ws = weight * self.scale, n2 = 0
        for j in range(r):
            n2 += (ws * u[j]) ** 2 * gg + (ws * h[j]) ** 2 * xx
        cdef double gnorm = sqrt(n2), step
        if not isfinite(gnorm):
            return False
        cdef double factor = self._clipped(lr, gnorm, &step)
        for j in range(r):  # B rows first from the pre-step A·x, A rows from the pre-step B·g
            sona_axpy_f32(d, <float>(-factor * ws * u[j]), g, self.pBt + j * d)
            sona_axpy_f32(d, <float>(-factor * ws * h[j]), x, self.pA + j * d)
        global _state_epoch
        _state_epoch += 1
        return True

    cdef inline double _clipped(self, double lr, double gnorm, double *step) noexcept:
        """The factor that turns the gradient (norm gnorm) into the step, with |step| clipped to
        max_step; computed from gnorm, so a huge lr (lr·gnorm = inf) still gives the clipped
        step instead of none."""
        step[0] = lr * gnorm
        if step[0] > self.max_step:
            step[0] = self.max_step
            return self.max_step / gnorm
        return lr


cdef inline object _lora_forward(LoRAAdapter self, object x, object out):
    """LoRAAdapter.forward() after the initialisation check, shared with the engine's apply_*."""
    cdef cnp.ndarray a, o
    cdef float u[SONA_MAX_RANK]
    cdef cnp.npy_intp dim = self.dim
    cdef ptrdiff_t bad
    cdef int rc
    if _is_f32_vector(x, dim) and (out is None or (
            _is_f32_vector(out, dim) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
            and (out is x or not _overlap(<cnp.ndarray>out, <cnp.ndarray>x)))):
        o = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_FLOAT32, 0) if out is None else <cnp.ndarray>out
        rc = sona_lora_fwd_f32(_fptr(<cnp.ndarray>x), self.pA, self.pBt, dim, self.rank,
                               self.scale, _fptr(o), u)
        if rc:
            _forward_failed(rc == -2, "x")
        return o
    a = _vector_or_rows(x, self.dim, "x", False)
    o = _output(out, cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), "out", a, None, True)
    cdef size_t n = 1 if cnp.PyArray_NDIM(a) == 1 else cnp.PyArray_DIM(a, 0)
    cdef const float *px = _fptr(a)
    cdef float *po = _fptr(o)
    cdef size_t d = self.dim, r = self.rank
    cdef float s = self.scale
    if <Py_ssize_t>(n * d * r) >= _NOGIL_WORK:
        with nogil:
            bad = sona_lora_fwd_batch_f32(px, n, self.pA, self.pBt, d, r, s, po, NULL)
    else:
        bad = sona_lora_fwd_batch_f32(px, n, self.pA, self.pBt, d, r, s, po, NULL)
    if bad >= 0:
        _forward_failed(sona_maxabs_f32(px + bad * d, d) < INFINITY,
                        "x" if cnp.PyArray_NDIM(a) == 1 else f"x[{bad}]")
    return o


cdef int _forward_failed(bint overflow, str what) except -1:
    if overflow:
        raise ValueError(f"the result overflows float32 (beyond +-{_F32_MAX:.4g}): {what} too "
                         "large in magnitude for these weights; scale it down")
    raise ValueError(f"{what} contains NaN or Inf")
