"""The sweep command's options: refused with the option named before any engine starts, and
the adaptive ones turned into the settings they name."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from s1_integrations import cli
from s1_integrations.core.adaptive import DEFAULT_EXIT_THRESHOLD
from s1_integrations.scaling.sweep import SweepSetting, settings_for


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("an engine was started")

    monkeypatch.setattr(cli, "_generator", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thresholds", "0.3"], "--thresholds: set for the adaptive policy"),
        (["--exit-after", "4"], "--exit-after: set for the adaptive policy"),
        (["--exit-thresholds", "0.9"], "--exit-thresholds: set for the adaptive policy"),
        (["--adaptive", "--thresholds", "0.3,high"], "--thresholds: '0.3,high' is not a list"),
        (["--adaptive", "--thresholds", "1.5"], "--thresholds: 1.5 is not between 0 and 1"),
        (["--adaptive", "--thresholds", "nan"], "--thresholds: nan is not between 0 and 1"),
        (["--adaptive", "--exit-after", "4,x"], "--exit-after: '4,x' is not a list of integers"),
        (["--adaptive", "--exit-after", "-4"], "--exit-after: -4 is below 0"),
        (["--adaptive", "--exit-thresholds", "0.9"], "--exit-thresholds: set for the early exit"),
        (
            ["--adaptive", "--exit-after", "0", "--exit-thresholds", "0.9"],
            "--exit-thresholds: set for the early exit",
        ),
        (
            ["--adaptive", "--exit-after", "8", "--exit-thresholds", "2"],
            "--exit-thresholds: 2 is not between 0 and 1",
        ),
        (["--caps", "4,x"], "--caps: '4,x' is not a list of integers and 'none'"),
        (["--caps", "4,-1"], "--caps: -1: Input should be greater than or equal to 0"),
        (["--extensions", "0,-2"], "--extensions: -2: Input should be greater than or equal"),
        (["--extensions", "one"], "--extensions: 'one' is not a list of integers"),
        (["--samples", "0"], "--samples: 0: n: 0 samples; give at least 1"),
        (["--samples", "2,x"], "--samples: '2,x' is not a list of integers"),
        (["--scorer", "fuzzy"], "--scorer: 'fuzzy' is not 'exact' or 'math'"),
        (["--dataset", "/nonexistent/qa.jsonl"], "--dataset: /nonexistent/qa.jsonl: no such file"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--temperature", "0.3"], "--temperature: set for the --samples rows; add --samples"),
        (["--seed", "5"], "--seed: set for the --samples rows; add --samples"),
    ],
)
def test_bad_options_are_refused_by_name(no_engine: None, args: list[str], message: str) -> None:
    done = CliRunner().invoke(cli.app, ["sweep", *args], env={"COLUMNS": "200"})
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split())


def test_each_stretch_runs_once_per_exit_threshold_and_the_label_names_it() -> None:
    settings = settings_for([], [], thresholds=[0.45], exits=[0, 8], exit_thresholds=[0.9, 0.99])
    assert [s.label for s in settings] == [
        "adaptive 0.45",
        "adaptive 0.45 exit 8 at 0.9",
        "adaptive 0.45 exit 8",  # the default threshold goes unsaid
    ]
    policies = [s.policy for s in settings]
    assert policies[0] is None
    assert [(p.exit_after, p.exit_threshold) for p in policies[1:] if p] == [
        (8, 0.9),
        (8, DEFAULT_EXIT_THRESHOLD),
    ]
    assert settings_for([], [], thresholds=[0.45], exits=[8], exit_thresholds=[]) == settings_for(
        [], [], thresholds=[0.45], exits=[8]
    )


def test_a_sweep_checks_every_setting_before_the_first_runs(tmp_path: Path) -> None:
    """A bad last setting fails the sweep before the engine sees the first one."""
    from s1_integrations.scaling import QAPair, run_sweep

    class NoGeneration:
        engine = SimpleNamespace(max_num_seqs=4)

        def generate(self, *_: object, **__: object) -> None:
            raise AssertionError("a setting ran before all were checked")

    pairs = [QAPair(question="What is 1 + 2?", answer="3")]
    for bad, match in (
        (SweepSetting("extend", -1), "extensions"),
        (SweepSetting("samples", 8), "do not fit the engine's 4 sequences"),
    ):
        with pytest.raises(ValueError, match=match):
            run_sweep(NoGeneration(), pairs, [SweepSetting("cap", 4), bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()
