"""The README's main job, as a newcomer sees it: 80 columns, no engine logs, the s1 effect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine


def test_demo_shows_an_extension_putting_a_hard_question_right() -> None:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("VLLM_LOGGING_LEVEL", None)  # the CLI's own quiet default, not the tests'
    cli = Path(sys.executable).with_name("s1-integrations")
    done = subprocess.run(
        [str(cli), "demo", "--no-sweep"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for noise in ("INFO", "WARNING", "Triton", "Loading safetensors"):
        assert noise not in done.stdout + done.stderr, noise
    assert "(toy reasoner)" in done.stdout and "reference answer:" in done.stdout
    rows = {line.split("│")[1].strip(): line for line in lines if line.startswith("│ ")}
    assert rows["natural"].rstrip("│ ").endswith("wrong")
    for extended in ("1 extension", "2 extensions", "4 extensions"):
        assert rows[extended].rstrip("│ ").endswith("right"), rows[extended]
    assert "let me add column by column" in done.stdout
