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


def bad_word_ids(tokenizer: TokenizerLike, words: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """The token-id sequences vLLM's ``SamplingParams(bad_words=words)`` suppresses.

    The same rule as vLLM's ``update_from_tokenizer`` (0.32): each word as written (leading
    whitespace stripped), and with a leading space where that gives another first token of
    the same length. The single-pass processor masks exactly these sequences while the rounds
    strategy hands the words to vLLM, so the two strategies suppress the same tokens.
    """
    sequences: list[tuple[int, ...]] = []
    for word in words:
        for prefix in ("", " "):
            ids = tuple(tokenizer.encode(prefix + word.lstrip(), add_special_tokens=False))
            if not ids:
                if not prefix:
                    raise ValueError(f"thinking delimiter {word!r} encodes to no tokens")
                continue
            if not prefix or (ids[0] != sequences[-1][0] and len(ids) == len(sequences[-1])):
                sequences.append(ids)
    return tuple(dict.fromkeys(sequences))


#: Characters that end a sentence where they end a token (ASCII and full-width forms).
SENTENCE_ENDS = ".!?。！？"


class BreakTokens(BaseModel):
    """A vocabulary's natural places to end the thinking, for the soft landing.

    ``breaks`` end a line or a sentence on their own (text ending in a newline, or in sentence
    punctuation after a letter: ``"end."``). ``weak`` are bare sentence punctuation (``"."``,
    ``" ?"``), which end a sentence except after a token ending in a digit (``digits``): "3.5"
    and "5!" are no sentence ends.
    """

    model_config = ConfigDict(frozen=True)

    breaks: tuple[int, ...]
    weak: tuple[int, ...]
    digits: tuple[int, ...]


def break_tokens(tokenizer: Any, delimiters: tuple[tuple[int, ...], ...] = ()) -> BreakTokens:
    """Classify every ordinary token of ``tokenizer`` by how its decoded text ends.

    Special tokens never break. Nor does a token that sits inside a delimiter sequence before
    its last token: ending a thinking round there would split that delimiter between two
    engine requests (the rounds strategy stops a round at every break in the window).
    """
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special.update(i for i, token in added.items() if getattr(token, "special", False))
    inner = {t for seq in delimiters for t in seq[:-1]}
    breaks: list[int] = []
    weak: list[int] = []
    digits: list[int] = []
    for i, text in enumerate(texts):
        if i in special or not text or "\ufffd" in text:
            continue
        if text[-1].isdigit():
            digits.append(i)
        if i in inner:
            continue
        if text.endswith(("\n", "\r")):
            breaks.append(i)
        elif text[-1] in SENTENCE_ENDS:
            body = text.strip()
            if all(c in SENTENCE_ENDS for c in body):
                weak.append(i)
            else:
                before = body.rstrip(SENTENCE_ENDS)[-1]
                if not before.isdigit():
                    breaks.append(i)
    return BreakTokens(breaks=tuple(breaks), weak=tuple(weak), digits=tuple(digits))
