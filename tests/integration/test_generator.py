"""Budget forcing end to end: the real engine on the toy reasoner (docs/budget-forcing.md)."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from s1_integrations import (
    AnswerDelta,
    BudgetError,
    BudgetForcedResult,
    ExtensionInserted,
    FinalResult,
    PromptError,
    ThinkingBudget,
    ThinkingDelta,
    ThinkingFormat,
)
from s1_integrations.toy.problems import Problem, extract_answer, random_problem

pytestmark = pytest.mark.engine


def questions(n: int, seed: int = 1) -> list[Problem]:
    rng = random.Random(seed)
    return [random_problem(rng) for _ in range(n)]


def count_phrase(ids: list[int], phrase: tuple[int, ...]) -> int:
    n = len(phrase)
    return sum(1 for i in range(len(ids) - n + 1) if tuple(ids[i : i + n]) == phrase)


def check_consistent(r: BudgetForcedResult, generator) -> None:
    """Counts equal the token ids, and the ids split exactly into thinking/end/answer."""
    end = list(generator.end_ids)
    assert r.thinking_tokens == len(r.thinking_token_ids)
    assert r.answer_tokens == len(r.answer_token_ids)
    assert r.token_ids[: r.thinking_tokens] == r.thinking_token_ids
    if r.thinking_ended_by is not None:
        rest = r.token_ids[r.thinking_tokens :]
        assert rest[: len(end)] == end
        after = rest[len(end) :]
        assert after[: r.answer_tokens] == r.answer_token_ids
        assert len(after) - r.answer_tokens in (0, 1)  # the end of sequence, if any
    assert r.prompt_tokens == len(r.prompt_token_ids)
    assert r.thinking == generator.tokenizer.decode(r.thinking_token_ids, skip_special_tokens=False)
    for position in r.extension_positions:
        phrase = generator.plan_for(r.budget).phrases[0]
        assert tuple(r.token_ids[position : position + len(phrase)]) == phrase


def test_thinking_and_answer_come_back_split(generator) -> None:
    (r,) = generator.generate("What is 473 + 59?")
    assert r.thinking and r.answer
    assert "</think>" not in r.thinking and "<think>" not in r.answer
    assert extract_answer(r.answer) is not None  # the toy answers with a number
    assert r.thinking_ended_by == "model"
    assert r.finish_reason == "stop"
    assert r.extensions == 0
    check_consistent(r, generator)


BUDGET_GRID = [
    ThinkingBudget(max_thinking_tokens=12),
    ThinkingBudget(max_thinking_tokens=0),
    ThinkingBudget(min_thinking_tokens=70),
    ThinkingBudget(extensions=2),
    ThinkingBudget(min_thinking_tokens=30, max_thinking_tokens=45),
    ThinkingBudget(max_thinking_tokens=20, extensions=1, conclusion="so"),
    ThinkingBudget(extensions=1, max_answer_tokens=4),
    ThinkingBudget(),
]


def test_budget_grid_on_a_mixed_batch(generator) -> None:
    problems = questions(40)
    budgets = [BUDGET_GRID[i % len(BUDGET_GRID)] for i in range(len(problems))]
    results = generator.generate([p.question for p in problems], budgets)
    assert len(results) == len(problems)
    wait = generator.plan_for(ThinkingBudget()).phrases[0]
    for r, b in zip(results, budgets, strict=True):
        check_consistent(r, generator)
        assert r.budget == b
        if b.max_thinking_tokens is not None:
            assert r.thinking_tokens <= b.max_thinking_tokens
        if r.thinking_ended_by is not None:
            assert r.thinking_tokens >= b.min_thinking_tokens
        # inserted phrases are in the ids; the toy also writes "Wait" itself when checking
        assert len(r.extension_positions) == r.extensions
        assert count_phrase(r.thinking_token_ids, wait) >= r.extensions
        if b.max_thinking_tokens is None:  # a cap may come before the extensions owed
            assert r.extensions >= b.extensions
        assert r.answer_tokens <= b.max_answer_tokens
    capped = [r for r, b in zip(results, budgets, strict=True) if b.max_thinking_tokens == 0]
    assert all(r.thinking_tokens == 0 and r.thinking_ended_by == "budget" for r in capped)
    short_answer = [r for r, b in zip(results, budgets, strict=True) if b.max_answer_tokens == 4]
    assert all(r.answer_tokens == 4 and r.finish_reason == "length" for r in short_answer)
    concluded = [r for r, b in zip(results, budgets, strict=True) if b.conclusion == "so"]
    so = list(generator.plan_for(BUDGET_GRID[5]).conclusion)
    assert any(r.thinking_ended_by == "budget" for r in concluded)  # a Wait reaches the cap
    for r in concluded:
        if r.thinking_ended_by == "budget":  # the cap: the conclusion is its last 2 tokens
            assert r.thinking_tokens == 20 and r.thinking_token_ids[-len(so) :] == so


def test_cap_costs_accuracy(generator) -> None:
    """The toy is built so that thinking buys accuracy (docs/toy-model.md): a "Wait" makes it
    re-add the sum column by column, and a tight cap leaves it no room to."""
    problems = questions(32, seed=7)
    prompts = [p.question for p in problems]
    extended = generator.generate(prompts, ThinkingBudget(extensions=1))
    capped = generator.generate(prompts, ThinkingBudget(max_thinking_tokens=6))

    def accuracy(results: list[BudgetForcedResult]) -> float:
        return sum(
            extract_answer(r.answer) == p.answer for r, p in zip(results, problems, strict=True)
        ) / len(problems)

    assert accuracy(capped) <= accuracy(extended) - 0.3


@pytest.mark.parametrize(
    "budget",
    [
        ThinkingBudget(max_thinking_tokens=15),
        ThinkingBudget(min_thinking_tokens=60),
        ThinkingBudget(extensions=2),
        ThinkingBudget(min_thinking_tokens=40, max_thinking_tokens=50, conclusion="so"),
        ThinkingBudget(max_thinking_tokens=0, max_answer_tokens=5),
    ],
    ids=["cap", "min", "extensions", "min-max-conclusion", "zero-short-answer"],
)
def test_single_pass_and_rounds_are_token_identical(generator, budget) -> None:
    prompts = [p.question for p in questions(32, seed=3)]
    single = generator.generate(prompts, budget, strategy="single_pass")
    rounds = generator.generate(prompts, budget, strategy="rounds")
    for s, r in zip(single, rounds, strict=True):
        assert s.strategy == "single_pass" and r.strategy == "rounds"
        assert s.token_ids == r.token_ids
        assert s.extension_positions == r.extension_positions
        assert s.thinking_ended_by == r.thinking_ended_by
        assert s.finish_reason == r.finish_reason


async def test_staggered_requests_do_not_disturb_each_other(generator) -> None:
    problems = questions(24, seed=11)
    budgets = [BUDGET_GRID[i % len(BUDGET_GRID)] for i in range(len(problems))]
    alone = generator.generate([p.question for p in problems], budgets)

    async def later(i: int) -> BudgetForcedResult:
        await asyncio.sleep(0.05 * (i % 6))
        (r,) = await generator.agenerate(problems[i].question, budgets[i])
        return r

    staggered = await asyncio.gather(*(later(i) for i in range(len(problems))))
    for a, s in zip(alone, staggered, strict=True):
        assert a.token_ids == s.token_ids
        assert a.extensions == s.extensions


def test_sync_threads_and_async_tasks_share_the_engine(generator) -> None:
    problems = questions(16, seed=5)
    reference = generator.generate([p.question for p in problems])  # one batch
    answers: dict[int, list[int]] = {}

    def in_thread(i: int) -> None:
        (r,) = generator.generate(problems[i].question)
        answers[i] = r.token_ids

    async def in_tasks() -> None:
        results = await asyncio.gather(
            *(generator.agenerate(problems[i].question) for i in range(8, 16))
        )
        for i, (r,) in zip(range(8, 16), results, strict=True):
            answers[i] = r.token_ids

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    asyncio.run(in_tasks())
    for t in threads:
        t.join()
    assert sorted(answers) == list(range(16))
    # Greedy: whichever caller and however batched, each prompt gets the same tokens.
    assert [answers[i] for i in range(16)] == [r.token_ids for r in reference]


@pytest.mark.parametrize("strategy", ["single_pass", "rounds"])
def test_stream_deltas_add_up_to_the_result(generator, strategy) -> None:
    budget = ThinkingBudget(extensions=2)
    events = list(generator.stream("What is 2857 + 968?", budget, strategy=strategy))
    final = events[-1]
    assert isinstance(final, FinalResult)
    result = final.result
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert thinking == result.thinking
    assert answer == result.answer
    extensions = [e for e in events if isinstance(e, ExtensionInserted)]
    assert len(extensions) == result.extensions == 2
    assert [e.phrase for e in extensions] == ["Wait", "Wait"]
    # each extension event comes after exactly the thinking that preceded the phrase
    assert [e.thinking_tokens for e in extensions] == result.extension_positions


async def test_async_stream(generator) -> None:
    events = [e async for e in generator.astream("What is 12 + 34?", {"max_thinking_tokens": 5})]
    result = events[-1].result
    assert result.thinking_tokens == 5 and result.thinking_ended_by == "budget"
    assert "".join(e.text for e in events if e.type == "thinking") == result.thinking


def test_stop_sequences_apply_to_the_answer_only(generator) -> None:
    budget = ThinkingBudget(extensions=1)
    (plain,) = generator.generate("What is 473 + 59?", budget)
    number = extract_answer(plain.answer)
    assert number and number in plain.thinking  # the toy's answer copies its thinking's sum
    (r,) = generator.generate("What is 473 + 59?", budget, stop=[number])
    assert number not in r.answer
    assert r.answer == plain.answer[: plain.answer.index(number)]
    assert r.finish_reason == "stop"
    assert r.thinking == plain.thinking  # the stop string never cut the thinking
    (rr,) = generator.generate("What is 473 + 59?", budget, stop=[number], strategy="rounds")
    assert rr.answer == r.answer and rr.token_ids == r.token_ids


def test_multi_token_end_delimiter(generator) -> None:
    """'</think>' plus a newline: two tokens, matched as a sequence and forced whole."""
    from s1_integrations import BudgetForcedGenerator

    fmt = ThinkingFormat(name="tags+newline", start="<think>", end="</think>\n")
    multi = BudgetForcedGenerator(engine=generator.engine, thinking_format=fmt)
    assert len(multi.end_ids) == 2
    free, capped, extended = multi.generate(
        ["What is 473 + 59?"] * 3,
        [None, ThinkingBudget(max_thinking_tokens=7), ThinkingBudget(extensions=1)],
    )
    assert free.thinking_ended_by == "model" and free.strategy == "single_pass"
    assert extract_answer(free.answer) is not None
    assert capped.thinking_tokens == 7 and capped.thinking_ended_by == "budget"
    assert capped.token_ids[7:9] == list(multi.end_ids)
    assert extended.strategy == "rounds" and extended.extensions == 1


@pytest.mark.parametrize(
    ("prompt", "budget", "error", "match"),
    [
        ("", None, PromptError, "empty"),
        ([], None, PromptError, "prompts"),
        ([{"role": "wizard", "content": "hi"}], None, PromptError, "role"),
        ([{"role": "user", "content": 3}], None, PromptError, "content"),
        ("q", {"max_thinking_tokens": -1}, ValueError, "max_thinking_tokens"),
        ("q", {"min_thinking_tokens": 9, "max_thinking_tokens": 3}, ValueError, "min_thinking"),
        ("q", {"extension_phrases": [" "]}, ValueError, "extension_phrases"),
        ("q", {"max_thinking_tokens": 1, "conclusion": "Final Answer:"}, BudgetError, "conclusion"),
        ("q", {"min_thinking_tokens": 5000}, BudgetError, "min_thinking_tokens"),
        ("q", {"max_thinking_tokens": 100_000}, BudgetError, "max_thinking_tokens"),
        ("q", {"bogus": 1}, ValueError, "bogus"),
        (None, None, PromptError, "context"),  # a prompt longer than the context (below)
    ],
)
def test_bad_input_is_rejected_before_the_engine(generator, prompt, budget, error, match) -> None:
    if prompt is None:
        prompt = "What is 1 + 1? " * (generator.max_model_len // 4)
    before = generator.engine.num_unfinished_requests()
    with pytest.raises(error, match=match):
        generator.generate(prompt, budget)
    assert generator.engine.num_unfinished_requests() == before == 0
    (r,) = generator.generate("What is 11 + 22?")  # the engine still serves
    assert r.thinking_ended_by == "model" and extract_answer(r.answer) is not None


def test_per_call_sampling_is_reproducible_with_a_seed(generator) -> None:
    kwargs = {"temperature": 0.8, "seed": 1234}
    a = generator.generate(["What is 1234 + 5678?"] * 2, ThinkingBudget(extensions=1), **kwargs)
    b = generator.generate(["What is 1234 + 5678?"] * 2, ThinkingBudget(extensions=1), **kwargs)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert all(r.extensions >= 1 for r in a)
    with pytest.raises(ValueError, match="temperature"):
        generator.generate("q", temperature=-1)


# -- the request each call makes (issue 6: performance) ---------------------------------------


@pytest.fixture
def submitted(generator, monkeypatch):
    """Every request the generator sends to its backend (vLLM's own parameters follow from
    them one to one: ``tests/unit/test_vllm_types.py``)."""
    seen: list = []
    original = generator.engine.stream

    def recording(request):  # type: ignore[no-untyped-def]
        seen.append(request)
        return original(request)

    monkeypatch.setattr(generator.engine, "stream", recording)
    return seen


def test_only_the_output_a_call_needs_is_requested(generator, submitted) -> None:
    final, delta = False, True  # GenerationRequest.deltas
    cap, extend = ThinkingBudget(max_thinking_tokens=9), ThinkingBudget(extensions=1)
    generator.generate("What is 1 + 2?", cap)
    generator.generate("What is 1 + 2?", extend)
    generator.generate("What is 1 + 2?", cap, stop=["is"])
    list(generator.stream("What is 1 + 2?", cap))
    list(generator.stream("What is 1 + 2?", extend))
    got = [(r.deltas, r.logprobs, r.attempts) for r in submitted]
    # Not streaming: the finished output only. Forced tokens need marking only where phrases
    # can be inserted: by the engine's records for a finished output, by log-probabilities
    # on a stream; stop strings are watched on deltas.
    assert got == [
        (final, None, False),
        (final, None, True),
        (delta, None, False),
        (delta, None, False),
        (delta, 0, False),
    ]


@pytest.mark.parametrize(
    "budget",
    [
        None,
        ThinkingBudget(max_thinking_tokens=15),
        ThinkingBudget(extensions=2),
        ThinkingBudget(min_thinking_tokens=40, max_thinking_tokens=50, conclusion="so"),
        ThinkingBudget(max_thinking_tokens=0, max_answer_tokens=5),
    ],
    ids=["none", "cap", "extensions", "min-max-conclusion", "zero-short-answer"],
)
def test_final_only_and_streamed_results_are_identical(generator, budget) -> None:
    question = "What is 2857 + 968?"
    (whole,) = generator.generate(question, budget)
    streamed = list(generator.stream(question, budget))[-1].result
    assert whole.model_dump() == streamed.model_dump()
    check_consistent(whole, generator)


def test_the_engine_froze_the_gc_heap_and_keeps_the_option_from_vllm(
    generator, monkeypatch
) -> None:
    import gc

    from s1_integrations import toy_model_path
    from s1_integrations.engine import engine as engine_module

    assert generator.engine._froze_gc and gc.get_freeze_count() > 0
    seen: dict = {}

    async def start(self, model, engine_args):  # type: ignore[no-untyped-def]
        seen.update(engine_args)
        raise RuntimeError("not starting a second engine in this test")

    monkeypatch.setattr(engine_module.InProcessEngine, "_start", start)
    with pytest.raises(engine_module.EngineError, match="not starting"):
        engine_module.InProcessEngine(toy_model_path(), freeze_gc=False, dtype="float32")
    assert seen == {"dtype": "float32"}  # freeze_gc is ours: vLLM never sees it
