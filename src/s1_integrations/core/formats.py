"""Thinking delimiters, and finding them in a tokenizer and its chat template."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class ThinkingFormatError(ValueError):
    """The model has no thinking format we can recognise, and none was given."""


class TokenizerLike(Protocol):
    chat_template: Any

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...

    def get_vocab(self) -> dict[str, int]: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


class ThinkingFormat(BaseModel):
    """Start and end delimiters of the thinking block.

    ``end`` is what a cap forces; a delimiter that is not one special token is matched as a
    token-id sequence.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Family name, for logs and results.")
    start: str
    end: str

    def start_ids(self, tokenizer: TokenizerLike) -> tuple[int, ...]:
        return tuple(tokenizer.encode(self.start, add_special_tokens=False))

    def end_ids(self, tokenizer: TokenizerLike) -> tuple[int, ...]:
        return tuple(tokenizer.encode(self.end, add_special_tokens=False))


#: ``<think> ... </think>``: Qwen3, QwQ, DeepSeek-R1 and its distills, most open reasoners.
THINK_TAGS = ThinkingFormat(name="think-tags", start="<think>", end="</think>")
#: s1's own format: ``<|im_start|>think ... <|im_start|>answer``.
S1_FORMAT = ThinkingFormat(name="s1", start="<|im_start|>think", end="<|im_start|>answer")

KNOWN_FORMATS = (THINK_TAGS, S1_FORMAT)


def detect_format(tokenizer: TokenizerLike) -> ThinkingFormat:
    """Recognise the thinking format from the tokenizer's vocabulary and chat template.

    The vocabulary decides for the tag family (the tags are special tokens there); the chat
    template decides for s1's format, whose delimiters are ordinary text after ``<|im_start|>``.
    """
    template = tokenizer.chat_template or ""
    if not isinstance(template, str):
        template = " ".join(str(t) for t in template.values()) if isinstance(template, dict) else ""
    vocab = tokenizer.get_vocab()
    if "<|im_start|>think" in template or "im_start|>think" in template:
        return S1_FORMAT
    if THINK_TAGS.start in vocab and THINK_TAGS.end in vocab:
        return THINK_TAGS
    if THINK_TAGS.start in template and THINK_TAGS.end in template:
        return THINK_TAGS
    raise ThinkingFormatError(
        "this model has no recognisable thinking format (no <think>/</think> tokens and no "
        "s1 '<|im_start|>think' in its chat template); pass thinking_format=ThinkingFormat(...)"
    )
