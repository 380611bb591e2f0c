/* half_avx2.c: float32 <-> float16 bulk conversion with F16C (vcvtps2ph / vcvtph2ps).
 *
 * ISA: AVX + F16C, compiled only inside the target region below and used by ring.c only after
 * sona_f16c_supported() confirmed CPUID (AVX, F16C, OSXSAVE) and OS support for YMM state (XCR0).
 * Results are bit-identical to the portable conversions in ring.c: round to nearest even,
 * overflow to inf, subnormals exact, NaN stays a quiet NaN with the top payload bits. Tails
 * (n mod 8) go through the portable code.
 */
#include "ring.h"
#include "target.h"

#if SONA_X86_64
#include <immintrin.h>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static void cpuid1(unsigned r[4]) {
    int out[4];
    __cpuidex(out, 1, 0);
    for (int i = 0; i < 4; ++i) r[i] = (unsigned)out[i];
}
static unsigned long long xgetbv0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void cpuid1(unsigned r[4]) { __cpuid_count(1, 0, r[0], r[1], r[2], r[3]); }
static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

int sona_f16c_supported(void) {
    unsigned r[4];
    cpuid1(r);
    const unsigned ecx = r[2];
    if (!(((ecx >> 27) & 1) && ((ecx >> 28) & 1) && ((ecx >> 29) & 1))) return 0;
    return (xgetbv0() & 0x6) == 0x6; /* XMM and YMM state saved by the OS */
}

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx,f16c")
#endif

void sona_f32_to_f16_f16c(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h_f16x8 = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(y + i), h_f16x8);
    }
    sona_f32_to_f16_scalar(x + i, y + i, n - i);
}

void sona_f16_to_f32_f16c(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    sona_f16_to_f32_scalar(x + i, y + i, n - i);
}

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#else /* not x86-64: never selected */

int sona_f16c_supported(void) { return 0; }
void sona_f32_to_f16_f16c(const float *x, uint16_t *y, size_t n) {
    sona_f32_to_f16_scalar(x, y, n);
}
void sona_f16_to_f32_f16c(const uint16_t *x, float *y, size_t n) {
    sona_f16_to_f32_scalar(x, y, n);
}

#endif
