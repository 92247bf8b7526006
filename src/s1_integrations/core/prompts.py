"""Turning a question or a chat into prompt token ids with the thinking block open."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from s1_integrations.core.formats import ThinkingFormat, TokenizerLike
from s1_integrations.core.tokenizing import fast_encoder

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})

#: A prompt: a question, or chat messages as ``{"role": ..., "content": ...}`` mappings.
Prompt = str | Sequence[Mapping[str, Any]]


class PromptError(ValueError):
    """A prompt that cannot be rendered; raised before anything reaches the engine."""


_PASSED_THROUGH = ("tool_calls", "tool_call_id", "name")


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if len(messages) == 0:
        raise PromptError("messages: the list is empty; give at least one message")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise PromptError(f"messages[{i}]: expected a mapping, got {type(message).__name__}")
        role = message.get("role")
        content = message.get("content")
        if role not in ROLES:
            raise PromptError(f"messages[{i}].role: {role!r} is not one of {sorted(ROLES)}")
        if not isinstance(content, str):
            raise PromptError(f"messages[{i}].content: expected text, got {type(content).__name__}")
        entry: dict[str, Any] = {"role": str(role), "content": content}
        for key in _PASSED_THROUGH:  # tool-call turns, for templates that render them
            if message.get(key) is not None:
                entry[key] = message[key]
        checked.append(entry)
    if all(not m["content"].strip() for m in checked):
        raise PromptError("messages: every message is empty")
    return checked


def validate_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI-style tool specs, ``{"type": "function", "function": {"name": ..., ...}}``."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise PromptError(f"tools: expected a list of tool specs, got {type(tools).__name__}")
    checked = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise PromptError(f"tools[{i}]: expected a mapping, got {type(tool).__name__}")
        if tool.get("type", "function") != "function":
            raise PromptError(f"tools[{i}].type: {tool.get('type')!r} is not 'function'")
        function = tool.get("function")
        if not isinstance(function, Mapping):
            raise PromptError(f"tools[{i}].function: missing; expected {{'name': ..., ...}}")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise PromptError(f"tools[{i}].function.name: expected a non-empty string")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise PromptError(f"tools[{i}].function.parameters: expected a JSON schema object")
        checked.append(dict(tool))
    return checked


def render_prompt(
    prompt: Prompt,
    tokenizer: TokenizerLike,
    fmt: ThinkingFormat,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[int]:
    """The prompt's token ids: :func:`render_text`, encoded
    (:func:`~s1_integrations.core.tokenizing.fast_encoder`)."""
    return fast_encoder(tokenizer)([render_text(prompt, tokenizer, fmt, tools)])[0]


def render_text(
    prompt: Prompt,
    tokenizer: TokenizerLike,
    fmt: ThinkingFormat,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Apply the chat template, then open the thinking block unless the template did.

    Opening it ourselves (as s1 does with ``<|im_start|>think``) makes thinking start at the
    first generated token, so counting is unambiguous.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptError("prompt: the question is empty")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence):
        messages = validate_messages(cast(Sequence[Mapping[str, Any]], prompt))
    else:
        raise PromptError(
            f"prompt: expected a string or a list of messages, got {type(prompt).__name__}"
        )
    kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
    if tools is not None:
        checked = validate_tools(tools)
        if checked:
            kwargs["tools"] = checked  # the template renders them, if it can
    text = tokenizer.apply_chat_template(messages, **kwargs)
    if not text.rstrip().endswith(fmt.start):
        text = text + fmt.start
    return str(text)
