/*
 * medley_adapter_cpu.h — the one symbol the cpu adapter exports.
 *
 * Hosts do not include this: they dlopen the library and look up
 * MEDLEY_ADAPTER_ENTRY_SYMBOL. It exists so SwiftPM has the public header
 * directory a C library target needs (the kernels and their header live in
 * adapters/cpu-kernels); the adapter's source does not need it.
 */
#ifndef MEDLEY_ADAPTER_CPU_H
#define MEDLEY_ADAPTER_CPU_H

struct medley_adapter_api;

/** Returns the cpu adapter's table (see medley_adapter.h). */
const struct medley_adapter_api *medley_adapter_get_api(void);

#endif /* MEDLEY_ADAPTER_CPU_H */
