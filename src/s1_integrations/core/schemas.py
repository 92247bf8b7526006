"""Checking an answer schema or structural tag before anything reaches the engine.

The schema constrains only the answer, which is generated after the thinking: vLLM would
compile it, and refuse a bad one, only once the thinking has already been paid for. Compiling
it here first, with the grammar compiler vLLM itself uses, turns that into an immediate error.
Verdicts are remembered by the constraint's JSON text: an agent sends the same tools at every
step, and compiling a structural tag of a few tools takes tens of milliseconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

_LOCATION = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")


def check_answer_schema(schema: Any, name: str = "answer_schema") -> dict[str, Any]:
    """The schema as a plain dict, or ``ValueError`` naming (as ``name``) what is wrong."""
    if not isinstance(schema, Mapping):
        kind = type(schema).__name__
        raise ValueError(f"{name}: expected a JSON schema object, got {kind}")
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: not JSON: {e}") from None
    _compile(name, "json", text)
    return dict(schema)


def check_structural_tag(tag: Any) -> dict[str, Any]:
    """A structural tag (``structures`` of ``begin``/``schema``/``end``, and ``triggers``) as
    vLLM takes it, or ``ValueError`` naming what is wrong with it."""
    if not isinstance(tag, Mapping) or set(tag) != {"structures", "triggers"}:
        raise ValueError(
            f"answer_tag: expected {{'structures': [...], 'triggers': [...]}}, got {tag!r}"
        )
    structures, triggers = tag["structures"], tag["triggers"]
    if not all(isinstance(t, str) and t for t in triggers) or not triggers:
        raise ValueError(f"answer_tag.triggers: expected non-empty strings, got {triggers!r}")
    for i, s in enumerate(structures):
        if not isinstance(s, Mapping) or set(s) != {"begin", "schema", "end"}:
            raise ValueError(f"answer_tag.structures[{i}]: expected begin, schema and end")
        if not any(str(s["begin"]).startswith(t) for t in triggers):
            raise ValueError(f"answer_tag.structures[{i}]: begin starts with no trigger")
        check_answer_schema(s["schema"], f"answer_tag.structures[{i}].schema")

    checked = {"structures": [dict(s) for s in structures], "triggers": list(triggers)}
    _compile("answer_tag", "tag", json.dumps(checked))
    return checked


def _compile(name: str, kind: Literal["json", "tag"], text: str) -> None:
    """Compile with xgrammar, as vLLM will; ``ValueError`` naming ``name`` if it cannot."""
    reason = _grammar_error(kind, text)
    if reason is not None:
        raise ValueError(f"{name}: {reason}")


@lru_cache(maxsize=512)
def _grammar_error(kind: Literal["json", "tag"], text: str) -> str | None:
    """Why xgrammar cannot compile this schema or tag (its JSON text), or None."""
    try:
        import xgrammar as xgr
    except ImportError:  # a client without vLLM: the server checks it at the answer
        return None
    try:
        if kind == "json":
            xgr.Grammar.from_json_schema(text, any_whitespace=False)
        else:
            tag = json.loads(text)
            items = [
                xgr.StructuralTagItem(
                    begin=s["begin"], schema=json.dumps(s["schema"]), end=s["end"]
                )
                for s in tag["structures"]
            ]
            xgr.Grammar.from_structural_tag(items, tag["triggers"])
    except Exception as e:
        return _LOCATION.sub("", str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
    return None
