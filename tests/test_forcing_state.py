"""The budget-forcing state machine and its replay, on plain token ids."""

from __future__ import annotations

import pytest

from s1_integrations.core.forcing import (
    ForcingMismatch,
    ForcingPlan,
    ForcingState,
    Phase,
    replay,
)

END, EOS, WAIT, CONCL = 100, 101, 50, 60
A, B = 1, 2  # ordinary thinking/answer tokens


def plan(**kw: object) -> ForcingPlan:
    base: dict = {"end": (END,), "eos": (EOS,), "phrases": ((WAIT,),)}
    base.update(kw)
    return ForcingPlan(**base)


def drive(p: ForcingPlan, model: list[int]) -> tuple[list[int], list[bool], ForcingState]:
    """Simulate a model that emits ``model`` tokens in order, trying to stop on END/EOS."""
    state = ForcingState(p)
    out: list[int] = []
    forced: list[bool] = []
    it = iter(model)
    while state.phase is not Phase.FINISHED:
        token = state.pending()
        was_forced = token is not None
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
    from s1_integrations.core.tracking import IncrementalText, _fast_decoder

    ids = tokenizer.encode(MIXED, add_special_tokens=False)
    assert _fast_decoder(tokenizer).__name__ == "fast"  # a stock fast tokenizer: Rust directly
    assert _fast_decoder(tokenizer)(ids) == tokenizer.decode(ids, skip_special_tokens=False)
    slow = _SlowTokenizer(tokenizer)
    assert _fast_decoder(slow).__name__ == "slow"  # anything else: its own decode
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
