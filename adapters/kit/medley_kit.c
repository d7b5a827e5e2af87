/*
 * medley_kit.c — shared plumbing of Medley's adapters: the launch checker
 * for any memory (mk_op_check), and the host-memory parts.
 * See medley_kit.h for what each function promises.
 */
#define _GNU_SOURCE
#include "medley_kit.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ========================================================================= */
/* Errors                                                                    */
/* ========================================================================= */

medley_error *mk_verror(int32_t code, const char *format, va_list args) {
  /* One allocation holds the struct and its message. */
  char text[1024];
  int length = vsnprintf(text, sizeof text, format, args);
  if (length < 0) {
    length = 0;
    text[0] = '\0';
  }
  if ((size_t)length >= sizeof text) length = (int)sizeof text - 1;
  medley_error *error = malloc(sizeof(medley_error) + (size_t)length + 1);
  if (error == NULL) {
    /* Out of memory while reporting: hand back a static error. */
    static medley_error oom = {MEDLEY_ERROR_OUT_OF_MEMORY,
                               "out of host memory while reporting an error"};
    return &oom;
  }
  char *message = (char *)(error + 1);
  memcpy(message, text, (size_t)length);
  message[length] = '\0';
  error->code = code;
  error->message = message;
  return error;
}

medley_error *mk_error(int32_t code, const char *format, ...) {
  va_list args;
  va_start(args, format);
  medley_error *error = mk_verror(code, format, args);
  va_end(args);
  return error;
}

void mk_error_free(medley_error *error) {
  /* Errors made by mk_verror carry their message right after the struct; the
     static out-of-memory error does not and must not be freed. */
  if (error == NULL || error->message != (const char *)(error + 1)) return;
  free(error);
}

/* ========================================================================= */
/* Dtypes                                                                    */
/* ========================================================================= */

size_t mk_dtype_size(int32_t dtype) {
  switch (dtype) {
    case MEDLEY_DTYPE_F32: return 4;
    case MEDLEY_DTYPE_BF16: return 2;
    case MEDLEY_DTYPE_F16: return 2;
    case MEDLEY_DTYPE_I32: return 4;
    default: return 0;
  }
}

const char *mk_dtype_name(int32_t dtype) {
  switch (dtype) {
    case MEDLEY_DTYPE_F32: return "f32";
    case MEDLEY_DTYPE_BF16: return "bf16";
    case MEDLEY_DTYPE_F16: return "f16";
    case MEDLEY_DTYPE_I32: return "i32";
    default: return "?";
  }
}

/* ========================================================================= */
/* Memory                                                                    */
/* ========================================================================= */

#define MK_BUFFER_MAGIC 0x4d45444c42554646ull /* "MEDLBUFF" */

struct medley_buffer {
  uint64_t magic;
  uint64_t bytes;
  struct medley_buffer *next;
  struct medley_buffer *prev;
  unsigned char *data;
};

void mk_memory_init(mk_memory *memory, uint64_t capacity) {
  memory->capacity = capacity;
  memory->used = 0;
  memory->head = NULL;
}

static void mk_buffer_destroy(struct medley_buffer *buffer) {
  buffer->magic = 0;
  free(buffer->data);
  free(buffer);
}

void mk_memory_release_all(mk_memory *memory) {
  struct medley_buffer *buffer = memory->head;
  while (buffer != NULL) {
    struct medley_buffer *next = buffer->next;
    mk_buffer_destroy(buffer);
    buffer = next;
  }
  memory->head = NULL;
  memory->used = 0;
}

medley_error *mk_buffer_alloc(mk_memory *memory, uint64_t bytes, medley_buffer **out) {
  if (out == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "buffer_alloc: out_buffer is NULL");
  *out = NULL;
  if (bytes == 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "buffer_alloc: size is 0 bytes");
  if (bytes > memory->capacity - memory->used) {
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY,
                    "buffer_alloc: %llu bytes requested but only %llu of %llu bytes are free",
                    (unsigned long long)bytes,
                    (unsigned long long)(memory->capacity - memory->used),
                    (unsigned long long)memory->capacity);
  }
  if (bytes > (uint64_t)SIZE_MAX - 64) {
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "buffer_alloc: %llu bytes exceed the address space",
                    (unsigned long long)bytes);
  }
  struct medley_buffer *buffer = calloc(1, sizeof *buffer);
  /* 64-byte alignment suits every SIMD width the kernels use. */
  void *data = NULL;
  size_t rounded = ((size_t)bytes + 63u) & ~(size_t)63u;
  if (buffer == NULL || posix_memalign(&data, 64, rounded) != 0) {
    free(buffer);
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "buffer_alloc: host allocation of %llu bytes failed",
                    (unsigned long long)bytes);
  }
  buffer->magic = MK_BUFFER_MAGIC;
  buffer->bytes = bytes;
  buffer->data = data;
  buffer->next = memory->head;
  if (memory->head != NULL) memory->head->prev = buffer;
  memory->head = buffer;
  memory->used += bytes;
  *out = buffer;
  return NULL;
}

static int mk_buffer_is_live(const mk_memory *memory, const struct medley_buffer *buffer) {
  for (const struct medley_buffer *b = memory->head; b != NULL; b = b->next) {
    if (b == buffer) return b->magic == MK_BUFFER_MAGIC;
  }
  return 0;
}

medley_error *mk_buffer_free(mk_memory *memory, medley_buffer *buffer) {
  if (buffer == NULL) return NULL;
  if (!mk_buffer_is_live(memory, buffer)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "buffer_free: %p is not a live buffer of this device", (void *)buffer);
  }
  if (buffer->prev != NULL) buffer->prev->next = buffer->next;
  else memory->head = buffer->next;
  if (buffer->next != NULL) buffer->next->prev = buffer->prev;
  memory->used -= buffer->bytes;
  mk_buffer_destroy(buffer);
  return NULL;
}

medley_error *mk_buffer_check(const mk_memory *memory, const medley_buffer *buffer,
                              uint64_t offset, uint64_t bytes, const char *what) {
  if (buffer == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: buffer is NULL", what);
  if (!mk_buffer_is_live(memory, buffer)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: buffer %p is not a live buffer of this device",
                    what, (const void *)buffer);
  }
  if (offset > buffer->bytes || bytes > buffer->bytes - offset) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "%s: bytes [%llu, %llu) lie outside the %llu-byte buffer", what,
                    (unsigned long long)offset, (unsigned long long)offset + (unsigned long long)bytes,
                    (unsigned long long)buffer->bytes);
  }
  return NULL;
}

unsigned char *mk_buffer_data(medley_buffer *buffer) { return buffer->data; }

uint64_t mk_buffer_size(const medley_buffer *buffer) { return buffer->bytes; }

medley_error *mk_copy_h2d(mk_memory *memory, medley_buffer *dst, uint64_t dst_offset,
                          const void *src, uint64_t bytes) {
  medley_error *error = mk_buffer_check(memory, dst, dst_offset, bytes, "copy_h2d destination");
  if (error != NULL) return error;
  if (src == NULL && bytes > 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "copy_h2d: source is NULL");
  if (bytes > 0) memcpy(dst->data + dst_offset, src, (size_t)bytes);
  return NULL;
}

medley_error *mk_copy_d2h(mk_memory *memory, void *dst, medley_buffer *src, uint64_t src_offset,
                          uint64_t bytes) {
  medley_error *error = mk_buffer_check(memory, src, src_offset, bytes, "copy_d2h source");
  if (error != NULL) return error;
  if (dst == NULL && bytes > 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "copy_d2h: destination is NULL");
  if (bytes > 0) memcpy(dst, src->data + src_offset, (size_t)bytes);
  return NULL;
}

medley_error *mk_copy_d2d(mk_memory *memory, medley_buffer *dst, uint64_t dst_offset,
                          medley_buffer *src, uint64_t src_offset, uint64_t bytes) {
  medley_error *error = mk_buffer_check(memory, dst, dst_offset, bytes, "copy_d2d destination");
  if (error != NULL) return error;
  error = mk_buffer_check(memory, src, src_offset, bytes, "copy_d2d source");
  if (error != NULL) return error;
  if (bytes > 0) memmove(dst->data + dst_offset, src->data + src_offset, (size_t)bytes);
  return NULL;
}

medley_error *mk_memset(mk_memory *memory, medley_buffer *dst, uint64_t offset, uint8_t value,
                        uint64_t bytes) {
  medley_error *error = mk_buffer_check(memory, dst, offset, bytes, "memset");
  if (error != NULL) return error;
  if (bytes > 0) memset(dst->data + offset, value, (size_t)bytes);
  return NULL;
}

uint64_t mk_system_memory_bytes(uint64_t fallback) {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return fallback;
  return (uint64_t)pages * (uint64_t)page_size;
}

/* ========================================================================= */
/* Plugin and device handles                                                 */
/* ========================================================================= */

medley_error *mk_plugin_info(medley_plugin_info *out, const char *name, const char *vendor,
                             const char *version) {
  if (out == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "plugin_info: out is NULL");
  if (!MK_HAS_FIELD(out->struct_size, medley_plugin_info, version)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "plugin_info: struct_size %zu is too small; set it to sizeof(medley_plugin_info)",
                    out->struct_size);
  }
  out->name = name;
  out->vendor = vendor;
  out->version = version;
  return NULL;
}

medley_error *mk_device_count(int32_t *out_count, int32_t count) {
  if (out_count == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_count: out_count is NULL");
  *out_count = count;
  return NULL;
}

medley_error *mk_describe(medley_device_desc *out, const char *name, const char *vendor, uint64_t memory_bytes,
                          uint32_t dtype_mask, uint32_t compute_units) {
  if (out == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_describe: out is NULL");
  if (!MK_HAS_FIELD(out->struct_size, medley_device_desc, compute_units)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "device_describe: struct_size %zu is too small; set it to sizeof(medley_device_desc)",
                    out->struct_size);
  }
  out->name = name;
  out->vendor = vendor;
  out->memory_bytes = memory_bytes;
  out->dtype_mask = dtype_mask;
  out->compute_units = compute_units;
  return NULL;
}

medley_error *mk_check_device(const void *device, uint64_t magic, const char *adapter, const char *entry) {
  if (device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: device is NULL", entry);
  uint64_t found;
  memcpy(&found, device, sizeof found); /* the handle's struct begins with its magic */
  if (found != magic) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %p is not an open %s device", entry, device, adapter);
  }
  return NULL;
}

/* ========================================================================= */
/* Streams                                                                   */
/* ========================================================================= */

#define MK_STREAM_MAGIC 0x4d45444c5354524dull /* "MEDLSTRM" */

/* A stream of a synchronous device: only a token, linked into its device's list. */
struct medley_stream {
  uint64_t magic;
  struct medley_stream *next;
};

medley_error *mk_stream_create(mk_stream_list *streams, medley_stream **out_stream) {
  if (out_stream == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_create: out_stream is NULL");
  struct medley_stream *stream = calloc(1, sizeof *stream);
  if (stream == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "stream_create: out of host memory");
  stream->magic = MK_STREAM_MAGIC;
  stream->next = streams->head;
  streams->head = stream;
  *out_stream = stream;
  return NULL;
}

medley_error *mk_stream_destroy(mk_stream_list *streams, medley_stream *stream) {
  if (stream == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_destroy: the default stream (NULL) cannot be destroyed");
  }
  for (struct medley_stream **link = &streams->head; *link != NULL; link = &(*link)->next) {
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

medley_error *mk_stream_check(const mk_stream_list *streams, const medley_stream *stream, const char *entry) {
  if (stream == NULL) return NULL;
  for (const struct medley_stream *s = streams->head; s != NULL; s = s->next) {
    if (s == stream && s->magic == MK_STREAM_MAGIC) return NULL;
  }
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: stream %p is not a live stream of this device", entry,
                  (const void *)stream);
}

void mk_stream_release_all(mk_stream_list *streams) {
  while (streams->head != NULL) {
    struct medley_stream *next = streams->head->next;
    streams->head->magic = 0;
    free(streams->head);
    streams->head = next;
  }
}

/* ========================================================================= */
/* Options                                                                   */
/* ========================================================================= */

medley_error *mk_check_options(const medley_option *options, size_t num_options) {
  if (num_options > 0 && options == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: options is NULL but num_options is %zu",
                    num_options);
  }
  for (size_t i = 0; i < num_options; i++) {
    if (options[i].key == NULL || options[i].value == NULL) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: option %zu has a NULL key or value", i);
    }
  }
  return NULL;
}

int mk_parse_double(const char *text, double *out) {
  if (text == NULL || *text == '\0') return -1;
  char *end = NULL;
  errno = 0;
  double value = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !isfinite(value) || value < 0) return -1;
  *out = value;
  return 0;
}

int mk_parse_int(const char *text, int64_t min, int64_t max, int64_t *out) {
  if (text == NULL || *text == '\0') return -1;
  char *end = NULL;
  errno = 0;
  long long value = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min || value > max) return -1;
  *out = (int64_t)value;
  return 0;
}

int mk_parse_bytes(const char *text, uint64_t *out) {
  if (text == NULL || *text == '\0') return -1;
  char *end = NULL;
  errno = 0;
  double value = strtod(text, &end);
  if (errno != 0 || end == text || !isfinite(value) || value < 0) return -1;
  while (*end == ' ') end++;
  static const struct { const char *suffix; double factor; } units[] = {
      {"", 1.0},          {"B", 1.0},
      {"KiB", 1024.0},    {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
      {"KB", 1e3},        {"MB", 1e6},        {"GB", 1e9},           {"TB", 1e12},
      {"K", 1024.0},      {"M", 1048576.0},   {"G", 1073741824.0},   {"T", 1099511627776.0},
  };
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(end, units[i].suffix) == 0) {
      double bytes = value * units[i].factor;
      if (bytes >= 18446744073709551615.0) return -1;
      *out = (uint64_t)bytes;
      return 0;
    }
  }
  return -1;
}

/* ========================================================================= */
/* Ops                                                                       */
/* ========================================================================= */

typedef struct mk_op_spec {
  const char *name;
  int in_min, in_max, out_min, out_max;
} mk_op_spec;

static const mk_op_spec mk_op_specs[MK_OP_COUNT] = {
#define MK_OP_SPEC_(id, name, imin, imax, omin, omax) {name, imin, imax, omin, omax},
    MEDLEY_OPSET_V1(MK_OP_SPEC_)
#undef MK_OP_SPEC_
};

mk_op_id mk_op_lookup(const char *name) {
  if (name == NULL) return MK_OP_COUNT;
  for (int i = 0; i < MK_OP_COUNT; i++) {
    if (strcmp(mk_op_specs[i].name, name) == 0) return (mk_op_id)i;
  }
  return MK_OP_COUNT;
}

medley_error *mk_op_query(const char *op_name, int32_t dtype, uint32_t dtype_mask, int32_t *out_supported) {
  if (op_name == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "op_query: op_name is NULL");
  if (out_supported == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "op_query: out_supported is NULL");
  int is_float = mk_dtype_size(dtype) != 0 && dtype != MEDLEY_DTYPE_I32;
  *out_supported =
      mk_op_lookup(op_name) != MK_OP_COUNT && is_float && (dtype_mask & MEDLEY_DTYPE_BIT(dtype)) != 0;
  return NULL;
}

const char *mk_op_name(mk_op_id op) { return op < MK_OP_COUNT ? mk_op_specs[op].name : "?"; }

int64_t mk_numel(const medley_tensor *tensor) {
  /* Saturates at INT64_MAX instead of overflowing (a hostile shape must not
     wrap around to a small count that passes the bounds checks); a rank
     outside 0...MEDLEY_MAX_RANK or a non-positive dimension gives 0. */
  if (tensor->rank < 0 || tensor->rank > MEDLEY_MAX_RANK) return 0;
  int64_t n = 1;
  for (int i = 0; i < tensor->rank; i++) {
    int64_t d = tensor->shape[i];
    if (d <= 0) return 0;
    if (n > INT64_MAX / d) return INT64_MAX;
    n *= d;
  }
  return n;
}

/* Formats a shape as "[2,3,4]" into `out` (for messages). */
static const char *mk_shape_text(const medley_tensor *t, char *out, size_t size) {
  size_t used = 0;
  used += (size_t)snprintf(out + used, size - used, "[");
  for (int i = 0; i < t->rank && used < size; i++) {
    used += (size_t)snprintf(out + used, size - used, i == 0 ? "%lld" : ",%lld", (long long)t->shape[i]);
  }
  if (used < size) snprintf(out + used, size - used, "]");
  return out;
}

/* Context of one prepare call, so the checks below stay short. */
typedef struct mk_prep {
  const mk_memory_ops *memory;
  const char *op;
  const medley_tensor *in;
  const medley_tensor *out;
  size_t nin, nout;
  const char *const *in_names;
  const char *const *out_names;
  int32_t dtype;
} mk_prep;

static medley_error *mk_check_token_range(const char *op, const char *name, const int32_t *ids, int64_t count,
                                          int64_t limit, int allow_negative);

static const medley_tensor *mk_tensor(const mk_prep *p, int output, int index) {
  return output ? &p->out[index] : &p->in[index];
}

static const char *mk_tensor_name(const mk_prep *p, int output, int index) {
  return output ? p->out_names[index] : p->in_names[index];
}

/* Checks rank, shape-sanity, dtype, bounds and alignment of one tensor; records its buffer, offset and size. */
static medley_error *mk_check_tensor(const mk_prep *p, int output, int index, int32_t want_dtype,
                                     mk_tensor_ref *ref) {
  const medley_tensor *t = mk_tensor(p, output, index);
  const char *name = mk_tensor_name(p, output, index);
  if (t->rank < 0 || t->rank > MEDLEY_MAX_RANK) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has rank %d (0...%d allowed)", p->op, name,
                    (int)t->rank, MEDLEY_MAX_RANK);
  }
  for (int i = 0; i < t->rank; i++) {
    if (t->shape[i] <= 0 || t->shape[i] > ((int64_t)1 << 40)) {
      char shape[96];
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has shape %s; every dimension must be positive",
                      p->op, name, mk_shape_text(t, shape, sizeof shape));
    }
  }
  if (t->dtype != want_dtype) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has dtype %s, expected %s", p->op, name,
                    mk_dtype_name(t->dtype), mk_dtype_name(want_dtype));
  }
  int64_t numel = mk_numel(t);
  if ((uint64_t)numel > UINT64_MAX / 8) {
    char shape[96];
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has shape %s, too many elements", p->op, name,
                    mk_shape_text(t, shape, sizeof shape));
  }
  uint64_t bytes = (uint64_t)numel * mk_dtype_size(t->dtype);
  if (t->buffer == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has a NULL buffer", p->op, name);
  }
  char what[128];
  snprintf(what, sizeof what, "%s: %s", p->op, name);
  medley_error *error = mk_check_range(p->memory, t->buffer, t->offset, bytes, what);
  if (error != NULL) return error;
  if (t->offset % mk_dtype_size(t->dtype) != 0) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s offset %llu is not a multiple of the element size %zu",
                    p->op, name, (unsigned long long)t->offset, mk_dtype_size(t->dtype));
  }
  ref->buffer = t->buffer;
  ref->offset = t->offset;
  ref->bytes = bytes;
  return NULL;
}

/* Requires an exact rank and, where want[i] >= 0, exact dimensions. */
static medley_error *mk_expect_shape(const mk_prep *p, int output, int index, int rank, const int64_t *want) {
  const medley_tensor *t = mk_tensor(p, output, index);
  int ok = t->rank == rank;
  for (int i = 0; ok && i < rank; i++) {
    if (want[i] >= 0 && t->shape[i] != want[i]) ok = 0;
  }
  if (ok) return NULL;
  char got[96], expected[96];
  size_t used = (size_t)snprintf(expected, sizeof expected, "[");
  for (int i = 0; i < rank && used < sizeof expected; i++) {
    if (want[i] >= 0) used += (size_t)snprintf(expected + used, sizeof expected - used, i ? ",%lld" : "%lld", (long long)want[i]);
    else used += (size_t)snprintf(expected + used, sizeof expected - used, i ? ",*" : "*");
  }
  if (used < sizeof expected) snprintf(expected + used, sizeof expected - used, "]");
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has shape %s, expected %s", p->op,
                  mk_tensor_name(p, output, index), mk_shape_text(t, got, sizeof got), expected);
}

/* Requires a tensor of rank >= 1 whose last dimension is `last` (if >= 0); returns rows. */
static medley_error *mk_expect_rows(const mk_prep *p, int output, int index, int64_t last, int64_t *rows) {
  const medley_tensor *t = mk_tensor(p, output, index);
  char got[96];
  if (t->rank < 1 || (last >= 0 && t->shape[t->rank - 1] != last)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has shape %s, expected [..., %lld]", p->op,
                    mk_tensor_name(p, output, index), mk_shape_text(t, got, sizeof got), (long long)last);
  }
  *rows = mk_numel(t) / t->shape[t->rank - 1];
  return NULL;
}

/* Requires the same element count as the tensor `ref_index` of the inputs. */
static medley_error *mk_expect_count(const mk_prep *p, int output, int index, int64_t count) {
  const medley_tensor *t = mk_tensor(p, output, index);
  if (mk_numel(t) == count) return NULL;
  char got[96];
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has shape %s (%lld elements), expected %lld elements",
                  p->op, mk_tensor_name(p, output, index), mk_shape_text(t, got, sizeof got),
                  (long long)mk_numel(t), (long long)count);
}

/* Looks up attributes: rejects unknown names, fills defaults, reports missing ones. */
typedef struct mk_attr_spec {
  const char *name;
  double *slot;
  int required;
  double fallback;
} mk_attr_spec;

static medley_error *mk_read_attrs(const char *op, const medley_attr *attrs, size_t num_attrs,
                                   mk_attr_spec *specs, size_t num_specs) {
  if (num_attrs > 0 && attrs == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: attrs is NULL but num_attrs is %zu", op, num_attrs);
  }
  for (size_t s = 0; s < num_specs; s++) *specs[s].slot = specs[s].fallback;
  int seen[16] = {0};
  for (size_t a = 0; a < num_attrs; a++) {
    if (attrs[a].name == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: attribute %zu has no name", op, a);
    size_t s = 0;
    while (s < num_specs && strcmp(specs[s].name, attrs[a].name) != 0) s++;
    if (s == num_specs) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: unknown attribute '%s'", op, attrs[a].name);
    }
    if (!isfinite(attrs[a].value)) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: attribute '%s' is not finite", op, attrs[a].name);
    }
    *specs[s].slot = attrs[a].value;
    seen[s] = 1;
  }
  for (size_t s = 0; s < num_specs; s++) {
    if (specs[s].required && !seen[s]) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: missing attribute '%s'", op, specs[s].name);
    }
  }
  return NULL;
}

#define MK_TRY(expr)                     \
  do {                                   \
    medley_error *mk_try_error_ = (expr); \
    if (mk_try_error_ != NULL) return mk_try_error_; \
  } while (0)

static medley_error *mk_check_token_range(const char *op, const char *name, const int32_t *ids, int64_t count,
                                          int64_t limit, int allow_negative) {
  for (int64_t i = 0; i < count; i++) {
    if (ids[i] >= limit || (ids[i] < 0 && !allow_negative)) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s[%lld] = %d is outside [0, %lld)", op, name,
                      (long long)i, (int)ids[i], (long long)limit);
    }
  }
  return NULL;
}

int mk_op_token_input(const mk_op_args *args) {
  switch (args->op) {
    case MK_OP_encoder_forward: return 0;
    case MK_OP_encoder_backward: return 1;
    case MK_OP_crossentropy_forward:
    case MK_OP_crossentropy_backward: return 1;
    default: return -1;
  }
}

medley_error *mk_op_check_tokens(const mk_op_args *args, const int32_t *host_ids, uint64_t count) {
  int k = mk_op_token_input(args);
  if (k < 0) return NULL;
  int is_encoder = args->op == MK_OP_encoder_forward || args->op == MK_OP_encoder_backward;
  int64_t needed = is_encoder ? args->B * args->T : args->N;
  const char *op = mk_op_name(args->op);
  if (host_ids == NULL || count < (uint64_t)needed) {
    return mk_error(MEDLEY_ERROR_INTERNAL, "%s: the token check got %llu ids, the launch has %lld", op,
                    (unsigned long long)(host_ids == NULL ? 0 : count), (long long)needed);
  }
  /* encoder ids must lie in [0, V); a negative target of crossentropy is "ignore this row". */
  return is_encoder ? mk_check_token_range(op, "tokens", host_ids, needed, args->V, 0)
                    : mk_check_token_range(op, "targets", host_ids, needed, args->V, 1);
}

/* The bounds check every tensor and copy goes through: the callback says
   whether the buffer is live (and how big it is); the range is checked here,
   so that every adapter reports a bad view with the same words. */
medley_error *mk_check_range(const mk_memory_ops *memory, const medley_buffer *buffer, uint64_t offset,
                             uint64_t bytes, const char *what) {
  if (buffer == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: buffer is NULL", what);
  uint64_t size = 0;
  medley_error *error = memory->buffer_bytes(memory->ctx, buffer, what, &size);
  if (error != NULL) return error;
  if (offset > size || bytes > size - offset) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "%s: bytes [%llu, %llu) lie outside the %llu-byte buffer", what,
                    (unsigned long long)offset, (unsigned long long)offset + (unsigned long long)bytes,
                    (unsigned long long)size);
  }
  return NULL;
}

/* "3" or "2 to 3", for count messages. */
static const char *mk_range_text(int min, int max, char *out, size_t size) {
  if (min == max) snprintf(out, size, "%d", min);
  else snprintf(out, size, "%d to %d", min, max);
  return out;
}

medley_error *mk_op_check(const mk_memory_ops *memory, const char *op_name, const medley_tensor *inputs,
                          size_t num_inputs, const medley_tensor *outputs, size_t num_outputs,
                          const medley_attr *attrs, size_t num_attrs, uint32_t dtype_mask, mk_op_args *args) {
  if (memory == NULL || memory->buffer_bytes == NULL) {
    return mk_error(MEDLEY_ERROR_INTERNAL, "op_launch: mk_op_check needs a buffer_bytes callback");
  }
  if (op_name == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "op_launch: op name is NULL");
  mk_op_id op = mk_op_lookup(op_name);
  if (op == MK_OP_COUNT) {
    return mk_error(MEDLEY_ERROR_UNSUPPORTED, "unknown op '%s' (not in opset v%d)", op_name,
                    MEDLEY_OPSET_VERSION);
  }
  const mk_op_spec *spec = &mk_op_specs[op];
  char range[32];
  if ((int)num_inputs < spec->in_min || (int)num_inputs > spec->in_max) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: got %zu inputs, expected %s", op_name, num_inputs,
                    mk_range_text(spec->in_min, spec->in_max, range, sizeof range));
  }
  if ((int)num_outputs < spec->out_min || (int)num_outputs > spec->out_max) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: got %zu outputs, expected %s", op_name, num_outputs,
                    mk_range_text(spec->out_min, spec->out_max, range, sizeof range));
  }
  if ((num_inputs > 0 && inputs == NULL) || (num_outputs > 0 && outputs == NULL)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: inputs or outputs array is NULL", op_name);
  }
  memset(args, 0, sizeof *args);
  args->op = op;
  args->num_inputs = num_inputs;
  args->num_outputs = num_outputs;

  /* Ranks and dimensions first: the shape rules below index shape[rank-1]. */
  for (size_t i = 0; i < num_inputs + num_outputs; i++) {
    const medley_tensor *t = i < num_inputs ? &inputs[i] : &outputs[i - num_inputs];
    const char *kind = i < num_inputs ? "input" : "output";
    size_t index = i < num_inputs ? i : i - num_inputs;
    if (t->rank < 0 || t->rank > MEDLEY_MAX_RANK) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s %zu has rank %d (0...%d allowed)", op_name, kind,
                      index, (int)t->rank, MEDLEY_MAX_RANK);
    }
    for (int d = 0; d < t->rank; d++) {
      if (t->shape[d] <= 0 || t->shape[d] > ((int64_t)1 << 40)) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                        "%s: %s %zu has dimension %d = %lld; every dimension must be positive", op_name, kind,
                        index, d, (long long)t->shape[d]);
      }
    }
  }

  /* The float dtype of the launch: that of the first float tensor. */
  int32_t dtype = 0;
  for (size_t i = 0; i < num_inputs && dtype == 0; i++) {
    if (inputs[i].dtype != MEDLEY_DTYPE_I32) dtype = inputs[i].dtype;
  }
  if (dtype == 0 && num_outputs > 0) dtype = outputs[0].dtype;
  if (mk_dtype_size(dtype) == 0 || dtype == MEDLEY_DTYPE_I32) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: dtype %d is not a float dtype", op_name, (int)dtype);
  }
  if ((dtype_mask & MEDLEY_DTYPE_BIT(dtype)) == 0) {
    return mk_error(MEDLEY_ERROR_UNSUPPORTED, "%s: dtype %s is not supported by this device", op_name,
                    mk_dtype_name(dtype));
  }
  args->dtype = dtype;
  const int32_t F = dtype, I = MEDLEY_DTYPE_I32;

  static const char *const names_encoder_fwd_in[] = {"tokens", "wte", "wpe"};
  static const char *const names_encoder_fwd_out[] = {"out"};
  static const char *const names_encoder_bwd_in[] = {"dout", "tokens"};
  static const char *const names_encoder_bwd_out[] = {"dwte", "dwpe"};
  static const char *const names_ln_fwd_in[] = {"x", "weight", "bias"};
  static const char *const names_ln_fwd_out[] = {"out", "mean", "rstd"};
  static const char *const names_ln_bwd_in[] = {"dout", "x", "weight", "mean", "rstd"};
  static const char *const names_ln_bwd_out[] = {"dx", "dweight", "dbias"};
  static const char *const names_mm_fwd_in[] = {"x", "weight", "bias"};
  static const char *const names_mm_fwd_out[] = {"out"};
  static const char *const names_mm_bwd_in[] = {"dout", "x", "weight"};
  static const char *const names_mm_bwd_out[] = {"dx", "dweight", "dbias"};
  static const char *const names_att_fwd_in[] = {"qkv"};
  static const char *const names_att_fwd_out[] = {"out", "lse"};
  static const char *const names_att_bwd_in[] = {"dout", "qkv", "out", "lse"};
  static const char *const names_att_bwd_out[] = {"dqkv"};
  static const char *const names_x[] = {"x"};
  static const char *const names_out[] = {"out"};
  static const char *const names_gelu_bwd_in[] = {"dout", "x"};
  static const char *const names_dx[] = {"dx"};
  static const char *const names_res_fwd_in[] = {"a", "b"};
  static const char *const names_dout[] = {"dout"};
  static const char *const names_res_bwd_out[] = {"da", "db"};
  static const char *const names_ce_fwd_in[] = {"logits", "targets"};
  static const char *const names_ce_fwd_out[] = {"losses", "lse"};
  static const char *const names_ce_bwd_in[] = {"logits", "targets", "lse"};
  static const char *const names_ce_bwd_out[] = {"dlogits"};
  static const char *const names_adamw_in[] = {"grad"};
  static const char *const names_adamw_out[] = {"param", "m", "v"};

  mk_prep p = {memory, op_name, inputs, outputs, num_inputs, num_outputs, NULL, NULL, dtype};

  switch (op) {
    case MK_OP_encoder_forward:
    case MK_OP_encoder_backward: {
      int fwd = op == MK_OP_encoder_forward;
      p.in_names = fwd ? names_encoder_fwd_in : names_encoder_bwd_in;
      p.out_names = fwd ? names_encoder_fwd_out : names_encoder_bwd_out;
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, NULL, 0));
      const medley_tensor *tokens = fwd ? &inputs[0] : &inputs[1];
      const medley_tensor *wte = fwd ? &inputs[1] : &outputs[0];
      const medley_tensor *wpe = fwd ? &inputs[2] : &outputs[1];
      const medley_tensor *act = fwd ? &outputs[0] : &inputs[0];
      int64_t any2[2] = {-1, -1};
      MK_TRY(mk_expect_shape(&p, 0, fwd ? 0 : 1, 2, any2));
      args->B = tokens->shape[0];
      args->T = tokens->shape[1];
      MK_TRY(mk_expect_shape(&p, !fwd, fwd ? 1 : 0, 2, any2));
      args->V = wte->shape[0];
      args->C = wte->shape[1];
      int64_t wpe_shape[2] = {-1, args->C};
      MK_TRY(mk_expect_shape(&p, !fwd, fwd ? 2 : 1, 2, wpe_shape));
      args->maxT = wpe->shape[0];
      if (args->T > args->maxT) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: sequence length %lld exceeds the %lld positions of wpe",
                        op_name, (long long)args->T, (long long)args->maxT);
      }
      int64_t act_shape[3] = {args->B, args->T, args->C};
      MK_TRY(mk_expect_shape(&p, fwd, 0, 3, act_shape));
      (void)act;
      if (fwd) {
        MK_TRY(mk_check_tensor(&p, 0, 0, I, &args->in_ref[0]));
        MK_TRY(mk_check_tensor(&p, 0, 1, F, &args->in_ref[1]));
        MK_TRY(mk_check_tensor(&p, 0, 2, F, &args->in_ref[2]));
        MK_TRY(mk_check_tensor(&p, 1, 0, F, &args->out_ref[0]));
      } else {
        MK_TRY(mk_check_tensor(&p, 0, 0, F, &args->in_ref[0]));
        MK_TRY(mk_check_tensor(&p, 0, 1, I, &args->in_ref[1]));
        MK_TRY(mk_check_tensor(&p, 1, 0, F, &args->out_ref[0]));
        MK_TRY(mk_check_tensor(&p, 1, 1, F, &args->out_ref[1]));
      }
      return NULL;
    }

    case MK_OP_layernorm_forward: {
      p.in_names = names_ln_fwd_in;
      p.out_names = names_ln_fwd_out;
      mk_attr_spec specs[] = {{"eps", &args->eps, 0, 1e-5}};
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, specs, 1));
      if (!(args->eps > 0)) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: eps must be positive", op_name);
      MK_TRY(mk_expect_rows(&p, 0, 0, -1, &args->N));
      args->C = inputs[0].shape[inputs[0].rank - 1];
      int64_t c[1] = {args->C};
      MK_TRY(mk_expect_shape(&p, 0, 1, 1, c));
      MK_TRY(mk_expect_shape(&p, 0, 2, 1, c));
      MK_TRY(mk_expect_count(&p, 1, 0, args->N * args->C));
      MK_TRY(mk_expect_count(&p, 1, 1, args->N));
      MK_TRY(mk_expect_count(&p, 1, 2, args->N));
      for (int i = 0; i < 3; i++) MK_TRY(mk_check_tensor(&p, 0, i, F, &args->in_ref[i]));
      for (int i = 0; i < 3; i++) MK_TRY(mk_check_tensor(&p, 1, i, F, &args->out_ref[i]));
      return NULL;
    }

    case MK_OP_layernorm_backward: {
      p.in_names = names_ln_bwd_in;
      p.out_names = names_ln_bwd_out;
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, NULL, 0));
      MK_TRY(mk_expect_rows(&p, 0, 0, -1, &args->N));
      args->C = inputs[0].shape[inputs[0].rank - 1];
      int64_t c[1] = {args->C};
      MK_TRY(mk_expect_count(&p, 0, 1, args->N * args->C));
      MK_TRY(mk_expect_shape(&p, 0, 2, 1, c));
      MK_TRY(mk_expect_count(&p, 0, 3, args->N));
      MK_TRY(mk_expect_count(&p, 0, 4, args->N));
      MK_TRY(mk_expect_count(&p, 1, 0, args->N * args->C));
      MK_TRY(mk_expect_shape(&p, 1, 1, 1, c));
      MK_TRY(mk_expect_shape(&p, 1, 2, 1, c));
      for (int i = 0; i < 5; i++) MK_TRY(mk_check_tensor(&p, 0, i, F, &args->in_ref[i]));
      for (int i = 0; i < 3; i++) MK_TRY(mk_check_tensor(&p, 1, i, F, &args->out_ref[i]));
      return NULL;
    }

    case MK_OP_matmul_forward: {
      p.in_names = names_mm_fwd_in;
      p.out_names = names_mm_fwd_out;
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, NULL, 0));
      MK_TRY(mk_expect_rows(&p, 0, 0, -1, &args->N));
      args->C = inputs[0].shape[inputs[0].rank - 1];
      int64_t w[2] = {-1, args->C};
      MK_TRY(mk_expect_shape(&p, 0, 1, 2, w));
      args->OC = inputs[1].shape[0];
      args->has_bias = num_inputs == 3;
      int64_t oc[1] = {args->OC};
      if (args->has_bias) MK_TRY(mk_expect_shape(&p, 0, 2, 1, oc));
      int64_t rows = 0;
      MK_TRY(mk_expect_rows(&p, 1, 0, args->OC, &rows));
      MK_TRY(mk_expect_count(&p, 1, 0, args->N * args->OC));
      for (size_t i = 0; i < num_inputs; i++) MK_TRY(mk_check_tensor(&p, 0, (int)i, F, &args->in_ref[i]));
      MK_TRY(mk_check_tensor(&p, 1, 0, F, &args->out_ref[0]));
      return NULL;
    }

    case MK_OP_matmul_backward: {
      p.in_names = names_mm_bwd_in;
      p.out_names = names_mm_bwd_out;
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, NULL, 0));
      MK_TRY(mk_expect_rows(&p, 0, 1, -1, &args->N));
      args->C = inputs[1].shape[inputs[1].rank - 1];
      int64_t w[2] = {-1, args->C};
      MK_TRY(mk_expect_shape(&p, 0, 2, 2, w));
      args->OC = inputs[2].shape[0];
      int64_t rows = 0;
      MK_TRY(mk_expect_rows(&p, 0, 0, args->OC, &rows));
      MK_TRY(mk_expect_count(&p, 0, 0, args->N * args->OC));
      MK_TRY(mk_expect_count(&p, 1, 0, args->N * args->C));
      int64_t ws[2] = {args->OC, args->C};
      MK_TRY(mk_expect_shape(&p, 1, 1, 2, ws));
      args->has_bias = num_outputs == 3;
      int64_t oc[1] = {args->OC};
      if (args->has_bias) MK_TRY(mk_expect_shape(&p, 1, 2, 1, oc));
      for (int i = 0; i < 3; i++) MK_TRY(mk_check_tensor(&p, 0, i, F, &args->in_ref[i]));
      for (size_t i = 0; i < num_outputs; i++) MK_TRY(mk_check_tensor(&p, 1, (int)i, F, &args->out_ref[i]));
      return NULL;
    }

    case MK_OP_attention_forward:
    case MK_OP_attention_backward: {
      int fwd = op == MK_OP_attention_forward;
      p.in_names = fwd ? names_att_fwd_in : names_att_bwd_in;
      p.out_names = fwd ? names_att_fwd_out : names_att_bwd_out;
      double heads = 0;
      mk_attr_spec specs[] = {{"num_heads", &heads, 1, 0}};
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, specs, 1));
      int qkv_index = fwd ? 0 : 1;
      int64_t any3[3] = {-1, -1, -1};
      MK_TRY(mk_expect_shape(&p, 0, qkv_index, 3, any3));
      const medley_tensor *qkv = &inputs[qkv_index];
      args->B = qkv->shape[0];
      args->T = qkv->shape[1];
      if (qkv->shape[2] % 3 != 0) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: qkv last dimension %lld is not a multiple of 3",
                        op_name, (long long)qkv->shape[2]);
      }
      args->C = qkv->shape[2] / 3;
      if (heads < 1 || heads != floor(heads) || heads > (double)args->C || args->C % (int64_t)heads != 0) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                        "%s: num_heads %g must be a positive integer dividing the %lld channels", op_name, heads,
                        (long long)args->C);
      }
      args->NH = (int64_t)heads;
      int64_t btc[3] = {args->B, args->T, args->C};
      int64_t lse[3] = {args->B, args->NH, args->T};
      int64_t btc3[3] = {args->B, args->T, 3 * args->C};
      if (fwd) {
        MK_TRY(mk_expect_shape(&p, 1, 0, 3, btc));
        MK_TRY(mk_expect_shape(&p, 1, 1, 3, lse));
        MK_TRY(mk_check_tensor(&p, 0, 0, F, &args->in_ref[0]));
        MK_TRY(mk_check_tensor(&p, 1, 0, F, &args->out_ref[0]));
        MK_TRY(mk_check_tensor(&p, 1, 1, F, &args->out_ref[1]));
      } else {
        MK_TRY(mk_expect_shape(&p, 0, 0, 3, btc));
        MK_TRY(mk_expect_shape(&p, 0, 2, 3, btc));
        MK_TRY(mk_expect_shape(&p, 0, 3, 3, lse));
        MK_TRY(mk_expect_shape(&p, 1, 0, 3, btc3));
        for (int i = 0; i < 4; i++) MK_TRY(mk_check_tensor(&p, 0, i, F, &args->in_ref[i]));
        MK_TRY(mk_check_tensor(&p, 1, 0, F, &args->out_ref[0]));
      }
      return NULL;
    }

    case MK_OP_gelu_forward:
    case MK_OP_gelu_backward:
    case MK_OP_residual_forward:
    case MK_OP_residual_backward:
    case MK_OP_sum_squares:
    case MK_OP_scale: {
      double alpha = 0;
      mk_attr_spec scale_specs[] = {{"alpha", &alpha, 1, 0}};
      int is_scale = op == MK_OP_scale;
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, is_scale ? scale_specs : NULL, is_scale ? 1 : 0));
      args->alpha = alpha;
      switch (op) {
        case MK_OP_gelu_forward: p.in_names = names_x; p.out_names = names_out; break;
        case MK_OP_gelu_backward: p.in_names = names_gelu_bwd_in; p.out_names = names_dx; break;
        case MK_OP_residual_forward: p.in_names = names_res_fwd_in; p.out_names = names_out; break;
        case MK_OP_residual_backward: p.in_names = names_dout; p.out_names = names_res_bwd_out; break;
        default: p.in_names = names_x; p.out_names = names_out; break;
      }
      if (inputs[0].rank < 0 || inputs[0].rank > MEDLEY_MAX_RANK) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %s has rank %d", op_name, p.in_names[0], (int)inputs[0].rank);
      }
      args->n = mk_numel(&inputs[0]);
      for (size_t i = 1; i < num_inputs; i++) MK_TRY(mk_expect_count(&p, 0, (int)i, args->n));
      if (op == MK_OP_sum_squares) MK_TRY(mk_expect_count(&p, 1, 0, 1));
      else for (size_t i = 0; i < num_outputs; i++) MK_TRY(mk_expect_count(&p, 1, (int)i, args->n));
      for (size_t i = 0; i < num_inputs; i++) MK_TRY(mk_check_tensor(&p, 0, (int)i, F, &args->in_ref[i]));
      for (size_t i = 0; i < num_outputs; i++) MK_TRY(mk_check_tensor(&p, 1, (int)i, F, &args->out_ref[i]));
      return NULL;
    }

    case MK_OP_crossentropy_forward:
    case MK_OP_crossentropy_backward: {
      int fwd = op == MK_OP_crossentropy_forward;
      p.in_names = fwd ? names_ce_fwd_in : names_ce_bwd_in;
      p.out_names = fwd ? names_ce_fwd_out : names_ce_bwd_out;
      mk_attr_spec specs[] = {{"scale", &args->scale, 1, 0}};
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, specs, fwd ? 0 : 1));
      MK_TRY(mk_expect_rows(&p, 0, 0, -1, &args->N));
      args->V = inputs[0].shape[inputs[0].rank - 1];
      MK_TRY(mk_expect_count(&p, 0, 1, args->N));
      if (fwd) {
        MK_TRY(mk_expect_count(&p, 1, 0, args->N));
        MK_TRY(mk_expect_count(&p, 1, 1, args->N));
        MK_TRY(mk_check_tensor(&p, 0, 0, F, &args->in_ref[0]));
        MK_TRY(mk_check_tensor(&p, 0, 1, I, &args->in_ref[1]));
        MK_TRY(mk_check_tensor(&p, 1, 0, F, &args->out_ref[0]));
        MK_TRY(mk_check_tensor(&p, 1, 1, F, &args->out_ref[1]));
      } else {
        MK_TRY(mk_expect_count(&p, 0, 2, args->N));
        MK_TRY(mk_expect_count(&p, 1, 0, args->N * args->V));
        MK_TRY(mk_check_tensor(&p, 0, 0, F, &args->in_ref[0]));
        MK_TRY(mk_check_tensor(&p, 0, 1, I, &args->in_ref[1]));
        MK_TRY(mk_check_tensor(&p, 0, 2, F, &args->in_ref[2]));
        MK_TRY(mk_check_tensor(&p, 1, 0, F, &args->out_ref[0]));
      }
      return NULL;
    }

    case MK_OP_adamw_update: {
      p.in_names = names_adamw_in;
      p.out_names = names_adamw_out;
      mk_attr_spec specs[] = {
          {"lr", &args->lr, 1, 0},           {"beta1", &args->beta1, 1, 0},
          {"beta2", &args->beta2, 1, 0},     {"eps", &args->eps, 1, 0},
          {"weight_decay", &args->weight_decay, 1, 0}, {"step", &args->step, 1, 0},
          {"grad_scale", &args->grad_scale, 0, 1.0},
      };
      MK_TRY(mk_read_attrs(op_name, attrs, num_attrs, specs, sizeof specs / sizeof specs[0]));
      if (args->step < 1 || args->step != floor(args->step)) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: step %g must be an integer >= 1", op_name, args->step);
      }
      if (args->beta1 < 0 || args->beta1 >= 1 || args->beta2 < 0 || args->beta2 >= 1) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: beta1 and beta2 must lie in [0, 1)", op_name);
      }
      if (inputs[0].rank < 0 || inputs[0].rank > MEDLEY_MAX_RANK) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: grad has rank %d", op_name, (int)inputs[0].rank);
      }
      args->n = mk_numel(&inputs[0]);
      for (int i = 0; i < 3; i++) MK_TRY(mk_expect_count(&p, 1, i, args->n));
      MK_TRY(mk_check_tensor(&p, 0, 0, F, &args->in_ref[0]));
      for (int i = 0; i < 3; i++) MK_TRY(mk_check_tensor(&p, 1, i, F, &args->out_ref[i]));
      return NULL;
    }

    case MK_OP_COUNT:
      break;
  }
  return mk_error(MEDLEY_ERROR_INTERNAL, "%s: no shape rules for this op", op_name);
}

/* mk_op_check over the kit's host memory: a buffer is live when it is in the list. */
static medley_error *mk_host_buffer_bytes(void *ctx, const medley_buffer *buffer, const char *what,
                                          uint64_t *out_bytes) {
  const mk_memory *memory = ctx;
  if (!mk_buffer_is_live(memory, buffer)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: buffer %p is not a live buffer of this device",
                    what, (const void *)buffer);
  }
  *out_bytes = buffer->bytes;
  return NULL;
}

medley_error *mk_op_prepare(const mk_memory *memory, const char *op_name, const medley_tensor *inputs,
                            size_t num_inputs, const medley_tensor *outputs, size_t num_outputs,
                            const medley_attr *attrs, size_t num_attrs, uint32_t dtype_mask,
                            mk_op_args *args) {
  const mk_memory_ops ops = {(void *)memory, mk_host_buffer_bytes};
  MK_TRY(mk_op_check(&ops, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs, dtype_mask,
                     args));
  /* Host memory: the kernel's pointers are the buffers' own bytes. */
  for (size_t i = 0; i < args->num_inputs; i++) {
    args->in[i] = mk_buffer_data(args->in_ref[i].buffer) + args->in_ref[i].offset;
  }
  for (size_t i = 0; i < args->num_outputs; i++) {
    args->out[i] = mk_buffer_data(args->out_ref[i].buffer) + args->out_ref[i].offset;
  }
  /* The token ids can be read where they lie. */
  int k = mk_op_token_input(args);
  if (k >= 0) MK_TRY(mk_op_check_tokens(args, args->in[k], args->in_ref[k].bytes / sizeof(int32_t)));
  return NULL;
}

/* ========================================================================= */
/* Host-memory devices: whole table entries                                  */
/* ========================================================================= */

#define MK_HOST_DEVICE_MAGIC 0x4d4b484f53544456ull /* "MKHOSTDV" */

/* The adapter's struct medley_device begins with its mk_host_device. */
static mk_host_device *mk_host(medley_device *device) { return (mk_host_device *)(void *)device; }
static const mk_host_device *mk_host_const(const medley_device *device) {
  return (const mk_host_device *)(const void *)device;
}

void mk_host_device_init(mk_host_device *host, const mk_host_kind *kind, uint64_t capacity) {
  host->magic = MK_HOST_DEVICE_MAGIC;
  host->kind = kind;
  mk_memory_init(&host->memory, capacity);
  host->streams.head = NULL;
}

void mk_host_device_release(mk_host_device *host) {
  mk_memory_release_all(&host->memory);
  mk_stream_release_all(&host->streams);
  host->magic = 0;
}

/* `kind` NULL (the shared mk_host_* entries) accepts an open kit device of
   any kind; the adapter's own entries name their kind, and a device of
   another kind is refused like any other pointer. */
medley_error *mk_host_check_handle(const medley_device *device, const mk_host_kind *kind, const char *entry) {
  if (device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: device is NULL", entry);
  const mk_host_device *host = mk_host_const(device);
  if (host->magic == MK_HOST_DEVICE_MAGIC && (kind == NULL || host->kind == kind)) return NULL;
  if (kind != NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %p is not an open %s device", entry, (const void *)device,
                    kind->adapter);
  }
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: %p is not an open device of this adapter", entry,
                  (const void *)device);
}

medley_error *mk_host_check_device(const medley_device *device, const mk_host_kind *kind, const char *entry) {
  MK_TRY(mk_host_check_handle(device, kind, entry));
  const mk_host_device *host = mk_host_const(device);
  return host->kind->check != NULL ? host->kind->check(device, entry) : NULL;
}

/* Device, then stream: NULL (the default stream) or a live stream of this device. */
static medley_error *mk_host_check_queue(const medley_device *device, const mk_host_kind *kind,
                                         const medley_stream *stream, const char *entry) {
  MK_TRY(mk_host_check_device(device, kind, entry));
  return mk_stream_check(&mk_host_const(device)->streams, stream, entry);
}

medley_error *mk_host_launch_prepare(medley_device *device, const mk_host_kind *kind, medley_stream *stream,
                                     const char *op_name, const medley_tensor *inputs, size_t num_inputs,
                                     const medley_tensor *outputs, size_t num_outputs, const medley_attr *attrs,
                                     size_t num_attrs, mk_op_args *args) {
  MK_TRY(mk_host_check_queue(device, kind, stream, "op_launch"));
  mk_host_device *host = mk_host(device);
  return mk_op_prepare(&host->memory, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs,
                       host->kind->float_dtypes, args);
}

medley_error *mk_host_buffer_alloc(medley_device *device, uint64_t bytes, medley_buffer **out_buffer) {
  MK_TRY(mk_host_check_device(device, NULL, "buffer_alloc"));
  return mk_buffer_alloc(&mk_host(device)->memory, bytes, out_buffer);
}

medley_error *mk_host_buffer_free(medley_device *device, medley_buffer *buffer) {
  MK_TRY(mk_host_check_device(device, NULL, "buffer_free"));
  return mk_buffer_free(&mk_host(device)->memory, buffer);
}

medley_error *mk_host_copy_h2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                               uint64_t dst_offset, const void *src, uint64_t bytes) {
  MK_TRY(mk_host_check_queue(device, NULL, stream, "copy_h2d"));
  return mk_copy_h2d(&mk_host(device)->memory, dst, dst_offset, src, bytes);
}

medley_error *mk_host_copy_d2h(medley_device *device, medley_stream *stream, void *dst, medley_buffer *src,
                               uint64_t src_offset, uint64_t bytes) {
  MK_TRY(mk_host_check_queue(device, NULL, stream, "copy_d2h"));
  return mk_copy_d2h(&mk_host(device)->memory, dst, src, src_offset, bytes);
}

medley_error *mk_host_copy_d2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                               uint64_t dst_offset, medley_buffer *src, uint64_t src_offset, uint64_t bytes) {
  MK_TRY(mk_host_check_queue(device, NULL, stream, "copy_d2d"));
  return mk_copy_d2d(&mk_host(device)->memory, dst, dst_offset, src, src_offset, bytes);
}

medley_error *mk_host_memset(medley_device *device, medley_stream *stream, medley_buffer *dst, uint64_t offset,
                             uint8_t value, uint64_t bytes) {
  MK_TRY(mk_host_check_queue(device, NULL, stream, "memset"));
  return mk_memset(&mk_host(device)->memory, dst, offset, value, bytes);
}

medley_error *mk_host_stream_create(medley_device *device, medley_stream **out_stream) {
  MK_TRY(mk_host_check_device(device, NULL, "stream_create"));
  return mk_stream_create(&mk_host(device)->streams, out_stream);
}

medley_error *mk_host_stream_destroy(medley_device *device, medley_stream *stream) {
  MK_TRY(mk_host_check_device(device, NULL, "stream_destroy"));
  return mk_stream_destroy(&mk_host(device)->streams, stream);
}

medley_error *mk_host_stream_synchronize(medley_device *device, medley_stream *stream) {
  return mk_host_check_queue(device, NULL, stream, "stream_synchronize"); /* all work has already finished */
}

medley_error *mk_host_op_query(medley_device *device, const char *op_name, int32_t dtype, int32_t *out_supported) {
  MK_TRY(mk_host_check_device(device, NULL, "op_query"));
  return mk_op_query(op_name, dtype, mk_host(device)->kind->float_dtypes, out_supported);
}

medley_error *mk_host_step_begin(medley_device *device, int64_t step) {
  MK_TRY(mk_host_check_device(device, NULL, "step_begin"));
  if (step < 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "step_begin: step %lld is negative", (long long)step);
  return NULL;
}
