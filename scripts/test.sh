#!/usr/bin/env bash
# Set up (if needed) and run the test suite; slow end-to-end runs execute in their small CI size.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q -n 2 --durations=15 "$@"
