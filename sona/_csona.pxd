# The C API of csrc/ as seen from Cython: the single extern block for csrc/sona.h.
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int64_t

cdef extern from "sona.h" nogil:
    enum: SONA_MAX_RANK
    enum: SONA_CPU_AVX2
    enum: SONA_CPU_AVX512F

    ctypedef struct sona_kernels_t:
        const char *name

    unsigned sona_cpu_features()
    int sona_backends(const char **names, int cap)
    int sona_set_backend(const char *name)
    const sona_kernels_t *sona_kernels()

    float sona_maxabs_f32(const float *x, size_t n)
    float sona_dot_f32(const float *a, const float *b, size_t n)
    void sona_axpy_f32(size_t n, float alpha, const float *x, float *y)
    void sona_dot_rows_f32(const float *M, size_t n, size_t d, const float *x, float *out)
    void sona_sqdist_rows_f32(const float *M, size_t n, size_t d, const float *x, float *out)
    int sona_lora_fwd_f32(const float *x, const float *A, const float *Bt, size_t d, size_t r,
                          float s, float *y, float *u)
    void sona_lora_grad_f32(const float *x, const float *g, const float *A, const float *Bt,
                            size_t d, size_t r, float s, float w, float *dA, float *dBt,
                            float *coef)
    ptrdiff_t sona_lora_fwd_batch_f32(const float *x, size_t n, const float *A, const float *Bt,
                                 size_t d, size_t r, float s, float *y, float *u)
    void sona_norm_rows_f32(const float *M, size_t n, size_t d, float *out)
    void sona_cosine_rows_f32(const float *M, size_t n, size_t d, const float *x,
                              const float *inv_norms, float *out)
    void sona_topk_f32(const float *scores, size_t n, size_t k, int64_t *idx, float *val)

# ---- csrc/ring.h: the trajectory ring and the store of open trajectories (issue 5) ----------
from libc.stdint cimport uint16_t, uint32_t, uint64_t

cdef extern from "ring.h" nogil:
    enum: SONA_RING_VERSION
    enum: SONA_RING_DTYPE_F32
    enum: SONA_RING_DTYPE_F16
    enum: SONA_RING_MAX_DIM
    enum: SONA_RING_MAX_STEPS
    enum: SONA_STORE_MAX_OPEN
    unsigned long long SONA_RING_MAX_CAPACITY
    unsigned long long SONA_RING_MAX_BYTES
    enum: SONA_RING_OK
    enum: SONA_RING_EINVAL
    enum: SONA_RING_EMAGIC
    enum: SONA_RING_EVERSION
    enum: SONA_RING_EGEOMETRY
    enum: SONA_RING_ENOMEM
    enum: SONA_TRAJ_ENOTFOUND
    enum: SONA_TRAJ_ETIMEDOUT
    enum: SONA_TRAJ_EFULL

    ctypedef struct sona_traj_step:
        uint32_t node
        float score
        float latency_us
        float reward

    ctypedef struct sona_ring:
        pass

    ctypedef struct sona_traj_batch:
        uint64_t *ids
        float *embeddings
        uint32_t *n_steps
        uint32_t *nodes
        float *scores
        float *latencies_us
        float *rewards
        float *qualities
        uint64_t *t_start_ns
        uint64_t *t_end_ns

    size_t sona_ring_slot_bytes(uint32_t dim, uint32_t max_steps, uint32_t dtype)
    size_t sona_ring_bytes(uint32_t dim, uint32_t max_steps, uint32_t dtype, uint64_t capacity)
    int sona_ring_init(void *mem, size_t size, uint32_t dim, uint32_t max_steps, uint32_t dtype,
                       uint64_t capacity)
    int sona_ring_attach(void *mem, size_t size, sona_ring **out)
    int sona_ring_create(uint32_t dim, uint32_t max_steps, uint32_t dtype, uint64_t capacity,
                         sona_ring **out)
    void sona_ring_free(sona_ring *r)
    uint32_t sona_ring_dim(const sona_ring *r)
    uint32_t sona_ring_max_steps(const sona_ring *r)
    uint32_t sona_ring_dtype(const sona_ring *r)
    uint64_t sona_ring_capacity(const sona_ring *r)
    size_t sona_ring_slot_size(const sona_ring *r)
    size_t sona_ring_total_size(const sona_ring *r)
    uint64_t sona_ring_len(const sona_ring *r)
    uint64_t sona_ring_dropped(const sona_ring *r)
    uint64_t sona_ring_pushed(const sona_ring *r)
    uint64_t sona_ring_popped(const sona_ring *r)
    uint64_t sona_ring_next_id(sona_ring *r)
    int sona_ring_push(sona_ring *r, uint64_t id, const float *embedding,
                       const sona_traj_step *steps, uint32_t n_steps, float quality,
                       uint64_t t_start_ns, uint64_t t_end_ns)
    size_t sona_ring_pop_batch(sona_ring *r, size_t max, const sona_traj_batch *out)

    ctypedef struct sona_traj_store:
        pass

    ctypedef struct sona_store_stats:
        uint64_t open
        uint64_t started
        uint64_t ended
        uint64_t cancelled
        uint64_t evicted_overflow
        uint64_t evicted_timeout

    sona_traj_store *sona_store_new(sona_ring *ring, uint32_t max_open, uint64_t timeout_ns)
    void sona_store_free(sona_traj_store *s)
    int sona_store_start(sona_traj_store *s, const float *embedding, uint64_t *id_out)
    int sona_store_step(sona_traj_store *s, uint64_t id, uint32_t node, float score,
                        float latency_us, float reward)
    int sona_store_end(sona_traj_store *s, uint64_t id, float quality)
    int sona_store_cancel(sona_traj_store *s, uint64_t id)
    size_t sona_store_evict_expired(sona_traj_store *s)
    void sona_store_get_stats(sona_traj_store *s, sona_store_stats *out)
    uint32_t sona_store_max_open(const sona_traj_store *s)
    uint64_t sona_store_timeout_ns(const sona_traj_store *s)
    size_t sona_store_bytes(const sona_traj_store *s)

    uint64_t sona_now_ns()
    void sona_f32_to_f16(const float *x, uint16_t *y, size_t n)
    void sona_f16_to_f32(const uint16_t *x, float *y, size_t n)
    void sona_f32_to_f16_scalar(const float *x, uint16_t *y, size_t n)
    void sona_f16_to_f32_scalar(const uint16_t *x, float *y, size_t n)
    int sona_f16c_supported()
    enum: SONA_HALF_AUTO
    enum: SONA_HALF_SCALAR
    enum: SONA_HALF_F16C
    int sona_half_select(int mode)
