"""The rounds strategy: s1's own loop of engine calls, done on token ids.

It needs nothing from the engine beyond plain generation, so it runs on any vLLM server; it
is also the reference the single pass is held to (token-identical under greedy decoding).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from s1_integrations.core.backend import Chunk, GenerationRequest
from s1_integrations.core.forcing import ForcingPlan, ForcingState, Phase
from s1_integrations.core.results import FinalResult, StreamEvent
from s1_integrations.core.sampling import SamplingOptions, sample_seed, signal_logprobs
from s1_integrations.core.strategy import StrategyBase, Tagged
from s1_integrations.core.tracking import Prepared


class Rounds(StrategyBase):
    """Every round advances all unfinished items together, one engine request each."""

    def sources(
        self, items: list[Prepared], options: SamplingOptions, streaming: bool
    ) -> list[AsyncGenerator[Tagged, None]]:
        return [self._tagged(items, options)] if items else []

    async def _tagged(
        self, items: list[Prepared], options: SamplingOptions
    ) -> AsyncGenerator[Tagged, None]:
        async for k, event in self.events(items, options):
            yield items[k].index, event

    async def events(
        self, items: list[Prepared], options: SamplingOptions
    ) -> AsyncGenerator[tuple[int, StreamEvent], None]:
        """s1's algorithm on token ids: every round advances all unfinished prompts together.

        Each round generates only up to the remaining budget, stops at an attempt to end the
        thinking, and appends the extension phrase or the end delimiter as token ids; prefix
        caching means a round re-prefills only what the previous one added. The delimiters the
        processor masks go to vLLM as ``bad_words``, which vLLM applies to each round's own
        output, as the processor applies them to what the model wrote since the last forced
        token. With a soft landing, rounds inside the window also stop at every break token.
        """
        trackers = [self.tracker(item, options) for item in items]
        drivers = [ForcingState(item.plan) for item in items]
        outputs: list[list[int]] = [[] for _ in items]
        longest = [max(map(len, item.plan.delimiter_sequences)) for item in items]
        before_window = [False] * len(items)
        round_no = 0

        def append(
            k: int,
            ids: list[int],
            forced: bool,
            top1: Sequence[float | None] | None = None,
            logprobs: list[float] | None = None,
        ) -> list[StreamEvent]:
            if not forced:
                state = drivers[k]
                for j, token in enumerate(ids):
                    if top1 is not None and top1[j] is not None:
                        state.note_top1(top1[j])  # type: ignore[arg-type]
                    state.observe(token)
            outputs[k].extend(ids)
            return trackers[k].feed(ids, [forced] * len(ids), top1=top1, logprobs=logprobs)

        def within_context(k: int, forced: list[int]) -> list[int]:
            """What of a forced sequence fits the context left; where it does not all fit
            (an attempt or an early exit at the edge), one pass stops there too."""
            room = max(items[k].max_tokens - len(outputs[k]), 0)
            if len(forced) > room:
                forced, drivers[k].phase = forced[:room], Phase.FINISHED
            return forced

        while True:
            jobs: list[tuple[int, GenerationRequest]] = []
            for k, (item, state) in enumerate(zip(items, drivers, strict=True)):
                if state.phase is not Phase.THINKING:
                    continue
                capped = _drain_forced(state)
                if capped:
                    for event in append(k, within_context(k, capped), True):
                        yield k, event
                    continue
                plan = item.plan
                room = item.max_tokens - len(outputs[k])
                stop_ids = list(plan.end_attempt_ids)
                before_window[k] = False
                if plan.cap_from is not None:
                    room = min(room, plan.cap_from - state.thinking_tokens)
                    if plan.landing_from is not None:
                        ahead = plan.landing_from - state.thinking_tokens
                        if ahead <= 0:  # inside the window: any break may end the thinking
                            stop_ids += [*plan.breaks, *plan.weak_breaks]
                        elif max(ahead, longest[k]) < room:
                            # Up to the window (at least a delimiter's length, so trimming an
                            # open delimiter below always leaves progress), break-blind.
                            room = max(ahead, longest[k])
                            before_window[k] = True
                if room <= 0:
                    state.phase = Phase.FINISHED  # out of context while thinking
                    continue
                extra: dict[str, Any] = {}
                if len(plan.end) > 1:
                    # The delimiter may hold special tokens: matched as text, kept in output.
                    extra.update(
                        stop=(self.thinking_format.end,),
                        include_stop=True,
                        skip_special_tokens=False,
                    )
                if plan.measures_top1:
                    # The policy's signal: each step's top-1 (processed) log-probability.
                    extra.update(logprobs=signal_logprobs(options), top1=True)
                base = sample_seed(options.seed, item.sample)
                jobs.append(
                    (
                        k,
                        options.request(
                            item.prompt_ids + outputs[k],
                            room,
                            seed=None if base is None else base + round_no,
                            stop_token_ids=tuple(stop_ids),
                            bad_words=(self.thinking_format.start,),
                            **extra,
                        ),
                    )
                )
            if not jobs:
                break
            completions = await asyncio.gather(*(self.run_once(r) for _, r in jobs))
            round_no += 1
            for (k, _), completion in zip(jobs, completions, strict=True):
                ids = completion.token_ids
                state = drivers[k]
                natural = _strip_end_attempt(ids, completion, items[k].plan)
                attempt = natural is not ids
                top1 = completion.top1
                landed = _landing_cut(state, natural)
                if landed < len(natural):
                    # The landing ended the thinking at a break inside this round: what the
                    # model wrote after it was never part of the output (one pass stops there).
                    natural, attempt = natural[:landed], False
                elif before_window[k] and completion.finish_reason == "length" and not attempt:
                    # Cut at the window's edge, not by a forced token: a delimiter begun here
                    # would be split between two requests, where neither vLLM's bad_words nor
                    # its stop strings see it whole. Its tokens are generated again next round.
                    open_tail = _open_delimiter(natural, items[k].plan)
                    natural = natural[: len(natural) - open_tail]
                exit_cut = state.exit_cut(natural, top1)
                if exit_cut is not None:
                    # The policy's early exit ends the thinking inside this round: one pass
                    # forces the end right after the token that completed the stretch.
                    natural, attempt = natural[:exit_cut], False
                for event in append(k, natural, False, top1[: len(natural)] if top1 else None):
                    yield k, event
                if attempt and state.phase is Phase.THINKING:
                    state.end_attempt()
                    for event in append(k, within_context(k, _drain_forced(state)), True):
                        yield k, event
                elif (
                    completion.finish_reason == "length"
                    and items[k].plan.max_thinking is None
                    and exit_cut is None
                ):
                    state.phase = Phase.FINISHED  # out of context while thinking
        # The answers, all prompts together.
        answering = [k for k, state in enumerate(drivers) if state.phase is Phase.ANSWERING]
        answers = await asyncio.gather(
            *(
                self.answer_round(items[k], outputs[k], drivers[k].answer_tokens, options)
                for k in answering
            )
        )
        for k, (ids, logprobs) in zip(answering, answers, strict=True):
            for event in append(k, ids, False, logprobs=logprobs):
                yield k, event
        for k, tracker in enumerate(trackers):
            for event in tracker.feed([], [], final=True):
                yield k, event
            yield k, FinalResult(result=tracker.result(self.model_name))


def _strip_end_attempt(ids: list[int], completion: Chunk, plan: ForcingPlan) -> list[int]:
    """The round's tokens without the attempt to stop thinking that ended it, if one did.

    A single-token delimiter or end of sequence stops the round as a stop token; a delimiter
    of several tokens stops it as a stop string, and its tokens are the tail of the output.
    """
    if completion.finish_reason != "stop" or not ids:
        return ids
    if ids[-1] in plan.end_attempt_ids:
        return ids[:-1]
    n = len(plan.end)
    if n > 1 and tuple(ids[-n:]) == plan.end:
        return ids[:-n]
    return ids


def _landing_cut(state: ForcingState, ids: list[int]) -> int:
    """How many of a round's tokens stand before the soft landing ends the thinking.

    ``len(ids)`` where it does not: the same test :class:`ForcingState` applies to each
    token, run ahead on the round's tokens before the state sees them.
    """
    start = state.plan.landing_from
    if start is None or state.phase is not Phase.THINKING:
        return len(ids)
    count = state.thinking_tokens
    previous = state.previous_token
    for i, token in enumerate(ids):
        count += 1
        if count > start and state.is_break(token, previous):
            return i + 1
        previous = token
    return len(ids)


def _open_delimiter(ids: list[int], plan: ForcingPlan) -> int:
    """How many trailing tokens of ``ids`` begin a delimiter sequence (a proper prefix)."""
    best = 0
    for seq in plan.delimiter_sequences:
        for n in range(min(len(seq) - 1, len(ids)), best, -1):
            if tuple(ids[-n:]) == seq[:n]:
                best = n
                break
    return best


def _drain_forced(state: ForcingState) -> list[int]:
    """Take the whole forced sequence the state asks for now (rounds append it at once)."""
    ids: list[int] = []
    token = state.pending()
    while token is not None:
        ids.append(token)
        state.observe(token)
        if not state.forcing:
            break
        token = state.pending()
    return ids
