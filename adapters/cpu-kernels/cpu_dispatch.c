/*
 * cpu_dispatch.c — runs a checked launch (mk_op_args) on the cpu kernels.
 *
 * mk_op_prepare has already validated counts, shapes, dtypes, bounds and
 * attributes; what is left here is the one limit of these kernels: BLAS takes
 * `int` dimensions, so a matmul's channel counts and attention's sequence
 * length and 3C row stride must fit in one (row counts are split as needed).
 */
#include <limits.h>

#include "cpu_kernels.h"

static medley_error *too_large(const char *op, const char *what, long long value) {
  return mk_error(MEDLEY_ERROR_UNSUPPORTED, "%s: %s %lld exceeds the BLAS index range of the cpu kernels", op,
                  what, value);
}

static medley_error *run_attention(cpu_scratch *scratch, const mk_op_args *a) {
  const char *op = mk_op_name(a->op);
  if (3 * a->C > INT_MAX) return too_large(op, "3 x channels", (long long)(3 * a->C));
  if (a->T > 46340) return too_large(op, "sequence length", (long long)a->T); /* T*T must fit */
  int forward = a->op == MK_OP_attention_forward;
  float *work = cpu_scratch_reserve(scratch, cpu_attention_scratch_floats(a->T, forward));
  if (work == NULL) {
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "%s: no host memory for %lld x %lld score scratch", op,
                    (long long)a->T, (long long)a->T);
  }
  if (forward) {
    cpu_attention_forward(work, a->out[0], a->out[1], a->in[0], a->B, a->T, a->C, a->NH);
  } else {
    cpu_attention_backward(work, a->out[0], a->in[0], a->in[1], a->in[2], a->in[3], a->B, a->T, a->C, a->NH);
  }
  return NULL;
}

medley_error *cpu_run(cpu_scratch *scratch, const mk_op_args *a) {
  switch (a->op) {
    case MK_OP_encoder_forward:
      cpu_encoder_forward(a->out[0], a->in[0], a->in[1], a->in[2], a->B, a->T, a->C);
      return NULL;
    case MK_OP_encoder_backward:
      cpu_encoder_backward(a->out[0], a->out[1], a->in[0], a->in[1], a->B, a->T, a->C);
      return NULL;
    case MK_OP_layernorm_forward:
      cpu_layernorm_forward(a->out[0], a->out[1], a->out[2], a->in[0], a->in[1], a->in[2], a->N, a->C, a->eps);
      return NULL;
    case MK_OP_layernorm_backward:
      cpu_layernorm_backward(a->out[0], a->out[1], a->out[2], a->in[0], a->in[1], a->in[2], a->in[3], a->in[4],
                             a->N, a->C);
      return NULL;
    case MK_OP_matmul_forward:
    case MK_OP_matmul_backward:
      if (a->C > INT_MAX) return too_large(mk_op_name(a->op), "input channels", (long long)a->C);
      if (a->OC > INT_MAX) return too_large(mk_op_name(a->op), "output channels", (long long)a->OC);
      if (a->op == MK_OP_matmul_forward) {
        cpu_matmul_forward(a->out[0], a->in[0], a->in[1], a->has_bias ? a->in[2] : NULL, a->N, a->C, a->OC);
      } else {
        cpu_matmul_backward(a->out[0], a->out[1], a->has_bias ? a->out[2] : NULL, a->in[0], a->in[1], a->in[2],
                            a->N, a->C, a->OC);
      }
      return NULL;
    case MK_OP_attention_forward:
    case MK_OP_attention_backward:
      return run_attention(scratch, a);
    case MK_OP_gelu_forward:
      cpu_gelu_forward(a->out[0], a->in[0], a->n);
      return NULL;
    case MK_OP_gelu_backward:
      cpu_gelu_backward(a->out[0], a->in[0], a->in[1], a->n);
      return NULL;
    case MK_OP_residual_forward:
      cpu_residual_forward(a->out[0], a->in[0], a->in[1], a->n);
      return NULL;
    case MK_OP_residual_backward:
      cpu_residual_backward(a->out[0], a->out[1], a->in[0], a->n);
      return NULL;
    case MK_OP_crossentropy_forward:
      cpu_crossentropy_forward(a->out[0], a->out[1], a->in[0], a->in[1], a->N, a->V);
      return NULL;
    case MK_OP_crossentropy_backward:
      cpu_crossentropy_backward(a->out[0], a->in[0], a->in[1], a->in[2], a->N, a->V, a->scale);
      return NULL;
    case MK_OP_adamw_update:
      cpu_adamw_update(a->out[0], a->out[1], a->out[2], a->in[0], a->n, a->lr, a->beta1, a->beta2, a->eps,
                       a->weight_decay, a->step, a->grad_scale);
      return NULL;
    case MK_OP_sum_squares:
      cpu_sum_squares(a->out[0], a->in[0], a->n);
      return NULL;
    case MK_OP_scale:
      cpu_scale(a->out[0], a->in[0], a->n, a->alpha);
      return NULL;
    case MK_OP_COUNT:
      break;
  }
  return mk_error(MEDLEY_ERROR_INTERNAL, "op_launch: the cpu kernels have no kernel for op id %d", (int)a->op);
}
