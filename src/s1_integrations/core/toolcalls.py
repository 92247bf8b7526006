"""Tool calls for both adapters: forced choices as answer schemas, and calls read from answers.

A reasoning model should think freely and only then commit to a call, so a forced tool choice
(LangChain's ``tool_choice="any"`` or a name, LlamaIndex's ``tool_required=True`` or
``tool_choice``) becomes a JSON schema that vLLM's structured outputs hold the *answer* to,
after the thinking. With a free choice the model decides, and ``<tool_call>{json}</tool_call>``
blocks in its answer (the Qwen/Hermes format) are read as calls, several when it writes several;
the generator holds each such block to one of the tools (:func:`tool_call_tag`).
Both adapters use these functions, so a call means the same in both.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
_OPEN = "<tool_call>"
_CLOSE = "</tool_call>"


class ToolCall(BaseModel):
    """One call the model made: which tool, with which arguments, under which id."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any]


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def normalise_tool_choice(choice: Any, names: Sequence[str]) -> str:
    """``"auto"``, ``"any"`` (some tool), ``"none"`` or one tool's name.

    Takes every spelling the frameworks use: None/"auto", "any"/"required"/True,
    "none"/False, a name, ``{"type": "function", "function": {"name": ...}}`` or
    ``{"name": ...}``.
    """
    if choice is None or choice == "auto":
        return "auto"
    if choice is True or choice in ("any", "required"):
        return "any"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, Mapping):
        function = choice.get("function")
        choice = (function.get("name") if isinstance(function, Mapping) else None) or choice.get(
            "name"
        )
    if isinstance(choice, str) and choice in names:
        return choice
    raise ValueError(
        f"tool_choice: {choice!r} is not 'auto', 'any', 'required', 'none' or one of {list(names)}"
    )


def arguments_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema of ``tool``'s arguments (an empty object where it declares none)."""
    return dict(tool["function"].get("parameters") or {"type": "object", "properties": {}})


def call_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema of one call to ``tool``: ``{"name": <const>, "arguments": {...}}``."""
    name = tool["function"]["name"]
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": arguments_schema(tool)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_call_tag(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A structural tag holding every ``<tool_call>`` block of a free answer to a real call.

    The answer stays free text; once the model writes ``<tool_call>``, vLLM's structured
    outputs let it continue only as a call to one of ``tools`` (its name spelled out, its
    arguments in the tool's schema) in the chat template's Hermes form, so a free choice
    yields calls the frameworks can run even from a model that cannot copy names.
    """
    return {
        "structures": [
            {
                "begin": f'{_OPEN}\n{{"name": {json.dumps(name)}, "arguments": ',
                "schema": arguments_schema(tool),
                "end": f"}}\n{_CLOSE}",
            }
            for tool, name in zip(tools, tool_names(tools), strict=True)
        ],
        "triggers": [_OPEN],
    }


def forced_call_schema(tools: Sequence[Mapping[str, Any]], choice: str) -> dict[str, Any] | None:
    """A forced choice (normalised) as the schema the answer must follow; None when free."""
    if not tools or choice in ("auto", "none"):
        return None
    if choice == "any":
        calls = [call_schema(t) for t in tools]
        return calls[0] if len(calls) == 1 else {"anyOf": calls}
    for tool in tools:
        if tool["function"]["name"] == choice:
            return call_schema(tool)
    raise ValueError(f"tool_choice: no tool named {choice!r}")


def answer_schema_from_response_format(response_format: Any) -> dict[str, Any]:
    """OpenAI's ``response_format`` (what LangChain's ``create_agent`` binds) as an answer schema.

    ``{"type": "json_schema", "json_schema": {"schema": ...}}`` and ``{"type": "json_object"}``
    are understood; anything else is refused (not dropped).
    """
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_object":
            return {"type": "object"}
        spec = response_format.get("json_schema")
        if kind == "json_schema" and isinstance(spec, Mapping) and "schema" in spec:
            return dict(spec["schema"])
    raise ValueError(
        "response_format: expected {'type': 'json_schema', 'json_schema': {'schema': ...}} "
        f"or {{'type': 'json_object'}}, got {response_format!r}"
    )


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _as_call(candidate: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(candidate, dict) or candidate.get("name") not in names:
        return None
    args = candidate.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    return ToolCall(id=new_call_id(), name=candidate["name"], arguments=args)


def parse_tool_calls(
    answer: str, tools: Sequence[Mapping[str, Any]] | None, choice: str
) -> tuple[str, list[ToolCall]]:
    """(the answer's text without its calls, the calls), for a normalised ``choice``.

    A forced choice constrained the whole answer to one call's JSON; a free choice reads every
    ``<tool_call>`` block (parallel calls when there are several) and leaves the rest as text.
    A block that does not parse, or names no bound tool, stays in the text, so nothing the
    model wrote disappears.
    """
    if not tools or choice == "none":
        return answer, []
    names = set(tool_names(tools))
    if choice != "auto":
        try:
            call = _as_call(json.loads(answer), names)
        except json.JSONDecodeError:
            call = None
        return ("", [call]) if call is not None else (answer, [])
    calls: list[ToolCall] = []
    kept: list[str] = []
    last = 0
    for match in TOOL_CALL_RE.finditer(answer):
        try:
            call = _as_call(json.loads(match.group(1)), names)
        except json.JSONDecodeError:
            call = None
        if call is None:
            continue
        calls.append(call)
        kept.append(answer[last : match.start()])
        last = match.end()
    kept.append(answer[last:])
    return ("".join(kept).strip() if calls else answer), calls


class ToolCallStreamFilter:
    """Answer deltas with ``<tool_call>`` blocks held back (they arrive as calls at the end).

    Text that might be the start of a block is held until it is known not to be; everything
    else streams as it comes. A complete block that is no call to a bound tool is let through
    as text, as :func:`parse_tool_calls` leaves it, so the deltas add up to the final text.
    :meth:`flush` returns what was held when the stream ends.
    """

    def __init__(self, tools: Sequence[Mapping[str, Any]]) -> None:
        self._names = set(tool_names(tools))
        self._held = ""

    def feed(self, text: str) -> str:
        self._held += text
        out = []
        while self._held:
            start = self._held.find(_OPEN)
            if start == -1:
                keep = _partial_suffix(self._held, _OPEN)
                out.append(self._held[: len(self._held) - keep])
                self._held = self._held[len(self._held) - keep :]
                break
            out.append(self._held[:start])
            end = self._held.find(_CLOSE, start)
            if end == -1:
                self._held = self._held[start:]
                break
            block = self._held[start : end + len(_CLOSE)]
            self._held = self._held[end + len(_CLOSE) :]
            match = TOOL_CALL_RE.fullmatch(block)
            try:
                call = _as_call(json.loads(match.group(1)), self._names) if match else None
            except json.JSONDecodeError:
                call = None
            if call is None:
                out.append(block)
        return "".join(out)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


class ToolPlan(BaseModel):
    """How one call treats its tools: what the template sees, what holds the answer, how the
    answer is read back.

    ``read``: ``"text"`` (no tools: the answer is text), ``"tags"`` (free choice: calls are
    ``<tool_call>`` blocks in the text), ``"call"`` (forced: the answer is one call's JSON),
    ``"call_or_answer"`` (free choice beside an answer schema: the answer is either a call or
    the schema's JSON, and vLLM holds it to one of them).
    """

    model_config = ConfigDict(frozen=True)

    tools: list[dict[str, Any]] | None = None
    answer_schema: dict[str, Any] | None = None
    read: str = "text"
    parallel: bool = True

    @property
    def structured(self) -> bool:
        """The answer is JSON that only makes sense whole (held back from streams)."""
        return self.answer_schema is not None

    def read_answer(self, answer: str) -> tuple[str, list[ToolCall]]:
        """(text, calls) of a finished answer; one call at most when parallel calls are off."""
        if self.read == "text" or not self.tools:
            return answer, []
        choice = "auto" if self.read == "tags" else "any"
        text, calls = parse_tool_calls(answer, self.tools, choice)
        return text, calls if self.parallel else calls[:1]


def plan_tools(
    tools: Sequence[Mapping[str, Any]] | None,
    choice: Any,
    answer_schema: dict[str, Any] | None,
    parallel: bool = True,
) -> ToolPlan:
    """The :class:`ToolPlan` for validated tool specs, a tool choice and an answer schema."""
    if not tools:
        if choice not in (None, "auto", "none", False):
            raise ValueError(f"tool_choice: {choice!r} given, but no tools are bound")
        return ToolPlan(answer_schema=answer_schema)
    specs = [dict(t) for t in tools]
    normalised = normalise_tool_choice(choice, tool_names(specs))
    if normalised == "none":
        return ToolPlan(answer_schema=answer_schema)
    forced = forced_call_schema(specs, normalised)
    if forced is not None:
        if answer_schema is not None:
            raise ValueError(
                f"tool_choice={choice!r} forces the answer to be a tool call, and an answer "
                "schema (or response_format) asks for something else; give one of them"
            )
        return ToolPlan(tools=specs, answer_schema=forced, read="call", parallel=parallel)
    if answer_schema is not None:
        either = {"anyOf": [answer_schema, *(call_schema(t) for t in specs)]}
        return ToolPlan(tools=specs, answer_schema=either, read="call_or_answer", parallel=parallel)
    return ToolPlan(tools=specs, read="tags", parallel=parallel)
