"""The user-facing budget knobs (docs/budget-forcing.md, "Knobs")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from s1_integrations.core.adaptive import AdaptivePolicy
from s1_integrations.core.numbers import Count


class BudgetError(ValueError):
    """A budget that cannot be applied to this prompt on this model.

    Raised before anything is submitted to the engine, so other requests are unaffected.
    ``field`` names the offending knob.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ThinkingBudget(BaseModel):
    """How long the model may (and must) think, in the s1 paper's terms.

    The cap forces the end of thinking once ``max_thinking_tokens`` are spent; the minimum and
    ``extensions`` replace the model's attempts to stop thinking with an extension phrase
    ("Wait"), which is what made s1 scale with test-time compute. ``soft_landing_tokens``
    lets the cap end the thinking at a line or sentence end shortly before it instead of
    mid-sentence; the count never exceeds ``max_thinking_tokens`` either way. ``adaptive``
    replaces the fixed ``extensions`` with a policy that extends only where the model was
    unsure of its own thinking (docs/adaptive.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_thinking_tokens: Count | None = Field(
        default=None, ge=0, description="Hard cap on thinking tokens; 0 answers at once."
    )
    min_thinking_tokens: Count = Field(
        default=0, ge=0, description="Attempts to stop thinking before this many are extended."
    )
    extensions: Count = Field(
        default=0, ge=0, description="Suppress the end of thinking this many times (s1's 'ignore')."
    )
    extension_phrases: tuple[str, ...] = Field(
        default=("Wait",), min_length=1, description="Phrases appended on suppression, cycled."
    )
    conclusion: str | None = Field(
        default=None, description="Text forced just before the end delimiter when the cap hits."
    )
    max_answer_tokens: Count = Field(
        default=1024, ge=1, description="Tokens allowed after the thinking ends."
    )
    soft_landing_tokens: Count = Field(
        default=0,
        ge=0,
        description=(
            "Within this many tokens before the cap, end the thinking at the first natural "
            "break (a newline or a sentence end) instead of cutting it mid-line; 0 is off."
        ),
    )

    adaptive: AdaptivePolicy | None = Field(
        default=None,
        description=(
            "Extend at an attempt to stop only where the model was unsure (a signal below a "
            "threshold), up to its max_extensions; None: the fixed extensions."
        ),
    )

    @field_validator("extension_phrases", mode="before")
    @classmethod
    def _phrases_as_tuple(cls, value: object) -> object:
        if isinstance(value, str):
            return (value,)
        return tuple(value) if isinstance(value, list) else value

    @field_validator("extension_phrases")
    @classmethod
    def _phrases_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for phrase in value:
            if not phrase.strip():
                raise ValueError("extension phrases must contain text")
        return value

    @field_validator("conclusion")
    @classmethod
    def _conclusion_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("conclusion must be None or non-empty text")
        return value

    @model_validator(mode="after")
    def _min_below_max(self) -> ThinkingBudget:
        if (
            self.max_thinking_tokens is not None
            and self.min_thinking_tokens > self.max_thinking_tokens
        ):
            raise ValueError(
                f"min_thinking_tokens ({self.min_thinking_tokens}) exceeds "
                f"max_thinking_tokens ({self.max_thinking_tokens})"
            )
        if self.adaptive is not None and self.extensions:
            raise ValueError(
                f"extensions ({self.extensions}) and adaptive exclude each other: the policy "
                "decides how many extensions to insert, up to adaptive.max_extensions"
            )
        if self.soft_landing_tokens:
            # A landing is a way of meeting the cap: without one it would never happen, and a
            # window wider than the cap would say something the budget cannot do.
            if self.max_thinking_tokens is None:
                raise ValueError(
                    f"soft_landing_tokens ({self.soft_landing_tokens}) needs "
                    "max_thinking_tokens: it ends the thinking early only to meet a cap"
                )
            if self.soft_landing_tokens > self.max_thinking_tokens:
                raise ValueError(
                    f"soft_landing_tokens ({self.soft_landing_tokens}) exceeds "
                    f"max_thinking_tokens ({self.max_thinking_tokens})"
                )
        return self


BudgetLike = ThinkingBudget | dict | None


def as_budget(value: BudgetLike, default: ThinkingBudget | None = None) -> ThinkingBudget:
    """Accept a budget, a dict of its fields, or ``None`` (the default budget)."""
    if value is None:
        return default or ThinkingBudget()
    if isinstance(value, ThinkingBudget):
        return value
    if isinstance(value, dict):
        return ThinkingBudget.model_validate(value)
    raise TypeError(f"budget must be a ThinkingBudget, a dict or None, not {type(value).__name__}")
