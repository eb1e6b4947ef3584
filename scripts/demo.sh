#!/usr/bin/env bash
# Set up (if needed) and run the offline CPU demo on the shared real CIFAR-10 images.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/synaug demo "$@"
