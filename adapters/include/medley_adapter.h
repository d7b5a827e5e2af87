/*
 * medley_adapter.h — the Medley chip adapter ABI, version 1.
 *
 * A chip joins Medley through an adapter: a shared library that exports ONE
 * symbol, MEDLEY_ADAPTER_ENTRY_SYMBOL ("medley_adapter_get_api"), returning a
 * pointer to a constant medley_adapter_api table. Everything else is reached
 * through that table. This header is the whole contract; docs/adapters.md is
 * the guide that walks through it.
 *
 * Rules of the ABI
 * ----------------
 * 1. The table is APPEND-ONLY, forever. Entries are never removed, reordered
 *    or retyped. A host reads `struct_size` and treats any entry that lies
 *    beyond it as absent, so an old adapter keeps working with a new host and
 *    a new adapter with an old host (the old host never looks past the
 *    entries it knows).
 * 2. `abi_major` changes only when rule 1 cannot be kept; a host refuses a
 *    table whose major differs from its own. `abi_minor` grows when entries
 *    are appended. `opset_version` names the set of ops and their exact
 *    semantics (see "Opset v1" below).
 * 3. Every fallible call returns `medley_error *`: NULL means success,
 *    anything else is an error object that the HOST releases with the
 *    table's `error_free`. Nothing crosses the boundary any other way: an
 *    adapter never calls exit(), abort(), longjmp() out of a call, or throws.
 *    Bad arguments (null buffers, wrong shapes, out-of-range offsets, unknown
 *    ops or attributes) are reported as MEDLEY_ERROR_INVALID_ARGUMENT.
 * 4. Which entries are required and which are optional is written ONCE, in
 *    MEDLEY_ADAPTER_ENTRIES below. The host's loader and the documentation
 *    are both generated from that list.
 * 5. Strings handed to the adapter are borrowed for the duration of the call.
 *    Strings returned by the adapter (plugin info, device description) stay
 *    valid until the device is closed (device description) or the library is
 *    unloaded (plugin info).
 *
 * Threading: the host calls into one device from one thread at a time.
 * Different devices may be driven from different threads.
 */
#ifndef MEDLEY_ADAPTER_H
#define MEDLEY_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Versions and the entry symbol                                            */
/* ------------------------------------------------------------------------ */

#define MEDLEY_ABI_MAJOR 1
#define MEDLEY_ABI_MINOR 0
#define MEDLEY_OPSET_VERSION 1

/** The one exported symbol. Its type is medley_adapter_get_api_fn. */
#define MEDLEY_ADAPTER_ENTRY_SYMBOL "medley_adapter_get_api"

/** Marks the entry symbol as exported even when built with -fvisibility=hidden. */
#if defined(_WIN32)
#define MEDLEY_ADAPTER_EXPORT __declspec(dllexport)
#else
#define MEDLEY_ADAPTER_EXPORT __attribute__((visibility("default")))
#endif

/** Largest tensor rank an op descriptor can carry. */
#define MEDLEY_MAX_RANK 6

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/** Error codes. New codes may be appended; hosts treat unknown codes as INTERNAL. */
typedef enum medley_error_code {
  MEDLEY_ERROR_INVALID_ARGUMENT = 1, /* the caller passed something wrong */
  MEDLEY_ERROR_OUT_OF_MEMORY = 2,    /* an allocation did not fit */
  MEDLEY_ERROR_UNSUPPORTED = 3,      /* op, dtype or feature not implemented */
  MEDLEY_ERROR_DEVICE_LOST = 4,      /* the device failed; it must be closed */
  MEDLEY_ERROR_INTERNAL = 5,         /* a bug or an unexpected state */
  MEDLEY_ERROR_UNAVAILABLE = 6       /* busy or not ready; may succeed later */
} medley_error_code;

/**
 * An error object: a code and a human-readable, NUL-terminated message that
 * names what was wrong (e.g. "matmul_forward: weight shape [64,32] does not
 * match input channels 48"). Allocated by the adapter, released by the host
 * with medley_adapter_api.error_free, exactly once.
 */
typedef struct medley_error {
  int32_t code;        /* a medley_error_code */
  const char *message; /* owned by the error object */
} medley_error;

/* ------------------------------------------------------------------------ */
/* Opaque handles                                                           */
/* ------------------------------------------------------------------------ */

typedef struct medley_device medley_device; /* an opened device */
typedef struct medley_buffer medley_buffer; /* device memory of a fixed size */
typedef struct medley_stream medley_stream; /* an in-order work queue; NULL = default stream */

/* ------------------------------------------------------------------------ */
/* Data types                                                               */
/* ------------------------------------------------------------------------ */

typedef enum medley_dtype {
  MEDLEY_DTYPE_F32 = 1,  /* IEEE binary32; every op must support it */
  MEDLEY_DTYPE_BF16 = 2, /* bfloat16; optional */
  MEDLEY_DTYPE_F16 = 3,  /* IEEE binary16; optional */
  MEDLEY_DTYPE_I32 = 4   /* token ids and targets */
} medley_dtype;

/** Bit for a dtype in medley_device_desc.dtype_mask. */
#define MEDLEY_DTYPE_BIT(d) (1u << (uint32_t)(d))

/* ------------------------------------------------------------------------ */
/* Plugin, options and devices                                              */
/* ------------------------------------------------------------------------ */

/** What the library is. Filled by plugin_info. */
typedef struct medley_plugin_info {
  size_t struct_size;  /* set by the HOST to sizeof(medley_plugin_info) */
  const char *name;    /* short adapter name, e.g. "reference" */
  const char *vendor;  /* who makes the chip, e.g. "Medley" */
  const char *version; /* the adapter's own version, e.g. "1.0.0" */
} medley_plugin_info;

/**
 * A key/value option passed to device_open (e.g. {"threads","4"}). Keys and
 * values are strings; the adapter parses them and rejects unknown keys and
 * malformed values with MEDLEY_ERROR_INVALID_ARGUMENT and a message that
 * names the key and the accepted form.
 */
typedef struct medley_option {
  const char *key;
  const char *value;
} medley_option;

/** What a device is. Filled by device_describe. */
typedef struct medley_device_desc {
  size_t struct_size;     /* set by the HOST to sizeof(medley_device_desc) */
  const char *name;       /* model name of the part, e.g. "reference-cpu" */
  const char *vendor;     /* vendor of the part (may differ per device) */
  uint64_t memory_bytes;  /* memory the host may allocate on this device */
  uint32_t dtype_mask;    /* OR of MEDLEY_DTYPE_BIT(d) for supported dtypes */
  uint32_t compute_units; /* cores, SMs, …; informational */
} medley_device_desc;

/* ------------------------------------------------------------------------ */
/* Tensors and attributes for ops                                           */
/* ------------------------------------------------------------------------ */

/**
 * A view of device memory as a dense, row-major tensor. The bytes it covers,
 * [offset, offset + numel * sizeof(dtype)), must lie inside the buffer; the
 * adapter checks this and returns INVALID_ARGUMENT otherwise.
 */
typedef struct medley_tensor {
  medley_buffer *buffer;
  uint64_t offset; /* in bytes from the buffer's start */
  int32_t dtype;   /* a medley_dtype */
  int32_t rank;    /* 0 ... MEDLEY_MAX_RANK; rank 0 is a scalar */
  int64_t shape[MEDLEY_MAX_RANK];
} medley_tensor;

/** A named scalar attribute of an op (integers are passed exactly as doubles). */
typedef struct medley_attr {
  const char *name;
  double value;
} medley_attr;

/* ------------------------------------------------------------------------ */
/* Function types of the table's entries                                    */
/* ------------------------------------------------------------------------ */

typedef void (*medley_error_free_fn)(medley_error *error);
typedef medley_error *(*medley_plugin_info_fn)(medley_plugin_info *out);
typedef medley_error *(*medley_device_count_fn)(int32_t *out_count);
typedef medley_error *(*medley_device_open_fn)(int32_t index, const medley_option *options,
                                               size_t num_options, medley_device **out_device);
typedef medley_error *(*medley_device_close_fn)(medley_device *device);
typedef medley_error *(*medley_device_describe_fn)(medley_device *device, medley_device_desc *out);
typedef medley_error *(*medley_buffer_alloc_fn)(medley_device *device, uint64_t bytes,
                                                medley_buffer **out_buffer);
typedef medley_error *(*medley_buffer_free_fn)(medley_device *device, medley_buffer *buffer);
typedef medley_error *(*medley_copy_h2d_fn)(medley_device *device, medley_stream *stream,
                                            medley_buffer *dst, uint64_t dst_offset,
                                            const void *src, uint64_t bytes);
typedef medley_error *(*medley_copy_d2h_fn)(medley_device *device, medley_stream *stream,
                                            void *dst, medley_buffer *src, uint64_t src_offset,
                                            uint64_t bytes);
typedef medley_error *(*medley_copy_d2d_fn)(medley_device *device, medley_stream *stream,
                                            medley_buffer *dst, uint64_t dst_offset,
                                            medley_buffer *src, uint64_t src_offset,
                                            uint64_t bytes);
typedef medley_error *(*medley_memset_fn)(medley_device *device, medley_stream *stream,
                                          medley_buffer *dst, uint64_t offset, uint8_t value,
                                          uint64_t bytes);
typedef medley_error *(*medley_stream_create_fn)(medley_device *device, medley_stream **out_stream);
typedef medley_error *(*medley_stream_destroy_fn)(medley_device *device, medley_stream *stream);
typedef medley_error *(*medley_stream_synchronize_fn)(medley_device *device, medley_stream *stream);
typedef medley_error *(*medley_op_query_fn)(medley_device *device, const char *op_name,
                                            int32_t dtype, int32_t *out_supported);
typedef medley_error *(*medley_step_begin_fn)(medley_device *device, int64_t step);
typedef medley_error *(*medley_op_launch_fn)(medley_device *device, medley_stream *stream,
                                             const char *op_name,
                                             const medley_tensor *inputs, size_t num_inputs,
                                             const medley_tensor *outputs, size_t num_outputs,
                                             const medley_attr *attrs, size_t num_attrs);

/*
 * Semantics of the entries
 * ------------------------
 * error_free          Releases an error returned by any entry. NULL is a no-op.
 * plugin_info         Fills name/vendor/version. Callable before any device is open.
 * device_count        Number of devices this adapter can open (>= 0).
 * device_open         Opens device `index` with options. Unknown option keys and
 *                     malformed values are INVALID_ARGUMENT. Each call returns a
 *                     distinct device, even for the same index.
 * device_close        Releases the device and every buffer and stream still on it.
 * device_describe     Fills the description (reflecting the options it was opened with).
 * buffer_alloc        Allocates `bytes` (> 0) of device memory. More than the device
 *                     has left is OUT_OF_MEMORY, never a crash. Contents undefined.
 * buffer_free         Releases a buffer. NULL is a no-op.
 * copy_h2d            Copies host -> device. The host memory may be reused as soon
 *                     as the call returns.
 * copy_d2h            Copies device -> host. The host memory holds the data once
 *                     the stream has been synchronized.
 * copy_d2d            (optional) Copies device -> device within one device. Without
 *                     it the host bounces the bytes through host memory.
 * memset              Sets `bytes` bytes at `offset` to `value`.
 * stream_create       (optional) Creates an extra in-order stream. Without it the
 *   / stream_destroy  host uses the default stream (NULL) only.
 * stream_synchronize  Waits until all work queued on the stream has finished.
 *                     A failure of earlier queued work may be reported here.
 * op_query            Sets *out_supported to 1 when op `op_name` runs with `dtype`
 *                     for its floating-point tensors, else 0. An unknown op name is
 *                     not an error: it is simply unsupported.
 * step_begin          (optional) Tells the device that training step `step` (>= 0)
 *                     begins. Purely informational for real chips (tracing ranges);
 *                     the sim adapter uses it to inject faults at a chosen step.
 * op_launch           Runs an op of the opset (below) on `stream`. An unknown op is
 *                     UNSUPPORTED; wrong counts, shapes, dtypes, null buffers,
 *                     out-of-bounds views or missing attributes are INVALID_ARGUMENT.
 *                     Outputs may be read as well as written where the op says so.
 *
 * All copies and ops are ordered within a stream. Offsets are in bytes.
 */

/* ------------------------------------------------------------------------ */
/* The table                                                                */
/* ------------------------------------------------------------------------ */

/**
 * X-macro listing every entry of the table in order, with whether ABI v1
 * requires it and the ABI minor that introduced it. This list is the single
 * source of truth for required vs optional entries; the host loader and
 * docs/adapters.md are generated from it. APPEND ONLY.
 *
 * X(field, type, required, since_minor)
 */
#define MEDLEY_ADAPTER_ENTRIES(X)                                   \
  X(error_free, medley_error_free_fn, 1, 0)                         \
  X(plugin_info, medley_plugin_info_fn, 1, 0)                       \
  X(device_count, medley_device_count_fn, 1, 0)                     \
  X(device_open, medley_device_open_fn, 1, 0)                       \
  X(device_close, medley_device_close_fn, 1, 0)                     \
  X(device_describe, medley_device_describe_fn, 1, 0)               \
  X(buffer_alloc, medley_buffer_alloc_fn, 1, 0)                     \
  X(buffer_free, medley_buffer_free_fn, 1, 0)                       \
  X(copy_h2d, medley_copy_h2d_fn, 1, 0)                             \
  X(copy_d2h, medley_copy_d2h_fn, 1, 0)                             \
  X(copy_d2d, medley_copy_d2d_fn, 0, 0)                             \
  X(memset, medley_memset_fn, 1, 0)                                 \
  X(stream_create, medley_stream_create_fn, 0, 0)                   \
  X(stream_destroy, medley_stream_destroy_fn, 0, 0)                 \
  X(stream_synchronize, medley_stream_synchronize_fn, 1, 0)         \
  X(op_query, medley_op_query_fn, 1, 0)                             \
  X(op_launch, medley_op_launch_fn, 1, 0)                           \
  X(step_begin, medley_step_begin_fn, 0, 0)

/** The table an adapter exports. Fill `struct_size` with sizeof(medley_adapter_api). */
typedef struct medley_adapter_api {
  size_t struct_size;
  uint32_t abi_major;     /* MEDLEY_ABI_MAJOR the adapter was built against */
  uint32_t abi_minor;     /* MEDLEY_ABI_MINOR the adapter was built against */
  uint32_t opset_version; /* MEDLEY_OPSET_VERSION the adapter implements */
  uint32_t reserved;      /* zero */
#define MEDLEY_ADAPTER_API_FIELD_(field, type, required, since) type field;
  MEDLEY_ADAPTER_ENTRIES(MEDLEY_ADAPTER_API_FIELD_)
#undef MEDLEY_ADAPTER_API_FIELD_
} medley_adapter_api;

/** Type of the exported entry symbol. */
typedef const medley_adapter_api *(*medley_adapter_get_api_fn)(void);

/* ------------------------------------------------------------------------ */
/* Opset v1                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * The ops a GPT-2 style decoder needs to train. Shapes use:
 *   B batch, T sequence, C channels, V vocabulary, NH heads, hs = C/NH,
 *   OC output channels, N = product of all leading dimensions ("rows"),
 *   maxT the number of learned positions (T <= maxT).
 * Token ids and targets are I32; every other tensor is the op's float dtype
 * (all the same within one launch). Float tensors may have any leading
 * dimensions where the op says "[..., C]"; they are flattened to [N, C].
 *
 * GRADIENT CONVENTION: every *_backward op ACCUMULATES (+=) into all of its
 * outputs, parameter gradients and input gradients alike. The host zeroes
 * gradient buffers (memset) when it starts a step. This lets residual
 * branches and micro-batches add up without extra ops.
 *
 * Op                    inputs                                  outputs                      attrs
 * --------------------  --------------------------------------  ---------------------------  -------------------------------
 * encoder_forward       tokens[B,T] i32, wte[V,C], wpe[maxT,C]    out[B,T,C]                   -
 *                       out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]; a token outside [0,V) is INVALID_ARGUMENT
 * encoder_backward      dout[B,T,C], tokens[B,T] i32              dwte[V,C] +=, dwpe[maxT,C] +=  -
 * layernorm_forward     x[...,C], weight[C], bias[C]              out[...,C], mean[N], rstd[N]  eps (default 1e-5)
 *                       mean, rstd = 1/sqrt(var + eps) with the biased variance; out = (x-mean)*rstd*weight + bias
 * layernorm_backward    dout[...,C], x[...,C], weight[C],         dx[...,C] +=, dweight[C] +=,  -
 *                       mean[N], rstd[N]                          dbias[C] +=
 * matmul_forward        x[...,C], weight[OC,C], (bias[OC])        out[...,OC]                  -
 *                       out = x · weightᵀ + bias; bias is optional (2 or 3 inputs)
 * matmul_backward       dout[...,OC], x[...,C], weight[OC,C]      dx[...,C] +=, dweight[OC,C] +=, (dbias[OC] +=)  -
 *                       dbias is optional (2 or 3 outputs)
 * attention_forward     qkv[B,T,3C]                               out[B,T,C], lse[B,NH,T]      num_heads
 *                       q,k,v are qkv[...,0:C], [C:2C], [2C:3C]; head h uses channels h*hs..(h+1)*hs of each.
 *                       Causal: position t attends to 0..t. Scores are scaled by 1/sqrt(hs).
 *                       lse[b,h,t] is the natural-log-sum-exp of the scaled scores of row t.
 * attention_backward    dout[B,T,C], qkv[B,T,3C], out[B,T,C],     dqkv[B,T,3C] +=              num_heads
 *                       lse[B,NH,T]
 * gelu_forward          x[...]                                    out[...]                     -
 *                       out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
 * gelu_backward         dout[...], x[...]                         dx[...] +=                   -
 * residual_forward      a[...], b[...]                            out[...]                     -
 *                       out = a + b (out may alias a or b)
 * residual_backward     dout[...]                                 da[...] +=, db[...] +=        -
 * crossentropy_forward  logits[...,V], targets[...] i32           losses[...], lse[...]        -
 *                       lse = log-sum-exp of the row; losses = lse - logits[target];
 *                       a target < 0 is ignored (loss 0); a target >= V is INVALID_ARGUMENT
 * crossentropy_backward logits[...,V], targets[...] i32, lse[...]  dlogits[...,V] +=           scale
 *                       dlogits += scale * (softmax(logits) - onehot(target)); ignored rows add nothing.
 *                       For a mean loss over M positions, scale = 1/M.
 * adamw_update          grad[n]                                   param[n], m[n], v[n]         lr, beta1, beta2, eps,
 *                                                                 (read and written)           weight_decay, step,
 *                                                                                              grad_scale (default 1)
 *                       g = grad*grad_scale; m = beta1 m + (1-beta1) g; v = beta2 v + (1-beta2) g^2;
 *                       mhat = m/(1-beta1^step); vhat = v/(1-beta2^step);
 *                       param -= lr * (mhat/(sqrt(vhat)+eps) + weight_decay*param)   (step >= 1)
 * sum_squares           x[...]                                    out[1] +=                    -
 *                       out[0] += sum of x^2 (accumulated in at least double precision, then rounded)
 * scale                 x[...]                                    out[...]                     alpha
 *                       out = alpha * x (out may alias x)
 *
 * All element counts of paired tensors must match exactly; any mismatch is
 * INVALID_ARGUMENT with a message naming the op, the tensor and both shapes.
 *
 * X(id, "name", num_inputs_min, num_inputs_max, num_outputs_min, num_outputs_max)
 */
#define MEDLEY_OPSET_V1(X)                                   \
  X(encoder_forward, "encoder_forward", 3, 3, 1, 1)          \
  X(encoder_backward, "encoder_backward", 2, 2, 2, 2)        \
  X(layernorm_forward, "layernorm_forward", 3, 3, 3, 3)      \
  X(layernorm_backward, "layernorm_backward", 5, 5, 3, 3)    \
  X(matmul_forward, "matmul_forward", 2, 3, 1, 1)            \
  X(matmul_backward, "matmul_backward", 3, 3, 2, 3)          \
  X(attention_forward, "attention_forward", 1, 1, 2, 2)      \
  X(attention_backward, "attention_backward", 4, 4, 1, 1)    \
  X(gelu_forward, "gelu_forward", 1, 1, 1, 1)                \
  X(gelu_backward, "gelu_backward", 2, 2, 1, 1)              \
  X(residual_forward, "residual_forward", 2, 2, 1, 1)        \
  X(residual_backward, "residual_backward", 1, 1, 2, 2)      \
  X(crossentropy_forward, "crossentropy_forward", 2, 2, 2, 2) \
  X(crossentropy_backward, "crossentropy_backward", 3, 3, 1, 1) \
  X(adamw_update, "adamw_update", 1, 1, 3, 3)                \
  X(sum_squares, "sum_squares", 1, 1, 1, 1)                  \
  X(scale, "scale", 1, 1, 1, 1)

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MEDLEY_ADAPTER_H */
