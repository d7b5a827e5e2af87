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

#define REF_DEVICE_MAGIC 0x5245464445564943ull /* "REFDEVIC" */

/* Fallback capacity when the OS does not report its memory size: 8 GiB. */
#define REF_FALLBACK_MEMORY (8ull << 30)

struct medley_device {
  uint64_t magic; /* first: mk_check_device reads it */
  mk_memory memory;
  mk_stream_list streams; /* streams made by stream_create, still live */
};

/* ========================================================================= */
/* Argument checks                                                           */
/* ========================================================================= */

static medley_error *ref_check_device(const medley_device *device, const char *entry) {
  return mk_check_device(device, REF_DEVICE_MAGIC, "reference", entry);
}

/* Device and stream together, for the entries that take both. NULL is the
   default stream; anything else must come from stream_create on this device. */
static medley_error *ref_check(const medley_device *device, const medley_stream *stream, const char *entry) {
  medley_error *error = ref_check_device(device, entry);
  if (error == NULL) error = mk_stream_check(&device->streams, stream, entry);
  return error;
}

/* ========================================================================= */
/* Plugin and devices                                                        */
/* ========================================================================= */

static medley_error *ref_plugin_info(medley_plugin_info *out) {
  return mk_plugin_info(out, "reference", "Medley", "1.0.0");
}

static medley_error *ref_device_count(int32_t *out_count) {
  if (out_count == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_count: out_count is NULL");
  *out_count = 1;
  return NULL;
}

/* Reads the device options into *capacity. */
static medley_error *ref_parse_options(const medley_option *options, size_t num_options, uint64_t *capacity) {
  if (num_options > 0 && options == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: options is NULL but num_options is %zu",
                    num_options);
  }
  *capacity = mk_system_memory_bytes(REF_FALLBACK_MEMORY);
  for (size_t i = 0; i < num_options; i++) {
    const char *key = options[i].key, *value = options[i].value;
    if (key == NULL || value == NULL) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: option %zu has a NULL key or value", i);
    }
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
  device->magic = REF_DEVICE_MAGIC;
  mk_memory_init(&device->memory, capacity);
  *out_device = device;
  return NULL;
}

static medley_error *ref_device_close(medley_device *device) {
  medley_error *error = ref_check_device(device, "device_close");
  if (error != NULL) return error;
  mk_memory_release_all(&device->memory);
  mk_stream_release_all(&device->streams);
  device->magic = 0;
  free(device);
  return NULL;
}

static medley_error *ref_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = ref_check_device(device, "device_describe");
  if (error != NULL) return error;
  if (out == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_describe: out is NULL");
  if (!MK_HAS_FIELD(out->struct_size, medley_device_desc, compute_units)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "device_describe: struct_size %zu is too small; set it to sizeof(medley_device_desc)",
                    out->struct_size);
  }
  out->name = "reference-cpu";
  out->vendor = "Medley";
  out->memory_bytes = device->memory.capacity;
  out->dtype_mask = MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32) | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32);
  out->compute_units = 1; /* one thread */
  return NULL;
}

/* ========================================================================= */
/* Memory and copies                                                         */
/* ========================================================================= */

static medley_error *ref_buffer_alloc(medley_device *device, uint64_t bytes, medley_buffer **out_buffer) {
  medley_error *error = ref_check_device(device, "buffer_alloc");
  if (error != NULL) return error;
  return mk_buffer_alloc(&device->memory, bytes, out_buffer);
}

static medley_error *ref_buffer_free(medley_device *device, medley_buffer *buffer) {
  medley_error *error = ref_check_device(device, "buffer_free");
  if (error != NULL) return error;
  return mk_buffer_free(&device->memory, buffer);
}

static medley_error *ref_copy_h2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                  uint64_t dst_offset, const void *src, uint64_t bytes) {
  medley_error *error = ref_check(device, stream, "copy_h2d");
  if (error != NULL) return error;
  return mk_copy_h2d(&device->memory, dst, dst_offset, src, bytes);
}

static medley_error *ref_copy_d2h(medley_device *device, medley_stream *stream, void *dst, medley_buffer *src,
                                  uint64_t src_offset, uint64_t bytes) {
  medley_error *error = ref_check(device, stream, "copy_d2h");
  if (error != NULL) return error;
  return mk_copy_d2h(&device->memory, dst, src, src_offset, bytes);
}

static medley_error *ref_copy_d2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                  uint64_t dst_offset, medley_buffer *src, uint64_t src_offset, uint64_t bytes) {
  medley_error *error = ref_check(device, stream, "copy_d2d");
  if (error != NULL) return error;
  return mk_copy_d2d(&device->memory, dst, dst_offset, src, src_offset, bytes);
}

static medley_error *ref_memset(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                uint64_t offset, uint8_t value, uint64_t bytes) {
  medley_error *error = ref_check(device, stream, "memset");
  if (error != NULL) return error;
  return mk_memset(&device->memory, dst, offset, value, bytes);
}

/* ========================================================================= */
/* Streams (work is synchronous: a stream is a validated token)              */
/* ========================================================================= */

static medley_error *ref_stream_create(medley_device *device, medley_stream **out_stream) {
  medley_error *error = ref_check_device(device, "stream_create");
  if (error != NULL) return error;
  return mk_stream_create(&device->streams, out_stream);
}

static medley_error *ref_stream_destroy(medley_device *device, medley_stream *stream) {
  medley_error *error = ref_check_device(device, "stream_destroy");
  if (error != NULL) return error;
  return mk_stream_destroy(&device->streams, stream);
}

static medley_error *ref_stream_synchronize(medley_device *device, medley_stream *stream) {
  return ref_check(device, stream, "stream_synchronize"); /* all work has already finished */
}

/* ========================================================================= */
/* Ops                                                                       */
/* ========================================================================= */

static medley_error *ref_op_query(medley_device *device, const char *op_name, int32_t dtype,
                                  int32_t *out_supported) {
  medley_error *error = ref_check_device(device, "op_query");
  if (error != NULL) return error;
  return mk_op_query(op_name, dtype, MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32), out_supported);
}

static medley_error *ref_step_begin(medley_device *device, int64_t step) {
  medley_error *error = ref_check_device(device, "step_begin");
  if (error != NULL) return error;
  if (step < 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "step_begin: step %lld is negative", (long long)step);
  return NULL; /* nothing to trace on a CPU */
}

static medley_error *ref_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                   size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  medley_error *error = ref_check(device, stream, "op_launch");
  if (error != NULL) return error;
  mk_op_args args;
  error = mk_op_prepare(&device->memory, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs,
                        MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32), &args);
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
    .buffer_alloc = ref_buffer_alloc,
    .buffer_free = ref_buffer_free,
    .copy_h2d = ref_copy_h2d,
    .copy_d2h = ref_copy_d2h,
    .copy_d2d = ref_copy_d2d,
    .memset = ref_memset,
    .stream_create = ref_stream_create,
    .stream_destroy = ref_stream_destroy,
    .stream_synchronize = ref_stream_synchronize,
    .op_query = ref_op_query,
    .op_launch = ref_op_launch,
    .step_begin = ref_step_begin,
};

MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &ref_api; }
