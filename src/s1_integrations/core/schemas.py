"""Checking an answer schema before anything reaches the engine.

The schema constrains only the answer, which is generated after the thinking: vLLM would
compile it, and refuse a bad one, only once the thinking has already been paid for. Compiling
it here first, with the grammar compiler vLLM itself uses, turns that into an immediate error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_LOCATION = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")


def check_answer_schema(schema: Any) -> dict[str, Any]:
    """The schema as a plain dict, or ``ValueError`` naming what is wrong with it."""
    if not isinstance(schema, Mapping):
        kind = type(schema).__name__
        raise ValueError(f"answer_schema: expected a JSON schema object, got {kind}")
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as e:
        raise ValueError(f"answer_schema: not JSON: {e}") from None
    try:
        import xgrammar
    except ImportError:  # a vLLM build without it: vLLM checks the schema at the answer
        return dict(schema)
    try:
        xgrammar.Grammar.from_json_schema(text, any_whitespace=False)
    except Exception as e:
        reason = _LOCATION.sub("", str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
        raise ValueError(f"answer_schema: {reason}") from None
    return dict(schema)
