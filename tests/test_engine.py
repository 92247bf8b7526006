"""The in-process engine's lifecycle: clear start-up errors, clean shutdown."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from conftest import ENGINE_ARGS
from s1_integrations import toy_model_path
from s1_integrations.engine.engine import EngineClosedError, EngineError, InProcessEngine


def test_missing_model_path_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InProcessEngine(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        InProcessEngine(str(tmp_path))
    assert time.monotonic() - started < 5  # nothing was started


def _children() -> list[psutil.Process]:
    """Live child processes, less Python's own shared-memory resource tracker (not vLLM's)."""
    children = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.is_running() and "resource_tracker" not in " ".join(p.cmdline()):
                children.append(p)
        except psutil.NoSuchProcess:
            continue
    return children


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_broken_model_raises_from_the_constructor(tmp_path: Path) -> None:
    before = {p.pid for p in _children()}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    with pytest.raises((EngineError, ValueError)):
        InProcessEngine(str(tmp_path), **ENGINE_ARGS)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {p.pid for p in _children()} - before:
        time.sleep(0.5)
    assert not {p.pid for p in _children()} - before


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_close_leaves_no_engine_process() -> None:
    before = {p.pid for p in _children()}
    with InProcessEngine(toy_model_path(), **ENGINE_ARGS) as engine:
        spawned = {p.pid for p in _children()} - before
        assert spawned, "vLLM runs its engine core in child processes"
        assert engine.max_model_len == 512
    engine.close()  # idempotent
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and spawned & {p.pid for p in _children()}:
        time.sleep(0.5)
    alive = spawned & {p.pid for p in _children()}
    assert not alive
    with pytest.raises(EngineClosedError):
        engine.run_sync(_noop())


async def _noop() -> None:
    return None
