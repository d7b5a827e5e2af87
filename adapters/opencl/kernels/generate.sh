#!/bin/sh
# Regenerates adapters/opencl/opencl_kernels_source.h from opencl_kernels.cl:
# every line of the kernel source becomes one escaped C string line. The
# output depends only on the .cl file, so running it again gives the same
# bytes (the header is checked in; regenerate after editing the kernels).
#
#   sh adapters/opencl/kernels/generate.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src="$here/opencl_kernels.cl"
out="$here/../opencl_kernels_source.h"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT INT TERM
{
  printf '%s\n' '/* Generated from kernels/opencl_kernels.cl by kernels/generate.sh; do not edit. */'
  printf '%s\n' '#ifndef MEDLEY_OPENCL_KERNELS_SOURCE_H'
  printf '%s\n' '#define MEDLEY_OPENCL_KERNELS_SOURCE_H'
  printf '%s\n' 'static const char medley_opencl_kernels[] ='
  LC_ALL=C sed -e 's/\r$//' -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/	/\\t/g' -e 's/^/"/' -e 's/$/\\n"/' "$src"
  printf '%s\n' ';'
  printf '%s\n' '#endif'
} >"$tmp"
mv "$tmp" "$out"
trap - EXIT INT TERM
