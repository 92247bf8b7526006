"""Budgets resolved to token ids for one model: the one place a :class:`ForcingPlan` is built.

The generator builds plans on the client (and sends them as ``s1_budget``); a server given a
budget in plain words (``vllm_xargs``, ``engine/xargs.py``) builds them with its own tokenizer.
Both go through :class:`PlanBuilder`, so a budget means the same tokens wherever it is
resolved.
"""

from __future__ import annotations

from typing import Any

from s1_integrations.core.budget import BudgetError, ThinkingBudget
from s1_integrations.core.forcing import ForcingPlan
from s1_integrations.core.formats import (
    BreakTokens,
    ThinkingFormat,
    bad_word_ids,
    break_tokens,
    detect_format,
)

#: Budgets whose plans a builder remembers (a service typically uses a handful).
PLAN_CACHE_SIZE = 256


class PlanBuilder:
    """A tokenizer and its thinking format, and the plans of the budgets asked for so far.

    Plans are remembered per budget (budgets are frozen, so hashable): a phrase or a
    conclusion is tokenized once, and the soft landing's break tokens are classified once per
    vocabulary, however many requests use them.
    """

    def __init__(self, tokenizer: Any, thinking_format: ThinkingFormat | None = None) -> None:
        self.tokenizer = tokenizer
        self.thinking_format = thinking_format or detect_format(tokenizer)
        self.end_ids = self.thinking_format.end_ids(tokenizer)
        if not self.end_ids:
            raise ValueError("thinking_format.end: the end delimiter encodes to no tokens")
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids: tuple[int, ...] = (int(eos),) if eos is not None else ()
        # What the model may not write (the thinking can never be reopened, nor closed a
        # second time): as vLLM's bad_words would tokenize the delimiters, so the rounds
        # strategy, which hands vLLM the words, suppresses exactly what the processor does.
        fmt = self.thinking_format
        self.ban_thinking = bad_word_ids(tokenizer, (fmt.start,))
        self.ban_answer = bad_word_ids(tokenizer, (fmt.start, fmt.end))
        self._breaks: BreakTokens | None = None
        self._plans: dict[ThinkingBudget, ForcingPlan] = {}

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def plan_for(self, budget: ThinkingBudget) -> ForcingPlan:
        """The budget resolved to token ids (remembered); :class:`BudgetError` if it cannot be."""
        plan = self._plans.get(budget)
        if plan is None:
            plan = self._build(budget)
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[budget] = plan
        return plan

    def break_tokens(self) -> BreakTokens:
        """The vocabulary's line and sentence ends (soft landing), classified once."""
        if self._breaks is None:
            delimiters = (self.end_ids, *self.ban_thinking, *self.ban_answer)
            self._breaks = break_tokens(self.tokenizer, delimiters)
        return self._breaks

    def _build(self, budget: ThinkingBudget) -> ForcingPlan:
        conclusion = self.encode(budget.conclusion) if budget.conclusion else ()
        cap = budget.max_thinking_tokens
        if cap is not None and len(conclusion) > cap:
            raise BudgetError(
                "conclusion",
                f"{len(conclusion)} tokens do not fit under max_thinking_tokens={cap}",
            )
        optional: dict[str, Any] = {}  # the soft landing's and the policy's fields
        if budget.soft_landing_tokens:
            found = self.break_tokens()
            if not found.breaks and not found.weak:
                raise BudgetError(
                    "soft_landing_tokens",
                    "this tokenizer has no token ending in a newline or a sentence end",
                )
            optional = {
                "landing": budget.soft_landing_tokens,
                "breaks": found.breaks,
                "weak_breaks": found.weak,
                "digits": found.digits,
            }
        policy = budget.adaptive
        if policy is not None:
            optional.update(
                adaptive_signal=policy.signal,
                adaptive_threshold=policy.threshold,
                adaptive_max=policy.max_extensions,
            )
            if policy.exit_after:  # off, the plan keeps its defaults (what the wire omits)
                optional.update(exit_after=policy.exit_after, exit_threshold=policy.exit_threshold)
        phrases = tuple(self.encode(p) for p in budget.extension_phrases)
        if any(not p for p in phrases):
            raise BudgetError("extension_phrases", "a phrase encodes to no tokens")
        return ForcingPlan(
            end=self.end_ids,
            eos=self.eos_ids,
            min_thinking=budget.min_thinking_tokens,
            max_thinking=cap,
            extensions=budget.extensions,
            phrases=phrases,
            conclusion=conclusion,
            max_answer=budget.max_answer_tokens,
            ban_thinking=self.ban_thinking,
            ban_answer=self.ban_answer,
            **optional,
        )
