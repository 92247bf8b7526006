"""Budget-forcing fidelity against the real engine (issue 16): what other engines shipped broken.

Once the thinking has ended, the answer never writes a thinking delimiter; a model whose
template opened the block never opens a second one; a soft landing ends at a break, never past
the cap; stop strings, prefix caching and the settings under which vLLM runs no logits
processor cannot make a budget wrong or silently ignored.

Besides the shipped toy (whose exact outputs may change when it is retrained, so only
properties are asserted on it), the tests build a tiny model whose weights are written by
hand: a bigram table (the next token depends on the last one alone) that keeps trying to do
exactly what must never happen, under three formats: ``<think>`` tags with a chat template
that pre-opens the block with ``<think>\\n``, s1's ``<|im_start|>think`` /
``<|im_start|>answer``, and plain-text multi-token tags ``<reason>`` / ``</reason>``. Its
outputs are known exactly, so the counts asserted on it are exact.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ENGINE_ARGS, TOY
from s1_integrations import (
    AnswerDelta,
    BudgetForcedGenerator,
    BudgetForcedResult,
    FinalResult,
    ThinkingBudget,
    ThinkingDelta,
    ThinkingFormat,
)
from s1_integrations.core.formats import S1_FORMAT
from s1_integrations.engine.engine import InProcessEngine
from s1_integrations.engine.processor import ProcessorSkippedError
from s1_integrations.toy.problems import random_problem

pytestmark = pytest.mark.engine

STRATEGIES = ["single_pass", "rounds"]

# -- a tiny model that does what must never happen ------------------------------------------

EOS = "<|im_end|>"
SPECIALS = ["<|endoftext|>", "<|im_start|>", EOS, "<think>", "</think>"]
MERGED = ["think", "answer", "reason", "Wait", "</"]  # ordinary tokens built by merges
#: The chat template ends by opening the thinking block, then a newline (as DeepSeek-R1's and
#: Qwen3's templates do).
PREOPENED_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)
#: Next-token scores per token (every token also gives end of sequence a score of 1).
BIGRAMS: dict[str, dict[str, float]] = {
    # <think> tags: after the pre-opened "<think>\n" the model opens its own <think>; its
    # thinking is the line "abc.\n"; after </think> it reopens the thinking, then re-closes it.
    "<think>": {"a": 10},
    "a": {"b": 10},
    "b": {"c": 10},
    "c": {".": 10},
    ".": {"\n": 10},
    "\n": {"<think>": 10, "</think>": 9, "a": 8},
    "</think>": {"<think>": 10, "X": 8},
    "X": {"</think>": 10, "Y": 8},
    "Y": {EOS: 10},
    "Wait": {"a": 10},
    # s1's format: the model writes its own "<|im_start|>think" where it could answer, and
    # after "<|im_start|>answer" starts another block.
    "think": {"p": 10},
    "p": {"q": 10},
    "q": {"r": 10},
    "r": {"<|im_start|>": 10},
    "<|im_start|>": {"think": 10, "answer": 9, "Z": 8},
    "answer": {"<|im_start|>": 10},
    "Z": {EOS: 10},
    # <reason> tags, three ordinary tokens each: the model keeps writing "<reason>".
    ">": {"m": 10},
    "m": {"<": 10},
    "<": {"reason": 10},
    "</": {"reason": 10},
    "reason": {">": 10, "k": 8},
    "k": {EOS: 10},
}
REASON_FORMAT = ThinkingFormat(name="reason", start="<reason>", end="</reason>")


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-character table (the byte-level BPE alphabet), in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars, extra = {b: b for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return [chr(chars[b]) for b in range(256)]


def build_bigram_model(out: Path) -> None:
    """A one-layer Qwen3 whose attention and MLP write nothing: logits = table[last token].

    One-hot embeddings (hidden size >= vocabulary), the final RMS norm scales them by
    sqrt(hidden), and the untied output matrix holds the scores divided by that.
    """
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIALS)}
    for char in _byte_alphabet():
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in MERGED:
        piece = word[0]
        for char in word[1:]:
            merges.append((piece, char))
            piece += char
            vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token=EOS,
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )
    tokenizer.chat_template = PREOPENED_TEMPLATE
    tokenizer.model_max_length = 256

    def token_id(text: str) -> int:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == 1, (text, ids)
        return int(ids[0])

    hidden = 320
    assert len(vocab) <= hidden
    config = Qwen3Config(  # type: ignore[call-arg]  # dtype goes through **kwargs
        vocab_size=hidden,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        head_dim=64,  # the CPU attention kernels reject smaller heads
        max_position_embeddings=256,
        tie_word_embeddings=False,
        torch_dtype="float32",
        eos_token_id=token_id(EOS),
        pad_token_id=token_id("<|endoftext|>"),
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    scale = math.sqrt(hidden)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0 if "norm" in name else 0.0)
        model.model.embed_tokens.weight.copy_(torch.eye(hidden))
        head = model.lm_head.weight
        head[token_id(EOS), :] = 1.0 / scale
        for previous, scores in BIGRAMS.items():
            for following, score in scores.items():
                head[token_id(following), token_id(previous)] = score / scale
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


TINY_ARGS = {"dtype": "float32", "seed": 0, "max_num_seqs": 32, "max_model_len": 256}
TINY_ARGS["kv_cache_memory_bytes"] = 64 * 2**20


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessEngine]:
    path = tmp_path_factory.mktemp("bigram")
    build_bigram_model(path)
    engine = InProcessEngine(path, **TINY_ARGS)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tiny(tiny_engine: InProcessEngine) -> dict[str, BudgetForcedGenerator]:
    """One engine, three thinking formats (the chat template opens <think> in all three)."""
    return {
        "tags": BudgetForcedGenerator(engine=tiny_engine),  # detected from the vocabulary
        "s1": BudgetForcedGenerator(engine=tiny_engine, thinking_format=S1_FORMAT),
        "reason": BudgetForcedGenerator(engine=tiny_engine, thinking_format=REASON_FORMAT),
    }


# -- what every result must satisfy ---------------------------------------------------------


def contains(ids: list[int], seq: tuple[int, ...]) -> bool:
    n = len(seq)
    return any(tuple(ids[i : i + n]) == seq for i in range(len(ids) - n + 1))


def check_fidelity(r: BudgetForcedResult, gen: BudgetForcedGenerator) -> None:
    """No delimiter where the budget suppresses one; everything counted is in the ids."""
    fmt = gen.thinking_format
    assert fmt.start not in r.answer and fmt.end not in r.answer, r.answer
    assert fmt.start not in r.thinking, r.thinking
    for seq in gen.ban_answer:
        assert not contains(r.answer_token_ids, seq), (r.answer_token_ids, seq)
    for seq in gen.ban_thinking:
        assert not contains(r.thinking_token_ids, seq), (r.thinking_token_ids, seq)
    assert r.thinking_tokens == len(r.thinking_token_ids)
    assert r.answer_tokens == len(r.answer_token_ids)
    assert r.token_ids[: r.thinking_tokens] == r.thinking_token_ids
    if r.thinking_ended_by is not None:
        end = list(gen.end_ids)
        rest = r.token_ids[r.thinking_tokens :]
        assert rest[: len(end)] == end
        assert rest[len(end) : len(end) + r.answer_tokens] == r.answer_token_ids
    cap = r.budget.max_thinking_tokens
    if cap is not None:
        assert r.thinking_tokens <= cap


def both(
    gen: BudgetForcedGenerator, prompts: Any, budget: Any, **kw: Any
) -> list[BudgetForcedResult]:
    """Single pass and rounds, checked, and token-identical; returns the single-pass results."""
    single = gen.generate(prompts, budget, strategy="single_pass", **kw)
    rounds = gen.generate(prompts, budget, strategy="rounds", **kw)
    for s, r in zip(single, rounds, strict=True):
        check_fidelity(s, gen)
        check_fidelity(r, gen)
        assert s.token_ids == r.token_ids
        assert s.extension_positions == r.extension_positions
        assert (s.thinking_ended_by, s.finish_reason) == (r.thinking_ended_by, r.finish_reason)
        assert (s.thinking, s.answer) == (r.thinking, r.answer)
    return single


# -- the tiny model: exact outputs ----------------------------------------------------------

#: (thinking, answer) the model gives with no budget, in each format: its first <think> and
#: its reopened blocks masked, it closes the thinking and answers.
NATURAL = {
    "tags": ("", "XY"),  # "\n" -> <think> masked -> </think>: the block ends at once
    "s1": ("pqr", "<|im_start|>Z"),  # "<|im_start|>" then "think" masked -> "answer"
    "reason": ("m<reasonk", "m<reasonk"),  # "<reason" then ">" masked -> "k", end of sequence
}


@pytest.mark.parametrize("name", ["tags", "s1", "reason"])
def test_a_natural_end_is_never_followed_by_a_new_block(tiny, name: str) -> None:
    gen = tiny[name]
    (r,) = both(gen, "hi", None)
    assert (r.thinking, r.answer) == NATURAL[name]
    assert r.thinking_ended_by == "model" and r.finish_reason == "stop"
    assert r.thinking_tokens == len(gen.tokenizer.encode(NATURAL[name][0]))


@pytest.mark.parametrize(
    ("name", "budget", "thinking"),
    [
        ("tags", ThinkingBudget(max_thinking_tokens=3, extensions=5), "Waitab"),
        ("tags", ThinkingBudget(max_thinking_tokens=0), ""),
        ("s1", ThinkingBudget(max_thinking_tokens=2), "pq"),
        ("s1", ThinkingBudget(max_thinking_tokens=0), ""),
        ("reason", ThinkingBudget(max_thinking_tokens=2), "m<"),
        ("reason", ThinkingBudget(max_thinking_tokens=0), ""),
    ],
)
def test_a_forced_end_is_never_followed_by_a_new_block(tiny, name, budget, thinking) -> None:
    gen = tiny[name]
    (r,) = both(gen, "hi", budget)
    assert r.thinking == thinking and r.thinking_tokens == budget.max_thinking_tokens
    assert r.thinking_ended_by == "budget"
    assert r.answer == NATURAL[name][1]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["tags", "s1", "reason"])
def test_streamed_answers_never_show_a_delimiter(tiny, name: str, strategy: str) -> None:
    gen = tiny[name]
    fmt = gen.thinking_format
    budget = ThinkingBudget(max_thinking_tokens=4, extensions=1)
    events = list(gen.stream("hi", budget, strategy=strategy))
    result = events[-1]
    assert isinstance(result, FinalResult)
    answer = ""
    for event in events:
        if isinstance(event, AnswerDelta):
            answer += event.text
            assert fmt.start not in answer and fmt.end not in answer
    assert answer == result.result.answer
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert thinking == result.result.thinking and fmt.start not in thinking
    check_fidelity(result.result, gen)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_model_that_writes_its_own_think_after_the_template_opened_one(tiny, strategy) -> None:
    """The template ends in "<think>\\n"; the model's first choice is another "<think>"."""
    gen = tiny["tags"]
    (r,) = gen.generate("hi", ThinkingBudget(extensions=2), strategy=strategy)
    tok = gen.tokenizer
    assert r.prompt_token_ids[-2:] == tok.encode("<think>\n", add_special_tokens=False)
    # Each time its "<think>" is masked it tries to stop instead, and is extended twice.
    assert r.thinking == "Waitabc.\nWaitabc.\n" and r.thinking_tokens == 12
    assert r.extensions == 2 and r.extension_positions == [0, 6]
    assert r.thinking_ended_by == "model" and r.answer == "XY"
    check_fidelity(r, gen)


def test_zero_cap_after_a_template_ending_in_a_newline(tiny) -> None:
    gen = tiny["tags"]
    (r,) = both(gen, "hi", ThinkingBudget(max_thinking_tokens=0))
    tok = gen.tokenizer
    assert r.prompt_token_ids[-1] == tok.encode("\n", add_special_tokens=False)[0]
    assert r.thinking == "" and r.thinking_tokens == 0 and r.thinking_ended_by == "budget"
    # The delimiter comes first; the template's newline stays the prompt's, never thinking.
    assert r.token_ids == tok.encode("</think>XY<|im_end|>", add_special_tokens=False)
    assert r.answer == "XY" and r.answer_tokens == 2


@pytest.mark.parametrize(
    "stop",
    [".\n</think>X", "</think>", "\n</think>", "k>X", "</think>XY"],
)
def test_stop_strings_spanning_the_end_delimiter_cut_nothing(tiny, stop: str) -> None:
    """Stop strings apply to the answer alone: one spanning the delimiter never matches."""
    gen = tiny["tags"]
    budget = ThinkingBudget(extensions=1)
    (plain,) = gen.generate("hi", budget)
    assert plain.thinking == "Waitabc.\n" and plain.answer == "XY"
    (r,) = both(gen, "hi", budget, stop=[stop])
    assert r.token_ids == plain.token_ids and r.answer == "XY"


def test_a_stop_string_inside_the_answer_still_cuts_it(tiny) -> None:
    (r,) = both(tiny["tags"], "hi", ThinkingBudget(extensions=1), stop=["Y"])
    assert r.answer == "X" and r.finish_reason == "stop"


LINE = "Waitabc.\n"  # six tokens: an extension, then the model's line


@pytest.mark.parametrize(
    ("window", "conclusion", "thinking"),
    [
        (2, None, LINE * 3 + "Waita"),  # no break in the last 2: the cap cuts at 20
        (3, None, LINE * 3),  # the newline at 18 is a break
        (5, None, LINE * 2 + "Waitabc."),  # the full stop at 17 is the first break in the window
        (5, "so", LINE * 2 + "Waitabc.so"),  # the window ends where the conclusion begins
    ],
)
def test_soft_landing_ends_at_a_break_and_never_past_the_cap(
    tiny, window: int, conclusion: str | None, thinking: str
) -> None:
    gen = tiny["tags"]
    budget = ThinkingBudget(
        max_thinking_tokens=20, extensions=100, soft_landing_tokens=window, conclusion=conclusion
    )
    (r,) = both(gen, "hi", budget)
    assert r.thinking == thinking
    assert r.thinking_tokens == len(gen.tokenizer.encode(thinking)) <= 20
    assert r.thinking_ended_by == "budget" and r.answer == "XY"


def test_every_cap_and_extension_count_on_every_format(tiny) -> None:
    """A sweep: no delimiter in any answer, exact caps, both strategies token-identical."""
    for gen in tiny.values():
        budgets = [
            ThinkingBudget(max_thinking_tokens=cap, extensions=ext, soft_landing_tokens=land)
            for cap in (0, 1, 2, 3, 5, 8, 13)
            for ext in (0, 1, 3)
            for land in {0, min(cap, 4)}
        ]
        for r, b in zip(both(gen, ["hi"] * len(budgets), budgets), budgets, strict=True):
            assert r.thinking_tokens <= (b.max_thinking_tokens or 0)
            assert r.thinking_ended_by is not None and r.finish_reason == "stop"
            multi = len(gen.end_ids) > 1 and gen.plan_for(b).needs_extensions
            assert r.strategy == ("rounds" if multi else "single_pass")


# -- the toy: properties, whatever its current weights ----------------------------------------


def toy_questions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [random_problem(rng).question for _ in range(n)]


def test_the_toy_sweep_never_reopens_the_thinking(generator) -> None:
    """The sweep of issue 16: at every cap, no answer holds <think> or </think>."""
    prompts = toy_questions(16, seed=16)
    for cap in (0, 4, 8, 16, 24, 32, 48, None):
        both(generator, prompts, ThinkingBudget(max_thinking_tokens=cap))
    both(generator, prompts, ThinkingBudget(max_thinking_tokens=24, extensions=1))


def test_the_toy_lands_softly_inside_the_cap(generator) -> None:
    prompts = toy_questions(16, seed=17)
    plan_breaks = generator.break_tokens()
    landed = 0
    for cap in (8, 16, 24):
        budget = ThinkingBudget(max_thinking_tokens=cap, soft_landing_tokens=8)
        for r in both(generator, prompts, budget):
            assert r.thinking_tokens <= cap
            if r.thinking_ended_by == "budget" and r.thinking_tokens < cap:
                landed += 1
                last, before = r.thinking_token_ids[-1], r.thinking_token_ids[-2:-1]
                assert last in plan_breaks.breaks or (
                    last in plan_breaks.weak and not set(before) & set(plan_breaks.digits)
                )
                assert r.thinking_tokens > cap - 8  # inside the window, not before it
    assert landed > 0  # the toy writes line ends: some landing happened


def test_toy_stop_strings_spanning_the_delimiter_cut_nothing(generator) -> None:
    prompts = toy_questions(8, seed=18)
    plain = generator.generate(prompts)
    for p, r in zip(prompts, plain, strict=True):
        spanning = r.thinking[-3:] + "</think>" + r.answer[:2]
        (s,) = both(generator, p, None, stop=[spanning, "</think>"])
        assert s.token_ids == r.token_ids


def test_prefix_caching_on_and_off_give_the_same_tokens(generator) -> None:
    prompts = toy_questions(12, seed=19)
    budgets = [
        ThinkingBudget(max_thinking_tokens=12),
        ThinkingBudget(extensions=2),
        ThinkingBudget(min_thinking_tokens=40, max_thinking_tokens=50, conclusion="so"),
        ThinkingBudget(max_thinking_tokens=24, soft_landing_tokens=8, extensions=1),
    ]
    args = {**ENGINE_ARGS, "enable_prefix_caching": False}
    args["kv_cache_memory_bytes"] = 256 * 2**20
    with BudgetForcedGenerator(TOY, **args) as uncached:
        for budget in budgets:
            for strategy in STRATEGIES:
                cached = generator.generate(prompts, budget, strategy=strategy)
                fresh = uncached.generate(prompts, budget, strategy=strategy)
                assert [r.token_ids for r in cached] == [r.token_ids for r in fresh]
                for r in fresh:
                    check_fidelity(r, uncached)


# -- settings under which vLLM would run no logits processor ----------------------------------


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (
            {"speculative_config": {"method": "ngram", "num_speculative_tokens": 2}},
            "speculative_config",
        ),
        ({"runner": "pooling"}, "runner"),
    ],
)
def test_engine_settings_without_logits_processors_are_refused(args, setting) -> None:
    started = time.monotonic()
    with pytest.raises(ProcessorSkippedError, match=f"^{setting}: .*silently ignored"):
        BudgetForcedGenerator(TOY, **ENGINE_ARGS, **args)
    assert time.monotonic() - started < 60  # refused before any engine process started


def test_model_runner_v2_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM 0.32's default runner on GPUs loads only processors of its own interface."""
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    with pytest.raises(ProcessorSkippedError, match=r"^VLLM_USE_V2_MODEL_RUNNER: "):
        InProcessEngine(TOY, **ENGINE_ARGS).close()  # closed at once should it start


# -- through a server -------------------------------------------------------------------------


@pytest.mark.remote
def test_through_a_server_no_answer_reopens_the_thinking(generator) -> None:
    """The plan's new settings travel in ``s1_budget`` and the bans as ``bad_words``: a server
    with the processor (single pass) and the same server in rounds give the in-process tokens.
    """
    from servers import VllmServer

    args = ("--dtype", "float32", "--seed", "0", "--max-num-seqs", "32")
    args += ("--kv-cache-memory-bytes", str(256 * 2**20))
    server = VllmServer(TOY, name_processor=True, extra=args)
    try:
        server.wait_ready()
        prompts = toy_questions(8, seed=20)
        budgets = [
            ThinkingBudget(max_thinking_tokens=cap, soft_landing_tokens=land)
            for cap in (0, 8, 24)
            for land in {0, min(cap, 6)}
        ]
        for forcing in ("plugin", "rounds"):
            with BudgetForcedGenerator.from_servers(server.url, forcing=forcing) as remote:
                expected = "single_pass" if forcing == "plugin" else "rounds"
                for budget in budgets:
                    here = generator.generate(prompts, budget)
                    there = remote.generate(prompts, budget)
                    for h, t in zip(here, there, strict=True):
                        assert t.strategy == expected
                        check_fidelity(t, remote)
                        assert t.token_ids == h.token_ids
    finally:
        server.stop()
