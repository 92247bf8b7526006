"""The tokenizer's own Rust ``encode`` and ``decode``, called directly where provably the same.

A Hugging Face fast tokenizer's Python layers add nothing to the calls made here, but they
cost: vLLM routes every call through a pool of tokenizer copies, and transformers encodes
even one text through the backend's batch call, which hands it to a pool of threads. On a
machine whose cores the engine keeps busy, waiting for that pool took about 0.3 ms per text,
several times a single-prompt call's own preparation. Where the result is provably the
same, these call the backend's single-text methods on the calling thread; they only read
the backend, so threads may share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from s1_integrations.core.formats import TokenizerLike

Encoder = Callable[[Sequence[str]], list[list[int]]]
Decoder = Callable[[list[int]], str]


def _stock_backend(tokenizer: TokenizerLike, method: str) -> Any:
    """The Rust tokenizer behind ``tokenizer`` where ``method`` is transformers' own, or
    ``None`` (another kind of tokenizer, or one that changes how it encodes or decodes)."""
    try:
        from tokenizers import Tokenizer
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # pragma: no cover - both come with vLLM
        return None
    backend = getattr(tokenizer, "_tokenizer", None)
    if (
        isinstance(tokenizer, TokenizersBackend)
        and isinstance(backend, Tokenizer)
        and getattr(type(tokenizer), method, None) is getattr(TokenizersBackend, method)
    ):
        return backend
    return None


def fast_encoder(tokenizer: TokenizerLike) -> Encoder:
    """Each text's ``tokenizer.encode(text, add_special_tokens=False)``.

    Direct where transformers' stock ``_encode_plus`` would call the backend with nothing of
    its own to apply: no truncation or padding set on the backend, and special tokens kept
    whole (what that call sets up before encoding).
    """
    backend = _stock_backend(tokenizer, "_encode_plus")
    if (
        backend is not None
        and backend.truncation is None
        and backend.padding is None
        and not backend.encode_special_tokens
        and not getattr(tokenizer, "split_special_tokens", False)
    ):
        encode = backend.encode

        def fast(texts: Sequence[str]) -> list[list[int]]:
            return [encode(text, add_special_tokens=False).ids for text in texts]

        return fast

    def slow(texts: Sequence[str]) -> list[list[int]]:
        return [list(tokenizer.encode(text, add_special_tokens=False)) for text in texts]

    return slow


def fast_decoder(tokenizer: TokenizerLike) -> Decoder:
    """``tokenizer.decode(ids, skip_special_tokens=False)``.

    A fast tokenizer's ``decode`` is its backend's plus, when
    ``clean_up_tokenization_spaces`` is set, a clean-up: direct where the stock ``_decode``
    runs without one.
    """
    backend = _stock_backend(tokenizer, "_decode")
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", True):
        decode = backend.decode

        def fast(ids: list[int]) -> str:
            return decode(ids, skip_special_tokens=False)

        return fast

    def slow(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False)

    return slow
