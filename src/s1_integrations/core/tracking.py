"""From a growing list of output token ids to stream events and, at the end, a result."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from s1_integrations.core.budget import ThinkingBudget
from s1_integrations.core.forcing import ForcingPlan, Phase, Replayer
from s1_integrations.core.formats import TokenizerLike
from s1_integrations.core.results import (
    AnswerDelta,
    BudgetForcedResult,
    ExtensionInserted,
    Strategy,
    StreamEvent,
    ThinkingDelta,
)
from s1_integrations.core.tokenizing import Decoder, fast_decoder

#: Tokens a decoding window may span before it slides forward (see :class:`IncrementalText`).
_WINDOW_TOKENS = 16


class IncrementalText:
    """Decodes a growing id list into text deltas without re-decoding everything each time.

    The prefix/read offsets (as in vLLM's and Hugging Face's streamers) keep multi-byte
    characters whole: a delta is only released once it no longer ends in a partial character.
    The text of the window up to the read offset is remembered rather than decoded again, so a
    delta costs one decode of a short window; the window's start catches up with the read
    offset once it spans more than a few tokens.
    """

    def __init__(self, tokenizer: TokenizerLike, decode: Decoder | None = None) -> None:
        self._tokenizer = tokenizer
        self._decode_ids = decode or fast_decoder(tokenizer)
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0
        self._read = 0
        self._window = ""  # the decoded text of ids[_prefix:_read]

    def _decode(self, ids: list[int]) -> str:
        return self._decode_ids(ids)

    def extend(self, ids: list[int]) -> str:
        if not ids:
            return ""
        self.ids.extend(ids)
        after = self._decode_ids(self.ids[self._prefix :])
        if len(after) > len(self._window) and not after.endswith("\ufffd"):
            delta = after[len(self._window) :]
            read, self._read = self._read, len(self.ids)
            self._window = after
            if read > self._prefix and self._read - self._prefix > _WINDOW_TOKENS:
                # Slide: the previous delta's tokens become the context, as they would be if
                # the window moved on every delta.
                self._prefix = read
                self._window = self._decode_ids(self.ids[read : self._read])
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        if self._prefix == 0 and self._read == len(self.ids) and self.text == self._window:
            return ""  # the text is already the decoding of all ids, in one piece
        full = self._decode_ids(self.ids)
        delta = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text = full
        return delta


@dataclass
class Prepared:
    """One prompt ready for the engine: its ids, budget and plan, and the strategy to use."""

    index: int
    prompt_ids: list[int]
    budget: ThinkingBudget
    plan: ForcingPlan
    strategy: Strategy
    max_tokens: int
    #: Which of the prompt's n samples this request is (its seed is offset by it).
    sample: int = 0
    #: Whether the answer tokens' log-probabilities are wanted (``vote="confidence"``).
    answer_logprobs: bool = False


class OutputTracker:
    """Classifies one request's output as it arrives and turns it into events.

    Both strategies feed it the same way: token ids plus, for each, whether it was forced.
    """

    def __init__(
        self,
        item: Prepared,
        tokenizer: TokenizerLike,
        phrases_text: tuple[str, ...],
        stop: tuple[str, ...] = (),
        decode: Decoder | None = None,
    ) -> None:
        """``decode``: the tokenizer's decoder (:func:`fast_decoder`), where a caller that
        makes many trackers has it already."""
        self.item = item
        self.replayer = Replayer(item.plan)
        decode = decode or fast_decoder(tokenizer)
        self.thinking = IncrementalText(tokenizer, decode)
        self.answer = IncrementalText(tokenizer, decode)
        self._phrases_text = phrases_text
        self._stop = stop
        self._holdback = max((len(s) for s in stop), default=1) - 1
        self._emitted_answer = 0
        self._extensions_emitted = 0
        self.stopped_by_string = False
        self._logprobs: list[float | None] = []  # per fed token, where the engine gave one

    @property
    def state(self):
        return self.replayer.state

    def feed(
        self,
        ids: list[int],
        forced: list[bool],
        final: bool = False,
        top1: Sequence[float | None] | None = None,
        logprobs: list[float] | None = None,
        measured: Mapping[int, float | None] | None = None,
        exits: Collection[int] | None = None,
    ) -> list[StreamEvent]:
        self.replayer.feed(ids, forced, final, top1, measured, exits)
        if self.item.answer_logprobs:
            self._logprobs.extend(logprobs if logprobs is not None else [None] * len(ids))
        state = self.state
        events: list[StreamEvent] = []
        while self._extensions_emitted < len(state.extension_positions):
            at = state.extension_positions[self._extensions_emitted]
            events += self._thinking_upto(at)
            phrase = self._phrases_text[self._extensions_emitted % len(self._phrases_text)]
            events.append(
                ExtensionInserted(
                    phrase=phrase,
                    index=self._extensions_emitted,
                    thinking_tokens=len(self.thinking.ids),
                    signal=state.extension_signals[self._extensions_emitted],
                )
            )
            self._extensions_emitted += 1
        events += self._thinking_upto(self._thinking_visible_end(final))
        if final:
            delta = self.thinking.flush()
            if delta:
                events.append(ThinkingDelta(text=delta))
        events += self._answer_events(final)
        return events

    def _thinking_visible_end(self, final: bool) -> int:
        state = self.state
        if state.thinking_end is not None:
            return state.thinking_end
        end = state.position
        if state.phase is Phase.FINISHED and end and self.replayer.ids[end - 1] in state.plan.eos:
            end -= 1
        if state.phase is Phase.THINKING and not final:
            end -= len(state.plan.end) - 1  # could still become the end delimiter
        return max(end, len(self.thinking.ids))

    def _thinking_upto(self, end: int) -> list[StreamEvent]:
        start = len(self.thinking.ids)
        delta = self.thinking.extend(self.replayer.ids[start:end]) if end > start else ""
        return [ThinkingDelta(text=delta)] if delta else []

    def answer_ids_available(self) -> list[int]:
        state = self.state
        if state.answer_start is None:
            return []
        ids = self.replayer.ids[state.answer_start : state.position]
        if ids and ids[-1] in state.plan.eos:
            ids = ids[:-1]
        return ids

    def _answer_events(self, final: bool) -> list[StreamEvent]:
        if self.stopped_by_string:
            return []
        ids = self.answer_ids_available()
        new = ids[len(self.answer.ids) :]
        self.answer.extend(new)
        if final:
            self.answer.flush()
        text = self.answer.text
        if self._stop:
            cut = _first_stop(text, self._stop)
            if cut is not None:
                self._truncate_at_stop()
                text = self.answer.text
                final = True
        release = len(text) if final else max(self._emitted_answer, len(text) - self._holdback)
        delta = text[self._emitted_answer : release]
        self._emitted_answer = release
        return [AnswerDelta(text=delta)] if delta else []

    def _truncate_at_stop(self) -> None:
        """Keep answer tokens up to the one completing a stop string; text up to the string."""
        ids = self.answer.ids
        decoder = self.answer._decode
        keep = len(ids)
        for n in range(1, len(ids) + 1):
            if _first_stop(decoder(ids[:n]), self._stop) is not None:
                keep = n
                break
        text = decoder(ids[:keep])
        cut = _first_stop(text, self._stop)
        self.answer.ids = ids[:keep]
        self.answer.text = text[:cut] if cut is not None else text
        self.stopped_by_string = True

    def _answer_logprob(self) -> float | None:
        """Mean log-probability of the answer tokens, when every one of them came with one."""
        start = self.state.answer_start
        count = len(self.answer.ids)
        if not self.item.answer_logprobs or start is None or count == 0:
            return None
        values = self._logprobs[start : start + count]
        if len(values) < count or any(v is None for v in values):
            return None
        return sum(values) / count  # type: ignore[arg-type]

    def result(self, model: str) -> BudgetForcedResult:
        state = self.state
        item = self.item
        thinking_ids = list(self.thinking.ids)
        answer_ids = list(self.answer.ids)
        end = (state.answer_start or 0) + len(answer_ids)
        token_ids = list(self.replayer.ids)
        if self.stopped_by_string:
            token_ids = token_ids[:end]
        elif state.answer_capped:
            token_ids = token_ids[: state.position - 1]  # the forced end of sequence
        if self.stopped_by_string:
            finish = "stop"
        elif state.answer_capped:
            finish = "length"
        else:
            finish = "stop" if state.phase is Phase.FINISHED else "length"
        return BudgetForcedResult(
            thinking=self.thinking.text,
            answer=self.answer.text,
            prompt_tokens=len(item.prompt_ids),
            thinking_tokens=len(thinking_ids),
            answer_tokens=len(answer_ids),
            extensions=state.inserted,
            thinking_ended_by=state.ended_by,  # type: ignore[arg-type]
            finish_reason=finish,  # type: ignore[arg-type]
            budget=item.budget,
            strategy=item.strategy,
            model=model,
            prompt_token_ids=list(item.prompt_ids),
            token_ids=token_ids,
            thinking_token_ids=thinking_ids,
            answer_token_ids=answer_ids,
            extension_positions=list(state.extension_positions),
            answer_logprob=self._answer_logprob(),
            extension_signals=list(state.extension_signals),
            thinking_end_signal=state.end_signal,
        )


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
