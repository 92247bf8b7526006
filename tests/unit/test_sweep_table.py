"""The sweep's summary table as a newcomer's 80-column terminal shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from s1_integrations import cli
from s1_integrations.scaling.sweep import SettingSummary, SweepReport

HEADERS = ("setting", "accuracy", "easy", "hard", "thinking", "p90", "Waits", "capped")


def summary(setting: str, kind: str) -> SettingSummary:
    return SettingSummary(
        setting=setting,
        kind=kind,
        value=None,
        questions=200,
        accuracy=0.515,
        mean_thinking_tokens=130.1,
        p90_thinking_tokens=188,
        mean_extensions=0.5,
        ended_by_cap=0.25,
        wall_seconds=1.0,
        by_difficulty={"easy": (1.0, 11.0), "hard": (0.03, 49.2)},
    )


def test_long_settings_wrap_and_every_header_and_figure_stays_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    console = Console(width=80, record=True, color_system=None)
    monkeypatch.setattr(cli, "console", console)
    rows = [
        summary("cap 16", "cap"),
        summary("adaptive 0.45 exit 32", "adaptive"),
        summary("samples 4 majority", "samples"),
    ]
    cli._print_summary(SweepReport(rows, [], Path("out"), {"summary": Path("out/summary.csv")}))
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    header = next(line for line in lines if "setting" in line)
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == list(HEADERS)
    body = "\n".join(lines)
    assert "…" not in body
    assert body.count("51.5%") == 3 and body.count("130.1") == 3
    assert "adaptive 0.45" in body and "exit 32" in body
