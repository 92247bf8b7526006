"""One real in-process vLLM engine on the shipped toy reasoner, shared by the whole session."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from s1_integrations import heldout_path, toy_model_path

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
# test_reliability reads the processor's state inside the worker process by sending a function
# through AsyncLLM.collective_rpc; vLLM pickles functions only when this is set before the
# engine starts. Tests only: a library user's engine keeps vLLM's safe default.
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

ENGINE_ARGS = {"dtype": "float32", "seed": 0, "max_num_seqs": 128}


TOY = str(toy_model_path())


def heldout(difficulty: str, n: int) -> list[dict]:
    """The first n held-out problems of one difficulty ("easy" or "hard"), as shipped."""
    with open(heldout_path(), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["difficulty"] == difficulty][:n]


@pytest.fixture(scope="session")
def generator() -> Iterator[object]:
    """The session's generator: the same one every chat model with these settings shares."""
    from s1_integrations.adapters.shared import shared_generator

    gen = shared_generator(TOY, ENGINE_ARGS)
    yield gen
    gen.engine.close()


@pytest.fixture(scope="session")
def tokenizer() -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(toy_model_path())
