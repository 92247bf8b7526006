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
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, method: str, args: tuple[Any, ...]) -> list[Any]:
        self.calls.append((method, list(args[0])))
        await asyncio.sleep(0)
        return self.replies


def test_requests_asking_together_share_one_call_and_each_gets_its_own_record() -> None:
    # Two workers: a pipeline stage without a sampler answers with nothing.
    workers = Workers([{}, {"a": [[3, 1, 0.25, True]], "b": []}])

    async def main() -> list[Any]:
        fetcher = RecordFetcher(workers)
        return await asyncio.gather(fetcher.take("a"), fetcher.take("b"))

    assert asyncio.run(main()) == [[(3, 1, 0.25, True)], []]
    assert workers.calls == [(TAKE_METHOD, ["a", "b"])]


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
