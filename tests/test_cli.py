"""The `sona` command: demo (the main job), bench --quick and info, run as a user runs them.

The subprocesses import the same sona package as this test process (its parent directory goes first
on PYTHONPATH) and run in a temporary directory, so a source tree without a built extension in the
working directory can never shadow the package under test.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sona
from sona import cli, demo, demo_real

PACKAGE_ROOT = str(Path(sona.__file__).resolve().parent.parent)
HANG_GUARD_S = 300  # not a performance limit: only stops a hung subprocess from hanging the suite
SMALL = ["--data", "synthetic", "--queries", "600", "--window", "200"]
REAL_SMALL = ["--queries", "600", "--window", "200"]


def _env() -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    return env


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=HANG_GUARD_S
    )


def _sona(args: list[str], cwd: Path, via: str = "module") -> subprocess.CompletedProcess:
    if via == "script":
        script = shutil.which("sona")
        if script is None:
            pytest.skip("the `sona` console script is not installed (pip install .)")
        return _run([script, *args], cwd)
    if via == "package":  # python -m sona
        return _run([sys.executable, "-m", "sona", *args], cwd)
    return _run([sys.executable, "-m", "sona.cli", *args], cwd)


def _without_matplotlib(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys; sys.modules['matplotlib'] = None; import sona.cli; "
        f"sys.exit(sona.cli.main({args!r}))"
    )
    return _run([sys.executable, "-c", code], cwd)


# -- sona demo, as a user runs it ------------------------------------------------------------------
@pytest.mark.parametrize("via", ["module", "script"])
def test_demo_learns_and_beats_the_static_baseline(tmp_path, via):
    proc = _sona(["demo", *SMALL, "--json"], tmp_path, via)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    s = result["summary"]
    assert [w["feedbacks"] for w in result["windows"]] == [200, 400, 600]
    assert s["accuracy"] >= s["static_accuracy"] + 0.25, s
    assert s["reward_ratio"] > s["static_reward_ratio"], s
    assert s["regret"] < s["static_regret"], s
    assert s["accuracy"] > s["initial_accuracy"], s
    assert s["route_feedback_median_us"] > 0
    assert result["static_route"] in result["routes"]
    assert result["routes"] == ["gpt-small", "gpt-medium", "gpt-large", "code-expert"]


def test_demo_prints_table_and_summary_with_progress_on_stderr(tmp_path):
    proc = _sona(["demo", *SMALL], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "held-out accuracy" in out and "reward / oracle" in out and "cumulative regret" in out
    rows = [line for line in out.splitlines() if line.split()[:1] in (["200"], ["400"], ["600"])]
    assert len(rows) == 3
    assert sum("<- drift" in r for r in rows) == 1  # the drift phase is marked in its window
    assert "final held-out accuracy" in out and "µs per call" in out
    assert "static baseline: always" in out
    # No terminal here: plain progress lines, no carriage-return bar.
    assert "600/600 queries (100%)" in proc.stderr
    assert "\r" not in proc.stderr


def test_demo_without_matplotlib_exits_2_naming_the_extra(tmp_path):
    png = tmp_path / "curve.png"
    proc = _without_matplotlib(["demo", *SMALL, "--plot", str(png)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "sona[plot]"' in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not png.exists()
    assert proc.stdout == ""  # refused before running, not after


def test_demo_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curve.png"
    proc = _sona(["demo", "--data", "synthetic", "--queries", "300", "--window", "100",
                  "--plot", str(png)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_save(tmp_path):
    path = tmp_path / "router.sona"
    proc = _sona(["demo", "--data", "synthetic", "--queries", "200", "--window", "100",
                  "--save", str(path)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert path.stat().st_size > 0
    loaded = sona.Router.load(path)
    assert loaded.routes == tuple(demo.ROUTES) and loaded.feedbacks == 200


# -- sona demo on real data (the default) ---------------------------------------------------------
GPT4 = "gpt-4-1106-preview"


@pytest.mark.parametrize("via", ["module", "script"])
def test_real_demo_is_the_default(tmp_path, via):
    proc = _sona(["demo", *REAL_SMALL, "--json"], tmp_path, via)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["routes"]) == 11 and result["best_route"] == GPT4
    # GPT-4 is the best model on every task: the task oracle is always GPT-4 here.
    assert set(result["task_routes"].values()) == {GPT4}
    w = result["windows"]
    assert [r["feedbacks"] for r in w] == [200, 400, 600]
    s = result["summary"]
    assert s["best_quality"] == pytest.approx(np.mean([r["best_quality"] for r in w]))
    assert s["quality"] == pytest.approx(np.mean([r["quality"] for r in w]))
    assert s["task_quality"] == pytest.approx(s["best_quality"])
    assert s["heldout_quality"] == w[-1]["heldout_quality"]
    assert result["heldout"]["best_quality"] == pytest.approx(0.879, abs=0.002)
    assert 0 < s["cost"] and 0 < s["heldout_cost"]
    assert result["config"]["train_queries"] == 2205


def test_real_demo_prints_table_summary_and_progress(tmp_path):
    proc = _sona(["demo", *REAL_SMALL], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "real LLM outcomes" in out and "quality as routed" in out and "held-out greedy" in out
    rows = [line for line in out.splitlines() if line.split()[:1] in (["200"], ["400"], ["600"])]
    assert len(rows) == 3
    assert "whole run, as routed" in out and "held out, greedy" in out
    assert "cost trade-off" in out
    assert "600/600 queries (100%)  quality" in proc.stderr


def test_real_demo_plot_and_save(tmp_path):
    pytest.importorskip("matplotlib")
    png, state = tmp_path / "curve.png", tmp_path / "router.sona"
    proc = _sona(["demo", "--queries", "300", "--window", "100", "--embedding", "wordllama",
                  "--plot", str(png), "--save", str(state)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = sona.Router.load(state)
    assert len(loaded.routes) == 11 and GPT4 in loaded.routes and loaded.feedbacks == 300


def test_real_demo_without_matplotlib_exits_2(tmp_path):
    png = tmp_path / "curve.png"
    proc = _without_matplotlib(["demo", *REAL_SMALL, "--plot", str(png)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "sona[plot]"' in proc.stderr and "Traceback" not in proc.stderr
    assert not png.exists() and proc.stdout == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--dim", "16"], "--dim applies to --data synthetic only"),
        (["demo", "--no-drift"], "--drift/--no-drift applies to --data synthetic only"),
        (["demo", "--data", "synthetic", "--embedding", "minilm"],
         "--embedding applies to --data real only"),
        (["demo", "--data", "synthetic", "--cost-weight", "5"],
         "--cost-weight applies to --data real only"),
    ],
)
def test_demo_options_of_the_other_data_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_real_demo_cost_weight(capsys):
    code = cli.main(["demo", "--queries", "100", "--window", "50", "--cost-weight", "20"])
    captured = capsys.readouterr()
    assert code == 0 and "of always gpt-4-1106-preview's cost saved" in captured.out


def test_real_demo_run_is_deterministic_given_seed():
    def strip(result):
        return result["windows"], result["summary"]["quality"]

    a, _ = demo_real.run(300, seed=3, window=100)
    b, _ = demo_real.run(300, seed=3, window=100)
    c, _ = demo_real.run(300, seed=4, window=100)
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)
    # The one-pass checkpoint of the protocol is not a row; the last row is the end.
    long, _ = demo_real.run(2300, window=1000)
    assert [r["feedbacks"] for r in long["windows"]] == [1000, 2000, 2300]


def test_real_demo_run_rejects_bad_arguments():
    with pytest.raises(ValueError, match="queries and window"):
        demo_real.run(0)
    with pytest.raises(ValueError, match="embedding must be one of"):
        demo_real.run(10, embedding="bert")
    with pytest.raises(ValueError, match="cost_weight must be finite"):
        demo_real.run(10, cost_weight=-1.0)


# -- the other subcommands -------------------------------------------------------------------------
@pytest.mark.parametrize("via", ["module", "package"])
def test_info_reports_the_build_flags_not_pythons(tmp_path, via):
    import shlex

    proc = _sona(["info", "--json"], tmp_path, via)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["version"] == sona.__version__
    assert info["backend"] in info["backends"]
    build = sona.build_info()
    assert info["compiled_backends"] == build["compiled_backends"]
    assert shlex.split(info["compile_command"]) == build["compile_command"]
    assert shlex.split(info["sona_compile_args"]) == build["extra_compile_args"]
    assert build["cython"] in info["built_with"]
    text = _sona(["info"], tmp_path, via)
    assert text.returncode == 0, text.stderr
    assert "sona_compile_args  " + info["sona_compile_args"] in text.stdout


def test_python_dash_m_sona_without_a_command_exits_2_with_usage(tmp_path):
    proc = _sona([], tmp_path, "package")
    assert proc.returncode == 2
    assert "usage: sona" in proc.stderr


def test_bench_quick_runs(tmp_path):
    proc = _sona(["bench", "--quick"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "MicroLoRA.forward" in proc.stdout


# -- in process: options, determinism, progress ----------------------------------------------------
def _main(**kw) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = demo.main(stdout=out, stderr=err, **kw)
    return code, out.getvalue(), err.getvalue()


def test_demo_is_deterministic_given_seed():
    def strip(result):
        return result["windows"], result["drift"], result["static_route"]

    a, _ = demo.run(300, seed=3, window=100)
    b, _ = demo.run(300, seed=3, window=100)
    c, _ = demo.run(300, seed=4, window=100)
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_drift_is_a_third_of_the_way_in_on_a_window_boundary():
    result, _ = demo.run(600, window=200)
    drift = result["drift"]
    assert drift["after"] == 200 and len(drift["clusters"]) == demo.N_DRIFT
    assert all(a != b for a, b in zip(drift["old_best"], drift["new_best"]))
    assert [w["drift"] for w in result["windows"]] == [False, True, False]
    assert result["windows"][0]["changed_accuracy"] is None
    assert all(w["changed_accuracy"] is not None for w in result["windows"][1:])


def test_no_drift():
    result, _ = demo.run(300, window=100, drift=False)
    assert result["drift"] is None
    assert not any(w["drift"] for w in result["windows"])
    assert all(w["changed_accuracy"] is None for w in result["windows"])


def test_short_run_without_room_for_drift():
    result, _ = demo.run(50, window=100)  # one partial window: nothing before or after a drift
    assert result["drift"] is None
    assert [w["feedbacks"] for w in result["windows"]] == [50]


def test_json_output_is_the_result():
    code, out, _ = _main(queries=200, window=100, as_json=True)
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"config", "routes", "static_route", "drift", "windows", "summary"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--queries", "0"], "--queries: must be >= 1"),
        (["demo", "--window", "x"], "--window: expected an integer"),
        (["demo", "--dim", str(demo.MIN_DIM - 1)], f"--dim: must be >= {demo.MIN_DIM}"),
        (["demo", "--seed", "-1"], "--seed: must be >= 0"),
        (["demo", "--cost-weight", "-1"], "--cost-weight: must be a finite number >= 0"),
        (["demo", "--cost-weight", "x"], "--cost-weight: expected a number"),
        (["demo", "--embedding", "bert"], "--embedding: invalid choice"),
        (["demo", "--data", "fake"], "--data: invalid choice"),
        (["demo", "--dim", "70000"], "--dim: must be <= 65536"),
    ],
)
def test_bad_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_plot_into_a_missing_directory_exits_2(tmp_path):
    code, out, err = _main(queries=10, plot_path=str(tmp_path / "nope" / "curve.png"))
    assert code == 2 and out == ""
    assert "does not exist" in err or 'pip install "sona[plot]"' in err


def test_save_or_plot_onto_a_directory_exits_2_before_the_run(tmp_path):
    # issue 16, finding 19: the existing directory was found only after the whole run
    for key in ("save_path", "plot_path"):
        code, out, err = _main(queries=10, **{key: str(tmp_path)})
        assert code == 2 and out == ""
        assert "is a directory" in err or 'pip install "sona[plot]"' in err


def test_run_rejects_bad_arguments():
    with pytest.raises(ValueError, match="queries and window"):
        demo.run(0)
    with pytest.raises(ValueError, match="dim must be"):
        demo.run(10, dim=demo.MIN_DIM - 1)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal():
    term = _Terminal()
    progress = demo.Progress(term, width=10)
    progress.step(5, 10)
    progress.value = 0.5
    progress.step(10, 10)
    progress.clear()
    text = term.getvalue()
    assert "\r[#####-----] 5/10 queries" in text
    assert "\r[##########] 10/10 queries  accuracy 0.500" in text
    assert text.endswith("\r")


def test_progress_lines_without_a_terminal():
    log = io.StringIO()
    progress = demo.Progress(log)
    for done in range(1, 101):
        progress.step(done, 100)
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1] == "sona demo: 100/100 queries (100%)"
    assert "\r" not in log.getvalue()
