# Shared by scripts/sanitize.sh, scripts/memcheck.sh and scripts/c_coverage.sh (sourced, not run,
# from the repo root, with $root set to it): a temp dir $work removed on exit, a private copy of
# the tracked sources built there, and the lists of kernel tests and of what each tool leaves out.
# PYTHON picks the interpreter (default python3).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

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

# A venv and a private copy of the sources in $work/src (the working directory afterwards), with
# sona._core built there with the extra compile flags $2 (CC, LDFLAGS etc. from the caller's
# environment). $1 names the caller in messages.
build_private() {
    local name=$1 flags=$2
    echo "== $name: venv and sources"
    make_venv "$work/venv"
    copy_sources "$work/src"
    cd "$work/src"
    echo "== $name: build with ${CC:-cc} $flags"
    SONA_EXTRA_COMPILE_ARGS="$flags" "$work/venv/bin/python" setup.py build_ext --inplace -j 2 \
        >"$work/build.log" 2>&1 || {
        tail -40 "$work/build.log" >&2
        exit 1
    }
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
            tests/test_reliability.py tests/test_router_outcomes.py tests/test_router_routes.py \
            tests/test_params.py; do
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

# The kernel tests run under valgrind: all but tests/test_fuzz.py, whose property tests
# (hypothesis) and state-file fuzzing are repetitions and state-file loads (skip_under_valgrind
# gives both reasons); leaving the file out also spares importing hypothesis under valgrind.
# tests/test_router_routes.py and tests/test_params.py (the route set changing under the C
# policy: arrays widened, the live mask; parameters set into the C struct) run under ASan+UBSan
# only: most of their tests save, load or pickle a router, the json noise skip_under_valgrind
# gives as the reason for the state-file deselects.
valgrind_tests() {
    kernel_tests | grep -vx -e tests/test_fuzz.py -e tests/test_router_routes.py \
        -e tests/test_params.py
}

# Deselected under ASan+UBSan (sanitize.sh): two learning curves, thousands of routing steps on
# each backend, took 1240 of the default pass's 1478 s and reach no line of csrc/ the other tests
# miss (scripts/c_coverage.sh); they run unsanitized in both of CI's suite runs.
skip_under_asan=(
    --deselect tests/test_router.py::test_adaptive_memory_retains_more_without_losing_rerouting
    --deselect tests/test_router.py::test_task_memory_keeps_earlier_tasks_through_later_ones
)

# Deselected under valgrind (memcheck.sh). A missing id is ignored by pytest.
adaptive=tests/test_router.py::test_adaptive_memory_keeps_new_query_tasks_and_drops
skip_under_valgrind=(
    # Tests that assert on the process's own RSS measure valgrind, not sona: its freed-block
    # quarantine and shadow memory grow RSS by design.
    --deselect tests/test_trajectory_store.py::test_a_million_never_ended_trajectories_stay_bounded
    # Loading a state file parses its metadata with json: CPython 3.11's never-written int digit
    # (see valgrind.supp) makes those ints "undefined" to memcheck, and it reports that where
    # sona's glue takes a reference to one. ASan runs these tests.
    --deselect tests/test_engine.py::test_save_load_round_trip
    --deselect tests/test_engine.py::test_load_rejects_router_and_broken_files
    --deselect tests/test_engine.py::test_coordinator_checkpoints
    --deselect tests/test_engine.py::test_bytes_and_pickle_round_trip
    --deselect tests/test_engine.py::test_from_bytes_rejects_router_and_broken_bytes
    --deselect tests/test_engine.py::test_load_reads_a_config_saved_with_the_removed_fields
    --deselect tests/test_reliability.py::test_engine_and_router_saves_under_concurrent_learning
    --deselect tests/test_reliability.py::test_router_on_an_engine_saves_a_file_it_loads
    --deselect tests/test_reliability.py::test_absurd_values_in_a_valid_file_are_refused
    --deselect tests/test_reliability.py::test_router_file_counters_and_moments_are_checked
    --deselect tests/test_reliability.py::test_errors_name_the_parameter_and_the_value
    --deselect tests/test_reliability.py::test_route_names_are_a_list_of_savable_strings
    --deselect tests/test_reliability.py::test_deeply_nested_json_is_a_state_file_error
    --deselect tests/test_reliability.py::test_start_background_checks_the_checkpoint_path
    --deselect tests/test_reliability.py::test_orphan_temp_files_of_dead_writers_are_removed
    --deselect tests/test_reliability.py::test_fork_while_the_coordinator_runs_leaves_a_usable
    --deselect tests/test_router_outcomes.py::test_at_most_once_outlives_the_decision_object_and
    --deselect tests/test_router_outcomes.py::test_the_at_most_once_window_keeps_the_newest_ids
    # Repetitions: learning curves, property tests, hyperparameter sweeps, stress threads and
    # processes that drive the same C entry points many times over. Each of these reaches no line
    # of csrc/ that the tests kept here miss (gcov, per test; scripts/c_coverage.sh checks the
    # whole selection), and under valgrind's ~50x slowdown they took most of CI's time.
    # ASan+UBSan run all of them.
    --deselect tests/test_router.py::test_matches_reference_step_for_step
    --deselect tests/test_router.py::test_task_memory_matches_reference_across_task_switches
    --deselect tests/test_router.py::test_task_memory_keeps_earlier_tasks_through_later_ones
    --deselect tests/test_router.py::test_task_boundary_inferred_on_a_planted_switch_and_not_on_a
    --deselect "${adaptive}_contradicted_ones[avx2-0]"
    --deselect "${adaptive}_contradicted_ones[scalar-0]"
    --deselect "${adaptive}_contradicted_ones[scalar-1]"
    --deselect tests/test_router.py::test_adaptive_memory_retains_more_without_losing_rerouting
    --deselect tests/test_router.py::test_ewc_penalty_pulls_towards_the_anchor
    --deselect tests/test_engine.py::test_consolidation_preserves_routing_decisions
    --deselect "tests/test_kmeans.py::test_recovers_planted_clusters_weighted_and_large[scalar]"
    --deselect tests/test_trajectory_store.py::test_four_threads_and_a_consumer
    --deselect "tests/test_trajectory_store.py::test_two_processes_and_a_consumer[float16]"
    --deselect tests/test_trajectory_store.py::test_f16_narrowing_rounds_to_nearest_even
    --deselect tests/test_reliability.py::test_reinitialising_live_objects_is_refused
)
