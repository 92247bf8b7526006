"""Aggregating hand-built sample results into one voted result per prompt (no engine)."""

from __future__ import annotations

import pytest

from s1_integrations import BudgetForcedResult, ThinkingBudget, VotedResult
from s1_integrations.core.samples import aggregate, check_samples
from s1_integrations.core.votes import normalise_answer


def sample(answer: str, thinking: int, logprob: float | None = None) -> BudgetForcedResult:
    return BudgetForcedResult(
        thinking="t" * thinking,
        answer=answer,
        prompt_tokens=3,
        thinking_tokens=thinking,
        answer_tokens=1,
        extensions=0,
        thinking_ended_by="model",
        finish_reason="stop",
        budget=ThinkingBudget(),
        strategy="single_pass",
        model="toy",
        prompt_token_ids=[1, 2, 3],
        token_ids=list(range(thinking + 2)),
        thinking_token_ids=list(range(thinking)),
        answer_token_ids=[9],
        extension_positions=[],
        answer_logprob=logprob,
    )


def test_each_prompt_gets_its_own_vote_over_its_consecutive_samples() -> None:
    results = [
        sample("The answer is 5.", 10),
        sample("The answer is 6.", 20),
        sample("The answer is 6.", 30),
        sample("The answer is 1.", 4),
        sample("The answer is 2.", 5),
        sample("The answer is 1.", 6),
    ]
    first, second = aggregate(results, 3, "majority", normalise_answer)
    assert isinstance(first, VotedResult) and isinstance(second, VotedResult)
    assert (first.vote.answer, first.vote.winner_index, first.vote.counts) == (
        "6",
        1,
        {"5": 1, "6": 2},
    )
    assert first.answer == "The answer is 6." and first.thinking_tokens == 20
    assert first.samples == results[:3] and first.total_thinking_tokens == 60
    assert (second.vote.answer, second.vote.winner_index) == ("1", 0)
    assert second.samples == results[3:]


def test_a_tie_goes_to_the_first_answer_and_shortest_majority_to_the_shorter_thinking() -> None:
    results = [sample("The answer is 7.", 50), sample("The answer is 8.", 5)]
    (majority,) = aggregate(results, 2, "majority", normalise_answer)
    (shortest,) = aggregate(results, 2, "shortest_majority", normalise_answer)
    assert majority.vote.answer == "7" and majority.answer == "The answer is 7."
    assert shortest.vote.answer == "8" and shortest.thinking_tokens == 5


def test_nothing_parseable_keeps_the_first_sample_and_says_there_is_no_answer() -> None:
    results = [sample("", 3), sample("  ...", 4)]
    (voted,) = aggregate(results, 2, "majority", normalise_answer)
    assert voted.vote.answer is None and voted.vote.winner_index is None
    assert voted.vote.counts == {} and voted.thinking_tokens == 3


def test_confidence_needs_every_voting_sample_to_have_answer_log_probabilities() -> None:
    results = [sample("The answer is 3.", 3, -0.1), sample("The answer is 4.", 3)]
    with pytest.raises(ValueError, match="sample 1 has no answer log-probabilities"):
        aggregate(results, 2, "confidence", normalise_answer)


@pytest.mark.parametrize(
    ("n", "limit", "match"),
    [
        (0, None, "at least 1"),
        (-1, 8, "at least 1"),
        (1.0, None, "whole number"),
        ("2", None, "whole number"),
        (9, 8, "max_num_seqs"),
    ],
)
def test_check_samples(n: object, limit: int | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_samples(n, limit)
    assert check_samples(8, 8) == 8 and check_samples(3, None) == 3
