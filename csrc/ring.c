/* ring.c: lock-free bounded MPMC trajectory ring (Vyukov, C11 atomics) + per-process open store.
 *
 * ISA: plain C11 (the float16 conversions are branch-free so -O3 vectorises them on the baseline).
 * Ring protocol: slot i carries a 64-bit sequence number, initially 2i. A producer at position p may
 * write slot p mod cap when seq == 2p, claims it by CAS on enqueue_pos, writes, then publishes
 * seq = 2p + 1 (release). A consumer at p reads when seq == 2p + 1, claims by CAS on dequeue_pos (a
 * run of ready slots at once), reads, then frees the slot for the next lap with seq = 2(p + cap). A
 * producer that finds seq < 2p sees a full ring and drops the record (counted), so push never waits.
 * (Vyukov uses p, p + 1, p + cap; doubling keeps "published" and "free" apart when cap == 1.)
 * Positions are 64-bit and never wrap in practice (2^63 pushes), so there is no ABA.
 *
 * The open-trajectory store is deliberately per process, guarded by a tiny spinlock: see the
 * comment above struct sona_traj_store.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime, posix_memalign, sched_yield under -std=c11 */
#endif

#include "ring.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <sched.h>
#include <time.h>
#endif

/* Shared memory between processes needs address-free atomics: lock-free ones are. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 must be 8 bytes");
_Static_assert(sizeof(sona_traj_step) == 16, "step layout");
_Static_assert(sizeof(sona_traj_head) == 32, "record head layout");

#define LINE 64u
#define SEQ_BYTES 8u   /* the sequence number at the start of each slot */
#define POP_RUN 64u    /* slots claimed per CAS when draining */

/* ---- the header (first 640 bytes of the block) ---------------------------------------------- */

/* Counters that different parties write sit 128 bytes apart (adjacent-line prefetch pairs). */
struct sona_ring {
    _Atomic uint64_t magic; /* written last by init (release), read first by attach (acquire) */
    uint32_t version;
    uint32_t header_bytes;
    uint32_t dim;
    uint32_t max_steps;
    uint32_t dtype;
    uint32_t reserved;
    uint64_t capacity;
    uint64_t slot_size;
    uint64_t total_size;
    uint64_t slots_offset;
    unsigned char pad0[128 - 64];
    _Atomic uint64_t enqueue_pos; /* producers */
    unsigned char pad1[128 - 8];
    _Atomic uint64_t dequeue_pos; /* consumers */
    unsigned char pad2[128 - 8];
    _Atomic uint64_t dropped;
    _Atomic uint64_t skipped; /* stuck slots skipped or freed by sona_ring_skip */
    unsigned char pad3[128 - 16];
    _Atomic uint64_t next_id; /* trajectory ids, shared by every attached process */
    unsigned char pad4[128 - 8];
};

#define HEADER_BYTES 640u
_Static_assert(sizeof(struct sona_ring) == HEADER_BYTES, "header layout");
_Static_assert(offsetof(struct sona_ring, enqueue_pos) == 128, "header layout");
_Static_assert(offsetof(struct sona_ring, dequeue_pos) == 256, "header layout");
_Static_assert(offsetof(struct sona_ring, next_id) == 512, "header layout");

static inline size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static inline size_t elem_bytes(uint32_t dtype) { return dtype == SONA_RING_DTYPE_F16 ? 2 : 4; }

static size_t record_bytes(uint32_t dim, uint32_t max_steps, uint32_t dtype) {
    return sizeof(sona_traj_head) + (size_t)max_steps * sizeof(sona_traj_step) +
           (size_t)dim * elem_bytes(dtype);
}

size_t sona_ring_slot_bytes(uint32_t dim, uint32_t max_steps, uint32_t dtype) {
    if (dim == 0 || dim > SONA_RING_MAX_DIM || max_steps > SONA_RING_MAX_STEPS) return 0;
    if (dtype != SONA_RING_DTYPE_F32 && dtype != SONA_RING_DTYPE_F16) return 0;
    return round_up(SEQ_BYTES + record_bytes(dim, max_steps, dtype), LINE);
}

size_t sona_ring_bytes(uint32_t dim, uint32_t max_steps, uint32_t dtype, uint64_t capacity) {
    size_t slot = sona_ring_slot_bytes(dim, max_steps, dtype);
    if (slot == 0 || capacity == 0 || capacity > SONA_RING_MAX_CAPACITY) return 0;
    /* slot <= ~4.3 MB and capacity <= 2^32: the product fits in 64 bits */
    uint64_t total = (uint64_t)HEADER_BYTES + (uint64_t)slot * capacity;
    if (total > SONA_RING_MAX_BYTES || total > (uint64_t)SIZE_MAX) return 0;
    return (size_t)total;
}

static inline unsigned char *slot_at(const sona_ring *r, uint64_t i) {
    return (unsigned char *)r + r->slots_offset + i * r->slot_size;
}

static inline _Atomic uint64_t *slot_seq(unsigned char *slot) { return (_Atomic uint64_t *)slot; }

static inline uint64_t slot_index(const sona_ring *r, uint64_t pos) {
    uint64_t c = r->capacity;
    return (c & (c - 1)) == 0 ? (pos & (c - 1)) : (pos % c);
}

int sona_ring_init(void *mem, size_t size, uint32_t dim, uint32_t max_steps, uint32_t dtype,
                   uint64_t capacity) {
    size_t total = sona_ring_bytes(dim, max_steps, dtype, capacity);
    if (mem == NULL || total == 0 || ((uintptr_t)mem % LINE) != 0) return SONA_RING_EINVAL;
    if (size < total) return SONA_RING_EGEOMETRY;
    sona_ring *r = (sona_ring *)mem;
    atomic_store_explicit(&r->magic, 0, memory_order_relaxed);
    memset((unsigned char *)mem + sizeof(r->magic), 0, total - sizeof(r->magic));
    r->version = SONA_RING_VERSION;
    r->header_bytes = HEADER_BYTES;
    r->dim = dim;
    r->max_steps = max_steps;
    r->dtype = dtype;
    r->capacity = capacity;
    r->slot_size = sona_ring_slot_bytes(dim, max_steps, dtype);
    r->total_size = total;
    r->slots_offset = HEADER_BYTES;
    atomic_init(&r->enqueue_pos, 0);
    atomic_init(&r->dequeue_pos, 0);
    atomic_init(&r->dropped, 0);
    atomic_init(&r->next_id, 0);
    for (uint64_t i = 0; i < capacity; ++i)
        atomic_store_explicit(slot_seq(slot_at(r, i)), 2 * i, memory_order_relaxed);
    atomic_store_explicit(&r->magic, SONA_RING_MAGIC, memory_order_release);
    return SONA_RING_OK;
}

int sona_ring_validate(const sona_ring *r, size_t size) {
    if (size < HEADER_BYTES) return SONA_RING_EGEOMETRY;
    if (atomic_load_explicit(&((sona_ring *)r)->magic, memory_order_acquire) != SONA_RING_MAGIC)
        return SONA_RING_EMAGIC;
    if (r->version != SONA_RING_VERSION) return SONA_RING_EVERSION;
    size_t total = sona_ring_bytes(r->dim, r->max_steps, r->dtype, r->capacity);
    if (total == 0 || r->header_bytes != HEADER_BYTES || r->slots_offset != HEADER_BYTES ||
        r->slot_size != sona_ring_slot_bytes(r->dim, r->max_steps, r->dtype) ||
        r->total_size != total || size < total)
        return SONA_RING_EGEOMETRY;
    return SONA_RING_OK;
}

int sona_ring_attach(void *mem, size_t size, sona_ring **out) {
    if (mem == NULL || out == NULL || ((uintptr_t)mem % LINE) != 0) return SONA_RING_EINVAL;
    int rc = sona_ring_validate((const sona_ring *)mem, size);
    if (rc != SONA_RING_OK) return rc;
    *out = (sona_ring *)mem;
    return SONA_RING_OK;
}

int sona_ring_create(uint32_t dim, uint32_t max_steps, uint32_t dtype, uint64_t capacity,
                     sona_ring **out) {
    size_t total = sona_ring_bytes(dim, max_steps, dtype, capacity);
    if (total == 0 || out == NULL) return SONA_RING_EINVAL;
    void *mem = NULL;
#ifdef _WIN32
    mem = _aligned_malloc(total, LINE);
#else
    if (posix_memalign(&mem, LINE, total) != 0) mem = NULL;
#endif
    if (mem == NULL) return SONA_RING_ENOMEM;
    sona_ring_init(mem, total, dim, max_steps, dtype, capacity);
    *out = (sona_ring *)mem;
    return SONA_RING_OK;
}

void sona_ring_free(sona_ring *r) {
#ifdef _WIN32
    _aligned_free(r);
#else
    free(r);
#endif
}

uint32_t sona_ring_dim(const sona_ring *r) { return r->dim; }
uint32_t sona_ring_max_steps(const sona_ring *r) { return r->max_steps; }
uint32_t sona_ring_dtype(const sona_ring *r) { return r->dtype; }
uint64_t sona_ring_capacity(const sona_ring *r) { return r->capacity; }
size_t sona_ring_slot_size(const sona_ring *r) { return (size_t)r->slot_size; }
size_t sona_ring_total_size(const sona_ring *r) { return (size_t)r->total_size; }
size_t sona_ring_record_bytes(const sona_ring *r) {
    return record_bytes(r->dim, r->max_steps, r->dtype);
}

uint64_t sona_ring_len(const sona_ring *r) {
    /* read the consumer side first: it only grows, so head - tail cannot go negative spuriously */
    uint64_t tail = atomic_load_explicit(&((sona_ring *)r)->dequeue_pos, memory_order_acquire);
    uint64_t head = atomic_load_explicit(&((sona_ring *)r)->enqueue_pos, memory_order_acquire);
    uint64_t n = head > tail ? head - tail : 0;
    return n > r->capacity ? r->capacity : n;
}

uint64_t sona_ring_dropped(const sona_ring *r) {
    return atomic_load_explicit(&((sona_ring *)r)->dropped, memory_order_relaxed);
}
uint64_t sona_ring_pushed(const sona_ring *r) {
    return atomic_load_explicit(&((sona_ring *)r)->enqueue_pos, memory_order_relaxed);
}
uint64_t sona_ring_popped(const sona_ring *r) {
    return atomic_load_explicit(&((sona_ring *)r)->dequeue_pos, memory_order_relaxed);
}
uint64_t sona_ring_skipped(const sona_ring *r) {
    return atomic_load_explicit(&((sona_ring *)r)->skipped, memory_order_relaxed);
}
uint64_t sona_ring_next_id(sona_ring *r) {
    return atomic_fetch_add_explicit(&r->next_id, 1, memory_order_relaxed) + 1;
}

/* ---- float16 ----------------------------------------------------------------------------------
 * After F. Giesen's float_to_half_fast3_rtne / half_to_float_fast3, rewritten with selects instead
 * of branches (mask selects). Rounding of the subnormal path relies on the default FP rounding mode (nearest). */

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* all ones when c holds: selects by masks keep the loops free of control flow (vectorisable) */
static inline uint32_t mask_if(int c) { return 0u - (uint32_t)c; }

static inline uint16_t f32_to_f16_one(float f) {
    uint32_t x = f2u(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    /* normal half: rebias the exponent, add 0xfff + lsb (ties to even), keep the top 10 bits; a
     * carry out of the mantissa correctly bumps the exponent (up to inf) */
    uint32_t normal = (a + ((uint32_t)(15 - 127) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
    /* subnormal half (|f| < 2^-14): adding 0.5 aligns the 10 result bits at the bottom of the
     * mantissa, and the FPU rounds them to nearest even */
    uint32_t sub = f2u(u2f(a) + 0.5f) - 0x3f000000u;
    /* inf stays inf, NaN becomes a quiet NaN keeping the top payload bits */
    uint32_t infnan = 0x7c00u | (mask_if(a > 0x7f800000u) & (0x200u | ((a >> 13) & 0x3ffu)));
    uint32_t big = mask_if(a >= (143u << 23)), tiny = mask_if(a < (113u << 23));
    uint32_t h = (big & infnan) | (~big & ((tiny & sub) | (~tiny & normal)));
    return (uint16_t)(h | sign);
}

static inline float f16_to_f32_one(uint16_t h) {
    uint32_t o = ((uint32_t)h & 0x7fffu) << 13; /* exponent and mantissa in place */
    uint32_t e = o & (0x7c00u << 13);
    o += (uint32_t)(127 - 15) << 23;
    uint32_t infnan = o + ((uint32_t)(128 - 16) << 23);
    /* subnormal half: make it a normal float with a bias of one too many, then subtract that one */
    uint32_t sub = f2u(u2f(o + (1u << 23)) - u2f(113u << 23));
    uint32_t special = mask_if(e == (0x7c00u << 13)), zero = mask_if(e == 0);
    uint32_t r = (special & infnan) | (~special & ((zero & sub) | (~zero & o)));
    return u2f(r | (((uint32_t)h & 0x8000u) << 16));
}

void sona_f32_to_f16_scalar(const float *x, uint16_t *y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] = f32_to_f16_one(x[i]);
}

void sona_f16_to_f32_scalar(const uint16_t *x, float *y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] = f16_to_f32_one(x[i]);
}

/* SONA_HALF_AUTO until first use, then SONA_HALF_SCALAR or SONA_HALF_F16C (cached: the portable
 * loop costs ~3 ns per element on SSE2, F16C ~0.1 ns). Both give the same bits. */
static _Atomic int half_impl = SONA_HALF_AUTO;

static inline int half_active(void) {
    int m = atomic_load_explicit(&half_impl, memory_order_relaxed);
    if (m == SONA_HALF_AUTO) {
        m = sona_f16c_supported() ? SONA_HALF_F16C : SONA_HALF_SCALAR;
        atomic_store_explicit(&half_impl, m, memory_order_relaxed);
    }
    return m;
}

int sona_half_select(int mode) {
    if (mode == SONA_HALF_F16C && !sona_f16c_supported()) mode = SONA_HALF_SCALAR;
    /* any other value (e.g. -1) only reports the active implementation */
    if (mode == SONA_HALF_AUTO || mode == SONA_HALF_SCALAR || mode == SONA_HALF_F16C)
        atomic_store_explicit(&half_impl, mode, memory_order_relaxed);
    return half_active();
}

void sona_f32_to_f16(const float *x, uint16_t *y, size_t n) {
    if (half_active() == SONA_HALF_F16C)
        sona_f32_to_f16_f16c(x, y, n);
    else
        sona_f32_to_f16_scalar(x, y, n);
}

void sona_f16_to_f32(const uint16_t *x, float *y, size_t n) {
    if (half_active() == SONA_HALF_F16C)
        sona_f16_to_f32_f16c(x, y, n);
    else
        sona_f16_to_f32_scalar(x, y, n);
}

/* ---- push / pop ------------------------------------------------------------------------------ */

/* Claims the slot for the next position, or returns NULL (counted) when the ring is full. */
static unsigned char *claim_push(sona_ring *r, uint64_t *pos_out) {
    uint64_t pos = atomic_load_explicit(&r->enqueue_pos, memory_order_relaxed);
    for (;;) {
        unsigned char *slot = slot_at(r, slot_index(r, pos));
        uint64_t seq = atomic_load_explicit(slot_seq(slot), memory_order_acquire);
        int64_t dif = (int64_t)(seq - 2 * pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->enqueue_pos, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                *pos_out = pos;
                return slot;
            }
            /* lost the race: pos now holds the current enqueue_pos */
        } else if (dif < 0) {
            /* the slot still holds the record from one lap ago: full */
            atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
            return NULL;
        } else {
            /* a producer that published this slot advanced enqueue_pos first: when it has not
             * moved, the sequence number is garbage (scribbled shared memory). Drop instead of
             * spinning forever; sona_ring_skip repairs the slot. */
            uint64_t now = atomic_load_explicit(&r->enqueue_pos, memory_order_relaxed);
            if (now == pos) {
                atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
                return NULL;
            }
            pos = now;
        }
    }
}

static inline void publish(unsigned char *slot, uint64_t pos) {
    atomic_store_explicit(slot_seq(slot), 2 * pos + 1, memory_order_release);
}

int sona_ring_push(sona_ring *r, uint64_t id, const float *embedding, const sona_traj_step *steps,
                   uint32_t n_steps, float quality, uint64_t t_start_ns, uint64_t t_end_ns) {
    uint32_t max_steps = r->max_steps;
    if (n_steps > max_steps) return SONA_RING_EINVAL;
    uint64_t pos;
    unsigned char *slot = claim_push(r, &pos);
    if (slot == NULL) return 0;
    unsigned char *rec = slot + SEQ_BYTES;
    sona_traj_head head = {id, t_start_ns, t_end_ns, quality, n_steps};
    memcpy(rec, &head, sizeof head);
    if (n_steps) memcpy(rec + sizeof head, steps, (size_t)n_steps * sizeof(sona_traj_step));
    unsigned char *emb = rec + sizeof head + (size_t)max_steps * sizeof(sona_traj_step);
    if (r->dtype == SONA_RING_DTYPE_F16)
        sona_f32_to_f16(embedding, (uint16_t *)emb, r->dim);
    else
        memcpy(emb, embedding, (size_t)r->dim * 4);
    publish(slot, pos);
    return 1;
}

int sona_ring_push_raw(sona_ring *r, const void *record) {
    uint64_t pos;
    unsigned char *slot = claim_push(r, &pos);
    if (slot == NULL) return 0;
    memcpy(slot + SEQ_BYTES, record, sona_ring_record_bytes(r));
    publish(slot, pos);
    return 1;
}

static void copy_out(const sona_ring *r, const unsigned char *rec, size_t j,
                     const sona_traj_batch *out) {
    uint32_t dim = r->dim, max_steps = r->max_steps;
    sona_traj_head head;
    memcpy(&head, rec, sizeof head);
    /* another process could have scribbled on shared memory: never trust n_steps for indexing */
    uint32_t ns = head.n_steps <= max_steps ? head.n_steps : max_steps;
    if (out->ids) out->ids[j] = head.id;
    if (out->n_steps) out->n_steps[j] = ns;
    if (out->qualities) out->qualities[j] = head.quality;
    if (out->t_start_ns) out->t_start_ns[j] = head.t_start_ns;
    if (out->t_end_ns) out->t_end_ns[j] = head.t_end_ns;
    const unsigned char *st = rec + sizeof head;
    size_t base = j * (size_t)max_steps;
    for (uint32_t k = 0; k < max_steps; ++k) {
        sona_traj_step s = {0, 0.0f, 0.0f, 0.0f};
        if (k < ns) memcpy(&s, st + (size_t)k * sizeof s, sizeof s);
        if (out->nodes) out->nodes[base + k] = s.node;
        if (out->scores) out->scores[base + k] = s.score;
        if (out->latencies_us) out->latencies_us[base + k] = s.latency_us;
        if (out->rewards) out->rewards[base + k] = s.reward;
    }
    const unsigned char *emb = st + (size_t)max_steps * sizeof(sona_traj_step);
    float *dst = out->embeddings + j * (size_t)dim;
    if (r->dtype == SONA_RING_DTYPE_F16) {
        uint16_t tmp[256];
        for (size_t i = 0; i < dim; i += 256) { /* bounce: emb is only 2-byte aligned */
            size_t m = dim - i < 256 ? dim - i : 256;
            memcpy(tmp, emb + 2 * i, 2 * m);
            sona_f16_to_f32(tmp, dst + i, m);
        }
    } else {
        memcpy(dst, emb, (size_t)dim * 4);
    }
}

size_t sona_ring_pop_batch(sona_ring *r, size_t max, const sona_traj_batch *out) {
    size_t done = 0;
    uint64_t cap = r->capacity;
    while (done < max) {
        size_t want = max - done < POP_RUN ? max - done : POP_RUN;
        uint64_t pos = atomic_load_explicit(&r->dequeue_pos, memory_order_relaxed);
        size_t k;
        for (;;) {
            int64_t dif = 0;
            for (k = 0; k < want; ++k) {
                unsigned char *slot = slot_at(r, slot_index(r, pos + k));
                uint64_t seq = atomic_load_explicit(slot_seq(slot), memory_order_acquire);
                dif = (int64_t)(seq - (2 * (pos + k) + 1));
                if (dif != 0) break;
            }
            if (k == 0) {
                if (dif < 0) return done; /* empty, or the next producer has not published yet */
                /* stale pos, unless dequeue_pos has not moved: then the sequence number is
                 * garbage (consumers advance dequeue_pos before they free a slot) */
                uint64_t now = atomic_load_explicit(&r->dequeue_pos, memory_order_relaxed);
                if (now == pos) return done;
                pos = now;
                continue;
            }
            if (atomic_compare_exchange_weak_explicit(&r->dequeue_pos, &pos, pos + k,
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
        }
        for (size_t j = 0; j < k; ++j) {
            unsigned char *slot = slot_at(r, slot_index(r, pos + j));
            copy_out(r, slot + SEQ_BYTES, done + j, out);
            atomic_store_explicit(slot_seq(slot), 2 * (pos + j + cap), memory_order_release);
        }
        done += k;
    }
    return done;
}

/* ---- stuck slots -------------------------------------------------------------------------------
 * A process killed between claiming and publishing a slot (producer) or between claiming and
 * freeing it (consumer), or a scribbled sequence number, leaves a slot whose sequence number never
 * reaches what the other side waits for. sona_ring_stuck reports the slot each side waits on when it
 * looks like that now; the caller decides from how long the same slot has looked stuck (a live
 * process finishes in microseconds) and calls sona_ring_skip, which repairs it with CAS so that a
 * late finisher cannot be confused with a second repair. */

int sona_ring_stuck(const sona_ring *r, uint64_t *pos_out) {
    sona_ring *m = (sona_ring *)r;
    uint64_t cap = r->capacity;
    uint64_t head = atomic_load_explicit(&m->dequeue_pos, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&m->enqueue_pos, memory_order_acquire);
    if (tail > head) { /* a record was claimed at head: consumers wait for it to be published */
        uint64_t seq = atomic_load_explicit(slot_seq(slot_at(r, slot_index(r, head))),
                                            memory_order_acquire);
        if (seq != 2 * head + 1) {
            *pos_out = head;
            return SONA_RING_STUCK_CONSUMER;
        }
    }
    if (tail >= cap && head > tail - cap) { /* last lap's record at tail was taken: free soon */
        uint64_t seq = atomic_load_explicit(slot_seq(slot_at(r, slot_index(r, tail))),
                                            memory_order_acquire);
        if (seq != 2 * tail) {
            *pos_out = tail;
            return SONA_RING_STUCK_PRODUCER;
        }
    }
    return 0;
}

int sona_ring_skip(sona_ring *r, int side, uint64_t pos) {
    uint64_t cap = r->capacity;
    _Atomic uint64_t *seq = slot_seq(slot_at(r, slot_index(r, pos)));
    uint64_t cur = atomic_load_explicit(seq, memory_order_acquire);
    if (side == SONA_RING_STUCK_CONSUMER) {
        uint64_t want = pos;
        if (cur == 2 * pos + 1 || atomic_load_explicit(&r->dequeue_pos, memory_order_acquire) != pos)
            return 0; /* published meanwhile, or another consumer moved on */
        /* free the slot for the next lap, then step over it */
        if (!atomic_compare_exchange_strong_explicit(seq, &cur, 2 * (pos + cap), memory_order_acq_rel,
                                                     memory_order_relaxed))
            return 0;
        if (!atomic_compare_exchange_strong_explicit(&r->dequeue_pos, &want, pos + 1,
                                                     memory_order_acq_rel, memory_order_relaxed))
            return 0;
    } else if (side == SONA_RING_STUCK_PRODUCER) {
        if (cur == 2 * pos || atomic_load_explicit(&r->enqueue_pos, memory_order_acquire) != pos)
            return 0;
        if (!atomic_compare_exchange_strong_explicit(seq, &cur, 2 * pos, memory_order_acq_rel,
                                                     memory_order_relaxed))
            return 0;
    } else {
        return SONA_RING_EINVAL;
    }
    atomic_fetch_add_explicit(&r->skipped, 1, memory_order_relaxed);
    return 1;
}

/* ---- clock, lock ------------------------------------------------------------------------------- */

uint64_t sona_now_ns(void) {
#ifdef _WIN32
    static LARGE_INTEGER freq; /* benign race: every thread writes the same value */
    LARGE_INTEGER t;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&t);
    return (uint64_t)((double)t.QuadPart * (1e9 / (double)freq.QuadPart));
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
#endif
}

/* The timeout check of record_step only needs millisecond precision (timeouts are seconds), so it
 * reads the kernel's coarse clock where there is one (a few ns instead of ~20); it can lag the
 * precise clock by one tick, which only makes the check later by that much. */
static uint64_t now_coarse_ns(void) {
#if defined(CLOCK_MONOTONIC_COARSE) && !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
#else
    return sona_now_ns();
#endif
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void thread_yield(void) {
#ifdef _WIN32
    SwitchToThread();
#else
    sched_yield();
#endif
}

/* ---- the store of open trajectories ------------------------------------------------------------
 * Per process, not in shared memory, because:
 *  - a trajectory is started and ended by the same request handler, so only finished records need
 *    to cross processes (through the ring), and ids are still unique across processes because they
 *    come from the ring's shared counter;
 *  - a shared table would need a cross-process lock or a lock-free hash map with reclamation, and a
 *    worker that dies mid-update would leave it locked or leaking; per-process state dies with it.
 * Thread safety: one test-and-test-and-set spinlock around every operation. Critical sections are
 * tens of nanoseconds (a hash probe, a 16-byte step, a record copy) and never call back into
 * Python, so a thread holding the GIL can spin on a nogil holder without deadlock. Under the GIL the
 * lock is never contended (one uncontended atomic exchange, ~5-10 ns); it keeps the C API safe for
 * nogil callers and free-threaded Python.
 *
 * Layout: a table of max_open records (in the ring's slot layout so end() is one memcpy into the
 * ring), a free stack, a doubly linked list in start order (head = oldest: overflow and timeout
 * evict from there, O(1)), and an open-addressing hash id -> index (linear probing, backward-shift
 * deletion, so no tombstones and no growth). All allocated once: memory is bounded by max_open. */

#define NIL UINT32_MAX

struct sona_traj_store {
    _Atomic int lock;
    sona_ring *ring;
    uint32_t max_open, dim, max_steps, dtype;
    uint64_t timeout_ns;
    size_t rec_bytes, stride;
    unsigned char *recs;
    uint32_t *prev, *next, *free_stack;
    uint32_t head, tail, n_free;
    uint64_t *hkeys; /* 0 = empty (ids start at 1) */
    uint32_t *hvals;
    uint64_t hmask;
    unsigned hshift;
    sona_store_stats st;
};

static inline void store_lock(sona_traj_store *s) {
    for (;;) {
        if (!atomic_exchange_explicit(&s->lock, 1, memory_order_acquire)) return;
        unsigned spins = 0;
        while (atomic_load_explicit(&s->lock, memory_order_relaxed)) {
            cpu_relax();
            if (++spins == 256) {
                thread_yield();
                spins = 0;
            }
        }
    }
}

static inline void store_unlock(sona_traj_store *s) {
    atomic_store_explicit(&s->lock, 0, memory_order_release);
}

static inline unsigned char *rec_at(const sona_traj_store *s, uint32_t idx) {
    return s->recs + (size_t)idx * s->stride;
}

static inline sona_traj_head *head_at(const sona_traj_store *s, uint32_t idx) {
    return (sona_traj_head *)rec_at(s, idx);
}

static inline uint64_t hash_home(const sona_traj_store *s, uint64_t id) {
    return (id * 0x9e3779b97f4a7c15ull) >> s->hshift;
}

static uint32_t hash_find(const sona_traj_store *s, uint64_t id, uint64_t *pos_out) {
    uint64_t p = hash_home(s, id);
    for (;;) {
        uint64_t k = s->hkeys[p];
        if (k == id) {
            if (pos_out) *pos_out = p;
            return s->hvals[p];
        }
        if (k == 0) return NIL;
        p = (p + 1) & s->hmask;
    }
}

static void hash_insert(sona_traj_store *s, uint64_t id, uint32_t idx) {
    uint64_t p = hash_home(s, id);
    while (s->hkeys[p] != 0) p = (p + 1) & s->hmask;
    s->hkeys[p] = id;
    s->hvals[p] = idx;
}

static void hash_erase_at(sona_traj_store *s, uint64_t p) {
    s->hkeys[p] = 0;
    uint64_t q = p;
    for (;;) {
        q = (q + 1) & s->hmask;
        uint64_t k = s->hkeys[q];
        if (k == 0) return;
        uint64_t h = hash_home(s, k);
        /* move k into the hole unless its home lies cyclically in (p, q] */
        if (((q - h) & s->hmask) >= ((q - p) & s->hmask)) {
            s->hkeys[p] = k;
            s->hvals[p] = s->hvals[q];
            s->hkeys[q] = 0;
            p = q;
        }
    }
}

static void list_unlink(sona_traj_store *s, uint32_t i) {
    uint32_t a = s->prev[i], b = s->next[i];
    if (a != NIL) s->next[a] = b; else s->head = b;
    if (b != NIL) s->prev[b] = a; else s->tail = a;
}

static void list_append(sona_traj_store *s, uint32_t i) {
    s->prev[i] = s->tail;
    s->next[i] = NIL;
    if (s->tail != NIL) s->next[s->tail] = i; else s->head = i;
    s->tail = i;
}

/* Removes open entry idx (hash position hp, or UINT64_MAX to look it up) and frees its slot. */
static void remove_entry(sona_traj_store *s, uint32_t idx, uint64_t hp) {
    if (hp == UINT64_MAX) hash_find(s, head_at(s, idx)->id, &hp);
    hash_erase_at(s, hp);
    list_unlink(s, idx);
    head_at(s, idx)->id = 0;
    s->free_stack[s->n_free++] = idx;
    s->st.open--;
}

static inline int expired(const sona_traj_store *s, uint32_t idx, uint64_t now) {
    uint64_t t0 = head_at(s, idx)->t_start_ns;
    return s->timeout_ns != 0 && now > t0 && now - t0 > s->timeout_ns;
}

static size_t evict_expired_locked(sona_traj_store *s, uint64_t now) {
    size_t n = 0;
    while (s->head != NIL && expired(s, s->head, now)) {
        remove_entry(s, s->head, UINT64_MAX);
        s->st.evicted_timeout++;
        ++n;
    }
    return n;
}

static void *zalloc(size_t n) {
    void *p = NULL;
#ifdef _WIN32
    p = _aligned_malloc(n ? n : 1, LINE);
#else
    if (posix_memalign(&p, LINE, n ? n : 1) != 0) p = NULL;
#endif
    if (p) memset(p, 0, n);
    return p;
}

static void zfree(void *p) {
#ifdef _WIN32
    _aligned_free(p);
#else
    free(p);
#endif
}

sona_traj_store *sona_store_new(sona_ring *ring, uint32_t max_open, uint64_t timeout_ns) {
    if (ring == NULL || max_open == 0 || max_open > SONA_STORE_MAX_OPEN) return NULL;
    sona_traj_store *s = (sona_traj_store *)zalloc(sizeof *s);
    if (s == NULL) return NULL;
    atomic_init(&s->lock, 0);
    s->ring = ring;
    s->max_open = max_open;
    s->dim = ring->dim;
    s->max_steps = ring->max_steps;
    s->dtype = ring->dtype;
    s->timeout_ns = timeout_ns;
    s->rec_bytes = sona_ring_record_bytes(ring);
    s->stride = round_up(s->rec_bytes, LINE);
    uint64_t hcap = 16;
    unsigned bits = 4;
    while (hcap < 2ull * max_open) {
        hcap <<= 1;
        ++bits;
    }
    s->hmask = hcap - 1;
    s->hshift = 64 - bits;
    s->recs = (unsigned char *)zalloc((size_t)max_open * s->stride);
    s->prev = (uint32_t *)zalloc((size_t)max_open * 4);
    s->next = (uint32_t *)zalloc((size_t)max_open * 4);
    s->free_stack = (uint32_t *)zalloc((size_t)max_open * 4);
    s->hkeys = (uint64_t *)zalloc((size_t)hcap * 8);
    s->hvals = (uint32_t *)zalloc((size_t)hcap * 4);
    if (!s->recs || !s->prev || !s->next || !s->free_stack || !s->hkeys || !s->hvals) {
        sona_store_free(s);
        return NULL;
    }
    s->head = s->tail = NIL;
    /* pop order 0, 1, 2, ... so a fresh store touches its table front to back */
    for (uint32_t i = 0; i < max_open; ++i) s->free_stack[i] = max_open - 1 - i;
    s->n_free = max_open;
    return s;
}

void sona_store_free(sona_traj_store *s) {
    if (s == NULL) return;
    zfree(s->recs);
    zfree(s->prev);
    zfree(s->next);
    zfree(s->free_stack);
    zfree(s->hkeys);
    zfree(s->hvals);
    zfree(s);
}

int sona_store_start(sona_traj_store *s, const float *embedding, uint64_t *id_out) {
    store_lock(s);
    uint64_t now = sona_now_ns();
    if (s->timeout_ns) evict_expired_locked(s, now);
    if (s->n_free == 0) {
        remove_entry(s, s->head, UINT64_MAX);
        s->st.evicted_overflow++;
    }
    uint32_t idx = s->free_stack[--s->n_free];
    uint64_t id = sona_ring_next_id(s->ring);
    unsigned char *rec = rec_at(s, idx);
    sona_traj_head head = {id, now, 0, 0.0f, 0};
    memcpy(rec, &head, sizeof head);
    unsigned char *emb = rec + sizeof head + (size_t)s->max_steps * sizeof(sona_traj_step);
    if (s->dtype == SONA_RING_DTYPE_F16)
        sona_f32_to_f16(embedding, (uint16_t *)emb, s->dim);
    else
        memcpy(emb, embedding, (size_t)s->dim * 4);
    hash_insert(s, id, idx);
    list_append(s, idx);
    s->st.open++;
    s->st.started++;
    store_unlock(s);
    *id_out = id;
    return SONA_RING_OK;
}

/* Finds an open id; evicts it (and reports ETIMEDOUT) if it outlived the timeout. Lock held. */
static int lookup_locked(sona_traj_store *s, uint64_t id, uint64_t now, uint32_t *idx_out,
                         uint64_t *hp_out) {
    if (id == 0) return SONA_TRAJ_ENOTFOUND;
    uint32_t idx = hash_find(s, id, hp_out);
    if (idx == NIL) return SONA_TRAJ_ENOTFOUND;
    if (expired(s, idx, now)) {
        remove_entry(s, idx, *hp_out);
        s->st.evicted_timeout++;
        return SONA_TRAJ_ETIMEDOUT;
    }
    *idx_out = idx;
    return SONA_RING_OK;
}

int sona_store_step(sona_traj_store *s, uint64_t id, uint32_t node, float score, float latency_us,
                    float reward) {
    uint64_t now = s->timeout_ns ? now_coarse_ns() : 0;
    uint32_t idx;
    uint64_t hp;
    store_lock(s);
    int rc = lookup_locked(s, id, now, &idx, &hp);
    if (rc == SONA_RING_OK) {
        sona_traj_head *h = head_at(s, idx);
        if (h->n_steps >= s->max_steps) {
            rc = SONA_TRAJ_EFULL;
        } else {
            sona_traj_step st = {node, score, latency_us, reward};
            memcpy(rec_at(s, idx) + sizeof *h + (size_t)h->n_steps * sizeof st, &st, sizeof st);
            h->n_steps++;
        }
    }
    store_unlock(s);
    return rc;
}

int sona_store_end(sona_traj_store *s, uint64_t id, float quality) {
    return sona_store_end_ex(s, id, quality, NULL, NULL);
}

int sona_store_end_ex(sona_traj_store *s, uint64_t id, float quality, float *embedding_out,
                      uint32_t *last_node_out) {
    uint64_t now = sona_now_ns();
    uint32_t idx;
    uint64_t hp;
    store_lock(s);
    int rc = lookup_locked(s, id, now, &idx, &hp);
    if (rc == SONA_RING_OK) {
        sona_traj_head *h = head_at(s, idx);
        h->t_end_ns = now > h->t_start_ns ? now : h->t_start_ns;
        h->quality = quality;
        const unsigned char *steps = rec_at(s, idx) + sizeof *h;
        if (embedding_out) {
            const unsigned char *emb = steps + (size_t)s->max_steps * sizeof(sona_traj_step);
            if (s->dtype == SONA_RING_DTYPE_F16)
                sona_f16_to_f32((const uint16_t *)emb, embedding_out, s->dim);
            else
                memcpy(embedding_out, emb, (size_t)s->dim * 4);
        }
        if (last_node_out) {
            sona_traj_step last = {UINT32_MAX, 0.0f, 0.0f, 0.0f};
            if (h->n_steps) memcpy(&last, steps + (size_t)(h->n_steps - 1) * sizeof last, sizeof last);
            *last_node_out = last.node;
        }
        rc = sona_ring_push_raw(s->ring, rec_at(s, idx));
        remove_entry(s, idx, hp);
        s->st.ended++;
    }
    store_unlock(s);
    return rc;
}

int sona_store_cancel(sona_traj_store *s, uint64_t id) {
    uint64_t hp;
    store_lock(s);
    uint32_t idx = id ? hash_find(s, id, &hp) : NIL;
    int rc = SONA_TRAJ_ENOTFOUND;
    if (idx != NIL) {
        remove_entry(s, idx, hp);
        s->st.cancelled++;
        rc = SONA_RING_OK;
    }
    store_unlock(s);
    return rc;
}

size_t sona_store_evict_expired(sona_traj_store *s) {
    uint64_t now = sona_now_ns();
    store_lock(s);
    size_t n = s->timeout_ns ? evict_expired_locked(s, now) : 0;
    store_unlock(s);
    return n;
}

void sona_store_get_stats(sona_traj_store *s, sona_store_stats *out) {
    store_lock(s);
    *out = s->st;
    store_unlock(s);
}

uint32_t sona_store_max_open(const sona_traj_store *s) { return s->max_open; }
uint64_t sona_store_timeout_ns(const sona_traj_store *s) { return s->timeout_ns; }

size_t sona_store_bytes(const sona_traj_store *s) {
    size_t hcap = (size_t)s->hmask + 1;
    return sizeof *s + (size_t)s->max_open * (s->stride + 12) + hcap * 12;
}
