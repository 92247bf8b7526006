"""One in-process vLLM V1 engine, shared by threads and asyncio tasks.

vLLM's ``AsyncLLM`` wants to live on one event loop. We give it a private loop on a daemon
thread and bridge every caller to it: async callers get an async iterator in their own loop,
sync callers a blocking one. Requests from everywhere reach the same engine concurrently, so
vLLM's continuous batching puts them in one batch; there is no lock around generation.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from s1_integrations.core.backend import Chunk, GenerationRequest
from s1_integrations.engine import processor
from s1_integrations.engine.bridge import _DONE, EngineClosedError, EngineError, LoopBridge
from s1_integrations.engine.lifetime import Guardian
from s1_integrations.engine.processor import (
    PROCESSOR_FQCN,
    names_processor,
    refuse_config_without_processors,
    refuse_engine_args_without_processors,
)
from s1_integrations.engine.records import RECORD_KEY, WORKER_EXTENSION, RecordFetcher
from s1_integrations.engine.vllm_types import sampling_params, to_chunk

__all__ = ["CPU_KV_CACHE_BYTES", "EngineClosedError", "EngineError", "InProcessEngine"]

logger = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 2 * 1024**3  # default KV cache on the CPU backend (2 GiB)


def _as_request_error(e: Exception) -> Exception:
    """Blame the request when vLLM does (the engine is fine), the engine otherwise."""
    import vllm.exceptions

    if isinstance(e, ValueError):  # vLLM before 0.32 raises only these for bad requests
        return e
    client_error = getattr(vllm.exceptions, "VLLMClientError", None)
    if client_error is not None and isinstance(e, client_error):
        return ValueError(str(e))
    return EngineError(f"request failed: {e!r}")


#: Engine arguments that decide how prompts are prefilled: given any, the caller decides.
CHUNKING_ARGS = frozenset({"enable_chunked_prefill", "max_num_batched_tokens"})


def _freeze_gc_heap() -> None:
    """Move every object alive now out of the collector's reach (vLLM's ``freeze_gc_heap``).

    Objects created later are collected as usual; frozen ones are never freed, which is what
    a long-lived engine's start-up objects (modules, the model's config, the tokenizer) are.
    """
    gc.collect()
    gc.freeze()


def _check_model_path(model: str) -> None:
    path = Path(model).expanduser()
    looks_local = model.startswith(("/", ".", "~")) or os.sep + os.sep in model
    if looks_local and not path.exists():
        raise FileNotFoundError(f"model path does not exist: {model}")
    if path.exists() and path.is_dir() and not (path / "config.json").exists():
        raise FileNotFoundError(f"model folder has no config.json: {model}")


class InProcessEngine(LoopBridge):
    """Owns exactly one vLLM ``AsyncLLM``; engine arguments pass through to vLLM untouched.

    Scale out with vLLM's own arguments (``tensor_parallel_size``, ``pipeline_parallel_size``,
    ``distributed_executor_backend="ray"``): nothing here assumes one device.

    Lifetime: :meth:`close` (also run at interpreter exit, after an uncaught exception or
    Ctrl-C) shuts vLLM down. vLLM's engine core does not notice an owner that dies without
    that clean-up (SIGTERM's default action, SIGKILL, ``os._exit``), so a small guardian
    process ends the engine's processes then (``engine/lifetime.py``); no signal handler is
    installed in this process. Ray workers are Ray's to manage and are not covered.
    """

    #: The budget-forcing processor runs inside this engine (single-pass forcing is possible).
    forcing_in_engine = True
    #: ``logprobs=1`` lists each step's real top-1 beside the sampled token.
    reports_top1 = True

    def __init__(
        self, model: str | os.PathLike[str], *, freeze_gc: bool = True, **engine_args: Any
    ) -> None:
        """Start vLLM on ``model``; ``engine_args`` go to vLLM's ``AsyncEngineArgs`` as given.

        ``freeze_gc`` (ours, not vLLM's): once the engine has started, collect and then freeze
        the garbage collector's heap, as vLLM does in its own server and engine processes.
        The hundreds of thousands of objects torch, vLLM and the frameworks leave behind then
        no longer make every full collection walk them, which otherwise pauses generation.
        Pass ``False`` to leave the process's collector alone.
        """
        model = str(model)
        _check_model_path(model)
        self.model = model
        super().__init__("s1-vllm-engine")
        self._submitted = 0  # also each request's id: s1-0, s1-1, ...
        self._llm: Any = None
        #: Whether finished outputs can say which tokens were forced without log-probabilities:
        #: the workers carry our extension unless the caller names another (``_start``).
        self.records_forcing = False
        self._records = RecordFetcher(self._collective_rpc)
        self._froze_gc = False
        # vLLM's engine core does not notice its owner's death (SIGTERM, SIGKILL, os._exit):
        # a guardian process ends the engine's processes then (engine/lifetime.py).
        self._guardian = Guardian.start()
        try:
            with self._guardian.watching_new_children():
                self._llm = self._call(self._start(model, engine_args))
        except BaseException as e:
            self._stop_loop()
            self._guardian.release()  # vLLM has ended the processes it started
            if isinstance(e, (FileNotFoundError, ValueError, TypeError)):
                raise
            raise EngineError(f"vLLM could not start the model {model!r}: {e}") from e
        self.tokenizer = self._llm.get_tokenizer()
        self.max_model_len: int = self._llm.model_config.max_model_len
        scheduler = self._llm.vllm_config.scheduler_config
        #: Sequences decoded side by side: the most samples of one prompt a call may ask for.
        self.max_num_seqs: int = scheduler.max_num_seqs
        #: Whether per-request seeds are safe: not on vLLM's CPU backend with chunked prefill
        #: (see ``_start``), where a seeded request would bring the engine down.
        from vllm.platforms import current_platform

        self.seeds_ok: bool = not (current_platform.is_cpu() and scheduler.enable_chunked_prefill)
        self.logprobs_mode: str = str(self._llm.model_config.logprobs_mode)
        _live_engines.add(self)
        if freeze_gc:
            _freeze_gc_heap()
            self._froze_gc = True

    async def _start(self, model: str, engine_args: dict[str, Any]) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = dict(engine_args)
        # Forced tokens are marked by a processed log-probability of exactly 0.
        args.setdefault("logprobs_mode", "processed_logprobs")
        # By name even where the entry-point plugin is installed: only processors vLLM is
        # given by name see the sampled tokens under asynchronous scheduling (the GPU
        # default); the plugin then steps aside (see engine/processor.py).
        processors = list(args.pop("logits_processors", None) or [])
        if not any(names_processor(p) for p in processors):
            processors.append(PROCESSOR_FQCN)
        args["logits_processors"] = processors
        args.setdefault("disable_log_stats", True)
        if args.get("worker_extension_cls") is None:
            # The method that hands the processor's records of forced tokens back
            # (engine/records.py); a caller's own extension leaves log-probabilities to it.
            args["worker_extension_cls"] = WORKER_EXTENSION
            self.records_forcing = True
            processor.accepts_records = True
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
        # Budgets must never be silently ignored: settings under which vLLM runs no custom
        # logits processor are refused here, before any process starts (engine/processor.py).
        refuse_engine_args_without_processors(args)
        from vllm.usage.usage_lib import UsageContext

        parsed = AsyncEngineArgs(model=model, **args)
        vllm_config = parsed.create_engine_config(UsageContext.ENGINE_CONTEXT)
        if current_platform.is_cpu() and not CHUNKING_ARGS & engine_args.keys():
            # vLLM's CPU worker cannot rewind a seeded request's random generator when it
            # discards the token sampled in the middle of a chunked prefill (torch's CPU
            # generator has no offset), and the whole engine dies: with per-request seeds
            # (reproducible sampling, n samples) in a busy batch, prompts are prefilled
            # whole instead, as vLLM's CPU backend itself does for MLA models.
            args["enable_chunked_prefill"] = False
            args["max_num_batched_tokens"] = max(
                vllm_config.model_config.max_model_len,
                vllm_config.scheduler_config.max_num_batched_tokens,
            )
            parsed = AsyncEngineArgs(model=model, **args)
            vllm_config = parsed.create_engine_config(UsageContext.ENGINE_CONTEXT)
        refuse_config_without_processors(vllm_config, on_tpu=current_platform.is_tpu())
        return AsyncLLM.from_vllm_config(
            vllm_config,
            enable_log_requests=parsed.enable_log_requests,
            disable_log_stats=parsed.disable_log_stats,
        )

    def _check_alive(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed")
        if self._llm.errored:
            raise EngineError(f"the vLLM engine died: {self._llm.dead_error}")

    def _after_stream(self) -> None:
        if self._llm is not None and self._llm.errored:
            raise EngineError(f"the vLLM engine died: {self._llm.dead_error}")

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """One request's output as the core's chunks (the :class:`Backend` contract)."""
        if request.attempts and (request.deltas or not self.records_forcing):
            raise ValueError(
                "attempts: only for a finished output (not deltas) of an engine whose "
                "workers keep forcing records (no worker_extension_cls of the caller's)"
            )
        return self._bridged(request.prompt_ids, sampling_params(request), request)

    async def _collective_rpc(self, method: str, args: tuple[Any, ...]) -> list[Any]:
        return list(await self._llm.collective_rpc(method, args=args))

    def vllm_stream(self, prompt_ids: list[int], params: Any) -> AsyncIterator[Any]:
        """One request with vLLM's own ``SamplingParams``, yielding vLLM's ``RequestOutput``.

        Plain vLLM on the same engine, for the benchmarks' baselines and for callers who
        want vLLM's own types; leaving the iteration early aborts the request.
        """
        return self._bridged(prompt_ids, params, None)

    async def _produce(
        self,
        prompt_ids: list[int],
        params: Any,
        request: GenerationRequest | None,
        *,
        emit: Callable[[Any], None],
    ) -> None:
        from vllm.inputs import TokensPrompt

        request_id = f"s1-{self._submitted}"
        self._submitted += 1
        recorded = request is not None and request.attempts and request.forcing is not None
        if recorded:
            params.extra_args[RECORD_KEY] = request_id
            self._records.expect(request_id)
        try:
            async for output in self._llm.generate(
                TokensPrompt(prompt_token_ids=prompt_ids), params, request_id
            ):
                if request is None:
                    emit(output)
                    continue
                chunk = to_chunk(output, request)
                if request.attempts:
                    chunk.attempts = await self._records.take(request_id) if recorded else []
                emit(chunk)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._llm.abort(request_id)
            emit(self._cancelled())  # read only if the caller is not the one that left
            raise
        except Exception as e:
            emit(_as_request_error(e))
        finally:
            if recorded:
                self._records.forget(request_id)  # (taken already where it finished)
            emit(_DONE)

    @property
    def submitted_requests(self) -> int:
        """Requests handed to vLLM since start-up: what a check "before the engine" leaves alone."""
        return self._submitted

    def num_unfinished_requests(self) -> int:
        self._check_alive()
        # AsyncLLM has had the method since vLLM 0.32; its output processor always has.
        return int(self._llm.output_processor.get_num_unfinished_requests())

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine and its worker processes down. Safe to call twice."""
        if self._closed:
            return
        _live_engines.discard(self)
        # A front end in this process accepts record names only while an engine here takes
        # the records back.
        processor.accepts_records = any(e.records_forcing for e in _live_engines)
        self._end_calls()
        llm, self._llm = self._llm, None
        if llm is not None:

            async def shutdown() -> None:
                llm.shutdown()

            with contextlib.suppress(Exception):
                self._call(shutdown())
            # Drop the last reference now: vLLM's __del__ would otherwise shut down again
            # during interpreter teardown, when its module globals are already gone.
            del llm
        # vLLM's shutdown has ended its processes (it SIGKILLs those that do not stop); the
        # guardian goes without a signal, so it can never hit a process it did not need to.
        self._guardian.release()
        self._stop_loop()
        if self._froze_gc and not any(e._froze_gc for e in _live_engines):
            # Let the collector reach this engine's start-up objects again (frozen cycles are
            # never freed); the next engine freezes what is alive then.
            gc.unfreeze()

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
