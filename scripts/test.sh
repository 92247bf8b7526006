#!/usr/bin/env bash
# The test suite: unit tests plus integration tests against a real in-process vLLM engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${S1_VENV:-.venv}/bin/python" -m pytest "$@"
