"""No engine process outlives its owner, however the owner ends (issue 19).

Each test starts a real owner in a child process: ``lifecycle_owner.py`` (a program
that owns a ``BudgetForcedGenerator()`` on the toy model and is generating), or
``s1-integrations serve`` with a completion streaming from it. It then ends the owner one way
and asserts, by PID, that every process the owner had started (vLLM's engine core and worker,
multiprocessing's resource tracker, our guardian) is gone within ``DEADLINE_S``.

Before the guardian (``engine/lifetime.py``), SIGTERM, SIGKILL and ``os._exit`` left the
engine core, its worker and the resource tracker running (see docs/reliability.md).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from servers import S1Serve

OWNER = Path(__file__).with_name("lifecycle_owner.py")
#: "Within a few seconds": the guardian notices in 0.2 s, vLLM's engine core takes 2 to 7 s
#: to stop its worker and exit on this shared CPU, and SIGKILL follows after 10 s.
DEADLINE_S = 30.0
START_TIMEOUT_S = 600.0
GUARDIAN_SAYS = "s1-integrations guardian:"
SERVE_ARGS = ("--kv-cache-memory-bytes", str(256 * 2**20), "--max-num-seqs", "8")


def _alive(p: psutil.Process) -> bool:
    """Running, the same process (psutil checks its start time), and not a zombie."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:80]!r}"
    except psutil.Error:
        return f"{p.pid} (gone while being described)"


def _wait_gone(processes: list[psutil.Process], deadline_s: float) -> tuple[list[str], float]:
    """Survivors after ``deadline_s`` (empty if all left) and the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if not any(_alive(p) for p in processes):
            return [], time.monotonic() - start
        time.sleep(0.1)
    return [_describe(p) for p in processes if _alive(p)], time.monotonic() - start


def _kill_leftovers(processes: list[psutil.Process]) -> None:
    """Do not leave vLLM processes behind on a failed test (after its assertions)."""
    for p in processes:
        if _alive(p):
            p.kill()


def _kinds(processes: list[psutil.Process]) -> list[str]:
    """What each started process is, so the test knows it watches the real thing."""
    kinds = []
    for p in processes:
        cmdline = " ".join(p.cmdline())
        if "EngineCore" in cmdline:
            kinds.append("engine core")
        elif "VLLM::Worker" in cmdline:
            kinds.append("worker")
        elif "resource_tracker" in cmdline:
            kinds.append("resource tracker")
        elif "lifetime.py" in cmdline:
            kinds.append("guardian")
        else:
            kinds.append(cmdline[:80])
    return sorted(kinds)


EXPECTED_KINDS = ["engine core", "guardian", "resource tracker", "worker"]


class Owner:
    """``lifecycle_owner.py MODE`` in its own process group, its output read on a thread."""

    def __init__(self, mode: str) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (read after the owner ends)
            prefix=f"owner-{mode}-", suffix=".log", delete=False
        )
        env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING")
        self.process = subprocess.Popen(
            [sys.executable, str(OWNER), mode],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            start_new_session=True,
            text=True,
        )
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_generating(self) -> list[psutil.Process]:
        """Block until a request is in flight; return every process the owner started."""
        processes = psutil.Process(self.process.pid).children(recursive=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            # Collected while starting too: a worker that is short-lived would be missed later.
            processes += [
                p
                for p in psutil.Process(self.process.pid).children(recursive=True)
                if p.pid not in {q.pid for q in processes}
            ]
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the owner ended before generating:\n{self.stderr()}")
            if line == "generating":
                processes += [
                    p
                    for p in psutil.Process(self.process.pid).children(recursive=True)
                    if p.pid not in {q.pid for q in processes}
                ]
                return [p for p in processes if _alive(p)]
        raise AssertionError(f"the owner did not start generating:\n{self.stderr()}")

    def stderr(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]


@pytest.fixture
def owner_factory() -> Iterator[list[Owner]]:
    owners: list[Owner] = []
    yield owners
    for o in owners:
        if o.process.poll() is None:
            os.killpg(o.process.pid, signal.SIGKILL)
            o.process.wait()
        o.log.close()


#: (mode of the owner, signal the test sends or None, the owner's exit status, whether the
#: guardian had to end the engine processes: without the owner's clean-up running, it must).
WAYS = {
    "SIGTERM": ("wait", signal.SIGTERM, -signal.SIGTERM, True),
    "SIGKILL": ("wait", signal.SIGKILL, -signal.SIGKILL, True),
    "os._exit": ("os_exit", None, 3, True),
    # Python re-raises an uncaught KeyboardInterrupt as SIGINT's default action.
    "SIGINT": ("wait", signal.SIGINT, -signal.SIGINT, False),
    "uncaught exception": ("exception", None, 1, False),
    "normal exit": ("exit", None, 0, False),
}


@pytest.mark.engine
@pytest.mark.timeout(900)
@pytest.mark.parametrize("way", list(WAYS))
def test_no_engine_process_outlives_its_owner(way: str, owner_factory: list[Owner]) -> None:
    mode, sig, status, guardian_acts = WAYS[way]
    owner = Owner(mode)
    owner_factory.append(owner)
    started = owner.wait_generating()
    assert _kinds(started) == EXPECTED_KINDS, [_describe(p) for p in started]
    if sig is not None:
        os.kill(owner.process.pid, sig)  # the owner alone, not its process group
    assert owner.process.wait(timeout=120) == status, owner.stderr()
    survivors, took = _wait_gone(started, DEADLINE_S)
    _kill_leftovers(started)
    print(f"{way}: {len(started)} started processes gone {took:.1f} s after the owner ended")
    assert survivors == [], f"{way}: still running {DEADLINE_S} s later: {survivors}"
    # The guardian steps in exactly when the owner's own clean-up could not run.
    assert (GUARDIAN_SAYS in owner.stderr()) == guardian_acts, owner.stderr()


def _stream_in_background(url: str) -> tuple[threading.Event, threading.Thread]:
    """A long streamed completion; the event is set once its first tokens arrived."""
    streaming = threading.Event()

    def run() -> None:
        body = {
            "model": httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"],
            "prompt": "What is 12 + 34?",
            "max_tokens": 450,
            "ignore_eos": True,
            "stream": True,
        }
        try:
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        streaming.set()
        except httpx.HTTPError:
            pass  # the server is being ended under it: that is the point

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return streaming, thread


@pytest.mark.remote
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopping_serve_stops_its_engine_processes(sig: signal.Signals) -> None:
    server = S1Serve(extra=SERVE_ARGS)
    started: list[psutil.Process] = []
    try:
        server.wait_ready()
        started = psutil.Process(server.process.pid).children(recursive=True)
        assert _kinds(started) == EXPECTED_KINDS, [_describe(p) for p in started]
        streaming, client = _stream_in_background(server.url)
        assert streaming.wait(120), "no tokens streamed from the server"
        os.kill(server.process.pid, sig)  # the server alone, not its process group
        server.process.wait(timeout=120)
        survivors, took = _wait_gone(started, DEADLINE_S)
        client.join(timeout=30)
        print(
            f"serve, {sig.name}: exit status {server.process.returncode}, {len(started)} "
            f"started processes gone {took:.1f} s after it ended"
        )
        assert survivors == [], f"still running {DEADLINE_S} s later: {survivors}"
        assert not client.is_alive(), "the client's stream did not end with the server"
        # SIGTERM: vLLM's own handler stops the engine and exits 0 (the guardian finds nothing
        # left); SIGKILL: only the guardian can end the engine processes.
        status, guardian_acts = {signal.SIGTERM: (0, False), signal.SIGKILL: (-9, True)}[sig]
        assert server.process.returncode == status
        assert (GUARDIAN_SAYS in server.tail(400)) == guardian_acts, server.tail(400)
    finally:
        _kill_leftovers(started)
        server.stop()
