"""A guardian process that ends an engine's processes when their owner dies, however it dies.

Why it exists: vLLM runs its engine core in a child process (started with spawn), and the
engine core starts the model's worker processes. The workers watch a death pipe from the
engine core and leave when it does, but the engine core watches nothing of its owner: it
installs its own SIGTERM/SIGINT handler, blocks on its ZMQ input socket, and relies on the
owner's ``weakref.finalize``/``atexit`` clean-up to be stopped. That clean-up runs on a normal
exit, an uncaught exception and Ctrl-C (which also reaches the whole foreground process
group), but not when the owner is ended by SIGTERM's default action, SIGKILL or ``os._exit``;
then the engine core and its workers keep running (and on a GPU keep the device's memory).

vLLM gives no hook that runs our code inside its engine core process (short of a
``vllm.general_plugins`` entry point, which would run in every vLLM process on the machine),
so the watch is done from outside: the owner starts this module as a tiny stdlib-only
process (``python -I -S lifetime.py``), tells it the PIDs of the processes the engine
started, and tells it ``release`` when it has shut the engine down itself. The guardian
notices the owner's death through the owner's end of its command pipe closing and through
its own parent changing (a reparented guardian means the owner is gone, even where a forked
child of the owner still holds the pipe), and then ends every process it watches and their
descendants: SIGTERM first (vLLM's engine core then shuts its workers down cleanly), SIGKILL
after a grace period. No signal handler is installed in the owner, so the user's program
keeps its own signal behaviour; PIDs are checked against their start times before any signal
is sent, so a reused PID is never hit.

``tree`` mode is for ``s1-integrations serve``: there the owner is vLLM's API server itself
(the serve command execs it), all of its descendants are vLLM's, and the guardian keeps a
snapshot of them, since once the server is dead they have been reparented away from it.
A multiprocessing resource tracker among them is not ended with the engine: it leaves by
itself once the engine's processes are gone, after unlinking what they leaked.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator

logger = logging.getLogger(__name__)

#: How long the guardian waits after its first SIGTERM before SIGKILL (see ``_end``).
GRACE_S = 5.0
#: How often the guardian checks its parent, and reads new commands.
POLL_S = 0.2
#: How often the guardian refreshes its snapshot of the watched processes' descendants.
SNAPSHOT_S = 1.0
#: How often the owner looks for the processes vLLM starts while an engine starts.
STARTUP_POLL_S = 0.1

_PREFIX = "s1-integrations guardian"

# -- /proc ----------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, str] | None:
    """``(ppid, start time, state)`` of a process from ``/proc``, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name may contain spaces and parentheses: the fields follow the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def _is_resource_tracker(pid: int) -> bool:
    """Whether ``pid`` is a multiprocessing resource tracker (by its command line).

    A tracker leaves by itself once every process holding its pipe is gone, and then
    unlinks the shared memory and semaphores they leaked (vLLM's engine leaks some): it is
    not an engine process, and ending it early would leave those behind in ``/dev/shm``.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"multiprocessing.resource_tracker" in f.read()
    except OSError:
        return False


def _alive(pid: int, start: int) -> bool:
    """The same process (by start time) still exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[1] == start and stat[2] != "Z"


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(name))
    return children


def _descendants(roots: dict[int, int]) -> dict[int, int]:
    """Every live process below the live ``roots`` (pid -> start time), roots excluded."""
    children = _children_by_parent()
    found: dict[int, int] = {}
    stack = [pid for pid, start in roots.items() if _alive(pid, start)]
    while stack:
        for child in children.get(stack.pop(), []):
            stat = _stat(child)
            if stat is not None and child not in found and child != os.getpid():
                found[child] = stat[1]
                stack.append(child)
    return found


# -- the guardian process ---------------------------------------------------------------


class _Watch:
    """The processes to end (pid -> start time): the roots the owner named, and all below."""

    def __init__(self, owner: int, tree: bool) -> None:
        self.owner = owner
        self.roots: dict[int, int] = {}
        self.seen: dict[int, int] = {}
        if tree:
            stat = _stat(owner)
            if stat is not None:
                self.roots[owner] = stat[1]

    def add(self, pid: int) -> None:
        stat = _stat(pid)
        if stat is not None:  # one that already left needs no ending
            self.roots[pid] = stat[1]

    def snapshot(self) -> None:
        self.seen = {
            pid: start for pid, start in self.seen.items() if _alive(pid, start)
        } | _descendants(self.roots)

    def targets(self) -> dict[int, int]:
        self.snapshot()
        everything = self.roots | self.seen
        return {
            pid: start
            for pid, start in everything.items()
            if pid not in (self.owner, os.getpid()) and _alive(pid, start)
        }


def _end(targets: dict[int, int], grace_s: float, why: str) -> None:
    """SIGTERM the tops of the watched trees, then the rest, then SIGKILL what is left.

    The tops (in practice vLLM's engine core) get SIGTERM first, so that the engine core stops
    stepping and begins to shut its workers down itself: a worker signalled at the same time
    leaves the engine core waiting for its reply on the shared-memory queue (5 s) before it
    notices. vLLM's own shutdown then gives workers 5 s more before it signals them; nobody
    is left to receive their results, so the guardian signals them after a fifth of its
    grace, and SIGKILLs whatever is still there after ``grace_s``.
    """
    if not targets:
        return
    print(
        f"{_PREFIX}: {why}; ending {len(targets)} engine processes {sorted(targets)}",
        file=sys.stderr,
        flush=True,
    )
    parents = {pid: stat[0] for pid in targets if (stat := _stat(pid)) is not None}
    tops = {pid: start for pid, start in targets.items() if parents.get(pid) not in targets}
    phases = (
        (signal.SIGTERM, tops, grace_s / 5),
        (signal.SIGTERM, targets, grace_s * 4 / 5),
        (signal.SIGKILL, targets, 5.0),
    )
    for sig, signalled, wait_s in phases:
        if sig == signal.SIGKILL:
            print(
                f"{_PREFIX}: {sorted(targets)} still running {grace_s} s after SIGTERM: SIGKILL",
                file=sys.stderr,
                flush=True,
            )
        for pid, start in signalled.items():
            if _alive(pid, start):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            targets = {pid: start for pid, start in targets.items() if _alive(pid, start)}
            if not targets:
                return
            time.sleep(0.05)
    if targets:
        print(f"{_PREFIX}: {sorted(targets)} survived SIGKILL", file=sys.stderr, flush=True)


def _guard(owner: int, tree: bool, grace_s: float) -> int:
    # A terminal's Ctrl-C or hang-up reaches the whole process group; the guardian must
    # outlive the owner to clean up after it, so it ignores both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch = _Watch(owner, tree)
    commands = None if tree else sys.stdin.fileno()
    pending = b""
    why = "the owner is gone"
    next_snapshot = 0.0
    while True:
        if os.getppid() != owner:
            why = f"the owner (pid {owner}) is gone"
            break
        if commands is None:
            time.sleep(POLL_S)
        elif select.select([commands], [], [], POLL_S)[0]:
            data = os.read(commands, 4096)
            if not data:
                why = f"the owner (pid {owner}) is gone or dropped the engine unclosed"
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                word, _, arg = line.decode().partition(" ")
                if word == "release":
                    return 0
                if word == "watch":
                    watch.add(int(arg))
        if time.monotonic() >= next_snapshot:
            watch.snapshot()
            next_snapshot = time.monotonic() + SNAPSHOT_S
    targets = watch.targets()
    trackers = {pid: start for pid, start in targets.items() if _is_resource_tracker(pid)}
    _end({pid: start for pid, start in targets.items() if pid not in trackers}, grace_s, why)
    # With the engine's processes gone, a tracker leaves on its own after its clean-up.
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in trackers.items()):
        time.sleep(0.05)
    left = {pid: start for pid, start in trackers.items() if _alive(pid, start)}
    _end(left, grace_s, f"a resource tracker outlived the engine by {grace_s} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--tree", action="store_true", help="watch all of the owner's descendants")
    parser.add_argument("--grace", type=float, default=GRACE_S)
    args = parser.parse_args(argv)
    return _guard(args.owner, args.tree, args.grace)


# -- the owner's side ---------------------------------------------------------------------


class Guardian:
    """The owner's handle on its guardian process (see the module's docstring for why)."""

    def __init__(self, process: subprocess.Popen[bytes] | None) -> None:
        self.process = process
        self.watched: set[int] = set()
        self._lock = threading.Lock()

    @classmethod
    def start(cls, *, tree: bool = False, grace_s: float = GRACE_S) -> Guardian:
        """Start a guardian for this process; a failure is logged and leaves it unguarded.

        The engine is still usable without one, so a failure to start it (an unusual
        ``sys.executable``, no ``/proc``) must not stop the engine, but it is reported.
        """
        if not sys.platform.startswith("linux"):
            logger.warning(
                "no guardian on %s: engine processes may outlive a killed owner", sys.platform
            )
            return cls(None)
        argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), "--owner", str(os.getpid())]
        argv += ["--grace", str(grace_s)] + (["--tree"] if tree else [])
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL if tree else subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as e:
            logger.warning(
                "could not start the engine's guardian (%s): engine processes may outlive a "
                "killed owner",
                e,
            )
            return cls(None)
        return cls(process)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _send(self, line: str) -> None:
        process = self.process
        if process is None or process.stdin is None:
            return
        try:
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
        except (BrokenPipeError, ValueError) as e:  # ValueError: written after release
            logger.warning("the engine's guardian is gone (%r): %s not sent", e, line)

    def watch(self, pids: Iterable[int]) -> None:
        """Have the guardian end these processes (and their descendants) if the owner dies."""
        with self._lock:
            for pid in pids:
                if pid not in self.watched:
                    self.watched.add(pid)
                    self._send(f"watch {pid}")

    @contextlib.contextmanager
    def watching_new_children(self) -> Iterator[None]:
        """Watch every process this process starts while the block runs (an engine's start).

        vLLM starts its engine core inside ``AsyncLLM`` and gives no way to learn its PID
        before the engine is ready (30 s and more); an owner killed in that window would
        orphan it. So the block's new multiprocessing children are handed to the guardian
        as they appear, and once more when the block ends.
        """
        before = set(_active_children())
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(STARTUP_POLL_S):
                self.watch(pid for pid in _active_children() if pid not in before)

        poller = threading.Thread(target=poll, name="s1-engine-start-watch", daemon=True)
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join()
            self.watch(pid for pid in _active_children() if pid not in before)

    def release(self, timeout: float = 10.0) -> None:
        """The owner has shut the engine down itself: let the guardian go without a signal."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(b"release\n")
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("the engine's guardian did not leave in %s s: killing it", timeout)
            process.kill()
            process.wait()


def _active_children() -> list[int]:
    """PIDs of ``multiprocessing.active_children()``, retried while another thread starts one."""
    while True:
        try:
            return [p.pid for p in multiprocessing.active_children() if p.pid is not None]
        except RuntimeError:  # the registry changed size while it was read
            time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
