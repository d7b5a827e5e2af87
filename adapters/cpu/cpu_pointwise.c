/*
 * cpu_pointwise.c — the row and element ops of opset v1 on the CPU.
 *
 * Each kernel walks contiguous memory once (or once per row) in loops the
 * compiler vectorizes: no pointer chasing, no strided access, restrict where
 * the opset forbids aliasing. Pure element maps (gelu, residual, scale) use
 * no restrict because the opset lets `out` alias an input there. Formulas
 * follow "Opset v1" in medley_adapter.h; backward kernels accumulate (+=).
 */
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"

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

void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *weight,
                           const float *bias, int64_t N, int64_t C, double eps) {
  const float *restrict w = weight;
  const float *restrict bi = bias;
  for (int64_t r = 0; r < N; r++) {
    const float *restrict xr = x + r * C;
    float *restrict o = out + r * C;
    float sum = 0.0f;
    for (int64_t c = 0; c < C; c++) sum += xr[c];
    float m = sum / (float)C;
    float var = 0.0f;
    for (int64_t c = 0; c < C; c++) {
      float d = xr[c] - m;
      var += d * d;
    }
    var /= (float)C;
    float s = 1.0f / sqrtf(var + (float)eps);
    for (int64_t c = 0; c < C; c++) o[c] = (xr[c] - m) * s * w[c] + bi[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

void cpu_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                            const float *weight, const float *mean, const float *rstd, int64_t N, int64_t C) {
  const float *restrict w = weight;
  float *restrict dw = dweight;
  float *restrict db = dbias;
  for (int64_t r = 0; r < N; r++) {
    const float *restrict d = dout + r * C;
    const float *restrict xr = x + r * C;
    float *restrict dxr = dx + r * C;
    float m = mean[r], s = rstd[r];
    /* Pass 1: the two row means of the normalized gradient. */
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    for (int64_t c = 0; c < C; c++) {
      float norm = (xr[c] - m) * s;
      float dnorm = w[c] * d[c];
      dnorm_mean += dnorm;
      dnorm_norm_mean += dnorm * norm;
    }
    dnorm_mean /= (float)C;
    dnorm_norm_mean /= (float)C;
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

/* ---- gelu (tanh approximation) ---------------------------------------------- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

void cpu_gelu_forward(float *out, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    float u = GELU_K * (v + GELU_A * v * v * v);
    out[i] = 0.5f * v * (1.0f + tanhf(u));
  }
}

void cpu_gelu_backward(float *dx, const float *dout, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    float u = GELU_K * (v + GELU_A * v * v * v);
    float th = tanhf(u);
    float sech2 = 1.0f - th * th;
    float local = 0.5f * (1.0f + th) + 0.5f * v * sech2 * GELU_K * (1.0f + 3.0f * GELU_A * v * v);
    dx[i] += local * dout[i];
  }
}

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
static float row_logsumexp(const float *restrict row, int64_t V) {
  float m = row[0];
  for (int64_t j = 1; j < V; j++) m = row[j] > m ? row[j] : m;
  float sum = 0.0f;
  for (int64_t j = 0; j < V; j++) sum += expf(row[j] - m);
  return m + logf(sum);
}

void cpu_crossentropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int64_t N,
                              int64_t V) {
  for (int64_t r = 0; r < N; r++) {
    const float *row = logits + r * V;
    float l = row_logsumexp(row, V);
    lse[r] = l;
    losses[r] = targets[r] < 0 ? 0.0f : l - row[targets[r]];
  }
}

void cpu_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets, const float *lse,
                               int64_t N, int64_t V, double scale) {
  float s = (float)scale;
  for (int64_t r = 0; r < N; r++) {
    int32_t target = targets[r];
    if (target < 0) continue;
    const float *restrict row = logits + r * V;
    float *restrict d = dlogits + r * V;
    float l = lse[r];
    for (int64_t j = 0; j < V; j++) d[j] += s * expf(row[j] - l);
    d[target] -= s;
  }
}

/* ---- optimizer and reductions ---------------------------------------------------- */

void cpu_adamw_update(float *param, float *m, float *v, const float *grad, int64_t n, double lr, double beta1,
                      double beta2, double eps, double weight_decay, double step, double grad_scale) {
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
