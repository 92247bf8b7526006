"""What a budget-forced generation returns, and the events a stream yields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from s1_integrations.core.budget import ThinkingBudget
from s1_integrations.core.votes import VoteMethod

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
    #: the cap; ``"policy"``: the adaptive policy judged the model confident at its attempt;
    #: ``"early_exit"``: the policy's early exit ended a confident stretch before the model
    #: asked to stop.
    thinking_ended_by: Literal["model", "budget", "policy", "early_exit"] | None
    finish_reason: Literal["stop", "length"]
    budget: ThinkingBudget
    strategy: Strategy
    model: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    thinking_token_ids: list[int]
    answer_token_ids: list[int]
    extension_positions: list[int]
    #: Mean processed log-probability of the answer tokens; asked for by ``vote="confidence"``.
    answer_logprob: float | None = None
    #: Per extension, the adaptive policy's signal value that triggered it (``None`` where
    #: the minimum or fixed extensions inserted it, not the policy).
    extension_signals: list[float | None] = Field(default_factory=list)
    #: The signal value at which the policy let the thinking end (``thinking_ended_by ==
    #: "policy"``), or the lowest top-1 probability of the stretch an early exit ended
    #: (``"early_exit"``), else ``None``.
    thinking_end_signal: float | None = None

    @property
    def completion_tokens(self) -> int:
        """All generated tokens, delimiters included (what an engine bills)."""
        return len(self.token_ids)


class Vote(BaseModel):
    """How n samples of one prompt were aggregated (see ``core/votes.py`` for the rules)."""

    model_config = ConfigDict(frozen=True)

    method: VoteMethod
    #: The winning answer after normalisation; ``None`` when no sample gave a usable answer.
    answer: str | None
    #: The first sample that gave the winning answer (the one whose fields the result copies).
    winner_index: int | None
    counts: dict[str, int]
    scores: dict[str, float]


class VotedResult(BudgetForcedResult):
    """n budget-forced samples of one prompt and the answer they voted for.

    The inherited fields are those of the winning sample (the first that gave the winning
    answer; sample 0 when no sample gave a usable one), so code that reads one result reads
    the aggregate. ``samples`` holds every sample, each with its own exact counts.
    """

    samples: list[BudgetForcedResult]
    vote: Vote

    @property
    def total_thinking_tokens(self) -> int:
        """Thinking spent on this prompt over all its samples (parallel scaling's compute)."""
        return sum(s.thinking_tokens for s in self.samples)


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
