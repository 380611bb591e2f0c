"""Router replicas that learn as one: event-sourced learning on a Redis Stream.

Learning is a deterministic transition on an outcome (``router.learn``): the same ordered outcomes
applied to the same initial state give bit-identical state in any process. So replicas share
learning by sharing the order of outcomes, not by merging weights:

- a replica routes locally (no network call on the route path);
- ``feedback``/``learn`` append the outcome to one Redis Stream as one binary event (XADD of
  ``Outcome.to_bytes()``), from a background publisher thread, so the caller never waits on Redis;
- every replica reads the stream in order in a background consumer thread (blocking XREAD) and
  applies every event with ``router.learn``, its own included: all replicas walk the same sequence
  of states, each behind the stream head by its lag (``stats()["behind"]`` events, the last
  applied event ``stats()["age_s"]`` seconds old);
- every ``snapshot_every`` events one replica stores the router's state with the id of the last
  event in it (atomically, in one Lua script); a new or restarted replica loads the newest snapshot
  and replays the tail after it. The stream is trimmed behind the oldest kept snapshot
  (``keep_snapshots``); a replica that fell behind the trim point notices (the trim mark stored
  with the snapshots is past its last applied id) and reloads the newest snapshot. So the stream
  must not be trimmed by other means.

Exactly once: the consumer tracks the id of the last applied event and reads strictly after it,
so replaying a tail that overlaps a snapshot applies nothing twice; the publisher numbers its
outcomes and the append script skips numbers already appended, so a batch resent after a lost
reply is not appended twice. Redis down: routing goes on, outcomes wait in a bounded buffer
(``buffer_size``; overflow is dropped and counted) and are delivered when Redis is back. With the
append-only file on (``appendonly yes``, ``appendfsync always``) an acknowledged event survives a
crash of Redis. Not delivered: outcomes still buffered when a replica process dies (at most
``stats()["buffered"]``). An event that is not a valid outcome of this router (malformed,
truncated, foreign, a route it does not have) is skipped by every replica alike, counted
(``malformed``) and logged on ``logging.getLogger("sona.fleet")``.

Consistency: every replica passes through the same states in the same order; at any moment a
replica's state is the shared state as of its last applied event (``stats()["last_id"]``), so
two replicas differ only by their lag, and after the stream drains they are bit-identical (same
backend). A decision routed on a replica reflects what that replica has applied so far; its
own outcome takes effect there when the consumer reaches it (``sync`` waits for that). Learning
anywhere else (``router.feedback``/``learn`` called directly, the engine's background cycle)
leaves the shared sequence: in a fleet, learn only through the FleetRouter.

Deployment: N replicas on one host (worker processes, e.g. gunicorn workers: one FleetRouter per
process, created after the fork) or on many hosts (pods) use one Redis (>= 7.0) and one stream
name; nothing else is shared. Each replica needs the same routes, dimension and sona version (a
replica whose router does not match the stream's snapshot is refused). Routing draws stay local
to each replica. Time-based numbers (``age_s``) compare Redis's clock with the replica's.
With Redis Sentinel pass ``redis.Sentinel(...).master_for(name)`` as the client: after a failover
the threads reconnect to the new master; events acknowledged by the old master but not yet
replicated are lost (Redis replication is asynchronous). With Redis Cluster the stream is one key
on one shard: put the stream name in a hash tag (``"{sona}:outcomes"``) so its snapshot and
producer keys share that slot; Cluster adds no throughput to one stream.

    >>> import sona, sona.fleet                                          # doctest: +SKIP
    >>> router = sona.Router(["small", "large"], hidden_dim=384, seed=0)  # doctest: +SKIP
    >>> fleet = sona.fleet.FleetRouter(router, "redis://localhost:6379/0")  # doctest: +SKIP
    >>> d = fleet.route(embedding); fleet.feedback(d, 0.9)               # doctest: +SKIP
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from typing import Any, Callable

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("sona.fleet needs the redis client: pip install 'sona[redis]'") from exc

from .outcome import Outcome

__all__ = ["FleetRouter", "FleetError"]

log = logging.getLogger("sona.fleet")

#: Stream entry field holding ``Outcome.to_bytes()``; an entry with other fields is foreign.
FIELD = b"o"

# Appends a batch of one producer's outcomes, skipping sequence numbers already appended (a
# batch resent after its reply was lost). KEYS: stream, producers hash. ARGV: producer, then
# (seq, payload) pairs in increasing seq. Returns the number appended.
_APPEND = """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local n = 0
for i = 2, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], '*', 'o', ARGV[i + 1])
    last = seq
    n = n + 1
  end
end
redis.call('HSET', KEYS[2], ARGV[1], last)
return n
"""

# Stores a snapshot (router state after event ARGV[1], which was stream entry number ARGV[2]) if
# it is newer than the newest stored, drops all but the newest ARGV[4], and trims the stream
# behind the oldest kept. One hash holds every snapshot: "ids" (newest first), "state:<id>",
# "seq:<id>", and "trimmed", the id every entry before which is gone (Redis 7.0 keeps no such
# mark for trims). KEYS: stream, snapshot hash. Returns 1 if stored, 0 if not newer.
_SNAPSHOT = """
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local ids = {}
local cur = redis.call('HGET', KEYS[2], 'ids')
if cur then for id in string.gmatch(cur, '%S+') do ids[#ids + 1] = id end end
if #ids > 0 and not after(ARGV[1], ids[1]) then return 0 end
table.insert(ids, 1, ARGV[1])
redis.call('HSET', KEYS[2], 'state:' .. ARGV[1], ARGV[3], 'seq:' .. ARGV[1], ARGV[2])
local keep = tonumber(ARGV[4])
while #ids > keep do
  local old = table.remove(ids)
  redis.call('HDEL', KEYS[2], 'state:' .. old, 'seq:' .. old)
end
redis.call('HSET', KEYS[2], 'ids', table.concat(ids, ' '))
if ids[#ids] ~= '0-0' then
  redis.call('XTRIM', KEYS[1], 'MINID', ids[#ids])
  redis.call('HSET', KEYS[2], 'trimmed', ids[#ids])
end
return 1
"""

# The newest snapshot as {id, seq, state}, read in one step; {} when there is none.
_NEWEST = """
local ids = redis.call('HGET', KEYS[1], 'ids')
if not ids then return {} end
local id = string.match(ids, '^(%S+)')
return {id, redis.call('HGET', KEYS[1], 'seq:' .. id), redis.call('HGET', KEYS[1], 'state:' .. id)}
"""

#: Decision ids a replica remembers to refuse a second outcome of one decision.
RECORDED_WINDOW = 65536

#: The id before every stream entry: the genesis snapshot (the first replica's initial router).
GENESIS = "0-0"

_DOWN = (redis.ConnectionError, redis.TimeoutError)


class FleetError(ValueError):
    """The stream's snapshot does not fit this replica's router, or Redis is too old."""


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class FleetRouter:
    """A replica of a router that learns from every replica's outcomes through a Redis Stream.

    Parameters
    ----------
    router : the replica's ``sona.Router``. The first replica on an empty stream stores its
        state as the genesis snapshot; every later replica starts from the newest snapshot
        instead (same routes and dimension required), so ``fleet.router`` may be a new object.
    url : ``"redis://host:port/db"`` (or ``rediss://``, ``unix://``), or a ``redis.Redis`` client
        (e.g. from ``redis.Sentinel(...).master_for(name)``).
    stream : the stream key; its snapshots and producer numbers live in ``<stream>:snapshots``
        and ``<stream>:producers``.
    snapshot_every : stream entries between snapshots (>= 1).
    keep_snapshots : snapshots kept (>= 1); the stream is trimmed behind the oldest of them, so a
        replica may lag ``(keep_snapshots - 1) * snapshot_every`` entries without reloading.
    buffer_size : outcomes held while Redis is unreachable (>= 1); more are dropped and counted.
    batch : most outcomes per append and events per read (>= 1).
    block_ms : how long one blocking read waits (>= 1); also bounds how long ``close`` waits.
    on_apply : called in the consumer thread after each applied event with (stream id, Outcome),
        e.g. for metrics; an exception there is logged and does not stop the replica.

    Raises
    ------
    TypeError : ``router`` lacks ``learn``/``to_bytes``, or ``url`` is neither str nor client.
    ValueError : an integer parameter out of range; ``FleetError`` (a ValueError) when Redis is
        older than 7.0 or the stream's snapshot has other routes or another dimension. A Redis
        that is unreachable at start is not an error: the replica routes with ``router`` and
        joins the stream when Redis answers.

    Example::

        fleet = FleetRouter(sona.Router(["small", "large"], hidden_dim=384), "redis://localhost")
        d = fleet.route(x)           # local, no network
        fleet.feedback(d, 0.8)       # appended to the stream; every replica learns it
        fleet.stats()["behind"]      # events this replica has not applied yet
        fleet.close()
    """

    def __init__(self, router: Any, url: Any = "redis://localhost:6379/0",
                 stream: str = "sona:outcomes", *, snapshot_every: int = 1000,
                 keep_snapshots: int = 3, buffer_size: int = 100_000, batch: int = 256,
                 block_ms: int = 100,
                 on_apply: Callable[[str, Outcome], None] | None = None) -> None:
        for name in ("learn", "to_bytes", "route", "routes"):
            if not hasattr(router, name):
                raise TypeError(f"router must be a sona.Router (with {name}); "
                                f"got {type(router).__name__}")
        if not isinstance(stream, str) or not stream:
            raise TypeError(f"stream must be a non-empty str; got {stream!r}")
        ints = {"snapshot_every": snapshot_every, "keep_snapshots": keep_snapshots,
                "buffer_size": buffer_size, "batch": batch, "block_ms": block_ms}
        for name, v in ints.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
        if on_apply is not None and not callable(on_apply):
            raise TypeError(f"on_apply must be callable or None; got {type(on_apply).__name__}")
        if isinstance(url, str):
            client = redis.Redis.from_url(url, socket_connect_timeout=2.0,
                                          socket_timeout=block_ms / 1000 + 5.0)
        elif isinstance(url, redis.Redis):
            client = url
        else:
            raise TypeError(f"url must be a redis URL string or a redis.Redis client; "
                            f"got {type(url).__name__}")
        self._client = client
        self._routes = tuple(router.routes)
        self._dim = int(router.stats()["hidden_dim"])
        self._owns_client = isinstance(url, str)
        self._router = router
        self._stream = stream
        self._snap_key = f"{stream}:snapshots"
        self._prod_key = f"{stream}:producers"
        self._snapshot_every, self._keep, self._buffer_size = (
            snapshot_every, keep_snapshots, buffer_size)
        self._batch, self._block_ms, self._on_apply = batch, block_ms, on_apply
        self._append = client.register_script(_APPEND)
        self._store_snapshot = client.register_script(_SNAPSHOT)
        self._newest = client.register_script(_NEWEST)

        # consumer state (written by the consumer thread only, after start)
        self._last_id: str | None = None  # None: not joined to the stream yet
        self._seq = 0                     # stream entries consumed since genesis
        self._head_added: int | None = None
        self._applied = self._malformed = self._reloads = 0
        self._snapshot_id: str | None = None
        self._snapshots_written = 0
        self._error: str | None = None
        self._progress = threading.Condition()

        # publisher state, guarded by _cond
        self._cond = threading.Condition()
        self._buffer: collections.deque = collections.deque()
        self._next_seq = 1
        self._producer = uuid.uuid4().hex
        self._published = self._dropped = 0
        self._recorded: set = set()  # decision ids recorded here (bounded, FIFO)
        self._recorded_order: collections.deque = collections.deque()
        self._connected = False

        self._stop = threading.Event()
        self._closed = False
        try:
            self._join()
        except _DOWN as exc:
            log.warning("redis unreachable at start (%s): routing locally, joining later", exc)
        except BaseException:
            if self._owns_client:
                client.close()
            raise
        self._threads = [threading.Thread(target=self._consume, name="sona.fleet.consumer",
                                          daemon=True),
                         threading.Thread(target=self._publish, name="sona.fleet.publisher",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------------------ request path

    @property
    def router(self) -> Any:
        """The replica's current router (replaced when a snapshot is loaded), to read: scores,
        stats, save. Learning or changing it directly (``learn``, ``add_route``,
        ``set_params``) bypasses the stream: this replica would then route and learn unlike
        the others. Learn through the FleetRouter."""
        return self._router

    @property
    def stream(self) -> str:
        return self._stream

    def route(self, x, cost_weight=0.0, allowed=None):
        """``router.route(x, cost_weight, allowed)`` on the local replica: no network call.
        Same result and exceptions as the router's."""
        return self._router.route(x, cost_weight, allowed)

    def scores(self, x, out=None, cost_weight=0.0, allowed=None):
        """``router.scores(x, out, cost_weight, allowed)`` on the local replica."""
        return self._router.scores(x, out, cost_weight, allowed)

    def route_batch(self, X, cost_weight=0.0, allowed=None):
        """``router.route_batch(X, cost_weight, allowed)`` on the local replica."""
        return self._router.route_batch(X, cost_weight, allowed)

    def add_route(self, name, cost=None):
        """Refused: the route set is not part of the shared sequence of outcomes.

        Replicas change state only by applying the stream's outcomes in order, and a snapshot
        is loaded only by a replica with the same routes; a route added or retired on one
        replica would make it route and learn differently from the others, and its snapshots
        unloadable by them. To change the routes: stop the replicas, change the router
        (``Router.load`` the newest state, ``add_route``/``retire_route``), and start the fleet
        on a new stream from it.

        Raises RuntimeError always; nothing changes.
        """
        raise RuntimeError(f"a FleetRouter cannot add route {name!r} at run time: the route "
                           "set is not replicated through the stream, so replicas would "
                           "diverge; start a new stream from the changed router instead")

    def retire_route(self, name):
        """Refused, for the reason :meth:`add_route` gives. Raises RuntimeError always; to keep
        a route out of traffic on a fleet, pass ``allowed`` to ``route``."""
        raise RuntimeError(f"a FleetRouter cannot retire route {name!r} at run time: the "
                           "route set is not replicated through the stream, so replicas would "
                           "diverge; route with allowed=..., or start a new stream from the "
                           "changed router")

    def feedback(self, decision, quality, cost=None, latency_ms=None) -> None:
        """Record the outcome of ``decision`` (from ``route``) for every replica to learn.

        Same as ``learn(decision.outcome(quality, cost=cost, latency_ms=latency_ms))``; raises
        what ``Decision.outcome`` raises for a bad quality, cost or latency.
        """
        self.learn(decision.outcome(quality, cost=cost, latency_ms=latency_ms))

    def learn(self, outcome: Outcome) -> None:
        """Append ``outcome`` to the stream (in the background); every replica, this one
        included, applies it with ``router.learn`` in stream order.

        Returns at once: the outcome waits in the buffer until Redis acknowledges it
        (``flush`` waits for that). When the buffer is full the outcome is dropped and counted
        (``stats()["dropped"]``).

        Raises TypeError for a non-Outcome; ValueError for a route this router does not have,
        an embedding of another dimension, or a decision id this replica recorded already among
        its last 65536 (checked here, so such an outcome never reaches the stream; one that
        reaches it from another replica is skipped by every replica alike: the routers'
        at-most-once window is part of their state, snapshots included); RuntimeError after
        ``close``. Nothing is recorded then.
        """
        if not isinstance(outcome, Outcome):
            raise TypeError(f"outcome must be a sona.Outcome; got {type(outcome).__name__}")
        if outcome.route not in self._routes:
            raise ValueError(f"outcome route {outcome.route!r} is not one of this router's "
                             f"routes {list(self._routes)}")
        if outcome.dim != self._dim:
            raise ValueError(f"outcome embedding has dimension {outcome.dim}; this router's is "
                             f"{self._dim}")
        payload = outcome.to_bytes()
        key = outcome.decision_id
        with self._cond:
            if self._closed:
                raise RuntimeError("this FleetRouter is closed")
            if key is not None and key in self._recorded:
                raise ValueError(f"decision {key!r} was already recorded")
            if len(self._buffer) >= self._buffer_size:
                self._dropped += 1
                return
            if key is not None:
                self._recorded.add(key)
                self._recorded_order.append(key)
                if len(self._recorded_order) > RECORDED_WINDOW:
                    self._recorded.discard(self._recorded_order.popleft())
            self._buffer.append((self._next_seq, payload))
            self._next_seq += 1
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every outcome recorded so far is acknowledged by Redis (appended to the
        stream, on disk with ``appendfsync always``). Returns False if ``timeout`` seconds
        passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._buffer, timeout)

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until this replica has applied every event in the stream, including its own
        outcomes recorded before the call (read-your-writes). Returns False on timeout or when
        Redis is unreachable until then."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if not self.flush(left()):
            return False
        while True:
            try:
                head = _text(self._client.xinfo_stream(self._stream)["last-generated-id"])
                break
            except redis.ResponseError:  # no stream yet: nothing to apply
                return True
            except _DOWN:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
        with self._progress:
            return self._progress.wait_for(
                lambda: self._last_id is not None
                and _id_key(self._last_id) >= _id_key(head), left())

    def stats(self) -> dict:
        """A plain, JSON-serialisable view of this replica (one XINFO call to Redis).

        Keys: ``applied`` (events learnt), ``malformed`` (events skipped: not a valid outcome of
        this router), ``behind`` (stream entries after the last one consumed; while Redis is
        unreachable, as of the last contact; None before joining), ``age_s`` (seconds since
        Redis accepted the last applied event; None before any), ``last_id`` (its stream id),
        ``buffered`` (own outcomes not yet acknowledged), ``published`` (acknowledged),
        ``dropped`` (lost to a full buffer), ``snapshot_id`` (newest snapshot this replica
        loaded or stored), ``snapshots_written``, ``reloads`` (snapshots loaded because the
        stream was trimmed past this replica), ``connected`` and ``error`` (the last Redis
        error, or why the consumer stopped; None while all is well).
        """
        last = self._last_id
        with self._cond:
            buffered, published, dropped = len(self._buffer), self._published, self._dropped
        if self._connected and last is not None:
            try:  # the head now, not as of the consumer's last read (it may be stuck)
                self._head_added = int(self._client.xinfo_stream(self._stream)["entries-added"])
            except redis.RedisError:
                pass
        behind = None if self._head_added is None else max(0, self._head_added - self._seq)
        age = None
        if last is not None and last != GENESIS:
            age = max(0.0, time.time() - _id_key(last)[0] / 1000.0)
        return {"applied": self._applied, "malformed": self._malformed, "behind": behind,
                "age_s": age, "last_id": last, "buffered": buffered, "published": published,
                "dropped": dropped, "snapshot_id": self._snapshot_id,
                "snapshots_written": self._snapshots_written, "reloads": self._reloads,
                "connected": self._connected, "error": self._error}

    def close(self, timeout: float = 5.0) -> None:
        """Stop both threads, first trying for up to ``timeout`` seconds to deliver the
        outcomes still buffered (what is left is logged; ``stats()["buffered"]`` keeps the
        count). Idempotent; routing on ``router`` keeps working afterwards, learning stops."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout + self._block_ms / 1000 + 5.0)
        with self._cond:
            if self._buffer:
                log.warning("closed with %d outcomes not delivered", len(self._buffer))
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> FleetRouter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"FleetRouter(stream={self._stream!r}, routes={list(self._router.routes)}, "
                f"last_id={self._last_id!r})")

    # ------------------------------------------------------------------------------ snapshots

    def _join(self) -> None:
        """Start from the stream's newest snapshot, storing ours as the genesis if there is
        none; raises FleetError for an old Redis or a snapshot of another router."""
        version = _text(self._client.info("server")["redis_version"])
        if int(version.split(".")[0]) < 7:
            raise FleetError(f"sona.fleet needs Redis >= 7.0 (stream trim ids); got {version}")
        newest = self._newest(keys=[self._snap_key])
        if not newest:
            self._store_snapshot(keys=[self._stream, self._snap_key],
                                 args=[GENESIS, 0, self._router.to_bytes(), self._keep])
            newest = self._newest(keys=[self._snap_key])
        self._load(_text(newest[0]), int(newest[1]), newest[2])
        self._connected = True

    def _load(self, snap_id: str, seq: int, state: bytes) -> None:
        if self._last_id is not None and _id_key(snap_id) <= _id_key(self._last_id):
            return
        try:
            router = type(self._router).from_bytes(state)
        except ValueError as exc:
            raise FleetError(f"snapshot {snap_id} of stream {self._stream!r} is unreadable: "
                             f"{exc}") from exc
        their_dim = router.stats()["hidden_dim"]
        if tuple(router.routes) != self._routes or their_dim != self._dim:
            raise FleetError(
                f"stream {self._stream!r} holds a router with routes {list(router.routes)} and "
                f"dimension {their_dim}; this replica has {list(self._routes)} and {self._dim}")
        with self._progress:
            self._router = router
            self._last_id, self._seq, self._snapshot_id = snap_id, seq, snap_id
            self._progress.notify_all()
        log.info("loaded snapshot %s (entry %d) of stream %s", snap_id, seq, self._stream)

    def _maybe_snapshot(self) -> None:
        assert self._last_id is not None
        ids = self._client.hget(self._snap_key, "ids")
        if ids and _id_key(_text(ids).split()[0]) >= _id_key(self._last_id):
            return  # another replica stored it already: spare the serialisation
        stored = self._store_snapshot(keys=[self._stream, self._snap_key],
                                      args=[self._last_id, self._seq, self._router.to_bytes(),
                                            self._keep])
        if stored:
            self._snapshot_id = self._last_id
            self._snapshots_written += 1

    # ------------------------------------------------------------------------------ consumer

    def _consume(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                if self._last_id is None:
                    self._join()
                self._read_batch()
                backoff = 0.05
                self._error = None
            except _DOWN as exc:
                if self._connected:
                    log.warning("redis unreachable (%s): routing locally, buffering outcomes",
                                exc)
                self._connected = False
                self._stop.wait(backoff)
                backoff = min(1.0, backoff * 2)
            except FleetError as exc:
                self._error = str(exc)
                log.error("consumer stopped: %s", exc)
                return
            except redis.RedisError as exc:  # e.g. a full disk refusing writes: retry
                if self._error != str(exc):
                    log.error("redis error, retrying: %s", exc)
                self._error = str(exc)
                self._stop.wait(1.0)
            except Exception as exc:  # a bug, not bad data: applying more could diverge
                self._error = f"{type(exc).__name__}: {exc}"
                log.exception("consumer stopped")
                return

    def _read_batch(self) -> None:
        assert self._last_id is not None
        reply = self._client.xread({self._stream: self._last_id}, count=self._batch,
                                   block=self._block_ms)
        if not self._connected:
            log.info("redis reachable again")
            self._connected = True
        entries: list = []
        if reply:  # RESP3 answers {stream: entries}, RESP2 [[stream, entries]]
            entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        if not entries:
            self._head_added = self._seq  # nothing after our last id: caught up
            return
        # read after the entries: a trim mark not past our last id means none was missing
        pipe = self._client.pipeline(transaction=False)
        pipe.hget(self._snap_key, "trimmed")
        pipe.xinfo_stream(self._stream)
        trimmed, info = pipe.execute(raise_on_error=False)
        if isinstance(trimmed, Exception):
            raise trimmed
        added = None if isinstance(info, Exception) else int(info["entries-added"])
        if trimmed is not None and _id_key(_text(trimmed)) > _id_key(self._last_id):
            # entries after our last one may be gone: the newest snapshot covers them
            log.warning("stream trimmed past entry %s (to %s): reloading the newest snapshot",
                        self._last_id, _text(trimmed))
            newest = self._newest(keys=[self._snap_key])
            self._load(_text(newest[0]), int(newest[1]), newest[2])
            self._reloads += 1
            return
        self._head_added = added
        for entry_id, fields in entries:
            self._apply(_text(entry_id), fields)
            if self._seq % self._snapshot_every == 0:
                # every replica reaches this entry: the first to get here stores the snapshot
                self._maybe_snapshot()

    def _apply(self, entry_id: str, fields: dict) -> None:
        try:
            if set(fields) != {FIELD}:
                raise ValueError(f"not a sona outcome event: fields {sorted(fields)}")
            outcome = Outcome.from_bytes(fields[FIELD])
            self._router.learn(outcome)
        except (ValueError, TypeError) as exc:  # OutcomeError is a ValueError
            self._malformed += 1
            log.warning("skipped stream entry %s of %s: %s", entry_id, self._stream, exc)
            outcome = None
        else:
            self._applied += 1
        with self._progress:
            self._last_id = entry_id
            self._seq += 1
            self._progress.notify_all()
        if outcome is not None and self._on_apply is not None:
            try:
                self._on_apply(entry_id, outcome)
            except Exception:
                log.exception("on_apply raised for entry %s", entry_id)

    # ------------------------------------------------------------------------------ publisher

    def _publish(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._buffer or self._stop.is_set())
                if self._stop.is_set():
                    return  # close() has waited for the buffer as long as it may
                pending = list(itertools.islice(self._buffer, self._batch))
            args: list = [self._producer]
            for seq, payload in pending:
                args += [seq, payload]
            try:
                self._append(keys=[self._stream, self._prod_key], args=args)
            except redis.RedisError as exc:
                if not isinstance(exc, _DOWN):
                    log.error("redis refused an append, retrying: %s", exc)
                self._stop.wait(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            backoff = 0.05
            with self._cond:
                for _ in pending:
                    self._buffer.popleft()
                self._published += len(pending)
                self._cond.notify_all()
