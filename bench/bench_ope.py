"""Off-policy evaluation on real LLM outcomes: how close do sona.ope's estimates come to the truth?

The packaged RouterBench subset (``sona.data.load_routerbench``) knows every model's quality on
every query, so the true value of any routing policy on a set of queries is computable. This
script logs, on the train split, one outcome per query from a logging policy (with the
probability the route was chosen), then estimates from those logs alone the value of target
policies and compares with their true value on the same queries:

logging policies
    uniform      every route with probability 1/K
    eps-soft     the best single model (by train mean quality) with 1 - eps, eps spread evenly
                 (eps = 0.3)
target policies (fixed before logging; none is fitted on the logged outcomes)
    best single model   always the model with the best train mean quality (GPT-4 here, which
                        is also the best model of each of the three tasks)
    cheapest model      always the model with the lowest mean cost (rarely logged by eps-soft)
    query oracle        a model that answers each query well, when one does (it knows the
                        answers: a fixed but extreme policy, value far above the loggers')
    kNN greedy          the best mean quality among the 15 nearest test-split queries (cosine)
    sona.Router         a router trained online (route + feedback, 3 passes) on the test split,
                        evaluated as its greedy probabilities router.scores(x)

Each row: over ``--seeds`` logging draws, the bias (mean estimate - truth) and the spread (std)
of IPS, self-normalised IPS and doubly robust, and the mean effective sample size.

    python bench/bench_ope.py                      # 20 seeds, both embeddings, markdown table
    python bench/bench_ope.py --seeds 5 --embedding minilm --json ope.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import sona
from sona.data import EMBEDDINGS, RoutingData, load_routerbench
from sona.ope import evaluate

ESTIMATORS = ("ips", "snips", "dr")
EPS = 0.3
KNN_K = 15
ROUTER_PASSES = 3


def logging_policies(train: RoutingData) -> dict:
    n, k = train.quality.shape
    best = int(np.argmax(train.quality.mean(axis=0)))
    soft = np.full((n, k), EPS / k)
    soft[:, best] += 1.0 - EPS
    return {"uniform": np.full((n, k), 1.0 / k), f"eps-soft (eps {EPS})": soft}


def one_hot(choice: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[choice]


def knn_greedy(reference: RoutingData, X: np.ndarray) -> np.ndarray:
    sims = X @ reference.X.T
    nearest = np.argpartition(-sims, KNN_K, axis=1)[:, :KNN_K]
    means = reference.quality[nearest].mean(axis=1)
    return one_hot(np.argmax(means, axis=1), reference.quality.shape[1])


def trained_router(reference: RoutingData, seed: int = 0) -> sona.Router:
    router = sona.Router(list(reference.routes), hidden_dim=reference.dim, seed=seed)
    order = np.random.default_rng(seed)
    for _ in range(ROUTER_PASSES):
        for i in order.permutation(reference.n_queries):
            d = router.route(reference.X[i])
            router.feedback(d, float(reference.quality[i, d.index]))
    return router


def target_policies(train: RoutingData, test: RoutingData) -> dict:
    n, k = train.quality.shape
    best = int(np.argmax(train.quality.mean(axis=0)))
    cheapest = int(np.argmin(train.cost.mean(axis=0)))
    router = trained_router(test)
    return {
        "best single model": np.tile(one_hot(np.array(best), k), (n, 1)),
        "cheapest model": np.tile(one_hot(np.array(cheapest), k), (n, 1)),
        "query oracle": one_hot(np.argmax(train.quality, axis=1), k),
        "kNN greedy": knn_greedy(test, train.X),
        "sona.Router": np.stack([router.scores(x) for x in train.X]).astype(np.float64),
    }


def log_outcomes(train: RoutingData, probs: np.ndarray, seed: int) -> list:
    rng = np.random.default_rng(seed)
    cum = probs.cumsum(axis=1)
    actions = np.minimum((rng.random((len(cum), 1)) > cum).sum(axis=1), probs.shape[1] - 1)
    rows = np.arange(len(actions))
    chosen_p, quality = probs[rows, actions], train.quality[rows, actions]
    return [sona.Outcome(train.X[i], train.routes[a], chosen_p[i], float(quality[i]))
            for i, a in enumerate(actions)]


def run(embedding: str, seeds: int) -> list[dict]:
    data = load_routerbench(embedding)
    train, test = data.subset(data.is_train), data.subset(~data.is_train)
    targets = target_policies(train, test)
    rows = []
    for log_name, probs in logging_policies(train).items():
        logs = [log_outcomes(train, probs, seed) for seed in range(seeds)]
        for target_name, pi in targets.items():
            truth = float((pi * train.quality).sum(axis=1).mean())
            results = [evaluate(batch, pi, train.routes, seed=s) for s, batch in enumerate(logs)]
            row = {"embedding": embedding, "logging": log_name, "target": target_name,
                   "truth": truth, "n": results[0].n,
                   "ess": float(np.mean([r.ess for r in results]))}
            for est in ESTIMATORS:
                values = np.array([getattr(r, est) for r in results])
                row[f"{est}_bias"] = float(values.mean() - truth)
                row[f"{est}_std"] = float(values.std(ddof=1))
            rows.append(row)
    return rows


def table(rows: list[dict], seeds: int) -> str:
    head = ("| embedding | logging | target | true value | "
            + " | ".join(f"{e.upper()} bias / std" for e in ESTIMATORS) + " | mean ESS |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = " | ".join(f"{r[f'{e}_bias']:+.4f} / {r[f'{e}_std']:.4f}" for e in ESTIMATORS)
        lines.append(f"| {r['embedding']} | {r['logging']} | {r['target']} | {r['truth']:.4f} | "
                     f"{cells} | {r['ess']:.0f} |")
    lines.append(f"\n{seeds} logging seeds; train split, one logged outcome per query "
                 f"(n = {rows[0]['n']}).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--embedding", choices=sorted(EMBEDDINGS) + ["both"], default="both")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    embeddings = sorted(EMBEDDINGS) if args.embedding == "both" else [args.embedding]
    start = time.perf_counter()
    rows = [row for emb in embeddings for row in run(emb, args.seeds)]
    print(table(rows, args.seeds))
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
