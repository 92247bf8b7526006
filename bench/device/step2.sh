#!/bin/bash
# Device call 2 of 2: `bash bench/device/step2.sh`, carry [".gpu/c2"], right after call 1 on the same warm machine:
# unpack the rest of vLLM 0.26.0 and its missing dependencies into /tmp/site, then measure.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
if [ ! -f /tmp/site/vllm/_C_stable_libtorch.abi3.so ] || [ ! -f /tmp/s1-gpu-qwen3-1.7b-random/model.safetensors ]; then
  echo "STEP1-MISSING: this is a fresh machine (the warm one was released); run call 1 again first"; exit 3
fi
python3 - <<'PY' || exit 4
import glob, lzma, shutil, zipfile, time
t = time.time()
zipfile.ZipFile(".gpu/c2/vllm-b.zip").extractall("/tmp/site")
for w in sorted(glob.glob(".gpu/c2/deps/*.whl")):
    zipfile.ZipFile(w).extractall("/tmp/site")
with lzma.open(".gpu/c2/fa3.so.xz") as src, open("/tmp/site/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 24)
print(f"unpacked in {time.time() - t:.1f} s")
PY
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
python3 - <<'PY' || exit 5
import torch, vllm, pydantic
print("vllm", vllm.__version__, "torch", torch.__version__, "pydantic", pydantic.VERSION)
import vllm._C_stable_libtorch  # the kernels; fatal if missing
try:
    from vllm.vllm_flash_attn.flash_attn_interface import FA3_AVAILABLE, FA3_UNAVAILABLE_REASON
    print("FA3", FA3_AVAILABLE, FA3_UNAVAILABLE_REASON)
except Exception as e:  # vLLM then picks another attention backend
    print("flash-attn not importable:", repr(e))
PY
python3 -m bench.gpu --out "$OUT" --fallback-eager --deadline-s "${DEADLINE_S:-300}" "$@" 2>&1 | tee "$OUT/gpu.log"
exit "${PIPESTATUS[0]}"
