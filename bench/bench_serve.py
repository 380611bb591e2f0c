"""Load test of `sona serve` on loopback: requests/s and p50/p99 latency of POST /v1/route and
POST /v1/feedback with 1 and 4 client threads, next to the in-process route + feedback.

The server runs as its own process (`python -m sona serve`, as a sidecar would), each client
thread keeps one HTTP/1.1 connection (the standard library's http.client: the lightest Python
client, so the numbers are mostly the server's; httpx adds ~0.3 ms a request here).
Bounded: --requests per endpoint and thread count.

Run: python bench/bench_serve.py [--requests 2000] [--dim 384] [--routes 4] [--b64] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import sona


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(routes: list[str], dim: int):
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(sona.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root,
                                                                     os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sona", "serve", "--routes", ",".join(routes), "--dim", str(dim),
         "--port", str(port), "--log-level", "warning", "--max-pending", "100000"],
        cwd=tempfile.gettempdir(), env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sona serve did not start")
            with contextlib.suppress(OSError):
                if _post_or_get(http.client.HTTPConnection("127.0.0.1", port), "GET",
                                "/healthz")[0] == 200:
                    break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(60)


def _summary(latencies: list[float], wall: float) -> dict:
    ms = np.array(latencies) * 1e3
    return {"requests": len(ms), "req_per_s": round(len(ms) / wall),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def _post_or_get(conn: http.client.HTTPConnection, method: str, path: str,
                 body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body)
    conn.request(method, path, data, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def _run_clients(port: int, threads: int, work: list[list[dict]], path: str,
                 results: list[list]) -> float:
    """Each thread posts its share of bodies on one connection; returns the wall time."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        _post_or_get(conn, "GET", "/healthz")  # connect before the clock starts
        barrier.wait()
        for body in work[i]:
            t0 = time.perf_counter()
            status, data = _post_or_get(conn, "POST", path, body)
            latencies[i].append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{path}: HTTP {status}: {data[:200]!r}")
            results[i].append(json.loads(data))
        conn.close()

    pool = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    results.append([x for lat in latencies for x in lat])
    return wall


def _in_process(routes: list[str], dim: int, X: np.ndarray) -> dict:
    router = sona.Router(routes, hidden_dim=dim, seed=0)
    n = len(X)
    t0 = time.perf_counter()
    for i in range(n):
        router.feedback(router.route(X[i]), float(i % 5) / 4)
    per_call = (time.perf_counter() - t0) / n
    return {"route_plus_feedback_us": round(per_call * 1e6, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per endpoint and threads")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--routes", type=int, default=4)
    parser.add_argument("--b64", action="store_true", help="send embedding_b64, not a list")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    routes = [f"model{k}" for k in range(args.routes)]
    X = np.random.default_rng(0).standard_normal((args.requests, args.dim)).astype(np.float32)

    def route_body(x: np.ndarray) -> dict:
        if args.b64:
            return {"embedding_b64": base64.b64encode(x.astype("<f4").tobytes()).decode()}
        return {"embedding": x.tolist()}

    report: dict = {"dim": args.dim, "routes": args.routes, "b64": args.b64,
                    "in_process": _in_process(routes, args.dim, X), "http": {}}
    with _server(routes, args.dim) as port:
        for threads in (1, 4):
            shares = [list(range(i, args.requests, threads)) for i in range(threads)]
            decisions: list[list] = [[] for _ in range(threads)]
            wall = _run_clients(port, threads, [[route_body(X[j]) for j in s] for s in shares],
                                "/v1/route", decisions)
            route = _summary(decisions.pop(), wall)
            feedbacks = [[{"decision_id": d["decision_id"], "quality": 0.5} for d in mine]
                         for mine in decisions]
            done: list[list] = [[] for _ in range(threads)]
            wall = _run_clients(port, threads, feedbacks, "/v1/feedback", done)
            report["http"][f"{threads}_threads"] = {"route": route,
                                                    "feedback": _summary(done.pop(), wall)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"dim {args.dim}, {args.routes} routes, embedding as "
              f"{'base64 float32' if args.b64 else 'a JSON list'}")
        print(f"in-process route + feedback: {report['in_process']['route_plus_feedback_us']} us")
        print(f"{'clients':>8} {'endpoint':>10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for key, per in report["http"].items():
            for endpoint, s in per.items():
                print(f"{key.split('_')[0]:>8} {endpoint:>10} {s['req_per_s']:>8} "
                      f"{s['p50_ms']:>8} {s['p99_ms']:>8}")
    return report


if __name__ == "__main__":
    main()
