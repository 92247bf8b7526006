"""One real in-process vLLM engine on the shipped toy reasoner, shared by the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from s1_integrations import toy_model_path

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
# test_reliability reads the processor's state inside the worker process by sending a function
# through AsyncLLM.collective_rpc; vLLM pickles functions only when this is set before the
# engine starts. Tests only: a library user's engine keeps vLLM's safe default.
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

ENGINE_ARGS = {"dtype": "float32", "seed": 0, "max_num_seqs": 128}


TOY = str(toy_model_path())


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
