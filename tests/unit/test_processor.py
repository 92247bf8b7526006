"""The vLLM logits processor, driven directly with tensors and batch updates."""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from s1_integrations.core.backend import forced_flags
from s1_integrations.core.forcing import EXTRA_ARGS_KEY, ForcingPlan, Phase, replay
from s1_integrations.engine import processor as processor_module
from s1_integrations.engine.processor import (
    PROCESSOR_FQCN,
    BudgetForcingLogitsProcessor,
    BudgetForcingPlugin,
)
from s1_integrations.engine.records import RECORD_KEY, Attempts

V = 16
END, EOS, WAIT, A, B = 10, 11, 12, 1, 2
NEG = float("-inf")


def params(temperature: float = 0.0, **plan_kw: object) -> SamplingParams:
    plan = ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT,),), **plan_kw)  # type: ignore[arg-type]
    return SamplingParams(
        temperature=temperature, seed=0, extra_args={EXTRA_ARGS_KEY: plan.to_extra_args()}
    )


def processor() -> BudgetForcingLogitsProcessor:
    return BudgetForcingLogitsProcessor(None, torch.device("cpu"), False)  # type: ignore[arg-type]


def update(added=(), removed=(), moved=(), size: int = 4) -> BatchUpdate:
    return BatchUpdate(batch_size=size, removed=list(removed), added=list(added), moved=list(moved))


def logits_preferring(*tokens: int, rows: int = 4) -> torch.Tensor:
    logits = torch.zeros(rows, V)
    for row, token in enumerate(tokens):
        logits[row, token] = 5.0
    return logits


def forced_token(row: torch.Tensor) -> int | None:
    finite = torch.isfinite(row).nonzero().flatten().tolist()
    return finite[0] if len(finite) == 1 else None


def test_requests_without_settings_are_untouched() -> None:
    proc = processor()
    out: list[int] = []
    proc.update_state(update(added=[(0, SamplingParams(), None, out)]))
    logits = logits_preferring(END)
    assert torch.equal(proc.apply(logits.clone()), logits)
    assert proc.requests == {}


def test_cap_zero_forces_end_then_answer_free() -> None:
    proc = processor()
    out: list[int] = []
    proc.update_state(update(added=[(0, params(max_thinking=0), None, out)]))
    assert forced_token(proc.apply(logits_preferring(A))[0]) == END
    out.append(END)
    proc.update_state(None)
    row = proc.apply(logits_preferring(A))[0]
    assert forced_token(row) is None and row[A] == 5.0


def test_greedy_attempt_below_min_is_replaced_by_wait() -> None:
    proc = processor()
    out: list[int] = []
    proc.update_state(update(added=[(0, params(min_thinking=3), None, out)]))
    assert forced_token(proc.apply(logits_preferring(END))[0]) == WAIT
    out.append(WAIT)
    proc.update_state(None)
    row = proc.apply(logits_preferring(A))[0]
    # not an attempt: greedy decoding keeps the argmax, so the row is left as it was
    assert forced_token(row) is None and torch.equal(row, logits_preferring(A)[0])
    out.extend([A, A])
    proc.update_state(None)
    # three thinking tokens now: the model may stop, and the end delimiter is forced
    assert forced_token(proc.apply(logits_preferring(EOS))[0]) == END


def greedy_step(proc: BudgetForcingLogitsProcessor, outs: list[list[int]], prefer: list[int]):
    """One engine step: rows prefer the given tokens; what the processor leaves is sampled."""
    proc.update_state(None)
    sampled = proc.apply(logits_preferring(*prefer, rows=len(outs))).argmax(dim=-1).tolist()
    for out, token in zip(outs, sampled, strict=True):
        out.append(token)


def test_the_quiet_lane_counts_exactly_to_the_cap_and_settles_before_an_attempt() -> None:
    """Rows that only think ordinary tokens are merely counted between steps (the quiet
    lane); the cap must still fall on its exact token, and an attempt after a counted stretch
    must see every token counted (its extension position, its minimum)."""
    proc = processor()
    outs: list[list[int]] = [[], []]
    capped = params(max_thinking=6)
    extended = params(min_thinking=5, extensions=1, max_thinking=40)
    extended.extra_args[RECORD_KEY] = "r1"  # type: ignore[index]
    proc.update_state(
        update(added=[(0, capped, None, outs[0]), (1, extended, None, outs[1])], size=2)
    )
    for _ in range(4):  # four ordinary tokens each: after the first, only counted
        greedy_step(proc, outs, [A, A])
    assert proc.requests[0].counted == 3 and proc.requests[1].counted == 3
    greedy_step(proc, outs, [A, END])  # row 1 tries to stop at 4 tokens, below its minimum
    assert outs[1] == [A, A, A, A, WAIT]
    greedy_step(proc, outs, [A, A])
    greedy_step(proc, outs, [A, A])  # row 0's sixth token: the cap is due at the next
    greedy_step(proc, outs, [A, END])  # row 1 at 7 tokens may stop: its end is kept
    assert outs[0] == [A] * 6 + [END, A]  # and row 0 answers
    assert outs[1] == [A, A, A, A, WAIT, A, A, END]
    for request in proc.requests.values():
        BudgetForcingLogitsProcessor._catch_up(request)
    first, second = (proc.requests[i].state for i in (0, 1))
    assert (first.thinking_tokens, first.ended_by, first.answer_tokens) == (6, "budget", 1)
    assert (second.thinking_tokens, second.extension_positions) == (7, [4])
    assert second.ended_by == "model" and second.position == 8
    assert proc.take_records(["r1"]) == {"r1": [(4, 1, None, False), (7, 1, None, False)]}


def test_the_quiet_lane_counts_the_answer_to_its_cap_and_keeps_its_bans() -> None:
    """Answering rows are only counted too, greedy or sampled (they decide nothing): the
    answer cap's end of sequence must still fall on its exact token, the delimiters stay
    banned at every counted step, and the model's own end of sequence ends the request."""
    proc = processor()
    outs: list[list[int]] = [[], []]
    capped = params(max_thinking=0, max_answer=4, ban_answer=((END,),))
    uncapped = params(temperature=1.0, max_thinking=0, ban_answer=((END,),))
    proc.update_state(
        update(added=[(0, capped, None, outs[0]), (1, uncapped, None, outs[1])], size=2)
    )
    greedy_step(proc, outs, [A, A])  # the cap of 0 forces the end delimiter at once
    assert outs == [[END], [END]]
    for step in range(4):  # both answer; each prefers the end delimiter, banned in the answer
        proc.update_state(None)
        logits = proc.apply(logits_preferring(END, END, rows=2))
        assert logits[:, END].tolist() == [NEG, NEG]
        assert forced_token(logits[0]) is None  # fewer than 4 answer tokens so far
        for out, token in zip(outs, logits.argmax(dim=-1).tolist(), strict=True):
            out.append(token)
        if step == 3:  # the end delimiter went to the state; the three answer tokens since,
            assert [proc.requests[i].counted for i in (0, 1)] == [3, 3]  # only counted
    greedy_step(proc, outs, [A, EOS])  # row 0 at 4 answer tokens; row 1 ends by itself
    assert outs[0] == [END, 0, 0, 0, 0, EOS] and outs[1] == [END, 0, 0, 0, 0, EOS]
    greedy_step(proc, outs, [A, A])
    first, second = (proc.requests[i].state for i in (0, 1))
    assert (first.answer_tokens, first.answer_capped, first.phase) == (4, True, Phase.FINISHED)
    assert (second.answer_tokens, second.answer_capped, second.phase) == (
        4,
        False,
        Phase.FINISHED,
    )


def test_a_soft_landing_plan_counts_its_answer_in_the_quiet_lane_too() -> None:
    """A soft landing watches the thinking token by token (no lane there), but its answer
    has nothing to watch: counted, with the answer cap on its exact token."""
    proc = processor()
    outs: list[list[int]] = [[]]
    landing = params(max_thinking=3, landing=2, breaks=(B,), max_answer=3)
    proc.update_state(update(added=[(0, landing, None, outs[0])], size=1))
    for _ in range(4):
        greedy_step(proc, outs, [A])
        assert proc.requests[0].counted == 0  # thinking: every token goes to the state
    assert outs[0] == [A, A, A, END]
    greedy_step(proc, outs, [A])  # the end delimiter observed: the answer's lane opens
    greedy_step(proc, outs, [A])
    greedy_step(proc, outs, [A])
    assert proc.requests[0].counted == 2
    greedy_step(proc, outs, [A])
    assert outs[0] == [A, A, A, END, A, A, A, EOS]  # three answer tokens, then the cap's EOS


def test_a_record_is_taken_while_its_request_runs_only_once_its_thinking_has_ended() -> None:
    """An attempt can be replaced only while the thinking lasts: from the first answering
    step the record is complete (sealed) and handed over with a call that names the request
    as still running; before that, such a call leaves it where it is."""
    proc = processor()
    outs: list[list[int]] = [[]]
    recorded = params(min_thinking=2, max_thinking=9)
    recorded.extra_args[RECORD_KEY] = "r"  # type: ignore[index]
    proc.update_state(update(added=[(0, recorded, None, outs[0])], size=1))
    greedy_step(proc, outs, [END])  # below the minimum: replaced by Wait
    greedy_step(proc, outs, [A])
    greedy_step(proc, outs, [END])  # at the minimum: the end is kept, still an attempt
    assert outs[0] == [WAIT, A, END]
    assert proc.take_records([], ["r"]) == {}  # the end not yet seen: still thinking
    greedy_step(proc, outs, [A])  # the first answering step
    records = {"r": [(0, 1, None, False), (2, 1, None, False)]}
    assert proc.take_records([], ["r"]) == records
    assert proc.take_records(["r"], ["r"]) == {}  # taken once


def test_state_follows_moves_and_swaps() -> None:
    proc = processor()
    outs: list[list[int]] = [[], [], []]
    proc.update_state(
        update(
            added=[
                (0, params(max_thinking=0), None, outs[0]),
                (1, SamplingParams(), None, outs[1]),
                (2, params(min_thinking=5), None, outs[2]),
            ]
        )
    )
    proc.update_state(update(moved=[(0, 2, MoveDirectionality.SWAP)]))
    logits = proc.apply(logits_preferring(END, END, END))
    assert forced_token(logits[0]) == WAIT  # the min-5 request now lives at row 0
    assert forced_token(logits[2]) == END  # the cap-0 request at row 2
    assert forced_token(logits[1]) is None
    proc.update_state(update(removed=[1], moved=[(2, 1, MoveDirectionality.UNIDIRECTIONAL)]))
    assert set(proc.requests) == {0, 1}
    assert proc.requests[1].state.plan.max_thinking == 0


def test_removal_forgets_the_request() -> None:
    proc = processor()
    proc.update_state(update(added=[(0, params(extensions=1), None, [])]))
    proc.update_state(update(removed=[0]))
    assert proc.requests == {}


def sampled_rows(logits: torch.Tensor, trials: int, **cut: float) -> Iterator[torch.Tensor]:
    """The processed row of one sampled request with one extension (and the ``cut``: top_k,
    top_p, min_p), seeded 0 to ``trials - 1``, each on a fresh processor."""
    for seed in range(trials):
        proc = processor()
        p = params(temperature=1.0, extensions=1)
        p.seed = seed
        for name, value in cut.items():
            setattr(p, name, value)
        proc.update_state(update(added=[(0, p, None, [])], size=1))
        yield proc.apply(logits.clone())[0]


def test_sampling_extends_with_the_models_stop_probability() -> None:
    """Under sampling, an attempt happens with the probability of END+EOS at the temperature."""
    attempts = 0
    trials = 400
    logits = torch.zeros(1, V)
    logits[0, END] = 2.0  # p(END) = e^2 / (e^2 + 15) ~ 0.33
    for row in sampled_rows(logits, trials):
        if forced_token(row) == WAIT:
            attempts += 1
        else:
            assert row[END] == NEG and row[EOS] == NEG
    expected = torch.softmax(torch.tensor([2.0] + [0.0] * (V - 1)), 0)[0].item()
    assert abs(attempts / trials - expected) < 0.08


def test_validate_params_rejects_bad_settings() -> None:
    bad = SamplingParams(extra_args={EXTRA_ARGS_KEY: {"end": [], "eos": [1]}})
    with pytest.raises(ValueError, match="end"):
        BudgetForcingLogitsProcessor.validate_params(bad)
    multi = ForcingPlan(end=(3, 4), eos=(EOS,), phrases=((WAIT,),), extensions=1)
    with pytest.raises(ValueError, match="rounds"):
        BudgetForcingLogitsProcessor.validate_params(
            SamplingParams(extra_args={EXTRA_ARGS_KEY: multi.to_extra_args()})
        )
    BudgetForcingLogitsProcessor.validate_params(SamplingParams())
    endless = params(max_answer=4)
    endless.ignore_eos = True
    with pytest.raises(ValueError, match="ignore_eos: the budget in s1_budget ends the answer"):
        BudgetForcingLogitsProcessor.validate_params(endless)
    BudgetForcingLogitsProcessor.validate_params(SamplingParams(ignore_eos=True))  # no budget


def test_validate_params_refuses_a_max_tokens_that_cuts_the_minimum() -> None:
    """The minimum (4), the end delimiter (1) and one answer token need 6 tokens: with
    fewer, vLLM would end the request inside the thinking and the minimum would be skipped."""
    short = params(min_thinking=4, extensions=1)
    short.max_tokens = 5
    with pytest.raises(
        ValueError, match=r"max_tokens: 5 tokens cannot hold .*min_thinking_tokens=4"
    ):
        BudgetForcingLogitsProcessor.validate_params(short)
    short.max_tokens = 6
    BudgetForcingLogitsProcessor.validate_params(short)
    capped = params(max_thinking=40)  # no minimum: a short request is the caller's choice
    capped.max_tokens = 2
    BudgetForcingLogitsProcessor.validate_params(capped)


def test_a_mixed_batch_decides_each_row_by_its_own_rules() -> None:
    """Greedy and sampled rows, and plans with different stopping tokens, in one step."""
    proc = processor()
    multi = ForcingPlan(end=(3, 4), eos=(EOS,), phrases=((WAIT,),))  # only EOS is an attempt
    sampled = params(temperature=1.0, extensions=1)
    proc.update_state(
        update(
            added=[
                (0, params(min_thinking=3), None, []),
                (1, sampled, None, []),
                # Sampled too (temperature 1), seeded: unseeded, its 0.6% chance of an EOS
                # attempt made this test fail now and then.
                (
                    2,
                    SamplingParams(seed=0, extra_args={EXTRA_ARGS_KEY: multi.to_extra_args()}),
                    None,
                    [],
                ),
                (3, params(extensions=1), None, []),
            ]
        )
    )
    logits = logits_preferring(END, A, A, A)
    logits[1, END] = 50.0  # the sampled row all but certainly tries to stop
    out = proc.apply(logits)
    assert forced_token(out[0]) == WAIT  # greedy attempt below the minimum
    assert forced_token(out[1]) == WAIT  # sampled attempt, extension due
    assert out[2, EOS] == NEG and out[2, END] == 0.0  # END alone is no attempt for this plan
    assert torch.equal(out[3], logits_preferring(A)[0])  # greedy, no attempt: untouched


# -- asynchronous scheduling and the entry-point plugin ------------------------------------


def vllm_config(*, async_scheduling: bool, named: tuple[object, ...] = ()) -> Any:
    """The two settings the processors read from vLLM's configuration."""
    return SimpleNamespace(
        scheduler_config=SimpleNamespace(async_scheduling=async_scheduling),
        model_config=SimpleNamespace(logits_processors=list(named) or None),
    )


def test_tokens_are_read_at_sampling_time_as_asynchronous_scheduling_fills_them_in() -> None:
    """vLLM appends a -1 placeholder for the token in flight and writes the real id just before
    sampling: the second token of a forced phrase must follow the first, not repeat it."""
    proc = processor()
    out: list[int] = []
    plan = ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT, B),), extensions=1)
    p = SamplingParams(temperature=0.0, extra_args={EXTRA_ARGS_KEY: plan.to_extra_args()})
    proc.update_state(update(added=[(0, p, None, out)], size=1))
    assert forced_token(proc.apply(logits_preferring(END, rows=1))[0]) == WAIT
    out.append(-1)  # the worker's bookkeeping after the step
    proc.update_state(None)  # the next step's batch update: the token is not known yet
    out[-1] = WAIT  # vLLM's repair, right before sampling
    assert forced_token(proc.apply(logits_preferring(A, rows=1))[0]) == B
    out.append(-1)
    proc.update_state(None)
    out[-1] = B
    logits = logits_preferring(A, rows=1)
    assert torch.equal(proc.apply(logits.clone()), logits)  # free thinking again
    assert proc.requests[0].state.extension_positions == [0]
    assert proc.requests[0].state.thinking_tokens == 2


def test_a_placeholder_never_filled_in_leaves_the_row_alone_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = processor()
    out: list[int] = []
    proc.update_state(update(added=[(0, params(max_thinking=1), None, out)], size=1))
    out.append(-1)
    logits = logits_preferring(A, rows=1)
    with caplog.at_level("ERROR", logger="s1_integrations.engine.processor"):
        assert torch.equal(proc.apply(logits.clone()), logits)
        proc.apply(logits.clone())
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1  # once, not every step
    assert "--logits-processors" in errors[0].getMessage()
    out[-1] = A  # once the token is known, the cap applies
    assert forced_token(proc.apply(logits_preferring(A, rows=1))[0]) == END


def test_a_placeholder_is_never_counted_as_a_thinking_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The quiet lane (a row it may only count) must not count vLLM's placeholder either."""
    proc = processor()
    out: list[int] = []
    proc.update_state(update(added=[(0, params(max_thinking=3), None, out)], size=1))
    proc.apply(logits_preferring(A, rows=1))  # the lane is open for this row now
    assert proc.requests[0].quiet_left == 2
    out.append(-1)
    with caplog.at_level("ERROR", logger="s1_integrations.engine.processor"):
        proc.apply(logits_preferring(A, rows=1))
    assert "--logits-processors" in caplog.records[-1].getMessage()
    out[-1] = A
    for _ in range(2):
        assert forced_token(proc.apply(logits_preferring(A, rows=1))[0]) is None
        out.append(A)
    assert forced_token(proc.apply(logits_preferring(A, rows=1))[0]) == END  # after 3 exactly


@pytest.mark.parametrize(
    ("config", "active"),
    [
        (vllm_config(async_scheduling=False), True),  # stock server on the CPU
        (vllm_config(async_scheduling=True), False),  # stock server on a GPU: sees no tokens
        (vllm_config(async_scheduling=False, named=(PROCESSOR_FQCN,)), False),  # would run twice
        (vllm_config(async_scheduling=True, named=(BudgetForcingLogitsProcessor,)), False),
        # Another processor named: vLLM fills tokens in for every processor, the plugin's too.
        (vllm_config(async_scheduling=True, named=("other.module:Processor",)), True),
        (vllm_config(async_scheduling=False, named=("other.module:Processor",)), True),
    ],
    ids=["sync", "async", "named", "named-class", "async-other-named", "sync-other-named"],
)
def test_the_plugin_steps_aside_where_it_would_run_twice_or_see_no_tokens(
    config: Any, active: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="s1_integrations.engine.processor"):
        plugin = BudgetForcingPlugin(config, torch.device("cpu"), False)
    assert plugin.active is active
    out: list[int] = []
    plugin.update_state(update(added=[(0, params(max_thinking=0), None, out)], size=1))
    logits = logits_preferring(A, rows=1)
    result = plugin.apply(logits.clone())
    if active:
        assert forced_token(result[0]) == END
    else:
        assert plugin.requests == {}
        assert torch.equal(result, logits)
    warned = [r for r in caplog.records if "--logits-processors" in r.getMessage()]
    # Only where budgets would stop working does it warn; stepping aside for the named
    # processor is the intended set-up.
    expect_warning = not active and not config.model_config.logits_processors
    assert len(warned) == (1 if expect_warning else 0)


def test_the_processor_named_by_vllm_never_steps_aside() -> None:
    proc = BudgetForcingLogitsProcessor(
        vllm_config(async_scheduling=True, named=(PROCESSOR_FQCN,)), torch.device("cpu"), False
    )
    assert proc.active is True


# -- deciding on the device (the GPU path), driven here on the CPU ------------------------

PLANS = [
    ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT, B),), extensions=2),
    ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT,),), min_thinking=12),
    ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT,),), max_thinking=9, conclusion=(A, B)),
    ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT, A, B),), extensions=3, max_thinking=30),
    ForcingPlan(end=(END,), eos=(EOS,), max_thinking=0, max_answer=4),
    ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT,),), extensions=1, max_answer=6),
]


def decode(
    decide_on_device: bool,
    seed: int,
    delimiters: bool = False,
    records: dict | None = None,
    processed: list[torch.Tensor] | None = None,
) -> tuple[list[list[int]], list[tuple[object, ...]]]:
    """A greedy decoding loop over random logits that often try to stop, as vLLM drives it.

    Row 5 samples (temperature 1): it takes the host path in both modes, so the two runs
    must still agree on it. ``processed`` collects each step's logits as the processor
    left them.
    """
    proc = processor()
    proc.decide_on_device = decide_on_device
    outs: list[list[int]] = [[] for _ in PLANS]
    added = []
    for i, plan in enumerate(PLANS):
        temperature = 1.0 if i == 5 else 0.0
        extra: dict[str, object] = {EXTRA_ARGS_KEY: plan.to_extra_args()}
        if records is not None:
            extra[RECORD_KEY] = f"r{i}"
        p = SamplingParams(temperature=temperature, seed=i, extra_args=extra)
        added.append((i, p, None, outs[i]))
    proc.update_state(update(added=added, size=len(PLANS)))
    gen = torch.Generator().manual_seed(seed)
    done = [False] * len(PLANS)
    for _ in range(80):
        logits = torch.randn(len(PLANS), V, generator=gen)
        tries = torch.rand(len(PLANS), generator=gen)
        logits[tries < 0.3, END] += 8.0  # attempts to stop thinking
        logits[(tries > 0.3) & (tries < 0.4), EOS] += 8.0  # and to stop altogether
        logits[(tries > 0.4) & (tries < 0.5), WAIT] += 8.0  # the model's own "Wait"
        if delimiters:  # a model that would reopen (or re-close) the thinking
            logits[(tries > 0.5) & (tries < 0.7), START] += 9.0
            logits[(tries > 0.7) & (tries < 0.85), OPEN] += 9.0
            logits[(tries > 0.85), B] += 9.0
            logits[(tries < 0.3), END] += 1.0  # and keeps trying to close it, in the answer too
        result = proc.apply(logits)
        if processed is not None:
            processed.append(result.clone())
        sampled = result.argmax(dim=-1).tolist()
        proc.update_state(None)
        for i, token in enumerate(sampled):
            if not done[i]:
                outs[i].append(token)
                done[i] = token == EOS  # vLLM stops the request at end of sequence
    for request in proc.requests.values():
        BudgetForcingLogitsProcessor._catch_up(request)
    if records is not None:
        records.update(proc.take_records([f"r{i}" for i in range(len(PLANS))]))
    states = [
        (
            s.phase,
            s.thinking_tokens,
            s.answer_tokens,
            s.inserted,
            tuple(s.extension_positions),
            s.ended_by,
            s.thinking_end,
        )
        for s in (proc.requests[i].state for i in range(len(PLANS)))
    ]
    return outs, states


@pytest.mark.parametrize("seed", range(8))
def test_deciding_on_the_device_forces_exactly_what_deciding_on_the_host_does(seed: int) -> None:
    host_outs, host_states = decode(decide_on_device=False, seed=seed)
    device_outs, device_states = decode(decide_on_device=True, seed=seed)
    assert device_outs == host_outs
    assert device_states == host_states
    # The loop really exercised forcing: phrases were inserted and blocks ended both ways.
    assert sum(s[3] for s in host_states) > 0
    assert {s[5] for s in host_states} >= {"budget"}


@pytest.mark.parametrize("seed", range(6))
def test_numpy_on_host_logits_masks_and_forces_exactly_as_torch_indexing_does(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Host logits are edited through a NumPy view; elsewhere (a GPU, bfloat16) through torch.
    through_numpy: list[torch.Tensor] = []
    numpy_run = decode(False, seed, delimiters=True, processed=through_numpy)
    monkeypatch.setattr(processor_module, "_host_view", lambda logits: None)
    through_torch: list[torch.Tensor] = []
    torch_run = decode(False, seed, delimiters=True, processed=through_torch)
    assert numpy_run == torch_run
    assert len(through_numpy) == len(through_torch) == 80
    for a, b in zip(through_numpy, through_torch, strict=True):
        assert torch.equal(a, b)  # every mask (-inf) and forced token (0) in the same place
    assert sum(s[3] for s in numpy_run[1]) > 0  # phrases were inserted


def test_the_numpy_view_shares_host_memory_and_leaves_other_dtypes_to_torch() -> None:
    logits = torch.zeros(2, V)
    view = processor_module._host_view(logits)
    assert view is not None
    view[1, 3] = NEG
    assert logits[1, 3].item() == NEG
    assert processor_module._host_view(torch.zeros(2, V, dtype=torch.bfloat16)) is None


@pytest.mark.parametrize("seed", range(8))
def test_records_replay_every_row_exactly_as_the_processor_forced_it(seed: int) -> None:
    """The spans recorded in place of attempts are all a replay needs from the engine: with
    them, the ids alone give each row's own state, though the model also writes "Wait"."""
    host: dict[str, Attempts] = {}
    device: dict[str, Attempts] = {}
    outs, states = decode(decide_on_device=False, seed=seed, records=host)
    assert decode(decide_on_device=True, seed=seed, records=device)[0] == outs
    assert device == host and set(host) == {f"r{i}" for i in range(len(PLANS))}
    own_waits = 0
    for i, (plan, out) in enumerate(zip(PLANS, outs, strict=True)):
        replayed = replay(plan, out, forced_flags(len(out), host[f"r{i}"]))
        assert (
            replayed.phase,
            replayed.thinking_tokens,
            replayed.answer_tokens,
            replayed.inserted,
            tuple(replayed.extension_positions),
            replayed.ended_by,
            replayed.thinking_end,
        ) == states[i]
        own_waits += out.count(WAIT) - replayed.inserted
    assert own_waits > 0  # the model's own phrases were there to be told apart


def test_records_are_kept_only_where_asked_taken_once_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = processor()
    plan = ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT, B),), extensions=1)
    extra = {EXTRA_ARGS_KEY: plan.to_extra_args()}
    outs: list[list[int]] = [[], []]
    asked = SamplingParams(temperature=0.0, extra_args={**extra, RECORD_KEY: "mine"})
    unasked = SamplingParams(temperature=0.0, extra_args=extra)
    proc.update_state(update(added=[(0, asked, None, outs[0]), (1, unasked, None, outs[1])]))
    logits = proc.apply(logits_preferring(END, END))
    assert forced_token(logits[0]) == forced_token(logits[1]) == WAIT
    # The phrase's two tokens from output index 0; no policy, so no signal.
    assert proc.records == {"mine": [(0, 2, None, False)]}
    proc.update_state(update(removed=[0, 1]))
    assert proc.take_records(["mine", "other"]) == {
        "mine": [(0, 2, None, False)]
    }  # kept past removal
    assert proc.take_records(["mine"]) == {}  # taken once
    monkeypatch.setattr(processor_module, "MAX_RECORDS", 2)
    for k in range(3):
        named = SamplingParams(extra_args={**extra, RECORD_KEY: f"k{k}"})
        proc.update_state(update(added=[(k, named, None, [])]))
    assert list(proc.records) == ["k1", "k2"]  # the oldest, never taken back, went


def test_a_record_name_is_the_in_process_engines_own(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT,),), extensions=1)
    named = {EXTRA_ARGS_KEY: plan.to_extra_args(), RECORD_KEY: "r"}
    monkeypatch.setattr(processor_module, "accepts_records", False)  # a server's API process
    with pytest.raises(ValueError, match=f"{RECORD_KEY}: set by the in-process engine only"):
        BudgetForcingLogitsProcessor.validate_params(SamplingParams(extra_args=named))
    monkeypatch.setattr(processor_module, "accepts_records", True)
    BudgetForcingLogitsProcessor.validate_params(SamplingParams(extra_args=named))
    with pytest.raises(ValueError, match=f"{RECORD_KEY}: must be a string"):
        BudgetForcingLogitsProcessor.validate_params(
            SamplingParams(extra_args={**named, RECORD_KEY: 3})
        )


def test_on_the_device_an_attempt_is_read_back_with_the_next_token() -> None:
    proc = processor()
    proc.decide_on_device = True
    out: list[int] = []
    plan = ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT, B),), extensions=1)
    p = SamplingParams(temperature=0.0, extra_args={EXTRA_ARGS_KEY: plan.to_extra_args()})
    proc.update_state(update(added=[(0, p, None, out)], size=1))
    assert forced_token(proc.apply(logits_preferring(END, rows=1))[0]) == WAIT
    state = proc.requests[0].state
    assert state.inserted == 0  # not read back yet: nothing waited for the device
    out.append(WAIT)
    assert forced_token(proc.apply(logits_preferring(A, rows=1))[0]) == B
    assert state.inserted == 1 and state.extension_positions == [0]
    out.append(B)
    logits = logits_preferring(A, rows=1)
    assert torch.equal(proc.apply(logits.clone()), logits)  # no attempt: the row is untouched
    out.append(A)
    assert forced_token(proc.apply(logits_preferring(END, rows=1))[0]) == END  # may stop now
    out.append(END)
    proc.update_state(None)
    BudgetForcingLogitsProcessor._catch_up(proc.requests[0])
    assert state.phase is Phase.ANSWERING and state.ended_by == "model"
    assert state.thinking_tokens == 3


# -- no re-entry and the soft landing (issue 16) -------------------------------------------

START, OPEN = 13, 14  # the start delimiter; the first token of a two-token one (OPEN, B)
BANS = {"ban_thinking": ((START,), (OPEN, B)), "ban_answer": ((START,), (OPEN, B), (END,))}


def banned_params(temperature: float = 0.0, **plan_kw: object) -> SamplingParams:
    plan = ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT,),), **BANS, **plan_kw)  # type: ignore[arg-type]
    return SamplingParams(
        temperature=temperature, seed=0, extra_args={EXTRA_ARGS_KEY: plan.to_extra_args()}
    )


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_answer_can_never_write_either_delimiter(temperature: float) -> None:
    proc = processor()
    out: list[int] = []
    proc.update_state(update(added=[(0, banned_params(temperature, max_thinking=0), None, out)]))
    assert forced_token(proc.apply(logits_preferring(START))[0]) == END
    out.append(END)
    row = proc.apply(logits_preferring(START))[0]
    assert row[START] == NEG and row[END] == NEG
    assert row[A] == 0.0 and torch.isfinite(row).sum() == V - 2  # nothing else is touched
    out.append(OPEN)
    row = proc.apply(logits_preferring(B))[0]
    assert row[B] == NEG  # OPEN then B would spell the two-token delimiter
    out.append(A)
    row = proc.apply(logits_preferring(B))[0]
    assert row[B] == 5.0


def test_thinking_masks_the_start_before_it_decides_an_attempt() -> None:
    """The model's first choice is a second <think>; its second is to stop: that is an attempt."""
    proc = processor()
    out: list[int] = []
    proc.update_state(update(added=[(0, banned_params(min_thinking=3), None, out)], size=1))
    logits = logits_preferring(START, rows=1)
    logits[0, END] = 4.0
    assert forced_token(proc.apply(logits)[0]) == WAIT  # END (second best) was the attempt
    out.append(WAIT)
    logits = logits_preferring(START, rows=1)
    row = proc.apply(logits.clone())[0]
    assert row[START] == NEG and row[END] == 0.0  # the end stays the model's to choose
    assert proc.requests[0].state.inserted == 1


def test_a_soft_landing_forces_the_end_after_a_break_in_the_window() -> None:
    NL = 15
    plan = ForcingPlan(
        end=(END,),
        eos=(EOS,),
        max_thinking=6,
        landing=3,
        breaks=(NL,),
        **BANS,  # type: ignore[arg-type]
    )
    proc = processor()
    out: list[int] = []
    p = SamplingParams(temperature=0.0, extra_args={EXTRA_ARGS_KEY: plan.to_extra_args()})
    proc.update_state(update(added=[(0, p, None, out)], size=1))
    for token in [A, A, NL, A]:  # the newline at 3 is before the window (the last 3 of 6)
        assert forced_token(proc.apply(logits_preferring(token, rows=1))[0]) is None
        out.append(token)
    assert forced_token(proc.apply(logits_preferring(NL, rows=1))[0]) is None
    out.append(NL)  # at 5: inside the window
    assert forced_token(proc.apply(logits_preferring(A, rows=1))[0]) == END
    state = proc.requests[0].state
    assert state.landed and state.thinking_tokens == 5


def test_validate_params_checks_the_new_settings() -> None:
    bad = ForcingPlan(end=(END,), eos=(EOS,)).to_extra_args()
    bad["landing"] = 2
    with pytest.raises(ValueError, match="landing"):
        BudgetForcingLogitsProcessor.validate_params(
            SamplingParams(extra_args={EXTRA_ARGS_KEY: bad})
        )


BANNED_PLANS = [dataclasses.replace(plan, **BANS) for plan in PLANS]  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(4))
def test_on_the_device_and_on_the_host_the_same_delimiters_are_masked(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The random loop above, with a model that keeps trying to write the delimiters."""
    monkeypatch.setattr(sys.modules[__name__], "PLANS", BANNED_PLANS)
    host_outs, host_states = decode(decide_on_device=False, seed=seed, delimiters=True)
    device_outs, device_states = decode(decide_on_device=True, seed=seed, delimiters=True)
    assert device_outs == host_outs and device_states == host_states
    for out, state in zip(host_outs, host_states, strict=True):
        assert START not in out
        assert all(pair != (OPEN, B) for pair in itertools.pairwise(out))
        thinking_end = state[6]
        if thinking_end is not None:
            assert END not in out[thinking_end + 1 :]  # the answer never closes it again
    assert sum(s[0] is Phase.FINISHED for s in host_states) >= 3


# -- engine settings under which vLLM would skip the processor -------------------------------


def engine_config(**overrides: object) -> Any:
    base: dict[str, object] = {
        "speculative_config": None,
        "model_config": SimpleNamespace(runner_type="generate"),
        "use_v2_model_runner": False,
    }
    base.update(overrides)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    ("config", "on_tpu", "setting"),
    [
        (engine_config(speculative_config=object()), False, "speculative_config"),
        (engine_config(model_config=SimpleNamespace(runner_type="pooling")), False, "runner"),
        (engine_config(), True, "platform"),
        (engine_config(use_v2_model_runner=True), False, "VLLM_USE_V2_MODEL_RUNNER"),
    ],
    ids=["speculative", "pooling", "tpu", "model-runner-v2"],
)
def test_settings_that_skip_logits_processors_are_refused(
    config: Any, on_tpu: bool, setting: str
) -> None:
    from s1_integrations.engine.processor import (
        ProcessorSkippedError,
        refuse_config_without_processors,
    )

    with pytest.raises(ProcessorSkippedError, match=f"^{setting}: .*silently ignored") as info:
        refuse_config_without_processors(config, on_tpu=on_tpu)
    assert info.value.setting == setting
    assert isinstance(info.value, ValueError)
    refuse_config_without_processors(engine_config(), on_tpu=False)  # the usual case passes


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        ({}, 0.4),  # no truncation: the model's own 0.4
        ({"top_k": 1}, 0.0),  # END is not the top-1: vLLM would never draw it
        ({"top_k": 2}, 0.4),
        ({"top_p": 0.5}, 0.0),  # 0.6 alone covers 0.5
        ({"top_p": 0.7}, 0.4),
        ({"min_p": 0.7}, 0.0),  # 0.4 < 0.7 x 0.6
        ({"min_p": 0.5}, 0.4),
    ],
)
def test_sampling_draws_the_stop_from_the_distribution_vllm_samples(
    cut: dict[str, float], expected: float
) -> None:
    """Under top-k, top-p and min-p an attempt happens as often as vLLM's sampler, which cuts
    the distribution after the processors, would draw END: never where the cut drops it."""
    attempts = 0
    trials = 400
    logits = torch.full((1, V), NEG)
    logits[0, A], logits[0, END] = math.log(0.6), math.log(0.4)
    for row in sampled_rows(logits, trials, **cut):
        if forced_token(row) == WAIT:
            attempts += 1
        else:
            assert forced_token(row) == A  # END masked: A is all that is left
    assert abs(attempts / trials - expected) < 0.06, attempts


def test_the_stop_probability_cuts_as_vllms_sampler_does() -> None:
    """The same cut as vLLM's own top-k/top-p code, on random distributions (min-p, a
    processor of vLLM's own, is checked by the attempt rates above)."""
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    from s1_integrations.engine.processor import Truncation, stop_probability

    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits = torch.randn(1, 64, generator=generator) * 3
        k = int(torch.randint(1, 64, (1,), generator=generator))
        top_p = float(torch.rand(1, generator=generator))
        cut = apply_top_k_top_p_pytorch(logits.clone(), torch.tensor([k]), torch.tensor([top_p]))
        vllm_probs = torch.softmax(cut, dim=-1)[0]
        stops = [int(i) for i in torch.randint(0, 64, (3,), generator=generator).unique()]
        ours = stop_probability(torch.softmax(logits, -1)[0], stops, Truncation(0.0, k, top_p))
        assert ours == pytest.approx(float(vllm_probs[stops].sum()), abs=1e-5)
