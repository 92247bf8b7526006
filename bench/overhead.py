"""What does single-pass budget forcing cost over plain vLLM for the same tokens?

Forced runs first; then plain vLLM generates exactly as many tokens per prompt
(``min_tokens == max_tokens ==`` what the forced run generated, ``ignore_eos``), so both do
the same model work and the difference is the logits processor, the processed
log-probabilities the generator asks for, and the result bookkeeping. Two plain baselines:
final-only output (how ``LLM.generate`` runs; the target applies to it) and streamed deltas
(what the generator itself receives).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.common import (
    BenchConfig,
    forced_vs_plain,
    measure,
    peak_rss_mib,
    questions,
)
from bench.report import Report, Row
from s1_integrations import ThinkingBudget

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator

TARGET = 1.15
#: Against the faster of the two plain modes in the same run (whichever that is).
FASTEST_TARGET = 1.05


def budget(cfg: BenchConfig) -> ThinkingBudget:
    """Extensions and a cap, so the processor both extends and cuts in every request."""
    if cfg.quick:
        return ThinkingBudget(max_thinking_tokens=8, max_answer_tokens=64)
    return ThinkingBudget(extensions=2, max_thinking_tokens=80)


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    prompts = questions(cfg.batch_size)
    b = budget(cfg)
    pair = forced_vs_plain(gen, prompts, b)
    forced, plain = pair.forced, pair.plain

    t = measure(
        [
            ("single-pass", forced),
            ("plain vLLM (final only)", lambda: plain("final")),
            ("plain vLLM (streamed deltas)", lambda: plain("delta")),
        ],
        cfg.repeats,
        cfg.warmup,
    )
    memory = {
        "single-pass": peak_rss_mib(forced),
        "plain vLLM (final only)": peak_rss_mib(lambda: plain("final")),
    }
    report = Report(
        "overhead", f"overhead: single-pass forcing vs plain vLLM, batch {len(prompts)}"
    )
    modes = ("plain vLLM (final only)", "plain vLLM (streamed deltas)")
    fastest = min(modes, key=lambda mode: t[mode].median)
    for other, target in (
        ("plain vLLM (final only)", TARGET),
        ("plain vLLM (streamed deltas)", None),
    ):
        if other == fastest:
            target = FASTEST_TARGET if target is None else min(target, FASTEST_TARGET)
        report.rows.append(
            Row(
                f"single-pass vs {other}",
                t["single-pass"],
                t[other],
                target,
                extra={"tokens": f"{t['single-pass'].tokens} / {t[other].tokens}"},
            )
        )
    report.notes.append(
        f"budget {b.model_dump(exclude_defaults=True)}; {sum(pair.counts)} tokens per run, "
        f"{sum(r.extensions for r in pair.first)} extensions, "
        f"{sum(r.thinking_ended_by == 'budget' for r in pair.first)} capped"
    )
    report.notes.append(f"fastest plain mode in this run: {fastest.removeprefix('plain vLLM ')}")
    report.notes.append(
        "peak RSS (this process + engine children), one untimed run each: "
        + ", ".join(f"{k} {v:,.0f} MiB" for k, v in memory.items())
        + f"; difference {memory['single-pass'] - memory['plain vLLM (final only)']:+,.0f} MiB"
    )
    report.data = {"counts": pair.counts, "memory_mib": memory}
    return report
