/*
 * cpu_attention.c — causal multi-head attention on OpenBLAS sgemm.
 *
 * For each (batch b, head h) the q, k, v panels are [T, hs] slices of qkv
 * with a row stride of 3C, which sgemm reads in place (no gather copies).
 *
 * Forward, per (b, h):
 *   S   = scale · Q Kᵀ                          sgemm      [T, T]
 *   row t: m = max S[t,0..t]; E = exp(S - m); s = Σ E; lse = m + log s;
 *          E[t, t+1..] = 0                      one fused pass per row
 *   O   = E V, then row t of O *= 1/s           sgemm + [T, hs] rescale
 * (normalizing the [T, hs] output instead of the [T, T] probabilities.)
 *
 * Backward, per (b, h), with P recomputed from lse (no [T, T] state is kept):
 *   P   = exp(scale · Q Kᵀ - lse), causal        sgemm + one pass
 *   dP  = dO Vᵀ                                 sgemm
 *   dV += Pᵀ dO                                 sgemm (beta 1)
 *   dS  = P ∘ (dP - D),  D[t] = dO[t] · O[t]     one fused pass per row
 *   dQ += scale · dS K,  dK += scale · dSᵀ Q    two sgemm (beta 1)
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "cpu_kernels.h"
#include "cpu_math.h"

float *cpu_scratch_reserve(cpu_scratch *scratch, size_t count) {
  if (count <= scratch->capacity) return scratch->data;
  void *data = NULL;
  size_t bytes = ((count * sizeof(float)) + 63u) & ~(size_t)63u;
  if (posix_memalign(&data, 64, bytes) != 0) return NULL;
  free(scratch->data);
  scratch->data = data;
  scratch->capacity = count;
  return scratch->data;
}

void cpu_scratch_release(cpu_scratch *scratch) {
  free(scratch->data);
  scratch->data = NULL;
  scratch->capacity = 0;
}

size_t cpu_attention_scratch_floats(int64_t T, int forward) {
  /* forward: scores [T,T] + 1/rowsum [T];  backward: P [T,T] + dP [T,T] */
  return forward ? (size_t)(T * T + T) : (size_t)(2 * T * T);
}

/* Geometry of one (b, h) slice. */
typedef struct head_view {
  const float *q, *k, *v; /* row stride ld3 */
  int T, hs, ld3, ldc;    /* ldc: row stride of out/dout (C) */
} head_view;

static head_view head_at(const float *qkv, int64_t b, int64_t h, int64_t T, int64_t C, int64_t NH) {
  head_view view;
  int64_t hs = C / NH;
  const float *base = qkv + b * T * 3 * C + h * hs;
  view.q = base;
  view.k = base + C;
  view.v = base + 2 * C;
  view.T = (int)T;
  view.hs = (int)hs;
  view.ld3 = (int)(3 * C);
  view.ldc = (int)C;
  return view;
}

/* S[T,T] = scale · Q Kᵀ (the upper triangle is computed but ignored). */
static void scores(float *S, const head_view *view, float scale) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, view->T, view->T, view->hs, scale, view->q,
              view->ld3, view->k, view->ld3, 0.0f, S, view->T);
}

/* Row t of S: exponentiate causally against its max; returns the sum, sets *row_max. */
static inline float softmax_row_unnormalized(float *row, int t, int T, float *row_max) {
  float m = cpu_max(row, t + 1);
  float sum = cpu_exp_sum(row, row, t + 1, m);
  for (int j = t + 1; j < T; j++) row[j] = 0.0f;
  *row_max = m;
  return sum;
}

static inline CPU_KERNEL_BODY void attention_forward_body(float *scratch, float *out, float *lse,
                                                          const float *qkv, int64_t B, int64_t T, int64_t C,
                                                          int64_t NH) {
  float *S = scratch;
  float *inv_sum = S + T * T;
  int64_t hs = C / NH;
  float scale = 1.0f / sqrtf((float)hs);
  for (int64_t b = 0; b < B; b++) {
    for (int64_t h = 0; h < NH; h++) {
      head_view view = head_at(qkv, b, h, T, C, NH);
      float *lse_bh = lse + (b * NH + h) * T;
      float *out_bh = out + b * T * C + h * hs;
      scores(S, &view, scale);
      for (int t = 0; t < (int)T; t++) {
        float m = 0.0f;
        float sum = softmax_row_unnormalized(S + (int64_t)t * T, t, (int)T, &m);
        lse_bh[t] = m + logf(sum);
        inv_sum[t] = 1.0f / sum;
      }
      /* O[T,hs] = E[T,T] · V[T,hs], then normalize each row. */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, view.T, view.hs, view.T, 1.0f, S, view.T,
                  view.v, view.ld3, 0.0f, out_bh, view.ldc);
      for (int64_t t = 0; t < T; t++) {
        float *restrict row = out_bh + t * C;
        float r = inv_sum[t];
        for (int64_t d = 0; d < hs; d++) row[d] *= r;
      }
    }
  }
}
CPU_TWINS(attention_forward,
          (float *scratch, float *out, float *lse, const float *qkv, int64_t B, int64_t T, int64_t C,
           int64_t NH),
          (scratch, out, lse, qkv, B, T, C, NH))

/* Row t of S becomes P = exp(S - lse) for j <= t and 0 after. */
static inline void probabilities_row(float *restrict row, int t, int T, float row_lse) {
  for (int j = 0; j <= t; j++) row[j] = cpu_exp(row[j] - row_lse);
  for (int j = t + 1; j < T; j++) row[j] = 0.0f;
}

/* Row of dP becomes dS = P ∘ (dP - D) (causal part only; the rest is 0). */
static inline void softmax_backward_row(float *restrict dp, const float *restrict p, int t, int T, float D) {
  for (int j = 0; j <= t; j++) dp[j] = p[j] * (dp[j] - D);
  for (int j = t + 1; j < T; j++) dp[j] = 0.0f;
}

static inline CPU_KERNEL_BODY void attention_backward_body(float *scratch, float *dqkv, const float *dout,
                                                           const float *qkv, const float *out,
                                                           const float *lse, int64_t B, int64_t T, int64_t C,
                                                           int64_t NH) {
  float *P = scratch;
  float *dP = P + T * T;
  int64_t hs = C / NH;
  float scale = 1.0f / sqrtf((float)hs);
  for (int64_t b = 0; b < B; b++) {
    for (int64_t h = 0; h < NH; h++) {
      head_view view = head_at(qkv, b, h, T, C, NH);
      const float *lse_bh = lse + (b * NH + h) * T;
      const float *dout_bh = dout + b * T * C + h * hs;
      const float *out_bh = out + b * T * C + h * hs;
      float *dq = dqkv + b * T * 3 * C + h * hs;
      float *dk = dq + C;
      float *dv = dq + 2 * C;
      int n = view.T, d = view.hs, ld3 = view.ld3, ldc = view.ldc;

      scores(P, &view, scale);
      for (int t = 0; t < n; t++) probabilities_row(P + (int64_t)t * n, t, n, lse_bh[t]);
      /* dP[T,T] = dO · Vᵀ */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, 1.0f, dout_bh, ldc, view.v, ld3, 0.0f,
                  dP, n);
      /* dV += Pᵀ · dO */
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, d, n, 1.0f, P, n, dout_bh, ldc, 1.0f, dv, ld3);
      for (int t = 0; t < n; t++) {
        /* D = dO[t] · O[t] (= Σ_j P[t,j] dP[t,j]), the softmax backward's row term. */
        float D = cpu_dot(dout_bh + (int64_t)t * ldc, out_bh + (int64_t)t * ldc, d);
        softmax_backward_row(dP + (int64_t)t * n, P + (int64_t)t * n, t, n, D);
      }
      /* dQ += scale · dS · K;  dK += scale · dSᵀ · Q */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, scale, dP, n, view.k, ld3, 1.0f, dq,
                  ld3);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, d, n, scale, dP, n, view.q, ld3, 1.0f, dk, ld3);
    }
  }
}
CPU_TWINS(attention_backward,
          (float *scratch, float *dqkv, const float *dout, const float *qkv, const float *out,
           const float *lse, int64_t B, int64_t T, int64_t C, int64_t NH),
          (scratch, dqkv, dout, qkv, out, lse, B, T, C, NH))
