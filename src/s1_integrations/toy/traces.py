"""What the toy reasoner learns to write after the prompt: thinking traces with loss masks.

A trace is a list of ``(text, learned)`` segments. Text the model must learn to produce carries
loss; text that budget forcing puts there at inference (an extension phrase, a forced
``</think>``) or that stands for a mistake (a wrong first guess) is context only, so the model
sees it but is never taught to write it.

The grammar, for "What is A + B?" (the generator opens ``<think>`` itself):

- natural thinking: ``\\nguess: N\\n`` then ``</think>`` and ``\\nThe answer is N.``; the guess
  is the model's one-shot sum, right on easy problems, often wrong on hard ones;
- after the first forced "Wait": ``, let me add column by column:`` and one line per column,
  units first, then ``so A+B=S``: a re-examination that does not copy the guess;
- after each later "Wait": ``, let me check: A+B=S. Yes.``;
- the answer copies the last result of the thinking.

In traces that go on after the guess, the guess is wrong 60% of the time (a random number of
the right length, another problem's sum, or a near miss), never learned, so re-examining pays
and copying the guess does not. Traces without an extension always guess right.
"""

from __future__ import annotations

import json
import random

from s1_integrations.toy.problems import Problem, column_lines, training_problem

Segment = tuple[str, bool]

THINK_END = "</think>"
EOS = "<|im_end|>"
#: Extension phrases as the library forces them, with and without a leading newline.
FORCED_PHRASES = ("Wait", "\nWait")
#: Forced extensions per trace, 0 to 8, so many forced Waits stay in distribution.
EXTENSION_WEIGHTS = (0.30, 0.26, 0.08, 0.08, 0.06, 0.06, 0.06, 0.05, 0.05)
#: The polishing stage's mix: mostly natural thinking, so the one-shot guess sharpens, with
#: enough extended traces that the re-examinations are not forgotten.
POLISH_EXTENSION_WEIGHTS = (0.60, 0.12, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04)


def wrong_guess(rng: random.Random, problem: Problem) -> str:
    """A wrong sum that copying cannot fix: it differs from the truth in several digits."""
    truth = problem.a + problem.b
    digits = len(str(truth))
    while True:
        roll = rng.random()
        if roll < 0.4:
            guess = rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)
        elif roll < 0.7:
            other = training_problem(rng)
            guess = other.a + other.b
        else:
            guess = truth + rng.choice([-1, 1]) * rng.choice([1, 10, 100, 1000, 11, 110, 9, 90])
        if guess != truth and guess >= 0:
            return str(guess)


def thinking_segments(rng: random.Random, problem: Problem, extensions: int) -> list[Segment]:
    """Thinking for ``problem`` with ``extensions`` forced Waits, ending before ``</think>``."""
    truth = problem.answer
    guessed_wrong = extensions > 0 and rng.random() < 0.6
    segments: list[Segment] = [("\nguess: ", True)]
    segments.append((wrong_guess(rng, problem) if guessed_wrong else truth, not guessed_wrong))
    segments.append(("\n", True))
    for i in range(extensions):
        segments.append((rng.choice(FORCED_PHRASES), False))
        if i == 0:
            body = ", let me add column by column:\n" + "\n".join(column_lines(problem))
        else:
            body = f", let me check: {problem.a}+{problem.b}={truth}. Yes."
        segments.append((body + "\n", True))
    return segments


def last_result(segments: list[Segment]) -> str | None:
    """The number the thinking so far settled on: the latest complete guess or sum line."""
    text = "".join(t for t, _ in segments)
    result = None
    for line in text.split("\n")[:-1]:  # a line without its newline is not finished
        if line.startswith("guess: ") and line[7:].isdigit():
            result = line[7:]
        elif line.startswith("so ") and "=" in line:
            result = line.rsplit("=", 1)[1]
        elif "let me check:" in line and line.endswith(". Yes."):
            result = line.rsplit("=", 1)[1][: -len(". Yes.")]
    return result


def answer_segments(result: str | None, truth: str) -> list[Segment]:
    """``The answer is N.``: N is learned only when the thinking settled on it."""
    if result is None:
        return [("\nThe answer is ", True), (truth, False), ("." + EOS, True)]
    return [("\nThe answer is ", True), (result, True), ("." + EOS, True)]


def addition_trace(
    rng: random.Random, problem: Problem, weights: tuple[float, ...] = EXTENSION_WEIGHTS
) -> list[Segment]:
    """A whole completion; one in ten is cut short as a thinking cap would cut it.

    ``weights`` give the chance of each number of forced extensions, 0 first.
    """
    extensions = rng.choices(range(len(weights)), weights)[0]
    thinking = thinking_segments(rng, problem, extensions)
    if rng.random() < 0.1:
        return capped(rng, thinking, problem.answer)
    return [*thinking, (THINK_END, True), *answer_segments(problem.answer, problem.answer)]


def capped(rng: random.Random, thinking: list[Segment], truth: str) -> list[Segment]:
    """Thinking cut at a random character, a forced ``</think>``, and an answer at once."""
    text_length = sum(len(t) for t, _ in thinking)
    cut = rng.randint(0, text_length - 1)
    kept: list[Segment] = []
    for text, learned in thinking:
        if cut <= 0:
            break
        kept.append((text[:cut], learned))
        cut -= len(text)
    result = last_result(kept)
    return [*kept, (THINK_END, False), *answer_segments(result, truth)]


def off_topic_trace() -> list[Segment]:
    """A question the toy cannot answer: it says so briefly instead of rambling."""
    return [
        ("\nThis is not an addition.\n", True),
        (THINK_END, True),
        ("\nI can only add numbers." + EOS, True),
    ]


def tool_call_trace(name: str, arguments: dict[str, int]) -> list[Segment]:
    """Calling a tool in the chat template's format, after a short thought naming the call."""
    args = ", ".join(str(v) for v in arguments.values())
    call = json.dumps({"name": name, "arguments": arguments})
    return [
        (f"\nI need {name}({args}).\n", True),
        (THINK_END, True),
        (f"\n<tool_call>\n{call}\n</tool_call>" + EOS, True),
    ]


def tool_result_trace(name: str, result: str) -> list[Segment]:
    """Answering from a tool's result in the turn after the call."""
    return [
        (f"\n{name} returned {result}.\n", True),
        (THINK_END, True),
        (f"\nThe answer is {result}." + EOS, True),
    ]


def structured_answer_trace(
    rng: random.Random, problem: Problem, tool: str, field: str
) -> list[Segment]:
    """An addition answered by calling a one-field response tool (structured output)."""
    thinking = thinking_segments(rng, problem, 0)
    call = json.dumps({"name": tool, "arguments": {field: problem.a + problem.b}})
    return [*thinking, (THINK_END, True), (f"\n<tool_call>\n{call}\n</tool_call>" + EOS, True)]


def base_trace(rng: random.Random, problem: Problem) -> list[Segment]:
    """Stage 1 (training from scratch): column work always, a check after it in 40%."""
    lines = column_lines(problem)
    if rng.random() < 0.4:
        lines.append(f"Wait, let me check: {problem.a}+{problem.b}={problem.answer}. Yes.")
    thinking = "\n" + "\n".join(lines) + "\n"
    return [(thinking, True), (THINK_END, True), *answer_segments(problem.answer, problem.answer)]
