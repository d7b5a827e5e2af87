/*
 * medley_ref_kernels.h — the reference kernels of opset v1 in portable C99.
 *
 * Plain loops over fp32 arrays: deterministic (fixed summation order, no
 * threads), readable, and the numerical oracle every other adapter is checked
 * against. Shapes and semantics are those of medley_adapter.h ("Opset v1");
 * every *_backward kernel ACCUMULATES (+=) into its outputs.
 *
 * The reference and sim adapters and the adapter template all compute with
 * these kernels; a chip team replaces them one by one with its own.
 */
#ifndef MEDLEY_REF_KERNELS_H
#define MEDLEY_REF_KERNELS_H

#include <stdint.h>

#include "medley_kit.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MRK_API __attribute__((visibility("hidden")))

MRK_API void mrk_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                                 int64_t B, int64_t T, int64_t C);
MRK_API void mrk_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                                  int64_t B, int64_t T, int64_t C);
MRK_API void mrk_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                                   const float *weight, const float *bias, int64_t N, int64_t C, double eps);
MRK_API void mrk_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout,
                                    const float *x, const float *weight, const float *mean,
                                    const float *rstd, int64_t N, int64_t C);
/* bias may be NULL. */
MRK_API void mrk_matmul_forward(float *out, const float *x, const float *weight, const float *bias,
                                int64_t N, int64_t C, int64_t OC);
/* dbias may be NULL. */
MRK_API void mrk_matmul_backward(float *dx, float *dweight, float *dbias, const float *dout,
                                 const float *x, const float *weight, int64_t N, int64_t C, int64_t OC);
MRK_API void mrk_attention_forward(float *out, float *lse, const float *qkv, int64_t B, int64_t T,
                                   int64_t C, int64_t NH);
MRK_API void mrk_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                                    const float *lse, int64_t B, int64_t T, int64_t C, int64_t NH);
MRK_API void mrk_gelu_forward(float *out, const float *x, int64_t n);
MRK_API void mrk_gelu_backward(float *dx, const float *dout, const float *x, int64_t n);
MRK_API void mrk_residual_forward(float *out, const float *a, const float *b, int64_t n);
MRK_API void mrk_residual_backward(float *da, float *db, const float *dout, int64_t n);
MRK_API void mrk_crossentropy_forward(float *losses, float *lse, const float *logits,
                                      const int32_t *targets, int64_t N, int64_t V);
MRK_API void mrk_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                                       const float *lse, int64_t N, int64_t V, double scale);
MRK_API void mrk_adamw_update(float *param, float *m, float *v, const float *grad, int64_t n, double lr,
                              double beta1, double beta2, double eps, double weight_decay, double step,
                              double grad_scale);
MRK_API void mrk_sum_squares(float *out, const float *x, int64_t n);
MRK_API void mrk_scale(float *out, const float *x, int64_t n, double alpha);

/** Runs a launch already checked by mk_op_prepare (fp32 only). */
MRK_API void mrk_run(const mk_op_args *args);

#ifdef __cplusplus
}
#endif

#endif /* MEDLEY_REF_KERNELS_H */
