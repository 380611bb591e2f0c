"""The routing-quality benchmark: sona.Router (and ablations) against baselines on the synthetic
clustered routing task (d=256, 8 clusters, 4 routes, best route ahead by 0.20), three phases each:
learn, best route changes for 3 clusters, 4 new clusters arrive. Then the memory of several tasks
(sona.synthetic.run_sequential): three tasks in a row, each a disjoint group of clusters.

    python bench/bench_routing.py                 # 5 seeds, the table in README.md
    python bench/bench_routing.py --seeds 10 --sequential-seeds 40 --json results.json

Each cell: worst seed / mean (seeds meeting the target). Fixed seeds 0..n-1, fully deterministic.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import sona
from sona.params import RAW_NEW_PATTERN_COS
from sona.synthetic import (
    TARGETS,
    ClusterOracleThompson,
    EpsilonGreedyLinear,
    FixedRouter,
    RandomRouter,
    meets,
    run_protocol,
    run_sequential,
)

CONFIGS = {
    "sona.Router": {},
    f"raw cosine patterns (centre_patterns off, new_pattern_cos {RAW_NEW_PATTERN_COS})": {
        "centre_patterns": False, "new_pattern_cos": RAW_NEW_PATTERN_COS},
    "EWC++ off": {"ewc": False},
    "no BaseLoRA": {"use_base": False},
    "no pattern prior (adapter only)": {"use_prior": False},
    "adapter only, fixed memory lambda (ewc_novelty 0)": {"use_prior": False, "ewc_novelty": 0.0},
    "adapter only, no BaseLoRA, EWC off": {"use_prior": False, "use_base": False, "ewc": False},
    "adapter only, EWC off": {"use_prior": False, "ewc": False},
}
BASELINES = {
    "reference: Thompson sampling told each query's true cluster":
        lambda t, s: ClusterOracleThompson(t, seed=s),
    "baseline: linear eps-greedy": lambda t, s: EpsilonGreedyLinear(t.dim, t.n_routes, seed=s),
    "baseline: globally best route": lambda t, s: FixedRouter.globally_best(t),
    "baseline: random": lambda t, s: RandomRouter(t.n_routes, seed=s),
}
SEQUENTIAL_CONFIGS = {
    "sona.Router": {},
    "adapter only": {"use_prior": False},
    "adapter only, fixed memory lambda (ewc_novelty 0)": {"use_prior": False, "ewc_novelty": 0.0},
    "adapter only, memory off (EWC++ keeps the last anchor only)": {"use_prior": False,
                                                                   "ewc_memory": 0.0},
    "adapter only, EWC off": {"use_prior": False, "ewc": False},
}
COLUMNS = ["acc_2000", "to_90", "greedy_to_90", "changed_acc", "changed_to_85", "unchanged_keep",
           "old_keep", "new_acc"]


def _router_factory(params):
    def make(task, seed):
        return sona.Router([f"model-{k}" for k in range(task.n_routes)], hidden_dim=task.dim,
                           seed=seed, **params)
    return make


def run_all(seeds: int) -> dict:
    makers = {name: _router_factory(p) for name, p in CONFIGS.items()} | BASELINES
    results = {}
    for name, make in makers.items():
        t0 = time.perf_counter()
        results[name] = [run_protocol(lambda task, s=s, make=make: make(task, s), s)
                         for s in range(seeds)]
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return results


def run_sequential_all(seeds: int) -> dict:
    results = {}
    for name, params in SEQUENTIAL_CONFIGS.items():
        make = _router_factory(params)
        results[name] = [run_sequential(lambda task, s=s, make=make: make(task, s), s)
                         for s in range(seeds)]
    return results


def sequential_table(results: dict) -> str:
    lines = ["| config | first task learnt | first task after the third | kept (final / learnt) "
             "| all three tasks at the end |", "|---|---|---|---|---|"]
    for name, runs in results.items():
        cols = ([r["learnt"][0] for r in runs], [r["final"][0] for r in runs],
                [r["first_keep"] for r in runs], [r["final_mean"] for r in runs])
        cells = [f"{np.mean(c):.2f} (worst {min(c):.2f})" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(metric, values):
    vals = [v for v in values]
    ok = sum(meets(metric, v) for v in vals)
    op = TARGETS[metric][0]
    finite = [v for v in vals if v is not None]
    if not finite:
        return f"never (0/{len(vals)})"
    worst = (min(finite) if op == ">=" else ("never" if None in vals else max(finite)))
    mean = float(np.mean(finite))
    def fmt(v):
        if isinstance(v, str):
            return v
        return f"{v:.2f}" if op == ">=" else f"{v:.0f}"

    return f"{fmt(worst)} / {fmt(mean)} ({ok}/{len(vals)})"


def table(results: dict) -> str:
    head = "| config | " + " | ".join(
        f"{c} ({TARGETS[c][0]}{TARGETS[c][1]})" for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, runs in results.items():
        cells = [_cell(c, [r[c] for r in runs]) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sequential-seeds", type=int, default=40,
                    help="seeds of the three-task run (per-seed spread is wide: 40 by default)")
    ap.add_argument("--json", help="also write the raw per-seed results here")
    args = ap.parse_args()
    print(f"sona {sona.__version__}, backend {sona.get_backend()}, seeds 0..{args.seeds - 1}")
    results = run_all(args.seeds)
    print(table(results))
    sequential = run_sequential_all(args.sequential_seeds)
    print(f"\nthree tasks in a row (clusters {{0,1,2}}, {{3,4,5}}, {{6,7}}, 2000 feedbacks each), "
          f"mean (worst) over seeds 0..{args.sequential_seeds - 1}:")
    print(sequential_table(sequential))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"protocol": results, "sequential": sequential}, f, indent=1)


if __name__ == "__main__":
    main()
