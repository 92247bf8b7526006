"""Shared pieces: configuration, prompts, alternating timer, memory sampler, plain vLLM runs.

Everything takes an existing :class:`BudgetForcedGenerator` so the CLI and the tests (which
reuse the session's engine) drive exactly the same code.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bench.report import Timing
from s1_integrations import heldout_path

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator
    from s1_integrations.core.prompts import Prompt
    from s1_integrations.core.results import BudgetForcedResult


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of a run. ``quick`` shrinks everything so tests can run every comparison."""

    batch_size: int = 64
    repeats: int = 7
    warmup: int = 1
    quick: bool = False
    scaling_batches: tuple[int, ...] = (1, 8, 32, 128)
    #: Tokens of retrieved context before each question, and extensions, for ``scaling``.
    scaling_contexts: tuple[int, ...] = (100, 1000, 1500)
    scaling_extensions: tuple[int, ...] = (0, 2, 4, 8)
    adapter_abatch: int = 32  # abatch of this many vs one ainvoke

    @classmethod
    def tiny(cls) -> BenchConfig:
        """Batch 2, one repeat, no warm-up, small budgets: checks the code, not the speed."""
        return cls(
            batch_size=2,
            repeats=1,
            warmup=0,
            quick=True,
            scaling_batches=(1, 2),
            scaling_contexts=(100,),
            scaling_extensions=(0, 2),
            adapter_abatch=2,
        )


def questions(n: int) -> list[str]:
    """The first ``n`` held-out questions (cycled if ``n`` is larger than the set).

    Real questions rather than one repeated prompt: lengths then vary, as in a real batch.
    """
    with open(heldout_path(), encoding="utf-8") as f:
        pool = [json.loads(line)["question"] for line in f if line.strip()]
    return list(itertools.islice(itertools.cycle(pool), n))


def measure(
    contenders: Sequence[tuple[str, Callable[[], int]]], repeats: int, warmup: int = 0
) -> dict[str, Timing]:
    """Time each contender ``repeats`` times, interleaved and in a rotating order.

    Interleaving means slow drift (another job on the machine, thermal state) lands on every
    contender alike; rotating the order means none always runs first after the other's
    allocations. Each callable returns the number of tokens it generated.
    """
    timings = {name: Timing(name, []) for name, _ in contenders}
    for _ in range(warmup):
        for _, fn in contenders:
            fn()
    for r in range(repeats):
        k = r % len(contenders)
        for name, fn in [*contenders[k:], *contenders[:k]]:
            cpu, front = cpu_seconds(), frontend_cpu_seconds()
            start = time.perf_counter()
            tokens = fn()
            timing = timings[name]
            timing.seconds.append(time.perf_counter() - start)
            timing.cpu_seconds.append(cpu_seconds() - cpu)
            timing.frontend_cpu_seconds.append(frontend_cpu_seconds() - front)
            timing.tokens = tokens
    return timings


def frontend_cpu_seconds() -> float:
    """CPU time of this process alone: the front end (vLLM's output processing, our tracker).

    The engine core and workers spin while they wait, so their CPU time grows with wall time
    whatever the cause; the front end's does not, which makes it the steadiest figure here.
    """
    t = psutil.Process().cpu_times()
    return t.user + t.system


def cpu_seconds() -> float:
    """User + system CPU time of this process and its live children (the engine's).

    Wall time on a shared 2-core machine mostly measures the other jobs; CPU time says what
    a contender itself spent, across the front end, the engine core and the workers.
    """
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


class PeakRSS:
    """Peak resident memory of this process plus its children, sampled on a thread.

    vLLM runs the engine core and its workers as child processes, so the process's own RSS
    would miss the model and the KV cache. RSS counts shared pages once per process, so the
    sum overstates the total; compare forced with plain, not with the machine's RAM.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._me = psutil.Process()

    def _sample(self, procs: list[psutil.Process]) -> int:
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # a worker that exited meanwhile
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        procs: list[psutil.Process] = []
        next_listing = 0.0
        while True:
            now = time.monotonic()
            if now >= next_listing:  # listing children walks /proc: not every sample
                procs = [self._me, *self._me.children(recursive=True)]
                next_listing = now + 1.0
            self.peak_bytes = max(self.peak_bytes, self._sample(procs))
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._sample([self._me]))

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def peak_rss_mib(fn: Callable[[], Any]) -> float:
    """Peak RSS (MiB, this process and children) while ``fn`` runs once."""
    with PeakRSS() as sampler:
        fn()
    return sampler.peak_mib


# -- plain vLLM on the generator's engine ---------------------------------------------------


def output_kind(name: str) -> Any:
    from vllm.sampling_params import RequestOutputKind

    return {"final": RequestOutputKind.FINAL_ONLY, "delta": RequestOutputKind.DELTA}[name]


def vllm_stream(gen: BudgetForcedGenerator, prompt_ids: list[int], params: Any) -> Any:
    """Plain vLLM on the generator's in-process engine: vLLM's own params and outputs."""
    from s1_integrations.engine.engine import InProcessEngine

    engine = gen.engine
    if not isinstance(engine, InProcessEngine):
        raise TypeError("plain vLLM baselines need the in-process engine")
    return engine.vllm_stream(prompt_ids, params)


async def _collect(gen: BudgetForcedGenerator, prompt_ids: list[int], params: Any) -> list[int]:
    """All generated ids of one request (cumulative for FINAL_ONLY, summed for DELTA)."""
    from vllm.sampling_params import RequestOutputKind

    ids: list[int] = []
    async for output in vllm_stream(gen, prompt_ids, params):
        got = list(output.outputs[0].token_ids)
        ids = ids + got if params.output_kind == RequestOutputKind.DELTA else got
    return ids


def run_requests(gen: BudgetForcedGenerator, requests: Sequence[tuple[list[int], Any]]) -> Any:
    """Submit all ``(prompt_ids, SamplingParams)`` at once to the engine; ids per request.

    Runs on the engine's own loop, as ``BudgetForcedGenerator.generate`` does, so the two
    contenders pay the same bridging cost.
    """
    import asyncio

    async def run() -> list[list[int]]:
        return list(await asyncio.gather(*(_collect(gen, ids, p) for ids, p in requests)))

    return gen.engine.run_sync(run())


def plain_params(n_tokens: int, kind: str = "final", **extra: Any) -> Any:
    """Greedy plain generation of exactly ``n_tokens`` tokens (no budget extra_args)."""
    from vllm import SamplingParams

    n = max(1, n_tokens)
    return SamplingParams(
        n=1,
        temperature=0.0,
        min_tokens=n,
        max_tokens=n,
        ignore_eos=True,
        output_kind=output_kind(kind),
        **extra,
    )


def generated_tokens(result: BudgetForcedResult) -> int:
    """Tokens the engine generated for one result.

    ``result.token_ids`` leaves out the end of sequence forced at the answer cap (so both
    strategies return the same ids), but the engine did generate it.
    """
    capped = (
        result.finish_reason == "length"
        and result.thinking_ended_by is not None
        and result.answer_tokens >= result.budget.max_answer_tokens
    )
    return len(result.token_ids) + int(capped)


def engine_tokens(ids_per_request: Sequence[Sequence[int]]) -> int:
    return sum(len(ids) for ids in ids_per_request)


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it (timings mean little without it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class ForcedVsPlain:
    """One forced batch, and plain vLLM set to generate exactly its tokens per prompt.

    ``first`` is the untimed forced run that fixed the per-prompt ``counts``; ``forced()`` and
    ``plain(kind)`` each run the whole batch again and return the tokens the engine generated.
    """

    first: list[BudgetForcedResult]
    counts: list[int]
    forced: Callable[[], int]
    plain: Callable[[str], int]


def forced_vs_plain(
    gen: BudgetForcedGenerator, prompts: Sequence[Prompt], budget: Any
) -> ForcedVsPlain:
    """The same work done with budget forcing and without (``min_tokens == max_tokens``)."""
    prompt_ids = [item.prompt_ids for item in gen.prepare(list(prompts), budget)]
    first = gen.generate(list(prompts), budget)
    counts = [generated_tokens(r) for r in first]

    def forced() -> int:
        return sum(generated_tokens(r) for r in gen.generate(list(prompts), budget))

    def plain(kind: str = "final") -> int:
        requests = [(ids, plain_params(n, kind)) for ids, n in zip(prompt_ids, counts, strict=True)]
        return engine_tokens(run_requests(gen, requests))

    return ForcedVsPlain(first, counts, forced, plain)
