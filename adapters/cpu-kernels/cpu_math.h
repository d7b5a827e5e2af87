/*
 * cpu_math.h — a vectorizable exp for the cpu kernels' element loops
 * (private to adapters/cpu-kernels).
 *
 * libm's expf/tanhf are calls the compiler cannot vectorize (without
 * -ffast-math, which we do not use), and GELU and the softmaxes spend most of
 * their time in them. cpu_exp is branch-free straight-line float code, so a
 * loop calling it vectorizes with plain SSE2 (the x86-64 baseline):
 *
 *   exp(z) = 2^n · exp(r),  n = round(z / ln2),  r = z - n·ln2  (|r| <= ln2/2)
 *
 * n is rounded with the 1.5·2^23 "magic number" trick (exact in IEEE float
 * without fast-math), r uses a two-part ln2 (Cody–Waite) so it is exact to
 * a few ulp, exp(r) is a degree-7 Taylor polynomial (truncation error below
 * 1e-8 relative), and 2^n is built in the exponent bits. The input is
 * clamped to [-87, 88], so the result is always finite and normal (exp(-87)
 * ≈ 1.6e-38 stands in for anything smaller). Relative error ≈ 2 ulp.
 *
 * The row reductions below (sum, max, dot, sum of exp) keep CPU_LANES
 * independent partial results, so they vectorize without -ffast-math: the
 * compiler may not reorder a single float accumulator, but lane k of an
 * array is its own chain. The lanes are combined pairwise at the end.
 */
#ifndef MEDLEY_CPU_MATH_H
#define MEDLEY_CPU_MATH_H

#include <stdint.h>
#include <string.h>

static inline float cpu_exp(float z) {
  const float log2e = 1.44269504088896341f;
  const float ln2_hi = 0.693145751953125f;      /* ln2 with 16 trailing zero bits */
  const float ln2_lo = 1.428606765330187e-06f;  /* ln2 - ln2_hi */
  const float magic = 12582912.0f;              /* 1.5 * 2^23: adding it rounds to an integer */
  z = z < -87.0f ? -87.0f : z;
  z = z > 88.0f ? 88.0f : z;
  float t = z * log2e + magic;
  float n = t - magic; /* round(z / ln2) as a float */
  int32_t t_bits, n_int;
  memcpy(&t_bits, &t, sizeof t_bits);
  n_int = t_bits - 0x4B400000; /* the integer in t's low mantissa bits */
  float r = (z - n * ln2_hi) - n * ln2_lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  /* 2^n for n in [-126, 127]; n = 128 (z near 88.7) is avoided by the clamp. */
  uint32_t scale_bits = (uint32_t)(n_int + 127) << 23;
  float scale;
  memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

/*
 * CPU_TWINS(name, params, args): the element kernels are compiled twice, for
 * the x86-64 baseline (SSE2) and for AVX2, and cpu_<name> calls the AVX2 twin
 * when the CPU (and OS) support it. The body is `static inline
 * CPU_KERNEL_BODY void name##_body params`; both twins inline it, so each is
 * vectorized for its own instruction set. No FMA is enabled, so both twins do
 * the same float operations in the same order and give bit-identical results;
 * only the vector width differs. (Plain dispatch rather than target_clones,
 * whose ifunc resolvers would be exported from the library.) Elsewhere
 * cpu_<name> is simply the baseline body.
 */
#define CPU_KERNEL_BODY __attribute__((always_inline))

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define CPU_TWINS(name, params, args)                                        \
  __attribute__((target("avx2"))) static void name##_avx2 params { name##_body args; } \
  static void name##_baseline params { name##_body args; }                   \
  void cpu_##name params {                                                   \
    if (__builtin_cpu_supports("avx2")) name##_avx2 args;                    \
    else name##_baseline args;                                               \
  }
#else
#define CPU_TWINS(name, params, args) \
  void cpu_##name params { name##_body args; }
#endif

#define CPU_LANES 8

/* Pairwise total of CPU_LANES partial sums. */
static inline float cpu_lanes_total(const float *lanes) {
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

/* Σ x[i] */
static inline float cpu_sum(const float *restrict x, int64_t n) {
  float lanes[CPU_LANES] = {0};
  int64_t i = 0;
  for (; i + CPU_LANES <= n; i += CPU_LANES) {
    for (int k = 0; k < CPU_LANES; k++) lanes[k] += x[i + k];
  }
  for (; i < n; i++) lanes[i % CPU_LANES] += x[i];
  return cpu_lanes_total(lanes);
}

/* Σ (x[i] - m)² */
static inline float cpu_sum_sq_dev(const float *restrict x, int64_t n, float m) {
  float lanes[CPU_LANES] = {0};
  int64_t i = 0;
  for (; i + CPU_LANES <= n; i += CPU_LANES) {
    for (int k = 0; k < CPU_LANES; k++) {
      float d = x[i + k] - m;
      lanes[k] += d * d;
    }
  }
  for (; i < n; i++) lanes[i % CPU_LANES] += (x[i] - m) * (x[i] - m);
  return cpu_lanes_total(lanes);
}

/* Σ a[i] b[i] */
static inline float cpu_dot(const float *restrict a, const float *restrict b, int64_t n) {
  float lanes[CPU_LANES] = {0};
  int64_t i = 0;
  for (; i + CPU_LANES <= n; i += CPU_LANES) {
    for (int k = 0; k < CPU_LANES; k++) lanes[k] += a[i + k] * b[i + k];
  }
  for (; i < n; i++) lanes[i % CPU_LANES] += a[i] * b[i];
  return cpu_lanes_total(lanes);
}

/* max x[i] (n >= 1) */
static inline float cpu_max(const float *restrict x, int64_t n) {
  float lanes[CPU_LANES];
  for (int k = 0; k < CPU_LANES; k++) lanes[k] = x[0];
  int64_t i = 0;
  for (; i + CPU_LANES <= n; i += CPU_LANES) {
    for (int k = 0; k < CPU_LANES; k++) lanes[k] = x[i + k] > lanes[k] ? x[i + k] : lanes[k];
  }
  for (; i < n; i++) lanes[0] = x[i] > lanes[0] ? x[i] : lanes[0];
  float m = lanes[0];
  for (int k = 1; k < CPU_LANES; k++) m = lanes[k] > m ? lanes[k] : m;
  return m;
}

/* Σ exp(x[i] - shift); with `store` non-NULL also writes each exp there (may be x). */
static inline float cpu_exp_sum(const float *x, float *store, int64_t n, float shift) {
  float lanes[CPU_LANES] = {0};
  int64_t i = 0;
  for (; i + CPU_LANES <= n; i += CPU_LANES) {
    for (int k = 0; k < CPU_LANES; k++) {
      float e = cpu_exp(x[i + k] - shift);
      if (store != NULL) store[i + k] = e;
      lanes[k] += e;
    }
  }
  for (; i < n; i++) {
    float e = cpu_exp(x[i] - shift);
    if (store != NULL) store[i] = e;
    lanes[i % CPU_LANES] += e;
  }
  return cpu_lanes_total(lanes);
}

#endif /* MEDLEY_CPU_MATH_H */
