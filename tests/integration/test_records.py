"""Forced tokens named by the engine's own records: finished outputs need no log-probabilities."""

from __future__ import annotations

import random
from typing import Any

import pytest

from s1_integrations import FinalResult, ThinkingBudget
from s1_integrations.core.backend import GenerationRequest, forced_flags
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
    assert [(r.attempts, r.logprobs, r.deltas) for r in requests_sent] == [
        (True, None, False)
    ] * len(questions)
    requests_sent.clear()
    streamed = [
        next(e.result for e in generator.stream(q, BUDGET) if isinstance(e, FinalResult))
        for q in questions
    ]
    assert [(r.attempts, r.logprobs, r.deltas) for r in requests_sent] == [(False, 0, True)] * len(
        questions
    )
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
            item.prompt_ids, item.max_tokens, attempts=True, forcing=item.plan.to_json()
        )
        chunks = engine.iterate_sync(engine.stream(request))
        (chunk,) = list(chunks)
        result = generator.generate(question, BUDGET)[0]
        assert chunk.token_ids == result.token_ids and chunk.logprobs is None
        assert chunk.attempts is not None
        forced = forced_flags(len(chunk.token_ids), chunk.attempts)
        expected = set()
        for k, position in enumerate(result.extension_positions):
            phrase = plan.phrases[k % len(plan.phrases)]
            expected |= set(range(position, position + len(phrase)))
        # The model ended its thinking by trying to once the extensions were spent: the
        # processor forced the (one-token) end in place of that attempt, right after it.
        assert result.thinking_ended_by == "model" and len(plan.end) == 1
        expected.add(result.thinking_tokens)
        assert {i for i, f in enumerate(forced) if f} == expected
        assert [(s, e) for _, _, s, e in chunk.attempts] == [(None, False)] * 4  # no policy


def test_forced_flags_where_no_record_can_be_had_are_refused_before_the_engine(
    generator: Any,
) -> None:
    engine = generator.engine
    (item,) = generator.prepare("What is 1 + 2?", BUDGET)
    before = engine.submitted_requests
    request = GenerationRequest(
        item.prompt_ids, 32, deltas=True, attempts=True, forcing=item.plan.to_json()
    )
    with pytest.raises(ValueError, match="attempts: only for a finished output"):
        engine.stream(request)
    assert engine.submitted_requests == before
    assert generator.generate("What is 1 + 2?")[0].token_ids  # the engine still serves


def test_adaptive_results_take_the_processors_signals_from_its_records(
    generator: Any, requests_sent: list[GenerationRequest]
) -> None:
    """No top-1 per token for a finished output: the decisions and the signal values are the
    processor's own, and agree with a stream's, recomputed from log-probabilities."""
    from conftest import heldout

    questions = [r["question"] for d in ("easy", "hard") for r in heldout(d, 3)]
    budgets = [
        ThinkingBudget(adaptive={}),
        ThinkingBudget(adaptive={"signal": "mean_top1", "threshold": 0.9}),
        ThinkingBudget(adaptive={"max_extensions": 2}, min_thinking_tokens=20),
    ]
    signals: list[float | None] = []
    for b in budgets:
        requests_sent.clear()
        finished = generator.generate(questions, b)
        signals += [x for r in finished for x in r.extension_signals]
        assert {(r.attempts, r.logprobs, r.top1) for r in requests_sent} == {(True, None, False)}
        streamed = [
            next(e.result for e in generator.stream(q, b) if isinstance(e, FinalResult))
            for q in questions
        ]
        for a, s in zip(finished, streamed, strict=True):
            assert a.token_ids == s.token_ids
            assert (a.extension_positions, a.thinking_ended_by) == (
                s.extension_positions,
                s.thinking_ended_by,
            )
            assert [x is None for x in a.extension_signals] == [
                x is None for x in s.extension_signals
            ]
            assert a.extension_signals == pytest.approx(s.extension_signals, abs=1e-6)
            if s.thinking_end_signal is None:
                assert a.thinking_end_signal is None
            else:
                assert a.thinking_end_signal == pytest.approx(s.thinking_end_signal, abs=1e-6)
        if b == budgets[0]:  # the default policy: sure on the easy half, unsure on the hard
            assert [r.thinking_ended_by for r in finished] == ["policy"] * 3 + ["model"] * 3
    # Extensions the policy triggered (with a signal) and the minimum's (without).
    assert any(x is not None for x in signals) and None in signals
