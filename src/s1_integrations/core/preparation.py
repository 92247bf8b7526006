"""Prompts and budgets made ready for a backend: rendered, planned, checked, all up front.

Everything a call can get wrong (a malformed prompt, a budget the context cannot hold, a
plan one pass cannot apply) is found here, before anything reaches the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from s1_integrations.core.budget import BudgetError, BudgetLike, ThinkingBudget, as_budget
from s1_integrations.core.plans import PlanBuilder
from s1_integrations.core.prompts import Prompt, PromptError, render_text
from s1_integrations.core.results import Strategy
from s1_integrations.core.tokenizing import fast_encoder
from s1_integrations.core.tracking import Prepared

STRATEGIES: tuple[Strategy, ...] = ("single_pass", "rounds")


def check_strategy(strategy: str) -> Strategy:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: {strategy!r} is not 'single_pass' or 'rounds'")
    return cast(Strategy, strategy)


class Preparer:
    """Turns a call's prompts and budgets into :class:`Prepared` items for one model.

    The plans come from a :class:`PlanBuilder`, which remembers each budget's plan (budgets
    are frozen), so a budget used again costs nothing to resolve.
    """

    def __init__(
        self,
        builder: PlanBuilder,
        max_model_len: int,
        forcing_in_engine: bool,
        default_budget: ThinkingBudget,
    ) -> None:
        self.builder = builder
        self.max_model_len = max_model_len
        self.forcing_in_engine = forcing_in_engine
        self.default_budget = default_budget

    def prepare(
        self,
        prompts: Prompt | Sequence[Prompt],
        budget: BudgetLike | Sequence[BudgetLike],
        strategy: Strategy,
        tools: Sequence[dict[str, Any]] | None = None,
        structured: bool = False,
    ) -> list[Prepared]:
        items = as_prompt_list(prompts)
        budgets = self.budgets(budget, len(items))
        check_strategy(strategy)
        builder = self.builder
        texts = []
        for i, prompt in enumerate(items):
            try:
                texts.append(render_text(prompt, builder.tokenizer, builder.thinking_format, tools))
            except PromptError as e:
                raise PromptError(f"prompts[{i}]: {e}") if len(items) > 1 else e from None
        return [
            self._one(i, prompt_ids, b, strategy, structured)
            for i, (prompt_ids, b) in enumerate(
                zip(fast_encoder(builder.tokenizer)(texts), budgets, strict=True)
            )
        ]

    def _one(
        self,
        i: int,
        prompt_ids: list[int],
        b: ThinkingBudget,
        strategy: Strategy,
        structured: bool,
    ) -> Prepared:
        builder = self.builder
        plan = builder.plan_for(b)
        end = len(builder.end_ids)
        room = self.max_model_len - len(prompt_ids)
        if room <= end + 1:
            raise PromptError(
                f"prompts[{i}]: {len(prompt_ids)} tokens leave no room in the model's "
                f"context of {self.max_model_len} tokens"
            )
        needed = (b.max_thinking_tokens or b.min_thinking_tokens) + end + 1
        if room < needed:
            field = "max_thinking_tokens" if b.max_thinking_tokens else "min_thinking_tokens"
            raise BudgetError(
                field,
                f"the prompt has {len(prompt_ids)} tokens and the model's context is "
                f"{self.max_model_len}: {needed} more do not fit",
            )
        use = strategy if self.forcing_in_engine else "rounds"
        if use == "single_pass" and len(plan.end) > 1 and (plan.needs_forced_flags or structured):
            use = "rounds"  # one pass cannot take back a delimiter it has already emitted
        if b.max_thinking_tokens is not None:
            limit = b.max_thinking_tokens + len(plan.end) + b.max_answer_tokens + 1
            max_tokens = min(room, limit)
        else:
            max_tokens = room
        return Prepared(i, prompt_ids, b, plan, use, max_tokens)

    def budgets(self, budget: BudgetLike | Sequence[BudgetLike], n: int) -> list[ThinkingBudget]:
        if isinstance(budget, (list, tuple)):
            if len(budget) != n:
                raise BudgetError("budget", f"{len(budget)} budgets given for {n} prompts")
            return [as_budget(b, self.default_budget) for b in budget]
        return [as_budget(budget, self.default_budget)] * n  # type: ignore[arg-type]


def as_prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    """One question, one chat, or a list of either."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], dict):
        return [cast(Prompt, prompts)]  # a single chat
    if isinstance(prompts, Sequence):
        if len(prompts) == 0:
            raise PromptError("prompts: no prompts given")
        return list(cast(Sequence[Prompt], prompts))
    raise PromptError(f"prompts: expected a string or a list, got {type(prompts).__name__}")
