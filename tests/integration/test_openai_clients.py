"""Any OpenAI client against ``s1-integrations serve`` on the toy: budgets in plain words.

One real server for the module, started as a user would (``s1-integrations serve`` with no
flags but the port; the effort table an operator gives through ``S1_EFFORT_TABLE``), driven
with the ``openai`` SDK (sync, async, streamed), LangChain's ``ChatOpenAI`` and LlamaIndex's
``OpenAILike``. Thinking tokens are counted from the token ids the server returns
(``return_token_ids``), and forced tokens told apart by their processed log-probability of 0,
then replayed through the budget's own state machine: a count off by one fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import TOY, heldout
from s1_integrations import BudgetForcedGenerator, ThinkingBudget
from s1_integrations.core.forcing import ForcingState, replay
from s1_integrations.core.plans import PlanBuilder
from servers import S1Serve

pytestmark = pytest.mark.remote

QUESTION = "What is 12 + 34?"
#: The operator's table: replaces ``low`` and ``medium``; ``none`` and the rest keep the defaults.
EFFORT_TABLE = {
    "low": {"max_thinking_tokens": 4},
    "medium": {"max_thinking_tokens": 40, "min_thinking_tokens": 40, "extensions": 1},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S1Serve]:
    table = tmp_path_factory.mktemp("effort") / "effort.json"
    table.write_text(json.dumps(EFFORT_TABLE))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("S1_EFFORT_TABLE", str(table))
        started = S1Serve()  # the environment is copied when the process starts
    try:
        yield started.wait_ready()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def client(server: S1Serve) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="none") as c:
        yield c


@pytest.fixture(scope="module")
def builder(tokenizer: Any) -> PlanBuilder:
    return PlanBuilder(tokenizer)


def body(xargs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What to send beside the messages: the budget, and what makes counting exact."""
    return {"vllm_xargs": xargs, "return_token_ids": True, **extra}


def create(client: openai.OpenAI, xargs: dict[str, Any], **kw: Any) -> Any:
    return client.chat.completions.create(
        model=TOY,
        messages=[{"role": "user", "content": kw.pop("question", QUESTION)}],
        temperature=0,
        max_tokens=kw.pop("max_tokens", 300),
        logprobs=True,
        extra_body=body(xargs),
        **kw,
    )


def checked(builder: PlanBuilder, budget: ThinkingBudget, choice: Any) -> ForcingState:
    """Replay the returned tokens through the budget; the state holds the exact counts."""
    ids = list(choice.model_extra["token_ids"])
    forced = [lp.logprob == 0.0 for lp in choice.logprobs.content]
    assert len(forced) == len(ids)
    return replay(builder.plan_for(budget), ids, forced)


def split(builder: PlanBuilder, ids: list[int]) -> tuple[list[int], list[int]]:
    """(thinking ids, answer ids) around the end delimiter."""
    (end,) = builder.end_ids
    at = ids.index(end)
    eos = builder.eos_ids[0]
    return ids[:at], [t for t in ids[at + 1 :] if t != eos]


def test_serve_with_no_flags_starts_on_the_cpu_and_answers(
    server: S1Serve, client: openai.OpenAI
) -> None:
    """The module's server is ``s1-integrations serve --port N``: nothing else was given."""
    assert server.process.args[-2:] == ["--port", str(server.port)]
    assert server.process.args[-3] == "serve"
    reply = client.chat.completions.create(
        model=TOY, messages=[{"role": "user", "content": QUESTION}], max_tokens=300, temperature=0
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "stop"
    assert choice.message.content.strip().startswith("The answer is ")
    assert choice.message.model_extra["reasoning"]
    assert "</think>" not in choice.message.content


# -- the openai SDK --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xargs", "budget"),
    [
        ({"max_thinking_tokens": 8}, ThinkingBudget(max_thinking_tokens=8)),
        ({"max_thinking_tokens": 0}, ThinkingBudget(max_thinking_tokens=0)),
        (
            {"min_thinking_tokens": 50, "extension_phrases": "Hmm"},
            ThinkingBudget(min_thinking_tokens=50, extension_phrases=("Hmm",)),
        ),
        (
            {"extensions": 2, "extension_phrases": ["Wait", "Hmm"], "max_answer_tokens": 3},
            ThinkingBudget(extensions=2, extension_phrases=("Wait", "Hmm"), max_answer_tokens=3),
        ),
        (
            {"max_thinking_tokens": 12, "conclusion": "\nguess: "},
            ThinkingBudget(max_thinking_tokens=12, conclusion="\nguess: "),
        ),
    ],
)
def test_plain_word_budgets_are_honoured_exactly(
    client: openai.OpenAI, builder: PlanBuilder, xargs: dict[str, Any], budget: ThinkingBudget
) -> None:
    reply = create(client, xargs)
    (choice,) = reply.choices
    state = checked(builder, budget, choice)
    ids = list(choice.model_extra["token_ids"])
    thinking, answer = split(builder, ids)
    assert state.thinking_tokens == len(thinking)
    if budget.max_thinking_tokens is not None:
        assert state.thinking_tokens == budget.max_thinking_tokens
        assert state.ended_by == "budget"
    if budget.min_thinking_tokens:
        assert state.thinking_tokens >= budget.min_thinking_tokens
    if budget.extensions:
        assert len(state.extension_positions) == budget.extensions
        assert state.answer_tokens == budget.max_answer_tokens  # the answer cap, exactly
    # The thinking arrives apart from the answer, and usage counts it.
    assert choice.message.model_extra["reasoning"] == builder.tokenizer.decode(thinking) or (
        not thinking and choice.message.model_extra["reasoning"] in (None, "")
    )
    assert choice.message.content == builder.tokenizer.decode(answer)
    assert reply.usage.completion_tokens_details.reasoning_tokens == len(thinking)


@pytest.mark.parametrize(
    "xargs",
    [{"adaptive": True}, {"adaptive_threshold": 0.45}, {"adaptive": '{"max_extensions": 1}'}],
)
def test_the_adaptive_policy_in_plain_words_extends_where_the_model_is_unsure(
    client: openai.OpenAI, builder: PlanBuilder, xargs: dict[str, Any]
) -> None:
    """The default policy (threshold 0.45) on the toy: a Wait on a hard problem, none on an
    easy one (docs/adaptive.md measures the gap between their signals on the held-out set)."""
    budget = ThinkingBudget(adaptive={})
    hard, easy = heldout("hard", 1)[0], heldout("easy", 1)[0]
    (unsure,) = create(client, xargs, question=hard["question"]).choices
    (sure,) = create(client, xargs, question=easy["question"]).choices
    unsure_state, sure_state = checked(builder, budget, unsure), checked(builder, budget, sure)
    assert len(unsure_state.extension_positions) == 1
    assert unsure_state.ended_by == "model"  # its one extension spent, the model ended
    assert unsure.message.content.strip() == f"The answer is {hard['answer']}."
    assert sure_state.extension_positions == []
    assert sure_state.ended_by == "policy"
    assert sure.message.content.strip() == f"The answer is {easy['answer']}."


def test_the_same_budget_without_words_thinks_naturally(
    client: openai.OpenAI, builder: PlanBuilder
) -> None:
    (free,) = create(client, {}).choices
    (capped,) = create(client, {"max_thinking_tokens": 3}).choices
    natural, _ = split(builder, list(free.model_extra["token_ids"]))
    assert len(natural) > 3  # so the cap above did something
    assert len(split(builder, list(capped.model_extra["token_ids"]))[0]) == 3


@pytest.mark.parametrize(
    ("level", "budget"),
    [
        ("none", ThinkingBudget(max_thinking_tokens=0)),  # the default table's entry
        ("low", ThinkingBudget(max_thinking_tokens=4)),  # the operator's
        ("medium", ThinkingBudget(max_thinking_tokens=40, min_thinking_tokens=40, extensions=1)),
    ],
)
def test_reasoning_effort_maps_by_the_table(
    client: openai.OpenAI, builder: PlanBuilder, level: str, budget: ThinkingBudget
) -> None:
    (choice,) = create(client, {"reasoning_effort": level}).choices
    state = checked(builder, budget, choice)
    assert state.thinking_tokens == budget.max_thinking_tokens
    assert len(split(builder, list(choice.model_extra["token_ids"]))[0]) == state.thinking_tokens


def test_streamed_reasoning_arrives_in_the_reasoning_field(
    client: openai.OpenAI, builder: PlanBuilder
) -> None:
    stream = client.chat.completions.create(
        model=TOY,
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=300,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=body({"max_thinking_tokens": 6}),
    )
    reasoning, content, ids, usage = "", "", [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            ids += choice.model_extra.get("token_ids") or []
            reasoning += choice.delta.model_extra.get("reasoning") or ""
            content += choice.delta.content or ""
    thinking, answer = split(builder, ids)
    assert len(thinking) == 6
    assert reasoning == builder.tokenizer.decode(thinking)
    assert content == builder.tokenizer.decode(answer)
    assert "</think>" not in content + reasoning
    assert usage is not None
    assert usage.completion_tokens_details.reasoning_tokens == 6


async def test_async_requests_each_get_their_own_budget(
    server: S1Serve, builder: PlanBuilder
) -> None:
    # Below the toy's shortest natural thinking ("\nguess: " alone is 8 tokens), so every cap
    # binds and the count is the cap exactly.
    caps = [0, 2, 5, 7, 1, 3, 6, 4]
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none") as aclient:
        replies = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model=TOY,
                    messages=[{"role": "user", "content": f"What is {cap} + 4{cap}?"}],
                    temperature=0,
                    max_tokens=200,
                    extra_body=body({"max_thinking_tokens": cap}),
                )
                for cap in caps
            )
        )
    for cap, reply in zip(caps, replies, strict=True):
        thinking, _ = split(builder, list(reply.choices[0].model_extra["token_ids"]))
        assert len(thinking) == cap
        assert reply.usage.completion_tokens_details.reasoning_tokens == cap


# -- nothing silently ignored ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"vllm_xargs": {"max_thinking_token": 8}}, "did you mean 'max_thinking_tokens'"),
        ({"vllm_xargs": {"extensions": -1}}, "vllm_xargs.extensions"),
        ({"vllm_xargs": {"reasoning_effort": "maximal"}}, "vllm_xargs.reasoning_effort"),
        ({"vllm_xargs": {"max_thinking_tokens": 4, "s1_budget": "{}"}}, "both give a budget"),
        (
            {"vllm_xargs": {"max_thinking_tokens": 4}, "thinking_token_budget": 4},
            "thinking_token_budget",
        ),
        ({"vllm_xargs": {"s1_budget": "{}"}}, "s1_budget.end must be a list of token ids"),
        # A minimum that max_tokens (20 below) would cut inside the thinking.
        (
            {"vllm_xargs": {"min_thinking_tokens": 50}},
            "max_tokens: 20 tokens cannot hold the budget's min_thinking_tokens=50",
        ),
        # The in-process engine's record name: a server keeps no records for its clients.
        (
            {"vllm_xargs": {"max_thinking_tokens": 4, "s1_record": "r"}},
            "s1_record: set by the in-process engine only",
        ),
    ],
)
def test_typos_bad_values_and_conflicts_are_400s_and_the_server_carries_on(
    client: openai.OpenAI, builder: PlanBuilder, extra: dict[str, Any], named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=TOY,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=20,
            extra_body=extra,
        )
    assert caught.value.status_code == 400
    assert named in str(caught.value)
    (choice,) = create(client, {"max_thinking_tokens": 5}).choices
    assert len(split(builder, list(choice.model_extra["token_ids"]))[0]) == 5


def test_curl_shaped_request_and_vllms_own_cap_alone(server: S1Serve, builder: PlanBuilder) -> None:
    """A bare HTTP request (what curl sends); vLLM's thinking_token_budget alone is vLLM's."""
    request = {
        "model": TOY,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 200,
        "temperature": 0,
        "return_token_ids": True,
        "vllm_xargs": {"max_thinking_tokens": 7, "extension_phrases": "Wait"},
    }
    reply = httpx.post(server.url + "/v1/chat/completions", json=request, timeout=120)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert len(split(builder, choice["token_ids"])[0]) == 7
    assert choice["message"]["reasoning"] == builder.tokenizer.decode(choice["token_ids"][:7])
    alone = dict(request, thinking_token_budget=2)
    del alone["vllm_xargs"]
    reply = httpx.post(server.url + "/v1/chat/completions", json=alone, timeout=120)
    assert reply.status_code == 200, reply.text


# -- the frameworks' OpenAI clients ----------------------------------------------------------


def test_langchain_chat_openai_gets_the_budget(server: S1Serve, builder: PlanBuilder) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        model=TOY,
        base_url=server.url + "/v1",
        api_key="none",  # type: ignore[arg-type]
        temperature=0,
        max_tokens=200,  # type: ignore[call-arg]
        extra_body={"vllm_xargs": {"max_thinking_tokens": 6}},
    )
    message = chat.invoke(QUESTION)
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_token_details"]["reasoning"] == 6
    # ChatOpenAI keeps only the answer: the server's reasoning field is dropped.
    assert isinstance(message.content, str)
    assert "</think>" not in message.content
    assert "reasoning_content" not in message.additional_kwargs
    streamed = "".join(str(c.content) for c in chat.stream(QUESTION))
    assert streamed == message.content


async def test_llama_index_openai_like_gets_the_budget_and_the_thinking(
    server: S1Serve, builder: PlanBuilder
) -> None:
    from llama_index.core.base.llms.types import ChatMessage, ThinkingBlock
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model=TOY,
        api_base=server.url + "/v1",
        api_key="none",
        is_chat_model=True,
        temperature=0,
        max_tokens=200,
        additional_kwargs={"extra_body": body({"max_thinking_tokens": 5})},
    )
    messages = [ChatMessage(role="user", content=QUESTION)]
    response = await llm.achat(messages)
    raw = response.raw
    assert raw is not None
    thinking, answer = split(builder, list(raw.choices[0].model_extra["token_ids"]))
    assert len(thinking) == 5
    blocks = [b for b in response.message.blocks if isinstance(b, ThinkingBlock)]
    assert [b.content for b in blocks] == [builder.tokenizer.decode(thinking)]
    assert response.message.content == builder.tokenizer.decode(answer)
    streamed = "".join([r.delta or "" for r in llm.stream_chat(messages)])
    assert streamed == response.message.content


# -- our own client against the same server --------------------------------------------------


def test_the_generators_own_client_still_runs_single_pass(server: S1Serve) -> None:
    with BudgetForcedGenerator.from_servers(server.url, forcing="plugin") as remote:
        (r,) = remote.generate(QUESTION, ThinkingBudget(max_thinking_tokens=7, extensions=0))
        assert r.strategy == "single_pass"
        assert r.thinking_tokens == 7
        (e,) = remote.generate(QUESTION, ThinkingBudget(extensions=1))
        assert e.extensions == 1


def test_the_served_template_opens_the_thinking(server: S1Serve, builder: PlanBuilder) -> None:
    """The chat prompt ends with the start delimiter, as the generator's own prompts do."""
    reply = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "model": TOY,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 1,
            "return_token_ids": True,
        },
        timeout=120,
    )
    prompt = reply.json()["prompt_token_ids"]
    assert tuple(prompt[-1:]) == builder.thinking_format.start_ids(builder.tokenizer)


def test_serve_dry_run_prints_the_defaults_it_adds(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from s1_integrations.cli import app

    table = tmp_path / "effort.json"
    table.write_text(json.dumps(EFFORT_TABLE))
    args = ["serve", "--port", "8124", "--effort-table", str(table), "--dry-run"]
    result = CliRunner().invoke(app, args, terminal_width=1000)
    assert result.exit_code == 0, result.output
    words = result.output.split()
    assert words[0] == f"S1_EFFORT_TABLE={table}"
    assert words[words.index("--reasoning-parser") + 1] == "qwen3"
    assert words[words.index("--kv-cache-memory-bytes") + 1] == str(2 * 1024**3)
    assert Path(words[words.index("--chat-template") + 1]).is_file()
    table.write_text('{"low": {"max_thinking_token": 4}}')
    result = CliRunner().invoke(app, args, terminal_width=1000)
    assert result.exit_code == 2
    assert "not ThinkingBudget fields" in result.output


def s1_format_model(folder: Path) -> str:
    """The toy's weights with a chat template in s1's format (``<|im_start|>think`` opens the
    thinking, ``<|im_start|>answer`` ends it): delimiters of several tokens each."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(TOY, folder, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(TOY)
    tokenizer.chat_template = str(tokenizer.chat_template).replace(
        "'<|im_start|>assistant\\n'", "'<|im_start|>think'"
    )
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_s1s_own_format_gets_its_thinking_apart_from_the_answer(tmp_path: Path) -> None:
    """``serve`` on a model in s1's format runs our reasoning parser: the capped thinking
    arrives in ``reasoning``, streamed and not, and ``usage`` counts it exactly."""
    from transformers import AutoTokenizer

    from s1_integrations.core.formats import S1_FORMAT

    model = s1_format_model(tmp_path / "s1-toy")
    s1 = S1Serve(extra=("--model", model, "--dtype", "float32"))
    try:
        s1.wait_ready()
        tokenizer = AutoTokenizer.from_pretrained(model)
        end = tokenizer.encode(S1_FORMAT.end, add_special_tokens=False)
        request: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 0,
            "max_tokens": 24,
            "extra_body": body({"max_thinking_tokens": 5}),
        }
        with openai.OpenAI(base_url=s1.url + "/v1", api_key="none") as client:
            reply = client.chat.completions.create(**request)
            chunks = list(
                client.chat.completions.create(
                    **request, stream=True, stream_options={"include_usage": True}
                )
            )
        (choice,) = reply.choices
        ids = list(choice.model_extra["token_ids"])
        assert ids[5 : 5 + len(end)] == end  # the cap forced s1's end delimiter after 5 tokens
        thinking = tokenizer.decode(ids[:5], skip_special_tokens=True)
        answer = tokenizer.decode(ids[5 + len(end) :], skip_special_tokens=True)
        assert choice.message.model_extra["reasoning"] == thinking
        assert (choice.message.content or "") == answer
        assert "answer" not in thinking and S1_FORMAT.end not in answer
        assert reply.usage.completion_tokens_details.reasoning_tokens == 5
        reasoning = "".join(
            c.choices[0].delta.model_extra.get("reasoning") or "" for c in chunks if c.choices
        )
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert (reasoning, content) == (thinking, answer)
        assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 5
    finally:
        s1.stop()
