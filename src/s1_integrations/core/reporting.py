"""What both adapters report about a generation, under one set of names.

LangChain puts these in ``response_metadata``, LlamaIndex in ``additional_kwargs``: code that
reads ``thinking_tokens`` or ``budget_capped`` from one framework's response finds the same key,
with the same value, in the other's.
"""

from __future__ import annotations

from typing import Any

from s1_integrations.core.results import BudgetForcedResult, VotedResult

#: The keys :func:`result_figures` returns, in order.
FIGURE_KEYS: tuple[str, ...] = (
    "prompt_tokens",
    "thinking_tokens",
    "answer_tokens",
    "completion_tokens",
    "extensions",
    "extension_positions",
    "extension_signals",
    "thinking_ended_by",
    "thinking_end_signal",
    "budget_capped",
    "finish_reason",
    "strategy",
    "model",
    "budget",
)

REASONING_TOOL_NAME = "think_hard"
REASONING_TOOL_DESCRIPTION = (
    "Think hard about a difficult question (math, logic, multi-step problems) and return a "
    "carefully reasoned answer. Ask one self-contained question."
)


def result_figures(result: BudgetForcedResult) -> dict[str, Any]:
    """Every figure a caller needs to see what the budget did; counts from token ids.

    A voted result's figures are its winning sample's, plus the vote (:func:`vote_figures`).
    """
    figures = {
        "prompt_tokens": result.prompt_tokens,
        "thinking_tokens": result.thinking_tokens,
        "answer_tokens": result.answer_tokens,
        "completion_tokens": result.completion_tokens,
        "extensions": result.extensions,
        "extension_positions": list(result.extension_positions),
        "extension_signals": list(result.extension_signals),  # the adaptive policy's
        "thinking_ended_by": result.thinking_ended_by,
        "thinking_end_signal": result.thinking_end_signal,
        "budget_capped": result.thinking_ended_by == "budget",
        "finish_reason": result.finish_reason,
        "strategy": result.strategy,
        "model": result.model,
        "budget": result.budget.model_dump(),
    }
    if isinstance(result, VotedResult):
        figures.update(vote_figures(result, result.vote.winner_index or 0))
    return figures


def vote_figures(result: VotedResult, sample: int) -> dict[str, Any]:
    """What n samples add to a sample's figures: which one it is, and how they voted."""
    return {
        "sample_index": sample,
        "samples": len(result.samples),
        "vote": result.vote.model_dump(),
    }
