"""`sona demo` on real data (the default): sona.Router learns to route real queries between real
LLMs, from the outcomes those models really had.

The data is the packaged RouterBench subset (:func:`sona.data.load_routerbench`: 11 LLMs' measured
0/1 quality and $ cost on ARC-Challenge, MBPP and Winogrande queries, real sentence embeddings).
Its train split streams in a seeded random order (:func:`sona.evaluation.run_online`); each query
is routed, the chosen model's recorded quality is fed back. Every ``window`` feedbacks a row shows
the window's on-policy quality (what users received, exploration included) next to what the best
single model and the task oracle (told each query's task) would have delivered on the same
queries, and the router's greedy quality on the held-out test split.

    from sona import demo_real
    result, router = demo_real.run(queries=3000, seed=0)
    print(demo_real.format_table(result))

Nothing is downloaded; the default run takes about a second.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from . import evaluation
from ._core import get_backend
from .data import EMBEDDINGS, load_routerbench
from .demo import DemoError, _figure_class, _require, check_outputs, present
from .router import Router

__all__ = ["run", "format_table", "plot", "main", "DEFAULT_COST_WEIGHT"]

#: Trade-off of the cost section: quality given up per US dollar of one call. At 20 a model must
#: be 0.1 better to be worth $0.005 (GPT-4's price here) more per query; there the offline kNN
#: of bench/bench_real.py keeps >= 97 % of GPT-4's quality at 30-40 % of its cost.
DEFAULT_COST_WEIGHT = 20.0


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else 0.0


def run(
    queries: int = 3000,
    *,
    seed: int = 0,
    embedding: str = "minilm",
    window: int = 250,
    cost_weight: float = DEFAULT_COST_WEIGHT,
    on_step: Callable[[int, int], None] | None = None,
    on_window: Callable[[dict], None] | None = None,
) -> tuple[dict, Router]:
    """Run the real-data demo; return ``(result, router)``.

    ``result`` is a JSON-serialisable dict: ``config``, ``routes``, ``best_route`` (the best single
    model on the train split), ``task_routes`` (the task oracle's model per task), ``windows`` (one
    row per window: ``feedbacks``, on-policy ``quality`` of the window and ``best_quality`` /
    ``task_quality`` on the same queries, the window's mean ``cost`` and ``best_cost`` in $ per
    query, held-out greedy ``heldout_quality`` and ``heldout_cost``), ``heldout`` (test quality and
    cost of the best single model and the task oracle), ``cost_tradeoff`` (the router's test
    quality and cost at ``cost_weight`` and the share of the best single model's cost saved)
    and ``summary``.

    ``on_step(done, total)`` is called about 200 times, ``on_window(row)`` once per row.
    Deterministic given ``seed``. Raises ValueError for queries or window < 1, an unknown
    embedding or a negative or non-finite cost_weight.
    """
    if queries < 1 or window < 1:
        raise ValueError(f"queries and window must be >= 1; got {queries}, {window}")
    if not (np.isfinite(cost_weight) and cost_weight >= 0):
        raise ValueError(f"cost_weight must be finite and >= 0; got {cost_weight!r}")
    started = time.perf_counter()
    data = load_routerbench(embedding)
    train, test = data.subset(data.is_train), data.subset(~data.is_train)
    policy = evaluation.sona_policy(train, seed)
    best = evaluation.best_single(train)
    tasks = evaluation.task_best(train)
    rows = evaluation.stream_order(train.n_queries, queries, seed)
    got = np.empty(queries)
    step_every = max(1, queries // 200)
    windows: list[dict] = []

    chosen = np.empty(queries, dtype=np.int64)

    def step(done: int, index: int, quality: float) -> None:
        got[done - 1], chosen[done - 1] = quality, index
        if on_step is not None and (done % step_every == 0 or done == queries):
            on_step(done, queries)

    def checkpoint(done: int, heldout_quality: float, heldout_cost: float) -> None:
        if done % window and done != queries:  # the protocol's one-pass checkpoint: no row
            return
        lo = (done - 1) // window * window
        r = rows[lo:done]
        row = {
            "feedbacks": done,
            "quality": _mean(got[lo:done]),
            "best_quality": _mean(train.quality[r, best]),
            "task_quality": _mean(train.quality[r, tasks[train.task[r]]]),
            "cost": _mean(train.cost[r, chosen[lo:done]]),
            "best_cost": _mean(train.cost[r, best]),
            "heldout_quality": heldout_quality,
            "heldout_cost": heldout_cost,
        }
        windows.append(row)
        if on_window is not None:
            on_window(row)

    result_run = evaluation.run_online(policy, train, test, seed=seed, n_steps=queries,
                                       every=window, on_step=step, on_checkpoint=checkpoint)
    best_q, best_c = evaluation.single_route_points(test)[train.routes[best]]
    task_run = evaluation.fixed_run(tasks, train, test, rows)
    q, c = evaluation.fixed_curve(
        lambda w: policy.greedy(test.X, test.task, w), test, [cost_weight])[0]
    tradeoff = {"cost_weight": cost_weight, "quality": float(q), "cost": float(c),
                "cost_saved": 1.0 - float(c) / best_c}
    q_run = result_run.quality
    summary = {
        "quality": float(q_run.mean()),
        "best_quality": float(train.quality[rows, best].mean()),
        "task_quality": float(task_run.quality.mean()),
        "cost": float(result_run.cost.mean()),
        "best_cost": float(train.cost[rows, best].mean()),
        "heldout_quality": windows[-1]["heldout_quality"],
        "heldout_cost": windows[-1]["heldout_cost"],
        "backend": get_backend(),
        "seconds": time.perf_counter() - started,
    }
    result = {
        "config": {"queries": queries, "seed": seed, "embedding": embedding, "window": window,
                   "cost_weight": cost_weight, "train_queries": train.n_queries,
                   "test_queries": test.n_queries},
        "routes": list(train.routes),
        "best_route": train.routes[best],
        "task_routes": {name: train.routes[tasks[t]] for t, name in enumerate(train.task_names)},
        "windows": windows,
        "heldout": {"best_quality": best_q, "best_cost": best_c,
                    "task_quality": float(task_run.heldout_quality[0]),
                    "task_cost": float(task_run.heldout_cost[0])},
        "cost_tradeoff": tradeoff,
        "summary": summary,
    }
    return result, policy.router


# -- text output -----------------------------------------------------------------------------------
_HEAD = (
    "           quality as routed (same queries)      held-out greedy   $ per 1k queries\n"
    "feedbacks     sona     best     task              sona                sona     best"
)


def _short(route: str) -> str:
    return route.split("/")[-1]


def format_header(config: dict, best_route: str | None = None) -> str:
    """The lines above the table: the data, the baselines, and the table header."""
    best = "" if best_route is None else f" ({_short(best_route)})"
    return (
        f"sona demo: real LLM outcomes (RouterBench: 11 models, ARC-Challenge, MBPP, Winogrande), "
        f"{config['embedding']} embeddings, {config['queries']} queries, seed {config['seed']}\n"
        f"best: always the best single model on the train split{best}; task: told each query's "
        "task, its best model\n"
        "quality as routed: mean quality users received in the window (exploration included)\n\n"
        + _HEAD
    )


def format_row(row: dict) -> str:
    """One table line."""
    return (
        f"{row['feedbacks']:>9} {row['quality']:>8.3f} {row['best_quality']:>8.3f} "
        f"{row['task_quality']:>8.3f} {row['heldout_quality']:>17.3f} "
        f"{1000 * row['cost']:>15.2f} {1000 * row['best_cost']:>8.2f}"
    )


def format_summary(result: dict) -> str:
    """The lines below the table: the whole run, held out, and the cost trade-off."""
    s, h, t = result["summary"], result["heldout"], result["cost_tradeoff"]
    best = _short(result["best_route"])
    lines = [
        f"whole run, as routed      sona {s['quality']:.3f}   always {best} {s['best_quality']:.3f}"
        f"   task oracle {s['task_quality']:.3f}",
        f"whole run, $ per 1k       sona {1000 * s['cost']:.2f}   always {best} "
        f"{1000 * s['best_cost']:.2f}",
        f"held out, greedy          sona {s['heldout_quality']:.3f} at "
        f"${1000 * s['heldout_cost']:.2f}/1k   always {best} {h['best_quality']:.3f} at "
        f"${1000 * h['best_cost']:.2f}/1k   task oracle {h['task_quality']:.3f}",
    ]
    lines.append(
        f"cost trade-off {t['cost_weight']:g}/$       sona {t['quality']:.3f} at "
        f"${1000 * t['cost']:.2f}/1k: {t['cost_saved']:.0%} of always {best}'s cost saved")
    lines.append(f"({s['backend']} backend; whole demo {s['seconds']:.1f} s)")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """The whole report as text: header, one row per window, summary."""
    rows = [format_row(w) for w in result["windows"]]
    head = format_header(result["config"], result["best_route"])
    return "\n".join([head, *rows, "", format_summary(result)])


# -- the plot --------------------------------------------------------------------------------------
def plot(result: dict, path: str | Path) -> None:
    """Write the learning curve: per-window quality as routed and held-out greedy quality."""
    Figure = _figure_class()
    w = result["windows"]
    x = [r["feedbacks"] for r in w]
    best = _short(result["best_route"])
    fig = Figure(figsize=(10, 4.6))
    ax_on, ax_held = fig.subplots(1, 2)
    ax_on.plot(x, [r["quality"] for r in w], "o-", label="sona.Router")
    ax_on.plot(x, [r["best_quality"] for r in w], "s--", label=f"always {best}")
    ax_on.plot(x, [r["task_quality"] for r in w], "^:", label="task oracle")
    ax_held.plot(x, [r["heldout_quality"] for r in w], "o-")
    ax_held.axhline(result["heldout"]["best_quality"], color="C1", linestyle="--")
    ax_held.axhline(result["heldout"]["task_quality"], color="C2", linestyle=":")
    for ax, title in ((ax_on, "quality as routed (per window)"),
                      (ax_held, "held-out quality (greedy)")):
        ax.set_xlabel("feedbacks")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.legend(*ax_on.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize="small")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.86, bottom=0.2, wspace=0.2)
    cfg = result["config"]
    fig.suptitle(f"sona demo on RouterBench: {len(result['routes'])} real LLMs, "
                 f"{cfg['embedding']} embeddings, seed {cfg['seed']}")
    fig.savefig(path, dpi=110)


# -- the command -----------------------------------------------------------------------------------
def main(
    *,
    queries: int = 3000,
    seed: int = 0,
    embedding: str = "minilm",
    window: int = 250,
    cost_weight: float | None = None,
    plot_path: str | None = None,
    save_path: str | None = None,
    as_json: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``sona demo --data real``: run, print the table (or JSON), optionally plot and save.
    Returns the exit code: 0, or 2 when an option cannot be honoured (the reason goes to stderr).
    An explicit ``cost_weight`` needs a cost-aware router; without one the default is shown when
    the router supports it."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:  # everything that can refuse is checked before the run, not after it
        _require(queries >= 1 and window >= 1, "--queries and --window must be >= 1")
        _require(embedding in EMBEDDINGS,
                 f"--embedding must be one of {sorted(EMBEDDINGS)}; got {embedding!r}")
        if cost_weight is not None:
            _require(bool(np.isfinite(cost_weight)) and cost_weight >= 0,
                     f"--cost-weight must be finite and >= 0; got {cost_weight}")
        check_outputs(plot_path, save_path)
    except DemoError as exc:
        print(f"sona demo: error: {exc}", file=err)
        return 2

    weight = DEFAULT_COST_WEIGHT if cost_weight is None else cost_weight
    return present(
        lambda on_step, on_window: run(queries, seed=seed, embedding=embedding, window=window,
                                       cost_weight=weight, on_step=on_step, on_window=on_window),
        header=format_header({"queries": queries, "seed": seed, "embedding": embedding}),
        format_row=format_row, format_summary=format_summary, plot=plot,
        value=("quality", "quality"), as_json=as_json, plot_path=plot_path,
        save_path=save_path, out=out, err=err)
