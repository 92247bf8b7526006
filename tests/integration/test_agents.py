"""Agents on our own model, and other providers' knobs, against the real engine (issue 18).

LlamaIndex's ``FunctionAgent`` and ``AgentWorkflow`` and LangChain's ``create_agent`` run with
the budget-forced model as *their own* model. The shipped toy reasoner (v2) writes
``<tool_call>`` blocks but garbles tool names and keys when free-running, and cannot write free
text inside a JSON string, so calls here are forced (``initial_tool_choice``,
``tool_required``) and their arguments are integers, enums or none: the constrained decoding
then gives a valid call, and what is asserted is what the adapters promise (a call was made,
its thinking was free and exact, earlier thinking was not re-sent, the figures match the
generator's own run on the same prompt), not the toy's text.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import ConfigurableField
from llama_index.core.agent.workflow import (
    AgentOutput,
    AgentStream,
    AgentWorkflow,
    FunctionAgent,
    ToolCallResult,
    multi_agent_workflow,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from conftest import ENGINE_ARGS, TOY
from s1_integrations import ThinkingBudget
from s1_integrations.adapters.langchain import ChatBudgetForced, messages_to_dicts
from s1_integrations.adapters.llama_index import BudgetForcedLLM, to_generator_messages

pytestmark = pytest.mark.engine

QUESTION = "What is 4857 + 2968?"
OFF = {"max_thinking_tokens": 0, "min_thinking_tokens": 0, "extensions": 0}


class ChatRecorder(BaseEventHandler):
    """Every chat the LLM answered, through LlamaIndex's own instrumentation events."""

    events: list[LLMChatEndEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "AgentChatRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatEndEvent):
            self.events.append(event)


@pytest.fixture
def recorder() -> Any:
    root = get_dispatcher()
    handler = ChatRecorder()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def lookup() -> str:
    """Look up the secret number."""
    return "42"


# -- LlamaIndex: FunctionAgent -------------------------------------------------------------


async def test_function_agent_calls_a_tool_and_answers(generator: Any, recorder: Any) -> None:
    llm = BudgetForcedLLM(generator=generator, max_thinking_tokens=64)
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=lookup)], llm=llm, initial_tool_choice="lookup"
    )
    handler = agent.run(user_msg=QUESTION)
    events = [event async for event in handler.stream_events()]
    output = await handler

    calls = [e for e in events if isinstance(e, ToolCallResult)]
    assert [(c.tool_name, c.tool_kwargs, c.tool_output.content) for c in calls] == [
        ("lookup", {}, "42")
    ]
    # the agent streamed the model's thinking to its own event stream
    streamed = [e for e in events if isinstance(e, AgentStream)]
    thinking = "".join(e.thinking_delta or "" for e in streamed)
    assert len(recorder.events) == 2  # the forced call, then the answer
    first, second = recorder.events
    assert thinking == first.response.message.blocks[0].content + (
        second.response.message.blocks[0].content
    )
    assert thinking.strip()

    # 1. the call: free thinking, then a constrained call; exactly the generator's run
    sent = to_generator_messages(first.messages)
    assert sent == [{"role": "user", "content": QUESTION}]
    call_blocks = [b for b in first.response.message.blocks if isinstance(b, ToolCallBlock)]
    assert [(b.tool_name, b.tool_kwargs) for b in call_blocks] == [("lookup", {})]
    assert first.response.additional_kwargs["thinking_tokens"] > 0

    # 2. the answer: the earlier step's ThinkingBlock is in the agent's input but not re-sent
    assert isinstance(second.messages[1].blocks[0], ThinkingBlock)
    sent = to_generator_messages(second.messages)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["content"] == "" and sent[1]["tool_calls"][0]["function"]["name"] == "lookup"
    assert sent[2] == {
        "role": "tool",
        "content": "42",
        "tool_call_id": call_blocks[0].tool_call_id,
    }
    assert all(first.response.message.blocks[0].content not in m["content"] for m in sent)
    (expected,) = generator.generate(
        [sent], llm.budget, tools=[FunctionTool.from_defaults(fn=lookup).metadata.to_openai_tool()]
    )
    assert second.response.raw.token_ids == expected.token_ids
    assert second.response.additional_kwargs["thinking_tokens"] == expected.thinking_tokens
    assert output.response.content == expected.answer
    assert [c.tool_name for c in output.tool_calls] == ["lookup"]  # the run's calls


def blend_numbers(a: int, b: int) -> str:
    """Blend two numbers in a secret way."""
    return "4242"


async def test_function_agent_fills_integer_arguments(generator: Any) -> None:
    """A call with arguments: the adapter constrains the name and keys, the toy writes values.

    Toy v2 garbles tool names and keys when free-running (docs/toy-model.md), hence the forced
    first step. The values are the toy's own: off its trained ``<tool_call>`` wrapper (a forced
    answer is bare JSON) they are not reliably the question's, so only their types are checked.
    """
    llm = BudgetForcedLLM(generator=generator)
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=blend_numbers)],
        llm=llm,
        initial_tool_choice="blend_numbers",
    )
    handler = agent.run(user_msg="What is blend_numbers(12, 30)?")
    calls = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    output = await handler
    (call,) = calls
    assert call.tool_name == "blend_numbers" and set(call.tool_kwargs) == {"a", "b"}
    assert all(isinstance(v, int) for v in call.tool_kwargs.values())
    assert call.tool_output.content == "4242"
    assert output.response.content is not None


async def test_chat_with_tools_tool_required_is_a_constrained_call(generator: Any) -> None:
    # a minimum equal to the cap: exactly 30 thinking tokens, whatever the toy would think
    llm = BudgetForcedLLM(generator=generator, min_thinking_tokens=30, max_thinking_tokens=30)

    class Pick(BaseModel):
        operation: Literal["add", "subtract"]

    def choose(operation: Literal["add", "subtract"]) -> str:
        """Pick the operation the question asks for."""
        return operation

    tools = [
        FunctionTool.from_defaults(fn=choose, fn_schema=Pick),
        FunctionTool.from_defaults(fn=lookup),
    ]
    response = await llm.achat_with_tools(tools, user_msg=QUESTION, tool_required=True)
    (call,) = llm.get_tool_calls_from_response(response)
    assert call.tool_name in ("choose", "lookup")
    if call.tool_name == "choose":
        assert call.tool_kwargs["operation"] in ("add", "subtract")
    assert response.additional_kwargs["thinking_tokens"] == 30  # it thought, then called
    assert response.message.content == ""  # the answer was the call
    sync = llm.chat_with_tools(tools, user_msg=QUESTION, tool_required=True)
    assert llm.get_tool_calls_from_response(sync)[0].tool_name == call.tool_name  # greedy
    # without tool_required the model decides; the toy writes no <tool_call>, so it answers
    free = llm.chat_with_tools(tools, user_msg=QUESTION)
    assert llm.get_tool_calls_from_response(free, error_on_no_tool_call=False) == []
    assert free.message.content
    done = llm.predict_and_call([tools[1]], user_msg=QUESTION, tool_required=True)
    assert done.response == "42"


# -- LlamaIndex: AgentWorkflow ---------------------------------------------------------------


class HandoffToAdder(BaseModel):
    """LlamaIndex's handoff arguments, narrowed to the one agent and reason there are."""

    to_agent: Literal["adder"]
    reason: Literal["addition"]


class NarrowHandoffWorkflow(AgentWorkflow):
    """LlamaIndex's workflow, its handoff tool's string arguments narrowed to enums.

    The toy cannot write free text in a JSON string (it writes arithmetic until the answer
    cap); with the agent names as an enum, the constrained call is valid. The handoff function
    and everything around it are LlamaIndex's own.
    """

    def _get_handoff_tool(self, current_agent: Any) -> Any:
        tool = super()._get_handoff_tool(current_agent)
        if tool is None:
            return None
        return FunctionTool.from_defaults(
            async_fn=multi_agent_workflow.handoff,
            description=tool.metadata.description,
            return_direct=True,
            fn_schema=HandoffToAdder,
        )


async def test_agent_workflow_hands_off_between_two_agents_on_it(
    generator: Any, recorder: Any
) -> None:
    router = FunctionAgent(
        name="router",
        description="Routes questions to the right agent.",
        llm=BudgetForcedLLM(generator=generator),
        tools=[],
        initial_tool_choice="handoff",
        can_handoff_to=["adder"],
    )
    # Exactly 24 thinking tokens on its turn (the minimum is the cap), then a short answer.
    adder_llm = BudgetForcedLLM(
        generator=generator, min_thinking_tokens=24, max_thinking_tokens=24, max_answer_tokens=16
    )
    adder = FunctionAgent(
        name="adder",
        description="Adds numbers.",
        llm=adder_llm,
        tools=[],
        can_handoff_to=[],
    )
    workflow = NarrowHandoffWorkflow(agents=[router, adder], root_agent="router")
    handler = workflow.run(user_msg=QUESTION)
    events = [event async for event in handler.stream_events()]
    result = await handler

    handoffs = [e for e in events if isinstance(e, ToolCallResult)]
    assert [(h.tool_name, h.tool_kwargs) for h in handoffs] == [
        ("handoff", {"to_agent": "adder", "reason": "addition"})
    ]
    assert "Agent adder is now handling the request" in handoffs[0].tool_output.content
    outputs = [e.current_agent_name for e in events if isinstance(e, AgentOutput)]
    assert outputs == ["router", "adder"]
    assert result.current_agent_name == "adder"
    thinking_by_agent = {
        e.current_agent_name for e in events if isinstance(e, AgentStream) and e.thinking_delta
    }
    assert thinking_by_agent == {"router", "adder"}
    # the adder's turn: the router's call (with its thinking) in the input, not re-sent
    last = recorder.events[-1]
    assert any(isinstance(b, ThinkingBlock) for m in last.messages for b in m.blocks)
    sent = to_generator_messages(last.messages)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    (expected,) = generator.generate([sent], adder_llm.budget)
    assert last.response.additional_kwargs["thinking_tokens"] == 24 == expected.thinking_tokens
    assert last.response.raw.token_ids == expected.token_ids
    assert result.response.content == expected.answer


# -- LangChain: create_agent -----------------------------------------------------------------


class Verdict(BaseModel):
    """Whether the claimed sum is right."""

    correct: bool


def test_create_agent_with_a_structured_response(generator: Any) -> None:
    from langchain.agents import create_agent
    from langchain.agents.structured_output import ToolStrategy

    chat = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS, max_thinking_tokens=64)
    question = {"messages": [{"role": "user", "content": "Is 4857 + 2968 = 7825?"}]}
    # the profile says structured output is native: create_agent binds a response_format
    out = create_agent(chat, tools=[], response_format=Verdict).invoke(question)
    assert isinstance(out["structured_response"], Verdict)
    human, ai = out["messages"]
    assert isinstance(human, HumanMessage) and isinstance(ai, AIMessage)
    assert Verdict.model_validate_json(ai.content) == out["structured_response"]
    assert ai.additional_kwargs["reasoning_content"]  # it thought before answering
    # the thinking stayed free: the same as the generator's on this prompt, schema or not
    (free,) = generator.generate(
        [[{"role": "user", "content": "Is 4857 + 2968 = 7825?"}]], {"max_thinking_tokens": 64}
    )
    assert ai.additional_kwargs["reasoning_content"] == free.thinking.strip()
    assert ai.usage_metadata["output_token_details"]["reasoning"] == free.thinking_tokens
    # the tool strategy: a forced call to the schema's tool
    out = create_agent(chat, tools=[], response_format=ToolStrategy(Verdict)).invoke(question)
    assert isinstance(out["structured_response"], Verdict)
    assert [type(m).__name__ for m in out["messages"]] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
    ]
    assert out["messages"][1].tool_calls[0]["name"] == "Verdict"


# -- provider knobs: every one through both adapters, exact counts --------------------------

#: (settings, the budget they must run with, effort table): what the table in the docs says.
TABLE = {"low": {"max_thinking_tokens": 3}}
ENGINE_KNOBS: list[tuple[dict[str, Any], ThinkingBudget]] = [
    ({"reasoning_effort": "none"}, ThinkingBudget(**OFF)),
    ({"reasoning_effort": "minimal"}, ThinkingBudget(max_thinking_tokens=256)),
    ({"reasoning_effort": "low"}, ThinkingBudget(max_thinking_tokens=3)),
    ({"reasoning_effort": "xhigh"}, ThinkingBudget(extensions=1)),
    ({"reasoning": {"effort": "low"}}, ThinkingBudget(max_thinking_tokens=3)),
    ({"reasoning": False}, ThinkingBudget(**OFF)),
    ({"reasoning": True}, ThinkingBudget()),
    ({"thinking": False}, ThinkingBudget(**OFF)),
    ({"thinking": {"type": "enabled", "budget_tokens": 4}}, ThinkingBudget(max_thinking_tokens=4)),
    ({"thinking": {"type": "disabled"}}, ThinkingBudget(**OFF)),
    ({"thinking": {"type": "adaptive"}}, ThinkingBudget()),
    (
        {"thinking_dict": {"type": "enabled", "budget_tokens": 5}},
        ThinkingBudget(max_thinking_tokens=5),
    ),
    ({"thinking_budget": 0}, ThinkingBudget(**OFF)),
    ({"thinking_budget": -1}, ThinkingBudget()),
    ({"thinking_budget": 6}, ThinkingBudget(max_thinking_tokens=6)),
    ({"max_tokens": 5}, ThinkingBudget(max_answer_tokens=5)),
]


def _runs(generator: Any, settings: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, figures) of one question through both adapters, as fields and per call."""
    runs = []
    chat = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS, effort_table=TABLE, **settings)
    runs.append(("langchain field", chat.invoke(QUESTION).response_metadata))
    plain = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS, effort_table=TABLE)
    runs.append(("langchain call", plain.invoke(QUESTION, **settings).response_metadata))
    llm = BudgetForcedLLM(generator=generator, effort_table=TABLE, **settings)
    message = [ChatMessage(role="user", content=QUESTION)]
    runs.append(("llama_index field", llm.chat(message).additional_kwargs))
    bare = BudgetForcedLLM(generator=generator, effort_table=TABLE)
    runs.append(("llama_index call", bare.chat(message, **settings).additional_kwargs))
    return runs


@pytest.mark.parametrize(("settings", "budget"), ENGINE_KNOBS, ids=lambda x: str(x)[:45])
def test_every_knob_runs_its_budget_in_both_adapters(
    generator: Any, settings: dict[str, Any], budget: ThinkingBudget
) -> None:
    (expected,) = generator.generate([[{"role": "user", "content": QUESTION}]], budget)
    (natural,) = generator.generate([[{"role": "user", "content": QUESTION}]])
    for where, figures in _runs(generator, settings):
        assert figures["budget"] == budget.model_dump(), where
        assert figures["thinking_tokens"] == expected.thinking_tokens, where
        assert figures["answer_tokens"] == expected.answer_tokens, where
        assert figures["extensions"] == expected.extensions, where
        assert figures["budget_capped"] == (expected.thinking_ended_by == "budget"), where
    # and the budget did what the knob says, on this question; the caps above (3 to 6) are
    # below what the toy thinks unbudgeted
    assert natural.thinking_tokens > 6
    if budget.max_thinking_tokens == 0:
        assert expected.thinking_tokens == 0
    elif budget.max_thinking_tokens is not None and budget.max_thinking_tokens <= 6:
        assert expected.thinking_tokens == budget.max_thinking_tokens
        assert expected.thinking_ended_by == "budget"
    elif budget.extensions:
        assert expected.extensions == budget.extensions
        assert expected.thinking_tokens > natural.thinking_tokens
    elif budget.max_answer_tokens == 5:
        assert expected.answer_tokens == 5 and expected.finish_reason == "length"
    else:
        assert expected.token_ids == natural.token_ids


def test_an_effort_that_does_not_fit_the_toys_context_is_refused(generator: Any) -> None:
    before = generator.engine.num_unfinished_requests()
    chat = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS)
    refused = rf"reasoning_effort: .*16384.*context of {generator.max_model_len} tokens"
    with pytest.raises(ValueError, match=refused):
        chat.invoke(QUESTION, reasoning_effort="high")
    llm = BudgetForcedLLM(generator=generator, reasoning_effort="high")
    with pytest.raises(ValueError, match=refused):
        llm.complete(QUESTION)
    assert generator.engine.num_unfinished_requests() == before == 0


# -- LangChain conventions -------------------------------------------------------------------


def test_budget_fields_work_with_configurable_fields(generator: Any) -> None:
    chat = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS)
    configurable = chat.configurable_fields(
        max_thinking_tokens=ConfigurableField(id="max_thinking_tokens"),
        reasoning_effort=ConfigurableField(id="reasoning_effort"),
    )
    msg = configurable.invoke(QUESTION, config={"configurable": {"max_thinking_tokens": 7}})
    assert msg.response_metadata["thinking_tokens"] == 7
    msg = configurable.with_config(configurable={"reasoning_effort": "none"}).invoke(QUESTION)
    assert msg.response_metadata["thinking_tokens"] == 0
    unbudgeted = chat.invoke(QUESTION).response_metadata["thinking_tokens"]
    assert unbudgeted > 7
    assert configurable.invoke(QUESTION).response_metadata["thinking_tokens"] == unbudgeted


def test_output_version_v1_puts_reasoning_blocks_in_content(generator: Any) -> None:
    chat = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS, output_version="v1")
    plain = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS).invoke(QUESTION)
    msg = chat.invoke(QUESTION)
    assert isinstance(msg.content, list)
    assert [b["type"] for b in msg.content] == ["reasoning", "text"]
    assert msg.content[0]["reasoning"] == plain.additional_kwargs["reasoning_content"]
    assert msg.content[1]["text"] == plain.content
    full = None
    for chunk in chat.stream(QUESTION):
        full = chunk if full is None else full + chunk
    assert full is not None
    assert [b["type"] for b in full.content_blocks] == ["reasoning", "text"]
    # a v1 message goes back into a conversation: its reasoning is accepted and stripped
    history = [HumanMessage(QUESTION), msg, HumanMessage("What is 12 + 34?")]
    assert messages_to_dicts(history)[1] == {"role": "assistant", "content": plain.content}
    assert chat.invoke(history).content


def test_keep_reasoning_sends_earlier_thinking_back(generator: Any) -> None:
    first = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS).invoke(QUESTION)
    history = [HumanMessage(QUESTION), first, HumanMessage("What is 12 + 34?")]
    thinking = first.additional_kwargs["reasoning_content"]
    fmt = generator.thinking_format

    def prompt_tokens(dicts: list[dict[str, Any]]) -> int:
        text = generator.tokenizer.apply_chat_template(
            dicts, add_generation_prompt=True, tokenize=False
        )
        return len(generator.tokenizer.encode(text + fmt.start, add_special_tokens=False))

    stripped = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS).invoke(history)
    kept = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS, keep_reasoning=True).invoke(history)
    inline = messages_to_dicts(history, fmt)
    assert inline[1]["content"] == f"{fmt.start}{thinking}{fmt.end}{first.content}"
    assert kept.usage_metadata["input_tokens"] == prompt_tokens(inline)
    assert stripped.usage_metadata["input_tokens"] == prompt_tokens(messages_to_dicts(history))
    assert kept.usage_metadata["input_tokens"] > stripped.usage_metadata["input_tokens"]

    llm_first = BudgetForcedLLM(generator=generator).chat(
        [ChatMessage(role="user", content=QUESTION)]
    )
    li_history = [
        ChatMessage(role="user", content=QUESTION),
        llm_first.message,
        ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="What is 12 + 34?")]),
    ]
    li_kept = BudgetForcedLLM(generator=generator, keep_reasoning=True).chat(li_history)
    li_inline = to_generator_messages(li_history, fmt)
    assert li_inline[1]["content"].startswith(fmt.start + llm_first.message.blocks[0].content)
    assert li_kept.additional_kwargs["prompt_tokens"] == prompt_tokens(li_inline)


def test_structured_predict_as_a_forced_call(generator: Any, recorder: Any) -> None:
    from llama_index.core import PromptTemplate

    llm = BudgetForcedLLM(
        generator=generator, max_thinking_tokens=64, pydantic_program_mode="function"
    )
    out = llm.structured_predict(Verdict, PromptTemplate("Is {a} + {b} = 532?"), a=473, b=59)
    assert isinstance(out, Verdict)
    (event,) = recorder.events
    (call,) = [b for b in event.response.message.blocks if isinstance(b, ToolCallBlock)]
    assert call.tool_name == "Verdict" and Verdict.model_validate(call.tool_kwargs) == out
    assert event.response.additional_kwargs["thinking_tokens"] <= 64


async def test_reasoning_tool_takes_a_model_in_both_adapters(generator: Any) -> None:
    from s1_integrations.adapters import langchain, llama_index

    exactly_10 = {"min_thinking_tokens": 10, "max_thinking_tokens": 10}
    chat = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS, **exactly_10)
    llm = BudgetForcedLLM(generator=generator, **exactly_10)
    (capped,) = generator.generate(QUESTION, exactly_10)
    (replaced,) = generator.generate(QUESTION, {"max_thinking_tokens": 4})
    lc_tool = langchain.reasoning_tool(chat)
    message = await lc_tool.ainvoke(
        {"name": "think_hard", "args": {"question": QUESTION}, "id": "t1", "type": "tool_call"}
    )
    assert message.content == capped.answer.strip()
    assert message.artifact["thinking_tokens"] == 10 and message.artifact["budget_capped"]
    li_tool = llama_index.reasoning_tool(llm, budget={"max_thinking_tokens": 4})
    assert li_tool.metadata.name == "think_hard"
    out = await li_tool.acall(question=QUESTION)
    assert out.raw_output.token_ids == replaced.token_ids
    lc_replaced = langchain.reasoning_tool(chat, budget={"max_thinking_tokens": 4})
    assert lc_replaced.invoke({"question": QUESTION}) == replaced.answer.strip()
