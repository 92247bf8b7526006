"""The core's requests and chunks as vLLM's types (``engine/vllm_types.py``), no engine."""

from __future__ import annotations

import math

import pytest
from vllm.logprobs import FlatLogprobs, Logprob
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind

from s1_integrations.core.backend import GenerationRequest
from s1_integrations.core.forcing import EXTRA_ARGS_KEY, ForcingPlan
from s1_integrations.engine.vllm_types import sampling_params, to_chunk


def test_a_plain_request_asks_vllm_for_the_finished_ids_alone() -> None:
    params = sampling_params(GenerationRequest([1, 2], max_tokens=9))
    assert params.max_tokens == 9 and params.n == 1
    assert params.temperature == 0.0 and params.top_p == 1.0 and params.seed is None
    assert params.output_kind == RequestOutputKind.FINAL_ONLY
    assert params.detokenize is False  # nothing reads text
    assert params.logprobs is None and params.extra_args is None
    assert params.structured_outputs is None and not params.bad_words


def test_every_field_reaches_vllm() -> None:
    plan = ForcingPlan(end=(4,), eos=(2,), max_thinking=7)
    params = sampling_params(
        GenerationRequest(
            [1],
            max_tokens=20,
            temperature=0.5,
            top_p=0.9,
            top_k=5,
            seed=3,
            deltas=True,
            logprobs=1,
            stop_token_ids=(4, 2),
            stop=("</think>",),
            include_stop=True,
            skip_special_tokens=False,
            bad_words=("<think>",),
            forcing=plan.to_extra_args(),
            json_schema={"type": "object"},
        )
    )
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (0.5, 0.9, 5, 3)
    assert params.output_kind == RequestOutputKind.DELTA
    assert params.logprobs == 1 and params.flat_logprobs is True
    assert params.stop_token_ids == [4, 2]
    assert params.stop == ["</think>"] and params.include_stop_str_in_output is True
    assert params.detokenize is True and params.skip_special_tokens is False
    assert params.bad_words == ["<think>"]
    assert ForcingPlan.from_extra_args(params.extra_args[EXTRA_ARGS_KEY]) == plan
    assert params.structured_outputs is not None
    assert params.structured_outputs.json == {"type": "object"}


def test_the_plan_travels_as_its_json_and_each_distinct_plan_is_parsed_once() -> None:
    """What the generator sends: the same string per plan, one parse wherever it lands."""
    plan = ForcingPlan(end=(4,), eos=(2,), extensions=1, phrases=((7,),), ban_thinking=((3,),))
    text = plan.to_json()
    assert plan.to_json() is text  # remembered, not rebuilt per request
    sent = sampling_params(GenerationRequest([1], max_tokens=5, forcing=text))
    assert sent.extra_args == {EXTRA_ARGS_KEY: text}
    first = ForcingPlan.from_extra_args(sent.extra_args[EXTRA_ARGS_KEY])
    # A copy of the string, as a worker receives it from the API server.
    again = ForcingPlan.from_extra_args("".join(list(text)))
    assert first == plan and again is first
    assert ForcingPlan.from_extra_args(plan.to_extra_args()) == plan  # the dict form still parses


def _output(ids: list[int], logprobs: object, finish: str | None = "stop") -> RequestOutput:
    completion = CompletionOutput(0, "", ids, None, logprobs, finish_reason=finish)  # type: ignore[arg-type]
    return RequestOutput("r", None, [1], None, [completion], finished=finish is not None)


# Per position: the sampled token first, then the step's top-1 (vLLM's order).
STEPS = [{5: -0.0}, {6: -1.5, 9: -0.25}, {7: -0.5}]


@pytest.mark.parametrize("shape", ["dicts", "flat"])
def test_chunks_read_both_logprob_shapes(shape: str) -> None:
    if shape == "dicts":
        logprobs: object = [{t: Logprob(v) for t, v in step.items()} for step in STEPS]
    else:
        flat = FlatLogprobs()
        for step in STEPS:
            flat.append({t: Logprob(v) for t, v in step.items()})
        logprobs = flat
    output = _output([5, 6, 7], logprobs)
    chunk = to_chunk(output, GenerationRequest([1], max_tokens=3, logprobs=1, top1=True))
    assert chunk.token_ids == [5, 6, 7] and chunk.finish_reason == "stop"
    assert chunk.logprobs == [0.0, -1.5, -0.5]  # the sampled token's, not the top-1's
    assert chunk.top1 == pytest.approx([1.0, math.exp(-0.25), math.exp(-0.5)])
    unasked = to_chunk(output, GenerationRequest([1], max_tokens=3))
    assert unasked.logprobs is None and unasked.top1 is None
    no_top1 = to_chunk(output, GenerationRequest([1], max_tokens=3, logprobs=0))
    assert no_top1.logprobs == [0.0, -1.5, -0.5] and no_top1.top1 is None
