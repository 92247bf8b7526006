"""The adaptive policy's cost: adaptive single pass vs fixed-extension single pass.

Both run the same prompts in one pass; the adaptive one also measures every thinking step's
top-1 probability (a max and a logsumexp over the adaptive rows) and reads it back. The two
generate different numbers of tokens (the policy extends only the hard questions), so the
comparison is time per generated token, which is what the measurement could slow down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.common import BenchConfig, generated_tokens, measure, questions
from bench.report import Report, Row, Timing
from s1_integrations import ThinkingBudget
from s1_integrations.core.adaptive import AdaptivePolicy

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator

#: adaptive / fixed, time per generated token, must be at most this (issue 21).
TARGET = 1.05


def per_token(timing: Timing) -> Timing:
    """The same timing divided by its tokens (each run generates the same tokens: greedy)."""
    n = max(timing.tokens, 1)
    return Timing(
        timing.name,
        [s / n for s in timing.seconds],
        timing.tokens,
        [s / n for s in timing.cpu_seconds],
        [s / n for s in timing.frontend_cpu_seconds],
    )


def contenders(cfg: BenchConfig) -> list[tuple[str, AdaptivePolicy, int, bool]]:
    """(label, policy, fixed extensions, target applies).

    The first two policies extend exactly where the fixed budget does (every top-1 is below
    1.0; none is below 0.0), so both sides generate the same tokens in the same batches and
    the ratio is the policy's own cost. The default policy generates other tokens: its easy
    rows finish early and leave a thinner batch, which costs more per token whatever the
    processor does, so its row is reported without a target.
    """
    one = ("adaptive (threshold 1) vs 1 extension", AdaptivePolicy(threshold=1.0), 1, True)
    none = ("adaptive (threshold 0) vs 0 extensions", AdaptivePolicy(threshold=0.0), 0, True)
    default = ("default adaptive vs 1 extension", AdaptivePolicy(), 1, False)
    return [one, default] if cfg.quick else [one, none, default]


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    prompts = questions(cfg.batch_size)
    answer = 8 if cfg.quick else 64
    report = Report(
        "adaptive",
        f"adaptive policy: single pass vs fixed extensions, batch {len(prompts)}, "
        "time per generated token",
    )
    for label, policy, k, targeted in contenders(cfg):
        adaptive = ThinkingBudget(adaptive=policy, max_answer_tokens=answer)
        fixed = ThinkingBudget(extensions=k, max_answer_tokens=answer)

        def run_adaptive(b: ThinkingBudget = adaptive) -> int:
            return sum(map(generated_tokens, gen.generate(prompts, b)))

        def run_fixed(b: ThinkingBudget = fixed) -> int:
            return sum(map(generated_tokens, gen.generate(prompts, b)))

        t = measure([("adaptive", run_adaptive), ("fixed", run_fixed)], cfg.repeats, cfg.warmup)
        report.rows.append(
            Row(
                f"{label}: s per token",
                per_token(t["adaptive"]),
                per_token(t["fixed"]),
                TARGET if targeted else None,
                extra={"tokens": f"{t['adaptive'].tokens} / {t['fixed'].tokens}"},
            )
        )
    report.notes.append(
        "medians are seconds per generated token; tokens: generated per run (adaptive / "
        "fixed); the rows with a target generate the same tokens on both sides (the policy's "
        "own cost); the default policy's row does not (see docs/adaptive.md)"
    )
    return report
