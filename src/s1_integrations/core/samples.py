"""n samples per prompt (parallel scaling): fanning requests out and voting their results.

Each sample is its own engine request with its own budget-forcing state, so every sample's
budget is exact; the n requests of one prompt go to the engine together and share the
prompt's KV blocks through vLLM's prefix cache. ``bench/`` measures this against one vLLM
request with ``SamplingParams(n=...)`` (see docs/benchmarks.md): the same engine work, since
vLLM itself fans such a request out into n child requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from s1_integrations.core.results import BudgetForcedResult, Vote, VotedResult
from s1_integrations.core.tracking import Prepared
from s1_integrations.core.votes import Ballot, Normaliser, check_method, normalise_answer, vote


def check_samples(n: object, limit: int | None) -> int:
    """``n`` as a count of samples, or a clear error before anything reaches the engine.

    ``limit`` is how many sequences the engine runs at once (vLLM's ``max_num_seqs``): more
    samples of one prompt than that could not decode side by side.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"n: expected a whole number of samples, got {n!r}")
    if n < 1:
        raise ValueError(f"n: {n} samples; give at least 1")
    if limit is not None and n > limit:
        raise ValueError(
            f"n: {n} samples of one prompt do not fit the engine's {limit} sequences at once "
            "(vLLM's max_num_seqs)"
        )
    return n


def refuse_a_lone_vote(n: int, given: str | None) -> None:
    """One sample has nothing to vote over: a vote setting ``given`` with ``n=1`` would be
    dropped, so it is refused, naming it."""
    if n == 1 and given is not None:
        raise ValueError(f"{given}: one sample (n=1) has no vote; give n > 1 samples")


def check_normaliser(normalise: Callable[[str], str] | None) -> Normaliser:
    if normalise is None:
        return normalise_answer
    if not callable(normalise):
        raise ValueError(f"normalise: expected a function of the answer text, got {normalise!r}")
    return normalise


def fan_out(items: Sequence[Prepared], n: int, answer_logprobs: bool) -> list[Prepared]:
    """Every prompt's n samples as requests, prompt by prompt (index ``prompt * n + sample``)."""
    return [
        dataclasses.replace(
            item, index=item.index * n + s, sample=s, answer_logprobs=answer_logprobs
        )
        for item in items
        for s in range(n)
    ]


def aggregate(
    results: Sequence[BudgetForcedResult], n: int, method: str, normalise: Normaliser
) -> list[VotedResult]:
    """One :class:`VotedResult` per prompt from its n consecutive sample results."""
    checked = check_method(method)
    voted = []
    for start in range(0, len(results), n):
        samples = list(results[start : start + n])
        ballots = [Ballot(s.answer, s.thinking_tokens, s.answer_logprob) for s in samples]
        outcome = vote(ballots, checked, normalise)
        winner = samples[outcome.winner_index or 0]
        summary = Vote(
            method=checked,
            answer=outcome.answer,
            winner_index=outcome.winner_index,
            counts=outcome.counts,
            scores=outcome.scores,
        )
        fields = {name: getattr(winner, name) for name in BudgetForcedResult.model_fields}
        voted.append(VotedResult(**fields, samples=samples, vote=summary))
    return voted
