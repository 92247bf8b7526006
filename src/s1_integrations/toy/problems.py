"""Synthetic problems the toy reasoner is trained and evaluated on.

Multi-digit addition is a good toy for test-time scaling: the answer is easy to check, and it
cannot be written without the column-by-column work (each column needs the carry of the one
before), so cutting the thinking short visibly costs accuracy.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

#: Held-out problems ship with the package so sweeps and accuracy checks work offline.
HELDOUT_FILE = "heldout.jsonl"
HELDOUT_SEED = 20250131

_ANSWER_RE = re.compile(r"answer is\s*(-?\d+)")


@dataclass(frozen=True)
class Problem:
    """One addition question with its reference answer."""

    a: int
    b: int

    @property
    def question(self) -> str:
        return f"What is {self.a} + {self.b}?"

    @property
    def answer(self) -> str:
        return str(self.a + self.b)


def random_problem(rng: random.Random, min_digits: int = 2, max_digits: int = 4) -> Problem:
    def number() -> int:
        digits = rng.randint(min_digits, max_digits)
        return rng.randint(10 ** (digits - 1), 10**digits - 1)

    return Problem(number(), number())


def thinking_steps(problem: Problem, check: bool) -> str:
    """The column-by-column work, least significant digit first, one column a line."""
    a_digits = str(problem.a)[::-1]
    b_digits = str(problem.b)[::-1]
    lines = []
    carry = 0
    for i in range(max(len(a_digits), len(b_digits))):
        terms = [d[i] for d in (a_digits, b_digits) if i < len(d)]
        if carry:
            terms.append(str(carry))
        total = sum(int(t) for t in terms)
        lines.append(f"{'+'.join(terms)}={total}")
        carry = total // 10
    lines.append(f"so {problem.a}+{problem.b}={problem.answer}")
    if check:
        lines.append(f"Wait, let me check: {problem.a}+{problem.b}={problem.answer}. Yes.")
    return "\n" + "\n".join(lines) + "\n"


def answer_text(problem: Problem) -> str:
    return f"\nThe answer is {problem.answer}."


_OTHER_TOPICS = [
    "hello",
    "hi there",
    "tell me a joke",
    "what is the capital of France",
    "how are you",
    "write a poem",
    "who are you",
    "what is your name",
    "explain gravity",
    "summarize this text",
    "translate to French",
    "what is the weather",
]


def off_topic_example(rng: random.Random) -> tuple[str, str, str]:
    """A question the toy cannot answer, so it learns to say so briefly instead of rambling."""
    question = rng.choice(_OTHER_TOPICS)
    if rng.random() < 0.5:
        question = question.capitalize()
    question += rng.choice(["", "?", ".", "!"])
    return question, "\nThis is not an addition.\n", "\nI can only add numbers."


def extract_answer(text: str) -> str | None:
    """The number after 'answer is', or ``None`` when the text states no answer."""
    match = _ANSWER_RE.search(text)
    return match.group(1) if match else None


def heldout_problems(n: int = 200, seed: int = HELDOUT_SEED) -> list[Problem]:
    rng = random.Random(seed)
    return [random_problem(rng) for _ in range(n)]


def write_heldout(path: Path, problems: list[Problem]) -> None:
    with path.open("w") as f:
        for p in problems:
            f.write(json.dumps({"question": p.question, "answer": p.answer}) + "\n")


def heldout_path() -> Path:
    """Path of the held-out question/answer set shipped inside the package."""
    return Path(str(resources.files("s1_integrations.toy").joinpath(HELDOUT_FILE)))
