/*
 * cpu_adapter.c — the cpu adapter: opset v1 on the host CPU with OpenBLAS.
 *
 * One device (index 0) whose memory is host memory, managed by the adapter
 * kit. Options at device_open:
 *   threads=<integer >= 1>   OpenBLAS threads for this device's launches
 *                            (default 1: one device = one core, so ranks can
 *                            be pinned; OpenBLAS caps it at its build maximum,
 *                            and device_describe reports the effective count
 *                            as compute_units). The adapter's own loops are
 *                            single-threaded. OpenBLAS's count is process-
 *                            wide: each launch sets it to its device's value
 *                            when it differs.
 *   memory=<byte size>       capacity offered to the host (default: the
 *                            machine's physical memory).
 * All work runs synchronously on the calling thread, so streams are plain
 * handles and stream_synchronize has nothing to wait for.
 *
 * Only medley_adapter_get_api is exported; everything else is hidden.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "medley_adapter.h"
#include "medley_kit.h"

#define CPU_MAX_THREADS 1024
#define CPU_DEFAULT_MEMORY ((uint64_t)8 << 30) /* when the OS does not say */

/* What the kit's shared entries need to know: the name in messages and the float dtypes. */
static const mk_host_kind cpu_kind = {"cpu", MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32), NULL};

struct medley_device {
  mk_host_device host; /* first: memory and streams, used by the kit's mk_host_* entries */
  int threads;
  cpu_scratch scratch;
  char name[160];
  char vendor[64];
};

/* ========================================================================= */
/* Plugin                                                                    */
/* ========================================================================= */

static medley_error *cpu_plugin_info(medley_plugin_info *out) {
  return mk_plugin_info(out, "cpu", "Medley", "1.0.0");
}

static medley_error *cpu_device_count(int32_t *out_count) { return mk_device_count(out_count, 1); }

/* ========================================================================= */
/* Describing the CPU                                                        */
/* ========================================================================= */

/* Copies the value of the first "key : value" line of /proc/cpuinfo; 0 when found. */
static int cpuinfo_field(const char *key, char *out, size_t size) {
  FILE *file = fopen("/proc/cpuinfo", "r");
  if (file == NULL) return -1;
  char line[512];
  size_t key_length = strlen(key);
  int found = -1;
  while (found != 0 && fgets(line, sizeof line, file) != NULL) {
    if (strncmp(line, key, key_length) != 0) continue;
    const char *colon = strchr(line + key_length, ':');
    if (colon == NULL) continue;
    const char *value = colon + 1;
    while (*value == ' ' || *value == '\t') value++;
    snprintf(out, size, "%s", value);
    out[strcspn(out, "\n")] = '\0';
    found = out[0] != '\0' ? 0 : -1;
  }
  fclose(file);
  return found;
}

/* Fills the device's name ("cpu-openblas (<model>)") and vendor. */
static void describe_cpu(medley_device *device) {
  char model[128], vendor_id[64];
  if (cpuinfo_field("model name", model, sizeof model) == 0) {
    snprintf(device->name, sizeof device->name, "cpu-openblas (%s)", model);
  } else {
    snprintf(device->name, sizeof device->name, "cpu-openblas");
  }
  const char *vendor = "Medley";
  if (cpuinfo_field("vendor_id", vendor_id, sizeof vendor_id) == 0) {
    if (strcmp(vendor_id, "GenuineIntel") == 0) vendor = "Intel";
    else if (strcmp(vendor_id, "AuthenticAMD") == 0) vendor = "AMD";
    else vendor = vendor_id;
  }
  snprintf(device->vendor, sizeof device->vendor, "%s", vendor);
}

/* ========================================================================= */
/* Devices                                                                   */
/* ========================================================================= */

/* Reads the options into `threads` and `memory`; unknown or malformed ones are errors. */
static medley_error *parse_options(const medley_option *options, size_t num_options, int *threads,
                                   uint64_t *memory) {
  medley_error *error = mk_check_options(options, num_options);
  if (error != NULL) return error;
  for (size_t i = 0; i < num_options; i++) {
    const char *key = options[i].key, *value = options[i].value;
    if (strcmp(key, "threads") == 0) {
      int64_t parsed = 0;
      if (mk_parse_int(value, 1, CPU_MAX_THREADS, &parsed) != 0) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                        "device_open: option 'threads' = '%s' is not an integer in [1, %d] (e.g. threads=4)",
                        value, CPU_MAX_THREADS);
      }
      *threads = (int)parsed;
    } else if (strcmp(key, "memory") == 0) {
      uint64_t parsed = 0;
      if (mk_parse_bytes(value, &parsed) != 0 || parsed == 0) {
        return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                        "device_open: option 'memory' = '%s' is not a positive byte size "
                        "(e.g. memory=1073741824, 512MiB, 2GiB, 1.5GB)",
                        value);
      }
      *memory = parsed;
    } else {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                      "device_open: unknown option '%s' (the cpu adapter accepts threads=<integer >= 1> "
                      "and memory=<byte size, e.g. 2GiB>)",
                      key);
    }
  }
  return NULL;
}

/* Makes OpenBLAS use this device's thread count (a process-wide setting). */
static void use_threads(const medley_device *device) { (void)cpu_blas_threads(device->threads); }

static medley_error *cpu_device_open(int32_t index, const medley_option *options, size_t num_options,
                                     medley_device **out_device) {
  if (out_device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: out_device is NULL");
  *out_device = NULL;
  if (index != 0) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: index %d is out of range (the cpu adapter has 1 device)",
                    (int)index);
  }
  int threads = 1;
  uint64_t memory = mk_system_memory_bytes(CPU_DEFAULT_MEMORY);
  medley_error *error = parse_options(options, num_options, &threads, &memory);
  if (error != NULL) return error;
  medley_device *device = calloc(1, sizeof *device);
  if (device == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: no host memory for the device");
  mk_host_device_init(&device->host, &cpu_kind, memory);
  device->threads = threads;
  describe_cpu(device);
  /* OpenBLAS caps the count at the maximum it was built for (64 on Debian). */
  int effective = cpu_blas_threads(device->threads);
  if (effective >= 1 && effective < threads) device->threads = effective;
  *out_device = device;
  return NULL;
}

static medley_error *cpu_device_close(medley_device *device) {
  medley_error *error = mk_host_check_handle(device, &cpu_kind, "device_close");
  if (error != NULL) return error;
  mk_host_device_release(&device->host);
  cpu_scratch_release(&device->scratch);
  free(device);
  return NULL;
}

static medley_error *cpu_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = mk_host_check_device(device, &cpu_kind, "device_describe");
  if (error != NULL) return error;
  return mk_describe(out, device->name, device->vendor, device->host.memory.capacity,
                     MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32) | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32),
                     (uint32_t)device->threads);
}

/* ========================================================================= */
/* Ops (memory, copies, streams and steps are the kit's mk_host_* entries)  */
/* ========================================================================= */

static medley_error *cpu_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                   size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  mk_op_args args;
  medley_error *error = mk_host_launch_prepare(device, &cpu_kind, stream, op_name, inputs, num_inputs, outputs,
                                               num_outputs, attrs, num_attrs, &args);
  if (error != NULL) return error;
  use_threads(device);
  return cpu_run(&device->scratch, &args);
}

/* ========================================================================= */
/* The table                                                                 */
/* ========================================================================= */

static const medley_adapter_api cpu_api = {
    .struct_size = sizeof(medley_adapter_api),
    .abi_major = MEDLEY_ABI_MAJOR,
    .abi_minor = MEDLEY_ABI_MINOR,
    .opset_version = MEDLEY_OPSET_VERSION,
    .reserved = 0,
    .error_free = mk_error_free,
    .plugin_info = cpu_plugin_info,
    .device_count = cpu_device_count,
    .device_open = cpu_device_open,
    .device_close = cpu_device_close,
    .device_describe = cpu_device_describe,
    MK_HOST_MEMORY_ENTRIES,
    .op_launch = cpu_op_launch,
    .step_begin = mk_host_step_begin,
};

MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &cpu_api; }
