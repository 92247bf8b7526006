"""What the processor costs per engine step, measured without an engine.

On this 2-core machine whole runs swing by more than the processor's own share of a step,
so ``overhead`` cannot resolve a change to it. This drives the processor as vLLM's worker
does (``update_state``, then ``apply`` on the step's logits, then the sampled tokens appended
to the requests' output lists), over a seeded greedy decode of random logits on the toy's
vocabulary with the ``overhead`` budget, where about one step in 25 tries to end the thinking.
Beside it, on the same logits, runs vLLM's own min-tokens processor as the plain baseline of
``overhead`` asks for it (``min_tokens == max_tokens``): the per-step processor work plain
vLLM does for the same batch. A third run of the same loop with no processor is taken away
from each run of its round, so the times (per run of ``STEPS`` steps) and the ``us/step``
column are the processors' own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import MinTokensLogitsProcessor

from bench.common import BenchConfig, measure
from bench.overhead import budget
from bench.report import Report, Row, Timing
from s1_integrations import toy_model_path
from s1_integrations.core.forcing import EXTRA_ARGS_KEY, ForcingPlan
from s1_integrations.core.plans import PlanBuilder
from s1_integrations.engine.processor import BudgetForcingLogitsProcessor
from s1_integrations.engine.records import RECORD_KEY

STEPS = 100
#: How often a row's logits favour the end delimiter (an attempt to stop thinking).
ATTEMPT_RATE = 0.04


def toy_plan(cfg: BenchConfig) -> tuple[ForcingPlan, int]:
    """The ``overhead`` budget on the toy reasoner, and the toy's vocabulary size."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(toy_model_path()))
    return PlanBuilder(tokenizer).plan_for(budget(cfg)), len(tokenizer)


def decode_once(
    make: Callable[[], LogitsProcessor],
    params: Callable[[int, int], SamplingParams],
    logits: torch.Tensor,
) -> list[list[int]]:
    """A fresh processor, every row added, then one ``apply`` per step of ``logits`` (steps x
    rows x vocabulary), the argmax appended as vLLM appends sampled tokens; the outputs."""
    steps, rows, _ = logits.shape
    processor = make()
    outputs: list[list[int]] = [[] for _ in range(rows)]
    added = [(i, params(i, steps), None, outputs[i]) for i in range(rows)]
    processor.update_state(BatchUpdate(batch_size=rows, removed=[], added=added, moved=[]))
    for step in range(steps):
        processor.update_state(None)
        sampled = processor.apply(logits[step].clone()).argmax(dim=-1).tolist()
        for output, token in zip(outputs, sampled, strict=True):
            output.append(token)
    return outputs


def decode(
    make: Callable[[], LogitsProcessor],
    params: Callable[[int, int], SamplingParams],
    logits: torch.Tensor,
) -> Callable[[], int]:
    """One timed run of :func:`decode_once`; it returns the tokens generated."""
    return lambda: sum(map(len, decode_once(make, params, logits)))


class _NoProcessor(LogitsProcessor):
    """The decode loop alone: its time is taken away from both processors' per-step figure."""

    def __init__(self) -> None:
        pass

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        return None

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        return None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


def net(processor: Timing, loop: Timing) -> Timing:
    """The processor's own time: each run less the loop-only run of the same round.

    CPU times are left out (nan in the table): all runs are in this one process, and its CPU
    clock ticks in steps as long as a run.
    """
    seconds = [a - b for a, b in zip(processor.seconds, loop.seconds, strict=True)]
    return Timing(processor.name, seconds, processor.tokens)


def forcing_processor() -> LogitsProcessor:
    return BudgetForcingLogitsProcessor(None, torch.device("cpu"), False)  # type: ignore[arg-type]


def min_tokens_processor() -> LogitsProcessor:
    return MinTokensLogitsProcessor(None, torch.device("cpu"), False)  # type: ignore[arg-type]


def run(cfg: BenchConfig) -> Report:
    plan, vocab = toy_plan(cfg)
    sizes = (2,) if cfg.quick else (cfg.batch_size, 4 * cfg.batch_size)
    steps = 12 if cfg.quick else STEPS  # quick: past the tiny budget's cap of 8
    forcing = plan.to_json()

    def ours(i: int, n: int) -> SamplingParams:
        args = {EXTRA_ARGS_KEY: forcing, RECORD_KEY: f"r{i}"}  # as generate() sends it
        return SamplingParams(temperature=0.0, extra_args=args)

    def plain(i: int, n: int) -> SamplingParams:
        return SamplingParams(temperature=0.0, min_tokens=n, max_tokens=n, ignore_eos=True)

    report = Report(
        "processor", "processor: budget forcing vs vLLM's min-tokens processor, no engine"
    )
    for rows in sizes:
        generator = torch.Generator().manual_seed(rows)
        logits = torch.randn(steps, rows, vocab, generator=generator)
        attempts = torch.rand(steps, rows, generator=generator) < ATTEMPT_RATE
        logits[..., plan.end[0]] += 20.0 * attempts
        t = measure(
            [
                ("forcing", decode(forcing_processor, ours, logits)),
                ("min-tokens", decode(min_tokens_processor, plain, logits)),
                ("loop", decode(_NoProcessor, plain, logits)),
            ],
            cfg.repeats,
            cfg.warmup,
        )
        ours_net, plain_net = (net(t[name], t["loop"]) for name in ("forcing", "min-tokens"))
        forced = decode_once(forcing_processor, ours, logits)
        free = decode_once(_NoProcessor, plain, logits)
        # Rows whose tokens the budget changed: the timed runs really forced, as in generate().
        changed = sum(a != b for a, b in zip(forced, free, strict=True))
        report.data.setdefault("rows_changed", {})[rows] = changed
        report.rows.append(
            Row(
                f"batch {rows}",
                ours_net,
                plain_net,
                extra={
                    "us/step": f"{ours_net.median / steps * 1e6:.0f} / "
                    f"{plain_net.median / steps * 1e6:.0f}",
                    "loop us/step": f"{t['loop'].median / steps * 1e6:.0f}",
                    "tokens": f"{ours_net.tokens} / {plain_net.tokens}",
                },
            )
        )
    report.notes.append(
        f"{steps} steps of random logits over {vocab} tokens, budget "
        f"{budget(cfg).model_dump(exclude_defaults=True)}; an attempt to stop in "
        f"{ATTEMPT_RATE:.0%} of row-steps; engine-free, so the engine's own step is not in it"
    )
    return report
