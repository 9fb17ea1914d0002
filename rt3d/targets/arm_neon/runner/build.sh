#!/usr/bin/env bash
# Build the rt3d runner for the device.
#   TVM_RUNTIME=DIR   a folder with lib/libtvm_runtime.so, lib/libtvm_ffi.so and include/ (tvm/ffi headers, dlpack);
#                     `python -m rt3d.targets.arm_neon.deploy fetch-runtime` makes one from PyPI's aarch64 wheels
#   CXX=...           the compiler (default aarch64-linux-gnu-g++; an NDK clang++ for Android)
# Writes ./rt3d_runner next to this script. Run on the device (or under qemu-aarch64 -L /usr/aarch64-linux-gnu):
#   LD_LIBRARY_PATH=$TVM_RUNTIME/lib ./rt3d_runner .. --input clip.bin --output-prefix out --repeat 10
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${TVM_RUNTIME:?set TVM_RUNTIME to the folder with lib/ and include/ of the TVM runtime for the device}"
CXX="${CXX:-aarch64-linux-gnu-g++}"
# -fno-tree-vectorize: g++-aarch64 12.2 hits an internal compiler error on this file at -O2 without it
"$CXX" -std=c++17 -O2 -fno-tree-vectorize -I"$TVM_RUNTIME/include" "$here/runner.cc" -o "$here/rt3d_runner" \
  -L"$TVM_RUNTIME/lib" -ltvm_ffi -Wl,--no-as-needed -ltvm_runtime -Wl,--as-needed -Wl,-rpath,'$ORIGIN/../lib' \
  -lpthread -ldl
echo "built $here/rt3d_runner"
