#!/usr/bin/env bash
# Set up (if needed) with the benchmark's peer engines, then run the peer benchmark. Arguments go to it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -c "import openvino, MNN, matplotlib" 2>/dev/null || \
  .venv/bin/python -m pip --disable-pip-version-check -q install -e ".[bench]"
exec .venv/bin/python bench/peer_benchmark.py "$@"
