"""The core's requests and chunks as vLLM's own types, for the in-process engine.

This is the only place that builds ``vllm.SamplingParams`` for the generator and reads
vLLM's ``CompletionOutput``, including its two log-probability shapes (``FlatLogprobs``,
asked for here because it is cheaper, and the list of dicts vLLM otherwise returns).
"""

from __future__ import annotations

import json
import math
from typing import Any

# From vLLM's submodule, once: ``from vllm import SamplingParams`` inside a function goes
# through the package's lazy ``__getattr__`` (an import_module) on every request.
from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

from s1_integrations.core.backend import Chunk, GenerationRequest
from s1_integrations.core.forcing import EXTRA_ARGS_KEY


def sampling_params(request: GenerationRequest) -> Any:
    """vLLM's parameters for ``request`` (detokenizing only where stop strings need it)."""
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "detokenize": bool(request.stop),
        "output_kind": RequestOutputKind.DELTA if request.deltas else RequestOutputKind.FINAL_ONLY,
    }
    if request.top_k is not None:
        kwargs["top_k"] = request.top_k
    if request.logprobs is not None:
        kwargs.update(logprobs=request.logprobs, flat_logprobs=True)
    if request.stop_token_ids:
        kwargs["stop_token_ids"] = list(request.stop_token_ids)
    if request.stop:
        kwargs.update(
            stop=list(request.stop),
            include_stop_str_in_output=request.include_stop,
            skip_special_tokens=request.skip_special_tokens,
        )
    if request.bad_words:
        kwargs["bad_words"] = list(request.bad_words)
    if request.forcing is not None:
        kwargs["extra_args"] = {EXTRA_ARGS_KEY: request.forcing}
    if request.json_schema is not None:
        kwargs["structured_outputs"] = StructuredOutputsParams(json=request.json_schema)
    elif request.structural_tag is not None:
        tag = json.dumps(request.structural_tag)
        kwargs["structured_outputs"] = StructuredOutputsParams(structural_tag=tag)
    return SamplingParams(**kwargs)


def to_chunk(output: Any, request: GenerationRequest) -> Chunk:
    """One of vLLM's ``RequestOutput`` objects as the core's :class:`Chunk`."""
    completion = output.outputs[0]
    ids = list(completion.token_ids)
    logprobs = completion.logprobs
    if request.logprobs is None or logprobs is None:
        return Chunk(ids, finish_reason=completion.finish_reason)
    return Chunk(
        ids,
        sampled_logprobs(ids, logprobs),
        top1=top1_probabilities(len(ids), logprobs) if request.top1 else None,
        finish_reason=completion.finish_reason,
    )


def sampled_logprobs(token_ids: list[int], logprobs: Any) -> list[float]:
    """The processed log-probability of each sampled token.

    A token was forced iff its processed log-probability is exactly 0 (every alternative
    -inf); the confidence vote reads the same values for the answer tokens.
    """
    starts = getattr(logprobs, "start_indices", None)
    if starts is None:  # one dict per position
        return [float(logprobs[i][token].logprob) for i, token in enumerate(token_ids)]
    ends, ids, values = logprobs.end_indices, logprobs.token_ids, logprobs.logprobs
    found = []
    for i, token in enumerate(token_ids):
        j = starts[i]  # the sampled token comes first at each position
        if ids[j] != token:
            j = ids.index(token, j, ends[i])
        found.append(float(values[j]))
    return found


def top1_probabilities(count: int, logprobs: Any) -> list[float]:
    """Per token, the top-1 probability of its step: the largest log-probability listed.

    vLLM lists the sampled token first and then the top ones (``logprobs=1``); under greedy
    decoding the sampled token is the top-1, so ``logprobs=0`` is enough there.
    """
    starts = getattr(logprobs, "start_indices", None)
    if starts is None:
        return [math.exp(max(float(v.logprob) for v in logprobs[i].values())) for i in range(count)]
    ends, values = logprobs.end_indices, logprobs.logprobs
    return [math.exp(max(values[starts[i] : ends[i]])) for i in range(count)]
