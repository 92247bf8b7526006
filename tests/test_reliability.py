"""Under load and cancellation: every caller answered, nothing left behind in the engine."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import pytest

from conftest import ENGINE_ARGS, TOY
from s1_integrations import ThinkingBudget
from s1_integrations.adapters.langchain import ChatBudgetForced
from s1_integrations.adapters.llama_index import BudgetForcedLLM

pytestmark = pytest.mark.engine

LONG = ThinkingBudget(min_thinking_tokens=300, max_answer_tokens=8)


def wait_idle(generator: Any, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while generator.engine.num_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(generator.engine.num_unfinished_requests())


def test_breaking_out_of_a_sync_stream_aborts_the_request(generator: Any) -> None:
    stream = generator.stream("What is 12 + 34?", LONG)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert wait_idle(generator) == 0
    (r,) = generator.generate("What is 12 + 34?")
    assert r.finish_reason == "stop"


async def test_cancelling_an_async_stream_aborts_the_request(generator: Any) -> None:
    seen = asyncio.Event()

    async def consume() -> None:
        async for _ in generator.astream("What is 12 + 34?", LONG):
            seen.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(seen.wait(), timeout=60)
    assert generator.engine.num_unfinished_requests() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 30
    while generator.engine.num_unfinished_requests() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert generator.engine.num_unfinished_requests() == 0


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
