"""One in-process vLLM V1 engine, shared by threads and asyncio tasks.

vLLM's ``AsyncLLM`` wants to live on one event loop. We give it a private loop on a daemon
thread and bridge every caller to it: async callers get an async iterator in their own loop,
sync callers a blocking one. Requests from everywhere reach the same engine concurrently, so
vLLM's continuous batching puts them in one batch; there is no lock around generation.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import logging
import os
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from s1_integrations.engine.processor import BudgetForcingLogitsProcessor

logger = logging.getLogger(__name__)

T = TypeVar("T")

PROCESSOR_FQCN = (
    f"{BudgetForcingLogitsProcessor.__module__}:{BudgetForcingLogitsProcessor.__name__}"
)
_DONE = object()
CPU_KV_CACHE_BYTES = 2 * 1024**3  # default KV cache on the CPU backend (2 GiB)


class EngineError(RuntimeError):
    """The engine could not start, died, or was closed while a request was in flight."""


class EngineClosedError(EngineError):
    """The engine was closed; no further requests are accepted."""


def _processor_installed_as_plugin() -> bool:
    """vLLM loads entry-point plugins itself; passing the class again would apply it twice."""
    group = metadata.entry_points(group="vllm.logits_processors")
    return any(ep.value == PROCESSOR_FQCN for ep in group)


def _check_model_path(model: str) -> None:
    path = Path(model).expanduser()
    looks_local = model.startswith(("/", ".", "~")) or os.sep + os.sep in model
    if looks_local and not path.exists():
        raise FileNotFoundError(f"model path does not exist: {model}")
    if path.exists() and path.is_dir() and not (path / "config.json").exists():
        raise FileNotFoundError(f"model folder has no config.json: {model}")


class InProcessEngine:
    """Owns exactly one vLLM ``AsyncLLM``; engine arguments pass through to vLLM untouched.

    Scale out with vLLM's own arguments (``tensor_parallel_size``, ``pipeline_parallel_size``,
    ``distributed_executor_backend="ray"``): nothing here assumes one device.
    """

    def __init__(self, model: str | os.PathLike[str], **engine_args: Any) -> None:
        model = str(model)
        _check_model_path(model)
        self.model = model
        self._closed = False
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="s1-vllm-engine", daemon=True
        )
        self._thread.start()
        self._llm: Any = None
        try:
            self._llm = self._call(self._start(model, engine_args))
        except BaseException as e:
            self._stop_loop()
            if isinstance(e, (FileNotFoundError, ValueError, TypeError)):
                raise
            raise EngineError(f"vLLM could not start the model {model!r}: {e}") from e
        self.tokenizer = self._llm.get_tokenizer()
        self.max_model_len: int = self._llm.model_config.max_model_len
        self.logprobs_mode: str = str(self._llm.model_config.logprobs_mode)
        _live_engines.add(self)

    async def _start(self, model: str, engine_args: dict[str, Any]) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = dict(engine_args)
        # Forced tokens are marked by a processed log-probability of exactly 0.
        args.setdefault("logprobs_mode", "processed_logprobs")
        processors = list(args.pop("logits_processors", None) or [])
        if not _processor_installed_as_plugin() and PROCESSOR_FQCN not in processors:
            processors.append(PROCESSOR_FQCN)
        if processors:
            args["logits_processors"] = processors
        args.setdefault("disable_log_stats", True)
        # Constrained answers (tool calls, structured output) without whitespace padding,
        # which small models otherwise fill their answer budget with.
        if "structured_outputs_config" not in args:
            from vllm.config import StructuredOutputsConfig

            args["structured_outputs_config"] = StructuredOutputsConfig(
                backend="xgrammar", disable_any_whitespace=True
            )
        from vllm.platforms import current_platform

        if (
            current_platform.is_cpu()
            and "gpu_memory_utilization" not in args
            and "kv_cache_memory_bytes" not in args
            and "VLLM_CPU_KVCACHE_SPACE" not in os.environ
        ):
            # On the CPU backend vLLM sizes the KV cache as a share of the NUMA node's RAM
            # minus the worker's own footprint, which fails unpredictably beside other
            # engines; an explicit size does not depend on what else is running.
            args["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        return AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **args))

    # -- bridging -------------------------------------------------------------------------

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule work on the engine's loop, tracked so that close() can end it cleanly."""
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
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _check_alive(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed")
        if self._llm.errored:
            raise EngineError(f"the vLLM engine died: {self._llm.dead_error}")

    async def _produce(
        self,
        prompt_ids: list[int],
        params: Any,
        emit: Any,
    ) -> None:
        from vllm.inputs import TokensPrompt

        request_id = f"s1-{next(self._ids)}"
        try:
            async for output in self._llm.generate(
                TokensPrompt(prompt_token_ids=prompt_ids), params, request_id
            ):
                emit(output)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._llm.abort(request_id)
            if self._closed:
                emit(EngineClosedError("the engine was closed while this request was running"))
            raise
        except Exception as e:
            emit(e if isinstance(e, ValueError) else EngineError(f"request failed: {e!r}"))
        finally:
            emit(_DONE)

    async def stream(self, prompt_ids: list[int], params: Any) -> AsyncIterator[Any]:
        """Yield the engine's ``RequestOutput`` updates for one request, in the caller's loop.

        Leaving the iteration early (break, cancellation) aborts the request in the engine.
        """
        self._check_alive()
        caller = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            caller.call_soon_threadsafe(inbox.put_nowait, item)

        future = self._submit(self._produce(prompt_ids, params, emit))
        try:
            while True:
                item = await inbox.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            if self._llm.errored:
                raise EngineError(f"the vLLM engine died: {self._llm.dead_error}")
        finally:
            if not future.done():
                future.cancel()

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the engine's loop and wait for it, from any thread."""
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
        """Drive an async iterator on the engine's loop, yielding its items in this thread.

        Leaving early closes the async iterator there, which aborts its engine requests.
        """
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for item in agen:
                    inbox.put(item)
            except asyncio.CancelledError:
                if self._closed:
                    inbox.put(EngineClosedError("the engine was closed during this stream"))
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

    def num_unfinished_requests(self) -> int:
        self._check_alive()
        return int(self._llm.get_num_unfinished_requests())

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine and its worker processes down. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _live_engines.discard(self)
        # End every call and request first, while the loop still runs, so that each caller
        # is told (EngineClosedError) instead of waiting forever on a stopped loop.
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._cancel_tracked())
        llm, self._llm = self._llm, None
        if llm is not None:

            async def shutdown() -> None:
                llm.shutdown()

            with contextlib.suppress(Exception):
                self._call(shutdown())
            # Drop the last reference now: vLLM's __del__ would otherwise shut down again
            # during interpreter teardown, when its module globals are already gone.
            del llm
        self._stop_loop()

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

    def __enter__(self) -> InProcessEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_live_engines: weakref.WeakSet[InProcessEngine] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for engine in list(_live_engines):
        with contextlib.suppress(Exception):
            engine.close()
