"""LlamaIndex adapter: :class:`BudgetForcedLLM`, a function-calling LLM whose thinking has a budget.

LlamaIndex's ``CustomLLM`` derives chat from completion through a generic text prompt and runs
the async methods synchronously; both would lose what matters here (the model's own chat
template, the thinking trace, concurrent batching on one engine). So every entry point is
implemented and goes straight to :class:`~s1_integrations.core.generator.BudgetForcedGenerator`.
The adapter adds no semantics of its own: budgets and provider knobs are resolved by the core
(:mod:`s1_integrations.core.knobs`), tool calls read by :mod:`s1_integrations.core.toolcalls`,
exactly as in the LangChain adapter.

How the thinking travels (the convention of llama-index-llms-ollama and -openai):

* ``ChatResponse.message.blocks`` is ``[ThinkingBlock, TextBlock, *ToolCallBlock]``: the
  thinking first, the answer after, then any tool calls, so ``message.content`` (and
  ``CompletionResponse.text``) is the answer alone and query engines, chat memories and output
  parsers never see the thinking.
* ``ThinkingBlock.num_tokens`` is the exact thinking token count (from token ids, never
  re-tokenized); the response's ``additional_kwargs`` carry all budget figures, under the keys
  the LangChain adapter uses too.
* Streaming: ``delta`` is the answer delta ("" while thinking) and
  ``additional_kwargs["thinking_delta"]`` the thinking delta (what ``AgentStream.thinking_delta``
  shows); the message blocks are cumulative; the last response carries the figures.

As a ``FunctionCallingLLM`` it runs ``FunctionAgent`` and ``AgentWorkflow`` itself: a forced
choice (``tool_required=True``, or ``tool_choice`` a tool's name as ``FunctionAgent``'s
``initial_tool_choice`` sends it) constrains the answer to one call after free thinking; a
free choice reads ``<tool_call>`` blocks from the answer, several when the model writes several,
each held to one of the tools as it is generated.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.program.utils import FlexibleModel
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.core.types import Model, PydanticProgramMode
from pydantic import BaseModel

from s1_integrations.adapters.shared import shared_generator
from s1_integrations.core.budget import BudgetLike, ThinkingBudget
from s1_integrations.core.formats import ThinkingFormat
from s1_integrations.core.generator import BudgetForcedGenerator, SamplingOptions
from s1_integrations.core.knobs import check_names, reserved_output_tokens
from s1_integrations.core.prompts import ROLES, Prompt, PromptError, validate_tools
from s1_integrations.core.reporting import (
    REASONING_TOOL_DESCRIPTION,
    REASONING_TOOL_NAME,
    result_figures,
)
from s1_integrations.core.results import (
    AnswerDelta,
    BudgetForcedResult,
    ExtensionInserted,
    FinalResult,
    StreamEvent,
    ThinkingDelta,
)
from s1_integrations.core.settings import (
    CALL_SETTINGS,
    AdapterSettings,
    aask,
    ask,
    constructor_names,
)
from s1_integrations.core.toolcalls import (
    ToolCall,
    ToolCallStreamFilter,
    ToolPlan,
    answer_schema_from_response_format,
    new_call_id,
    plan_tools,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["BudgetForcedLLM", "reasoning_tool", "to_generator_messages"]

#: Per-call keywords: the shared settings, plus what LlamaIndex's tool calling sends.
CALL_KWARGS: frozenset[str] = frozenset(
    {*CALL_SETTINGS, "tools", "tool_choice", "allow_parallel_tool_calls", "response_format"}
)


# -- messages ----------------------------------------------------------------------------


def _tool_call_entry(call_id: str | None, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "function", "id": call_id, "function": {"name": name, "arguments": arguments}}


def to_generator_messages(
    messages: Sequence[ChatMessage], keep_reasoning: ThinkingFormat | None = None
) -> list[dict[str, Any]]:
    """LlamaIndex messages as the ``{"role", "content", ...}`` dicts the chat template reads.

    Earlier thinking (a ``ThinkingBlock`` in an assistant turn, as agents keep it in memory) is
    accepted and not sent back: reasoning models' templates drop it, and it would eat the
    context window. With ``keep_reasoning`` (the model's thinking format) it is sent inside the
    thinking delimiters instead. Tool calls (``ToolCallBlock``, or OpenAI-style
    ``additional_kwargs["tool_calls"]``) and tool results (``tool_call_id``) are carried for
    templates that render them. Anything else but text is refused here, naming the message,
    rather than silently dropped.
    """
    if len(messages) == 0:
        raise PromptError("messages: the list is empty; give at least one message")
    converted = []
    for i, message in enumerate(messages):
        role = message.role.value if isinstance(message.role, MessageRole) else message.role
        if role not in ROLES:
            raise PromptError(
                f"messages[{i}].role: {role!r} is not supported; use one of {sorted(ROLES)}"
            )
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(message.blocks):
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ThinkingBlock):
                thoughts.append(block.content or "")
            elif isinstance(block, ToolCallBlock):
                calls.append(
                    _tool_call_entry(block.tool_call_id, block.tool_name, block.tool_kwargs)
                )
            elif not isinstance(block, CachePoint):
                raise PromptError(
                    f"messages[{i}].blocks[{j}]: {block.block_type!r} content is not "
                    "supported; this LLM reads text only"
                )
        for call in message.additional_kwargs.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            if not function.get("name"):
                raise PromptError(
                    f"messages[{i}].additional_kwargs.tool_calls: {call!r} has no name"
                )
            calls.append(
                _tool_call_entry(call.get("id"), function["name"], function.get("arguments"))
            )
        content = "\n".join(texts)
        thought = "\n".join(t for t in thoughts if t)
        if keep_reasoning is not None and thought:
            content = f"{keep_reasoning.start}{thought}{keep_reasoning.end}{content}"
        entry: dict[str, Any] = {"role": str(role), "content": content}
        if calls:
            entry["tool_calls"] = calls
        if role == "tool" and message.additional_kwargs.get("tool_call_id"):
            entry["tool_call_id"] = message.additional_kwargs["tool_call_id"]
        converted.append(entry)
    return converted


def _tool_specs(tools: Any) -> list[dict[str, Any]]:
    """LlamaIndex tools (or OpenAI-style specs) as validated specs for the chat template."""
    if isinstance(tools, (list, tuple)):
        tools = [
            t.metadata.to_openai_tool(skip_length_check=True) if hasattr(t, "metadata") else t
            for t in tools
        ]
    return validate_tools(tools)


# -- results to responses ----------------------------------------------------------------


def thinking_block(text: str, result: BudgetForcedResult | None = None) -> ThinkingBlock:
    """The thinking as LlamaIndex's block; exact counts only once the result is known."""
    if result is None:
        return ThinkingBlock(content=text)
    return ThinkingBlock(
        content=result.thinking,
        num_tokens=result.thinking_tokens,
        additional_information={
            "extensions": result.extensions,
            "extension_positions": list(result.extension_positions),
            "thinking_ended_by": result.thinking_ended_by,
            "budget": result.budget.model_dump(),
        },
    )


def _call_block(call: ToolCall) -> ToolCallBlock:
    return ToolCallBlock(tool_call_id=call.id, tool_name=call.name, tool_kwargs=call.arguments)


def _assistant(thinking: ThinkingBlock, answer: str, calls: Sequence[ToolCall] = ()) -> ChatMessage:
    return ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=[thinking, TextBlock(text=answer), *(_call_block(c) for c in calls)],
    )


def chat_response(result: BudgetForcedResult, plan: ToolPlan | None = None) -> ChatResponse:
    text, calls = (plan or ToolPlan()).read_answer(result.answer)
    return ChatResponse(
        message=_assistant(thinking_block(result.thinking, result), text, calls),
        raw=result,
        additional_kwargs=result_figures(result),
    )


def completion_response(
    result: BudgetForcedResult, plan: ToolPlan | None = None
) -> CompletionResponse:
    """A completion has no blocks: the ``ThinkingBlock`` (and any calls) ride in
    ``additional_kwargs``."""
    text, calls = (plan or ToolPlan()).read_answer(result.answer)
    extra: dict[str, Any] = {
        **result_figures(result),
        "thinking_block": thinking_block(result.thinking, result),
    }
    if calls:
        extra["tool_calls"] = [_call_block(c) for c in calls]
    return CompletionResponse(text=text, raw=result, additional_kwargs=extra)


class _StreamAccumulator:
    """Turns the generator's typed events into cumulative LlamaIndex stream responses."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.filter = (
            ToolCallStreamFilter(plan.tools) if plan.read == "tags" and plan.tools else None
        )
        self.thinking = ""
        self.answer = ""
        self.calls: list[ToolCall] = []

    def _parts(self, event: StreamEvent) -> tuple[str, dict[str, Any], Any, ThinkingBlock]:
        """(answer delta, additional_kwargs, raw, thinking block) for one event."""
        extra: dict[str, Any] = {"thinking_delta": None}
        if isinstance(event, ThinkingDelta):
            self.thinking += event.text
            extra["thinking_delta"] = event.text
        elif isinstance(event, AnswerDelta):
            if self.plan.structured:
                return "", extra, None, thinking_block(self.thinking)  # arrives whole
            text = self.filter.feed(event.text) if self.filter else event.text
            self.answer += text
            return text, extra, None, thinking_block(self.thinking)
        elif isinstance(event, ExtensionInserted):
            extra["extension"] = event.model_dump(exclude={"type"})
        elif isinstance(event, FinalResult):
            result = event.result
            text, self.calls = self.plan.read_answer(result.answer)
            delta = text if self.plan.structured else ""
            if self.filter is not None:
                delta = self.filter.flush()
                self.answer += delta
            else:
                self.answer = text
            self.thinking = result.thinking
            extra.update(result_figures(result))
            return delta, extra, result, thinking_block(result.thinking, result)
        return "", extra, None, thinking_block(self.thinking)

    def chat(self, event: StreamEvent) -> ChatResponse:
        delta, extra, raw, block = self._parts(event)
        return ChatResponse(
            message=_assistant(block, self.answer, self.calls),
            delta=delta,
            additional_kwargs=extra,
            raw=raw,
        )

    def completion(self, event: StreamEvent) -> CompletionResponse:
        delta, extra, raw, block = self._parts(event)
        extra["thinking_block"] = block
        if self.calls:
            extra["tool_calls"] = [_call_block(c) for c in self.calls]
        return CompletionResponse(text=self.answer, delta=delta, additional_kwargs=extra, raw=raw)


# -- the LLM -----------------------------------------------------------------------------


class BudgetForcedLLM(FunctionCallingLLM, AdapterSettings):
    """A LlamaIndex function-calling LLM that thinks within an s1 budget, on vLLM.

    Pass a shared ``generator=`` (several LLM objects, e.g. with different budgets, can share
    one engine) or ``model=`` with ``engine_args`` (the engine then starts on first use and
    is shared with every other LLM of the same configuration). Budget fields left ``None``
    take the generator's default budget. Other providers' knobs (``reasoning_effort``,
    ``reasoning``, ``thinking``, ``thinking_dict``, ``thinking_budget``, ``max_tokens``) map
    onto the same budget (docs/llama_index.md has the table). Per call, the same names
    override, ``thinking_budget=`` (a :class:`ThinkingBudget` or dict) replaces the budget,
    and the sampling options (``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``,
    ``strategy``) override one value. Unknown arguments, here and per call, are a
    ``TypeError`` naming them.
    """

    model: str | None = Field(
        default=None, description="Model path or name; the engine starts lazily on first use."
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments, used with `model`."
    )

    pydantic_program_mode: PydanticProgramMode = Field(
        default=PydanticProgramMode.LLM,
        description="Structured outputs: 'llm' (default) asks for JSON and holds the answer to "
        "the output class's schema; 'function' or 'default' make it a forced tool call.",
    )

    _generator: BudgetForcedGenerator | None = PrivateAttr(default=None)

    def __init__(self, generator: BudgetForcedGenerator | None = None, **data: Any) -> None:
        check_names(data, constructor_names(type(self)), f"{type(self).__name__}()")
        if data.get("messages_to_prompt") is not None:
            raise TypeError(
                "BudgetForcedLLM() got messages_to_prompt, but it renders chats with the "
                "model's own chat template; drop messages_to_prompt"
            )
        if data.get("query_wrapper_prompt") is not None:  # LlamaIndex applies it off chat only
            raise TypeError(
                "BudgetForcedLLM() got query_wrapper_prompt, which LlamaIndex applies only to "
                "completion models, and this one is a chat model (its chat template wraps "
                "each query); drop query_wrapper_prompt"
            )
        super().__init__(**data)
        if generator is not None and (self.model is not None or self.engine_args):
            raise ValueError("pass either generator= or model= with engine_args, not both")
        self._generator = generator
        self.check_settings()  # fail now, not on the first call

    @classmethod
    def class_name(cls) -> str:
        return "BudgetForcedLLM"

    @property
    def generator(self) -> BudgetForcedGenerator:
        if self._generator is None:
            self._generator = shared_generator(self.model, self.engine_args)
        return self._generator

    def engine_generator(self) -> BudgetForcedGenerator:
        return self.generator

    @property
    def budget(self) -> ThinkingBudget:
        """This LLM's budget: its fields and knobs over the generator's default budget."""
        return self.resolve(self.generator, {})[0]

    @property
    def metadata(self) -> LLMMetadata:
        """``num_output`` reserves room for the thinking too, not just the answer.

        LlamaIndex packs retrieved context into ``context_window - num_output``; a reasoning
        model also needs its thinking budget there (see ``reserved_output_tokens``).
        """
        gen = self.generator
        return LLMMetadata(
            context_window=gen.max_model_len,
            num_output=reserved_output_tokens(self.budget, len(gen.end_ids), gen.max_model_len),
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.model or gen.model_name,
        )

    # -- per-call options -----------------------------------------------------------------

    def call_options(
        self, kwargs: dict[str, Any]
    ) -> tuple[ThinkingBudget, dict[str, Any], ToolPlan]:
        """(budget, generator keywords, tool plan) for one call; unknown keywords are refused."""
        check_names(kwargs, CALL_KWARGS, f"{type(self).__name__} call")
        call = dict(kwargs)
        schema = call.get("answer_schema")
        response_format = call.pop("response_format", None)
        if response_format is not None:
            if schema is not None:
                raise ValueError("give answer_schema or response_format, not both")
            schema = answer_schema_from_response_format(response_format)
        if schema is not None:
            schema = SamplingOptions(answer_schema=schema).answer_schema  # checked now
        tools = call.pop("tools", None)
        plan = plan_tools(
            None if tools is None else _tool_specs(tools),
            call.pop("tool_choice", None),
            schema,
            call.pop("allow_parallel_tool_calls", True) is not False,
        )
        call["answer_schema"] = plan.answer_schema
        budget, options = self.resolve(self.generator, call)
        if plan.tools:
            options["tools"] = plan.tools
        return budget, options, plan

    def _messages(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        keep = self.generator.thinking_format if self.keep_reasoning else None
        return to_generator_messages(messages, keep)

    def _validated(
        self, prompt: Prompt, kwargs: dict[str, Any]
    ) -> tuple[ThinkingBudget, dict[str, Any], ToolPlan]:
        """Options, with the prompt and budget checked before anything reaches the engine."""
        budget, options, plan = self.call_options(kwargs)
        self.generator.prepare(
            [prompt], [budget], options["strategy"], options.get("tools"), plan.structured
        )
        return budget, options, plan

    def _completion_prompt(self, prompt: str, formatted: bool) -> str:
        if formatted or self.completion_to_prompt is None:
            return prompt
        return self.completion_to_prompt(prompt)

    # -- generation -----------------------------------------------------------------------

    def _generate(
        self, prompt: Prompt, kwargs: dict[str, Any]
    ) -> tuple[BudgetForcedResult, ToolPlan]:
        budget, options, plan = self.call_options(kwargs)
        return self.generator.generate(prompt, budget, **options)[0], plan

    async def _agenerate(
        self, prompt: Prompt, kwargs: dict[str, Any]
    ) -> tuple[BudgetForcedResult, ToolPlan]:
        budget, options, plan = self.call_options(kwargs)
        return (await self.generator.agenerate(prompt, budget, **options))[0], plan

    def _stream(
        self, prompt: Prompt, kwargs: dict[str, Any]
    ) -> tuple[Iterator[StreamEvent], ToolPlan]:
        budget, options, plan = self.call_options(kwargs)
        events = self.generator.stream(prompt, budget, **options)  # validates eagerly

        def gen() -> Iterator[StreamEvent]:
            try:
                yield from events
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()  # a consumer that stops early aborts the request

        return gen(), plan

    def _astream(
        self, prompt: Prompt, kwargs: dict[str, Any]
    ) -> tuple[AsyncIterator[StreamEvent], ToolPlan]:
        budget, options, plan = self._validated(prompt, kwargs)

        async def gen() -> AsyncIterator[StreamEvent]:
            events = self.generator.astream(prompt, budget, **options)
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()  # type: ignore[attr-defined]

        return gen(), plan

    # -- LlamaIndex API -------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result, plan = self._generate(self._completion_prompt(prompt, formatted), kwargs)
        return completion_response(result, plan)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        result, plan = await self._agenerate(self._completion_prompt(prompt, formatted), kwargs)
        return completion_response(result, plan)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        events, plan = self._stream(self._completion_prompt(prompt, formatted), kwargs)
        acc = _StreamAccumulator(plan)
        return (acc.completion(event) for event in events)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        events, plan = self._astream(self._completion_prompt(prompt, formatted), kwargs)
        acc = _StreamAccumulator(plan)
        return (acc.completion(event) async for event in events)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        result, plan = self._generate(self._messages(messages), kwargs)
        return chat_response(result, plan)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        result, plan = await self._agenerate(self._messages(messages), kwargs)
        return chat_response(result, plan)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        events, plan = self._stream(self._messages(messages), kwargs)
        acc = _StreamAccumulator(plan)
        return (acc.chat(event) for event in events)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        events, plan = self._astream(self._messages(messages), kwargs)
        acc = _StreamAccumulator(plan)
        return (acc.chat(event) async for event in events)

    # -- function calling -----------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The ``chat`` keywords for a call with tools.

        ``tool_required=True`` (or a ``tool_choice`` of ``"required"``/``"any"``/a tool name,
        as ``FunctionAgent(initial_tool_choice=...)`` sends) constrains the answer to one call
        after free thinking, as LangChain's forced tool choice does. Other keywords (budgets,
        knobs, sampling) pass through to ``chat``, which refuses unknown ones. ``verbose`` is
        LlamaIndex's own printing, done where it runs the tools.
        """
        if tool_required and tool_choice in ("auto", "none", False):
            raise ValueError(f"tool_required=True contradicts tool_choice={tool_choice!r}")
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        choice = tool_choice if tool_choice is not None else ("required" if tool_required else None)
        return {
            "messages": messages,
            "tools": _tool_specs(list(tools)) if tools else None,
            "tool_choice": choice,
            "allow_parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The calls of a response: its ``ToolCallBlock``s (ours), or OpenAI-style
        ``additional_kwargs["tool_calls"]`` of a message from elsewhere."""
        selections = [
            ToolSelection(
                tool_id=block.tool_call_id or new_call_id(),
                tool_name=block.tool_name,
                tool_kwargs=block.tool_kwargs if isinstance(block.tool_kwargs, dict) else {},
            )
            for block in response.message.blocks
            if isinstance(block, ToolCallBlock)
        ]
        for call in response.message.additional_kwargs.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError:
                    arguments = {}
            selections.append(
                ToolSelection(
                    tool_id=call.get("id") or new_call_id(),
                    tool_name=function.get("name", ""),
                    tool_kwargs=arguments if isinstance(arguments, dict) else {},
                )
            )
        if not selections and error_on_no_tool_call:
            raise ValueError("Expected at least one tool call, but the model made none")
        return selections

    # -- structured outputs ---------------------------------------------------------------

    def _structured_kwargs(
        self, output_cls: type[BaseModel], llm_kwargs: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Hold the answer (not the thinking) to the output class's JSON schema.

        With ``pydantic_program_mode="llm"`` (this LLM's default) LlamaIndex's text program
        asks for JSON in the prompt and parses the answer text (the thinking is never parsed:
        it is not in ``message.content``). The schema is passed too, so even a small model
        answers with valid JSON; ``llm_kwargs={"answer_schema": None}`` turns that off. The
        text program is the default, not LlamaIndex's function-calling one, because the schema
        then holds the answer itself rather than a tool call wrapping it.
        """
        kwargs = dict(llm_kwargs or {})
        if self.pydantic_program_mode == PydanticProgramMode.LLM:
            kwargs.setdefault("answer_schema", output_cls.model_json_schema())
        # otherwise LlamaIndex's function-calling program forces a call, which constrains it
        return kwargs

    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        kwargs = self._structured_kwargs(output_cls, llm_kwargs)
        return super().structured_predict(output_cls, prompt, kwargs, **prompt_args)

    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        kwargs = self._structured_kwargs(output_cls, llm_kwargs)
        return await super().astructured_predict(output_cls, prompt, kwargs, **prompt_args)

    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Model | FlexibleModel, None, None]:
        kwargs = self._structured_kwargs(output_cls, llm_kwargs)
        return super().stream_structured_predict(output_cls, prompt, kwargs, **prompt_args)

    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Model | FlexibleModel, None]:
        kwargs = self._structured_kwargs(output_cls, llm_kwargs)
        return await super().astream_structured_predict(output_cls, prompt, kwargs, **prompt_args)


# -- agents ------------------------------------------------------------------------------


class ReasoningQuestion(BaseModel):
    """The reasoning tool's one argument."""

    question: str = Field(description="One self-contained question for the reasoning model.")


def reasoning_tool(
    generator_or_model: BudgetForcedGenerator | BudgetForcedLLM,
    *,
    name: str = REASONING_TOOL_NAME,
    description: str | None = None,
    budget: BudgetLike = None,
) -> FunctionTool:
    """A tool that hands one question to the reasoner and returns its answer.

    An agent driven by a fast model can delegate the hard step to a thinking model with a
    budget. Given a ``BudgetForcedLLM``, its settings apply (``budget`` replaces its budget,
    as a per-call ``thinking_budget`` does); given a generator, ``budget`` is its ``budget=``.
    The tool's text is the answer alone (stripped); the whole :class:`BudgetForcedResult`,
    thinking and exact counts included, is the tool output's ``raw_output``, so the thinking
    stays inspectable without flooding the agent's context. The same signature as the
    LangChain adapter's ``reasoning_tool``.
    """

    def run(question: str) -> BudgetForcedResult:
        return ask(generator_or_model, question, budget)

    async def arun(question: str) -> BudgetForcedResult:
        return await aask(generator_or_model, question, budget)

    def answer_text(result: BudgetForcedResult) -> str:
        return result.answer.strip()

    async def aanswer_text(result: BudgetForcedResult) -> str:
        return result.answer.strip()

    return FunctionTool.from_defaults(
        fn=run,
        async_fn=arun,
        name=name,
        description=f"{name}(question: str) -> str\n{description or REASONING_TOOL_DESCRIPTION}",
        fn_schema=ReasoningQuestion,
        callback=answer_text,
        async_callback=aanswer_text,
    )
