"""Forced tokens named by the engine's own records: finished outputs need no log-probabilities."""

from __future__ import annotations

import random
from typing import Any

import pytest

from s1_integrations import FinalResult, ThinkingBudget
from s1_integrations.core.backend import GenerationRequest
from s1_integrations.toy.problems import random_problem

pytestmark = pytest.mark.engine

#: The toy writes ", let me" itself right after every forced "Wait" (", let me add column by
#: column:"), which is exactly where this budget's second phrase is due: only the engine can
#: say which copies it forced.
BUDGET = ThinkingBudget(extensions=3, extension_phrases=("Wait", ", let me"))


def prompts(n: int = 12) -> list[str]:
    rng = random.Random(5)
    return [random_problem(rng).question for _ in range(n)]


def count(ids: list[int], phrase: tuple[int, ...]) -> int:
    n = len(phrase)
    return sum(1 for i in range(len(ids) - n + 1) if tuple(ids[i : i + n]) == phrase)


@pytest.fixture
def requests_sent(generator: Any, monkeypatch: pytest.MonkeyPatch) -> list[GenerationRequest]:
    """Every request the generator hands the real engine (which still runs each one)."""
    sent: list[GenerationRequest] = []
    stream = generator.engine.stream

    def recording(request: GenerationRequest) -> Any:
        sent.append(request)
        return stream(request)

    monkeypatch.setattr(generator.engine, "stream", recording)
    return sent


def test_generate_asks_for_records_not_logprobs_and_streams_agree(
    generator: Any, requests_sent: list[GenerationRequest]
) -> None:
    questions = prompts()
    plan = generator.plan_for(BUDGET)
    finished = generator.generate(questions, BUDGET)
    assert [(r.forced_flags, r.logprobs, r.deltas) for r in requests_sent] == [
        (True, None, False)
    ] * len(questions)
    requests_sent.clear()
    streamed = [
        next(e.result for e in generator.stream(q, BUDGET) if isinstance(e, FinalResult))
        for q in questions
    ]
    assert [(r.forced_flags, r.logprobs, r.deltas) for r in requests_sent] == [
        (False, 0, True)
    ] * len(questions)
    for a, b in zip(finished, streamed, strict=True):
        assert a.model_dump() == b.model_dump()
        assert a.extensions == 3
        # The model wrote copies of the second phrase itself; only one was an extension.
        inserted = sum(1 for k in range(a.extensions) if k % len(plan.phrases) == 1)
        assert count(a.thinking_token_ids, plan.phrases[1]) > inserted == 1


def test_records_name_exactly_the_tokens_forced_in_place_of_attempts(generator: Any) -> None:
    """Each extension's phrase and the end forced at the model's last attempt; nothing else."""
    plan = generator.plan_for(BUDGET)
    engine = generator.engine
    for question in prompts(6):
        (item,) = generator.prepare(question, BUDGET)
        request = GenerationRequest(
            item.prompt_ids, item.max_tokens, forced_flags=True, forcing=item.plan.to_json()
        )
        chunks = engine.iterate_sync(engine.stream(request))
        (chunk,) = list(chunks)
        result = generator.generate(question, BUDGET)[0]
        assert chunk.token_ids == result.token_ids and chunk.logprobs is None
        assert chunk.forced is not None
        expected = set()
        for k, position in enumerate(result.extension_positions):
            phrase = plan.phrases[k % len(plan.phrases)]
            expected |= set(range(position, position + len(phrase)))
        # The model ended its thinking by trying to once the extensions were spent: the
        # processor forced the (one-token) end in place of that attempt, right after it.
        assert result.thinking_ended_by == "model" and len(plan.end) == 1
        expected.add(result.thinking_tokens)
        assert {i for i, f in enumerate(chunk.forced) if f} == expected


def test_forced_flags_where_no_record_can_be_had_are_refused_before_the_engine(
    generator: Any,
) -> None:
    engine = generator.engine
    (item,) = generator.prepare("What is 1 + 2?", BUDGET)
    before = engine.submitted_requests
    request = GenerationRequest(
        item.prompt_ids, 32, deltas=True, forced_flags=True, forcing=item.plan.to_json()
    )
    with pytest.raises(ValueError, match="forced_flags: only for a finished output"):
        engine.stream(request)
    assert engine.submitted_requests == before
    assert generator.generate("What is 1 + 2?")[0].token_ids  # the engine still serves
