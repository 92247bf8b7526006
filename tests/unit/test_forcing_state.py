"""The budget-forcing state machine and its replay, on plain token ids."""

from __future__ import annotations

import itertools
import random

import pytest

from s1_integrations.core.forcing import (
    ForcingMismatch,
    ForcingPlan,
    ForcingState,
    Phase,
    Replayer,
    replay,
)

END, EOS, WAIT, CONCL = 100, 101, 50, 60
A, B = 1, 2  # ordinary thinking/answer tokens


def plan(**kw: object) -> ForcingPlan:
    base: dict = {"end": (END,), "eos": (EOS,), "phrases": ((WAIT,),)}
    base.update(kw)
    return ForcingPlan(**base)


def drive(
    p: ForcingPlan, model: list[int], attempts_only: bool = False
) -> tuple[list[int], list[bool], ForcingState]:
    """Simulate a model that emits ``model`` tokens in order, trying to stop on END/EOS.

    ``attempts_only``: flag only the tokens that replaced an attempt to stop, as the engine's
    records do (caps are replayed from the counts).
    """
    state = ForcingState(p)
    out: list[int] = []
    forced: list[bool] = []
    it = iter(model)
    while state.phase is not Phase.FINISHED:
        token = state.pending()
        was_forced = token is not None and not attempts_only
        if token is None:
            try:
                token = next(it)
            except StopIteration:
                break
            if state.phase is Phase.THINKING and token in p.end_attempt_ids:
                token = state.end_attempt()
                was_forced = True
        state.observe(token)
        out.append(token)
        forced.append(was_forced)
    return out, forced, state


def test_cap_forces_conclusion_then_end_and_counts_exactly() -> None:
    p = plan(max_thinking=5, conclusion=(CONCL, CONCL))
    out, _, state = drive(p, [A] * 20 + [EOS])
    assert out[:8] == [A, A, A, CONCL, CONCL, END, A, A]
    assert state.thinking_tokens == 5
    assert state.ended_by == "budget"
    assert state.thinking_end == 5


def test_zero_cap_ends_thinking_immediately() -> None:
    out, _, state = drive(plan(max_thinking=0), [A, A, EOS])
    assert out == [END, A, A, EOS]
    assert state.thinking_tokens == 0
    assert state.answer_tokens == 2
    assert state.phase is Phase.FINISHED


def test_min_replaces_attempts_until_reached() -> None:
    out, _, state = drive(plan(min_thinking=4), [A, END, A, END, A, END, A, EOS])
    # attempts at 1 and 3 thinking tokens are replaced by Wait; at 5 the model may stop
    assert out == [A, WAIT, A, WAIT, A, END, A, EOS]
    assert state.inserted == 2
    assert state.extension_positions == [1, 3]
    assert state.thinking_tokens == 5
    assert state.ended_by == "model"


def test_extensions_are_counted_whatever_the_length() -> None:
    out, _, state = drive(plan(extensions=2), [A, END, END, END, B, EOS])
    assert out == [A, WAIT, WAIT, END, B, EOS]
    assert state.inserted == 2


def test_eos_inside_thinking_is_an_attempt() -> None:
    out, _, state = drive(plan(extensions=1), [A, EOS, A, EOS, B, EOS])
    assert out == [A, WAIT, A, END, B, EOS]
    assert state.ended_by == "model"


def test_phrase_that_does_not_fit_under_cap_lets_model_stop() -> None:
    out, _, state = drive(plan(max_thinking=3, min_thinking=3), [A, A, A, A])
    assert out[:4] == [A, A, A, END]
    p = plan(max_thinking=3, extensions=5)
    out, _, state = drive(p, [A, A, END, B, EOS])
    assert out == [A, A, WAIT, END, B, EOS]
    assert state.ended_by == "budget" and state.thinking_tokens == 3


def test_phrases_cycle_in_order() -> None:
    p = plan(extensions=3, phrases=((WAIT,), (WAIT + 1, WAIT + 2)))
    out, _, _ = drive(p, [END, END, END, END, EOS])
    assert out == [WAIT, WAIT + 1, WAIT + 2, WAIT, END, EOS]


def test_answer_cap_forces_eos() -> None:
    out, _, state = drive(plan(max_answer=2), [END, A, A, A, A])
    assert out == [END, A, A, EOS]
    assert state.answer_capped


def test_later_blocks_are_answer_text() -> None:
    out, _, state = drive(plan(extensions=1), [A, END, END, B, END, B, EOS])
    assert state.thinking_end == 2
    assert out == [A, WAIT, END, B, END, B, EOS]
    assert state.answer_tokens == 3


def test_multi_token_end_matched_as_sequence() -> None:
    p = ForcingPlan(end=(7, 8), eos=(EOS,), phrases=((WAIT,),))
    state = ForcingState(p)
    for token in [A, 7, A, 7, 8, B]:
        state.observe(token)
    assert state.thinking_tokens == 3  # A, 7, A: a lone 7 is thinking
    assert state.thinking_end == 3
    assert state.answer_tokens == 1


def test_multi_token_end_forced_whole_at_cap() -> None:
    p = ForcingPlan(end=(7, 8), eos=(EOS,), max_thinking=2)
    out, _, state = drive(p, [A, A, A, EOS])
    assert out == [A, A, 7, 8, A, EOS]
    assert state.thinking_tokens == 2


def test_replay_recovers_what_the_driver_did() -> None:
    p = plan(min_thinking=6, max_thinking=9, extensions=1, conclusion=(CONCL,))
    out, forced, driven = drive(p, [A, END, A, WAIT, A, EOS, A, A, A, A, A, A, EOS])
    replayed = replay(p, out, forced)
    assert replayed.extension_positions == driven.extension_positions
    assert replayed.thinking_tokens == driven.thinking_tokens
    assert replayed.ended_by == driven.ended_by
    assert replayed.inserted == driven.inserted


def test_replay_tells_natural_phrase_from_inserted() -> None:
    # The model writes WAIT itself at position 1 (not forced): not an extension.
    p = plan(extensions=1)
    ids = [A, WAIT, A, WAIT, END, B, EOS]
    forced = [False, False, False, True, True, False, False]
    state = replay(p, ids, forced)
    assert state.inserted == 1
    assert state.extension_positions == [3]


def test_forced_token_mismatch_is_loud() -> None:
    state = ForcingState(plan(max_thinking=0))
    assert state.pending() == END
    with pytest.raises(ForcingMismatch):
        state.observe(A)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"end": "x"}, "end"),
        ({"min_thinking": -1}, "min_thinking"),
        ({"max_thinking": "3"}, "max_thinking"),
        ({"phrases": [[]]}, "phrases"),
        ({"bogus": 1}, "unknown"),
    ],
)
def test_extra_args_validation_names_the_field(args: dict, field: str) -> None:
    base = plan(extensions=1).to_extra_args()
    base.update(args)
    with pytest.raises(ValueError, match=field):
        ForcingPlan.from_extra_args(base)


def test_extra_args_round_trip() -> None:
    p = plan(min_thinking=3, max_thinking=9, extensions=2, conclusion=(CONCL,), max_answer=7)
    assert ForcingPlan.from_extra_args(p.to_extra_args()) == p


def test_replay_marks_a_forced_end_of_sequence_as_the_answer_cap() -> None:
    p = plan(max_answer=2)
    out, forced, _ = drive(p, [END, A, A, A])
    state = replay(p, out, forced)
    assert state.answer_capped and state.answer_tokens == 2


# -- incremental decoding (core/tracking.py) ------------------------------------------------

MIXED = (
    "Wait, 3+9=12 héllo 你好 🙂🙂 then a long stretch of plain words to slide the window "
    "</think> ok"
)


class _Reference:
    """The original two-decodes-per-delta algorithm, to compare the cheaper one against."""

    def __init__(self, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer, self.ids, self.text, self.prefix, self.read = tokenizer, [], "", 0, 0

    def extend(self, ids: list[int]) -> str:
        def dec(x: list[int]) -> str:
            return self.tokenizer.decode(x, skip_special_tokens=False)

        self.ids.extend(ids)
        before, after = dec(self.ids[self.prefix : self.read]), dec(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            self.text += after[len(before) :]
            return after[len(before) :]
        return ""


class _SlowTokenizer:
    """A tokenizer without a Rust backend: the generic ``decode`` path, counting calls."""

    def __init__(self, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.calls = tokenizer, 0

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        self.calls += 1
        return self.inner.decode(ids, skip_special_tokens=skip_special_tokens)


@pytest.mark.parametrize("step", [1, 2, 3, 5])
def test_incremental_text_keeps_multibyte_characters_whole(tokenizer, step: int) -> None:
    from s1_integrations.core.tracking import IncrementalText

    ids = tokenizer.encode(MIXED, add_special_tokens=False)
    assert len(ids) > 40  # the decoding window slides several times
    text, ref = IncrementalText(tokenizer), _Reference(tokenizer)
    deltas, expected = [], []
    for i in range(0, len(ids), step):
        deltas.append(text.extend(ids[i : i + step]))
        expected.append(ref.extend(ids[i : i + step]))
    assert all("\ufffd" not in d for d in deltas)
    assert deltas == expected  # the same deltas as decoding the window twice each time
    assert text.flush() == ""
    assert text.text == "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=False)


def test_incremental_text_fast_path_matches_decode_and_falls_back(tokenizer) -> None:
    from s1_integrations.core.tokenizing import fast_decoder
    from s1_integrations.core.tracking import IncrementalText

    ids = tokenizer.encode(MIXED, add_special_tokens=False)
    assert fast_decoder(tokenizer).__name__ == "fast"  # a stock fast tokenizer: Rust directly
    assert fast_decoder(tokenizer)(ids) == tokenizer.decode(ids, skip_special_tokens=False)
    slow = _SlowTokenizer(tokenizer)
    assert fast_decoder(slow).__name__ == "slow"  # anything else: its own decode
    # One piece (a final-only output): one decode, and flush needs no second one.
    text = IncrementalText(slow)
    assert text.extend(ids) == MIXED and slow.calls == 1
    assert text.flush() == "" and slow.calls == 1
    # A piece ending inside a character is held back, then released whole by flush.
    cut = next(i for i in range(1, len(ids)) if "\ufffd" in tokenizer.decode(ids[:i]))
    partial = IncrementalText(tokenizer)
    head = partial.extend(ids[:cut])
    assert "\ufffd" not in head
    assert head + partial.flush() == tokenizer.decode(ids[:cut])


def test_the_fast_encoder_gives_the_ids_encode_gives_and_steps_aside_where_it_could_not(
    tokenizer,
) -> None:
    """Prompts are encoded through the Rust backend directly (transformers would send each one
    through the backend's thread pool): the same ids as ``encode``, special tokens, multibyte
    text and all, through vLLM's pooled tokenizer too; a tokenizer that truncates, or one
    without a Rust backend, is left to its own ``encode``."""
    import copy

    from vllm.tokenizers.hf import maybe_make_thread_pool

    from s1_integrations.core.tokenizing import fast_encoder

    texts = [MIXED, "<|im_start|>user\nWhat is 3+4?<|im_end|>\n<think>", "", " a  b\n\n"]
    expected = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    assert fast_encoder(tokenizer).__name__ == "fast"
    assert fast_encoder(tokenizer)(texts) == expected
    pooled = maybe_make_thread_pool(copy.deepcopy(tokenizer))
    assert fast_encoder(pooled).__name__ == "fast"
    assert fast_encoder(pooled)(texts) == expected
    truncating = copy.deepcopy(tokenizer)
    truncating._tokenizer.enable_truncation(max_length=4)
    assert fast_encoder(truncating).__name__ == "slow"
    assert fast_encoder(truncating)(texts) == expected  # (transformers lifts it for encode)
    assert fast_encoder(_SlowEncoder(tokenizer)).__name__ == "slow"
    assert fast_encoder(_SlowEncoder(tokenizer))(texts) == expected


class _SlowEncoder:
    """A tokenizer without a Rust backend: the generic ``encode`` path."""

    def __init__(self, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self.inner = tokenizer

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.inner.encode(text, add_special_tokens=add_special_tokens)


# -- no re-entry: the thinking delimiters the model may not write (issue 16) ------------------

START = 102  # the start delimiter, as a single token
OPEN, THINK = 103, 104  # a two-token start delimiter (s1's <|im_start|> + "think")


def banning(**kw: object) -> ForcingPlan:
    base: dict = {"ban_thinking": ((START,),), "ban_answer": ((START,), (END,))}
    base.update(kw)
    return plan(**base)


def test_thinking_bans_the_start_and_the_answer_bans_both_delimiters() -> None:
    state = ForcingState(banning(max_thinking=2))
    assert state.banned_next() == (START,)  # the block is open: no second <think>
    state.observe(A)
    state.observe(A)
    assert state.pending() == END
    assert state.banned_next() == ()  # nothing is masked while a token is forced
    state.observe(END)
    assert state.phase is Phase.ANSWERING
    assert set(state.banned_next()) == {START, END}
    state.observe(B)
    assert set(state.banned_next()) == {START, END}


@pytest.mark.parametrize("token", [START, END])
def test_a_delimiter_in_the_answer_is_an_error_not_a_count(token: int) -> None:
    """An engine that let one through did not apply the budget: loud, never recorded."""
    state = ForcingState(banning(max_thinking=0))
    state.observe(state.pending())  # type: ignore[arg-type]
    with pytest.raises(ForcingMismatch, match="did not apply the budget"):
        state.observe(token)
    assert state.answer_tokens == 0


def test_the_start_delimiter_inside_the_thinking_is_an_error() -> None:
    state = ForcingState(banning())
    state.observe(A)
    with pytest.raises(ForcingMismatch, match="thinking"):
        state.observe(START)
    assert state.thinking_tokens == 1


def test_after_a_natural_end_the_answer_bans_both() -> None:
    state = ForcingState(banning())
    for token in [A, END]:
        state.observe(token)
    assert state.ended_by == "model" and state.phase is Phase.ANSWERING
    assert set(state.banned_next()) == {START, END}


def test_multi_token_bans_mask_the_last_token_after_the_rest() -> None:
    p = plan(ban_thinking=((OPEN, THINK),), ban_answer=((OPEN, THINK), (OPEN, END)))
    state = ForcingState(p)
    assert state.banned_next() == ()
    state.observe(OPEN)
    assert state.banned_next() == (THINK,)
    state.observe(A)
    assert state.banned_next() == ()
    state.observe(END)  # the end delimiter itself is no ban while thinking
    assert state.phase is Phase.ANSWERING
    state.observe(OPEN)
    assert set(state.banned_next()) == {THINK, END}
    state.observe(OPEN)  # a repeated first token keeps the ban armed
    assert set(state.banned_next()) == {THINK, END}


def test_a_forced_token_separates_what_the_model_wrote() -> None:
    """As vLLM's bad_words see one round's output: the rounds strategy must agree exactly."""
    p = plan(ban_thinking=((OPEN, THINK),), extensions=1)
    out, _, state = drive(p, [OPEN, END, THINK, A, END, EOS])
    # OPEN, then an attempt replaced by WAIT: THINK after WAIT completes nothing.
    assert out == [OPEN, WAIT, THINK, A, END, EOS]
    assert state.thinking_tokens == 4


@pytest.mark.parametrize("seed", range(20))
def test_no_output_ever_holds_a_delimiter_where_it_is_banned(seed: int) -> None:
    """A random model that prefers the delimiters, driven as the processor drives it."""
    rng = random.Random(seed)
    p = ForcingPlan(
        end=(END,),
        eos=(EOS,),
        phrases=((WAIT,),),
        extensions=rng.randint(0, 2),
        max_thinking=rng.choice([None, 0, 3, 9]),
        max_answer=12,
        ban_thinking=((START,), (OPEN, THINK)),
        ban_answer=((START,), (OPEN, THINK), (END,)),
    )
    state = ForcingState(p)
    out: list[int] = []
    vocabulary = [A, B, START, END, OPEN, THINK, EOS]
    while state.phase is not Phase.FINISHED and len(out) < 80:
        token = state.pending()
        if token is None:
            banned = state.banned_next()
            token = rng.choice([t for t in vocabulary if t not in banned])
            if state.phase is Phase.THINKING and token in p.end_attempt_ids:
                token = state.end_attempt()
        state.observe(token)
        out.append(token)
    answer = out[state.answer_start :] if state.answer_start is not None else []
    thinking = out[: state.thinking_end] if state.thinking_end is not None else out
    assert START not in out
    assert END not in answer
    for pair in itertools.pairwise(out):
        assert pair != (OPEN, THINK)
    assert thinking.count(END) == 0


def test_ban_settings_round_trip_and_stay_off_the_wire_when_unset() -> None:
    p = banning(extensions=1)
    args = p.to_extra_args()
    assert args["ban_thinking"] == [[START]] and args["ban_answer"] == [[START], [END]]
    assert ForcingPlan.from_extra_args(args) == p
    assert ForcingPlan.from_extra_args(p.to_json()) == p
    # A plan without them sends what servers of the previous release accept.
    assert set(plan().to_extra_args()) == {
        "end", "eos", "min_thinking", "max_thinking", "extensions", "phrases", "conclusion",
        "max_answer",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"ban_answer": [[]]}, "ban_thinking and ban_answer"),
        ({"ban_thinking": [1]}, "ban_thinking"),
        ({"landing": 3}, "landing needs max_thinking"),
        ({"landing": -1}, "landing"),
        ({"landing": 3, "max_thinking": 9}, "break tokens"),
        ({"landing": 10, "max_thinking": 9, "breaks": [5]}, "landing exceeds"),
        ({"breaks": ["x"]}, "breaks"),
    ],
)
def test_new_settings_are_validated_by_name(args: dict, field: str) -> None:
    base = plan().to_extra_args()
    base.update(args)
    with pytest.raises(ValueError, match=field):
        ForcingPlan.from_extra_args(base)


# -- soft landing ------------------------------------------------------------------------

NL, DOT, DIGIT = 70, 71, 72


def landing_plan(**kw: object) -> ForcingPlan:
    base: dict = {"max_thinking": 20, "landing": 5, "breaks": (NL,), "weak_breaks": (DOT,)}
    base["digits"] = (DIGIT,)
    base.update(kw)
    return plan(**base)


def test_landing_ends_at_the_first_break_inside_the_window() -> None:
    p = landing_plan()
    assert p.landing_from == 15  # the last 5 of 20
    # A break at 15 thinking tokens is before the window; the one at 17 is inside it.
    model = [A] * 14 + [NL, A, NL, A, A, A, A, A]
    out, _, state = drive(p, model)
    assert out[:18] == [A] * 14 + [NL, A, NL, END]
    assert state.thinking_tokens == 17 and state.landed and state.ended_by == "budget"


def test_without_a_break_in_the_window_the_cap_cuts_as_before() -> None:
    out, _, state = drive(landing_plan(), [A] * 14 + [NL] + [A] * 10)
    assert out[:21] == [A] * 14 + [NL, A, A, A, A, A, END]  # the newline came at 15: too early
    assert state.thinking_tokens == 20 and not state.landed
    out, _, state = drive(landing_plan(), [A] * 30)
    assert state.thinking_tokens == 20 and not state.landed and out[20] == END


def test_landing_never_passes_the_cap_and_still_forces_the_conclusion() -> None:
    p = landing_plan(conclusion=(CONCL, CONCL))
    assert p.landing_from == 13
    out, _, state = drive(p, [A] * 13 + [NL] + [A] * 10)
    assert out[:17] == [A] * 13 + [NL, CONCL, CONCL, END]
    assert state.thinking_tokens == 16 <= 20
    for n in range(0, 25):  # wherever the break falls, never past the cap
        _, _, s = drive(p, [A] * n + [NL] + [A] * 30)
        assert s.thinking_tokens <= 20


def test_a_full_stop_after_a_digit_is_no_sentence_end() -> None:
    p = landing_plan()
    _, _, state = drive(p, [A] * 16 + [DIGIT, DOT] + [A] * 10)  # "3." at 18: a decimal
    assert state.thinking_tokens == 20 and not state.landed
    _, _, state = drive(p, [A] * 16 + [A, DOT] + [A] * 10)  # "a." at 18: a sentence end
    assert state.thinking_tokens == 18 and state.landed
    _, _, state = drive(p, [A] * 16 + [DIGIT, DOT, DOT] + [A] * 10)  # "3..": the second lands
    assert state.thinking_tokens == 19 and state.landed


def test_landing_waits_for_the_minimum() -> None:
    p = landing_plan(min_thinking=18)
    assert p.landing_from == 17
    _, _, state = drive(p, [A] * 16 + [NL, A, NL, A, A])
    assert state.thinking_tokens == 19 and state.landed  # the newline at 17 was too early


def test_forced_tokens_never_land() -> None:
    """A phrase that happens to be a break token is not the model stopping at a break."""
    p = landing_plan(extensions=3, phrases=((NL,),))
    out, _, state = drive(p, [A] * 16 + [END, A, A, A, A, A])
    assert out[16] == NL  # the extension
    assert state.thinking_tokens == 20 and not state.landed


def test_landing_settings_round_trip() -> None:
    p = landing_plan(conclusion=(CONCL,), min_thinking=2)
    assert ForcingPlan.from_extra_args(p.to_extra_args()) == p
    assert ForcingPlan.from_extra_args(p.to_json()) == p


def test_replay_recovers_a_landing() -> None:
    p = landing_plan(extensions=1)
    out, forced, driven = drive(p, [A, END] + [A] * 14 + [NL, A, A, A])
    replayed = replay(p, out, forced)
    assert replayed.landed and driven.landed
    assert replayed.thinking_tokens == driven.thinking_tokens == 17
    assert replayed.extension_positions == driven.extension_positions == [1]


# -- the budget knob ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"soft_landing_tokens": 8}, "soft_landing_tokens .* needs max_thinking_tokens"),
        ({"soft_landing_tokens": 8, "max_thinking_tokens": 4}, "soft_landing_tokens .* exceeds"),
        ({"soft_landing_tokens": -1, "max_thinking_tokens": 4}, "soft_landing_tokens"),
    ],
)
def test_soft_landing_budget_is_validated_by_name(kw: dict, match: str) -> None:
    from s1_integrations import ThinkingBudget

    with pytest.raises(ValueError, match=match):
        ThinkingBudget(**kw)
    ThinkingBudget(soft_landing_tokens=4, max_thinking_tokens=4)


# -- delimiters as vLLM's bad_words tokenize them; break tokens from a vocabulary ------------


class _WithMaxId:
    """The one attribute vLLM's update_from_tokenizer needs beyond a Hugging Face tokenizer."""

    def __init__(self, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self.inner = tokenizer
        self.max_token_id = len(tokenizer) - 1

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.inner.encode(text, add_special_tokens=add_special_tokens)


@pytest.mark.parametrize(
    "words",
    [
        ("<think>",),
        ("<think>", "</think>"),
        ("</think>\n",),
        ("\n</think>",),
        ("Wait", " so"),
        ("<|im_start|>think", "<|im_start|>answer"),
    ],
)
def test_bad_word_ids_are_what_vllm_suppresses(tokenizer, words: tuple[str, ...]) -> None:
    from vllm import SamplingParams

    from s1_integrations.core.formats import bad_word_ids

    params = SamplingParams(bad_words=list(words))
    params.update_from_tokenizer(_WithMaxId(tokenizer))  # type: ignore[arg-type]
    assert bad_word_ids(tokenizer, words) == tuple(
        dict.fromkeys(tuple(x) for x in params._bad_words_token_ids or [])
    )


def test_break_tokens_classify_the_vocabulary(tokenizer) -> None:
    from s1_integrations.core.formats import SENTENCE_ENDS, break_tokens

    found = break_tokens(tokenizer)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    assert len(newline) == 1 and newline[0] in found.breaks
    special = set(tokenizer.all_special_ids)
    for i in found.breaks:
        text = tokenizer.decode([i])
        assert i not in special
        assert text.endswith(("\n", "\r")) or (text[-1] in SENTENCE_ENDS and not text[-2].isdigit())
    for i in found.weak:
        assert set(tokenizer.decode([i]).strip()) <= set(SENTENCE_ENDS)
    for i in found.digits:
        assert tokenizer.decode([i])[-1].isdigit()
    assert not set(found.breaks) & set(found.weak)
    # A token inside a delimiter, before its last token, never breaks.
    inner = found.breaks[0]
    assert inner not in break_tokens(tokenizer, ((inner, 999),)).breaks


def test_replay_reads_a_whole_multi_token_end_forced_after_an_attempt_near_the_cap() -> None:
    """An end of sequence one token before the cap: the processor forces the two-token end at
    once, and the replay (no log-probabilities for a cap-only plan) must not see the cap fall
    due inside it."""
    p = ForcingPlan(end=(7, 8), eos=(EOS,), max_thinking=3)
    out, _, driven = drive(p, [A, A, EOS, B, EOS])
    assert out == [A, A, 7, 8, B, EOS]
    replayed = replay(p, out, [False] * len(out))
    assert replayed.thinking_tokens == driven.thinking_tokens == 2
    assert replayed.ended_by == driven.ended_by == "model"
    assert replayed.answer_tokens == 1 and replayed.thinking_end == 2


def test_the_rounds_bans_travel_to_servers_as_bad_words() -> None:
    """Servers without the processor serve rounds: the delimiters must reach them too."""
    from s1_integrations.core.backend import GenerationRequest
    from s1_integrations.engine.wire import completion_body

    plain = completion_body(GenerationRequest([1], max_tokens=3), "m")
    assert "bad_words" not in plain
    banned = completion_body(
        GenerationRequest([1], max_tokens=3, bad_words=("<think>", "</think>")), "m"
    )
    assert banned["bad_words"] == ["<think>", "</think>"]
    # The soft-landing plan, as one JSON string in vllm_xargs.
    p = landing_plan(**BANS_FOR_WIRE)
    body = completion_body(GenerationRequest([1], max_tokens=3, forcing=p.to_extra_args()), "m")
    assert ForcingPlan.from_extra_args(body["vllm_xargs"]["s1_budget"]) == p


BANS_FOR_WIRE = {"ban_thinking": ((START,),), "ban_answer": ((START,), (END,))}


_REPLAYED = (
    "phase",
    "thinking_tokens",
    "answer_tokens",
    "position",
    "inserted",
    "extension_positions",
    "ended_by",
    "thinking_end",
    "answer_start",
    "answer_capped",
    "previous_token",
)


@pytest.mark.parametrize("seed", range(40))
def test_a_replay_counting_ordinary_runs_at_once_ends_where_the_driver_did(seed: int) -> None:
    """Where the plan allows it (a quiet plan, any plan's answer) the replay counts the
    model's runs of ordinary tokens in one step (as the processor's quiet lane does); fed in
    any chunks, it must end in the state the driver reached token by token: caps, minimums,
    extensions and answer caps on their exact tokens, with only the replaced attempts
    flagged, as the engine's records flag them."""
    rng = random.Random(seed)
    least = rng.choice([0, 3, 9])
    landing = rng.choice([{}, {"landing": 4, "breaks": (B,)}])  # its answer is counted alone
    p = plan(
        min_thinking=least,
        max_thinking=rng.choice([12, 30] if landing else [None, least + 2, 12, 30]),
        extensions=rng.choice([0, 1, 3]),
        max_answer=rng.choice([None, 2, 7]),
        conclusion=rng.choice([(), (CONCL,), (CONCL, A)]),
        **landing,
    )
    assert p.quiet == (not p.landing) and p.quiet_answer
    thinking = rng.choices([A, B, WAIT, END, EOS], weights=[40, 40, 3, 6, 2], k=60)
    out, forced, driven = drive(p, thinking + [A] * 10 + [EOS], attempts_only=True)
    replayer = Replayer(p)
    i = 0
    while i < len(out):
        n = rng.randint(1, 9)
        replayer.feed(out[i : i + n], forced[i : i + n])
        i += n
    replayer.feed([], [], final=True)
    for name in _REPLAYED:
        assert getattr(replayer.state, name) == getattr(driven, name), name
