#!/usr/bin/env bash
# Valgrind memcheck over the kernel tests (see scripts/_kernel_env.sh), on both backends.
#
# Builds sona._core in a private copy of the sources with -O1 -g (frames and lines in reports),
# then runs pytest under valgrind with PYTHONMALLOC=malloc so every Python allocation is visible
# to memcheck. Any memcheck error fails the run (--error-exitcode); leaks are not checked, since
# CPython keeps interned objects and caches alive until exit by design. scripts/valgrind.supp
# holds suppressions for noise outside sona, each with a reason. The tests deselected here are
# skip_under_valgrind in scripts/_kernel_env.sh, each group with its reason.
#
#   bash scripts/memcheck.sh                 # all kernel tests, default backend then scalar
#   bash scripts/memcheck.sh -k lora         # extra pytest arguments are passed through
#   SONA_CHECK_BACKENDS=default bash ...     # one pass only (.ci/run: the `backend` fixture
#                                            # already runs every kernel test on each backend)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/_kernel_env.sh
. scripts/_kernel_env.sh
command -v valgrind >/dev/null || { echo "memcheck: valgrind not installed" >&2; exit 2; }

build_private memcheck "-O1 -g"

mapfile -t tests < <(valgrind_tests)
echo "   tests: ${tests[*]}"
export PYTHONPATH=$work/src PYTHONMALLOC=malloc
# Under valgrind, importing is a large part of the run: the test extras' pytest plugins that no
# test here uses (hypothesis, pytest-benchmark, anyio) are not loaded.
unused_plugins=(-p no:hypothesispytest -p no:benchmark -p no:anyio)

run() {
    local rc=0
    valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --track-origins=yes \
        --num-callers=30 --suppressions="$root/scripts/valgrind.supp" \
        --log-file="$work/valgrind.%p.log" \
        "$work/venv/bin/python" -m pytest -p no:cacheprovider "${unused_plugins[@]}" -q \
        "${tests[@]}" "${skip_under_valgrind[@]}" "$@" \
        >"$work/test.log" 2>&1 || rc=$?
    tail -3 "$work/test.log"
    if grep -l "ERROR SUMMARY: [1-9]" "$work"/valgrind.*.log >/dev/null 2>&1; then
        for log in $(grep -l "ERROR SUMMARY: [1-9]" "$work"/valgrind.*.log); do
            head -n 80 "$log" >&2
        done
        echo "memcheck: errors above" >&2
        return 1
    fi
    rm -f "$work"/valgrind.*.log
    if [ "$rc" -eq 5 ]; then echo "memcheck: pytest collected no tests" >&2; fi
    if [ "$rc" -ne 0 ]; then tail -40 "$work/test.log" >&2; fi
    return "$rc"
}
for backend in ${SONA_CHECK_BACKENDS:-default scalar}; do
    echo "== memcheck: $backend backend"
    if [ "$backend" = default ]; then run "$@"; else SONA_BACKEND=$backend run "$@"; fi
done
echo "== memcheck: clean"
