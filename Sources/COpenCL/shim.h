/* The OpenCL API at version 1.2, the level the opencl adapter uses (so it runs on every vendor's driver). */
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
