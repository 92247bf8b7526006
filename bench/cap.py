"""A maximum alone: single-pass forcing vs vLLM's built-in ``thinking_token_budget``.

vLLM caps thinking itself when the engine has a reasoning config (``reasoning_parser``), but
has no minimum and no extension phrase. On a pure cap the two do the same thing, so this is
the price of the more general processor. Both run on one engine, which must therefore be
started with a reasoning parser (the CLI does so; see :func:`reasoning_engine_args`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.common import (
    BenchConfig,
    engine_tokens,
    generated_tokens,
    measure,
    questions,
    run_requests,
)
from bench.report import Report, Row
from s1_integrations import ThinkingBudget

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator

TARGET = 1.05


class NeedsReasoningConfig(RuntimeError):
    """The engine was started without a reasoning parser, so vLLM refuses a thinking budget."""


def reasoning_engine_args(parser: str = "deepseek_r1") -> dict[str, Any]:
    """Engine arguments that turn on vLLM's thinking budget (``<think>``/``</think>``)."""
    return {"reasoning_parser": parser}


def budget(cfg: BenchConfig) -> ThinkingBudget:
    """A cap well below the toy's natural thinking (about 40 tokens), so every prompt is cut."""
    return ThinkingBudget(max_thinking_tokens=8 if cfg.quick else 16)


def builtin_params(cap: int, max_tokens: int) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        n=1,
        temperature=0.0,
        max_tokens=max_tokens,
        thinking_token_budget=cap,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    prompts = questions(cfg.batch_size)
    b = budget(cfg)
    assert b.max_thinking_tokens is not None
    items = gen.prepare(prompts, b)
    # Same max_tokens as the generator submits, so neither side may run longer.
    requests = [
        (it.prompt_ids, builtin_params(b.max_thinking_tokens, it.max_tokens)) for it in items
    ]
    try:
        builtin_ids = run_requests(gen, requests)
    except Exception as e:  # vLLM's VLLMValidationError, wrapped by the engine as EngineError
        if "reasoning_config" not in str(e):
            raise
        raise NeedsReasoningConfig(
            "the cap comparison needs an engine started with a reasoning parser, e.g. "
            f"BudgetForcedGenerator(..., **{reasoning_engine_args()!r}): {e}"
        ) from e
    forced_results = gen.generate(prompts, b)
    identical = sum(r.token_ids == ids for r, ids in zip(forced_results, builtin_ids, strict=True))

    def forced() -> int:
        return sum(generated_tokens(r) for r in gen.generate(prompts, b))

    def builtin() -> int:
        return engine_tokens(run_requests(gen, requests))

    ours, other = "single-pass cap", "vLLM thinking_token_budget"
    t = measure([(ours, forced), (other, builtin)], cfg.repeats, cfg.warmup)
    report = Report(
        "cap", f"cap: single-pass vs vLLM's thinking_token_budget, batch {len(prompts)}"
    )
    report.rows.append(
        Row(
            f"cap {b.max_thinking_tokens}: single-pass vs vLLM thinking_token_budget",
            t[ours],
            t[other],
            TARGET,
            extra={"tokens": f"{t[ours].tokens} / {t[other].tokens}"},
        )
    )
    report.notes.append(
        f"token-identical outputs: {identical}/{len(prompts)} (greedy, same cap, same max_tokens)"
    )
    report.data = {"identical": identical, "n": len(prompts)}
    return report
