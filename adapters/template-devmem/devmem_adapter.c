/*
 * devmem_adapter.c — the device-memory template: the file a chip team copies
 * when its chip has memory of its own (a GPU, an accelerator card), which
 * the host can reach only through the adapter's copies.
 *
 * (Is your chip's memory plain host memory? Start from
 * adapters/template/template_adapter.c instead: the kit does all of memory
 * for you there.)
 *
 * As shipped, it is a complete, working adapter that behaves like a GPU
 * runtime, with a CPU standing in for the chip:
 *
 *   - "Device memory" is one arena per device, obtained with mmap and never
 *     handed to the host. A buffer is a HANDLE: a number that encodes a slot
 *     of the device's buffer table, the slot's generation and the device,
 *     checked on every use. It is not an address the host could dereference
 *     (like a CUdeviceptr or a cl_mem, it means nothing outside the adapter).
 *   - The host reaches that memory only through copy_h2d, copy_d2h, copy_d2d
 *     and memset.
 *   - Every stream is an in-order queue. Copies, fills and kernels are queued
 *     and run when the stream is synchronized (or when its queue is full),
 *     so the host sees what it sees with a real chip: copy_d2h's data
 *     arrives at stream_synchronize, not before.
 *   - Faults are asynchronous: an error found while queued work runs is
 *     STICKY on its stream and is returned by the next stream_synchronize,
 *     and by every later copy, launch and synchronize on that stream.
 *   - Launches are checked with the kit's mk_op_check, which needs only each
 *     buffer's size (a callback below) and hands back buffer + byte offset
 *     for every tensor; token ids are checked on a host copy made through
 *     this adapter's own d2h copy.
 *   - The "device kernels" are the portable reference kernels
 *     (adapters/kernels/medley_ref_kernels.c) run on arena addresses: a CPU
 *     is this template's device, so the host's own memory system executes
 *     them. Your chip runs its own kernels on its own addresses.
 *
 * A fresh copy passes `medley adapter check` on day one; you then replace
 * the pieces marked "replace with your chip's ..." ONE AT A TIME, re-running
 * the check after each swap.
 *
 * Build (from the repository root):
 *   cc -std=gnu11 -O2 -shared -fPIC -fvisibility=hidden \
 *      -Iadapters/include -Iadapters/kit/include -Iadapters/kernels/include \
 *      adapters/template-devmem/devmem_adapter.c adapters/kit/medley_kit.c \
 *      adapters/kernels/medley_ref_kernels.c -lm -o libmedley-adapter-devmem.so
 *
 * Rules worth keeping in mind (the full contract is adapters/include/medley_adapter.h):
 *   - Only medley_adapter_get_api is exported; keep everything else static.
 *   - Every entry returns NULL on success or an error made with mk_error.
 *     Never exit(), abort() or print from an entry.
 *   - copy_h2d: the host may reuse its memory as soon as the call returns
 *     (so a queued upload copies the bytes first). copy_d2h: the host reads
 *     its memory only after stream_synchronize.
 *   - Every *_backward op ACCUMULATES (+=) into all of its outputs; the host
 *     zeroes gradients with memset.
 *   - Threading: the host calls one device from one thread at a time, and
 *     different devices from different threads. So every piece of state
 *     lives in the device; the only thing shared is an atomic counter that
 *     numbers the devices (it makes one device's handles useless on another).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "medley_adapter.h"
#include "medley_kit.h"
#include "medley_ref_kernels.h"

/* ========================================================================= */
/* Plugin info: who you are                                                  */
/* ========================================================================= */

/* Change these four strings first. */
#define DM_PLUGIN_NAME "devmem"
#define DM_VENDOR "Your Company"
#define DM_VERSION "0.1.0"
#define DM_DEVICE_NAME "devmem-device"

/* The float dtypes your kernels accept; op_query and op_launch both use it. */
#define DM_FLOAT_DTYPES MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32)

static medley_error *dm_plugin_info(medley_plugin_info *out) {
  return mk_plugin_info(out, DM_PLUGIN_NAME, DM_VENDOR, DM_VERSION);
}

/* ========================================================================= */
/* Handles: buffers and streams are numbers, not pointers                    */
/* ========================================================================= */

/*
 * A handle is 64 bits: a tag (what kind of handle), the device's serial
 * number, the slot's generation and the slot:
 *
 *   bits 56..63 tag | 40..55 device serial | 20..39 generation | 0..19 slot
 *
 * The tag puts the value far outside any address a process maps, so a host
 * that dereferenced it would fault at once instead of reading stale bytes.
 * The generation grows each time a slot is freed, so a freed handle stays
 * invalid after its slot is reused. Replace with your runtime's handles
 * (CUdeviceptr, cl_mem, …) wrapped in a small table like this one, so that
 * every entry can refuse a handle it did not make without touching it.
 */
#define DM_TAG_BUFFER 0xB0u
#define DM_TAG_STREAM 0x5Au
#define DM_SLOT_BITS 20
#define DM_GEN_BITS 20
#define DM_MAX_SLOTS (1u << DM_SLOT_BITS)

static medley_buffer *dm_buffer_handle(uint32_t serial, uint32_t generation, uint32_t slot) {
  uint64_t value = ((uint64_t)DM_TAG_BUFFER << 56) | ((uint64_t)(serial & 0xFFFFu) << 40) |
                   ((uint64_t)(generation & ((1u << DM_GEN_BITS) - 1)) << DM_SLOT_BITS) | slot;
  return (medley_buffer *)(uintptr_t)value;
}

static medley_stream *dm_stream_handle(uint32_t serial, uint32_t generation, uint32_t slot) {
  uint64_t value = ((uint64_t)DM_TAG_STREAM << 56) | ((uint64_t)(serial & 0xFFFFu) << 40) |
                   ((uint64_t)(generation & ((1u << DM_GEN_BITS) - 1)) << DM_SLOT_BITS) | slot;
  return (medley_stream *)(uintptr_t)value;
}

/* Splits a handle; returns 0 when the tag or the device does not match. */
static int dm_handle_parts(uint64_t value, uint32_t tag, uint32_t serial, uint32_t *generation, uint32_t *slot) {
  if ((uint32_t)(value >> 56) != tag || (uint32_t)((value >> 40) & 0xFFFFu) != (serial & 0xFFFFu)) return 0;
  *generation = (uint32_t)((value >> DM_SLOT_BITS) & ((1u << DM_GEN_BITS) - 1));
  *slot = (uint32_t)(value & (DM_MAX_SLOTS - 1));
  return 1;
}

/* ========================================================================= */
/* The device: an arena, a buffer table, streams with queues                 */
/* ========================================================================= */

#define DM_DEVICE_MAGIC 0x444d454d44455643ull /* "DMEMDEVC" */
#define DM_ALIGN 256u             /* every buffer starts on 256 bytes, as GPU allocators do */
#define DM_MAX_STREAMS 16         /* slot 0 is the default stream (NULL) */
#define DM_QUEUE_DEPTH 1024       /* a full queue runs before more is queued, as a driver blocks */
#define DM_DEFAULT_MEMORY (2ull << 30)

/* One buffer: where it lies in the arena. */
typedef struct dm_block {
  uint64_t address;  /* the block's byte offset in the arena: a "device address" */
  uint64_t bytes;    /* what the host asked for (bounds are checked against this) */
  uint64_t reserved; /* bytes taken from the arena (bytes rounded up to DM_ALIGN) */
  uint32_t generation;
  int live;
} dm_block;

typedef enum dm_cmd_kind { DM_CMD_H2D, DM_CMD_D2H, DM_CMD_D2D, DM_CMD_MEMSET, DM_CMD_KERNEL } dm_cmd_kind;

/* One queued piece of work. Device addresses, never handles: the handle was
   checked when the work was queued, and a buffer is not freed while work on
   it is queued (buffer_free drains the queues first). */
typedef struct dm_cmd {
  dm_cmd_kind kind;
  uint64_t dst, src, bytes; /* device addresses and size (copies, memset) */
  void *host;               /* H2D: the staged bytes (owned); D2H: the host's destination */
  uint8_t value;            /* MEMSET */
  mk_op_args args;          /* KERNEL: the checked launch */
  uint64_t in_address[5], out_address[3];
} dm_cmd;

typedef struct dm_stream {
  int live;
  uint32_t generation;
  dm_cmd *queue;
  size_t count, capacity;
  /* The sticky fault: once work on this stream has failed, every later
     synchronize, copy and launch on it returns this error. */
  int faulted;
  int32_t fault_code;
  char fault_message[512];
} dm_stream;

struct medley_device {
  uint64_t magic;  /* first: mk_check_device reads it */
  uint32_t serial; /* this device's number, part of every handle it makes */
  /* Memory: replace with your chip's allocator state. */
  unsigned char *arena; /* the device's memory; never given to the host */
  uint64_t arena_bytes; /* mapped size */
  uint64_t capacity;    /* bytes the host may allocate (memory_bytes) */
  uint64_t used;        /* reserved bytes of live blocks */
  dm_block *blocks;     /* the buffer table: a handle's slot indexes it */
  uint32_t num_blocks, cap_blocks;
  uint32_t *order;      /* slots of live blocks, sorted by address (first fit walks the gaps) */
  uint32_t num_live;
  /* Queues: replace with your chip's queues. */
  dm_stream streams[DM_MAX_STREAMS];
  /* A teaching aid: the option inject_fault_at_kernel=K makes the K-th
     kernel fault while it runs. Leave it out of your chip's adapter. */
  uint64_t kernels_run, fault_at_kernel;
};

/* Numbers devices; the only state shared between devices (atomic). */
static uint32_t dm_next_serial = 1;

/* Every entry but device_close begins here: NULL or a pointer that is not an open device is INVALID_ARGUMENT. */
static medley_error *dm_check(const medley_device *device, const char *entry) {
  return mk_check_device(device, DM_DEVICE_MAGIC, DM_PLUGIN_NAME, entry);
}

/* A live block's slot for a handle, or -1. Looks the handle up; never dereferences it. */
static int64_t dm_lookup_buffer(const medley_device *device, const medley_buffer *buffer) {
  uint32_t generation = 0, slot = 0;
  if (!dm_handle_parts((uint64_t)(uintptr_t)buffer, DM_TAG_BUFFER, device->serial, &generation, &slot)) return -1;
  if (slot >= device->num_blocks) return -1;
  const dm_block *block = &device->blocks[slot];
  if (!block->live || (block->generation & ((1u << DM_GEN_BITS) - 1)) != generation) return -1;
  return slot;
}

/* The stream for a handle: NULL is the default stream; anything else must be a live stream of this device. */
static medley_error *dm_lookup_stream(medley_device *device, const medley_stream *stream, const char *entry,
                                      dm_stream **out) {
  if (stream == NULL) {
    *out = &device->streams[0];
    return NULL;
  }
  uint32_t generation = 0, slot = 0;
  if (dm_handle_parts((uint64_t)(uintptr_t)stream, DM_TAG_STREAM, device->serial, &generation, &slot) && slot > 0 &&
      slot < DM_MAX_STREAMS && device->streams[slot].live &&
      (device->streams[slot].generation & ((1u << DM_GEN_BITS) - 1)) == generation) {
    *out = &device->streams[slot];
    return NULL;
  }
  return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: stream %p is not a live stream of this device", entry,
                  (const void *)stream);
}

/* The size callback of mk_op_check and mk_check_range: a live buffer of this device, or an error. */
static medley_error *dm_buffer_bytes(void *ctx, const medley_buffer *buffer, const char *what, uint64_t *out_bytes) {
  const medley_device *device = ctx;
  int64_t slot = dm_lookup_buffer(device, buffer);
  if (slot < 0) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "%s: buffer %p is not a live buffer of this device", what,
                    (const void *)buffer);
  }
  *out_bytes = device->blocks[slot].bytes;
  return NULL;
}

static mk_memory_ops dm_memory_ops(medley_device *device) {
  mk_memory_ops ops = {device, dm_buffer_bytes};
  return ops;
}

/* The device address of byte `offset` of a buffer already checked live. */
static uint64_t dm_address(const medley_device *device, const medley_buffer *buffer, uint64_t offset) {
  return device->blocks[dm_lookup_buffer(device, buffer)].address + offset;
}

/* ========================================================================= */
/* Running queued work: the "device"                                         */
/* ========================================================================= */

/*
 * The device's memory management unit: work that would touch bytes outside
 * the arena is a device fault (a bug in the adapter's own address
 * arithmetic, since every handle and range was checked when it was queued).
 */
static medley_error *dm_mmu(const medley_device *device, uint64_t address, uint64_t bytes, const char *what) {
  if (address > device->arena_bytes || bytes > device->arena_bytes - address) {
    return mk_error(MEDLEY_ERROR_DEVICE_LOST,
                    DM_PLUGIN_NAME ": device fault: %s touched bytes [%llu, %llu) outside the %llu-byte memory", what,
                    (unsigned long long)address, (unsigned long long)(address + bytes),
                    (unsigned long long)device->arena_bytes);
  }
  return NULL;
}

/* Runs a kernel on arena addresses. Replace with your chip's kernel launch. */
static medley_error *dm_run_kernel(medley_device *device, dm_cmd *cmd) {
  mk_op_args *a = &cmd->args;
  const char *op = mk_op_name(a->op);
  for (size_t i = 0; i < a->num_inputs; i++) {
    medley_error *error = dm_mmu(device, cmd->in_address[i], a->in_ref[i].bytes, op);
    if (error != NULL) return error;
    a->in[i] = device->arena + cmd->in_address[i];
  }
  for (size_t i = 0; i < a->num_outputs; i++) {
    medley_error *error = dm_mmu(device, cmd->out_address[i], a->out_ref[i].bytes, op);
    if (error != NULL) return error;
    a->out[i] = device->arena + cmd->out_address[i];
  }
  device->kernels_run++;
  if (device->fault_at_kernel != 0 && device->kernels_run == device->fault_at_kernel) {
    return mk_error(MEDLEY_ERROR_DEVICE_LOST,
                    DM_PLUGIN_NAME ": device fault in kernel %llu (%s), injected by inject_fault_at_kernel",
                    (unsigned long long)device->kernels_run, op);
  }
  mrk_run(a); /* the reference kernels, on the arena: a CPU is this template's device */
  return NULL;
}

/* Runs one command; a failure is a fault of the stream. */
static medley_error *dm_run(medley_device *device, dm_cmd *cmd) {
  medley_error *error = NULL;
  switch (cmd->kind) {
    case DM_CMD_H2D: /* replace with your chip's DMA upload */
      error = dm_mmu(device, cmd->dst, cmd->bytes, "copy_h2d");
      if (error == NULL) memcpy(device->arena + cmd->dst, cmd->host, (size_t)cmd->bytes);
      break;
    case DM_CMD_D2H: /* replace with your chip's DMA download */
      error = dm_mmu(device, cmd->src, cmd->bytes, "copy_d2h");
      if (error == NULL) memcpy(cmd->host, device->arena + cmd->src, (size_t)cmd->bytes);
      break;
    case DM_CMD_D2D: /* replace with your chip's on-device copy */
      error = dm_mmu(device, cmd->src, cmd->bytes, "copy_d2d");
      if (error == NULL) error = dm_mmu(device, cmd->dst, cmd->bytes, "copy_d2d");
      if (error == NULL) memmove(device->arena + cmd->dst, device->arena + cmd->src, (size_t)cmd->bytes);
      break;
    case DM_CMD_MEMSET: /* replace with your chip's fill */
      error = dm_mmu(device, cmd->dst, cmd->bytes, "memset");
      if (error == NULL) memset(device->arena + cmd->dst, cmd->value, (size_t)cmd->bytes);
      break;
    case DM_CMD_KERNEL:
      error = dm_run_kernel(device, cmd);
      break;
  }
  return error;
}

static void dm_cmd_release(dm_cmd *cmd) {
  if (cmd->kind == DM_CMD_H2D) free(cmd->host);
  cmd->host = NULL;
}

/* The stream's sticky fault as a fresh error object (the host frees each one it gets). */
static medley_error *dm_sticky(const dm_stream *stream) {
  return stream->faulted ? mk_error(stream->fault_code, "%s", stream->fault_message) : NULL;
}

/*
 * Runs everything queued on `stream`, in order: what your chip's queue does
 * on its own, and what stream_synchronize waits for. The first failure makes
 * the stream faulted; work queued after it is dropped, as a GPU drops the
 * work of a faulted context. Returns the sticky fault, if any.
 */
static medley_error *dm_drain(medley_device *device, dm_stream *stream) {
  for (size_t i = 0; i < stream->count; i++) {
    dm_cmd *cmd = &stream->queue[i];
    if (!stream->faulted) {
      medley_error *error = dm_run(device, cmd);
      if (error != NULL) {
        stream->faulted = 1;
        stream->fault_code = error->code;
        strncpy(stream->fault_message, error->message, sizeof stream->fault_message - 1);
        stream->fault_message[sizeof stream->fault_message - 1] = '\0';
        mk_error_free(error);
      }
    }
    dm_cmd_release(cmd);
  }
  stream->count = 0;
  return dm_sticky(stream);
}

/* Drains every stream (before a buffer is freed, as cudaFree waits for the device). Faults stay sticky. */
static void dm_drain_all(medley_device *device) {
  for (int s = 0; s < DM_MAX_STREAMS; s++) {
    if (device->streams[s].live) mk_error_free(dm_drain(device, &device->streams[s]));
  }
}

/* Queues a command; takes ownership of an H2D's staged bytes even when it fails. */
static medley_error *dm_enqueue(medley_device *device, dm_stream *stream, const dm_cmd *cmd, const char *entry) {
  if (stream->count == DM_QUEUE_DEPTH) mk_error_free(dm_drain(device, stream)); /* a full queue: run it first */
  if (stream->faulted) {
    dm_cmd copy = *cmd;
    dm_cmd_release(&copy);
    return dm_sticky(stream);
  }
  if (stream->count == stream->capacity) {
    size_t capacity = stream->capacity == 0 ? 64 : stream->capacity * 2;
    dm_cmd *queue = realloc(stream->queue, capacity * sizeof *queue);
    if (queue == NULL) {
      dm_cmd copy = *cmd;
      dm_cmd_release(&copy);
      return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "%s: out of host memory for the stream's queue", entry);
    }
    stream->queue = queue;
    stream->capacity = capacity;
  }
  stream->queue[stream->count++] = *cmd;
  return NULL;
}

/* Device, then stream; then the stream's sticky fault. The start of every queued entry. */
static medley_error *dm_queue_for(medley_device *device, medley_stream *stream, const char *entry,
                                  dm_stream **out) {
  medley_error *error = dm_check(device, entry);
  if (error == NULL) error = dm_lookup_stream(device, stream, entry, out);
  return error;
}

/* ========================================================================= */
/* Devices and their options                                                 */
/* ========================================================================= */

/* How many devices you can open: ask your runtime (cudaGetDeviceCount, …). */
static medley_error *dm_device_count(int32_t *out_count) { return mk_device_count(out_count, 1); }

static medley_error *dm_parse_options(const medley_option *options, size_t num_options, uint64_t *capacity,
                                      uint64_t *fault_at_kernel) {
  medley_error *error = mk_check_options(options, num_options);
  if (error != NULL) return error;
  *capacity = DM_DEFAULT_MEMORY; /* replace with your chip's memory size */
  *fault_at_kernel = 0;
  for (size_t i = 0; i < num_options; i++) {
    const char *key = options[i].key, *value = options[i].value;
    if (strcmp(key, "memory") == 0) {
      if (mk_parse_bytes(value, capacity) != 0 || *capacity == 0 || *capacity > (1ull << 46)) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                        DM_PLUGIN_NAME " option memory='%s': expected a positive byte size like 512MiB", value);
      }
    } else if (strcmp(key, "inject_fault_at_kernel") == 0) {
      int64_t k = 0;
      if (mk_parse_int(value, 1, INT64_MAX, &k) != 0) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                        DM_PLUGIN_NAME " option inject_fault_at_kernel='%s': expected a kernel number >= 1", value);
      }
      *fault_at_kernel = (uint64_t)k;
    } else {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                      DM_PLUGIN_NAME " option '%s' is unknown; the accepted options are memory=SIZE (e.g. 512MiB) "
                                     "and inject_fault_at_kernel=K",
                      key);
    }
  }
  return NULL;
}

static medley_error *dm_device_open(int32_t index, const medley_option *options, size_t num_options,
                                    medley_device **out_device) {
  if (out_device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: out_device is NULL");
  *out_device = NULL;
  int32_t count = 0;
  dm_device_count(&count);
  if (index < 0 || index >= count) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: device index %d does not exist (there are %d)",
                    (int)index, (int)count);
  }
  uint64_t capacity = 0, fault_at_kernel = 0;
  medley_error *error = dm_parse_options(options, num_options, &capacity, &fault_at_kernel);
  if (error != NULL) return error;
  medley_device *device = calloc(1, sizeof *device);
  if (device == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: out of host memory");
  /* The arena: replace with your chip's context creation. MAP_NORESERVE: pages
     cost nothing until they are touched, so a large capacity is cheap. */
  long page = sysconf(_SC_PAGESIZE);
  uint64_t page_bytes = page > 0 ? (uint64_t)page : 4096u;
  device->arena_bytes = (capacity + page_bytes - 1) / page_bytes * page_bytes;
  void *arena = mmap(NULL, (size_t)device->arena_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (arena == MAP_FAILED) {
    int code = errno;
    free(device);
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: cannot map %llu bytes of device memory: %s",
                    (unsigned long long)capacity, strerror(code));
  }
  device->magic = DM_DEVICE_MAGIC;
  device->serial = __atomic_fetch_add(&dm_next_serial, 1, __ATOMIC_RELAXED);
  device->arena = arena;
  device->capacity = capacity;
  device->streams[0].live = 1; /* the default stream */
  device->fault_at_kernel = fault_at_kernel;
  *out_device = device;
  return NULL;
}

/* Close drops the queued work and frees everything still on the device.
   Only the handle is checked, so close works even on a faulted device. */
static medley_error *dm_device_close(medley_device *device) {
  medley_error *error = dm_check(device, "device_close");
  if (error != NULL) return error;
  for (int s = 0; s < DM_MAX_STREAMS; s++) {
    dm_stream *stream = &device->streams[s];
    for (size_t i = 0; i < stream->count; i++) dm_cmd_release(&stream->queue[i]);
    free(stream->queue);
  }
  munmap(device->arena, (size_t)device->arena_bytes); /* replace with your chip's teardown */
  free(device->blocks);
  free(device->order);
  device->magic = 0;
  free(device);
  return NULL;
}

static medley_error *dm_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = dm_check(device, "device_describe");
  if (error != NULL) return error;
  uint32_t dtypes = DM_FLOAT_DTYPES | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32);
  return mk_describe(out, DM_DEVICE_NAME, DM_VENDOR, device->capacity, dtypes, 1);
}

/* ========================================================================= */
/* Memory: the buffer table over the arena                                   */
/* ========================================================================= */

/*
 * First fit over the gaps between live blocks (kept sorted by address).
 * Replace with your chip's allocator (cudaMalloc, clCreateBuffer, …): keep
 * the table, so that handles stay checkable, and keep the rules — 0 bytes is
 * INVALID_ARGUMENT, more than is left is OUT_OF_MEMORY, never a crash.
 */
static medley_error *dm_buffer_alloc(medley_device *device, uint64_t bytes, medley_buffer **out_buffer) {
  medley_error *error = dm_check(device, "buffer_alloc");
  if (error != NULL) return error;
  if (out_buffer == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "buffer_alloc: out_buffer is NULL");
  *out_buffer = NULL;
  if (bytes == 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "buffer_alloc: size is 0 bytes");
  uint64_t free_bytes = device->capacity - device->used;
  if (bytes > free_bytes || ((bytes + DM_ALIGN - 1) & ~(uint64_t)(DM_ALIGN - 1)) > free_bytes) {
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY,
                    "buffer_alloc: %llu bytes requested but only %llu of %llu bytes are free",
                    (unsigned long long)bytes, (unsigned long long)free_bytes,
                    (unsigned long long)device->capacity);
  }
  uint64_t reserved = (bytes + DM_ALIGN - 1) & ~(uint64_t)(DM_ALIGN - 1);
  /* The first gap that fits. */
  uint64_t address = 0;
  uint32_t position = 0;
  for (; position < device->num_live; position++) {
    const dm_block *next = &device->blocks[device->order[position]];
    if (next->address - address >= reserved) break;
    address = next->address + next->reserved;
  }
  if (position == device->num_live && device->capacity - address < reserved) {
    return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY,
                    "buffer_alloc: %llu bytes requested; %llu bytes are free but no free range is that large",
                    (unsigned long long)bytes, (unsigned long long)free_bytes);
  }
  /* A slot: a dead one, or a new one. */
  uint32_t slot = 0;
  while (slot < device->num_blocks && device->blocks[slot].live) slot++;
  if (slot == device->num_blocks) {
    if (slot == DM_MAX_SLOTS) {
      return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "buffer_alloc: all %u buffer handles are in use", DM_MAX_SLOTS);
    }
    if (device->num_blocks == device->cap_blocks) {
      uint32_t capacity = device->cap_blocks == 0 ? 64 : device->cap_blocks * 2;
      dm_block *blocks = realloc(device->blocks, capacity * sizeof *blocks);
      if (blocks != NULL) device->blocks = blocks;
      uint32_t *order = blocks != NULL ? realloc(device->order, capacity * sizeof *order) : NULL;
      if (order == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "buffer_alloc: out of host memory");
      device->order = order;
      device->cap_blocks = capacity;
    }
    device->blocks[slot].generation = 0;
    device->num_blocks++;
  }
  dm_block *block = &device->blocks[slot];
  block->address = address;
  block->bytes = bytes;
  block->reserved = reserved;
  block->live = 1;
  memmove(&device->order[position + 1], &device->order[position],
          (device->num_live - position) * sizeof device->order[0]);
  device->order[position] = slot;
  device->num_live++;
  device->used += reserved;
  *out_buffer = dm_buffer_handle(device->serial, block->generation, slot);
  return NULL;
}

static medley_error *dm_buffer_free(medley_device *device, medley_buffer *buffer) {
  medley_error *error = dm_check(device, "buffer_free");
  if (error != NULL) return error;
  if (buffer == NULL) return NULL;
  int64_t slot = dm_lookup_buffer(device, buffer);
  if (slot < 0) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "buffer_free: %p is not a live buffer of this device",
                    (void *)buffer);
  }
  dm_drain_all(device); /* queued work may still use it */
  dm_block *block = &device->blocks[slot];
  uint32_t position = 0;
  while (device->order[position] != (uint32_t)slot) position++;
  memmove(&device->order[position], &device->order[position + 1],
          (device->num_live - position - 1) * sizeof device->order[0]);
  device->num_live--;
  device->used -= block->reserved;
  block->live = 0;
  block->generation++; /* the old handle stays invalid when the slot is reused */
  return NULL;
}

/* ========================================================================= */
/* Copies and fills: queued on the stream                                    */
/* ========================================================================= */

/*
 * Every copy checks the device, the stream and the byte range (with the
 * kit's mk_check_range, over this adapter's buffer table) when it is called,
 * so a bad argument is INVALID_ARGUMENT at once; a fault while the copy runs
 * is sticky on the stream. A faulted stream refuses new work with its fault.
 */
static medley_error *dm_copy_h2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                 uint64_t dst_offset, const void *src, uint64_t bytes) {
  dm_stream *queue = NULL;
  medley_error *error = dm_queue_for(device, stream, "copy_h2d", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = dm_memory_ops(device);
  error = mk_check_range(&ops, dst, dst_offset, bytes, "copy_h2d destination");
  if (error != NULL) return error;
  if (src == NULL && bytes > 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "copy_h2d: source is NULL");
  if (queue->faulted) return dm_sticky(queue);
  if (bytes == 0) return NULL;
  /* The host may reuse `src` as soon as we return: stage the bytes. (A real
     driver copies into pinned memory, or waits for the DMA, here.) */
  void *staged = malloc((size_t)bytes);
  if (staged == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "copy_h2d: out of host memory for staging");
  memcpy(staged, src, (size_t)bytes);
  dm_cmd cmd = {.kind = DM_CMD_H2D, .dst = dm_address(device, dst, dst_offset), .bytes = bytes, .host = staged};
  return dm_enqueue(device, queue, &cmd, "copy_h2d");
}

/* The host reads `dst` only after stream_synchronize: the bytes arrive when the queue runs. */
static medley_error *dm_copy_d2h(medley_device *device, medley_stream *stream, void *dst, medley_buffer *src,
                                 uint64_t src_offset, uint64_t bytes) {
  dm_stream *queue = NULL;
  medley_error *error = dm_queue_for(device, stream, "copy_d2h", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = dm_memory_ops(device);
  error = mk_check_range(&ops, src, src_offset, bytes, "copy_d2h source");
  if (error != NULL) return error;
  if (dst == NULL && bytes > 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "copy_d2h: destination is NULL");
  if (queue->faulted) return dm_sticky(queue);
  if (bytes == 0) return NULL;
  dm_cmd cmd = {.kind = DM_CMD_D2H, .src = dm_address(device, src, src_offset), .bytes = bytes, .host = dst};
  return dm_enqueue(device, queue, &cmd, "copy_d2h");
}

/* Optional in the ABI: without it the host bounces the bytes through host memory. */
static medley_error *dm_copy_d2d(medley_device *device, medley_stream *stream, medley_buffer *dst,
                                 uint64_t dst_offset, medley_buffer *src, uint64_t src_offset, uint64_t bytes) {
  dm_stream *queue = NULL;
  medley_error *error = dm_queue_for(device, stream, "copy_d2d", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = dm_memory_ops(device);
  error = mk_check_range(&ops, dst, dst_offset, bytes, "copy_d2d destination");
  if (error == NULL) error = mk_check_range(&ops, src, src_offset, bytes, "copy_d2d source");
  if (error != NULL) return error;
  if (queue->faulted) return dm_sticky(queue);
  if (bytes == 0) return NULL;
  dm_cmd cmd = {.kind = DM_CMD_D2D,
                .dst = dm_address(device, dst, dst_offset),
                .src = dm_address(device, src, src_offset),
                .bytes = bytes};
  return dm_enqueue(device, queue, &cmd, "copy_d2d");
}

/* The host zeroes gradient buffers with this at the start of every step. */
static medley_error *dm_memset(medley_device *device, medley_stream *stream, medley_buffer *dst, uint64_t offset,
                               uint8_t value, uint64_t bytes) {
  dm_stream *queue = NULL;
  medley_error *error = dm_queue_for(device, stream, "memset", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = dm_memory_ops(device);
  error = mk_check_range(&ops, dst, offset, bytes, "memset");
  if (error != NULL) return error;
  if (queue->faulted) return dm_sticky(queue);
  if (bytes == 0) return NULL;
  dm_cmd cmd = {.kind = DM_CMD_MEMSET, .dst = dm_address(device, dst, offset), .bytes = bytes, .value = value};
  return dm_enqueue(device, queue, &cmd, "memset");
}

/* ========================================================================= */
/* Streams                                                                   */
/* ========================================================================= */

/* Optional in the ABI. Replace with your chip's queue creation. */
static medley_error *dm_stream_create(medley_device *device, medley_stream **out_stream) {
  medley_error *error = dm_check(device, "stream_create");
  if (error != NULL) return error;
  if (out_stream == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_create: out_stream is NULL");
  *out_stream = NULL;
  for (uint32_t slot = 1; slot < DM_MAX_STREAMS; slot++) {
    dm_stream *stream = &device->streams[slot];
    if (stream->live) continue;
    uint32_t generation = stream->generation;
    dm_cmd *queue = stream->queue; /* keep the allocation for reuse */
    size_t capacity = stream->capacity;
    memset(stream, 0, sizeof *stream);
    stream->live = 1;
    stream->generation = generation;
    stream->queue = queue;
    stream->capacity = capacity;
    *out_stream = dm_stream_handle(device->serial, generation, slot);
    return NULL;
  }
  return mk_error(MEDLEY_ERROR_UNAVAILABLE, "stream_create: all %d streams of this device are in use",
                  DM_MAX_STREAMS - 1);
}

/* Finishes the stream's work, then releases it. */
static medley_error *dm_stream_destroy(medley_device *device, medley_stream *stream) {
  medley_error *error = dm_check(device, "stream_destroy");
  if (error != NULL) return error;
  if (stream == NULL) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "stream_destroy: the default stream (NULL) cannot be destroyed");
  }
  dm_stream *queue = NULL;
  error = dm_lookup_stream(device, stream, "stream_destroy", &queue);
  if (error != NULL) return error;
  mk_error_free(dm_drain(device, queue));
  queue->live = 0;
  queue->generation++;
  return NULL;
}

/*
 * Waits for the stream's work: here, runs it. This is where an asynchronous
 * fault reaches the host. Replace with your chip's queue wait (cudaStreamSynchronize,
 * clFinish, …), turning its error into mk_error with a message that names what failed.
 */
static medley_error *dm_stream_synchronize(medley_device *device, medley_stream *stream) {
  dm_stream *queue = NULL;
  medley_error *error = dm_queue_for(device, stream, "stream_synchronize", &queue);
  if (error != NULL) return error;
  return dm_drain(device, queue);
}

/* ========================================================================= */
/* Ops                                                                       */
/* ========================================================================= */

static medley_error *dm_op_query(medley_device *device, const char *op_name, int32_t dtype, int32_t *out_supported) {
  medley_error *error = dm_check(device, "op_query");
  if (error != NULL) return error;
  return mk_op_query(op_name, dtype, DM_FLOAT_DTYPES, out_supported);
}

/*
 * A launch: checked now, run when the queue runs.
 *
 * 1. mk_op_check does every check of the opset contract (unknown op ->
 *    UNSUPPORTED; counts, shapes, dtypes, attributes, bounds, alignment ->
 *    INVALID_ARGUMENT), asking dm_buffer_bytes for each buffer's size. It
 *    hands back each tensor as buffer + byte offset + byte size.
 * 2. Token ids (encoder tokens, crossentropy targets) live in device memory.
 *    They are copied to the host with this adapter's own d2h copy, queued
 *    behind the work that may have written them, and checked there with
 *    mk_op_check_tokens. (A chip that checks ids in its kernel instead must
 *    still fail the launch with INVALID_ARGUMENT: the host expects it here.)
 * 3. The kernel is queued with device addresses (the buffer's address plus
 *    the tensor's offset).
 */
static medley_error *dm_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                  const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                  size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  dm_stream *queue = NULL;
  medley_error *error = dm_queue_for(device, stream, "op_launch", &queue);
  if (error != NULL) return error;
  mk_memory_ops ops = dm_memory_ops(device);
  dm_cmd cmd = {.kind = DM_CMD_KERNEL};
  error = mk_op_check(&ops, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs, DM_FLOAT_DTYPES,
                      &cmd.args);
  if (error != NULL) return error;
  if (queue->faulted) return dm_sticky(queue);

  int k = mk_op_token_input(&cmd.args);
  if (k >= 0) {
    const mk_tensor_ref *ids = &cmd.args.in_ref[k];
    int32_t *host_ids = malloc((size_t)ids->bytes);
    if (host_ids == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "%s: out of host memory for the token check", op_name);
    error = dm_copy_d2h(device, stream, host_ids, ids->buffer, ids->offset, ids->bytes);
    if (error == NULL) error = dm_drain(device, queue); /* wait for the copy (and what was queued before it) */
    if (error == NULL) error = mk_op_check_tokens(&cmd.args, host_ids, ids->bytes / sizeof(int32_t));
    free(host_ids);
    if (error != NULL) return error;
  }

  for (size_t i = 0; i < cmd.args.num_inputs; i++) {
    cmd.in_address[i] = dm_address(device, cmd.args.in_ref[i].buffer, cmd.args.in_ref[i].offset);
  }
  for (size_t i = 0; i < cmd.args.num_outputs; i++) {
    cmd.out_address[i] = dm_address(device, cmd.args.out_ref[i].buffer, cmd.args.out_ref[i].offset);
  }
  return dm_enqueue(device, queue, &cmd, "op_launch");
}

/* Optional: a step boundary. Real chips can open a profiler range here. */
static medley_error *dm_step_begin(medley_device *device, int64_t step) {
  medley_error *error = dm_check(device, "step_begin");
  if (error != NULL) return error;
  if (step < 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "step_begin: step %lld is negative", (long long)step);
  return NULL;
}

/* ========================================================================= */
/* The table: the one thing the host loads                                   */
/* ========================================================================= */

static const medley_adapter_api dm_api = {
    .struct_size = sizeof(medley_adapter_api),
    .abi_major = MEDLEY_ABI_MAJOR,
    .abi_minor = MEDLEY_ABI_MINOR,
    .opset_version = MEDLEY_OPSET_VERSION,
    .reserved = 0,
    .error_free = mk_error_free,
    .plugin_info = dm_plugin_info,
    .device_count = dm_device_count,
    .device_open = dm_device_open,
    .device_close = dm_device_close,
    .device_describe = dm_device_describe,
    .buffer_alloc = dm_buffer_alloc,
    .buffer_free = dm_buffer_free,
    .copy_h2d = dm_copy_h2d,
    .copy_d2h = dm_copy_d2h,
    .copy_d2d = dm_copy_d2d,
    .memset = dm_memset,
    .stream_create = dm_stream_create,
    .stream_destroy = dm_stream_destroy,
    .stream_synchronize = dm_stream_synchronize,
    .op_query = dm_op_query,
    .op_launch = dm_op_launch,
    .step_begin = dm_step_begin,
};

/* The only exported symbol. */
MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &dm_api; }
