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
 *   MEDLEY_CPU_DEVICE    defined on CPU devices: inline polynomial exp (see MEDLEY_EXP)
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
/* Largest head size (in float16 vectors) of the vector attention kernels. */
#define ATT_MAXV 8

/*
 * exp. On CPU devices (the host defines MEDLEY_CPU_DEVICE) the OpenCL exp()
 * is an out-of-line library call that stops the compiler from vectorising
 * across work-items, so an inline one is used: exp(z) = 2^n exp(r), n =
 * round(z / ln2) by the 1.5*2^23 trick, r = z - n ln2 with a two-part ln2,
 * exp(r) by a degree-7 Taylor polynomial, 2^n built in the exponent bits;
 * z is clamped to [-87, 88] (exp(-87) ~ 1.6e-38 stands in for anything
 * smaller). About 2 ulp, like the cpu adapter's cpu_exp. GPUs use exp().
 */
#define MEDLEY_EXP_BODY(T, IT, AS_INT, AS_FLOAT)                                          \
  z = z < (T)(-87.0f) ? (T)(-87.0f) : z;                                                  \
  z = z > (T)(88.0f) ? (T)(88.0f) : z;                                                    \
  const T t = z * (T)(1.44269504088896341f) + (T)(12582912.0f);                           \
  const T n = t - (T)(12582912.0f);                                                       \
  const IT n_int = AS_INT(t) - (IT)(0x4B400000);                                          \
  const T r = (z - n * (T)(0.693145751953125f)) - n * (T)(1.428606765330187e-06f);        \
  T q = (T)(1.0f / 5040.0f);                                                              \
  q = q * r + (T)(1.0f / 720.0f);                                                         \
  q = q * r + (T)(1.0f / 120.0f);                                                         \
  q = q * r + (T)(1.0f / 24.0f);                                                          \
  q = q * r + (T)(1.0f / 6.0f);                                                           \
  q = q * r + (T)(0.5f);                                                                  \
  q = q * r + (T)(1.0f);                                                                  \
  q = q * r + (T)(1.0f);                                                                  \
  return q * AS_FLOAT((n_int + (IT)(127)) << 23);

static inline float medley_exp_poly(float z) { MEDLEY_EXP_BODY(float, int, as_int, as_float) }

#ifdef MEDLEY_CPU_DEVICE
#define MEDLEY_EXP(x) medley_exp_poly(x)
#else
#define MEDLEY_EXP(x) exp(x)
#endif

/* Sum of the 16 lanes, in a fixed pairwise order. */
static inline float hsum16(const float16 v) {
  const float8 a = v.lo + v.hi;
  const float4 b = a.lo + a.hi;
  const float2 c = b.lo + b.hi;
  return c.lo + c.hi;
}

/* 16 lanes of ACC, for the row and column kernels' CPU paths (16 channels a work-item step). */
#if MEDLEY_FP64
#define ACC16 double16
#define TO_ACC16(x) convert_double16(x)
#define FROM_ACC16(x) convert_float16(x)
#else
#define ACC16 float16
#define TO_ACC16(x) (x)
#define FROM_ACC16(x) (x)
#endif

static inline ACC hsum_acc16(const ACC16 v) {
  ACC s[16];
  vstore16(v, 0, s);
  return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) +
         (((s[8] + s[9]) + (s[10] + s[11])) + ((s[12] + s[13]) + (s[14] + s[15])));
}

static inline float16 medley_exp16(float16 z) { MEDLEY_EXP_BODY(float16, int16, as_int16, as_float16) }

/*
 * Column kernels (dbias, dweight, dwte, dwpe) sum over rows per channel: one
 * work-item per channel, rows in order. On CPU devices, when the channel
 * count is a multiple of 16, one work-item takes 16 neighbouring channels as
 * a float16 (the same per-channel order, so the same results): COL16(C) says
 * which, and the host launches C/16 or C work-items to match.
 */
#ifdef MEDLEY_CPU_DEVICE
#define COL16(C) (((C) & 15) == 0)
#else
#define COL16(C) 0
#endif

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
   16 accumulators, 2 loads of B and 8 broadcasts per 16 multiply-adds).
   Dimension 0 of the NDRange walks row blocks, so work-items that run one
   after another reuse the same K x 32 panel of B from cache. B
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
    const int m0 = get_global_id(0) * MR, n0 = get_global_id(1) * NRV; /* rows fastest: neighbours share a B panel */                     \
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
  const int g = get_global_id(0);
  if (COL16(OC)) {
    const int o = g * 16;
    if (o >= OC) return;
    __global const float *d = dout + doff + o;
    ACC16 sum = (ACC16)(0);
    for (ulong n = 0; n < rows; n++) sum += TO_ACC16(vload16(0, d + n * OC));
    __global float *db = dbias + boff + o;
    vstore16(vload16(0, db) + FROM_ACC16(sum), 0, db);
    return;
  }
  const int o = g;
  if (o >= OC) return;
  __global const float *d = dout + doff + o;
  ACC sum = 0;
  for (ulong n = 0; n < rows; n++) sum += d[n * OC];
  dbias[boff + o] += (float)sum;
}

/* ========================================================================= */
/* Encoder                                                                   */
/* ========================================================================= */

/* out[b,t,c] = wte[tokens[b,t], c] + wpe[t, c]; global size C (or C/16, COL16) x (B*T). */
__kernel void encoder_forward(__global float *out, const ulong ooff, __global const int *tokens, const ulong toff,
                              __global const float *wte, const ulong eoff, __global const float *wpe,
                              const ulong poff, const int T, const int C, const ulong BT) {
  const int g = get_global_id(0);
  const ulong bt = get_global_id(1);
  if (bt >= BT) return;
  const int t = (int)(bt % (ulong)T);
  const size_t token = (size_t)tokens[toff + bt];
  if (COL16(C)) {
    const int c = g * 16;
    if (c >= C) return;
    vstore16(vload16(0, wte + eoff + token * C + c) + vload16(0, wpe + poff + (size_t)t * C + c), 0,
             out + ooff + bt * C + c);
    return;
  }
  const int c = g;
  if (c >= C) return;
  out[ooff + bt * C + c] = wte[eoff + token * C + c] + wpe[poff + (size_t)t * C + c];
}

/* dwte[tokens[b,t], c] += dout[b,t,c]: one work-item per channel (or 16, COL16), positions
   in (b, t) order (the reference's order, so repeated tokens add up identically). */
__kernel void encoder_backward_wte(__global float *dwte, const ulong eoff, __global const float *dout,
                                   const ulong doff, __global const int *tokens, const ulong toff, const int C,
                                   const ulong BT) {
  const int g = get_global_id(0);
  if (COL16(C)) {
    const int c = g * 16;
    if (c >= C) return;
    for (ulong bt = 0; bt < BT; bt++) {
      __global float *e = dwte + eoff + (size_t)tokens[toff + bt] * C + c;
      vstore16(vload16(0, e) + vload16(0, dout + doff + bt * C + c), 0, e);
    }
    return;
  }
  const int c = g;
  if (c >= C) return;
  for (ulong bt = 0; bt < BT; bt++) {
    const size_t token = (size_t)tokens[toff + bt];
    dwte[eoff + token * C + c] += dout[doff + bt * C + c];
  }
}

/* dwpe[t, c] += dout[b,t,c] for b in order; global size C (or C/16, COL16) x T. */
__kernel void encoder_backward_wpe(__global float *dwpe, const ulong poff, __global const float *dout,
                                   const ulong doff, const int B, const int T, const int C) {
  const int g = get_global_id(0), t = get_global_id(1);
  if (t >= T) return;
  if (COL16(C)) {
    const int c = g * 16;
    if (c >= C) return;
    __global float *p = dwpe + poff + (size_t)t * C + c;
    float16 v = vload16(0, p);
    for (int b = 0; b < B; b++) v += vload16(0, dout + doff + ((size_t)b * T + t) * C + c);
    vstore16(v, 0, p);
    return;
  }
  const int c = g;
  if (c >= C) return;
  __global float *p = dwpe + poff + (size_t)t * C + c;
  float v = *p;
  for (int b = 0; b < B; b++) v += dout[doff + ((size_t)b * T + t) * C + c];
  *p = v;
}

/* ========================================================================= */
/* LayerNorm (biased variance, two passes)                                   */
/* ========================================================================= */

/* One work-item per row; rows whose length is a multiple of 16 go 16 lanes at a time. */
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
  ACC m, s;
  if ((C & 15) == 0) {
    ACC16 acc = (ACC16)(0);
    for (int c = 0; c < C; c += 16) acc += TO_ACC16(vload16(0, xr + c));
    m = hsum_acc16(acc) / (ACC)C;
    acc = (ACC16)(0);
    for (int c = 0; c < C; c += 16) {
      const ACC16 d = TO_ACC16(vload16(0, xr + c)) - m;
      acc += d * d;
    }
    s = (ACC)1 / sqrt(hsum_acc16(acc) / (ACC)C + (ACC)eps);
    for (int c = 0; c < C; c += 16) {
      const ACC16 y = (TO_ACC16(vload16(0, xr + c)) - m) * s * TO_ACC16(vload16(0, w + c)) + TO_ACC16(vload16(0, bi + c));
      vstore16(FROM_ACC16(y), 0, o + c);
    }
  } else {
    ACC sum = 0;
    for (int c = 0; c < C; c++) sum += xr[c];
    m = sum / (ACC)C;
    ACC squares = 0;
    for (int c = 0; c < C; c++) {
      const ACC d = (ACC)xr[c] - m;
      squares += d * d;
    }
    s = (ACC)1 / sqrt(squares / (ACC)C + (ACC)eps);
    for (int c = 0; c < C; c++) o[c] = (float)(((ACC)xr[c] - m) * s * (ACC)w[c] + (ACC)bi[c]);
  }
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
  if ((C & 15) == 0) {
    ACC16 g16 = (ACC16)(0), gx16 = (ACC16)(0);
    for (int c = 0; c < C; c += 16) {
      const ACC16 xhat = (TO_ACC16(vload16(0, xr + c)) - m) * s;
      const ACC16 g = TO_ACC16(vload16(0, d + c)) * TO_ACC16(vload16(0, w + c));
      g16 += g;
      gx16 += g * xhat;
    }
    const ACC g_mean = hsum_acc16(g16) / (ACC)C, gx_mean = hsum_acc16(gx16) / (ACC)C;
    for (int c = 0; c < C; c += 16) {
      const ACC16 xhat = (TO_ACC16(vload16(0, xr + c)) - m) * s;
      const ACC16 g = TO_ACC16(vload16(0, d + c)) * TO_ACC16(vload16(0, w + c));
      vstore16(vload16(0, o + c) + FROM_ACC16(s * (g - g_mean - xhat * gx_mean)), 0, o + c);
    }
    return;
  }
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

/* dweight[c] += sum_n dout*xhat, dbias[c] += sum_n dout; one work-item per channel (or 16, COL16), rows in order. */
__kernel void layernorm_backward_dwb(__global float *dweight, const ulong dwoff, __global float *dbias,
                                     const ulong dboff, __global const float *dout, const ulong doff,
                                     __global const float *x, const ulong xoff, __global const float *mean,
                                     const ulong moff, __global const float *rstd, const ulong roff, const ulong N,
                                     const int C) {
  const int g = get_global_id(0);
  if (COL16(C)) {
    const int c = g * 16;
    if (c >= C) return;
    ACC16 dw = (ACC16)(0), db = (ACC16)(0);
    for (ulong n = 0; n < N; n++) {
      const ACC16 d = TO_ACC16(vload16(0, dout + doff + n * C + c));
      const ACC16 xhat = (TO_ACC16(vload16(0, x + xoff + n * C + c)) - (ACC)mean[moff + n]) * (ACC)rstd[roff + n];
      dw += d * xhat;
      db += d;
    }
    __global float *pw = dweight + dwoff + c;
    __global float *pb = dbias + dboff + c;
    vstore16(vload16(0, pw) + FROM_ACC16(dw), 0, pw);
    vstore16(vload16(0, pb) + FROM_ACC16(db), 0, pb);
    return;
  }
  const int c = g;
  if (c >= C) return;
  ACC dw = 0, db = 0;
  for (ulong n = 0; n < N; n++) {
    const ACC d = dout[doff + n * C + c];
    const ACC xhat = ((ACC)x[xoff + n * C + c] - (ACC)mean[moff + n]) * (ACC)rstd[roff + n];
    dw += d * xhat;
    db += d;
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

/* Any head size: scalar loops; channels accumulated ATT_CHUNK at a time. */
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
      l = l * (ACC)MEDLEY_EXP(m - s) + (ACC)1;
      m = s;
    } else {
      l += (ACC)MEDLEY_EXP(s - m);
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
      const float p = MEDLEY_EXP(att_dot(q, kv + C, hs) * scale - row_lse);
      __global const float *v = kv + 2 * C + d0;
      for (int i = 0; i < width; i++) acc[i] += p * v[i];
    }
    for (int i = 0; i < width; i++) o[d0 + i] = acc[i];
  }
}

/* D[b,h,t] = dout[t] . out[t] over the head's channels (the softmax-backward row term), into scratch. */
__kernel void attention_backward_D(__global float *D, const ulong Doff, __global const float *dout, const ulong doff,
                                   __global const float *out, const ulong ooff, const int B, const int T, const int C,
                                   const int NH) {
  const int t = get_global_id(0), bh = get_global_id(1);
  if (t >= T || bh >= B * NH) return;
  const int b = bh / NH, h = bh % NH, hs = C / NH;
  const size_t head_row = ((size_t)b * T + t) * C + (size_t)h * hs;
  D[Doff + (size_t)bh * T + t] = att_dot(dout + doff + head_row, out + ooff + head_row, hs);
}

/* dq[t] += scale * sum_{j<=t} dS[t,j] k[j],  dS = p (dout[t].v[j] - D[t]). */
__kernel void attention_backward_dq(__global float *dqkv, const ulong gqoff, __global const float *dout,
                                    const ulong doff, __global const float *qkv, const ulong qoff,
                                    __global const float *lse, const ulong loff, __global const float *Dt,
                                    const ulong Doff, const int B, const int T, const int C, const int NH,
                                    const float scale) {
  const int t = get_global_id(0), bh = get_global_id(1);
  if (t >= T || bh >= B * NH) return;
  const int b = bh / NH, h = bh % NH, hs = C / NH;
  const size_t row3 = (size_t)3 * C;
  __global const float *base = qkv + qoff + (size_t)b * T * row3 + (size_t)h * hs;
  __global const float *q = base + (size_t)t * row3;
  __global const float *dt = dout + doff + ((size_t)b * T + t) * C + (size_t)h * hs;
  const float D = Dt[Doff + (size_t)bh * T + t];
  const float row_lse = lse[loff + (size_t)bh * T + t];
  __global float *dq = dqkv + gqoff + (size_t)b * T * row3 + (size_t)t * row3 + (size_t)h * hs;
  for (int d0 = 0; d0 < hs; d0 += ATT_CHUNK) {
    const int width = min(ATT_CHUNK, hs - d0);
    float acc[ATT_CHUNK];
    for (int i = 0; i < ATT_CHUNK; i++) acc[i] = 0.0f;
    for (int j = 0; j <= t; j++) {
      __global const float *kv = base + (size_t)j * row3;
      const float p = MEDLEY_EXP(att_dot(q, kv + C, hs) * scale - row_lse);
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
                                     __global const float *lse, const ulong loff, __global const float *Dt,
                                     const ulong Doff, const int B, const int T, const int C, const int NH,
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
      __global const float *dt = dout + doff + ((size_t)b * T + t) * C + (size_t)h * hs;
      const float p = MEDLEY_EXP(att_dot(q, k, hs) * scale - lse[loff + (size_t)bh * T + t]);
      const float ds = p * (att_dot(dt, v, hs) - Dt[Doff + (size_t)bh * T + t]);
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

/*
 * Head sizes that are a multiple of 16, up to 16 * ATT_MAXV (the host picks
 * these kernels then): the work-item's own rows (q, or k and v) stay in
 * float16 registers, every dot product and accumulation is 16 lanes wide, and
 * the forward pass is a single online-softmax sweep (the running sum and the
 * output are rescaled when the running maximum grows).
 */
#define ATT_V_LOAD(dst, src)                                                               \
  _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) dst[v] = vload16(v, src)
#define ATT_V_ZERO(dst) _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) dst[v] = (float16)(0.0f)

static inline float att_dot_v(const float16 *reg, __global const float *b, const int nv) {
  float16 acc = (float16)(0.0f);
  _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) acc += reg[v] * vload16(v, b);
  return hsum16(acc);
}

__kernel void attention_forward_v(__global float *out, const ulong ooff, __global float *lse, const ulong loff,
                                  __global const float *qkv, const ulong qoff, const int B, const int T, const int C,
                                  const int NH, const float scale) {
  const int t = get_global_id(0), bh = get_global_id(1);
  if (t >= T || bh >= B * NH) return;
  const int b = bh / NH, h = bh % NH, hs = C / NH, nv = hs / 16;
  const size_t row3 = (size_t)3 * C;
  __global const float *base = qkv + qoff + (size_t)b * T * row3 + (size_t)h * hs;
  float16 q[ATT_MAXV], acc[ATT_MAXV];
  ATT_V_ZERO(q);
  ATT_V_ZERO(acc);
  ATT_V_LOAD(q, base + (size_t)t * row3);
  float m = -INFINITY, l = 0.0f;
  for (int j = 0; j <= t; j++) {
    __global const float *kv = base + (size_t)j * row3;
    const float s = att_dot_v(q, kv + C, nv) * scale;
    float p = 1.0f;
    if (s > m) {
      const float c = MEDLEY_EXP(m - s);
      l *= c;
      _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) acc[v] *= c;
      m = s;
    } else {
      p = MEDLEY_EXP(s - m);
    }
    l += p;
    _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) acc[v] += p * vload16(v, kv + 2 * C);
  }
  lse[loff + (size_t)bh * T + t] = m + log(l);
  const float inv = 1.0f / l;
  __global float *o = out + ooff + ((size_t)b * T + t) * C + (size_t)h * hs;
  _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) vstore16(acc[v] * inv, v, o);
}

__kernel void attention_backward_dq_v(__global float *dqkv, const ulong gqoff, __global const float *dout,
                                      const ulong doff, __global const float *qkv, const ulong qoff,
                                      __global const float *lse, const ulong loff, __global const float *Dt,
                                      const ulong Doff, const int B, const int T, const int C, const int NH,
                                      const float scale) {
  const int t = get_global_id(0), bh = get_global_id(1);
  if (t >= T || bh >= B * NH) return;
  const int b = bh / NH, h = bh % NH, hs = C / NH, nv = hs / 16;
  const size_t row3 = (size_t)3 * C;
  __global const float *base = qkv + qoff + (size_t)b * T * row3 + (size_t)h * hs;
  float16 q[ATT_MAXV], d[ATT_MAXV], acc[ATT_MAXV];
  ATT_V_ZERO(q);
  ATT_V_ZERO(d);
  ATT_V_ZERO(acc);
  ATT_V_LOAD(q, base + (size_t)t * row3);
  ATT_V_LOAD(d, dout + doff + ((size_t)b * T + t) * C + (size_t)h * hs);
  const float D = Dt[Doff + (size_t)bh * T + t];
  const float row_lse = lse[loff + (size_t)bh * T + t];
  for (int j = 0; j <= t; j++) {
    __global const float *kv = base + (size_t)j * row3;
    const float p = MEDLEY_EXP(att_dot_v(q, kv + C, nv) * scale - row_lse);
    const float ds = p * (att_dot_v(d, kv + 2 * C, nv) - D);
    _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) acc[v] += ds * vload16(v, kv + C);
  }
  __global float *dq = dqkv + gqoff + (size_t)b * T * row3 + (size_t)t * row3 + (size_t)h * hs;
  _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) vstore16(vload16(v, dq) + acc[v] * scale, v, dq);
}

__kernel void attention_backward_dkv_v(__global float *dqkv, const ulong gqoff, __global const float *dout,
                                       const ulong doff, __global const float *qkv, const ulong qoff,
                                       __global const float *lse, const ulong loff, __global const float *Dt,
                                       const ulong Doff, const int B, const int T, const int C, const int NH,
                                       const float scale) {
  const int j = get_global_id(0), bh = get_global_id(1);
  if (j >= T || bh >= B * NH) return;
  const int b = bh / NH, h = bh % NH, hs = C / NH, nv = hs / 16;
  const size_t row3 = (size_t)3 * C;
  __global const float *base = qkv + qoff + (size_t)b * T * row3 + (size_t)h * hs;
  float16 k[ATT_MAXV], v_[ATT_MAXV], acc_k[ATT_MAXV], acc_v[ATT_MAXV];
  ATT_V_ZERO(k);
  ATT_V_ZERO(v_);
  ATT_V_ZERO(acc_k);
  ATT_V_ZERO(acc_v);
  ATT_V_LOAD(k, base + (size_t)j * row3 + C);
  ATT_V_LOAD(v_, base + (size_t)j * row3 + 2 * C);
  for (int t = j; t < T; t++) {
    __global const float *q = base + (size_t)t * row3;
    __global const float *dt = dout + doff + ((size_t)b * T + t) * C + (size_t)h * hs;
    const float p = MEDLEY_EXP(att_dot_v(k, q, nv) * scale - lse[loff + (size_t)bh * T + t]);
    const float ds = p * (att_dot_v(v_, dt, nv) - Dt[Doff + (size_t)bh * T + t]);
    _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) {
      acc_k[v] += ds * vload16(v, q);
      acc_v[v] += p * vload16(v, dt);
    }
  }
  __global float *dk = dqkv + gqoff + (size_t)b * T * row3 + (size_t)j * row3 + C + (size_t)h * hs;
  __global float *dv = dk + C;
  _Pragma("unroll") for (int v = 0; v < ATT_MAXV; v++) if (v < nv) {
    vstore16(vload16(v, dk) + acc_k[v] * scale, v, dk);
    vstore16(vload16(v, dv) + acc_v[v], v, dv);
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
  const float z = -2.0f * u;
  out[ooff + i] = v / (1.0f + MEDLEY_EXP(z < 88.0f ? z : 88.0f));
}

__kernel void gelu_backward(__global float *dx, const ulong dxoff, __global const float *dout, const ulong doff,
                            __global const float *x, const ulong xoff, const ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float v = x[xoff + i];
  const float u = GELU_K * (v + GELU_A * v * v * v);
  const float z = -2.0f * u;
  const float e = MEDLEY_EXP(z < 88.0f ? z : 88.0f);
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

/* One work-item per row: lse against the row max, loss = lse - logit[target]. Rows whose
   length is a multiple of 16 go 16 lanes at a time on CPU devices (a float lane sum each). */
__kernel void crossentropy_forward(__global float *losses, const ulong loff, __global float *lse,
                                   const ulong soff, __global const float *logits, const ulong goff,
                                   __global const int *targets, const ulong toff, const ulong N, const int V) {
  const ulong n = get_global_id(0);
  if (n >= N) return;
  __global const float *row = logits + goff + n * V;
  float m = -INFINITY;
  ACC sum = 0;
#ifdef MEDLEY_CPU_DEVICE
  if ((V & 15) == 0) {
    float16 m16 = vload16(0, row);
    for (int v = 16; v < V; v += 16) {
      const float16 x = vload16(0, row + v);
      m16 = x > m16 ? x : m16;
    }
    float t[16];
    vstore16(m16, 0, t);
    for (int i = 0; i < 16; i++) m = t[i] > m ? t[i] : m;
    float16 s16 = (float16)(0.0f);
    for (int v = 0; v < V; v += 16) s16 += medley_exp16(vload16(0, row + v) - m);
    sum = (ACC)hsum16(s16);
  } else
#endif
  {
    for (int v = 0; v < V; v++) m = row[v] > m ? row[v] : m;
    for (int v = 0; v < V; v++) sum += (ACC)MEDLEY_EXP(row[v] - m);
  }
  const ACC row_lse = (ACC)m + log(sum);
  lse[soff + n] = (float)row_lse;
  const int target = targets[toff + n];
  losses[loff + n] = target < 0 ? 0.0f : (float)(row_lse - (ACC)row[target]);
}

/* dlogits += scale * (softmax - onehot(target)); ignored rows add nothing. Global size V (or V/16,
   COL16) x N. */
__kernel void crossentropy_backward(__global float *dlogits, const ulong dloff, __global const float *logits,
                                    const ulong goff, __global const int *targets, const ulong toff,
                                    __global const float *lse, const ulong soff, const ulong N, const int V,
                                    const float scale) {
  const int g = get_global_id(0);
  const ulong n = get_global_id(1);
  if (n >= N) return;
  const int target = targets[toff + n];
  if (target < 0) return;
  const float row_lse = lse[soff + n];
  if (COL16(V)) {
    const int v = g * 16;
    if (v >= V) return;
    const size_t i = n * V + v;
    const float16 p = medley_exp16(vload16(0, logits + goff + i) - row_lse);
    const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) + v;
    const float16 onehot = lane == target ? (float16)(1.0f) : (float16)(0.0f);
    __global float *d = dlogits + dloff + i;
    vstore16(vload16(0, d) + scale * (p - onehot), 0, d);
    return;
  }
  const int v = g;
  if (v >= V) return;
  const size_t i = n * V + v;
  const float p = MEDLEY_EXP(logits[goff + i] - row_lse);
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
 * Two passes, in an order fixed by the device alone (so the result is the
 * same every run). Pass 1: P work-items (P chosen by the host per device),
 * work-item i sums its own elements into partial[i]: on CPU devices a
 * contiguous chunk of `chunk` elements, 16 lanes at a time; elsewhere the
 * elements i, i+P, i+2P, ... (neighbouring work-items, neighbouring
 * addresses). Pass 2: one work-group adds the P partials in a fixed tree and
 * out[0] += total. With cl_khr_fp64 the sums are doubles. Without it every
 * sum is a float pair (sum, compensation) kept with Knuth's two-sum and
 * combined the same way, which keeps about twice float's precision.
 */
#if MEDLEY_FP64
typedef double ssq_t;
#define SSQ_ZERO 0.0
#define SSQ_ADD(acc, y) acc += (y)
#define SSQ_MERGE(a, b) ((a) + (b))
#define SSQ_VALUE(a) (a)
#else
typedef float2 ssq_t; /* .x sum, .y compensation */
#define SSQ_ZERO ((float2)(0.0f, 0.0f))
static inline float2 ssq_add(float2 acc, const float y) {
  const float t = acc.x + y;
  const float bp = t - acc.x;
  acc.y += (acc.x - (t - bp)) + (y - bp);
  acc.x = t;
  return acc;
}
static inline float2 ssq_merge(const float2 a, const float2 b) {
  float2 r = ssq_add(a, b.x);
  r.y += b.y;
  return r;
}
#define SSQ_ADD(acc, y) acc = ssq_add(acc, (y))
#define SSQ_MERGE(a, b) ssq_merge((a), (b))
#define SSQ_VALUE(a) ((a).x + (a).y)
#endif

__kernel void sum_squares_partial(__global ssq_t *partial, const ulong poff, __global const float *x,
                                  const ulong xoff, const ulong n, const ulong chunk) {
  const ulong i = get_global_id(0), P = get_global_size(0);
  __global const float *p = x + xoff;
  ssq_t acc = SSQ_ZERO;
#ifdef MEDLEY_CPU_DEVICE
  const ulong start = i * chunk, end = min(n, start + chunk);
  ulong e = start;
#if MEDLEY_FP64
  double16 lanes = (double16)(0.0);
  for (; e + 16 <= end; e += 16) {
    const double16 v = convert_double16(vload16(0, p + e));
    lanes += v * v;
  }
  acc = hsum_acc16(lanes);
#else
  float16 hi = (float16)(0.0f), lo = (float16)(0.0f);
  for (; e + 16 <= end; e += 16) {
    const float16 v = vload16(0, p + e);
    const float16 y = v * v;
    const float16 t = hi + y;
    const float16 bp = t - hi;
    lo += (hi - (t - bp)) + (y - bp);
    hi = t;
  }
  float th[16], tl[16];
  vstore16(hi, 0, th);
  vstore16(lo, 0, tl);
  for (int k = 0; k < 16; k++) acc = ssq_merge(acc, (float2)(th[k], tl[k]));
#endif
  for (; e < end; e++) SSQ_ADD(acc, p[e] * p[e]);
#else
  for (ulong e = i; e < n; e += P) SSQ_ADD(acc, (ACC)p[e] * (ACC)p[e]);
#endif
  partial[poff + i] = acc;
}

/* One work-group (a power of two, at most MEDLEY_SSQ_WG): partials j = lid, lid+L, ... then a fixed tree. */
__kernel void sum_squares_final(__global float *out, const ulong ooff, __global const ssq_t *partial,
                                const ulong poff, const ulong P) {
  __local ssq_t part[MEDLEY_SSQ_WG];
  const int lid = get_local_id(0), L = get_local_size(0);
  ssq_t acc = SSQ_ZERO;
  for (ulong j = lid; j < P; j += L) acc = SSQ_MERGE(acc, partial[poff + j]);
  part[lid] = acc;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int stride = L / 2; stride > 0; stride /= 2) {
    if (lid < stride) part[lid] = SSQ_MERGE(part[lid], part[lid + stride]);
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) {
#if MEDLEY_FP64
    out[ooff] = (float)((double)out[ooff] + part[0]);
#else
    const float2 total = ssq_merge((float2)(out[ooff], 0.0f), part[0]);
    out[ooff] = SSQ_VALUE(total);
#endif
  }
}
