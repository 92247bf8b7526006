"""Synthetic addition problems the toy reasoner is trained and evaluated on.

Multi-digit addition is a good toy for test-time scaling: the answer is easy to check, a quick
guess is right on easy sums (few digits, no carries) and often wrong on hard ones (many digits,
several carries), and writing the sum out column by column puts a wrong guess right. So
thinking longer visibly buys accuracy, and the gain differs between easy and hard questions.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

#: Held-out problems ship with the package so sweeps and accuracy checks work offline.
HELDOUT_FILE = "heldout.jsonl"
HELDOUT_SEED = 20250131

Difficulty = Literal["easy", "hard"]

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

    @property
    def carries(self) -> int:
        """How many columns carry into the next one."""
        count, carry, a, b = 0, 0, self.a, self.b
        while a or b:
            carry = (a % 10 + b % 10 + carry) // 10
            count += carry
            a, b = a // 10, b // 10
        return count

    @property
    def difficulty(self) -> Difficulty | None:
        """``easy``: two 2-digit operands, no carry. ``hard``: two 4-digit operands, 2+ carries.

        Everything in between is neither; training uses it, the held-out set does not.
        """
        digits = (len(str(self.a)), len(str(self.b)))
        if digits == (2, 2) and self.carries == 0:
            return "easy"
        if digits == (4, 4) and self.carries >= 2:
            return "hard"
        return None


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1), 10**digits - 1) if digits > 1 else rng.randint(0, 9)


def random_problem(rng: random.Random, min_digits: int = 1, max_digits: int = 4) -> Problem:
    """Operands of independent random lengths."""
    return Problem(
        _number(rng, rng.randint(min_digits, max_digits)),
        _number(rng, rng.randint(min_digits, max_digits)),
    )


def no_carry_problem(rng: random.Random, max_digits: int = 4) -> Problem:
    """Operands of equal length whose columns never carry (the easy kind, and longer)."""
    digits = rng.randint(1, max_digits)
    a = b = 0
    for i in range(digits):
        low = 1 if i == digits - 1 and digits > 1 else 0
        x = rng.randint(low, 9 - low)
        y = rng.randint(low, 9 - x)
        a, b = a + x * 10**i, b + y * 10**i
    return Problem(a, b)


def problem_of(rng: random.Random, difficulty: Difficulty) -> Problem:
    """A problem of the given held-out difficulty, by rejection sampling."""
    while True:
        p = (
            no_carry_problem(rng, 2)
            if difficulty == "easy"
            else Problem(_number(rng, 4), _number(rng, 4))
        )
        if p.difficulty == difficulty:
            return p


def training_problem(rng: random.Random) -> Problem:
    """The training mix: a third carry-free, a fifth of the hard kind, the rest anything."""
    roll = rng.random()
    if roll < 0.35:
        return no_carry_problem(rng)
    if roll < 0.55:
        return problem_of(rng, "hard")
    return random_problem(rng)


def polish_problem(rng: random.Random) -> Problem:
    """The polishing stage's mix: half short carry-free sums, half the training mix."""
    return no_carry_problem(rng, 3) if rng.random() < 0.5 else training_problem(rng)


def column_lines(problem: Problem) -> list[str]:
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
    return lines


def extract_answer(text: str) -> str | None:
    """The number after 'answer is', or ``None`` when the text states no answer."""
    match = _ANSWER_RE.search(text)
    return match.group(1) if match else None


def heldout_problems(n: int = 200, seed: int = HELDOUT_SEED) -> list[Problem]:
    """Half easy, half hard, interleaved; the training data never contains any of them."""
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    problems: list[Problem] = []
    while len(problems) < n:
        p = problem_of(rng, "easy" if len(problems) % 2 == 0 else "hard")
        if (p.a, p.b) not in seen:
            seen.add((p.a, p.b))
            problems.append(p)
    return problems


def write_heldout(path: Path, problems: list[Problem]) -> None:
    with path.open("w") as f:
        for p in problems:
            record = {"question": p.question, "answer": p.answer, "difficulty": p.difficulty}
            f.write(json.dumps(record) + "\n")


def heldout_path() -> Path:
    """Path of the held-out question/answer set shipped inside the package."""
    return Path(str(resources.files("s1_integrations.toy").joinpath(HELDOUT_FILE)))
