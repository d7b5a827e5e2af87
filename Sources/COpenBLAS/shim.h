/*
 * shim.h — OpenBLAS as the Swift host sees it: the plain cblas_sgemm baseline
 * that `medley adapter bench` compares matmul ops against.
 * cblas.h comes from Debian's libopenblas-dev (pkg-config openblas).
 */
#ifndef MEDLEY_COPENBLAS_SHIM_H
#define MEDLEY_COPENBLAS_SHIM_H

#include <cblas.h>

/* Declared again so the shim does not depend on which cblas.h is installed. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

#endif
