#include "CMedleyAdapter.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

int CMedleyAdapter_die_with_parent(void) {
#if defined(__linux__)
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  return getppid() == 1;
#else
  return 0;
#endif
}

_Static_assert(sizeof(medley_tensor) == 8 + 8 + 4 + 4 + 8 * MEDLEY_MAX_RANK,
               "medley_tensor layout changed: the ABI is append-only");
_Static_assert(offsetof(medley_adapter_api, error_free) == 8 + 16,
               "the first entry must follow struct_size and the four version words");

static const CMedleyAdapter_entry entries[] = {
#define CMEDLEY_ENTRY_(field, type, required, since) \
  {#field, offsetof(medley_adapter_api, field), required, since},
    MEDLEY_ADAPTER_ENTRIES(CMEDLEY_ENTRY_)
#undef CMEDLEY_ENTRY_
};

static const CMedleyAdapter_op opset[] = {
#define CMEDLEY_OP_(id, name, imin, imax, omin, omax) {name, imin, imax, omin, omax},
    MEDLEY_OPSET_V1(CMEDLEY_OP_)
#undef CMEDLEY_OP_
};

const CMedleyAdapter_entry *CMedleyAdapter_entries(size_t *count) {
  *count = sizeof entries / sizeof entries[0];
  return entries;
}

const CMedleyAdapter_op *CMedleyAdapter_opset(size_t *count) {
  *count = sizeof opset / sizeof opset[0];
  return opset;
}

const void *CMedleyAdapter_entry_pointer(const medley_adapter_api *api, size_t offset) {
  const void *pointer = NULL;
  memcpy(&pointer, (const char *)api + offset, sizeof pointer);
  return pointer;
}

size_t CMedleyAdapter_api_size(void) { return sizeof(medley_adapter_api); }

const medley_adapter_api *CMedleyAdapter_call_entry(void *symbol) {
  medley_adapter_get_api_fn entry;
  memcpy(&entry, &symbol, sizeof entry);
  return entry();
}
