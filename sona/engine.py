"""SonaEngine: trajectories in, learning out.

    engine = sona.SonaEngine(hidden_dim=256)            # or SonaEngine(SonaConfig(...))
    tid = engine.start_trajectory(query_embedding)
    engine.record_step(tid, node_id, score, latency_us)
    engine.end_trajectory(tid, quality)                 # the instant loop learns here
    engine.apply_lora(x)                                # the adapted embedding
    engine.run_background_cycle()                       # drain, consolidate; or start_background()

The hot paths (trajectories, the instant loop, the adapters) are compiled (sona._core.EngineCore);
this module builds the parts from a SonaConfig and runs the background loop.
"""

from __future__ import annotations

import logging
import numbers
import os
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from ._core import EngineCore, Pattern, TrajectoryBuffer, TrajectoryStore, _snapshot, get_backend
from .bank import BANK_ARRAYS, REFINE_DEFAULTS, check_bank_arrays, new_bank, refine_bank
from .config import MAX_INTERVAL_S, REMOVED_FIELDS, SonaConfig
from .lora import BaseLoRA, MicroLoRA
from .state import (
    MAX_COUNT,
    PathLike,
    check_number,
    check_weights,
    decode_state,
    encode_state,
    read_state,
    unusable,
    write_state,
)

__all__ = ["SonaEngine", "CycleResult", "ENGINE_STATE_VERSION"]

_log = logging.getLogger(__name__)

#: Layout version of the arrays and metadata inside an engine state file.
ENGINE_STATE_VERSION = 1
_BANK_ARRAYS = (*BANK_ARRAYS, "usage")
_COUNTERS = ("global_baseline", "n_seen", "instant_updates", "late_feedbacks", "updates_skipped")

# Late feedback (learn_from_feedback on an ended trajectory) is accepted for the most recent
# min(trajectory_capacity, this) ended trajectories: embeddings kept in a fixed table.
_LATE_FEEDBACK_WINDOW = 4096

# Every live engine, for the fork handlers below.
_ENGINES: weakref.WeakSet = weakref.WeakSet()


def _before_fork() -> None:
    # Fork while no cycle runs: the child then inherits whole states, and no lock held by a
    # thread that does not exist in the child.
    for engine in list(_ENGINES):
        engine._fork_held = engine._cycle_lock.acquire(timeout=30.0)


def _after_fork_parent() -> None:
    for engine in list(_ENGINES):
        if engine._fork_held:
            engine._fork_held = False
            engine._cycle_lock.release()


def _after_fork_child() -> None:
    # Threads do not survive fork: the coordinator is gone in the child (start_background()
    # there starts a new one), and the locks are new.
    for engine in list(_ENGINES):
        engine._cycle_lock = threading.Lock()
        engine._fork_held = False
        engine._stop = threading.Event()
        engine._thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                        after_in_child=_after_fork_child)


@dataclass(frozen=True)
class CycleResult:
    """What one learning cycle did: counts and wall time (seconds)."""

    kind: str
    trajectories: int = 0
    evicted: int = 0
    consolidated: bool = False
    patterns: int = 0
    seconds: float = 0.0
    #: background refinement of the pattern bank: queries clustered this cycle, queries held
    #: back for the next one (fewer than refine_params["min_records"]), and what happened to
    #: the patterns (created includes those that replaced a pruned one)
    refined: int = 0
    deferred: int = 0
    patterns_created: int = 0
    patterns_updated: int = 0
    patterns_merged: int = 0
    patterns_pruned: int = 0
    refine_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SonaEngine(EngineCore):
    """Runtime learning from trajectories: two LoRA tiers, a pattern bank, a trajectory ring.

    Parameters: a SonaConfig, and/or SonaConfig fields as keyword arguments (they override the
    config's); bank_params overrides sona.bank.BANK_DEFAULTS; micro_scale/base_scale are the
    adapters' output scales. Raises ValueError/TypeError for an invalid configuration.
    ``engine.refine_params`` (a copy of sona.bank.REFINE_DEFAULTS) tunes the background cycle's
    bank refinement; it is not saved in state files.

    >>> import numpy as np, sona
    >>> engine = sona.SonaEngine(hidden_dim=8)
    >>> tid = engine.start_trajectory(np.ones(8, np.float32))
    >>> engine.record_step(tid, node_id=1, score=0.9, latency_us=120.0)
    >>> engine.end_trajectory(tid, 0.8)
    >>> engine.stats()["instant_updates"]
    1
    """

    def __init__(self, config: SonaConfig | None = None, *,
                 bank_params: dict[str, float] | None = None, micro_scale: float = 1.0,
                 base_scale: float = 1.0, **overrides: Any) -> None:
        if config is None:
            cfg = SonaConfig(**overrides)
        elif not isinstance(config, SonaConfig):
            raise TypeError(f"config must be a SonaConfig; got {type(config).__name__}")
        else:
            cfg = config.replace(**overrides) if overrides else config
        d = cfg.hidden_dim
        micro = MicroLoRA(d, cfg.micro_lora_rank, scale=micro_scale, seed=cfg.seed)
        base = BaseLoRA(d, cfg.base_lora_rank, scale=base_scale, seed=(cfg.seed + 1) % 2**64)
        bank = new_bank(d, cfg.max_routes, cfg.max_patterns, **(bank_params or {}))
        buffer = TrajectoryBuffer(cfg.trajectory_capacity, d, max_steps=cfg.max_trajectory_steps,
                                  dtype=cfg.embedding_dtype)
        store = TrajectoryStore(buffer, cfg.max_open_trajectories, cfg.open_trajectory_timeout_s)
        super().__init__(micro, base, bank, store, cfg.micro_lora_lr,
                         min(cfg.trajectory_capacity, _LATE_FEEDBACK_WINDOW))
        self.config = cfg
        self._cycle_lock = threading.Lock()
        self._counts = {"instant_cycles": 0, "background_cycles": 0, "trajectories_drained": 0,
                        "consolidations": 0}
        self._last_cycle: CycleResult | None = None
        self.refine_params = dict(REFINE_DEFAULTS)
        self._deferred: tuple[list, list] = ([], [])  # queries waiting for min_records
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._routers: weakref.WeakSet = weakref.WeakSet()  # told when the adapters re-factor
        self._fork_held = False
        self._bg_errors = 0
        self._bg_last_error: str | None = None
        _ENGINES.add(self)

    # -- cycles ----------------------------------------------------------------------------------
    def run_instant_cycle(self) -> CycleResult:
        """Maintenance of the instant loop: evicts trajectories open longer than the timeout.

        Learning itself happens in end_trajectory/learn_from_feedback, when feedback arrives.
        """
        t0 = time.perf_counter()
        evicted = self.store.evict_expired()
        self._counts["instant_cycles"] += 1
        return CycleResult("instant", evicted=evicted, patterns=self.bank.n_patterns,
                           seconds=time.perf_counter() - t0)

    def run_background_cycle(self) -> CycleResult:
        """Drains every stored trajectory from the ring (however few), refines the pattern bank
        with their queries (see sona.bank.refine_bank: weighted spherical k-means with the GIL
        released, then merge/dedupe/prune), and folds MicroLoRA's learned change into BaseLoRA
        (truncated SVD to BaseLoRA's rank), then resets MicroLoRA's B so its next feedbacks start
        from the identity. Fewer than refine_params["min_records"] queries are kept for the next
        cycle (counted as ``deferred``), never dropped. Returns counts and the wall time.

        Raises ValueError for invalid refine_params before anything is drained; if anything
        else fails after draining, the drained queries are kept for the next cycle."""
        with self._cycle_lock:
            t0 = time.perf_counter()
            params = self._refine_settings()
            drained = 0
            embs, quals = self._deferred
            try:
                while True:
                    batch = self.store.buffer.drain()
                    if len(batch.ids) == 0:
                        break
                    drained += len(batch.ids)
                    embs.append(batch.embeddings)
                    quals.append(batch.qualities)
                refined = self._refine(embs, quals, params)
            except BaseException:
                self._deferred = (embs, quals)  # drained records wait for the next cycle
                self._counts["trajectories_drained"] += drained
                raise
            consolidated = self._consolidate()
            self._counts["background_cycles"] += 1
            self._counts["trajectories_drained"] += drained
            result = CycleResult("background", trajectories=drained, consolidated=consolidated,
                                 patterns=self.bank.n_patterns, seconds=time.perf_counter() - t0,
                                 **refined)
            self._last_cycle = result
        _log.debug("background cycle: %d trajectories drained, %d patterns, consolidated %s, "
                   "%.2f ms", drained, result.patterns, consolidated, 1e3 * result.seconds)
        return result

    def _refine_settings(self) -> dict:
        """refine_params checked (names, types, ranges) without changing anything: a bad value
        raises here, before a cycle drains the ring."""
        params = dict(self.refine_params)
        min_records = params.pop("min_records", REFINE_DEFAULTS["min_records"])
        if (isinstance(min_records, bool) or not isinstance(min_records, numbers.Integral)
                or min_records < 1):
            raise ValueError(f"refine_params['min_records'] must be an integer >= 1; got "
                             f"{min_records!r}")
        d = self.config.hidden_dim
        refine_bank(self.bank, np.empty((0, d), np.float32), np.empty(0, np.float32), k=1,
                    quality_threshold=self.config.quality_threshold, **params)
        return {"min_records": int(min_records), **params}

    def _refine(self, embs: list, quals: list, settings: dict) -> dict:
        """Refines the bank with the queued queries, or defers them while they are too few."""
        t0 = time.perf_counter()
        n = sum(len(q) for q in quals)
        if n == 0:
            return {}
        if n < settings["min_records"]:
            self._deferred = (embs, quals)
            return {"deferred": n}
        X = embs[0] if len(embs) == 1 else np.concatenate(embs)
        q = quals[0] if len(quals) == 1 else np.concatenate(quals)
        cfg = self.config
        params = {k: v for k, v in settings.items() if k != "min_records"}
        seed = (cfg.seed * 0x9E3779B97F4A7C15 + self._counts["background_cycles"]) % 2**64
        try:
            res = refine_bank(self.bank, X, q, k=min(cfg.pattern_clusters, n), seed=seed,
                              quality_threshold=cfg.quality_threshold, **params)
        except ValueError:
            # a record holding NaN/Inf (e.g. written into a shared ring by a foreign process):
            # cluster the sound ones
            ok = np.isfinite(X).all(axis=1) & np.isfinite(q) & (q >= 0) & (q <= 1)
            if ok.all():
                raise
            if not ok.any():
                return {"refine_seconds": time.perf_counter() - t0}
            res = refine_bank(self.bank, X[ok], q[ok], k=min(cfg.pattern_clusters, int(ok.sum())),
                              seed=seed, quality_threshold=cfg.quality_threshold, **params)
        self._deferred = ([], [])
        return {"refined": res["clustered"], "patterns_created": res["created"],
                "patterns_updated": res["updated"], "patterns_merged": res["merged"],
                "patterns_pruned": res["pruned"], "refine_seconds": time.perf_counter() - t0}

    def _consolidate(self) -> bool:
        micro, base = self.micro, self.base
        if not micro.B.any():
            return False
        # Delta W = s_b B_b A_b + s_m B_m A_m (d x d, rank <= r_b + r_m), kept in factored form:
        # stack the factors and take the SVD of the small core instead of the d x d matrix.
        left = np.concatenate([base.scale * base.B, micro.scale * micro.B], axis=1)   # d x r
        right = np.concatenate([base.A, micro.A], axis=0)                                # r x d
        qa, ra = np.linalg.qr(left.astype(np.float64))
        qb, rb = np.linalg.qr(right.T.astype(np.float64))
        u, s, vt = np.linalg.svd(ra @ rb.T)
        r = base.rank
        new_b = (qa @ u[:, :r]) * (s[:r] / base.scale)      # d x r_b
        new_a = (qb @ vt[:r].T).T                            # r_b x d, orthonormal rows
        base.set_weights(new_a, new_b)
        micro.set_weights(micro.A, np.zeros_like(micro.B))
        for router in list(self._routers):
            router._adapters_replaced()
        self._counts["consolidations"] += 1
        return True

    # -- coordinator -----------------------------------------------------------------------------
    def start_background(self, interval_s: float | None = None, *,
                         every_n_trajectories: int | None = None,
                         checkpoint_path: PathLike | None = None) -> None:
        """Run run_background_cycle() in a daemon thread until stop_background() or close():
        every interval_s seconds (default: the config's), and also as soon as
        every_n_trajectories records wait in the ring, when given; with checkpoint_path, save()
        the engine there after every cycle (atomically: a crash leaves the previous checkpoint).

        A cycle or checkpoint that fails does not stop the thread: the error is logged on the
        ``"sona"`` logger and counted in stats() (``background_errors``,
        ``last_background_error``); drained records are kept for the next cycle. After
        os.fork() the child has no coordinator (start one there if wanted).

        Raises RuntimeError if already running, TypeError/ValueError for an interval that is not
        a number in (0, 604800] seconds, a bad count, or a checkpoint path that is not a path
        or whose directory does not exist.
        """
        interval = self.config.background_interval_s if interval_s is None else interval_s
        if isinstance(interval, (bool, np.bool_)) or not isinstance(interval, numbers.Real):
            raise TypeError(f"interval_s must be a number of seconds; got "
                            f"{type(interval_s).__name__} {interval_s!r}")
        interval = float(interval)
        if not 0 < interval <= MAX_INTERVAL_S:
            raise ValueError(f"interval_s must be in (0, {MAX_INTERVAL_S:g}] seconds; got "
                             f"{interval_s!r}")
        if every_n_trajectories is not None and (
                isinstance(every_n_trajectories, bool)
                or not isinstance(every_n_trajectories, (int, np.integer))
                or every_n_trajectories < 1):
            raise ValueError(f"every_n_trajectories must be an integer >= 1 or None; got "
                             f"{every_n_trajectories!r}")
        if checkpoint_path is not None:
            try:
                target = os.fsdecode(os.fspath(checkpoint_path))
            except TypeError:
                raise TypeError(f"checkpoint_path must be a str, bytes or os.PathLike; got "
                                f"{type(checkpoint_path).__name__}") from None
            folder = os.path.dirname(os.path.abspath(target))
            if not os.path.isdir(folder) or os.path.isdir(target):
                raise ValueError(f"checkpoint_path {target!r} must name a file in an existing "
                                 "directory")
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the background coordinator is already running")
        self._stop.clear()
        # with a count trigger the thread looks at the ring's fill level every 10 ms (a load)
        poll = interval if every_n_trajectories is None else min(interval, 0.01)
        buffer = self.store.buffer
        stop = self._stop

        def loop() -> None:
            last, failing = time.monotonic(), False
            while not stop.wait(poll):
                due = time.monotonic() - last >= interval
                try:
                    # after a failure only the period retries (a count trigger would retry,
                    # and log, every poll while the records wait)
                    if due or (not failing and every_n_trajectories is not None
                               and len(buffer) >= every_n_trajectories):
                        last = time.monotonic()
                        self.run_background_cycle()
                        if checkpoint_path is not None:
                            self.save(checkpoint_path)
                        failing = False
                except Exception as exc:  # reported, and the next period tries again
                    failing = True
                    self._bg_errors += 1
                    self._bg_last_error = f"{type(exc).__name__}: {exc}"
                    _log.exception("sona background cycle failed (the coordinator keeps running)")

        self._thread = threading.Thread(target=loop, name="sona-background", daemon=True)
        self._thread.start()
        _log.info("background coordinator started: a cycle every %g s%s%s", interval,
                  "" if every_n_trajectories is None
                  else f" or every {every_n_trajectories} trajectories",
                  "" if checkpoint_path is None else f", checkpoint to {checkpoint_path}")

    def stop_background(self, timeout: float | None = 10.0) -> None:
        """Stop the coordinator thread (no-op when it is not running) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
            _log.info("background coordinator stopped")

    # -- queries and reporting -------------------------------------------------------------------
    def query_patterns(self, x: npt.ArrayLike, k: int = 5) -> list[Pattern]:
        """The k stored patterns most similar to x (cosine), most similar first."""
        return self.bank.query(x, k)

    def stats(self) -> dict[str, Any]:
        """A plain, JSON-serialisable snapshot of counters and sizes."""
        st = self.store.stats()
        buf = self.store.buffer
        return {
            "backend": get_backend(),
            "hidden_dim": self.config.hidden_dim,
            "trajectories_started": st["started"],
            "trajectories_ended": st["ended"],
            "trajectories_open": st["open"],
            "trajectories_evicted": st["evicted_overflow"] + st["evicted_timeout"],
            "trajectories_buffered": len(buf),
            "trajectories_dropped": buf.dropped_count,
            "trajectories_drained": self._counts["trajectories_drained"],
            "instant_updates": self.instant_updates,
            "instant_updates_skipped": self.updates_skipped,
            "late_feedbacks": self.late_feedbacks,
            "instant_cycles": self._counts["instant_cycles"],
            "background_cycles": self._counts["background_cycles"],
            "consolidations": self._counts["consolidations"],
            "patterns": self.bank.n_patterns,
            "routers": len(self._routers),
            "task_boundaries": sum(r._counters()["task_boundaries"] for r in list(self._routers)),
            "global_baseline": self.global_baseline,
            "last_background_cycle": None if self._last_cycle is None else
            self._last_cycle.to_dict(),
            "background_running": self._thread is not None and self._thread.is_alive(),
            "background_errors": self._bg_errors,
            "last_background_error": self._bg_last_error,
            "trajectories_deferred": sum(len(q) for q in self._deferred[1]),
        }

    # -- state files -----------------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Write the engine's learned state to ``path`` atomically (see sona.state: kind "engine").

        Arrays: ``micro.A``, ``micro.B``, ``base.A``, ``base.B`` and the whole pattern bank
        (``bank.centroid``, ``bank.centroid_sum``, ``bank.hits``, ``bank.route_n``,
        ``bank.route_s``, ``bank.baseline``, ``bank.usage``); metadata: the config, adapter
        scales, bank parameters, counters and n_patterns. Open trajectories, the trajectory ring
        and the late-feedback window are not saved: they are in-flight requests, not knowledge.
        The previous file is untouched if the save fails.
        """
        write_state(path, *self._state(), "engine")

    def _state(self) -> tuple[dict, dict]:
        """(arrays, metadata) of the state file, snapshotted under the cycle lock (copies, so
        the file is written outside it while learning goes on)."""
        from . import __version__

        with self._cycle_lock:  # no background cycle (consolidation) half done
            live = {"micro.A": self.micro.A, "micro.B": self.micro.B,
                    "base.A": self.base.A, "base.B": self.base.B}
            live.update({f"bank.{n}": getattr(self.bank, n) for n in _BANK_ARRAYS})
            arrays, (counters, n_patterns) = _snapshot(
                live, (self._counters, partial(getattr, self.bank, "n_patterns")))
            counts = dict(self._counts)
        meta = {"engine_state_version": ENGINE_STATE_VERSION, "sona_version": __version__,
                "config": self.config.to_dict(), "bank_params": self.bank.params,
                "micro_scale": float(self.micro.scale), "base_scale": float(self.base.scale),
                "counters": counters, "counts": counts, "n_patterns": int(n_patterns)}
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}, meta

    def to_bytes(self) -> bytes:
        """The engine's learned state as bytes: exactly the file :meth:`save` writes.

        :meth:`from_bytes` restores it; pickling uses the same pair. Routers attached to the
        engine, open trajectories and the background coordinator are not part of it (as for
        save()).

        >>> import sona
        >>> engine = sona.SonaEngine(hidden_dim=8)
        >>> sona.SonaEngine.from_bytes(engine.to_bytes()).config.hidden_dim
        8
        """
        return encode_state(*self._state(), "engine")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> SonaEngine:
        """An engine restored from :meth:`to_bytes` (or a state file's contents), checked as
        :meth:`load` checks a file.

        Raises TypeError when ``data`` is not bytes-like, StateFileError for truncated,
        corrupted, foreign, newer or inconsistent bytes, or a router's state.

        >>> import sona
        >>> data = sona.SonaEngine(hidden_dim=8).to_bytes()
        >>> sona.SonaEngine.from_bytes(data).bank.n_patterns
        0
        """
        arrays, meta = decode_state(data, kind="engine", source="from bytes")
        return cls._from_state(arrays, meta, "from bytes")

    def __reduce__(self) -> tuple:
        # The state file is the one serialised form: pickle carries its bytes.
        return (type(self).from_bytes, (self.to_bytes(),))

    @classmethod
    def load(cls, path: PathLike) -> SonaEngine:
        """An engine with the state saved in ``path``: the same adapters, patterns and counters.

        Raises StateFileError for a corrupted, truncated, foreign, newer or inconsistent file
        (never a half-built engine) and FileNotFoundError when there is no file.
        """
        arrays, meta = read_state(path, "engine")
        return cls._from_state(arrays, meta, str(path))

    @classmethod
    def _from_state(cls, arrays: dict, meta: Any, src: str) -> SonaEngine:
        """The engine held by decoded state: every check of load()/from_bytes(); ``src`` names
        the origin in error messages."""

        fail = unusable("engine", src)

        want = {"engine_state_version", "sona_version", "config", "bank_params", "micro_scale",
                "base_scale", "counters", "counts", "n_patterns"}
        if not isinstance(meta, dict) or set(meta) != want:
            fail(f"metadata keys {sorted(meta) if isinstance(meta, dict) else meta!r}, "
                 f"expected {sorted(want)}")
        if meta["engine_state_version"] != ENGINE_STATE_VERSION:
            fail(f"engine state layout {meta['engine_state_version']!r}; this sona reads "
                 f"{ENGINE_STATE_VERSION}")
        saved = meta["config"]
        if isinstance(saved, dict):
            # written before REMOVED_FIELDS went: their values never had an effect, so the
            # engine without them is the one that was saved
            saved = {k: v for k, v in saved.items() if k not in REMOVED_FIELDS}
        try:
            cfg = SonaConfig.from_dict(saved)
            engine = cls(cfg, bank_params=meta["bank_params"], micro_scale=meta["micro_scale"],
                         base_scale=meta["base_scale"])
        except (TypeError, ValueError) as exc:
            fail(f"invalid config or parameters: {exc}")
        expected = {"micro.A": engine.micro.A, "micro.B": engine.micro.B,
                    "base.A": engine.base.A, "base.B": engine.base.B}
        expected.update({f"bank.{n}": getattr(engine.bank, n) for n in _BANK_ARRAYS})
        if set(arrays) != set(expected):
            fail(f"arrays {sorted(arrays)}, expected {sorted(expected)}")
        for name, ref in expected.items():
            a = arrays[name]
            if a.shape != ref.shape or a.dtype != ref.dtype:
                fail(f"{name} is {a.dtype}{a.shape}, expected {ref.dtype}{ref.shape}")
        check_weights(fail, arrays, ("micro.A", "micro.B", "base.A", "base.B"))
        check_bank_arrays(fail, arrays)
        counters, n = meta["counters"], meta["n_patterns"]
        if not isinstance(counters, dict) or set(counters) != set(_COUNTERS):
            fail(f"counters {counters!r}")
        check_number(fail, "counters['global_baseline']", counters["global_baseline"], 0.0, 1.0)
        for key in _COUNTERS[1:]:
            check_number(fail, f"counters[{key!r}]", counters[key], 0, MAX_COUNT, integer=True)
        check_number(fail, "n_patterns", n, 0, engine.bank.capacity, integer=True)
        if not isinstance(meta["counts"], dict) or set(meta["counts"]) != set(engine._counts):
            fail(f"counts {meta['counts']!r}")
        for key, v in meta["counts"].items():
            check_number(fail, f"counts[{key!r}]", v, 0, MAX_COUNT, integer=True)
        try:
            engine.micro.set_weights(arrays["micro.A"], arrays["micro.B"])
            engine.base.set_weights(arrays["base.A"], arrays["base.B"])
            for name in _BANK_ARRAYS:
                getattr(engine.bank, name)[...] = arrays[f"bank.{name}"]
            engine.bank._set_n_patterns(n)
            engine._set_counters(counters)
            engine._counts.update(meta["counts"])
        except (TypeError, ValueError, OverflowError) as exc:
            fail(f"inconsistent state: {exc}")
        return engine

    # -- life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the coordinator; the engine stays usable for queries of its state."""
        self.stop_background()

    def __enter__(self) -> SonaEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"SonaEngine(hidden_dim={self.config.hidden_dim}, "
                f"patterns={self.bank.n_patterns}, instant_updates={self.instant_updates})")
