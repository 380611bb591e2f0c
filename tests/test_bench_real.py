"""bench/bench_real.py, run as a user runs it (source tree only: a wheel install has no bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sona

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "bench_real.py"
PACKAGE_ROOT = str(Path(sona.__file__).resolve().parent.parent)
HANG_GUARD_S = 600  # not a performance limit: only stops a hung subprocess from hanging the suite

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="tests run outside the source tree")


def _bench(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_bench_real_prints_both_route_sets_and_writes_json_and_plot(tmp_path):
    args = ["--quick", "--embeddings", "wordllama", "--steps", "2300", "--json", "out.json"]
    have_plot = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have_plot = False
    if have_plot:
        args += ["--plot", "curve.png"]
    proc = _bench(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "### wordllama, all 11 models (best single model: gpt-4-1106-preview" in out
    assert "### wordllama, GPT-4 dropped (best single model: zero-one-ai/Yi-34B-Chat" in out
    rows = [line for line in out.splitlines() if line.startswith("| sona.Router (defaults) |")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 10 and 0.5 < float(cells[5]) <= 1.0  # held-out quality after one pass
    result = json.loads((tmp_path / "out.json").read_text())
    best = result["wordllama, all 11 models"]["rows"]["best single model"][0]
    assert best["vs_ref_early"] == 0.0 and best["cheapest"] == pytest.approx(100.0)
    knn = next(rows[0] for name, rows in result["wordllama, all 11 models"]["rows"].items()
               if name.startswith("offline kNN"))
    # against its own curve: only its points that a cheaper point of it beats count
    assert 0.0 <= knn["below_knn"] < 0.02
    assert sum(line.startswith("| Thompson blind to the query |") for line in out.splitlines()) == 2
    logged = result["wordllama, GPT-4 dropped"]["rows"][
        "offline kNN on a uniform log (one outcome per query)"][0]
    assert 0.5 < logged["heldout_quality"] <= 1.0 and logged["below_knn"] is not None
    if have_plot:
        assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_real_rejects_bad_seeds(tmp_path):
    proc = _bench(["--seeds", "x"], tmp_path)
    assert proc.returncode == 2 and "--seeds: expected e.g. 0-4" in proc.stderr


def test_bench_real_warm_start_reports_quality_and_cost(tmp_path):
    proc = _bench(["--warm-start", "--seeds", "0", "--embeddings", "minilm"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| minilm, ")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 9
        # held-out quality (worst / mean)
        assert all(0.5 < float(v) <= 1.0 for q in cells[1:4] for v in q.split(" / "))
        # the cheapest point keeping 97 % of the best single model's quality: a % of its cost,
        # or "-" when no cost weight keeps it
        assert all(c == "-" or 0 < float(c) < 1000 for c in cells[4:7])
        # how far the curve falls below the kNN's, points (one seed: one number)
        assert all(-100 <= float(c) <= 100 for c in cells[7:])


def test_bench_real_budgets_report_spend_and_quality(tmp_path):
    proc = _bench(["--budgets", "--seeds", "0", "--embeddings", "minilm"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| minilm, ")]
    assert len(rows) == 6  # three budgets, with and without GPT-4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 6
        lowest, highest = (float(v) for v in cells[2].split(" - "))
        assert 80 <= lowest <= highest <= 105  # mean cost after 1000 feedbacks, % of the budget
        assert 0.5 < float(cells[3]) < float(cells[5]) <= 1.0  # below the task oracle's mixture
    # with all 11 models at half GPT-4's cost, above the best split between single models
    assert float([c.strip() for c in rows[1].strip("|").split("|")][4]) > 0
