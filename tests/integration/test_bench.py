"""Every benchmark runs end to end on a tiny configuration, so ``python -m bench`` never rots.

They reuse the session's engine (the ``generator`` fixture); only ``cap`` starts one more,
small engine, because vLLM's own thinking budget needs a reasoning parser at engine start.
Speed is not asserted (a shared 2-core machine is too noisy); what is asserted is that every
row is there, every ratio is a positive finite number, and both sides did the same work.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``bench`` lives beside ``src``, not inside the package
    sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    adapters,
    adaptive,
    breakdown,
    cap,
    extensions,
    overhead,
    processor,
    samples,
    scaling,
)
from bench.__main__ import config_from, parse_args  # noqa: E402
from bench.common import BenchConfig, PeakRSS, measure  # noqa: E402
from bench.common import questions as bench_questions  # noqa: E402
from bench.report import Report, Row, Timing, render  # noqa: E402

from conftest import ENGINE_ARGS, TOY  # noqa: E402

TINY = BenchConfig.tiny()


def tokens(side: str) -> list[int]:
    return [int(n) for n in side.split(" / ")]


def check_report(report: Report, labels: list[str], same_tokens: bool = True) -> None:
    """Every expected row, sane ratios, both sides generated the same number of tokens."""
    assert [row.label for row in report.rows] == labels
    for row in report.rows:
        assert math.isfinite(row.ratio) and row.ratio > 0, row.label
        assert math.isfinite(row.cpu_ratio) and row.cpu_ratio > 0, row.label
        assert len(row.ours.seconds) == TINY.repeats == len(row.other.seconds)
        assert row.ours.tokens > 0 and row.other.tokens > 0, row.label
        if same_tokens:
            assert row.ours.tokens == row.other.tokens, row.label
            assert tokens(row.extra["tokens"]) == [row.ours.tokens, row.other.tokens]
    console = Console(record=True, width=200)
    render(report, console)
    text = console.export_text()
    for label in labels:
        assert label in text
    report.to_json()  # serialisable for --json


# -- without the engine ---------------------------------------------------------------------


def test_ratio_is_time_of_ours_over_the_other_and_targets_are_upper_bounds() -> None:
    row = Row("x", Timing("ours", [3.0, 1.0, 2.0]), Timing("other", [4.0, 4.0, 4.0]), 0.5)
    assert row.ratio == pytest.approx(0.5)
    assert row.met is True
    assert Row("y", row.other, row.ours, 1.5).met is False  # 2.0 > 1.5
    assert Row("z", row.ours, row.other).met is None


def test_paired_ratios_compare_the_runs_of_one_round() -> None:
    ours = Timing("ours", [1.0, 2.0, 3.0, 4.0, 5.0])
    other = Timing("other", [2.0, 2.0, 2.0, 2.0, 2.0])
    row = Row("x", ours, other)
    assert row.paired_ratios == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert row.paired_range == pytest.approx((1.0, 2.0))  # quartiles, inclusive
    assert Row("y", Timing("a", [1.0, 3.0]), Timing("b", [2.0, 2.0])).paired_range == (0.5, 1.5)
    assert Row("z", ours, Timing("c", [1.0])).paired_ratios == []  # not from one measure()


def test_measure_interleaves_and_rotates_the_order() -> None:
    calls: list[str] = []

    def make(name: str) -> Any:
        return lambda: calls.append(name) or 7

    timings = measure([("a", make("a")), ("b", make("b"))], repeats=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a"]
    assert timings["a"].tokens == 7 and len(timings["b"].seconds) == 2


def test_peak_rss_sees_this_process() -> None:
    with PeakRSS() as sampler:
        blob = bytearray(64 * 2**20)
    del blob
    assert sampler.peak_mib > 64


def test_cli_quick_config_and_overrides() -> None:
    assert config_from(parse_args(["overhead", "--quick"])) == TINY
    cfg = config_from(parse_args(["all", "--batch-size", "8", "--repeats", "2"]))
    assert (cfg.batch_size, cfg.repeats, cfg.quick) == (8, 2, False)
    with pytest.raises(SystemExit):
        parse_args(["nonsense"])


def test_processor_runs_without_an_engine_and_forces() -> None:
    """The engine-free comparison: the processor's own time per step beside vLLM's
    min-tokens processor, on a decode where the budget really forced tokens."""
    report = processor.run(TINY)
    assert [row.label for row in report.rows] == ["batch 2"]
    (row,) = report.rows
    assert row.ours.tokens == row.other.tokens == 2 * 12  # 2 rows, 12 steps each
    assert len(row.ours.seconds) == TINY.repeats == len(row.other.seconds)
    assert math.isfinite(row.ratio)
    # The tiny budget caps the thinking at 8 tokens and inserts nothing. In the seeded logits
    # row 0 tries to stop at its second step (its own end is kept, so its tokens are plain
    # vLLM's); row 1 never does, and the cap forces the end delimiter at its ninth token.
    assert report.data["rows_changed"] == {2: 1}
    assert config_from(parse_args(["processor", "--quick"])) == TINY
    render(report, Console(record=True, width=200))


# -- on the session engine ------------------------------------------------------------------


@pytest.mark.engine
def test_overhead(generator: Any) -> None:
    report = overhead.run(generator, TINY)
    check_report(
        report,
        [
            "single-pass vs plain vLLM (final only)",
            "single-pass vs plain vLLM (streamed deltas)",
        ],
    )
    final_only, deltas = report.rows
    fastest, other = sorted(report.rows, key=lambda row: row.other.median)
    assert fastest.target == overhead.FASTEST_TARGET  # against the faster plain mode
    assert other.target == (overhead.TARGET if other is final_only else None)
    assert f"fastest plain mode in this run: {fastest.label.split('plain vLLM ')[1]}" in (
        report.notes
    )
    assert deltas.ours is final_only.ours  # one timing of ours against both
    assert len(report.data["counts"]) == TINY.batch_size
    assert all(m > 0 for m in report.data["memory_mib"].values())


@pytest.mark.engine
def test_extensions(generator: Any) -> None:
    report = extensions.run(generator, TINY)
    labels = [
        f"{k} extensions: single-pass vs {other}"
        for k in extensions.extension_counts(TINY)
        for other in ("rounds", "naive loop")
    ]
    check_report(report, labels, same_tokens=False)
    for k in extensions.extension_counts(TINY):
        # Rounds works on token ids: greedy float32 must give the single pass's exact tokens.
        rounds = report.row(f"{k} extensions: single-pass vs rounds")
        assert rounds.ours.tokens == rounds.other.tokens


@pytest.mark.engine
def test_adaptive(generator: Any) -> None:
    report = adaptive.run(generator, TINY)
    labels = [
        "default adaptive vs its own Waits, fixed: ms per token",
        "default adaptive vs 1 extension: ms per token",
        f"adaptive exit {adaptive.EXIT_AFTER} vs its own Waits and caps: ms per token",
    ]
    check_report(report, labels, same_tokens=False)
    same, default, exit_row = report.rows
    assert (same.target, default.target, exit_row.target) == (
        adaptive.TARGET,
        None,
        adaptive.TARGET,
    )
    assert same.ours.tokens == same.other.tokens  # the same Waits: the same tokens
    # Extensions and caps where the policy extended and exited: the same tokens again.
    assert exit_row.ours.tokens == exit_row.other.tokens
    assert exit_row.extra["exits"] == f"1 of {TINY.batch_size}"  # the hard question's
    assert tokens(default.extra["tokens"]) == [default.ours.tokens, default.other.tokens]
    # The first two held-out questions are one easy (no Wait from the policy) and one hard.
    assert default.ours.tokens < default.other.tokens


@pytest.mark.engine
@pytest.mark.parametrize("conclusion", [None, "so"])
def test_the_fixed_replica_of_an_adaptive_run_makes_its_tokens(
    generator: Any, conclusion: str | None
) -> None:
    """The exit row's fixed side: per prompt, the same budget with the policy's extensions
    and a cap at its exit, which forces the same conclusion at the same count."""
    from s1_integrations import ThinkingBudget
    from s1_integrations.core.adaptive import AdaptivePolicy

    prompts = bench_questions(4)
    policy = AdaptivePolicy(exit_after=adaptive.EXIT_AFTER)
    b = ThinkingBudget(adaptive=policy, conclusion=conclusion, max_answer_tokens=8)
    done = generator.generate(prompts, b)
    assert {r.thinking_ended_by for r in done} == {"early_exit", "policy"}  # some exit, some end
    assert any(r.thinking_ended_by == "early_exit" and r.extensions for r in done)  # after a Wait
    fixed = [adaptive.replica(r, b) for r in done]
    assert all(f.adaptive is None and f.conclusion == conclusion for f in fixed)
    again = generator.generate(prompts, fixed)
    assert [r.token_ids for r in again] == [r.token_ids for r in done]
    assert [r.thinking_tokens for r in again] == [r.thinking_tokens for r in done]


def test_adaptive_compares_seconds_per_token() -> None:
    t = adaptive.per_token(Timing("x", [2.0, 4.0], tokens=4000, cpu_seconds=[8.0]))
    assert (t.seconds, t.cpu_seconds, t.tokens) == ([0.5, 1.0], [2.0], 4000)


@pytest.mark.engine
def test_adapters(generator: Any) -> None:
    report = adapters.run(generator, TINY)
    n = TINY.adapter_abatch
    labels = [
        "LangChain abatch vs generator agenerate",
        "LangChain batch vs generator generate",
    ]
    if not any("LlamaIndex skipped" in note for note in report.notes):
        labels += [
            "LlamaIndex acomplete x N vs generator agenerate",
            "LlamaIndex achat x N vs generator agenerate",
        ]
    labels.append(f"LangChain abatch of {n} vs LangChain ainvoke of 1")
    check_report(report, labels, same_tokens=False)
    for row in report.rows[:-1]:  # the adapters generate exactly what the generator does
        assert row.ours.tokens == row.other.tokens, row.label
    assert all(r.target == adapters.TARGET for r in report.rows[:-1])


@pytest.mark.engine
def test_scaling(generator: Any) -> None:
    report = scaling.run(generator, TINY)
    labels = [
        *(f"batch {b}: " for b in TINY.scaling_batches),
        *(f"context {n}: " for n in TINY.scaling_contexts),
        *(f"{k} extensions: " for k in TINY.scaling_extensions),
    ]
    check_report(report, [f"{label}single-pass vs plain vLLM" for label in labels])
    assert all(r.ours.tokens_per_s > 0 and r.other.tokens_per_s > 0 for r in report.rows)
    # The context rows' prompts hold that much context before the very same questions: the
    # same growth for every question, the tokens cut plus the system turn around them (34
    # tokens on the toy: its wrapper and "Context information is below.").
    asked = bench_questions(TINY.batch_size)
    bare = [len(it.prompt_ids) for it in generator.prepare(asked)]
    for n in TINY.scaling_contexts:
        padded = generator.prepare(scaling.with_context(generator, asked, n))
        grown = {len(it.prompt_ids) - k for it, k in zip(padded, bare, strict=True)}
        assert len(grown) == 1 and n <= min(grown) <= n + 40, grown


@pytest.mark.engine
def test_samples(generator: Any) -> None:
    report = samples.run(generator, TINY)
    others = ("2 requests at once", "2 requests in turn", "plain vLLM")
    # Greedy: every way of getting the samples decodes the very same tokens.
    plain = "plain vLLM: 2 requests vs one request with n=2"
    check_report(report, [*(f"n=2 vs {o}" for o in others), plain])
    assert "peak RSS" in report.notes[-1] and "4 single requests" in report.notes[-1]


@pytest.mark.engine
def test_breakdown(generator: Any) -> None:
    report = breakdown.run(generator, TINY)
    assert len(report.rows) == 6
    check_report(report, [r.label for r in report.rows])  # every variant: the same tokens


@pytest.mark.engine
def test_cap_needs_a_reasoning_engine(generator: Any) -> None:
    with pytest.raises(cap.NeedsReasoningConfig, match="reasoning_parser"):
        cap.run(generator, TINY)
    assert generator.generate("What is 1 + 1?")[0].token_ids  # the engine still serves


# -- on a second, small engine with vLLM's reasoning config ---------------------------------


@pytest.fixture(scope="module")
def reasoning_generator() -> Iterator[Any]:
    from s1_integrations.core.generator import BudgetForcedGenerator

    # A small explicit KV cache (it wins over any share-of-RAM setting): two engines share RAM.
    args = {**ENGINE_ARGS, "max_num_seqs": 4, "kv_cache_memory_bytes": 256 * 2**20}
    gen = BudgetForcedGenerator(TOY, **args, **cap.reasoning_engine_args())
    yield gen
    gen.close()


@pytest.mark.engine
def test_cap(reasoning_generator: Any) -> None:
    report = cap.run(reasoning_generator, TINY)
    budget = cap.budget(TINY).max_thinking_tokens
    check_report(report, [f"cap {budget}: single-pass vs vLLM thinking_token_budget"])
    assert report.rows[0].target == cap.TARGET
    # On a pure cap both implementations must produce the very same tokens.
    assert report.data["identical"] == report.data["n"] == TINY.batch_size


def test_the_gpu_script_runs_end_to_end_on_a_tiny_model(tmp_path: Path) -> None:
    """``bench/gpu.py`` (issue 6's GPU run) in its CPU smoke mode, in its own process.

    It builds its own model and engine, as it does on the device, so it cannot share the
    session's engine; the tiny model keeps it to a couple of minutes.
    """
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((tmp_path / "gpu.json").read_text())
    assert payload["variants"], "no variant ran"
    for name, variant in payload["variants"].items():
        medians = variant["medians"]
        assert variant["same_tokens"] is True, name
        assert variant["off_budget"] == [], name
        assert variant["ratio_final_only"] == pytest.approx(
            medians["single-pass"] / medians["plain vLLM (final only)"]
        )
        assert sum(variant["thinking_ended_by"].values()) == len(variant["counts"]), name


@pytest.mark.remote
def test_server_comparison_runs_through_s1_integrations_serve() -> None:
    """Starts its own ``s1-integrations serve`` (no in-process engine beside it)."""
    from bench import server

    report = server.run_server(TINY)
    check_report(report, ["budgeted vs no budget (same tokens)"])
    assert report.rows[0].target == server.TARGET == 1.10
    counts = report.data["counts"]
    assert len(counts) == 2
    # The budget caps the thinking at 8 and the answer at 16 (+ the delimiter and the forced
    # end of sequence): the server honoured the plain words, or these would be longer.
    assert all(c <= 8 + 1 + 16 + 1 for c in counts)
