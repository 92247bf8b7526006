"""The single-pass strategy: one engine request per item, forced inside the engine."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from s1_integrations.core.backend import forced_flags
from s1_integrations.core.forcing import Phase
from s1_integrations.core.results import FinalResult, StreamEvent
from s1_integrations.core.sampling import SamplingOptions, sample_options, signal_logprobs
from s1_integrations.core.strategy import StrategyBase, Tagged
from s1_integrations.core.tracking import Prepared


class SinglePass(StrategyBase):
    """The budget's plan travels with the request; the engine's logits processor applies it."""

    def sources(
        self, items: list[Prepared], options: SamplingOptions, streaming: bool
    ) -> list[AsyncGenerator[Tagged, None]]:
        return [self._tagged(item, options, streaming) for item in items]

    async def _tagged(
        self, item: Prepared, options: SamplingOptions, streaming: bool
    ) -> AsyncGenerator[Tagged, None]:
        async for event in self.events(item, options, streaming):
            yield item.index, event

    async def events(
        self, item: Prepared, options: SamplingOptions, streaming: bool = True
    ) -> AsyncGenerator[StreamEvent, None]:
        """One engine request; ``streaming=False`` when only the final result is wanted.

        Without a caller waiting for deltas, no stop strings to watch and no schema to hand
        over to, the backend is asked for the finished output alone instead of one chunk per
        step, and the tracker reads it in one go. Forced tokens need telling apart only where
        the plan can insert phrases or exit early (the only places the replay needs to
        know, see :class:`Replayer`; caps and answer caps replay from counts): from the
        engine's records for a finished output where the backend keeps them, else from
        log-probabilities.
        """
        own = sample_options(options, item.sample)
        structured = own.constrained
        deltas = streaming or bool(own.stop) or structured
        needs_flags = item.plan.needs_forced_flags
        # The top-1 of each step, for the signal values reported (and, without the engine's
        # records, to tell an early exit from a replaced attempt where both force the end).
        adaptive = item.plan.measures_top1
        # A finished output can have its forced tokens (and the policy's signals) named by
        # the engine's own records, which cost vLLM nothing per token; otherwise they are
        # read off log-probabilities.
        recorded = needs_flags and not deltas and self.backend.records_forcing
        wants_logprobs = (needs_flags and not recorded) or item.answer_logprobs
        top1 = adaptive and not recorded
        request = own.request(
            item.prompt_ids,
            item.max_tokens,
            deltas=deltas,
            logprobs=signal_logprobs(own) if top1 else 0 if wants_logprobs else None,
            top1=top1,
            attempts=recorded,
            forcing=item.plan.to_json(),
            # A constrained answer is a second, grammar-bound request: stop at the delimiter.
            stop_token_ids=tuple(item.plan.end) if structured else (),
        )
        tracker = self.tracker(item, own)
        output_ids: list[int] = []
        stream = self.backend.stream(request)
        try:
            async for chunk in stream:
                ids = chunk.token_ids
                output_ids.extend(ids)
                logprobs = chunk.logprobs if wants_logprobs else None
                measured = exits = None
                if chunk.attempts is not None:
                    forced = forced_flags(len(ids), chunk.attempts)
                    measured = {position: signal for position, _, signal, _ in chunk.attempts}
                    exits = [position for position, _, _, early in chunk.attempts if early]
                elif needs_flags and logprobs is not None:
                    forced = [value == 0.0 for value in logprobs]
                else:
                    forced = [False] * len(ids)
                events = tracker.feed(
                    ids, forced, top1=chunk.top1, logprobs=logprobs, measured=measured, exits=exits
                )
                for event in events:
                    yield event
                if tracker.stopped_by_string:
                    break  # closing the stream aborts the request in the engine
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if structured:
            for event in tracker.feed([], [], final=True):  # classify the whole thinking
                yield event
        if structured and tracker.state.phase is Phase.ANSWERING:
            answer, logprobs = await self.answer_round(item, output_ids, 0, options)
            for event in tracker.feed(answer, [False] * len(answer), logprobs=logprobs):
                yield event
        for event in tracker.feed([], [], final=True):
            yield event
        yield FinalResult(result=tracker.result(self.model_name))
