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
