# Optimiser kernels on caller-owned float32 arrays (in place).


cdef cnp.ndarray _inout(object a, Py_ssize_t n, str name):
    """A writeable C-contiguous native float32 array of n elements, updated in place (no
    conversion)."""
    if not cnp.PyArray_Check(a) or not _native_f32(<cnp.ndarray>a):
        raise TypeError(f"{name} must be a float32 numpy array in native byte order (it is "
                        f"updated in place); got {type(a).__name__}"
                        + (f" of dtype {a.dtype.str!r}" if cnp.PyArray_Check(a) else ""))
    cdef cnp.ndarray o = <cnp.ndarray>a
    if not cnp.PyArray_IS_C_CONTIGUOUS(o) or not cnp.PyArray_ISWRITEABLE(o):
        raise ValueError(f"{name} must be writeable and C-contiguous")
    if cnp.PyArray_SIZE(o) != n:
        raise ValueError(f"{name} must have {n} elements like theta; got {cnp.PyArray_SIZE(o)}")
    return o


def adam_step(theta, m, v, g, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, gscale=1.0,
              fisher=None, anchor=None, lam=0.0):
    """One Adam descent step, in place: theta, m, v are float32 arrays updated where they are.

    The effective gradient is gscale·g + lam·fisher⊙(theta − anchor) (the EWC++ pull, when fisher
    and anchor are given); t >= 1 is the step number for the bias corrections. theta, m and v
    must not overlap each other or the inputs. A step that would take theta, m or v past
    float32's range raises ValueError and leaves all three unchanged.
    """
    lr, beta1, beta2 = _real(lr, "lr"), _real(beta1, "beta1"), _real(beta2, "beta2")
    eps, gscale, lam = _real(eps, "eps"), _real(gscale, "gscale"), _real(lam, "lam")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(_as_f32(theta, "theta"))
    cdef cnp.ndarray th = _inout(theta, n, "theta")
    cdef cnp.ndarray mm = _inout(m, n, "m")
    cdef cnp.ndarray vv = _inout(v, n, "v")
    cdef cnp.ndarray gg = _as_f32(g, "g")
    if cnp.PyArray_SIZE(gg) != n:
        raise ValueError(f"g must have {n} elements like theta; got {cnp.PyArray_SIZE(gg)}")
    _check_finite(gg, "g")
    t = _int_in(t, "t", 1, 0xFFFFFFFF)
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
    _apart((th, mm, vv), (th, mm, vv, gg, F, anc), ("theta", "m", "v", "g", "fisher", "anchor"))
    cdef sona_adam_hp hp
    hp.lr, hp.beta1, hp.beta2, hp.eps = lr, beta1, beta2, eps
    hp.bc1, hp.bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
    # the step is taken on copies and kept only if finite: huge lr, gscale or lam would
    # otherwise leave Inf in the caller's arrays
    cdef cnp.ndarray th2 = th.copy(), m2 = mm.copy(), v2 = vv.copy()
    sona_adam_f32(_fptr(th2), _fptr(m2), _fptr(v2), _fptr(gg), gscale, n, &hp,
                  NULL if F is None else _fptr(F), NULL if anc is None else _fptr(anc), lam)
    for name, arr in (("theta", th2), ("m", m2), ("v", v2)):
        if not sona_maxabs_f32(_fptr(arr), <size_t>n) < INFINITY:
            raise ValueError(f"the step takes {name} past float32's range (+-{_F32_MAX:.4g}); "
                             f"lower lr (got {lr:g}), gscale or lam")
    memcpy(_fptr(th), _fptr(th2), n * sizeof(float))
    memcpy(_fptr(mm), _fptr(m2), n * sizeof(float))
    memcpy(_fptr(vv), _fptr(v2), n * sizeof(float))


def fisher_update(fisher, g, alpha, gscale=1.0):
    """Online diagonal Fisher, in place: fisher ← (1 − alpha)·fisher + alpha·(gscale·g)².

    g must not overlap fisher unless it is fisher itself. A result past float32's range raises
    ValueError and leaves fisher unchanged."""
    alpha, gscale = _real(alpha, "alpha"), _real(gscale, "gscale")
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
    _check_apart(F, gg, "fisher", True)
    cdef cnp.ndarray F2 = F.copy()
    sona_fisher_update_f32(_fptr(F2), _fptr(gg), gscale, n, alpha)
    if not sona_maxabs_f32(_fptr(F2), <size_t>n) < INFINITY:
        raise ValueError(f"the update takes fisher past float32's range (+-{_F32_MAX:.4g}); "
                         f"g or gscale (got {gscale:g}) too large")
    memcpy(_fptr(F), _fptr(F2), n * sizeof(float))


cdef int _apart(tuple written, tuple read, tuple names) except -1:
    """No array updated in place overlaps another argument (ValueError naming both)."""
    cdef Py_ssize_t i, j
    for i in range(len(written)):
        for j in range(len(read)):
            if read[j] is None or read[j] is written[i] and j == i:
                continue
            if _overlap(<cnp.ndarray>written[i], <cnp.ndarray>read[j]):
                raise ValueError(f"{names[i]} overlaps {names[j]} in memory (the same buffer or "
                                 f"a view of it); in-place arrays must be separate")
    return 0
