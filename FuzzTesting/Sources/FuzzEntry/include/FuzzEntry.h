#ifndef MEDLEY_FUZZ_ENTRY_H
#define MEDLEY_FUZZ_ENTRY_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (in the fuzzer runtime that -sanitize=fuzzer links).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
