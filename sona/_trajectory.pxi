# Trajectories: the lock-free ring of finished trajectories (TrajectoryBuffer, csrc/ring.c) and
# the bounded table of open ones (TrajectoryStore).
#
# GIL policy: start / record_step / end / record keep the GIL (each is tens of nanoseconds of C;
# releasing and re-taking the GIL would cost more). drain() releases it while it copies records
# out, so producers in other threads keep running during a large drain. The C ring itself needs no
# GIL at all: producers in other processes push concurrently.
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.long cimport PyLong_AsUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from libc.math cimport INFINITY, NAN, isfinite
from libc.stdint cimport uint16_t, uint32_t, uint64_t

import os as _os
import sys as _sys

cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF
cdef size_t _DRAIN_NOGIL_MIN = 32  # records; below this the drain is shorter than a GIL switch


class UnknownTrajectoryError(KeyError, ValueError):
    """A trajectory id that is not open: never started (in this process), already ended, or
    evicted (the open table overflowed, or the trajectory outlived the store's timeout).

    Subclasses KeyError (an id lookup failed) and ValueError (a bad argument), so either
    ``except`` clause catches it.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ""


cdef uint64_t _as_u64(object x, str what, uint64_t hi) except? 0xFFFFFFFFFFFFFFFF:
    """x as an integer in 0..hi (ints, numpy integers, anything with __index__)."""
    cdef uint64_t v
    if type(x) is not int:
        try:
            x = PyNumber_Index(x)
        except TypeError:
            raise TypeError(f"{what} must be an integer; got {type(x).__name__}") from None
    try:
        v = PyLong_AsUnsignedLongLong(x)
    except OverflowError:
        raise ValueError(f"{what} must be an integer in 0..{hi}; got {x}") from None
    if v > hi:
        raise ValueError(f"{what} must be an integer in 0..{hi}; got {x}")
    return v


cdef inline float _finite_f32(double v, str what) except? -1.0:
    if not (isfinite(v) and -_F32_MAX <= v <= _F32_MAX):
        raise ValueError(f"{what} must be a finite float32 number; got {v!r}")
    return <float>v


cdef tuple _ring_geometry(object capacity, object dim, object max_steps, object dtype):
    """Validated (capacity, dim, max_steps, dtype code, dtype name, total bytes)."""
    cdef uint64_t cap = _as_u64(capacity, "capacity", _U64_MAX)
    cdef uint64_t d = _as_u64(dim, "dim", _U64_MAX)
    cdef uint64_t ms = _as_u64(max_steps, "max_steps", _U64_MAX)
    if not 1 <= cap <= SONA_RING_MAX_CAPACITY:
        raise ValueError(f"capacity must be in 1..{SONA_RING_MAX_CAPACITY}; got {capacity}")
    if not 1 <= d <= SONA_RING_MAX_DIM:
        raise ValueError(f"dim must be in 1..{SONA_RING_MAX_DIM}; got {dim}")
    if ms > SONA_RING_MAX_STEPS:
        raise ValueError(f"max_steps must be in 0..{SONA_RING_MAX_STEPS}; got {max_steps}")
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16'; got {dtype!r}")
    cdef uint32_t code = SONA_RING_DTYPE_F16 if name == "float16" else SONA_RING_DTYPE_F32
    cdef size_t nbytes = sona_ring_bytes(<uint32_t>d, <uint32_t>ms, code, cap)
    if nbytes == 0:
        slot = sona_ring_slot_bytes(<uint32_t>d, <uint32_t>ms, code)
        raise ValueError(f"capacity={cap} slots of {slot} bytes (dim={d}, max_steps={ms}, "
                         f"{name}) is {cap * slot} bytes, over the {SONA_RING_MAX_BYTES}-byte limit")
    return cap, d, ms, code, name, nbytes


cdef object _open_shared_block(str name):
    """Maps an existing shared memory block without registering it with multiprocessing's
    resource tracker (which would unlink the block when *this* process exits: only the creator
    owns unlink). Returns an object with .close() that exports a writable buffer."""
    from multiprocessing import shared_memory as _shm_mod
    if _sys.version_info >= (3, 13):
        return _shm_mod.SharedMemory(name=name, track=False)
    if _os.name == "posix":
        try:
            import _posixshmem
            import mmap
        except ImportError:
            return _shm_mod.SharedMemory(name=name)
        fd = _posixshmem.shm_open(name if name.startswith("/") else "/" + name, _os.O_RDWR,
                                  mode=0o600)
        try:
            return mmap.mmap(fd, _os.fstat(fd).st_size)
        finally:
            _os.close(fd)
    return _shm_mod.SharedMemory(name=name)  # Windows: no resource tracker involved


cdef class TrajectoryBatch:
    """Records taken out of a TrajectoryBuffer by drain(), as arrays (n = len(batch)).

    ids (n,) uint64; embeddings (n, dim) float32 (float16 buffers are widened exactly);
    n_steps (n,) uint32; nodes (n, max_steps) uint32; scores, latencies_us, rewards
    (n, max_steps) float32, where step k of record i is valid for k < n_steps[i] and the rest is
    zero (a step recorded without a reward has reward NaN); qualities (n,) float32; start_ns and
    end_ns (n,) uint64, CLOCK_MONOTONIC nanoseconds (comparable between processes).
    """
    cdef readonly object ids, embeddings, n_steps, nodes, scores, latencies_us, rewards
    cdef readonly object qualities, start_ns, end_ns

    def __len__(self):
        return self.ids.shape[0]

    def __repr__(self):
        return (f"TrajectoryBatch(n={len(self)}, dim={self.embeddings.shape[1]}, "
                f"max_steps={self.nodes.shape[1]})")


cdef class TrajectoryBuffer:
    """Bounded lock-free ring of finished trajectories, optionally in shared memory.

    Producers (any thread, any attached process) push complete records; a full buffer drops the
    record and counts it (``dropped_count``), so a producer never waits. Consumers take records
    in batches with ``drain``. Each record holds the trajectory id, the query embedding (stored
    as float32, or float16 to halve the memory), up to ``max_steps`` steps (node id, score,
    latency in µs, reward), the step count, the quality and start/end timestamps.

    Parameters
    ----------
    capacity : int
        Number of record slots, 1..2**32 (and at most 1 TiB in total).
    dim : int
        Embedding length, 1..2**20.
    max_steps : int
        Steps per record, 0..4096 (default 8). Slot size grows by 16 bytes per step.
    dtype : "float32" or "float16"
        Storage type of the embedding. float16 rounds to nearest even and rejects values beyond
        ±65504.
    shared_memory : None, True, str or multiprocessing.shared_memory.SharedMemory
        None: private memory of this process. True: a new shared block (``shm_name`` tells
        others where to attach) that this buffer owns and unlinks on ``close()``. A str: the
        same, with that block name. A SharedMemory of at least ``nbytes_for(...)`` bytes: the
        ring is formatted inside it; the caller keeps owning it.

    Other processes attach with ``TrajectoryBuffer.attach(name)`` (or receive the buffer
    pickled, e.g. as a ``multiprocessing.Process`` argument, which attaches by name); attached
    buffers never unlink. The creator should outlive the users or call ``close()`` last.

    A shared header is re-checked before every use (another process may have overwritten it:
    ValueError, never a crash). A slot left half-written by a process killed mid-push (or
    half-read by one killed mid-drain) is skipped by ``drain()`` once it has stayed stuck for
    ``stuck_timeout_s`` seconds (default 5), and counted in ``skipped_count``.

    Raises
    ------
    ValueError
        capacity, dim or max_steps out of range, unknown dtype, block too small.
    MemoryError
        the allocation failed.

    Example
    -------
    >>> buf = TrajectoryBuffer(1024, dim=4, max_steps=3, dtype="float16")
    >>> buf.record(np.ones(4, np.float32), [(2, 0.9, 120.0)], quality=0.8)
    True
    >>> batch = buf.drain()
    >>> len(batch), int(batch.nodes[0, 0]), float(batch.qualities[0])
    (1, 2, 0.800000011920929)
    """
    cdef sona_ring *_ring
    cdef bint _private
    cdef Py_buffer _view
    cdef bint _has_view
    cdef object _block        # SharedMemory or mmap holding the ring that we close, or None
    cdef object _keep         # a caller's SharedMemory we attached to (kept alive, not closed)
    cdef object _shm_name
    cdef bint _owner          # created the shared block: unlinks it on close()
    cdef object _owner_pid
    cdef int _busy            # drains running without the GIL
    cdef float _limit         # largest |embedding value| the storage type holds
    cdef readonly Py_ssize_t capacity, dim, max_steps
    cdef readonly str dtype
    # A slot that stays stuck this long (a process killed mid-push or mid-drain) is skipped by
    # drain() and counted in skipped_count; a live process holds a slot for microseconds.
    cdef public double stuck_timeout_s
    cdef int _stuck_side
    cdef uint64_t _stuck_pos, _stuck_since_ns

    def __cinit__(self):
        self._ring = NULL
        self.stuck_timeout_s = 5.0
        self._has_view = False
        self._private = False
        self._owner = False
        self._busy = 0

    def __init__(self, capacity, dim, max_steps=8, dtype="float32", shared_memory=None):
        cap, d, ms, code, name, nbytes = _ring_geometry(capacity, dim, max_steps, dtype)
        cdef int rc
        cdef sona_ring *r = NULL
        if self._ring != NULL:
            raise RuntimeError("TrajectoryBuffer is already initialised")
        if shared_memory is None or shared_memory is False:
            rc = sona_ring_create(d, ms, code, cap, &r)
            if rc != SONA_RING_OK:
                raise MemoryError(f"cannot allocate {nbytes} bytes for a TrajectoryBuffer")
            self._ring, self._private = r, True
        else:
            from multiprocessing import shared_memory as _shm_mod
            if shared_memory is True or isinstance(shared_memory, str):
                block = _shm_mod.SharedMemory(
                    name=None if shared_memory is True else shared_memory, create=True,
                    size=nbytes)
                owner = True
            elif isinstance(shared_memory, _shm_mod.SharedMemory):
                block, owner = shared_memory, False
            else:
                raise TypeError("shared_memory must be None, True, a block name (str) or a "
                                "multiprocessing.shared_memory.SharedMemory; got "
                                f"{type(shared_memory).__name__}")
            try:
                if block.size < nbytes:
                    raise ValueError(f"shared memory block {block.name!r} has {block.size} "
                                     f"bytes; this buffer needs {nbytes} "
                                     "(see TrajectoryBuffer.nbytes_for)")
                self._take_view(block)
                rc = sona_ring_init(self._view.buf, <size_t>self._view.len, d, ms, code, cap)
                if rc != SONA_RING_OK:
                    raise ValueError(f"cannot format shared memory block {block.name!r} "
                                     f"(error {rc}: not 64-byte aligned?)")
            except BaseException:
                self._drop_view()
                if owner:
                    block.close()
                    block.unlink()
                raise
            self._ring = <sona_ring *>self._view.buf
            self._shm_name, self._owner = block.name, owner
            if owner:
                self._block = block  # ours: closed and unlinked by close()
            else:
                self._keep = block   # the caller's: kept alive, never closed by us
            self._owner_pid = _os.getpid()
        self._read_header()

    @staticmethod
    def nbytes_for(capacity, dim, max_steps=8, dtype="float32"):
        """Bytes a buffer of this geometry occupies (header + slots): the shared memory size."""
        return _ring_geometry(capacity, dim, max_steps, dtype)[5]

    @classmethod
    def attach(cls, shared_memory, *, capacity=None, dim=None, max_steps=None, dtype=None):
        """Attach to a buffer another process created in shared memory.

        ``shared_memory`` is the block name (``buffer.shm_name``) or a SharedMemory object. The
        header is validated (magic, format version, geometry, block size); pass any of capacity,
        dim, max_steps, dtype to also require those values. The attached buffer never unlinks
        the block; ``close()`` only unmaps it.

        Raises ValueError when the block holds no TrajectoryBuffer, another format version, an
        inconsistent header, or a geometry other than the one required; FileNotFoundError when
        no block has that name.
        """
        cdef TrajectoryBuffer self = cls.__new__(cls)
        cdef sona_ring *r = NULL
        from multiprocessing import shared_memory as _shm_mod
        if isinstance(shared_memory, str):
            block, name = _open_shared_block(shared_memory), shared_memory
            own_block = True
        elif isinstance(shared_memory, _shm_mod.SharedMemory):
            block, name, own_block = shared_memory, shared_memory.name, False
        else:
            raise TypeError("shared_memory must be a block name (str) or a "
                            f"multiprocessing.shared_memory.SharedMemory; got "
                            f"{type(shared_memory).__name__}")
        try:
            self._take_view(block)
            rc = sona_ring_attach(self._view.buf, <size_t>self._view.len, &r)
            what = f"shared memory block {name!r}"
            if rc == SONA_RING_EMAGIC:
                raise ValueError(f"{what} does not hold a sona TrajectoryBuffer (bad magic)")
            if rc == SONA_RING_EVERSION:
                raise ValueError(f"{what} holds a TrajectoryBuffer of another format version; "
                                 f"this sona reads version {SONA_RING_VERSION}")
            if rc != SONA_RING_OK:
                raise ValueError(f"{what} holds an inconsistent TrajectoryBuffer header or is "
                                 f"smaller than the header says ({self._view.len} bytes)")
            self._ring = r
            self._read_header()
            want = {"capacity": capacity, "dim": dim, "max_steps": max_steps,
                    "dtype": None if dtype is None else np.dtype(dtype).name}
            for key, value in want.items():
                if value is not None and getattr(self, key) != value:
                    raise ValueError(f"{what} holds a buffer with {key}={getattr(self, key)!r}; "
                                     f"expected {value!r}")
        except BaseException:
            self._ring = NULL
            self._drop_view()
            if own_block:
                block.close()
            raise
        self._shm_name = name
        if own_block:
            self._block = block
        else:
            self._keep = block
        return self

    cdef int _take_view(self, object block) except -1:
        buf = block.buf if hasattr(block, "buf") else block
        PyObject_GetBuffer(buf, &self._view, PyBUF_WRITABLE)
        self._has_view = True
        if (<size_t>self._view.buf) % 64 != 0:
            raise ValueError("shared memory block is not 64-byte aligned")
        return 0

    cdef void _drop_view(self) noexcept:
        if self._has_view:
            PyBuffer_Release(&self._view)
            self._has_view = False

    cdef void _read_header(self) noexcept:
        self.capacity = <Py_ssize_t>sona_ring_capacity(self._ring)
        self.dim = sona_ring_dim(self._ring)
        self.max_steps = sona_ring_max_steps(self._ring)
        f16 = sona_ring_dtype(self._ring) == SONA_RING_DTYPE_F16
        self.dtype = "float16" if f16 else "float32"
        self._limit = _F16_MAX if f16 else _F32_MAX

    cdef int _check_open(self) except -1:
        """Open, and for a shared block, a header still as attached: another process can write
        anywhere in it, and every C call trusts the geometry."""
        if self._ring == NULL:
            raise ValueError("TrajectoryBuffer is closed")
        if not self._private and (
                sona_ring_validate(self._ring, <size_t>self._view.len) != SONA_RING_OK
                or sona_ring_dim(self._ring) != <uint32_t>self.dim
                or sona_ring_max_steps(self._ring) != <uint32_t>self.max_steps
                or sona_ring_capacity(self._ring) != <uint64_t>self.capacity
                or (sona_ring_dtype(self._ring) == SONA_RING_DTYPE_F16) != (self.dtype == "float16")):
            raise ValueError(f"the header of shared TrajectoryBuffer {self._shm_name!r} was "
                             "overwritten (corrupted shared memory); close it and create a new "
                             "buffer")
        return 0

    cdef void _unstick(self) noexcept:
        """Skips a slot that has looked stuck at the same position for stuck_timeout_s."""
        cdef uint64_t pos = 0
        cdef int side = sona_ring_stuck(self._ring, &pos)
        cdef uint64_t now = sona_now_ns()
        if side == 0:
            self._stuck_side = 0
        elif side != self._stuck_side or pos != self._stuck_pos:
            self._stuck_side, self._stuck_pos, self._stuck_since_ns = side, pos, now
        elif <double>(now - self._stuck_since_ns) >= self.stuck_timeout_s * 1e9:
            sona_ring_skip(self._ring, side, pos)
            self._stuck_side = 0

    cdef cnp.ndarray _embedding(self, object x):
        """x as a float32 vector of length dim whose values the storage type can hold."""
        cdef cnp.ndarray a
        if _is_f32_vector(x, self.dim):
            a = <cnp.ndarray>x
        else:
            a = _vector(x, self.dim, "embedding")
        cdef float m = sona_maxabs_f32(<const float *>cnp.PyArray_DATA(a), <size_t>self.dim)
        if not (m <= self._limit):
            if m == INFINITY:
                raise ValueError("embedding contains NaN or Inf")
            raise ValueError(f"embedding has a value of magnitude {m:g}, beyond float16's "
                             f"largest finite value 65504 (this buffer stores float16; use "
                             f"dtype='float32' for such embeddings)")
        return a

    # ---- producers ------------------------------------------------------------------------

    def new_id(self):
        """A fresh trajectory id, unique among all processes attached to this buffer."""
        self._check_open()
        return sona_ring_next_id(self._ring)

    def record(self, embedding, steps=(), *, quality, trajectory_id=None, start_ns=None,
               end_ns=None):
        """Push one finished trajectory; returns True if stored, False if dropped (buffer full).

        ``steps`` is a sequence of (node_id, score, latency_us) or (node_id, score,
        latency_us, reward) tuples, at most ``max_steps`` of them. ``trajectory_id`` defaults
        to ``new_id()``; ``start_ns``/``end_ns`` (CLOCK_MONOTONIC ns) default to now.

        Raises TypeError/ValueError (nothing is pushed): wrong embedding length, dtype or
        layout, NaN/Inf anywhere, quality outside [0, 1], too many steps, negative latency,
        node id outside 0..2**32-1, end_ns < start_ns.
        """
        self._check_open()
        cdef cnp.ndarray e = self._embedding(embedding)
        cdef double q = _check_quality(quality)
        steps = list(steps)
        cdef Py_ssize_t k = len(steps), i
        if k > self.max_steps:
            raise ValueError(f"record too large: {k} steps, this buffer holds at most "
                             f"max_steps={self.max_steps}")
        cdef uint64_t now = sona_now_ns()
        cdef uint64_t t0 = now if start_ns is None else _as_u64(start_ns, "start_ns", _U64_MAX)
        cdef uint64_t t1 = now if end_ns is None else _as_u64(end_ns, "end_ns", _U64_MAX)
        if start_ns is not None and end_ns is None and t0 > t1:
            t1 = t0
        if t1 < t0:
            raise ValueError(f"end_ns must be >= start_ns; got start_ns={t0}, end_ns={t1}")
        cdef uint64_t tid = 0
        if trajectory_id is not None:
            tid = _as_u64(trajectory_id, "trajectory_id", _U64_MAX)
        cdef sona_traj_step *st = <sona_traj_step *>PyMem_Malloc((k if k else 1) * sizeof(sona_traj_step))
        if st == NULL:
            raise MemoryError()
        try:
            for i in range(k):
                step = steps[i]
                if not isinstance(step, tuple) or not 3 <= len(step) <= 4:
                    raise ValueError("each step must be a tuple (node_id, score, latency_us"
                                     f"[, reward]); step {i} is {step!r}")
                st[i].node = <uint32_t>_as_u64(step[0], f"step {i} node_id", 0xFFFFFFFF)
                st[i].score = _finite_f32(_real(step[1], f"step {i} score"), f"step {i} score")
                st[i].latency_us = _finite_f32(_real(step[2], f"step {i} latency_us"),
                                               f"step {i} latency_us")
                if st[i].latency_us < 0:
                    raise ValueError(f"step {i} latency_us must be >= 0; got {step[2]!r}")
                st[i].reward = NAN
                if len(step) == 4 and step[3] is not None:
                    st[i].reward = _finite_f32(_real(step[3], f"step {i} reward"),
                                               f"step {i} reward")
            if trajectory_id is None:
                tid = sona_ring_next_id(self._ring)
            rc = sona_ring_push(self._ring, tid, <const float *>cnp.PyArray_DATA(e), st,
                                <uint32_t>k, <float>q, t0, t1)
        finally:
            PyMem_Free(st)
        return rc == 1

    # ---- consumers ------------------------------------------------------------------------

    def drain(self, max_records=None):
        """Take up to ``max_records`` records (default: all present now) as a TrajectoryBatch.

        Records come out in push order per producer; each record is delivered to exactly one
        consumer, whole. The GIL is released while records are copied when there are many.
        """
        self._check_open()
        cdef uint64_t avail = sona_ring_len(self._ring)
        cdef uint64_t want = avail
        if max_records is not None:
            want = _as_u64(max_records, "max_records", _U64_MAX)
            if want > avail:
                want = avail
        cdef cnp.npy_intp n = <cnp.npy_intp>want
        cdef cnp.npy_intp d2[2]
        d2[0] = n
        d2[1] = self.dim
        emb = cnp.PyArray_EMPTY(2, d2, cnp.NPY_FLOAT32, 0)
        d2[1] = self.max_steps
        nodes = cnp.PyArray_EMPTY(2, d2, cnp.NPY_UINT32, 0)
        scores = cnp.PyArray_EMPTY(2, d2, cnp.NPY_FLOAT32, 0)
        lats = cnp.PyArray_EMPTY(2, d2, cnp.NPY_FLOAT32, 0)
        rewards = cnp.PyArray_EMPTY(2, d2, cnp.NPY_FLOAT32, 0)
        ids = cnp.PyArray_EMPTY(1, &n, cnp.NPY_UINT64, 0)
        nsteps = cnp.PyArray_EMPTY(1, &n, cnp.NPY_UINT32, 0)
        quals = cnp.PyArray_EMPTY(1, &n, cnp.NPY_FLOAT32, 0)
        t0 = cnp.PyArray_EMPTY(1, &n, cnp.NPY_UINT64, 0)
        t1 = cnp.PyArray_EMPTY(1, &n, cnp.NPY_UINT64, 0)
        cdef sona_traj_batch b
        b.ids = <uint64_t *>cnp.PyArray_DATA(ids)
        b.embeddings = <float *>cnp.PyArray_DATA(emb)
        b.n_steps = <uint32_t *>cnp.PyArray_DATA(nsteps)
        b.nodes = <uint32_t *>cnp.PyArray_DATA(nodes)
        b.scores = <float *>cnp.PyArray_DATA(scores)
        b.latencies_us = <float *>cnp.PyArray_DATA(lats)
        b.rewards = <float *>cnp.PyArray_DATA(rewards)
        b.qualities = <float *>cnp.PyArray_DATA(quals)
        b.t_start_ns = <uint64_t *>cnp.PyArray_DATA(t0)
        b.t_end_ns = <uint64_t *>cnp.PyArray_DATA(t1)
        cdef size_t got = 0
        cdef sona_ring *r = self._ring
        if want >= _DRAIN_NOGIL_MIN:
            self._busy += 1
            with nogil:
                got = sona_ring_pop_batch(r, <size_t>want, &b)
            self._busy -= 1
        elif want:
            got = sona_ring_pop_batch(r, <size_t>want, &b)
        cdef TrajectoryBatch out = TrajectoryBatch.__new__(TrajectoryBatch)
        if got < want:  # another consumer took some meanwhile
            ids, emb, nsteps, nodes = ids[:got], emb[:got], nsteps[:got], nodes[:got]
            scores, lats, rewards = scores[:got], lats[:got], rewards[:got]
            quals, t0, t1 = quals[:got], t0[:got], t1[:got]
        out.ids, out.embeddings, out.n_steps, out.nodes = ids, emb, nsteps, nodes
        out.scores, out.latencies_us, out.rewards = scores, lats, rewards
        out.qualities, out.start_ns, out.end_ns = quals, t0, t1
        self._unstick()
        return out

    # ---- state ----------------------------------------------------------------------------

    def __len__(self):
        """Records waiting to be drained (a snapshot while producers run)."""
        self._check_open()
        return sona_ring_len(self._ring)

    @property
    def dropped_count(self):
        """Records dropped because the buffer was full, by every attached process."""
        self._check_open()
        return sona_ring_dropped(self._ring)

    @property
    def pushed_count(self):
        """Records accepted since the buffer was created, by every attached process."""
        self._check_open()
        return sona_ring_pushed(self._ring)

    @property
    def skipped_count(self):
        """Stuck slots skipped (a process killed mid-push or mid-drain, or a scribbled slot):
        their records, if any, are lost. See stuck_timeout_s."""
        self._check_open()
        return sona_ring_skipped(self._ring)

    @property
    def drained_count(self):
        """Records taken out by consumers since the buffer was created."""
        self._check_open()
        return sona_ring_popped(self._ring)

    @property
    def nbytes(self):
        """Bytes of the whole buffer (header + capacity slots)."""
        self._check_open()
        return sona_ring_total_size(self._ring)

    @property
    def bytes_per_record(self):
        """Bytes of one slot: the memory each stored trajectory occupies (multiple of 64)."""
        self._check_open()
        return sona_ring_slot_size(self._ring)

    @property
    def shm_name(self):
        """Name of the shared memory block to attach to, or None for a private buffer."""
        return self._shm_name

    @property
    def closed(self):
        return self._ring == NULL

    def close(self):
        """Release the memory (and unlink the shared block if this buffer created it).

        Further use raises ValueError. Raises RuntimeError while a drain is running.
        """
        if self._busy:
            raise RuntimeError("TrajectoryBuffer.close() while a drain is running")
        if self._ring == NULL:
            return
        if self._private:
            sona_ring_free(self._ring)
            self._ring = NULL
            self._private = False
            return
        self._ring = NULL
        self._drop_view()
        block, self._block, self._keep = self._block, None, None
        if block is not None:
            block.close()
            if self._owner and self._owner_pid == _os.getpid():
                block.unlink()
        self._owner = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):
        if self._shm_name is None:
            raise TypeError("a private TrajectoryBuffer cannot be pickled; create it with "
                            "shared_memory=True to share it with other processes")
        return (_attach_trajectory_buffer, (self._shm_name,))

    def __dealloc__(self):
        if self._private and self._ring != NULL:
            sona_ring_free(self._ring)
        self._ring = NULL
        self._drop_view()
        if self._owner and self._block is not None:
            try:
                if self._owner_pid == _os.getpid():
                    self._block.close()
                    self._block.unlink()
            except Exception:
                pass

    def __repr__(self):
        if self._ring == NULL:
            return "TrajectoryBuffer(closed)"
        where = "private" if self._shm_name is None else f"shared_memory={self._shm_name!r}"
        return (f"TrajectoryBuffer(capacity={self.capacity}, dim={self.dim}, "
                f"max_steps={self.max_steps}, dtype={self.dtype!r}, {where}, len={len(self)})")


def _attach_trajectory_buffer(name):
    return TrajectoryBuffer.attach(name)


cdef class TrajectoryStore:
    """Bounded table of open (started, not yet ended) trajectories feeding a TrajectoryBuffer.

    ``start`` opens a trajectory and returns its id (unique across every process attached to
    the buffer, never reused); ``record_step`` appends steps; ``end`` closes it and pushes the
    finished record to the buffer. Nothing leaks: when ``max_open`` trajectories are open,
    starting another evicts the oldest, and a trajectory open longer than ``timeout_s`` is
    evicted the next time the store looks at it (any call); both are counted. The table is
    allocated once (``nbytes``), per process, and is safe to use from many threads (a spinlock
    held for tens of nanoseconds; the GIL is not relied on).

    Why per process: a trajectory is started and ended by the same request handler, so only the
    finished record has to cross processes (through the shared buffer); ids stay unique across
    processes because they come from the buffer's shared counter; and a worker that dies takes
    its open trajectories with it instead of leaving a shared table locked or leaking.

    Parameters
    ----------
    buffer : TrajectoryBuffer
    max_open : int
        1..2**24 open trajectories (default 1024).
    timeout_s : float or None
        Seconds after which an open trajectory is abandoned (default 300); None: never.

    Example
    -------
    >>> buf = TrajectoryBuffer(1024, dim=4)
    >>> store = TrajectoryStore(buf, max_open=64, timeout_s=60)
    >>> tid = store.start(np.ones(4, np.float32))
    >>> store.record_step(tid, 3, 0.9, 120.0)
    >>> store.end(tid, 0.75)
    True
    """
    cdef sona_traj_store *_s
    cdef readonly TrajectoryBuffer buffer
    cdef readonly object timeout_s

    def __cinit__(self):
        self._s = NULL

    def __init__(self, TrajectoryBuffer buffer not None, max_open=1024, timeout_s=300.0):
        buffer._check_open()
        cdef uint64_t mo = _as_u64(max_open, "max_open", _U64_MAX)
        if not 1 <= mo <= SONA_STORE_MAX_OPEN:
            raise ValueError(f"max_open must be in 1..{SONA_STORE_MAX_OPEN}; got {max_open}")
        cdef uint64_t tns = 0
        cdef double t
        if timeout_s is not None:
            t = timeout_s
            if not (isfinite(t) and t > 0 and t < 1.8e10):
                raise ValueError("timeout_s must be a finite number of seconds > 0 (or None for "
                                 f"no timeout); got {timeout_s!r}")
            tns = <uint64_t>(t * 1e9)
            if tns == 0:
                tns = 1
        if self._s != NULL:
            raise RuntimeError("TrajectoryStore is already initialised")
        self._s = sona_store_new(buffer._ring, <uint32_t>mo, tns)
        if self._s == NULL:
            raise MemoryError(f"cannot allocate a TrajectoryStore with max_open={mo}")
        self.buffer = buffer
        self.timeout_s = None if timeout_s is None else float(timeout_s)

    def __dealloc__(self):
        if self._s != NULL:
            sona_store_free(self._s)
            self._s = NULL

    cdef int _check(self) except -1:
        """The store was initialised and its buffer is open (and, shared, has a sound header):
        every method checks this before touching the C state."""
        if self._s == NULL:
            raise RuntimeError("TrajectoryStore was not initialised (its __init__ did not run)")
        self.buffer._check_open()
        return 0

    cdef int _fail(self, int rc, uint64_t tid) except -1:
        if rc == SONA_TRAJ_ENOTFOUND:
            raise UnknownTrajectoryError(
                f"trajectory id {tid} is not open in this store: never started here, already "
                f"ended, or evicted (max_open={self.max_open} exceeded, or open longer than "
                f"timeout_s={self.timeout_s})")
        if rc == SONA_TRAJ_ETIMEDOUT:
            raise UnknownTrajectoryError(
                f"trajectory id {tid} was evicted: open longer than timeout_s={self.timeout_s}")
        if rc == SONA_TRAJ_EFULL:
            raise ValueError(f"trajectory id {tid} already has max_steps="
                             f"{self.buffer.max_steps} steps; cannot record another")
        raise RuntimeError(f"trajectory store error {rc}")

    def start(self, embedding):
        """Open a trajectory for this query embedding (length dim, finite); returns its id.

        May evict the oldest open trajectory (table full) and any that timed out.
        """
        self._check()
        cdef cnp.ndarray e = self.buffer._embedding(embedding)
        cdef uint64_t tid
        sona_store_start(self._s, <const float *>cnp.PyArray_DATA(e), &tid)
        return tid

    def record_step(self, trajectory_id, node_id, score, latency_us, reward=None):
        """Append a step (node id 0..2**32-1, finite score, latency in µs >= 0, optional
        finite reward; stored as NaN when omitted).

        Raises UnknownTrajectoryError (a KeyError and ValueError) for an id that is not open,
        ValueError for bad values or when the trajectory already has max_steps steps (state
        unchanged).
        """
        self._check()
        cdef uint64_t tid = _as_u64(trajectory_id, "trajectory_id", _U64_MAX)
        cdef uint32_t node = <uint32_t>_as_u64(node_id, "node_id", 0xFFFFFFFF)
        cdef float s = _finite_f32(_real(score, "score"), "score")
        cdef float lat = _finite_f32(_real(latency_us, "latency_us"), "latency_us")
        if lat < 0:
            raise ValueError(f"latency_us must be >= 0; got {latency_us!r}")
        cdef float rw = NAN
        if reward is not None:
            rw = _finite_f32(_real(reward, "reward"), "reward")
        cdef int rc = sona_store_step(self._s, tid, node, s, lat, rw)
        if rc != 0:
            self._fail(rc, tid)

    def end(self, trajectory_id, quality):
        """Close a trajectory with its quality in [0, 1] and push it to the buffer.

        Returns True if stored, False if the buffer was full (the record is dropped and
        counted in buffer.dropped_count; the trajectory is closed either way).
        Raises UnknownTrajectoryError for an id that is not open, ValueError for a quality
        outside [0, 1] (state unchanged).
        """
        self._check()
        cdef uint64_t tid = _as_u64(trajectory_id, "trajectory_id", _U64_MAX)
        cdef float q = <float>_check_quality(quality)
        cdef int rc = sona_store_end(self._s, tid, q)
        if rc < 0:
            self._fail(rc, tid)
        return rc == 1

    def cancel(self, trajectory_id):
        """Forget an open trajectory without recording it (UnknownTrajectoryError if not open)."""
        self._check()
        cdef uint64_t tid = _as_u64(trajectory_id, "trajectory_id", _U64_MAX)
        cdef int rc = sona_store_cancel(self._s, tid)
        if rc != 0:
            self._fail(rc, tid)

    def evict_expired(self):
        """Evict every trajectory open longer than timeout_s now; returns how many."""
        self._check()
        return sona_store_evict_expired(self._s)

    cdef sona_store_stats _stats(self) except *:
        cdef sona_store_stats st
        if self._s == NULL:
            raise RuntimeError("TrajectoryStore was not initialised (its __init__ did not run)")
        sona_store_get_stats(self._s, &st)
        return st

    def __len__(self):
        return self._stats().open

    @property
    def open_count(self):
        """Trajectories open now (at most max_open)."""
        return self._stats().open

    @property
    def evicted_count(self):
        """Trajectories evicted unfinished, by overflow or timeout."""
        cdef sona_store_stats st = self._stats()
        return st.evicted_overflow + st.evicted_timeout

    @property
    def evicted_overflow_count(self):
        return self._stats().evicted_overflow

    @property
    def evicted_timeout_count(self):
        return self._stats().evicted_timeout

    @property
    def started_count(self):
        return self._stats().started

    @property
    def ended_count(self):
        return self._stats().ended

    @property
    def max_open(self):
        self._stats()  # raises when not initialised
        return sona_store_max_open(self._s)

    @property
    def nbytes(self):
        """Heap bytes of the table (fixed at construction)."""
        self._stats()
        return sona_store_bytes(self._s)

    def stats(self):
        """Counters as a plain dict."""
        cdef sona_store_stats st = self._stats()
        return {"open": st.open, "started": st.started, "ended": st.ended,
                "cancelled": st.cancelled, "evicted_overflow": st.evicted_overflow,
                "evicted_timeout": st.evicted_timeout}

    def __reduce__(self):
        raise TypeError("a TrajectoryStore is per process and cannot be pickled; pickle its "
                        "shared buffer and create a store on it in the other process")

    def __repr__(self):
        if self._s == NULL:
            return "TrajectoryStore(uninitialised)"
        return (f"TrajectoryStore(max_open={self.max_open}, timeout_s={self.timeout_s}, "
                f"open={self.open_count})")


# ---- float16 conversion, exposed for tests and benchmarks -----------------------------------

_HALF_IMPLS = {"auto": SONA_HALF_AUTO, "scalar": SONA_HALF_SCALAR, "f16c": SONA_HALF_F16C}


# The float16 conversion is chosen on its own (F16C when the CPU has it; results are identical
# either way). SONA_BACKEND=scalar at import also selects the portable conversion, so a scalar CI
# run exercises that path; set_backend() does not switch it (use _half_impl).
if _os.environ.get("SONA_BACKEND", "").strip().lower() == "scalar":
    sona_half_select(SONA_HALF_SCALAR)


def _half_impl(name=None):
    """The float16 conversion in use ("scalar" or "f16c"); with a name ("auto", "scalar",
    "f16c"), select it first ("f16c" falls back to "scalar" on CPUs without F16C)."""
    cdef int mode = -1
    if name is not None:
        if name not in _HALF_IMPLS:
            raise ValueError(f"unknown float16 implementation {name!r}; valid: "
                             f"{', '.join(_HALF_IMPLS)}")
        mode = _HALF_IMPLS[name]
    return "f16c" if sona_half_select(mode) == SONA_HALF_F16C else "scalar"


def _f32_to_f16_bits(x):
    """float32 array -> uint16 array of IEEE binary16 bits, via the active implementation."""
    cdef cnp.ndarray a = np.ascontiguousarray(x, dtype=np.float32)
    cdef cnp.ndarray out = np.empty((<object>a).shape, np.uint16)
    sona_f32_to_f16(<const float *>cnp.PyArray_DATA(a), <uint16_t *>cnp.PyArray_DATA(out),
                    <size_t>a.size)
    return out


def _f16_bits_to_f32(h):
    """uint16 array of binary16 bits -> float32 array, via the active implementation."""
    cdef cnp.ndarray a = np.ascontiguousarray(h, dtype=np.uint16)
    cdef cnp.ndarray out = np.empty((<object>a).shape, np.float32)
    sona_f16_to_f32(<const uint16_t *>cnp.PyArray_DATA(a), <float *>cnp.PyArray_DATA(out),
                    <size_t>a.size)
    return out
