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
    from s1_integrations.core.results import BudgetForcedResult

#: adaptive / fixed, time per generated token, must be at most this (issue 21).
TARGET = 1.05


def per_token(timing: Timing) -> Timing:
    """The same timing in milliseconds per generated token (greedy: the same tokens each run)."""
    n = max(timing.tokens, 1) / 1000
    return Timing(
        timing.name,
        [s / n for s in timing.seconds],
        timing.tokens,
        [s / n for s in timing.cpu_seconds],
        [s / n for s in timing.frontend_cpu_seconds],
    )


#: (label, policy, the fixed side, target applies). The fixed side is a budget for every
#: prompt, or ``None``: per prompt, the fixed budget that forces what the policy did there
#: (:func:`replica`).
Contender = tuple[str, AdaptivePolicy, ThinkingBudget | None, bool]

#: The early-exit row's stretch: of adaptive.md's measured settings, the shortest that lets
#: the easy half reach its first attempt to end (the policy ends it there) and exits the hard
#: half after its Wait, so the batch holds both endings. A cost probe, not a recommendation.
EXIT_AFTER = 16


def replica(result: BudgetForcedResult, adaptive: ThinkingBudget) -> ThinkingBudget:
    """A fixed budget that makes the same tokens as ``adaptive`` made for ``result``.

    The same budget with the policy's choices fixed: as many extensions as it inserted, and
    where it exited early, a cap at the thinking it ended with. That cap forces the same
    conclusion and end delimiter at the same count (the exit's count plus the conclusion is
    where a cap starts forcing), and each extension fits before it, since at least
    ``exit_after`` of the model's tokens follow the last. (On a multi-token end delimiter
    the policy runs in rounds and the replica may not, so the machinery would differ.)
    """
    cap = adaptive.max_thinking_tokens
    if result.thinking_ended_by == "early_exit":
        cap = result.thinking_tokens
    fixed = {"adaptive": None, "extensions": result.extensions, "max_thinking_tokens": cap}
    return ThinkingBudget.model_validate({**adaptive.model_dump(), **fixed})


def contenders(cfg: BenchConfig, answer: int) -> list[Contender]:
    """What each adaptive run is timed beside.

    Where the fixed side forces the very tokens the policy does (a threshold of 1 extends
    every row once; the default policy and its early exit beside per-prompt budgets with
    their own Waits and, where the exit ended the thinking, a cap there, :func:`replica`; a
    threshold of 0 never extends, beside a minimum of one token, which extends nothing
    either on the toy but, like every budget that can insert a phrase, has its forced
    tokens told apart), both sides generate the same tokens in the same batch shapes, and
    the ratio is the policy's own cost. The other two rows are reported without a target:
    beside natural thinking, the fixed side needs no forced tokens told apart; beside one
    extension for all, the default policy generates other tokens, and its easy rows finish
    early and leave a thinner batch, which costs more per token whatever the processor
    does.
    """

    def b(**kw: object) -> ThinkingBudget:
        return ThinkingBudget(max_answer_tokens=answer, **kw)  # type: ignore[arg-type]

    default = AdaptivePolicy()
    rows: list[Contender] = [
        ("default adaptive vs its own Waits, fixed", default, None, True),
        ("default adaptive vs 1 extension", default, b(extensions=1), False),
        (
            f"adaptive exit {EXIT_AFTER} vs its own Waits and caps",
            AdaptivePolicy(exit_after=EXIT_AFTER),
            None,
            True,
        ),
    ]
    if cfg.quick:
        return rows
    return [
        (
            "adaptive (threshold 1) vs 1 extension",
            AdaptivePolicy(threshold=1.0),
            b(extensions=1),
            True,
        ),
        (
            "adaptive (threshold 0) vs min 1 token",
            AdaptivePolicy(threshold=0.0),
            b(min_thinking_tokens=1),
            True,
        ),
        ("adaptive (threshold 0) vs natural", AdaptivePolicy(threshold=0.0), b(), False),
        *rows,
    ]


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    prompts = questions(cfg.batch_size)
    answer = 8 if cfg.quick else 64
    report = Report(
        "adaptive",
        f"adaptive policy: single pass vs fixed extensions, batch {len(prompts)}, "
        "time per generated token",
    )
    for label, policy, fixed_budget, targeted in contenders(cfg, answer):
        adaptive = ThinkingBudget(adaptive=policy, max_answer_tokens=answer)
        exits = ""
        if fixed_budget is None:
            done = gen.generate(prompts, adaptive)
            fixed = [replica(r, adaptive) for r in done]
            if policy.exit_after:
                n = sum(r.thinking_ended_by == "early_exit" for r in done)
                exits = f"{n} of {len(done)}"
        else:
            fixed = [fixed_budget] * len(prompts)

        def run_adaptive(b: ThinkingBudget = adaptive) -> int:
            return sum(map(generated_tokens, gen.generate(prompts, b)))

        def run_fixed(b: list[ThinkingBudget] = fixed) -> int:
            return sum(map(generated_tokens, gen.generate(prompts, b)))

        t = measure([("adaptive", run_adaptive), ("fixed", run_fixed)], cfg.repeats, cfg.warmup)
        report.rows.append(
            Row(
                f"{label}: ms per token",
                per_token(t["adaptive"]),
                per_token(t["fixed"]),
                TARGET if targeted else None,
                extra={
                    "tokens": f"{t['adaptive'].tokens} / {t['fixed'].tokens}",
                    **({"exits": exits} if exits else {}),
                },
            )
        )
    report.notes.append(
        "medians are milliseconds per generated token; tokens: generated per run (adaptive / "
        "fixed); rows with a target generate the same tokens on both sides with the same "
        "forcing machinery (the policy's own cost); see docs/adaptive.md for the others; "
        "exits: prompts whose thinking the early exit ended"
    )
    return report
