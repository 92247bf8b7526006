"""Build the device payload for bench/gpu.py: vLLM 0.26.0 and its missing dependencies.

    python bench/device/pack.py WHEELS_DIR      # writes .gpu/c1 and .gpu/c2 (git-ignored)

WHEELS_DIR holds the vllm-0.26.0 wheel and the dependency wheels listed in README.md (cp312,
downloaded here with ``pip download --no-deps``). A device call carries at most 64 MiB, so the
wheel is split by entry into two archives (stored, not recompressed) and FlashAttention 3's
library, the largest entry, is xz-compressed; optional kernels unused on Hopper are dropped.
"""

from __future__ import annotations

import lzma
import shutil
import sys
import zipfile
from pathlib import Path

KERNELS = "vllm/_C_stable_libtorch.abi3.so"
FA3 = "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"
DROPPED = (
    "vllm/vllm_flash_attn/_vllm_fa2_C",
    "vllm/_moe_C_stable_libtorch",
    "vllm/vllm-rs",
    "vllm/third_party/deep_gemm",
    "vllm/third_party/fmha_sm100",
    "vllm/_flashmla",
    "vllm/_qutlass_C",
)


def main(wheels: Path, out: Path = Path(".gpu")) -> None:
    (wheel,) = wheels.glob("vllm-0.26.0-*.whl")
    c1, c2 = out / "c1", out / "c2"
    for folder in (c1, c2 / "deps"):
        folder.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(wheel) as src,
        zipfile.ZipFile(c1 / "vllm-a.zip", "w") as a,
        zipfile.ZipFile(c2 / "vllm-b.zip", "w") as b,
    ):
        for info in src.infolist():
            if info.filename == FA3:
                with src.open(info) as raw, lzma.open(c2 / "fa3.so.xz", "wb", preset=6) as xz:
                    shutil.copyfileobj(raw, xz, 1 << 24)
            elif not info.filename.startswith(DROPPED):
                (a if info.filename == KERNELS else b).writestr(info, src.read(info))
    for dep in wheels.glob("*.whl"):
        if dep != wheel:
            shutil.copy(dep, c2 / "deps" / dep.name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(Path(p) for p in sys.argv[2:3]))
