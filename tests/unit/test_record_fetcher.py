"""Taking the processor's records back: attempts as flags, one call for all that ask at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from s1_integrations.core.backend import forced_flags
from s1_integrations.engine.records import TAKE_METHOD, RecordFetcher


def test_spans_become_per_token_flags_cut_at_the_output() -> None:
    flags = forced_flags(6, [(1, 2, None, False), (4, 3, 0.2, True)])
    assert flags == [False, True, True, False, True, True]
    assert forced_flags(3, []) == [False] * 3
    assert forced_flags(2, [(2, 1, None, False)]) == [False, False]  # a span past the end is cut


class Workers:
    """Stands in for ``collective_rpc``'s replies: one dict per worker, as vLLM returns them."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, list[str], list[str]]] = []

    async def __call__(self, method: str, args: tuple[Any, ...]) -> list[Any]:
        finished, running = args
        self.calls.append((method, list(finished), list(running)))
        await asyncio.sleep(0)
        return self.replies


def test_requests_asking_together_share_one_call_and_each_gets_its_own_record() -> None:
    # Two workers: a pipeline stage without a sampler answers with nothing.
    workers = Workers([{}, {"a": [[3, 1, 0.25, True]], "b": []}])

    async def main() -> list[Any]:
        fetcher = RecordFetcher(workers)
        return await asyncio.gather(fetcher.take("a"), fetcher.take("b"))

    assert asyncio.run(main()) == [[(3, 1, 0.25, True)], []]
    assert workers.calls == [(TAKE_METHOD, ["a", "b"], [])]


def test_a_missing_record_and_a_failed_call_reach_the_requests_that_asked() -> None:
    async def missing() -> None:
        await RecordFetcher(Workers([{}])).take("gone")

    with pytest.raises(LookupError, match="kept no forcing record for gone"):
        asyncio.run(missing())

    async def failing(method: str, args: tuple[Any, ...]) -> list[Any]:
        raise RuntimeError("engine died")

    async def failed() -> None:
        await RecordFetcher(failing).take("x")

    with pytest.raises(RuntimeError, match="engine died"):
        asyncio.run(failed())


def test_a_caller_that_left_does_not_break_the_others() -> None:
    workers = Workers([{"a": [[0, 2, None, False]], "b": [[1, 1, None, False]]}])

    async def main() -> Any:
        fetcher = RecordFetcher(workers)
        left = asyncio.ensure_future(fetcher.take("a"))
        stays = asyncio.ensure_future(fetcher.take("b"))
        await asyncio.sleep(0)
        left.cancel()
        return await stays

    assert asyncio.run(main()) == [(1, 1, None, False)]
    assert len(workers.calls) == 1


def test_a_record_complete_before_its_request_finishes_comes_with_an_earlier_call() -> None:
    """The call for a finished request names the others still running; what the workers
    hand over for them (records whose thinking has ended) waits for their request, which
    then needs no call of its own. A request that ends without taking its record drops it."""
    workers = Workers([{"a": [[0, 1, None, False]], "b": [[2, 1, None, False]], "c": []}])

    async def main() -> tuple[Any, Any]:
        fetcher = RecordFetcher(workers)
        for key in ("a", "b", "c"):
            fetcher.expect(key)
        first = await fetcher.take("a")
        fetcher.forget("c")  # aborted: its record is not kept
        later = await fetcher.take("b")
        assert fetcher._early == {}
        return first, later

    assert asyncio.run(main()) == ([(0, 1, None, False)], [(2, 1, None, False)])
    assert workers.calls == [(TAKE_METHOD, ["a"], ["b", "c"])]


def test_a_request_finishing_while_a_call_takes_its_record_early_still_gets_it() -> None:
    """``b`` finishes while the call made for ``a`` (naming ``b`` as running) is out, and asks
    for its record in a call of its own; the workers handed it to the first call, so the
    second finds nothing there, and ``b`` must get the one the first call brought back."""
    calls: list[tuple[list[str], list[str]]] = []
    first_out = asyncio.Event()
    release = asyncio.Event()
    in_turn = asyncio.Lock()  # vLLM's engine core answers its calls one after another

    async def workers(method: str, args: tuple[Any, ...]) -> list[Any]:
        finished, running = args
        calls.append((list(finished), list(running)))
        async with in_turn:
            if len(calls) == 1:
                first_out.set()
                await release.wait()
                return [{"a": [], "b": [[5, 1, None, False]]}]
            return [{}]  # b's record was already handed over

    async def main() -> Any:
        fetcher = RecordFetcher(workers)
        fetcher.expect("a")
        fetcher.expect("b")
        a = asyncio.ensure_future(fetcher.take("a"))
        await first_out.wait()
        b = asyncio.ensure_future(fetcher.take("b"))
        for _ in range(3):  # b's own call goes out while the first is still out
            await asyncio.sleep(0)
        release.set()
        return await a, await b

    assert asyncio.run(main()) == ([], [(5, 1, None, False)])
    assert calls == [(["a"], ["b"]), (["b"], [])]
