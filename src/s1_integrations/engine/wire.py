"""The HTTP wire format of vLLM's ``/v1/completions``, as the remote backend speaks it.

Requests go as streamed completions with token-id prompts and come back as server-sent
events with token ids (``return_token_ids``) and, where asked, the sampled tokens'
processed log-probabilities. The budget's plan travels in ``vllm_xargs``. The client that
sends these (connect handshake, balancing, retries) is ``remote.py``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from s1_integrations.core.backend import Chunk, GenerationRequest
from s1_integrations.core.forcing import EXTRA_ARGS_KEY
from s1_integrations.engine.bridge import EngineError

#: Worth trying again, elsewhere: the server is overloaded, restarting or behind a balancer
#: that lost it. Everything else is the request's fault or a lasting server problem.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def completion_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """A request as a streamed ``/v1/completions`` body with a token-id prompt."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(request.prompt_ids),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": 1,
        "stream": True,
        "return_token_ids": True,
        "skip_special_tokens": request.skip_special_tokens,
    }
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = list(request.stop)
        body["include_stop_str_in_output"] = request.include_stop
    if request.stop_token_ids:
        body["stop_token_ids"] = list(request.stop_token_ids)
    if request.bad_words:
        # The thinking delimiters a round may not write (the budget's no-re-entry rule when
        # the servers run rounds); the server tokenizes them as the generator does.
        body["bad_words"] = list(request.bad_words)
    if request.logprobs is not None:
        body["logprobs"] = request.logprobs
        if request.top1:
            # The step's top-1 is the largest of its top log-probabilities (the sampled
            # token's among them), keyed by token id so that no two tokens share a key.
            body["return_tokens_as_token_ids"] = True
    if request.forcing is not None:
        # vllm_xargs carries only scalars and flat lists: the plan travels as one JSON string.
        forcing = request.forcing
        if not isinstance(forcing, str):
            forcing = json.dumps(forcing, separators=(",", ":"))
        body["vllm_xargs"] = {EXTRA_ARGS_KEY: forcing}
    if request.json_schema is not None:
        # As the in-process engine does: no whitespace padding inside constrained JSON.
        body["structured_outputs"] = {"json": request.json_schema, "disable_any_whitespace": True}
    elif request.structural_tag is not None:
        body["structured_outputs"] = {
            "structural_tag": json.dumps(request.structural_tag),
            "disable_any_whitespace": True,
        }
    return body


#: What :func:`read_event` returns for the stream's last event.
DONE = "[DONE]"


def read_event(url: str, line: str) -> dict[str, Any] | str | None:
    """One line of a streamed reply: an event's JSON, :data:`DONE`, or None (not an event).

    A streamed reply reports failures in-band: such an event is raised here, as the status
    it names.
    """
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == DONE:
        return DONE
    event: dict[str, Any] = json.loads(payload)
    if "error" in event:
        raise_for_status(url, status(event), json.dumps(event))
    return event


def parse_choice(payload: dict[str, Any], request: GenerationRequest) -> Chunk:
    """One server-sent event as a chunk.

    ``token_logprobs`` holds the sampled tokens' log-probabilities; where the request asks
    for each step's top-1, it is the largest of the step's ``top_logprobs`` (the sampled
    token's and the most likely one's), which differs from the sampled one's under sampling.
    """
    choice = payload["choices"][0]
    ids = [int(t) for t in choice.get("token_ids") or []]
    chunk = Chunk(ids, finish_reason=choice.get("finish_reason"))
    if request.logprobs is not None:
        values = (choice.get("logprobs") or {}).get("token_logprobs") or []
        if len(values) != len(ids):
            raise EngineError("the server returned log-probabilities that do not match tokens")
        chunk.logprobs = [float(v) for v in values]
        if request.top1:
            tops = (choice.get("logprobs") or {}).get("top_logprobs") or []
            if len(tops) != len(ids) or not all(tops):
                raise EngineError("the server returned top log-probabilities that do not match")
            chunk.top1 = [math.exp(max(float(v) for v in top.values())) for top in tops]
    return chunk


def extend(whole: Chunk, chunk: Chunk) -> None:
    """Add ``chunk`` to the output gathered so far (a final-only request's one chunk)."""
    whole.token_ids += chunk.token_ids
    if whole.logprobs is not None and chunk.logprobs is not None:
        whole.logprobs += chunk.logprobs
    if chunk.top1 is not None:
        whole.top1 = (whole.top1 or []) + chunk.top1
    whole.finish_reason = chunk.finish_reason


def message_of(payload: Any) -> str:
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def status(chunk: dict[str, Any]) -> int:
    error = chunk.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and code >= 400 else 500


def raise_for_status(url: str, status: int, text: str) -> None:
    if status < 400:
        return
    try:
        message = message_of(json.loads(text))
    except ValueError:
        message = text[:500]
    if status in (400, 422):
        raise ValueError(f"{url} rejected the request: {message}")
    if status == 404:
        raise EngineError(f"{url}: not found ({message}); is it a vLLM server with this model?")
    raise EngineError(f"{url}: HTTP {status}: {message}")
