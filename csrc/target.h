/* target.h: compiler regions in which AVX2+FMA code may be generated.
 *
 * The package is built without -mavx2/-mfma so the scalar path and the Cython glue never emit AVX2
 * instructions; only code between SONA_AVX2_BEGIN and SONA_AVX2_END is compiled for AVX2+FMA.
 * The runtime dispatcher (dispatch.c) calls into those regions only after cpu.c has confirmed the CPU
 * and the OS (OSXSAVE + XCR0) support them. MSVC needs no pragma: it accepts intrinsics anywhere.
 */
#ifndef SONA_TARGET_H
#define SONA_TARGET_H

#if defined(__x86_64__) || defined(_M_X64)
#define SONA_X86_64 1
#else
#define SONA_X86_64 0
#endif

#if SONA_X86_64 && defined(__clang__)
#define SONA_AVX2_BEGIN \
    _Pragma("clang attribute push (__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define SONA_AVX2_END _Pragma("clang attribute pop")
#elif SONA_X86_64 && defined(__GNUC__)
#define SONA_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define SONA_AVX2_END _Pragma("GCC pop_options")
#else
#define SONA_AVX2_BEGIN
#define SONA_AVX2_END
#endif

#endif /* SONA_TARGET_H */
