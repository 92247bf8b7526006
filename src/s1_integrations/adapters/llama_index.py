"""LlamaIndex adapter: :class:`BudgetForcedLLM`, an LLM whose thinking has a budget.

LlamaIndex's ``CustomLLM`` derives chat from completion through a generic text prompt and runs
the async methods synchronously; both would lose what matters here (the model's own chat
template, the thinking trace, concurrent batching on one engine). So every entry point is
overridden and goes straight to :class:`~s1_integrations.core.generator.BudgetForcedGenerator`.
The adapter adds no semantics of its own (SPEC.md): it translates messages in and results out.

How the thinking travels (the convention of llama-index-llms-ollama and -openai):

* ``ChatResponse.message.blocks`` is ``[ThinkingBlock, TextBlock]``: the thinking first, the
  answer after, so ``message.content`` (and ``CompletionResponse.text``) is the answer alone
  and query engines, chat memories and output parsers never see the thinking.
* ``ThinkingBlock.num_tokens`` is the exact thinking token count (from token ids, never
  re-tokenized); the response's ``additional_kwargs`` carry all budget figures.
* Streaming: ``delta`` is the answer delta ("" while thinking) and
  ``additional_kwargs["thinking_delta"]`` the thinking delta; the message blocks are
  cumulative; the last response carries the figures.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from typing import Any, Literal

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
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.program.utils import FlexibleModel
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.core.types import Model
from pydantic import BaseModel

from s1_integrations.core.budget import BudgetLike, ThinkingBudget, as_budget
from s1_integrations.core.generator import (
    BudgetForcedGenerator,
    SamplingOptions,
    shared_generator,
)
from s1_integrations.core.prompts import ROLES, Prompt, PromptError
from s1_integrations.core.results import (
    AnswerDelta,
    BudgetForcedResult,
    ExtensionInserted,
    FinalResult,
    StreamEvent,
    ThinkingDelta,
)

__all__ = ["BudgetForcedLLM", "reasoning_tool"]

BUDGET_FIELDS: tuple[str, ...] = tuple(ThinkingBudget.model_fields)
#: Per-call sampling keywords the generator understands (``answer_schema`` once it has it).
SAMPLING_KWARGS: tuple[str, ...] = tuple(SamplingOptions.model_fields)
CALL_KWARGS: frozenset[str] = frozenset(
    {"thinking_budget", "strategy", *BUDGET_FIELDS, *SAMPLING_KWARGS}
)
SUPPORTS_ANSWER_SCHEMA = "answer_schema" in SamplingOptions.model_fields


def to_generator_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """LlamaIndex messages as the ``{"role", "content"}`` dicts the chat template reads.

    Earlier thinking (a ``ThinkingBlock`` in an assistant turn of the history) is not sent
    back: reasoning models' templates drop it, and it would eat the context window. Anything
    but text is refused here, naming the message, rather than silently dropped.
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
        texts = []
        for j, block in enumerate(message.blocks):
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif not isinstance(block, (ThinkingBlock, CachePoint)):
                raise PromptError(
                    f"messages[{i}].blocks[{j}]: {block.block_type!r} content is not "
                    "supported; this LLM reads text only"
                )
        converted.append({"role": str(role), "content": "\n".join(texts)})
    return converted


def budget_figures(result: BudgetForcedResult) -> dict[str, Any]:
    """The numbers a caller needs to see what the budget did, for ``additional_kwargs``."""
    return {
        "prompt_tokens": result.prompt_tokens,
        "thinking_tokens": result.thinking_tokens,
        "answer_tokens": result.answer_tokens,
        "completion_tokens": result.completion_tokens,
        "extensions": result.extensions,
        "thinking_ended_by": result.thinking_ended_by,
        "finish_reason": result.finish_reason,
        "strategy": result.strategy,
        "model": result.model,
    }


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


def _assistant(thinking: ThinkingBlock, answer: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=[thinking, TextBlock(text=answer)])


def chat_response(result: BudgetForcedResult) -> ChatResponse:
    return ChatResponse(
        message=_assistant(thinking_block(result.thinking, result), result.answer),
        raw=result,
        additional_kwargs=budget_figures(result),
    )


def completion_response(result: BudgetForcedResult) -> CompletionResponse:
    """A completion has no blocks, so the ``ThinkingBlock`` rides in ``additional_kwargs``."""
    return CompletionResponse(
        text=result.answer,
        raw=result,
        additional_kwargs={
            **budget_figures(result),
            "thinking_block": thinking_block(result.thinking, result),
        },
    )


class _StreamAccumulator:
    """Turns the generator's typed events into cumulative LlamaIndex stream responses."""

    def __init__(self) -> None:
        self.thinking = ""
        self.answer = ""

    def _parts(self, event: StreamEvent) -> tuple[str, dict[str, Any], Any, ThinkingBlock]:
        """(answer delta, additional_kwargs, raw, thinking block) for one event."""
        extra: dict[str, Any] = {"thinking_delta": None}
        if isinstance(event, ThinkingDelta):
            self.thinking += event.text
            extra["thinking_delta"] = event.text
        elif isinstance(event, AnswerDelta):
            self.answer += event.text
            return event.text, extra, None, thinking_block(self.thinking)
        elif isinstance(event, ExtensionInserted):
            extra["extension"] = event.model_dump(exclude={"type"})
        elif isinstance(event, FinalResult):
            result = event.result
            self.thinking, self.answer = result.thinking, result.answer
            extra.update(budget_figures(result))
            return "", extra, result, thinking_block(result.thinking, result)
        return "", extra, None, thinking_block(self.thinking)

    def chat(self, event: StreamEvent) -> ChatResponse:
        delta, extra, raw, block = self._parts(event)
        return ChatResponse(
            message=_assistant(block, self.answer), delta=delta, additional_kwargs=extra, raw=raw
        )

    def completion(self, event: StreamEvent) -> CompletionResponse:
        delta, extra, raw, block = self._parts(event)
        extra["thinking_block"] = block
        return CompletionResponse(text=self.answer, delta=delta, additional_kwargs=extra, raw=raw)


class BudgetForcedLLM(CustomLLM):
    """A LlamaIndex chat LLM that thinks within an s1 budget, on an in-process vLLM engine.

    Pass a shared ``generator=`` (several LLM objects, e.g. with different budgets, can share
    one engine) or ``model=`` with ``engine_args`` (the engine then starts on first use and
    is shared with every other LLM of the same configuration). Budget fields left ``None``
    take the generator's default budget. Per call, ``thinking_budget=`` (a
    :class:`ThinkingBudget` or dict) replaces the budget, and any budget field name
    (``max_thinking_tokens=...``) or sampling option (``temperature``, ``top_p``, ``top_k``,
    ``seed``, ``stop``) overrides one value.
    """

    model: str | None = Field(
        default=None, description="Model path or name; the engine starts lazily on first use."
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments, used with `model`."
    )
    max_thinking_tokens: int | None = Field(default=None, ge=0, description="Thinking cap.")
    min_thinking_tokens: int | None = Field(default=None, ge=0, description="Thinking minimum.")
    extensions: int | None = Field(default=None, ge=0, description="Forced extensions.")
    extension_phrases: tuple[str, ...] | None = Field(
        default=None, description='Phrases appended when thinking is extended ("Wait").'
    )
    conclusion: str | None = Field(default=None, description="Text forced when the cap hits.")
    max_answer_tokens: int | None = Field(default=None, ge=1, description="Answer cap.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 is greedy, reproducible.")
    strategy: Literal["single_pass", "rounds"] | None = Field(
        default=None, description="Forcing strategy; None takes the generator's."
    )

    _generator: BudgetForcedGenerator | None = PrivateAttr(default=None)

    def __init__(self, generator: BudgetForcedGenerator | None = None, **data: Any) -> None:
        super().__init__(**data)
        if generator is not None and (self.model is not None or self.engine_args):
            raise ValueError("pass either generator= or model= with engine_args, not both")
        self._generator = generator
        ThinkingBudget.model_validate(self._budget_fields())  # fail now, not on first call

    @field_validator("extension_phrases", mode="before")
    @classmethod
    def _phrases_as_tuple(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @classmethod
    def class_name(cls) -> str:
        return "BudgetForcedLLM"

    @property
    def generator(self) -> BudgetForcedGenerator:
        if self._generator is None:
            self._generator = shared_generator(self.model, self.engine_args)
        return self._generator

    def _budget_fields(self) -> dict[str, Any]:
        return {
            name: getattr(self, name) for name in BUDGET_FIELDS if getattr(self, name) is not None
        }

    @property
    def budget(self) -> ThinkingBudget:
        """This LLM's budget: its own fields over the generator's default budget."""
        base = self.generator.default_budget.model_dump()
        return ThinkingBudget.model_validate({**base, **self._budget_fields()})

    @property
    def metadata(self) -> LLMMetadata:
        """``num_output`` reserves room for the thinking too, not just the answer.

        LlamaIndex packs retrieved context into ``context_window - num_output``; a reasoning
        model also needs its thinking budget there (the cap, or else the minimum). At most half
        the window is reserved, so a prompt always fits.
        """
        gen = self.generator
        budget = self.budget
        thinking = budget.max_thinking_tokens
        if thinking is None:
            thinking = budget.min_thinking_tokens
        reserve = thinking + len(gen.end_ids) + budget.max_answer_tokens
        return LLMMetadata(
            context_window=gen.max_model_len,
            num_output=min(reserve, gen.max_model_len // 2),
            is_chat_model=True,
            is_function_calling_model=False,
            model_name=self.model or gen.model_name,
        )

    # -- per-call options -----------------------------------------------------------------

    def call_options(self, kwargs: dict[str, Any]) -> tuple[ThinkingBudget, dict[str, Any]]:
        """(budget, generator keywords) for one call; unknown keywords are refused."""
        unknown = sorted(set(kwargs) - CALL_KWARGS)
        if unknown:
            raise TypeError(
                f"BudgetForcedLLM got unexpected keyword argument(s) {unknown}; "
                f"accepted: {sorted(CALL_KWARGS)}"
            )
        given = kwargs.get("thinking_budget")
        base = self.budget.model_dump() if given is None else as_budget(given).model_dump()
        overrides = {k: kwargs[k] for k in BUDGET_FIELDS if k in kwargs}
        budget = ThinkingBudget.model_validate({**base, **overrides})
        sampling: dict[str, Any] = {"temperature": self.temperature}
        sampling.update({k: kwargs[k] for k in SAMPLING_KWARGS if k in kwargs})
        if isinstance(sampling.get("stop"), str):
            sampling["stop"] = (sampling["stop"],)
        elif "stop" in sampling and sampling["stop"] is None:
            del sampling["stop"]
        SamplingOptions(**sampling)  # a bad option fails here, before the engine sees it
        return budget, {"strategy": kwargs.get("strategy", self.strategy), **sampling}

    def _validated(self, prompt: Prompt, kwargs: dict[str, Any]) -> tuple[ThinkingBudget, dict]:
        """Options, with the prompt and budget checked before anything reaches the engine."""
        budget, options = self.call_options(kwargs)
        self.generator.prepare([prompt], [budget], options["strategy"])
        return budget, options

    def _completion_prompt(self, prompt: str, formatted: bool) -> str:
        if formatted or self.completion_to_prompt is None:
            return prompt
        return self.completion_to_prompt(prompt)

    # -- generation -----------------------------------------------------------------------

    def _generate(self, prompt: Prompt, kwargs: dict[str, Any]) -> BudgetForcedResult:
        budget, options = self.call_options(kwargs)
        return self.generator.generate(prompt, budget, **options)[0]

    async def _agenerate(self, prompt: Prompt, kwargs: dict[str, Any]) -> BudgetForcedResult:
        budget, options = self.call_options(kwargs)
        return (await self.generator.agenerate(prompt, budget, **options))[0]

    def _stream(self, prompt: Prompt, kwargs: dict[str, Any]) -> Iterator[StreamEvent]:
        budget, options = self.call_options(kwargs)
        events = self.generator.stream(prompt, budget, **options)  # validates eagerly

        def gen() -> Iterator[StreamEvent]:
            try:
                yield from events
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()  # a consumer that stops early aborts the request

        return gen()

    def _astream(self, prompt: Prompt, kwargs: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        budget, options = self._validated(prompt, kwargs)

        async def gen() -> AsyncIterator[StreamEvent]:
            events = self.generator.astream(prompt, budget, **options)
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()  # type: ignore[attr-defined]

        return gen()

    # -- LlamaIndex API -------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = self._generate(self._completion_prompt(prompt, formatted), kwargs)
        return completion_response(result)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        result = await self._agenerate(self._completion_prompt(prompt, formatted), kwargs)
        return completion_response(result)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        events = self._stream(self._completion_prompt(prompt, formatted), kwargs)
        acc = _StreamAccumulator()
        return (acc.completion(event) for event in events)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        events = self._astream(self._completion_prompt(prompt, formatted), kwargs)
        acc = _StreamAccumulator()
        return (acc.completion(event) async for event in events)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return chat_response(self._generate(to_generator_messages(messages), kwargs))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return chat_response(await self._agenerate(to_generator_messages(messages), kwargs))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        events = self._stream(to_generator_messages(messages), kwargs)
        acc = _StreamAccumulator()
        return (acc.chat(event) for event in events)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        events = self._astream(to_generator_messages(messages), kwargs)
        acc = _StreamAccumulator()
        return (acc.chat(event) async for event in events)

    # -- structured outputs ---------------------------------------------------------------

    def _structured_kwargs(
        self, output_cls: type[BaseModel], llm_kwargs: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Hold the answer (not the thinking) to the output class's JSON schema, if possible.

        LlamaIndex's default program asks for JSON in the prompt and parses the answer text
        (the thinking is never parsed: it is not in ``message.content``). Where the generator
        supports constrained answers, the schema is passed too, so even a small model answers
        with valid JSON; ``llm_kwargs={"answer_schema": None}`` turns that off.
        """
        kwargs = dict(llm_kwargs or {})
        if SUPPORTS_ANSWER_SCHEMA:
            kwargs.setdefault("answer_schema", output_cls.model_json_schema())
        elif kwargs.get("answer_schema", 1) is None:
            del kwargs["answer_schema"]
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


class ReasoningQuestion(BaseModel):
    """The reasoning tool's one argument."""

    question: str = Field(description="One self-contained question for the reasoning model.")


def reasoning_tool(
    generator_or_llm: BudgetForcedGenerator | BudgetForcedLLM,
    name: str = "reason",
    description: str | None = None,
    budget: BudgetLike = None,
) -> FunctionTool:
    """A tool that hands one question to the reasoner and returns its answer.

    An agent driven by a fast model can delegate the hard step to a thinking model with a
    budget. The tool's text is the answer alone (stripped); the whole
    :class:`BudgetForcedResult`, thinking and exact counts included, is the tool output's
    ``raw_output``, so the thinking stays inspectable without flooding the agent's context.
    """
    if isinstance(generator_or_llm, BudgetForcedLLM):
        llm = generator_or_llm
        extra: dict[str, Any] = {} if budget is None else {"thinking_budget": budget}

        def run(question: str) -> BudgetForcedResult:
            return llm._generate(question, dict(extra))

        async def arun(question: str) -> BudgetForcedResult:
            return await llm._agenerate(question, dict(extra))

    else:
        gen = generator_or_llm

        def run(question: str) -> BudgetForcedResult:
            return gen.generate(question, budget)[0]

        async def arun(question: str) -> BudgetForcedResult:
            return (await gen.agenerate(question, budget))[0]

    def answer_text(result: BudgetForcedResult) -> str:
        return result.answer.strip()

    async def aanswer_text(result: BudgetForcedResult) -> str:
        return result.answer.strip()

    return FunctionTool.from_defaults(
        fn=run,
        async_fn=arun,
        name=name,
        description=description
        or (
            f"{name}(question: str) -> str\nAsk a reasoning model one self-contained question; "
            "it thinks step by step within a token budget and returns its final answer."
        ),
        fn_schema=ReasoningQuestion,
        callback=answer_text,
        async_callback=aanswer_text,
    )
