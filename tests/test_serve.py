"""sona.serve and `sona serve`: the real uvicorn server on a free loopback port, spoken to with a
real HTTP client (httpx). Skipped only when the serve extra is not installed."""

from __future__ import annotations

import base64
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import OUTSIDE, subprocess_env

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import sona  # noqa: E402
from sona.serve import create_app  # noqa: E402

DIM = 8
ROUTES = ["small", "medium", "large"]
HANG_GUARD_S = 60  # a broken server fails the test instead of hanging it


def _router(seed: int = 0) -> sona.Router:
    return sona.Router(ROUTES, hidden_dim=DIM, seed=seed)


def _x(seed: int = 0) -> list[float]:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32).tolist()


@contextlib.contextmanager
def serving(router: sona.Router, **kwargs):
    """An httpx client of create_app(router, **kwargs) served by uvicorn in a thread; the server
    shuts down gracefully (lifespan shutdown included) when the block ends."""
    config = uvicorn.Config(create_app(router, **kwargs), host="127.0.0.1", port=0,
                            log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_GUARD_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HANG_GUARD_S) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(HANG_GUARD_S)
        assert not thread.is_alive()


def _feedbacks(client) -> int:
    return client.get("/v1/stats").json()["router"]["feedbacks"]


def _refused(response, status: int, field: str | None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


def test_route_then_feedback_learns():
    router = _router()
    with serving(router) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.post("/v1/route", json={"embedding": _x()})
        assert r.status_code == 200
        d = r.json()
        assert d["route"] == ROUTES[d["index"]]
        assert len(d["probs"]) == len(ROUTES) and abs(sum(d["probs"]) - 1) < 1e-5
        assert d["prob"] == pytest.approx(d["probs"][d["index"]])
        assert _feedbacks(client) == 0
        f = client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 0.8,
                                              "cost": 0.002, "latency_ms": 350})
        assert f.status_code == 200 and f.json()["learnt"] is True
        stats = client.get("/v1/stats").json()
        assert stats["router"]["feedbacks"] == 1 and stats["router"]["decisions"] == 1
        assert stats["server"]["pending"] == 0 and stats["server"]["feedbacks"] == 1
    assert router.feedbacks == 1


def test_feedback_is_the_same_learning_step_as_in_process():
    """Served and in-process routers in the same state stay bit-identical through
    route + feedback (cost included)."""
    served, local = _router(seed=3), _router(seed=3)
    with serving(served) as client:
        for i in range(20):
            x = _x(i)
            d = client.post("/v1/route", json={"embedding": x}).json()
            mine = local.route(np.array(x, np.float32))
            assert (d["route"], d["prob"]) == (mine.route, pytest.approx(float(mine.prob)))
            q = (i % 5) / 4
            client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": q,
                                              "cost": 0.01}).raise_for_status()
            local.learn(mine.outcome(q, cost=0.01))
    probe = np.random.default_rng(99).standard_normal((16, DIM)).astype(np.float32)
    np.testing.assert_array_equal(served.scores(probe), local.scores(probe))


def test_route_options_and_base64():
    router = _router()
    x = np.array(_x(), np.float32)
    with serving(router) as client:
        b64 = base64.b64encode(x.astype("<f4").tobytes()).decode()
        r = client.post("/v1/route", json={"embedding_b64": b64, "allowed": ["large"],
                                           "cost_weight": 0.5})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["route"] == "large" and d["prob"] == 1.0
        assert d["probs"][0] == 0 and d["probs"][1] == 0
        client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                          "quality": 1}).raise_for_status()
        assert _feedbacks(client) == 1


BAD_ROUTES = [
    ({}, "embedding"),
    ({"embedding": _x(), "embedding_b64": "AAAA"}, "embedding"),
    ({"embedding": "0.5"}, "embedding"),
    ({"embedding": [0.1] * (DIM - 1)}, "embedding"),
    ({"embedding": [0.1] * (DIM - 1) + [True]}, "embedding"),
    ({"embedding": [0.1] * (DIM - 1) + [1e39]}, "embedding"),
    ({"embedding": [0.1] * (DIM - 1) + [1e7]}, "embedding"),
    ({"embedding_b64": "not base64!"}, "embedding_b64"),
    ({"embedding_b64": base64.b64encode(b"\0" * (4 * DIM - 4)).decode()}, "embedding_b64"),
    ({"embedding_b64": 12}, "embedding_b64"),
    ({"embedding": _x(), "allowed": ["nope"]}, "allowed"),
    ({"embedding": _x(), "allowed": "small"}, "allowed"),
    ({"embedding": _x(), "allowed": []}, "allowed"),
    ({"embedding": _x(), "cost_weight": 1e31}, "cost_weight"),
    ({"embedding": _x(), "cost_weight": -1}, "cost_weight"),
    ({"embedding": _x(), "cost_weight": "high"}, "cost_weight"),
    ({"embedding": _x(), "temperature": 1}, "temperature"),
    ([1, 2], None),
]


def test_bad_route_requests_are_refused_and_change_nothing():
    router = _router()
    before = router.to_bytes()
    with serving(router) as client:
        for body, field in BAD_ROUTES:
            _refused(client.post("/v1/route", json=body), 400, field)
        _refused(client.post("/v1/route", content=b"{not json"), 400, None)
        _refused(client.post("/v1/route", content=b"\xff\xfe"), 400, None)
        _refused(client.get("/v1/route"), 405, None)
        _refused(client.post("/v1/rout", json={"embedding": _x()}), 404, None)
        stats = client.get("/v1/stats").json()
        assert stats["server"]["rejected"] == len(BAD_ROUTES) + 2  # not counting wrong paths
        assert stats["server"]["pending"] == 0
    assert router.decisions == 0 and router.to_bytes() == before


def test_feedback_errors():
    router = _router()
    with serving(router) as client:
        d = client.post("/v1/route", json={"embedding": _x()}).json()
        did = d["decision_id"]
        _refused(client.post("/v1/feedback", json={"quality": 0.5}), 400, "decision_id")
        _refused(client.post("/v1/feedback", json={"decision_id": did}), 400, "quality")
        _refused(client.post("/v1/feedback", json={"decision_id": 7, "quality": 0.5}), 400,
                 "decision_id")
        for field, value in [("quality", 1.5), ("quality", "good"), ("quality", None),
                             ("cost", -1), ("latency_ms", -3), ("cost", "cheap")]:
            body = {"decision_id": did, "quality": 0.5, field: value}
            _refused(client.post("/v1/feedback", json=body), 400, field)
        _refused(client.post("/v1/feedback", json={"decision_id": did, "quality": 0.5,
                                                   "extra": 1}), 400, "extra")
        assert _feedbacks(client) == 0  # every refusal left the decision pending, unlearnt
        _refused(client.post("/v1/feedback", json={"decision_id": "feed-1", "quality": 0.5}),
                 404, "decision_id")
        client.post("/v1/feedback", json={"decision_id": did, "quality": 0.5}).raise_for_status()
        _refused(client.post("/v1/feedback", json={"decision_id": did, "quality": 0.5}), 409,
                 "decision_id")
        assert _feedbacks(client) == 1


def test_decisions_expire_after_the_ttl_and_the_bound():
    now = [0.0]
    router = _router()
    with serving(router, decision_ttl_s=30, max_pending=2, clock=lambda: now[0]) as client:
        ids = [client.post("/v1/route", json={"embedding": _x(i)}).json()["decision_id"]
               for i in range(3)]
        # the bound: the oldest of three is dropped
        _refused(client.post("/v1/feedback", json={"decision_id": ids[0], "quality": 1}), 410,
                 "decision_id")
        client.post("/v1/feedback", json={"decision_id": ids[1], "quality": 1}).raise_for_status()
        now[0] = 31.0  # the TTL
        _refused(client.post("/v1/feedback", json={"decision_id": ids[2], "quality": 1}), 410,
                 "decision_id")
        server = client.get("/v1/stats").json()["server"]
        assert (server["dropped"], server["expired"], server["pending"]) == (1, 1, 0)
        assert server["routed"] == 3 and server["feedbacks"] == 1
    assert router.feedbacks == 1


def test_outcomes_in_bulk():
    router = _router()
    records = [sona.Outcome(_x(i), ROUTES[i % 3], prob=0.5, quality=i / 9, cost=0.01,
                            decision_id=f"log-{i}").to_dict() for i in range(10)]
    with serving(router) as client:
        r = client.post("/v1/outcomes", json={"outcomes": records})
        assert r.status_code == 200 and r.json() == {"learnt": 10}
        assert _feedbacks(client) == 10
        # an outcome of a pending decision learns it: its feedback then is a conflict
        d = client.post("/v1/route", json={"embedding": _x(50)}).json()
        mine = sona.Outcome(_x(50), d["route"], d["prob"], 1.0, decision_id=d["decision_id"])
        client.post("/v1/outcomes", json={"outcomes": [mine.to_dict()]}).raise_for_status()
        _refused(client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                   "quality": 1}), 409, "decision_id")
        assert client.get("/v1/stats").json()["server"]["outcomes"] == 11


def test_bad_outcomes_are_refused_before_any_is_learnt():
    router = _router()
    good = sona.Outcome(_x(), "small", prob=0.5, quality=1.0, decision_id="a").to_dict()
    cases = [
        ({"outcomes": [good, {**good, "quality": 2}]}, 400, "outcomes[1]"),
        ({"outcomes": [good, {**good, "route": "huge"}]}, 400, "outcomes[1]"),
        ({"outcomes": [good, {**good, "embedding": [0.5, 0.5]}]}, 400, "outcomes[1]"),
        ({"outcomes": [good, "record"]}, 400, "outcomes[1]"),
        ({"outcomes": [good, {**good, "version": 99}]}, 400, "outcomes[1]"),
        ({"outcomes": [good, good]}, 409, "outcomes[1]"),
        ({"outcomes": good}, 400, "outcomes"),
        ({"records": [good]}, 400, "records"),
    ]
    with serving(router) as client:
        for body, status, field in cases:
            _refused(client.post("/v1/outcomes", json=body), status, field)
        assert _feedbacks(client) == 0
        client.post("/v1/outcomes", json={"outcomes": [good]}).raise_for_status()
        _refused(client.post("/v1/outcomes", json={"outcomes": [good]}), 409, "outcomes[0]")
        assert _feedbacks(client) == 1


def test_an_id_learnt_outside_the_service_is_a_conflict():
    """The router remembers ids it learnt in-process; the service reports which record and how
    many before it were learnt."""
    router = _router()
    first = sona.Outcome(_x(1), "small", prob=0.5, quality=1.0, decision_id="x1")
    known = sona.Outcome(_x(2), "small", prob=0.5, quality=1.0, decision_id="x2")
    router.learn(known)
    with serving(router) as client:
        body = {"outcomes": [first.to_dict(), known.to_dict()]}
        error = _refused(client.post("/v1/outcomes", json=body), 409, "outcomes[1]")
        assert "the 1 before it were learnt" in error
        assert client.get("/v1/stats").json()["server"]["outcomes"] == 1
    assert router.feedbacks == 2


def test_bearer_token():
    with serving(_router(), token="s3cret") as client:
        assert client.get("/healthz").status_code == 200  # load balancers probe without it
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}]:
            r = client.post("/v1/route", json={"embedding": _x()}, headers=headers)
            _refused(r, 401, None)
            assert r.headers["www-authenticate"] == "Bearer"
            _refused(client.get("/v1/stats", headers=headers), 401, None)
            _refused(client.get("/metrics", headers=headers), 401, None)
        auth = {"Authorization": "Bearer s3cret"}
        d = client.post("/v1/route", json={"embedding": _x()}, headers=auth).json()
        client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 1},
                    headers=auth).raise_for_status()
        assert client.get("/v1/stats", headers=auth).json()["router"]["feedbacks"] == 1


def test_request_size_limit():
    router = _router()
    with serving(router, max_body=300) as client:
        big = {"embedding": [0.123456789] * DIM, "allowed": ["small"] * 40}
        _refused(client.post("/v1/route", json=big), 413, None)

        def chunks():  # no Content-Length: the limit holds while the body streams in
            yield b'{"embedding": ['
            for _ in range(100):
                yield b"0.1234567, "
            yield b"0.5]}"

        _refused(client.post("/v1/route", content=chunks()), 413, None)
        assert client.post("/v1/route", json={"embedding": _x()}).status_code == 200
    assert router.decisions == 1


def test_metrics():
    pytest.importorskip("prometheus_client")
    with serving(_router()) as client:
        client.post("/v1/route", json={"embedding": _x()}).raise_for_status()
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "sona_router_decisions_total 1.0" in r.text
        assert "sona_serve_budget" not in r.text  # no budget paced
        client.post("/v1/budget", json={"budget": 0.5}).raise_for_status()
        d = client.post("/v1/route", json={"embedding": _x(1)}).json()
        client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 1.0,
                                          "cost": 1.5}).raise_for_status()
        text = client.get("/metrics").text
        for line in ("sona_serve_budget 0.5", "sona_serve_budget_weight 0.04",
                     "sona_serve_budget_queries_total 1.0", "sona_serve_budget_spent_total 1.5"):
            assert line in text.splitlines(), text


def test_metrics_without_prometheus_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "sona.metrics", raising=False)
    with serving(_router()) as client:
        message = _refused(client.get("/metrics"), 404, None)
        assert "sona[metrics]" in message


def test_checkpoint_on_shutdown_then_reload(tmp_path):
    path = tmp_path / "router.sona"
    router = _router()
    with serving(router, checkpoint_path=str(path)) as client:
        for i in range(5):
            d = client.post("/v1/route", json={"embedding": _x(i)}).json()
            client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                              "quality": 0.7}).raise_for_status()
        assert not path.exists()  # no period: saved at shutdown only
    loaded = sona.Router.load(path)
    assert loaded.feedbacks == 5 and loaded.decisions == 5
    probe = np.random.default_rng(1).standard_normal((4, DIM)).astype(np.float32)
    np.testing.assert_array_equal(loaded.scores(probe), router.scores(probe))


def test_decisions_waiting_for_feedback_survive_a_restart(tmp_path):
    path = tmp_path / "router.sona"
    pending = tmp_path / "router.sona.pending"
    with serving(_router(), checkpoint_path=str(path)) as client:
        ds = [client.post("/v1/route", json={"embedding": _x(i)}).json() for i in range(3)]
        client.post("/v1/feedback", json={"decision_id": ds[0]["decision_id"],
                                          "quality": 1.0}).raise_for_status()
    assert pending.exists()
    control = sona.Router.load(path)  # what the restarted server should learn into
    with serving(sona.Router.load(path), checkpoint_path=str(path)) as client:
        stats = client.get("/v1/stats").json()
        assert stats["server"]["pending"] == 2 and stats["router"]["feedbacks"] == 1
        r = client.post("/v1/feedback", json={"decision_id": ds[1]["decision_id"],
                                              "quality": 0.25, "cost": 0.5})
        assert r.status_code == 200 and _feedbacks(client) == 2
        _refused(client.post("/v1/feedback", json={"decision_id": ds[1]["decision_id"],
                                                    "quality": 1.0}), 409, "decision_id")
        # the outcome learnt is the one the decision made: its embedding, route and probability
        control.learn(sona.Outcome(_x(1), ds[1]["route"], ds[1]["prob"], 0.25, cost=0.5,
                                   decision_id=ds[1]["decision_id"]))
        probe = np.random.default_rng(7).standard_normal((4, DIM)).astype(np.float32)
    restarted = sona.Router.load(path)
    np.testing.assert_array_equal(restarted.scores(probe), control.scores(probe))
    # the third is still waiting after a second restart; once none waits, the file goes
    with serving(sona.Router.load(path), checkpoint_path=str(path)) as client:
        assert client.get("/v1/stats").json()["server"]["pending"] == 1
        client.post("/v1/feedback", json={"decision_id": ds[2]["decision_id"],
                                          "quality": 0.5}).raise_for_status()
    assert not pending.exists() and sona.Router.load(path).feedbacks == 3


def test_a_restart_with_fewer_pending_slots_drops_the_oldest(tmp_path):
    path = tmp_path / "router.sona"
    with serving(_router(), checkpoint_path=str(path)) as client:
        ds = [client.post("/v1/route", json={"embedding": _x(i)}).json() for i in range(3)]
    with serving(sona.Router.load(path), checkpoint_path=str(path), max_pending=2) as client:
        assert client.get("/v1/stats").json()["server"]["pending"] == 2
        _refused(client.post("/v1/feedback", json={"decision_id": ds[0]["decision_id"],
                                                    "quality": 1.0}), 410, "decision_id")
        client.post("/v1/feedback", json={"decision_id": ds[2]["decision_id"],
                                          "quality": 1.0}).raise_for_status()


def test_a_decision_whose_deadline_passed_while_down_is_gone(tmp_path):
    path = tmp_path / "router.sona"
    with serving(_router(), checkpoint_path=str(path), decision_ttl_s=0.3) as client:
        d = client.post("/v1/route", json={"embedding": _x()}).json()
    time.sleep(0.4)
    with serving(sona.Router.load(path), checkpoint_path=str(path)) as client:
        assert client.get("/v1/stats").json()["server"]["pending"] == 0
        _refused(client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                    "quality": 1.0}), 410, "decision_id")


@pytest.mark.parametrize("tamper, message", [
    (lambda a, m: m.update(routes=["small", "nope"]), "route 'nope'"),
    (lambda a, m: a.update(embedding=np.zeros((2, DIM + 1), np.float32)), r"\(2, 8\)"),
    (lambda a, m: m.update(decision_ids=["x", "x"]), "unique decision ids"),
    (lambda a, m: m.update(decision_ids=[["x"], "y"]), "unique decision ids"),
    (lambda a, m: m.update(routes=[{"r": 1}, "small"]), "unique decision ids"),
    (lambda a, m: a.update(embedding=np.full((2, DIM), np.nan, np.float32)), "finite"),
    (lambda a, m: a.update(prob=np.array([0.5, 0.0], np.float32)), "prob must be"),
    (lambda a, m: a.update(deadline=np.array([np.nan, 1.0])), "NaN or Inf"),
    (lambda a, m: m.update(extra=1), "expected the arrays"),
])
def test_a_pending_file_no_server_could_have_written_stops_the_app(tmp_path, tamper, message):
    from sona.state import write_state

    path = tmp_path / "router.sona"
    _router().save(path)
    arrays = {"embedding": np.ones((2, DIM), np.float32),
              "prob": np.array([0.5, 0.5], np.float32), "deadline": np.array([1e12, 1e12])}
    meta = {"decision_ids": ["a", "b"], "routes": ["small", "large"]}
    create_app(sona.Router.load(path), checkpoint_path=str(path))  # untampered: fine
    tamper(arrays, meta)
    write_state(tmp_path / "router.sona.pending", arrays, meta, "pending")
    with pytest.raises(sona.StateFileError, match=message):
        create_app(sona.Router.load(path), checkpoint_path=str(path))


def test_periodic_checkpoint(tmp_path):
    path = tmp_path / "router.sona"
    with serving(_router(), checkpoint_path=str(path), checkpoint_every_s=0.05) as client:
        client.post("/v1/route", json={"embedding": _x()}).raise_for_status()
        deadline = time.monotonic() + HANG_GUARD_S
        while client.get("/v1/stats").json()["server"]["checkpoints"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert sona.Router.load(path).decisions == 1
        checkpoints = client.get("/v1/stats").json()["server"]["checkpoints"]
    # nothing changed since: the shutdown does not save again
    assert sona.Router.load(path).decisions == 1 and checkpoints >= 1


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"token": ""}, ValueError),
        ({"max_body": 0}, ValueError),
        ({"max_pending": 1.5}, ValueError),
        ({"decision_ttl_s": 0}, ValueError),
        ({"decision_ttl_s": float("nan")}, ValueError),
        ({"checkpoint_every_s": 10}, ValueError),
    ],
)
def test_create_app_arguments(kwargs, error):
    with pytest.raises(error):
        create_app(_router(), **kwargs)


def test_create_app_needs_a_router():
    with pytest.raises(TypeError, match="sona.Router"):
        create_app(sona.SonaEngine(hidden_dim=DIM, base_lora_rank=2))


def test_a_budget_paces_routing_and_needs_costs():
    router = sona.Router(ROUTES, hidden_dim=DIM, seed=0)
    with serving(router, budget=0.001) as client:
        d = client.post("/v1/route", json={"embedding": _x()}).json()
        assert d["cost_weight"] == 0.0  # nothing spent yet
        # the pacer observes the cost, so feedback without one is refused and nothing is learnt
        _refused(client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                    "quality": 1.0}), 400, "cost")
        assert _feedbacks(client) == 0
        assert client.get("/v1/stats").json()["budget"]["queries"] == 0
        client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 1.0,
                                          "cost": 0.005}).raise_for_status()
        budget = client.get("/v1/stats").json()["budget"]
        # over budget: the weight rose by rate (cost - budget) / budget^2
        assert budget == {"budget": 0.001, "weight": pytest.approx(0.01 * 0.004 / 1e-6),
                          "mean_cost": 0.005, "queries": 1, "spent": 0.005}
        paced = client.post("/v1/route", json={"embedding": _x(1)}).json()
        assert paced["cost_weight"] == pytest.approx(40.0)
        # a request's own weight wins over the pacer's
        own = client.post("/v1/route", json={"embedding": _x(2), "cost_weight": 3.0}).json()
        assert own["cost_weight"] == 3.0
        # the budget changes at run time; null stops pacing (feedback without a cost is then fine)
        r = client.post("/v1/budget", json={"budget": 0.002})
        assert r.status_code == 200 and r.json()["budget"]["budget"] == 0.002
        assert client.post("/v1/budget", json={"budget": None}).json() == {"budget": None}
        assert client.post("/v1/route", json={"embedding": _x(3)}).json()["cost_weight"] == 0.0
        client.post("/v1/feedback", json={"decision_id": paced["decision_id"],
                                          "quality": 0.5}).raise_for_status()
        assert client.get("/v1/stats").json()["budget"] is None
        assert client.post("/v1/budget", json={"budget": 0.01}).json()["budget"]["weight"] == 0.0
        assert _feedbacks(client) == 2


def _spend(client, n: int, cost: float) -> None:
    for i in range(n):
        d = client.post("/v1/route", json={"embedding": _x(i)}).json()
        client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 1.0,
                                          "cost": cost}).raise_for_status()


def test_the_pacer_is_checkpointed_beside_the_router_and_resumes(tmp_path):
    path = tmp_path / "router.sona"
    saved = tmp_path / "router.sona.budget"
    with serving(_router(), checkpoint_path=str(path), budget=0.001) as client:
        _spend(client, 3, 0.004)
        before = client.get("/v1/stats").json()["budget"]
    assert before["weight"] > 0 and before["queries"] == 3
    p = sona.BudgetPacer.load(saved)
    assert (p.budget, p.weight, p.queries, p.spent) == (0.001, before["weight"], 3,
                                                         before["spent"])
    # a server started on the same path resumes it, without --budget too
    router_file = path.read_bytes()
    with serving(sona.Router.load(path), checkpoint_path=str(path)) as client:
        assert client.get("/v1/stats").json()["budget"] == before
        # a budget change alone is saved too (the router did not change, nor its file)
        client.post("/v1/budget", json={"budget": 0.002}).raise_for_status()
    assert sona.BudgetPacer.load(saved).budget == 0.002 and path.read_bytes() == router_file
    # a budget given at start replaces the saved one; the weight and the counts carry on
    with serving(sona.Router.load(path), checkpoint_path=str(path), budget=0.003) as client:
        now = client.get("/v1/stats").json()["budget"]
        assert (now["budget"], now["weight"], now["queries"]) == (0.003, before["weight"], 3)
        paced = client.post("/v1/route", json={"embedding": _x()}).json()
        assert paced["cost_weight"] == before["weight"]
        # stopping pacing removes the saved pacer at the next checkpoint
        assert client.post("/v1/budget", json={"budget": None}).json() == {"budget": None}
    assert not saved.exists()
    with serving(sona.Router.load(path), checkpoint_path=str(path)) as client:
        assert client.get("/v1/stats").json()["budget"] is None


def test_a_saved_pacer_that_cannot_be_loaded_stops_the_app(tmp_path):
    path = tmp_path / "router.sona"
    _router().save(path)
    (tmp_path / "router.sona.budget").write_bytes(b"not a state file")
    with pytest.raises(sona.StateFileError, match="router.sona.budget"):
        create_app(sona.Router.load(path), checkpoint_path=str(path), budget=0.01)


def test_bad_budgets_are_refused_and_change_nothing():
    with serving(_router(), budget=0.001) as client:
        for body, field in [({"budget": 0}, "budget"), ({"budget": -1.0}, "budget"),
                            ({"budget": "0.1"}, "budget"), ({"budget": True}, "budget"),
                            ({}, "budget"), ({"budget": 1.0, "x": 1}, "x"), ([1], None)]:
            _refused(client.post("/v1/budget", json=body), 400, field)
        assert client.get("/v1/stats").json()["budget"]["budget"] == 0.001
    with pytest.raises(ValueError, match=r"budget must be a finite number in \(0, 1e\+30\]"):
        create_app(_router(), budget=0.0)
    with pytest.raises(TypeError, match="budget must be a real number; got str"):
        create_app(_router(), budget="0.1")
    without = _router()
    with serving(without) as client:
        d = client.post("/v1/route", json={"embedding": _x()}).json()
        assert d["cost_weight"] == 0.0 and client.get("/v1/stats").json()["budget"] is None
        client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                          "quality": 1.0}).raise_for_status()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sona", "serve", *args], cwd=OUTSIDE,
                            env=subprocess_env(SONA_SERVE_TOKEN="tok"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_healthy(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "sona serve did not come up"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        time.sleep(0.05)


def test_cli_serves_and_checkpoints_on_sigterm(tmp_path):
    state = tmp_path / "r.sona"
    auth = {"Authorization": "Bearer tok"}  # from SONA_SERVE_TOKEN
    waiting: list[str] = []  # a decision the first run routes and the second learns
    for run in range(2):  # the second run loads what the first saved
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _cli(["--state", str(state), "--routes", ",".join(ROUTES), "--dim", str(DIM),
                     "--port", str(port), "--budget", "0.5"])
        try:
            _wait_healthy(proc, url)
            assert httpx.post(f"{url}/v1/route", json={"embedding": _x()}).status_code == 401
            d = httpx.post(f"{url}/v1/route", json={"embedding": _x(run)}, headers=auth).json()
            httpx.post(f"{url}/v1/feedback", json={"decision_id": d["decision_id"],
                                                   "quality": 1, "cost": 0.25},
                       headers=auth).raise_for_status()
            if waiting:  # feedback for a decision routed before the restart is learnt
                httpx.post(f"{url}/v1/feedback", json={"decision_id": waiting[0], "quality": 1,
                                                       "cost": 0.25},
                           headers=auth).raise_for_status()
            else:
                waiting.append(httpx.post(f"{url}/v1/route", json={"embedding": _x(5)},
                                          headers=auth).json()["decision_id"])
            stats = httpx.get(f"{url}/v1/stats", headers=auth).json()
            assert stats["router"]["feedbacks"] == 2 * run + 1
            # --budget paces from the start; the second run resumes the pacer saved beside --state
            assert stats["budget"]["budget"] == 0.5 and stats["budget"]["queries"] == 2 * run + 1
        finally:
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=HANG_GUARD_S)[0]
        # uvicorn re-raises the signal once shut down, so the exit status is the signal's
        assert proc.returncode in (0, -signal.SIGTERM), out
        assert "Application shutdown complete" in out
        assert sona.Router.load(state).feedbacks == 2 * run + 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--routes", "a,b"], "--dim"),
        (["--dim", "8"], "--routes"),
        (["--routes", "a,b", "--dim", "8", "--checkpoint-every", "5"], "--state"),
        (["--routes", "a,b", "--dim", "8", "--budget", "0"], "--budget: must be > 0"),
        (["--routes", "a,b", "--dim", "8", "--budget", "x"], "--budget: expected a number"),
    ],
)
def test_cli_errors(args, message):
    proc = subprocess.run([sys.executable, "-m", "sona", "serve", *args], cwd=OUTSIDE,
                          env=subprocess_env(), capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and message in proc.stderr


def test_cli_refuses_a_saved_pacer_it_cannot_load(tmp_path):
    state = tmp_path / "r.sona"
    sona.Router(ROUTES, hidden_dim=DIM).save(state)
    (tmp_path / "r.sona.budget").write_bytes(b"\x00" * 16)
    proc = subprocess.run([sys.executable, "-m", "sona", "serve", "--state", str(state)],
                          cwd=OUTSIDE, env=subprocess_env(), capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and "r.sona.budget" in proc.stderr, proc.stderr


def test_cli_refuses_a_state_file_of_other_routes(tmp_path):
    state = tmp_path / "r.sona"
    sona.Router(["a", "b"], hidden_dim=DIM).save(state)
    proc = subprocess.run([sys.executable, "-m", "sona", "serve", "--state", str(state),
                           "--routes", "a,c"], cwd=OUTSIDE, env=subprocess_env(),
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and "differ from the routes" in proc.stderr


def test_a_failed_periodic_checkpoint_is_logged_and_routing_goes_on(tmp_path, caplog):
    path = tmp_path / "missing-directory" / "router.sona"
    router = _router()
    with caplog.at_level("ERROR", logger="sona.serve"):
        with serving(router, checkpoint_path=str(path), checkpoint_every_s=0.05) as client:
            client.post("/v1/route", json={"embedding": _x()}).raise_for_status()
            deadline = time.monotonic() + HANG_GUARD_S
            while not any("checkpoint to" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert client.post("/v1/route", json={"embedding": _x(1)}).status_code == 200
    assert router.decisions == 2 and not path.exists()


def test_two_servers_on_one_fleet_share_learning(tmp_path):
    """`sona serve --fleet`: an outcome given to one server reaches the other's router through
    the Redis stream (a real redis-server of the test's own)."""
    from redis_server import RedisServer, require_redis

    require_redis()
    from sona.fleet import FleetRouter

    with RedisServer(tmp_path / "redis") as redis_server:
        a = FleetRouter(_router(), redis_server.url, "serve:test")
        b = FleetRouter(_router(), redis_server.url, "serve:test")
        try:
            with serving(a) as client_a, serving(b) as client_b:
                d = client_a.post("/v1/route", json={"embedding": _x(1)}).json()
                got = client_a.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                          "quality": 1.0})
                assert got.status_code == 200
                assert a.sync(timeout=HANG_GUARD_S) and b.sync(timeout=HANG_GUARD_S)
                for client in (client_a, client_b):
                    stats = client.get("/v1/stats").json()
                    assert stats["router"]["feedbacks"] == 1
                    assert stats["fleet"]["applied"] == 1
                # the same decision twice is refused by the replica that recorded it
                again = client_a.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                            "quality": 1.0})
                assert again.status_code == 409
        finally:
            a.close()
            b.close()
    with pytest.raises(TypeError, match="sona.Router or a sona.fleet.FleetRouter"):
        create_app(object())
