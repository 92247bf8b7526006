"""A fleet replica killed mid-run loses no request (issue 19).

Two real ``vllm serve`` replicas on 127.0.0.1 serve a steady stream of budgeted requests from
one ``BudgetForcedGenerator.from_servers``: final-only ``generate`` calls and ``stream`` calls,
from several threads at once. One replica is SIGKILLed, its whole process group (API server,
engine core, worker). Every request must then either complete (on the other replica, if
none of its output had been handed on yet) or fail with a clear ``EngineError`` (a stream
that had already yielded part of its reply); none may hang or end any other way, and the
client must keep serving on the replica that is left.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from conftest import TOY
from s1_integrations import BudgetForcedGenerator, EngineError, FinalResult, ThinkingBudget
from servers import VllmServer

pytestmark = pytest.mark.remote

SERVER_ARGS = ("--dtype", "float32", "--seed", "0", "--max-num-seqs", "32")
SERVER_ARGS += ("--kv-cache-memory-bytes", str(256 * 2**20))
#: Exactly this many thinking tokens each (min = max), so a result shows its budget held.
THINKING = 120
BUDGET = ThinkingBudget(
    min_thinking_tokens=THINKING, max_thinking_tokens=THINKING, max_answer_tokens=4
)
QUESTIONS = ["What is 12 + 34?", "What is 4857 + 2968?", "What is 305 + 17?", "What is 61 + 9?"]
GENERATE_THREADS, STREAM_THREADS = 3, 3
#: How long the stream goes on after the kill (past the dead replica's 5 s "down" time, so
#: requests also try it again, and find it refusing connections).
AFTER_KILL_S = 8.0
#: A request still unanswered this long after the stream stopped is counted as lost (hung).
HANG_S = 180.0


@dataclass
class Tally:
    """What happened to every request, filled in by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=itertools.count)
    pending: dict[int, str] = field(default_factory=dict)  # request -> kind, while unanswered
    completed: dict[str, int] = field(default_factory=lambda: {"generate": 0, "stream": 0})
    failed: dict[str, list[EngineError]] = field(
        default_factory=lambda: {"generate": [], "stream": []}
    )
    other: list[BaseException] = field(default_factory=list)  # neither: counted as lost
    wrong: list[str] = field(default_factory=list)  # completed, but off budget

    def begin(self, kind: str) -> int:
        with self.lock:
            request = next(self.ids)
            self.pending[request] = kind
            return request

    def end(self, request: int, outcome: BaseException | None) -> None:
        with self.lock:
            kind = self.pending.pop(request)
            if outcome is None:
                self.completed[kind] += 1
            elif isinstance(outcome, EngineError):
                self.failed[kind].append(outcome)
            else:
                self.other.append(outcome)


def _check(result: object, tally: Tally) -> None:
    thinking = getattr(result, "thinking_tokens", None)
    answer = getattr(result, "answer_tokens", None)
    if thinking != THINKING or answer is None or not 1 <= answer <= 4:
        with tally.lock:
            tally.wrong.append(f"thinking {thinking}, answer {answer}")


def _client(gen: BudgetForcedGenerator, kind: str, stop: threading.Event, tally: Tally) -> None:
    """Send requests one after another until ``stop``; record each one's outcome."""
    for question in itertools.cycle(QUESTIONS):
        if stop.is_set():
            return
        request = tally.begin(kind)
        try:
            if kind == "generate":
                (result,) = gen.generate(question, BUDGET)
                _check(result, tally)
            else:
                finals = [e for e in gen.stream(question, BUDGET) if isinstance(e, FinalResult)]
                if len(finals) != 1:
                    raise AssertionError(f"{len(finals)} final results in one stream")
                _check(finals[0].result, tally)
        except BaseException as e:
            tally.end(request, e)
        else:
            tally.end(request, None)


@pytest.fixture(scope="module")
def replicas() -> Iterator[tuple[VllmServer, VllmServer]]:
    """Two replicas with the plugin, started together (a minute or two each on the CPU)."""
    pair = (VllmServer(TOY, extra=SERVER_ARGS), VllmServer(TOY, extra=SERVER_ARGS))
    try:
        for server in pair:
            server.wait_ready()
        yield pair
    finally:
        for server in pair:
            server.stop()


def _successes(server: VllmServer) -> float:
    return server.metric("vllm:request_success_total")


@pytest.mark.timeout(900)
def test_a_replica_killed_mid_run_loses_no_request(
    replicas: tuple[VllmServer, VllmServer],
) -> None:
    doomed, survivor = replicas
    gen = BudgetForcedGenerator.from_servers([doomed.url, survivor.url], backoff_s=0.1)
    remote = gen.engine
    dead, alive = (next(s for s in remote.servers if s.url == x.url) for x in replicas)
    assert remote.forcing_in_engine  # single pass, inside the replicas
    tally = Tally()
    stop = threading.Event()
    kinds = ["generate"] * GENERATE_THREADS + ["stream"] * STREAM_THREADS
    threads = [
        threading.Thread(target=_client, args=(gen, kind, stop, tally), daemon=True)
        for kind in kinds
    ]
    try:
        for t in threads:
            t.start()
        # Kill once the stream is steady: a few requests done, and several running on both.
        deadline = time.monotonic() + 300
        while not (
            sum(tally.completed.values()) >= len(threads)
            and dead.in_flight >= 2
            and alive.in_flight >= 2
        ):
            assert time.monotonic() < deadline, f"the stream never got going: {tally}"
            time.sleep(0.05)
        in_flight_at_kill = dead.in_flight
        doomed.kill()  # SIGKILL, whole process group
        time.sleep(AFTER_KILL_S)
        stop.set()
        for t in threads:
            t.join(timeout=HANG_S)
        hung = dict(tally.pending)
        lost = len(hung) + len(tally.other)
        submitted = next(tally.ids)
        completed = sum(tally.completed.values())
        failed = sum(len(f) for f in tally.failed.values())
        print(
            f"\nreplica loss: {submitted} requests, {completed} completed "
            f"({tally.completed}), {failed} failed with EngineError "
            f"(generate {len(tally.failed['generate'])}, stream {len(tally.failed['stream'])}), "
            f"{lost} lost (hung {hung}, other {tally.other!r}); on the killed replica at the "
            f"kill: {in_flight_at_kill} in flight; afterwards it failed over {dead.failed_over} "
            f"attempts and broke {dead.broken} replies"
        )
        assert lost == 0
        assert completed + failed == submitted
        assert tally.wrong == []
        # A final-only request hands nothing on before its end, so it always starts over.
        assert tally.failed["generate"] == []
        # Each failure is the kill's, and says so; each is one the killed replica broke.
        for error in tally.failed["stream"]:
            assert doomed.url in str(error) and "cannot be resumed" in str(error), error
        assert failed == dead.broken
        assert alive.broken == 0 and alive.failed_over == 0
        # The kill hit running requests (it was not a no-op), and each was told or moved.
        assert in_flight_at_kill >= 2
        assert dead.broken + dead.failed_over >= 1

        # The client keeps serving, on the replica that is left.
        before = _successes(survivor)
        results = gen.generate(QUESTIONS * 2, BUDGET)
        assert [r.thinking_tokens for r in results] == [THINKING] * 8
        served = 0.0
        deadline = time.monotonic() + 10  # the server's counters follow its replies closely
        while served < 8 and time.monotonic() < deadline:
            served = _successes(survivor) - before
            time.sleep(0.2)
        assert served == 8
    finally:
        stop.set()
        gen.close()
