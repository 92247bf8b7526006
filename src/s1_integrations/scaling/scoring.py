"""Scoring answers: normalised exact match by default, math-verify where installed."""

from __future__ import annotations

from collections.abc import Callable

from s1_integrations.core.votes import normalise_answer as normalise

Scorer = Callable[[str, str], bool]


def exact_match(prediction: str, reference: str) -> bool:
    return normalise(prediction) == normalise(reference)


def math_verify(prediction: str, reference: str) -> bool:
    from math_verify import parse, verify  # optional dependency

    return bool(verify(parse(reference), parse(prediction)))


def get_scorer(name: str) -> Scorer:
    if name == "exact":
        return exact_match
    if name == "math":
        try:
            import math_verify as _  # noqa: F401
        except ImportError as e:
            raise ValueError("scorer 'math' needs the math-verify package installed") from e
        return math_verify
    raise ValueError(f"scorer: {name!r} is not 'exact' or 'math'")
