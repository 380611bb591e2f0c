/* ring.h: the trajectory ring (lock-free, bounded, shareable between processes) and the store of
 * open trajectories that feeds it.
 *
 * The ring is one block of memory: a header (magic, version, geometry, counters) followed by
 * `capacity` cache-line-aligned slots. It holds offsets only, never pointers, so the same block can
 * be mapped at different addresses by several processes (multiprocessing.shared_memory). Producers
 * and consumers synchronise through per-slot sequence numbers (Vyukov's bounded MPMC queue) using
 * C11 atomics: no locks, no system calls, push never waits (a full ring drops and counts).
 *
 * The store (sona_traj_store) is per process: see ring.c for why.
 *
 * Known limit of the protocol: a slot is claimed before it is written. A producer killed between
 * claim and publish (or a consumer killed mid-copy) leaves that slot stuck, after which consumers
 * see an empty ring (or producers a full one). Threads cannot die that way; processes can
 * (SIGKILL, OOM killer). sona_ring_stuck reports such a slot and sona_ring_skip repairs it (the
 * Python layer does so once the same slot has looked stuck for a timeout, and counts it).
 * Shared memory can also be scribbled on: sona_ring_validate re-checks the header before use,
 * and a sequence number that no protocol state explains is treated as stuck, never spun on.
 */
#ifndef SONA_RING_H
#define SONA_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SONA_RING_MAGIC 0x474e4952414e4f53ull /* "SONARING" read as little-endian bytes */
#define SONA_RING_VERSION 1u

#define SONA_RING_DTYPE_F32 0u
#define SONA_RING_DTYPE_F16 1u

/* Geometry limits (anything beyond is rejected as absurd, not attempted). */
#define SONA_RING_MAX_DIM (1u << 20)
#define SONA_RING_MAX_STEPS 4096u
#define SONA_RING_MAX_CAPACITY (1ull << 32)
#define SONA_RING_MAX_BYTES (1ull << 40)
#define SONA_STORE_MAX_OPEN (1u << 24)

/* Status codes shared by the ring and the store (0 = ok, negative = error). */
#define SONA_RING_OK 0
#define SONA_RING_EINVAL (-1)     /* argument out of range (dim, capacity, n_steps, ...) */
#define SONA_RING_EMAGIC (-2)     /* attach: not a sona ring (or not initialised yet) */
#define SONA_RING_EVERSION (-3)   /* attach: ring written by another format version */
#define SONA_RING_EGEOMETRY (-4)  /* attach: header inconsistent or block too small */
#define SONA_RING_ENOMEM (-5)     /* allocation failed */
#define SONA_TRAJ_ENOTFOUND (-10) /* id not open here: never started, already ended, or evicted */
#define SONA_TRAJ_ETIMEDOUT (-11) /* id was open longer than the timeout: evicted by this call */
#define SONA_TRAJ_EFULL (-12)     /* trajectory already holds max_steps steps */

/* One step of a trajectory: 16 bytes, stored as is in a slot. reward is NaN when not given. */
typedef struct sona_traj_step {
    uint32_t node;
    float score;
    float latency_us;
    float reward;
} sona_traj_step;

/* Fixed part of a record. A slot is [seq u64][sona_traj_head][steps x max_steps][embedding x dim],
 * padded to a multiple of 64 bytes; the embedding is float32 or IEEE binary16 (dtype). */
typedef struct sona_traj_head {
    uint64_t id;
    uint64_t t_start_ns; /* CLOCK_MONOTONIC */
    uint64_t t_end_ns;
    float quality;
    uint32_t n_steps;
} sona_traj_head;

/* The ring lives at the start of its block; the type is opaque (see ring.c for the layout). */
typedef struct sona_ring sona_ring;

/* Drain destination, structure of arrays; every pointer must hold room for `max` records
 * (embeddings: max x dim float32, nodes/scores/latencies_us/rewards: max x max_steps). Steps past a
 * record's n_steps are zero-filled. Any pointer except embeddings may be NULL to skip that field. */
typedef struct sona_traj_batch {
    uint64_t *ids;
    float *embeddings;
    uint32_t *n_steps;
    uint32_t *nodes;
    float *scores;
    float *latencies_us;
    float *rewards;
    float *qualities;
    uint64_t *t_start_ns;
    uint64_t *t_end_ns;
} sona_traj_batch;

/* ---- geometry ------------------------------------------------------------------------------ */

/* Bytes of one slot (multiple of 64), or 0 when the geometry is out of range. */
size_t sona_ring_slot_bytes(uint32_t dim, uint32_t max_steps, uint32_t dtype);
/* Bytes of a whole ring (header + slots), or 0 when out of range (including > SONA_RING_MAX_BYTES). */
size_t sona_ring_bytes(uint32_t dim, uint32_t max_steps, uint32_t dtype, uint64_t capacity);

/* ---- life cycle ---------------------------------------------------------------------------- */

/* Formats `mem` (64-byte aligned, `size` >= sona_ring_bytes) as an empty ring. The magic number is
 * published last (release), so a process attaching concurrently sees either no ring or all of it.
 * Must not race with users of a ring already in that block. */
int sona_ring_init(void *mem, size_t size, uint32_t dim, uint32_t max_steps, uint32_t dtype,
                   uint64_t capacity);
/* Validates a ring someone else formatted: magic, version, geometry, and that it fits in `size`.
 * On success *out points into mem. */
int sona_ring_attach(void *mem, size_t size, sona_ring **out);
/* The header checks of sona_ring_attach (magic, version, geometry, fits in `size`), for a ring in
 * use: shared memory may have been overwritten since. */
int sona_ring_validate(const sona_ring *r, size_t size);
/* Private (single-process) ring: 64-byte aligned allocation + init. Free with sona_ring_free. */
int sona_ring_create(uint32_t dim, uint32_t max_steps, uint32_t dtype, uint64_t capacity,
                     sona_ring **out);
void sona_ring_free(sona_ring *r);

/* ---- header fields ------------------------------------------------------------------------- */

uint32_t sona_ring_dim(const sona_ring *r);
uint32_t sona_ring_max_steps(const sona_ring *r);
uint32_t sona_ring_dtype(const sona_ring *r);
uint64_t sona_ring_capacity(const sona_ring *r);
size_t sona_ring_slot_size(const sona_ring *r);
size_t sona_ring_total_size(const sona_ring *r);
/* Records pushed but not yet popped (approximate while producers/consumers run; 0..capacity). */
uint64_t sona_ring_len(const sona_ring *r);
uint64_t sona_ring_dropped(const sona_ring *r);
uint64_t sona_ring_pushed(const sona_ring *r); /* records accepted since init */
uint64_t sona_ring_popped(const sona_ring *r); /* records claimed by consumers since init */
uint64_t sona_ring_skipped(const sona_ring *r); /* stuck slots repaired by sona_ring_skip */
/* A fresh trajectory id, unique among all processes attached to this ring (starts at 1). */
uint64_t sona_ring_next_id(sona_ring *r);

/* ---- producers and consumers ---------------------------------------------------------------- */

/* Pushes one complete record; embedding is dim float32 (converted to float16 if the ring says so).
 * Returns 1 stored, 0 dropped (ring full; counted), SONA_RING_EINVAL if n_steps > max_steps.
 * Never blocks, never allocates. Callers validate finiteness. */
int sona_ring_push(sona_ring *r, uint64_t id, const float *embedding, const sona_traj_step *steps,
                   uint32_t n_steps, float quality, uint64_t t_start_ns, uint64_t t_end_ns);
/* Pushes a record already in slot layout ([head][steps][embedding in the ring's dtype], i.e.
 * sona_ring_record_bytes bytes). Returns 1 stored, 0 dropped. */
int sona_ring_push_raw(sona_ring *r, const void *record);
size_t sona_ring_record_bytes(const sona_ring *r);
/* Pops up to `max` records into `out` (float16 embeddings widened to float32); returns how many.
 * Claims runs of ready slots with one CAS, so concurrent consumers each get whole records. */
size_t sona_ring_pop_batch(sona_ring *r, size_t max, const sona_traj_batch *out);

/* ---- stuck slots ---------------------------------------------------------------------------- */

#define SONA_RING_STUCK_CONSUMER 1 /* the slot consumers wait on was claimed, never published */
#define SONA_RING_STUCK_PRODUCER 2 /* the slot producers wait on was taken, never freed */
/* 0 when nothing looks stuck now; else the side and (*pos_out) the position that waits. A slot
 * in the middle of a live push or pop looks stuck too, for microseconds: decide by persistence. */
int sona_ring_stuck(const sona_ring *r, uint64_t *pos_out);
/* Repairs the slot at pos reported by sona_ring_stuck if it is still stuck there: consumer side,
 * the slot is freed and skipped (its record, if any, is lost); producer side, the slot is freed.
 * Returns 1 when repaired (counted in sona_ring_skipped), 0 when the slot moved on meanwhile. */
int sona_ring_skip(sona_ring *r, int side, uint64_t pos);

/* ---- the store of open trajectories (per process) -------------------------------------------- */

typedef struct sona_traj_store sona_traj_store;

/* max_open in 1..SONA_STORE_MAX_OPEN; timeout_ns 0 = never time out. NULL on bad args or OOM. */
sona_traj_store *sona_store_new(sona_ring *ring, uint32_t max_open, uint64_t timeout_ns);
void sona_store_free(sona_traj_store *s);
/* Opens a trajectory (embedding: dim float32, validated by the caller). May evict the oldest open
 * trajectory when the table is full and any that timed out. Writes the new id; returns 0. */
int sona_store_start(sona_traj_store *s, const float *embedding, uint64_t *id_out);
/* Appends a step. 0, SONA_TRAJ_ENOTFOUND, SONA_TRAJ_ETIMEDOUT or SONA_TRAJ_EFULL (unchanged). */
int sona_store_step(sona_traj_store *s, uint64_t id, uint32_t node, float score, float latency_us,
                    float reward);
/* Closes a trajectory and pushes it to the ring: 1 stored, 0 dropped by a full ring (counted by the
 * ring; the trajectory is closed either way), SONA_TRAJ_ENOTFOUND or SONA_TRAJ_ETIMEDOUT. */
int sona_store_end(sona_traj_store *s, uint64_t id, float quality);
/* sona_store_end that also hands back, before the record leaves, the embedding as float32
 * (dim floats; may be NULL) and the node of the last step (UINT32_MAX without steps; may be NULL):
 * what the engine's instant loop learns from. */
int sona_store_end_ex(sona_traj_store *s, uint64_t id, float quality, float *embedding_out,
                      uint32_t *last_node_out);
/* Forgets an open trajectory without recording it: 0 or SONA_TRAJ_ENOTFOUND. */
int sona_store_cancel(sona_traj_store *s, uint64_t id);
/* Evicts every trajectory open longer than the timeout now; returns how many. */
size_t sona_store_evict_expired(sona_traj_store *s);

typedef struct sona_store_stats {
    uint64_t open;
    uint64_t started;
    uint64_t ended;     /* closed by sona_store_end (stored or dropped by the ring) */
    uint64_t cancelled;
    uint64_t evicted_overflow;
    uint64_t evicted_timeout;
} sona_store_stats;
void sona_store_get_stats(sona_traj_store *s, sona_store_stats *out);
uint32_t sona_store_max_open(const sona_traj_store *s);
uint64_t sona_store_timeout_ns(const sona_traj_store *s);
size_t sona_store_bytes(const sona_traj_store *s); /* heap bytes held by the table */

/* ---- helpers ------------------------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds (system-wide: comparable between processes). */
uint64_t sona_now_ns(void);
/* IEEE binary32 <-> binary16, round to nearest even; overflow -> inf, NaN stays NaN (quiet),
 * subnormals both ways. sona_f32_to_f16 / sona_f16_to_f32 use F16C when the CPU has it, else the
 * portable branch-free loops (_scalar); every implementation gives the same bits. */
void sona_f32_to_f16(const float *x, uint16_t *y, size_t n);
void sona_f16_to_f32(const uint16_t *x, float *y, size_t n);
void sona_f32_to_f16_scalar(const float *x, uint16_t *y, size_t n);
void sona_f16_to_f32_scalar(const uint16_t *x, float *y, size_t n);
void sona_f32_to_f16_f16c(const float *x, uint16_t *y, size_t n); /* half_avx2.c */
void sona_f16_to_f32_f16c(const uint16_t *x, float *y, size_t n);
int sona_f16c_supported(void); /* CPU and OS support F16C (x86-64 only) */

#define SONA_HALF_AUTO 0
#define SONA_HALF_SCALAR 1
#define SONA_HALF_F16C 2
/* Chooses the implementation behind sona_f32_to_f16/sona_f16_to_f32 (F16C falls back to scalar
 * when unsupported); returns the one now active (-1: change nothing). For tests and benchmarks. */
int sona_half_select(int mode);

#ifdef __cplusplus
}
#endif
#endif /* SONA_RING_H */
