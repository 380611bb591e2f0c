"""`sona demo --data synthetic`: an adaptive sona.Router learns on a simulated query stream.

(`sona demo` alone runs on real data: :mod:`sona.demo_real`; this module also holds the progress
bar, the output checks and :func:`present`, which both demos share.)

The stream comes from :class:`sona.synthetic.RoutingTask` (clustered query embeddings, hidden
per-cluster success probabilities, Bernoulli quality scores): each query is routed, its outcome
fed back, and every ``window`` feedbacks the router's greedy choice is scored on a fixed held-out
set. The static baseline is what a fixed configuration does: always the globally best route
(:meth:`FixedRouter.globally_best`), on the same queries. With ``drift`` the best route changes for
two clusters a third of the way in, to show the router re-routing while the static choice cannot.

    from sona import demo
    result, router = demo.run(queries=3000, seed=0)
    print(demo.format_table(result))

Nothing is downloaded and nothing runs in the background; the defaults take about a second.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from ._core import get_backend
from .config import MAX_DIM
from .router import Router
from .synthetic import FixedRouter, RoutingTask, heldout_accuracy

__all__ = ["ROUTES", "N_CLUSTERS", "MIN_DIM", "MAX_DIM", "run", "format_table", "plot", "main",
           "present", "check_outputs", "Progress", "DemoError"]

#: The simulated models the demo routes between.
ROUTES = ("gpt-small", "gpt-medium", "gpt-large", "code-expert")
#: Query clusters (kinds of query) in the simulated stream.
N_CLUSTERS = 8
#: Smallest embedding dimension the task fits in (one shared plus one own direction per cluster).
MIN_DIM = N_CLUSTERS + 1
#: Clusters whose best route changes in the drift phase.
N_DRIFT = 2
#: Held-out queries per cluster for the accuracy column.
HELDOUT_PER_CLUSTER = 50

PLOT_HINT = '--plot needs matplotlib, which is not installed: pip install "sona[plot]"'


class DemoError(Exception):
    """A demo option cannot be honoured (missing extra, bad path); ``main`` prints it, exits 2."""


# -- the run ---------------------------------------------------------------------------------------
def _drift_point(queries: int, window: int) -> int | None:
    """Feedbacks before the drift: a third of the run, on a window boundary (None: too short)."""
    at = (queries // 3) // window * window
    if at == 0:
        at = window
    return at if at < queries else None


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def run(
    queries: int = 3000,
    *,
    seed: int = 0,
    dim: int = 256,
    window: int = 250,
    drift: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    on_window: Callable[[dict], None] | None = None,
) -> tuple[dict, Router]:
    """Run the demo; return ``(result, router)``.

    ``result`` is a JSON-serialisable dict: ``config``, ``routes``, ``static_route``, ``drift``
    (None, or when it happened, which clusters, old and new best routes), ``windows`` (one row per
    window, see below) and ``summary``. A window row holds ``feedbacks`` (so far), ``accuracy`` and
    ``static_accuracy`` (greedy choice on the held-out set is the current best route),
    ``reward_ratio`` and ``static_reward_ratio`` (expected reward of the routes chosen for this
    window's queries over the oracle's: on-policy, exploration included), ``regret`` and
    ``static_regret`` (cumulative expected regret), ``changed_accuracy`` (held-out accuracy on the
    drifted clusters, None before the drift) and ``drift`` (the drift happened in this window).

    ``on_step(done, total)`` is called about 200 times per run, ``on_window(row)`` once per
    row, as soon as it is measured.
    Deterministic given ``seed``. Raises ValueError for queries or window < 1 or dim < MIN_DIM.
    """
    if queries < 1 or window < 1:
        raise ValueError(f"queries and window must be >= 1; got {queries}, {window}")
    if dim < MIN_DIM:
        raise ValueError(f"dim must be >= {MIN_DIM} for {N_CLUSTERS} query clusters; got {dim}")
    started = time.perf_counter()
    task = RoutingTask(dim, N_CLUSTERS, len(ROUTES), seed=seed)
    router = Router(list(ROUTES), hidden_dim=dim, seed=seed)
    static = FixedRouter.globally_best(task)

    stream = np.random.default_rng([seed, 2])
    X, c = task.sample(queries, stream)
    held_rng = np.random.default_rng([seed, 3])
    parts = [task.sample(HELDOUT_PER_CLUSTER, held_rng, [k]) for k in range(N_CLUSTERS)]
    Xh = np.ascontiguousarray(np.vstack([p[0] for p in parts]))
    ch = np.concatenate([p[1] for p in parts])
    initial_accuracy = heldout_accuracy(router, task, Xh, ch)[0]

    drift_at = _drift_point(queries, window) if drift else None
    drift_info = None
    changed: list[int] = []
    chosen = np.empty(queries, dtype=np.int64)
    call_ns = np.empty(queries, dtype=np.int64)
    oracle = np.empty(queries)
    regret = static_regret = 0.0
    windows: list[dict] = []
    step_every = max(1, queries // 200)
    clock = time.perf_counter_ns

    for t in range(queries):
        if t == drift_at:
            old_best = task.best_routes.copy()
            changed = [int(k) for k in task.change_best_routes(N_DRIFT)]
            drift_info = {
                "after": t,
                "clusters": changed,
                "old_best": [ROUTES[old_best[k]] for k in changed],
                "new_best": [ROUTES[task.best_routes[k]] for k in changed],
            }
        k_true, x = int(c[t]), X[t]
        t0 = clock()
        decision = router.route(x)
        t1 = clock()
        quality = task.reward(k_true, decision.index, stream)
        t2 = clock()
        router.feedback(decision, quality)
        call_ns[t] = (t1 - t0) + (clock() - t2)
        chosen[t] = decision.index
        p = task.P[k_true]
        oracle[t] = p.max()
        regret += oracle[t] - p[decision.index]
        static_regret += oracle[t] - p[static.index]
        done = t + 1
        if on_step is not None and (done % step_every == 0 or done == queries):
            on_step(done, queries)
        if done % window == 0 or done == queries:
            lo = (t // window) * window
            got = task.P[c[lo:done], chosen[lo:done]].sum()
            got_static = task.P[c[lo:done], static.index].sum()
            best = oracle[lo:done].sum()
            acc, per, _ = heldout_accuracy(router, task, Xh, ch)
            static_acc = heldout_accuracy(static, task, Xh, ch)[0]
            row = {
                "feedbacks": done,
                "accuracy": acc,
                "static_accuracy": static_acc,
                "reward_ratio": _ratio(got, best),
                "static_reward_ratio": _ratio(got_static, best),
                "regret": float(regret),
                "static_regret": float(static_regret),
                "changed_accuracy": (
                    float(np.mean([per[k] for k in changed])) if changed else None
                ),
                "drift": drift_at is not None and lo <= drift_at < done,
            }
            windows.append(row)
            if on_window is not None:
                on_window(row)

    last = windows[-1]
    summary = {
        "initial_accuracy": initial_accuracy,
        "accuracy": last["accuracy"],
        "static_accuracy": last["static_accuracy"],
        "reward_ratio": last["reward_ratio"],
        "static_reward_ratio": last["static_reward_ratio"],
        "run_reward_ratio": _ratio(task.P[c, chosen].sum(), oracle.sum()),
        "static_run_reward_ratio": _ratio(task.P[c, static.index].sum(), oracle.sum()),
        "regret": float(regret),
        "static_regret": float(static_regret),
        "feedbacks_to_90pct_oracle": next(
            (w["feedbacks"] for w in windows if w["reward_ratio"] >= 0.9), None
        ),
        "route_feedback_median_us": statistics.median(call_ns.tolist()) / 1000.0,
        "backend": get_backend(),
        "seconds": time.perf_counter() - started,
    }
    result = {
        "config": {
            "queries": queries,
            "seed": seed,
            "dim": dim,
            "window": window,
            "drift": drift,
            "clusters": N_CLUSTERS,
            "heldout_per_cluster": HELDOUT_PER_CLUSTER,
        },
        "routes": list(ROUTES),
        "static_route": ROUTES[static.index],
        "drift": drift_info,
        "windows": windows,
        "summary": summary,
    }
    return result, router


# -- text output -----------------------------------------------------------------------------------
_HEAD = (
    "           held-out accuracy   reward / oracle    cumulative regret   changed\n"
    "feedbacks     sona   static      sona   static       sona   static   clusters"
)


def format_header(result_or_config: dict) -> str:
    """The lines above the table: the task, the baseline, and the table header."""
    cfg = result_or_config.get("config", result_or_config)
    return (
        f"sona demo: {len(ROUTES)} routes ({', '.join(ROUTES)}), {N_CLUSTERS} query clusters, "
        f"d={cfg['dim']}, {cfg['queries']} queries, seed {cfg['seed']}\n"
        f"accuracy: the greedy choice is the best route, on {N_CLUSTERS * HELDOUT_PER_CLUSTER} "
        "held-out queries\n"
        "static: always the route that is best on average (what a fixed configuration does)\n"
        "reward / oracle: expected reward of the window's queries as routed (exploration "
        "included)\n\n" + _HEAD
    )


def format_row(row: dict) -> str:
    """One table line; the window in which the drift happened is marked."""
    changed = "-" if row["changed_accuracy"] is None else f"{row['changed_accuracy']:.3f}"
    line = (
        f"{row['feedbacks']:>9} {row['accuracy']:>8.3f} {row['static_accuracy']:>8.3f}  "
        f"{row['reward_ratio']:>8.3f} {row['static_reward_ratio']:>8.3f}   "
        f"{row['regret']:>8.1f} {row['static_regret']:>8.1f} {changed:>10}"
    )
    return line + ("  <- drift" if row["drift"] else "")


def format_summary(result: dict) -> str:
    """The lines below the table: the drift, the final numbers, the measured per-call time."""
    s, drift = result["summary"], result["drift"]
    to90 = s["feedbacks_to_90pct_oracle"]
    lines = []
    if drift is not None:
        moves = ", ".join(
            f"cluster {k} {a} -> {b}"
            for k, a, b in zip(drift["clusters"], drift["old_best"], drift["new_best"])
        )
        lines.append(f"drift after {drift['after']} feedbacks: best route of {moves}")
    return "\n".join(
        lines
        + [
            f"static baseline: always {result['static_route']!r} (the globally best route)",
            f"final held-out accuracy   sona {s['accuracy']:.3f}   "
            f"static {s['static_accuracy']:.3f}   (sona before learning "
            f"{s['initial_accuracy']:.3f})",
            f"reward / oracle           sona {s['reward_ratio']:.3f}   "
            f"static {s['static_reward_ratio']:.3f}   (last window; whole run "
            f"{s['run_reward_ratio']:.3f} vs {s['static_run_reward_ratio']:.3f})",
            f"cumulative regret         sona {s['regret']:.1f}   static {s['static_regret']:.1f}",
            "90% of oracle reward      "
            + (f"after {to90} feedbacks" if to90 is not None else "not reached"),
            f"route + feedback          {s['route_feedback_median_us']:.2f} µs per call "
            f"(median over {result['config']['queries']}, {s['backend']} backend); "
            f"whole demo {s['seconds']:.1f} s",
        ]
    )


def format_table(result: dict) -> str:
    """The whole report as text: header, one row per window, summary."""
    rows = [format_row(w) for w in result["windows"]]
    return "\n".join([format_header(result), *rows, "", format_summary(result)])


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """A ``\\r`` progress bar on a terminal; a plain line every 10% otherwise (CI logs).

    ``value``, when set, is shown after the count as ``label value``.
    """

    def __init__(self, stream: TextIO, width: int = 30, label: str = "accuracy") -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.width = width
        self.label = label
        self.value: float | None = None
        self._next_line = 0.1
        self._shown = False

    def step(self, done: int, total: int) -> None:
        frac = done / total
        acc = "" if self.value is None else f"  {self.label} {self.value:.3f}"
        if self.tty:
            fill = int(round(frac * self.width))
            bar = "#" * fill + "-" * (self.width - fill)
            self.stream.write(f"\r[{bar}] {done}/{total} queries{acc}")
            self._shown = True
        elif frac + 1e-9 >= self._next_line:
            self.stream.write(f"sona demo: {done}/{total} queries ({frac:.0%}){acc}\n")
            while self._next_line <= frac + 1e-9:
                self._next_line += 0.1
        self.stream.flush()

    def clear(self) -> None:
        """Wipe the bar so a table line can be printed on the same terminal."""
        if self.tty and self._shown:
            self.stream.write("\r" + " " * (self.width + 50) + "\r")
            self.stream.flush()
            self._shown = False


# -- the plot --------------------------------------------------------------------------------------
def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DemoError(PLOT_HINT) from None
    return Figure


def plot(result: dict, path: str | Path) -> None:
    """Write the learning curve (accuracy and reward / oracle vs feedbacks, sona vs static)."""
    Figure = _figure_class()
    w = result["windows"]
    x = [0] + [r["feedbacks"] for r in w]
    fig = Figure(figsize=(10, 4.6))
    ax_acc, ax_rew = fig.subplots(1, 2)
    ax_acc.plot(
        x,
        [result["summary"]["initial_accuracy"]] + [r["accuracy"] for r in w],
        "o-",
        label="sona.Router",
    )
    ax_acc.plot(
        x,
        [w[0]["static_accuracy"]] + [r["static_accuracy"] for r in w],
        "s--",
        label=f"static: always {result['static_route']}",
    )
    after = [r for r in w if r["changed_accuracy"] is not None]
    if after:
        ax_acc.plot(
            [r["feedbacks"] for r in after],
            [r["changed_accuracy"] for r in after],
            "^:",
            label="sona.Router, the changed clusters",
        )
    xs = [r["feedbacks"] for r in w]
    ax_rew.plot(xs, [r["reward_ratio"] for r in w], "o-", label="sona.Router")
    ax_rew.plot(
        xs,
        [r["static_reward_ratio"] for r in w],
        "s--",
        label=f"static: always {result['static_route']}",
    )
    for ax, title in (
        (ax_acc, "held-out accuracy (chose the best route)"),
        (ax_rew, "reward / oracle (per window, as routed)"),
    ):
        if result["drift"] is not None:
            ax.axvline(
                result["drift"]["after"], color="grey", linestyle=":", label="best route changes"
            )
        ax.set_xlabel("feedbacks")
        ax.set_title(title)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    # One legend below both panels: inside, it would cover a curve whatever the corner.
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize="small")
    fig.subplots_adjust(left=0.06, right=0.98, top=0.86, bottom=0.2, wspace=0.15)
    cfg = result["config"]
    fig.suptitle(
        f"sona demo: {len(result['routes'])} routes, {cfg['clusters']} query clusters, "
        f"d={cfg['dim']}, seed {cfg['seed']}"
    )
    fig.savefig(path, dpi=110)


# -- the command -----------------------------------------------------------------------------------
def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DemoError(message)


def _check_parent(path: str, option: str) -> None:
    target = Path(path).expanduser().resolve()
    _require(not target.is_dir(), f"{option} {path}: is a directory; give a file name")
    _require(target.parent.is_dir(), f"{option} {path}: directory {target.parent} does not exist")


def main(
    *,
    queries: int = 3000,
    seed: int = 0,
    dim: int = 256,
    window: int = 250,
    drift: bool = True,
    plot_path: str | None = None,
    save_path: str | None = None,
    as_json: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``sona demo``: run, print the table (or JSON), optionally plot and save. Returns the exit
    code: 0, or 2 when an option cannot be honoured (the reason goes to stderr)."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:  # everything that can refuse is checked before the run, not after it
        _require(queries >= 1 and window >= 1, "--queries and --window must be >= 1")
        _require(dim >= MIN_DIM, f"--dim must be >= {MIN_DIM} for {N_CLUSTERS} clusters")
        _require(dim <= MAX_DIM, f"--dim must be <= {MAX_DIM}")
        check_outputs(plot_path, save_path)
    except DemoError as exc:
        print(f"sona demo: error: {exc}", file=err)
        return 2

    return present(
        lambda on_step, on_window: run(queries, seed=seed, dim=dim, window=window, drift=drift,
                                       on_step=on_step, on_window=on_window),
        header=format_header({"queries": queries, "seed": seed, "dim": dim}),
        format_row=format_row, format_summary=format_summary, plot=plot,
        value=("accuracy", "accuracy"),
        as_json=as_json, plot_path=plot_path, save_path=save_path, out=out, err=err)


def check_outputs(plot_path: str | None, save_path: str | None) -> None:
    """Refuse (DemoError) a --plot without matplotlib or into a missing directory, and a --save
    into a missing directory: before the run, not after it."""
    if plot_path is not None:
        _figure_class()
        _check_parent(plot_path, "--plot")
    if save_path is not None:
        _check_parent(save_path, "--save")


def present(run_demo: Callable, *, header: str, format_row: Callable[[dict], str],
            format_summary: Callable[[dict], str], plot: Callable[[dict, str], None],
            value: tuple[str, str], as_json: bool, plot_path: str | None,
            save_path: str | None, out: TextIO, err: TextIO) -> int:
    """Run a demo with live progress on ``err`` and its table (or JSON) on ``out``, then plot and
    save. ``run_demo(on_step, on_window) -> (result, router)``; ``value`` is (row key, label) of
    the number shown beside the progress bar. Returns 0."""
    key, label = value
    progress = Progress(err, label=label)

    def on_window(row: dict) -> None:
        progress.value = row[key]
        if not as_json:
            progress.clear()
            print(format_row(row), file=out, flush=True)

    if not as_json:
        print(header, file=out, flush=True)
    result, router = run_demo(progress.step, on_window)
    progress.clear()
    if as_json:
        print(json.dumps(result, indent=2), file=out)
    else:
        print("\n" + format_summary(result), file=out)
    try:  # checked above, but the file system can still refuse (permissions, disk full)
        if plot_path is not None:
            plot(result, plot_path)
            print(f"sona demo: learning curve written to {plot_path}", file=err)
        if save_path is not None:
            router.save(save_path)
            print(f"sona demo: router state saved to {save_path}", file=err)
    except OSError as exc:
        print(f"sona demo: error: {exc}", file=err)
        return 1
    return 0
