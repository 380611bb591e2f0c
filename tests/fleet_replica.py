"""Fleet replicas in their own processes, for tests/test_fleet.py and bench/bench_fleet.py.

A query stream (the synthetic clustered task, or the packaged RouterBench queries) is dealt out
round-robin: replica `shard` of `n_shards` routes queries shard, shard + n_shards, ... and feeds
each outcome to the fleet. Every replica reports what it earned per query, then, once the parent
says every replica has published, syncs and reports its learned state. `single_run` is the
reference: one router receiving the whole stream.

Replicas are started with multiprocessing's "spawn" (a fresh interpreter: no threads or sockets
inherited from the test process); `run_replica` is the process target.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass

import numpy as np

import sona
from sona.data import load_routerbench
from sona.state import decode_state
from sona.synthetic import RoutingTask


def state(router) -> dict:
    """The router's state file (``to_bytes``) minus what each replica's own routing advances:
    the routing draws' generator and the count of decisions. Everything learning writes, bit
    for bit."""
    arrays, meta = decode_state(router.to_bytes(), kind="router")
    meta["counters"] = {k: v for k, v in meta["counters"].items() if not k.startswith("rng_")}
    del meta["decisions"]
    return {"meta": meta, "arrays": {k: v.tobytes() for k, v in arrays.items()}}


@dataclass
class Stream:
    """A routing stream: queries X, the quality every route would earn on each (`quality`, for
    synthetic queries the success probability; `reward` draws the observed one), held-out
    queries with their best routes."""

    kind: str
    X: np.ndarray
    quality: np.ndarray
    X_test: np.ndarray
    quality_test: np.ndarray
    routes: tuple
    seed: int

    def reward(self, i: int, k: int) -> float:
        if self.kind == "real":
            return float(self.quality[i, k])
        # a Bernoulli draw fixed by (seed, query, route): the same whichever process routes it
        return float(np.random.default_rng([self.seed, i, k]).random() < self.quality[i, k])

    def heldout(self, router) -> float:
        """Mean quality of the router's greedy choices on the held-out queries, over the
        oracle's (1.0: always a best route)."""
        chosen = np.array([int(np.argmax(router.scores(x))) for x in self.X_test])
        got = self.quality_test[np.arange(len(chosen)), chosen].sum()
        return float(got / self.quality_test.max(axis=1).sum())


def make_stream(kind: str, n: int, seed: int) -> Stream:
    if kind == "synthetic":
        task = RoutingTask(seed=seed)
        X, c = task.sample(n, np.random.default_rng([seed, 1]))
        Xt, ct = task.sample(400, np.random.default_rng([seed, 2]))
        names = tuple(f"route{k}" for k in range(task.n_routes))
        return Stream(kind, X, task.P[c], Xt, task.P[ct], names, seed)
    if kind == "real":
        data = load_routerbench("minilm")
        train, test = data.subset(data.is_train), data.subset(~data.is_train)
        order = np.random.default_rng(seed).permutation(train.n_queries)[:n]
        return Stream(kind, train.X[order], train.quality[order], test.X, test.quality,
                      data.routes, seed)
    raise ValueError(f"kind must be 'synthetic' or 'real'; got {kind!r}")


def new_router(stream: Stream, seed: int = 0) -> sona.Router:
    return sona.Router(list(stream.routes), hidden_dim=stream.X.shape[1], seed=seed)


def run_replica(url, name, kind, n, seed, shard, n_shards, go, done, results, progress,
                route=True, fleet_kwargs=None, rate=None):
    """Process target: join the fleet on stream `name`, route this shard (if `route`; the count
    so far in the shared `progress[shard]`, which a kill -9 cannot leave half-written; with
    `rate`, query i of the whole stream at i / rate seconds after `go`, as traffic arriving at
    `rate` queries per second across the fleet, else as fast as it goes), report
    ("earned", shard, [(i, quality of the chosen route)]) and ("published", shard, stats), then
    after `done` is set ("state", shard, state, stats, held-out score)."""
    from sona.fleet import FleetRouter

    stream = make_stream(kind, n, seed)
    fleet = FleetRouter(new_router(stream, seed=100 + shard), url, name, **(fleet_kwargs or {}))
    results.put(("ready", shard))
    go.wait()
    earned = []
    start = time.monotonic()
    if route:
        for i in range(shard, n, n_shards):
            if rate:
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
            d = fleet.route(stream.X[i])
            fleet.feedback(d, stream.reward(i, d.index))
            earned.append((i, float(stream.quality[i, d.index])))
            progress[shard] = len(earned)
            if not rate and len(earned) % 50 == 0:
                time.sleep(0.001)  # let the other replicas' outcomes arrive in between
        fleet.flush(60)
    results.put(("earned", shard, earned))
    results.put(("published", shard, fleet.stats()))
    done.wait()
    fleet.sync(120)
    results.put(("state", shard, state(fleet.router), fleet.stats(), stream.heldout(fleet.router)))
    fleet.close()


def single_run(kind: str, n: int, seed: int):
    """One router receiving the whole stream: (per-query quality earned, held-out score)."""
    stream = make_stream(kind, n, seed)
    router = new_router(stream, seed=100)
    earned = np.empty(n)
    for i in range(n):
        d = router.route(stream.X[i])
        router.feedback(d, stream.reward(i, d.index))
        earned[i] = stream.quality[i, d.index]
    return earned, stream.heldout(router)


def compare(url, kind, n, seed, rate=None, windows=4):
    """4 replica processes on a new stream against `single_run`: held-out score of each, and
    their on-policy curves, the quality earned in each of `windows` consecutive parts of the
    stream over the oracle's (the fleet's merged by query index)."""
    import uuid

    stream = make_stream(kind, n, seed)
    earned, _, states = Fleet(url, f"fleet:{uuid.uuid4().hex}", kind, n, seed, rate=rate).run()
    fleet_q = np.empty(n)
    for got in earned.values():
        for i, q in got[0]:
            fleet_q[i] = q
    single_q, single_heldout = single_run(kind, n, seed)
    oracle = stream.quality.max(axis=1)

    def curve(q):
        return [float(a.sum() / b.sum()) for a, b in
                zip(np.array_split(q, windows), np.array_split(oracle, windows))]

    return {"fleet_heldout": states[0][2], "single_heldout": single_heldout,
            "fleet_curve": curve(fleet_q), "single_curve": curve(single_q)}


class Fleet:
    """Starts `n_shards` replica processes on one stream and collects their reports."""

    def __init__(self, url, name, kind, n, seed, n_shards=4, fleet_kwargs=None, rate=None):
        self.ctx = mp.get_context("spawn")
        self.args = (url, name, kind, n, seed)
        self.n_shards, self.fleet_kwargs, self.rate = n_shards, fleet_kwargs, rate
        self.go, self.done = self.ctx.Event(), self.ctx.Event()
        self.results = self.ctx.Queue()
        self.mail: dict = collections.defaultdict(dict)
        self.progress = self.ctx.Array("i", n_shards, lock=False)
        self.procs = {s: self.start(s) for s in range(n_shards)}

    def start(self, shard, route=True):
        p = self.ctx.Process(target=run_replica, daemon=True,
                             args=(*self.args, shard, self.n_shards, self.go, self.done,
                                   self.results, self.progress, route, self.fleet_kwargs,
                                   self.rate))
        p.start()
        return p

    def wait_for(self, kind, timeout=120.0):
        """Reports of `kind` by shard, once every shard sent one. Raises RuntimeError when a
        replica process died first, queue.Empty after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.mail[kind]) < self.n_shards:
            try:
                msg = self.results.get(timeout=0.5)
            except queue.Empty:
                dead = {s: p.exitcode for s, p in self.procs.items()
                        if p.exitcode not in (None, 0)}
                if dead:
                    raise RuntimeError(f"replica processes died: {dead}") from None
                if time.monotonic() > deadline:
                    raise
                continue
            self.mail[msg[0]][msg[1]] = msg[2:]
        return self.mail.pop(kind)

    def run(self):
        """Start routing, let every replica publish, then sync; returns the reports by shard:
        (earned, published, states). Closes the fleet."""
        try:
            self.wait_for("ready")
            self.go.set()
            earned = self.wait_for("earned")
            published = self.wait_for("published")
            self.done.set()
            return earned, published, self.wait_for("state")
        finally:
            self.close()

    def close(self):
        for p in self.procs.values():
            p.join(30)
            if p.is_alive():
                p.kill()
