#!/usr/bin/env bash
# The main job: budget forcing on the shipped toy reasoner (same question, several budgets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${S1_VENV:-.venv}/bin/s1-integrations" demo "$@"
