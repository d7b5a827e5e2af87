/*
 * template_adapter.c — the file a chip team copies to start a Medley adapter.
 *
 * As shipped, it is a complete, working adapter: device memory is host
 * memory (via the adapter kit) and every op runs the portable reference
 * kernel. So a fresh copy passes `medley adapter check` on day one, and you
 * then replace the pieces marked "replace with your chip's ..." ONE AT A
 * TIME, re-running the check after each swap.
 *
 * Build (from the repository root):
 *   cc -std=gnu11 -O2 -shared -fPIC -fvisibility=hidden \
 *      -Iadapters/include -Iadapters/kit/include -Iadapters/kernels/include \
 *      adapters/template/template_adapter.c adapters/kit/medley_kit.c \
 *      adapters/kernels/medley_ref_kernels.c -lm -o libmedley-adapter-template.so
 *
 * Rules worth keeping in mind (the full contract is adapters/include/medley_adapter.h):
 *   - Only medley_adapter_get_api is exported; keep everything else static.
 *   - Every entry returns NULL on success or an error object made with
 *     mk_error(code, "message naming what was wrong and what to do").
 *     Never exit(), abort() or print from an entry.
 *   - Every *_backward op ACCUMULATES (+=) into all of its outputs.
 *
 * The file is laid out one concern per section: plugin info, devices and
 * options, memory, copies, streams, ops, and finally the table.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "medley_adapter.h"
#include "medley_kit.h"
#include "medley_ref_kernels.h"

/* ========================================================================= */
/* Plugin info: who you are                                                  */
/* ========================================================================= */

/* Change these three strings first. */
#define TPL_PLUGIN_NAME "template"
#define TPL_VENDOR "Your Company"
#define TPL_VERSION "0.1.0"
#define TPL_DEVICE_NAME "template-device"

/* True when the host's struct (its struct_size) has room for `field`: hosts
   older or newer than this adapter may pass smaller or larger structs. */
#define TPL_HAS_FIELD(size, type, field) ((size) >= offsetof(type, field) + sizeof(((type *)0)->field))

static medley_error *tpl_plugin_info(medley_plugin_info *out) {
  if (out == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "plugin_info: out is NULL");
  if (!TPL_HAS_FIELD(out->struct_size, medley_plugin_info, version)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "plugin_info: struct_size %zu is too small", out->struct_size);
  }
  out->name = TPL_PLUGIN_NAME;
  out->vendor = TPL_VENDOR;
  out->version = TPL_VERSION;
  return NULL;
}

/* ========================================================================= */
/* Devices and their options                                                 */
/* ========================================================================= */

/*
 * Your device handle. The host only ever sees a pointer to it. Put your
 * runtime's context / queue / allocator here. The magic number lets every
 * entry reject a pointer that is not an open device of this adapter.
 */
#define TPL_DEVICE_MAGIC 0x54504c4445564943ull /* "TPLDEVIC" */

struct medley_device {
  uint64_t magic;
  mk_memory memory;              /* replace with your chip's allocator state */
  struct medley_stream *streams; /* streams created on this device */
};

static medley_error *tpl_check_device(const medley_device *device, const char *entry) {
  if (device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: device is NULL", entry);
  if (device->magic != TPL_DEVICE_MAGIC) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %p is not an open %s device", entry,
                    (const void *)device, TPL_PLUGIN_NAME);
  }
  return NULL;
}

/* How many devices you can open: ask your runtime (cudaGetDeviceCount, …). */
static medley_error *tpl_device_count(int32_t *out_count) {
  if (out_count == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_count: out_count is NULL");
  *out_count = 1;
  return NULL;
}

/*
 * Options arrive as strings ("memory" = "2GiB"). Reject unknown keys and
 * malformed values with a message that names the key and the accepted form.
 * Add your own keys here (e.g. a clock setting or a firmware path).
 */
static medley_error *tpl_parse_options(const medley_option *options, size_t num_options, uint64_t *capacity) {
  if (num_options > 0 && options == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: options is NULL but num_options is %zu",
                    num_options);
  }
  *capacity = mk_system_memory_bytes(8ull << 30); /* replace with your chip's memory size */
  for (size_t i = 0; i < num_options; i++) {
    const char *key = options[i].key, *value = options[i].value;
    if (key == NULL || value == NULL) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: option %zu has a NULL key or value", i);
    }
    if (strcmp(key, "memory") == 0) {
      if (mk_parse_bytes(value, capacity) != 0 || *capacity == 0) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                        TPL_PLUGIN_NAME " option memory='%s': expected a positive byte size like 512MiB", value);
      }
    } else {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                      TPL_PLUGIN_NAME " option '%s' is unknown; the accepted option is memory=SIZE (e.g. 512MiB)",
                      key);
    }
  }
  return NULL;
}

static medley_error *tpl_device_open(int32_t index, const medley_option *options, size_t num_options,
                                     medley_device **out_device) {
  if (out_device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: out_device is NULL");
  *out_device = NULL;
  int32_t count = 0;
  tpl_device_count(&count);
  if (index < 0 || index >= count) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: device index %d does not exist (there are %d)",
                    (int)index, (int)count);
  }
  uint64_t capacity = 0;
  medley_error *error = tpl_parse_options(options, num_options, &capacity);
  if (error != NULL) return error;
  medley_device *device = calloc(1, sizeof *device);
  if (device == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: out of host memory");
  device->magic = TPL_DEVICE_MAGIC;
  mk_memory_init(&device->memory, capacity); /* replace with your chip's context creation */
  *out_device = device;
  return NULL;
}

static void tpl_free_streams(medley_device *device);

/* Close frees everything still on the device: buffers and streams. */
static medley_error *tpl_device_close(medley_device *device) {
  medley_error *error = tpl_check_device(device, "device_close");
  if (error != NULL) return error;
  mk_memory_release_all(&device->memory); /* replace with your chip's teardown */
  tpl_free_streams(device);
  device->magic = 0;
  free(device);
  return NULL;
}

/* Strings returned here must stay valid until the device is closed. */
static medley_error *tpl_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = tpl_check_device(device, "device_describe");
  if (error != NULL) return error;
  if (out == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_describe: out is NULL");
  if (!TPL_HAS_FIELD(out->struct_size, medley_device_desc, compute_units)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_describe: struct_size %zu is too small",
                    out->struct_size);
  }
  out->name = TPL_DEVICE_NAME;
  out->vendor = TPL_VENDOR;
  out->memory_bytes = device->memory.capacity;
  /* Add MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_BF16) etc. once your kernels take them. */
  out->dtype_mask = MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32) | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32);
  out->compute_units = 1; /* cores / SMs / tiles: informational */
  return NULL;
}

/* ========================================================================= */
/* Memory: buffers                                                           */
/* ========================================================================= */

/*
 * The kit keeps host-memory buffers with a capacity limit (over the limit is
 * OUT_OF_MEMORY, never a crash). A chip with its own memory wraps its
 * allocator here instead and keeps a small struct medley_buffer of its own.
 */
static medley_error *tpl_buffer_alloc(medley_device *device, uint64_t bytes, medley_buffer **out_buffer) {
  medley_error *error = tpl_check_device(device, "buffer_alloc");
  if (error != NULL) return error;
  return mk_buffer_alloc(&device->memory, bytes, out_buffer); /* replace with your chip's allocator */
}

static medley_error *tpl_buffer_free(medley_device *device, medley_buffer *buffer) {
  medley_error *error = tpl_check_device(device, "buffer_free");
  if (error != NULL) return error;
  return mk_buffer_free(&device->memory, buffer); /* replace with your chip's free */
}

/* ========================================================================= */
/* Streams                                                                   */
/* ========================================================================= */

/*
 * This template runs everything synchronously in the calling thread, so a
 * stream is just a token the host can hold. A chip with real queues puts
 * its queue handle in here and makes synchronize wait on it.
 */
#define TPL_STREAM_MAGIC 0x54504c5354524541ull /* "TPLSTREA" */

struct medley_stream {
  uint64_t magic;
  struct medley_stream *next;
};

/* NULL means the default stream; anything else must be live on this device. */
static medley_error *tpl_check_stream(const medley_device *device, const medley_stream *stream,
                                      const char *entry) {
  if (stream == NULL) return NULL;
  for (const struct medley_stream *s = device->streams; s != NULL; s = s->next) {
    if (s == stream && s->magic == TPL_STREAM_MAGIC) return NULL;
  }
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: stream %p is not a live stream of this device", entry,
                  (const void *)stream);
}

/* Device and stream together, for every entry that takes both. */
static medley_error *tpl_check(const medley_device *device, const medley_stream *stream, const char *entry) {
  medley_error *error = tpl_check_device(device, entry);
  return error != NULL ? error : tpl_check_stream(device, stream, entry);
}

static medley_error *tpl_stream_create(medley_device *device, medley_stream **out_stream) {
  medley_error *error = tpl_check_device(device, "stream_create");
  if (error != NULL) return error;
  if (out_stream == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_create: out_stream is NULL");
  struct medley_stream *stream = calloc(1, sizeof *stream);
  if (stream == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "stream_create: out of host memory");
  stream->magic = TPL_STREAM_MAGIC; /* replace with your chip's queue creation */
  stream->next = device->streams;
  device->streams = stream;
  *out_stream = stream;
  return NULL;
}

static medley_error *tpl_stream_destroy(medley_device *device, medley_stream *stream) {
  medley_error *error = tpl_check_device(device, "stream_destroy");
  if (error != NULL) return error;
  if (stream == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_destroy: cannot destroy the default stream");
  for (struct medley_stream **link = &device->streams; *link != NULL; link = &(*link)->next) {
    if (*link == stream) {
      *link = stream->next;
      stream->magic = 0;
      free(stream);
      return NULL;
    }
  }
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_destroy: stream %p is not a live stream of this device",
                  (void *)stream);
}

static void tpl_free_streams(medley_device *device) {
  while (device->streams != NULL) {
    struct medley_stream *next = device->streams->next;
    device->streams->magic = 0;
    free(device->streams);
    device->streams = next;
  }
}

/* Wait for the queue to drain; report a failure of earlier queued work here. */
static medley_error *tpl_stream_synchronize(medley_device *device, medley_stream *stream) {
  return tpl_check(device, stream, "stream_synchronize"); /* replace with your chip's queue wait */
}

/* ========================================================================= */
/* Copies                                                                    */
/* ========================================================================= */

/* The kit checks that the buffer is live and the byte range lies inside it. */
static medley_error *tpl_copy_h2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                  uint64_t dst_offset, const void *src, uint64_t bytes) {
  medley_error *error = tpl_check(device, stream, "copy_h2d");
  if (error != NULL) return error;
  return mk_copy_h2d(&device->memory, dst, dst_offset, src, bytes); /* replace with your chip's upload */
}

static medley_error *tpl_copy_d2h(medley_device *device, medley_stream *stream, void *dst, medley_buffer *src,
                                  uint64_t src_offset, uint64_t bytes) {
  medley_error *error = tpl_check(device, stream, "copy_d2h");
  if (error != NULL) return error;
  return mk_copy_d2h(&device->memory, dst, src, src_offset, bytes); /* replace with your chip's download */
}

/* Optional entry: leave it out of the table and the host bounces through host memory. */
static medley_error *tpl_copy_d2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                  uint64_t dst_offset, medley_buffer *src, uint64_t src_offset, uint64_t bytes) {
  medley_error *error = tpl_check(device, stream, "copy_d2d");
  if (error != NULL) return error;
  return mk_copy_d2d(&device->memory, dst, dst_offset, src, src_offset, bytes); /* replace with your chip's copy */
}

static medley_error *tpl_memset(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                uint64_t offset, uint8_t value, uint64_t bytes) {
  medley_error *error = tpl_check(device, stream, "memset");
  if (error != NULL) return error;
  return mk_memset(&device->memory, dst, offset, value, bytes); /* replace with your chip's fill */
}

/* ========================================================================= */
/* Ops                                                                       */
/* ========================================================================= */

/* The float dtypes your kernels accept; op_query and op_launch both use it. */
#define TPL_FLOAT_DTYPES MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32)

static medley_error *tpl_op_query(medley_device *device, const char *op_name, int32_t dtype,
                                  int32_t *out_supported) {
  medley_error *error = tpl_check_device(device, "op_query");
  if (error != NULL) return error;
  if (op_name == NULL || out_supported == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "op_query: op_name or out_supported is NULL");
  }
  int known = mk_op_lookup(op_name) != MK_OP_COUNT; /* an unknown name is simply unsupported */
  int dtype_ok = dtype > 0 && dtype < 32 && dtype != MEDLEY_DTYPE_I32 &&
                 (TPL_FLOAT_DTYPES & MEDLEY_DTYPE_BIT(dtype)) != 0;
  *out_supported = known && dtype_ok;
  return NULL;
}

/*
 * One case per op. `a` holds the checked dimensions and the data pointers
 * (already offset) in the order the opset lists the tensors: a->in[i],
 * a->out[i]. Swap one kernel, run `medley adapter check`, repeat.
 */
static void tpl_run_op(const mk_op_args *a) {
  float *const *o = (float *const *)a->out;
  switch (a->op) {
    case MK_OP_encoder_forward: /* replace with your chip's kernel */
      mrk_encoder_forward(o[0], a->in[0], a->in[1], a->in[2], a->B, a->T, a->C);
      break;
    case MK_OP_encoder_backward: /* replace with your chip's kernel */
      mrk_encoder_backward(o[0], o[1], a->in[0], a->in[1], a->B, a->T, a->C);
      break;
    case MK_OP_layernorm_forward: /* replace with your chip's kernel */
      mrk_layernorm_forward(o[0], o[1], o[2], a->in[0], a->in[1], a->in[2], a->N, a->C, a->eps);
      break;
    case MK_OP_layernorm_backward: /* replace with your chip's kernel */
      mrk_layernorm_backward(o[0], o[1], o[2], a->in[0], a->in[1], a->in[2], a->in[3], a->in[4], a->N, a->C);
      break;
    case MK_OP_matmul_forward: /* replace with your chip's kernel */
      mrk_matmul_forward(o[0], a->in[0], a->in[1], a->has_bias ? a->in[2] : NULL, a->N, a->C, a->OC);
      break;
    case MK_OP_matmul_backward: /* replace with your chip's kernel */
      mrk_matmul_backward(o[0], o[1], a->has_bias ? o[2] : NULL, a->in[0], a->in[1], a->in[2], a->N, a->C, a->OC);
      break;
    case MK_OP_attention_forward: /* replace with your chip's kernel */
      mrk_attention_forward(o[0], o[1], a->in[0], a->B, a->T, a->C, a->NH);
      break;
    case MK_OP_attention_backward: /* replace with your chip's kernel */
      mrk_attention_backward(o[0], a->in[0], a->in[1], a->in[2], a->in[3], a->B, a->T, a->C, a->NH);
      break;
    case MK_OP_gelu_forward: /* replace with your chip's kernel */
      mrk_gelu_forward(o[0], a->in[0], a->n);
      break;
    case MK_OP_gelu_backward: /* replace with your chip's kernel */
      mrk_gelu_backward(o[0], a->in[0], a->in[1], a->n);
      break;
    case MK_OP_residual_forward: /* replace with your chip's kernel */
      mrk_residual_forward(o[0], a->in[0], a->in[1], a->n);
      break;
    case MK_OP_residual_backward: /* replace with your chip's kernel */
      mrk_residual_backward(o[0], o[1], a->in[0], a->n);
      break;
    case MK_OP_crossentropy_forward: /* replace with your chip's kernel */
      mrk_crossentropy_forward(o[0], o[1], a->in[0], a->in[1], a->N, a->V);
      break;
    case MK_OP_crossentropy_backward: /* replace with your chip's kernel */
      mrk_crossentropy_backward(o[0], a->in[0], a->in[1], a->in[2], a->N, a->V, a->scale);
      break;
    case MK_OP_adamw_update: /* replace with your chip's kernel */
      mrk_adamw_update(o[0], o[1], o[2], a->in[0], a->n, a->lr, a->beta1, a->beta2, a->eps, a->weight_decay,
                       a->step, a->grad_scale);
      break;
    case MK_OP_sum_squares: /* replace with your chip's kernel */
      mrk_sum_squares(o[0], a->in[0], a->n);
      break;
    case MK_OP_scale: /* replace with your chip's kernel */
      mrk_scale(o[0], a->in[0], a->n, a->alpha);
      break;
    case MK_OP_COUNT:
      break;
  }
}

/*
 * mk_op_prepare does all the checking the ABI asks for (unknown op ->
 * UNSUPPORTED; counts, shapes, dtypes, bounds, attributes, token ranges ->
 * INVALID_ARGUMENT) and fills `args`. Keep it even when your memory is not
 * host memory: it is the easiest way to get every error path right.
 */
static medley_error *tpl_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                   size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  medley_error *error = tpl_check(device, stream, "op_launch");
  if (error != NULL) return error;
  mk_op_args args;
  error = mk_op_prepare(&device->memory, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs,
                        TPL_FLOAT_DTYPES, &args);
  if (error != NULL) return error;
  tpl_run_op(&args);
  return NULL;
}

/* Optional: a step boundary. Real chips can open a profiler range here. */
static medley_error *tpl_step_begin(medley_device *device, int64_t step) {
  medley_error *error = tpl_check_device(device, "step_begin");
  if (error != NULL) return error;
  if (step < 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "step_begin: step %lld is negative", (long long)step);
  return NULL;
}

/* ========================================================================= */
/* The table: the one thing the host loads                                   */
/* ========================================================================= */

/*
 * Fill every entry you implement. Optional entries (copy_d2d, stream_create,
 * stream_destroy, step_begin) may be left NULL. Keep struct_size and the
 * versions exactly as below: the host uses them to know what you offer.
 */
static const medley_adapter_api tpl_api = {
    .struct_size = sizeof(medley_adapter_api),
    .abi_major = MEDLEY_ABI_MAJOR,
    .abi_minor = MEDLEY_ABI_MINOR,
    .opset_version = MEDLEY_OPSET_VERSION,
    .reserved = 0,
    .error_free = mk_error_free,
    .plugin_info = tpl_plugin_info,
    .device_count = tpl_device_count,
    .device_open = tpl_device_open,
    .device_close = tpl_device_close,
    .device_describe = tpl_device_describe,
    .buffer_alloc = tpl_buffer_alloc,
    .buffer_free = tpl_buffer_free,
    .copy_h2d = tpl_copy_h2d,
    .copy_d2h = tpl_copy_d2h,
    .copy_d2d = tpl_copy_d2d,
    .memset = tpl_memset,
    .stream_create = tpl_stream_create,
    .stream_destroy = tpl_stream_destroy,
    .stream_synchronize = tpl_stream_synchronize,
    .op_query = tpl_op_query,
    .op_launch = tpl_op_launch,
    .step_begin = tpl_step_begin,
};

/* The only exported symbol. */
MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &tpl_api; }
