"""One table of bad input, through every public entry point: a clear error, nothing submitted.

Each row is one bad input (a budget, a prompt, messages, tool specs, an answer schema or a
sampling option); each runs through the generator (``generate``, ``agenerate``, ``stream``,
``astream``), LangChain's ``ChatBudgetForced`` (``invoke``, ``ainvoke``, ``stream``, ``batch``;
tool specs go through ``bind_tools`` and schemas through ``with_structured_output``, LangChain's
entry points for them) and LlamaIndex's ``BudgetForcedLLM`` (``complete``, ``acomplete``,
``chat``, ``stream_complete``). Every pair asserts the exception's exact type, that its
message names the problem, and that the engine was handed no request at all: its request
counter (every request it gives vLLM takes the next number) has not moved, and vLLM has no
unfinished request. The completion entry points get the prompt as given (a question or a list
of messages): ``BudgetForcedLLM`` hands it to the generator as is. A pair found not to be
refused clearly goes into ``KNOWN_GAPS`` as a strict xfail until fixed (none today; the ones
the table first found are listed, fixed, in ``docs/reliability.md``).

The two adapters raise the same error type for the same bad input (issue 18):
``test_both_adapters_expect_the_same_error_types`` checks the table itself for that, except
where a framework refuses the input in its own type before any adapter code runs (listed, with
the reason, in ``FRAMEWORK_REFUSES``). Rows marked ``adapters_only`` are settings only the
adapters take (other providers' reasoning knobs, tool choices): the generator has no such
parameter.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from pydantic import ValidationError

from conftest import ENGINE_ARGS, TOY
from s1_integrations.adapters.langchain import ChatBudgetForced
from s1_integrations.adapters.llama_index import BudgetForcedLLM
from s1_integrations.core.budget import BudgetError
from s1_integrations.core.knobs import ConflictingSettingsError
from s1_integrations.core.prompts import PromptError

pytestmark = pytest.mark.engine

QUESTION = "What is 12 + 34?"
_UNSET: Any = object()


@dataclass(frozen=True)
class Case:
    """One bad input and the error it must raise.

    ``error`` and ``match`` are the exact exception type and a regular expression its message
    must contain. Where an entry point or a family of them ("generator", "langchain",
    "llama_index") rejects the input in its own words (LangChain and LlamaIndex check some
    input themselves, before the adapter sees it), ``per_entry`` overrides both, keyed by entry
    point or family name. ``llama_chat`` is the input as LlamaIndex chat messages, where the
    generic one (dicts) does not say it the LlamaIndex way: a function, so that a message
    LlamaIndex itself refuses is refused inside the call under test.
    """

    id: str
    error: type[BaseException]
    match: str
    prompt: Any = QUESTION
    budget: Any = None
    tools: Any = _UNSET
    schema: Any = _UNSET
    sampling: dict[str, Any] = field(default_factory=dict)
    per_entry: dict[str, tuple[type[BaseException], str]] = field(default_factory=dict)
    llama_chat: Callable[[], Any] | None = None
    tool_choice: Any = _UNSET
    adapters_only: bool = False

    def expected(self, entry: str) -> tuple[type[BaseException], str]:
        family = entry.split(".")[0]
        return self.per_entry.get(entry) or self.per_entry.get(family) or (self.error, self.match)


# -- the entry points ----------------------------------------------------------------------


@dataclass
class Targets:
    generator: Any
    chat: ChatBudgetForced
    llm: BudgetForcedLLM


def _generator_kwargs(case: Case) -> dict[str, Any]:
    kwargs = dict(case.sampling)
    if case.tools is not _UNSET:
        kwargs["tools"] = case.tools
    if case.schema is not _UNSET:
        kwargs["answer_schema"] = case.schema
    return kwargs


def gen_generate(t: Targets, case: Case) -> None:
    t.generator.generate(case.prompt, case.budget, **_generator_kwargs(case))


def gen_agenerate(t: Targets, case: Case) -> None:
    asyncio.run(t.generator.agenerate(case.prompt, case.budget, **_generator_kwargs(case)))


def gen_stream(t: Targets, case: Case) -> None:
    for _ in t.generator.stream(case.prompt, case.budget, **_generator_kwargs(case)):
        pass


def gen_astream(t: Targets, case: Case) -> None:
    async def consume() -> None:
        async for _ in t.generator.astream(case.prompt, case.budget, **_generator_kwargs(case)):
            pass

    asyncio.run(consume())


def _langchain(t: Targets, case: Case) -> tuple[Any, dict[str, Any]]:
    """The runnable (with tools bound or a structured output) and the call's keywords."""
    runnable: Any = t.chat
    if case.tools is not _UNSET:
        choice = None if case.tool_choice is _UNSET else case.tool_choice
        runnable = t.chat.bind_tools(case.tools, tool_choice=choice)
    if case.schema is not _UNSET:
        runnable = t.chat.with_structured_output(case.schema)
    kwargs = dict(case.sampling)
    if case.budget is not None:
        kwargs["thinking_budget"] = case.budget
    return runnable, kwargs


def lc_invoke(t: Targets, case: Case) -> None:
    runnable, kwargs = _langchain(t, case)
    runnable.invoke(case.prompt, **kwargs)


def lc_ainvoke(t: Targets, case: Case) -> None:
    runnable, kwargs = _langchain(t, case)
    asyncio.run(runnable.ainvoke(case.prompt, **kwargs))


def lc_stream(t: Targets, case: Case) -> None:
    runnable, kwargs = _langchain(t, case)
    for _ in runnable.stream(case.prompt, **kwargs):
        pass


def lc_batch(t: Targets, case: Case) -> None:
    runnable, kwargs = _langchain(t, case)
    runnable.batch([case.prompt], **kwargs)


def _llama_kwargs(case: Case) -> dict[str, Any]:
    kwargs = dict(case.sampling)
    if case.budget is not None:
        kwargs["thinking_budget"] = case.budget
    if case.tools is not _UNSET:
        kwargs["tools"] = case.tools
    if case.tool_choice is not _UNSET:
        kwargs["tool_choice"] = case.tool_choice
    if case.schema is not _UNSET:
        kwargs["answer_schema"] = case.schema
    return kwargs


def li_complete(t: Targets, case: Case) -> None:
    t.llm.complete(case.prompt, **_llama_kwargs(case))


def li_acomplete(t: Targets, case: Case) -> None:
    asyncio.run(t.llm.acomplete(case.prompt, **_llama_kwargs(case)))


def li_stream_complete(t: Targets, case: Case) -> None:
    for _ in t.llm.stream_complete(case.prompt, **_llama_kwargs(case)):
        pass


def _llama_messages(prompt: Any) -> Any:
    """A question as one user message, dict messages as ``ChatMessage``s, anything else as is.

    A message LlamaIndex cannot represent (an unknown role) fails right here, in
    ``ChatMessage`` itself: with LlamaIndex that is where such input is refused.
    """
    if isinstance(prompt, str):
        return [ChatMessage(role="user", content=prompt)]
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return [ChatMessage(**m) for m in prompt]
    return prompt


def li_chat(t: Targets, case: Case) -> None:
    messages = _llama_messages(case.prompt) if case.llama_chat is None else case.llama_chat()
    t.llm.chat(messages, **_llama_kwargs(case))


ENTRY_POINTS: dict[str, Callable[[Targets, Case], None]] = {
    "generator.generate": gen_generate,
    "generator.agenerate": gen_agenerate,
    "generator.stream": gen_stream,
    "generator.astream": gen_astream,
    "langchain.invoke": lc_invoke,
    "langchain.ainvoke": lc_ainvoke,
    "langchain.stream": lc_stream,
    "langchain.batch": lc_batch,
    "llama_index.complete": li_complete,
    "llama_index.acomplete": li_acomplete,
    "llama_index.chat": li_chat,
    "llama_index.stream_complete": li_stream_complete,
}


# -- the table -----------------------------------------------------------------------------

VE = ValidationError
IMAGE = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
ADD = {
    "type": "function",
    "function": {"name": "add", "parameters": {"type": "object", "properties": {}}},
}
#: Refused by the adapters alike, in the same words.
UNKNOWN_KEYWORD = (TypeError, r"call got unexpected keyword argument \['frobnicate'\]$")
NOT_A_BUDGET = (TypeError, "thinking_budget must be a ThinkingBudget")

CASES: list[Case] = [
    # -- budgets (a dict, as every entry point takes it: budget= / thinking_budget=)
    Case("budget-negative-cap", VE, "max_thinking_tokens", budget={"max_thinking_tokens": -1}),
    Case("budget-negative-min", VE, "min_thinking_tokens", budget={"min_thinking_tokens": -5}),
    Case("budget-negative-extensions", VE, "extensions", budget={"extensions": -1}),
    Case("budget-zero-answer", VE, "max_answer_tokens", budget={"max_answer_tokens": 0}),
    Case(
        "budget-min-above-max",
        VE,
        r"min_thinking_tokens \(9\) exceeds max_thinking_tokens \(3\)",
        budget={"min_thinking_tokens": 9, "max_thinking_tokens": 3},
    ),
    Case("budget-cap-not-a-number", VE, "max_thinking_tokens", budget={"max_thinking_tokens": "x"}),
    Case("budget-fractional-extensions", VE, "extensions", budget={"extensions": 1.5}),
    Case("budget-phrases-not-text", VE, "extension_phrases", budget={"extension_phrases": 7}),
    Case("budget-blank-phrase", VE, "extension_phrases", budget={"extension_phrases": [" "]}),
    Case("budget-empty-conclusion", VE, "conclusion", budget={"conclusion": ""}),
    Case("budget-unknown-field", VE, "bogus", budget={"bogus": 1}),
    # -- the adaptive policy (issue 21)
    Case(
        "adaptive-threshold-out-of-range",
        VE,
        r"adaptive\.threshold",
        budget={"adaptive": {"threshold": 1.5}},
    ),
    Case(
        "adaptive-unknown-signal",
        VE,
        r"adaptive\.signal\n.*unknown signal 'entropy'",
        budget={"adaptive": {"signal": "entropy"}},
    ),
    Case(
        "adaptive-negative-max",
        VE,
        r"adaptive\.max_extensions",
        budget={"adaptive": {"max_extensions": -1}},
    ),
    Case(
        "adaptive-with-fixed-extensions",
        VE,
        r"extensions \(1\) and adaptive exclude each other",
        budget={"adaptive": {}, "extensions": 1},
    ),
    Case(
        "adaptive-with-top-p",
        BudgetError,
        "adaptive: needs top_p=1",
        budget={"adaptive": {}},
        sampling={"top_p": 0.5},
    ),
    Case(
        "budget-not-a-budget",
        TypeError,
        "budget must be a ThinkingBudget",
        budget="lots",  # an int is Google's thinking_budget to the adapters: a valid knob
        per_entry={"langchain": NOT_A_BUDGET, "llama_index": NOT_A_BUDGET},
    ),
    Case(
        "budget-conclusion-longer-than-cap",
        BudgetError,
        r"conclusion: \d+ tokens do not fit under max_thinking_tokens=1",
        budget={"max_thinking_tokens": 1, "conclusion": "Final Answer:"},
    ),
    Case(
        "budget-cap-beyond-context",
        BudgetError,
        "max_thinking_tokens: .*context",
        budget={"max_thinking_tokens": 100_000},
    ),
    Case(
        "budget-min-beyond-context",
        BudgetError,
        "min_thinking_tokens: .*context",
        budget={"min_thinking_tokens": 5000},
    ),
    # -- prompts
    Case(
        "prompt-empty-list",
        PromptError,
        "prompts: no prompts given|messages: the list is empty",
        prompt=[],
        per_entry={"langchain": (PromptError, "messages: the list is empty")},
    ),
    Case(
        "prompt-wrong-type",
        PromptError,
        "expected a string or a list",
        prompt=42,
        per_entry={
            # LlamaIndex's own instrumentation event refuses it before the adapter runs.
            "llama_index.chat": (VE, "messages\n  Input should be a valid list"),
        },
    ),
    Case(
        "prompt-empty-string",
        PromptError,
        "prompt: the question is empty",
        prompt="",
        per_entry={
            "langchain": (PromptError, "messages: every message is empty"),
            "llama_index.chat": (PromptError, "messages: every message is empty"),
        },
    ),
    Case(
        "prompt-blank-string",
        PromptError,
        "prompt: the question is empty",
        prompt="  \n ",
        per_entry={
            "langchain": (PromptError, "messages: every message is empty"),
            "llama_index.chat": (PromptError, "messages: every message is empty"),
        },
    ),
    Case(
        "prompt-overflows-context",
        PromptError,
        r"\d+ tokens leave no room in the model's context of \d+ tokens",
        prompt="What is 1 + 1? " * 600,  # beyond the toy's context (2048 since v2)
    ),
    # -- messages (dicts; LangChain takes them as they are, LlamaIndex as ChatMessage)
    Case(
        "message-unknown-role",
        PromptError,
        r"messages\[0\]\.role: 'wizard' is not one of",
        prompt=[{"role": "wizard", "content": "hi"}],
        per_entry={"llama_index.chat": (VE, "ChatMessage\nrole\n")},
    ),
    Case(
        "message-missing-role",
        PromptError,
        r"messages\[0\]\.role: None is not one of",
        prompt=[{"content": QUESTION}],
        per_entry={"llama_index.chat": (VE, "ChatMessage\nrole\n")},
        # A ChatMessage without a role is a user message; None is LlamaIndex's missing role.
        llama_chat=lambda: [ChatMessage(role=None, content=QUESTION)],
    ),
    Case(
        "message-missing-content",
        PromptError,
        r"messages\[0\]\.content: expected text, got NoneType",
        prompt=[{"role": "user"}],
        per_entry={
            # ChatMessage(role="user") is a message with no blocks
            "llama_index.chat": (PromptError, "messages: every message is empty"),
        },
    ),
    Case(
        "message-number-content",
        PromptError,
        r"messages\[0\]\.content: expected text, got int",
        prompt=[{"role": "user", "content": 3}],
        per_entry={
            # ChatMessage(content=3) drops the number itself and holds no blocks
            "llama_index.chat": (PromptError, "messages: every message is empty"),
        },
    ),
    Case(
        "message-image-content",
        PromptError,
        r"messages\[0\]\.content: expected text, got list",
        prompt=[{"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE]}],
        per_entry={
            "langchain": (PromptError, r"messages\[0\]: content block of type 'image_url'"),
            "llama_index.chat": (PromptError, r"messages\[0\]\.blocks\[1\]: 'image' content"),
        },
        llama_chat=lambda: [
            ChatMessage(
                role="user", blocks=[TextBlock(text="what?"), ImageBlock(url="http://x/y.png")]
            )
        ],
    ),
    Case(
        "message-all-empty",
        PromptError,
        "messages: every message is empty",
        prompt=[{"role": "system", "content": ""}, {"role": "user", "content": " "}],
    ),
    # -- tool specs (generator and LlamaIndex: tools=; LangChain: bind_tools)
    Case(
        "tools-not-a-list",
        PromptError,
        "tools: expected a list of tool specs, got str",
        tools="add",
    ),
    Case("tools-number", PromptError, r"tools\[0\]: expected a mapping, got int", tools=[42]),
    Case(
        "tools-no-function",
        PromptError,
        r"tools\[0\]\.function: missing",
        tools=[{"type": "function"}],
    ),
    Case(
        "tools-no-name",
        PromptError,
        r"tools\[0\]\.function\.name: expected a non-empty string",
        tools=[{"type": "function", "function": {"description": "Add two integers."}}],
    ),
    Case(
        "tool-choice-unknown",
        ValueError,
        r"tool_choice: 'multiply' is not 'auto', 'any', 'required', 'none' or one of \['add'\]",
        tools=[ADD],
        tool_choice="multiply",
        adapters_only=True,
    ),
    # -- answer schemas (generator and LlamaIndex: answer_schema=; LangChain:
    # with_structured_output, which wants a title to name the output)
    Case(
        "schema-not-a-dict",
        VE,
        "answer_schema: expected a JSON schema object, got str",
        schema="json please",
    ),
    Case(
        "schema-unknown-type",
        VE,
        'answer_schema: Unsupported type "nonsense"',
        schema={"title": "Answer", "type": "nonsense"},
    ),
    Case(
        "schema-required-not-a-list",
        VE,
        "answer_schema: required must be an array",
        schema={
            "title": "Answer",
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "required": "a",
        },
    ),
    # -- sampling options
    Case("sampling-negative-temperature", VE, "temperature", sampling={"temperature": -1.0}),
    Case("sampling-temperature-not-a-number", VE, "temperature", sampling={"temperature": "hot"}),
    Case("sampling-zero-top-p", VE, "top_p", sampling={"top_p": 0.0}),
    Case("sampling-top-p-above-one", VE, "top_p", sampling={"top_p": 1.5}),
    Case("sampling-zero-top-k", VE, "top_k", sampling={"top_k": 0}),
    Case("sampling-seed-not-a-number", VE, "seed", sampling={"seed": "lucky"}),
    Case(
        "sampling-unknown-option",
        VE,
        "frobnicate",
        sampling={"frobnicate": 1},
        per_entry={
            "langchain": UNKNOWN_KEYWORD,
            "llama_index": UNKNOWN_KEYWORD,
        },
    ),
    Case(
        "sampling-unknown-strategy",
        ValueError,
        "strategy: 'guess' is not 'single_pass' or 'rounds'",
        sampling={"strategy": "guess"},
    ),
    # -- other providers' reasoning knobs (per call; the adapters only)
    Case(
        "knob-unknown-effort",
        VE,
        r"reasoning_effort\n.*Input should be 'none', 'minimal', 'low', 'medium', 'high' or "
        r"'xhigh'",
        sampling={"reasoning_effort": "extreme"},
        adapters_only=True,
    ),
    Case(
        "knob-effort-and-cap-disagree",
        ConflictingSettingsError,
        r"max_thinking_tokens: reasoning_effort='low' means max_thinking_tokens=1024, but "
        r"max_thinking_tokens=5 was given with it",
        sampling={"reasoning_effort": "low", "max_thinking_tokens": 5},
        adapters_only=True,
    ),
    Case(
        "knob-disabled-with-a-minimum",
        ConflictingSettingsError,
        r"thinking=\{'type': 'disabled'\} means max_thinking_tokens=0.*but min_thinking_tokens=10",
        sampling={"thinking": {"type": "disabled"}, "min_thinking_tokens": 10},
        adapters_only=True,
    ),
    Case(
        "knob-off-and-an-effort",
        ConflictingSettingsError,
        r"reasoning=False means .*but reasoning_effort='high' was given",
        sampling={"reasoning": False, "reasoning_effort": "high"},
        adapters_only=True,
    ),
    Case(
        "knob-enabled-without-budget-tokens",
        VE,
        'type "enabled" needs budget_tokens',
        sampling={"thinking": {"type": "enabled"}},
        adapters_only=True,
    ),
    Case(
        "knob-reasoning-summary",
        VE,
        "summary: this model returns its whole thinking, never a summary",
        sampling={"reasoning": {"effort": "low", "summary": "auto"}},
        adapters_only=True,
    ),
    Case(
        "knob-google-budget-below-minus-one",
        VE,
        "thinking_budget\n  Input should be greater than or equal to -1",
        sampling={"thinking_budget": -2},
        adapters_only=True,
    ),
    Case(
        "knob-effort-beyond-the-context",
        BudgetError,
        r"reasoning_effort: reasoning_effort='high' means max_thinking_tokens=16384, which does "
        r"not fit this model's context of \d+ tokens",
        sampling={"reasoning_effort": "high"},
        adapters_only=True,
    ),
    Case(
        "knob-max-tokens-and-answer-cap-disagree",
        ConflictingSettingsError,
        r"max_tokens=10 means max_answer_tokens=10, but max_answer_tokens=20",
        sampling={"max_tokens": 10, "max_answer_tokens": 20},
        adapters_only=True,
    ),
]

GENERATOR = [e for e in ENTRY_POINTS if e.startswith("generator.")]
LANGCHAIN = [e for e in ENTRY_POINTS if e.startswith("langchain.")]
LLAMA_INDEX = [e for e in ENTRY_POINTS if e.startswith("llama_index.")]

# Pairs where the entry point does NOT refuse the input clearly before the engine. Each is a
# strict xfail: it fails today for the reason given, and passes (so fails the run) once fixed.
# All found so far are fixed.
KNOWN_GAPS: dict[tuple[str, str], str] = {}

# Pairs where the framework itself refuses the input, in its own error type, before any code
# of the adapter runs: the one exception to "the same error type in both adapters".
_CHAT_MESSAGE = (
    "LlamaIndex's ChatMessage refuses the role where the message is built, before any LLM "
    "method is called"
)
FRAMEWORK_REFUSES: dict[tuple[str, str], str] = {
    ("prompt-wrong-type", "llama_index.chat"): (
        "LlamaIndex's instrumentation validates chat()'s messages (a list) before the LLM's "
        "own chat runs"
    ),
    ("message-unknown-role", "llama_index.chat"): _CHAT_MESSAGE,
    ("message-missing-role", "llama_index.chat"): _CHAT_MESSAGE,
}


def _entries(case: Case) -> list[str]:
    return [e for e in ENTRY_POINTS if not (case.adapters_only and e in GENERATOR)]


def _params() -> list[Any]:
    params = []
    for case in CASES:
        for entry in _entries(case):
            marks = []
            if (case.id, entry) in KNOWN_GAPS:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[case.id, entry]))
            params.append(pytest.param(case, entry, id=f"{case.id}-{entry}", marks=marks))
    return params


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_both_adapters_expect_the_same_error_types(case: Case) -> None:
    """One error type per kind of bad input: LangChain's entry points and LlamaIndex's agree."""
    adapters = [e for e in LANGCHAIN + LLAMA_INDEX if (case.id, e) not in FRAMEWORK_REFUSES]
    types = {entry: case.expected(entry)[0] for entry in adapters}
    assert len(set(types.values())) == 1, types
    for (case_id, entry), reason in FRAMEWORK_REFUSES.items():
        if case_id == case.id:
            assert reason and case.expected(entry)[0] is VE  # LlamaIndex's pydantic types


def test_every_framework_refusal_names_a_case_and_an_adapter_entry() -> None:
    ids = {case.id for case in CASES}
    for case_id, entry in FRAMEWORK_REFUSES:
        assert case_id in ids and entry in LANGCHAIN + LLAMA_INDEX


@pytest.fixture(scope="module")
def targets(generator: Any) -> Targets:
    chat = ChatBudgetForced(model=TOY, engine_args=ENGINE_ARGS)
    assert chat._get_generator() is generator  # the session's engine, whose counter we read
    return Targets(generator=generator, chat=chat, llm=BudgetForcedLLM(generator=generator))


@pytest.mark.parametrize(("case", "entry"), _params())
def test_bad_input_is_refused_before_the_engine(targets: Targets, case: Case, entry: str) -> None:
    error, match = case.expected(entry)
    engine = targets.generator.engine
    before = engine.submitted_requests
    assert engine.num_unfinished_requests() == 0
    with pytest.raises(Exception) as caught:
        ENTRY_POINTS[entry](targets, case)
    raised = caught.value
    assert type(raised) is error, f"{type(raised).__name__}: {raised}"
    assert re.search(match, str(raised)), str(raised)
    assert engine.submitted_requests == before, "a request reached the engine"
    assert engine.num_unfinished_requests() == 0


def test_the_engine_serves_after_the_table(targets: Targets) -> None:
    """Runs after the table (pytest keeps file order): the engine took no harm from it."""
    engine = targets.generator.engine
    before = engine.submitted_requests
    (result,) = targets.generator.generate("What is 11 + 22?", {"max_thinking_tokens": 40})
    assert result.finish_reason == "stop" and result.answer.strip()
    reply = targets.chat.invoke("What is 11 + 22?", max_thinking_tokens=40)
    assert reply.response_metadata["thinking_tokens"] == result.thinking_tokens
    completion = targets.llm.complete("What is 11 + 22?", max_thinking_tokens=40)
    assert completion.raw.token_ids == result.token_ids
    assert engine.submitted_requests == before + 3
    assert engine.num_unfinished_requests() == 0
