"""Under load and cancellation: every caller answered, nothing left behind in the engine."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sys
import threading
import time
from typing import Any

import cloudpickle
import psutil
import pytest

from conftest import ENGINE_ARGS, TOY
from s1_integrations import ThinkingBudget
from s1_integrations.adapters.langchain import ChatBudgetForced
from s1_integrations.adapters.llama_index import BudgetForcedLLM
from s1_integrations.core.results import FinalResult

pytestmark = pytest.mark.engine

LONG = ThinkingBudget(min_thinking_tokens=300, max_answer_tokens=8)


def _worker_forcing_state(worker: Any) -> dict[str, Any]:
    """Runs inside vLLM's worker process (sent by value): what the processor holds there.

    ``input_batch.logitsprocs`` is vLLM's ``LogitsProcessors``: the instances the model runner
    calls every step, in ``argmax_invariant`` and ``non_argmax_invariant`` (``all`` chains both).
    """

    from s1_integrations.engine.processor import BudgetForcingLogitsProcessor, BudgetForcingPlugin

    runner = worker.model_runner
    batch = runner.input_batch
    loaded = [p for p in batch.logitsprocs.all if isinstance(p, BudgetForcingLogitsProcessor)]
    ours = [p for p in loaded if p.active]
    return {
        "pid": os.getpid(),
        "parent_pid": os.getppid(),
        "processors": len(ours),
        "plugins_aside": sum(isinstance(p, BudgetForcingPlugin) and not p.active for p in loaded),
        "rows": sorted(row for p in ours for row in p.requests),
        "batch_requests": list(batch.req_ids),
        "runner_requests": len(runner.requests),
    }


def forcing_state(generator: Any) -> dict[str, Any]:
    """The budget-forcing processor's per-request state, read inside the worker process."""
    engine = generator.engine
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # the worker cannot import this test module
    try:
        (state,) = engine._call(engine._llm.collective_rpc(_worker_forcing_state, timeout=60))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    # Named by the engine and loaded again as the installed plugin, which steps aside: one
    # instance forces, not two.
    assert state["processors"] == 1, state
    assert state["plugins_aside"] == 1, state
    return state


def wait_for_empty_processor(generator: Any, timeout: float = 30) -> dict[str, Any]:
    """Poll until the worker has dropped every request, or the timeout passes.

    An aborted request leaves vLLM's unfinished count at once, but the worker hears of it on
    the scheduler's next step: vLLM steps while it holds finished request ids even with nothing
    left to run (``Scheduler.has_requests``), so no further request is needed, only that step.
    """
    deadline = time.monotonic() + timeout
    state = forcing_state(generator)
    while (state["rows"] or state["batch_requests"]) and time.monotonic() < deadline:
        time.sleep(0.05)
        state = forcing_state(generator)
    return state


def wait_idle(generator: Any, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while generator.engine.num_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(generator.engine.num_unfinished_requests())


def test_breaking_out_of_a_sync_stream_aborts_the_request(generator: Any) -> None:
    assert forcing_state(generator)["rows"] == []
    stream = generator.stream("What is 12 + 34?", LONG)
    for i, _ in enumerate(stream):
        if i == 3:
            during = forcing_state(generator)
            break
    assert len(during["rows"]) == 1 and len(during["batch_requests"]) == 1, during
    assert during["runner_requests"] == 1
    stream.close()
    assert wait_idle(generator) == 0
    after = wait_for_empty_processor(generator)
    assert after["rows"] == [] and after["batch_requests"] == [], after
    assert after["runner_requests"] == 0
    (r,) = generator.generate("What is 12 + 34?")
    assert r.finish_reason == "stop"
    assert forcing_state(generator)["rows"] == []


async def test_cancelling_an_async_stream_aborts_the_request(generator: Any) -> None:
    seen = asyncio.Event()

    async def consume() -> None:
        async for _ in generator.astream("What is 12 + 34?", LONG):
            seen.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(seen.wait(), timeout=60)
    assert generator.engine.num_unfinished_requests() == 1
    during = await asyncio.to_thread(forcing_state, generator)
    assert len(during["rows"]) == 1 and len(during["batch_requests"]) == 1, during
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 30
    while generator.engine.num_unfinished_requests() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert generator.engine.num_unfinished_requests() == 0
    after = await asyncio.to_thread(wait_for_empty_processor, generator)
    assert after["rows"] == [] and after["batch_requests"] == [], after
    assert after["runner_requests"] == 0


MIXED = [
    None,
    ThinkingBudget(max_thinking_tokens=9),
    ThinkingBudget(min_thinking_tokens=70),
    ThinkingBudget(extensions=1),
    ThinkingBudget(max_thinking_tokens=0, max_answer_tokens=6),
    ThinkingBudget(min_thinking_tokens=20, max_thinking_tokens=30, conclusion="so"),
]


def test_200_mixed_requests_from_every_entry_point_keep_their_own_budgets(generator: Any) -> None:
    rng = random.Random(42)
    questions = [f"What is {rng.randint(10, 9999)} + {rng.randint(10, 9999)}?" for _ in range(200)]
    budgets = [MIXED[i % len(MIXED)] for i in range(200)]
    alone = generator.generate(questions, budgets)  # the reference: one call

    chat = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS)
    llm = BudgetForcedLLM(model=TOY, engine_args=ENGINE_ARGS)
    got: dict[int, tuple[list[int], int]] = {}

    def budget_kwargs(b: ThinkingBudget | None) -> dict[str, Any]:
        return {"thinking_budget": b} if b is not None else {}

    def lc_threads(indices: list[int]) -> None:
        for i in indices:  # each thread one request at a time, threads side by side
            msg = chat.invoke(questions[i], **budget_kwargs(budgets[i]))
            got[i] = (
                [msg.response_metadata["thinking_tokens"]],
                msg.response_metadata["extensions"],
            )

    async def generator_and_abatch() -> None:
        direct = list(range(0, 100))
        via_abatch = list(range(100, 125))
        via_llama_index = list(range(125, 150))

        async def one(i: int) -> None:
            (r,) = await generator.agenerate(questions[i], budgets[i])
            got[i] = (r.token_ids, r.extensions)

        async def batch() -> None:
            for b in {id(budgets[i]): budgets[i] for i in via_abatch}.values():
                idx = [i for i in via_abatch if budgets[i] is b]
                msgs = await chat.abatch([questions[i] for i in idx], **budget_kwargs(b))
                for i, m in zip(idx, msgs, strict=True):
                    got[i] = (
                        [m.response_metadata["thinking_tokens"]],
                        m.response_metadata["extensions"],
                    )

        async def llama(i: int) -> None:
            kwargs = {"thinking_budget": budgets[i]} if budgets[i] is not None else {}
            response = await llm.acomplete(questions[i], **kwargs)
            figures = response.additional_kwargs
            got[i] = ([figures["thinking_tokens"]], figures["extensions"])

        await asyncio.gather(
            *(one(i) for i in direct), batch(), *(llama(i) for i in via_llama_index)
        )

    threads = [
        threading.Thread(target=lc_threads, args=(list(range(k, 200, 10)),))
        for k in (150, 151, 152, 153, 154, 155, 156, 157, 158, 159)
    ]
    for t in threads:
        t.start()
    asyncio.run(generator_and_abatch())
    for t in threads:
        t.join()

    assert sorted(got) == list(range(200))
    for i, r in enumerate(alone):
        ids_or_count, extensions = got[i]
        if i < 100:
            assert ids_or_count == r.token_ids, i
        else:
            assert ids_or_count == [r.thinking_tokens], i
        assert extensions == r.extensions, i
    assert wait_idle(generator) == 0


# -- long run -------------------------------------------------------------------------------

LONG_RUN = 2000
WARM_UP = 200
RSS_GROWTH_LIMIT = 10 * 2**20
# Questions the toy thinks about for 24 to 32 tokens, so that EXTENDED below extends each.
PAIRS = [(1, 2), (3, 4), (5, 1), (2, 2), (7, 1), (12, 3), (40, 2)]
QUESTIONS = [f"What is {a} + {b}?" for a, b in PAIRS]
SHORT = [
    ThinkingBudget(max_thinking_tokens=0, max_answer_tokens=2),
    ThinkingBudget(max_thinking_tokens=2, max_answer_tokens=2),
    ThinkingBudget(max_thinking_tokens=3, conclusion="so", max_answer_tokens=2),
    ThinkingBudget(min_thinking_tokens=3, max_thinking_tokens=5, max_answer_tokens=2),
    ThinkingBudget(extensions=1, max_thinking_tokens=6, max_answer_tokens=2),
]
# With room for the toy's own thinking under the cap, it tries to stop once: one "Wait".
EXTENDED = ThinkingBudget(extensions=1, max_thinking_tokens=34, max_answer_tokens=2)


def _rss(processes: dict[str, psutil.Process]) -> dict[str, int]:
    gc.collect()
    return {name: p.memory_info().rss for name, p in processes.items()}


def test_2000_sequential_requests_leave_no_state_and_flat_memory(generator: Any) -> None:
    """2,000 requests one after another, each waited for; mixed budgets and entry points.

    Every repeat of a (question, budget) pair must give the tokens of its first run (greedy),
    so no state leaks from one request into a later one. Memory is measured after a warm-up
    (every pair has run by then) and at the end, in this process, vLLM's engine-core process
    and its worker (where the processor lives).
    """
    state = forcing_state(generator)
    assert state["rows"] == []
    this = psutil.Process()
    worker = psutil.Process(state["pid"])
    core = psutil.Process(state["parent_pid"])
    assert {core.pid, worker.pid} <= {p.pid for p in this.children(recursive=True)}
    processes = {"test": this, "engine_core": core, "worker": worker}

    first: dict[tuple[str, ThinkingBudget], list[int]] = {}
    extended = 0
    started = time.perf_counter()
    for i in range(LONG_RUN):
        budget = EXTENDED if i % 25 == 24 else SHORT[i % len(SHORT)]
        question = QUESTIONS[i % len(QUESTIONS)]
        if i % 4 == 3:
            events = list(generator.stream(question, budget))
            assert isinstance(events[-1], FinalResult)
            r = events[-1].result
        elif i % 4 == 1:
            (r,) = asyncio.run(generator.agenerate(question, budget))
        else:
            (r,) = generator.generate(question, budget)
        assert r.thinking_tokens == budget.max_thinking_tokens, i
        assert r.thinking_ended_by == "budget" and r.answer_tokens == 2, i
        if budget is EXTENDED:
            assert r.extensions == 1, i
            extended += 1
        assert r.token_ids == first.setdefault((question, budget), r.token_ids), i
        if i + 1 == WARM_UP:
            warm = _rss(processes)
    elapsed = time.perf_counter() - started
    end = _rss(processes)

    assert extended == LONG_RUN // 25
    assert len(first) == len(QUESTIONS) * (len(SHORT) + 1)
    assert generator.engine.num_unfinished_requests() == 0
    state = wait_for_empty_processor(generator)
    assert state["rows"] == [] and state["batch_requests"] == [], state
    assert state["runner_requests"] == 0
    figures = {
        name: f"{warm[name] / 2**20:.1f} -> {end[name] / 2**20:.1f} MiB" for name in processes
    }
    print(f"\n{LONG_RUN} sequential requests in {elapsed:.1f} s; RSS after {WARM_UP}: {figures}")
    for name in processes:
        assert end[name] - warm[name] < RSS_GROWTH_LIMIT, figures
