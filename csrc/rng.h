/* rng.h: PCG32 (XSH-RR, 64-bit state, 32-bit output; O'Neill 2014), the one RNG of sona's policies.
 *
 * Seeding and the float mapping are fixed so that the C code and the numpy reference in
 * tests/policy_reference.py draw identical numbers: uniform() = (next >> 8) * 2^-24 is exact in
 * float32. Irwin-Hall(4), rescaled to unit variance, stands in for a normal draw: no transcendental
 * function, so every platform agrees bit for bit.
 */
#ifndef SONA_RNG_H
#define SONA_RNG_H

#include <stdint.h>

typedef struct sona_pcg32 {
    uint64_t state, inc;
} sona_pcg32;

static inline uint32_t sona_pcg32_next(sona_pcg32 *g) {
    uint64_t old = g->state;
    g->state = old * 6364136223846793005ull + g->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

static inline void sona_pcg32_seed(sona_pcg32 *g, uint64_t seed, uint64_t stream) {
    g->inc = (stream << 1u) | 1u;
    g->state = 0;
    sona_pcg32_next(g);
    g->state += seed;
    sona_pcg32_next(g);
}

static inline double sona_pcg32_uniform(sona_pcg32 *g) {
    return (double)(sona_pcg32_next(g) >> 8) * (1.0 / 16777216.0);
}

static inline double sona_pcg32_irwin_hall(sona_pcg32 *g) {
    double s = sona_pcg32_uniform(g) + sona_pcg32_uniform(g);
    s += sona_pcg32_uniform(g);
    s += sona_pcg32_uniform(g);
    return (s - 2.0) * 1.7320508075688772;
}

#endif /* SONA_RNG_H */
