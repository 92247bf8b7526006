#!/bin/bash
# Device call 1 of 2: `bash bench/device/step1.sh`, carry [".gpu/c1"]: unpack vLLM's main kernel library, build the model.
set -euo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.get_device_name(0))"
mkdir -p /tmp/site
python3 -c "import zipfile; zipfile.ZipFile('.gpu/c1/vllm-a.zip').extractall('/tmp/site')"
ls -la /tmp/site/vllm/_C_stable_libtorch.abi3.so
python3 -m bench.gpu --child build --model-dir /tmp/s1-gpu-qwen3-1.7b-random
ls -la /tmp/s1-gpu-qwen3-1.7b-random
cp /tmp/s1-gpu-qwen3-1.7b-random/config.json "$OUT/model-config.json"
echo STEP1-OK
