#!/usr/bin/env bash
# Set up rt3d on a fresh machine: Debian packages (when root and missing), a virtual environment in .venv,
# torch (CPU build, pinned, installed first so nothing drags in CUDA), then the package with its test extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RT3D_VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
command -v qemu-aarch64 >/dev/null 2>&1 || need_apt+=(qemu-user)
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need_apt+=(g++-aarch64-linux-gnu)
[ -e /etc/OpenCL/vendors/pocl.icd ] || need_apt+=(pocl-opencl-icd)
[ -e /usr/include/CL/cl.h ] || need_apt+=(ocl-icd-opencl-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian packages: ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[setup] warning: missing Debian packages (${need_apt[*]}); not root, skipping" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU)"
  $PIP install "torch==2.13.0"
fi
if ! "$VENV/bin/python" -c "import rt3d, tvm, onnx, onnxruntime, hypothesis" 2>/dev/null || [ pyproject.toml -nt "$VENV/.rt3d-installed" ]; then
  echo "[setup] installing rt3d and its dependencies"
  $PIP install -e ".[test]"
  touch "$VENV/.rt3d-installed"
fi
# the TVM runtime for aarch64 devices (PyPI's aarch64 wheels of the same versions), for the arm64 runner and tests
"$VENV/bin/python" -m rt3d.targets.arm_neon.deploy fetch-runtime >/dev/null
