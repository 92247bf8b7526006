"""What both strategies share: the backend they drive, the answer round, and the fan-in.

A strategy turns prepared items into streams of ``(item position, event)`` pairs, its
*sources*: one per item for the single pass (each is one engine request), one for all items
for the rounds (each round advances every unfinished item together). :func:`merged` runs the
sources side by side; a call with one source reads it directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from functools import cached_property

from s1_integrations.core.backend import Backend, Chunk, GenerationRequest
from s1_integrations.core.formats import ThinkingFormat
from s1_integrations.core.results import StreamEvent
from s1_integrations.core.sampling import SamplingOptions, sample_options
from s1_integrations.core.tokenizing import Decoder, fast_decoder
from s1_integrations.core.tracking import OutputTracker, Prepared

#: A strategy's output: events tagged with the position of their item in the call.
Tagged = tuple[int, StreamEvent]


class StrategyBase:
    """The backend and model facts a strategy needs, and the steps both strategies take."""

    def __init__(self, backend: Backend, thinking_format: ThinkingFormat, model_name: str) -> None:
        self.backend = backend
        self.thinking_format = thinking_format
        self.model_name = model_name

    def sources(
        self, items: list[Prepared], options: SamplingOptions, streaming: bool
    ) -> list[AsyncGenerator[Tagged, None]]:
        raise NotImplementedError

    @cached_property
    def _decode(self) -> Decoder:
        """The tokenizer's decoder, found once rather than for every request's tracker."""
        return fast_decoder(self.backend.tokenizer)

    def tracker(self, item: Prepared, options: SamplingOptions) -> OutputTracker:
        tokenizer = self.backend.tokenizer
        phrases = item.budget.extension_phrases
        return OutputTracker(item, tokenizer, phrases, options.stop, decode=self._decode)

    async def run_once(self, request: GenerationRequest) -> Chunk:
        """The finished output of one request (asked for alone: no deltas)."""
        final = None
        async for chunk in self.backend.stream(request):
            final = chunk
        assert final is not None
        return final

    async def answer_round(
        self, item: Prepared, output: list[int], answered: int, options: SamplingOptions
    ) -> tuple[list[int], list[float] | None]:
        """Generate the answer after a closed thinking block, constrained when asked to be.

        The thinking stays free; only the answer is held to ``answer_schema`` (or its tool
        calls to ``answer_tag``) by vLLM's structured outputs, so even a small model emits
        valid JSON or tool calls. Returns the
        answer's token ids and, where the item wants them, their log-probabilities.
        """
        options = sample_options(options, item.sample)
        room = item.max_tokens - len(output)
        left = item.budget.max_answer_tokens - answered
        if min(room, left) < 1:
            return [], None  # no room left for an answer: the result says "length"
        fmt = self.thinking_format
        request = options.request(
            item.prompt_ids + output,
            min(room, left),
            # The answer can never open the thinking again, nor close it a second time.
            bad_words=(fmt.start, fmt.end),
            stop=options.stop,
            json_schema=options.answer_schema,
            structural_tag=options.answer_tag,
            logprobs=0 if item.answer_logprobs else None,
        )
        chunk = await self.run_once(request)
        return chunk.token_ids, chunk.logprobs


async def merged(sources: Sequence[AsyncGenerator[Tagged, None]]) -> AsyncIterator[Tagged]:
    """The sources' events as they come, each source run as its own task.

    A single source is read directly: no task and no queue, which cost a one-request call
    more than its tokens do. Closing the merged stream cancels every source, which aborts
    their requests in the engine.
    """
    if len(sources) == 1:
        (only,) = sources
        try:
            async for tagged in only:
                yield tagged
        finally:
            await only.aclose()
        return
    queue: asyncio.Queue[Tagged | BaseException | None] = asyncio.Queue()

    async def drain(source: AsyncGenerator[Tagged, None]) -> None:
        async for tagged in source:
            await queue.put(tagged)

    async def run_all() -> None:
        try:
            await asyncio.gather(*(drain(s) for s in sources))
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            await queue.put(e)  # re-raised by the consumer below, in its own task

    runner = asyncio.ensure_future(run_all())
    try:
        while True:
            got = await queue.get()
            if got is None:
                break
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
