// The fuzzer's process entry in a debug build.
//
// SwiftPM links a debug executable with `--defsym main=<Module>_main` (so tests can link the
// module), but with -parse-as-library the Swift module has no main to alias. This function is
// that alias target: it starts libFuzzer's driver on the Swift entry point. In a release build
// the alias is not made and libFuzzer's own main runs; this function is then unused.
#include "FuzzEntry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int FuzzFrameDecoder_main(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}
