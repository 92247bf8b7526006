"""The adaptive policy's early exit, driven with hand-built logits and token ids (no engine).

A row's logits with a single finite entry have a top-1 probability of exactly 1; a row with
the top token tied with one other, exactly 1/2. The processor is driven one step at a time,
the way vLLM drives it, and its records, its outputs and a replay of them must agree.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from pydantic import ValidationError
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from logit_rows import END, EOS, WAIT, A, B, end_row, plan, tied
from s1_integrations.core.adaptive import AdaptivePolicy
from s1_integrations.core.backend import forced_flags
from s1_integrations.core.forcing import EXTRA_ARGS_KEY, ForcingPlan, ForcingState, Replayer
from s1_integrations.engine.processor import BudgetForcingLogitsProcessor
from s1_integrations.engine.records import RECORD_KEY
from s1_integrations.engine.xargs import plain_budget

C1, C2 = 13, 14


def exiting(after: int, threshold: float = 0.9, **kw: object) -> ForcingPlan:
    """The policy's early exit alone (a policy that never extends)."""
    return plan(adaptive_signal="min_top1", exit_after=after, exit_threshold=threshold, **kw)


def forced_token(row: torch.Tensor) -> int | None:
    finite = torch.isfinite(row).nonzero().flatten().tolist()
    return finite[0] if len(finite) == 1 else None


class Batch:
    """Rows with their own plans in one processor; each step every row samples greedily."""

    def __init__(self, plans: list[ForcingPlan]) -> None:
        self.proc = BudgetForcingLogitsProcessor(None, torch.device("cpu"), False)  # type: ignore[arg-type]
        self.outs: list[list[int]] = [[] for _ in plans]
        self.forced: list[list[bool]] = [[] for _ in plans]
        added = [
            (
                i,
                SamplingParams(
                    temperature=0.0,
                    extra_args={EXTRA_ARGS_KEY: p.to_extra_args(), RECORD_KEY: f"r{i}"},
                ),
                None,
                self.outs[i],
            )
            for i, p in enumerate(plans)
        ]
        self.proc.update_state(
            BatchUpdate(batch_size=len(plans), removed=[], added=added, moved=[])
        )

    def step(self, rows: list[torch.Tensor]) -> None:
        out = self.proc.apply(torch.stack([r.clone() for r in rows]))
        for r, o in enumerate(self.outs):
            o.append(int(out[r].argmax()))
            forced = forced_token(out[r]) is not None and not torch.equal(out[r], rows[r])
            self.forced[r].append(forced)
        self.proc.update_state(None)

    def state(self, i: int) -> ForcingState:
        return self.proc.requests[i].state


def test_a_confident_stretch_past_the_minimum_ends_the_thinking_exactly() -> None:
    plans = [
        exiting(3),  # three sure tokens, then the end delimiter
        exiting(3, min_thinking=5),  # the stretch is long enough early, the minimum is not
        exiting(3),  # an unsure token breaks the stretch, which starts again
        exiting(3, conclusion=(C1, C2)),  # the conclusion, then the delimiter
        exiting(3, max_thinking=3),  # the cap is due at the same token: the cap's end
        plan(),  # no early exit: left alone
    ]
    batch = Batch(plans)
    script = [
        [tied(1), tied(1), tied(1), tied(1), tied(1), tied(1)],
        [tied(1), tied(1), tied(2), tied(1), tied(1), tied(1)],
        [tied(1), tied(1), tied(1), tied(1), tied(1), tied(1)],
        [tied(1), tied(1), tied(1), tied(1), tied(1), tied(1)],
        [tied(1), tied(1), tied(1), tied(1), tied(1), tied(1)],
        [tied(1), tied(1), tied(1), tied(1), tied(1), tied(1)],
        [tied(1), tied(1), tied(1), tied(1), tied(1), end_row()],
        [tied(1), tied(1), tied(1), tied(1), tied(1), tied(1)],
    ]
    for rows in script:
        batch.step(rows)
    outs = batch.outs
    assert outs[0][:4] == [A, A, A, END]
    assert outs[1][:6] == [A, A, A, A, A, END]  # 5 thinking tokens, the minimum
    assert outs[2][:6] == [A, A, A, A, A, END]  # sure, unsure (step 2), then three sure
    assert outs[3][:6] == [A, A, A, C1, C2, END]
    assert outs[4][:4] == [A, A, A, END]
    assert outs[5] == [A] * 6 + [END, A]  # its own attempt, let stand
    states = [batch.state(i) for i in range(6)]
    assert [s.ended_by for s in states] == [
        "early_exit",
        "early_exit",
        "early_exit",
        "early_exit",
        "budget",
        "model",
    ]
    assert [s.thinking_tokens for s in states] == [3, 5, 5, 5, 3, 6]
    assert [s.exit_at for s in states] == [3, 5, 5, 3, None, None]
    assert states[0].end_signal == 1.0  # the lowest top-1 of the stretch
    assert states[4].end_signal is None


def test_the_stretch_uses_the_threshold_at_its_edge_and_forced_tokens_break_it() -> None:
    half = math.exp(torch.log_softmax(tied(2), -1).max().item())  # as the processor has it
    plans = [
        exiting(2, threshold=half),  # 1/2 counts: exits after two unsure tokens
        exiting(2, threshold=math.nextafter(half, 1.0)),  # it does not: sure tokens only
        exiting(2, min_thinking=3),  # the minimum's Wait (forced) breaks the stretch
    ]
    batch = Batch(plans)
    for rows in (
        [tied(2), tied(2), tied(1)],
        [tied(2), tied(2), end_row()],
        [end_row(), tied(1), tied(1)],
        [tied(1), tied(1), tied(1)],
        [tied(1), tied(1), tied(1)],
    ):
        batch.step(rows)
    assert batch.outs[0][:3] == [A, A, END]
    assert batch.state(0).end_signal == half
    assert batch.outs[1] == [A, A, A, A, END]  # two sure tokens after the unsure ones
    # sure, then an attempt below the minimum (a forced Wait), then two sure tokens: without
    # the break, one sure token after the Wait would have completed the stretch.
    assert batch.outs[2] == [A, WAIT, A, A, END]
    assert batch.state(2).inserted == 1 and batch.state(2).ended_by == "early_exit"


def test_without_extensions_left_an_attempt_is_the_model_s_and_an_exit_the_policy_s() -> None:
    both = plan(
        adaptive_signal="min_top1",
        adaptive_threshold=0.9,
        adaptive_max=1,
        exit_after=3,
        exit_threshold=0.9,
    )
    batch = Batch([both, both])
    for rows in (
        [tied(2), tied(2)],
        [end_row(), tied(1)],  # row 0: unsure, extended; row 1 goes on
        [tied(2), tied(1)],
        [end_row(), tied(1)],  # row 0: the max is spent, the model stops; row 1 exits
        [tied(1), tied(1)],
    ):
        batch.step(rows)
    assert batch.outs[0][:5] == [A, WAIT, A, END, A]
    assert batch.state(0).ended_by == "model"
    assert batch.outs[1][:5] == [A, A, A, A, END]  # the unsure first token is not in it
    assert batch.state(1).ended_by == "early_exit"


@pytest.mark.parametrize("conclusion", [(), (C1, C2)])
def test_the_replay_reads_the_exit_from_the_records_and_from_top1s(conclusion) -> None:
    p = exiting(3, conclusion=conclusion)
    batch = Batch([p])
    for row in (tied(1), tied(2), tied(1), tied(1), tied(1), *[tied(1)] * 5):
        batch.step([row])
    ids = batch.outs[0]
    engine = batch.state(0)
    records = batch.proc.take_records(["r0"])["r0"]
    assert records == [(5, len(conclusion) + 1, 1.0, True)]
    # The records' way (a finished output): forced flags and exits from the records.
    replayer = Replayer(p)
    replayer.feed(
        ids,
        forced_flags(len(ids), records),
        final=True,
        measured={pos: s for pos, _, s, _ in records},
        exits=[pos for pos, _, _, e in records if e],
    )
    # The stream's way: forced from log-probabilities, top-1s per token.
    top1 = [1.0, 0.5, 1.0, 1.0, 1.0] + [1.0] * (len(ids) - 5)
    streamed = Replayer(p)
    streamed.feed(ids, batch.forced[0][: len(ids)], final=True, top1=top1)
    for replayed in (replayer.state, streamed.state):
        assert replayed.ended_by == "early_exit"
        assert replayed.thinking_tokens == engine.thinking_tokens == 5 + len(conclusion)
        assert replayed.thinking_end == engine.thinking_end
        assert replayed.end_signal == 1.0
    # Without records or top-1s, an empty conclusion leaves the forced end unexplained by the
    # stretch: it reads as the model's attempt (the counts stay exact either way).
    blind = Replayer(p)
    blind.feed(ids, batch.forced[0][: len(ids)], final=True)
    assert blind.state.thinking_tokens == engine.thinking_tokens
    assert blind.state.ended_by == ("early_exit" if conclusion else "model")


def test_the_rounds_cut_is_where_the_state_exits_token_by_token() -> None:
    """``exit_cut`` runs the state's own test ahead; compare with feeding the tokens."""
    rng = random.Random(7)
    for _ in range(300):
        p = exiting(rng.randint(1, 5), threshold=0.8, min_thinking=rng.choice([0, 0, 4, 9]))
        state = ForcingState(p)
        for _ in range(rng.randint(0, 3)):  # some of the thinking already seen
            state.note_top1(rng.choice([0.5, 0.9, 1.0]))
            state.observe(A)
        if state.pending() is not None:
            continue  # the exit is already due
        top1 = [rng.choice([0.5, 0.79, 0.8, 1.0]) for _ in range(12)]
        cut = state.exit_cut([A] * 12, top1)
        for i, p1 in enumerate(top1):
            state.note_top1(p1)
            state.observe(A)
            if state.exit_ready:
                assert cut == i + 1
                break
        else:
            assert cut is None


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"exit_after": -1}, "exit_after"),
        ({"exit_threshold": 1.5}, "exit_threshold"),
        ({"exit_threshold": -0.1}, "exit_threshold"),
        ({"exit_threshold": float("nan")}, "exit_threshold"),
        ({"exit_afterr": 3}, "exit_afterr"),
    ],
)
def test_bad_exit_settings_are_refused_naming_the_field(fields: dict, name: str) -> None:
    with pytest.raises(ValidationError) as err:
        AdaptivePolicy(**fields)
    assert err.value.errors()[0]["loc"] == (name,)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ({"exit_after": -2}, "exit_after"),
        ({"exit_after": 2, "exit_threshold": "high"}, "exit_threshold"),
        ({"exit_after": 2, "adaptive_signal": "min_top1", "exit_threshold": 2.0}, "exit_threshold"),
        ({"exit_threshold": 7}, "exit_threshold"),  # refused even with the exit off
        ({"exit_after": 2}, "adaptive_signal"),  # the exit is the policy's
        ({"exit_after": 2, "adaptive_signal": "min_top1", "extensions": 1}, "extensions"),
    ],
)
def test_the_wire_format_refuses_bad_exits(args: dict, name: str) -> None:
    base = plan().to_extra_args()
    with pytest.raises(ValueError, match=name):
        ForcingPlan.from_extra_args({**base, **args})


def test_the_wire_format_round_trips_an_exit_and_leaves_it_out_when_off() -> None:
    p = exiting(4, threshold=0.95, conclusion=(C1,))
    assert ForcingPlan.from_extra_args(p.to_json()) == p
    assert {"exit_after", "exit_threshold"} <= set(p.to_extra_args())
    assert not {"exit_after", "exit_threshold"} & set(plan().to_extra_args())


def test_plain_words_set_the_exit_and_name_a_bad_one() -> None:
    b = plain_budget({"adaptive_exit_after": 6, "adaptive_exit_threshold": 0.97})
    assert b.adaptive == AdaptivePolicy(exit_after=6, exit_threshold=0.97)
    with pytest.raises(ValueError, match=r"vllm_xargs\.adaptive_exit_after"):
        plain_budget({"adaptive_exit_after": -1})


def test_a_multi_token_end_forced_by_the_exit_is_told_from_the_model_s_own() -> None:
    """Rounds on a model whose end delimiter is two tokens: the replay reads a forced
    delimiter after a confident stretch as the exit, the same ids unforced as the model's."""
    e1, e2 = 8, 9
    p = ForcingPlan(
        end=(e1, e2),
        eos=(EOS,),
        phrases=((WAIT,),),
        exit_after=2,
        exit_threshold=0.0,
        adaptive_signal="min_top1",
    )
    ids = [A, A, e1, e2, B, EOS]
    for forced, ended_by in (
        ([False, False, True, True, False, False], "early_exit"),
        ([False] * 6, "model"),
    ):
        replayer = Replayer(p)
        replayer.feed(ids, forced, final=True, top1=[1.0] * 6)
        assert replayer.state.ended_by == ended_by
        assert replayer.state.thinking_tokens == 2 and replayer.state.answer_tokens == 1
