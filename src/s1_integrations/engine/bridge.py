"""A private event loop on a daemon thread, and the plumbing from any caller to it.

Both backends need it: vLLM's ``AsyncLLM`` and an HTTP client pool each want to live on one
event loop, while callers come from threads, from their own event loops, or from both.
Every call is tracked on the loop, so that closing the backend ends each one with a clear
error instead of leaving a caller waiting on a stopped loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


class EngineError(RuntimeError):
    """The engine could not start, died, or was closed while a request was in flight."""


class EngineClosedError(EngineError):
    """The engine was closed; no further requests are accepted."""


class LoopBridge:
    """Runs coroutines on a private loop and hands results to sync or async callers.

    Subclasses implement :meth:`_produce` (push one request's outputs through ``emit``) and
    :meth:`_check_alive`; :meth:`stream`, :meth:`run_sync` and :meth:`iterate_sync` are then
    usable from anywhere.
    """

    def __init__(self, thread_name: str) -> None:
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=thread_name, daemon=True
        )
        self._thread.start()

    # -- what a backend provides ----------------------------------------------------------

    def _check_alive(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed")

    async def _produce(self, *args: Any, **kwargs: Any) -> None:
        """Generate for one request on the private loop, passing each update to ``emit=``.

        Must end by emitting ``_DONE`` (after an exception, if any) and abort the request when
        cancelled.
        """
        raise NotImplementedError

    def _cancelled(self) -> EngineError:
        """What a caller still waiting is told when its request's work was cancelled.

        A stream ends normally only when its request finished: a cancellation the caller did
        not ask for (closing the backend, or one escaping a library's own cancel scopes) must
        not read as a complete output. When the caller itself left, nobody reads this.
        """
        if self._closed:
            return EngineClosedError("the engine was closed while this request was running")
        return EngineError("the request was cancelled before it finished")

    def _after_stream(self) -> None:
        """A hook to raise if the backend died while the stream ended normally."""

    # -- bridging -------------------------------------------------------------------------

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule work on the loop, tracked so that close() can end it cleanly."""
        if self._closed:
            coro.close()
            raise EngineClosedError("the engine is closed")
        return asyncio.run_coroutine_threadsafe(self._tracked(coro), self._loop)

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await coro
        finally:
            self._tasks.discard(task)

    async def _cancel_tracked(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=30)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run untracked work on the loop (start-up, shutdown) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _bridged(self, *request: Any) -> AsyncIterator[Any]:
        """Yield one request's output updates (``_produce(*request)``) in the caller's loop.

        Leaving the iteration early (break, cancellation) aborts the request.
        """
        self._check_alive()
        caller = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        future: asyncio.Future[None] | concurrent.futures.Future[None]
        if caller is self._loop:
            # Already on the loop (the generator's own calls run here): no thread to cross,
            # so no wake-up of the loop per request and per output.
            future = caller.create_task(
                self._tracked(self._produce(*request, emit=inbox.put_nowait))
            )
        else:

            def emit(item: Any) -> None:
                caller.call_soon_threadsafe(inbox.put_nowait, item)

            future = self._submit(self._produce(*request, emit=emit))
        try:
            while True:
                item = await inbox.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            self._after_stream()
        finally:
            if not future.done():
                future.cancel()

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop and wait for it, from any thread."""
        future = self._submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise EngineClosedError(
                    "the engine was closed while this call was running"
                ) from None
            raise
        except BaseException:
            future.cancel()
            raise

    def iterate_sync(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator on the loop, yielding its items in this thread.

        Leaving early closes the async iterator there, which aborts its requests.
        """
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for item in agen:
                    inbox.put(item)
            except asyncio.CancelledError:
                inbox.put(self._cancelled())  # read only if the caller is not the one that left
                raise
            except Exception as e:
                inbox.put(e)
            finally:
                inbox.put(_DONE)

        future = self._submit(pump())
        try:
            while True:
                item = inbox.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not future.done():
                future.cancel()

    # -- lifecycle ------------------------------------------------------------------------

    def _end_calls(self) -> None:
        """Mark closed and end every call while the loop still runs, so each caller is told."""
        self._closed = True
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._cancel_tracked())

    def _stop_loop(self) -> None:
        self._closed = True
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._loop.is_running():
            self._loop.close()

    @property
    def closed(self) -> bool:
        return self._closed
