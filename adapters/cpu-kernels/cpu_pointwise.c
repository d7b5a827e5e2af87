/*
 * cpu_pointwise.c — the row and element ops of opset v1 on the CPU.
 *
 * Each kernel walks contiguous memory once (or once per row) in loops the
 * compiler vectorizes: no pointer chasing, no strided access, restrict where
 * the opset forbids aliasing. Pure element maps (gelu, residual, scale) use
 * no restrict, so `out` may alias an input (the opset allows it for residual
 * and scale). Formulas follow "Opset v1" in medley_adapter.h; backward
 * kernels accumulate (+=). Kernels with exp or row reductions are built as
 * baseline/AVX2 twins (CPU_TWINS in cpu_math.h).
 */
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"
#include "cpu_math.h"

/* ---- encoder ------------------------------------------------------------ */

void cpu_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B,
                         int64_t T, int64_t C) {
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = 0; t < T; t++) {
      float *restrict o = out + (b * T + t) * C;
      const float *restrict e = wte + (int64_t)tokens[b * T + t] * C;
      const float *restrict p = wpe + t * C;
      for (int64_t c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
  }
}

void cpu_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B,
                          int64_t T, int64_t C) {
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = 0; t < T; t++) {
      const float *restrict d = dout + (b * T + t) * C;
      float *restrict e = dwte + (int64_t)tokens[b * T + t] * C;
      float *restrict p = dwpe + t * C;
      for (int64_t c = 0; c < C; c++) {
        e[c] += d[c];
        p[c] += d[c];
      }
    }
  }
}

/* ---- layernorm ------------------------------------------------------------ */

static inline CPU_KERNEL_BODY void layernorm_forward_body(float *out, float *mean, float *rstd,
                                                          const float *x, const float *weight,
                                                          const float *bias, int64_t N, int64_t C,
                                                          double eps) {
  const float *restrict w = weight;
  const float *restrict bi = bias;
  for (int64_t r = 0; r < N; r++) {
    const float *restrict xr = x + r * C;
    float *restrict o = out + r * C;
    float m = cpu_sum(xr, C) / (float)C;
    float var = cpu_sum_sq_dev(xr, C, m) / (float)C;
    float s = 1.0f / sqrtf(var + (float)eps);
    for (int64_t c = 0; c < C; c++) o[c] = (xr[c] - m) * s * w[c] + bi[c];
    mean[r] = m;
    rstd[r] = s;
  }
}
CPU_TWINS(layernorm_forward,
          (float *out, float *mean, float *rstd, const float *x, const float *weight, const float *bias,
           int64_t N, int64_t C, double eps),
          (out, mean, rstd, x, weight, bias, N, C, eps))

static inline CPU_KERNEL_BODY void layernorm_backward_body(float *dx, float *dweight, float *dbias,
                                                           const float *dout, const float *x,
                                                           const float *weight, const float *mean,
                                                           const float *rstd, int64_t N, int64_t C) {
  const float *restrict w = weight;
  float *restrict dw = dweight;
  float *restrict db = dbias;
  for (int64_t r = 0; r < N; r++) {
    const float *restrict d = dout + r * C;
    const float *restrict xr = x + r * C;
    float *restrict dxr = dx + r * C;
    float m = mean[r], s = rstd[r];
    /* Pass 1: the two row means of the normalized gradient, in lanes. */
    float lanes_d[CPU_LANES] = {0}, lanes_dn[CPU_LANES] = {0};
    int64_t c0 = 0;
    for (; c0 + CPU_LANES <= C; c0 += CPU_LANES) {
      for (int k = 0; k < CPU_LANES; k++) {
        float norm = (xr[c0 + k] - m) * s;
        float dnorm = w[c0 + k] * d[c0 + k];
        lanes_d[k] += dnorm;
        lanes_dn[k] += dnorm * norm;
      }
    }
    for (int64_t c = c0; c < C; c++) {
      float norm = (xr[c] - m) * s;
      float dnorm = w[c] * d[c];
      lanes_d[0] += dnorm;
      lanes_dn[0] += dnorm * norm;
    }
    float dnorm_mean = cpu_lanes_total(lanes_d) / (float)C;
    float dnorm_norm_mean = cpu_lanes_total(lanes_dn) / (float)C;
    /* Pass 2: all three gradients at once. */
    for (int64_t c = 0; c < C; c++) {
      float norm = (xr[c] - m) * s;
      float dnorm = w[c] * d[c];
      db[c] += d[c];
      dw[c] += norm * d[c];
      dxr[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
  }
}
CPU_TWINS(layernorm_backward,
          (float *dx, float *dweight, float *dbias, const float *dout, const float *x, const float *weight,
           const float *mean, const float *rstd, int64_t N, int64_t C),
          (dx, dweight, dbias, dout, x, weight, mean, rstd, N, C))

/* ---- gelu (tanh approximation) ---------------------------------------------- */

/*
 * With u = K (x + A x³), the opset's 0.5 (1 + tanh u) equals the logistic
 * s = 1 / (1 + e),  e = exp(-2u), so
 *   gelu(x)  = x s
 *   gelu'(x) = s + 0.5 x (1 - tanh² u) u' = s + 2 x s (1 - s) u',  1 - s = e s,
 *   u'       = K (1 + 3 A x²).
 * This form has no cancellation (1 + tanh u for u << 0 loses digits in float)
 * and uses the vectorizable cpu_exp instead of tanhf.
 */
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

static inline CPU_KERNEL_BODY void gelu_forward_body(float *out, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    float u = GELU_K * (v + GELU_A * v * v * v);
    out[i] = v / (1.0f + cpu_exp(-2.0f * u));
  }
}
CPU_TWINS(gelu_forward, (float *out, const float *x, int64_t n), (out, x, n))

static inline CPU_KERNEL_BODY void gelu_backward_body(float *dx, const float *dout, const float *x,
                                                      int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    float u = GELU_K * (v + GELU_A * v * v * v);
    float e = cpu_exp(-2.0f * u);
    float s = 1.0f / (1.0f + e);
    float du = GELU_K * (1.0f + 3.0f * GELU_A * v * v);
    float local = s + 2.0f * v * (e * s) * s * du;
    dx[i] += local * dout[i];
  }
}
CPU_TWINS(gelu_backward, (float *dx, const float *dout, const float *x, int64_t n), (dx, dout, x, n))

/* ---- residual and scale ------------------------------------------------------ */

void cpu_residual_forward(float *out, const float *a, const float *b, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_residual_backward(float *da, float *db, const float *dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float d = dout[i];
    da[i] += d;
    db[i] += d;
  }
}

void cpu_scale(float *out, const float *x, int64_t n, double alpha) {
  float a = (float)alpha;
  for (int64_t i = 0; i < n; i++) out[i] = a * x[i];
}

/* ---- crossentropy ---------------------------------------------------------------- */

/* log Σ exp(row), computed against the row max so no exp overflows. */
static inline float row_logsumexp(const float *restrict row, int64_t V) {
  float m = cpu_max(row, V);
  return m + logf(cpu_exp_sum(row, NULL, V, m));
}

static inline CPU_KERNEL_BODY void crossentropy_forward_body(float *losses, float *lse, const float *logits,
                                                             const int32_t *targets, int64_t N, int64_t V) {
  for (int64_t r = 0; r < N; r++) {
    const float *row = logits + r * V;
    float l = row_logsumexp(row, V);
    lse[r] = l;
    losses[r] = targets[r] < 0 ? 0.0f : l - row[targets[r]];
  }
}
CPU_TWINS(crossentropy_forward,
          (float *losses, float *lse, const float *logits, const int32_t *targets, int64_t N, int64_t V),
          (losses, lse, logits, targets, N, V))

static inline CPU_KERNEL_BODY void crossentropy_backward_body(float *dlogits, const float *logits,
                                                              const int32_t *targets, const float *lse,
                                                              int64_t N, int64_t V, double scale) {
  float s = (float)scale;
  for (int64_t r = 0; r < N; r++) {
    int32_t target = targets[r];
    if (target < 0) continue;
    const float *restrict row = logits + r * V;
    float *restrict d = dlogits + r * V;
    float l = lse[r];
    for (int64_t j = 0; j < V; j++) d[j] += s * cpu_exp(row[j] - l);
    d[target] -= s;
  }
}
CPU_TWINS(crossentropy_backward,
          (float *dlogits, const float *logits, const int32_t *targets, const float *lse, int64_t N,
           int64_t V, double scale),
          (dlogits, logits, targets, lse, N, V, scale))

/* ---- optimizer and reductions ---------------------------------------------------- */

static inline CPU_KERNEL_BODY void adamw_update_body(float *param, float *m, float *v, const float *grad,
                                                     int64_t n, double lr, double beta1, double beta2,
                                                     double eps, double weight_decay, double step,
                                                     double grad_scale) {
  float *restrict p = param;
  float *restrict mm = m;
  float *restrict vv = v;
  const float *restrict g = grad;
  const float b1 = (float)beta1, b2 = (float)beta2;
  const float c1 = (float)(1.0 / (1.0 - pow(beta1, step)));
  const float c2 = (float)(1.0 / (1.0 - pow(beta2, step)));
  const float rate = (float)lr, e = (float)eps, wd = (float)weight_decay, gs = (float)grad_scale;
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] * gs;
    float mi = b1 * mm[i] + (1.0f - b1) * gi;
    float vi = b2 * vv[i] + (1.0f - b2) * gi * gi;
    mm[i] = mi;
    vv[i] = vi;
    float mhat = mi * c1, vhat = vi * c2;
    p[i] -= rate * (mhat / (sqrtf(vhat) + e) + wd * p[i]);
  }
}
CPU_TWINS(adamw_update,
          (float *param, float *m, float *v, const float *grad, int64_t n, double lr, double beta1,
           double beta2, double eps, double weight_decay, double step, double grad_scale),
          (param, m, v, grad, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale))

void cpu_sum_squares(float *out, const float *x, int64_t n) {
  /* Eight independent double accumulators: exact enough and pipelined. */
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; k++) {
      double v = (double)x[i + k];
      acc[k] += v * v;
    }
  }
  for (; i < n; i++) acc[0] += (double)x[i] * (double)x[i];
  double total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  out[0] = (float)((double)out[0] + total);
}
