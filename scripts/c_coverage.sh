#!/usr/bin/env bash
# Which lines of csrc/ the sanitizer and valgrind selections reach, measured with gcov.
#
# Builds sona._core with --coverage in a private copy of the sources and runs the kernel tests
# (scripts/_kernel_env.sh) three ways: all of them on the default backend and then with
# SONA_BACKEND=scalar (the reference), sanitize.sh's selection (both of its passes) and
# memcheck.sh's (default backend). Prints how many lines each reaches and every reference line a
# selection misses. Run it after changing a deselect list in _kernel_env.sh or adding C code.
# Lines that only contention between threads reaches (a lost compare-and-swap) differ from run to
# run; CONTRIBUTING.md lists the known misses and why they are accepted.
#
#   bash scripts/c_coverage.sh                 # takes about 10 min on 2 cores
#   bash scripts/c_coverage.sh -k optim        # extra pytest arguments apply to every run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/_kernel_env.sh
. scripts/_kernel_env.sh
command -v gcov >/dev/null || { echo "c_coverage: gcov not installed" >&2; exit 2; }

LDFLAGS="--coverage" build_private c_coverage "-O0 --coverage"
objdir=$(echo build/temp.*/csrc)
mapfile -t tests < <(kernel_tests)
mapfile -t scalar_tests < <(backend_tests)
mapfile -t valgrind_tests < <(valgrind_tests)
export PYTHONPATH=$work/src

# pytest on a backend (auto or scalar) with the given arguments; the counters accumulate.
run() {
    local backend=$1 rc=0
    shift
    SONA_BACKEND=$backend "$work/venv/bin/python" -m pytest -p no:cacheprovider -q "$@" \
        "${extra[@]}" >"$work/test.log" 2>&1 || rc=$?
    tail -1 "$work/test.log"
    if [ "$rc" -ne 0 ]; then tail -40 "$work/test.log" >&2; return "$rc"; fi
}

# The csrc/ lines the counters since the last reset reach, "file:line" sorted, into $1.
reached() {
    # -t: the annotated sources on stdout (gcov reads them relative to the source tree)
    gcov -t -o "$objdir" "$objdir"/*.gcda 2>/dev/null \
        | awk -F: '
            $2 + 0 == 0 && $3 == "Source" { src = $4; next }
            src ~ /^csrc\// && $1 ~ /^ *[0-9]+\*?$/ { print src ":" $2 + 0 }' \
        | sort -u >"$1"
    find build -name '*.gcda' -delete
}

extra=("$@")
find build -name '*.gcda' -delete
echo "== c_coverage: reference (every kernel test, default backend, then SONA_BACKEND=scalar)"
run auto "${tests[@]}"
run scalar "${tests[@]}"
reached "$work/reference"
echo "== c_coverage: sanitize.sh's selection"
run auto "${tests[@]}" "${skip_under_asan[@]}"
run scalar "${scalar_tests[@]}" "${skip_under_asan[@]}"
reached "$work/asan"
echo "== c_coverage: memcheck.sh's selection (default backend)"
run auto "${valgrind_tests[@]}" "${skip_under_valgrind[@]}"
reached "$work/memcheck"

echo "   reference: $(wc -l <"$work/reference") lines of csrc/"
for tool in asan memcheck; do
    echo "   $tool: $(wc -l <"$work/$tool") lines"
    comm -23 "$work/reference" "$work/$tool" | sed "s/^/   $tool misses /"
done
