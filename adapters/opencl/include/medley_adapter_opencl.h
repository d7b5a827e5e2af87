/*
 * medley_adapter_opencl.h — the one symbol the opencl adapter exports.
 *
 * Hosts do not include this: they dlopen the library and look up
 * MEDLEY_ADAPTER_ENTRY_SYMBOL. It exists so SwiftPM has the public header
 * directory a C library target needs (the kernels are OpenCL C in kernels/,
 * compiled in through opencl_kernels_source.h); the adapter does not need it.
 */
#ifndef MEDLEY_ADAPTER_OPENCL_H
#define MEDLEY_ADAPTER_OPENCL_H

struct medley_adapter_api;

/** Returns the opencl adapter's table (see medley_adapter.h). */
const struct medley_adapter_api *medley_adapter_get_api(void);

#endif /* MEDLEY_ADAPTER_OPENCL_H */
