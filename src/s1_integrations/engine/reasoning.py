"""A vLLM reasoning parser for thinking delimiters of any length, such as s1's.

vLLM's own parsers find the thinking by single special tokens (``<think>``, ``</think>``).
s1-32B thinks between ``<|im_start|>think`` and ``<|im_start|>answer``, several tokens each,
whose ``<|im_start|>`` a chat completion's text does not even show (it is a special token). This
parser finds the end delimiter by its token ids, as the budget's processor forces it, so chat
completions return s1's thinking in ``reasoning`` apart from ``content``, streamed or not, and
count it in ``usage``. ``s1-integrations serve`` loads it (``--reasoning-parser-plugin
s1_integrations.engine.reasoning``) and picks it by name for the s1 format.

As with the budget's processor, the thinking block is open from the first generated token
(``serve`` adds the opening to the chat template); a start delimiter the model writes itself is
skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.reasoning import ReasoningParser, ReasoningParserManager

from s1_integrations.core.formats import S1_FORMAT, ThinkingFormat
from s1_integrations.engine.server import REASONING_PARSERS


def find(ids: Sequence[int], needle: Sequence[int], start: int = 0) -> int:
    """The first index at or after ``start`` where ``needle`` occurs in ``ids``, or -1.

    Called on every streamed step over the whole output, so only positions holding the
    needle's first token are compared whole.
    """
    first, whole, n = needle[0], list(needle), len(needle)
    for i in range(start, len(ids) - n + 1):
        if ids[i] == first and list(ids[i : i + n]) == whole:
            return i
    return -1


def partial_suffix(ids: Sequence[int], needle: Sequence[int]) -> int:
    """Length of the longest end of ``ids`` that is a proper beginning of ``needle``."""
    for n in range(min(len(ids), len(needle) - 1), 0, -1):
        if list(ids[len(ids) - n :]) == list(needle[:n]):
            return n
    return 0


class DelimitedReasoningParser(ReasoningParser):
    """Thinking up to an end delimiter of one or more tokens; the answer after it."""

    #: The format this parser reads (set by each registered subclass).
    thinking_format: ThinkingFormat = S1_FORMAT

    def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tokenizer, *args, **kwargs)
        fmt = self.thinking_format
        self.start_ids = list(tokenizer.encode(fmt.start, add_special_tokens=False))
        self.end_ids = list(tokenizer.encode(fmt.end, add_special_tokens=False))
        if not self.start_ids or not self.end_ids:
            raise ValueError(f"the tokenizer cannot encode {fmt.start!r} and {fmt.end!r}")

    @property
    def reasoning_start_str(self) -> str:
        return self.thinking_format.start

    @property
    def reasoning_end_str(self) -> str:
        return self.thinking_format.end

    # -- token ids ------------------------------------------------------------------------

    def _thinking_from(self, ids: Sequence[int]) -> int:
        """Where the thinking starts: after a start delimiter the output opens with."""
        n = len(self.start_ids)
        return n if list(ids[:n]) == self.start_ids else 0

    def _split(self, ids: Sequence[int]) -> tuple[int, int, int | None]:
        """(thinking start, thinking end, answer start or None while still thinking).

        While thinking, the end leaves out a trailing part of the end delimiter, which is not
        known to be thinking until the next tokens say so.
        """
        begin = self._thinking_from(ids)
        at = find(ids, self.end_ids, begin)
        if at >= 0:
            return begin, at, at + len(self.end_ids)
        return begin, len(ids) - partial_suffix(ids, self.end_ids), None

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        """Whether the last delimiter in ``input_ids`` closes the thinking."""
        last_end = -1
        i = find(input_ids, self.end_ids)
        while i >= 0:
            last_end = i
            i = find(input_ids, self.end_ids, i + 1)
        if last_end < 0:
            return False
        return find(input_ids, self.start_ids, last_end + len(self.end_ids)) < 0

    def is_reasoning_end_streaming(
        self, input_ids: Sequence[int], delta_ids: Iterable[int]
    ) -> bool:
        delta = list(delta_ids)
        tail = list(input_ids[-(len(delta) + len(self.end_ids) - 1) :]) if delta else []
        return find(tail, self.end_ids) >= 0

    def extract_content_ids(self, input_ids: list[int]) -> list[int]:
        _, _, answer = self._split(input_ids)
        return [] if answer is None else list(input_ids[answer:])

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        begin, end, _ = self._split(token_ids)
        return max(0, end - begin)

    # -- text -----------------------------------------------------------------------------

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.model_tokenizer.decode(list(ids), skip_special_tokens=True))

    def extract_reasoning(self, model_output: str, request: Any) -> tuple[str | None, str | None]:
        """The finished output's text split at the end delimiter (special tokens may be gone
        from the text, so the delimiter's text without them is looked for too)."""
        fmt = self.thinking_format
        text = model_output.removeprefix(fmt.start)
        for end in dict.fromkeys((fmt.end, self._decode(self.end_ids))):
            if end and end in text:
                reasoning, _, content = text.partition(end)
                return reasoning, content or None
        return text, None

    def extract_reasoning_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
    ) -> DeltaMessage | None:
        """This step's share of the thinking and of the answer, found from the token ids."""
        begin, end, answer = self._split(current_token_ids)
        seen = len(previous_token_ids)
        if answer is not None and answer <= seen:  # the answer had begun: all of it is answer
            return DeltaMessage(content=delta_text) if delta_text else None
        # The earlier steps had no whole delimiter: they handed on the thinking up to a held
        # beginning of one.
        was_end = seen - partial_suffix(previous_token_ids, self.end_ids)
        steady = was_end == seen and end == len(current_token_ids)
        if answer is None and steady and begin == 0:
            return DeltaMessage(reasoning=delta_text) if delta_text else None
        # A boundary near this step (a delimiter begun, held, completed): decode the pieces.
        start = max(was_end, begin)
        reasoning = self._decode(current_token_ids[start:end]) if end > start else ""
        content = self._decode(current_token_ids[answer:]) if answer is not None else ""
        if not reasoning and not content:
            return None
        return DeltaMessage(reasoning=reasoning or None, content=content or None)


class S1ReasoningParser(DelimitedReasoningParser):
    """s1's ``<|im_start|>think`` ... ``<|im_start|>answer``."""

    thinking_format = S1_FORMAT


ReasoningParserManager.register_module(REASONING_PARSERS[S1_FORMAT.name], module=S1ReasoningParser)
