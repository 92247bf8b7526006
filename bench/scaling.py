"""The cost of forcing as the work grows: by batch size, context length and extensions.

Each row is forced vs plain vLLM generating the same tokens. The processor's per-step work is
Python per request, so if it were to stop scaling with the batch it would show in the first
rows: the ratio would grow with the batch size. Longer prompts (retrieved context before the
question, as a RAG pipeline sends it) add prefill, where the processor does nothing; more
extensions add forced phrases, each a few steps of the processor's own work. The ratio should
grow with neither.
"""

from __future__ import annotations

import random
from functools import partial
from typing import TYPE_CHECKING, Any

from bench import overhead
from bench.common import (
    BenchConfig,
    forced_vs_plain,
    measure,
    questions,
)
from bench.report import Report, Row
from s1_integrations import ThinkingBudget
from s1_integrations.toy.contexts import context_str

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator
    from s1_integrations.core.prompts import Prompt


def with_context(gen: BudgetForcedGenerator, questions: list[str], tokens: int) -> list[Prompt]:
    """Each question after ``tokens`` tokens of retrieved passages (the toy's training kind)."""
    rng = random.Random(tokens)  # the same passages in every run
    prompts: list[Prompt] = []
    for question in questions:
        ids = gen.tokenizer.encode(context_str(rng, 40 * tokens), add_special_tokens=False)
        while len(ids) < tokens:  # context_str may stop short of the length asked
            more = "\n\n" + context_str(rng, 40 * tokens)
            ids += gen.tokenizer.encode(more, add_special_tokens=False)
        passages = gen.tokenizer.decode(ids[:tokens])
        prompts.append(
            [
                {"role": "system", "content": f"Context information is below.\n{passages}"},
                {"role": "user", "content": question},
            ]
        )
    return prompts


def _row(
    gen: BudgetForcedGenerator, cfg: BenchConfig, label: str, prompts: list[Prompt], budget: Any
) -> Row:
    pair = forced_vs_plain(gen, prompts, budget)
    plain = partial(pair.plain, "final")
    t = measure([("single-pass", pair.forced), ("plain vLLM", plain)], cfg.repeats, cfg.warmup)
    ours, other = t["single-pass"], t["plain vLLM"]
    prompt_tokens = sum(r.prompt_tokens for r in pair.first) / len(pair.first)
    return Row(
        label,
        ours,
        other,
        extra={
            "prompt tokens": f"{prompt_tokens:,.0f}",
            "ours tok/s": f"{ours.tokens_per_s:,.0f}",
            "plain tok/s": f"{other.tokens_per_s:,.0f}",
            "tokens": f"{ours.tokens} / {other.tokens}",
        },
    )


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    b = overhead.budget(cfg)  # the same forcing as the overhead comparison
    report = Report("scaling", "scaling: cost as the work grows, single-pass vs plain vLLM")
    for size in cfg.scaling_batches:
        label = f"batch {size}: single-pass vs plain vLLM"
        report.rows.append(_row(gen, cfg, label, list(questions(size)), b))
    asked = questions(cfg.batch_size)
    for tokens in cfg.scaling_contexts:
        label = f"context {tokens}: single-pass vs plain vLLM"
        report.rows.append(_row(gen, cfg, label, with_context(gen, asked, tokens), b))
    for count in cfg.scaling_extensions:
        label = f"{count} extensions: single-pass vs plain vLLM"
        report.rows.append(_row(gen, cfg, label, list(asked), ThinkingBudget(extensions=count)))
    report.notes.append(
        f"batch rows: budget {b.model_dump(exclude_defaults=True)}; context rows: the same "
        f"budget at batch {cfg.batch_size}; extension rows: that many extensions and no cap, "
        f"batch {cfg.batch_size}; plain: final-only output"
    )
    return report
