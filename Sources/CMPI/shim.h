/*
 * CMPI: Open MPI as Swift sees it.
 *
 * Open MPI defines its predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM,
 * MPI_IN_PLACE, ...) as cast macros over global symbols; Swift cannot import
 * them. Each one is wrapped here in a `static inline` getter with the target's
 * prefix, so the Swift side never spells a macro.
 */
#ifndef CMPI_SHIM_H
#define CMPI_SHIM_H

#include <mpi.h>

/* Communicators. */
static inline MPI_Comm CMPI_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm CMPI_comm_self(void) { return MPI_COMM_SELF; }
static inline MPI_Comm CMPI_comm_null(void) { return MPI_COMM_NULL; }

/* Datatypes. */
static inline MPI_Datatype CMPI_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype CMPI_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype CMPI_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype CMPI_int8(void) { return MPI_INT8_T; }
static inline MPI_Datatype CMPI_uint8(void) { return MPI_UINT8_T; }
static inline MPI_Datatype CMPI_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype CMPI_uint32(void) { return MPI_UINT32_T; }
static inline MPI_Datatype CMPI_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype CMPI_uint64(void) { return MPI_UINT64_T; }

/* Reduction operations. */
static inline MPI_Op CMPI_sum(void) { return MPI_SUM; }
static inline MPI_Op CMPI_min(void) { return MPI_MIN; }
static inline MPI_Op CMPI_max(void) { return MPI_MAX; }
static inline MPI_Op CMPI_band(void) { return MPI_BAND; }

/* Special buffers, statuses and constants. */
static inline void *CMPI_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *CMPI_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline int CMPI_any_source(void) { return MPI_ANY_SOURCE; }
static inline int CMPI_any_tag(void) { return MPI_ANY_TAG; }
static inline int CMPI_undefined(void) { return MPI_UNDEFINED; }
static inline int CMPI_success(void) { return MPI_SUCCESS; }
static inline int CMPI_max_error_string(void) { return MPI_MAX_ERROR_STRING; }

/* Thread levels. */
static inline int CMPI_thread_single(void) { return MPI_THREAD_SINGLE; }
static inline int CMPI_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int CMPI_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int CMPI_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }

/* Error handlers. */
static inline MPI_Errhandler CMPI_errors_return(void) { return MPI_ERRORS_RETURN; }

/* Status fields (the struct's member names differ between MPI libraries). */
static inline int CMPI_status_source(const MPI_Status *s) { return s->MPI_SOURCE; }
static inline int CMPI_status_tag(const MPI_Status *s) { return s->MPI_TAG; }
static inline int CMPI_status_error(const MPI_Status *s) { return s->MPI_ERROR; }

#endif /* CMPI_SHIM_H */
