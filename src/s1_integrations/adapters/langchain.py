"""LangChain chat model over a :class:`BudgetForcedGenerator`.

The thinking travels as LangChain carries reasoning today: ``additional_kwargs
["reasoning_content"]`` (which ``AIMessage.content_blocks`` turns into a standard ``reasoning``
block), ``usage_metadata.output_token_details.reasoning``, and the budget figures in
``response_metadata``. The adapter adds no semantics of its own: it translates messages in
and results out.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from s1_integrations.core.budget import ThinkingBudget
from s1_integrations.core.generator import BudgetForcedGenerator, shared_generator
from s1_integrations.core.prompts import validate_tools
from s1_integrations.core.results import (
    AnswerDelta,
    BudgetForcedResult,
    ExtensionInserted,
    FinalResult,
    ThinkingDelta,
)
from s1_integrations.core.schemas import check_answer_schema

PROVIDER = "s1_integrations"
_BUDGET_FIELDS = tuple(ThinkingBudget.model_fields)
_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


class ChatBudgetForced(BaseChatModel):
    """A reasoning chat model with an s1 thinking budget, on vLLM in-process or vLLM servers.

    ``max_thinking_tokens`` caps the thinking; ``min_thinking_tokens`` and ``extensions``
    make the model think longer by replacing its attempts to stop with "Wait". Override any
    of them per call with ``thinking_budget=ThinkingBudget(...)`` or the field names.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model: str | None = Field(default=None, description="Model path or id; None: toy reasoner.")
    engine_args: dict[str, Any] = Field(default_factory=dict)
    generator: BudgetForcedGenerator | None = Field(default=None, exclude=True)

    max_thinking_tokens: int | None = None
    min_thinking_tokens: int = 0
    extensions: int = 0
    extension_phrases: tuple[str, ...] = ("Wait",)
    conclusion: str | None = None
    max_answer_tokens: int = 1024

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    strategy: Literal["single_pass", "rounds"] = "single_pass"

    _budget_check: ThinkingBudget = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._budget_check = self._default_budget()  # fail at construction, not at call

    # -- configuration --------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "s1-budget-forced"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "strategy": self.strategy,
            "temperature": self.temperature,
            **self._default_budget().model_dump(),
        }

    @property
    def model_name(self) -> str:
        if self.generator is not None:
            return self.generator.model_name
        return self.model or "s1-toy-reasoner"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        budget = self._budget(kwargs)
        params["ls_max_tokens"] = (budget.max_thinking_tokens or 0) + budget.max_answer_tokens
        if stop := stop or self.stop:
            params["ls_stop"] = stop
        return params

    def _get_generator(self) -> BudgetForcedGenerator:
        if self.generator is None:
            self.generator = shared_generator(self.model, self.engine_args)
        return self.generator

    def _default_budget(self) -> ThinkingBudget:
        return ThinkingBudget(**{f: getattr(self, f) for f in _BUDGET_FIELDS})

    def _budget(self, kwargs: dict[str, Any]) -> ThinkingBudget:
        given = kwargs.get("thinking_budget")
        if isinstance(given, ThinkingBudget):
            return given
        fields = self._default_budget().model_dump()
        if isinstance(given, dict):
            fields.update(given)
        elif given is not None:
            raise TypeError("thinking_budget must be a ThinkingBudget or a dict")
        fields.update({f: kwargs[f] for f in _BUDGET_FIELDS if f in kwargs})
        return ThinkingBudget(**fields)

    def _call_options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(kwargs) - _KNOWN_CALL_KWARGS
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {sorted(unknown)}")
        options: dict[str, Any] = {
            "strategy": kwargs.get("strategy", self.strategy),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "seed": kwargs.get("seed", self.seed),
        }
        if stop := stop or self.stop:
            options["stop"] = tuple(stop)
        tools = kwargs.get("tools")
        choice = _tool_choice_schema(tools, kwargs.get("tool_choice"))
        schema = kwargs.get("answer_schema") or choice
        if schema is not None:
            options["answer_schema"] = schema
        if tools and kwargs.get("tool_choice") != "none":
            options["tools"] = tools
        return options

    # -- generation -----------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chat = messages_to_dicts(messages)
        budget = self._budget(kwargs)
        options = self._call_options(stop, kwargs)
        (result,) = self._get_generator().generate([chat], [budget], **options)
        return self._chat_result(result, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chat = messages_to_dicts(messages)
        budget = self._budget(kwargs)
        options = self._call_options(stop, kwargs)
        (result,) = await self._get_generator().agenerate([chat], [budget], **options)
        return self._chat_result(result, kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chat = messages_to_dicts(messages)
        budget = self._budget(kwargs)
        options = self._call_options(stop, kwargs)
        for event in self._get_generator().stream(chat, budget, **options):
            chunk = self._chunk(event, kwargs)
            if chunk is None:
                continue
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chat = messages_to_dicts(messages)
        budget = self._budget(kwargs)
        options = self._call_options(stop, kwargs)
        async for event in self._get_generator().astream(chat, budget, **options):
            chunk = self._chunk(event, kwargs)
            if chunk is None:
                continue
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """All inputs go to the engine at once (one engine batch), not through a thread pool."""
        if not inputs:
            return []
        return self._get_generator().engine.run_sync(
            self.abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        )

    # -- results to messages --------------------------------------------------------------

    def _metadata(self, result: BudgetForcedResult) -> dict[str, Any]:
        return {
            "model_name": result.model,
            "model_provider": PROVIDER,
            "finish_reason": result.finish_reason,
            "thinking_tokens": result.thinking_tokens,
            "extensions": result.extensions,
            "thinking_ended_by": result.thinking_ended_by,
            "budget_capped": result.thinking_ended_by == "budget",
            "strategy": result.strategy,
            "budget": result.budget.model_dump(),
        }

    @staticmethod
    def _usage(result: BudgetForcedResult) -> UsageMetadata:
        return UsageMetadata(
            input_tokens=result.prompt_tokens,
            output_tokens=result.completion_tokens,
            total_tokens=result.prompt_tokens + result.completion_tokens,
            output_token_details={"reasoning": result.thinking_tokens},
        )

    def _chat_result(self, result: BudgetForcedResult, kwargs: dict[str, Any]) -> ChatResult:
        answer = result.answer.strip()
        tool_calls = _parse_tool_calls(answer, kwargs)
        message = AIMessage(
            content="" if tool_calls else answer,
            additional_kwargs={"reasoning_content": result.thinking.strip()},
            response_metadata=self._metadata(result),
            usage_metadata=self._usage(result),
            tool_calls=tool_calls,
        )
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": result.model},
        )

    def _chunk(self, event: Any, kwargs: dict[str, Any]) -> ChatGenerationChunk | None:
        if isinstance(event, ThinkingDelta):
            return ChatGenerationChunk(
                message=AIMessageChunk(
                    content="", additional_kwargs={"reasoning_content": event.text}
                )
            )
        if isinstance(event, AnswerDelta):
            if kwargs.get("tools") or kwargs.get("answer_schema"):
                return None  # structured answers arrive whole in the last chunk
            return ChatGenerationChunk(message=AIMessageChunk(content=event.text))
        if isinstance(event, ExtensionInserted):
            return None  # its phrase arrives as thinking text
        if isinstance(event, FinalResult):
            result = event.result
            content = ""
            tool_calls: list[Any] = []
            if kwargs.get("tools") or kwargs.get("answer_schema"):
                tool_calls = _parse_tool_calls(result.answer.strip(), kwargs)
                content = "" if tool_calls else result.answer.strip()
            message = AIMessageChunk(
                content=content,
                response_metadata=self._metadata(result),
                usage_metadata=self._usage(result),
                tool_call_chunks=[
                    {
                        "name": c["name"],
                        "args": json.dumps(c["args"]),
                        "id": c["id"],
                        "index": i,
                        "type": "tool_call_chunk",
                    }
                    for i, c in enumerate(tool_calls)
                ],
                chunk_position="last",
            )
            return ChatGenerationChunk(message=message)
        return None

    # -- tools and structured output ------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools go into the chat template; a forced choice constrains the answer to a call.

        ``tool_choice``: ``"auto"``/``None`` (the model decides, parsed from its
        ``<tool_call>`` format), ``"any"``/``"required"``/``True`` (one call to some tool),
        a tool name or ``{"type": "function", "function": {"name": ...}}``, or ``"none"``.
        """
        formatted = validate_tools([convert_to_openai_tool(t) for t in tools])
        names = [t["function"]["name"] for t in formatted]
        choice = _normalise_tool_choice(tool_choice, names)
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Think freely, then answer in the schema (vLLM structured outputs on the answer).

        The answer is always held to the schema by constrained decoding, so ``strict`` is
        accepted for compatibility and changes nothing.
        """
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "function_calling":
            from langchain_core.output_parsers.openai_tools import (
                JsonOutputKeyToolsParser,
                PydanticToolsParser,
            )

            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name).bind(
                ls_structured_output_format={"kwargs": {"method": method}, "schema": tool}
            )
            parser: Runnable = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        else:
            if isinstance(schema, dict) and "type" in schema:
                # A raw JSON schema: check it as given, since LangChain's conversion quietly
                # drops what it does not understand (an unknown "type" becomes no constraint).
                check_answer_schema(schema)
            json_schema = (
                {"type": "object"} if method == "json_mode" else convert_to_json_schema(schema)
            )
            llm = self.bind(
                answer_schema=json_schema,
                ls_structured_output_format={"kwargs": {"method": method}, "schema": json_schema},
            )
            parser = (
                PydanticOutputParser(pydantic_object=cast(type[BaseModel], schema))
                if is_pydantic
                else JsonOutputParser()
            )
        if not include_raw:
            return llm | parser
        parser_with_fallback = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        ).with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | parser_with_fallback


_KNOWN_CALL_KWARGS = frozenset(
    {
        "thinking_budget",
        *_BUDGET_FIELDS,
        "strategy",
        "temperature",
        "top_p",
        "seed",
        "tools",
        "tool_choice",
        "answer_schema",
        "ls_structured_output_format",
        "model",
    }
)


# -- messages ----------------------------------------------------------------------------


def _text_of(content: str | list[Any], where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in ("reasoning", "thinking"):
            continue  # earlier thinking is not fed back (the template drops it too)
        elif isinstance(block, dict) and block.get("type") in ("tool_call", "tool_use"):
            continue  # carried as tool_calls
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(
                f"{where}: content block of type {kind!r} is not supported (text only)"
            )
    return "".join(parts)


def messages_to_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages to the role/content dicts chat templates take."""
    if not messages:
        raise ValueError("messages: the list is empty")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        entry: dict[str, Any]
        if isinstance(message, SystemMessage):
            entry = {"role": "system", "content": _text_of(message.content, where)}
        elif isinstance(message, HumanMessage):
            entry = {"role": "user", "content": _text_of(message.content, where)}
        elif isinstance(message, AIMessage):
            entry = {"role": "assistant", "content": _text_of(message.content, where)}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "type": "function",
                        "id": c.get("id"),
                        "function": {"name": c["name"], "arguments": c["args"]},
                    }
                    for c in message.tool_calls
                ]
        elif isinstance(message, ToolMessage):
            entry = {
                "role": "tool",
                "content": _text_of(message.content, where),
                "tool_call_id": message.tool_call_id,
            }
        elif isinstance(message, ChatMessage):
            entry = {"role": message.role, "content": _text_of(message.content, where)}
        else:
            raise ValueError(f"{where}: unsupported message type {type(message).__name__}")
        out.append(entry)
    return out


# -- tool choice -------------------------------------------------------------------------


def _normalise_tool_choice(choice: Any, names: list[str]) -> str | None:
    if choice in (None, "auto"):
        return "auto"
    if choice in ("any", "required", True):
        return "any"
    if choice == "none" or choice is False:
        return "none"
    if isinstance(choice, dict):
        choice = choice.get("function", {}).get("name") or choice.get("name")
    if isinstance(choice, str) and choice in names:
        return choice
    raise ValueError(f"tool_choice: {choice!r} is not 'auto', 'any', 'none' or one of {names}")


def _call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _tool_choice_schema(tools: list[dict[str, Any]] | None, choice: Any) -> dict[str, Any] | None:
    """A forced tool choice becomes a JSON schema the answer must follow."""
    if not tools or choice in (None, "auto", "none"):
        return None
    if choice == "any":
        calls = [_call_schema(t) for t in tools]
        return calls[0] if len(calls) == 1 else {"anyOf": calls}
    for tool in tools:
        if tool["function"]["name"] == choice:
            return _call_schema(tool)
    raise ValueError(f"tool_choice: no tool named {choice!r}")


def _parse_tool_calls(answer: str, kwargs: dict[str, Any]) -> list[Any]:
    tools = kwargs.get("tools")
    choice = kwargs.get("tool_choice")
    if not tools or choice == "none":
        return []
    names = {t["function"]["name"] for t in tools}
    candidates: list[Any] = []
    if choice not in (None, "auto"):
        try:
            candidates = [json.loads(answer)]
        except json.JSONDecodeError:
            candidates = []
    else:
        for match in _TOOL_CALL_RE.finditer(answer):
            try:
                candidates.append(json.loads(match.group(1)))
            except json.JSONDecodeError:
                continue
    calls = []
    for c in candidates:
        if isinstance(c, dict) and c.get("name") in names:
            args = c.get("arguments") or {}
            calls.append(
                {
                    "name": c["name"],
                    "args": args if isinstance(args, dict) else {},
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "tool_call",
                }
            )
    return calls


# -- agents ------------------------------------------------------------------------------


class _ThinkHardInput(BaseModel):
    question: str = Field(description="The hard question, stated completely.")


def reasoning_tool(
    generator: BudgetForcedGenerator,
    *,
    name: str = "think_hard",
    description: str = (
        "Think hard about a difficult question (math, logic, multi-step problems) and "
        "return a carefully reasoned answer."
    ),
    budget: ThinkingBudget | dict[str, Any] | None = None,
) -> StructuredTool:
    """A LangChain tool that hands a question to the reasoner, for agents whose main model
    should delegate hard questions. The answer is the tool's content; the thinking and the
    budget figures are its artifact."""

    def run(question: str) -> tuple[str, dict[str, Any]]:
        (result,) = generator.generate(question, budget)
        return result.answer.strip(), _artifact(result)

    async def arun(question: str) -> tuple[str, dict[str, Any]]:
        (result,) = await generator.agenerate(question, budget)
        return result.answer.strip(), _artifact(result)

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=description,
        args_schema=_ThinkHardInput,
        response_format="content_and_artifact",
    )


def _artifact(result: BudgetForcedResult) -> dict[str, Any]:
    return {
        "thinking": result.thinking.strip(),
        "thinking_tokens": result.thinking_tokens,
        "extensions": result.extensions,
        "thinking_ended_by": result.thinking_ended_by,
    }
