"""Provider knobs, budget resolution and the adapters' shared settings, without an engine.

The engine tests (tests/integration/test_agents.py) check that each knob's budget is the one
the engine runs, with exact counts; here the mapping itself is checked, entry by entry,
through the core function and through both adapters' resolution, which must agree.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from pydantic import ValidationError

from conftest import TOY
from s1_integrations import ThinkingBudget
from s1_integrations.adapters.langchain import ChatBudgetForced, messages_to_dicts
from s1_integrations.adapters.llama_index import BudgetForcedLLM, to_generator_messages
from s1_integrations.core.budget import BudgetError
from s1_integrations.core.formats import THINK_TAGS
from s1_integrations.core.knobs import (
    BUDGET_FIELDS,
    DEFAULT_EFFORT_TABLE,
    EFFORT_LEVELS,
    ConflictingSettingsError,
    EffortTable,
    check_names,
    reserved_output_tokens,
    resolve_budget,
)
from s1_integrations.core.reporting import FIGURE_KEYS, result_figures
from s1_integrations.core.results import BudgetForcedResult
from s1_integrations.core.sampling import SamplingOptions
from s1_integrations.core.settings import AdapterSettings
from s1_integrations.core.toolcalls import (
    ToolCallStreamFilter,
    normalise_tool_choice,
    parse_tool_calls,
    plan_tools,
)
from s1_integrations.engine.remote import RemoteConfig

ADAPTERS = [ChatBudgetForced, BudgetForcedLLM]
DEFAULT = ThinkingBudget()


def fake_generator(budget: ThinkingBudget = DEFAULT, context: int = 1_000_000) -> SimpleNamespace:
    """What budget resolution reads from a generator: its default budget and context size."""
    return SimpleNamespace(default_budget=budget, max_model_len=context)


def through_adapters(model: dict[str, Any], call: dict[str, Any], **gen: Any) -> ThinkingBudget:
    """The budget both adapters resolve for these settings; they must agree."""
    budgets = [cls(model=TOY, **model).resolve(fake_generator(**gen), call)[0] for cls in ADAPTERS]
    assert budgets[0] == budgets[1]
    return budgets[0]


# -- the knob table --------------------------------------------------------------------------

OFF = {"max_thinking_tokens": 0, "min_thinking_tokens": 0, "extensions": 0}

#: (knob, value, the budget fields it must set): the table in docs/langchain.md and
#: docs/llama_index.md, row by row.
KNOBS: list[tuple[str, Any, dict[str, Any]]] = [
    ("reasoning_effort", "none", OFF),
    ("reasoning_effort", "minimal", {"max_thinking_tokens": 256}),
    ("reasoning_effort", "low", {"max_thinking_tokens": 1024}),
    ("reasoning_effort", "medium", {"max_thinking_tokens": 4096}),
    ("reasoning_effort", "high", {"max_thinking_tokens": 16384}),
    ("reasoning_effort", "xhigh", {"max_thinking_tokens": None, "extensions": 1}),
    ("reasoning", {"effort": "low"}, {"max_thinking_tokens": 1024}),
    ("reasoning", "high", {"max_thinking_tokens": 16384}),
    ("reasoning", False, OFF),
    ("thinking", False, OFF),
    ("thinking", "minimal", {"max_thinking_tokens": 256}),
    ("thinking", {"type": "enabled", "budget_tokens": 300}, {"max_thinking_tokens": 300}),
    ("thinking", {"type": "disabled"}, OFF),
    ("thinking", {"type": "adaptive"}, {"max_thinking_tokens": None}),
    ("thinking_dict", {"type": "enabled", "budget_tokens": 40}, {"max_thinking_tokens": 40}),
    ("thinking_budget", 0, OFF),
    ("thinking_budget", -1, {"max_thinking_tokens": None}),
    ("thinking_budget", 77, {"max_thinking_tokens": 77}),
    ("max_tokens", 64, {"max_answer_tokens": 64}),
]


@pytest.mark.parametrize(("knob", "value", "fields"), KNOBS, ids=lambda x: repr(x)[:40])
def test_each_knob_maps_as_the_table_says(knob: str, value: Any, fields: dict[str, Any]) -> None:
    # Over a budget where every field the knob might set has another value, so that a field
    # the knob leaves alone and a field it sets can be told apart.
    below = ThinkingBudget(max_thinking_tokens=500, min_thinking_tokens=3, max_answer_tokens=9)
    expected = ThinkingBudget.model_validate({**below.model_dump(), **fields})
    assert resolve_budget(below, {knob: value}) == expected
    assert through_adapters({knob: value}, {}, budget=below) == expected  # constructor field
    assert through_adapters({}, {knob: value}, budget=below) == expected  # per call


def test_reasoning_true_turns_on_and_lifts_a_lower_off() -> None:
    for knob in ("reasoning", "thinking"):
        on = {knob: True}
        capped = ThinkingBudget(max_thinking_tokens=50)
        assert resolve_budget(capped, on) == capped  # on: the cap stays
        assert resolve_budget(capped, {"reasoning_effort": "none"}, on).max_thinking_tokens is None
        assert through_adapters({"thinking_budget": 0}, on).max_thinking_tokens is None


def test_the_effort_table_is_documented_and_overridable_per_instance() -> None:
    assert EFFORT_LEVELS == ("none", "minimal", "low", "medium", "high", "xhigh")
    table = {"low": {"max_thinking_tokens": 12}, "high": {"min_thinking_tokens": 30}}
    for cls in ADAPTERS:
        model = cls(model=TOY, effort_table=table)
        assert model.effort_table.low == {"max_thinking_tokens": 12}
        assert model.effort_table.medium == DEFAULT_EFFORT_TABLE.medium  # not replaced
        budget, _ = model.resolve(fake_generator(), {"reasoning_effort": "low"})
        assert budget.max_thinking_tokens == 12
        budget, _ = model.resolve(fake_generator(), {"reasoning": {"effort": "high"}})
        assert (budget.max_thinking_tokens, budget.min_thinking_tokens) == (None, 30)
        default = cls(model=TOY)
        assert default.resolve(fake_generator(), {"reasoning_effort": "low"})[0] == ThinkingBudget(
            max_thinking_tokens=1024
        )
    with pytest.raises(ValidationError, match="not ThinkingBudget fields"):
        EffortTable(low={"max_thinking_token": 5})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        EffortTable(low={"max_thinking_tokens": -5})
    with pytest.raises(ValidationError, match="ultra"):
        EffortTable.model_validate({"ultra": {}})


def test_an_effort_cap_beyond_the_context_names_the_knob() -> None:
    with pytest.raises(BudgetError, match=r"reasoning_effort: .*16384.*context of 512") as e:
        resolve_budget(DEFAULT, {"reasoning_effort": "high"}, context_window=512)
    assert e.value.field == "reasoning_effort"
    with pytest.raises(BudgetError, match=r"thinking: .*budget_tokens.*600.*context of 512"):
        through_adapters({}, {"thinking": {"type": "enabled", "budget_tokens": 600}}, context=512)
    # an explicit field that does not fit is the generator's to refuse (it knows the prompt)
    assert resolve_budget(DEFAULT, {"max_thinking_tokens": 600}, context_window=512)


# -- levels and the one budget rule ------------------------------------------------------------


def test_unset_fields_take_the_generators_default_budget_in_both_adapters() -> None:
    default = ThinkingBudget(max_thinking_tokens=70, extensions=2, conclusion="so")
    assert through_adapters({}, {}, budget=default) == default
    assert through_adapters({"extensions": 0}, {}, budget=default) == default.model_copy(
        update={"extensions": 0}
    )
    # a per-call field overrides the model's field, which overrides the default
    got = through_adapters({"max_thinking_tokens": 40}, {"max_thinking_tokens": 30}, budget=default)
    assert (got.max_thinking_tokens, got.extensions, got.conclusion) == (30, 2, "so")


def test_a_whole_budget_replaces_the_levels_below_it() -> None:
    default = ThinkingBudget(max_thinking_tokens=70, conclusion="so")
    whole = {"min_thinking_tokens": 5}
    # per call: the generator's meaning of a budget dict (class defaults for the rest)
    assert through_adapters({"extensions": 3}, {"thinking_budget": whole}, budget=default) == (
        ThinkingBudget(min_thinking_tokens=5)
    )
    # fields given beside it in the same call override on top of it
    got = through_adapters({}, {"thinking_budget": whole, "extensions": 1}, budget=default)
    assert got == ThinkingBudget(min_thinking_tokens=5, extensions=1)
    # as a constructor field: the model's budget, replacing the generator's default
    model_whole = ThinkingBudget(max_thinking_tokens=9)
    assert through_adapters({"thinking_budget": model_whole}, {}, budget=default) == model_whole


def test_a_per_call_knob_overrides_the_models_fields() -> None:
    got = through_adapters(
        {"max_thinking_tokens": 100, "min_thinking_tokens": 20}, {"thinking": False}
    )
    assert got == ThinkingBudget(**OFF)
    got = through_adapters({"reasoning_effort": "none"}, {"max_thinking_tokens": 33})
    assert got.max_thinking_tokens == 33


# -- contradictions --------------------------------------------------------------------------

CONFLICTS: list[tuple[dict[str, Any], tuple[str, str]]] = [
    (
        {"reasoning_effort": "low", "max_thinking_tokens": 5},
        ("max_thinking_tokens", "reasoning_effort"),
    ),
    (
        {"thinking": {"type": "disabled"}, "min_thinking_tokens": 10},
        ("min_thinking_tokens", "thinking"),
    ),
    ({"thinking_budget": 0, "extensions": 1}, ("extensions", "thinking_budget")),
    ({"reasoning": False, "reasoning_effort": "high"}, ("reasoning_effort", "reasoning")),
    ({"reasoning": True, "max_thinking_tokens": 0}, ("max_thinking_tokens", "reasoning")),
    ({"thinking": True, "reasoning_effort": "none"}, ("reasoning_effort", "thinking")),
    ({"reasoning_effort": "low", "thinking_budget": 30}, ("reasoning_effort", "thinking_budget")),
    ({"max_tokens": 10, "max_answer_tokens": 20}, ("max_answer_tokens", "max_tokens")),
    (
        {
            "thinking": {"type": "enabled", "budget_tokens": 50},
            "thinking_dict": {"type": "disabled"},
        },
        ("thinking", "thinking_dict"),
    ),
]


@pytest.mark.parametrize(("settings", "names"), CONFLICTS, ids=lambda x: str(x)[:50])
def test_contradictions_are_errors_naming_both(
    settings: dict[str, Any], names: tuple[str, str]
) -> None:
    with pytest.raises(ConflictingSettingsError) as core:
        resolve_budget(DEFAULT, settings)
    assert core.value.fields == names
    for name in names:
        assert name in str(core.value)
    for cls in ADAPTERS:
        with pytest.raises(ConflictingSettingsError) as at_construction:
            cls(model=TOY, **settings)
        assert at_construction.value.fields == names
        with pytest.raises(ConflictingSettingsError) as per_call:
            cls(model=TOY).resolve(fake_generator(), dict(settings))
        assert per_call.value.fields == names


def test_knobs_that_agree_are_no_contradiction() -> None:
    settings = {
        "reasoning_effort": "none",
        "thinking": False,
        "thinking_budget": 0,
        "max_thinking_tokens": 0,
    }
    assert resolve_budget(DEFAULT, settings) == ThinkingBudget(**OFF)
    assert through_adapters(settings, {}) == ThinkingBudget(**OFF)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"reasoning": {"effort": "low", "summary": "auto"}}, "whole thinking, never a summary"),
        ({"reasoning": "yes"}, "reasoning"),
        ({"thinking": {"type": "enabled"}}, "needs budget_tokens"),
        ({"thinking": {"type": "disabled", "budget_tokens": 8}}, "no meaning"),
        ({"thinking_dict": {"type": "on"}}, "thinking_dict"),
        ({"thinking_budget": -2}, "thinking_budget"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_knob_values_are_validation_errors(settings: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        resolve_budget(DEFAULT, settings)
    for cls in ADAPTERS:
        with pytest.raises(ValidationError, match=match):
            cls(model=TOY, **settings)
        with pytest.raises(ValidationError, match=match):
            cls(model=TOY).resolve(fake_generator(), dict(settings))


def test_thinking_budget_of_the_wrong_type_is_a_type_error() -> None:
    for bad in ("lots", 2.5, [1]):
        with pytest.raises(TypeError, match="thinking_budget must be a ThinkingBudget"):
            resolve_budget(DEFAULT, {"thinking_budget": bad})
        for cls in ADAPTERS:
            with pytest.raises(TypeError, match="thinking_budget must be a ThinkingBudget"):
                cls(model=TOY).resolve(fake_generator(), {"thinking_budget": bad})


# -- constructor arguments: the same bad input, the same error, in both adapters ----------------

CONSTRUCTOR_CASES: list[tuple[dict[str, Any], type[BaseException], str]] = [
    (
        {"max_thinking_token": 16},
        TypeError,
        r"'max_thinking_token'.*did you mean 'max_thinking_tokens'",
    ),
    ({"reasoning_efort": "low"}, TypeError, r"did you mean 'reasoning_effort'"),
    ({"frobnicate": 1}, TypeError, r"unexpected keyword argument \['frobnicate'\]$"),
    ({"timeout": 60}, TypeError, "network client setting"),
    ({"max_retries": 2}, TypeError, "network client setting"),
    ({"api_key": "x"}, TypeError, "network client setting"),
    ({"max_thinking_tokens": -1}, ValidationError, "max_thinking_tokens"),
    ({"extension_phrases": [" "]}, ValidationError, "extension phrases must contain text"),
    ({"min_thinking_tokens": 10, "max_thinking_tokens": 5}, ValidationError, "exceeds"),
    ({"temperature": -1}, ValidationError, "temperature"),
    ({"top_k": 0}, ValidationError, "top_k"),
    ({"strategy": "guess"}, ValidationError, "strategy"),
    ({"effort_table": {"low": {"bogus": 1}}}, ValidationError, "not ThinkingBudget fields"),
    ({"reasoning_effort": "low", "max_thinking_tokens": 7}, ConflictingSettingsError, "give one"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), CONSTRUCTOR_CASES, ids=lambda x: str(x)[:40])
@pytest.mark.parametrize("cls", ADAPTERS, ids=lambda c: c.__name__)
def test_bad_constructor_arguments(
    cls: type, kwargs: dict[str, Any], error: type[BaseException], match: str
) -> None:
    with pytest.raises(Exception) as caught:
        cls(model=TOY, **kwargs)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    assert re.search(match, str(caught.value)), str(caught.value)


def test_every_field_name_is_accepted_by_both_adapters() -> None:
    """Each adapter takes every shared setting; the settings are defined once for both."""
    shared = {
        "max_thinking_tokens": 8,
        "min_thinking_tokens": 2,
        "extensions": 1,
        "extension_phrases": "Hmm",
        "conclusion": "so",
        "max_answer_tokens": 20,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "seed": 3,
        "stop": ["\n\n"],
        "strategy": "rounds",
        "keep_reasoning": True,
    }
    for cls in ADAPTERS:
        model = cls(model=TOY, **shared)
        budget, options = model.resolve(fake_generator(), {})
        assert budget == ThinkingBudget(
            max_thinking_tokens=8,
            min_thinking_tokens=2,
            extensions=1,
            extension_phrases=("Hmm",),
            conclusion="so",
            max_answer_tokens=20,
        )
        assert options == {
            "strategy": "rounds",
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 5,
            "seed": 3,
            "stop": ("\n\n",),
        }
    # new ThinkingBudget fields appear in both adapters without an edit there
    for cls in ADAPTERS:
        assert set(BUDGET_FIELDS) <= set(cls.model_fields)


def test_langchain_takes_its_standard_stop_sequences_name() -> None:
    assert ChatBudgetForced(model=TOY, stop_sequences=["x"]).stop == ("x",)


def test_check_names_suggests_near_misses() -> None:
    with pytest.raises(TypeError) as caught:
        check_names(["temprature", "xyz"], ["temperature", "top_p"], "M()")
    text = str(caught.value)
    assert text.startswith("M() got unexpected keyword arguments ['temprature', 'xyz']")
    assert "did you mean 'temperature' (for 'temprature')?" in text
    assert "for 'xyz'" not in text
    check_names(["top_p"], ["temperature", "top_p"], "M()")  # nothing to refuse


def test_reserved_output_tokens() -> None:
    assert (
        reserved_output_tokens(ThinkingBudget(max_thinking_tokens=40, max_answer_tokens=20), 1, 512)
        == 61
    )
    assert (
        reserved_output_tokens(ThinkingBudget(min_thinking_tokens=30, max_answer_tokens=20), 2, 512)
        == 52
    )
    assert reserved_output_tokens(ThinkingBudget(), 1, 512) == 256  # half the window at most


# -- metadata: one set of keys ---------------------------------------------------------------


def fake_result(**update: Any) -> BudgetForcedResult:
    fields: dict[str, Any] = {
        "thinking": "7+8=15",
        "answer": "The answer is 15.",
        "prompt_tokens": 9,
        "thinking_tokens": 4,
        "answer_tokens": 6,
        "extensions": 1,
        "thinking_ended_by": "budget",
        "finish_reason": "stop",
        "budget": ThinkingBudget(max_thinking_tokens=4),
        "strategy": "single_pass",
        "model": "toy",
        "prompt_token_ids": list(range(9)),
        "token_ids": list(range(11)),
        "thinking_token_ids": [1, 2, 3, 4],
        "answer_token_ids": [5, 6, 7, 8, 9, 10],
        "extension_positions": [2],
    }
    fields.update(update)
    return BudgetForcedResult(**fields)


def test_both_adapters_report_the_same_keys() -> None:
    from s1_integrations.adapters.langchain import response_metadata
    from s1_integrations.adapters.llama_index import chat_response, completion_response

    result = fake_result()
    figures = result_figures(result)
    assert tuple(figures) == FIGURE_KEYS
    assert figures["budget_capped"] is True and figures["completion_tokens"] == 11
    assert figures["extension_positions"] == [2]
    langchain = response_metadata(result)
    assert {k: langchain[k] for k in FIGURE_KEYS} == figures
    assert set(langchain) - set(FIGURE_KEYS) == {"model_name", "model_provider"}
    assert chat_response(result).additional_kwargs == figures
    completion = completion_response(result).additional_kwargs
    assert {k: completion[k] for k in FIGURE_KEYS} == figures


# -- tool calls --------------------------------------------------------------------------------

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
    },
}
LOOKUP = {"type": "function", "function": {"name": "lookup"}}


def test_tool_choice_spellings() -> None:
    names = ["add", "lookup"]
    assert [normalise_tool_choice(c, names) for c in (None, "auto", True, "any", "required")] == [
        "auto",
        "auto",
        "any",
        "any",
        "any",
    ]
    assert normalise_tool_choice(False, names) == normalise_tool_choice("none", names) == "none"
    assert normalise_tool_choice({"type": "function", "function": {"name": "add"}}, names) == "add"
    assert normalise_tool_choice({"name": "lookup"}, names) == "lookup"
    with pytest.raises(ValueError, match="tool_choice: 'multiply' is not"):
        normalise_tool_choice("multiply", names)


def test_parallel_calls_are_read_from_the_answer() -> None:
    answer = (
        'First <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call> then '
        '<tool_call>{"name": "lookup", "arguments": {}}</tool_call> and '
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
    )
    text, calls = parse_tool_calls(answer, [ADD, LOOKUP], "auto")
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 1}), ("lookup", {})]
    assert len({c.id for c in calls}) == 2
    # the unknown tool's block stays in the text: nothing the model wrote disappears
    assert text == 'First  then  and <tool_call>{"name": "nope", "arguments": {}}</tool_call>'
    assert (
        plan_tools([ADD, LOOKUP], "auto", None, parallel=False).read_answer(answer)[1][0].name
        == "add"
    )
    assert len(plan_tools([ADD, LOOKUP], "auto", None, parallel=False).read_answer(answer)[1]) == 1
    _, forced = parse_tool_calls('{"name": "add", "arguments": {"a": 2}}', [ADD], "add")
    assert [(c.name, c.arguments) for c in forced] == [("add", {"a": 2})]
    assert parse_tool_calls("not json", [ADD], "any") == ("not json", [])


def test_the_stream_filter_holds_back_calls_only() -> None:
    answer = (
        'Sure. <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call> '
        "<tool_call>x</tool_call> done <tool"
    )
    for size in (1, 3, 7, len(answer)):
        f = ToolCallStreamFilter([ADD])
        out = "".join(f.feed(answer[i : i + size]) for i in range(0, len(answer), size)) + f.flush()
        assert out == "Sure.  <tool_call>x</tool_call> done <tool", size


def test_tool_plans() -> None:
    forced = plan_tools([ADD, LOOKUP], "required", None)
    assert forced.read == "call" and forced.answer_schema is not None
    assert [s["properties"]["name"]["const"] for s in forced.answer_schema["anyOf"]] == [
        "add",
        "lookup",
    ]
    one = plan_tools([ADD, LOOKUP], "lookup", None)
    assert one.answer_schema["properties"]["name"] == {"const": "lookup"}
    either = plan_tools([ADD], "auto", {"type": "object"})
    assert either.read == "call_or_answer" and len(either.answer_schema["anyOf"]) == 2
    assert either.read_answer('{"verdict": true}') == ('{"verdict": true}', [])
    assert plan_tools([ADD], "none", None).tools is None
    with pytest.raises(ValueError, match="give one of them"):
        plan_tools([ADD], "add", {"type": "object"})
    with pytest.raises(ValueError, match="no tools are bound"):
        plan_tools([], "required", None)


def test_llama_index_tool_required_is_a_forced_choice() -> None:
    from llama_index.core.tools import FunctionTool

    def lookup() -> str:
        """Look up the number."""
        return "42"

    llm = BudgetForcedLLM(model=TOY)
    tool = FunctionTool.from_defaults(fn=lookup)
    kwargs = llm._prepare_chat_with_tools([tool], user_msg="hi", tool_required=True, extensions=2)
    assert kwargs["tool_choice"] == "required" and kwargs["extensions"] == 2
    assert [m.content for m in kwargs["messages"]] == ["hi"]
    assert kwargs["tools"][0]["function"]["name"] == "lookup"
    named = llm._prepare_chat_with_tools([tool], chat_history=[], tool_choice="lookup")
    assert named["tool_choice"] == "lookup"
    assert llm._prepare_chat_with_tools([tool])["tool_choice"] is None
    with pytest.raises(ValueError, match="contradicts"):
        llm._prepare_chat_with_tools([tool], tool_required=True, tool_choice="none")


def test_llama_index_reads_calls_from_blocks_and_openai_kwargs() -> None:
    llm = BudgetForcedLLM(model=TOY)
    message = ChatMessage(
        role="assistant",
        blocks=[
            ThinkingBlock(content="hm"),
            TextBlock(text=""),
            ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 1}),
            ToolCallBlock(tool_call_id="c2", tool_name="lookup", tool_kwargs={}),
        ],
        additional_kwargs={
            "tool_calls": [{"id": "c3", "function": {"name": "add", "arguments": '{"a": 5}'}}]
        },
    )
    calls = llm.get_tool_calls_from_response(ChatResponse(message=message))
    assert [(c.tool_id, c.tool_name, c.tool_kwargs) for c in calls] == [
        ("c1", "add", {"a": 1}),
        ("c2", "lookup", {}),
        ("c3", "add", {"a": 5}),
    ]
    empty = ChatResponse(message=ChatMessage(role="assistant", content="no call"))
    assert llm.get_tool_calls_from_response(empty, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="Expected at least one tool call"):
        llm.get_tool_calls_from_response(empty)


# -- earlier reasoning in the prompt: accepted, stripped, kept on request -----------------------


def test_llama_index_history_with_thinking_and_calls() -> None:
    history = [
        ChatMessage(role="user", content="What is 2 + 2?"),
        ChatMessage(
            role="assistant",
            blocks=[
                ThinkingBlock(content="2+2=4"),
                TextBlock(text=""),
                ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 2}),
            ],
        ),
        ChatMessage(
            role=MessageRole.TOOL,
            blocks=[TextBlock(text="4")],
            additional_kwargs={"tool_call_id": "c1"},
        ),
    ]
    call = {"type": "function", "id": "c1", "function": {"name": "add", "arguments": {"a": 2}}}
    assert to_generator_messages(history) == [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "4", "tool_call_id": "c1"},
    ]
    kept = to_generator_messages(history, THINK_TAGS)
    assert kept[1]["content"] == "<think>2+2=4</think>"


def test_langchain_history_reasoning_in_every_form() -> None:
    forms = [
        AIMessage("4", additional_kwargs={"reasoning_content": "2+2=4"}),
        AIMessage([{"type": "reasoning", "reasoning": "2+2=4"}, {"type": "text", "text": "4"}]),
        AIMessage([{"type": "thinking", "thinking": "2+2=4", "signature": "s"}, "4"]),
        AIMessage(
            [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "2+2=4"}]}, "4"]
        ),
        # output_version="v1": the block in content and the same text in additional_kwargs
        AIMessage(
            [{"type": "reasoning", "reasoning": "2+2=4"}, {"type": "text", "text": "4"}],
            additional_kwargs={"reasoning_content": "2+2=4"},
        ),
    ]
    for message in forms:
        history = [HumanMessage("What is 2 + 2?"), message]
        assert messages_to_dicts(history)[1] == {"role": "assistant", "content": "4"}
        assert messages_to_dicts(history, THINK_TAGS)[1]["content"] == "<think>2+2=4</think>4"
    tool_turn = [
        HumanMessage("hi"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1"}]),
        ToolMessage("1", tool_call_id="c1"),
    ]
    assert messages_to_dicts(tool_turn)[2] == {"role": "tool", "content": "1", "tool_call_id": "c1"}


def test_langchain_profile_declares_what_create_agent_reads() -> None:
    profile = ChatBudgetForced(model=TOY).profile
    assert profile is not None
    for key in ("reasoning_output", "tool_calling", "tool_choice", "structured_output"):
        assert profile[key] is True, key  # type: ignore[literal-required]
    assert profile["reasoning_effort_levels"] == list(EFFORT_LEVELS)
    assert "max_input_tokens" not in profile  # not known before the engine runs
    sized = ChatBudgetForced(model=TOY, engine_args={"max_model_len": 256}).profile
    assert sized is not None and sized["max_input_tokens"] == 256


def test_both_reasoning_tools_have_one_signature() -> None:
    import inspect

    from s1_integrations.adapters import langchain, llama_index

    def shape(fn: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert shape(langchain.reasoning_tool) == shape(llama_index.reasoning_tool)
    names = [name for name, _, _ in shape(langchain.reasoning_tool)]
    assert names == ["generator_or_model", "name", "description", "budget"]
    assert shape(langchain.reasoning_tool)[1][1] is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    "field",
    [
        "max_thinking_tokens",
        "min_thinking_tokens",
        "extensions",
        "max_answer_tokens",
        "soft_landing_tokens",
    ],
)
def test_a_budget_count_refuses_a_boolean_naming_the_field(field: str) -> None:
    """Lax parsing would read true as 1: a mistake to name, not one token; the adapters' own
    fields (built from the budget's) refuse it too."""
    for model in (ThinkingBudget, AdapterSettings):
        with pytest.raises(ValidationError, match=rf"{field}\n.*true is not a number"):
            model(**{field: True})  # type: ignore[arg-type]
    fits = {"max_thinking_tokens": 10, field: "3"}  # a soft landing needs a cap
    assert getattr(ThinkingBudget(**fits), field) == 3  # type: ignore[arg-type]  # a string stays


@pytest.mark.parametrize("field", ["temperature", "top_p", "top_k", "seed", "n"])
def test_a_sampling_number_refuses_a_boolean_naming_the_field(field: str) -> None:
    """temperature=true is no temperature of 1.0, nor seed=false a seed of 0: the sampling
    options, both adapters' fields and a call's keywords name the field."""
    refused = rf"{field}\n.*(true|false) is not a number"
    if field != "n":  # n is the generator's and the adapters' (check_samples in a call)
        with pytest.raises(ValidationError, match=refused):
            SamplingOptions(**{field: True})
        with pytest.raises(ValidationError, match=refused):
            SamplingOptions.from_call({field: False})
    for cls in ADAPTERS:
        with pytest.raises(ValidationError, match=refused):
            cls(model=TOY, **{field: True})
    call = ChatBudgetForced(model=TOY)
    in_call = refused if field != "n" else "n: expected a whole number of samples, got True"
    with pytest.raises(ValueError, match=in_call):  # a ValidationError is a ValueError
        call.resolve(fake_generator(), {field: True})  # type: ignore[arg-type]
    number = {"temperature": "0.5", "top_p": "0.5", "top_k": "3", "seed": "3", "n": "3"}[field]
    assert getattr(BudgetForcedLLM(model=TOY, **{field: number}), field) == float(number)


@pytest.mark.parametrize(
    "field",
    [
        "connect_timeout_s",
        "read_timeout_s",
        "max_retries",
        "backoff_s",
        "max_backoff_s",
        "down_for_s",
        "max_connections",
    ],
)
def test_a_remote_setting_refuses_a_boolean_naming_the_field(field: str) -> None:
    """max_retries=true is no single retry: the fleet's settings name the field too."""
    with pytest.raises(ValidationError, match=rf"{field}\n.*true is not a number"):
        RemoteConfig(base_urls="http://127.0.0.1:8000", **{field: True})
    assert getattr(RemoteConfig(base_urls="http://127.0.0.1:8000", **{field: "2"}), field) == 2


#: Per setting, a value other than the default (and what it needs beside it, on both sides).
CACHE_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "max_thinking_tokens": ({}, {"max_thinking_tokens": 8}),
    "min_thinking_tokens": ({}, {"min_thinking_tokens": 2}),
    "extensions": ({}, {"extensions": 1}),
    "extension_phrases": ({}, {"extension_phrases": ["Hmm"]}),
    "conclusion": ({}, {"conclusion": "So"}),
    "max_answer_tokens": ({}, {"max_answer_tokens": 9}),
    "soft_landing_tokens": ({"max_thinking_tokens": 64}, {"soft_landing_tokens": 8}),
    "adaptive": ({}, {"adaptive": {}}),
    "reasoning_effort": ({}, {"reasoning_effort": "low"}),
    "reasoning": ({}, {"reasoning": False}),
    "thinking": ({}, {"thinking": False}),
    "thinking_dict": ({}, {"thinking_dict": {"type": "enabled", "budget_tokens": 64}}),
    "thinking_budget": ({}, {"thinking_budget": 64}),
    "max_tokens": ({}, {"max_tokens": 9}),
    "temperature": ({}, {"temperature": 0.5}),
    "top_p": ({"temperature": 0.5}, {"top_p": 0.9}),
    "top_k": ({"temperature": 0.5}, {"top_k": 3}),
    "seed": ({}, {"seed": 3}),
    "stop": ({}, {"stop": ["Q:"]}),
    "strategy": ({}, {"strategy": "rounds"}),
    "n": ({"temperature": 0.5}, {"n": 2}),
    "vote": ({}, {"vote": "confidence"}),
    "effort_table": ({}, {"effort_table": {"low": {"max_thinking_tokens": 64}}}),
    "keep_reasoning": ({}, {"keep_reasoning": True}),
}


def test_langchain_caches_models_that_differ_in_any_setting_apart() -> None:
    """LangChain's cache keys answers by the model's identifying params and the call's
    keywords: a setting missing there would hand one model another's cached answers."""
    assert set(CACHE_CASES) == set(AdapterSettings.model_fields)  # a new field joins here
    for field, (base, changed) in CACHE_CASES.items():
        one = ChatBudgetForced(model=TOY, **base)
        other = ChatBudgetForced(model=TOY, **base, **changed)
        assert one._get_llm_string() != other._get_llm_string(), field
        assert one._get_llm_string() == ChatBudgetForced(model=TOY, **base)._get_llm_string()
    engines = [ChatBudgetForced(model=TOY, engine_args={"dtype": d}) for d in ("float32", "auto")]
    assert engines[0]._get_llm_string() != engines[1]._get_llm_string()
    # the model's stop survives a call's (LangChain writes the call's over "stop")
    stopped = ChatBudgetForced(model=TOY, stop=["Q:"])
    assert stopped._get_llm_string(stop=["A:"]) != ChatBudgetForced(model=TOY)._get_llm_string(
        stop=["A:"]
    )


def test_one_setting_given_twice_or_never_applied_is_refused() -> None:
    """Each would otherwise keep one value, or none, without a word."""
    for cls in ADAPTERS:
        with pytest.raises(ValidationError, match="stop and stop_sequences are one setting"):
            cls(model=TOY, stop=["a"], stop_sequences=["b"])
        assert cls(model=TOY, stop_sequences=["b"]).stop == ("b",)
    from llama_index.core import PromptTemplate

    for refused in ("messages_to_prompt", "query_wrapper_prompt"):
        value = PromptTemplate("WRAP {query_str}") if refused == "query_wrapper_prompt" else str
        with pytest.raises(TypeError, match=f"got {refused}.*drop {refused}"):
            BudgetForcedLLM(model=TOY, **{refused: value})


def test_a_fleet_setting_that_one_value_would_override_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"http://h:1 given twice"):
        RemoteConfig(base_urls=["http://h:1", "http://h:1/v1/", "http://h:2"])
    with pytest.raises(ValidationError, match="backoff_s 10 exceeds max_backoff_s 1"):
        RemoteConfig(base_urls="http://h:1", backoff_s=10, max_backoff_s=1)
    assert RemoteConfig(base_urls="http://h:1", backoff_s=0, max_backoff_s=0).max_backoff_s == 0
