"""Which tokens the processor forced in place of an attempt to stop, read from the worker.

A replay of a single-pass output must know where an extension phrase (or the end delimiter)
was forced in place of the model's attempt to stop, and where the model wrote those tokens
itself: the token ids alone cannot say. Streams learn it from each token's processed
log-probability (a forced one's is exactly 0). For a finished output the in-process engine
asks the processor instead: a request whose ``extra_args`` carry :data:`RECORD_KEY` has each
attempt the processor replaced recorded in the worker (with the adaptive policy's signal
there, which the processor measured anyway), and each early exit the policy started; one
call through vLLM's ``collective_rpc`` (to the method :class:`ForcingRecordsWorker` adds to
vLLM's worker, ``worker_extension_cls``) takes them back once the request has finished. The
same call also takes the records of requests still running whose thinking has ended (no
attempt can be recorded after it), so a request that finishes later, as the last of a batch
does, seldom waits for a call of its own.
That spares vLLM a log-probability per token (two with an adaptive policy, for its signal),
which its sampler, engine core and output processor each handle at every step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from s1_integrations.core.backend import Attempt

#: The ``extra_args`` key holding a request's record name (the in-process engine's own).
RECORD_KEY = "s1_record"
#: The method vLLM's workers gain from :class:`ForcingRecordsWorker`.
TAKE_METHOD = "s1_take_forcing_records"
#: How vLLM names the worker extension (``worker_extension_cls``).
WORKER_EXTENSION = "s1_integrations.engine.records.ForcingRecordsWorker"

#: A request's record: each attempt the processor replaced, in order.
Attempts = list[Attempt]


class ForcingRecordsWorker:
    """Mixed into vLLM's worker class: hands over what its processors recorded."""

    def s1_take_forcing_records(
        self, keys: list[str], running: list[str] | None = None
    ) -> dict[str, Attempts]:
        from s1_integrations.engine.processor import take_records

        return take_records(keys, running or ())


class RecordFetcher:
    """Takes finished requests' records back, one ``collective_rpc`` for all that ask at once.

    Requests that finish in the same engine step reach the front end together; each asks
    :meth:`take`, and they share one call to the workers instead of one each. The call also
    names the requests still running (:meth:`expect`): the workers hand over those whose
    thinking has ended, whose records are complete, and they wait here for their request to
    finish. Lives on the engine's event loop.
    """

    def __init__(self, rpc: Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]]) -> None:
        self._rpc = rpc
        self._waiting: dict[str, asyncio.Future[Attempts]] = {}
        self._flush: asyncio.Task[None] | None = None
        self._running: set[str] = set()  # submitted with a record name, not finished
        self._asking: set[str] = set()  # finished, their record not yet found
        self._early: dict[str, Attempts] = {}  # complete before their request finished

    def expect(self, key: str) -> None:
        """A request recording under ``key`` has been submitted."""
        self._running.add(key)

    def forget(self, key: str) -> None:
        """``key``'s request ended without taking its record (aborted, failed)."""
        self._running.discard(key)
        self._early.pop(key, None)

    async def take(self, key: str) -> Attempts:
        """``key``'s record, once its request has finished."""
        self._running.discard(key)
        early = self._early.pop(key, None)
        if early is not None:
            return early
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Attempts] = loop.create_future()
        self._waiting[key] = future
        self._asking.add(key)
        if self._flush is None:
            self._flush = loop.create_task(self._take_waiting())
        try:
            return await future
        finally:
            self._asking.discard(key)

    async def _take_waiting(self) -> None:
        await asyncio.sleep(0)  # let the other requests finished in this step ask too
        self._flush = None
        waiting, self._waiting = self._waiting, {}
        running = sorted(self._running)
        try:
            replies = await self._rpc(TAKE_METHOD, (list(waiting), running))
        except Exception as e:
            for future in waiting.values():
                if not future.done():
                    future.set_exception(e)
            return
        found: dict[str, Attempts] = {}
        for reply in replies:  # one per worker; those without a sampler reply with nothing
            for key, attempts in (reply or {}).items():
                found.setdefault(key, [(int(p), int(n), s, bool(e)) for p, n, s, e in attempts])
        for key in running:
            if key in found and key not in waiting:
                record = found.pop(key)
                # Kept while its request runs, or where it finished while this call was out
                # (its own call, answered after this one, finds it here); dropped if the
                # request was forgotten.
                if key in self._running or key in self._asking:
                    self._early[key] = record
        for key, future in waiting.items():
            if future.done():  # its caller left
                continue
            if key in found or key in self._early:
                future.set_result(found[key] if key in found else self._early.pop(key))
            else:
                future.set_exception(
                    LookupError(f"the engine's processor kept no forcing record for {key}")
                )
