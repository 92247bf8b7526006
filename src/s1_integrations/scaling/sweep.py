"""Run a dataset at several budgets and measure how accuracy scales with thinking.

Each budget setting is one engine batch over the whole dataset. Results are written to a
scratch folder first and moved into place at the end, so an interrupted sweep never leaves a
half-written result that looks complete.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from s1_integrations.core.adaptive import DEFAULT_EXIT_THRESHOLD, AdaptivePolicy
from s1_integrations.core.budget import ThinkingBudget
from s1_integrations.core.results import BudgetForcedResult, VotedResult
from s1_integrations.core.samples import check_samples
from s1_integrations.scaling.data import QAPair
from s1_integrations.scaling.scoring import Scorer, exact_match

Kind = Literal["cap", "extend", "samples", "adaptive"]
#: The answer's budget in every setting: room for "The answer is N." and then some.
MAX_ANSWER_TOKENS = 64


@dataclass(frozen=True)
class SweepSetting:
    """One row of the summary: a cap, a number of extensions, or n samples with a vote.

    ``samples`` settings are parallel scaling: n samples per question at the natural budget,
    sampled at the sweep's temperature, answered by majority vote; their thinking is counted
    over all n samples, so they sit on the same axis as the sequential settings.
    """

    kind: Kind
    #: The cap (None: no cap), the number of extensions or of samples, or the adaptive
    #: policy's threshold.
    value: int | float | None
    #: The adaptive policy (its threshold is ``value``); ``None``: the default policy.
    policy: AdaptivePolicy | None = None

    @property
    def label(self) -> str:
        if self.kind == "cap":
            return "no cap" if self.value is None else f"cap {self.value}"
        if self.kind == "samples":
            return f"majority@{self.value}"
        if self.kind == "adaptive":
            label = f"adaptive {self.value:g}"
            if self.policy and self.policy.exit_after:
                label += f" exit {self.policy.exit_after}"
                if self.policy.exit_threshold != DEFAULT_EXIT_THRESHOLD:
                    label += f" at {self.policy.exit_threshold:g}"
            return label
        return f"{self.value} extension{'s' if self.value != 1 else ''}"

    def budget(self, max_answer_tokens: int) -> ThinkingBudget:
        if self.kind == "cap":
            cap = None if self.value is None else int(self.value)
            return ThinkingBudget(max_thinking_tokens=cap, max_answer_tokens=max_answer_tokens)
        if self.kind == "adaptive":
            policy = (self.policy or AdaptivePolicy()).model_copy(
                update={"threshold": float(self.value or 0.0)}
            )
            return ThinkingBudget(adaptive=policy, max_answer_tokens=max_answer_tokens)
        if self.kind == "samples":  # the natural budget: only the number of samples varies
            return ThinkingBudget(max_answer_tokens=max_answer_tokens)
        return ThinkingBudget(extensions=int(self.value or 0), max_answer_tokens=max_answer_tokens)


@dataclass
class SettingSummary:
    setting: str
    kind: str
    value: int | float | None
    questions: int
    accuracy: float
    mean_thinking_tokens: float
    p90_thinking_tokens: float
    mean_extensions: float
    ended_by_cap: float
    wall_seconds: float
    #: Per difficulty label of the dataset (empty when it has none): accuracy, mean thinking.
    by_difficulty: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: The adaptive policy's early-exit stretch (0: none, and for every other kind), its
    #: threshold (``None`` without one), and the share of thinking the early exit ended:
    #: what calibrating the exit reads.
    exit_after: int = 0
    exit_threshold: float | None = None
    ended_by_exit: float = 0.0

    def flat(self) -> dict[str, Any]:
        """One CSV row: the per-difficulty figures as ``accuracy_<label>`` columns."""
        row = asdict(self)
        del row["by_difficulty"]
        for label, (accuracy, thinking) in sorted(self.by_difficulty.items()):
            row[f"accuracy_{label}"] = accuracy
            row[f"mean_thinking_tokens_{label}"] = thinking
        return row


@dataclass
class SweepReport:
    summaries: list[SettingSummary]
    rows: list[dict[str, Any]]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


def settings_for(
    caps: Sequence[int | None],
    extensions: Sequence[int],
    samples: Sequence[int] = (),
    thresholds: Sequence[float] = (),
    exits: Sequence[int] = (0,),
    exit_thresholds: Sequence[float] = (DEFAULT_EXIT_THRESHOLD,),
) -> list[SweepSetting]:
    """Caps, extension counts, sample counts, then adaptive policies: one per threshold and
    early-exit stretch (``exits``; 0 is the policy without an early exit), each stretch once
    per early-exit threshold (``exit_thresholds``)."""
    exit_levels = tuple(dict.fromkeys(exit_thresholds)) or (DEFAULT_EXIT_THRESHOLD,)
    # Refuse a bad threshold or stretch before any setting runs.
    policies = [
        (t, AdaptivePolicy(threshold=t, exit_after=e, exit_threshold=x))
        for t in dict.fromkeys(thresholds)
        for e in dict.fromkeys(exits or (0,))
        for x in (exit_levels if e else (DEFAULT_EXIT_THRESHOLD,))
    ]
    return [
        *(SweepSetting("cap", c) for c in caps),
        *(SweepSetting("extend", n) for n in extensions),
        *(SweepSetting("samples", n) for n in samples),
        *(SweepSetting("adaptive", t, p if p.exit_after else None) for t, p in policies),
    ]


def check_setting(
    setting: SweepSetting, max_answer_tokens: int, max_num_seqs: int | None = None
) -> ThinkingBudget:
    """The setting's budget, or the ``ValueError`` running it would raise, before any runs.

    ``max_num_seqs`` is the engine's limit on samples of one prompt (None: not checked).
    """
    if setting.kind == "samples":
        check_samples(setting.value, max_num_seqs)
    return setting.budget(max_answer_tokens)


def _spent(result: BudgetForcedResult) -> tuple[int, int]:
    """Thinking tokens and extensions one question cost, over all its samples."""
    if isinstance(result, VotedResult):
        return result.total_thinking_tokens, sum(s.extensions for s in result.samples)
    return result.thinking_tokens, result.extensions


def _first_signal(result: Any) -> float | None:
    signals = [v for v in result.extension_signals if v is not None]
    if signals:
        return signals[0]
    # An early exit's value is its stretch's lowest top-1, not a signal at an attempt.
    return result.thinking_end_signal if result.thinking_ended_by == "policy" else None


def _p90(values: list[int]) -> float:
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=10, method="inclusive")[-1])


def run_sweep(
    generator: Any,
    dataset: list[QAPair],
    settings: list[SweepSetting],
    out_dir: str | Path,
    *,
    scorer: Scorer = exact_match,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
    progress: bool = True,
    temperature: float = 0.7,
    seed: int = 0,
) -> SweepReport:
    """Run every setting over the dataset; write per-question rows, a summary and a plot.

    Caps and extensions decode greedily; ``samples`` settings sample at ``temperature``,
    seeded with ``seed``, so a sweep is reproducible end to end.
    """
    if not dataset:
        raise ValueError("dataset: no questions")
    if not settings:
        raise ValueError("settings: give at least one cap or extension count")
    # every setting checked before the first one runs: a bad one wastes no one's sweep
    limit = getattr(generator.engine, "max_num_seqs", None)
    budgets = [check_setting(s, max_answer_tokens, limit) for s in settings]
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    questions = [q.question for q in dataset]
    rows: list[dict[str, Any]] = []
    summaries: list[SettingSummary] = []
    progress_bar = tqdm(settings, desc="budget settings", disable=not progress, unit="setting")
    for setting, budget in zip(progress_bar, budgets, strict=True):
        started = time.perf_counter()
        if setting.kind == "samples":
            results = generator.generate(
                questions, budget, n=int(setting.value or 1), temperature=temperature, seed=seed
            )
        else:
            results = generator.generate(questions, budget)
        wall = time.perf_counter() - started
        correct = []
        spent = [_spent(r) for r in results]
        for qa, r, (thinking_tokens, extensions) in zip(dataset, results, spent, strict=True):
            ok = scorer(r.answer, qa.answer)
            correct.append(ok)
            rows.append(
                {
                    "setting": setting.label,
                    "kind": setting.kind,
                    "value": setting.value,
                    "question": qa.question,
                    "difficulty": qa.difficulty,
                    "reference": qa.answer,
                    "answer": r.answer.strip(),
                    "correct": ok,
                    "samples": setting.value if setting.kind == "samples" else 1,
                    "thinking_tokens": thinking_tokens,
                    "extensions": extensions,
                    "thinking_ended_by": r.thinking_ended_by,
                    # What the adaptive policy compared with its threshold at the first
                    # attempt (calibration reads it); empty for the other kinds.
                    "policy_signal": _first_signal(r),
                }
            )
        thinking = [t for t, _ in spent]
        by_difficulty: dict[str, tuple[float, float]] = {}
        for label in sorted({qa.difficulty for qa in dataset if qa.difficulty is not None}):
            picked = [i for i, qa in enumerate(dataset) if qa.difficulty == label]
            by_difficulty[label] = (
                sum(correct[i] for i in picked) / len(picked),
                statistics.fmean(thinking[i] for i in picked),
            )
        summaries.append(
            SettingSummary(
                setting=setting.label,
                kind=setting.kind,
                value=setting.value,
                questions=len(dataset),
                accuracy=sum(correct) / len(correct),
                mean_thinking_tokens=statistics.fmean(thinking),
                p90_thinking_tokens=_p90(thinking),
                mean_extensions=statistics.fmean(e for _, e in spent),
                ended_by_cap=sum(r.thinking_ended_by == "budget" for r in results) / len(results),
                wall_seconds=wall,
                by_difficulty=by_difficulty,
                exit_after=setting.policy.exit_after if setting.policy else 0,
                exit_threshold=setting.policy.exit_threshold if setting.policy else None,
                ended_by_exit=sum(r.thinking_ended_by == "early_exit" for r in results)
                / len(results),
            )
        )
    report = SweepReport(summaries=summaries, rows=rows, out_dir=out_dir)
    _write(report)
    return report


def _write(report: SweepReport) -> None:
    from s1_integrations.scaling.plot import plot_scaling

    final = report.out_dir
    scratch = final.with_name(final.name + ".partial")
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    names = {
        "results_jsonl": "results.jsonl",
        "results_csv": "results.csv",
        "summary_csv": "summary.csv",
        "plot": "scaling.png",
    }
    with (scratch / names["results_jsonl"]).open("w") as f:
        for row in report.rows:
            f.write(json.dumps(row) + "\n")
    _write_csv(scratch / names["results_csv"], report.rows)
    _write_csv(scratch / names["summary_csv"], [s.flat() for s in report.summaries])
    plot_scaling(report.summaries, scratch / names["plot"])
    final.mkdir(parents=True, exist_ok=True)
    for name in names.values():
        (scratch / name).replace(final / name)
    scratch.rmdir()
    report.files = {key: final / name for key, name in names.items()}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
