"""The LangChain adapter beyond the standard suite: reasoning metadata, budgets, tools, chains."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from conftest import ENGINE_ARGS, TOY
from s1_integrations import ThinkingBudget
from s1_integrations.adapters import langchain as langchain_adapter
from s1_integrations.adapters.langchain import ChatBudgetForced, messages_to_dicts, reasoning_tool
from s1_integrations.toy.problems import extract_answer

pytestmark = pytest.mark.engine


@pytest.fixture
def chat(generator: Any) -> ChatBudgetForced:
    return ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS)


def test_chat_models_share_the_session_engine(chat: ChatBudgetForced, generator: Any) -> None:
    chat.invoke("What is 1 + 2?")
    assert chat._get_generator() is generator
    assert chat.generator is None  # it reads only a generator given to the model


def test_a_given_generator_survives_configurable_fields(
    generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LangChain rebuilds a configured model from its fields; the generator is private."""
    chat = ChatBudgetForced(generator=generator)
    assert chat.generator is generator and "generator" not in chat.model_dump()
    configurable = chat.configurable_fields(
        max_thinking_tokens=ConfigurableField(id="max_thinking_tokens")
    )

    def dropped(*args: Any) -> None:
        raise AssertionError("the configured model lost its generator")

    monkeypatch.setattr(langchain_adapter, "shared_generator", dropped)
    msg = configurable.invoke("What is 1 + 2?", config={"configurable": {"max_thinking_tokens": 7}})
    assert msg.response_metadata["thinking_tokens"] == 7
    assert msg.response_metadata["model_name"] == generator.model_name


def test_reasoning_travels_everywhere_langchain_looks(
    chat: ChatBudgetForced, generator: Any
) -> None:
    budget = ThinkingBudget(extensions=1)
    msg = chat.invoke("What is 473 + 59?", thinking_budget=budget)
    (core,) = generator.generate([[{"role": "user", "content": "What is 473 + 59?"}]], budget)
    assert msg.content == core.answer.strip()
    assert extract_answer(msg.content) == "532"
    assert msg.additional_kwargs["reasoning_content"] == core.thinking.strip()
    reasoning = [b for b in msg.content_blocks if b["type"] == "reasoning"]
    assert len(reasoning) == 1 and reasoning[0]["reasoning"] == core.thinking.strip()
    usage = msg.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == core.prompt_tokens
    assert usage["output_tokens"] == len(core.token_ids)
    assert usage["total_tokens"] == core.prompt_tokens + len(core.token_ids)
    assert usage["output_token_details"]["reasoning"] == core.thinking_tokens
    meta = msg.response_metadata
    assert meta["thinking_tokens"] == core.thinking_tokens
    assert meta["extensions"] == core.extensions == 1
    assert meta["thinking_ended_by"] == "model" and meta["budget_capped"] is False
    assert meta["strategy"] == "single_pass"
    assert meta["finish_reason"] == "stop"


def test_budget_as_fields_per_call_and_bound(chat: ChatBudgetForced) -> None:
    capped = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS, max_thinking_tokens=6)
    msg = capped.invoke("What is 4857 + 2968?")
    assert msg.response_metadata["thinking_tokens"] == 6
    assert msg.response_metadata["budget_capped"] is True
    msg = chat.invoke("What is 4857 + 2968?", max_thinking_tokens=9)
    assert msg.response_metadata["thinking_tokens"] == 9
    bound = chat.bind(thinking_budget={"min_thinking_tokens": 80})
    msg = bound.invoke("What is 12 + 34?")
    assert msg.response_metadata["thinking_tokens"] >= 80
    assert msg.response_metadata["extensions"] >= 1


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_streaming_sends_reasoning_chunks_then_content(chat: ChatBudgetForced) -> None:
    handler = _Tokens()
    chunks = list(chat.stream("What is 2857 + 968?", config={"callbacks": [handler]}))
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    invoked = chat.invoke("What is 2857 + 968?")
    assert full.content.strip() == invoked.content
    assert (
        full.additional_kwargs["reasoning_content"].strip()
        == (invoked.additional_kwargs["reasoning_content"])
    )
    thinking_first = [bool(c.additional_kwargs.get("reasoning_content")) for c in chunks]
    first_answer = next(i for i, c in enumerate(chunks) if c.content)
    assert any(thinking_first[:first_answer]) and not any(thinking_first[first_answer:])
    assert full.usage_metadata == invoked.usage_metadata
    assert full.response_metadata["thinking_tokens"] == invoked.response_metadata["thinking_tokens"]
    assert len(handler.tokens) == len(chunks)
    assert "".join(handler.tokens) == full.content


async def test_lcel_chain_and_abatch(chat: ChatBudgetForced, generator: Any) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "What is {a} + {b}?")])
    chain = prompt | chat | StrOutputParser()
    answer = chain.invoke({"a": 473, "b": 59})
    assert answer == chat.invoke([HumanMessage("What is 473 + 59?")]).content
    pairs = [(i * 37 + 10, i * 91 + 23) for i in range(32)]
    answers = await chain.abatch([{"a": a, "b": b} for a, b in pairs])
    # the adapter adds nothing: the chain's answers are the generator's, batch or not
    direct = generator.generate(
        [[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in pairs]
    )
    assert answers == [r.answer.strip() for r in direct]
    sync = chain.batch([{"a": a, "b": b} for a, b in pairs[:8]])
    assert sync == answers[:8]


class Sum(BaseModel):
    total: int


def test_structured_output_constrains_the_answer(chat: ChatBudgetForced) -> None:
    structured = chat.with_structured_output(Sum)
    result = structured.invoke("What is 473 + 59?")
    assert isinstance(result, Sum)
    raw = chat.with_structured_output(Sum, include_raw=True).invoke("What is 12 + 34?")
    assert isinstance(raw["parsed"], Sum)
    # the thinking stayed free: the same as without the schema
    free = chat.invoke("What is 12 + 34?").additional_kwargs["reasoning_content"]
    assert raw["raw"].additional_kwargs["reasoning_content"] == free


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Choose(BaseModel):
    """Pick the operation the question asks for."""

    operation: Literal["add", "subtract"]


def test_forced_tool_choice_gives_valid_calls(chat: ChatBudgetForced) -> None:
    # The toy writes digits without end inside an integer, so the calls here pick from enums.
    bindings = [
        ([Choose], "any"),
        ([Choose, add], "Choose"),
        ([Choose, add], {"type": "function", "function": {"name": "Choose"}}),
    ]
    for tools, choice in bindings:
        msg = chat.bind_tools(tools, tool_choice=choice).invoke("What is 473 + 59?")
        assert len(msg.tool_calls) == 1, choice
        call = msg.tool_calls[0]
        assert call["name"] == "Choose"
        assert call["args"]["operation"] in ("add", "subtract")
        assert msg.additional_kwargs["reasoning_content"]  # it thought before calling
    free = chat.bind_tools([add], tool_choice="none").invoke("What is 473 + 59?")
    # "none": no tools in the prompt, no call, the plain answer
    assert not free.tool_calls and free.content == chat.invoke("What is 473 + 59?").content


def test_tool_message_history_reaches_the_prompt(chat: ChatBudgetForced, generator: Any) -> None:
    history = [
        SystemMessage("You add numbers."),
        HumanMessage("What is 2 + 2?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 2}, "id": "c1"}]),
        ToolMessage("4", tool_call_id="c1"),
        HumanMessage("What is 12 + 34?"),
    ]
    msg = chat.bind_tools([add]).invoke(history)
    assert isinstance(msg, AIMessage)
    rendered = generator.tokenizer.apply_chat_template(
        messages_to_dicts(history),
        tools=[convert_to_openai_tool(add)],  # the template renders them (toy v2 does)
        add_generation_prompt=True,
        tokenize=False,
    )
    expected = len(generator.tokenizer.encode(rendered + "<think>", add_special_tokens=False))
    assert msg.usage_metadata["input_tokens"] == expected


def test_reasoning_tool_in_an_agent_loop(generator: Any) -> None:
    """A main model hands the hard question to the reasoner through the tool protocol."""
    tool = reasoning_tool(generator, budget={"extensions": 1})
    main = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    "",
                    tool_calls=[
                        {
                            "name": "think_hard",
                            "args": {"question": "What is 4857 + 2968?"},
                            "id": "t1",
                        }
                    ],
                ),
                AIMessage("Done."),
            ]
        )
    )
    messages: list[Any] = [HumanMessage("Please work out 4857 + 2968.")]
    reply = main.invoke(messages)
    messages.append(reply)
    for call in reply.tool_calls:
        tool_message = tool.invoke({**call, "type": "tool_call"})
        messages.append(tool_message)
    messages.append(main.invoke(messages))
    tool_message = messages[2]
    assert isinstance(tool_message, ToolMessage)
    assert extract_answer(tool_message.content) == "7825"
    assert tool_message.artifact["extensions"] == 1
    assert "7+8=15" in tool_message.artifact["thinking"]
    assert messages[-1].content == "Done."


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: m.invoke([]), ValueError, "empty"),
        (
            lambda m: m.invoke([HumanMessage([{"type": "image", "url": "http://x/y.png"}])]),
            ValueError,
            "image",
        ),
        (lambda m: m.invoke("hi", max_thinking_tokens=-2), ValueError, "max_thinking_tokens"),
        (lambda m: m.invoke("hi", thinking_budget={"min_thinking_tokens": -1}), ValueError, "min"),
        (lambda m: m.bind_tools([add], tool_choice="multiply"), ValueError, "tool_choice"),
        (lambda m: m.invoke("hi", frobnicate=1), TypeError, "frobnicate"),
    ],
)
def test_bad_input_is_a_clear_error(
    chat: ChatBudgetForced, call: Any, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        call(chat)
    assert chat.invoke("What is 1 + 1?").content  # the engine still serves


def test_bad_budget_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="min_thinking_tokens"):
        ChatBudgetForced(model=TOY, min_thinking_tokens=10, max_thinking_tokens=5)


def test_identifying_and_langsmith_params() -> None:
    chat = ChatBudgetForced(model=TOY, max_thinking_tokens=32, temperature=0.5)
    params = chat._get_ls_params(stop=["x"])
    assert params["ls_provider"] == "s1_integrations"
    assert params["ls_model_name"] == TOY
    assert params["ls_temperature"] == 0.5
    assert params["ls_max_tokens"] == 32 + 1024
    assert params["ls_stop"] == ["x"]
    assert chat._get_ls_params(model="other")["ls_model_name"] == "other"
    assert chat._identifying_params["max_thinking_tokens"] == 32
