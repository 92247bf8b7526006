"""Throughput (generated tokens per second) by batch size, forced vs plain vLLM.

The processor's per-step work is Python per request, so if it were to stop scaling with the
batch it would show here first: the ratio would grow with the batch size.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from bench import overhead
from bench.common import (
    BenchConfig,
    forced_vs_plain,
    measure,
    questions,
)
from bench.report import Report, Row

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    b = overhead.budget(cfg)  # the same forcing as the overhead comparison
    report = Report("scaling", "scaling: throughput by batch size, single-pass vs plain vLLM")
    for size in cfg.scaling_batches:
        pair = forced_vs_plain(gen, questions(size), b)
        plain = partial(pair.plain, "final")
        t = measure([("single-pass", pair.forced), ("plain vLLM", plain)], cfg.repeats, cfg.warmup)
        ours, other = t["single-pass"], t["plain vLLM"]
        report.rows.append(
            Row(
                f"batch {size}: single-pass vs plain vLLM",
                ours,
                other,
                extra={
                    "ours tok/s": f"{ours.tokens_per_s:,.0f}",
                    "plain tok/s": f"{other.tokens_per_s:,.0f}",
                    "tokens": f"{ours.tokens} / {other.tokens}",
                },
            )
        )
    report.notes.append(f"budget {b.model_dump(exclude_defaults=True)}; plain: final-only output")
    return report
