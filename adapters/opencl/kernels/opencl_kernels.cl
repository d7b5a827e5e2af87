/*
 * opencl_kernels.cl - Medley opset v1 in OpenCL C 1.2 (fp32; i32 ids).
 *
 * Built once per opened device by adapters/opencl/opencl_adapter.c with
 * `-cl-std=CL1.2` plus the -D options below (the host is their source of
 * truth: it sizes every NDRange from the same numbers). generate.sh turns
 * this file into opencl_kernels_source.h; `--option kernels=PATH` loads an
 * edited copy instead, without rebuilding the adapter.
 *
 *   MEDLEY_GEMM_VECTOR   1: register-vector GEMM (CPU devices), 0: local-memory tiles (GPUs)
 *   MEDLEY_TSM, MEDLEY_TSN, MEDLEY_TSK, MEDLEY_WPTM, MEDLEY_WPTN
 *                        local-memory GEMM: tile of C per work-group, K-tile, outputs per work-item
 *   MEDLEY_MR, MEDLEY_NV vector GEMM: rows of C per work-item, and float16 column vectors per row
 *   MEDLEY_SSQ_WG        largest work-group of sum_squares (a power of two)
 *   MEDLEY_NO_FP64       pretend the device has no cl_khr_fp64 (tests the compensated path)
 *
 * Conventions: every tensor argument is a (buffer, element offset) pair, the
 * offset being the tensor view's byte offset / 4 (no sub-buffers). Every
 * *_backward kernel ACCUMULATES (+=). No atomics: each output element is
 * written by exactly one work-item, and every sum runs in a fixed order, so
 * results are identical run to run. Reductions accumulate in ACC (double
 * where the device has cl_khr_fp64, else float); GEMM and element maps run in
 * float, as the cpu adapter does. No fma(), native_* or relaxed math: plain
 * a*b+c (PoCL's fma() is an out-of-line call that blocks vectorisation).
 */

#if defined(cl_khr_fp64) && !defined(MEDLEY_NO_FP64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#define MEDLEY_FP64 1
#define ACC double
#else
#define MEDLEY_FP64 0
#define ACC float
#endif

#ifndef MEDLEY_GEMM_VECTOR
#define MEDLEY_GEMM_VECTOR 0
#endif
#ifndef MEDLEY_TSM
#define MEDLEY_TSM 64
#endif
#ifndef MEDLEY_TSN
#define MEDLEY_TSN 64
#endif
#ifndef MEDLEY_TSK
#define MEDLEY_TSK 16
#endif
#ifndef MEDLEY_WPTM
#define MEDLEY_WPTM 4
#endif
#ifndef MEDLEY_WPTN
#define MEDLEY_WPTN 4
#endif
#ifndef MEDLEY_MR
#define MEDLEY_MR 8
#endif
#ifndef MEDLEY_NV
#define MEDLEY_NV 2
#endif
#ifndef MEDLEY_SSQ_WG
#define MEDLEY_SSQ_WG 256
#endif

/* Channels of a head handled per pass by the attention kernels (private accumulators). */
#define ATT_CHUNK 32

/* ========================================================================= */
/* GEMM: C[M,N] = op(A)[M,K] * op(B)[K,N] (+ bias[N]) (+ C if accumulate)    */
/* ========================================================================= */
/*
 * op(A)(m,k) = TA ? A[k*lda + m] : A[m*lda + k]
 * op(B)(k,n) = TB ? B[n*ldb + k] : B[k*ldb + n]
 * matmul_forward   out = x * W^T + bias        gemm_nt
 * matmul_backward  dx += dout * W             gemm_nn (accumulate)
 *                  dW += dout^T * x            gemm_tn (accumulate)
 */

#define GEMM_ARGS                                                                          \
  const int M, const int N, const int K, __global const float *A, const ulong aoff,        \
      const int lda, __global const float *B, const ulong boff, const int ldb,             \
      __global float *C, const ulong coff, const int ldc, __global const float *bias,      \
      const ulong biasoff, const int has_bias, const int accumulate

#if !MEDLEY_GEMM_VECTOR

/* Local-memory tiles with register blocking (GPUs). A work-group of
   (TSN/WPTN) x (TSM/WPTM) work-items computes a TSM x TSN tile of C; each
   work-item a WPTM x WPTN block whose rows and columns are strided by the
   work-group's extent, so that neighbouring work-items touch neighbouring
   addresses (coalesced global loads, conflict-free local reads). K runs in
   tiles of TSK staged in __local; edges load zeros and skip the stores. */
#define RTSM (MEDLEY_TSM / MEDLEY_WPTM)
#define RTSN (MEDLEY_TSN / MEDLEY_WPTN)
#define GEMM_THREADS (RTSM * RTSN)

#define GEMM_LOCAL(NAME, TA, TB)                                                           \
  __kernel __attribute__((reqd_work_group_size(RTSN, RTSM, 1))) void NAME(GEMM_ARGS) {     \
    __local float Asub[MEDLEY_TSK][MEDLEY_TSM + 1];                                        \
    __local float Bsub[MEDLEY_TSK][MEDLEY_TSN + 1];                                        \
    A += aoff;                                                                             \
    B += boff;                                                                             \
    C += coff;                                                                             \
    const int tx = get_local_id(0), ty = get_local_id(1);                                  \
    const int tid = ty * RTSN + tx;                                                        \
    const int n0 = get_group_id(0) * MEDLEY_TSN, m0 = get_group_id(1) * MEDLEY_TSM;        \
    float acc[MEDLEY_WPTM][MEDLEY_WPTN];                                                   \
    _Pragma("unroll") for (int j = 0; j < MEDLEY_WPTM; j++)                                \
      _Pragma("unroll") for (int i = 0; i < MEDLEY_WPTN; i++) acc[j][i] = 0.0f;            \
    for (int k0 = 0; k0 < K; k0 += MEDLEY_TSK) {                                           \
      for (int idx = tid; idx < MEDLEY_TSM * MEDLEY_TSK; idx += GEMM_THREADS) {            \
        int mm, kk;                                                                        \
        if (TA) {                                                                          \
          mm = idx % MEDLEY_TSM;                                                           \
          kk = idx / MEDLEY_TSM;                                                           \
        } else {                                                                           \
          kk = idx % MEDLEY_TSK;                                                           \
          mm = idx / MEDLEY_TSK;                                                           \
        }                                                                                  \
        const int gm = m0 + mm, gk = k0 + kk;                                              \
        float v = 0.0f;                                                                    \
        if (gm < M && gk < K) v = TA ? A[(size_t)gk * lda + gm] : A[(size_t)gm * lda + gk]; \
        Asub[kk][mm] = v;                                                                  \
      }                                                                                    \
      for (int idx = tid; idx < MEDLEY_TSN * MEDLEY_TSK; idx += GEMM_THREADS) {            \
        int nn, kk;                                                                        \
        if (TB) {                                                                          \
          kk = idx % MEDLEY_TSK;                                                           \
          nn = idx / MEDLEY_TSK;                                                           \
        } else {                                                                           \
          nn = idx % MEDLEY_TSN;                                                           \
          kk = idx / MEDLEY_TSN;                                                           \
        }                                                                                  \
        const int gn = n0 + nn, gk = k0 + kk;                                              \
        float v = 0.0f;                                                                    \
        if (gn < N && gk < K) v = TB ? B[(size_t)gn * ldb + gk] : B[(size_t)gk * ldb + gn]; \
        Bsub[kk][nn] = v;                                                                  \
      }                                                                                    \
      barrier(CLK_LOCAL_MEM_FENCE);                                                        \
      _Pragma("unroll") for (int kk = 0; kk < MEDLEY_TSK; kk++) {                          \
        float breg[MEDLEY_WPTN];                                                           \
        _Pragma("unroll") for (int i = 0; i < MEDLEY_WPTN; i++) breg[i] =                  \
            Bsub[kk][tx + i * RTSN];                                                       \
        _Pragma("unroll") for (int j = 0; j < MEDLEY_WPTM; j++) {                          \
          const float a = Asub[kk][ty + j * RTSM];                                         \
          _Pragma("unroll") for (int i = 0; i < MEDLEY_WPTN; i++) acc[j][i] += a * breg[i]; \
        }                                                                                  \
      }                                                                                    \
      barrier(CLK_LOCAL_MEM_FENCE);                                                        \
    }                                                                                      \
    _Pragma("unroll") for (int j = 0; j < MEDLEY_WPTM; j++) {                              \
      const int gm = m0 + ty + j * RTSM;                                                   \
      _Pragma("unroll") for (int i = 0; i < MEDLEY_WPTN; i++) {                            \
        const int gn = n0 + tx + i * RTSN;                                                 \
        if (gm < M && gn < N) {                                                            \
          float v = acc[j][i];                                                             \
          if (has_bias) v += bias[biasoff + gn];                                           \
          const size_t o = (size_t)gm * ldc + gn;                                          \
          if (accumulate) v += C[o];                                                       \
          C[o] = v;                                                                        \
        }                                                                                  \
      }                                                                                    \
    }                                                                                      \
  }

GEMM_LOCAL(gemm_nn, 0, 0)
GEMM_LOCAL(gemm_nt, 0, 1)
GEMM_LOCAL(gemm_tn, 1, 0)

#else /* MEDLEY_GEMM_VECTOR */

/* Register-vector tiles (CPU devices). A CPU OpenCL runtime runs the
   work-items of a group as a loop; barriers there spill every private value
   to memory, so instead each work-item holds an MR x (16*NV) block of C in
   MR*NV float16 registers and walks K once: per k, NV 16-wide rows of op(B)
   and MR broadcasts of op(A), MR*NV vector multiply-adds (8 x 32 by default:
   16 accumulators, 2 loads of B and 8 broadcasts per 16 multiply-adds). B
   must be k-major (op(B) not transposed); the host transposes W into
   scratch for matmul_forward and runs gemm_nn. Rows past M are clamped for
   loading and not stored; a partial last column block loads through a
   clamped gather. */
#define MR MEDLEY_MR
#define NV MEDLEY_NV
#define NRV (16 * NV)

#define GEMM_VEC(NAME, TA)                                                                 \
  __kernel void NAME(GEMM_ARGS) {                                                          \
    A += aoff;                                                                             \
    B += boff;                                                                             \
    C += coff;                                                                             \
    const int n0 = get_global_id(0) * NRV, m0 = get_global_id(1) * MR;                     \
    if (n0 >= N || m0 >= M) return;                                                        \
    float16 acc[MR][NV];                                                                   \
    size_t arow[MR];                                                                       \
    _Pragma("unroll") for (int r = 0; r < MR; r++) {                                       \
      _Pragma("unroll") for (int v = 0; v < NV; v++) acc[r][v] = (float16)(0.0f);          \
      arow[r] = (size_t)min(m0 + r, M - 1);                                                \
    }                                                                                      \
    if (n0 + NRV <= N) {                                                                   \
      __global const float *bp = B + n0;                                                   \
      for (int k = 0; k < K; k++) {                                                        \
        float16 b[NV];                                                                     \
        _Pragma("unroll") for (int v = 0; v < NV; v++) b[v] = vload16(v, bp);              \
        bp += ldb;                                                                         \
        _Pragma("unroll") for (int r = 0; r < MR; r++) {                                   \
          const float a = TA ? A[(size_t)k * lda + arow[r]] : A[arow[r] * lda + k];        \
          _Pragma("unroll") for (int v = 0; v < NV; v++) acc[r][v] += a * b[v];            \
        }                                                                                  \
      }                                                                                    \
    } else {                                                                               \
      int col[NRV];                                                                        \
      _Pragma("unroll") for (int j = 0; j < NRV; j++) col[j] = min(n0 + j, N - 1);         \
      for (int k = 0; k < K; k++) {                                                        \
        float t[NRV];                                                                      \
        _Pragma("unroll") for (int j = 0; j < NRV; j++) t[j] = B[(size_t)k * ldb + col[j]]; \
        float16 b[NV];                                                                     \
        _Pragma("unroll") for (int v = 0; v < NV; v++) b[v] = vload16(v, t);               \
        _Pragma("unroll") for (int r = 0; r < MR; r++) {                                   \
          const float a = TA ? A[(size_t)k * lda + arow[r]] : A[arow[r] * lda + k];        \
          _Pragma("unroll") for (int v = 0; v < NV; v++) acc[r][v] += a * b[v];            \
        }                                                                                  \
      }                                                                                    \
    }                                                                                      \
    const int cols = min(NRV, N - n0);                                                     \
    _Pragma("unroll") for (int r = 0; r < MR; r++) {                                       \
      if (m0 + r < M) {                                                                    \
        float t[NRV];                                                                      \
        _Pragma("unroll") for (int v = 0; v < NV; v++) vstore16(acc[r][v], v, t);          \
        __global float *crow = C + (size_t)(m0 + r) * ldc + n0;                            \
        for (int j = 0; j < cols; j++) {                                                   \
          float x = t[j];                                                                  \
          if (has_bias) x += bias[biasoff + n0 + j];                                       \
          if (accumulate) x += crow[j];                                                    \
          crow[j] = x;                                                                     \
        }                                                                                  \
      }                                                                                    \
    }                                                                                      \
  }

GEMM_VEC(gemm_nn, 0)
GEMM_VEC(gemm_tn, 1)

/* op(B) transposed is staged: the host runs transpose, then gemm_nn. */
__kernel void gemm_nt(GEMM_ARGS) {}

#endif /* MEDLEY_GEMM_VECTOR */

/* out[k*N + n] = in[n*ld + k] for k < K, n < N. Work-item (k0/16, n0/16)
   moves a 16 x 16 block: 16 contiguous row loads, 16 contiguous row stores. */
__kernel void transpose(__global float *out, const ulong ooff, __global const float *in, const ulong ioff,
                        const int K, const int N, const int ld) {
  const int k0 = get_global_id(0) * 16, n0 = get_global_id(1) * 16;
  if (k0 >= K || n0 >= N) return;
  out += ooff;
  in += ioff;
  if (k0 + 16 <= K && n0 + 16 <= N) {
    float t[16][16];
    for (int i = 0; i < 16; i++) vstore16(vload16(0, in + (size_t)(n0 + i) * ld + k0), 0, &t[i][0]);
    for (int j = 0; j < 16; j++) {
      const float16 c = (float16)(t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], t[5][j], t[6][j], t[7][j], t[8][j],
                                  t[9][j], t[10][j], t[11][j], t[12][j], t[13][j], t[14][j], t[15][j]);
      vstore16(c, 0, out + (size_t)(k0 + j) * N + n0);
    }
  } else {
    for (int j = 0; j < 16 && k0 + j < K; j++) {
      for (int i = 0; i < 16 && n0 + i < N; i++) out[(size_t)(k0 + j) * N + n0 + i] = in[(size_t)(n0 + i) * ld + k0 + j];
    }
  }
}

/* dbias[o] += sum over rows of dout[n*OC + o], rows in order. */
__kernel void column_sums(__global float *dbias, const ulong boff, __global const float *dout, const ulong doff,
                          const ulong rows, const int OC) {
  const int o = get_global_id(0);
  if (o >= OC) return;
  __global const float *d = dout + doff + o;
  ACC sum = 0;
  for (ulong n = 0; n < rows; n++) sum += d[n * OC];
  dbias[boff + o] += (float)sum;
}

/* ========================================================================= */
/* Encoder                                                                   */
/* ========================================================================= */

/* out[b,t,c] = wte[tokens[b,t], c] + wpe[t, c]; global size C x (B*T). */
__kernel void encoder_forward(__global float *out, const ulong ooff, __global const int *tokens, const ulong toff,
                              __global const float *wte, const ulong eoff, __global const float *wpe,
                              const ulong poff, const int T, const int C, const ulong BT) {
  const int c = get_global_id(0);
  const ulong bt = get_global_id(1);
  if (c >= C || bt >= BT) return;
  const int t = (int)(bt % (ulong)T);
  const size_t token = (size_t)tokens[toff + bt];
  out[ooff + bt * C + c] = wte[eoff + token * C + c] + wpe[poff + (size_t)t * C + c];
}

/* dwte[tokens[b,t], c] += dout[b,t,c]: one work-item per channel, positions in
   (b, t) order (the reference's order, so repeated tokens add up identically). */
__kernel void encoder_backward_wte(__global float *dwte, const ulong eoff, __global const float *dout,
                                   const ulong doff, __global const int *tokens, const ulong toff, const int C,
                                   const ulong BT) {
  const int c = get_global_id(0);
  if (c >= C) return;
  for (ulong bt = 0; bt < BT; bt++) {
    const size_t token = (size_t)tokens[toff + bt];
    dwte[eoff + token * C + c] += dout[doff + bt * C + c];
  }
}

/* dwpe[t, c] += sum over b of dout[b,t,c], b in order; global size C x T. */
__kernel void encoder_backward_wpe(__global float *dwpe, const ulong poff, __global const float *dout,
                                   const ulong doff, const int B, const int T, const int C) {
  const int c = get_global_id(0), t = get_global_id(1);
  if (c >= C || t >= T) return;
  __global float *p = dwpe + poff + (size_t)t * C + c;
  float v = *p;
  for (int b = 0; b < B; b++) v += dout[doff + ((size_t)b * T + t) * C + c];
  *p = v;
}

/* ========================================================================= */
/* LayerNorm (biased variance, two passes)                                   */
/* ========================================================================= */

/* One work-item per row. */
__kernel void layernorm_forward(__global float *out, const ulong ooff, __global float *mean, const ulong moff,
                                __global float *rstd, const ulong roff, __global const float *x, const ulong xoff,
                                __global const float *weight, const ulong woff, __global const float *bias,
                                const ulong boff, const ulong N, const int C, const float eps) {
  const ulong n = get_global_id(0);
  if (n >= N) return;
  __global const float *xr = x + xoff + n * C;
  __global const float *w = weight + woff;
  __global const float *bi = bias + boff;
  __global float *o = out + ooff + n * C;
  ACC sum = 0;
  for (int c = 0; c < C; c++) sum += xr[c];
  const ACC m = sum / (ACC)C;
  ACC squares = 0;
  for (int c = 0; c < C; c++) {
    const ACC d = (ACC)xr[c] - m;
    squares += d * d;
  }
  const ACC s = (ACC)1 / sqrt(squares / (ACC)C + (ACC)eps);
  for (int c = 0; c < C; c++) o[c] = (float)(((ACC)xr[c] - m) * s * (ACC)w[c] + (ACC)bi[c]);
  mean[moff + n] = (float)m;
  rstd[roff + n] = (float)s;
}

/* dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight; one work-item per row. */
__kernel void layernorm_backward_dx(__global float *dx, const ulong dxoff, __global const float *dout,
                                    const ulong doff, __global const float *x, const ulong xoff,
                                    __global const float *weight, const ulong woff, __global const float *mean,
                                    const ulong moff, __global const float *rstd, const ulong roff, const ulong N,
                                    const int C) {
  const ulong n = get_global_id(0);
  if (n >= N) return;
  __global const float *xr = x + xoff + n * C;
  __global const float *d = dout + doff + n * C;
  __global const float *w = weight + woff;
  __global float *o = dx + dxoff + n * C;
  const ACC m = mean[moff + n], s = rstd[roff + n];
  ACC g_sum = 0, gx_sum = 0;
  for (int c = 0; c < C; c++) {
    const ACC xhat = ((ACC)xr[c] - m) * s;
    const ACC g = (ACC)d[c] * (ACC)w[c];
    g_sum += g;
    gx_sum += g * xhat;
  }
  const ACC g_mean = g_sum / (ACC)C, gx_mean = gx_sum / (ACC)C;
  for (int c = 0; c < C; c++) {
    const ACC xhat = ((ACC)xr[c] - m) * s;
    const ACC g = (ACC)d[c] * (ACC)w[c];
    o[c] += (float)(s * (g - g_mean - xhat * gx_mean));
  }
}

/* dweight[c] += sum_n dout*xhat, dbias[c] += sum_n dout; one work-item per channel, rows in order. */
__kernel void layernorm_backward_dwb(__global float *dweight, const ulong dwoff, __global float *dbias,
                                     const ulong dboff, __global const float *dout, const ulong doff,
                                     __global const float *x, const ulong xoff, __global const float *mean,
                                     const ulong moff, __global const float *rstd, const ulong roff, const ulong N,
                                     const int C) {
  const int c = get_global_id(0);
  if (c >= C) return;
  ACC dw = 0, db = 0;
  for (ulong n = 0; n < N; n++) {
    const ACC g = dout[doff + n * C + c];
    const ACC xhat = ((ACC)x[xoff + n * C + c] - (ACC)mean[moff + n]) * (ACC)rstd[roff + n];
    dw += g * xhat;
    db += g;
  }
  dweight[dwoff + c] += (float)dw;
  dbias[dboff + c] += (float)db;
}

/* ========================================================================= */
/* Causal multi-head attention                                               */
/* ========================================================================= */
/*
 * qkv[B,T,3C]: q, k, v at channels [0,C), [C,2C), [2C,3C) of each row; head h
 * owns hs = C/NH channels of each. Nothing of size T x T is stored: scores
 * are recomputed, and the backward pass rebuilds probabilities from lse.
 * Work-item (t, b*NH + h). Output channels are accumulated ATT_CHUNK at a
 * time in private memory.
 */

static float att_dot(__global const float *a, __global const float *b, const int n) {
  float s = 0.0f;
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

__kernel void attention_forward(__global float *out, const ulong ooff, __global float *lse, const ulong loff,
                                __global const float *qkv, const ulong qoff, const int B, const int T, const int C,
                                const int NH, const float scale) {
  const int t = get_global_id(0), bh = get_global_id(1);
  if (t >= T || bh >= B * NH) return;
  const int b = bh / NH, h = bh % NH, hs = C / NH;
  const size_t row3 = (size_t)3 * C;
  __global const float *base = qkv + qoff + (size_t)b * T * row3 + (size_t)h * hs;
  __global const float *q = base + (size_t)t * row3;
  /* log-sum-exp of the scaled scores of row t, with a running maximum */
  float m = -INFINITY;
  ACC l = 0;
  for (int j = 0; j <= t; j++) {
    const float s = att_dot(q, base + (size_t)j * row3 + C, hs) * scale;
    if (s > m) {
      l = l * (ACC)exp(m - s) + (ACC)1;
      m = s;
    } else {
      l += (ACC)exp(s - m);
    }
  }
  const float row_lse = m + (float)log(l);
  lse[loff + (size_t)bh * T + t] = row_lse;
  __global float *o = out + ooff + ((size_t)b * T + t) * C + (size_t)h * hs;
  for (int d0 = 0; d0 < hs; d0 += ATT_CHUNK) {
    const int width = min(ATT_CHUNK, hs - d0);
    float acc[ATT_CHUNK];
    for (int i = 0; i < ATT_CHUNK; i++) acc[i] = 0.0f;
    for (int j = 0; j <= t; j++) {
      __global const float *kv = base + (size_t)j * row3;
      const float p = exp(att_dot(q, kv + C, hs) * scale - row_lse);
      __global const float *v = kv + 2 * C + d0;
      for (int i = 0; i < width; i++) acc[i] += p * v[i];
    }
    for (int i = 0; i < width; i++) o[d0 + i] = acc[i];
  }
}

/* dq[t] += scale * sum_{j<=t} dS[t,j] k[j],  dS = p (dout[t].v[j] - D[t]),  D[t] = dout[t].out[t]. */
__kernel void attention_backward_dq(__global float *dqkv, const ulong gqoff, __global const float *dout,
                                    const ulong doff, __global const float *qkv, const ulong qoff,
                                    __global const float *out, const ulong ooff, __global const float *lse,
                                    const ulong loff, const int B, const int T, const int C, const int NH,
                                    const float scale) {
  const int t = get_global_id(0), bh = get_global_id(1);
  if (t >= T || bh >= B * NH) return;
  const int b = bh / NH, h = bh % NH, hs = C / NH;
  const size_t row3 = (size_t)3 * C;
  __global const float *base = qkv + qoff + (size_t)b * T * row3 + (size_t)h * hs;
  __global const float *q = base + (size_t)t * row3;
  const size_t head_row = ((size_t)b * T + t) * C + (size_t)h * hs;
  __global const float *dt = dout + doff + head_row;
  const float D = att_dot(dt, out + ooff + head_row, hs);
  const float row_lse = lse[loff + (size_t)bh * T + t];
  __global float *dq = dqkv + gqoff + (size_t)b * T * row3 + (size_t)t * row3 + (size_t)h * hs;
  for (int d0 = 0; d0 < hs; d0 += ATT_CHUNK) {
    const int width = min(ATT_CHUNK, hs - d0);
    float acc[ATT_CHUNK];
    for (int i = 0; i < ATT_CHUNK; i++) acc[i] = 0.0f;
    for (int j = 0; j <= t; j++) {
      __global const float *kv = base + (size_t)j * row3;
      const float p = exp(att_dot(q, kv + C, hs) * scale - row_lse);
      const float ds = p * (att_dot(dt, kv + 2 * C, hs) - D);
      __global const float *k = kv + C + d0;
      for (int i = 0; i < width; i++) acc[i] += ds * k[i];
    }
    for (int i = 0; i < width; i++) dq[d0 + i] += acc[i] * scale;
  }
}

/* dk[j] += scale * sum_{t>=j} dS[t,j] q[t],  dv[j] += sum_{t>=j} p[t,j] dout[t]; work-item (j, b*NH + h). */
__kernel void attention_backward_dkv(__global float *dqkv, const ulong gqoff, __global const float *dout,
                                     const ulong doff, __global const float *qkv, const ulong qoff,
                                     __global const float *out, const ulong ooff, __global const float *lse,
                                     const ulong loff, const int B, const int T, const int C, const int NH,
                                     const float scale) {
  const int j = get_global_id(0), bh = get_global_id(1);
  if (j >= T || bh >= B * NH) return;
  const int b = bh / NH, h = bh % NH, hs = C / NH;
  const size_t row3 = (size_t)3 * C;
  __global const float *base = qkv + qoff + (size_t)b * T * row3 + (size_t)h * hs;
  __global const float *k = base + (size_t)j * row3 + C;
  __global const float *v = base + (size_t)j * row3 + 2 * C;
  __global float *dk = dqkv + gqoff + (size_t)b * T * row3 + (size_t)j * row3 + C + (size_t)h * hs;
  __global float *dv = dk + C;
  for (int d0 = 0; d0 < hs; d0 += ATT_CHUNK) {
    const int width = min(ATT_CHUNK, hs - d0);
    float acc_k[ATT_CHUNK], acc_v[ATT_CHUNK];
    for (int i = 0; i < ATT_CHUNK; i++) {
      acc_k[i] = 0.0f;
      acc_v[i] = 0.0f;
    }
    for (int t = j; t < T; t++) {
      __global const float *q = base + (size_t)t * row3;
      const size_t head_row = ((size_t)b * T + t) * C + (size_t)h * hs;
      __global const float *dt = dout + doff + head_row;
      const float D = att_dot(dt, out + ooff + head_row, hs);
      const float p = exp(att_dot(q, k, hs) * scale - lse[loff + (size_t)bh * T + t]);
      const float ds = p * (att_dot(dt, v, hs) - D);
      for (int i = 0; i < width; i++) {
        acc_k[i] += ds * q[d0 + i];
        acc_v[i] += p * dt[d0 + i];
      }
    }
    for (int i = 0; i < width; i++) {
      dk[d0 + i] += acc_k[i] * scale;
      dv[d0 + i] += acc_v[i];
    }
  }
}

/* ========================================================================= */
/* Element maps                                                              */
/* ========================================================================= */
/*
 * GELU (tanh form) through the logistic: 0.5 (1 + tanh u) = 1 / (1 + e),
 * e = exp(-2u), so gelu(x) = x / (1 + e) and
 * gelu'(x) = s + 2 x s (1 - s) u',  s = 1/(1+e), 1 - s = e s,  u' = K (1 + 3A x^2).
 * No cancellation for u << 0 (1 + tanh u would lose the digits in float).
 */
#define GELU_K 0.7978845608028654f
#define GELU_A 0.044715f

__kernel void gelu_forward(__global float *out, const ulong ooff, __global const float *x, const ulong xoff,
                           const ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float v = x[xoff + i];
  const float u = GELU_K * (v + GELU_A * v * v * v);
  out[ooff + i] = v / (1.0f + exp(min(-2.0f * u, 88.0f)));
}

__kernel void gelu_backward(__global float *dx, const ulong dxoff, __global const float *dout, const ulong doff,
                            __global const float *x, const ulong xoff, const ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float v = x[xoff + i];
  const float u = GELU_K * (v + GELU_A * v * v * v);
  const float e = exp(min(-2.0f * u, 88.0f));
  const float s = 1.0f / (1.0f + e);
  const float du = GELU_K * (1.0f + 3.0f * GELU_A * v * v);
  const float local_grad = s + 2.0f * v * (e * s) * s * du;
  dx[dxoff + i] += local_grad * dout[doff + i];
}

/* out = a + b (out may alias a or b: each element is read before it is written, by one work-item). */
__kernel void residual_forward(__global float *out, const ulong ooff, __global const float *a, const ulong aoff,
                               __global const float *b, const ulong boff, const ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  out[ooff + i] = a[aoff + i] + b[boff + i];
}

__kernel void residual_backward(__global float *da, const ulong aoff, __global float *db, const ulong boff,
                                __global const float *dout, const ulong doff, const ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float d = dout[doff + i];
  da[aoff + i] += d;
  db[boff + i] += d;
}

/* out = alpha * x (out may alias x). */
__kernel void scale_kernel(__global float *out, const ulong ooff, __global const float *x, const ulong xoff,
                           const ulong n, const float alpha) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  out[ooff + i] = alpha * x[xoff + i];
}

/* ========================================================================= */
/* Cross-entropy over the last dimension; targets < 0 are ignored            */
/* ========================================================================= */

/* One work-item per row: lse against the row max, loss = lse - logit[target]. */
__kernel void crossentropy_forward(__global float *losses, const ulong loff, __global float *lse,
                                   const ulong soff, __global const float *logits, const ulong goff,
                                   __global const int *targets, const ulong toff, const ulong N, const int V) {
  const ulong n = get_global_id(0);
  if (n >= N) return;
  __global const float *row = logits + goff + n * V;
  float m = -INFINITY;
  for (int v = 0; v < V; v++) m = fmax(m, row[v]);
  ACC sum = 0;
  for (int v = 0; v < V; v++) sum += (ACC)exp(row[v] - m);
  const ACC row_lse = (ACC)m + log(sum);
  lse[soff + n] = (float)row_lse;
  const int target = targets[toff + n];
  losses[loff + n] = target < 0 ? 0.0f : (float)(row_lse - (ACC)row[target]);
}

/* dlogits += scale * (softmax - onehot(target)); ignored rows add nothing. Global size V x N. */
__kernel void crossentropy_backward(__global float *dlogits, const ulong dloff, __global const float *logits,
                                    const ulong goff, __global const int *targets, const ulong toff,
                                    __global const float *lse, const ulong soff, const ulong N, const int V,
                                    const float scale) {
  const int v = get_global_id(0);
  const ulong n = get_global_id(1);
  if (v >= V || n >= N) return;
  const int target = targets[toff + n];
  if (target < 0) return;
  const size_t i = n * V + v;
  const float p = exp(logits[goff + i] - lse[soff + n]);
  dlogits[dloff + i] += scale * (p - (v == target ? 1.0f : 0.0f));
}

/* ========================================================================= */
/* AdamW (bias correction precomputed by the host as c1 = 1/(1-beta1^step),  */
/* c2 = 1/(1-beta2^step))                                                    */
/* ========================================================================= */

__kernel void adamw_update(__global float *param, const ulong poff, __global float *m, const ulong moff,
                           __global float *v, const ulong voff, __global const float *grad, const ulong goff,
                           const ulong n, const float lr, const float beta1, const float beta2, const float eps,
                           const float weight_decay, const float c1, const float c2, const float grad_scale) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float g = grad[goff + i] * grad_scale;
  const float mi = beta1 * m[moff + i] + (1.0f - beta1) * g;
  const float vi = beta2 * v[voff + i] + (1.0f - beta2) * g * g;
  m[moff + i] = mi;
  v[voff + i] = vi;
  const float mhat = mi * c1, vhat = vi * c2;
  const float p = param[poff + i];
  param[poff + i] = p - lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p);
}

/* ========================================================================= */
/* sum_squares: out[0] += sum of x^2                                         */
/* ========================================================================= */
/*
 * One work-group (local size a power of two <= MEDLEY_SSQ_WG). Work-item i
 * sums x[i], x[i+L], x[i+2L], ... then a fixed tree combines the partials,
 * so the order never changes. With cl_khr_fp64 the sums are doubles; without
 * it, each partial is a float pair (sum, compensation) kept with two-sum
 * (Knuth), combined pairwise the same way.
 */
__kernel void sum_squares(__global float *out, const ulong ooff, __global const float *x, const ulong xoff,
                          const ulong n) {
  const int lid = get_local_id(0), L = get_local_size(0);
  __global const float *p = x + xoff;
#if MEDLEY_FP64
  __local double part[MEDLEY_SSQ_WG];
  double s = 0.0;
  for (ulong i = lid; i < n; i += L) {
    const double v = p[i];
    s += v * v;
  }
  part[lid] = s;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int stride = L / 2; stride > 0; stride /= 2) {
    if (lid < stride) part[lid] += part[lid + stride];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) out[ooff] = (float)((double)out[ooff] + part[0]);
#else
  __local float hi[MEDLEY_SSQ_WG];
  __local float lo[MEDLEY_SSQ_WG];
  float s = 0.0f, c = 0.0f;
  for (ulong i = lid; i < n; i += L) {
    const float v = p[i];
    const float y = v * v; /* the square's own rounding error is left out: 2^-24 relative */
    const float t = s + y;
    const float bp = t - s;
    c += (s - (t - bp)) + (y - bp);
    s = t;
  }
  hi[lid] = s;
  lo[lid] = c;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int stride = L / 2; stride > 0; stride /= 2) {
    if (lid < stride) {
      const float a = hi[lid], b = hi[lid + stride];
      const float t = a + b;
      const float bp = t - a;
      const float err = (a - (t - bp)) + (b - bp);
      hi[lid] = t;
      lo[lid] = lo[lid] + lo[lid + stride] + err;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) {
    const float o = out[ooff];
    const float t = o + hi[0];
    const float bp = t - o;
    const float err = (o - (t - bp)) + (hi[0] - bp);
    out[ooff] = t + (err + lo[0]);
  }
#endif
}
