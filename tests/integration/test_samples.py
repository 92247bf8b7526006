"""n samples per prompt on the real engine: exact budgets per sample, seeds, votes, bad input."""

from __future__ import annotations

import math

import pytest
from test_generator import check_consistent

from s1_integrations import BudgetForcedResult, ThinkingBudget, VotedResult, normalise_answer
from s1_integrations.toy.problems import extract_answer

pytestmark = pytest.mark.engine

HARD = "What is 4789 + 5696?"
WARM = {"temperature": 0.8, "seed": 7}


def test_every_sample_is_budget_forced_exactly(generator) -> None:
    capped, extended = ThinkingBudget(max_thinking_tokens=6), ThinkingBudget(extensions=2)
    results = generator.generate(["What is 12 + 34?", HARD], [capped, extended], n=4, **WARM)
    assert [type(r) for r in results] == [VotedResult, VotedResult]
    for result, budget in zip(results, (capped, extended), strict=True):
        assert isinstance(result, VotedResult)
        assert len(result.samples) == 4
        for sample in result.samples:
            check_consistent(sample, generator)
            assert sample.budget == budget
        assert result.total_thinking_tokens == sum(s.thinking_tokens for s in result.samples)
    # The toy thinks longer than 6 tokens on its own: every sample is capped at exactly 6.
    assert [(s.thinking_tokens, s.thinking_ended_by) for s in results[0].samples] == [
        (6, "budget")
    ] * 4
    assert [s.extensions for s in results[1].samples] == [2] * 4
    # Sampled at temperature 0.8 with seeds apart, the samples of the hard sum differ.
    assert len({tuple(s.token_ids) for s in results[1].samples}) > 1


def test_a_seeded_run_is_reproducible_and_its_first_sample_is_the_single_run(generator) -> None:
    budget = ThinkingBudget(extensions=1)
    a = generator.generate(HARD, budget, n=3, **WARM)[0]
    b = generator.generate(HARD, budget, n=3, **WARM)[0]
    assert isinstance(a, VotedResult) and isinstance(b, VotedResult)
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    assert a.vote == b.vote
    (single,) = generator.generate(HARD, budget, **WARM)
    assert type(single) is BudgetForcedResult
    assert single.token_ids == a.samples[0].token_ids


async def test_agenerate_samples_as_generate_does(generator) -> None:
    budgets = [ThinkingBudget(max_thinking_tokens=6), ThinkingBudget(extensions=1)]
    questions = ["What is 12 + 34?", HARD]
    before = generator.engine.submitted_requests
    voted = await generator.agenerate(questions, budgets, n=3, **WARM)
    assert generator.engine.submitted_requests - before == 6  # 3 samples of 2 prompts
    expected = generator.generate(questions, budgets, n=3, **WARM)
    assert [type(r) for r in voted] == [VotedResult, VotedResult]
    for got, want in zip(voted, expected, strict=True):
        assert isinstance(got, VotedResult) and isinstance(want, VotedResult)
        assert [s.token_ids for s in got.samples] == [s.token_ids for s in want.samples]
        assert got.vote == want.vote
    assert [(s.thinking_tokens, s.thinking_ended_by) for s in voted[0].samples] == [
        (6, "budget")
    ] * 3
    assert [s.extensions for s in voted[1].samples] == [1] * 3


def test_the_result_is_the_winning_sample_and_the_vote_counts_every_answer(generator) -> None:
    (result,) = generator.generate(HARD, None, n=6, temperature=1.0, seed=11)
    assert isinstance(result, VotedResult)
    answers = [normalise_answer(s.answer) for s in result.samples]
    counted = {a: answers.count(a) for a in answers if a}
    assert result.vote.counts == counted
    assert result.vote.method == "majority"
    best = max(counted.values())
    first = next(i for i, a in enumerate(answers) if counted.get(a) == best)
    assert result.vote.winner_index == first
    assert result.vote.answer == answers[first]
    winner = result.samples[first]
    assert result.token_ids == winner.token_ids
    assert result.answer == winner.answer and result.thinking == winner.thinking


def test_confidence_vote_weighs_samples_by_their_answer_log_probability(generator) -> None:
    for strategy in ("single_pass", "rounds"):
        (result,) = generator.generate(
            HARD, ThinkingBudget(extensions=1), n=4, vote="confidence", strategy=strategy, **WARM
        )
        assert isinstance(result, VotedResult)
        expected: dict[str, float] = {}
        for s in result.samples:
            assert s.answer_logprob is not None and s.answer_logprob <= 0.0
            key = normalise_answer(s.answer)
            expected[key] = expected.get(key, 0.0) + math.exp(s.answer_logprob)
        assert result.vote.scores == pytest.approx(expected)
        assert result.vote.answer == max(expected, key=lambda k: expected[k])
    # Without the confidence vote nobody asks the engine for log-probabilities of the answer.
    (plain,) = generator.generate(HARD, None, n=2, **WARM)
    assert isinstance(plain, VotedResult)
    assert [s.answer_logprob for s in plain.samples] == [None, None]


def test_rounds_sample_the_same_under_greedy_decoding(generator) -> None:
    budget = ThinkingBudget(extensions=1, max_thinking_tokens=60)
    one = generator.generate(HARD, budget, n=2)[0]
    rounds = generator.generate(HARD, budget, n=2, strategy="rounds")[0]
    assert isinstance(one, VotedResult) and isinstance(rounds, VotedResult)
    assert [s.token_ids for s in one.samples] == [s.token_ids for s in rounds.samples]
    assert [s.strategy for s in rounds.samples] == ["rounds", "rounds"]
    assert one.samples[0].token_ids == one.samples[1].token_ids  # greedy: n equal samples


def test_a_custom_normaliser_decides_what_counts_as_the_same_answer(generator) -> None:
    (result,) = generator.generate(HARD, None, n=3, normalise=lambda text: "same", **WARM)
    assert isinstance(result, VotedResult)
    assert result.vote.counts == {"same": 3}
    assert result.vote.answer == "same" and result.vote.winner_index == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n: 0 samples"),
        ({"n": -2}, "n: -2 samples"),
        ({"n": 2.5}, "n: expected a whole number"),
        ({"n": True}, "n: expected a whole number"),
        ({"n": 129}, "max_num_seqs"),  # the session's engine runs 128 sequences at once
        ({"n": 2, "vote": "mayority"}, "vote: 'mayority'"),
        ({"n": 2, "normalise": "lower"}, "normalise"),
    ],
)
async def test_bad_samples_and_votes_are_rejected_before_the_engine(
    generator, kwargs, match
) -> None:
    before = generator.engine.submitted_requests
    with pytest.raises(ValueError, match=match):
        generator.generate(HARD, None, **kwargs)
    with pytest.raises(ValueError, match=match):
        await generator.agenerate(HARD, None, **kwargs)
    assert generator.engine.submitted_requests == before  # nothing reached vLLM
    assert generator.engine.num_unfinished_requests() == 0
    (r,) = generator.generate("What is 11 + 22?")  # the engine still serves
    assert extract_answer(r.answer) == "33"


def test_a_stream_is_one_sample(generator) -> None:
    with pytest.raises(ValueError, match="n: a stream yields one sample"):
        list(generator.stream(HARD, None, n=4))
    events = list(generator.stream(HARD, None, n=1))
    assert events[-1].result.thinking_ended_by == "model"


# -- the adapters -------------------------------------------------------------------------


def test_langchain_returns_one_generation_per_sample_with_the_winner_first(generator) -> None:
    from langchain_core.messages import HumanMessage

    from s1_integrations import ChatBudgetForced

    chat = ChatBudgetForced(generator=generator, n=4, extensions=1, **WARM)
    result = chat.generate([[HumanMessage(HARD)]])
    (generations,) = result.generations
    assert len(generations) == 4
    (direct,) = generator.generate(
        [{"role": "user", "content": HARD}], ThinkingBudget(extensions=1), n=4, **WARM
    )
    assert isinstance(direct, VotedResult)
    vote = direct.vote.model_dump()
    winner = direct.vote.winner_index or 0
    order = [winner, *(i for i in range(4) if i != winner)]
    for generation, i in zip(generations, order, strict=True):
        meta = generation.message.response_metadata
        assert meta["sample_index"] == i and meta["samples"] == 4 and meta["vote"] == vote
        assert meta["thinking_tokens"] == direct.samples[i].thinking_tokens
        assert meta["extensions"] == 1
        assert generation.message.content == direct.samples[i].answer.strip()
    # invoke reads the first generation: the voted answer.
    message = chat.invoke(HARD)
    assert message.content == direct.answer.strip()
    assert normalise_answer(str(message.content)) == direct.vote.answer
    # Per call, n and vote override the model's; a misspelt vote is refused before the engine.
    one = chat.invoke(HARD, n=1)
    assert "vote" not in one.response_metadata
    with pytest.raises(ValueError, match="vote: 'shortest'"):
        chat.invoke(HARD, vote="shortest")
    with pytest.raises(ValueError, match="n"):
        ChatBudgetForced(generator=generator, n=0)


def test_llama_index_answers_with_the_vote_and_keeps_every_sample_in_raw(generator) -> None:
    from llama_index.core.llms import ChatMessage

    from s1_integrations import BudgetForcedLLM

    llm = BudgetForcedLLM(generator=generator, n=3, vote="shortest_majority", **WARM)
    response = llm.complete(HARD)
    (direct,) = generator.generate(HARD, None, n=3, vote="shortest_majority", **WARM)
    assert isinstance(response.raw, VotedResult) and isinstance(direct, VotedResult)
    assert [s.token_ids for s in response.raw.samples] == [s.token_ids for s in direct.samples]
    assert response.text == direct.answer.strip() or response.text == direct.answer
    assert response.additional_kwargs["vote"] == direct.vote.model_dump()
    assert response.additional_kwargs["samples"] == 3
    chat = llm.chat([ChatMessage(role="user", content=HARD)])
    assert isinstance(chat.raw, VotedResult) and len(chat.raw.samples) == 3
    assert chat.additional_kwargs["vote"]["method"] == "shortest_majority"


def test_seeded_samples_in_a_batch_too_big_for_one_prefill_keep_the_engine_alive(
    generator,
) -> None:
    # vLLM's CPU worker dies rewinding a seeded request's generator after a chunked prefill;
    # the engine therefore prefills whole prompts on the CPU. 24 prompts x 4 samples of about
    # 300 tokens are far more than one step's token budget, so prompts wait their turn.
    config = generator.engine._llm.vllm_config.scheduler_config
    assert config.enable_chunked_prefill is False
    assert config.max_num_batched_tokens >= generator.max_model_len
    context = " ".join(f"Note {i}: sums are written digit by digit." for i in range(30))
    prompts = [f"{context}\n\nWhat is {10 + i} + {20 + i}?" for i in range(24)]
    prompt_tokens = len(generator.prepare(prompts[0])[0].prompt_ids)
    assert prompt_tokens * len(prompts) * 4 > 4 * config.max_num_batched_tokens
    results = generator.generate(prompts, ThinkingBudget(max_thinking_tokens=4), n=4, **WARM)
    assert [len(r.samples) for r in results] == [4] * len(prompts)
    assert all(s.thinking_tokens == 4 for r in results for s in r.samples)
    (r,) = generator.generate("What is 11 + 22?")  # the engine still serves
    assert extract_answer(r.answer) == "33"


def test_seeds_are_refused_where_the_engine_cannot_honour_them(generator, monkeypatch) -> None:
    monkeypatch.setattr(generator.engine, "seeds_ok", False)  # a CPU engine with chunking on
    for call in (
        lambda: generator.generate(HARD, None, seed=1),
        lambda: generator.generate(HARD, None, n=2, seed=1),
        lambda: list(generator.stream(HARD, None, seed=1)),
    ):
        with pytest.raises(ValueError, match="seed: vLLM's CPU backend"):
            call()
    assert generator.engine.num_unfinished_requests() == 0
    (r,) = generator.generate(HARD, None, temperature=0.5)  # unseeded sampling still runs
    assert r.thinking_ended_by == "model"


def test_a_vote_for_one_sample_is_refused(generator) -> None:
    """One sample has nothing to vote over: a vote or normaliser given with n=1 would be
    silently dropped, so it is refused before the engine, in the generator and per call."""
    from s1_integrations import BudgetForcedLLM, ChatBudgetForced

    for call in (
        lambda: generator.generate(HARD, None, vote="confidence"),
        lambda: generator.generate(HARD, None, n=1, vote="majority"),
        lambda: generator.generate(HARD, None, normalise=str.lower),
        lambda: ChatBudgetForced(generator=generator).invoke(HARD, vote="confidence"),
        lambda: BudgetForcedLLM(generator=generator).complete(HARD, vote="majority"),
    ):
        with pytest.raises(ValueError, match=r"(vote|normalise): one sample \(n=1\) has no vote"):
            call()
    assert generator.engine.num_unfinished_requests() == 0
    voting = ChatBudgetForced(generator=generator, vote="confidence")  # waits for a call's n
    assert voting.invoke(HARD, n=1).content
