"""Parallel scaling: n budget-forced samples of one prompt, against the ways to get them.

Contenders, all producing 8 samples of each prompt under the same budget:

- ``n=8``: ``generate(prompt, budget, n=8)``, the samples submitted together (one request per
  sample, sharing the prompt's KV blocks through vLLM's prefix cache);
- ``8 requests at once``: ``generate([prompt] * 8, budget)``, what a caller does by hand
  with one batch call;
- ``8 requests in turn``: eight ``generate(prompt, budget)`` calls one after another, the
  self-consistency loop people write around a chat model today;
- ``plain vLLM``: eight plain vLLM requests at once, no forcing, each generating exactly as
  many tokens as its forced counterpart did (``min_tokens == max_tokens``, ``ignore_eos``);
  and the same as one plain request with ``SamplingParams(n=8)``, vLLM's own fan-out, to say
  which way of submitting n samples is faster.

Decoding is greedy so that every contender decodes the very same tokens (sampling changes
which tokens, not the work): the ratios compare the ways, not the luck of the draw.
Prompts are the held-out questions behind a long shared context (a retrieval-style preamble),
where sharing the prompt matters; memory compares n=8 at batch 16 with 128 single requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.common import (
    BenchConfig,
    generated_tokens,
    measure,
    output_kind,
    peak_rss_mib,
    plain_params,
    questions,
    run_requests,
    vllm_stream,
)
from bench.report import Report, Row
from s1_integrations import ThinkingBudget, VotedResult

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator

N = 8
#: contender -> the ratio n=8 / contender must be at most this.
TARGETS = {"8 requests in turn": 0.8}


def long_prompt(question: str, words: int) -> str:
    """The question behind ``words`` words of context (the same for every sample)."""
    filler = " ".join(f"Note {i}: sums are written digit by digit." for i in range(words // 7))
    return f"{filler}\n\n{question}"


def budget(cfg: BenchConfig) -> ThinkingBudget:
    return ThinkingBudget(extensions=1, max_answer_tokens=8 if cfg.quick else 32)


def _all_tokens(results: list[Any]) -> int:
    total = 0
    for r in results:
        samples = r.samples if isinstance(r, VotedResult) else [r]
        total += sum(map(generated_tokens, samples))
    return total


def run(gen: BudgetForcedGenerator, cfg: BenchConfig) -> Report:
    n = 2 if cfg.quick else N
    b = budget(cfg)
    prompt = long_prompt(questions(1)[0], 40 if cfg.quick else 300)
    report = Report("samples", f"samples: n={n} samples of one prompt, budget-forced")

    def voted() -> int:
        return _all_tokens(gen.generate(prompt, b, n=n))

    def at_once() -> int:
        return _all_tokens(gen.generate([prompt] * n, b))

    def in_turn() -> int:
        return sum(_all_tokens(gen.generate(prompt, b)) for _ in range(n))

    (first,) = gen.generate(prompt, b, n=n)
    assert isinstance(first, VotedResult)
    lengths = [generated_tokens(s) for s in first.samples]
    prompt_ids = list(first.prompt_token_ids)

    def plain() -> int:
        requests = [(prompt_ids, plain_params(k, detokenize=False)) for k in lengths]
        return sum(len(ids) for ids in run_requests(gen, requests))

    # Greedy samples are alike, so vLLM's own fan-out (one request, SamplingParams(n=...))
    # can generate exactly the same tokens: which way of submitting n samples is faster.
    assert len(set(lengths)) == 1, lengths

    def plain_n() -> int:
        # vLLM refuses n > 1 under greedy decoding; top_k=1 samples the argmax all the same.
        from vllm import SamplingParams

        length = lengths[0]
        params = SamplingParams(
            n=n,
            temperature=1.0,
            top_k=1,
            min_tokens=length,
            max_tokens=length,
            ignore_eos=True,
            detokenize=False,
            output_kind=output_kind("final"),
        )
        return sum(map(len, gen.engine.run_sync(_all_completions(gen, prompt_ids, params))))

    t = measure(
        [
            (f"n={n}", voted),
            (f"{n} requests at once", at_once),
            (f"{n} requests in turn", in_turn),
            ("plain vLLM", plain),
            (f"plain vLLM n={n}", plain_n),
        ],
        cfg.repeats,
        cfg.warmup,
    )
    ours = t[f"n={n}"]
    for other in (f"{n} requests at once", f"{n} requests in turn", "plain vLLM"):
        report.rows.append(
            Row(
                f"n={n} vs {other}",
                ours,
                t[other],
                TARGETS.get(other) if n == N else None,
                extra={"tokens": f"{ours.tokens} / {t[other].tokens}"},
            )
        )
    report.rows.append(
        Row(
            f"plain vLLM: {n} requests vs one request with n={n}",
            t["plain vLLM"],
            t[f"plain vLLM n={n}"],
            extra={"tokens": f"{t['plain vLLM'].tokens} / {t[f'plain vLLM n={n}'].tokens}"},
        )
    )
    report.notes.append(
        f"budget {b.model_dump(exclude_defaults=True)}, greedy; prompt {len(prompt_ids)} "
        f"tokens; {sum(lengths)} tokens generated per run"
    )
    batch = 2 if cfg.quick else 16
    prompts = [long_prompt(q, 40 if cfg.quick else 300) for q in questions(batch)]
    memory = {
        f"n={n} x {batch} prompts": peak_rss_mib(lambda: gen.generate(prompts, b, n=n)),
        f"{n * batch} single requests": peak_rss_mib(
            lambda: gen.generate([p for p in prompts for _ in range(n)], b)
        ),
    }
    report.notes.append(
        "peak RSS (this process + engine children), one untimed run each: "
        + ", ".join(f"{k} {v:,.0f} MiB" for k, v in memory.items())
    )
    return report


async def _all_completions(gen: BudgetForcedGenerator, prompt_ids: list[int], params: Any) -> Any:
    """Token ids of every completion of one request with ``n`` > 1 (final output only)."""
    final = None
    async for output in vllm_stream(gen, prompt_ids, params):
        final = output
    assert final is not None
    return [list(c.token_ids) for c in final.outputs]
