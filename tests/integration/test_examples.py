"""The examples as a user runs them (``python examples/NAME.py``): they finish and show what
their docstrings promise, each on its own engine in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

EXAMPLES = Path(__file__).parents[2] / "examples"


def run_example(name: str) -> str:
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout


def test_quickstart_caps_extends_and_streams() -> None:
    out = run_example("quickstart.py")
    capped = "budget.max_thinking_tokens=10 budget.extensions=0: 10 thinking tokens, ended by"
    assert capped + " budget" in out, out
    extended = re.search(
        r"budget\.max_thinking_tokens=None budget\.extensions=1: \d+ thinking tokens, ended by "
        r"model, 1 extensions -> 'The answer is 7825\.'",
        out,
    )
    assert extended, out
    streamed = out.split("streaming with one extension:\n", 1)[1]
    assert streamed.count("[+") == 1 and "The answer is 7825." in streamed, streamed


def test_langchain_chain_binds_its_budget_and_batches() -> None:
    out = run_example("langchain_chain.py")
    budget = re.search(r"budget: +\{'thinking_tokens': (\d+), 'extensions': (\d+)\}", out)
    assert budget, out
    assert int(budget[1]) <= 64 and budget[2] == "1", out  # the model's cap, the call's Wait
    assert "'type': 'reasoning'" in out  # the reasoning block, first of the content blocks
    assert "32 answers in one engine batch" in out
    tool = re.search(r"tool answer: (.*) \| thinking tokens: (\d+)", out)
    assert tool and int(tool[2]) >= 40, out  # the tool's own minimum


def test_llama_index_query_engine_shows_the_thinking_and_its_cap() -> None:
    out = run_example("llama_index_query_engine.py")
    free, capped = out.split("== capped at 10 thinking tokens\n")
    assert "== free thinking" in free and "sources : ['What is 473 + 59?']" in free, out
    assert "figures : 10 thinking tokens, ended by budget" in capped, out
    assert re.search(r"figures : \d+ thinking tokens, ended by model", free), out
