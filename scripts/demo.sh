#!/usr/bin/env bash
# Set up (if needed) and run the demo: build the built-in C3D for this machine, run it on a generated clip,
# print the top classes and the latency; then the same C3D pruned at random (KGS 8x4, 3.6x fewer FLOPs), timed
# against it (rt3d demo --sparse none: dense only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/rt3d demo "$@"
