/* dispatch.c: one const kernel table per backend and the switch between them.
 *
 * sona_active starts at the scalar table, so every entry point works before any selection; the
 * Python module selects the best supported backend (or SONA_BACKEND) at import. Switching is a
 * single pointer store: a call already running finishes on the table it started with.
 */
#include <string.h>

#include "sona.h"
#include "target.h"

static const sona_kernels_t scalar_table = {
    "scalar",
    sona_maxabs_f32_scalar,
    sona_dot_f32_scalar,
    sona_axpy_f32_scalar,
    sona_dot_rows_f32_scalar,
    sona_dot2_rows_f32_scalar,
    sona_dot_sq_rows_f32_scalar,
    sona_sqdist_rows_f32_scalar,
    sona_lora_fwd_f32_scalar,
    sona_lora_grad_f32_scalar,
    sona_adam_f32_scalar,
    sona_fisher_update_f32_scalar,
    sona_policy_row_f32_scalar,
};

#if SONA_X86_64
static const sona_kernels_t avx2_table = {
    "avx2",
    sona_maxabs_f32_avx2,
    sona_dot_f32_avx2,
    sona_axpy_f32_avx2,
    sona_dot_rows_f32_avx2,
    sona_dot2_rows_f32_avx2,
    sona_dot_sq_rows_f32_avx2,
    sona_sqdist_rows_f32_avx2,
    sona_lora_fwd_f32_avx2,
    sona_lora_grad_f32_avx2,
    sona_adam_f32_avx2,
    sona_fisher_update_f32_avx2,
    sona_policy_row_f32_avx2,
};
#endif

const sona_kernels_t *sona_active = &scalar_table;

/* Best first. */
static const sona_kernels_t *const all_tables[] = {
#if SONA_X86_64
    &avx2_table,
#endif
    &scalar_table,
};
#define N_TABLES (sizeof(all_tables) / sizeof(all_tables[0]))

static int supported(const sona_kernels_t *t) {
#if SONA_X86_64
    if (t == &avx2_table) return (sona_cpu_features() & SONA_CPU_AVX2) != 0;
#endif
    return t == &scalar_table;
}

int sona_backends(const char **names, int cap) {
    int n = 0;
    for (size_t i = 0; i < N_TABLES && n < cap; ++i)
        if (supported(all_tables[i])) names[n++] = all_tables[i]->name;
    return n;
}

int sona_compiled_backends(const char **names, int cap) {
    int n = 0;
    for (size_t i = 0; i < N_TABLES && n < cap; ++i) names[n++] = all_tables[i]->name;
    return n;
}

int sona_set_backend(const char *name) {
    if (strcmp(name, "auto") == 0) {
        for (size_t i = 0; i < N_TABLES; ++i)
            if (supported(all_tables[i])) {
                sona_active = all_tables[i];
                return 0;
            }
    }
    /* Known names include ones not compiled on this architecture ("avx2" on ARM). */
    if (strcmp(name, "avx2") != 0 && strcmp(name, "scalar") != 0) return -1;
    for (size_t i = 0; i < N_TABLES; ++i)
        if (strcmp(all_tables[i]->name, name) == 0 && supported(all_tables[i])) {
            sona_active = all_tables[i];
            return 0;
        }
    return -2;
}

const sona_kernels_t *sona_kernels(void) { return sona_active; }
