"""The toy reasoner's training data: what carries loss, what is held out, what prompts look like."""

from __future__ import annotations

import random

import pytest

from s1_integrations.toy import contexts, traces
from s1_integrations.toy.problems import (
    Problem,
    heldout_problems,
    no_carry_problem,
    problem_of,
    training_problem,
)


def test_difficulty_labels_follow_digits_and_carries() -> None:
    assert Problem(42, 46).difficulty == "easy"
    assert Problem(45, 46).difficulty is None  # a carry: neither easy nor hard
    assert Problem(4857, 2968).carries == 3
    assert Problem(4857, 2968).difficulty == "hard"
    assert Problem(4000, 2001).difficulty is None  # four digits but no carry
    assert Problem(999, 1).carries == 3


def test_heldout_set_is_half_easy_half_hard_without_repeats() -> None:
    problems = heldout_problems()
    assert len(problems) == 200
    assert sum(p.difficulty == "easy" for p in problems) == 100
    assert sum(p.difficulty == "hard" for p in problems) == 100
    assert len({(p.a, p.b) for p in problems}) == 200


def test_training_problems_never_hit_the_heldout_set() -> None:
    from s1_integrations.toy.train import reasoner_example

    held = {(p.a, p.b) for p in heldout_problems()}
    rng = random.Random(5)
    # The training sampler alone does produce held-out problems, so the exclusion matters.
    assert any((lambda p: (p.a, p.b) in held)(problem_of(rng, "easy")) for _ in range(5000))
    for _ in range(3000):
        example = reasoner_example(rng, held)
        problem = example.extra.get("problem")
        assert problem is None or (problem.a, problem.b) not in held


def test_no_carry_problems_do_not_carry() -> None:
    rng = random.Random(0)
    assert all(no_carry_problem(rng).carries == 0 for _ in range(500))


@pytest.mark.parametrize("extensions", range(len(traces.EXTENSION_WEIGHTS)))
def test_forced_text_is_never_learned(extensions: int) -> None:
    rng = random.Random(extensions)
    problem = Problem(4857, 2968)
    for _ in range(50):
        segments = traces.thinking_segments(rng, problem, extensions)
        phrases = [(t, learned) for t, learned in segments if t in traces.FORCED_PHRASES]
        assert len(phrases) == extensions
        assert not any(learned for _, learned in phrases)
        guess, learned = segments[1]
        if extensions == 0:
            assert guess == "7825" and learned  # natural thinking is always taught right
        elif guess != "7825":
            assert not learned  # a wrong guess is context, never a target


def test_wrong_guesses_happen_and_differ_from_the_truth() -> None:
    rng = random.Random(1)
    problem = Problem(4857, 2968)
    guesses = [traces.thinking_segments(rng, problem, 1)[1][0] for _ in range(1000)]
    wrong = [g for g in guesses if g != "7825"]
    assert 0.5 < len(wrong) / len(guesses) < 0.7


def test_the_answer_copies_the_last_result() -> None:
    segments: list[traces.Segment] = [("\nguess: 123\n", True)]
    assert traces.last_result(segments) == "123"
    segments.append(("Wait, let me add column by column:\n1+2=3\nso 1+2=3\n", True))
    assert traces.last_result(segments) == "3"
    assert traces.last_result([("\nguess: 12", True)]) is None  # an unfinished line


def test_capped_traces_force_the_end_and_answer_at_once() -> None:
    rng = random.Random(2)
    for _ in range(200):
        thinking = traces.thinking_segments(rng, Problem(4857, 2968), rng.randint(0, 8))
        segments = traces.capped(rng, thinking, "7825")
        end = [i for i, (t, _) in enumerate(segments) if t == traces.THINK_END]
        assert len(end) == 1 and not segments[end[0]][1]  # forced: no loss
        assert segments[end[0] + 1] == ("\nThe answer is ", True)


def test_every_prompt_shape_renders_and_fits_the_context() -> None:
    from transformers import AutoTokenizer

    from s1_integrations import toy_model_path
    from s1_integrations.toy.train import CONTEXT, Encoder

    tokenizer = AutoTokenizer.from_pretrained(toy_model_path())
    encoder = Encoder(tokenizer)
    rng = random.Random(3)
    kinds: dict[str, int] = {}
    for _ in range(1500):
        example = contexts.example(rng, training_problem(rng))
        prompt = encoder.prompt(example)
        ids, labels = encoder.encode(example)
        assert len(ids) == len(labels) <= CONTEXT
        assert prompt.endswith("<|im_start|>assistant\n<think>")
        if example.tools:
            assert "<tools>" in prompt
            for tool in example.tools:
                assert tool["function"]["name"] in prompt
        kinds[example.kind] = kinds.get(example.kind, 0) + 1
    assert set(kinds) == {
        "plain",
        "system",
        "turns",
        "qa",
        "refine",
        "tool_call",
        "tool_result",
        "structured",
        "tools_unused",
    }
