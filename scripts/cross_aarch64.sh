#!/usr/bin/env bash
# Proves the non-x86 build is scalar-only: compiles every csrc/*.c with an aarch64 cross compiler
# (apt-get install gcc-aarch64-linux-gnu), checks that no AVX2 kernel (sona_*_avx2) is defined,
# links a small driver and, when qemu-aarch64 is installed (apt-get install qemu-user), runs it:
# the only backend must be "scalar", "avx2" must be refused, F16C must report unsupported, and a
# few kernels must give known answers. (*_avx2.c files may define portable fallbacks off x86-64,
# e.g. the f16c conversions, which delegate to the scalar code.)
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-aarch64-linux-gnu-gcc}
NM=${NM:-aarch64-linux-gnu-nm}
command -v "$CC" >/dev/null || { echo "cross_aarch64: $CC not found" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for src in csrc/*.c; do
    "$CC" -std=c11 -O3 -fno-strict-aliasing -Wall -Wextra -Werror -Icsrc -c "$src" \
        -o "$work/$(basename "$src" .c).o"
done
kernels=$("$NM" --defined-only "$work"/*.o | grep -E ' [TtDdRr] sona_[a-z0-9_]+_avx2$' || true)
if [ -n "$kernels" ]; then
    echo "cross_aarch64: AVX2 kernels compiled off x86-64:" >&2
    echo "$kernels" >&2
    exit 1
fi

cat >"$work/driver.c" <<'EOF'
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "sona.h"
#if __has_include("ring.h")
#include "ring.h"
#define HAVE_RING 1
#endif
int main(void) {
    const char *names[8];
    int n = sona_backends(names, 8);
    int fail = !(n == 1 && strcmp(names[0], "scalar") == 0);
    fail |= sona_set_backend("avx2") != -2;   /* known name, unsupported on this build */
    fail |= sona_set_backend("scalar") != 0;
    fail |= strcmp(sona_kernels()->name, "scalar") != 0;
    fail |= (sona_cpu_features() & SONA_CPU_AVX2) != 0;
#ifdef HAVE_RING
    fail |= sona_f16c_supported() != 0;
#endif
    float a[17], b[17];
    for (int i = 0; i < 17; ++i) { a[i] = (float)i; b[i] = 1.0f; }
    fail |= sona_dot_f32(a, b, 17) != 136.0f;
    fail |= sona_maxabs_f32(a, 17) != 16.0f;
    printf("aarch64: backends=%d first=%s dot=%g -> %s\n", n, names[0], sona_dot_f32(a, b, 17),
           fail ? "FAIL" : "ok");
    return fail;
}
EOF
"$CC" -std=c11 -O2 -static -Icsrc "$work/driver.c" "$work"/*.o -lm -o "$work/driver"
echo "cross_aarch64: compiled csrc/*.c for aarch64; no sona_*_avx2 kernel defined"
if command -v qemu-aarch64 >/dev/null; then
    qemu-aarch64 "$work/driver"
else
    echo "cross_aarch64: qemu-aarch64 not installed; driver linked but not run"
fi
