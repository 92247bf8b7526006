"""The adapters must add no cost of their own: LangChain and LlamaIndex vs the generator.

Each adapter call is paired with the generator call that runs the same way: async ones in a
caller-side event loop (``agenerate``), sync ones on the engine's loop (``generate``). The
last row, ``abatch`` of many vs one ``ainvoke``, shows that ``abatch`` reaches the engine as
one batch: many prompts cost far less than that many times one prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from bench.common import BenchConfig, measure, questions
from bench.report import Report, Row
from s1_integrations import ThinkingBudget

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator

TARGET = 1.05


def budget(cfg: BenchConfig) -> ThinkingBudget:
    if cfg.quick:
        return ThinkingBudget(max_thinking_tokens=8, max_answer_tokens=16)
    return ThinkingBudget(max_thinking_tokens=32)


def _llama_index(gen: BudgetForcedGenerator, b: ThinkingBudget) -> tuple[Any, str | None]:
    """The LlamaIndex LLM, or ``None`` and why (the adapter may be mid-change)."""
    try:
        from s1_integrations.adapters.llama_index import BudgetForcedLLM

        fields = b.model_dump(include={"max_thinking_tokens", "max_answer_tokens"})
        return BudgetForcedLLM(generator=gen, **fields), None
    except Exception as e:  # an import or construction failure must not stop the others
        return None, f"LlamaIndex skipped: {type(e).__name__}: {e}"


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    from langchain_core.messages import BaseMessage

    from s1_integrations.adapters.langchain import ChatBudgetForced

    prompts: list[Any] = list(questions(cfg.batch_size))
    b = budget(cfg)
    chat = ChatBudgetForced(
        generator=gen,
        max_thinking_tokens=b.max_thinking_tokens,
        max_answer_tokens=b.max_answer_tokens,
    )
    llm, skipped = _llama_index(gen, b)
    loop = asyncio.new_event_loop()

    def in_loop(make: Callable[[], Awaitable[int]]) -> Callable[[], int]:
        return lambda: loop.run_until_complete(make())

    def lc_tokens(messages: Sequence[BaseMessage]) -> int:
        return sum(m.usage_metadata["output_tokens"] for m in messages)  # type: ignore[attr-defined,index]

    def li_tokens(responses: list[Any]) -> int:
        return sum(r.additional_kwargs["completion_tokens"] for r in responses)

    async def agenerate() -> int:
        return sum(len(r.token_ids) for r in await gen.agenerate(prompts, b))

    async def abatch() -> int:
        return lc_tokens(await chat.abatch(prompts))

    async def acomplete() -> int:
        return li_tokens(await asyncio.gather(*(llm.acomplete(q) for q in prompts)))

    async def achat() -> int:
        from llama_index.core.llms import ChatMessage

        chats = [[ChatMessage(role="user", content=q)] for q in prompts]
        return li_tokens(await asyncio.gather(*(llm.achat(c) for c in chats)))

    many: list[Any] = list(questions(cfg.adapter_abatch))

    async def abatch_many() -> int:
        return lc_tokens(await chat.abatch(many))

    async def ainvoke_one() -> int:
        return lc_tokens([await chat.ainvoke(many[0])])

    contenders: list[tuple[str, Callable[[], int]]] = [
        ("generator agenerate", in_loop(agenerate)),
        ("LangChain abatch", in_loop(abatch)),
        ("generator generate", lambda: sum(len(r.token_ids) for r in gen.generate(prompts, b))),
        ("LangChain batch", lambda: lc_tokens(chat.batch(prompts))),
    ]
    if llm is not None:
        contenders += [
            ("LlamaIndex acomplete x N", in_loop(acomplete)),
            ("LlamaIndex achat x N", in_loop(achat)),
        ]
    contenders += [
        (f"LangChain abatch of {len(many)}", in_loop(abatch_many)),
        ("LangChain ainvoke of 1", in_loop(ainvoke_one)),
    ]
    try:
        t = measure(contenders, cfg.repeats, cfg.warmup)
    finally:
        loop.close()
    pairs: list[tuple[str, str, float | None]] = [
        ("LangChain abatch", "generator agenerate", TARGET),
        ("LangChain batch", "generator generate", TARGET),
    ]
    if llm is not None:
        pairs += [
            ("LlamaIndex acomplete x N", "generator agenerate", TARGET),
            ("LlamaIndex achat x N", "generator agenerate", TARGET),
        ]
    pairs.append((f"LangChain abatch of {len(many)}", "LangChain ainvoke of 1", None))
    report = Report("adapters", f"adapters: framework calls vs the generator, batch {len(prompts)}")
    for ours, other, target in pairs:
        report.rows.append(
            Row(
                f"{ours} vs {other}",
                t[ours],
                t[other],
                target,
                extra={"tokens": f"{t[ours].tokens} / {t[other].tokens}"},
            )
        )
    report.notes.append(f"budget {b.model_dump(exclude_defaults=True)}")
    report.notes.append(
        f"abatch of {len(many)} takes {report.rows[-1].ratio:.2f}x one ainvoke "
        f"(sequential calls would take about {len(many)}x): one engine batch"
    )
    if skipped:
        report.notes.append(skipped)
        print(skipped)
    return report
