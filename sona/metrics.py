"""Prometheus exposition of a Router's or SonaEngine's stats() (``pip install "sona[metrics]"``).

    from prometheus_client import start_http_server
    from sona.metrics import register

    register(router)                  # on prometheus_client's default registry
    start_http_server(9100)           # GET /metrics: sona_router_decisions_total, ...

A :class:`StatsCollector` calls ``stats()`` at every scrape, never on the routing path, and turns
the snapshot into metric families named ``<namespace>_<subsystem>_<key>`` (``sona_router_...``
for a Router, ``sona_engine_...`` for a SonaEngine):

* counts that only grow (:data:`COUNTERS`) become counters (``..._total``);
* every other number becomes a gauge, a bool a 0/1 gauge, and ``None`` (nothing to report yet,
  e.g. no background cycle so far) is left out;
* per-route values become one family with a ``route`` label: a dict keyed by route names (e.g.
  ``route_decisions``, ``route_quality``) or a list of numbers as long as ``stats()["routes"]``;
* other dicts are flattened (``params`` -> ``sona_router_params_tau``, ...);
* top-level strings (``backend``) become labels of one ``<namespace>_<subsystem>_info`` gauge
  of value 1.

Several routers on one registry: give a mapping ``{"main": r1, "canary": r2}``; every sample
then carries a ``name`` label (``label=`` renames it).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterator, Mapping
from typing import Any, Union

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ModuleNotFoundError as exc:  # the optional extra
    raise ImportError(
        'sona.metrics needs prometheus_client: pip install "sona[metrics]"', name=exc.name
    ) from exc

from .engine import SonaEngine
from .router import Router

__all__ = ["COUNTERS", "StatsCollector", "register"]

#: stats() keys that only ever grow (counts since the router or engine was created or loaded);
#: any other number is exposed as a gauge.
COUNTERS = frozenset({
    # Router.stats()
    "decisions", "feedbacks", "ewc_checkpoints", "task_boundaries", "route_decisions",
    # SonaEngine.stats()
    "trajectories_started", "trajectories_ended", "trajectories_evicted",
    "trajectories_dropped", "trajectories_drained", "instant_updates",
    "instant_updates_skipped", "late_feedbacks", "instant_cycles", "background_cycles",
    "consolidations",
})  # fmt: skip

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_SUBSYSTEMS = ((Router, "router"), (SonaEngine, "engine"))

Source = Any  # anything with a stats() -> dict method: a Router, a SonaEngine
Sources = Union[Source, Mapping[str, Source]]


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _metric_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


class StatsCollector(Collector):
    """A Prometheus collector of one or several sources' ``stats()`` (see the module docstring).

    Parameters
    ----------
    sources : Router, SonaEngine, any object with ``stats() -> dict``, or a mapping of names to
        such objects (each sample then carries the label ``label=<name>``).
    namespace : str
        First part of every metric name (default ``"sona"``).
    subsystem : str or None
        Second part; by default ``"router"`` for Routers and ``"engine"`` for SonaEngines
        (required for other objects).
    label : str
        Label that tells the sources of a mapping apart (default ``"name"``).

    Raises TypeError for a source without ``stats()`` or sources of different kinds, ValueError
    for an empty mapping or a name that is not a valid Prometheus name.

    >>> import sona
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> registry = CollectorRegistry()
    >>> _ = registry.register(StatsCollector(sona.Router(["a", "b"], hidden_dim=8)))
    >>> b"sona_router_decisions_total 0.0" in generate_latest(registry)
    True
    """

    def __init__(self, sources: Sources, *, namespace: str = "sona",
                 subsystem: str | None = None, label: str = "name") -> None:
        if isinstance(sources, Mapping):
            if not sources:
                raise ValueError("sources: an empty mapping; give at least one router or engine")
            named = {str(k): v for k, v in sources.items()}
        else:
            named = {"": sources}
        for name, source in named.items():
            if not callable(getattr(source, "stats", None)):
                where = f"sources[{name!r}]" if name else "source"
                raise TypeError(f"{where} must have a stats() method (a Router or SonaEngine); "
                                f"got {type(source).__name__}")
        if subsystem is None:
            kinds = {next((s for cls, s in _SUBSYSTEMS if isinstance(src, cls)), None)
                     for src in named.values()}
            if len(kinds) != 1 or None in kinds:
                got = sorted(type(s).__name__ for s in named.values())
                raise TypeError("give subsystem= for sources that are not all Routers or all "
                                f"SonaEngines; got {got}")
            subsystem = kinds.pop()
        for what, value in (("namespace", namespace), ("subsystem", subsystem), ("label", label)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValueError(f"{what} must be a Prometheus name ([a-zA-Z_][a-zA-Z0-9_]*); "
                                 f"got {value!r}")
        self._sources = named
        self._prefix = f"{namespace}_{subsystem}"
        self._label = label if isinstance(sources, Mapping) else None

    def describe(self) -> list[Metric]:
        """The families a scrape would return now (lets a registry check for name clashes)."""
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        """One scrape: every source's stats() as metric families, one family per name."""
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name, source in self._sources.items():
            stats = source.stats()
            if not isinstance(stats, Mapping):
                raise TypeError(f"{type(source).__name__}.stats() returned "
                                f"{type(stats).__name__}, expected a dict")
            const = {} if self._label is None else {self._label: name}
            for metric, path, labels, value, counter in self._samples(stats):
                family = families.get(metric)
                if family is None:
                    doc = f"{type(source).__name__}.stats(){path}"
                    family = (CounterMetricFamily if counter else GaugeMetricFamily)(
                        metric, doc, labels=[*const, *labels])
                    families[metric] = family
                family.add_metric([*const.values(), *labels.values()], value)
        yield from families.values()

    def _samples(self, stats: Mapping[str, Any]) -> Iterator[tuple[str, str, dict, float, bool]]:
        """(metric name, where in stats() it comes from, labels, value, is a counter) for each
        number in a stats() snapshot."""
        routes = stats.get("routes")
        routes = list(routes) if isinstance(routes, (list, tuple)) else []
        info = {k: v for k, v in stats.items() if isinstance(v, str)}
        if info:
            labels = {_metric_name(k): v for k, v in info.items()}
            yield f"{self._prefix}_info", f": {', '.join(info)}", labels, 1.0, False
        for key, value in stats.items():
            yield from self._flatten(f"{self._prefix}_{_metric_name(key)}", f"[{key!r}]", key,
                                     value, routes)

    def _flatten(self, metric: str, path: str, key: str, value: Any,
                 routes: list) -> Iterator[tuple[str, str, dict, float, bool]]:
        counter = key in COUNTERS
        if isinstance(value, bool):
            yield metric, path, {}, float(value), False
        elif _is_number(value):
            yield metric, path, {}, float(value), counter
        elif isinstance(value, Mapping) and value and routes and set(value) <= set(routes):
            for route, v in value.items():
                if _is_number(v) or isinstance(v, bool):
                    yield metric, f"{path}[route]", {"route": route}, float(v), counter
        elif isinstance(value, Mapping):
            for sub, v in value.items():
                yield from self._flatten(f"{metric}_{_metric_name(str(sub))}",
                                         f"{path}[{sub!r}]", str(sub), v, [])
        elif (isinstance(value, (list, tuple)) and routes and len(value) == len(routes)
              and all(_is_number(v) or isinstance(v, bool) for v in value)):
            for route, v in zip(routes, value):
                yield metric, f"{path}[route]", {"route": route}, float(v), counter


def register(sources: Sources, registry: CollectorRegistry = REGISTRY,
             **kwargs: Any) -> StatsCollector:
    """Register a :class:`StatsCollector` of ``sources`` on ``registry`` and return it.

    Keyword arguments go to StatsCollector. Remove it again with
    ``registry.unregister(collector)``. Raises what StatsCollector raises, and ValueError when
    the registry already has metrics of these names (e.g. a second router: use a mapping).

    >>> import sona
    >>> from prometheus_client import CollectorRegistry
    >>> collector = register(sona.SonaEngine(hidden_dim=8, base_lora_rank=2),
    ...                      CollectorRegistry())
    """
    collector = StatsCollector(sources, **kwargs)
    registry.register(collector)
    return collector
