"""What a budget-forced generation returns, and the events a stream yields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from s1_integrations.core.budget import ThinkingBudget

Strategy = Literal["single_pass", "rounds"]


class BudgetForcedResult(BaseModel):
    """One prompt's outcome. Every count comes from the token ids the engine produced."""

    model_config = ConfigDict(frozen=True)

    thinking: str
    answer: str
    prompt_tokens: int
    thinking_tokens: int
    answer_tokens: int
    extensions: int
    #: ``"model"``: the model closed it (or tried to, and nothing extended it); ``"budget"``:
    #: the cap; ``"policy"``: the adaptive policy judged the model confident at its attempt.
    thinking_ended_by: Literal["model", "budget", "policy"] | None
    finish_reason: Literal["stop", "length"]
    budget: ThinkingBudget
    strategy: Strategy
    model: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    thinking_token_ids: list[int]
    answer_token_ids: list[int]
    extension_positions: list[int]
    #: Per extension, the adaptive policy's signal value that triggered it (``None`` where
    #: the minimum or fixed extensions inserted it, not the policy).
    extension_signals: list[float | None] = Field(default_factory=list)
    #: The signal value at which the policy let the thinking end (``thinking_ended_by ==
    #: "policy"``), else ``None``.
    thinking_end_signal: float | None = None

    @property
    def completion_tokens(self) -> int:
        """All generated tokens, delimiters included (what an engine bills)."""
        return len(self.token_ids)


class ThinkingDelta(BaseModel):
    type: Literal["thinking"] = "thinking"
    text: str


class AnswerDelta(BaseModel):
    type: Literal["answer"] = "answer"
    text: str


class ExtensionInserted(BaseModel):
    """An extension phrase replaced an attempt to stop thinking."""

    type: Literal["extension"] = "extension"
    phrase: str
    index: int  # 0 for the first extension of this generation
    thinking_tokens: int  # thinking tokens before the phrase
    signal: float | None = None  # the adaptive policy's signal that triggered it, if it did


class FinalResult(BaseModel):
    type: Literal["result"] = "result"
    result: BudgetForcedResult


StreamEvent = ThinkingDelta | AnswerDelta | ExtensionInserted | FinalResult
