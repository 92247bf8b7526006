"""The adaptive policy's decision rule, driven with hand-built logits and token ids (no engine).

The processor is handed logits whose top-1 probability is known exactly, one step at a time,
the way vLLM drives it; the state machine and its replay are driven with token ids.
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from logit_rows import END, EOS, NEG, WAIT, A, B, V, end_row, plan, tied
from s1_integrations.core.adaptive import AdaptivePolicy, SignalTracker
from s1_integrations.core.budget import ThinkingBudget
from s1_integrations.core.forcing import (
    EXTRA_ARGS_KEY,
    ForcingPlan,
    ForcingState,
    Replayer,
    replay,
)
from s1_integrations.core.plans import PlanBuilder
from s1_integrations.engine.processor import BudgetForcingLogitsProcessor, top1_logprobs


def adaptive(threshold: float, max_extensions: int = 1, signal: str = "min_top1") -> ForcingPlan:
    return plan(adaptive_signal=signal, adaptive_threshold=threshold, adaptive_max=max_extensions)


def params(p: ForcingPlan, temperature: float = 0.0) -> SamplingParams:
    return SamplingParams(
        temperature=temperature, seed=0, extra_args={EXTRA_ARGS_KEY: p.to_extra_args()}
    )


def processor() -> BudgetForcingLogitsProcessor:
    return BudgetForcingLogitsProcessor(None, torch.device("cpu"), False)  # type: ignore[arg-type]


def top1_of(row: torch.Tensor) -> float:
    """The probability the processor computes for a row (float32, exactly as it does)."""
    return math.exp(top1_logprobs(row.unsqueeze(0))[0].item())


def forced_token(row: torch.Tensor) -> int | None:
    finite = torch.isfinite(row).nonzero().flatten().tolist()
    return finite[0] if len(finite) == 1 else None


def step(
    proc: BudgetForcingLogitsProcessor, rows: list[torch.Tensor], outs: list[list[int]]
) -> torch.Tensor:
    """One decode step: the processor sees the logits, then each row 'samples' greedily."""
    out = proc.apply(torch.stack(rows))
    for r, o in enumerate(outs):
        o.append(int(out[r].argmax()))
    proc.update_state(None)
    return out


def test_one_batch_confident_and_unsure_rows_at_the_threshold_edges() -> None:
    """Four rows see the same two steps (a token with top-1 1/2, then an end attempt)."""
    half = top1_of(tied(2))
    assert half == pytest.approx(0.5, abs=1e-6)
    plans = [
        adaptive(half),  # signal == threshold: confident, the thinking ends
        adaptive(math.nextafter(half, 1.0)),  # the least bit above: unsure, extended
        adaptive(0.0),  # nothing is ever unsure
        adaptive(1.0),  # only certainty is confident
    ]
    proc = processor()
    outs: list[list[int]] = [[] for _ in plans]
    proc.update_state(
        BatchUpdate(
            batch_size=4,
            removed=[],
            added=[(i, params(p), None, outs[i]) for i, p in enumerate(plans)],
            moved=[],
        )
    )
    step(proc, [tied(2)] * 4, outs)
    assert [o[-1] for o in outs] == [A, A, A, A]
    out = step(proc, [end_row()] * 4, outs)
    assert [forced_token(out[r]) for r in range(4)] == [END, WAIT, END, WAIT]
    states = [proc.requests[r].state for r in range(4)]
    assert [s.ended_by for s in states] == ["policy", None, "policy", None]
    assert [s.extension_signals for s in states] == [[], [half], [], [half]]
    assert states[0].end_signal == half and states[2].end_signal == half


def test_signal_covers_the_tokens_since_the_last_extension_and_max_extensions_holds() -> None:
    """Unsure, extended; confident after the phrase, ends; a second unsure one hits the max."""
    proc = processor()
    out_a: list[int] = []
    out_b: list[int] = []
    proc.update_state(
        BatchUpdate(
            batch_size=2,
            removed=[],
            added=[
                (0, params(adaptive(0.4, max_extensions=2)), None, out_a),
                (1, params(adaptive(0.4, max_extensions=1)), None, out_b),
            ],
            moved=[],
        )
    )
    certain = tied(1)
    step(proc, [tied(4), tied(4)], [out_a, out_b])  # top-1 1/4: unsure
    step(proc, [end_row(), end_row()], [out_a, out_b])
    assert out_a[-1] == WAIT and out_b[-1] == WAIT
    # Row 0 writes certain tokens after the phrase; row 1 is unsure again.
    step(proc, [certain, tied(3)], [out_a, out_b])
    out = step(proc, [end_row(), end_row()], [out_a, out_b])
    assert forced_token(out[0]) == END and forced_token(out[1]) == END
    a, b = proc.requests[0].state, proc.requests[1].state
    assert a.ended_by == "policy" and a.end_signal == 1.0
    assert b.ended_by == "model"  # the one extension allowed is spent: not the policy's call
    assert a.inserted == b.inserted == 1
    assert a.extension_signals == pytest.approx([0.25]) and b.end_signal is None


def test_policies_mix_with_fixed_budgets_and_unbudgeted_rows() -> None:
    proc = processor()
    outs: list[list[int]] = [[], [], [], []]
    added = [
        (0, params(adaptive(0.9)), None, outs[0]),
        (1, params(plan(extensions=1)), None, outs[1]),
        (2, SamplingParams(), None, outs[2]),
        (3, params(adaptive(0.9, max_extensions=0)), None, outs[3]),
    ]
    proc.update_state(BatchUpdate(batch_size=4, removed=[], added=added, moved=[]))
    step(proc, [tied(2)] * 4, outs)
    out = step(proc, [end_row()] * 4, outs)
    assert forced_token(out[0]) == WAIT  # 0.5 < 0.9: unsure
    assert forced_token(out[1]) == WAIT  # the fixed extension
    assert forced_token(out[2]) is None and out[2, END] == 5.0  # no budget: untouched
    assert forced_token(out[3]) == END  # a policy with no extensions to give
    assert proc.requests[3].state.ended_by == "model"


def test_sampled_rows_read_the_signal_at_their_temperature() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    got = top1_logprobs(logits, torch.tensor([1.0, 2.0])).exp().tolist()
    assert got[0] == pytest.approx(math.exp(2) / (math.exp(2) + 2), rel=1e-6)
    assert got[1] == pytest.approx(math.e / (math.e + 2), rel=1e-6)
    masked = torch.tensor([[0.0, NEG, NEG]])
    assert top1_logprobs(masked).item() == 0.0  # a single allowed token is certain


def test_mean_signal_and_tracker() -> None:
    t = SignalTracker("mean_top1")
    assert t.value == 1.0  # nothing written: confident
    t.add(0.2)
    t.add(0.6)
    assert t.value == pytest.approx(0.4) and t.lowest == 0.2
    t.reset()
    assert (t.count, t.value) == (0, 1.0)
    state = ForcingState(adaptive(0.5, signal="mean_top1"))
    for token, p in ((A, 0.2), (B, 1.0)):
        state.note_top1(p)
        state.observe(token)
    assert state.signal_value == pytest.approx(0.6)
    assert state.end_attempt() == END and state.ended_by == "policy"


def test_forced_tokens_and_the_minimum_do_not_feed_the_signal() -> None:
    state = ForcingState(
        plan(min_thinking=2, adaptive_signal="min_top1", adaptive_threshold=0.5, adaptive_max=2)
    )
    state.note_top1(0.1)
    state.observe(A)  # 1 thinking token: below the minimum, the phrase is due anyway
    assert state.end_attempt() == WAIT
    assert state.extension_signals == [None]  # the minimum's extension, not the policy's
    state.note_top1(0.0)
    state.observe(WAIT)  # forced: its step is no signal
    assert state.signal_value == 1.0
    state.note_top1(0.3)
    state.observe(B)
    assert state.end_attempt() == WAIT and state.extension_signals == [None, 0.3]


def test_replay_reads_decisions_off_forced_tokens_and_reports_signals() -> None:
    """A client's replay never re-decides: forced WAIT is an extension, forced END an end."""
    p = adaptive(0.5, max_extensions=2)
    ids = [A, WAIT, B, END, A, EOS]
    forced = [False, True, False, True, False, False]
    # Top-1 values that would decide the other way, had the replay trusted them.
    state = replay(p, ids, forced)
    assert state.inserted == 1 and state.ended_by == "policy"
    r = Replayer(p)
    r.feed(ids, forced, final=True, top1=[0.9, 1.0, 0.7, 1.0, 1.0, 1.0])
    assert r.state.inserted == 1  # 0.9 >= 0.5 would have ended it: the forced WAIT rules
    assert r.state.extension_signals == [0.9]
    assert r.state.end_signal == 0.7 and r.state.ended_by == "policy"
    assert r.state.thinking_tokens == 3


# -- bad settings, named, before any engine ------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"signal": "entropy"}, "signal"),
        ({"max_extensions": -1}, "max_extensions"),
        ({"max_extensions": True}, "max_extensions"),  # a boolean is no count
        ({"threshold": False}, "threshold"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(policy: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=f"adaptive.{field}"):
        ThinkingBudget(adaptive=policy)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=field):
        AdaptivePolicy(**policy)


def test_unknown_signal_error_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown signal 'entropy'.*min_top1"):
        AdaptivePolicy(signal="entropy")


def test_fixed_extensions_and_a_policy_exclude_each_other(tokenizer) -> None:
    with pytest.raises(ValidationError, match=r"extensions \(2\) and adaptive"):
        ThinkingBudget(extensions=2, adaptive={})  # type: ignore[arg-type]
    budget = ThinkingBudget(adaptive={})  # type: ignore[arg-type]
    # A policy may insert phrases, so its plan marks forced tokens as extensions' plans do.
    assert budget.adaptive == AdaptivePolicy()
    assert PlanBuilder(tokenizer).plan_for(budget).needs_extensions


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"adaptive_signal": "entropy", "adaptive_threshold": 0.5, "adaptive_max": 1}, "signal"),
        ({"adaptive_signal": "min_top1", "adaptive_threshold": 2, "adaptive_max": 1}, "threshold"),
        ({"adaptive_signal": "min_top1", "adaptive_threshold": "x"}, "adaptive_threshold"),
        ({"adaptive_signal": "min_top1", "adaptive_max": -1}, "adaptive_max"),
        ({"adaptive_signal": 3}, "adaptive_signal"),
        ({"adaptive_signal": "min_top1", "adaptive_max": 1, "extensions": 1}, "extensions"),
    ],
)
def test_the_wire_format_refuses_bad_policies(args: dict, field: str) -> None:
    wire = {**plan().to_extra_args(), **args}
    with pytest.raises(ValueError, match=field):
        ForcingPlan.from_extra_args(wire)
    with pytest.raises(ValueError, match=field):
        BudgetForcingLogitsProcessor.validate_params(
            SamplingParams(extra_args={EXTRA_ARGS_KEY: wire})
        )


def test_the_wire_format_round_trips_a_policy() -> None:
    p = adaptive(0.45, max_extensions=3, signal="mean_top1")
    assert ForcingPlan.from_extra_args(p.to_json()) == p
    assert "adaptive_signal" not in plan().to_extra_args()  # old servers see no new keys


ADAPTIVE_PLANS = [
    adaptive(0.3),
    adaptive(0.6, max_extensions=3),
    adaptive(0.5, max_extensions=2, signal="mean_top1"),
    plan(min_thinking=6, adaptive_signal="min_top1", adaptive_threshold=0.4, adaptive_max=3),
    plan(max_thinking=20, adaptive_signal="min_top1", adaptive_threshold=0.9, adaptive_max=5),
    plan(extensions=1),  # a fixed budget among them
]


def decode(decide_on_device: bool, seed: int) -> list[tuple[object, ...]]:
    """Greedy decoding over random logits (sharp or flat rows, frequent attempts to stop)."""
    proc = processor()
    proc.decide_on_device = decide_on_device
    outs: list[list[int]] = [[] for _ in ADAPTIVE_PLANS]
    added = [(i, params(p), None, outs[i]) for i, p in enumerate(ADAPTIVE_PLANS)]
    proc.update_state(BatchUpdate(batch_size=len(added), removed=[], added=added, moved=[]))
    gen = torch.Generator().manual_seed(seed)
    done = [False] * len(ADAPTIVE_PLANS)
    forced: list[list[bool]] = [[] for _ in ADAPTIVE_PLANS]
    for _ in range(60):
        logits = torch.randn(len(ADAPTIVE_PLANS), V, generator=gen)
        tries = torch.rand(len(ADAPTIVE_PLANS), generator=gen)
        sharp = torch.rand(len(ADAPTIVE_PLANS), generator=gen) < 0.6
        logits[sharp, A] += 6.0  # confident steps; the others are nearly flat
        logits[tries < 0.3, END] += 9.0
        logits[(tries > 0.3) & (tries < 0.35), EOS] += 9.0
        out = proc.apply(logits)
        sampled = out.argmax(dim=-1).tolist()
        proc.update_state(None)
        for i, token in enumerate(sampled):
            if not done[i]:
                outs[i].append(token)
                forced[i].append(forced_token(out[i]) is not None)  # log-probability 0
                done[i] = token == EOS
    for request in proc.requests.values():
        BudgetForcingLogitsProcessor._catch_up(request)
    for i, p in enumerate(ADAPTIVE_PLANS):
        # What a client makes of the output: the same decisions, read off the forced tokens.
        s, r = proc.requests[i].state, replay(p, outs[i], forced[i])
        assert (r.inserted, r.ended_by, r.thinking_tokens) == (
            s.inserted,
            s.ended_by,
            s.thinking_tokens,
        )
        assert r.extension_positions == s.extension_positions
    return [
        (
            tuple(outs[i]),
            s.inserted,
            tuple(s.extension_signals),
            s.ended_by,
            s.end_signal,
            s.thinking_tokens,
        )
        for i, s in ((i, proc.requests[i].state) for i in range(len(ADAPTIVE_PLANS)))
    ]


@pytest.mark.parametrize("seed", range(6))
def test_device_decisions_follow_the_policy_exactly_as_the_host_does(seed: int) -> None:
    host = decode(decide_on_device=False, seed=seed)
    device = decode(decide_on_device=True, seed=seed)
    assert device == host
    # The policy really decided: some attempts extended on a signal, some ended on one.
    assert any(any(v is not None for v in s[2]) for s in host)


def test_over_many_runs_the_policy_both_extends_and_ends() -> None:
    ended = {s[3] for seed in range(6) for s in decode(False, seed)}
    assert {"policy", "model"} <= ended
