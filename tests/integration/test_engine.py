"""The in-process engine's lifecycle: clear start-up errors, clean shutdown."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from conftest import ENGINE_ARGS
from s1_integrations import toy_model_path
from s1_integrations.engine import engine as engine_module
from s1_integrations.engine import processor
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
        config = json.loads((Path(toy_model_path()) / "config.json").read_text())
        assert engine.max_model_len == config["max_position_embeddings"]
        assert processor.accepts_records  # its front end takes record names from it
    engine.close()  # idempotent
    # ... and only while some engine in this process still takes the records back
    still_recording = [e for e in engine_module._live_engines if e.records_forcing]
    assert processor.accepts_records is bool(still_recording)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and spawned & {p.pid for p in _children()}:
        time.sleep(0.5)
    alive = spawned & {p.pid for p in _children()}
    assert not alive
    with pytest.raises(EngineClosedError):
        engine.run_sync(_noop())


async def _noop() -> None:
    return None


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_closing_with_requests_in_flight_tells_every_caller() -> None:
    import threading

    from s1_integrations import BudgetForcedGenerator, ThinkingBudget

    with BudgetForcedGenerator(toy_model_path(), **ENGINE_ARGS) as gen:
        errors: list[BaseException] = []
        long = ThinkingBudget(min_thinking_tokens=400, max_answer_tokens=8)

        def call() -> None:
            try:
                gen.generate(["What is 12 + 34?"] * 4, long)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while gen.engine.num_unfinished_requests() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        gen.close()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a caller hung after close"
        assert len(errors) == 3
        assert all(isinstance(e, EngineClosedError) for e in errors), errors
        with pytest.raises(EngineClosedError):
            gen.generate("What is 1 + 1?")


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_a_dead_engine_fails_pending_and_later_calls() -> None:
    import asyncio
    import os
    import signal

    from s1_integrations import BudgetForcedGenerator, ThinkingBudget

    before = {p.pid for p in _children()}
    with BudgetForcedGenerator(toy_model_path(), **ENGINE_ARGS) as gen:
        spawned = [p for p in _children() if p.pid not in before]

        async def scenario() -> None:
            pending = asyncio.ensure_future(
                gen.agenerate("What is 12 + 34?", ThinkingBudget(min_thinking_tokens=450))
            )
            while gen.engine.num_unfinished_requests() == 0:
                await asyncio.sleep(0.05)
            for p in spawned:
                os.kill(p.pid, signal.SIGKILL)
            with pytest.raises(EngineError):
                await asyncio.wait_for(pending, timeout=120)

        asyncio.run(scenario())
        with pytest.raises(EngineError):
            gen.generate("What is 1 + 1?")
