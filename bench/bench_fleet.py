"""The fleet benchmark: sona.fleet replicas against a real redis-server (started here, AOF fsync
always, as in the tests, unless --url names one).

    python bench/bench_fleet.py              # the numbers in README.md
    python bench/bench_fleet.py --quick      # fewer calls, one seed

1. route latency (d=384, 11 routes): a standalone router vs a fleet replica whose consumer
   thread applies the outcomes 3 other replica processes record at a steady rate;
2. the cost of recording an outcome (fleet.feedback: Decision.outcome, encoding, buffering)
   next to router.feedback learning locally;
3. events per second one Redis takes from 4 producer processes (appended), and how fast each of
   the 4 replicas applies them;
4. lag from recording an outcome to every replica having applied it (median, p99) at a steady
   load (on_apply records when each replica applied each event; one host, one clock);
5. learning: 4 replica processes each routing 1/4 of a stream against one router routing all of
   it (synthetic task and RouterBench): held-out quality / oracle and the on-policy curve, with
   traffic arriving at 1000 queries/s across the fleet and flat out (all 4 replicas routing as
   fast as they can, far ahead of what they have learnt).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from fleet_replica import compare, make_stream, new_router  # noqa: E402
from redis_server import RedisServer  # noqa: E402

import sona  # noqa: E402
from sona.fleet import FleetRouter  # noqa: E402


def percentiles(ns: list) -> tuple[float, float]:
    a = np.asarray(ns, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def time_routes(route, X, seconds: float) -> list:
    """Latency of each route call over `seconds`, one call every ~0.25 ms (a serving thread
    waits on I/O between requests, and the consumer thread runs then)."""
    out = []
    clock = time.perf_counter_ns
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        x = X[i % len(X)]
        t = clock()
        route(x)
        out.append(clock() - t)
        i += 1
        time.sleep(0.00025)
    return out


def produce(url, name, n, rate, seed, ready, go, lags):
    """Process target: a replica recording `n` outcomes at `rate` per second (0: flat out);
    puts [(stream id, seconds from recording to applied here)] on `lags`."""
    stream = make_stream("real", 600, seed)
    applied: list = []
    fleet = FleetRouter(new_router(stream), url, name,
                        on_apply=lambda entry_id, o: applied.append(
                            (entry_id, time.time() - o.timestamp)))
    ready.release()
    go.wait()
    start = time.perf_counter()
    for j in range(n):
        i = j % len(stream.X)
        o = sona.Outcome(stream.X[i], stream.routes[j % len(stream.routes)], 0.5,
                         float(stream.quality[i, j % len(stream.routes)]), timestamp=time.time())
        fleet.learn(o)
        if rate:
            pause = start + (j + 1) / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    fleet.flush(120)
    fleet.sync(120)
    fleet.close()
    lags.put(applied)


def start_producers(url, name, k, n, rate):
    ctx = mp.get_context("spawn")
    ready, go, lags = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=produce, args=(url, name, n, rate, s, ready, go, lags),
                         daemon=True) for s in range(k)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    return procs, go, lags


def interleaved(a, b, X, seconds: float, slices: int = 10):
    """Route latencies of `a` and `b`, measured in alternating slices, so both see the same
    load from the rest of the machine (other processes, other users)."""
    la: list = []
    lb: list = []
    for _ in range(slices):
        la += time_routes(a, X, seconds / slices)
        lb += time_routes(b, X, seconds / slices)
    return la, lb


def bench_route(url, seconds, rate):
    stream = make_stream("real", 600, 0)
    X = stream.X
    router = new_router(stream)
    for i in range(200):  # warm the pattern bank a little, as a serving router would be
        d = router.route(X[i])
        router.feedback(d, stream.reward(i, d.index))
    name = f"bench:{uuid.uuid4().hex}"
    with FleetRouter(sona.Router.from_bytes(router.to_bytes()), url, name) as fleet:
        alone_idle, idle = interleaved(router.route, fleet.route, X, seconds)
        procs, go, _ = start_producers(url, name, 3, int(rate * 3600), rate)
        go.set()
        time.sleep(1.0)
        before = fleet.stats()["applied"]
        t0 = time.perf_counter()
        alone_busy, busy = interleaved(router.route, fleet.route, X, seconds)
        elapsed = time.perf_counter() - t0
        applied = fleet.stats()["applied"] - before
        for p in procs:
            p.kill()
    print(f"route latency, d={X.shape[1]}, {len(stream.routes)} routes, one call per ~0.3 ms, "
          f"standalone router and fleet replica in alternating slices ({seconds} s each)")
    print(f"{'':56} {'p50':>8} {'p99':>8} {'p99 / standalone':>17}")
    for label, base_ns, ns in (
            ("no other replicas: fleet replica, consumer idle", alone_idle, idle),
            (f"3 replicas recording: consumer applying {applied / elapsed:.0f} events/s",
             alone_busy, busy)):
        base = percentiles(base_ns)
        p50, p99 = percentiles(ns)
        print(f"{'  standalone router':56} {base[0] / 1e3:6.2f}us {base[1] / 1e3:6.2f}us")
        print(f"{label:56} {p50 / 1e3:6.2f}us {p99 / 1e3:6.2f}us {p99 / base[1]:16.2f}x")


def bench_record(url, n_calls):
    stream = make_stream("real", 600, 0)
    X = stream.X
    router = new_router(stream)

    def local(x):
        d = router.route(x)
        router.feedback(d, 0.5)

    name = f"bench:{uuid.uuid4().hex}"
    with FleetRouter(new_router(stream), url, name) as fleet:
        fleet_ns, local_ns = [], []
        clock = time.perf_counter_ns
        for i in range(n_calls):
            d = fleet.route(X[i % len(X)])
            t = clock()
            fleet.feedback(d, 0.5)
            fleet_ns.append(clock() - t)
            d = router.route(X[i % len(X)])
            t = clock()
            router.feedback(d, 0.5)
            local_ns.append(clock() - t)
        fleet.sync(60)
    print(f"\nrecording an outcome ({n_calls} calls)   p50      p99")
    for label, ns in (("fleet.feedback (outcome, encode, buffer)", fleet_ns),
                      ("router.feedback (learns locally)", local_ns)):
        p50, p99 = percentiles(ns)
        print(f"{label:42} {p50 / 1e3:6.2f}us {p99 / 1e3:6.2f}us")


def bench_throughput(url, n_each):
    import redis

    name = f"bench:{uuid.uuid4().hex}"
    procs, go, lags = start_producers(url, name, 4, n_each, 0)
    client = redis.Redis.from_url(url)
    total = 4 * n_each
    t0 = time.perf_counter()
    go.set()
    while True:  # entries-added: the stream is trimmed behind snapshots meanwhile
        try:
            if int(client.xinfo_stream(name)["entries-added"]) >= total:
                break
        except redis.ResponseError:  # not created yet
            pass
        if any(p.exitcode not in (None, 0) for p in procs):
            raise RuntimeError("a producer process failed")
        time.sleep(0.002)
    appended = time.perf_counter() - t0
    for _ in procs:  # each reports once it has applied everything
        lags.get(timeout=600)
    applied = time.perf_counter() - t0
    print(f"\n4 producer processes, {n_each} outcomes each (d=384, RouterBench embeddings)")
    print(f"appended by Redis       {total / appended:9.0f} events/s")
    print(f"applied by all replicas {total / applied:9.0f} events/s per replica "
          f"({total} events in {applied:.2f} s)")


def bench_lag(url, rate, seconds):
    name = f"bench:{uuid.uuid4().hex}"
    procs, go, lags = start_producers(url, name, 4, int(rate * seconds), rate)
    go.set()
    worst: dict = {}
    for _ in procs:
        for entry_id, lag in lags.get(timeout=seconds + 300):
            worst[entry_id] = max(worst.get(entry_id, 0.0), lag)
    lags_ms = np.array(list(worst.values())) * 1e3
    print(f"\nlag from recording an outcome to all 4 replicas having applied it, 4 replicas "
          f"recording {rate}/s each ({len(lags_ms)} events): median "
          f"{np.median(lags_ms):.2f} ms, p99 {np.percentile(lags_ms, 99):.2f} ms")


def bench_learning(url, seeds, sizes, rates):
    print("\nlearning, 4 replica processes vs one router fed everything, mean over seeds "
          f"{list(seeds)}:\nheld-out: quality of the greedy choice on held-out queries / "
          "oracle; on-policy: quality earned in each quarter of the stream / oracle")
    print(f"{'stream':10} {'n':>5} {'traffic':>10} {'router':>11} {'held-out':>9} "
          f"{'on-policy by quarter':>28}")
    for kind, n in sizes:
        for rate in rates:
            runs = [compare(url, kind, n, seed, rate=rate) for seed in seeds]
            traffic = f"{rate}/s" if rate else "flat out"
            for who in ("fleet", "single"):
                heldout = np.mean([r[f"{who}_heldout"] for r in runs])
                curve = np.mean([r[f"{who}_curve"] for r in runs], axis=0)
                label = "4 replicas" if who == "fleet" else "one router"
                print(f"{kind:10} {n:5} {traffic:>10} {label:>11} {heldout:9.3f} "
                      f"{' '.join(f'{c:6.3f}' for c in curve):>28}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="an existing Redis (default: start redis-server here)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    quick = args.quick
    server = None
    url = args.url
    if url is None:
        server = RedisServer(tempfile.mkdtemp(prefix="sona-bench-redis-"))
        server.start()
        url = server.url
    try:
        print(f"sona {sona.__version__}, backend {sona.get_backend()}, redis {url}\n")
        bench_route(url, 2.0 if quick else 6.0, rate=250)
        bench_record(url, 2000 if quick else 10000)
        bench_throughput(url, 2000 if quick else 10000)
        bench_lag(url, rate=250, seconds=3 if quick else 10)
        bench_learning(url, range(1) if quick else range(3),
                       [("synthetic", 2000), ("real", 2205)], rates=(1000, None))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
