"""The adaptive thinking policy: extend where the model is unsure, stop where it is sure.

At each attempt of the model to end its thinking, the policy reads one signal off the
distributions the model sampled its own thinking tokens from since the last extension (or the
start), and decides: confident, the thinking ends; unsure, the end is suppressed and an
extension phrase appended, up to ``max_extensions`` times.

The signals are built from the top-1 probability of each step's distribution, because that is
what every strategy can see exactly: the in-engine processor computes it from the logits, and
the rounds strategy (and a client replaying a single-pass output) read it off the top-1
log-probability vLLM returns. Entropy would need the whole distribution, which a client gets
only at the cost of every token's log-probability (``logprobs=-1``), so it is not offered.

This module holds the public setting (:class:`AdaptivePolicy`), the running aggregate a
request keeps (:class:`SignalTracker`) and the decision rule (:func:`confident`), one piece
of code all strategies share; the processor computes the batch's top-1 values from logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from s1_integrations.core.numbers import Count, Real

#: Signal names and what they aggregate over the model's thinking tokens since the last
#: extension: the lowest top-1 probability, or the mean one. Higher means more confident.
SIGNALS: tuple[str, ...] = ("min_top1", "mean_top1")

#: The default signal and threshold, measured on the toy reasoner v2 (docs/adaptive.md).
DEFAULT_SIGNAL = "min_top1"
DEFAULT_THRESHOLD = 0.45
#: A token of the early exit's confident stretch: the model was all but certain of it.
DEFAULT_EXIT_THRESHOLD = 0.99


class AdaptivePolicy(BaseModel):
    """Extend the thinking only where the model was unsure of what it wrote.

    At each attempt to end the thinking (past ``min_thinking_tokens``), the ``signal`` over
    the model's own thinking tokens since the last extension is compared with ``threshold``:
    at or above it the model is confident and the thinking ends; below it, the end is
    replaced by the next extension phrase, at most ``max_extensions`` times per generation.
    The cap, the conclusion and the soft landing apply unchanged. ``exit_after`` > 0 adds the
    early exit: once the thinking has reached its minimum, a stretch of that many confident
    tokens of the model (each at ``exit_threshold`` or above; it may have begun below the
    minimum) ends the thinking before the model asks to.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal: str = Field(
        default=DEFAULT_SIGNAL,
        description=(
            "min_top1: the lowest top-1 probability of the steps since the last extension; "
            "mean_top1: their mean."
        ),
    )
    threshold: Real = Field(
        default=DEFAULT_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="Confident when the signal is at least this (a probability, 0 to 1).",
    )
    max_extensions: Count = Field(
        default=1, ge=0, description="Extensions the policy may insert in one generation."
    )
    exit_after: Count = Field(
        default=0,
        ge=0,
        description=(
            "Early exit: end the thinking once this many consecutive thinking tokens of the "
            "model each had a top-1 probability of at least exit_threshold and the thinking "
            "has reached min_thinking_tokens; 0: no early exit (the model ends its thinking "
            "itself)."
        ),
    )
    exit_threshold: Real = Field(
        default=DEFAULT_EXIT_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="A token counts towards the early exit's stretch at this top-1 or above.",
    )

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        if value not in SIGNALS:
            raise ValueError(f"unknown signal {value!r}; use one of {list(SIGNALS)}")
        return value

    @field_validator("threshold", "exit_threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if math.isnan(value):
            raise ValueError("must be a number between 0 and 1")
        return value


@dataclass
class SignalTracker:
    """The running signal of one request: O(1) state, folded one model token at a time."""

    signal: str
    lowest: float = 1.0
    total: float = 0.0
    count: int = 0

    def add(self, top1: float) -> None:
        self.lowest = min(self.lowest, top1)
        self.total += top1
        self.count += 1

    def reset(self) -> None:
        self.lowest, self.total, self.count = 1.0, 0.0, 0

    @property
    def value(self) -> float:
        """The signal now; 1.0 (confident) before the model wrote anything since the reset."""
        if self.signal == "min_top1":
            return self.lowest
        return self.total / self.count if self.count else 1.0


def confident(value: float, threshold: float) -> bool:
    """The decision rule: a signal at or above the threshold lets the thinking end."""
    return value >= threshold


@dataclass
class Stretch:
    """The early exit's run of confident model tokens: how long it is and its lowest top-1.

    A token without a top-1 (none was measured), or below ``threshold``, ends the run; so
    does a forced token (:meth:`reset`), which is no evidence of the model's confidence.
    """

    threshold: float
    length: int = 0
    lowest: float = 1.0

    def add(self, top1: float | None) -> None:
        if top1 is not None and top1 >= self.threshold:
            self.length += 1
            self.lowest = min(self.lowest, top1)
        else:
            self.reset()

    def reset(self) -> None:
        self.length, self.lowest = 0, 1.0
