/*
 * CMedleyAdapter.h — the adapter ABI as the Swift host imports it.
 *
 * Besides the ABI itself this exposes, from the header's own X-macros, the
 * list of table entries (with required/optional) and the opset, so the host
 * and the generated docs use the one list the header defines.
 */
#ifndef CMEDLEY_ADAPTER_H
#define CMEDLEY_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "../../../adapters/include/medley_adapter.h"

/** One entry of the adapter table. */
typedef struct CMedleyAdapter_entry {
  const char *name;
  size_t offset; /* byte offset of the function pointer within medley_adapter_api */
  int32_t required;
  int32_t since_minor;
} CMedleyAdapter_entry;

/** One op of the opset. */
typedef struct CMedleyAdapter_op {
  const char *name;
  int32_t inputs_min, inputs_max, outputs_min, outputs_max;
} CMedleyAdapter_op;

/** The table's entries in order; sets *count. */
const CMedleyAdapter_entry *CMedleyAdapter_entries(size_t *count);
/** Opset v1 in order; sets *count. */
const CMedleyAdapter_op *CMedleyAdapter_opset(size_t *count);
/** Reads the (possibly NULL) function pointer at `offset` of `api` as an untyped pointer. */
const void *CMedleyAdapter_entry_pointer(const medley_adapter_api *api, size_t offset);
/** sizeof(medley_adapter_api) for this host. */
size_t CMedleyAdapter_api_size(void);
/** Calls an adapter's entry function (a medley_adapter_get_api_fn). */
const medley_adapter_api *CMedleyAdapter_call_entry(void *symbol);
/**
 * Asks the kernel to SIGKILL this process when its parent ends (Linux; elsewhere
 * nothing). Returns 1 when the parent is already gone. For the check's child process.
 */
int CMedleyAdapter_die_with_parent(void);

#endif
