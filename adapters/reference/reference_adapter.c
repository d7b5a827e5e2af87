/*
 * reference_adapter.c — the reference adapter: the portable C kernels of
 * adapters/kernels behind the Medley adapter ABI v1.
 *
 * One device (index 0) whose memory is host memory. Work runs synchronously
 * in the calling thread, so streams are only validated tokens and
 * stream_synchronize has nothing to wait for. Every argument error comes
 * back as an error object; nothing here exits, aborts or prints.
 *
 * Device options:
 *   memory=SIZE   capacity the device reports and enforces (e.g. 512MiB);
 *                 default: the machine's physical memory.
 *
 * Only `medley_adapter_get_api` is exported; everything else is static or
 * hidden (kit and kernels are built with -fvisibility=hidden).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "medley_adapter.h"
#include "medley_kit.h"
#include "medley_ref_kernels.h"

/* Fallback capacity when the OS does not report its memory size: 8 GiB. */
#define REF_FALLBACK_MEMORY (8ull << 30)

/* What the kit's shared entries need to know: the name in messages and the float dtypes. */
static const mk_host_kind ref_kind = {"reference", MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32), NULL};

struct medley_device {
  mk_host_device host; /* first: memory and streams, used by the kit's mk_host_* entries */
};

/* ========================================================================= */
/* Plugin and devices                                                        */
/* ========================================================================= */

static medley_error *ref_plugin_info(medley_plugin_info *out) {
  return mk_plugin_info(out, "reference", "Medley", "1.0.0");
}

static medley_error *ref_device_count(int32_t *out_count) { return mk_device_count(out_count, 1); }

/* Reads the device options into *capacity. */
static medley_error *ref_parse_options(const medley_option *options, size_t num_options, uint64_t *capacity) {
  medley_error *error = mk_check_options(options, num_options);
  if (error != NULL) return error;
  *capacity = mk_system_memory_bytes(REF_FALLBACK_MEMORY);
  for (size_t i = 0; i < num_options; i++) {
    const char *key = options[i].key, *value = options[i].value;
    if (strcmp(key, "memory") == 0) {
      if (mk_parse_bytes(value, capacity) != 0 || *capacity == 0) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                        "reference option memory='%s': expected a positive byte size like 512MiB", value);
      }
    } else {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                      "reference option '%s' is unknown; the accepted option is memory=SIZE (e.g. 512MiB)", key);
    }
  }
  return NULL;
}

static medley_error *ref_device_open(int32_t index, const medley_option *options, size_t num_options,
                                     medley_device **out_device) {
  if (out_device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: out_device is NULL");
  *out_device = NULL;
  if (index != 0) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "device_open: device index %d does not exist; the reference adapter has one device, index 0",
                    (int)index);
  }
  uint64_t capacity = 0;
  medley_error *error = ref_parse_options(options, num_options, &capacity);
  if (error != NULL) return error;
  medley_device *device = calloc(1, sizeof *device);
  if (device == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: out of host memory");
  mk_host_device_init(&device->host, &ref_kind, capacity);
  *out_device = device;
  return NULL;
}

static medley_error *ref_device_close(medley_device *device) {
  medley_error *error = mk_host_check_handle(device, &ref_kind, "device_close");
  if (error != NULL) return error;
  mk_host_device_release(&device->host);
  free(device);
  return NULL;
}

static medley_error *ref_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = mk_host_check_device(device, &ref_kind, "device_describe");
  if (error != NULL) return error;
  return mk_describe(out, "reference-cpu", "Medley", device->host.memory.capacity,
                     MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32) | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32), 1 /* one thread */);
}

/* ========================================================================= */
/* Ops (memory, copies and streams are the kit's mk_host_* entries)         */
/* ========================================================================= */

static medley_error *ref_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                   size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  mk_op_args args;
  medley_error *error = mk_host_launch_prepare(device, &ref_kind, stream, op_name, inputs, num_inputs, outputs,
                                               num_outputs, attrs, num_attrs, &args);
  if (error != NULL) return error;
  mrk_run(&args);
  return NULL;
}

/* ========================================================================= */
/* The table                                                                 */
/* ========================================================================= */

static const medley_adapter_api ref_api = {
    .struct_size = sizeof(medley_adapter_api),
    .abi_major = MEDLEY_ABI_MAJOR,
    .abi_minor = MEDLEY_ABI_MINOR,
    .opset_version = MEDLEY_OPSET_VERSION,
    .reserved = 0,
    .error_free = mk_error_free,
    .plugin_info = ref_plugin_info,
    .device_count = ref_device_count,
    .device_open = ref_device_open,
    .device_close = ref_device_close,
    .device_describe = ref_device_describe,
    MK_HOST_MEMORY_ENTRIES,
    .op_launch = ref_op_launch,
    .step_begin = mk_host_step_begin,
};

MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &ref_api; }
