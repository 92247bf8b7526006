"""The toy reasoner: a tiny Qwen3-architecture model trained to add numbers step by step.

It ships inside the package so the library, its examples and its tests run offline on any CPU.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from s1_integrations.toy.problems import heldout_path


def toy_model_path() -> Path:
    """Folder of the shipped toy reasoner, in Hugging Face format (vLLM loads it directly)."""
    return Path(str(resources.files("s1_integrations.toy").joinpath("model")))


__all__ = ["heldout_path", "toy_model_path"]
