"""Where the single-pass overhead goes: add one ingredient of the generator's request at a time.

Diagnostic, not part of ``all``. Every variant generates the same tokens as the overhead
comparison; each row is that variant against plain final-only vLLM. Compare the front-end
CPU column: the processor runs in the worker, while streamed outputs, log-probabilities and
the generator's own bookkeeping run in this process, on the critical path of a small model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench import overhead
from bench.common import (
    BenchConfig,
    engine_tokens,
    generated_tokens,
    measure,
    output_kind,
    questions,
    run_requests,
)
from bench.report import Report, Row
from s1_integrations.core.forcing import EXTRA_ARGS_KEY

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator


def _params(n_tokens: int | None, max_tokens: int, plan: Any, kind: str, **extra: Any) -> Any:
    """Exactly ``n_tokens`` (plain) or the generator's limits with its forcing plan."""
    from vllm import SamplingParams

    length: dict[str, Any]
    if plan is None:
        assert n_tokens is not None
        length = {"min_tokens": n_tokens, "max_tokens": n_tokens, "ignore_eos": True}
    else:
        length = {"max_tokens": max_tokens, "extra_args": {EXTRA_ARGS_KEY: plan.to_extra_args()}}
    return SamplingParams(n=1, temperature=0.0, output_kind=output_kind(kind), **length, **extra)


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    prompts = questions(cfg.batch_size)
    b = overhead.budget(cfg)
    items = gen.prepare(prompts, b)
    counts = [generated_tokens(r) for r in gen.generate(prompts, b)]

    def variant(forcing: bool, kind: str, **extra: Any) -> list[tuple[list[int], Any]]:
        return [
            (it.prompt_ids, _params(n, it.max_tokens, it.plan if forcing else None, kind, **extra))
            for it, n in zip(items, counts, strict=True)
        ]

    no_text = {"detokenize": False}
    variants = {
        "plain, final only": variant(False, "final"),
        "plain, streamed deltas": variant(False, "delta", **no_text),
        "plain + logprobs=0": variant(False, "final", logprobs=0, **no_text),
        # What generate() asks for: its forced tokens come back from the engine's records,
        # one collective_rpc per finishing step, not from a log-probability per token.
        "processor, final only": variant(True, "final", **no_text),
        "processor + logprobs=0, final only": variant(True, "final", logprobs=0, **no_text),
        "stream's request (deltas, logprobs=0, processor)": variant(
            True, "delta", logprobs=0, **no_text
        ),
    }

    def runner(reqs: Any) -> Callable[[], int]:
        return lambda: engine_tokens(run_requests(gen, reqs))

    contenders: list[tuple[str, Callable[[], int]]] = [
        (name, runner(reqs)) for name, reqs in variants.items()
    ]
    contenders.append(
        (
            "BudgetForcedGenerator.generate",
            lambda: sum(generated_tokens(r) for r in gen.generate(prompts, b)),
        )
    )
    t = measure(contenders, cfg.repeats, cfg.warmup)
    base = t["plain, final only"]
    report = Report(
        "breakdown", f"breakdown: ingredients of single-pass vs plain, batch {len(prompts)}"
    )
    for name, _ in contenders[1:]:
        report.rows.append(
            Row(name, t[name], base, extra={"tokens": f"{t[name].tokens} / {base.tokens}"})
        )
    report.notes.append(f"budget {b.model_dump(exclude_defaults=True)}; other = plain, final only")
    return report
