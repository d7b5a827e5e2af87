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
 */
#define medley_adapter_get_api template_inner_get_api
#include "../../../adapters/template/template_adapter.c"
#undef medley_adapter_get_api

#include <string.h>

static medley_adapter_api broken_api;

static medley_error *broken_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                      const medley_tensor *inputs, size_t num_inputs,
                                      const medley_tensor *outputs, size_t num_outputs,
                                      const medley_attr *attrs, size_t num_attrs) {
#if defined(BROKEN_NO_ERRORS)
  if (op_name != NULL && mk_op_lookup(op_name) == MK_OP_COUNT) return NULL;
#endif
  medley_error *error = template_inner_get_api()->op_launch(device, stream, op_name, inputs, num_inputs,
                                                            outputs, num_outputs, attrs, num_attrs);
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
