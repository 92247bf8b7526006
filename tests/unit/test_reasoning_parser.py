"""Our vLLM reasoning parser for s1's delimiters (``engine/reasoning.py``), no engine.

Driven as vLLM's chat completion server drives it, over the toy's tokenizer, whose ChatML
vocabulary spells s1's ``<|im_start|>think`` / ``<|im_start|>answer`` in several tokens.
"""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer
from vllm.reasoning import ReasoningParserManager

from conftest import TOY
from s1_integrations.engine.reasoning import S1ReasoningParser
from s1_integrations.engine.server import PARSER_PLUGIN, REASONING_PARSERS

THINKING = "\nguess: 46\nlet me check: 12+34=46."
ANSWER = "\nThe answer is 46."


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(TOY)


@pytest.fixture(scope="module")
def parser(tokenizer: Any) -> S1ReasoningParser:
    return S1ReasoningParser(tokenizer)


def output_ids(tokenizer: Any, parser: S1ReasoningParser) -> tuple[list[int], list[int]]:
    """(thinking ids, the whole output's ids): thinking, s1's end delimiter, the answer."""
    thinking = tokenizer.encode(THINKING, add_special_tokens=False)
    answer = tokenizer.encode(ANSWER, add_special_tokens=False)
    return thinking, thinking + parser.end_ids + answer


def test_the_delimiters_are_several_tokens_and_the_parser_is_registered(parser) -> None:
    assert len(parser.end_ids) > 1 and len(parser.start_ids) > 1
    assert REASONING_PARSERS["s1"] == "s1"
    assert ReasoningParserManager.get_reasoning_parser("s1") is S1ReasoningParser
    assert S1ReasoningParser.__module__ == PARSER_PLUGIN  # what serve tells vLLM to import


def test_ids_split_at_the_end_delimiter_and_thinking_is_counted_exactly(tokenizer, parser) -> None:
    thinking, ids = output_ids(tokenizer, parser)
    assert parser.count_reasoning_tokens(ids) == len(thinking)
    assert parser.extract_content_ids(ids) == ids[len(thinking) + len(parser.end_ids) :]
    assert not parser.is_reasoning_end(thinking)
    assert parser.is_reasoning_end(ids)
    # A prompt whose earlier turn closed its thinking, then opens a new block: not ended.
    assert not parser.is_reasoning_end(ids + parser.start_ids + thinking)
    # Still thinking: every token counts, a delimiter half written included once finished.
    assert parser.count_reasoning_tokens(thinking) == len(thinking)
    assert parser.extract_content_ids(thinking) == []
    # A start delimiter the model writes itself is not thinking.
    assert parser.count_reasoning_tokens(parser.start_ids + ids) == len(thinking)


def test_the_finished_text_splits_with_or_without_special_tokens(tokenizer, parser) -> None:
    _, ids = output_ids(tokenizer, parser)
    for skip in (True, False):
        text = tokenizer.decode(ids, skip_special_tokens=skip)
        assert parser.extract_reasoning(text, None) == (THINKING, ANSWER)
    assert parser.extract_reasoning(THINKING, None) == (THINKING, None)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_streamed_deltas_add_up_to_the_thinking_and_the_answer(tokenizer, parser, step) -> None:
    """Token by token and in bigger steps, so the delimiter is split between deltas."""
    _, ids = output_ids(tokenizer, parser)
    reasoning, content = "", ""
    previous: list[int] = []
    previous_text = ""
    for at in range(0, len(ids), step):
        current = ids[: at + step]
        current_text = tokenizer.decode(current, skip_special_tokens=True)
        delta = parser.extract_reasoning_streaming(
            previous_text,
            current_text,
            current_text[len(previous_text) :],
            previous,
            current,
            current[len(previous) :],
        )
        if delta is not None:
            reasoning += delta.reasoning or ""
            content += delta.content or ""
        previous, previous_text = current, current_text
    assert (reasoning, content) == (THINKING, ANSWER)


def test_the_streamed_end_is_seen_at_the_step_that_completes_the_delimiter(
    tokenizer, parser
) -> None:
    thinking, ids = output_ids(tokenizer, parser)
    ends = [
        k
        for k in range(1, len(ids) + 1)
        if parser.is_reasoning_end_streaming(ids[:k], ids[k - 1 : k])
    ]
    assert ends == [len(thinking) + len(parser.end_ids)]
