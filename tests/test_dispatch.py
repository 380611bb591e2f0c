"""Backend detection and selection: sona.backends/get_backend/set_backend and SONA_BACKEND."""

import os
import subprocess
import sys

import pytest
from helpers import OUTSIDE, subprocess_env

import sona


def test_backends_are_known_and_best_first():
    names = sona.backends()
    assert names[-1] == "scalar"
    assert set(names) <= {"avx2", "scalar"}
    assert ("avx2" in names) == sona.cpu_features()["avx2"]


def test_build_info_records_this_builds_flags_and_compiled_backends():
    info = sona.build_info()
    assert set(info) == {"compiler", "compile_command", "extra_compile_args", "cython", "numpy",
                         "python", "platform", "compiled_backends"}
    # sona's own flags (setup.py), never part of the interpreter's CFLAGS, close the command
    ours = info["extra_compile_args"]
    assert ("/O2" if sys.platform == "win32" else "-fno-math-errno") in ours
    assert info["compile_command"][-len(ours):] == ours
    assert len(info["compile_command"]) > len(ours)  # the compiler itself comes first
    assert info["compiled_backends"][-1] == "scalar"
    assert set(sona.backends()) <= set(info["compiled_backends"])
    assert info["python"].split(".")[:2] == [str(v) for v in sys.version_info[:2]]
    assert sona.build_info() is not sona.build_info()  # a fresh dict: editing one changes nothing


def test_default_backend_is_the_best_unless_env_says_otherwise():
    wanted = os.environ.get("SONA_BACKEND", "auto")
    expected = sona.backends()[0] if wanted == "auto" else wanted
    assert sona.get_backend() == expected


def test_set_backend_round_trip(backend):
    assert sona.get_backend() == backend


def test_set_auto_picks_best():
    previous = sona.get_backend()
    try:
        sona.set_backend("auto")
        assert sona.get_backend() == sona.backends()[0]
    finally:
        sona.set_backend(previous)


def test_unknown_backend_is_value_error_listing_valid_names():
    previous = sona.get_backend()
    with pytest.raises(ValueError, match="avx2.*scalar|scalar.*avx2"):
        sona.set_backend("neon9000")
    with pytest.raises(TypeError):
        sona.set_backend(3)
    assert sona.get_backend() == previous


def test_unsupported_backend_is_runtime_error():
    if "avx2" in sona.backends():
        pytest.skip("this CPU supports every known backend")
    with pytest.raises(RuntimeError, match="not supported"):
        sona.set_backend("avx2")


def _import_with(env_value):
    return subprocess.run([sys.executable, "-c", "import sona; print(sona.get_backend())"],
                          env=subprocess_env(SONA_BACKEND=env_value), cwd=OUTSIDE,
                          capture_output=True, text=True, timeout=60)


def test_env_var_selects_scalar():
    r = _import_with("scalar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"


def test_env_var_unknown_fails_import_clearly():
    r = _import_with("fastest")
    assert r.returncode != 0
    assert "unknown backend 'fastest'" in r.stderr
