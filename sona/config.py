"""SonaConfig: the validated, immutable configuration of a sona engine.

Field names follow the reference Rust crate ``ruvector-sona`` where the concept is the same
(hidden_dim, embedding_dim, micro_lora_rank, base_lora_rank, micro_lora_lr, pattern_clusters,
trajectory_capacity, quality_threshold), so a config written for the reference maps over field
by field. Deliberate differences:

* ``background_interval_s`` is in seconds (the reference uses ``background_interval_ms``);
  :meth:`SonaConfig.from_dict` accepts the ``_ms`` spelling and converts it.
* ``embedding_dim`` must equal ``hidden_dim`` (the adapters map an embedding to an embedding of
  the same width); it is checked here, the one place, so a config is never accepted that an
  engine would refuse.
* there is no ``enable_simd``: sona picks AVX2 or scalar kernels at import by CPU detection
  (see ``sona.set_backend``), so a config flag would only be able to disagree with reality.
* there is no ``ewc_lambda`` and no ``base_lora_lr``: the engine's learning has neither an EWC
  penalty nor a BaseLoRA step size (see ``_NOT_FIELDS`` for where each concept lives instead).
  Earlier versions validated both and never read them; giving either now raises an error that
  names the replacement.

This module is pure Python and imports nothing from ``sona._core``: it sits at the bottom of
the layers so that the engine, the router, the state files and the CLI can all depend on it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["SonaConfig", "REMOVED_FIELDS"]

# Upper bounds exist to turn an obvious typo (an extra three zeros) into an error at
# construction instead of a multi-gigabyte allocation later.
MAX_DIM = 65536
MAX_MICRO_RANK = 2
MAX_BASE_RANK = 64
MAX_TRAJECTORY_CAPACITY = 1 << 24  # 16.7M slots; at d=256/float16 that is already ~11 GiB
MAX_TRAJECTORY_STEPS = 1024
MAX_OPEN_TRAJECTORIES = 1 << 24
MAX_ROUTES = 1024
MAX_PATTERNS = 1_000_000
MAX_INTERVAL_S = 7 * 24 * 3600.0  # also keeps us below threading.TIMEOUT_MAX everywhere
# Every float field is bounded so that the float32 arithmetic it enters cannot overflow (a
# finite 1e39 would become Inf in the kernels): lrs <= 1, thresholds in [0, 1], and this.
EMBEDDING_DTYPES = ("float32", "float16")
MAX_SEED = 2**64 - 1

# Names a config may carry (the reference crate's, or an earlier sona's) that are not fields,
# with what to do instead. The engine learns by plain MicroLoRA steps of size micro_lora_lr on
# every outcome and by folding MicroLoRA into BaseLoRA (a truncated SVD, no step size) on every
# background cycle; it has no EWC penalty. Both removed fields were validated and never read.
_NOT_FIELDS = {
    "enable_simd": "sona selects SIMD kernels at import by CPU detection; "
    "use sona.set_backend('scalar') or SONA_BACKEND=scalar to force the scalar path",
    "ewc_lambda": "removed, it never changed what the engine learns (the engine has no EWC "
    "penalty): EWC++ is part of the router policy, set it with "
    "sona.Router(..., ewc_lambda=...)",
    "base_lora_lr": "removed, it never changed what the engine learns (BaseLoRA takes no "
    "gradient steps: each background cycle sets it to the rank-base_lora_rank SVD of both "
    "tiers): the engine's step size is micro_lora_lr, how often it is folded into BaseLoRA is "
    "background_interval_s, and a router's step size is sona.Router(..., lr=...)",
}

#: Fields earlier versions had, validated and never read; configs saved then carry them.
REMOVED_FIELDS = ("ewc_lambda", "base_lora_lr")


def _is_int(value: Any) -> bool:
    # bool is an int subclass; True as a dimension is always a mistake.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class SonaConfig:
    """Configuration of a :class:`sona.SonaEngine` (and of a :class:`sona.Router`'s engine).

    Immutable and validated on construction: a bad value raises ``ValueError`` naming the field,
    the allowed range and the value received; a value of the wrong type, or a name that is not a
    field (``ewc_lambda`` and ``base_lora_lr`` were removed), raises ``TypeError`` saying what to
    use instead. Only ``hidden_dim`` may be given by position.
    Use :meth:`replace` to derive a changed copy (re-validated), :meth:`to_dict` /
    :meth:`from_dict` to serialise, and the preset classmethods for common deployments.

    Parameters
    ----------
    hidden_dim : int, 1..65536
        Width of the vectors the adapters act on.
    embedding_dim : int or None
        Width of query embeddings: ``None`` (default) or equal to hidden_dim (the adapters map
        embeddings to embeddings of the same width; kept for the reference crate's configs).
    micro_lora_rank : int, 1..2
        Rank of the per-request MicroLoRA tier (instant loop).
    base_lora_rank : int, 1..64
        Rank of the consolidated BaseLoRA tier (background loop). Gives the router its
        capacity to separate several routes; use at least the number of routes.
    micro_lora_lr : float, (0, 1]
        Step size of the instant loop's MicroLoRA step on every outcome (BaseLoRA takes no
        steps: background cycles fold MicroLoRA into it).
    pattern_clusters : int, >= 1
        Number of clusters a background cycle extracts (k of k-means).
    max_patterns : int, >= pattern_clusters
        Bound on the ReasoningBank; stale low-quality patterns are pruned beyond it.
    max_routes : int, 1..1024
        Routes (or node ids) whose per-pattern reward statistics the ReasoningBank keeps; a Router
        on this engine may have at most this many routes.
    trajectory_capacity : int, 1..16777216
        Slots in the trajectory ring buffer; when full, new records are dropped and counted.
    max_trajectory_steps : int, 1..1024
        Steps stored per trajectory (fixed-size ring slots); further steps are counted, not stored.
    max_open_trajectories : int, 1..16777216
        Bound on started-but-not-ended trajectories; beyond it the oldest is evicted.
    open_trajectory_timeout_s : float, (0, 604800]
        A trajectory open for longer than this is evicted (and counted).
    quality_threshold : float, [0, 1]
        Trajectories below this quality do not seed patterns in the ReasoningBank.
    background_interval_s : float, (0, 604800]
        Period of the coordinator's background cycle (``engine.start_background``).
    embedding_dtype : "float32" or "float16"
        Storage type of query embeddings in the trajectory ring (float16 halves memory).
    seed : int, 0..2**64-1
        Seed for every random choice (initialisation, exploration, k-means++): same seed,
        same results.

    Example
    -------
    >>> cfg = SonaConfig(hidden_dim=384)
    >>> cfg.embedding_dim
    384
    >>> SonaConfig.edge_deployment(hidden_dim=128).embedding_dtype
    'float16'
    >>> cfg.replace(base_lora_rank=16).base_lora_rank
    16
    """

    hidden_dim: int = 256
    embedding_dim: int | None = None
    micro_lora_rank: int = 2
    base_lora_rank: int = 8
    micro_lora_lr: float = 0.003
    pattern_clusters: int = 64
    max_patterns: int = 1024
    max_routes: int = 16
    trajectory_capacity: int = 10_000
    max_trajectory_steps: int = 8
    max_open_trajectories: int = 4096
    open_trajectory_timeout_s: float = 60.0
    quality_threshold: float = 0.3
    background_interval_s: float = 60.0
    embedding_dtype: str = "float32"
    seed: int = 0

    def __new__(cls, *args: Any, **kwargs: Any) -> SonaConfig:
        # Runs before the generated __init__, whose own TypeError for an unknown keyword could
        # not say what to use instead of a removed or reference-only name.
        _check_field_names(kwargs, "SonaConfig()", TypeError)
        if len(args) > 1:
            # removing two fields shifted every later position: refuse rather than misassign
            raise TypeError(
                "SonaConfig() takes only hidden_dim by position; give the other fields by "
                f"keyword (got {len(args)} positional arguments: {args!r})"
            )
        return super().__new__(cls)

    # ------------------------------------------------------------------ validation

    def __post_init__(self) -> None:
        if self.embedding_dim is None:
            object.__setattr__(self, "embedding_dim", self.hidden_dim)

        self._int("hidden_dim", 1, MAX_DIM)
        self._int("embedding_dim", 1, MAX_DIM)
        self._int("micro_lora_rank", 1, MAX_MICRO_RANK)
        self._int("base_lora_rank", 1, MAX_BASE_RANK)
        self._int("pattern_clusters", 1, MAX_PATTERNS)
        self._int("max_patterns", 1, MAX_PATTERNS)
        self._int("max_routes", 1, MAX_ROUTES)
        self._int("trajectory_capacity", 1, MAX_TRAJECTORY_CAPACITY)
        self._int("max_trajectory_steps", 1, MAX_TRAJECTORY_STEPS)
        self._int("max_open_trajectories", 1, MAX_OPEN_TRAJECTORIES)
        self._int("seed", 0, MAX_SEED)

        self._real("micro_lora_lr", 0.0, 1.0, low_open=True)
        self._real("open_trajectory_timeout_s", 0.0, MAX_INTERVAL_S, low_open=True)
        self._real("quality_threshold", 0.0, 1.0)
        self._real("background_interval_s", 0.0, MAX_INTERVAL_S, low_open=True)

        if not isinstance(self.embedding_dtype, str):
            raise TypeError(
                f"SonaConfig.embedding_dtype must be a str, one of {EMBEDDING_DTYPES}, "
                f"got {type(self.embedding_dtype).__name__} {self.embedding_dtype!r}"
            )
        if self.embedding_dtype not in EMBEDDING_DTYPES:
            raise ValueError(
                f"SonaConfig.embedding_dtype must be one of {EMBEDDING_DTYPES}, "
                f"got {self.embedding_dtype!r}"
            )

        # Cross-field rules, checked after every single field is known to be sane.
        if self.embedding_dim != self.hidden_dim:
            raise ValueError(
                f"SonaConfig.embedding_dim must equal hidden_dim ({self.hidden_dim}) or be None: "
                f"the adapters map embeddings to embeddings; got {self.embedding_dim}"
            )
        for name in ("micro_lora_rank", "base_lora_rank"):
            rank = getattr(self, name)
            if rank > self.hidden_dim:
                raise ValueError(
                    f"SonaConfig.{name} must be <= hidden_dim ({self.hidden_dim}), got {rank}"
                )
        if self.pattern_clusters > self.max_patterns:
            raise ValueError(
                f"SonaConfig.pattern_clusters must be <= max_patterns ({self.max_patterns}), "
                f"got {self.pattern_clusters}"
            )

    def _int(self, name: str, lo: int, hi: int) -> None:
        value = getattr(self, name)
        if not _is_int(value):
            raise TypeError(
                f"SonaConfig.{name} must be an int in [{lo}, {hi}], "
                f"got {type(value).__name__} {value!r}"
            )
        value = int(value)  # numpy integers become plain ints, so to_dict() is JSON-clean
        if not lo <= value <= hi:
            raise ValueError(f"SonaConfig.{name} must be in [{lo}, {hi}], got {value}")
        object.__setattr__(self, name, value)

    def _real(self, name: str, lo: float, hi: float, low_open: bool = False) -> None:
        value = getattr(self, name)
        interval = f"{'(' if low_open else '['}{lo:g}, {hi:g}]"
        if not _is_real(value):
            raise TypeError(
                f"SonaConfig.{name} must be a real number in {interval}, "
                f"got {type(value).__name__} {value!r}"
            )
        value = float(value)
        ok = math.isfinite(value) and (lo < value if low_open else lo <= value) and value <= hi
        if not ok:
            raise ValueError(f"SonaConfig.{name} must be finite and in {interval}, got {value!r}")
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ derivation

    def replace(self, **changes: Any) -> SonaConfig:
        """Return a copy with ``changes`` applied, validated like a fresh config.

        ``embedding_dim`` follows ``hidden_dim`` unless it is itself changed:
        ``SonaConfig().replace(hidden_dim=384).embedding_dim == 384``.

        Raises TypeError for an unknown field name, and whatever validation raises.
        """
        _check_field_names(changes, "SonaConfig.replace()", TypeError)
        if "hidden_dim" in changes and "embedding_dim" not in changes:
            changes["embedding_dim"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-serialisable: only int, float and str values)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SonaConfig:
        """Build a config from a mapping such as :meth:`to_dict`'s output, validating it.

        Missing keys take their defaults (so configs saved by an older sona still load).
        Unknown keys raise ``ValueError`` naming them. For compatibility with the reference
        crate's serialised config, ``background_interval_ms`` is accepted and converted to
        ``background_interval_s``.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"SonaConfig.from_dict() needs a mapping, got {type(d).__name__}")
        data = dict(d)
        if "background_interval_ms" in data:
            if "background_interval_s" in data:
                raise ValueError(
                    "SonaConfig.from_dict(): give background_interval_s or "
                    "background_interval_ms, not both"
                )
            ms = data.pop("background_interval_ms")
            if not _is_real(ms):
                raise TypeError(
                    "SonaConfig.from_dict(): background_interval_ms must be a real number, "
                    f"got {type(ms).__name__} {ms!r}"
                )
            data["background_interval_s"] = float(ms) / 1000.0
        _check_field_names(data, "SonaConfig.from_dict()", ValueError)
        return cls(**data)

    # ------------------------------------------------------------------ presets

    @classmethod
    def _preset(cls, base: dict[str, Any], overrides: dict[str, Any], who: str) -> SonaConfig:
        _check_field_names(overrides, f"SonaConfig.{who}()", TypeError)
        params = dict(base)
        params.update(overrides)
        return cls(**params)

    @classmethod
    def max_throughput(cls, **overrides: Any) -> SonaConfig:
        """Lowest per-request cost (real-time chat).

        Trades adaptivity for speed: small BaseLoRA (rank 4), a smaller trajectory ring and
        pattern bank (cheaper background cycles and pattern lookups), few stored steps, rare
        background cycles, and a conservative MicroLoRA step. Keyword overrides win.
        """
        return cls._preset(
            dict(
                micro_lora_rank=2,
                base_lora_rank=4,
                micro_lora_lr=0.002,
                pattern_clusters=32,
                max_patterns=256,
                trajectory_capacity=4096,
                max_trajectory_steps=4,
                quality_threshold=0.4,
                background_interval_s=300.0,
            ),
            overrides,
            "max_throughput",
        )

    @classmethod
    def max_quality(cls, **overrides: Any) -> SonaConfig:
        """Best decisions per feedback (research, offline evaluation).

        Trades memory and background CPU for learning quality: BaseLoRA rank 16, a large
        pattern bank and ring, learning from lower-quality trajectories too and frequent
        background cycles. Keyword overrides win.
        """
        return cls._preset(
            dict(
                micro_lora_rank=2,
                base_lora_rank=16,
                micro_lora_lr=0.003,
                pattern_clusters=128,
                max_patterns=4096,
                trajectory_capacity=20_000,
                max_trajectory_steps=16,
                quality_threshold=0.2,
                background_interval_s=15.0,
            ),
            overrides,
            "max_quality",
        )

    @classmethod
    def edge_deployment(cls, **overrides: Any) -> SonaConfig:
        """Small memory footprint (edge and mobile devices).

        Trades capacity for memory: MicroLoRA rank 1, BaseLoRA rank 4, float16 embeddings
        in the ring (half the bytes per trajectory), a 256-slot ring, a 128-pattern bank and
        few open trajectories. Keyword overrides win.
        """
        return cls._preset(
            dict(
                micro_lora_rank=1,
                base_lora_rank=4,
                micro_lora_lr=0.002,
                pattern_clusters=16,
                max_patterns=128,
                trajectory_capacity=256,
                max_trajectory_steps=4,
                max_open_trajectories=256,
                quality_threshold=0.5,
                embedding_dtype="float16",
            ),
            overrides,
            "edge_deployment",
        )

    @classmethod
    def batch_processing(cls, **overrides: Any) -> SonaConfig:
        """High request rates processed in bursts (50+ inferences per second).

        Trades memory and latency of learning for throughput of learning: a large ring and
        open-trajectory table absorb bursts without drops, and background cycles run every
        30 s over big batches instead of reacting per request. Keyword overrides win.
        """
        return cls._preset(
            dict(
                micro_lora_rank=2,
                base_lora_rank=8,
                micro_lora_lr=0.002,
                pattern_clusters=64,
                max_patterns=2048,
                trajectory_capacity=65_536,
                max_open_trajectories=16_384,
                open_trajectory_timeout_s=300.0,
                background_interval_s=30.0,
            ),
            overrides,
            "batch_processing",
        )

    @classmethod
    def for_ephemeral(cls, **overrides: Any) -> SonaConfig:
        """Short-lived agent that collects locally before a coordinator aggregates.

        Trades long-term memory for a small, fast-adapting footprint: BaseLoRA rank 4,
        a 512-slot ring, a small bank, short timeouts and frequent (10 s) local cycles.
        Keyword overrides win.
        """
        return cls._preset(
            dict(
                micro_lora_rank=2,
                base_lora_rank=4,
                micro_lora_lr=0.003,
                pattern_clusters=16,
                max_patterns=256,
                trajectory_capacity=512,
                max_open_trajectories=512,
                open_trajectory_timeout_s=30.0,
                background_interval_s=10.0,
            ),
            overrides,
            "for_ephemeral",
        )

    @classmethod
    def for_coordinator(cls, **overrides: Any) -> SonaConfig:
        """Central learner aggregating trajectories from many agents or worker processes.

        Trades memory and background CPU for breadth and retention: BaseLoRA rank 16, a
        50 000-slot ring, a large pattern bank, a higher quality bar for patterns, and
        consolidation every 5 minutes. Keyword overrides win.
        """
        return cls._preset(
            dict(
                micro_lora_rank=2,
                base_lora_rank=16,
                micro_lora_lr=0.002,
                pattern_clusters=256,
                max_patterns=8192,
                trajectory_capacity=50_000,
                max_open_trajectories=16_384,
                open_trajectory_timeout_s=300.0,
                quality_threshold=0.4,
                background_interval_s=300.0,
            ),
            overrides,
            "for_coordinator",
        )

    PRESETS: ClassVar[tuple] = (
        "max_throughput",
        "max_quality",
        "edge_deployment",
        "batch_processing",
        "for_ephemeral",
        "for_coordinator",
    )


def _field_names() -> tuple:
    return tuple(f.name for f in dataclasses.fields(SonaConfig))


def _check_field_names(keys: Mapping[str, Any], who: str, exc: type) -> None:
    names = _field_names()
    unknown = [k for k in keys if k not in names]
    if not unknown:
        return
    hints = [f"{k}: {_NOT_FIELDS[k]}" for k in unknown if k in _NOT_FIELDS]
    msg = (
        f"{who}: unknown field(s) {', '.join(repr(k) for k in unknown)}; "
        f"valid fields are {', '.join(names)}"
    )
    if hints:
        msg += " (" + "; ".join(hints) + ")"
    raise exc(msg)
