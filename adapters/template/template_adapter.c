/*
 * template_adapter.c — the full template: the file a chip team copies to
 * start a Medley adapter that offers everything the ABI has.
 *
 * (Just want to see the shape of an adapter first? minimal_adapter.c beside
 * this file is the smallest one that passes the check, on one screen.)
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
 * options, memory, copies and streams, ops, and finally the table.
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

/* Change these four strings first. */
#define TPL_PLUGIN_NAME "template"
#define TPL_VENDOR "Your Company"
#define TPL_VERSION "0.1.0"
#define TPL_DEVICE_NAME "template-device"

/* mk_plugin_info checks the host's struct_size (hosts older or newer than
   this adapter may pass smaller or larger structs) and fills the strings. */
static medley_error *tpl_plugin_info(medley_plugin_info *out) {
  return mk_plugin_info(out, TPL_PLUGIN_NAME, TPL_VENDOR, TPL_VERSION);
}

/* ========================================================================= */
/* Devices and their options                                                 */
/* ========================================================================= */

/* The float dtypes your kernels accept; op_query and op_launch both use it. */
#define TPL_FLOAT_DTYPES MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32)

/*
 * What the kit's shared entries (mk_host_*) need to know about this
 * adapter's devices: its name for messages and the float dtypes. The last
 * field may name a further check of every call (the sim adapter refuses a
 * device that an injected fault has lost); NULL here.
 */
static const mk_host_kind tpl_kind = {TPL_PLUGIN_NAME, TPL_FLOAT_DTYPES, NULL};

/*
 * Your device handle. The host only ever sees a pointer to it. It begins
 * with the kit's mk_host_device (memory with a capacity, live buffers and
 * streams, and the magic number that lets every entry reject a pointer that
 * is not an open device of this adapter). Put your runtime's context,
 * queue and allocator after it.
 */
struct medley_device {
  mk_host_device host; /* first; replace its memory with your chip's allocator state */
};

/* How many devices you can open: ask your runtime (cudaGetDeviceCount, …). */
static medley_error *tpl_device_count(int32_t *out_count) { return mk_device_count(out_count, 1); }

/*
 * Options arrive as strings ("memory" = "2GiB"). Reject unknown keys and
 * malformed values with a message that names the key and the accepted form.
 * Add your own keys here (e.g. a clock setting or a firmware path).
 */
static medley_error *tpl_parse_options(const medley_option *options, size_t num_options, uint64_t *capacity) {
  medley_error *error = mk_check_options(options, num_options); /* NULL arrays, keys and values */
  if (error != NULL) return error;
  *capacity = mk_system_memory_bytes(8ull << 30); /* replace with your chip's memory size */
  for (size_t i = 0; i < num_options; i++) {
    const char *key = options[i].key, *value = options[i].value;
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
  mk_host_device_init(&device->host, &tpl_kind, capacity); /* replace with your chip's context creation */
  *out_device = device;
  return NULL;
}

/* Close frees everything still on the device: buffers and streams. Only the
   handle is checked, so close works even on a device that has failed. */
static medley_error *tpl_device_close(medley_device *device) {
  medley_error *error = mk_host_check_handle(device, &tpl_kind, "device_close");
  if (error != NULL) return error;
  mk_host_device_release(&device->host); /* replace with your chip's teardown */
  free(device);
  return NULL;
}

/* Strings returned here must stay valid until the device is closed. */
static medley_error *tpl_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = mk_host_check_device(device, &tpl_kind, "device_describe");
  if (error != NULL) return error;
  /* Add MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_BF16) etc. once your kernels take them (and to TPL_FLOAT_DTYPES). */
  uint32_t dtypes = TPL_FLOAT_DTYPES | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32);
  uint32_t compute_units = 1; /* cores / SMs / tiles: informational */
  return mk_describe(out, TPL_DEVICE_NAME, TPL_VENDOR, device->host.memory.capacity, dtypes, compute_units);
}

/* ========================================================================= */
/* Memory, copies and streams                                                */
/* ========================================================================= */

/*
 * As shipped, these entries are the kit's, put straight into the table
 * below: mk_host_buffer_alloc / _free (host buffers with a capacity limit:
 * over it is OUT_OF_MEMORY, never a crash), mk_host_copy_h2d / _d2h / _d2d
 * and mk_host_memset (each checks that the buffer is live and the byte
 * range lies inside it), and mk_host_stream_create / _destroy /
 * _synchronize (work runs synchronously in the calling thread, so a stream
 * is a token the host holds, checked on every use).
 *
 * When your chip has its own memory, write these entries here with the
 * same signatures and put yours in the table instead, keeping the order of
 * checks the kit uses: the device first, then the stream, then the buffer
 * range. For example:
 *
 *   static medley_error *tpl_buffer_alloc(medley_device *device, uint64_t bytes, medley_buffer **out) {
 *     medley_error *error = mk_host_check_device(device, &tpl_kind, "buffer_alloc");
 *     if (error != NULL) return error;
 *     ... your allocator; more than the device has left is MEDLEY_ERROR_OUT_OF_MEMORY ...
 *   }
 *
 * A chip with real queues puts its queue handle in its own struct
 * medley_stream and makes stream_synchronize wait on it, reporting there a
 * failure of earlier queued work. copy_d2d, stream_create and
 * stream_destroy are optional: leave them NULL and the host bounces copies
 * through host memory and uses the default stream (NULL) only.
 */

/* ========================================================================= */
/* Ops                                                                       */
/* ========================================================================= */

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
 * mk_host_launch_prepare checks the device and the stream, then hands the
 * launch to mk_op_prepare, which does all the checking the ABI asks for
 * (unknown op -> UNSUPPORTED; counts, shapes, dtypes, bounds, attributes,
 * token ranges -> INVALID_ARGUMENT) and fills `args`. When your memory is
 * not host memory, check launches with the kit's mk_op_check (the same
 * checks, with buffer sizes through a callback and byte offsets instead of
 * pointers) and mk_op_check_tokens on a host copy of the ids: see
 * adapters/template-devmem/devmem_adapter.c.
 *
 * op_query is the kit's mk_host_op_query: an op of opset v1 with one of
 * TPL_FLOAT_DTYPES is supported; an unknown name is simply unsupported.
 */
static medley_error *tpl_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                   size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  mk_op_args args;
  medley_error *error = mk_host_launch_prepare(device, &tpl_kind, stream, op_name, inputs, num_inputs, outputs,
                                               num_outputs, attrs, num_attrs, &args);
  if (error != NULL) return error;
  tpl_run_op(&args);
  return NULL;
}

/* Optional: a step boundary. Real chips can open a profiler range here. */
static medley_error *tpl_step_begin(medley_device *device, int64_t step) {
  return mk_host_step_begin(device, step); /* checks the device and step >= 0; add your chip's tracing */
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
    .buffer_alloc = mk_host_buffer_alloc,             /* replace with your chip's allocator */
    .buffer_free = mk_host_buffer_free,               /* replace with your chip's free */
    .copy_h2d = mk_host_copy_h2d,                     /* replace with your chip's upload */
    .copy_d2h = mk_host_copy_d2h,                     /* replace with your chip's download */
    .copy_d2d = mk_host_copy_d2d,                     /* optional: replace with your chip's copy */
    .memset = mk_host_memset,                         /* replace with your chip's fill */
    .stream_create = mk_host_stream_create,           /* optional: replace with your chip's queues */
    .stream_destroy = mk_host_stream_destroy,         /* optional */
    .stream_synchronize = mk_host_stream_synchronize, /* replace with your chip's queue wait */
    .op_query = mk_host_op_query,
    .op_launch = tpl_op_launch,
    .step_begin = tpl_step_begin,
};

/* The only exported symbol. */
MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &tpl_api; }
