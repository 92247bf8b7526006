"""Aggregating n budget-forced samples of one prompt into one answer (parallel scaling).

Three votes, all deterministic for the same samples:

- ``majority`` (self-consistency): the most frequent normalised answer;
- ``shortest_majority`` (arXiv 2502.12215): each answer's votes divided by the mean thinking
  tokens of the samples that gave it, so an answer reached by shorter thinking wins where
  counts are close; long thinking on a reasoning model is more often a sign of trouble;
- ``confidence`` (in the spirit of DeepConf, arXiv 2508.15260): each sample votes with the
  geometric mean probability of its answer tokens, ``exp(mean log-probability)``.

Samples whose answer normalises to nothing cast no vote. Ties go to the answer given first
(lowest sample index), so the result never depends on dictionary or set order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

VoteMethod = Literal["majority", "shortest_majority", "confidence"]
VOTE_METHODS: tuple[VoteMethod, ...] = ("majority", "shortest_majority", "confidence")
Normaliser = Callable[[str], str]

_FINAL = re.compile(r"answer is\s*(.+)", re.IGNORECASE | re.DOTALL)


def normalise_answer(text: str) -> str:
    """The final answer in a canonical form: after 'answer is', no case, edge punctuation."""
    match = _FINAL.search(text)
    if match:
        text = match.group(1)
    text = " ".join(text.split()).lower()
    return text.strip(" .,:;!?\"'`$")


@dataclass(frozen=True)
class Ballot:
    """What one sample contributes to a vote."""

    answer: str
    thinking_tokens: int
    answer_logprob: float | None = None  # mean log-probability of its answer tokens


@dataclass(frozen=True)
class VoteOutcome:
    """The winning normalised answer (``None`` when no sample gave one), and every score."""

    answer: str | None
    method: VoteMethod
    winner_index: int | None  # the first sample that gave the winning answer
    scores: dict[str, float]
    counts: dict[str, int]


def check_method(method: str) -> VoteMethod:
    if method not in VOTE_METHODS:
        raise ValueError(f"vote: {method!r} is not one of {', '.join(VOTE_METHODS)}")
    return method  # type: ignore[return-value]


def vote(
    ballots: Sequence[Ballot],
    method: str = "majority",
    normalise: Normaliser = normalise_answer,
) -> VoteOutcome:
    """Aggregate the samples of one prompt; see the module docstring for the three rules."""
    checked = check_method(method)
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    thinking: dict[str, list[int]] = {}
    weights: dict[str, float] = {}
    for i, ballot in enumerate(ballots):
        key = normalise(ballot.answer)
        if not key:
            continue
        first.setdefault(key, i)
        counts[key] = counts.get(key, 0) + 1
        thinking.setdefault(key, []).append(ballot.thinking_tokens)
        if checked == "confidence":
            if ballot.answer_logprob is None:
                raise ValueError(f"vote 'confidence': sample {i} has no answer log-probabilities")
            weights[key] = weights.get(key, 0.0) + math.exp(ballot.answer_logprob)
    if checked == "majority":
        scores = {k: float(c) for k, c in counts.items()}
    elif checked == "shortest_majority":
        scores = {k: c / max(1.0, sum(thinking[k]) / c) for k, c in counts.items()}
    else:
        scores = weights
    if not scores:
        return VoteOutcome(None, checked, None, {}, {})
    winner = min(scores, key=lambda k: (-scores[k], first[k]))
    return VoteOutcome(winner, checked, first[winner], scores, counts)
