/*
 * cpu_kernels.h — the cpu kernels of opset v1 (fp32), behind the cpu adapter.
 *
 * Every matrix product (matmul forward and both backward products, the two
 * products of attention forward and the five of attention backward) is one
 * OpenBLAS sgemm call; everything else is a tight loop over contiguous rows
 * that the compiler vectorizes (with AVX2 twins picked at run time, see
 * cpu_math.h). Shapes and semantics are those of "Opset v1" in
 * medley_adapter.h, and every *_backward kernel ACCUMULATES (+=) into its
 * outputs.
 *
 * Kernels that need temporary memory (attention) take scratch floats from a
 * cpu_scratch, which the device owns and grows on demand, so no launch
 * allocates in steady state.
 * All of these are hidden: every adapter library that links this target
 * (SwiftPM target MedleyCPUKernels, adapters/cpu-kernels) gets its own copy
 * and exports none of it.
 */
#ifndef MEDLEY_CPU_KERNELS_H
#define MEDLEY_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "medley_kit.h"

#define CPU_API __attribute__((visibility("hidden")))

/** Growable, 64-byte aligned temporary memory owned by one device. */
typedef struct cpu_scratch {
  float *data;
  size_t capacity; /* in floats */
} cpu_scratch;

/** Returns at least `count` floats of scratch, or NULL when out of memory. */
CPU_API float *cpu_scratch_reserve(cpu_scratch *scratch, size_t count);
CPU_API void cpu_scratch_release(cpu_scratch *scratch);

/* ---- OpenBLAS threads (cpu_matmul.c) ------------------------------------- */

/**
 * Makes OpenBLAS use `threads` threads for the products, calling
 * openblas_set_num_threads only when its count differs. The count is
 * PROCESS-WIDE: it applies to every device of every adapter in the process
 * that links OpenBLAS. Returns the count OpenBLAS now uses (it caps the
 * request at the maximum it was built for).
 */
CPU_API int cpu_blas_threads(int threads);

/* ---- products (cpu_matmul.c, cpu_attention.c) ---------------------------- */

/* bias may be NULL. */
CPU_API void cpu_matmul_forward(float *out, const float *x, const float *weight, const float *bias,
                                int64_t N, int64_t C, int64_t OC);
/* dbias may be NULL. */
CPU_API void cpu_matmul_backward(float *dx, float *dweight, float *dbias, const float *dout,
                                 const float *x, const float *weight, int64_t N, int64_t C, int64_t OC);
/* `scratch` holds at least cpu_attention_scratch_floats(T, forward) floats. */
CPU_API size_t cpu_attention_scratch_floats(int64_t T, int forward);
CPU_API void cpu_attention_forward(float *scratch, float *out, float *lse, const float *qkv,
                                   int64_t B, int64_t T, int64_t C, int64_t NH);
CPU_API void cpu_attention_backward(float *scratch, float *dqkv, const float *dout,
                                    const float *qkv, const float *out, const float *lse,
                                    int64_t B, int64_t T, int64_t C, int64_t NH);

/* ---- row and element kernels (cpu_pointwise.c) -------------------------- */

CPU_API void cpu_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                                 int64_t B, int64_t T, int64_t C);
CPU_API void cpu_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                                  int64_t B, int64_t T, int64_t C);
CPU_API void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                                   const float *weight, const float *bias, int64_t N, int64_t C, double eps);
CPU_API void cpu_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout,
                                    const float *x, const float *weight, const float *mean,
                                    const float *rstd, int64_t N, int64_t C);
CPU_API void cpu_gelu_forward(float *out, const float *x, int64_t n);
CPU_API void cpu_gelu_backward(float *dx, const float *dout, const float *x, int64_t n);
CPU_API void cpu_residual_forward(float *out, const float *a, const float *b, int64_t n);
CPU_API void cpu_residual_backward(float *da, float *db, const float *dout, int64_t n);
CPU_API void cpu_crossentropy_forward(float *losses, float *lse, const float *logits,
                                      const int32_t *targets, int64_t N, int64_t V);
CPU_API void cpu_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                                       const float *lse, int64_t N, int64_t V, double scale);
CPU_API void cpu_adamw_update(float *param, float *m, float *v, const float *grad, int64_t n, double lr,
                              double beta1, double beta2, double eps, double weight_decay, double step,
                              double grad_scale);
CPU_API void cpu_sum_squares(float *out, const float *x, int64_t n);
CPU_API void cpu_scale(float *out, const float *x, int64_t n, double alpha);

/**
 * Runs a launch already checked by mk_op_prepare (fp32 only). Returns NULL
 * or an error (OUT_OF_MEMORY when scratch cannot grow).
 */
CPU_API medley_error *cpu_run(cpu_scratch *scratch, const mk_op_args *args);

#endif /* MEDLEY_CPU_KERNELS_H */
