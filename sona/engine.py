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

import threading
import time
import weakref
from dataclasses import asdict, dataclass

import numpy as np

from ._core import EngineCore, TrajectoryBuffer, TrajectoryStore, get_backend
from .bank import new_bank
from .config import SonaConfig
from .lora import BaseLoRA, MicroLoRA
from .state import StateFileError, read_state, write_state

__all__ = ["SonaEngine", "CycleResult", "ENGINE_STATE_VERSION"]

#: Layout version of the arrays and metadata inside an engine state file.
ENGINE_STATE_VERSION = 1
_BANK_ARRAYS = ("centroid", "centroid_sum", "hits", "route_n", "route_s", "baseline", "usage")
_COUNTERS = ("global_baseline", "n_seen", "instant_updates", "late_feedbacks", "updates_skipped")

# Late feedback (learn_from_feedback on an ended trajectory) is accepted for the most recent
# min(trajectory_capacity, this) ended trajectories: embeddings kept in a fixed table.
_LATE_FEEDBACK_WINDOW = 4096


@dataclass(frozen=True)
class CycleResult:
    """What one learning cycle did: counts and wall time (seconds)."""

    kind: str
    trajectories: int = 0
    evicted: int = 0
    consolidated: bool = False
    patterns: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class SonaEngine(EngineCore):
    """Runtime learning from trajectories: two LoRA tiers, a pattern bank, a trajectory ring.

    Parameters: a SonaConfig, and/or SonaConfig fields as keyword arguments (they override the
    config's); bank_params overrides sona.bank.BANK_DEFAULTS; micro_scale/base_scale are the
    adapters' output scales. Raises ValueError/TypeError for an invalid configuration.

    >>> import numpy as np, sona
    >>> engine = sona.SonaEngine(hidden_dim=8)
    >>> tid = engine.start_trajectory(np.ones(8, np.float32))
    >>> engine.record_step(tid, node_id=1, score=0.9, latency_us=120.0)
    >>> engine.end_trajectory(tid, 0.8)
    >>> engine.stats()["instant_updates"]
    1
    """

    def __init__(self, config: SonaConfig | None = None, *, bank_params: dict | None = None,
                 micro_scale: float = 1.0, base_scale: float = 1.0, **overrides) -> None:
        if config is None:
            cfg = SonaConfig(**overrides)
        elif not isinstance(config, SonaConfig):
            raise TypeError(f"config must be a SonaConfig; got {type(config).__name__}")
        else:
            cfg = config.replace(**overrides) if overrides else config
        if cfg.embedding_dim != cfg.hidden_dim:
            raise ValueError(f"embedding_dim ({cfg.embedding_dim}) must equal hidden_dim "
                             f"({cfg.hidden_dim}): the adapters map embeddings to embeddings")
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
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._routers: weakref.WeakSet = weakref.WeakSet()  # told when the adapters re-factor

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
        """Drains every stored trajectory from the ring (however few) and folds MicroLoRA's
        learned change into BaseLoRA (truncated SVD to BaseLoRA's rank), then resets MicroLoRA's
        B so its next feedbacks start from the identity. Returns counts and the wall time."""
        with self._cycle_lock:
            t0 = time.perf_counter()
            drained = 0
            while True:
                batch = self.store.buffer.drain()
                if len(batch.ids) == 0:
                    break
                drained += len(batch.ids)
            consolidated = self._consolidate()
            self._counts["background_cycles"] += 1
            self._counts["trajectories_drained"] += drained
            result = CycleResult("background", trajectories=drained, consolidated=consolidated,
                                 patterns=self.bank.n_patterns, seconds=time.perf_counter() - t0)
            self._last_cycle = result
            return result

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
    def start_background(self, interval_s: float | None = None) -> None:
        """Run run_background_cycle() every interval_s seconds (default: the config's) in a
        daemon thread until stop_background() or close(). RuntimeError if already running."""
        interval = self.config.background_interval_s if interval_s is None else float(interval_s)
        if not (np.isfinite(interval) and interval > 0):
            raise ValueError(f"interval_s must be a finite number > 0; got {interval_s!r}")
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the background coordinator is already running")
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                self.run_background_cycle()

        self._thread = threading.Thread(target=loop, name="sona-background", daemon=True)
        self._thread.start()

    def stop_background(self, timeout: float | None = 10.0) -> None:
        """Stop the coordinator thread (no-op when it is not running) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- queries and reporting -------------------------------------------------------------------
    def query_patterns(self, x, k: int = 5):
        """The k stored patterns most similar to x (cosine), most similar first."""
        return self.bank.query(x, k)

    def stats(self) -> dict:
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
            "global_baseline": self.global_baseline,
            "last_background_cycle": None if self._last_cycle is None else
            self._last_cycle.to_dict(),
        }

    # -- state files -----------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the engine's learned state to ``path`` atomically (see sona.state: kind "engine").

        Arrays: ``micro.A``, ``micro.B``, ``base.A``, ``base.B`` and the whole pattern bank
        (``bank.centroid``, ``bank.centroid_sum``, ``bank.hits``, ``bank.route_n``,
        ``bank.route_s``, ``bank.baseline``, ``bank.usage``); metadata: the config, adapter
        scales, bank parameters, counters and n_patterns. Open trajectories, the trajectory ring
        and the late-feedback window are not saved: they are in-flight requests, not knowledge.
        The previous file is untouched if the save fails.
        """
        from . import __version__

        with self._cycle_lock:
            arrays = {"micro.A": self.micro.A, "micro.B": self.micro.B,
                      "base.A": self.base.A, "base.B": self.base.B}
            arrays.update({f"bank.{n}": getattr(self.bank, n) for n in _BANK_ARRAYS})
            meta = {"engine_state_version": ENGINE_STATE_VERSION, "sona_version": __version__,
                    "config": self.config.to_dict(), "bank_params": self.bank.params,
                    "micro_scale": float(self.micro.scale), "base_scale": float(self.base.scale),
                    "counters": self._counters(), "counts": dict(self._counts),
                    "n_patterns": int(self.bank.n_patterns)}
            write_state(path, {k: np.ascontiguousarray(v) for k, v in arrays.items()}, meta,
                        "engine")

    @classmethod
    def load(cls, path) -> SonaEngine:
        """An engine with the state saved in ``path``: the same adapters, patterns and counters.

        Raises StateFileError for a corrupted, truncated, foreign, newer or inconsistent file
        (never a half-built engine) and FileNotFoundError when there is no file.
        """
        arrays, meta = read_state(path, "engine")

        def fail(why: str):
            raise StateFileError(f"{path}: not a usable sona engine state: {why}")

        want = {"engine_state_version", "sona_version", "config", "bank_params", "micro_scale",
                "base_scale", "counters", "counts", "n_patterns"}
        if not isinstance(meta, dict) or set(meta) != want:
            fail(f"metadata keys {sorted(meta) if isinstance(meta, dict) else meta!r}, "
                 f"expected {sorted(want)}")
        if meta["engine_state_version"] != ENGINE_STATE_VERSION:
            fail(f"engine state layout {meta['engine_state_version']!r}; this sona reads "
                 f"{ENGINE_STATE_VERSION}")
        try:
            cfg = SonaConfig.from_dict(meta["config"])
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
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                fail(f"{name} holds NaN or Inf")
        counters, n = meta["counters"], meta["n_patterns"]
        if not isinstance(counters, dict) or set(counters) != set(_COUNTERS):
            fail(f"counters {counters!r}")
        if not isinstance(n, int) or not 0 <= n <= engine.bank.capacity:
            fail(f"n_patterns {n!r} outside 0..{engine.bank.capacity}")
        if not isinstance(meta["counts"], dict) or set(meta["counts"]) != set(engine._counts):
            fail(f"counts {meta['counts']!r}")
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
        self._closed = True

    def __enter__(self) -> SonaEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"SonaEngine(hidden_dim={self.config.hidden_dim}, "
                f"patterns={self.bank.n_patterns}, instant_updates={self.instant_updates})")
