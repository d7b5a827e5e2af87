/*
 * broken_adapter.c — adapters that are wrong on purpose, for the loader's and
 * the conformance kit's tests. Each is the adapter template with one fault,
 * chosen at compile time:
 *
 *   BROKEN_WRONG_MAJOR     table says ABI major 2
 *   BROKEN_MISSING_ENTRY   op_launch and memset are NULL
 *   BROKEN_SMALL_TABLE     struct_size covers only the version words
 *   BROKEN_NULL_TABLE      the entry symbol returns NULL
 *   BROKEN_OFF_BY          gelu_forward adds 1e-2 to every output element
 *   BROKEN_NO_ERRORS       op_launch ignores bad arguments it can ignore (unknown ops succeed)
 *   BROKEN_NEWER_OPSET     table says opset MEDLEY_OPSET_VERSION + 1, newer than the host knows
 *
 * and the mistakes real kernels make, each in one op, for the checker's diagnoses:
 *
 *   BROKEN_EPS_1E6         layernorm_forward uses eps 1e-6 whatever the attribute says
 *   BROKEN_EPS_0           layernorm_forward uses no eps at all
 *   BROKEN_ADAMW_BETAS     adamw_update uses beta1 0.9 and beta2 0.999 whatever the attributes say
 *   BROKEN_OVERRUN         matmul_forward writes 240 bytes past the end of its output (a padded tile)
 *   BROKEN_CRASH           gelu_backward writes through a NULL pointer (SIGSEGV)
 *   BROKEN_HANG            gelu_forward never returns
 *   BROKEN_OVERWRITE       matmul_backward overwrites its outputs instead of accumulating (=, not +=)
 *   BROKEN_TRANSPOSED      matmul_forward reads its weight as [C, OC] instead of [OC, C]
 *   BROKEN_NO_BIAS         matmul_forward without a bias adds 0.5 (a stale bias pointer)
 */
#define medley_adapter_get_api template_inner_get_api
#include "../../../adapters/template/template_adapter.c"
#undef medley_adapter_get_api

#include <math.h>
#include <string.h>
#include <unistd.h>

static medley_adapter_api broken_api;

/* The launch's pointers, through the kit (the template's device begins with an mk_host_device). */
static int broken_args(medley_device *device, const char *op_name, const medley_tensor *inputs, size_t num_inputs,
                       const medley_tensor *outputs, size_t num_outputs, const medley_attr *attrs,
                       size_t num_attrs, mk_op_args *args) {
  medley_error *error = mk_op_prepare(&((mk_host_device *)(void *)device)->memory, op_name, inputs, num_inputs,
                                      outputs, num_outputs, attrs, num_attrs, MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32),
                                      args);
  if (error != NULL) {
    mk_error_free(error);
    return 0;
  }
  return 1;
}

static medley_error *broken_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                      const medley_tensor *inputs, size_t num_inputs,
                                      const medley_tensor *outputs, size_t num_outputs,
                                      const medley_attr *attrs, size_t num_attrs) {
#if defined(BROKEN_NO_ERRORS)
  if (op_name != NULL && mk_op_lookup(op_name) == MK_OP_COUNT) return NULL;
#endif
#if defined(BROKEN_CRASH)
  if (op_name != NULL && strcmp(op_name, "gelu_backward") == 0) *(volatile float *)(uintptr_t)16 = 1.0f;
#endif
#if defined(BROKEN_HANG)
  if (op_name != NULL && strcmp(op_name, "gelu_forward") == 0) {
    for (;;) pause();
  }
#endif
#if defined(BROKEN_ADAMW_BETAS)
  medley_attr fixed[16];
  if (op_name != NULL && strcmp(op_name, "adamw_update") == 0 && num_attrs <= 16 && attrs != NULL) {
    for (size_t i = 0; i < num_attrs; i++) {
      fixed[i] = attrs[i];
      if (fixed[i].name != NULL && strcmp(fixed[i].name, "beta1") == 0) fixed[i].value = 0.9;
      if (fixed[i].name != NULL && strcmp(fixed[i].name, "beta2") == 0) fixed[i].value = 0.999;
    }
    attrs = fixed;
  }
#endif
  medley_error *error = template_inner_get_api()->op_launch(device, stream, op_name, inputs, num_inputs,
                                                            outputs, num_outputs, attrs, num_attrs);
  mk_op_args a;
  int is = op_name != NULL && error == NULL &&
           broken_args(device, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs, &a);
  (void)is;
  (void)a;
#if defined(BROKEN_EPS_1E6) || defined(BROKEN_EPS_0)
#if defined(BROKEN_EPS_1E6)
  const double wrong_eps = 1e-6;
#else
  const double wrong_eps = 0;
#endif
  if (is && a.op == MK_OP_layernorm_forward) {
    float *mean = a.out[1], *rstd = a.out[2], *out = a.out[0];
    const float *x = a.in[0], *w = a.in[1], *b = a.in[2];
    for (int64_t r = 0; r < a.N; r++) {
      double m = 0, v = 0;
      for (int64_t c = 0; c < a.C; c++) m += x[r * a.C + c];
      m /= (double)a.C;
      for (int64_t c = 0; c < a.C; c++) v += (x[r * a.C + c] - m) * (x[r * a.C + c] - m);
      v /= (double)a.C;
      double s = 1.0 / sqrt(v + wrong_eps);
      for (int64_t c = 0; c < a.C; c++) out[r * a.C + c] = (float)((x[r * a.C + c] - m) * s * w[c] + b[c]);
      mean[r] = (float)m;
      rstd[r] = (float)s;
    }
  }
#endif
#if defined(BROKEN_OVERRUN)
  if (is && a.op == MK_OP_matmul_forward) {
    unsigned char *end = (unsigned char *)a.out[0] + (size_t)(a.N * a.OC) * sizeof(float);
    memset(end, 0x5A, 240);
  }
#endif
#if defined(BROKEN_OVERWRITE)
  if (is && a.op == MK_OP_matmul_backward) {
    /* Written again as "=": what the outputs held before is lost. */
    memset(a.out[0], 0, (size_t)(a.N * a.C) * sizeof(float));
    memset(a.out[1], 0, (size_t)(a.OC * a.C) * sizeof(float));
    if (a.has_bias) memset(a.out[2], 0, (size_t)a.OC * sizeof(float));
    mrk_matmul_backward(a.out[0], a.out[1], a.has_bias ? a.out[2] : NULL, a.in[0], a.in[1], a.in[2], a.N, a.C, a.OC);
  }
#endif
#if defined(BROKEN_TRANSPOSED)
  if (is && a.op == MK_OP_matmul_forward) {
    const float *x = a.in[0], *w = a.in[1], *bias = a.has_bias ? a.in[2] : NULL;
    float *out = a.out[0];
    for (int64_t n = 0; n < a.N; n++) {
      for (int64_t o = 0; o < a.OC; o++) {
        float sum = bias ? bias[o] : 0.0f;
        for (int64_t c = 0; c < a.C; c++) sum += x[n * a.C + c] * w[c * a.OC + o];
        out[n * a.OC + o] = sum;
      }
    }
  }
#endif
#if defined(BROKEN_NO_BIAS)
  if (is && a.op == MK_OP_matmul_forward && !a.has_bias) {
    float *out = a.out[0];
    for (int64_t i = 0; i < a.N * a.OC; i++) out[i] += 0.5f;
  }
#endif
#if defined(BROKEN_OFF_BY)
  if (error == NULL && strcmp(op_name, "gelu_forward") == 0) {
    float *out = (float *)(mk_buffer_data(outputs[0].buffer) + outputs[0].offset);
    for (int64_t i = 0; i < mk_numel(&outputs[0]); i++) out[i] += 1e-2f;
  }
#endif
  return error;
}

MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) {
  broken_api = *template_inner_get_api();
  broken_api.op_launch = broken_op_launch;
#if defined(BROKEN_WRONG_MAJOR)
  broken_api.abi_major = 2;
#elif defined(BROKEN_MISSING_ENTRY)
  broken_api.op_launch = NULL;
  broken_api.memset = NULL;
#elif defined(BROKEN_SMALL_TABLE)
  broken_api.struct_size = 16;
#elif defined(BROKEN_NULL_TABLE)
  return NULL;
#elif defined(BROKEN_NEWER_OPSET)
  broken_api.opset_version = MEDLEY_OPSET_VERSION + 1;
#endif
  return &broken_api;
}
