/*
 * cpu_matmul.c — matmul_forward and matmul_backward on OpenBLAS sgemm.
 *
 * Row-major shapes: x[N,C], weight[OC,C], out[N,OC].
 *   forward   out  = x · weightᵀ (+ bias)     one sgemm, beta 0 (or bias prefilled, beta 1)
 *   backward  dx  += dout · weight             one sgemm, beta 1
 *             dW  += doutᵀ · x                 one sgemm, beta 1
 *             db  += column sums of dout       one pass over dout
 * BLAS dimensions are `int`; the row count N is split into chunks that fit,
 * so only C and OC must be below INT_MAX (cpu_run checks that).
 */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "cpu_kernels.h"

/* Declared again so the build does not depend on which cblas.h is installed. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

int cpu_blas_threads(int threads) {
  if (openblas_get_num_threads() != threads) openblas_set_num_threads(threads);
  return openblas_get_num_threads();
}

/* Largest row chunk handed to one sgemm (keeps every BLAS int in range). */
#define CPU_MAX_ROWS ((int64_t)1 << 30)

/* Copies the bias into every row of out[N,OC]. */
static void fill_rows_with_bias(float *restrict out, const float *restrict bias, int64_t N, int64_t OC) {
  for (int64_t r = 0; r < N; r++) memcpy(out + r * OC, bias, (size_t)OC * sizeof(float));
}

void cpu_matmul_forward(float *out, const float *x, const float *weight, const float *bias,
                        int64_t N, int64_t C, int64_t OC) {
  if (bias != NULL) fill_rows_with_bias(out, bias, N, OC);
  float beta = bias != NULL ? 1.0f : 0.0f;
  for (int64_t r0 = 0; r0 < N; r0 += CPU_MAX_ROWS) {
    int rows = (int)(N - r0 < CPU_MAX_ROWS ? N - r0 : CPU_MAX_ROWS);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, (int)OC, (int)C, 1.0f, x + r0 * C, (int)C,
                weight, (int)C, beta, out + r0 * OC, (int)OC);
  }
}

/* dbias[OC] += sum over rows of dout[N,OC], one row at a time (vectorizes over OC). */
static void add_column_sums(float *restrict dbias, const float *restrict dout, int64_t N, int64_t OC) {
  for (int64_t r = 0; r < N; r++) {
    const float *restrict row = dout + r * OC;
    for (int64_t o = 0; o < OC; o++) dbias[o] += row[o];
  }
}

void cpu_matmul_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                         const float *weight, int64_t N, int64_t C, int64_t OC) {
  for (int64_t r0 = 0; r0 < N; r0 += CPU_MAX_ROWS) {
    int rows = (int)(N - r0 < CPU_MAX_ROWS ? N - r0 : CPU_MAX_ROWS);
    const float *dout_r = dout + r0 * OC;
    const float *x_r = x + r0 * C;
    /* dx[rows,C] += dout[rows,OC] · weight[OC,C] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, (int)C, (int)OC, 1.0f, dout_r, (int)OC,
                weight, (int)C, 1.0f, dx + r0 * C, (int)C);
    /* dweight[OC,C] += dout[rows,OC]ᵀ · x[rows,C] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)C, rows, 1.0f, dout_r, (int)OC,
                x_r, (int)C, 1.0f, dweight, (int)C);
  }
  if (dbias != NULL) add_column_sums(dbias, dout, N, OC);
}
