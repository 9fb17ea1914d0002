#!/usr/bin/env bash
# The GPU side of bench/gpu_opencl.py, on a machine with a GPU's OpenCL driver and python3 with numpy (no rt3d, no
# TVM, no network needed):
#   bash bench/gpu_run.sh ARTS.tar.gz OUT [WHEELS_DIR]
# ARTS.tar.gz is what `bench/gpu_opencl.py prepare DIR` packed (DIR.tar.gz); WHEELS_DIR, when given, holds the wheels
# of pyopencl and its needs (pytools, platformdirs, siphash24), installed into a private folder; where no OpenCL ICD
# is registered and NVIDIA's driver library is found, it is registered for this run only (containers often mount the
# driver without /etc/OpenCL/vendors). Writes OUT/gpu.json, OUT/gpu.md and OUT/run.log. Wheels for a GPU machine
# with Python 3.12 and no network, fetched beforehand where PyPI is reachable:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d WHEELS_DIR pyopencl pytools platformdirs siphash24
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash bench/gpu_run.sh ARTS.tar.gz OUT [WHEELS_DIR]" >&2; exit 2; }
ARTS=$1 OUT=$2 WHEELS=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -n "$WHEELS" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${OCL_ICD_VENDORS:-}" ] && ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then
  lib=$(ls /usr/local/nvidia/lib64/libnvidia-opencl.so.1 /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 \
        2>/dev/null | head -1 || true)
  if [ -n "$lib" ]; then
    mkdir -p "$WORK/icd" && echo "$lib" > "$WORK/icd/nvidia.icd"
    export OCL_ICD_VENDORS="$WORK/icd" LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "[gpu_run] registered $lib as the OpenCL driver"
  fi
fi
"$PY" -c "import pyopencl as cl; [print('[gpu_run] OpenCL device:', p.name, '|', d.name, '|', d.version, '|', \
  d.driver_version) for p in cl.get_platforms() for d in p.get_devices()]"
mkdir -p "$WORK/arts" "$OUT"
tar xzf "$ARTS" -C "$WORK/arts"
dir=$(find "$WORK/arts" -mindepth 1 -maxdepth 1 -type d | head -1)
PYTHONUNBUFFERED=1 "$PY" "$HERE/gpu_opencl.py" run "$dir" --out "$OUT" --repeat "${REPEAT:-30}" 2>&1 | tee "$OUT/run.log"
