"""The adaptive policy end to end on the toy reasoner v2 (the real engine, greedy).

The toy's natural thinking is a one-shot guess, right on easy held-out problems and wrong on
hard ones, where its guess digits carry low top-1 probability; a "Wait" starts a column-by-
column check that is right on both. Each test states what the policy must do on that model.
"""

from __future__ import annotations

import random

import pytest

from conftest import heldout
from s1_integrations import ExtensionInserted, FinalResult, ThinkingBudget
from s1_integrations.core.adaptive import DEFAULT_THRESHOLD
from s1_integrations.core.results import BudgetForcedResult
from s1_integrations.toy.contexts import context_str

pytestmark = pytest.mark.engine


EASY = [r["question"] for r in heldout("easy", 3)]
HARD = [r["question"] for r in heldout("hard", 3)]


def budget(**policy: object) -> ThinkingBudget:
    return ThinkingBudget(adaptive=policy, max_answer_tokens=32)  # type: ignore[arg-type]


def fixed(extensions: int) -> ThinkingBudget:
    return ThinkingBudget(extensions=extensions, max_answer_tokens=32)


def check_counts(r: BudgetForcedResult, generator) -> None:
    """Counts are the token ids': thinking + end + answer is the whole output."""
    end = list(generator.end_ids)
    assert r.thinking_tokens == len(r.thinking_token_ids)
    assert r.answer_tokens == len(r.answer_token_ids)
    assert r.token_ids[: r.thinking_tokens] == r.thinking_token_ids
    assert r.token_ids[r.thinking_tokens : r.thinking_tokens + len(end)] == end
    assert r.extensions == len(r.extension_positions) == len(r.extension_signals)


def assert_same_run(s: BudgetForcedResult, other: BudgetForcedResult) -> None:
    """The same tokens, counts, extensions, end cause and policy signals."""
    assert s.token_ids == other.token_ids
    assert s.thinking_tokens == other.thinking_tokens
    assert s.extension_positions == other.extension_positions
    assert s.thinking_ended_by == other.thinking_ended_by
    assert s.extension_signals == pytest.approx(other.extension_signals, abs=1e-5)
    assert s.thinking_end_signal == pytest.approx(other.thinking_end_signal, abs=1e-5)


def test_per_request_policies_in_one_mixed_batch(generator) -> None:
    """Six budgets, easy and hard, one engine batch: each row follows its own policy, and
    matches what the fixed budget with the same number of extensions writes (token for
    token), since the policy extends at exactly the attempts where those do."""
    cases = [
        (EASY[0], budget(), 0, "policy"),  # sure of its guess: natural thinking
        (HARD[0], budget(), 1, "model"),  # unsure: one Wait (the max), then it may stop
        (HARD[1], budget(threshold=0.0), 0, "policy"),  # nothing is unsure at 0
        (EASY[1], budget(threshold=1.0, max_extensions=2), 2, "model"),  # everything is
        (HARD[2], budget(max_extensions=0), 0, "model"),  # a policy with nothing to give
        (EASY[2], fixed(1), 1, "model"),  # a fixed budget beside them
    ]
    results = generator.generate([q for q, *_ in cases], [b for _, b, *_ in cases])
    references = [
        generator.generate([q], [fixed(n)])[0] for (q, _, n, _) in cases
    ]  # each alone, fixed extensions
    for (q, b, n, ended_by), r, ref in zip(cases, results, references, strict=True):
        check_counts(r, generator)
        assert r.extensions == n, q
        assert r.thinking_ended_by == ended_by, q
        assert r.token_ids == ref.token_ids, q
        assert r.thinking_tokens == ref.thinking_tokens
        assert r.budget == b
    hard, lenient = results[1], results[2]
    assert hard.extension_signals[0] is not None and hard.extension_signals[0] < DEFAULT_THRESHOLD
    assert results[0].thinking_end_signal is not None
    assert results[0].thinking_end_signal >= DEFAULT_THRESHOLD
    assert lenient.thinking_end_signal is not None and lenient.thinking_end_signal < 0.45
    assert results[3].extension_signals[0] is not None and results[3].extension_signals[0] < 1.0
    assert results[5].extension_signals == [None]  # the fixed extension is not the policy's
    # The hard question's guess was wrong and the check right: the Wait bought the answer.
    assert results[1].answer != results[4].answer


def test_single_pass_equals_rounds_under_greedy(generator) -> None:
    questions = [*EASY, *HARD]
    budgets = [
        budget(),
        budget(signal="mean_top1", threshold=0.9),
        budget(threshold=1.0, max_extensions=2),
        budget(),
        budget(signal="mean_top1", threshold=0.9),
        ThinkingBudget(
            adaptive={"max_extensions": 2},  # type: ignore[arg-type]
            max_thinking_tokens=40,
            conclusion="so",
            max_answer_tokens=32,
        ),
    ]
    single = generator.generate(questions, budgets, strategy="single_pass")
    rounds = generator.generate(questions, budgets, strategy="rounds")
    for s, r in zip(single, rounds, strict=True):
        assert (s.strategy, r.strategy) == ("single_pass", "rounds")
        assert_same_run(s, r)
        check_counts(s, generator)
    assert [s.extensions for s in single[:3]] == [0, 0, 2]
    assert [s.extensions for s in single[3:5]] == [1, 1]
    capped = single[5]
    assert capped.thinking_ended_by == "budget" and capped.thinking_tokens == 40
    assert capped.extensions == 1  # unsure after the guess; the cap cuts the check


def test_stream_reports_the_signal_of_each_extension(generator) -> None:
    events = list(generator.stream(HARD[0], budget()))
    extensions = [e for e in events if isinstance(e, ExtensionInserted)]
    result = next(e.result for e in events if isinstance(e, FinalResult))
    assert len(extensions) == 1 == result.extensions
    assert extensions[0].signal == result.extension_signals[0]
    assert extensions[0].signal is not None and extensions[0].signal < DEFAULT_THRESHOLD


def test_adapters_take_the_policy_as_a_field_and_a_keyword(generator) -> None:
    from s1_integrations.adapters.langchain import ChatBudgetForced
    from s1_integrations.adapters.llama_index import BudgetForcedLLM

    chat = ChatBudgetForced(generator=generator, adaptive={"threshold": DEFAULT_THRESHOLD})
    meta = chat.invoke(HARD[0]).response_metadata
    assert meta["extensions"] == 1 and meta["extension_signals"][0] < DEFAULT_THRESHOLD
    meta = chat.invoke(HARD[0], adaptive={"threshold": 0.0}).response_metadata
    assert meta["extensions"] == 0 and meta["thinking_ended_by"] == "policy"
    llm = BudgetForcedLLM(generator=generator, adaptive={})
    extra = llm.complete(HARD[0]).additional_kwargs
    assert extra["extensions"] == 1 and extra["thinking_ended_by"] == "model"
    assert llm.complete(EASY[0]).additional_kwargs["thinking_ended_by"] == "policy"
    # The early exit, per call: four tokens at threshold 0, ended by the policy.
    cut = {"exit_after": 4, "exit_threshold": 0.0}
    meta = chat.invoke(HARD[0], adaptive=cut).response_metadata
    assert meta["thinking_ended_by"] == "early_exit" and meta["thinking_tokens"] == 4
    extra = llm.complete(HARD[0], adaptive=cut).additional_kwargs
    assert extra["thinking_ended_by"] == "early_exit" and extra["thinking_tokens"] == 4


def test_sampling_options_that_change_the_signal_are_refused(generator) -> None:
    """vLLM reports log-probabilities after top-k/top-p renormalise the distribution, so
    rounds (and the reported values) would read another signal than the processor."""
    from s1_integrations import BudgetError

    with pytest.raises(BudgetError, match="adaptive: needs top_p=1"):
        generator.generate(HARD[0], budget(), top_p=0.9)
    with pytest.raises(BudgetError, match="adaptive: needs top_p=1"):
        generator.generate(HARD[0], budget(), top_k=5, temperature=0.5)


def test_early_exit_ends_the_thinking_exactly_and_rounds_agree(generator) -> None:
    """At threshold 0 every token is confident: the thinking ends after exactly
    ``exit_after`` tokens (past the minimum), forced by the policy; rounds match token for
    token, with the conclusion, with a minimum, and beside an extending policy."""
    questions = [EASY[0], HARD[0], HARD[1], EASY[1], HARD[2]]
    budgets = [
        budget(exit_after=4, exit_threshold=0.0, max_extensions=0),
        budget(exit_after=4, exit_threshold=0.0),
        ThinkingBudget(
            adaptive={"exit_after": 3, "exit_threshold": 0.0},  # type: ignore[arg-type]
            min_thinking_tokens=6,
            conclusion="so",
            max_answer_tokens=32,
        ),
        budget(exit_after=5, exit_threshold=0.9),
        budget(exit_after=30, exit_threshold=0.9),  # extended first, then the check is cut
    ]
    single = generator.generate(questions, budgets, strategy="single_pass")
    rounds = generator.generate(questions, budgets, strategy="rounds")
    streamed = [
        next(e.result for e in generator.stream(q, b) if isinstance(e, FinalResult))
        for q, b in zip(questions, budgets, strict=True)
    ]
    so = len(generator.prepare([questions[2]], budgets[2])[0].plan.conclusion)
    assert so > 0
    for s, r, t in zip(single, rounds, streamed, strict=True):
        assert_same_run(s, r)
        assert_same_run(s, t)  # a stream, read off log-probabilities
        check_counts(s, generator)
    assert [s.thinking_ended_by for s in single[:3]] == ["early_exit"] * 3
    assert [s.thinking_tokens for s in single[:3]] == [4, 4, 6 + so]
    assert [s.extensions for s in single[:3]] == [0, 0, 0]
    assert single[2].thinking.endswith("so")
    assert all(s.thinking_end_signal is not None for s in single[:3])
    # At 0.9: the easy guess is confident from its first token on; the hard one is not, so
    # the policy extends it, and the check after the Wait is cut by the 30-token stretch.
    assert [(s.thinking_ended_by, s.extensions) for s in single[3:]] == [
        ("early_exit", 0),
        ("early_exit", 1),
    ]
    assert single[3].thinking_tokens == 5
    assert all(s.thinking_end_signal >= 0.9 for s in single[3:])  # the stretch's lowest


def test_early_exit_at_the_edge_of_the_context_stops_where_one_pass_stops(generator) -> None:
    """The stretch completes with too little context left for the conclusion and the end
    delimiter: both strategies stop at the edge with what fit, token for token."""
    b = ThinkingBudget(
        adaptive={"exit_after": 3, "exit_threshold": 0.0},  # type: ignore[arg-type]
        conclusion="so",
        max_answer_tokens=8,
    )
    question = HARD[0]

    def room(pad: str) -> int:
        item = generator.prepare([pad + question], b)[0]
        return item.max_tokens

    # Digits are one token each: pad the prompt until 4 tokens of context remain.
    pad = "1" * (1 + room("1 ") - 4) + " "
    assert room(pad) == 4  # 3 thinking tokens, then 1 of the conclusion's 2 and the end
    single = generator.generate(pad + question, b, strategy="single_pass")[0]
    rounds = generator.generate(pad + question, b, strategy="rounds")[0]
    assert_same_run(single, rounds)
    assert single.finish_reason == rounds.finish_reason == "length"
    assert len(single.token_ids) == 4
    assert single.thinking_ended_by is None  # the exit's forcing never finished


def test_an_attempt_at_the_edge_of_the_context_is_extended_with_what_fits(generator) -> None:
    """The model asks to stop in the last slot of its context: one pass writes the first
    token of a three-token phrase there and stops, and rounds do the same, not the whole
    phrase past the context."""
    natural = ThinkingBudget(max_answer_tokens=8)
    ids = generator.tokenizer.encode(context_str(random.Random(0), 20000), add_special_tokens=False)

    def prompt(n: int) -> list[dict[str, str]]:
        """``n`` tokens of retrieved passages before the question (the toy's training kind)."""
        passages = generator.tokenizer.decode(ids[:n])
        return [
            {"role": "system", "content": f"Context information is below.\n{passages}"},
            {"role": "user", "content": EASY[0]},
        ]

    def room(n: int) -> int:
        return generator.prepare([prompt(n)], natural)[0].max_tokens

    near = room(0) - 64
    attempt = generator.generate(prompt(near), natural)[0].thinking_tokens
    # The end delimiter's slot (thinking starts at the first generated token) is the last.
    n = next(n for n in range(near, near + 80) if room(n) == attempt + 1)
    edge = generator.generate(prompt(n), natural)[0]
    assert (edge.thinking_tokens, edge.thinking_ended_by) == (attempt, "model")  # still there
    b = ThinkingBudget(extensions=1, extension_phrases=("Wait, let me check",), max_answer_tokens=8)
    phrase = generator.prepare([prompt(n)], b)[0].plan.phrases[0]
    assert len(phrase) >= 3
    single = generator.generate(prompt(n), b, strategy="single_pass")[0]
    rounds = generator.generate(prompt(n), b, strategy="rounds")[0]
    assert_same_run(single, rounds)
    assert single.finish_reason == rounds.finish_reason == "length"
    assert single.token_ids == [*edge.token_ids[:attempt], phrase[0]]
    assert single.thinking_tokens == attempt + 1
