# Optimiser kernels on caller-owned float32 arrays (in place).


cdef cnp.ndarray _inout(object a, Py_ssize_t n, str name):
    """A writeable C-contiguous float32 array of n elements, updated in place (no conversion)."""
    if not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(<cnp.ndarray>a) != cnp.NPY_FLOAT32:
        raise TypeError(f"{name} must be a float32 numpy array (it is updated in place)")
    cdef cnp.ndarray o = <cnp.ndarray>a
    if not cnp.PyArray_IS_C_CONTIGUOUS(o) or not cnp.PyArray_ISWRITEABLE(o):
        raise ValueError(f"{name} must be writeable and C-contiguous")
    if cnp.PyArray_SIZE(o) != n:
        raise ValueError(f"{name} must have {n} elements like theta; got {cnp.PyArray_SIZE(o)}")
    return o


def adam_step(theta, m, v, g, int t, double lr=1e-3, double beta1=0.9, double beta2=0.999,
              double eps=1e-8, double gscale=1.0, fisher=None, anchor=None, double lam=0.0):
    """One Adam descent step, in place: theta, m, v are float32 arrays updated where they are.

    The effective gradient is gscale·g + lam·fisher⊙(theta − anchor) (the EWC++ pull, when fisher
    and anchor are given); t >= 1 is the step number for the bias corrections.
    """
    cdef Py_ssize_t n = cnp.PyArray_SIZE(_as_f32(theta, "theta"))
    cdef cnp.ndarray th = _inout(theta, n, "theta")
    cdef cnp.ndarray mm = _inout(m, n, "m")
    cdef cnp.ndarray vv = _inout(v, n, "v")
    cdef cnp.ndarray gg = _as_f32(g, "g")
    if cnp.PyArray_SIZE(gg) != n:
        raise ValueError(f"g must have {n} elements like theta; got {cnp.PyArray_SIZE(gg)}")
    _check_finite(gg, "g")
    if t < 1:
        raise ValueError(f"t must be >= 1; got {t}")
    for name, val in (("lr", lr), ("eps", eps), ("gscale", gscale), ("lam", lam)):
        if not isfinite(val):
            raise ValueError(f"{name} must be finite; got {val}")
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1 and eps > 0 and lr >= 0 and lam >= 0):
        raise ValueError("need 0 <= beta1, beta2 < 1, eps > 0, lr >= 0 and lam >= 0")
    cdef cnp.ndarray F = None, anc = None
    if (fisher is None) != (anchor is None):
        raise ValueError("fisher and anchor go together: pass both or neither")
    if fisher is not None:
        F = _as_f32(fisher, "fisher")
        anc = _as_f32(anchor, "anchor")
        if cnp.PyArray_SIZE(F) != n or cnp.PyArray_SIZE(anc) != n:
            raise ValueError(f"fisher and anchor must have {n} elements like theta")
        _check_finite(F, "fisher")
        _check_finite(anc, "anchor")
    cdef sona_adam_hp hp
    hp.lr, hp.beta1, hp.beta2, hp.eps = lr, beta1, beta2, eps
    hp.bc1, hp.bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
    sona_adam_f32(_fptr(th), _fptr(mm), _fptr(vv), _fptr(gg), gscale, n, &hp,
                  NULL if F is None else _fptr(F), NULL if anc is None else _fptr(anc), lam)


def fisher_update(fisher, g, double alpha, double gscale=1.0):
    """Online diagonal Fisher, in place: fisher ← (1 − alpha)·fisher + alpha·(gscale·g)²."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(_as_f32(fisher, "fisher"))
    cdef cnp.ndarray F = _inout(fisher, n, "fisher")
    cdef cnp.ndarray gg = _as_f32(g, "g")
    if cnp.PyArray_SIZE(gg) != n:
        raise ValueError(f"g must have {n} elements like fisher; got {cnp.PyArray_SIZE(gg)}")
    _check_finite(gg, "g")
    if not (0 <= alpha <= 1):
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    if not isfinite(gscale):
        raise ValueError(f"gscale must be finite; got {gscale}")
    sona_fisher_update_f32(_fptr(F), _fptr(gg), gscale, n, alpha)
