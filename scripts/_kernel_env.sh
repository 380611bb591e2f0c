# Shared by scripts/sanitize.sh and scripts/memcheck.sh (sourced, not run): a private copy of the
# tracked sources, a venv with the build and test requirements, and the lists of kernel tests.
# Expects $work (a temp dir the caller removes) and PYTHON (default python3).

# The tracked (and untracked, not ignored) files only: no in-place build products come along.
copy_sources() {
    local dest=$1
    mkdir -p "$dest"
    (cd "$root" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 cp --parents -t "$dest")
}

# A venv with build-system requires, runtime dependencies and the test extra from pyproject.toml.
make_venv() {
    local venv=$1
    "${PYTHON:-python3}" -m venv "$venv"
    local reqs
    reqs=$("$venv/bin/python" - "$root/pyproject.toml" <<'EOF'
import sys
try:
    import tomllib
except ImportError:  # Python < 3.11: the list as of this writing
    print("setuptools>=77 Cython>=3.0 numpy>=1.25 safetensors>=0.4 pytest>=7 "
          "pytest-benchmark>=4 hypothesis>=6 prometheus_client>=0.17")
    sys.exit()
with open(sys.argv[1], "rb") as f:
    d = tomllib.load(f)
reqs = (d["build-system"]["requires"] + d["project"]["dependencies"]
        + d["project"]["optional-dependencies"]["test"])
print(" ".join(r.replace(" ", "") for r in reqs))
EOF
)
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $reqs
}

# The tests that drive C code: the kernels, the adapter, dispatch, the optimiser kernels, the
# trajectory ring, the pattern bank and k-means, the router policy, the engine's instant loop and
# the property tests, and the reliability regressions (classes built or used wrongly, shared
# rings scribbled on). Printed one per line, relative to the repo root.
kernel_tests() {
    (
        cd "$root"
        for t in tests/test_kernels.py tests/test_lora.py tests/test_dispatch.py \
            tests/test_optim.py tests/test_trajectory*.py tests/test_ring*.py tests/test_bank.py \
            tests/test_kmeans.py tests/test_router.py tests/test_engine.py tests/test_fuzz.py \
            tests/test_reliability.py tests/test_router_outcomes.py; do
            if [ -f "$t" ]; then echo "$t"; fi
        done
    )
}

# The test files whose C path depends on the active backend beyond what the `backend` fixture
# already pins: the kernels, the adapter, the optimiser kernels, dispatch, and the trajectory ring
# (SONA_BACKEND=scalar at import also selects the portable float16 conversion). Everything above
# them (bank, k-means, policy, engine) is backend-independent C calling these same kernels: a
# SONA_BACKEND=scalar run over it reaches no line of csrc/ the default-backend run misses (gcov,
# CONTRIBUTING.md). Printed one per line, relative to the repo root.
backend_tests() {
    (
        cd "$root"
        for t in tests/test_kernels.py tests/test_lora.py tests/test_optim.py \
            tests/test_dispatch.py tests/test_trajectory_store.py; do
            if [ -f "$t" ]; then echo "$t"; fi
        done
    )
}
