/*
 * medley_adapter_reference.h — the one symbol the reference adapter exports.
 *
 * Hosts do not include this: they dlopen the library and look up
 * MEDLEY_ADAPTER_ENTRY_SYMBOL. It exists so SwiftPM has the public header
 * directory a C library target needs; the adapter's source does not need it
 * (so it also builds with a plain cc line, like the template).
 */
#ifndef MEDLEY_ADAPTER_REFERENCE_H
#define MEDLEY_ADAPTER_REFERENCE_H

struct medley_adapter_api;

/** Returns the reference adapter's table (see medley_adapter.h). */
const struct medley_adapter_api *medley_adapter_get_api(void);

#endif /* MEDLEY_ADAPTER_REFERENCE_H */
