"""A client machine: ``pip install s1-integrations`` without vLLM or torch, on a server.

The package's base install is what the remote client and both adapters need; vLLM (and
torch) come only with the ``cpu``/``gpu`` extras, for the in-process engine and the
processor. This test installs the package into a fresh virtual environment with no extra,
checks that vLLM and torch are absent there, and drives ``s1-integrations serve`` (started
from the project's environment, which has vLLM) through ``from_servers`` and both adapters,
comparing every figure with the in-process engine's.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from s1_integrations import ThinkingBudget
from servers import S1Serve

pytestmark = pytest.mark.remote

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is 12 + 34?"
CAP = 6  # below the toy's shortest natural thinking: the cap binds

#: Runs in the client environment; prints what it saw as one JSON line.
CLIENT = textwrap.dedent(
    """
    import importlib.util, json, sys

    missing = [m for m in ("vllm", "torch") if importlib.util.find_spec(m) is None]
    from s1_integrations import (
        BudgetForcedGenerator, BudgetForcedLLM, ChatBudgetForced, ThinkingBudget,
    )

    gen = BudgetForcedGenerator.from_servers(sys.argv[1])
    (r,) = gen.generate(sys.argv[2], ThinkingBudget(max_thinking_tokens=int(sys.argv[3])))
    chat = ChatBudgetForced(generator=gen, max_thinking_tokens=int(sys.argv[3]))
    message = chat.invoke(sys.argv[2])
    llm = BudgetForcedLLM(generator=gen, max_thinking_tokens=int(sys.argv[3]))
    completion = llm.complete(sys.argv[2])
    gen.close()
    loaded = sorted({m.split(".")[0] for m in sys.modules} & {"vllm", "torch"})
    print(json.dumps({
        "missing": missing,
        "loaded": loaded,
        "generator": [r.thinking, r.answer, r.thinking_tokens, r.thinking_ended_by, r.strategy],
        "langchain": [
            message.additional_kwargs.get("reasoning_content"),
            message.content,
            message.usage_metadata["output_token_details"]["reasoning"],
        ],
        "llama_index": [
            completion.additional_kwargs["thinking_block"].content,
            completion.text,
            completion.raw.thinking_tokens,
        ],
    }))
    """
)


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the package installed as a client would: no extra."""
    where = tmp_path_factory.mktemp("client") / "venv"
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
        timeout=900,
    )
    return python


@pytest.fixture(scope="module")
def server() -> Iterator[S1Serve]:
    started = S1Serve()
    try:
        yield started.wait_ready()
    finally:
        started.stop()


@pytest.mark.timeout(1800)
def test_a_client_without_vllm_gets_the_same_results(
    client_python: Path, server: S1Serve, generator
) -> None:
    run = subprocess.run(
        [str(client_python), "-c", CLIENT, server.url, QUESTION, str(CAP)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=client_python.parent,  # not the repository: the installed package is imported
    )
    assert run.returncode == 0, run.stderr[-4000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["missing"] == ["vllm", "torch"]
    assert seen["loaded"] == []
    (expected,) = generator.generate(QUESTION, ThinkingBudget(max_thinking_tokens=CAP))
    assert expected.thinking_tokens == CAP and expected.thinking_ended_by == "budget"
    assert seen["generator"] == [
        expected.thinking,
        expected.answer,
        CAP,
        "budget",
        "single_pass",  # the server has the plugin: forcing ran inside it
    ]
    # LangChain's message carries both texts stripped, as the adapter always does.
    assert seen["langchain"] == [expected.thinking.strip(), expected.answer.strip(), CAP]
    assert seen["llama_index"] == [expected.thinking, expected.answer, CAP]
