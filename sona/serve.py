"""sona as an HTTP service for gateways in any language (``pip install "sona[serve]"``).

    sona serve --state router.sona --routes small,large --dim 384     # 127.0.0.1:8000

``create_app(router)`` returns an ASGI application (Starlette; served by uvicorn in ``sona
serve``) with these endpoints, all JSON:

* ``POST /v1/route``: ``{"embedding": [...]}`` or ``{"embedding_b64": "<little-endian float32>"}``,
  optional ``"allowed": [route names]`` and ``"cost_weight"`` -> ``{"route", "index", "prob",
  "probs", "decision_id", "cost_weight"}`` (the weight routed at: the request's, else the budget
  pacer's, else 0). The decision waits for its feedback for ``decision_ttl_s`` seconds, and at
  most ``max_pending`` decisions wait (the oldest is dropped first). With a checkpoint path the
  waiting decisions are saved beside the router, at ``<checkpoint_path>.pending``, and a server
  started on that path takes them up again: feedback for a decision routed before a restart is
  learnt after it, within the same deadline (the downtime counts against it).
* ``POST /v1/feedback``: ``{"decision_id", "quality"}``, optional ``"cost"``, ``"latency_ms"``
  -> learns ``decision.outcome(...)``. Unknown id 404, expired or dropped 410, given twice 409.
  While a budget is paced, ``"cost"`` is required: the pacer observes it.
* ``POST /v1/budget``: ``{"budget": mean cost per query}`` paces it from now on (a
  ``sona.BudgetPacer``: requests without ``"cost_weight"`` route at its weight), ``{"budget":
  null}`` stops pacing -> ``{"budget": {...}}`` as in the stats (or null). ``sona serve --budget``
  starts with one. Each server paces its own traffic (a fleet's servers with one budget each spend
  it on average). With a checkpoint path the pacer is saved beside the router, at
  ``<checkpoint_path>.budget`` (``BudgetPacer.save``), and a server started on that path resumes
  it: the weight, the counts and the budget, unless one is given again at start; after ``{"budget":
  null}`` the next checkpoint removes the file.
* ``POST /v1/outcomes``: ``{"outcomes": [Outcome.to_dict() forms]}`` (logged outcomes in bulk);
  every record is checked before the first is learnt.
* ``GET /v1/stats``: ``{"router": router.stats(), "server": counters of this service, "budget":
  {"budget", "weight", "mean_cost", "queries", "spent"} or null}`` (and ``"fleet"``: the replica's
  stats, when serving a ``sona.fleet.FleetRouter``: ``sona serve --fleet redis://...``, where every
  server on the stream learns every outcome).
* ``GET /metrics``: Prometheus text (with ``sona[metrics]`` installed; 404 otherwise): the
  router's stats, and while a budget is paced ``sona_serve_budget``, ``..._weight``,
  ``..._queries_total`` and ``..._spent_total``.
* ``GET /healthz``: ``{"status": "ok"}``, never behind the token (for load balancers).

Every refused request gets a 4xx and ``{"error": message, "field": name or null}`` and changes
nothing. With a token, every endpoint but /healthz needs ``Authorization: Bearer <token>`` (401).
Bodies over ``max_body`` bytes get 413. The router is called synchronously on the event loop,
under one lock (each call takes microseconds); no request body is ever unpickled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import math
import numbers
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .budget import BudgetPacer
from .outcome import Outcome
from .router import Router
from .state import read_state, unusable, write_state

_log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 4 << 20
DEFAULT_DECISION_TTL_S = 600.0
DEFAULT_MAX_PENDING = 10_000

_ROUTE_FIELDS = frozenset({"embedding", "embedding_b64", "allowed", "cost_weight"})
_JSON_NUMBERS = frozenset({int, float})
_FEEDBACK_FIELDS = frozenset({"decision_id", "quality", "cost", "latency_ms"})
_BUDGET_FIELDS = frozenset({"budget"})


class RequestError(Exception):
    """A refused request: HTTP status, message, and the JSON field at fault (or None)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def _bad(field: str | None, message: str) -> RequestError:
    return RequestError(400, message, field)


def _check_fields(body: Any, known: frozenset, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise _bad(None, f"the {what} body must be a JSON object; got {type(body).__name__}")
    unknown = sorted(set(body) - known)
    if unknown:
        raise _bad(unknown[0], f"unknown field {unknown[0]!r}; {what} takes {sorted(known)}")
    return body


def _real(field: str, value: Any) -> float:
    """A JSON number (not a bool); the range is the router's or Outcome's to check."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad(field, f"{field} must be a number; got {type(value).__name__}")
    return float(value)


#: A served router's budget pacer is checkpointed at its checkpoint path plus this suffix.
PACER_SUFFIX = ".budget"


def _pacer_state(pacer: BudgetPacer | None) -> dict | None:
    return None if pacer is None else pacer._fields()


#: Decisions waiting for feedback are checkpointed at the checkpoint path plus this suffix.
PENDING_SUFFIX = ".pending"
_PENDING_KIND = "pending"  # the kind of sona state file they are saved as
_PENDING_ARRAYS = {"embedding", "prob", "deadline"}


class _Waiting:
    """A decision restored from a checkpoint while it waited for feedback: it makes the outcome
    the live Decision would have made (the same embedding, route, probability and id)."""

    __slots__ = ("embedding", "route", "prob", "decision_id")

    def __init__(self, embedding: np.ndarray, route: str, prob: float, decision_id: str) -> None:
        self.embedding, self.route, self.prob = embedding, route, prob
        self.decision_id = decision_id

    def outcome(self, quality: Any, cost: Any = None, latency_ms: Any = None) -> Outcome:
        return Outcome(self.embedding, self.route, self.prob, quality, cost=cost,
                       latency_ms=latency_ms, decision_id=self.decision_id,
                       timestamp=time.time())


def _save_pending(path: str, pending: Mapping[str, tuple[Any, float]], now: float) -> None:
    """The waiting decisions, their deadlines as wall-clock times (a restart's downtime counts
    against them), in a sona state file of kind "pending"; none: the file is removed."""
    if not pending:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    entries = list(pending.values())
    wall = time.time() - now
    arrays: dict[str, np.ndarray] = {
        "embedding": np.stack([d.embedding for d, _ in entries]).astype(np.float32),
        "prob": np.array([d.prob for d, _ in entries], np.float32),
        "deadline": np.array([wall + deadline for _, deadline in entries], np.float64)}
    write_state(path, arrays, {"decision_ids": list(pending),
                               "routes": [d.route for d, _ in entries]}, _PENDING_KIND)


def _load_pending(path: str, router: Router,
                  now: float) -> tuple[OrderedDict[str, tuple[Any, float]], list[str]]:
    """The decisions :func:`_save_pending` wrote whose deadline has not passed, oldest first,
    and the ids of those whose deadline passed while no server ran. Raises StateFileError for a
    file that is not that, or holds a decision this router cannot learn (another dimension, an
    unknown route, a probability or id no Outcome can have)."""
    arrays, meta = read_state(path, kind=_PENDING_KIND)
    fail = unusable(_PENDING_KIND, f"file {path!r}")
    if set(arrays) != _PENDING_ARRAYS or not isinstance(meta, dict) or set(meta) != {
            "decision_ids", "routes"}:
        fields = sorted(meta) if isinstance(meta, dict) else meta
        fail(f"expected the arrays {sorted(_PENDING_ARRAYS)} and the fields ['decision_ids', "
             f"'routes']; got {sorted(arrays)} and {fields!r}")
    X, prob, deadline = arrays["embedding"], arrays["prob"], arrays["deadline"]
    ids, routes = meta["decision_ids"], meta["routes"]
    n, d = len(prob), int(router.micro.dim)
    if not (isinstance(ids, list) and isinstance(routes, list) and len(ids) == len(routes) == n
            and all(isinstance(v, str) for v in ids + routes)
            and X.shape == (n, d) and deadline.shape == (n,) and len(set(ids)) == n):
        fail(f"expected {n} unique decision ids and routes (strings) and a ({n}, {d}) embedding "
             "array; "
             f"got {len(ids) if isinstance(ids, list) else ids!r} ids, "
             f"{len(routes) if isinstance(routes, list) else routes!r} routes, {X.shape}")
    if not np.isfinite(deadline).all():
        fail("array 'deadline' contains NaN or Inf")
    out: OrderedDict[str, tuple[Any, float]] = OrderedDict()
    expired = []
    wall = time.time()
    for i in range(n):
        if routes[i] not in router.routes:
            fail(f"decision {ids[i]!r} took route {routes[i]!r}, which the router does not have "
                 f"(routes {list(router.routes)})")
        try:  # everything an Outcome checks: finite embedding, prob in (0, 1], the id's form
            Outcome(X[i], routes[i], float(prob[i]), 0.0, decision_id=ids[i])
        except (TypeError, ValueError) as exc:
            fail(f"decision {i}: {exc}")
        if deadline[i] > wall:
            out[ids[i]] = (_Waiting(X[i], routes[i], float(prob[i]), ids[i]),
                           now + float(deadline[i] - wall))
        else:
            expired.append(ids[i])
    return out, expired


def _field_of(exc: Exception, fields: tuple[str, ...]) -> str | None:
    """The field a sona.Outcome validation message starts with ("quality must be ...")."""
    text = str(exc)
    return next((f for f in fields if text.startswith(f"{f} ")), None)


class _Service:
    """The router, its lock, the decisions waiting for feedback, and the service's counters."""

    def __init__(self, router: Router, decision_ttl_s: float, max_pending: int,
                 checkpoint_path: str | None, clock: Callable[[], float],
                 fleet: Any = None, budget: float | None = None) -> None:
        self.router = router
        # a pacer saved beside the router resumes (a budget given at start replaces its budget)
        self.pacer = None
        if checkpoint_path is not None and os.path.exists(checkpoint_path + PACER_SUFFIX):
            self.pacer = BudgetPacer.load(checkpoint_path + PACER_SUFFIX)
        on_disk = _pacer_state(self.pacer)
        if budget is not None:
            if self.pacer is None:
                self.pacer = BudgetPacer(budget)
            else:
                self.pacer.budget = budget
        # route and learn go through the fleet replica when there is one (outcomes then reach
        # every server sharing its stream, this one included, in stream order)
        self.fleet = fleet
        self.front: Any = router if fleet is None else fleet
        self.lock = threading.Lock()
        self.ttl = decision_ttl_s
        self.max_pending = max_pending
        self.checkpoint_path = checkpoint_path
        self.clock = clock
        # decision id -> (Decision, deadline), oldest first; those a checkpoint saved resume (as
        # _Waiting), but for the ones whose deadline passed meanwhile
        self.pending: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        # ids no longer pending -> why ("expired", "dropped", "learnt"), for 410/409 over 404;
        # bounded like the pending map so a flood of decisions cannot grow it without limit
        self.gone: OrderedDict[str, str] = OrderedDict()
        if checkpoint_path is not None and os.path.exists(checkpoint_path + PENDING_SUFFIX):
            self.pending, expired = _load_pending(checkpoint_path + PENDING_SUFFIX, router,
                                                  clock())
            for decision_id in expired:
                self._forget(decision_id, "expired")
            while len(self.pending) > max_pending:  # a restart with a smaller --max-pending
                self._forget(self.pending.popitem(last=False)[0], "dropped")
        self.counts = {"routed": 0, "feedbacks": 0, "outcomes": 0, "expired": 0, "dropped": 0,
                       "rejected": 0, "checkpoints": 0}
        self.saved_at = (self._progress()[0], on_disk)

    def _progress(self) -> tuple[tuple[int, int], dict | None]:
        """What a checkpoint saves: the router's progress, and the pacer's state (None: none)."""
        return ((int(self.router.decisions), int(self.router.feedbacks)),
                _pacer_state(self.pacer))

    def _forget(self, decision_id: str, why: str) -> None:
        self.gone[decision_id] = why
        while len(self.gone) > 4 * self.max_pending:
            self.gone.popitem(last=False)

    def _expire(self) -> None:
        now = self.clock()
        while self.pending:
            decision_id, (_, deadline) = next(iter(self.pending.items()))
            if deadline > now:
                break
            del self.pending[decision_id]
            self._forget(decision_id, "expired")
            self.counts["expired"] += 1

    def _embedding(self, body: Mapping[str, Any]) -> np.ndarray:
        d = int(self.router.micro.dim)
        if ("embedding" in body) == ("embedding_b64" in body):
            raise _bad("embedding", "give exactly one of 'embedding' (a list of numbers) and "
                       "'embedding_b64' (base64 of little-endian float32)")
        if "embedding" in body:
            values = body["embedding"]
            # JSON numbers decode to exactly int or float; checking the concrete types (not
            # numbers.Real, 20x slower) keeps this under the router's own time at d=384
            if not isinstance(values, list) or not set(map(type, values)) <= _JSON_NUMBERS:
                raise _bad("embedding", f"embedding must be a list of {d} numbers")
            with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
                x = np.array(values, dtype=np.float32)
            field = "embedding"
        else:
            text = body["embedding_b64"]
            if not isinstance(text, str):
                raise _bad("embedding_b64", f"embedding_b64 must be a base64 string; got "
                           f"{type(text).__name__}")
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _bad("embedding_b64", f"embedding_b64 is not valid base64: {exc}") from None
            if len(raw) != 4 * d:
                raise _bad("embedding_b64", f"embedding_b64 must decode to {4 * d} bytes "
                           f"({d} float32); got {len(raw)}")
            x = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            field = "embedding_b64"
        if x.shape != (d,):
            raise _bad(field, f"{field} must have {d} values (the router's dimension); "
                       f"got {x.shape[0]}")
        if not np.isfinite(x).all():
            raise _bad(field, f"{field} must be finite float32 values")
        return x

    def route(self, body: Any) -> dict:
        body = _check_fields(body, _ROUTE_FIELDS, "/v1/route")
        x = self._embedding(body)
        if "cost_weight" in body:
            cost_weight = _real("cost_weight", body["cost_weight"])
        else:
            cost_weight = 0.0 if self.pacer is None else self.pacer.weight
        allowed = body.get("allowed")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise _bad("allowed", "allowed must be a list of route names")
            unknown = [a for a in allowed if a not in self.router.routes]
            if unknown:
                raise _bad("allowed", f"allowed names unknown routes {unknown}; routes are "
                           f"{list(self.router.routes)}")
        try:
            decision = self.front.route(x, cost_weight=cost_weight, allowed=allowed)
        except (TypeError, ValueError) as exc:  # the ranges only the router knows
            field = next((f for f in ("cost_weight", "allowed") if str(exc).startswith(f)),
                         "embedding" if "embedding" in body else "embedding_b64")
            raise _bad(field, str(exc)) from None
        self._expire()
        decision_id = decision.decision_id
        self.pending[decision_id] = (decision, self.clock() + self.ttl)
        while len(self.pending) > self.max_pending:
            dropped, _ = self.pending.popitem(last=False)
            self._forget(dropped, "dropped")
            self.counts["dropped"] += 1
        self.counts["routed"] += 1
        return {"route": decision.route, "index": int(decision.index),
                "prob": float(decision.prob), "probs": decision.probs.tolist(),
                "decision_id": decision_id, "cost_weight": cost_weight}

    def feedback(self, body: Any) -> dict:
        body = _check_fields(body, _FEEDBACK_FIELDS, "/v1/feedback")
        for name in ("decision_id", "quality"):
            if name not in body:
                raise _bad(name, f"/v1/feedback needs {name!r}")
        decision_id = body["decision_id"]
        if not isinstance(decision_id, str):
            raise _bad("decision_id", f"decision_id must be a string; got "
                       f"{type(decision_id).__name__}")
        quality = _real("quality", body["quality"])
        cost, latency = (None if body.get(k) is None else _real(k, body[k])
                         for k in ("cost", "latency_ms"))
        if cost is None and self.pacer is not None:
            raise _bad("cost", f"this server paces a budget of {self.pacer.budget:g} per query: "
                       "feedback needs 'cost' (what the call cost)")
        self._expire()
        entry = self.pending.get(decision_id)
        if entry is None:
            why = self.gone.get(decision_id)
            if why == "learnt":
                raise RequestError(409, f"decision {decision_id} already has its feedback",
                                   "decision_id")
            if why is not None:
                raise RequestError(410, f"decision {decision_id} was {why} before its feedback "
                                   f"(decision_ttl_s={self.ttl:g}, max_pending="
                                   f"{self.max_pending})", "decision_id")
            raise RequestError(404, f"no decision {decision_id} is known here", "decision_id")
        decision = entry[0]
        try:
            outcome = decision.outcome(quality, cost=cost, latency_ms=latency)
        except (TypeError, ValueError) as exc:
            raise _bad(_field_of(exc, ("quality", "cost", "latency_ms")), str(exc)) from None
        self.front.learn(outcome)
        if self.pacer is not None:
            self.pacer.observe(outcome.cost)  # checked by decision.outcome above
        del self.pending[decision_id]
        self._forget(decision_id, "learnt")
        self.counts["feedbacks"] += 1
        return {"decision_id": decision_id, "learnt": True}

    def outcomes(self, body: Any) -> dict:
        body = _check_fields(body, frozenset({"outcomes"}), "/v1/outcomes")
        records = body.get("outcomes")
        if not isinstance(records, list):
            raise _bad("outcomes", "/v1/outcomes needs 'outcomes': a list of outcome objects")
        d = int(self.router.micro.dim)
        parsed, ids = [], set()
        for i, record in enumerate(records):
            field = f"outcomes[{i}]"
            try:
                outcome = Outcome.from_dict(record)
            except (TypeError, ValueError) as exc:
                raise _bad(field, f"{field}: {exc}") from None
            if outcome.dim != d:
                raise _bad(field, f"{field}: embedding has {outcome.dim} values; the router's "
                           f"dimension is {d}")
            if outcome.route not in self.router.routes:
                raise _bad(field, f"{field}: unknown route {outcome.route!r}; routes are "
                           f"{list(self.router.routes)}")
            if outcome.decision_id is not None:
                if outcome.decision_id in ids or self.gone.get(outcome.decision_id) == "learnt":
                    raise RequestError(409, f"{field}: decision {outcome.decision_id} was "
                                       "already learnt from", field)
                ids.add(outcome.decision_id)
            parsed.append(outcome)
        n = 0
        try:
            for outcome in parsed:
                self.front.learn(outcome)
                n += 1
        except ValueError as exc:  # an id the router learnt before this service knew of it
            raise RequestError(409, f"outcomes[{n}]: {exc} (the {n} before it were learnt)",
                               f"outcomes[{n}]") from None
        finally:
            self.counts["outcomes"] += n
            for outcome in parsed[:n]:
                if outcome.decision_id is not None:
                    if self.pending.pop(outcome.decision_id, None) is not None:
                        self._forget(outcome.decision_id, "learnt")
        return {"learnt": n}

    def budget_stats(self) -> dict | None:
        p = self.pacer
        return None if p is None else {"budget": p.budget, "weight": p.weight,
                                       "mean_cost": p.mean_cost, "queries": p.queries,
                                       "spent": p.spent}

    def budget(self, body: Any) -> dict:
        body = _check_fields(body, _BUDGET_FIELDS, "/v1/budget")
        if "budget" not in body:
            raise _bad("budget", "/v1/budget needs 'budget': a mean cost per query > 0, or null "
                       "to stop pacing")
        value = body["budget"]
        if value is None:
            self.pacer = None
        else:
            budget = _real("budget", value)
            try:
                if self.pacer is None:
                    self.pacer = BudgetPacer(budget)
                else:
                    self.pacer.budget = budget
            except ValueError as exc:
                raise _bad("budget", str(exc)) from None
        return {"budget": self.budget_stats()}

    def stats(self) -> dict:
        self._expire()
        out = {"router": self.router.stats(),
               "server": {**self.counts, "pending": len(self.pending),
                          "decision_ttl_s": self.ttl, "max_pending": self.max_pending},
               "budget": self.budget_stats()}
        if self.fleet is not None:
            out["fleet"] = self.fleet.stats()
        return out

    def checkpoint(self) -> bool:
        """Save the router to the checkpoint path with the decisions waiting for feedback beside
        it, and the pacer (or remove the saved pacer once pacing stopped), each if it changed
        since it was last saved."""
        now, path = self._progress(), self.checkpoint_path
        if path is None or now == self.saved_at:
            return False
        if now[0] != self.saved_at[0]:
            # the decisions waiting for feedback change only with the router's counts (a route
            # adds one, feedback takes one) or by expiring, which their deadlines tell on load
            self.router.save(path)
            _save_pending(path + PENDING_SUFFIX, self.pending, self.clock())
            self.saved_at = (now[0], self.saved_at[1])
        if now[1] != self.saved_at[1]:
            if self.pacer is None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path + PACER_SUFFIX)
            else:
                self.pacer.save(path + PACER_SUFFIX)
        self.saved_at = now
        self.counts["checkpoints"] += 1
        return True


def _metrics_endpoint(service: _Service) -> Callable[[], Response]:
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from .metrics import register
    except ImportError:
        def missing() -> Response:
            return JSONResponse({"error": 'GET /metrics needs prometheus_client: pip install '
                                 '"sona[metrics]"', "field": None}, status_code=404)
        return missing
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class BudgetCollector:
        """The budget pacer, when there is one: sona_serve_budget{,_weight} gauges and
        sona_serve_budget_{queries,spent}_total counters (they restart with a new pacer)."""

        def describe(self) -> list:
            return []  # the families come and go with the pacer: nothing fixed to declare

        def collect(self) -> Any:
            b = service.budget_stats()
            if b is None:
                return
            yield GaugeMetricFamily("sona_serve_budget", "mean cost per query the server paces",
                                    value=b["budget"])
            yield GaugeMetricFamily("sona_serve_budget_weight",
                                    "the pacer's cost weight (quality per unit of cost)",
                                    value=b["weight"])
            yield CounterMetricFamily("sona_serve_budget_queries",
                                      "costs the pacer observed", value=b["queries"])
            yield CounterMetricFamily("sona_serve_budget_spent",
                                      "sum of the costs the pacer observed", value=b["spent"])

    registry = CollectorRegistry()
    register(service.router, registry)
    registry.register(BudgetCollector())

    def scrape() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return scrape


def create_app(router: Any, *, token: str | None = None, max_body: int = DEFAULT_MAX_BODY,
               decision_ttl_s: float = DEFAULT_DECISION_TTL_S,
               max_pending: int = DEFAULT_MAX_PENDING, checkpoint_path: str | None = None,
               checkpoint_every_s: float | None = None, budget: float | None = None,
               clock: Callable[[], float] = time.monotonic) -> Starlette:
    """The ASGI application serving ``router`` over HTTP (endpoints: see the module docstring).

    Parameters
    ----------
    router: the sona.Router to route with and learn into (the app owns it while serving), or a
        sona.fleet.FleetRouter: routing stays local, every learnt outcome goes to its Redis
        Stream, and every server sharing the stream learns it (GET /v1/stats adds ``"fleet"``;
        the caller closes the fleet after serving).
    token: if given, requests (but GET /healthz) need ``Authorization: Bearer <token>``.
    max_body: largest request body in bytes (413 above it).
    decision_ttl_s: seconds a routed decision waits for its feedback (410 after).
    max_pending: most decisions waiting at once; the oldest is dropped first (410 after).
    checkpoint_path: save the router there (atomically) at shutdown and, with
        ``checkpoint_every_s``, every so many seconds when it changed; the budget pacer goes to
        ``checkpoint_path + PACER_SUFFIX`` (".budget"), and a pacer saved there resumes now.
    budget: pace this mean cost per query from the start (POST /v1/budget changes it); with a
        resumed pacer, its new budget (the weight and counts carry on).
    clock: monotonic seconds, for the TTL.

    Raises ValueError for a non-positive bound or budget, an empty token, or a checkpoint period
    without a path; TypeError for a router that is not a sona.Router or a budget that is not a
    number; StateFileError (a ValueError) for a saved pacer that cannot be loaded.

    >>> import sona
    >>> from sona.serve import create_app
    >>> app = create_app(sona.Router(["small", "large"], hidden_dim=8))
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    fleet = None
    if not isinstance(router, Router):
        fleet = router
        router = getattr(fleet, "router", None)
        if not isinstance(router, Router) or not hasattr(fleet, "learn"):
            raise TypeError(f"create_app() serves a sona.Router or a sona.fleet.FleetRouter; "
                            f"got {type(fleet).__name__}")
    if token is not None and (not isinstance(token, str) or not token):
        raise ValueError("token must be a non-empty string or None")
    for name, value in (("max_body", max_body), ("max_pending", max_pending)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    for name, seconds in (("decision_ttl_s", decision_ttl_s),
                          ("checkpoint_every_s", checkpoint_every_s)):
        if seconds is not None and not (isinstance(seconds, numbers.Real)
                                        and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"{name} must be a finite number of seconds > 0; got {seconds!r}")
    if checkpoint_every_s is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every_s needs a checkpoint_path")
    service = _Service(router, float(decision_ttl_s), max_pending,
                       None if checkpoint_path is None else str(checkpoint_path), clock, fleet,
                       budget)
    expected = None if token is None else f"Bearer {token}".encode()
    scrape = _metrics_endpoint(service)

    def refuse(exc: RequestError) -> JSONResponse:
        with service.lock:
            service.counts["rejected"] += 1
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status,
                            headers=headers)

    def authorise(request: Request) -> None:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer "
                                   "<token>)")

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise RequestError(413, f"the body has {declared} bytes; the limit is {max_body}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise RequestError(413, f"the body exceeds the limit of {max_body} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _bad(None, f"the body is not valid JSON: {exc}") from None

    def json_post(handler: Callable[[Any], dict]) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                authorise(request)
                body = await read_json(request)
                with service.lock:
                    return JSONResponse(handler(body))
            except RequestError as exc:
                return refuse(exc)
        return endpoint

    def get(handler: Callable[[], Response]) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                authorise(request)
            except RequestError as exc:
                return refuse(exc)
            with service.lock:
                return handler()
        return endpoint

    async def http_error(request: Request, exc: Exception) -> Response:
        # unknown paths and methods answer in the same JSON shape as every other refusal
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}",
                             "field": None}, status_code=exc.status_code, headers=exc.headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def save() -> None:
        with service.lock:
            service.checkpoint()

    async def checkpoint_loop(every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                save()
            except OSError as exc:  # a full disk must not stop routing; the next period retries
                _log.error("sona serve: checkpoint to %s failed: %s", checkpoint_path, exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = (None if checkpoint_every_s is None
                else asyncio.ensure_future(checkpoint_loop(float(checkpoint_every_s))))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            save()

    app = Starlette(
        routes=[
            Route("/v1/route", json_post(service.route), methods=["POST"]),
            Route("/v1/feedback", json_post(service.feedback), methods=["POST"]),
            Route("/v1/outcomes", json_post(service.outcomes), methods=["POST"]),
            Route("/v1/budget", json_post(service.budget), methods=["POST"]),
            Route("/v1/stats", get(lambda: JSONResponse(service.stats())), methods=["GET"]),
            Route("/metrics", get(scrape), methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    app.state.sona = service
    return app
