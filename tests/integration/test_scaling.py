"""The budget sweep: files, consistency with per-question results, bad datasets."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from s1_integrations.core.adaptive import DEFAULT_THRESHOLD
from s1_integrations.scaling import DatasetError, exact_match, load_jsonl, run_sweep
from s1_integrations.scaling.scoring import normalise
from s1_integrations.scaling.sweep import settings_for
from s1_integrations.toy import heldout_path


def test_exact_match_normalises() -> None:
    assert normalise("\nThe answer is 532.") == "532"
    assert exact_match("The answer is 532.", "532")
    assert not exact_match("The answer is 533.", "532")
    assert exact_match("  Paris. ", "paris")


def test_shipped_heldout_set_loads() -> None:
    pairs = load_jsonl(heldout_path())
    assert len(pairs) == 200
    a, b = pairs[0].question.removeprefix("What is ").removesuffix("?").split(" + ")
    assert int(a) + int(b) == int(pairs[0].answer)


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"question": "q", "answer": "1"}', "{not json"], r":2: not valid JSON"),
        (['{"question": "q"}'], r":1: expected an object.*answer"),
        (['["q", "a"]'], r":1: expected an object"),
        ([""], "no questions"),
    ],
)
def test_malformed_dataset_names_the_line(tmp_path: Path, lines: list[str], match: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=match):
        load_jsonl(path)


@pytest.mark.engine
def test_small_sweep_writes_consistent_files(generator: Any, tmp_path: Path) -> None:
    pairs = load_jsonl(heldout_path())[:12]
    settings = settings_for([0, 8, None], [1, 2])
    out = tmp_path / "sweep"
    report = run_sweep(generator, pairs, settings, out, progress=False)

    assert sorted(p.name for p in out.iterdir()) == [
        "results.csv",
        "results.jsonl",
        "scaling.png",
        "summary.csv",
    ]
    assert not (tmp_path / "sweep.partial").exists()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(pairs) * len(settings)
    with (out / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert [s["setting"] for s in summary] == [s.label for s in settings]
    for s in summary:
        mine = [r for r in rows if r["setting"] == s["setting"]]
        assert len(mine) == len(pairs) == int(s["questions"])
        accuracy = sum(r["correct"] for r in mine) / len(mine)
        assert float(s["accuracy"]) == pytest.approx(accuracy)
        mean = sum(r["thinking_tokens"] for r in mine) / len(mine)
        assert float(s["mean_thinking_tokens"]) == pytest.approx(mean)
        capped = sum(r["thinking_ended_by"] == "budget" for r in mine) / len(mine)
        assert float(s["ended_by_cap"]) == pytest.approx(capped)
        assert (int(s["exit_after"]), float(s["ended_by_exit"])) == (0, 0.0)
    by_label = {s.setting: s for s in report.summaries}
    assert by_label["cap 0"].mean_thinking_tokens == 0
    assert by_label["cap 8"].mean_thinking_tokens <= 8
    assert by_label["2 extensions"].mean_extensions == 2
    assert by_label["no cap"].accuracy > by_label["cap 8"].accuracy
    with (out / "results.csv").open() as f:
        assert sum(1 for _ in csv.DictReader(f)) == len(rows)
    png = (out / "scaling.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


@pytest.mark.engine
def test_sample_rows_vote_and_count_the_thinking_of_every_sample(
    generator: Any, tmp_path: Path
) -> None:
    pairs = load_jsonl(heldout_path())[:8]
    settings = settings_for([], [0], [1, 4])
    report = run_sweep(generator, pairs, settings, tmp_path / "s", progress=False, seed=3)
    assert [s.setting for s in report.summaries] == ["0 extensions", "majority@1", "majority@4"]
    assert [s.kind for s in report.summaries] == ["extend", "samples", "samples"]
    rows = [r for r in report.rows if r["setting"] == "majority@4"]
    assert [r["samples"] for r in rows] == [4] * len(pairs)
    # Each row is the seeded vote of that question's 4 samples at the natural budget.
    budget = settings[2].budget(64)
    direct = generator.generate([q.question for q in pairs], budget, n=4, temperature=0.7, seed=3)
    assert [r["thinking_tokens"] for r in rows] == [d.total_thinking_tokens for d in direct]
    assert [r["answer"] for r in rows] == [d.answer.strip() for d in direct]
    four = report.summaries[2]
    assert four.mean_thinking_tokens == pytest.approx(
        sum(d.total_thinking_tokens for d in direct) / len(direct)
    )
    with pytest.raises(ValueError, match="n: 0 samples"):
        run_sweep(generator, pairs, settings_for([], [], [0]), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.engine
def test_adaptive_sweep_rows_one_per_threshold(generator: Any, tmp_path: Path) -> None:
    """The held-out set alternates easy and hard: at the default threshold the policy gives
    exactly the hard half its one Wait, and is as accurate as one Wait for all."""
    pairs = load_jsonl(heldout_path())[:8]
    settings = settings_for([], [0, 1], thresholds=[0.0, DEFAULT_THRESHOLD])
    report = run_sweep(generator, pairs, settings, tmp_path / "s", progress=False)
    with (tmp_path / "s" / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert [(s["kind"], s["setting"]) for s in summary] == [
        ("extend", "0 extensions"),
        ("extend", "1 extension"),
        ("adaptive", "adaptive 0"),
        ("adaptive", "adaptive 0.45"),
    ]
    assert float(summary[3]["value"]) == DEFAULT_THRESHOLD
    by = {s.setting: s for s in report.summaries}
    policy, one, none = by["adaptive 0.45"], by["1 extension"], by["0 extensions"]
    assert policy.mean_extensions == 0.5 and by["adaptive 0"].mean_extensions == 0
    assert policy.accuracy == one.accuracy == 1.0
    assert policy.by_difficulty["easy"] == none.by_difficulty["easy"]  # natural on easy
    assert policy.by_difficulty["hard"] == one.by_difficulty["hard"]  # one Wait on hard
    rows = [r for r in report.rows if r["setting"] == "adaptive 0.45"]
    assert all(r["policy_signal"] is not None for r in rows)
    for r in rows:  # what the policy compared with the threshold, per question
        unsure = r["policy_signal"] < DEFAULT_THRESHOLD
        assert unsure == (r["difficulty"] == "hard") == (r["extensions"] == 1)
    assert all(r["policy_signal"] is None for r in report.rows if r["kind"] == "extend")


@pytest.mark.engine
def test_adaptive_sweep_rows_per_threshold_and_early_exit(generator: Any, tmp_path: Path) -> None:
    """``exits`` adds, per threshold, the policy with an early exit: the toy writes its first
    4 thinking tokens above the default exit threshold (0.99), so the exit after 4 spends
    exactly 4 on every question; 0 keeps the row without one."""
    pairs = load_jsonl(heldout_path())[:4]
    settings = settings_for([], [], thresholds=[DEFAULT_THRESHOLD], exits=[0, 4])
    assert [s.label for s in settings] == ["adaptive 0.45", "adaptive 0.45 exit 4"]
    assert settings[1].policy is not None and settings[1].policy.exit_after == 4
    report = run_sweep(generator, pairs, settings, tmp_path / "s", progress=False)
    by = {s.setting: s for s in report.summaries}
    assert by["adaptive 0.45 exit 4"].mean_thinking_tokens == 4.0
    assert by["adaptive 0.45"].mean_thinking_tokens > 4.0
    cut = [r for r in report.rows if r["setting"] == "adaptive 0.45 exit 4"]
    assert [r["thinking_ended_by"] for r in cut] == ["early_exit"] * len(pairs)
    assert all(r["policy_signal"] is None for r in cut)  # no attempt was judged
    with (tmp_path / "s" / "summary.csv").open() as f:
        columns = {s["setting"]: (s["exit_after"], s["ended_by_exit"]) for s in csv.DictReader(f)}
    assert float(columns["adaptive 0.45 exit 4"][1]) == 1.0  # every question exited
    assert int(columns["adaptive 0.45 exit 4"][0]) == 4
    assert int(columns["adaptive 0.45"][0]) == 0
    assert float(columns["adaptive 0.45"][1]) == 0.0
    assert len(settings_for([], [], thresholds=[0.3, 0.3], exits=[4, 4])) == 1
    with pytest.raises(ValueError, match="exit_after"):
        settings_for([], [], thresholds=[DEFAULT_THRESHOLD], exits=[-1])
