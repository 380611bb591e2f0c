"""sona's logging: lifecycle events on the "sona" logger hierarchy (one child per module), and
silence on the hot path."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
from helpers import OUTSIDE, subprocess_env

import sona


def _records(caplog, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


def test_engine_and_router_saves_and_loads_log_path_and_bytes(tmp_path, caplog):
    engine = sona.SonaEngine(hidden_dim=8, base_lora_rank=2)
    router = sona.Router(["a", "b"], hidden_dim=8)
    with caplog.at_level(logging.INFO, logger="sona"):
        for obj, name in ((engine, "e.sona"), (router, "r.sona")):
            obj.save(tmp_path / name)
        sona.SonaEngine.load(tmp_path / "e.sona")
        sona.Router.load(tmp_path / "r.sona")
    msgs = [r.getMessage() for r in _records(caplog, "sona.state")]
    assert all(r.levelno == logging.INFO for r in _records(caplog, "sona.state"))
    for verb, kind, name in (("saved", "engine", "e.sona"), ("saved", "router", "r.sona"),
                             ("read", "engine", "e.sona"), ("read", "router", "r.sona")):
        size = (tmp_path / name).stat().st_size
        prep = "to" if verb == "saved" else "from"
        assert f"{verb} {kind} state {prep} {tmp_path / name} ({size} bytes)" in msgs, msgs


def test_background_coordinator_start_and_stop_are_logged(caplog):
    engine = sona.SonaEngine(hidden_dim=8, base_lora_rank=2)
    with caplog.at_level(logging.INFO, logger="sona.engine"):
        engine.start_background(3600.0, every_n_trajectories=50)
        engine.stop_background()
        engine.stop_background()  # not running: nothing to report
    msgs = [r.getMessage() for r in _records(caplog, "sona.engine")]
    assert msgs == ["background coordinator started: a cycle every 3600 s or every 50 "
                    "trajectories", "background coordinator stopped"]


def test_background_cycle_is_logged_at_debug(caplog):
    engine = sona.SonaEngine(hidden_dim=8, base_lora_rank=2)
    tid = engine.start_trajectory(np.ones(8, np.float32))
    engine.end_trajectory(tid, 0.9)
    with caplog.at_level(logging.DEBUG, logger="sona.engine"):
        engine.run_background_cycle()
    (rec,) = _records(caplog, "sona.engine")
    assert rec.levelno == logging.DEBUG
    assert rec.getMessage().startswith("background cycle: 1 trajectories drained")


def test_hot_path_never_logs(caplog):
    rng = np.random.default_rng(0)
    router = sona.Router(["a", "b", "c"], hidden_dim=16, seed=0)
    engine = router.engine
    X = rng.standard_normal((200, 16)).astype(np.float32)
    with caplog.at_level(logging.DEBUG, logger="sona"):
        for x in X:
            d = router.route(x)
            router.feedback(d, float(d.index == 0))
            router.scores(x)
            tid = engine.start_trajectory(x)
            engine.record_step(tid, 1, 0.5, 10.0)
            engine.end_trajectory(tid, 0.7)
            engine.apply_lora(x)
            engine.query_patterns(x, 3)
    assert [r for r in caplog.records if r.name.startswith("sona")] == []


def test_backend_chosen_at_import_is_logged_at_debug():
    code = ("import logging; logging.basicConfig(level=logging.DEBUG, format='%(name)s "
            "%(levelname)s %(message)s'); import sona; print(sona.get_backend())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=OUTSIDE,
                          env=subprocess_env(SONA_BACKEND="scalar"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sona DEBUG kernel backend scalar (usable here: " in proc.stderr
    assert "SONA_BACKEND='scalar'" in proc.stderr


def test_loggers_are_children_of_sona():
    # an application configures logging.getLogger("sona") once and sees every module
    import sona.engine
    import sona.state

    assert sona.engine._log.parent is logging.getLogger("sona")
    assert sona.state._log.parent is logging.getLogger("sona")
