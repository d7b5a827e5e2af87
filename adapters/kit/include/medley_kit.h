/*
 * medley_kit.h — helpers for writing a Medley adapter.
 *
 * The kit does the parts of the ABI that every adapter would otherwise write
 * again. Two kinds of adapter use it:
 *
 * Any adapter, whatever its memory (a GPU's, an accelerator's, the host's):
 *   errors (mk_error), dtypes, option parsing, mk_plugin_info, mk_describe,
 *   mk_check_device, mk_op_lookup, mk_op_query, and — most of all —
 *   mk_op_check, which checks an op launch against the opset v1 contract
 *   (counts, dtypes, shapes, attributes, bounds, alignment) without touching
 *   the buffers' bytes: it learns a buffer's size through a callback
 *   (mk_memory_ops) and hands back each tensor as buffer + byte offset + byte
 *   size (mk_op_args.in_ref / out_ref) for the adapter to turn into device
 *   addresses. Token ids are checked separately by mk_op_check_tokens, on a
 *   host copy the adapter makes with its own device-to-host copy.
 *   adapters/template-devmem/devmem_adapter.c is the example to copy: its
 *   memory is kept apart from host memory and reached only through copies.
 *
 * An adapter whose device memory is host memory (the reference, cpu and sim
 *   adapters, and adapters/template): on top of the above, buffers with
 *   bounds and a capacity limit (mk_memory), the copies, streams as checked
 *   tokens, mk_op_prepare (mk_op_check over that memory, then plain pointers
 *   in mk_op_args.in / out, then the token check in place), and the
 *   "host-memory devices" section: whole table entries (buffer_alloc ...
 *   stream_synchronize, op_query, step_begin) for an adapter whose device
 *   struct begins with an mk_host_device.
 *
 * Everything here is hidden inside the adapter's shared library: only the
 * entry symbol is exported.
 */
#ifndef MEDLEY_KIT_H
#define MEDLEY_KIT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "medley_adapter.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MK_API __attribute__((visibility("hidden")))

/* ---- errors ------------------------------------------------------------ */

/** Makes an error object with a printf-style message. Never returns NULL. */
MK_API medley_error *mk_error(int32_t code, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
MK_API medley_error *mk_verror(int32_t code, const char *format, va_list args);
/** Releases an error made by mk_error; suitable as the table's error_free. */
MK_API void mk_error_free(medley_error *error);

/* ---- dtypes ------------------------------------------------------------- */

/** Bytes per element, or 0 for an unknown dtype. */
MK_API size_t mk_dtype_size(int32_t dtype);
/** "f32", "bf16", "f16", "i32" or "?". */
MK_API const char *mk_dtype_name(int32_t dtype);

/* ---- memory --------------------------------------------------------------- */

/** A device's memory: a capacity and the buffers allocated from it. */
typedef struct mk_memory {
  uint64_t capacity; /* bytes the device offers */
  uint64_t used;     /* bytes allocated now */
  struct medley_buffer *head; /* every live buffer, so close can free them */
} mk_memory;

MK_API void mk_memory_init(mk_memory *memory, uint64_t capacity);
/** Frees every buffer still allocated. */
MK_API void mk_memory_release_all(mk_memory *memory);

MK_API medley_error *mk_buffer_alloc(mk_memory *memory, uint64_t bytes, medley_buffer **out);
MK_API medley_error *mk_buffer_free(mk_memory *memory, medley_buffer *buffer);
/** Checks that `buffer` is a live buffer of `memory` and [offset, offset+bytes) lies inside. */
MK_API medley_error *mk_buffer_check(const mk_memory *memory, const medley_buffer *buffer,
                                     uint64_t offset, uint64_t bytes, const char *what);
MK_API unsigned char *mk_buffer_data(medley_buffer *buffer);
MK_API uint64_t mk_buffer_size(const medley_buffer *buffer);

MK_API medley_error *mk_copy_h2d(mk_memory *memory, medley_buffer *dst, uint64_t dst_offset,
                                 const void *src, uint64_t bytes);
MK_API medley_error *mk_copy_d2h(mk_memory *memory, void *dst, medley_buffer *src,
                                 uint64_t src_offset, uint64_t bytes);
MK_API medley_error *mk_copy_d2d(mk_memory *memory, medley_buffer *dst, uint64_t dst_offset,
                                 medley_buffer *src, uint64_t src_offset, uint64_t bytes);
MK_API medley_error *mk_memset(mk_memory *memory, medley_buffer *dst, uint64_t offset,
                               uint8_t value, uint64_t bytes);

/** Total memory of this machine in bytes (from the OS), or `fallback` if unknown. */
MK_API uint64_t mk_system_memory_bytes(uint64_t fallback);

/* ---- plugin and device handles --------------------------------------------- */

/** True when a host struct of `size` bytes (its struct_size) has room for `field`. */
#define MK_HAS_FIELD(size, type, field) ((size) >= offsetof(type, field) + sizeof(((type *)0)->field))

/**
 * Fills plugin_info after checking `out` and its struct_size; a whole
 * plugin_info entry for most adapters. The strings must be static.
 */
MK_API medley_error *mk_plugin_info(medley_plugin_info *out, const char *name, const char *vendor,
                                    const char *version);

/** A whole device_count entry for an adapter with a fixed number of devices. */
MK_API medley_error *mk_device_count(int32_t *out_count, int32_t count);

/**
 * The body of device_describe once the device is checked: checks `out` and
 * its struct_size, then fills it. The strings must stay valid until the
 * device is closed.
 */
MK_API medley_error *mk_describe(medley_device_desc *out, const char *name, const char *vendor,
                                 uint64_t memory_bytes, uint32_t dtype_mask, uint32_t compute_units);

/**
 * Checks a device handle whose struct BEGINS with its uint64_t magic number
 * (set at device_open, cleared at device_close). NULL gives "ENTRY: device is
 * NULL", another magic "ENTRY: <pointer> is not an open ADAPTER device"; both
 * INVALID_ARGUMENT.
 */
MK_API medley_error *mk_check_device(const void *device, uint64_t magic, const char *adapter,
                                     const char *entry);

/* ---- streams --------------------------------------------------------------- */

/**
 * The streams of a device whose work runs synchronously in the calling
 * thread: each stream is only a token the host holds, checked on every use.
 * NULL is the default stream. A zeroed list is empty (a calloc'd device).
 */
typedef struct mk_stream_list {
  struct medley_stream *head; /* every live stream made by mk_stream_create */
} mk_stream_list;

/** A whole stream_create entry, once the device is checked. */
MK_API medley_error *mk_stream_create(mk_stream_list *streams, medley_stream **out_stream);
/** A whole stream_destroy entry, once the device is checked: NULL or a stream not in the list is an error. */
MK_API medley_error *mk_stream_destroy(mk_stream_list *streams, medley_stream *stream);
/**
 * NULL (the default stream) or a live stream of the list passes; anything else
 * is "ENTRY: stream <pointer> is not a live stream of this device".
 */
MK_API medley_error *mk_stream_check(const mk_stream_list *streams, const medley_stream *stream,
                                     const char *entry);
/** Frees every stream still live (device_close). */
MK_API void mk_stream_release_all(mk_stream_list *streams);

/* ---- options --------------------------------------------------------------- */

/**
 * Checks the option array of device_open before its keys are read: NULL with
 * a non-zero count, or an option whose key or value is NULL, is
 * INVALID_ARGUMENT ("device_open: ...").
 */
MK_API medley_error *mk_check_options(const medley_option *options, size_t num_options);
/** Parses a non-negative finite decimal ("0.5", "2"). Returns 0 on success. */
MK_API int mk_parse_double(const char *text, double *out);
/** Parses an integer in [min, max]. Returns 0 on success. */
MK_API int mk_parse_int(const char *text, int64_t min, int64_t max, int64_t *out);
/** Parses a byte size: "1048576", "64KiB", "512MiB", "2GiB", "1.5GB" (KB=1000, KiB=1024). */
MK_API int mk_parse_bytes(const char *text, uint64_t *out);

/* ---- ops --------------------------------------------------------------------- */

typedef enum mk_op_id {
#define MK_OP_ENUM_(id, name, imin, imax, omin, omax) MK_OP_##id,
  MEDLEY_OPSET_V1(MK_OP_ENUM_)
#undef MK_OP_ENUM_
  MK_OP_COUNT
} mk_op_id;

/** The op id for a name, or MK_OP_COUNT for an unknown name. */
MK_API mk_op_id mk_op_lookup(const char *name);
MK_API const char *mk_op_name(mk_op_id op);

/** One tensor of a checked launch, as device memory: which buffer, where in it, how many bytes. */
typedef struct mk_tensor_ref {
  medley_buffer *buffer; /* the buffer handle the host passed (checked live by the callback) */
  uint64_t offset;       /* bytes from the buffer's start; a multiple of the element size */
  uint64_t bytes;        /* bytes the tensor covers (elements * element size); inside the buffer */
} mk_tensor_ref;

/**
 * A launch checked against opset v1: dimensions, scalar attributes, and each
 * input and output in the order the opset lists them. Which fields are set
 * depends on the op:
 *
 *   encoder_*      B T C V maxT          layernorm_*    N C eps
 *   matmul_*       N C OC has_bias       attention_*    B T C NH
 *   gelu_*, residual_*, scale, sum_squares, adamw_update: n (elements)
 *   crossentropy_* N V scale             adamw_update   lr beta1 beta2 eps weight_decay step grad_scale
 *   scale          alpha
 *
 * in_ref / out_ref (buffer, byte offset, byte size) are set by mk_op_check for
 * any memory; in / out (pointers, already offset) only by mk_op_prepare, for
 * host memory. An adapter with its own memory may fill in / out itself with
 * addresses its kernels take (the devmem template does) and leave them NULL
 * otherwise.
 */
typedef struct mk_op_args {
  mk_op_id op;
  int32_t dtype; /* the float dtype of the launch */
  int64_t B, T, C, V, maxT, N, OC, NH, n;
  int has_bias;
  double eps, lr, beta1, beta2, weight_decay, step, grad_scale, scale, alpha;
  void *in[5];
  void *out[3];
  size_t num_inputs, num_outputs; /* how many of in_ref / out_ref (and in / out) are set */
  mk_tensor_ref in_ref[5];
  mk_tensor_ref out_ref[3];
} mk_op_args;

/**
 * How mk_op_check learns about a device's buffers without touching them.
 * `buffer_bytes` is called for every tensor's buffer (never NULL: a NULL
 * buffer is refused before): it returns an INVALID_ARGUMENT error when
 * `buffer` is not a live buffer of the device (by convention "WHAT: buffer
 * <handle> is not a live buffer of this device", WHAT being the string it is
 * given, e.g. "gelu_forward: x"), else sets *out_bytes to the buffer's size
 * and returns NULL. It must not dereference an unknown handle: look it up.
 * `ctx` is handed back to it as it is (e.g. the device).
 */
typedef struct mk_memory_ops {
  void *ctx;
  medley_error *(*buffer_bytes)(void *ctx, const medley_buffer *buffer, const char *what,
                                uint64_t *out_bytes);
} mk_memory_ops;

/**
 * Checks that [offset, offset + bytes) of `buffer` is a live buffer's range:
 * NULL is "WHAT: buffer is NULL", a handle the callback refuses is its error,
 * a range outside is "WHAT: bytes [a, b) lie outside the N-byte buffer"; all
 * INVALID_ARGUMENT. The check of a copy's or memset's range, for any memory.
 */
MK_API medley_error *mk_check_range(const mk_memory_ops *memory, const medley_buffer *buffer,
                                    uint64_t offset, uint64_t bytes, const char *what);

/**
 * Checks a launch for any memory and fills `args` (in_ref / out_ref, the
 * dimensions and attributes; in / out are left NULL). `dtype_mask` holds the
 * float dtypes the adapter supports (MEDLEY_DTYPE_BIT). Errors name the op and
 * what is wrong: unknown ops give UNSUPPORTED, as does a float dtype outside
 * `dtype_mask`; everything else INVALID_ARGUMENT. It does NOT read token ids:
 * for an op that has them (mk_op_token_input >= 0) the adapter copies that
 * tensor to the host and calls mk_op_check_tokens before it runs the kernel.
 */
MK_API medley_error *mk_op_check(const mk_memory_ops *memory, const char *op_name,
                                 const medley_tensor *inputs, size_t num_inputs,
                                 const medley_tensor *outputs, size_t num_outputs,
                                 const medley_attr *attrs, size_t num_attrs,
                                 uint32_t dtype_mask, mk_op_args *args);

/**
 * The input of a checked launch that holds I32 ids whose range must be
 * checked (encoder_* tokens, crossentropy_* targets), or -1 when it has none.
 * args->in_ref[k] says where they lie and how many bytes to copy.
 */
MK_API int mk_op_token_input(const mk_op_args *args);

/**
 * Checks the ids of a checked launch, read from `host_ids` (`count` ids: a host
 * copy of in_ref[mk_op_token_input(args)], or the ids in place for host
 * memory): encoder tokens must lie in [0, V), crossentropy targets below V
 * (a negative target is an ignored row). A token outside is INVALID_ARGUMENT
 * ("encoder_forward: tokens[3] = 9 is outside [0, 4)"); fewer ids than the
 * launch has is INTERNAL. NULL for an op without ids.
 */
MK_API medley_error *mk_op_check_tokens(const mk_op_args *args, const int32_t *host_ids, uint64_t count);

/**
 * For host memory: mk_op_check with the buffers of `memory`, then sets in / out
 * to the buffers' bytes (already offset), then mk_op_check_tokens in place.
 * What mk_host_launch_prepare, and so the reference, cpu and sim adapters and
 * adapters/template, use.
 */
MK_API medley_error *mk_op_prepare(const mk_memory *memory, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs,
                                   const medley_tensor *outputs, size_t num_outputs,
                                   const medley_attr *attrs, size_t num_attrs,
                                   uint32_t dtype_mask, mk_op_args *args);

/**
 * The body of op_query, once the device is checked: supported when the op is
 * in opset v1 and `dtype` is one of `dtype_mask`'s float dtypes.
 */
MK_API medley_error *mk_op_query(const char *op_name, int32_t dtype, uint32_t dtype_mask,
                                 int32_t *out_supported);

/** Number of elements of `tensor` (1 for rank 0). */
MK_API int64_t mk_numel(const medley_tensor *tensor);

/* ---- host-memory devices: whole table entries --------------------------------- */

/*
 * For an adapter whose device memory is host memory and whose work runs
 * synchronously in the calling thread. Its struct medley_device begins with
 * an mk_host_device (the FIRST member), and its table takes the mk_host_*
 * entries below as they are:
 *
 *   static const mk_host_kind my_kind = {"mychip", MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32), NULL};
 *   struct medley_device { mk_host_device host; ... what else the adapter keeps ... };
 *   device_open:  calloc, then mk_host_device_init(&device->host, &my_kind, capacity)
 *   device_close: mk_host_check_handle, then mk_host_device_release(&device->host), then free
 *   table:        .buffer_alloc = mk_host_buffer_alloc, .copy_h2d = mk_host_copy_h2d, ...
 *
 * Every mk_host_* entry first checks the handle (NULL is "ENTRY: device is
 * NULL"; a pointer that is not an open kit device is "ENTRY: <pointer> is not
 * an open device of this adapter"), then runs the kind's `check` if it has
 * one, then checks the stream where the entry takes one (NULL, the default
 * stream, or a live stream of the device), and only then does its work.
 */

/** What an adapter tells the kit about its devices: one static constant per adapter. */
typedef struct mk_host_kind {
  const char *adapter;   /* the adapter's name in messages, e.g. "reference" */
  uint32_t float_dtypes; /* MEDLEY_DTYPE_BIT of each float dtype the kernels take (op_query, op_launch) */
  /* Optional (NULL: none). A further check of an open device, run by every
     mk_host_* entry and by mk_host_check_device; NOT by mk_host_check_handle,
     so that device_close still works. The sim fails a lost device here. */
  medley_error *(*check)(const medley_device *device, const char *entry);
} mk_host_kind;

/** The kit's part of a host-memory device: the first member of the adapter's struct medley_device. */
typedef struct mk_host_device {
  uint64_t magic;           /* the kit's device magic while open, 0 once released */
  const mk_host_kind *kind; /* the adapter that opened it */
  mk_memory memory;         /* capacity and live buffers */
  mk_stream_list streams;   /* live streams made by stream_create */
} mk_host_device;

/** Makes `host` an open device of `kind` offering `capacity` bytes (device_open, after calloc). */
MK_API void mk_host_device_init(mk_host_device *host, const mk_host_kind *kind, uint64_t capacity);
/** Frees every buffer and stream still live and marks the device closed (device_close, before free). */
MK_API void mk_host_device_release(mk_host_device *host);

/**
 * Checks only that `device` is an open device of `kind`: NULL is "ENTRY:
 * device is NULL", anything else "ENTRY: <pointer> is not an open ADAPTER
 * device"; both INVALID_ARGUMENT. For device_close, which works on a device
 * the kind's check would refuse. (`kind` NULL accepts an open kit device of
 * any kind: what the shared mk_host_* entries do.)
 */
MK_API medley_error *mk_host_check_handle(const medley_device *device, const mk_host_kind *kind,
                                          const char *entry);
/** mk_host_check_handle, then the kind's `check`: the check of every other entry. */
MK_API medley_error *mk_host_check_device(const medley_device *device, const mk_host_kind *kind,
                                          const char *entry);
/**
 * The start of op_launch: checks the device (as mk_host_check_device) and the
 * stream, then the launch itself (mk_op_prepare over the device's memory and
 * the kind's float dtypes), filling `args` for the kernel.
 */
MK_API medley_error *mk_host_launch_prepare(medley_device *device, const mk_host_kind *kind,
                                            medley_stream *stream, const char *op_name,
                                            const medley_tensor *inputs, size_t num_inputs,
                                            const medley_tensor *outputs, size_t num_outputs,
                                            const medley_attr *attrs, size_t num_attrs, mk_op_args *args);

/* Whole entries, with the ABI's signatures: put them in the table as they are. */
MK_API medley_error *mk_host_buffer_alloc(medley_device *device, uint64_t bytes, medley_buffer **out_buffer);
MK_API medley_error *mk_host_buffer_free(medley_device *device, medley_buffer *buffer);
MK_API medley_error *mk_host_copy_h2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                      uint64_t dst_offset, const void *src, uint64_t bytes);
MK_API medley_error *mk_host_copy_d2h(medley_device *device, medley_stream *stream, void *dst,
                                      medley_buffer *src, uint64_t src_offset, uint64_t bytes);
MK_API medley_error *mk_host_copy_d2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                      uint64_t dst_offset, medley_buffer *src, uint64_t src_offset,
                                      uint64_t bytes);
MK_API medley_error *mk_host_memset(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                    uint64_t offset, uint8_t value, uint64_t bytes);
MK_API medley_error *mk_host_stream_create(medley_device *device, medley_stream **out_stream);
MK_API medley_error *mk_host_stream_destroy(medley_device *device, medley_stream *stream);
/** Work is synchronous, so this only checks the device and the stream. */
MK_API medley_error *mk_host_stream_synchronize(medley_device *device, medley_stream *stream);
/** Supported: an op of opset v1 with one of the kind's float dtypes. */
MK_API medley_error *mk_host_op_query(medley_device *device, const char *op_name, int32_t dtype,
                                      int32_t *out_supported);
/** Checks the device and that step >= 0; nothing to trace on a host. */
MK_API medley_error *mk_host_step_begin(medley_device *device, int64_t step);

/**
 * The table entries a host-memory adapter takes from the kit as they are: buffers, the
 * copies, memset, streams and op_query. Use it inside the adapter's table initializer,
 * after the adapter's own entries:
 *
 *   static const medley_adapter_api api = { ..., .device_describe = my_describe,
 *                                           MK_HOST_MEMORY_ENTRIES, .op_launch = my_launch };
 *
 * (The templates list the same entries one by one, to show what a chip team replaces.)
 */
#define MK_HOST_MEMORY_ENTRIES                                                                   \
  .buffer_alloc = mk_host_buffer_alloc, .buffer_free = mk_host_buffer_free,                      \
  .copy_h2d = mk_host_copy_h2d, .copy_d2h = mk_host_copy_d2h, .copy_d2d = mk_host_copy_d2d,      \
  .memset = mk_host_memset, .stream_create = mk_host_stream_create,                              \
  .stream_destroy = mk_host_stream_destroy, .stream_synchronize = mk_host_stream_synchronize,    \
  .op_query = mk_host_op_query

#ifdef __cplusplus
}
#endif

#endif /* MEDLEY_KIT_H */
