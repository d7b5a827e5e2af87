/*
 * sim_adapter.c — a simulated vendor chip for testing Medley without hardware.
 *
 * The sim computes on host memory with the reference kernels (or, with
 * kernels=cpu, the cpu adapter's kernels), then makes the "chip" behave the
 * way real chips misbehave: slower (speed), smaller (memory), less precise
 * (precision) and faulty (fault). With the defaults (kernels reference,
 * precision fp32, no faults) its results are bit-identical to the reference
 * adapter's; with kernels=cpu (and fp32, no faults) to the cpu adapter's.
 *
 * Options are merged in two layers: first the environment variable
 * MEDLEY_SIM_OPTIONS ("key=value,key=value"), then the options passed to
 * device_open, which override keys set by the environment. device_count sees
 * only the environment (it takes no options).
 *
 *   speed=S        S in [1e-6, 1], default 1. The chip runs at S times ONE
 *                  UNCONTENDED HOST CORE running the chosen kernels: each
 *                  op_launch measures the CPU time its compute takes on the
 *                  calling thread (CLOCK_THREAD_CPUTIME_ID: kernel, precision
 *                  rounding and injected nan/flip/corrupt); the op's cost c is the
 *                  LEAST such time any launch of the same signature (op name,
 *                  every tensor's dtype and shape, every attribute) has taken
 *                  on this device, since CPU time also grows when other work
 *                  shares the host's caches and memory and a real chip's does
 *                  not. The launch lasts c/S of wall time in all. After
 *                  computing it sleeps
 *                    max(0, c/S - wall time the launch has taken so far
 *                                - oversleep carried from earlier launches)
 *                  (sleeping, so a slow chip does not burn a core). Time the
 *                  sleep overshoots, or wall time the launch overran c/S by
 *                  (the thread was preempted on a busy host), is carried and
 *                  taken off later sleeps, at most SIM_MAX_OVERSLEEP (50 ms)
 *                  of it, so a run of ops takes c/S overall. Uncontended,
 *                  wall = c and this is the old rule, sleep c*(1/S - 1);
 *                  contended, the sim does not slow down with the host as
 *                  long as it gets a core for c/S of the time. Copies are not
 *                  stretched. Below 1e-6 (SIM_MIN_SPEED) a sleep of c/S
 *                  could no longer be honoured (far below, c/S overflows the
 *                  sleep's integer seconds), so such a speed is refused at
 *                  open, and so are slow faults that would take it there.
 *   costs=PATH     a file that keeps the op costs c across processes (default:
 *                  none, each device learns its own). Opening the device reads
 *                  it; closing the device merges what it learned into it (the
 *                  least of each) under a lock on PATH.lock and replaces it
 *                  atomically. Every process that names the same file then
 *                  rates an op alike, so a sim runs at the same speed in every
 *                  job on the host, whatever ran beside it when it learned.
 *                  Keys fold in the kernels and precision, so devices of any
 *                  speed share one file. A missing, short or corrupt file is
 *                  taken as empty and rewritten; a directory that cannot hold
 *                  PATH.lock is refused at open. PATH may not contain ','
 *                  when given in MEDLEY_SIM_OPTIONS.
 *   kernels=K      reference | cpu, default reference. reference: the
 *                  portable reference kernels (adapters/kernels, mrk_run).
 *                  cpu: the cpu adapter's kernels (adapters/cpu-kernels,
 *                  cpu_run: OpenBLAS sgemm on ONE thread and vectorized
 *                  loops), about 16x faster on a GPT step, for a sim that
 *                  stands in for a chip about as fast as a host core. Opening
 *                  a kernels=cpu device, and every launch on one, sets
 *                  OpenBLAS to 1 thread (openblas_set_num_threads(1)) when it
 *                  is not: that count is PROCESS-WIDE, so it also applies to
 *                  any other OpenBLAS user in the process (a cpu adapter
 *                  device resets its own count at each of its launches). One
 *                  thread also keeps the CPU-time measure of speed exact.
 *   memory=SIZE    capacity (e.g. 512MiB); default: the machine's memory.
 *                  Allocations beyond it are MEDLEY_ERROR_OUT_OF_MEMORY.
 *   precision=P    fp32 | bf16 | fp16, default fp32. After every op, every
 *                  element of every output is rounded to P (round to nearest
 *                  even; fp16 overflows to inf and has subnormals) and stored
 *                  back as f32.
 *   vendor=TEXT    reported by device_describe (default "Medley Sim").
 *   name=TEXT      reported by device_describe (default "sim-1").
 *   devices=N      device_count, N >= 1 (default 1).
 *   fault=F[;F…]   injected faults, each KIND@op=N or KIND@step=N.
 *
 * Faults. op=N is the N-th op_launch call on the device (1-based, counting
 * every call); step=N is reached when the optional step_begin entry is
 * called with a step >= N. Each fault fires once, when its point is reached:
 *   crash    the process dies: a message on stderr, then _exit(77). This is
 *            the ONE deliberate exception to the ABI rule that nothing exits
 *            across the boundary: it simulates a node dying.
 *   error    that call and every later call on the device (except
 *            device_close) return MEDLEY_ERROR_DEVICE_LOST.
 *   hang     that call never returns (sleeps forever in a loop).
 *   nan      every element of the op's outputs becomes NaN.
 *   slow:F   speed is divided by F (F >= 1) from then on: a straggler. The
 *            speed left after every slow fault must stay >= 1e-6.
 *   corrupt  a chip that computes wrong without an error: from its point on,
 *            EVERY op's first output has one exponent bit (bit 30) of element
 *            (numel-1)/2 flipped, and the device never reports an error. This
 *            is what silent data corruption usually is in a fleet (a defective
 *            chip), and what Medley's probe batch (docs/integrity.md) catches
 *            and names.
 *   flip     the same bit of the same element, in ONE op's output, once: a
 *            one-shot upset. A data-parallel job averages it into every
 *            replica alike, so nothing afterwards can tell which chip did it
 *            (Medley does not promise to catch it; docs/integrity.md).
 * A crash, error, hang or slow fault at a step fires inside step_begin; a
 * nan or flip fault at a step applies to the first op launched after it,
 * a corrupt fault to that op and every later one.
 * A nan or flip fault whose launch is rejected (bad arguments) applies to
 * the next launch that runs.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu_kernels.h"
#include "medley_adapter.h"
#include "medley_kit.h"
#include "medley_ref_kernels.h"

#define SIM_FALLBACK_MEMORY (8ull << 30)
#define SIM_MAX_FAULTS 16
#define SIM_MAX_TEXT 128
#define SIM_MAX_DEVICES 1024
#define SIM_ENV "MEDLEY_SIM_OPTIONS"
#define SIM_CRASH_STATUS 77
#define SIM_MAX_OVERSLEEP 0.05 /* seconds of oversleep carried to later ops, at most */
/* The least speed, after slow faults too: a chip a million times slower than a host core, whose
   1 ms op sleeps 17 minutes. Below it c/S stops being a sleep anyone waits for, and far below it
   overflows the integer seconds of the sleep (undefined behaviour in the conversion). */
#define SIM_MIN_SPEED 1e-6
/* Longest single sleep, seconds (about 31 years): a guard that keeps the conversion defined. */
#define SIM_MAX_SLEEP 1e9
#define SIM_MAX_PATH 1024
#define SIM_COSTS_MAGIC "MDSIMCST"
#define SIM_COSTS_VERSION 1u
#define SIM_COSTS_MAX_ENTRIES (1u << 20)
#define SIM_FNV_OFFSET 14695981039346656037ULL /* FNV-1a's 64-bit offset basis */

/* ========================================================================= */
/* Configuration                                                             */
/* ========================================================================= */

typedef enum sim_precision { SIM_FP32, SIM_BF16, SIM_FP16 } sim_precision;

typedef enum sim_kernels { SIM_KERNELS_REFERENCE, SIM_KERNELS_CPU } sim_kernels;

typedef enum sim_fault_kind {
  SIM_FAULT_CRASH,
  SIM_FAULT_ERROR,
  SIM_FAULT_HANG,
  SIM_FAULT_NAN,
  SIM_FAULT_SLOW,
  SIM_FAULT_FLIP,
  SIM_FAULT_CORRUPT
} sim_fault_kind;

typedef struct sim_fault {
  sim_fault_kind kind;
  int at_step;    /* 1: point is a step; 0: point is an op count */
  int64_t point;  /* the step or the 1-based op count */
  double factor;  /* slow:F */
  int fired;
  char text[48];  /* as written, for messages */
} sim_fault;

typedef struct sim_config {
  double speed;
  uint64_t memory;
  sim_precision precision;
  sim_kernels kernels;
  char vendor[SIM_MAX_TEXT];
  char name[SIM_MAX_TEXT];
  int64_t devices;
  sim_fault faults[SIM_MAX_FAULTS];
  size_t num_faults;
  char costs_path[SIM_MAX_PATH]; /* "" : costs are not kept across processes */
} sim_config;

static void sim_config_defaults(sim_config *config) {
  memset(config, 0, sizeof *config);
  config->speed = 1.0;
  config->memory = mk_system_memory_bytes(SIM_FALLBACK_MEMORY);
  config->precision = SIM_FP32;
  config->kernels = SIM_KERNELS_REFERENCE;
  snprintf(config->vendor, sizeof config->vendor, "Medley Sim");
  snprintf(config->name, sizeof config->name, "sim-1");
  config->devices = 1;
}

static const char *const sim_fault_help =
    "expected KIND@op=N or KIND@step=N, several separated by ';' "
    "(KIND: crash, error, hang, nan, slow:F with F >= 1, corrupt, flip)";

/* Parses "KIND" or "slow:F" into a fault. Returns 0 on success. */
static int sim_parse_fault_kind(const char *text, size_t length, sim_fault *fault) {
  static const struct { const char *name; sim_fault_kind kind; } kinds[] = {
      {"crash", SIM_FAULT_CRASH}, {"error", SIM_FAULT_ERROR}, {"hang", SIM_FAULT_HANG},
      {"nan", SIM_FAULT_NAN},     {"corrupt", SIM_FAULT_CORRUPT}, {"flip", SIM_FAULT_FLIP},
  };
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    if (strlen(kinds[i].name) == length && strncmp(text, kinds[i].name, length) == 0) {
      fault->kind = kinds[i].kind;
      return 0;
    }
  }
  if (length > 5 && strncmp(text, "slow:", 5) == 0 && length - 5 < 32) {
    char number[32];
    memcpy(number, text + 5, length - 5);
    number[length - 5] = '\0';
    if (mk_parse_double(number, &fault->factor) != 0 || fault->factor < 1.0) return -1;
    fault->kind = SIM_FAULT_SLOW;
    return 0;
  }
  return -1;
}

/* Parses one "KIND@op=N" / "KIND@step=N" item of `length` chars. Returns 0 on success. */
static int sim_parse_fault(const char *text, size_t length, sim_fault *fault) {
  memset(fault, 0, sizeof *fault);
  if (length == 0 || length >= sizeof fault->text) return -1;
  memcpy(fault->text, text, length);
  fault->text[length] = '\0';
  char *at = strchr(fault->text, '@');
  if (at == NULL) return -1;
  if (sim_parse_fault_kind(fault->text, (size_t)(at - fault->text), fault) != 0) return -1;
  const char *where = at + 1;
  if (strncmp(where, "op=", 3) == 0) {
    fault->at_step = 0;
    return mk_parse_int(where + 3, 1, INT64_MAX, &fault->point);
  }
  if (strncmp(where, "step=", 5) == 0) {
    fault->at_step = 1;
    return mk_parse_int(where + 5, 0, INT64_MAX, &fault->point);
  }
  return -1;
}

/* Parses the whole fault list ("" clears it). Returns 0 on success. */
static int sim_parse_faults(const char *value, sim_config *config) {
  size_t count = 0;
  const char *item = value;
  while (*item != '\0') {
    const char *end = strchr(item, ';');
    size_t length = end != NULL ? (size_t)(end - item) : strlen(item);
    if (count == SIM_MAX_FAULTS || sim_parse_fault(item, length, &config->faults[count]) != 0) return -1;
    count++;
    item += length;
    if (*item == ';') item++;
  }
  config->num_faults = count;
  return 0;
}

static int sim_copy_text(const char *value, char *out) {
  size_t length = strlen(value);
  if (length == 0 || length >= SIM_MAX_TEXT) return -1;
  memcpy(out, value, length + 1);
  return 0;
}

/* Applies one key=value to the config. `origin` is appended to messages. */
static medley_error *sim_apply_option(sim_config *config, const char *key, const char *value, const char *origin) {
  int bad = 0;
  const char *expected = "";
  if (strcmp(key, "speed") == 0) {
    double speed = 0;
    bad = mk_parse_double(value, &speed) != 0 || !(speed >= SIM_MIN_SPEED) || speed > 1.0;
    if (!bad) config->speed = speed;
    expected = "expected a number in [1e-06, 1] (below 1e-06 the sim cannot honour its sleeps)";
  } else if (strcmp(key, "memory") == 0) {
    uint64_t memory = 0;
    bad = mk_parse_bytes(value, &memory) != 0 || memory == 0;
    if (!bad) config->memory = memory;
    expected = "expected a byte size like 512MiB";
  } else if (strcmp(key, "precision") == 0) {
    if (strcmp(value, "fp32") == 0) config->precision = SIM_FP32;
    else if (strcmp(value, "bf16") == 0) config->precision = SIM_BF16;
    else if (strcmp(value, "fp16") == 0) config->precision = SIM_FP16;
    else bad = 1;
    expected = "expected fp32, bf16 or fp16";
  } else if (strcmp(key, "kernels") == 0) {
    if (strcmp(value, "reference") == 0) config->kernels = SIM_KERNELS_REFERENCE;
    else if (strcmp(value, "cpu") == 0) config->kernels = SIM_KERNELS_CPU;
    else bad = 1;
    expected = "expected reference or cpu";
  } else if (strcmp(key, "vendor") == 0 || strcmp(key, "name") == 0) {
    bad = sim_copy_text(value, key[0] == 'v' ? config->vendor : config->name) != 0;
    expected = "expected a non-empty text of at most 127 characters";
  } else if (strcmp(key, "devices") == 0) {
    bad = mk_parse_int(value, 1, SIM_MAX_DEVICES, &config->devices) != 0;
    expected = "expected an integer from 1 to 1024";
  } else if (strcmp(key, "fault") == 0) {
    bad = sim_parse_faults(value, config) != 0;
    expected = sim_fault_help;
  } else if (strcmp(key, "costs") == 0) {
    size_t length = strlen(value);
    bad = length + 16 >= SIM_MAX_PATH;
    if (!bad) memcpy(config->costs_path, value, length + 1);
    expected = "expected a file path of at most 1000 characters (empty: keep no costs)";
  } else {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                    "sim option '%s' is unknown%s; accepted keys: speed, memory, precision, kernels, vendor, name, "
                    "devices, fault, costs",
                    key, origin);
  }
  if (bad) {
    return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "sim option %s='%s'%s: %s", key, value, origin, expected);
  }
  return NULL;
}

/* Applies MEDLEY_SIM_OPTIONS ("k=v,k=v"; empty items are skipped). */
static medley_error *sim_apply_env(sim_config *config) {
  const char *env = getenv(SIM_ENV);
  if (env == NULL || *env == '\0') return NULL;
  char *copy = strdup(env);
  if (copy == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "sim: out of host memory reading " SIM_ENV);
  medley_error *error = NULL;
  char *item = copy;
  while (item != NULL && error == NULL) {
    char *comma = strchr(item, ',');
    if (comma != NULL) *comma = '\0';
    if (*item != '\0') {
      char *equals = strchr(item, '=');
      if (equals == NULL) {
        error = mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, SIM_ENV " item '%s': expected key=value", item);
      } else {
        *equals = '\0';
        error = sim_apply_option(config, item, equals + 1, " (in " SIM_ENV ")");
      }
    }
    item = comma != NULL ? comma + 1 : NULL;
  }
  free(copy);
  return error;
}

/* The speed once every slow fault has fired must stay >= SIM_MIN_SPEED. Checked once the layers
   are merged, since speed and fault may come from different ones. */
static medley_error *sim_check_slowest(const sim_config *config) {
  double slowest = config->speed;
  for (size_t i = 0; i < config->num_faults; i++) {
    const sim_fault *fault = &config->faults[i];
    if (fault->kind != SIM_FAULT_SLOW) continue;
    slowest /= fault->factor;
    if (!(slowest >= SIM_MIN_SPEED)) {
      return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                      "sim option fault='%s': its slow faults take speed %g down to %g, below the least speed the "
                      "sim can honour (1e-06); the speed divided by every slow:F factor must stay in [1e-06, 1]",
                      fault->text, config->speed, slowest);
    }
  }
  return NULL;
}

/* Defaults, then the environment, then the explicit options. */
static medley_error *sim_load_config(sim_config *config, const medley_option *options, size_t num_options) {
  sim_config_defaults(config);
  medley_error *error = sim_apply_env(config);
  if (error != NULL) return error;
  error = mk_check_options(options, num_options);
  for (size_t i = 0; i < num_options && error == NULL; i++) {
    error = sim_apply_option(config, options[i].key, options[i].value, "");
  }
  return error != NULL ? error : sim_check_slowest(config);
}

/* ========================================================================= */
/* Precision: rounding f32 values to bf16 / fp16 and back                    */
/* ========================================================================= */

/* bf16 keeps the top 16 bits of an f32; round the dropped 16 to nearest even. */
static float sim_round_bf16(float x) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return x; /* NaN stays NaN */
  bits += 0x7fffu + ((bits >> 16) & 1u);             /* a carry may reach inf: correct */
  bits &= 0xffff0000u;
  memcpy(&x, &bits, sizeof x);
  return x;
}

/* fp16: 10 mantissa bits, exponents -14..15, subnormals down to 2^-24, max 65504. */
static float sim_round_fp16(float x) {
  if (!isfinite(x) || x == 0.0f) return x;
  double magnitude = fabs((double)x);
  int exponent = 0;
  frexp(magnitude, &exponent); /* magnitude = f * 2^exponent, f in [0.5, 1) */
  int e = exponent - 1;        /* floor(log2(magnitude)) */
  if (e < -14) e = -14;        /* subnormal range: fixed quantum 2^-24 */
  double quantum = ldexp(1.0, e - 10);
  double rounded = nearbyint(magnitude / quantum) * quantum; /* exact scaling; ties to even */
  if (rounded > 65504.0) rounded = INFINITY;
  return (float)copysign(rounded, (double)x);
}

static void sim_round_all(float *data, int64_t n, sim_precision precision) {
  if (precision == SIM_BF16) {
    for (int64_t i = 0; i < n; i++) data[i] = sim_round_bf16(data[i]);
  } else if (precision == SIM_FP16) {
    for (int64_t i = 0; i < n; i++) data[i] = sim_round_fp16(data[i]);
  }
}

/* ========================================================================= */
/* Time                                                                      */
/* ========================================================================= */

static double sim_now_seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* CPU time the calling thread has used (user + system): what a core did for it. */
static double sim_thread_cpu_seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static void sim_sleep_seconds(double seconds) {
  if (!(seconds > 0)) return;
  if (seconds > SIM_MAX_SLEEP) seconds = SIM_MAX_SLEEP; /* never reached at speeds >= SIM_MIN_SPEED */
  struct timespec wait;
  wait.tv_sec = (time_t)seconds;
  wait.tv_nsec = (long)((seconds - (double)wait.tv_sec) * 1e9);
  if (wait.tv_nsec >= 1000000000L) wait.tv_nsec = 999999999L;
  struct timespec left;
  while (nanosleep(&wait, &left) != 0 && errno == EINTR) wait = left;
}

/* ========================================================================= */
/* Op costs                                                                  */
/* ========================================================================= */

/* The least CPU time each op signature (kernels, precision, op name, every tensor's dtype and
   shape, every attribute) has taken on a device: the estimate of its cost on one UNCONTENDED
   host core. CPU time grows when another process shares the core's caches or the host's memory
   bandwidth; a real chip's kernel time does not, so the sim rates itself by the least it has
   seen. An open-addressing table keyed by a 64-bit FNV-1a hash of the signature (key 0 marks
   an empty slot). */
typedef struct {
  uint64_t *keys;
  double *seconds;
  size_t capacity; /* a power of two, or 0 before the first insert */
  size_t count;
} sim_costs;

static uint64_t sim_hash_bytes(uint64_t hash, const void *bytes, size_t length) {
  const unsigned char *p = bytes;
  for (size_t i = 0; i < length; i++) {
    hash ^= p[i];
    hash *= 1099511628211ULL;
  }
  return hash;
}

static uint64_t sim_op_signature(const sim_config *config, const char *op_name, const medley_tensor *inputs,
                                 size_t num_inputs, const medley_tensor *outputs, size_t num_outputs,
                                 const medley_attr *attrs, size_t num_attrs) {
  uint64_t hash = SIM_FNV_OFFSET;
  /* What computes the op is part of its cost: devices sharing a costs file differ in them. */
  int32_t how[2] = {(int32_t)config->kernels, (int32_t)config->precision};
  hash = sim_hash_bytes(hash, how, sizeof how);
  hash = sim_hash_bytes(hash, op_name, strlen(op_name) + 1);
  const medley_tensor *lists[2] = {inputs, outputs};
  size_t counts[2] = {num_inputs, num_outputs};
  for (int l = 0; l < 2; l++) {
    hash = sim_hash_bytes(hash, &counts[l], sizeof counts[l]);
    for (size_t i = 0; i < counts[l]; i++) {
      const medley_tensor *t = &lists[l][i];
      int32_t rank = t->rank < 0 ? 0 : (t->rank > MEDLEY_MAX_RANK ? MEDLEY_MAX_RANK : t->rank);
      hash = sim_hash_bytes(hash, &t->dtype, sizeof t->dtype);
      hash = sim_hash_bytes(hash, &rank, sizeof rank);
      hash = sim_hash_bytes(hash, t->shape, sizeof t->shape[0] * (size_t)rank);
    }
  }
  for (size_t i = 0; i < num_attrs; i++) {
    if (attrs[i].name != NULL) hash = sim_hash_bytes(hash, attrs[i].name, strlen(attrs[i].name) + 1);
    hash = sim_hash_bytes(hash, &attrs[i].value, sizeof attrs[i].value);
  }
  return hash == 0 ? 1 : hash;
}

/* The slot of `key`: where it is, or the empty slot where it would go. capacity > 0. */
static size_t sim_costs_slot(const sim_costs *costs, uint64_t key) {
  size_t mask = costs->capacity - 1;
  size_t i = (size_t)(key ^ (key >> 29)) & mask;
  while (costs->keys[i] != 0 && costs->keys[i] != key) i = (i + 1) & mask;
  return i;
}

/* Doubles the table (256 slots at first), rehashing what it holds; 0 when out of host memory. */
static int sim_costs_grow(sim_costs *costs) {
  size_t capacity = costs->capacity == 0 ? 256 : costs->capacity * 2;
  sim_costs grown = {calloc(capacity, sizeof(uint64_t)), calloc(capacity, sizeof(double)), capacity, 0};
  if (grown.keys == NULL || grown.seconds == NULL) {
    free(grown.keys);
    free(grown.seconds);
    return 0;
  }
  for (size_t i = 0; i < costs->capacity; i++) {
    if (costs->keys[i] == 0) continue;
    size_t slot = sim_costs_slot(&grown, costs->keys[i]);
    grown.keys[slot] = costs->keys[i];
    grown.seconds[slot] = costs->seconds[i];
    grown.count++;
  }
  free(costs->keys);
  free(costs->seconds);
  *costs = grown;
  return 1;
}

/* The least of `measured` and every earlier cost of `key`, remembered for next time. The table
   grows at half full; when it cannot (no host memory) and a new key would fill its last empty
   slot, the measurement itself is the cost. */
static double sim_costs_least(sim_costs *costs, uint64_t key, double measured) {
  if ((costs->count + 1) * 2 > costs->capacity) (void)sim_costs_grow(costs);
  if (costs->capacity == 0) return measured;
  size_t slot = sim_costs_slot(costs, key);
  if (costs->keys[slot] == 0) {
    if (costs->count + 1 >= costs->capacity) return measured;
    costs->keys[slot] = key;
    costs->seconds[slot] = measured;
    costs->count++;
    return measured;
  }
  if (measured < costs->seconds[slot]) costs->seconds[slot] = measured;
  return costs->seconds[slot];
}

static void sim_costs_release(sim_costs *costs) {
  free(costs->keys);
  free(costs->seconds);
  *costs = (sim_costs){NULL, NULL, 0, 0};
}

/* The table kept in a file (option costs=PATH), so that every process on the host rates an op
   alike. Layout, native byte order (the file never leaves the host that measured it):
     "MDSIMCST" | u32 version (1) | u32 count | count x (u64 key, f64 seconds) | u64 FNV-1a of
     everything before it.
   Merges the file's entries into `costs` (the least of each). A missing, short, oversized or
   corrupt file adds nothing: the table is a cache, and closing the device rewrites it. */
static void sim_costs_merge_file(sim_costs *costs, const char *path) {
  FILE *file = fopen(path, "rb");
  if (file == NULL) return;
  unsigned char head[16];
  unsigned char *data = NULL;
  if (fread(head, 1, sizeof head, file) != sizeof head || memcmp(head, SIM_COSTS_MAGIC, 8) != 0) goto done;
  uint32_t version, count;
  memcpy(&version, head + 8, 4);
  memcpy(&count, head + 12, 4);
  if (version != SIM_COSTS_VERSION || count > SIM_COSTS_MAX_ENTRIES) goto done;
  size_t body = (size_t)count * 16;
  data = malloc(body + 8 + 1);
  if (data == NULL || fread(data, 1, body + 9, file) != body + 8) goto done; /* exact length */
  uint64_t stored;
  memcpy(&stored, data + body, 8);
  if (sim_hash_bytes(sim_hash_bytes(SIM_FNV_OFFSET, head, sizeof head), data, body) != stored) goto done;
  for (size_t i = 0; i < count; i++) {
    uint64_t key;
    double seconds;
    memcpy(&key, data + 16 * i, 8);
    memcpy(&seconds, data + 16 * i + 8, 8);
    if (key != 0 && seconds >= 0 && isfinite(seconds)) (void)sim_costs_least(costs, key, seconds);
  }
done:
  free(data);
  fclose(file);
}

/* Writes `costs` to `path` through a file beside it and a rename: readers see the old table or
   the new one, never half of one. Returns 0 on success. */
static int sim_costs_write_file(const sim_costs *costs, const char *path) {
  char temporary[SIM_MAX_PATH + 32];
  snprintf(temporary, sizeof temporary, "%s.tmp.%ld", path, (long)getpid());
  size_t body = costs->count * 16;
  unsigned char *data = malloc(16 + body + 8);
  if (data == NULL) return -1;
  uint32_t version = SIM_COSTS_VERSION, count = (uint32_t)costs->count;
  memcpy(data, SIM_COSTS_MAGIC, 8);
  memcpy(data + 8, &version, 4);
  memcpy(data + 12, &count, 4);
  size_t at = 16;
  for (size_t i = 0; i < costs->capacity; i++) {
    if (costs->keys[i] == 0) continue;
    memcpy(data + at, &costs->keys[i], 8);
    memcpy(data + at + 8, &costs->seconds[i], 8);
    at += 16;
  }
  uint64_t sum = sim_hash_bytes(SIM_FNV_OFFSET, data, at);
  memcpy(data + at, &sum, 8);
  at += 8;
  int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int ok = fd >= 0;
  for (size_t done = 0; ok && done < at;) {
    ssize_t wrote = write(fd, data + done, at - done);
    if (wrote < 0 && errno == EINTR) continue;
    ok = wrote > 0;
    if (ok) done += (size_t)wrote;
  }
  if (ok) ok = fsync(fd) == 0;
  if (fd >= 0 && close(fd) != 0) ok = 0;
  if (ok) ok = rename(temporary, path) == 0;
  if (!ok) unlink(temporary);
  free(data);
  return ok ? 0 : -1;
}

/* Takes the lock on PATH.lock (an fcntl write lock, waited for; the kernel drops it if the holder
   dies). Returns the open descriptor, or -1 with errno set. */
static int sim_costs_lock(const char *path) {
  char lock_path[SIM_MAX_PATH + 8];
  snprintf(lock_path, sizeof lock_path, "%s.lock", path);
  int fd = open(lock_path, O_RDWR | O_CREAT, 0644);
  if (fd < 0) return -1;
  struct flock lock;
  memset(&lock, 0, sizeof lock);
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  while (fcntl(fd, F_SETLKW, &lock) != 0) {
    if (errno == EINTR) continue;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

/* Merges what this device learned into the file: under the lock, read what other processes
   wrote since, keep the least of each, write it back. A failure loses only this run's learning. */
static void sim_costs_save(sim_costs *costs, const char *path) {
  if (costs->count == 0) return;
  int lock = sim_costs_lock(path);
  if (lock < 0) return;
  sim_costs_merge_file(costs, path);
  (void)sim_costs_write_file(costs, path);
  close(lock); /* releases the lock */
}

/* ========================================================================= */
/* Devices and streams                                                       */
/* ========================================================================= */

struct medley_device {
  mk_host_device host; /* first: memory and streams, used by the kit's mk_host_* entries */
  sim_config config;
  int32_t index;
  double speed;           /* config.speed, divided by slow faults */
  double oversleep;       /* seconds earlier ops lasted beyond c/S, repaid by later ops */
  sim_costs costs;        /* least CPU time seen per op signature: the uncontended cost c */
  cpu_scratch scratch;    /* kernels=cpu: attention's temporary memory */
  int64_t op_count;       /* op_launch calls so far */
  int lost;               /* an error fault fired */
  char lost_reason[64];
  int pending_nan;        /* a nan fault waits for the next op that runs */
  int pending_flip;       /* a flip fault waits for the next op that runs */
  int defective;          /* a corrupt fault fired: every op from now on is corrupted */
};

/* A lost device fails every entry except device_close: the kit runs this after its handle check. */
static medley_error *sim_check_lost(const medley_device *device, const char *entry) {
  if (device->lost) {
    return mk_error(MEDLEY_ERROR_DEVICE_LOST, "%s: sim device %d was lost (injected fault %s); close it", entry,
                    (int)device->index, device->lost_reason);
  }
  return NULL;
}

/* What the kit's shared entries need to know: the name in messages, the float dtypes, the lost check.
   Memory, copies and streams are the kit's mk_host_* entries as they are: copies are not stretched by
   speed, and a lost device fails them through sim_check_lost. */
static const mk_host_kind sim_kind = {"sim", MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32), sim_check_lost};

static medley_error *sim_check_device(const medley_device *device, const char *entry) {
  return mk_host_check_device(device, &sim_kind, entry);
}

static medley_error *sim_plugin_info(medley_plugin_info *out) {
  return mk_plugin_info(out, "sim", "Medley", "1.0.0");
}

static medley_error *sim_device_count(int32_t *out_count) {
  if (out_count == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_count: out_count is NULL");
  sim_config config;
  medley_error *error = sim_load_config(&config, NULL, 0);
  if (error != NULL) return error;
  *out_count = (int32_t)config.devices;
  return NULL;
}

static medley_error *sim_device_open(int32_t index, const medley_option *options, size_t num_options,
                                     medley_device **out_device) {
  if (out_device == NULL) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "device_open: out_device is NULL");
  *out_device = NULL;
  medley_device *device = calloc(1, sizeof *device);
  if (device == NULL) return mk_error(MEDLEY_ERROR_OUT_OF_MEMORY, "device_open: out of host memory");
  medley_error *error = sim_load_config(&device->config, options, num_options);
  if (error == NULL && (index < 0 || index >= device->config.devices)) {
    error = mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                     "device_open: sim device index %d does not exist; there are %lld (set devices=N to have more)",
                     (int)index, (long long)device->config.devices);
  }
  if (error != NULL) {
    free(device);
    return error;
  }
  if (device->config.costs_path[0] != '\0') {
    int lock = sim_costs_lock(device->config.costs_path);
    if (lock < 0) {
      error = mk_error(MEDLEY_ERROR_INVALID_ARGUMENT,
                       "sim option costs='%s': cannot open %s.lock (%s); name a file in a writable directory",
                       device->config.costs_path, device->config.costs_path, strerror(errno));
      free(device);
      return error;
    }
    sim_costs_merge_file(&device->costs, device->config.costs_path);
    close(lock);
  }
  mk_host_device_init(&device->host, &sim_kind, device->config.memory);
  device->index = index;
  device->speed = device->config.speed;
  if (device->config.kernels == SIM_KERNELS_CPU) (void)cpu_blas_threads(1); /* process-wide */
  *out_device = device;
  return NULL;
}

/* Close works on a lost device too: only the handle is checked. */
static medley_error *sim_device_close(medley_device *device) {
  medley_error *error = mk_host_check_handle(device, &sim_kind, "device_close");
  if (error != NULL) return error;
  mk_host_device_release(&device->host);
  cpu_scratch_release(&device->scratch);
  if (device->config.costs_path[0] != '\0') sim_costs_save(&device->costs, device->config.costs_path);
  sim_costs_release(&device->costs);
  free(device);
  return NULL;
}

static medley_error *sim_device_describe(medley_device *device, medley_device_desc *out) {
  medley_error *error = sim_check_device(device, "device_describe");
  if (error != NULL) return error;
  return mk_describe(out, device->config.name, device->config.vendor, device->host.memory.capacity,
                     MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_F32) | MEDLEY_DTYPE_BIT(MEDLEY_DTYPE_I32), 1);
}

/* ========================================================================= */
/* Faults                                                                    */
/* ========================================================================= */

static void sim_crash(const medley_device *device, const sim_fault *fault) {
  fprintf(stderr, "medley sim: device %d: injected fault %s: the process exits with status %d\n",
          (int)device->index, fault->text, SIM_CRASH_STATUS);
  fflush(stderr);
  _exit(SIM_CRASH_STATUS);
}

static void sim_hang(const medley_device *device, const sim_fault *fault) {
  fprintf(stderr, "medley sim: device %d: injected fault %s: this call never returns\n", (int)device->index,
          fault->text);
  fflush(stderr);
  for (;;) sleep(3600);
}

/*
 * Fires one fault. Returns an error when the call must fail (error fault).
 * crash and hang do not return; nan and flip are left pending for the
 * next op that runs; corrupt corrupts every op from the next one on; slow
 * changes the speed from now on.
 */
static medley_error *sim_fire(medley_device *device, sim_fault *fault, const char *entry) {
  fault->fired = 1;
  switch (fault->kind) {
    case SIM_FAULT_CRASH: sim_crash(device, fault); break;
    case SIM_FAULT_HANG: sim_hang(device, fault); break;
    case SIM_FAULT_NAN: device->pending_nan = 1; break;
    case SIM_FAULT_FLIP: device->pending_flip = 1; break;
    case SIM_FAULT_CORRUPT: device->defective = 1; break;
    case SIM_FAULT_SLOW: device->speed /= fault->factor; break;
    case SIM_FAULT_ERROR:
      device->lost = 1;
      snprintf(device->lost_reason, sizeof device->lost_reason, "%s", fault->text);
      return mk_error(MEDLEY_ERROR_DEVICE_LOST, "%s: sim device %d was lost (injected fault %s); close it", entry,
                      (int)device->index, fault->text);
  }
  return NULL;
}

/* Fires every unfired fault whose point is reached (in the order written). */
static medley_error *sim_fire_due(medley_device *device, int at_step, int64_t point, const char *entry) {
  for (size_t i = 0; i < device->config.num_faults; i++) {
    sim_fault *fault = &device->config.faults[i];
    if (fault->fired || fault->at_step != at_step) continue;
    int due = at_step ? point >= fault->point : point == fault->point;
    if (!due) continue;
    medley_error *error = sim_fire(device, fault, entry);
    if (error != NULL) return error;
  }
  return NULL;
}

static medley_error *sim_step_begin(medley_device *device, int64_t step) {
  medley_error *error = sim_check_device(device, "step_begin");
  if (error != NULL) return error;
  if (step < 0) return mk_error(MEDLEY_ERROR_INVALID_ARGUMENT, "step_begin: step %lld is negative", (long long)step);
  return sim_fire_due(device, 1, step, "step_begin");
}

/* ========================================================================= */
/* Ops                                                                       */
/* ========================================================================= */

/* What the "chip" does to the outputs after the kernel: precision, then nan/flip/corrupt. */
static void sim_post_process(medley_device *device, const mk_op_args *args, const medley_tensor *outputs,
                             size_t num_outputs) {
  for (size_t i = 0; i < num_outputs; i++) {
    sim_round_all(args->out[i], mk_numel(&outputs[i]), device->config.precision);
  }
  if (device->pending_nan) {
    device->pending_nan = 0;
    for (size_t i = 0; i < num_outputs; i++) {
      float *data = args->out[i];
      for (int64_t k = 0, n = mk_numel(&outputs[i]); k < n; k++) data[k] = NAN;
    }
  }
  if (device->pending_flip || device->defective) {
    device->pending_flip = 0;
    unsigned char *element = (unsigned char *)args->out[0] + (size_t)((mk_numel(&outputs[0]) - 1) / 2) * 4;
    uint32_t bits;
    memcpy(&bits, element, sizeof bits);
    bits ^= 1u << 30; /* the top exponent bit */
    memcpy(element, &bits, sizeof bits);
  }
}

static medley_error *sim_op_launch(medley_device *device, medley_stream *stream, const char *op_name,
                                   const medley_tensor *inputs, size_t num_inputs, const medley_tensor *outputs,
                                   size_t num_outputs, const medley_attr *attrs, size_t num_attrs) {
  medley_error *error = sim_check_device(device, "op_launch");
  if (error == NULL) error = mk_stream_check(&device->host.streams, stream, "op_launch");
  if (error != NULL) return error;
  device->op_count++;
  error = sim_fire_due(device, 0, device->op_count, "op_launch");
  if (error != NULL) return error;

  mk_op_args args;
  error = mk_op_prepare(&device->host.memory, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs,
                        sim_kind.float_dtypes, &args);
  if (error != NULL) return error;

  if (device->config.kernels == SIM_KERNELS_CPU) (void)cpu_blas_threads(1); /* another device may have changed it */
  double start = sim_now_seconds();
  double cpu_start = sim_thread_cpu_seconds();
  if (device->config.kernels == SIM_KERNELS_CPU) {
    error = cpu_run(&device->scratch, &args);
    if (error != NULL) return error; /* a pending nan/flip waits for the next launch that runs */
  } else {
    mrk_run(&args);
  }
  sim_post_process(device, &args, outputs, num_outputs);
  double compute = sim_costs_least(
      &device->costs, sim_op_signature(&device->config, op_name, inputs, num_inputs, outputs, num_outputs, attrs, num_attrs),
      sim_thread_cpu_seconds() - cpu_start);
  /* A chip at speed S takes c/S, c being the least CPU time this op signature has taken here:
     one uncontended host core's time, whatever else the host runs. Sleep what is left of c/S
     after the wall time already spent (equal to c when uncontended: the sleep is then
     c*(1/S - 1)). A sleep always overshoots a little (timer slack, waiting for a core), and a
     preempted compute can overrun c/S; the excess is carried over and taken off later sleeps (at most
     SIM_MAX_OVERSLEEP of it), so a sequence of ops lasts c/S overall, not more. */
  double owed = compute / device->speed - (sim_now_seconds() - start) - device->oversleep;
  if (owed > 0) {
    double asleep = sim_now_seconds();
    sim_sleep_seconds(owed);
    device->oversleep = sim_now_seconds() - asleep - owed;
  } else {
    device->oversleep = -owed;
  }
  if (device->oversleep > SIM_MAX_OVERSLEEP) device->oversleep = SIM_MAX_OVERSLEEP;
  return NULL;
}

/* ========================================================================= */
/* The table                                                                 */
/* ========================================================================= */

static const medley_adapter_api sim_api = {
    .struct_size = sizeof(medley_adapter_api),
    .abi_major = MEDLEY_ABI_MAJOR,
    .abi_minor = MEDLEY_ABI_MINOR,
    .opset_version = MEDLEY_OPSET_VERSION,
    .reserved = 0,
    .error_free = mk_error_free,
    .plugin_info = sim_plugin_info,
    .device_count = sim_device_count,
    .device_open = sim_device_open,
    .device_close = sim_device_close,
    .device_describe = sim_device_describe,
    MK_HOST_MEMORY_ENTRIES,
    .op_launch = sim_op_launch,
    .step_begin = sim_step_begin,
};

MEDLEY_ADAPTER_EXPORT const medley_adapter_api *medley_adapter_get_api(void) { return &sim_api; }
