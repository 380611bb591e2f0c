/* cpu.c: x86-64 feature detection, done once and cached.
 *
 * AVX2 is usable only when CPUID reports AVX, FMA, OSXSAVE and AVX2 AND the OS saves YMM state
 * (XCR0 bits 1 and 2, read with xgetbv). AVX-512F (XCR0 bits 5-7 too) is only reported, never used.
 * Other architectures report no features and run the scalar kernels.
 */
#include <stdatomic.h>

#include "sona.h"
#include "target.h"

#define NOT_YET 0x80000000u /* no feature uses the top bit */

#if SONA_X86_64 && defined(_MSC_VER)
#include <intrin.h>
static void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
    int out[4];
    __cpuidex(out, (int)leaf, (int)sub);
    for (int i = 0; i < 4; ++i) r[i] = (unsigned)out[i];
}
static unsigned long long xgetbv0(void) { return _xgetbv(0); }
#elif SONA_X86_64
#include <cpuid.h>
static void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

static unsigned detect(void) {
    unsigned features = 0;
#if SONA_X86_64
    unsigned r[4];
    cpuid(0, 0, r);
    unsigned max_leaf = r[0];
    if (max_leaf < 7) return 0;
    cpuid(1, 0, r);
    const unsigned ecx1 = r[2];
    const int fma = (ecx1 >> 12) & 1, osxsave = (ecx1 >> 27) & 1, avx = (ecx1 >> 28) & 1;
    if (!(fma && osxsave && avx)) return 0;
    const unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0; /* XMM and YMM state saved by the OS */
    cpuid(7, 0, r);
    const unsigned ebx7 = r[1];
    if ((ebx7 >> 5) & 1) features |= SONA_CPU_AVX2;
    if (((ebx7 >> 16) & 1) && (xcr0 & 0xe6) == 0xe6) features |= SONA_CPU_AVX512F;
#endif
    return features;
}

unsigned sona_cpu_features(void) {
    /* Threads racing the first call all compute the same value; the atomic makes the cache
     * itself race-free (a plain flag could be seen set before the value it guards). */
    static _Atomic unsigned cached = NOT_YET;
    unsigned f = atomic_load_explicit(&cached, memory_order_relaxed);
    if (f == NOT_YET) {
        f = detect();
        atomic_store_explicit(&cached, f, memory_order_relaxed);
    }
    return f;
}
