# The C API of csrc/ as seen from Cython: one extern block per header (sona.h, bank.h, policy.h,
# ring.h, kmeans.h), each mirroring its header; and sona_build_info.h, which setup.py generates.
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "sona.h" nogil:
    enum: SONA_MAX_RANK
    enum: SONA_CPU_AVX2
    enum: SONA_CPU_AVX512F

    ctypedef struct sona_kernels_t:
        const char *name

    ctypedef struct sona_adam_hp:
        float lr, beta1, beta2, eps, bc1, bc2

    unsigned sona_cpu_features()
    int sona_backends(const char **names, int cap)
    int sona_compiled_backends(const char **names, int cap)
    int sona_set_backend(const char *name)
    const sona_kernels_t *sona_kernels()

    float sona_maxabs_f32(const float *x, size_t n)
    float sona_dot_f32(const float *a, const float *b, size_t n)
    void sona_axpy_f32(size_t n, float alpha, const float *x, float *y)
    void sona_dot_rows_f32(const float *M, size_t n, size_t d, const float *x, float *out)
    void sona_sqdist_rows_f32(const float *M, size_t n, size_t d, const float *x, float *out)
    int sona_lora_fwd_f32(const float *x, const float *A, const float *Bt, size_t d, size_t r,
                          float s, float *y, float *u)
    float sona_lora_grad_f32(const float *x, const float *g, const float *A, const float *Bt,
                             size_t d, size_t r, float s, float w, float limit, float *dA,
                             float *dBt, float *coef)
    void sona_adam_f32(float *theta, float *m, float *v, const float *g, float gscale, size_t n,
                       const sona_adam_hp *hp, const float *fisher, const float *anchor, float lam)
    void sona_fisher_update_f32(float *fisher, const float *g, float gscale, size_t n, float alpha)
    ptrdiff_t sona_lora_fwd_batch_f32(const float *x, size_t n, const float *A, const float *Bt,
                                      size_t d, size_t r, float s, float *y, float *u)
    void sona_norm_rows_f32(const float *M, size_t n, size_t d, float *out)
    int sona_cosine_rows_f32(const float *M, size_t n, size_t d, const float *x, float *out,
                             float *scratch)
    void sona_topk_f32(const float *scores, size_t n, size_t k, int64_t *idx, float *val)

cdef extern from "bank.h" nogil:
    ctypedef struct sona_bank:
        uint32_t dim, n_routes, capacity, n_patterns
        float new_cos, decay, prior_count, baseline_rate
        float *centroid
        float *centroid_sum
        float *hits
        float *route_n
        float *route_s
        float *route_cn
        float *route_c
        float *baseline

    int32_t sona_bank_nearest(const sona_bank *b, const float *xhat, float *scratch, float *cos)
    int32_t sona_bank_match(const sona_bank *b, const float *xhat, float *scratch)
    int32_t sona_bank_claim(sona_bank *b, int32_t j, const float *xhat, float init_baseline,
                            float *scratch)
    void sona_bank_observe(sona_bank *b, int32_t j, const float *xhat, int32_t route, float r,
                           int new_hit)
    float sona_unit(const float *x, size_t d, float *xhat)

    ctypedef struct sona_bank_refine_stats:
        uint32_t created, updated, merged, pruned

    void sona_bank_absorb(sona_bank *b, const float *sums, const float *weight,
                          const uint32_t *count, const float *quality, size_t k, uint64_t *usage,
                          uint8_t *touched, float *scratch, sona_bank_refine_stats *st)
    void sona_bank_dedupe(sona_bank *b, float merge_cos, int all_pairs, uint64_t *usage,
                          uint8_t *touched, float *scratch, sona_bank_refine_stats *st)

cdef extern from "policy.h" nogil:
    enum: SONA_MAX_ROUTES

    ctypedef struct sona_pcg32:
        uint64_t state, inc

    void sona_pcg32_seed(sona_pcg32 *g, uint64_t seed, uint64_t stream)

    ctypedef struct sona_policy_hp:
        float micro_scale, base_scale, tau, tau_prior, ts_scale, explore, adv_clip
        float lr, rms_decay, rms_eps, weight_clip, global_rate, global_decay
        float ewc_alpha, ewc_lambda, ewc_margin, ewc_memory, ewc_novelty
        float reward_short_rate, reward_long_rate, novelty_short_rate, novelty_long_rate
        uint32_t mean_window, ewc_every, fisher_every
        uint8_t use_micro, use_base, use_prior, learn_keys, learn_bias, unit_keys, ewc
        uint8_t centre_patterns

    ctypedef struct sona_policy:
        uint32_t dim, n_routes, micro_rank, base_rank
        sona_policy_hp hp
        float *A_micro
        float *Bt_micro
        float *A_base
        float *Bt_base
        float *keys
        float *bias
        float *rms
        float *fisher
        float *anchor
        float *fisher_ckpt
        float *omega
        float *omega_theta
        float *mu
        float *global_n
        float *global_s
        float *global_q
        float *route_cost
        float *cost_n
        float *shrink
        const uint8_t *live
        float *work
        sona_bank *bank
        sona_pcg32 rng
        uint64_t n_seen, t
        float global_baseline, reward_short, reward_long, fisher_max, omega_max
        uint64_t checkpoints, task_boundaries, tasks
        float novelty_short, novelty_long
        uint32_t ckpt_patterns
        uint8_t has_anchor, drifting

    ctypedef struct sona_policy_ctx:
        float *buf
        float ynorm, xscale
        int32_t pattern
        uint32_t action

    size_t sona_policy_n_params(uint32_t dim, uint32_t n_routes, uint32_t micro_rank,
                                uint32_t base_rank)
    size_t sona_policy_n_rows(uint32_t n_routes, uint32_t micro_rank, uint32_t base_rank)
    size_t sona_policy_ctx_floats(uint32_t dim, uint32_t n_routes, uint32_t micro_rank,
                                  uint32_t base_rank)
    size_t sona_policy_work_floats(uint32_t dim, uint32_t n_routes, uint32_t bank_capacity)
    void sona_policy_scores(sona_policy *p, const float *x, float cost_weight,
                            const uint8_t *mask, float *probs)
    void sona_policy_prepare(sona_policy *p, const float *x, sona_policy_ctx *ctx)
    uint32_t sona_policy_route(sona_policy *p, const float *x, float cost_weight,
                               const uint8_t *mask, sona_policy_ctx *ctx)
    void sona_policy_learn(sona_policy *p, const sona_policy_ctx *ctx, uint32_t a, float prob,
                           float r, float cost, int new_hit)

# ---- csrc/ring.h: the trajectory ring and the store of open trajectories (issue 5) ----------
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
    uint64_t sona_ring_skipped(const sona_ring *r)
    int sona_ring_validate(const sona_ring *r, size_t size)
    int sona_ring_stuck(const sona_ring *r, uint64_t *pos_out)
    int sona_ring_skip(sona_ring *r, int side, uint64_t pos)
    enum: SONA_RING_STUCK_CONSUMER
    enum: SONA_RING_STUCK_PRODUCER
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
    int sona_store_end_ex(sona_traj_store *s, uint64_t id, float quality, float *embedding_out,
                          uint32_t *last_node_out)
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

# ---- csrc/kmeans.h: weighted spherical k-means (issue 4) --------------------------------------
cdef extern from "kmeans.h" nogil:
    ctypedef struct sona_kmeans_info:
        double inertia
        uint32_t n_iter, k_found, converged

    uint32_t sona_kmeans_default_trials(size_t k)
    size_t sona_kmeans_work_floats(size_t n, size_t k, size_t d, uint32_t trials,
                                   uint32_t n_init)
    int sona_kmeans_f32(const float *X, const float *w, size_t n, size_t d, size_t k,
                        uint32_t max_iter, uint32_t trials, uint32_t n_init, uint64_t seed,
                        float *centroids, float *sums, float *weight, uint32_t *count,
                        int32_t *labels, float *work, sona_kmeans_info *info)


cdef extern from "sona_build_info.h":
    # JSON: the compile command and versions this build was made with (setup.py writes it)
    const char *SONA_BUILD_INFO
