/*
 * minimal_adapter.c — the smallest adapter that passes `medley adapter check`:
 * the shape of a Medley adapter on one screen.
 *
 * Device memory is host memory and every op runs the portable reference
 * kernel, both through the adapter kit (adapters/kit). What it leaves out,
 * all optional in ABI v1 and opset v1:
 *   - dtypes other than f32 (op_query answers 0 for bf16 and f16);
 *   - more than one device (device_count is 1);
 *   - device options (every key is refused, as the ABI asks);
 *   - the optional entries copy_d2d (the host bounces device-to-device
 *     copies through host memory), stream_create / stream_destroy (the host
 *     uses the default stream only) and step_begin (no step markers).
 * template_adapter.c beside it is the full template with all of these.
 *
 * Build (from the repository root):
 *   cc -std=gnu11 -O2 -shared -fPIC -fvisibility=hidden \
 *      -Iadapters/include -Iadapters/kit/include -Iadapters/kernels/include \
 *      adapters/template/minimal_adapter.c adapters/kit/medley_kit.c \
 *      adapters/kernels/medley_ref_kernels.c -lm -o libmedley-adapter-minimal.so
 * Check:
 *   medley adapter check ./libmedley-adapter-minimal.so
 */
#include <stdlib.h>

#include "medley_adapter.h"     /* the contract: the table, the entries, opset v1 */
#include "medley_kit.h"         /* errors, host buffers and streams, launch checking */
#include "medley_ref_kernels.h" /* mrk_run: every op of opset v1 in portable C */

/* The kit's shared entries name the adapter in messages and learn its float dtypes here. */
static const mk_host_kind min_kind = {"minimal", MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32), NULL};

/* A device: the kit's host memory and streams first, then whatever your chip needs. */
struct medley_device {
  mk_host_device host;
};

static medley_error *min_plugin_info(medley_plugin_info *out) {
  return mk_plugin_info(out, "minimal", "Your Company", "0.1.0");
}

static medley_error *min_device_count(int32_t *out_count) { return mk_device_count(out_count, 1); }

static medley_error *min_device_open(int32_t index, const medley_option *options, size_t num_options,
                                     medley_device **out_device) {
  if (out_device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: out_device is NULL");
  *out_device = NULL;
  if (index != 0) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: device %d does not exist; there is one, 0",
                    (int)index);
  }
  medley_error *error = mk_check_options(options, num_options);
  if (error != NULL) return error;
  if (num_options > 0) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "minimal option '%s' is unknown; this adapter takes no options",
                    options[0].key);
  }
  medley_device *device = calloc(1, sizeof *device);
  if (device == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: out of host memory");
  mk_host_device_init(&device->host, &min_kind, mk_system_memory_bytes(1ull << 30));
  *out_device = device;
  return NULL;
}

/* Frees the device and every buffer still on it. */
static medley_error *min_device_close(medley_device *device) {
  medley_error *error = mk_host_check_handle(device, &min_kind, "device_close");
  if (error != NULL) return error;
  mk_host_device_release(&device->host);
  free(device);
  return NULL;
}

static medley_error *min_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = mk_host_check_device(device, &min_kind, "device_describe");
  if (error != NULL) return error;
  return mk_describe(out, "minimal-device", "Your Company", device->host.memory.capacity,
                     MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32) | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32), 1);
}

/* Checks the launch against opset v1 (unknown op: UNSUPPORTED; bad shapes, dtypes, bounds,
   attributes: INVALID_ARGUMENT), then runs the reference kernel on the checked pointers. */
static medley_error *min_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                   size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  mk_op_args args;
  medley_error *error = mk_host_launch_prepare(device, &min_kind, stream, op_name, inputs, num_inputs, outputs,
                                               num_outputs, attrs, num_attrs, &args);
  if (error != NULL) return error;
  mrk_run(&args); /* your chip's kernels go here: switch on args.op */
  return NULL;
}

/* The table: every required entry; the optional ones are left NULL. */
static const medley_adapter_api min_api = {
    .struct_size = sizeof(medley_adapter_api),
    .abi_major = MEDLEY_ABI_MAJOR,
    .abi_minor = MEDLEY_ABI_MINOR,
    .opset_version = MEDLEY_OPSET_VERSION,
    .error_free = mk_error_free,
    .plugin_info = min_plugin_info,
    .device_count = min_device_count,
    .device_open = min_device_open,
    .device_close = min_device_close,
    .device_describe = min_device_describe,
    .buffer_alloc = mk_host_buffer_alloc, /* host memory, a capacity limit, bounds checks */
    .buffer_free = mk_host_buffer_free,
    .copy_h2d = mk_host_copy_h2d,
    .copy_d2h = mk_host_copy_d2h,
    .memset = mk_host_memset,
    .stream_synchronize = mk_host_stream_synchronize, /* work is synchronous: nothing to wait for */
    .op_query = mk_host_op_query,                     /* opset v1 ops, with the kind's dtypes */
    .op_launch = min_op_launch,
};

/* The one exported symbol. */
MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &min_api; }
