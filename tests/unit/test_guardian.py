"""The guardian (``engine/lifetime.py``) on plain processes: fast, no vLLM.

The end-to-end checks against the real engine and ``s1-integrations serve`` are in
``tests/integration/test_lifecycle.py``; these pin the guardian's own rules: it ends the
processes it watches and their descendants when the owner dies, escalates to SIGKILL for a
process that ignores SIGTERM, and leaves everything alone once released.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator

import psutil
import pytest

from s1_integrations.engine.lifetime import GRACE_S

#: An owner: starts a guardian, then (while the guardian watches its new children) a spawned
#: child that itself starts a grandchild; prints the PIDs, then does what argv[1] says.
OWNER = textwrap.dedent(
    """
    import multiprocessing, os, subprocess, sys, time
    from s1_integrations.engine.lifetime import Guardian

    if __name__ == "__main__":
        guardian = Guardian.start()
        code = sys.argv[2]
        with guardian.watching_new_children():
            child = multiprocessing.get_context("spawn").Process(target=exec, args=(code,))
            child.start()
            time.sleep(0.5)
        pid = guardian.pid
        if sys.argv[1] == "release":
            guardian.release()
        print(pid, child.pid, flush=True)
        time.sleep(600)
    """
)
#: The child: starts a grandchild, optionally ignores SIGTERM, and sleeps.
CHILD = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(grandchild.pid, flush=True)
    if {ignore_term}:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Owner:
    """The owner program in its own process group; its stderr (the guardian's) in a file."""

    def __init__(self, mode: str, ignore_term: bool) -> None:
        # A file, not a pipe: the child and grandchild inherit it and may outlive the owner.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in cleanup)
        self.process = subprocess.Popen(
            [sys.executable, "-c", OWNER, mode, CHILD.format(ignore_term=ignore_term)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        self.pids: list[int] = []
        assert self.process.stdout is not None
        # Two lines, in either order: the child's (its grandchild) and the owner's.
        lines = sorted((self.process.stdout.readline().split() for _ in range(2)), key=len)
        (grandchild,), (guardian, child) = lines
        self.pids = [int(guardian), int(child), int(grandchild)]

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def cleanup(self) -> None:
        for pid in [self.process.pid, *self.pids]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()


@pytest.fixture
def owners() -> Iterator[list[Owner]]:
    started: list[Owner] = []
    yield started
    for owner in started:
        owner.cleanup()


def _wait_gone(pids: list[int], deadline_s: float) -> list[int]:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("ignore_term", [False, True], ids=["stops on SIGTERM", "ignores it"])
def test_a_killed_owner_takes_the_watched_tree_with_it(
    ignore_term: bool, owners: list[Owner]
) -> None:
    owners.append(owner := Owner("keep", ignore_term))
    _, child, grandchild = owner.pids
    assert all(_alive(p) for p in owner.pids)
    os.kill(owner.process.pid, signal.SIGKILL)
    owner.process.wait(timeout=10)
    left = _wait_gone(owner.pids, GRACE_S + 10)
    assert left == [], owner.stderr()
    assert f"ending 2 engine processes {sorted([child, grandchild])}" in owner.stderr()
    # SIGTERM goes to the top of the tree; SIGKILL only to what outlived the grace.
    assert ("SIGKILL" in owner.stderr()) == ignore_term, owner.stderr()


def test_a_released_guardian_leaves_and_signals_nothing(owners: list[Owner]) -> None:
    owners.append(owner := Owner("release", ignore_term=False))
    guardian, child, grandchild = owner.pids
    assert _wait_gone([guardian], 10) == []
    os.kill(owner.process.pid, signal.SIGKILL)
    owner.process.wait(timeout=10)
    time.sleep(1.0)
    assert _alive(child) and _alive(grandchild)
    assert "s1-integrations guardian" not in owner.stderr()


#: A ``serve``-like owner (tree mode): a resource tracker and a spawned child that holds the
#: tracker's pipe, as vLLM's engine core does; prints both PIDs.
TREE_OWNER = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from multiprocessing import resource_tracker
    from s1_integrations.engine.lifetime import Guardian

    if __name__ == "__main__":
        guardian = Guardian.start(tree=True)
        resource_tracker.ensure_running()
        child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,))
        child.start()
        time.sleep(1.5)  # the guardian's snapshot of the tree (every second)
        print(resource_tracker._resource_tracker._pid, child.pid, guardian.pid, flush=True)
        time.sleep(600)
    """
)


def test_a_resource_tracker_is_left_to_leave_by_itself() -> None:
    """Ended with the engine, a tracker could not unlink the engine's leaked shared memory."""
    with tempfile.TemporaryFile(mode="w+") as log:
        owner = subprocess.Popen(
            [sys.executable, "-c", TREE_OWNER],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        assert owner.stdout is not None
        tracker, child, guardian = (int(pid) for pid in owner.stdout.readline().split())
        try:
            assert "resource_tracker" in " ".join(psutil.Process(tracker).cmdline())
            os.kill(owner.pid, signal.SIGKILL)
            owner.wait(timeout=10)
            assert _wait_gone([child, tracker, guardian], GRACE_S + 10) == []
        finally:
            for pid in (child, tracker, guardian):
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        log.seek(0)
        said = log.read()
        assert f"ending 1 engine processes [{child}]" in said, said
        assert "resource tracker outlived" not in said, said
