#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# one worker per core (pytest-xdist): the suite is mostly single-threaded LLVM compiles (25 min on 2 cores in one
# process, 15 in two); worksteal evens out the long tuning and emulation tests at the end
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n auto --dist worksteal "$@"
