"""The real-data routing benchmark (issue 14): sona.Router against anchors and classic contextual
bandits on RouterBench (sona.data: 11 real LLMs' measured quality and cost on 3,150 real queries).

Protocol (sona.evaluation.run_online): the 2,205 train queries stream in a seeded random order for
6,000 feedbacks (several passes); the policy routes, the outcome is the chosen model's recorded
quality and cost, the policy learns. Held-out greedy quality and cost on the 945 test queries after
one pass over the train split. Anchors on the same streams: best single model, random, the task
oracle (told each query's task), the per-query oracle, an offline kNN with full information (k by
cross-validation), the same kNN told one uniformly drawn route's outcome per train query (what one
pass of bandit feedback can tell), the reference of the issue: Thompson sampling told each query's
task, and Thompson sampling blind to the query (what learning the best route costs when nothing
about the query is used).

    python bench/bench_real.py                    # seeds 0-4, both embeddings, the README tables
    python bench/bench_real.py --quick            # one seed, MiniLM, 3000 feedbacks (CI-sized)
    python bench/bench_real.py --plot curve.png   # the quality-cost curves (needs sona[plot])
    python bench/bench_real.py --budgets          # sona.BudgetPacer at budgets of 30-70 % of
                                                  # the best single model's cost

Each cell: worst seed / mean. "vs best" columns are quality points (x100) against always sending
the same queries to the best single model (by mean train quality). LinUCB, epsilon-greedy and
Vowpal Wabbit see the embedding projected on its 64 leading principal components of the train
queries (no labels used): at full dimension one run of each took 10-30 s here (O(d^2) per feedback
at d=384 for the ridge regressions, text parsing of 384 features for VW). Vowpal Wabbit
(``--cb_explore_adf --squarecb``) runs when the ``vowpalwabbit`` package is importable; its row is
left out otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

import sona
from sona import baselines, evaluation
from sona.data import EMBEDDINGS, RoutingData, load_routerbench
from sona.params import RAW_NEW_PATTERN_COS

GPT4 = "gpt-4-1106-preview"
ROUTE_SETS = {"all 11 models": (), "GPT-4 dropped": (GPT4,)}
LINEAR_DIM = 64
SHARE = 0.97
EARLY = 3000  # feedbacks of the "1-3000" columns
BURN_IN = 1000  # feedbacks before the "after 1000" measures (worst window, budgets)
# The offline kNN told one uniformly drawn route's outcome per train query (a new draw per seed):
# what one pass of bandit feedback can tell, against the full information of the kNN above it.
LOGGED_KNN = "offline kNN on a uniform log (one outcome per query)"
BUDGETS = (0.3, 0.5, 0.7)  # --budgets: fractions of the best single model's mean cost per query

COLUMNS = [
    ("quality_early", f"quality 1-{EARLY}", "hi", "{:.3f}"),
    ("vs_ref_early", f"vs best 1-{EARLY} (pts)", "hi", "{:+.1f}"),
    ("vs_ref_run", "vs best, run (pts)", "hi", "{:+.1f}"),
    ("worst_window", f"worst 500 after {BURN_IN} (pts)", "hi", "{:+.1f}"),
    ("heldout_quality", "held-out, one pass", "hi", "{:.3f}"),
    ("heldout_cost", "held-out $/1k", "lo", "{:.2f}"),
    ("onpolicy_cost", "on-policy $/1k", "lo", "{:.2f}"),
    ("cheapest", f"cheapest >={SHARE:.0%} of best (% of its cost)", "lo", "{:.0f}"),
    ("below_knn", "curve below kNN's, worst (pts)", "lo", "{:+.1f}"),
]
POINTS = {"vs_ref_early", "vs_ref_run", "worst_window", "below_knn"}
PER_1K = {"heldout_cost", "onpolicy_cost"}


class VowpalWabbit:
    """Vowpal Wabbit ``--cb_explore_adf --squarecb``: the query's embedding as shared features,
    one action per route crossed with them (``-q sa``: a linear model per route), cost = 1 -
    quality. Its exploration pmf is sampled here with a seeded generator."""

    def __init__(self, n_routes: int, seed: int) -> None:
        from vowpalwabbit import Workspace

        self.ws = Workspace(f"--cb_explore_adf --squarecb -q sa --quiet --random_seed {seed}")
        self.n_routes = n_routes
        self._rng = np.random.default_rng([seed, 25])
        self._prob = 1.0

    def _example(self, x: np.ndarray, label: tuple | None = None) -> list[str]:
        lines = ["shared |s " + " ".join(f"{i}:{v:.4g}" for i, v in enumerate(x))]
        for k in range(self.n_routes):
            tag = f"0:{label[1]:.6g}:{label[2]:.6g} " if label and label[0] == k else ""
            lines.append(f"{tag}|a r{k}")
        return lines

    def route(self, x: np.ndarray, task: int) -> int:
        pmf = np.asarray(self.ws.predict(self._example(x)), dtype=np.float64)
        k = int(self._rng.choice(self.n_routes, p=pmf / pmf.sum()))
        self._prob = float(pmf[k])
        return k

    def learn(self, x: np.ndarray, task: int, index: int, quality: float, cost: float) -> None:
        self.ws.learn(self._example(x, (index, 1.0 - quality, self._prob)))

    def greedy(self, X: np.ndarray, tasks: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        if cost_weight != 0.0:
            raise ValueError("this Vowpal Wabbit setup learns quality only (cost_weight 0)")
        return np.array([int(np.argmax(self.ws.predict(self._example(x)))) for x in X])


def _have_vw() -> bool:
    try:
        import vowpalwabbit  # noqa: F401
    except ImportError:
        return False
    return True


def _project(train: RoutingData, test: RoutingData, dim: int) -> tuple[RoutingData, RoutingData]:
    mu = train.X.mean(axis=0)
    _, _, vt = np.linalg.svd(train.X - mu, full_matrices=False)
    P = vt[:dim].T

    def proj(d: RoutingData) -> RoutingData:
        return dataclasses.replace(d, X=np.ascontiguousarray((d.X - mu) @ P, dtype=np.float32))

    return proj(train), proj(test)


def learners(train: RoutingData, vw: bool) -> dict:
    """name -> (make(seed) -> policy, uses the projected embedding, has a cost curve)."""
    K, T = len(train.routes), len(train.task_names)
    out = {
        "sona.Router (defaults)": (lambda s: evaluation.sona_policy(train, s), False, True),
        f"sona.Router (raw cosine: centre_patterns off, new_pattern_cos {RAW_NEW_PATTERN_COS})": (
            lambda s: evaluation.sona_policy(train, s, centre_patterns=False,
                                             new_pattern_cos=RAW_NEW_PATTERN_COS), False, True),
        "reference: Thompson told the task": (lambda s: baselines.TaskThompson(K, T, seed=s),
                                              False, True),
        "Thompson blind to the query": (lambda s: baselines.Thompson(K, seed=s), False, True),
        f"LinUCB (alpha 1, PCA {LINEAR_DIM})": (
            lambda s: baselines.LinUCB(LINEAR_DIM, K, seed=s), True, True),
        f"eps-greedy linear (0.05, PCA {LINEAR_DIM})": (
            lambda s: baselines.EpsilonGreedy(LINEAR_DIM, K, seed=s), True, True),
        "random": (lambda s: baselines.RandomPolicy(K, seed=s), False, False),
    }
    if vw:
        out[f"Vowpal Wabbit cb_explore_adf squarecb (PCA {LINEAR_DIM})"] = (
            lambda s: VowpalWabbit(K, s), True, False)
    return out


def run_config(data: RoutingData, seeds: list[int], n_steps: int, vw: bool,
               log=print) -> dict:
    """Every policy on one data configuration: metrics per seed, and seed 0's curves."""
    train, test = data.subset(data.is_train), data.subset(~data.is_train)
    ptrain, ptest = _project(train, test, LINEAR_DIM)
    best = evaluation.best_single(train)
    ref_q, ref_c = evaluation.single_route_points(test)[train.routes[best]]
    knn = evaluation.KNN(train)
    weights = evaluation.DEFAULT_COST_WEIGHTS
    curves = {
        "best single (by weight)": evaluation.fixed_curve(
            lambda w: evaluation.best_single(train, w), test, weights),
        "task oracle": evaluation.fixed_curve(lambda w: evaluation.task_best(train, w), test,
                                              weights),
        "per-query oracle": evaluation.fixed_curve(lambda w: evaluation.query_oracle(test, w),
                                                   test, weights),
        f"offline kNN (k={knn.k})": evaluation.fixed_curve(knn.chooser(test.X), test, weights),
    }
    anchors = {
        "best single model": (best, best, curves["best single (by weight)"]),
        "task oracle (told the task)": (evaluation.task_best(train), None, curves["task oracle"]),
        "per-query oracle": (evaluation.query_oracle(train), evaluation.query_oracle(test),
                             curves["per-query oracle"]),
        f"offline kNN, full information (k={knn.k})": (knn.choose_train(), knn.choose(test.X),
                                                        curves[f"offline kNN (k={knn.k})"]),
    }
    knn_curve = curves[f"offline kNN (k={knn.k})"]
    rows_by_name: dict = {name: [] for name in anchors}
    rows_by_name[LOGGED_KNN] = []
    made = learners(train, vw)
    for name in made:
        rows_by_name[name] = []

    def metrics(run: evaluation.Run, ref: evaluation.Run, curve) -> dict:
        m = evaluation.stream_metrics(run.quality, ref.quality, early=EARLY, burn_in=BURN_IN)
        q, c = run.heldout_one_pass if run.heldout_one_pass else (None, None)
        cheap = None if curve is None else evaluation.cheapest_within(curve, ref_q, ref_c, SHARE)
        below = None if curve is None else evaluation.curve_shortfall(curve, knn_curve)
        return {**m, "heldout_quality": q, "heldout_cost": c,
                "onpolicy_cost": float(run.cost.mean()),
                "cheapest": None if cheap is None else 100 * cheap, "below_knn": below}

    for seed in seeds:
        rows = evaluation.stream_order(train.n_queries, n_steps, seed)
        ref = evaluation.fixed_run(best, train, test, rows)
        for name, (on_train, on_test, curve) in anchors.items():
            rows_by_name[name].append(metrics(
                evaluation.fixed_run(on_train, train, test, rows, on_test), ref, curve))
        logged = evaluation.KNN(train, seed=seed, observed=evaluation.uniform_log(train, seed))
        curve = evaluation.fixed_curve(logged.chooser(test.X), test, weights)
        rows_by_name[LOGGED_KNN].append(metrics(evaluation.fixed_run(
            logged.choose_train(), train, test, rows, logged.choose(test.X)), ref, curve))
        if seed == seeds[0]:
            curves[LOGGED_KNN] = curve
        for name, (make, projected, curve_ok) in made.items():
            t0 = time.perf_counter()
            tr, te = (ptrain, ptest) if projected else (train, test)
            run = evaluation.run_online(make(seed), tr, te, seed=seed, n_steps=n_steps,
                                        every=n_steps, cost_weights=weights if curve_ok else None)
            rows_by_name[name].append(metrics(run, ref, run.curve))
            if seed == seeds[0] and run.curve is not None:
                curves[name] = run.curve
            log(f"  {data.embedding}, {len(train.routes)} routes, seed {seed}, {name}: "
                f"{time.perf_counter() - t0:.1f} s")
    return {"best": train.routes[best], "knn_k": knn.k, "rows": rows_by_name,
            "curves": {k: v.tolist() for k, v in curves.items()},
            "weights": list(weights), "points": evaluation.single_route_points(test)}


def warm_start(data: RoutingData, seeds: list[int], online: int = 1000) -> dict:
    """Router.fit on the train split (every model's outcome and cost on every train query, in a
    seeded order), then ``online`` route/learn feedbacks on the train stream: held-out greedy
    quality, and the cheapest point of the held-out quality-cost curve keeping SHARE of the best
    single model's quality (% of its cost; None when no weight keeps it) and how far the curve
    falls below the kNN's at its worst (points), before and after the online part, against the
    offline full-information kNN's."""
    train, test = data.subset(data.is_train), data.subset(~data.is_train)
    rows = np.arange(test.n_queries)
    knn = evaluation.KNN(train)
    weights = evaluation.DEFAULT_COST_WEIGHTS
    ref_q, ref_c = evaluation.single_route_points(test)[train.routes[evaluation.best_single(train)]]

    knn_curve = evaluation.fixed_curve(knn.chooser(test.X), test, weights)

    def cheapest(curve: np.ndarray) -> float | None:
        c = evaluation.cheapest_within(curve, ref_q, ref_c, SHARE)
        return None if c is None else 100 * c

    out: dict = {"knn": float(test.quality[rows, knn.choose(test.X)].mean()),
                 "knn_cheapest": cheapest(knn_curve), "fit": [], "online": [],
                 "fit_cheapest": [], "online_cheapest": [], "fit_below": [], "online_below": []}
    for seed in seeds:
        router = sona.Router(list(data.routes), hidden_dim=data.dim, seed=seed)
        order = np.random.default_rng(seed).permutation(train.n_queries)
        router.fit(train.X[order], train.quality[order], train.cost[order])
        policy = evaluation.SonaPolicy(router)

        def record(stage: str, p: evaluation.SonaPolicy = policy) -> None:
            out[stage].append(float(test.quality[rows, p.router.scores(test.X).argmax(1)].mean()))
            curve = evaluation.fixed_curve(lambda w: p.greedy(test.X, test.task, w), test, weights)
            out[stage + "_cheapest"].append(cheapest(curve))
            out[stage + "_below"].append(evaluation.curve_shortfall(curve, knn_curve))

        record("fit")
        for i in evaluation.stream_order(train.n_queries, online, seed):
            k = policy.route(train.X[i], int(train.task[i]))
            policy.learn(train.X[i], int(train.task[i]), k, float(train.quality[i, k]),
                         float(train.cost[i, k]))
        record("online")
    return out


def _mixed_within(points: np.ndarray, budget: float) -> float:
    """The best mean quality of a random mixture of the (quality, cost) points whose mean cost is
    within ``budget``: the upper concave envelope of the points at the budget (a pacer mixes
    routes too, so the envelope is the fair ceiling; 0.0 when every point costs more)."""
    q, c = points[:, 0], points[:, 1]
    lo, hi = c <= budget, c > budget
    best = float(q[lo].max(initial=0.0))
    if lo.any() and hi.any():
        ql, cl = q[lo][:, None], c[lo][:, None]
        t = (budget - cl) / (c[hi][None, :] - cl)  # the share of the dearer point
        best = max(best, float((ql + t * (q[hi][None, :] - ql)).max()))
    return best


def paced(data: RoutingData, seeds: list[int], fraction: float, n_steps: int = EARLY) -> dict:
    """sona.Router routing at a sona.BudgetPacer's weight, the budget ``fraction`` of the best
    single model's mean cost per train query, over ``n_steps`` feedbacks of the train stream.

    Per seed, over the feedbacks after BURN_IN: mean cost over the budget; on-policy quality, and
    in points against the best split of those queries between single models within the budget;
    the task oracle's best quality within the budget on those queries (told each query's task, no
    exploration; mixing its per-task choices at 242 cost weights). Both references mix as the
    pacer does (_mixed_within)."""
    train = data.subset(data.is_train)
    budget = fraction * float(train.cost[:, evaluation.best_single(train)].mean())
    # the task oracle's per-task choices at every weight of a fine grid (its trade-offs)
    oracle = [evaluation.task_best(train, w) for w in (0.0, *np.geomspace(1.0, 1e6, 241))]
    out: dict = {"budget": budget, "spend": [], "quality": [], "vs_affordable": [], "oracle": []}
    for seed in seeds:
        router = sona.Router(list(data.routes), hidden_dim=data.dim, seed=seed)
        pacer = sona.BudgetPacer(budget)
        rows = evaluation.stream_order(train.n_queries, n_steps, seed)
        q, c = np.empty(n_steps), np.empty(n_steps)
        for t, i in enumerate(rows):
            d = router.route(train.X[i], cost_weight=pacer.weight)
            q[t], c[t] = train.quality[i, d.index], train.cost[i, d.index]
            router.learn(d.outcome(float(q[t]), cost=float(c[t])))
            pacer.observe(float(c[t]))
        late = rows[BURN_IN:]
        singles = np.stack([train.quality[late].mean(axis=0), train.cost[late].mean(axis=0)], 1)
        affordable = _mixed_within(singles, budget)
        quality = float(q[BURN_IN:].mean())
        out["spend"].append(float(c[BURN_IN:].mean()) / budget)
        out["quality"].append(quality)
        out["vs_affordable"].append(quality - affordable)
        by_task = [choice[train.task[late]] for choice in oracle]
        points = np.array([(train.quality[late, k].mean(), train.cost[late, k].mean())
                           for k in by_task])
        out["oracle"].append(_mixed_within(points, budget))
    return out


def _column_cell(key: str, values: list) -> str:
    """A cell of COLUMNS' metric ``key`` (its sense and format) from per-seed values."""
    _, _, sense, fmt = next(c for c in COLUMNS if c[0] == key)
    return _cell(key, values, sense, fmt)


def _cell(key: str, values: list, sense: str, fmt: str) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    scale = 100.0 if key in POINTS else 1000.0 if key in PER_1K else 1.0
    vals = [scale * v for v in vals]
    worst = (min(vals) if sense == "hi" else max(vals))
    if len(vals) < len(values):  # some seeds never reached it
        return f"never / {fmt.format(float(np.mean(vals)))} ({len(vals)}/{len(values)})"
    if len(values) == 1:
        return fmt.format(worst)
    return f"{fmt.format(worst)} / {fmt.format(float(np.mean(vals)))}"


def table(result: dict) -> str:
    head = "| policy | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, runs in result["rows"].items():
        cells = [_cell(key, [r[key] for r in runs], sense, fmt) for key, _, sense, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    """Quality-cost curves on the test split (seed 0 after one pass), one panel per configuration,
    with every single model's point."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        sys.exit('--plot needs matplotlib, which is not installed: pip install "sona[plot]"')
    n = len(results)
    cols = min(n, 2)
    fig = Figure(figsize=(7 * cols, 5 * ((n + cols - 1) // cols)))
    axes = np.atleast_1d(fig.subplots((n + cols - 1) // cols, cols)).ravel()
    for ax, (title, res) in zip(axes, results.items()):
        for name, pts in res["curves"].items():
            c = np.asarray(pts)
            order = np.argsort(c[:, 1])
            ax.plot(1000 * c[order, 1], c[order, 0], ".-", label=name, alpha=0.8)
        for name, (q, c) in res["points"].items():
            ax.plot(1000 * c, q, "k^", markersize=5)
            ax.annotate(name.split("/")[-1], (1000 * c, q), fontsize=6, xytext=(3, -3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("$ per 1,000 test queries")
        ax.set_ylabel("mean quality on the test split")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("RouterBench: quality against cost, greedy after one pass (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _seeds(text: str) -> list[int]:
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 0-4 or 0,3,7; got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be >= 0 and not empty; got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=_seeds, default=None, help="e.g. 0-4 (default) or 0,3")
    ap.add_argument("--embeddings", nargs="+", choices=sorted(EMBEDDINGS), default=None)
    ap.add_argument("--steps", type=int, default=None, help="feedbacks per run (default 6000)")
    ap.add_argument("--quick", action="store_true",
                    help="CI-sized: seed 0, MiniLM, 3000 feedbacks (each alone can be overridden)")
    ap.add_argument("--plot", metavar="FILE.png", help="write the quality-cost curves")
    ap.add_argument("--json", help="also write every number here")
    ap.add_argument("--budgets", action="store_true",
                    help="only the budget pacer: budgets of 30, 50 and 70 %% of the best single "
                         "model's cost, 3000 feedbacks")
    ap.add_argument("--warm-start", action="store_true",
                    help="only the warm start: Router.fit on the train split, then 1000 online")
    args = ap.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else list(range(5)))
    embeddings = args.embeddings or (["minilm"] if args.quick else ["minilm", "wordllama"])
    n_steps = args.steps or (3000 if args.quick else 6000)
    if n_steps < 1:
        ap.error(f"--steps must be >= 1; got {n_steps}")
    vw = _have_vw()
    print(f"sona {sona.__version__}, backend {sona.get_backend()}, seeds {seeds}, "
          f"{n_steps} feedbacks per run; Vowpal Wabbit {'on' if vw else 'not installed: no row'}",
          flush=True)
    t0 = time.perf_counter()
    if args.budgets:
        print(f"\nsona.BudgetPacer over {EARLY} feedbacks; after the first {BURN_IN}: mean cost "
              "(% of the budget) and on-policy quality, also in points against the best split of "
              "the same queries between single models within the budget; the task oracle's best "
              "quality within the budget there, mixing its trade-offs as a pacer does (worst seed "
              "/ mean)\n")
        print("| data | budget, % of best single's cost ($/1k) | spend, % of budget (lowest - "
              "highest) | quality | vs best models within budget (pts) | task oracle within "
              "budget |")
        print("|---|---|---|---|---|---|")
        for emb in embeddings:
            full = load_routerbench(emb)
            for label, dropped in ROUTE_SETS.items():
                data = full.without_routes(list(dropped)) if dropped else full
                for fraction in BUDGETS:
                    b = paced(data, seeds, fraction)
                    spend = [100 * v for v in b["spend"]]
                    print(f"| {emb}, {label} | {100 * fraction:.0f} ({1000 * b['budget']:.2f}) | "
                          f"{min(spend):.0f} - {max(spend):.0f} | "
                          f"{_cell('q', b['quality'], 'hi', '{:.3f}')} | "
                          f"{_column_cell('vs_ref_early', b['vs_affordable'])} | "
                          f"{_cell('q', b['oracle'], 'hi', '{:.3f}')} |", flush=True)
        print(f"\n({time.perf_counter() - t0:.0f} s)")
        return
    if args.warm_start:
        print(f"\nHeld-out quality; then the cheapest point keeping >={SHARE:.0%} of the best "
              "single model's quality, % of its cost; then how far the quality-cost curve falls "
              "below the kNN's at its worst, points (worst / mean)\n")
        print("| data | offline kNN | sona fit | then 1000 online | cheapest: offline kNN "
              "| sona fit | then 1000 online | below kNN: sona fit | then 1000 online |")
        print("|---|---|---|---|---|---|---|---|---|")
        for emb in embeddings:
            full = load_routerbench(emb)
            for label, dropped in ROUTE_SETS.items():
                w = warm_start(full.without_routes(list(dropped)) if dropped else full, seeds)
                print(f"| {emb}, {label} | {w['knn']:.3f} | {min(w['fit']):.3f} / "
                      f"{np.mean(w['fit']):.3f} | {min(w['online']):.3f} / "
                      f"{np.mean(w['online']):.3f} | "
                      + " | ".join(_column_cell(key, values) for key, values in (
                          ("cheapest", [w["knn_cheapest"]]), ("cheapest", w["fit_cheapest"]),
                          ("cheapest", w["online_cheapest"]), ("below_knn", w["fit_below"]),
                          ("below_knn", w["online_below"])))
                      + " |", flush=True)
        return
    results = {}
    for emb in embeddings:
        full = load_routerbench(emb)
        for label, dropped in ROUTE_SETS.items():
            data = full.without_routes(list(dropped)) if dropped else full
            results[f"{emb}, {label}"] = run_config(data, seeds, n_steps, vw,
                                                    log=lambda s: print(s, file=sys.stderr))
    for title, res in results.items():
        print(f"\n### {title} (best single model: {res['best']}; worst seed / mean)\n")
        print(table(res))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.plot:
        plot(results, args.plot)
        print(f"quality-cost curves written to {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
