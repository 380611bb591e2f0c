"""sona.metrics: stats() of routers and engines as Prometheus metrics, read back through a real
prometheus_client registry and its text exposition."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import OUTSIDE, subprocess_env
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import sona
from sona.metrics import COUNTERS, StatsCollector, register


def _scrape(registry: CollectorRegistry) -> dict[str, dict[tuple, float]]:
    """Sample name -> {sorted label items: value}, parsed from the text exposition."""
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _trained_router(n: int = 60) -> sona.Router:
    rng = np.random.default_rng(0)
    router = sona.Router(["small", "large"], hidden_dim=16, seed=0)
    for x in rng.standard_normal((n, 16)).astype(np.float32):
        d = router.route(x)
        router.feedback(d, 0.9 if d.route == "large" else 0.2)
    return router


def test_router_stats_exposed_as_counters_and_gauges():
    router = _trained_router()
    registry = CollectorRegistry()
    register(router, registry)
    got = _scrape(registry)
    stats = router.stats()
    assert got["sona_router_decisions_total"] == {(): 60.0}
    assert got["sona_router_feedbacks_total"] == {(): 60.0}
    assert got["sona_router_task_boundaries_total"] == {(): float(stats["task_boundaries"])}
    assert got["sona_router_n_patterns"] == {(): float(stats["n_patterns"])}
    assert got["sona_router_global_baseline"][()] == pytest.approx(stats["global_baseline"])
    assert got["sona_router_has_anchor"] == {(): float(stats["has_anchor"])}
    assert got["sona_router_params_tau"] == {(): stats["params"]["tau"]}
    assert got["sona_router_params_use_prior"] == {(): 1.0}
    assert got["sona_router_info"] == {(("backend", sona.get_backend()),): 1.0}
    # the values are read at each scrape, not at registration
    d = router.route(np.ones(16, np.float32))
    router.feedback(d, 1.0)
    assert _scrape(registry)["sona_router_feedbacks_total"] == {(): 61.0}


def test_every_number_of_router_and_engine_stats_is_exposed():
    router = _trained_router(40)
    engine = router.engine
    engine.run_background_cycle()
    registry = CollectorRegistry()
    register(router, registry)
    register(engine, registry)
    got = _scrape(registry)
    for prefix, stats in (("sona_router", router.stats()), ("sona_engine", engine.stats())):
        for key, value in stats.items():
            if isinstance(value, (bool, int, float)):
                name = f"{prefix}_{key}" + ("_total" if key in COUNTERS else "")
                assert got[name][()] == pytest.approx(float(value)), key
    cycle = engine.stats()["last_background_cycle"]
    assert got["sona_engine_last_background_cycle_trajectories"] == {
        (): float(cycle["trajectories"])}


class _PerRouteStats:
    """Stats shaped like a router's per-route windowed statistics (dicts keyed by route name,
    and a list aligned with "routes"), to pin down the labelled exposition."""

    def __init__(self) -> None:
        self.routes = ["small", "large", "code"]
        self.quality = {"small": 0.4, "large": 0.9, "code": None}  # code: no feedback yet

    def stats(self) -> dict:
        return {
            "routes": self.routes,
            "route_decisions": {r: 10 * (i + 1) for i, r in enumerate(self.routes)},
            "route_feedbacks": {r: 5 * (i + 1) for i, r in enumerate(self.routes)},
            "route_quality": self.quality,
            "route_cost": [0.1, 1.0, 0.5],
            "exploration": 0.05,
            "last_error": None,
        }


def test_per_route_values_carry_a_route_label():
    source = _PerRouteStats()
    registry = CollectorRegistry()
    register(source, registry, subsystem="router")
    got = _scrape(registry)
    assert got["sona_router_route_decisions_total"] == {
        (("route", "small"),): 10.0, (("route", "large"),): 20.0, (("route", "code"),): 30.0}
    # windowed (the router's decayed per-route counts): a gauge
    assert got["sona_router_route_feedbacks"][(("route", "large"),)] == 10.0
    assert got["sona_router_route_quality"] == {
        (("route", "small"),): 0.4, (("route", "large"),): 0.9}  # None: nothing to report
    assert got["sona_router_route_cost"] == {
        (("route", "small"),): 0.1, (("route", "large"),): 1.0, (("route", "code"),): 0.5}
    assert got["sona_router_exploration"] == {(): 0.05}
    assert not any("last_error" in name for name in got)
    # a route added at run time appears at the next scrape, a retired one disappears
    source.routes = ["large", "code", "new"]
    source.quality = {"large": 0.8, "code": 0.5, "new": math.nan}
    quality = _scrape(registry)["sona_router_route_quality"]
    assert set(quality) == {(("route", r),) for r in ("large", "code", "new")}
    assert math.isnan(quality[(("route", "new"),)])


def test_several_routers_on_one_registry_via_a_mapping():
    a, b = _trained_router(10), _trained_router(20)
    registry = CollectorRegistry()
    register({"main": a, "canary": b}, registry, label="router")
    got = _scrape(registry)["sona_router_decisions_total"]
    assert got == {(("router", "canary"),): 20.0, (("router", "main"),): 10.0}
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(a, registry)  # same names again: refused by the registry


def test_unregister_removes_the_metrics():
    registry = CollectorRegistry()
    collector = register(_trained_router(5), registry)
    registry.unregister(collector)
    assert "sona_router" not in generate_latest(registry).decode()


@pytest.mark.parametrize("sources, kwargs, exc, match", [
    (object(), {}, TypeError, "source must have a stats"),
    ({"a": object()}, {}, TypeError, r"sources\['a'\] must have a stats"),
    ({}, {}, ValueError, "empty mapping"),
    (_PerRouteStats(), {}, TypeError, "give subsystem="),
    (_PerRouteStats(), {"subsystem": "my-router"}, ValueError, "subsystem must be a Prometheus"),
    (_PerRouteStats(), {"subsystem": "r", "namespace": "1x"}, ValueError, "namespace must be"),
])
def test_bad_arguments_raise(sources, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        StatsCollector(sources, **kwargs)


def test_mixed_sources_need_a_subsystem():
    router = _trained_router(3)
    with pytest.raises(TypeError, match=r"got \['Router', 'SonaEngine'\]"):
        StatsCollector({"r": router, "e": router.engine})
    registry = CollectorRegistry()
    register({"r": router, "e": router.engine}, registry, subsystem="all")
    got = _scrape(registry)
    assert got["sona_all_decisions_total"] == {(("name", "r"),): 3.0}
    assert got["sona_all_instant_cycles_total"] == {(("name", "e"),): 0.0}


def test_scraping_does_not_change_the_router():
    router = _trained_router(20)
    before = router.stats()
    registry = CollectorRegistry()
    register(router, registry)
    for _ in range(3):
        generate_latest(registry)
    assert router.stats() == before


def test_missing_prometheus_client_names_the_extra():
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "try:\n    import sona.metrics\nexcept ImportError as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=OUTSIDE, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "sona[metrics]"' in proc.stdout


def test_docstring_examples_run():
    import doctest

    import sona.metrics

    failures, tried = doctest.testmod(sona.metrics, verbose=False)
    assert tried >= 4 and failures == 0


def test_help_text_says_where_in_stats_the_value_comes_from():
    registry = CollectorRegistry()
    register(_trained_router(2), registry)
    families = {f.name: f for f in
                text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["sona_router_decisions"].documentation == "Router.stats()['decisions']"
    assert families["sona_router_params_tau"].documentation == "Router.stats()['params']['tau']"
    assert families["sona_router_info"].documentation == "Router.stats(): backend"
