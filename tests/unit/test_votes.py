"""Votes over n samples, on hand-built ballots: ties, all different, nothing parseable."""

from __future__ import annotations

import math

import pytest

from s1_integrations.core.votes import Ballot, normalise_answer, vote


def ballots(*answers: str, thinking: int = 10) -> list[Ballot]:
    return [Ballot(a, thinking) for a in answers]


def test_majority_counts_normalised_answers() -> None:
    out = vote(ballots("The answer is 12.", "the answer is 12", "The answer is 13."))
    assert out.answer == "12"
    assert out.counts == {"12": 2, "13": 1}
    assert out.winner_index == 0


def test_majority_tie_goes_to_the_answer_given_first() -> None:
    assert vote(ballots("The answer is 7.", "The answer is 9.")).answer == "7"
    assert vote(ballots("The answer is 9.", "The answer is 7.")).answer == "9"
    out = vote(ballots("The answer is 9.", "The answer is 7.", "The answer is 7.", "x 9"))
    assert out.answer == "7"  # "x 9" normalises to "x 9", not "9": it is its own answer


def test_all_different_answers_pick_the_first() -> None:
    out = vote(ballots("The answer is 1.", "The answer is 2.", "The answer is 3."))
    assert out.answer == "1" and out.winner_index == 0
    assert set(out.scores.values()) == {1.0}


def test_nothing_parseable_gives_no_answer() -> None:
    out = vote(ballots("", "  ", "..."))
    assert out.answer is None and out.winner_index is None and out.counts == {}


def test_unparseable_samples_cast_no_vote() -> None:
    out = vote(ballots("", "The answer is 5.", ""))
    assert out.answer == "5" and out.winner_index == 1 and out.counts == {"5": 1}


def test_shortest_majority_prefers_shorter_thinking_when_counts_are_close() -> None:
    votes = [
        Ballot("The answer is 10.", 100),
        Ballot("The answer is 10.", 100),
        Ballot("The answer is 11.", 10),
    ]
    assert vote(votes, "majority").answer == "10"
    out = vote(votes, "shortest_majority")
    assert out.answer == "11"
    assert out.scores == {"10": 2 / 100, "11": 1 / 10}


def test_confidence_weights_by_answer_probability() -> None:
    votes = [
        Ballot("The answer is 10.", 5, math.log(0.2)),
        Ballot("The answer is 10.", 5, math.log(0.2)),
        Ballot("The answer is 11.", 5, math.log(0.9)),
    ]
    out = vote(votes, "confidence")
    assert out.answer == "11"
    assert out.scores["10"] == pytest.approx(0.4) and out.scores["11"] == pytest.approx(0.9)


def test_confidence_needs_log_probabilities() -> None:
    with pytest.raises(ValueError, match="sample 1 has no answer log-probabilities"):
        vote([Ballot("The answer is 1.", 1, -0.1), Ballot("The answer is 1.", 1)], "confidence")


def test_unknown_vote_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'majorty' is not one of majority"):
        vote(ballots("The answer is 1."), "majorty")


def test_a_caller_normaliser_decides_what_counts_as_equal() -> None:
    out = vote(ballots("12 apples", "twelve", "12 pears"), normalise=lambda t: t.split()[0])
    assert out.answer == "12" and out.counts == {"12": 2, "twelve": 1}


def test_default_normaliser_matches_the_sweep_scorer() -> None:
    from s1_integrations.scaling.scoring import normalise

    for text in ("The answer is 42.", "  ANSWER IS  x ", "7"):
        assert normalise(text) == normalise_answer(text)
