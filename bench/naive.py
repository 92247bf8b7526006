"""s1's reference loop, as its README runs it: text in, text out, one prompt at a time.

Generate until the end delimiter (a text stop string), decode, append the text and "Wait",
re-tokenize everything, resubmit; after the last extension close the block and generate the
answer. Each round re-prefills the whole text and waits for the slowest request before the
next begins; this is the baseline the single-pass processor replaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.common import vllm_stream
from s1_integrations import ThinkingBudget

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator


async def _final(gen: BudgetForcedGenerator, prompt_ids: list[int], params: Any) -> Any:
    last = None
    async for output in vllm_stream(gen, prompt_ids, params):
        last = output
    assert last is not None
    return last.outputs[0]


async def naive_one(gen: BudgetForcedGenerator, question: str, budget: ThinkingBudget) -> int:
    """One prompt through the loop; returns the number of tokens the engine generated."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    tok = gen.tokenizer
    end = gen.thinking_format.end
    (item,) = gen.prepare([question], budget)
    text = tok.decode(item.prompt_ids, skip_special_tokens=False)  # s1 works on text
    generated = 0
    phrases = budget.extension_phrases
    for round_no in range(budget.extensions + 1):
        ids = tok.encode(text, add_special_tokens=False)  # re-tokenize everything
        room = gen.max_model_len - len(ids) - budget.max_answer_tokens - 1
        params = SamplingParams(
            temperature=0.0,
            max_tokens=max(1, room),
            stop=[end],
            skip_special_tokens=False,  # the delimiter is a special token
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        out = await _final(gen, ids, params)
        generated += len(out.token_ids)
        text += out.text
        if round_no < budget.extensions:
            text += phrases[round_no % len(phrases)]
    text += end
    ids = tok.encode(text, add_special_tokens=False)
    params = SamplingParams(
        temperature=0.0,
        max_tokens=budget.max_answer_tokens,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )
    out = await _final(gen, ids, params)
    return generated + len(out.token_ids)


def naive_loop(gen: BudgetForcedGenerator, prompts: Sequence[str], budget: ThinkingBudget) -> int:
    """All prompts, strictly one after another (as s1's example does); total tokens."""

    async def run() -> int:
        total = 0
        for question in prompts:
            total += await naive_one(gen, question, budget)
        return total

    return gen.engine.run_sync(run())
