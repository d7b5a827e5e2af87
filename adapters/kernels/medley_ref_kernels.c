/*
 * medley_ref_kernels.c — the reference kernels of opset v1: the numerical oracle.
 *
 * Every other adapter is checked against these loops, so they are written
 * for clarity and determinism, not speed:
 *   - plain C loops over row-major fp32 arrays, no threads, no SIMD tricks;
 *   - every sum runs in a fixed order and is accumulated in double, then
 *     rounded once to float (so results do not depend on the compiler's
 *     choice of vectorisation or contraction as far as practical);
 *   - no heap allocations: where a kernel needs scratch it uses a small
 *     stack array and walks the channels in chunks of MRK_CHUNK, which keeps
 *     the summation order of every element identical to the naive loop.
 *
 * The formulas are exactly those of medley_adapter.h ("Opset v1"). Every
 * *_backward kernel ACCUMULATES: it computes the gradient contribution of
 * one element completely (in double) and then adds it to the output once.
 */
#include "medley_ref_kernels.h"

#include <math.h>
#include <stddef.h>

/* Keep a*b+c as two roundings everywhere (no fused multiply-add), so the
   oracle gives the same bits on every platform. GCC does not contract on
   x86-64 without -mfma; clang honours this pragma. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Columns handled per pass where a kernel keeps a row of double accumulators. */
#define MRK_CHUNK 256

/* sqrt(2/pi) and the cubic coefficient of the tanh approximation of GELU. */
#define MRK_GELU_K 0.7978845608028654
#define MRK_GELU_A 0.044715

/* ========================================================================= */
/* Small helpers                                                             */
/* ========================================================================= */

/* Dot product of two float vectors, accumulated in double in index order. */
static double mrk_dot(const float *a, const float *b, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) sum += (double)a[i] * (double)b[i];
  return sum;
}

static int64_t mrk_min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ========================================================================= */
/* Encoder: token embedding + position embedding                             */
/* ========================================================================= */

void mrk_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                         int64_t B, int64_t T, int64_t C) {
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = 0; t < T; t++) {
      const float *token_row = wte + (int64_t)tokens[b * T + t] * C;
      const float *position_row = wpe + t * C;
      float *out_row = out + (b * T + t) * C;
      for (int64_t c = 0; c < C; c++) out_row[c] = token_row[c] + position_row[c];
    }
  }
}

void mrk_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                          int64_t B, int64_t T, int64_t C) {
  /* A token may repeat, so its row receives several contributions; they are
     added in (b, t) order, which is fixed. */
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = 0; t < T; t++) {
      const float *dout_row = dout + (b * T + t) * C;
      float *dwte_row = dwte + (int64_t)tokens[b * T + t] * C;
      float *dwpe_row = dwpe + t * C;
      for (int64_t c = 0; c < C; c++) {
        dwte_row[c] += dout_row[c];
        dwpe_row[c] += dout_row[c];
      }
    }
  }
}

/* ========================================================================= */
/* LayerNorm over the last dimension (biased variance)                       */
/* ========================================================================= */

void mrk_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *weight,
                           const float *bias, int64_t N, int64_t C, double eps) {
  for (int64_t n = 0; n < N; n++) {
    const float *x_row = x + n * C;
    double sum = 0.0;
    for (int64_t c = 0; c < C; c++) sum += x_row[c];
    double m = sum / (double)C;
    double squares = 0.0;
    for (int64_t c = 0; c < C; c++) {
      double d = (double)x_row[c] - m;
      squares += d * d;
    }
    double s = 1.0 / sqrt(squares / (double)C + eps);
    float *out_row = out + n * C;
    for (int64_t c = 0; c < C; c++) {
      double normalized = ((double)x_row[c] - m) * s;
      out_row[c] = (float)(normalized * weight[c] + bias[c]);
    }
    mean[n] = (float)m;
    rstd[n] = (float)s;
  }
}

void mrk_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                            const float *weight, const float *mean, const float *rstd, int64_t N,
                            int64_t C) {
  /* Per row, with xhat = (x - mean) * rstd and g = dout * weight:
       dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
     The parameter gradients sum over rows: they are computed column by column
     below (after the rows) so that each is a single double sum. */
  for (int64_t n = 0; n < N; n++) {
    const float *x_row = x + n * C;
    const float *dout_row = dout + n * C;
    double m = mean[n], s = rstd[n];
    double g_sum = 0.0, g_xhat_sum = 0.0;
    for (int64_t c = 0; c < C; c++) {
      double xhat = ((double)x_row[c] - m) * s;
      double g = (double)dout_row[c] * weight[c];
      g_sum += g;
      g_xhat_sum += g * xhat;
    }
    double g_mean = g_sum / (double)C;
    double g_xhat_mean = g_xhat_sum / (double)C;
    float *dx_row = dx + n * C;
    for (int64_t c = 0; c < C; c++) {
      double xhat = ((double)x_row[c] - m) * s;
      double g = (double)dout_row[c] * weight[c];
      dx_row[c] += (float)(s * (g - g_mean - xhat * g_xhat_mean));
    }
  }
  for (int64_t c0 = 0; c0 < C; c0 += MRK_CHUNK) {
    int64_t width = mrk_min64(MRK_CHUNK, C - c0);
    double dw[MRK_CHUNK] = {0}, db[MRK_CHUNK] = {0};
    for (int64_t n = 0; n < N; n++) {
      const float *x_row = x + n * C + c0;
      const float *dout_row = dout + n * C + c0;
      double m = mean[n], s = rstd[n];
      for (int64_t i = 0; i < width; i++) {
        double xhat = ((double)x_row[i] - m) * s;
        dw[i] += (double)dout_row[i] * xhat;
        db[i] += (double)dout_row[i];
      }
    }
    for (int64_t i = 0; i < width; i++) {
      dweight[c0 + i] += (float)dw[i];
      dbias[c0 + i] += (float)db[i];
    }
  }
}

/* ========================================================================= */
/* Matmul: out[N,OC] = x[N,C] · weight[OC,C]ᵀ + bias[OC]                     */
/* ========================================================================= */

void mrk_matmul_forward(float *out, const float *x, const float *weight, const float *bias, int64_t N,
                        int64_t C, int64_t OC) {
  for (int64_t n = 0; n < N; n++) {
    const float *x_row = x + n * C;
    for (int64_t o = 0; o < OC; o++) {
      double sum = mrk_dot(x_row, weight + o * C, C);
      if (bias != NULL) sum += bias[o];
      out[n * OC + o] = (float)sum;
    }
  }
}

void mrk_matmul_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                         const float *weight, int64_t N, int64_t C, int64_t OC) {
  /* dx[n,c] = sum_o dout[n,o] * weight[o,c]  (sum over o in order) */
  for (int64_t n = 0; n < N; n++) {
    const float *dout_row = dout + n * OC;
    for (int64_t c0 = 0; c0 < C; c0 += MRK_CHUNK) {
      int64_t width = mrk_min64(MRK_CHUNK, C - c0);
      double acc[MRK_CHUNK] = {0};
      for (int64_t o = 0; o < OC; o++) {
        double d = dout_row[o];
        const float *w_row = weight + o * C + c0;
        for (int64_t i = 0; i < width; i++) acc[i] += d * w_row[i];
      }
      for (int64_t i = 0; i < width; i++) dx[n * C + c0 + i] += (float)acc[i];
    }
  }
  /* dweight[o,c] = sum_n dout[n,o] * x[n,c]  (sum over n in order) */
  for (int64_t o = 0; o < OC; o++) {
    for (int64_t c0 = 0; c0 < C; c0 += MRK_CHUNK) {
      int64_t width = mrk_min64(MRK_CHUNK, C - c0);
      double acc[MRK_CHUNK] = {0};
      for (int64_t n = 0; n < N; n++) {
        double d = dout[n * OC + o];
        const float *x_row = x + n * C + c0;
        for (int64_t i = 0; i < width; i++) acc[i] += d * x_row[i];
      }
      for (int64_t i = 0; i < width; i++) dweight[o * C + c0 + i] += (float)acc[i];
    }
  }
  /* dbias[o] = sum_n dout[n,o] */
  if (dbias != NULL) {
    for (int64_t o = 0; o < OC; o++) {
      double sum = 0.0;
      for (int64_t n = 0; n < N; n++) sum += dout[n * OC + o];
      dbias[o] += (float)sum;
    }
  }
}

/* ========================================================================= */
/* Causal multi-head attention                                               */
/* ========================================================================= */

/*
 * qkv is [B,T,3C]: q at channels 0..C, k at C..2C, v at 2C..3C of each row;
 * head h owns channels h*hs..(h+1)*hs of each block. Nothing of size T×T is
 * stored: scores are recomputed from q and k whenever they are needed, and
 * the backward pass rebuilds the probabilities from the saved lse.
 */
typedef struct mrk_heads {
  int64_t T, C, hs;
  double scale; /* 1/sqrt(hs) */
} mrk_heads;

/* Pointers to q, k or v (block 0, 1, 2) of head h at position t of batch row b. */
static const float *mrk_qkv_at(const float *qkv, const mrk_heads *g, int64_t b, int64_t t, int block,
                               int64_t h) {
  return qkv + (b * g->T + t) * 3 * g->C + block * g->C + h * g->hs;
}

/* Scaled score of query position t against key position j. */
static double mrk_score(const float *qkv, const mrk_heads *g, int64_t b, int64_t h, int64_t t, int64_t j) {
  return mrk_dot(mrk_qkv_at(qkv, g, b, t, 0, h), mrk_qkv_at(qkv, g, b, j, 1, h), g->hs) * g->scale;
}

void mrk_attention_forward(float *out, float *lse, const float *qkv, int64_t B, int64_t T, int64_t C,
                           int64_t NH) {
  mrk_heads g = {T, C, C / NH, 1.0 / sqrt((double)(C / NH))};
  for (int64_t b = 0; b < B; b++) {
    for (int64_t h = 0; h < NH; h++) {
      for (int64_t t = 0; t < T; t++) {
        /* log-sum-exp of the scores of row t over keys 0..t */
        double max = -INFINITY;
        for (int64_t j = 0; j <= t; j++) {
          double s = mrk_score(qkv, &g, b, h, t, j);
          if (s > max) max = s;
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= t; j++) sum += exp(mrk_score(qkv, &g, b, h, t, j) - max);
        double row_lse = max + log(sum);
        lse[(b * NH + h) * T + t] = (float)row_lse;
        /* out = sum_j p_j v_j, a chunk of channels at a time */
        float *out_row = out + (b * T + t) * C + h * g.hs;
        for (int64_t c0 = 0; c0 < g.hs; c0 += MRK_CHUNK) {
          int64_t width = mrk_min64(MRK_CHUNK, g.hs - c0);
          double acc[MRK_CHUNK] = {0};
          for (int64_t j = 0; j <= t; j++) {
            double p = exp(mrk_score(qkv, &g, b, h, t, j) - row_lse);
            const float *v = mrk_qkv_at(qkv, &g, b, j, 2, h) + c0;
            for (int64_t i = 0; i < width; i++) acc[i] += p * v[i];
          }
          for (int64_t i = 0; i < width; i++) out_row[c0 + i] = (float)acc[i];
        }
      }
    }
  }
}

/* Inputs of the backward pass of one (b, h) pair. */
typedef struct mrk_att_bwd {
  mrk_heads g;
  const float *qkv, *dout, *out, *lse;
  int64_t b, h, NH;
} mrk_att_bwd;

static const float *mrk_head_row(const float *x, const mrk_att_bwd *a, int64_t t) {
  return x + (a->b * a->g.T + t) * a->g.C + a->h * a->g.hs;
}

/* Probability p[t][j] = exp(score - lse[t]) rebuilt from the saved lse. */
static double mrk_att_prob(const mrk_att_bwd *a, int64_t t, int64_t j) {
  double row_lse = a->lse[(a->b * a->NH + a->h) * a->g.T + t];
  return exp(mrk_score(a->qkv, &a->g, a->b, a->h, t, j) - row_lse);
}

/* D[t] = sum_i dout[t,i] * out[t,i] (the softmax-backward row constant). */
static double mrk_att_D(const mrk_att_bwd *a, int64_t t) {
  return mrk_dot(mrk_head_row(a->dout, a, t), mrk_head_row(a->out, a, t), a->g.hs);
}

/* dS[t][j] = p[t][j] * (dout[t] · v[j] - D[t]), the gradient of the scaled score. */
static double mrk_att_dscore(const mrk_att_bwd *a, int64_t t, int64_t j, double D_t, double *p_out) {
  double p = mrk_att_prob(a, t, j);
  double dp = mrk_dot(mrk_head_row(a->dout, a, t), mrk_qkv_at(a->qkv, &a->g, a->b, j, 2, a->h), a->g.hs);
  if (p_out != NULL) *p_out = p;
  return p * (dp - D_t);
}

void mrk_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                            const float *lse, int64_t B, int64_t T, int64_t C, int64_t NH) {
  /* With s[t][j] = scale * q[t]·k[j] and p = softmax over j <= t:
       dq[t] = scale * sum_{j<=t} dS[t][j] k[j]
       dk[j] = scale * sum_{t>=j} dS[t][j] q[t]
       dv[j] =         sum_{t>=j} p[t][j] dout[t]
     Each is summed in double over its own index, then added to dqkv once. */
  mrk_att_bwd a = {{T, C, C / NH, 1.0 / sqrt((double)(C / NH))}, qkv, dout, out, lse, 0, 0, NH};
  const int64_t hs = a.g.hs;
  for (a.b = 0; a.b < B; a.b++) {
    for (a.h = 0; a.h < NH; a.h++) {
      for (int64_t c0 = 0; c0 < hs; c0 += MRK_CHUNK) {
        int64_t width = mrk_min64(MRK_CHUNK, hs - c0);
        /* dq: row t gathers over keys j <= t */
        for (int64_t t = 0; t < T; t++) {
          double D_t = mrk_att_D(&a, t);
          double acc[MRK_CHUNK] = {0};
          for (int64_t j = 0; j <= t; j++) {
            double ds = mrk_att_dscore(&a, t, j, D_t, NULL);
            const float *k = mrk_qkv_at(qkv, &a.g, a.b, j, 1, a.h) + c0;
            for (int64_t i = 0; i < width; i++) acc[i] += ds * k[i];
          }
          float *dq = dqkv + (a.b * T + t) * 3 * C + 0 * C + a.h * hs + c0;
          for (int64_t i = 0; i < width; i++) dq[i] += (float)(acc[i] * a.g.scale);
        }
        /* dk and dv: key j gathers over queries t >= j */
        for (int64_t j = 0; j < T; j++) {
          double acc_k[MRK_CHUNK] = {0}, acc_v[MRK_CHUNK] = {0};
          for (int64_t t = j; t < T; t++) {
            double p = 0.0;
            double ds = mrk_att_dscore(&a, t, j, mrk_att_D(&a, t), &p);
            const float *q = mrk_qkv_at(qkv, &a.g, a.b, t, 0, a.h) + c0;
            const float *d = mrk_head_row(dout, &a, t) + c0;
            for (int64_t i = 0; i < width; i++) {
              acc_k[i] += ds * q[i];
              acc_v[i] += p * d[i];
            }
          }
          float *dk = dqkv + (a.b * T + j) * 3 * C + 1 * C + a.h * hs + c0;
          float *dv = dqkv + (a.b * T + j) * 3 * C + 2 * C + a.h * hs + c0;
          for (int64_t i = 0; i < width; i++) {
            dk[i] += (float)(acc_k[i] * a.g.scale);
            dv[i] += (float)acc_v[i];
          }
        }
      }
    }
  }
}

/* ========================================================================= */
/* GELU (tanh approximation)                                                 */
/* ========================================================================= */

void mrk_gelu_forward(float *out, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    double v = x[i];
    double u = MRK_GELU_K * (v + MRK_GELU_A * v * v * v);
    out[i] = (float)(0.5 * v * (1.0 + tanh(u)));
  }
}

void mrk_gelu_backward(float *dx, const float *dout, const float *x, int64_t n) {
  /* d/dx [0.5 x (1 + tanh u)] = 0.5 (1 + tanh u) + 0.5 x (1 - tanh² u) u',
     u' = K (1 + 3A x²) */
  for (int64_t i = 0; i < n; i++) {
    double v = x[i];
    double u = MRK_GELU_K * (v + MRK_GELU_A * v * v * v);
    double th = tanh(u);
    double du = MRK_GELU_K * (1.0 + 3.0 * MRK_GELU_A * v * v);
    double grad = 0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * du;
    dx[i] += (float)(grad * dout[i]);
  }
}

/* ========================================================================= */
/* Residual                                                                  */
/* ========================================================================= */

void mrk_residual_forward(float *out, const float *a, const float *b, int64_t n) {
  /* out may alias a or b: each element is read before it is written. */
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void mrk_residual_backward(float *da, float *db, const float *dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float d = dout[i];
    da[i] += d;
    db[i] += d;
  }
}

/* ========================================================================= */
/* Cross-entropy over the last dimension; targets < 0 are ignored            */
/* ========================================================================= */

void mrk_crossentropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets,
                              int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; n++) {
    const float *row = logits + n * V;
    double max = -INFINITY;
    for (int64_t v = 0; v < V; v++) {
      if (row[v] > max) max = row[v];
    }
    double sum = 0.0;
    for (int64_t v = 0; v < V; v++) sum += exp((double)row[v] - max);
    double row_lse = max + log(sum);
    lse[n] = (float)row_lse;
    losses[n] = targets[n] < 0 ? 0.0f : (float)(row_lse - row[targets[n]]);
  }
}

void mrk_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                               const float *lse, int64_t N, int64_t V, double scale) {
  for (int64_t n = 0; n < N; n++) {
    int32_t target = targets[n];
    if (target < 0) continue; /* ignored position: adds nothing */
    const float *row = logits + n * V;
    float *drow = dlogits + n * V;
    double row_lse = lse[n];
    for (int64_t v = 0; v < V; v++) {
      double p = exp((double)row[v] - row_lse);
      double indicator = v == target ? 1.0 : 0.0;
      drow[v] += (float)(scale * (p - indicator));
    }
  }
}

/* ========================================================================= */
/* AdamW with bias correction and decoupled weight decay                     */
/* ========================================================================= */

void mrk_adamw_update(float *param, float *m, float *v, const float *grad, int64_t n, double lr,
                      double beta1, double beta2, double eps, double weight_decay, double step,
                      double grad_scale) {
  double correction1 = 1.0 - pow(beta1, step);
  double correction2 = 1.0 - pow(beta2, step);
  for (int64_t i = 0; i < n; i++) {
    double g = (double)grad[i] * grad_scale;
    double m_new = beta1 * m[i] + (1.0 - beta1) * g;
    double v_new = beta2 * v[i] + (1.0 - beta2) * g * g;
    double m_hat = m_new / correction1;
    double v_hat = v_new / correction2;
    double p = param[i];
    param[i] = (float)(p - lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p));
    m[i] = (float)m_new;
    v[i] = (float)v_new;
  }
}

/* ========================================================================= */
/* Reductions and scaling                                                    */
/* ========================================================================= */

void mrk_sum_squares(float *out, const float *x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
  out[0] = (float)((double)out[0] + sum);
}

void mrk_scale(float *out, const float *x, int64_t n, double alpha) {
  /* out may alias x. */
  for (int64_t i = 0; i < n; i++) out[i] = (float)(alpha * x[i]);
}

/* ========================================================================= */
/* Dispatch                                                                  */
/* ========================================================================= */

void mrk_run(const mk_op_args *a) {
  float *const *o = (float *const *)a->out;
  switch (a->op) {
    case MK_OP_encoder_forward:
      mrk_encoder_forward(o[0], a->in[0], a->in[1], a->in[2], a->B, a->T, a->C);
      break;
    case MK_OP_encoder_backward:
      mrk_encoder_backward(o[0], o[1], a->in[0], a->in[1], a->B, a->T, a->C);
      break;
    case MK_OP_layernorm_forward:
      mrk_layernorm_forward(o[0], o[1], o[2], a->in[0], a->in[1], a->in[2], a->N, a->C, a->eps);
      break;
    case MK_OP_layernorm_backward:
      mrk_layernorm_backward(o[0], o[1], o[2], a->in[0], a->in[1], a->in[2], a->in[3], a->in[4], a->N, a->C);
      break;
    case MK_OP_matmul_forward:
      mrk_matmul_forward(o[0], a->in[0], a->in[1], a->has_bias ? a->in[2] : NULL, a->N, a->C, a->OC);
      break;
    case MK_OP_matmul_backward:
      mrk_matmul_backward(o[0], o[1], a->has_bias ? o[2] : NULL, a->in[0], a->in[1], a->in[2], a->N, a->C,
                          a->OC);
      break;
    case MK_OP_attention_forward:
      mrk_attention_forward(o[0], o[1], a->in[0], a->B, a->T, a->C, a->NH);
      break;
    case MK_OP_attention_backward:
      mrk_attention_backward(o[0], a->in[0], a->in[1], a->in[2], a->in[3], a->B, a->T, a->C, a->NH);
      break;
    case MK_OP_gelu_forward:
      mrk_gelu_forward(o[0], a->in[0], a->n);
      break;
    case MK_OP_gelu_backward:
      mrk_gelu_backward(o[0], a->in[0], a->in[1], a->n);
      break;
    case MK_OP_residual_forward:
      mrk_residual_forward(o[0], a->in[0], a->in[1], a->n);
      break;
    case MK_OP_residual_backward:
      mrk_residual_backward(o[0], o[1], a->in[0], a->n);
      break;
    case MK_OP_crossentropy_forward:
      mrk_crossentropy_forward(o[0], o[1], a->in[0], a->in[1], a->N, a->V);
      break;
    case MK_OP_crossentropy_backward:
      mrk_crossentropy_backward(o[0], a->in[0], a->in[1], a->in[2], a->N, a->V, a->scale);
      break;
    case MK_OP_adamw_update:
      mrk_adamw_update(o[0], o[1], o[2], a->in[0], a->n, a->lr, a->beta1, a->beta2, a->eps, a->weight_decay,
                       a->step, a->grad_scale);
      break;
    case MK_OP_sum_squares:
      mrk_sum_squares(o[0], a->in[0], a->n);
      break;
    case MK_OP_scale:
      mrk_scale(o[0], a->in[0], a->n, a->alpha);
      break;
    case MK_OP_COUNT:
      break;
  }
}
