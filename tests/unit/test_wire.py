"""The /v1/completions wire format's log-probabilities, without a server: what a request asks
for and how an event's values become a chunk's."""

from __future__ import annotations

import math

import pytest

from s1_integrations.core.backend import GenerationRequest
from s1_integrations.engine.bridge import EngineError
from s1_integrations.engine.wire import completion_body, parse_choice


def event(ids: list[int], sampled: list[float], tops: list[dict[str, float]] | None) -> dict:
    logprobs = {"token_logprobs": sampled, "top_logprobs": tops}
    return {"choices": [{"token_ids": ids, "logprobs": logprobs, "finish_reason": None}]}


def test_a_top1_request_keys_its_top_log_probabilities_by_token_id() -> None:
    """Two tokens that decode to one string would share a key, and one value would be lost."""
    plain = completion_body(GenerationRequest([1], max_tokens=3, logprobs=0), "m")
    assert plain["logprobs"] == 0 and "return_tokens_as_token_ids" not in plain
    top1 = completion_body(GenerationRequest([1], max_tokens=3, logprobs=1, top1=True), "m")
    assert top1["logprobs"] == 1 and top1["return_tokens_as_token_ids"] is True


def test_the_top1_is_the_most_likely_token_not_the_sampled_one() -> None:
    """Under sampling the sampled token is often not the top-1: the signal is the top-1's."""
    request = GenerationRequest([1], max_tokens=3, logprobs=1, top1=True)
    tops = [
        {"token_id:5": math.log(0.2), "token_id:7": math.log(0.7)},  # sampled 5, top-1 7
        {"token_id:9": 0.0},  # a forced token: certain
    ]
    chunk = parse_choice(event([5, 9], [math.log(0.2), 0.0], tops), request)
    assert chunk.logprobs == pytest.approx([math.log(0.2), 0.0])
    assert chunk.top1 == pytest.approx([0.7, 1.0])
    with pytest.raises(EngineError, match="top log-probabilities that do not match"):
        parse_choice(event([5, 9], [math.log(0.2), 0.0], tops[:1]), request)
    no_top1 = GenerationRequest([1], max_tokens=3, logprobs=0)
    assert parse_choice(event([5, 9], [math.log(0.2), 0.0], None), no_top1).top1 is None
