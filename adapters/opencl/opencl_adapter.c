/*
 * opencl_adapter.c — the OpenCL adapter of Medley (plugin name "opencl").
 *
 * One adapter for every OpenCL 1.2+ device: NVIDIA, AMD and Intel GPUs, and
 * CPU runtimes such as PoCL. It follows the device-memory template
 * (adapters/template-devmem): buffers are checked 64-bit handles over a
 * table of cl_mem objects, every Medley stream is an in-order
 * cl_command_queue, a failure of queued work is sticky on its stream, and
 * launches are checked with the kit's mk_op_check before any kernel is
 * queued. The kernels are OpenCL C 1.2 (kernels/opencl_kernels.cl, built into
 * this library as opencl_kernels_source.h by kernels/generate.sh) and are
 * built once per opened device; the program binary is cached on disk.
 *
 * Devices: every device of every platform, GPUs first, then accelerators,
 * then the rest (index 0 is the first GPU, else the first device).
 *
 * Options (device_open):
 *   platform=INDEX|NAME   a platform by index or case-insensitive name substring
 *   device=INDEX|NAME     a device of that platform (of all, without platform=)
 *   memory=SIZE           cap on what the host may allocate (default: global memory)
 *   kernels=PATH          kernel source from a file instead of the built-in one
 *   build_options=STRING  appended to the OpenCL compiler flags
 *   cache=on|off          the on-disk program cache (default on)
 *   gemm=auto|local|vector  GEMM tiling: local-memory tiles (GPUs) or register
 *                         vectors (CPU devices); auto picks by device type
 *
 * Build by hand (from the repository root):
 *   cc -std=gnu11 -O2 -shared -fPIC -fvisibility=hidden -Iadapters/include \
 *      -Iadapters/kit/include adapters/opencl/opencl_adapter.c \
 *      adapters/kit/medley_kit.c -lOpenCL -lm -o libmedley-adapter-opencl.so
 *
 * Only medley_adapter_get_api is exported. Every entry returns NULL or an
 * mk_error; nothing here exits, aborts or prints.
 */
#define _GNU_SOURCE
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__APPLE__)
#include <OpenCL/opencl.h>
#else
#include <CL/cl.h>
#endif

#include "medley_adapter.h"
#include "medley_kit.h"
#include "opencl_kernels_source.h"

#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif

/* ========================================================================= */
/* Plugin info                                                               */
/* ========================================================================= */

#define OCL_PLUGIN_NAME "opencl"
#define OCL_VENDOR "Medley"
#define OCL_VERSION "1.0.0"
#define OCL_FLOAT_DTYPES MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32)

#define OCL_ACCEPTED_OPTIONS                                                                  \
  "accepted options: platform=INDEX|NAME, device=INDEX|NAME, memory=SIZE (e.g. 512MiB), " \
  "kernels=PATH, build_options=STRING, cache=on|off, gemm=auto|local|vector"

static medley_error *ocl_plugin_info(medley_plugin_info *out) {
  return mk_plugin_info(out, OCL_PLUGIN_NAME, OCL_VENDOR, OCL_VERSION);
}

/* ========================================================================= */
/* OpenCL error names                                                        */
/* ========================================================================= */

static const char *ocl_error_name_or_null(cl_int code) {
  switch (code) {
#define OCL_NAME_(c) \
  case c:            \
    return #c;
    OCL_NAME_(CL_SUCCESS)
    OCL_NAME_(CL_DEVICE_NOT_FOUND)
    OCL_NAME_(CL_DEVICE_NOT_AVAILABLE)
    OCL_NAME_(CL_COMPILER_NOT_AVAILABLE)
    OCL_NAME_(CL_MEM_OBJECT_ALLOCATION_FAILURE)
    OCL_NAME_(CL_OUT_OF_RESOURCES)
    OCL_NAME_(CL_OUT_OF_HOST_MEMORY)
    OCL_NAME_(CL_PROFILING_INFO_NOT_AVAILABLE)
    OCL_NAME_(CL_MEM_COPY_OVERLAP)
    OCL_NAME_(CL_IMAGE_FORMAT_MISMATCH)
    OCL_NAME_(CL_IMAGE_FORMAT_NOT_SUPPORTED)
    OCL_NAME_(CL_BUILD_PROGRAM_FAILURE)
    OCL_NAME_(CL_MAP_FAILURE)
    OCL_NAME_(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    OCL_NAME_(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    OCL_NAME_(CL_COMPILE_PROGRAM_FAILURE)
    OCL_NAME_(CL_LINKER_NOT_AVAILABLE)
    OCL_NAME_(CL_LINK_PROGRAM_FAILURE)
    OCL_NAME_(CL_DEVICE_PARTITION_FAILED)
    OCL_NAME_(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    OCL_NAME_(CL_INVALID_VALUE)
    OCL_NAME_(CL_INVALID_DEVICE_TYPE)
    OCL_NAME_(CL_INVALID_PLATFORM)
    OCL_NAME_(CL_INVALID_DEVICE)
    OCL_NAME_(CL_INVALID_CONTEXT)
    OCL_NAME_(CL_INVALID_QUEUE_PROPERTIES)
    OCL_NAME_(CL_INVALID_COMMAND_QUEUE)
    OCL_NAME_(CL_INVALID_HOST_PTR)
    OCL_NAME_(CL_INVALID_MEM_OBJECT)
    OCL_NAME_(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
    OCL_NAME_(CL_INVALID_IMAGE_SIZE)
    OCL_NAME_(CL_INVALID_SAMPLER)
    OCL_NAME_(CL_INVALID_BINARY)
    OCL_NAME_(CL_INVALID_BUILD_OPTIONS)
    OCL_NAME_(CL_INVALID_PROGRAM)
    OCL_NAME_(CL_INVALID_PROGRAM_EXECUTABLE)
    OCL_NAME_(CL_INVALID_KERNEL_NAME)
    OCL_NAME_(CL_INVALID_KERNEL_DEFINITION)
    OCL_NAME_(CL_INVALID_KERNEL)
    OCL_NAME_(CL_INVALID_ARG_INDEX)
    OCL_NAME_(CL_INVALID_ARG_VALUE)
    OCL_NAME_(CL_INVALID_ARG_SIZE)
    OCL_NAME_(CL_INVALID_KERNEL_ARGS)
    OCL_NAME_(CL_INVALID_WORK_DIMENSION)
    OCL_NAME_(CL_INVALID_WORK_GROUP_SIZE)
    OCL_NAME_(CL_INVALID_WORK_ITEM_SIZE)
    OCL_NAME_(CL_INVALID_GLOBAL_OFFSET)
    OCL_NAME_(CL_INVALID_EVENT_WAIT_LIST)
    OCL_NAME_(CL_INVALID_EVENT)
    OCL_NAME_(CL_INVALID_OPERATION)
    OCL_NAME_(CL_INVALID_GL_OBJECT)
    OCL_NAME_(CL_INVALID_BUFFER_SIZE)
    OCL_NAME_(CL_INVALID_MIP_LEVEL)
    OCL_NAME_(CL_INVALID_GLOBAL_WORK_SIZE)
    OCL_NAME_(CL_INVALID_PROPERTY)
    OCL_NAME_(CL_INVALID_IMAGE_DESCRIPTOR)
    OCL_NAME_(CL_INVALID_COMPILER_OPTIONS)
    OCL_NAME_(CL_INVALID_LINKER_OPTIONS)
    OCL_NAME_(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef OCL_NAME_
    case -69: return "CL_INVALID_PIPE_SIZE";
    case -70: return "CL_INVALID_DEVICE_QUEUE";
    case -71: return "CL_INVALID_SPEC_ID";
    case -72: return "CL_MAX_SIZE_RESTRICTION_EXCEEDED";
    case -1000: return "CL_INVALID_GL_SHAREGROUP_REFERENCE_KHR";
    case CL_PLATFORM_NOT_FOUND_KHR: return "CL_PLATFORM_NOT_FOUND_KHR";
    case -1002: return "CL_INVALID_D3D10_DEVICE_KHR";
    case -1057: return "CL_DEVICE_PARTITION_FAILED_EXT";
    case -1058: return "CL_INVALID_PARTITION_COUNT_EXT";
    case -1059: return "CL_INVALID_PARTITION_NAME_EXT";
    case -1092: return "CL_EGL_RESOURCE_NOT_ACQUIRED_KHR";
    case -1093: return "CL_INVALID_EGL_OBJECT_KHR";
    case -1094: return "CL_INVALID_ACCELERATOR_INTEL";
    case -1095: return "CL_INVALID_ACCELERATOR_TYPE_INTEL";
    case -1096: return "CL_INVALID_ACCELERATOR_DESCRIPTOR_INTEL";
    case -1097: return "CL_ACCELERATOR_TYPE_NOT_SUPPORTED_INTEL";
    case -1098: return "CL_INVALID_VA_API_MEDIA_ADAPTER_INTEL";
    case -1099: return "CL_INVALID_VA_API_MEDIA_SURFACE_INTEL";
    case -1100: return "CL_VA_API_MEDIA_SURFACE_ALREADY_ACQUIRED_INTEL";
    case -1101: return "CL_VA_API_MEDIA_SURFACE_NOT_ACQUIRED_INTEL";
    case -9999: return "CL_NV_ILLEGAL_MEMORY_ACCESS (-9999)";
    default: return NULL;
  }
}

/* The name of an OpenCL status as a value that lives until the end of the full expression. */
typedef struct ocl_errtext {
  char text[64];
} ocl_errtext;

static ocl_errtext ocl_err(cl_int code) {
  ocl_errtext t;
  const char *name = ocl_error_name_or_null(code);
  if (name != NULL) snprintf(t.text, sizeof t.text, "%s", name);
  else snprintf(t.text, sizeof t.text, "OpenCL error %d", (int)code);
  return t;
}

/* How a failed OpenCL call reads to the host. */
static int32_t ocl_status_code(cl_int code) {
  switch (code) {
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
    case CL_OUT_OF_RESOURCES:
    case CL_OUT_OF_HOST_MEMORY:
    case CL_INVALID_BUFFER_SIZE:
      return MEDLEY_ERROR_OUT_OF_MEMORY;
    case CL_DEVICE_NOT_AVAILABLE:
    case CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST:
      return MEDLEY_ERROR_DEVICE_LOST;
    default:
      /* A negative execution status that is not an API error (e.g. NVIDIA's -9999). */
      return code < -1000 || code > -30 ? MEDLEY_ERROR_DEVICE_LOST : MEDLEY_ERROR_INTERNAL;
  }
}

/* ========================================================================= */
/* Small helpers                                                             */
/* ========================================================================= */

static int ocl_ieq_prefix_contains(const char *haystack, const char *needle) {
  /* Case-insensitive substring search (ASCII). */
  size_t n = strlen(needle);
  if (n == 0) return 1;
  for (const char *h = haystack; *h != '\0'; h++) {
    size_t i = 0;
    while (i < n && h[i] != '\0' && tolower((unsigned char)h[i]) == tolower((unsigned char)needle[i])) i++;
    if (i == n) return 1;
  }
  return 0;
}

/* A decimal index "0".."999999", or -1. */
static int64_t ocl_parse_index(const char *text) {
  int64_t value = 0;
  if (mk_parse_int(text, 0, 999999, &value) != 0) return -1;
  return value;
}

static void ocl_device_string(cl_device_id device, cl_device_info what, char *out, size_t size) {
  out[0] = '\0';
  if (clGetDeviceInfo(device, what, size, out, NULL) != CL_SUCCESS) out[0] = '\0';
  out[size - 1] = '\0';
  /* Some drivers pad names with spaces. */
  size_t n = strlen(out);
  while (n > 0 && out[n - 1] == ' ') out[--n] = '\0';
  size_t start = 0;
  while (out[start] == ' ') start++;
  if (start > 0) memmove(out, out + start, strlen(out + start) + 1);
}

static void ocl_platform_string(cl_platform_id platform, cl_platform_info what, char *out, size_t size) {
  out[0] = '\0';
  if (clGetPlatformInfo(platform, what, size, out, NULL) != CL_SUCCESS) out[0] = '\0';
  out[size - 1] = '\0';
}

/* 64-bit FNV-1a, continued from `hash`. */
static uint64_t ocl_fnv1a(uint64_t hash, const void *data, size_t size) {
  const unsigned char *p = data;
  for (size_t i = 0; i < size; i++) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}
#define OCL_FNV_OFFSET 0xcbf29ce484222325ull

/* ========================================================================= */
/* Inventory: every device of every platform, GPUs first                     */
/* ========================================================================= */

#define OCL_MAX_PLATFORMS 32
#define OCL_MAX_DEVICES 256

typedef struct ocl_entry {
  cl_platform_id platform;
  cl_device_id device;
  cl_device_type type;
  int platform_index;
} ocl_entry;

typedef struct ocl_inventory {
  cl_uint num_platforms;
  cl_platform_id platforms[OCL_MAX_PLATFORMS];
  int count; /* devices in `devices`, ordered GPUs, accelerators, the rest */
  ocl_entry devices[OCL_MAX_DEVICES];
} ocl_inventory;

static int ocl_type_rank(cl_device_type type) {
  if (type & CL_DEVICE_TYPE_GPU) return 0;
  if (type & CL_DEVICE_TYPE_ACCELERATOR) return 1;
  return 2;
}

/* Fills the inventory; UNAVAILABLE when there is no OpenCL platform at all. */
static medley_error *ocl_inventory_load(ocl_inventory *inv, const char *entry) {
  memset(inv, 0, sizeof *inv);
  cl_uint num = 0;
  cl_int status = clGetPlatformIDs(0, NULL, &num);
  if (status != CL_SUCCESS || num == 0) {
    return mk_error(MEDLEY_ERROR_UNAVAILABLE,
                    "opencl: no OpenCL platform found (clGetPlatformIDs: %s); install an OpenCL driver, "
                    "e.g. pocl-opencl-icd, and check `clinfo -l`%s%s",
                    status != CL_SUCCESS ? ocl_err(status).text : "0 platforms", entry ? " [" : "",
                    entry ? entry : "");
  }
  if (num > OCL_MAX_PLATFORMS) num = OCL_MAX_PLATFORMS;
  status = clGetPlatformIDs(num, inv->platforms, NULL);
  if (status != CL_SUCCESS) {
    return mk_error(MEDLEY_ERROR_UNAVAILABLE, "opencl: clGetPlatformIDs failed: %s", ocl_err(status).text);
  }
  inv->num_platforms = num;
  ocl_entry all[OCL_MAX_DEVICES];
  int total = 0;
  for (cl_uint p = 0; p < num && total < OCL_MAX_DEVICES; p++) {
    cl_uint n = 0;
    if (clGetDeviceIDs(inv->platforms[p], CL_DEVICE_TYPE_ALL, 0, NULL, &n) != CL_SUCCESS || n == 0) continue;
    cl_device_id ids[OCL_MAX_DEVICES];
    if (n > (cl_uint)(OCL_MAX_DEVICES - total)) n = (cl_uint)(OCL_MAX_DEVICES - total);
    if (clGetDeviceIDs(inv->platforms[p], CL_DEVICE_TYPE_ALL, n, ids, NULL) != CL_SUCCESS) continue;
    for (cl_uint d = 0; d < n; d++) {
      cl_device_type type = 0;
      clGetDeviceInfo(ids[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
      all[total].platform = inv->platforms[p];
      all[total].device = ids[d];
      all[total].type = type;
      all[total].platform_index = (int)p;
      total++;
    }
  }
  /* Stable order by type rank: GPUs, accelerators, the rest. */
  for (int rank = 0; rank < 3; rank++) {
    for (int i = 0; i < total; i++) {
      if (ocl_type_rank(all[i].type) == rank) inv->devices[inv->count++] = all[i];
    }
  }
  return NULL;
}

static medley_error *ocl_device_count(int32_t *out_count) {
  if (out_count == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_count: out_count is NULL");
  *out_count = 0;
  ocl_inventory *inv = malloc(sizeof *inv);
  if (inv == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_count: out of host memory");
  medley_error *error = ocl_inventory_load(inv, NULL);
  if (error == NULL) *out_count = inv->count;
  free(inv);
  return error;
}

/* ========================================================================= */
/* Handles                                                                   */
/* ========================================================================= */
/*
 *   bits 56..63 tag | 40..55 device serial | 20..39 generation | 0..19 slot
 * as in the devmem template: a value no process maps, checked on every use.
 */
#define OCL_TAG_BUFFER 0xB1u
#define OCL_TAG_STREAM 0x5Bu
#define OCL_SLOT_BITS 20
#define OCL_GEN_BITS 20
#define OCL_GEN_MASK ((1u << OCL_GEN_BITS) - 1)
#define OCL_MAX_SLOTS (1u << OCL_SLOT_BITS)

static uint64_t ocl_handle(uint32_t tag, uint32_t serial, uint32_t generation, uint32_t slot) {
  return ((uint64_t)tag << 56) | ((uint64_t)(serial & 0xFFFFu) << 40) |
         ((uint64_t)(generation & OCL_GEN_MASK) << OCL_SLOT_BITS) | slot;
}

/* ========================================================================= */
/* The device                                                                */
/* ========================================================================= */

#define OCL_DEVICE_MAGIC 0x4f50454e434c4456ull /* "OPENCLDV" */
#define OCL_MAX_STREAMS 16                     /* slot 0 is the default stream (NULL) */
#define OCL_MAX_PENDING 1024                   /* events kept per stream before a drain */
#define OCL_STAGE_LIMIT (16u << 20)            /* copy_h2d stages up to this many bytes, then blocks */
#define OCL_STAGE_HELD ((uint64_t)256 << 20)   /* staged bytes a stream holds before it waits */

/* Every kernel of opencl_kernels.cl, looked up once at device_open. */
#define OCL_KERNELS(X)                                                                   \
  X(gemm_nn) X(gemm_nt) X(gemm_tn) X(transpose) X(column_sums) X(encoder_forward)        \
  X(encoder_backward_wte) X(encoder_backward_wpe) X(layernorm_forward)                   \
  X(layernorm_backward_dx) X(layernorm_backward_dwb) X(attention_forward)                \
  X(attention_backward_D) X(attention_backward_dq) X(attention_backward_dkv)             \
  X(attention_forward_v) X(attention_backward_dq_v) X(attention_backward_dkv_v)          \
  X(gelu_forward) X(gelu_backward)                                                       \
  X(residual_forward) X(residual_backward) X(scale_kernel) X(crossentropy_forward)       \
  X(crossentropy_backward) X(adamw_update) X(sum_squares_partial) X(sum_squares_final)

typedef enum ocl_kernel_id {
#define OCL_KENUM_(name) OCL_K_##name,
  OCL_KERNELS(OCL_KENUM_)
#undef OCL_KENUM_
  OCL_K_COUNT
} ocl_kernel_id;

static const char *const ocl_kernel_names[OCL_K_COUNT] = {
#define OCL_KNAME_(name) #name,
    OCL_KERNELS(OCL_KNAME_)
#undef OCL_KNAME_
};

typedef struct ocl_slot {
  cl_mem mem;
  uint64_t bytes;
  uint32_t generation;
  int live;
} ocl_slot;

typedef struct ocl_stream {
  int live;
  uint32_t generation;
  cl_command_queue queue;
  /* Events of work queued since the last synchronize, checked there. */
  cl_event *events;
  const char **labels; /* static strings: what each event was */
  void **staged;       /* copy_h2d's staged host bytes, freed once the event is done (else NULL) */
  size_t num_events, cap_events;
  uint64_t staged_bytes; /* staged bytes still held */
  /* The sticky fault. */
  int faulted;
  int32_t fault_code;
  char fault_message[640];
  /* Scratch device memory of this stream's kernels (transposed weights). */
  cl_mem scratch;
  size_t scratch_bytes;
} ocl_stream;

struct medley_device {
  uint64_t magic; /* first: mk_check_device reads it */
  uint32_t serial;
  cl_platform_id platform;
  cl_device_id device;
  cl_context context;
  cl_program program;
  cl_kernel kernels[OCL_K_COUNT];
  size_t kernel_wg[OCL_K_COUNT]; /* CL_KERNEL_WORK_GROUP_SIZE */
  cl_command_queue service;      /* allocation probes */
  char name[256], vendor[256];
  uint64_t capacity, used, max_alloc;
  uint32_t compute_units;
  size_t max_wg;
  /* GEMM geometry, passed to the compiler as -D options. */
  int is_cpu; /* a CPU device: inline exp, driver-sized element groups */
  int gemm_vector;
  int tsm, tsn, tsk, wptm, wptn, mr, nv;
  int ssq_wg;
  int from_cache; /* the program came from the on-disk cache */
  ocl_slot *slots;
  uint32_t num_slots, cap_slots;
  ocl_stream streams[OCL_MAX_STREAMS];
};

static uint32_t ocl_next_serial = 1;

static medley_error *ocl_check(const medley_device *device, const char *entry) {
  return mk_check_device(device, OCL_DEVICE_MAGIC, OCL_PLUGIN_NAME, entry);
}

/* ---- buffers ------------------------------------------------------------ */

/* Looks a handle up without touching it: the live slot, or an error naming what is wrong. */
static medley_error *ocl_lookup_buffer(const medley_device *device, const medley_buffer *buffer, const char *what,
                                       ocl_slot **out) {
  uint64_t value = (uint64_t)(uintptr_t)buffer;
  if ((uint32_t)(value >> 56) != OCL_TAG_BUFFER) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: buffer %p is not a live buffer of this device", what,
                    (const void *)buffer);
  }
  uint32_t serial = (uint32_t)((value >> 40) & 0xFFFFu);
  if (serial != (device->serial & 0xFFFFu)) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "%s: buffer %p belongs to another opencl device (opened as #%u), not this one (#%u); "
                    "it is not a live buffer of this device",
                    what, (const void *)buffer, (unsigned)serial, (unsigned)(device->serial & 0xFFFFu));
  }
  uint32_t generation = (uint32_t)((value >> OCL_SLOT_BITS) & OCL_GEN_MASK);
  uint32_t slot = (uint32_t)(value & (OCL_MAX_SLOTS - 1));
  if (slot >= device->num_slots || !device->slots[slot].live ||
      (device->slots[slot].generation & OCL_GEN_MASK) != generation) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "%s: buffer %p was freed; it is not a live buffer of this device", what, (const void *)buffer);
  }
  *out = &device->slots[slot];
  return NULL;
}

/* The size callback of mk_op_check and mk_check_range. */
static medley_error *ocl_buffer_bytes(void *ctx, const medley_buffer *buffer, const char *what, uint64_t *out_bytes) {
  ocl_slot *slot = NULL;
  medley_error *error = ocl_lookup_buffer(ctx, buffer, what, &slot);
  if (error != NULL) return error;
  *out_bytes = slot->bytes;
  return NULL;
}

static mk_memory_ops ocl_memory_ops(medley_device *device) {
  mk_memory_ops ops = {device, ocl_buffer_bytes};
  return ops;
}

/* The cl_mem of a buffer already checked by mk_check_range / mk_op_check. */
static cl_mem ocl_mem(const medley_device *device, const medley_buffer *buffer) {
  uint32_t slot = (uint32_t)((uint64_t)(uintptr_t)buffer & (OCL_MAX_SLOTS - 1));
  return device->slots[slot].mem;
}

/* ---- streams and the sticky fault ---------------------------------------- */

static medley_error *ocl_lookup_stream(medley_device *device, const medley_stream *stream, const char *entry,
                                       ocl_stream **out) {
  if (stream == NULL) {
    *out = &device->streams[0];
    return NULL;
  }
  uint64_t value = (uint64_t)(uintptr_t)stream;
  uint32_t generation = (uint32_t)((value >> OCL_SLOT_BITS) & OCL_GEN_MASK);
  uint32_t slot = (uint32_t)(value & (OCL_MAX_SLOTS - 1));
  if ((uint32_t)(value >> 56) == OCL_TAG_STREAM && (uint32_t)((value >> 40) & 0xFFFFu) == (device->serial & 0xFFFFu) &&
      slot > 0 && slot < OCL_MAX_STREAMS && device->streams[slot].live &&
      (device->streams[slot].generation & OCL_GEN_MASK) == generation) {
    *out = &device->streams[slot];
    return NULL;
  }
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: stream %p is not a live stream of this device", entry,
                  (const void *)stream);
}

static medley_error *ocl_sticky(const ocl_stream *stream) {
  return stream->faulted ? mk_error(stream->fault_code, "%s", stream->fault_message) : NULL;
}

/* Makes the stream faulted (the first fault stays) and returns the sticky error. */
static medley_error *ocl_fault(ocl_stream *stream, int32_t code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static medley_error *ocl_fault(ocl_stream *stream, int32_t code, const char *format, ...) {
  if (!stream->faulted) {
    va_list args;
    va_start(args, format);
    vsnprintf(stream->fault_message, sizeof stream->fault_message, format, args);
    va_end(args);
    stream->faulted = 1;
    stream->fault_code = code;
  }
  return ocl_sticky(stream);
}

static medley_error *ocl_fault_cl(ocl_stream *stream, cl_int status, const char *what, const char *call) {
  return ocl_fault(stream, ocl_status_code(status), "%s: %s failed: %s", what, call, ocl_err(status).text);
}

/* Releases the kept events; their staged bytes are freed when `done` (the commands have finished). */
static void ocl_release_events(ocl_stream *stream, int done) {
  for (size_t i = 0; i < stream->num_events; i++) {
    clReleaseEvent(stream->events[i]);
    if (done) free(stream->staged[i]); /* else leaked: a lost device may still read them */
  }
  stream->num_events = 0;
  stream->staged_bytes = 0;
}

/*
 * Waits for everything queued on the stream (clFinish), then looks at the
 * status of each command queued since the last wait: the first that failed
 * makes the stream faulted. Returns the sticky fault, if any.
 */
static medley_error *ocl_finish(ocl_stream *stream) {
  cl_int status = clFinish(stream->queue);
  if (status != CL_SUCCESS) {
    ocl_release_events(stream, 0);
    return ocl_fault(stream, ocl_status_code(status) == MEDLEY_ERROR_INTERNAL ? MEDLEY_ERROR_DEVICE_LOST
                                                                               : ocl_status_code(status),
                     "stream_synchronize: clFinish failed: %s", ocl_err(status).text);
  }
  for (size_t i = 0; i < stream->num_events && !stream->faulted; i++) {
    cl_int exec = CL_COMPLETE;
    cl_int query = clGetEventInfo(stream->events[i], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
    if (query != CL_SUCCESS) exec = query;
    if (exec < 0) {
      ocl_fault(stream, ocl_status_code(exec), "%s: the queued command failed on the device: %s",
                stream->labels[i], ocl_err(exec).text);
    }
  }
  ocl_release_events(stream, 1);
  return ocl_sticky(stream);
}

/* Keeps the event of a queued command (and its staged bytes, if any) for the next synchronize; takes ownership of both. */
static medley_error *ocl_track_staged(ocl_stream *stream, cl_event event, const char *label, void *staged,
                                      uint64_t staged_size) {
  if (event == NULL) {
    /* No event to wait on: wait for the whole queue before the bytes go. */
    if (staged != NULL) {
      clFinish(stream->queue);
      free(staged);
    }
    return NULL;
  }
  if (stream->num_events == OCL_MAX_PENDING || stream->staged_bytes + staged_size > OCL_STAGE_HELD) {
    /* Like a full driver queue: wait for it before queueing more. */
    medley_error *error = ocl_finish(stream);
    if (error != NULL) {
      clWaitForEvents(1, &event);
      clReleaseEvent(event);
      free(staged);
      return error;
    }
  }
  if (stream->num_events == stream->cap_events) {
    size_t capacity = stream->cap_events == 0 ? 64 : stream->cap_events * 2;
    cl_event *events = realloc(stream->events, capacity * sizeof *events);
    if (events != NULL) stream->events = events;
    const char **labels = events != NULL ? realloc(stream->labels, capacity * sizeof *labels) : NULL;
    if (labels != NULL) stream->labels = labels;
    void **stages = labels != NULL ? realloc(stream->staged, capacity * sizeof *stages) : NULL;
    if (stages == NULL) {
      /* Cannot keep it: wait for it now instead. */
      cl_int exec = CL_COMPLETE;
      clWaitForEvents(1, &event);
      clGetEventInfo(event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
      clReleaseEvent(event);
      free(staged);
      if (exec < 0) return ocl_fault(stream, ocl_status_code(exec), "%s: the queued command failed: %s", label,
                                     ocl_err(exec).text);
      return NULL;
    }
    stream->staged = stages;
    stream->cap_events = capacity;
  }
  stream->events[stream->num_events] = event;
  stream->labels[stream->num_events] = label;
  stream->staged[stream->num_events] = staged;
  stream->num_events++;
  stream->staged_bytes += staged_size;
  return NULL;
}

static medley_error *ocl_track(ocl_stream *stream, cl_event event, const char *label) {
  return ocl_track_staged(stream, event, label, NULL, 0);
}

/* Device, then stream. The start of every entry that takes a stream. */
static medley_error *ocl_queue_for(medley_device *device, medley_stream *stream, const char *entry,
                                   ocl_stream **out) {
  medley_error *error = ocl_check(device, entry);
  if (error == NULL) error = ocl_lookup_stream(device, stream, entry, out);
  return error;
}

static void ocl_stream_release(ocl_stream *stream) {
  if (stream->queue != NULL) {
    clFinish(stream->queue);
    clReleaseCommandQueue(stream->queue);
  }
  ocl_release_events(stream, 1);
  free(stream->events);
  free(stream->labels);
  free(stream->staged);
  if (stream->scratch != NULL) clReleaseMemObject(stream->scratch);
  stream->queue = NULL;
  stream->events = NULL;
  stream->labels = NULL;
  stream->staged = NULL;
  stream->cap_events = 0;
  stream->scratch = NULL;
  stream->scratch_bytes = 0;
}

/* ========================================================================= */
/* Options                                                                   */
/* ========================================================================= */

typedef struct ocl_options {
  const char *platform; /* NULL: not given */
  const char *device;
  uint64_t memory; /* 0: the device's global memory */
  const char *kernels;
  const char *build_options;
  int cache;
  int gemm; /* -1 auto, 0 local, 1 vector */
} ocl_options;

static medley_error *ocl_bad_option(const char *key, const char *value, const char *expected) {
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "opencl option %s='%s': expected %s; " OCL_ACCEPTED_OPTIONS, key,
                  value, expected);
}

static medley_error *ocl_parse_options(const medley_option *options, size_t num_options, ocl_options *out) {
  medley_error *error = mk_check_options(options, num_options);
  if (error != NULL) return error;
  memset(out, 0, sizeof *out);
  out->cache = 1;
  out->gemm = -1;
  for (size_t i = 0; i < num_options; i++) {
    const char *key = options[i].key, *value = options[i].value;
    if (strcmp(key, "platform") == 0) {
      if (value[0] == '\0') return ocl_bad_option(key, value, "a platform index or name");
      out->platform = value;
    } else if (strcmp(key, "device") == 0) {
      if (value[0] == '\0') return ocl_bad_option(key, value, "a device index or name");
      out->device = value;
    } else if (strcmp(key, "memory") == 0) {
      if (mk_parse_bytes(value, &out->memory) != 0 || out->memory == 0) {
        return ocl_bad_option(key, value, "a positive byte size like 512MiB");
      }
    } else if (strcmp(key, "kernels") == 0) {
      if (value[0] == '\0') return ocl_bad_option(key, value, "the path of an OpenCL C source file");
      out->kernels = value;
    } else if (strcmp(key, "build_options") == 0) {
      out->build_options = value;
    } else if (strcmp(key, "cache") == 0) {
      if (strcmp(value, "on") == 0) out->cache = 1;
      else if (strcmp(value, "off") == 0) out->cache = 0;
      else return ocl_bad_option(key, value, "on or off");
    } else if (strcmp(key, "gemm") == 0) {
      if (strcmp(value, "auto") == 0) out->gemm = -1;
      else if (strcmp(value, "local") == 0) out->gemm = 0;
      else if (strcmp(value, "vector") == 0) out->gemm = 1;
      else return ocl_bad_option(key, value, "auto, local or vector");
    } else {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "opencl option '%s' is unknown; " OCL_ACCEPTED_OPTIONS, key);
    }
  }
  return NULL;
}

/* Appends "0 'name', 1 'name'" of the platforms to `out`. */
static void ocl_list_platforms(const ocl_inventory *inv, char *out, size_t size) {
  size_t used = 0;
  out[0] = '\0';
  for (cl_uint p = 0; p < inv->num_platforms && used + 1 < size; p++) {
    char name[128];
    ocl_platform_string(inv->platforms[p], CL_PLATFORM_NAME, name, sizeof name);
    int n = snprintf(out + used, size - used, "%s%u '%s'", p ? ", " : "", (unsigned)p, name);
    if (n < 0) break;
    used += (size_t)n;
  }
}

/* Picks the device the options name, else inventory entry `index`. */
static medley_error *ocl_select(const ocl_inventory *inv, int32_t index, const ocl_options *opt, ocl_entry *out) {
  *out = inv->devices[index];
  if (opt->platform == NULL && opt->device == NULL) return NULL;
  int platform = -1;
  if (opt->platform != NULL) {
    int64_t p = ocl_parse_index(opt->platform);
    if (p >= 0) {
      if (p < (int64_t)inv->num_platforms) platform = (int)p;
    } else {
      for (cl_uint i = 0; i < inv->num_platforms && platform < 0; i++) {
        char name[128];
        ocl_platform_string(inv->platforms[i], CL_PLATFORM_NAME, name, sizeof name);
        if (ocl_ieq_prefix_contains(name, opt->platform)) platform = (int)i;
      }
    }
    if (platform < 0) {
      char list[1024];
      ocl_list_platforms(inv, list, sizeof list);
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "opencl option platform='%s': no such platform; platforms here: %s",
                      opt->platform, list);
    }
  }
  /* The candidates: that platform's devices in its own order, or all devices in adapter order. */
  ocl_entry candidates[OCL_MAX_DEVICES];
  int count = 0;
  if (platform >= 0) {
    cl_uint n = 0;
    cl_device_id ids[OCL_MAX_DEVICES];
    if (clGetDeviceIDs(inv->platforms[platform], CL_DEVICE_TYPE_ALL, OCL_MAX_DEVICES, ids, &n) != CL_SUCCESS) n = 0;
    if (n > OCL_MAX_DEVICES) n = OCL_MAX_DEVICES;
    for (cl_uint d = 0; d < n; d++) {
      candidates[count].platform = inv->platforms[platform];
      candidates[count].device = ids[d];
      candidates[count].type = 0;
      clGetDeviceInfo(ids[d], CL_DEVICE_TYPE, sizeof candidates[count].type, &candidates[count].type, NULL);
      candidates[count].platform_index = platform;
      count++;
    }
  } else {
    count = inv->count;
    memcpy(candidates, inv->devices, (size_t)count * sizeof candidates[0]);
  }
  int chosen = -1;
  if (opt->device == NULL) {
    /* platform= alone: its first GPU, else its first accelerator, else its first device. */
    for (int rank = 0; rank < 3 && chosen < 0; rank++) {
      for (int i = 0; i < count && chosen < 0; i++) {
        if (ocl_type_rank(candidates[i].type) == rank) chosen = i;
      }
    }
  } else {
    int64_t d = ocl_parse_index(opt->device);
    if (d >= 0) {
      if (d < count) chosen = (int)d;
    } else {
      for (int i = 0; i < count && chosen < 0; i++) {
        char name[256];
        ocl_device_string(candidates[i].device, CL_DEVICE_NAME, name, sizeof name);
        if (ocl_ieq_prefix_contains(name, opt->device)) chosen = i;
      }
    }
  }
  if (chosen < 0) {
    char list[1536];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; i < count && used + 1 < sizeof list; i++) {
      char name[256], pname[128];
      ocl_device_string(candidates[i].device, CL_DEVICE_NAME, name, sizeof name);
      ocl_platform_string(candidates[i].platform, CL_PLATFORM_NAME, pname, sizeof pname);
      int n = snprintf(list + used, sizeof list - used, "%s%d '%s' (%s)", i ? ", " : "", i, name, pname);
      if (n < 0) break;
      used += (size_t)n;
    }
    if (opt->device == NULL) {
      return mk_error(MEDLEY_ERROR_UNAVAILABLE, "opencl option platform='%s': the platform has no devices",
                      opt->platform);
    }
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "opencl option device='%s': no such device%s; devices here: %s",
                    opt->device, platform >= 0 ? " on that platform" : "", count > 0 ? list : "none");
  }
  *out = candidates[chosen];
  return NULL;
}

/* ========================================================================= */
/* Program build and the on-disk binary cache                                */
/* ========================================================================= */

/* The cache directory, created if needed; 0 when there is none. */
static int ocl_cache_dir(char *out, size_t size) {
  const char *medley = getenv("MEDLEY_CACHE_DIR");
  const char *xdg = getenv("XDG_CACHE_HOME");
  const char *home = getenv("HOME");
  int n;
  if (medley != NULL && medley[0] != '\0') n = snprintf(out, size, "%s/opencl", medley);
  else if (xdg != NULL && xdg[0] != '\0') n = snprintf(out, size, "%s/medley/opencl", xdg);
  else if (home != NULL && home[0] != '\0') n = snprintf(out, size, "%s/.cache/medley/opencl", home);
  else return 0;
  if (n < 0 || (size_t)n >= size) return 0;
  /* mkdir -p */
  for (char *p = out + 1; *p != '\0'; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
      *p = '/';
      return 0;
    }
    *p = '/';
  }
  if (mkdir(out, 0755) != 0 && errno != EEXIST) return 0;
  return 1;
}

#define OCL_CACHE_MAGIC "MEDLEY-OPENCL-1\n" /* 16 bytes */

typedef struct ocl_cache_header {
  char magic[16];
  uint64_t key;
  uint64_t size;
  uint64_t checksum; /* FNV-1a of the binary */
} ocl_cache_header;

/* Reads a cached binary for `key`; NULL when absent or damaged. */
static unsigned char *ocl_cache_read(const char *path, uint64_t key, size_t *out_size) {
  FILE *file = fopen(path, "rb");
  if (file == NULL) return NULL;
  ocl_cache_header header;
  unsigned char *data = NULL;
  if (fread(&header, sizeof header, 1, file) == 1 && memcmp(header.magic, OCL_CACHE_MAGIC, 16) == 0 &&
      header.key == key && header.size > 0 && header.size < ((uint64_t)1 << 32)) {
    data = malloc((size_t)header.size);
    if (data != NULL && (fread(data, 1, (size_t)header.size, file) != (size_t)header.size ||
                         ocl_fnv1a(OCL_FNV_OFFSET, data, (size_t)header.size) != header.checksum)) {
      free(data);
      data = NULL;
    }
    /* Trailing bytes mean the file is not what we wrote. */
    if (data != NULL && fgetc(file) != EOF) {
      free(data);
      data = NULL;
    }
    if (data != NULL) *out_size = (size_t)header.size;
  }
  fclose(file);
  return data;
}

/* Writes the binary atomically: a temporary file in the same directory, then rename. Failures are ignored. */
static void ocl_cache_write(const char *dir, const char *path, uint64_t key, const unsigned char *data, size_t size,
                            uint32_t serial) {
  char tmp[4200];
  int n = snprintf(tmp, sizeof tmp, "%s/.tmp-%016llx-%ld-%u", dir, (unsigned long long)key, (long)getpid(),
                   (unsigned)serial);
  if (n < 0 || (size_t)n >= sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) return;
  ocl_cache_header header;
  memcpy(header.magic, OCL_CACHE_MAGIC, 16);
  header.key = key;
  header.size = size;
  header.checksum = ocl_fnv1a(OCL_FNV_OFFSET, data, size);
  int ok = 1;
  const unsigned char *parts[2] = {(const unsigned char *)&header, data};
  size_t sizes[2] = {sizeof header, size};
  for (int part = 0; part < 2 && ok; part++) {
    size_t done = 0;
    while (done < sizes[part]) {
      ssize_t w = write(fd, parts[part] + done, sizes[part] - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        ok = 0;
        break;
      }
      done += (size_t)w;
    }
  }
  if (close(fd) != 0) ok = 0;
  if (!ok || rename(tmp, path) != 0) unlink(tmp);
}

/* The first `lines` lines of a build log that mention an error (else its first lines), joined by " | ". */
static void ocl_log_excerpt(const char *log, int lines, char *out, size_t size) {
  size_t used = 0;
  out[0] = '\0';
  for (int pass = 0; pass < 2 && used == 0; pass++) {
    int taken = 0;
    const char *line = log;
    while (*line != '\0' && taken < lines) {
      const char *end = strchr(line, '\n');
      size_t length = end != NULL ? (size_t)(end - line) : strlen(line);
      char buffer[512];
      size_t copy = length < sizeof buffer - 1 ? length : sizeof buffer - 1;
      memcpy(buffer, line, copy);
      buffer[copy] = '\0';
      int blank = 1;
      for (size_t i = 0; i < copy; i++) {
        if (!isspace((unsigned char)buffer[i])) blank = 0;
      }
      if (!blank && (pass == 1 || ocl_ieq_prefix_contains(buffer, "error"))) {
        /* trim */
        char *start = buffer;
        while (isspace((unsigned char)*start)) start++;
        size_t len = strlen(start);
        while (len > 0 && isspace((unsigned char)start[len - 1])) start[--len] = '\0';
        int n = snprintf(out + used, size - used, "%s%s", used ? " | " : "", start);
        if (n < 0 || (size_t)n >= size - used) {
          used = strlen(out);
          break;
        }
        used += (size_t)n;
        taken++;
      }
      if (end == NULL) break;
      line = end + 1;
    }
  }
  if (used == 0) snprintf(out, size, "(the build log is empty)");
}

static void ocl_release_program(medley_device *device) {
  for (int k = 0; k < OCL_K_COUNT; k++) {
    if (device->kernels[k] != NULL) clReleaseKernel(device->kernels[k]);
    device->kernels[k] = NULL;
  }
  if (device->program != NULL) clReleaseProgram(device->program);
  device->program = NULL;
}

/* Creates every kernel of the program; an error names the first one missing. */
static cl_int ocl_create_kernels(medley_device *device, const char **missing) {
  for (int k = 0; k < OCL_K_COUNT; k++) {
    cl_int status = CL_SUCCESS;
    device->kernels[k] = clCreateKernel(device->program, ocl_kernel_names[k], &status);
    if (status != CL_SUCCESS || device->kernels[k] == NULL) {
      device->kernels[k] = NULL;
      *missing = ocl_kernel_names[k];
      return status != CL_SUCCESS ? status : CL_INVALID_KERNEL;
    }
    size_t wg = 0;
    if (clGetKernelWorkGroupInfo(device->kernels[k], device->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg, NULL) !=
            CL_SUCCESS ||
        wg == 0) {
      wg = device->max_wg;
    }
    device->kernel_wg[k] = wg;
  }
  return CL_SUCCESS;
}

/* Reads a whole file (kernels=PATH). */
static medley_error *ocl_read_source(const char *path, char **out) {
  FILE *file = fopen(path, "rb");
  if (file == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "opencl option kernels='%s': cannot open it: %s", path,
                    strerror(errno));
  }
  size_t capacity = 1 << 16, size = 0;
  char *text = malloc(capacity);
  while (text != NULL) {
    size_t got = fread(text + size, 1, capacity - size - 1, file);
    size += got;
    if (size + 1 < capacity) break;
    char *bigger = capacity < ((size_t)64 << 20) ? realloc(text, capacity * 2) : NULL;
    if (bigger == NULL) {
      free(text);
      text = NULL;
      break;
    }
    text = bigger;
    capacity *= 2;
  }
  int failed = ferror(file);
  fclose(file);
  if (text == NULL || failed) {
    free(text);
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "opencl option kernels='%s': cannot read it (or it is over 64 MiB)",
                    path);
  }
  text[size] = '\0';
  *out = text;
  return NULL;
}

/*
 * Builds the kernels for the device: from the cached binary when there is a
 * good one, else from source (then caches the binary). A build failure is one
 * error carrying the first error lines of the driver's log.
 */
static medley_error *ocl_build(medley_device *device, const ocl_options *opt) {
  char *loaded = NULL;
  const char *source = medley_opencl_kernels;
  if (opt->kernels != NULL) {
    medley_error *error = ocl_read_source(opt->kernels, &loaded);
    if (error != NULL) return error;
    source = loaded;
  }
  char options[2048];
  int n = snprintf(options, sizeof options,
                   "-cl-std=CL1.2 -DMEDLEY_GEMM_VECTOR=%d -DMEDLEY_TSM=%d -DMEDLEY_TSN=%d -DMEDLEY_TSK=%d "
                   "-DMEDLEY_WPTM=%d -DMEDLEY_WPTN=%d -DMEDLEY_MR=%d -DMEDLEY_NV=%d -DMEDLEY_SSQ_WG=%d%s%s%s",
                   device->gemm_vector, device->tsm, device->tsn, device->tsk, device->wptm, device->wptn, device->mr,
                   device->nv, device->ssq_wg, device->is_cpu ? " -DMEDLEY_CPU_DEVICE=1" : "", opt->build_options != NULL ? " " : "",
                   opt->build_options != NULL ? opt->build_options : "");
  if (n < 0 || (size_t)n >= sizeof options) {
    free(loaded);
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "opencl option build_options: too long (%zu characters)",
                    opt->build_options != NULL ? strlen(opt->build_options) : (size_t)0);
  }

  /* The cache key: source, options, and what identifies the compiler. */
  char dev_version[256], drv_version[256], plat_version[256];
  ocl_device_string(device->device, CL_DEVICE_VERSION, dev_version, sizeof dev_version);
  ocl_device_string(device->device, CL_DRIVER_VERSION, drv_version, sizeof drv_version);
  ocl_platform_string(device->platform, CL_PLATFORM_VERSION, plat_version, sizeof plat_version);
  const char *parts[6] = {source, options, device->name, dev_version, drv_version, plat_version};
  uint64_t key = OCL_FNV_OFFSET;
  for (int i = 0; i < 6; i++) key = ocl_fnv1a(key, parts[i], strlen(parts[i]) + 1);
  char dir[4096], path[4200];
  int cache = opt->cache && ocl_cache_dir(dir, sizeof dir);
  if (cache) {
    n = snprintf(path, sizeof path, "%s/%016llx.clbin", dir, (unsigned long long)key);
    if (n < 0 || (size_t)n >= sizeof path) cache = 0;
  }

  /* 1. A cached binary: anything wrong with it means "rebuild", never a failure. */
  if (cache) {
    size_t size = 0;
    unsigned char *binary = ocl_cache_read(path, key, &size);
    if (binary != NULL) {
      cl_int status = CL_SUCCESS, binary_status = CL_SUCCESS;
      const unsigned char *binaries[1] = {binary};
      device->program =
          clCreateProgramWithBinary(device->context, 1, &device->device, &size, binaries, &binary_status, &status);
      const char *missing = NULL;
      if (status == CL_SUCCESS && binary_status == CL_SUCCESS && device->program != NULL &&
          clBuildProgram(device->program, 1, &device->device, options, NULL, NULL) == CL_SUCCESS &&
          ocl_create_kernels(device, &missing) == CL_SUCCESS) {
        device->from_cache = 1;
      } else {
        ocl_release_program(device);
        unlink(path); /* damaged or stale: drop it, the rebuild writes a good one */
      }
      free(binary);
    }
  }

  /* 2. From source. */
  if (device->program == NULL) {
    cl_int status = CL_SUCCESS;
    device->program = clCreateProgramWithSource(device->context, 1, &source, NULL, &status);
    if (status != CL_SUCCESS || device->program == NULL) {
      device->program = NULL;
      free(loaded);
      return mk_error(MEDLEY_ERROR_INTERNAL, "opencl: clCreateProgramWithSource failed: %s", ocl_err(status).text);
    }
    status = clBuildProgram(device->program, 1, &device->device, options, NULL, NULL);
    if (status != CL_SUCCESS) {
      char excerpt[1024] = "";
      size_t log_size = 0;
      if (clGetProgramBuildInfo(device->program, device->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &log_size) ==
              CL_SUCCESS &&
          log_size > 0 && log_size < ((size_t)16 << 20)) {
        char *log = malloc(log_size + 1);
        if (log != NULL &&
            clGetProgramBuildInfo(device->program, device->device, CL_PROGRAM_BUILD_LOG, log_size, log, NULL) ==
                CL_SUCCESS) {
          log[log_size] = '\0';
          ocl_log_excerpt(log, 3, excerpt, sizeof excerpt);
        }
        free(log);
      }
      ocl_release_program(device);
      int user = opt->kernels != NULL || opt->build_options != NULL;
      medley_error *error =
          status == CL_INVALID_BUILD_OPTIONS
              ? mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                         "opencl: the compiler of '%s' refused the build options (CL_INVALID_BUILD_OPTIONS): %s",
                         device->name, options)
              : mk_error(user ? MEDLEY_ERROR_INVALID_ARGUMENT : MEDLEY_ERROR_INTERNAL,
                         "opencl: kernels%s%s%s failed to build on '%s' (%s): %s", opt->kernels ? " from '" : "",
                         opt->kernels ? opt->kernels : "", opt->kernels ? "'" : "", device->name,
                         ocl_err(status).text, excerpt[0] ? excerpt : "(no build log)");
      free(loaded);
      return error;
    }
    const char *missing = NULL;
    status = ocl_create_kernels(device, &missing);
    if (status != CL_SUCCESS) {
      ocl_release_program(device);
      free(loaded);
      return mk_error(opt->kernels != NULL ? MEDLEY_ERROR_INVALID_ARGUMENT : MEDLEY_ERROR_INTERNAL,
                      "opencl: kernel '%s' %s (clCreateKernel: %s)", missing,
                      opt->kernels != NULL ? "is missing from the kernels file" : "could not be created",
                      ocl_err(status).text);
    }
    if (cache) {
      size_t size = 0;
      if (clGetProgramInfo(device->program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) == CL_SUCCESS &&
          size > 0) {
        unsigned char *binary = malloc(size);
        unsigned char *binaries[1] = {binary};
        if (binary != NULL &&
            clGetProgramInfo(device->program, CL_PROGRAM_BINARIES, sizeof binaries, binaries, NULL) == CL_SUCCESS) {
          ocl_cache_write(dir, path, key, binary, size, device->serial);
        }
        free(binary);
      }
    }
  }
  free(loaded);
  return NULL;
}

/* ========================================================================= */
/* Open, close, describe                                                     */
/* ========================================================================= */

static size_t ocl_pow2_floor(size_t v) {
  size_t p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

/* Local-memory GEMM tiles for work-groups of at most `wg` work-items: 16x16 items (64x64 tiles), else 8x8, 4x4, 1. */
static void ocl_gemm_tiles(medley_device *device, size_t wg) {
  device->tsk = 16;
  device->wptm = device->wptn = 4;
  if (wg >= 256) device->tsm = device->tsn = 64;
  else if (wg >= 64) device->tsm = device->tsn = 32;
  else if (wg >= 16) device->tsm = device->tsn = 16;
  else device->tsm = device->tsn = device->wptm = device->wptn = 16; /* one work-item per tile */
}

static size_t ocl_gemm_group(const medley_device *device) {
  return (size_t)(device->tsm / device->wptm) * (size_t)(device->tsn / device->wptn);
}

static medley_error *ocl_device_close(medley_device *device);

static medley_error *ocl_device_open(int32_t index, const medley_option *options, size_t num_options,
                                     medley_device **out_device) {
  if (out_device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: out_device is NULL");
  *out_device = NULL;
  ocl_options opt;
  medley_error *error = ocl_parse_options(options, num_options, &opt);
  if (error != NULL) return error;
  ocl_inventory *inv = malloc(sizeof *inv);
  if (inv == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: out of host memory");
  error = ocl_inventory_load(inv, NULL);
  if (error == NULL && inv->count == 0) {
    error = mk_error(MEDLEY_ERROR_UNAVAILABLE,
                     "opencl: the %u OpenCL platform(s) here have no devices; check the driver with `clinfo -l`",
                     (unsigned)inv->num_platforms);
  }
  if (error == NULL && (index < 0 || index >= inv->count)) {
    error = mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: device index %d does not exist (there are %d)",
                     (int)index, inv->count);
  }
  ocl_entry entry;
  if (error == NULL) error = ocl_select(inv, index, &opt, &entry);
  free(inv);
  if (error != NULL) return error;

  medley_device *device = calloc(1, sizeof *device);
  if (device == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: out of host memory");
  device->serial = __atomic_fetch_add(&ocl_next_serial, 1, __ATOMIC_RELAXED);
  device->platform = entry.platform;
  device->device = entry.device;
  ocl_device_string(entry.device, CL_DEVICE_NAME, device->name, sizeof device->name);
  ocl_device_string(entry.device, CL_DEVICE_VENDOR, device->vendor, sizeof device->vendor);
  if (device->name[0] == '\0') snprintf(device->name, sizeof device->name, "opencl-device");
  cl_ulong global = 0, max_alloc = 0;
  cl_uint units = 0;
  size_t max_wg = 0;
  clGetDeviceInfo(entry.device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global, NULL);
  clGetDeviceInfo(entry.device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
  clGetDeviceInfo(entry.device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
  clGetDeviceInfo(entry.device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
  if (global == 0) global = (cl_ulong)1 << 30;
  if (max_alloc == 0) max_alloc = global / 4;
  if (max_wg == 0) max_wg = 1;
  device->capacity = opt.memory != 0 && opt.memory < global ? opt.memory : global;
  device->max_alloc = max_alloc;
  device->compute_units = units;
  device->max_wg = max_wg;

  /* GEMM geometry: register vectors on CPU devices, local-memory tiles elsewhere. */
  device->is_cpu = (entry.type & CL_DEVICE_TYPE_CPU) != 0;
  device->gemm_vector = opt.gemm >= 0 ? opt.gemm : device->is_cpu;
  device->mr = 8;
  device->nv = 2;
  ocl_gemm_tiles(device, max_wg);
  device->ssq_wg = (int)ocl_pow2_floor(max_wg < 256 ? max_wg : 256);

  cl_int status = CL_SUCCESS;
  cl_context_properties props[3] = {CL_CONTEXT_PLATFORM, (cl_context_properties)entry.platform, 0};
  device->context = clCreateContext(props, 1, &entry.device, NULL, NULL, &status);
  if (status != CL_SUCCESS || device->context == NULL) {
    device->context = NULL;
    free(device);
    return mk_error(ocl_status_code(status) == MEDLEY_ERROR_OUT_OF_MEMORY ? MEDLEY_ERROR_OUT_OF_MEMORY
                                                                          : MEDLEY_ERROR_UNAVAILABLE,
                    "opencl: cannot create a context on '%s' (clCreateContext: %s)", device->name,
                    ocl_err(status).text);
  }
  device->magic = OCL_DEVICE_MAGIC;
  device->streams[0].live = 1;
  device->streams[0].queue = clCreateCommandQueue(device->context, entry.device, 0, &status);
  if (status == CL_SUCCESS) device->service = clCreateCommandQueue(device->context, entry.device, 0, &status);
  if (status != CL_SUCCESS) {
    error = mk_error(MEDLEY_ERROR_UNAVAILABLE, "opencl: cannot create a command queue on '%s' (%s)", device->name,
                     ocl_err(status).text);
    mk_error_free(ocl_device_close(device));
    return error;
  }
  error = ocl_build(device, &opt);
  /* A driver may run fewer work-items of the tiled GEMM than the device maximum (registers): smaller tiles then. */
  for (int retry = 0; error == NULL && !device->gemm_vector && retry < 3; retry++) {
    size_t wg = device->kernel_wg[OCL_K_gemm_nn];
    if (device->kernel_wg[OCL_K_gemm_nt] < wg) wg = device->kernel_wg[OCL_K_gemm_nt];
    if (device->kernel_wg[OCL_K_gemm_tn] < wg) wg = device->kernel_wg[OCL_K_gemm_tn];
    if (wg >= ocl_gemm_group(device) || ocl_gemm_group(device) == 1) break;
    ocl_release_program(device);
    ocl_gemm_tiles(device, wg);
    error = ocl_build(device, &opt);
  }
  if (error != NULL) {
    mk_error_free(ocl_device_close(device));
    return error;
  }
  *out_device = device;
  return NULL;
}

static medley_error *ocl_device_close(medley_device *device) {
  medley_error *error = ocl_check(device, "device_close");
  if (error != NULL) return error;
  for (int s = 0; s < OCL_MAX_STREAMS; s++) ocl_stream_release(&device->streams[s]);
  if (device->service != NULL) {
    clFinish(device->service);
    clReleaseCommandQueue(device->service);
  }
  for (uint32_t i = 0; i < device->num_slots; i++) {
    if (device->slots[i].live && device->slots[i].mem != NULL) clReleaseMemObject(device->slots[i].mem);
  }
  free(device->slots);
  ocl_release_program(device);
  if (device->context != NULL) clReleaseContext(device->context);
  device->magic = 0;
  free(device);
  return NULL;
}

static medley_error *ocl_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = ocl_check(device, "device_describe");
  if (error != NULL) return error;
  uint32_t dtypes = OCL_FLOAT_DTYPES | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32);
  return mk_describe(out, device->name, device->vendor[0] ? device->vendor : "unknown", device->capacity, dtypes,
                     device->compute_units);
}

/* ========================================================================= */
/* Memory                                                                    */
/* ========================================================================= */

static medley_error *ocl_buffer_alloc(medley_device *device, uint64_t bytes, medley_buffer **out_buffer) {
  medley_error *error = ocl_check(device, "buffer_alloc");
  if (error != NULL) return error;
  if (out_buffer == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "buffer_alloc: out_buffer is NULL");
  *out_buffer = NULL;
  if (bytes == 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "buffer_alloc: size is 0 bytes");
  if (bytes > device->max_alloc || bytes > (uint64_t)SIZE_MAX) {
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY,
                    "buffer_alloc: %llu bytes exceed the largest single buffer '%s' allows "
                    "(CL_DEVICE_MAX_MEM_ALLOC_SIZE = %llu bytes)",
                    (unsigned long long)bytes, device->name, (unsigned long long)device->max_alloc);
  }
  uint64_t free_bytes = device->capacity - device->used;
  if (bytes > free_bytes) {
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "buffer_alloc: %llu bytes requested but only %llu of %llu bytes are free",
                    (unsigned long long)bytes, (unsigned long long)free_bytes, (unsigned long long)device->capacity);
  }
  uint32_t slot = 0;
  while (slot < device->num_slots && device->slots[slot].live) slot++;
  if (slot == device->num_slots) {
    if (slot == OCL_MAX_SLOTS) {
      return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "buffer_alloc: all %u buffer handles are in use", OCL_MAX_SLOTS);
    }
    if (device->num_slots == device->cap_slots) {
      uint32_t capacity = device->cap_slots == 0 ? 64 : device->cap_slots * 2;
      ocl_slot *slots = realloc(device->slots, capacity * sizeof *slots);
      if (slots == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "buffer_alloc: out of host memory");
      device->slots = slots;
      device->cap_slots = capacity;
    }
    device->slots[slot].generation = 0;
    device->slots[slot].live = 0;
    device->slots[slot].mem = NULL;
    device->num_slots++;
  }
  cl_int status = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(device->context, CL_MEM_READ_WRITE, (size_t)bytes, NULL, &status);
  if (status == CL_SUCCESS && mem != NULL) {
    /* Drivers allocate lazily: touch one byte so that a failure shows here, not in a later launch. */
    cl_uchar zero = 0;
    status = clEnqueueFillBuffer(device->service, mem, &zero, 1, 0, 1, 0, NULL, NULL);
    if (status == CL_SUCCESS) status = clFinish(device->service);
  }
  if (status != CL_SUCCESS || mem == NULL) {
    if (mem != NULL) clReleaseMemObject(mem);
    int32_t code = ocl_status_code(status);
    return mk_error(code == MEDLEY_ERROR_INTERNAL ? MEDLEY_ERROR_OUT_OF_MEMORY : code,
                    "buffer_alloc: %llu bytes on '%s' failed: %s", (unsigned long long)bytes, device->name,
                    ocl_err(status).text);
  }
  ocl_slot *s = &device->slots[slot];
  s->mem = mem;
  s->bytes = bytes;
  s->live = 1;
  device->used += bytes;
  *out_buffer = (medley_buffer *)(uintptr_t)ocl_handle(OCL_TAG_BUFFER, device->serial, s->generation, slot);
  return NULL;
}

static medley_error *ocl_buffer_free(medley_device *device, medley_buffer *buffer) {
  medley_error *error = ocl_check(device, "buffer_free");
  if (error != NULL) return error;
  if (buffer == NULL) return NULL;
  ocl_slot *slot = NULL;
  error = ocl_lookup_buffer(device, buffer, "buffer_free", &slot);
  if (error != NULL) return error;
  /* OpenCL keeps the memory until the commands queued on it have finished. */
  clReleaseMemObject(slot->mem);
  slot->mem = NULL;
  slot->live = 0;
  slot->generation++;
  device->used -= slot->bytes;
  slot->bytes = 0;
  return NULL;
}

/* ========================================================================= */
/* Copies and fills                                                          */
/* ========================================================================= */

static medley_error *ocl_copy_h2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                  uint64_t dst_offset, const void *src, uint64_t bytes) {
  ocl_stream *queue = NULL;
  medley_error *error = ocl_queue_for(device, stream, "copy_h2d", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = ocl_memory_ops(device);
  error = mk_check_range(&ops, dst, dst_offset, bytes, "copy_h2d destination");
  if (error != NULL) return error;
  if (src == NULL && bytes > 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "copy_h2d: source is NULL");
  if (queue->faulted) return ocl_sticky(queue);
  if (bytes == 0) return NULL;
  cl_mem mem = ocl_mem(device, dst);
  cl_event event = NULL;
  cl_int status;
  void *staged = bytes <= OCL_STAGE_LIMIT ? malloc((size_t)bytes) : NULL;
  if (staged != NULL) {
    /* The host may reuse `src` at once: queue the copy from a staged copy, freed at the next
       synchronize (once the copy has run). */
    memcpy(staged, src, (size_t)bytes);
    status = clEnqueueWriteBuffer(queue->queue, mem, CL_FALSE, (size_t)dst_offset, (size_t)bytes, staged, 0, NULL,
                                  &event);
    if (status != CL_SUCCESS) {
      free(staged);
      return ocl_fault_cl(queue, status, "copy_h2d", "clEnqueueWriteBuffer");
    }
    return ocl_track_staged(queue, event, "copy_h2d", staged, bytes);
  } else {
    status = clEnqueueWriteBuffer(queue->queue, mem, CL_TRUE, (size_t)dst_offset, (size_t)bytes, src, 0, NULL, &event);
    if (status != CL_SUCCESS) {
      if (event != NULL) clReleaseEvent(event);
      return ocl_fault_cl(queue, status, "copy_h2d", "clEnqueueWriteBuffer (blocking)");
    }
  }
  return ocl_track(queue, event, "copy_h2d");
}

static medley_error *ocl_copy_d2h(medley_device *device, medley_stream *stream, void *dst, medley_buffer *src,
                                  uint64_t src_offset, uint64_t bytes) {
  ocl_stream *queue = NULL;
  medley_error *error = ocl_queue_for(device, stream, "copy_d2h", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = ocl_memory_ops(device);
  error = mk_check_range(&ops, src, src_offset, bytes, "copy_d2h source");
  if (error != NULL) return error;
  if (dst == NULL && bytes > 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "copy_d2h: destination is NULL");
  if (queue->faulted) return ocl_sticky(queue);
  if (bytes == 0) return NULL;
  cl_event event = NULL;
  cl_int status = clEnqueueReadBuffer(queue->queue, ocl_mem(device, src), CL_FALSE, (size_t)src_offset,
                                      (size_t)bytes, dst, 0, NULL, &event);
  if (status != CL_SUCCESS) return ocl_fault_cl(queue, status, "copy_d2h", "clEnqueueReadBuffer");
  return ocl_track(queue, event, "copy_d2h");
}

static medley_error *ocl_copy_d2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                  uint64_t dst_offset, medley_buffer *src, uint64_t src_offset, uint64_t bytes) {
  ocl_stream *queue = NULL;
  medley_error *error = ocl_queue_for(device, stream, "copy_d2d", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = ocl_memory_ops(device);
  error = mk_check_range(&ops, dst, dst_offset, bytes, "copy_d2d destination");
  if (error == NULL) error = mk_check_range(&ops, src, src_offset, bytes, "copy_d2d source");
  if (error != NULL) return error;
  if (queue->faulted) return ocl_sticky(queue);
  if (bytes == 0) return NULL;
  cl_mem d = ocl_mem(device, dst), s = ocl_mem(device, src);
  if (d == s && src_offset == dst_offset) return NULL;
  cl_event event = NULL;
  cl_int status;
  if (d == s && src_offset < dst_offset + bytes && dst_offset < src_offset + bytes) {
    /* Overlapping ranges of one buffer (OpenCL forbids them in one copy): through a temporary buffer. */
    cl_mem tmp = clCreateBuffer(device->context, CL_MEM_READ_WRITE, (size_t)bytes, NULL, &status);
    if (status != CL_SUCCESS || tmp == NULL) {
      return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "copy_d2d: no room for a %llu-byte staging buffer (%s)",
                      (unsigned long long)bytes, ocl_err(status).text);
    }
    status = clEnqueueCopyBuffer(queue->queue, s, tmp, (size_t)src_offset, 0, (size_t)bytes, 0, NULL, &event);
    if (status == CL_SUCCESS) {
      error = ocl_track(queue, event, "copy_d2d");
      event = NULL;
      if (error == NULL) {
        status = clEnqueueCopyBuffer(queue->queue, tmp, d, 0, (size_t)dst_offset, (size_t)bytes, 0, NULL, &event);
      }
    }
    clReleaseMemObject(tmp); /* freed once the copies are done */
    if (error != NULL) return error;
  } else {
    status = clEnqueueCopyBuffer(queue->queue, s, d, (size_t)src_offset, (size_t)dst_offset, (size_t)bytes, 0, NULL,
                                 &event);
  }
  if (status != CL_SUCCESS) return ocl_fault_cl(queue, status, "copy_d2d", "clEnqueueCopyBuffer");
  return ocl_track(queue, event, "copy_d2d");
}

static medley_error *ocl_memset(medley_device *device, medley_stream *stream, medley_buffer *dst, uint64_t offset,
                                uint8_t value, uint64_t bytes) {
  ocl_stream *queue = NULL;
  medley_error *error = ocl_queue_for(device, stream, "memset", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = ocl_memory_ops(device);
  error = mk_check_range(&ops, dst, offset, bytes, "memset");
  if (error != NULL) return error;
  if (queue->faulted) return ocl_sticky(queue);
  if (bytes == 0) return NULL;
  /* A 4-byte pattern where offset and size allow it, else a 1-byte one (any offset, any size). */
  cl_uint word = value * 0x01010101u;
  size_t pattern = offset % 4 == 0 && bytes % 4 == 0 ? 4 : 1;
  cl_event event = NULL;
  cl_int status = clEnqueueFillBuffer(queue->queue, ocl_mem(device, dst), &word, pattern, (size_t)offset,
                                      (size_t)bytes, 0, NULL, &event);
  if (status != CL_SUCCESS) return ocl_fault_cl(queue, status, "memset", "clEnqueueFillBuffer");
  return ocl_track(queue, event, "memset");
}

/* ========================================================================= */
/* Streams                                                                   */
/* ========================================================================= */

static medley_error *ocl_stream_create(medley_device *device, medley_stream **out_stream) {
  medley_error *error = ocl_check(device, "stream_create");
  if (error != NULL) return error;
  if (out_stream == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_create: out_stream is NULL");
  *out_stream = NULL;
  for (uint32_t slot = 1; slot < OCL_MAX_STREAMS; slot++) {
    ocl_stream *stream = &device->streams[slot];
    if (stream->live) continue;
    cl_int status = CL_SUCCESS;
    cl_command_queue queue = clCreateCommandQueue(device->context, device->device, 0, &status);
    if (status != CL_SUCCESS || queue == NULL) {
      return mk_error(ocl_status_code(status) == MEDLEY_ERROR_OUT_OF_MEMORY ? MEDLEY_ERROR_OUT_OF_MEMORY
                                                                            : MEDLEY_ERROR_UNAVAILABLE,
                      "stream_create: clCreateCommandQueue failed: %s", ocl_err(status).text);
    }
    uint32_t generation = stream->generation;
    memset(stream, 0, sizeof *stream);
    stream->live = 1;
    stream->generation = generation;
    stream->queue = queue;
    *out_stream = (medley_stream *)(uintptr_t)ocl_handle(OCL_TAG_STREAM, device->serial, generation, slot);
    return NULL;
  }
  return mk_error(MEDLEY_ERROR_UNAVAILABLE, "stream_create: all %d streams of this device are in use",
                  OCL_MAX_STREAMS - 1);
}

static medley_error *ocl_stream_destroy(medley_device *device, medley_stream *stream) {
  medley_error *error = ocl_check(device, "stream_destroy");
  if (error != NULL) return error;
  if (stream == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_destroy: the default stream (NULL) cannot be destroyed");
  }
  ocl_stream *queue = NULL;
  error = ocl_lookup_stream(device, stream, "stream_destroy", &queue);
  if (error != NULL) return error;
  mk_error_free(ocl_finish(queue));
  ocl_stream_release(queue);
  queue->live = 0;
  queue->faulted = 0;
  queue->generation++;
  return NULL;
}

static medley_error *ocl_stream_synchronize(medley_device *device, medley_stream *stream) {
  ocl_stream *queue = NULL;
  medley_error *error = ocl_queue_for(device, stream, "stream_synchronize", &queue);
  if (error != NULL) return error;
  return ocl_finish(queue);
}

/* ========================================================================= */
/* Kernel launches                                                           */
/* ========================================================================= */

typedef struct ocl_launch {
  medley_device *device;
  ocl_stream *stream;
  const char *op; /* static: the op name, for messages and event labels */
  ocl_kernel_id id;
  cl_kernel kernel;
  cl_uint arg;
  cl_int status;
} ocl_launch;

static void la_begin(ocl_launch *l, medley_device *device, ocl_stream *stream, const char *op, ocl_kernel_id id) {
  l->device = device;
  l->stream = stream;
  l->op = op;
  l->id = id;
  l->kernel = device->kernels[id];
  l->arg = 0;
  l->status = CL_SUCCESS;
}

static void la_raw(ocl_launch *l, size_t size, const void *value) {
  if (l->status == CL_SUCCESS) l->status = clSetKernelArg(l->kernel, l->arg, size, value);
  l->arg++;
}
static void la_mem(ocl_launch *l, cl_mem mem) { la_raw(l, sizeof mem, &mem); }
static void la_u64(ocl_launch *l, uint64_t v) {
  cl_ulong x = v;
  la_raw(l, sizeof x, &x);
}
static void la_i32(ocl_launch *l, int64_t v) {
  cl_int x = (cl_int)v;
  la_raw(l, sizeof x, &x);
}
static void la_f32(ocl_launch *l, double v) {
  cl_float x = (cl_float)v;
  la_raw(l, sizeof x, &x);
}
/* A tensor: its buffer and its element offset. */
static void la_tensor(ocl_launch *l, const mk_tensor_ref *ref) {
  la_mem(l, ocl_mem(l->device, ref->buffer));
  la_u64(l, ref->offset / 4);
}
static void la_scratch(ocl_launch *l, cl_mem mem) {
  la_mem(l, mem);
  la_u64(l, 0);
}

static size_t ocl_round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

/* Queues the kernel over `global` (rounded up to `local`; local NULL: the driver picks). */
static medley_error *la_run(ocl_launch *l, cl_uint dims, const size_t *global, const size_t *local) {
  if (l->status != CL_SUCCESS) {
    return mk_error(MEDLEY_ERROR_INTERNAL, "%s: clSetKernelArg(%s, %u) failed: %s", l->op, ocl_kernel_names[l->id],
                    (unsigned)(l->arg - 1), ocl_err(l->status).text);
  }
  size_t rounded[3];
  for (cl_uint d = 0; d < dims; d++) rounded[d] = local != NULL ? ocl_round_up(global[d], local[d]) : global[d];
  cl_event event = NULL;
  cl_int status =
      clEnqueueNDRangeKernel(l->stream->queue, l->kernel, dims, NULL, rounded, local, 0, NULL, &event);
  if (status != CL_SUCCESS) {
    char call[96];
    snprintf(call, sizeof call, "clEnqueueNDRangeKernel(%s)", ocl_kernel_names[l->id]);
    return ocl_fault_cl(l->stream, status, l->op, call);
  }
  return ocl_track(l->stream, event, l->op);
}

/* 1-D over n items, in groups of `group` (at most the kernel's limit). */
static medley_error *la_run1(ocl_launch *l, uint64_t n, size_t group) {
  size_t wg = l->device->kernel_wg[l->id];
  if (group > wg) group = ocl_pow2_floor(wg);
  size_t global = (size_t)n, local = group;
  return la_run(l, 1, &global, &local);
}

/* 1-D over n independent elements. A CPU runtime runs a group as a loop and
   pays per group, so there the driver sizes the groups (the global size is
   exact, no rounding); elsewhere groups of 256. */
static medley_error *la_run_elems(ocl_launch *l, uint64_t n) {
  if (l->device->is_cpu) {
    size_t global = (size_t)n;
    return la_run(l, 1, &global, NULL);
  }
  return la_run1(l, n, 256);
}

/* 2-D over x * y items, groups of up to `group` along x. */
static medley_error *la_run2(ocl_launch *l, uint64_t x, uint64_t y, size_t group) {
  size_t wg = l->device->kernel_wg[l->id];
  if (group > wg) group = ocl_pow2_floor(wg);
  while (group > 1 && group / 2 >= x) group /= 2; /* do not launch mostly idle groups on narrow rows */
  size_t global[2] = {(size_t)x, (size_t)y}, local[2] = {group, 1};
  return la_run(l, 2, global, local);
}

/* Work-items of a column kernel over `channels` (COL16 in the kernels: 16 channels each on CPU devices). */
static uint64_t ocl_columns(const medley_device *device, int64_t channels) {
  return device->is_cpu && channels % 16 == 0 ? (uint64_t)(channels / 16) : (uint64_t)channels;
}

/* A stream's scratch buffer of at least `bytes`. */
static medley_error *ocl_scratch(medley_device *device, ocl_stream *stream, size_t bytes, const char *op,
                                 cl_mem *out) {
  if (stream->scratch_bytes < bytes) {
    if (stream->scratch != NULL) clReleaseMemObject(stream->scratch); /* kept alive by queued work */
    stream->scratch = NULL;
    stream->scratch_bytes = 0;
    cl_int status = CL_SUCCESS;
    cl_mem mem = clCreateBuffer(device->context, CL_MEM_READ_WRITE, bytes, NULL, &status);
    if (status != CL_SUCCESS || mem == NULL) {
      return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "%s: no room for %zu bytes of scratch on '%s' (%s)", op, bytes,
                      device->name, ocl_err(status).text);
    }
    stream->scratch = mem;
    stream->scratch_bytes = bytes;
  }
  *out = stream->scratch;
  return NULL;
}

/* One operand of a GEMM: a tensor, or scratch memory at element 0. */
typedef struct ocl_operand {
  cl_mem mem;
  uint64_t offset; /* elements */
  int ld;
} ocl_operand;

static ocl_operand ocl_op_tensor(medley_device *device, const mk_tensor_ref *ref, int64_t ld) {
  ocl_operand o = {ocl_mem(device, ref->buffer), ref->offset / 4, (int)ld};
  return o;
}

/*
 * C[M,N] = op(A)·op(B) (+ bias) (+ C): gemm_nn / gemm_nt / gemm_tn. The
 * vector variant has no transposed-B kernel: op(B) is transposed into the
 * stream's scratch first.
 */
static medley_error *ocl_gemm(medley_device *device, ocl_stream *stream, const char *op, int ta, int tb, int64_t M,
                              int64_t N, int64_t K, ocl_operand A, ocl_operand B, ocl_operand C, const cl_mem bias,
                              uint64_t bias_offset, int accumulate) {
  ocl_launch l;
  medley_error *error = NULL;
  if (device->gemm_vector && tb) {
    cl_mem scratch = NULL;
    error = ocl_scratch(device, stream, (size_t)(K * N) * sizeof(float), op, &scratch);
    if (error != NULL) return error;
    la_begin(&l, device, stream, op, OCL_K_transpose);
    la_scratch(&l, scratch);
    la_mem(&l, B.mem);
    la_u64(&l, B.offset);
    la_i32(&l, K);
    la_i32(&l, N);
    la_i32(&l, B.ld);
    size_t blocks[2] = {(size_t)((K + 15) / 16), (size_t)((N + 15) / 16)};
    error = la_run(&l, 2, blocks, NULL);
    if (error != NULL) return error;
    B.mem = scratch;
    B.offset = 0;
    B.ld = (int)N;
    tb = 0;
  }
  ocl_kernel_id id = ta ? OCL_K_gemm_tn : tb ? OCL_K_gemm_nt : OCL_K_gemm_nn;
  la_begin(&l, device, stream, op, id);
  la_i32(&l, M);
  la_i32(&l, N);
  la_i32(&l, K);
  la_mem(&l, A.mem);
  la_u64(&l, A.offset);
  la_i32(&l, A.ld);
  la_mem(&l, B.mem);
  la_u64(&l, B.offset);
  la_i32(&l, B.ld);
  la_mem(&l, C.mem);
  la_u64(&l, C.offset);
  la_i32(&l, C.ld);
  la_mem(&l, bias != NULL ? bias : C.mem);
  la_u64(&l, bias != NULL ? bias_offset : 0);
  la_i32(&l, bias != NULL);
  la_i32(&l, accumulate);
  if (device->gemm_vector) {
    int cols = 16 * device->nv;
    size_t global[2] = {(size_t)((M + device->mr - 1) / device->mr), (size_t)((N + cols - 1) / cols)};
    return la_run(&l, 2, global, NULL);
  }
  size_t local[2] = {(size_t)(device->tsn / device->wptn), (size_t)(device->tsm / device->wptm)};
  size_t global[2] = {(size_t)((N + device->tsn - 1) / device->tsn) * local[0],
                      (size_t)((M + device->tsm - 1) / device->tsm) * local[1]};
  return la_run(&l, 2, global, local);
}

/* The checked launch queued as kernels. */
static medley_error *ocl_run(medley_device *device, ocl_stream *stream, const mk_op_args *a) {
  const char *op = mk_op_name(a->op);
  const mk_tensor_ref *in = a->in_ref, *out = a->out_ref;
  ocl_launch l;
  medley_error *error = NULL;
  /* The kernels index with int where a dimension is a row length or a count of rows per head. */
  if (a->C > INT_MAX / 4 || a->OC > INT_MAX / 4 || a->V > INT_MAX || a->T > INT_MAX || a->B > INT_MAX ||
      a->N > INT_MAX || a->N * (a->C > a->OC ? a->C : a->OC) > (int64_t)1 << 40) {
    return mk_error(MEDLEY_ERROR_UNSUPPORTED, "%s: dimensions this large are not supported by the opencl adapter", op);
  }
  switch (a->op) {
    case MK_OP_encoder_forward:
      la_begin(&l, device, stream, op, OCL_K_encoder_forward);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &in[0]);
      la_tensor(&l, &in[1]);
      la_tensor(&l, &in[2]);
      la_i32(&l, a->T);
      la_i32(&l, a->C);
      la_u64(&l, (uint64_t)(a->B * a->T));
      return la_run2(&l, ocl_columns(device, a->C), (uint64_t)(a->B * a->T), 64);

    case MK_OP_encoder_backward:
      la_begin(&l, device, stream, op, OCL_K_encoder_backward_wte);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &in[0]);
      la_tensor(&l, &in[1]);
      la_i32(&l, a->C);
      la_u64(&l, (uint64_t)(a->B * a->T));
      error = la_run1(&l, ocl_columns(device, a->C), 64);
      if (error != NULL) return error;
      la_begin(&l, device, stream, op, OCL_K_encoder_backward_wpe);
      la_tensor(&l, &out[1]);
      la_tensor(&l, &in[0]);
      la_i32(&l, a->B);
      la_i32(&l, a->T);
      la_i32(&l, a->C);
      return la_run2(&l, ocl_columns(device, a->C), (uint64_t)a->T, 64);

    case MK_OP_layernorm_forward:
      la_begin(&l, device, stream, op, OCL_K_layernorm_forward);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &out[1]);
      la_tensor(&l, &out[2]);
      la_tensor(&l, &in[0]);
      la_tensor(&l, &in[1]);
      la_tensor(&l, &in[2]);
      la_u64(&l, (uint64_t)a->N);
      la_i32(&l, a->C);
      la_f32(&l, a->eps);
      return la_run1(&l, (uint64_t)a->N, 64);

    case MK_OP_layernorm_backward:
      la_begin(&l, device, stream, op, OCL_K_layernorm_backward_dx);
      la_tensor(&l, &out[0]);
      for (int i = 0; i < 5; i++) la_tensor(&l, &in[i]); /* dout, x, weight, mean, rstd */
      la_u64(&l, (uint64_t)a->N);
      la_i32(&l, a->C);
      error = la_run1(&l, (uint64_t)a->N, 64);
      if (error != NULL) return error;
      la_begin(&l, device, stream, op, OCL_K_layernorm_backward_dwb);
      la_tensor(&l, &out[1]);
      la_tensor(&l, &out[2]);
      la_tensor(&l, &in[0]); /* dout */
      la_tensor(&l, &in[1]); /* x */
      la_tensor(&l, &in[3]); /* mean */
      la_tensor(&l, &in[4]); /* rstd */
      la_u64(&l, (uint64_t)a->N);
      la_i32(&l, a->C);
      return la_run1(&l, ocl_columns(device, a->C), 64);

    case MK_OP_matmul_forward: {
      /* out[N,OC] = x[N,C] · W[OC,C]ᵀ + bias */
      ocl_operand x = ocl_op_tensor(device, &in[0], a->C);
      ocl_operand w = ocl_op_tensor(device, &in[1], a->C);
      ocl_operand o = ocl_op_tensor(device, &out[0], a->OC);
      return ocl_gemm(device, stream, op, 0, 1, a->N, a->OC, a->C, x, w, o,
                      a->has_bias ? ocl_mem(device, in[2].buffer) : NULL, a->has_bias ? in[2].offset / 4 : 0, 0);
    }

    case MK_OP_matmul_backward: {
      ocl_operand dout = ocl_op_tensor(device, &in[0], a->OC);
      ocl_operand x = ocl_op_tensor(device, &in[1], a->C);
      ocl_operand w = ocl_op_tensor(device, &in[2], a->C);
      /* dx[N,C] += dout[N,OC] · W[OC,C] */
      error = ocl_gemm(device, stream, op, 0, 0, a->N, a->C, a->OC, dout, w, ocl_op_tensor(device, &out[0], a->C),
                       NULL, 0, 1);
      if (error != NULL) return error;
      /* dW[OC,C] += dout[N,OC]ᵀ · x[N,C] */
      error = ocl_gemm(device, stream, op, 1, 0, a->OC, a->C, a->N, dout, x, ocl_op_tensor(device, &out[1], a->C),
                       NULL, 0, 1);
      if (error != NULL || !a->has_bias) return error;
      la_begin(&l, device, stream, op, OCL_K_column_sums);
      la_tensor(&l, &out[2]);
      la_tensor(&l, &in[0]);
      la_u64(&l, (uint64_t)a->N);
      la_i32(&l, a->OC);
      return la_run1(&l, ocl_columns(device, a->OC), 64);
    }

    case MK_OP_attention_forward:
    case MK_OP_attention_backward: {
      const int64_t hs = a->C / a->NH;
      const double scale = 1.0 / sqrt((double)hs);
      /* On CPU devices, head sizes 16, 32, ..., 128 take the float16 kernels (on a GPU their
         private float16 arrays would spill registers; the scalar kernels suit it better). */
      const int vec = device->is_cpu && hs % 16 == 0 && hs <= 16 * 8;
      if (a->op == MK_OP_attention_forward) {
        la_begin(&l, device, stream, op, vec ? OCL_K_attention_forward_v : OCL_K_attention_forward);
        la_tensor(&l, &out[0]);
        la_tensor(&l, &out[1]);
        la_tensor(&l, &in[0]);
        la_i32(&l, a->B);
        la_i32(&l, a->T);
        la_i32(&l, a->C);
        la_i32(&l, a->NH);
        la_f32(&l, scale);
        return la_run2(&l, (uint64_t)a->T, (uint64_t)(a->B * a->NH), 32);
      }
      /* D[b,h,t] = dout[t] . out[t] into scratch, then dq, then dk and dv. */
      cl_mem D = NULL;
      error = ocl_scratch(device, stream, (size_t)(a->B * a->NH * a->T) * sizeof(float), op, &D);
      if (error != NULL) return error;
      la_begin(&l, device, stream, op, OCL_K_attention_backward_D);
      la_scratch(&l, D);
      la_tensor(&l, &in[0]);
      la_tensor(&l, &in[2]);
      la_i32(&l, a->B);
      la_i32(&l, a->T);
      la_i32(&l, a->C);
      la_i32(&l, a->NH);
      error = la_run2(&l, (uint64_t)a->T, (uint64_t)(a->B * a->NH), 64);
      if (error != NULL) return error;
      for (int pass = 0; pass < 2; pass++) {
        ocl_kernel_id id = pass == 0 ? (vec ? OCL_K_attention_backward_dq_v : OCL_K_attention_backward_dq)
                                     : (vec ? OCL_K_attention_backward_dkv_v : OCL_K_attention_backward_dkv);
        la_begin(&l, device, stream, op, id);
        la_tensor(&l, &out[0]); /* dqkv */
        la_tensor(&l, &in[0]);  /* dout */
        la_tensor(&l, &in[1]);  /* qkv */
        la_tensor(&l, &in[3]);  /* lse */
        la_scratch(&l, D);
        la_i32(&l, a->B);
        la_i32(&l, a->T);
        la_i32(&l, a->C);
        la_i32(&l, a->NH);
        la_f32(&l, scale);
        error = la_run2(&l, (uint64_t)a->T, (uint64_t)(a->B * a->NH), 32);
        if (error != NULL) return error;
      }
      return NULL;
    }

    case MK_OP_gelu_forward:
      la_begin(&l, device, stream, op, OCL_K_gelu_forward);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &in[0]);
      la_u64(&l, (uint64_t)a->n);
      return la_run_elems(&l, (uint64_t)a->n);

    case MK_OP_gelu_backward:
      la_begin(&l, device, stream, op, OCL_K_gelu_backward);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &in[0]);
      la_tensor(&l, &in[1]);
      la_u64(&l, (uint64_t)a->n);
      return la_run_elems(&l, (uint64_t)a->n);

    case MK_OP_residual_forward:
      la_begin(&l, device, stream, op, OCL_K_residual_forward);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &in[0]);
      la_tensor(&l, &in[1]);
      la_u64(&l, (uint64_t)a->n);
      return la_run_elems(&l, (uint64_t)a->n);

    case MK_OP_residual_backward:
      la_begin(&l, device, stream, op, OCL_K_residual_backward);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &out[1]);
      la_tensor(&l, &in[0]);
      la_u64(&l, (uint64_t)a->n);
      return la_run_elems(&l, (uint64_t)a->n);

    case MK_OP_scale:
      la_begin(&l, device, stream, op, OCL_K_scale_kernel);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &in[0]);
      la_u64(&l, (uint64_t)a->n);
      la_f32(&l, a->alpha);
      return la_run_elems(&l, (uint64_t)a->n);

    case MK_OP_crossentropy_forward:
      la_begin(&l, device, stream, op, OCL_K_crossentropy_forward);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &out[1]);
      la_tensor(&l, &in[0]);
      la_tensor(&l, &in[1]);
      la_u64(&l, (uint64_t)a->N);
      la_i32(&l, a->V);
      return la_run1(&l, (uint64_t)a->N, 64);

    case MK_OP_crossentropy_backward:
      la_begin(&l, device, stream, op, OCL_K_crossentropy_backward);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &in[0]);
      la_tensor(&l, &in[1]);
      la_tensor(&l, &in[2]);
      la_u64(&l, (uint64_t)a->N);
      la_i32(&l, a->V);
      la_f32(&l, a->scale);
      return la_run2(&l, ocl_columns(device, a->V), (uint64_t)a->N, 256);

    case MK_OP_adamw_update: {
      double c1 = 1.0 / (1.0 - pow(a->beta1, a->step));
      double c2 = 1.0 / (1.0 - pow(a->beta2, a->step));
      la_begin(&l, device, stream, op, OCL_K_adamw_update);
      la_tensor(&l, &out[0]);
      la_tensor(&l, &out[1]);
      la_tensor(&l, &out[2]);
      la_tensor(&l, &in[0]);
      la_u64(&l, (uint64_t)a->n);
      la_f32(&l, a->lr);
      la_f32(&l, a->beta1);
      la_f32(&l, a->beta2);
      la_f32(&l, a->eps);
      la_f32(&l, a->weight_decay);
      la_f32(&l, c1);
      la_f32(&l, c2);
      la_f32(&l, a->grad_scale);
      return la_run_elems(&l, (uint64_t)a->n);
    }

    case MK_OP_sum_squares: {
      /* Pass 1: P partial sums (8 bytes each) into scratch; pass 2: one group adds them up. */
      uint64_t P, chunk = 0;
      size_t local1 = 0;
      if (device->is_cpu) {
        P = (uint64_t)(device->compute_units > 0 ? device->compute_units : 1) * 8;
        chunk = ((uint64_t)a->n + P - 1) / P;
        chunk = (chunk + 15) / 16 * 16;
      } else {
        local1 = 256;
        if (local1 > device->kernel_wg[OCL_K_sum_squares_partial]) {
          local1 = ocl_pow2_floor(device->kernel_wg[OCL_K_sum_squares_partial]);
        }
        P = (uint64_t)(device->compute_units > 0 ? device->compute_units : 1) * 2048;
        if (P > 65536) P = 65536;
        P = (P + local1 - 1) / local1 * local1;
      }
      cl_mem partial = NULL;
      error = ocl_scratch(device, stream, (size_t)P * 8, op, &partial);
      if (error != NULL) return error;
      la_begin(&l, device, stream, op, OCL_K_sum_squares_partial);
      la_scratch(&l, partial);
      la_tensor(&l, &in[0]);
      la_u64(&l, (uint64_t)a->n);
      la_u64(&l, chunk);
      size_t global1 = (size_t)P;
      error = la_run(&l, 1, &global1, device->is_cpu ? NULL : &local1);
      if (error != NULL) return error;
      la_begin(&l, device, stream, op, OCL_K_sum_squares_final);
      la_tensor(&l, &out[0]);
      la_scratch(&l, partial);
      la_u64(&l, P);
      size_t group = (size_t)device->ssq_wg;
      if (group > device->kernel_wg[OCL_K_sum_squares_final]) {
        group = ocl_pow2_floor(device->kernel_wg[OCL_K_sum_squares_final]);
      }
      size_t global = group, local = group;
      return la_run(&l, 1, &global, &local);
    }

    case MK_OP_COUNT:
      break;
  }
  return mk_error(MEDLEY_ERROR_UNSUPPORTED, "%s: not implemented by the opencl adapter", op);
}

/* ========================================================================= */
/* Ops                                                                       */
/* ========================================================================= */

static medley_error *ocl_op_query(medley_device *device, const char *op_name, int32_t dtype, int32_t *out_supported) {
  medley_error *error = ocl_check(device, "op_query");
  if (error != NULL) return error;
  return mk_op_query(op_name, dtype, OCL_FLOAT_DTYPES, out_supported);
}

/*
 * 1. mk_op_check: the opset contract, over this adapter's buffer table.
 * 2. Token ids: read back on the same queue (behind the work that may have
 *    written them), checked on the host with mk_op_check_tokens.
 * 3. The kernels are queued.
 */
static medley_error *ocl_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                   size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  ocl_stream *queue = NULL;
  medley_error *error = ocl_queue_for(device, stream, "op_launch", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = ocl_memory_ops(device);
  mk_op_args args;
  error = mk_op_check(&ops, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs, OCL_FLOAT_DTYPES,
                      &args);
  if (error != NULL) return error;
  if (queue->faulted) return ocl_sticky(queue);

  int k = mk_op_token_input(&args);
  if (k >= 0) {
    const mk_tensor_ref *ids = &args.in_ref[k];
    int32_t *host_ids = malloc((size_t)ids->bytes);
    if (host_ids == NULL) {
      return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "%s: out of host memory for the token check", op_name);
    }
    error = ocl_copy_d2h(device, stream, host_ids, ids->buffer, ids->offset, ids->bytes);
    if (error == NULL) error = ocl_finish(queue); /* the copy, and what was queued before it */
    if (error == NULL) error = mk_op_check_tokens(&args, host_ids, ids->bytes / sizeof(int32_t));
    free(host_ids);
    if (error != NULL) return error;
  }
  return ocl_run(device, queue, &args);
}

static medley_error *ocl_step_begin(medley_device *device, int64_t step) {
  medley_error *error = ocl_check(device, "step_begin");
  if (error != NULL) return error;
  if (step < 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "step_begin: step %lld is negative", (long long)step);
  return NULL;
}

/* ========================================================================= */
/* The table                                                                 */
/* ========================================================================= */

static const medley_adapter_api ocl_api = {
    .struct_size = sizeof(medley_adapter_api),
    .abi_major = MEDLEY_ABI_MAJOR,
    .abi_minor = MEDLEY_ABI_MINOR,
    .opset_version = MEDLEY_OPSET_VERSION,
    .reserved = 0,
    .error_free = mk_error_free,
    .plugin_info = ocl_plugin_info,
    .device_count = ocl_device_count,
    .device_open = ocl_device_open,
    .device_close = ocl_device_close,
    .device_describe = ocl_device_describe,
    .buffer_alloc = ocl_buffer_alloc,
    .buffer_free = ocl_buffer_free,
    .copy_h2d = ocl_copy_h2d,
    .copy_d2h = ocl_copy_d2h,
    .copy_d2d = ocl_copy_d2d,
    .memset = ocl_memset,
    .stream_create = ocl_stream_create,
    .stream_destroy = ocl_stream_destroy,
    .stream_synchronize = ocl_stream_synchronize,
    .op_query = ocl_op_query,
    .op_launch = ocl_op_launch,
    .step_begin = ocl_step_begin,
};

MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &ocl_api; }
