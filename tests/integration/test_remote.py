"""The remote backend against real ``vllm serve`` processes on 127.0.0.1, with the toy reasoner.

Three servers are started for this module: one where this package (hence the budget-forcing
plugin) is installed; one that cannot see the plugin (``tests/no_plugin_site``), which the
backend must detect and serve in rounds instead; and one that cannot see the plugin either but
is given the processor with ``--logits-processors``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from conftest import TOY
from flaky_proxy import FlakyProxy
from s1_integrations import (
    BudgetError,
    BudgetForcedGenerator,
    EngineError,
    ExtensionInserted,
    FinalResult,
    ThinkingBudget,
    heldout_path,
)
from s1_integrations.adapters.langchain import ChatBudgetForced
from s1_integrations.adapters.llama_index import BudgetForcedLLM
from s1_integrations.core.backend import GenerationRequest
from s1_integrations.core.forcing import ForcingPlan
from s1_integrations.core.toolcalls import parse_tool_calls
from s1_integrations.engine.processor import PROCESSOR_FQCN, BudgetForcingPlugin
from s1_integrations.engine.remote import RemoteConfig, RemoteEngine
from s1_integrations.engine.wire import completion_body
from servers import VllmServer, free_port

pytestmark = pytest.mark.remote

SERVER_ARGS = ("--dtype", "float32", "--seed", "0", "--max-num-seqs", "32")
SERVER_ARGS += ("--kv-cache-memory-bytes", str(256 * 2**20))
FAST_FAIL = {"max_retries": 1, "backoff_s": 0.05, "connect_timeout_s": 2.0}

QUESTIONS = ["What is 12 + 34?", "What is 4857 + 2968?", "What is 305 + 17?", "What is 61 + 9?"]
BUDGETS = [
    ThinkingBudget(max_thinking_tokens=9),
    ThinkingBudget(extensions=1),
    ThinkingBudget(min_thinking_tokens=70),
    ThinkingBudget(max_thinking_tokens=0, max_answer_tokens=6),
]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, VllmServer]]:
    """Both servers start together (each takes a minute or two on the CPU)."""
    started = {
        "plugin": VllmServer(TOY, plugin=True, extra=SERVER_ARGS),
        "plain": VllmServer(TOY, plugin=False, extra=SERVER_ARGS),
        "flagged": VllmServer(TOY, plugin=False, name_processor=True, extra=SERVER_ARGS),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def remote(servers: dict[str, VllmServer]) -> Iterator[BudgetForcedGenerator]:
    gen = BudgetForcedGenerator.from_servers(servers["plugin"].url)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def fallback(servers: dict[str, VllmServer]) -> Iterator[BudgetForcedGenerator]:
    gen = BudgetForcedGenerator.from_servers(servers["plain"].url)
    yield gen
    gen.close()


def signature(r: Any) -> tuple[Any, ...]:
    return (
        r.token_ids,
        r.thinking_tokens,
        r.answer_tokens,
        r.extensions,
        r.thinking_ended_by,
        r.finish_reason,
        r.thinking,
        r.answer,
    )


# -- the plugin path -------------------------------------------------------------------------


def test_the_server_plugin_is_detected(remote: BudgetForcedGenerator) -> None:
    assert remote.engine.forcing_in_engine is True
    assert remote.model_name == TOY
    config = json.loads((Path(TOY) / "config.json").read_text())
    assert remote.max_model_len == config["max_position_embeddings"] == 2048


def test_installing_the_package_registers_the_plugin_with_vllm() -> None:
    """The loader ``vllm serve`` runs at start-up finds the processor with no flag given."""
    from vllm.v1.sample.logits_processor import _load_custom_logitsprocs

    assert BudgetForcingPlugin in _load_custom_logitsprocs(None)


def test_the_processor_also_loads_with_the_logits_processors_flag(
    servers: dict[str, VllmServer], generator: Any
) -> None:
    with BudgetForcedGenerator.from_servers(servers["flagged"].url, forcing="plugin") as gen:
        assert gen.engine.forcing_in_engine is True
        ours = gen.generate(QUESTIONS, BUDGETS)
    local = generator.generate(QUESTIONS, BUDGETS)
    assert [r.strategy for r in ours] == ["single_pass"] * len(QUESTIONS)
    assert [signature(r) for r in ours] == [signature(r) for r in local]


def test_budgets_are_honoured_exactly_through_the_server(remote: BudgetForcedGenerator) -> None:
    results = remote.generate(QUESTIONS, BUDGETS)
    capped, extended, minimum, no_thinking = results
    assert all(r.strategy == "single_pass" for r in results)
    assert capped.thinking_tokens == 9
    assert capped.thinking_ended_by == "budget"
    assert extended.extensions == 1
    assert extended.thinking.count("Wait") >= 1
    assert minimum.thinking_tokens >= 70
    assert no_thinking.thinking_tokens == 0
    assert no_thinking.answer_tokens <= 6


@pytest.mark.parametrize("strategy", ["single_pass", "rounds"])
def test_remote_results_are_token_identical_to_in_process(
    remote: BudgetForcedGenerator, generator: Any, strategy: str
) -> None:
    ours = remote.generate(QUESTIONS, BUDGETS, strategy=strategy)
    local = generator.generate(QUESTIONS, BUDGETS, strategy=strategy)
    assert [signature(r) for r in ours] == [signature(r) for r in local]
    assert [r.strategy for r in ours] == [r.strategy for r in local]


@pytest.mark.parametrize("strategy", ["single_pass", "rounds"])
def test_an_adaptive_policy_travels_to_the_server_and_decides_there(
    remote: BudgetForcedGenerator, generator: Any, strategy: str
) -> None:
    """The policy goes in ``s1_budget``; the server's processor (or the rounds the client
    runs on its log-probabilities) extends the hard sum and not the easy ones."""
    with open(heldout_path(), encoding="utf-8") as f:
        rows = [json.loads(line) for line in itertools.islice(f, 4)]
    assert [r["difficulty"] for r in rows] == ["easy", "hard", "easy", "hard"]
    questions = [r["question"] for r in rows]
    budget = ThinkingBudget(adaptive={}, max_answer_tokens=16)  # type: ignore[arg-type]
    ours = remote.generate(questions, budget, strategy=strategy)
    local = generator.generate(questions, budget, strategy=strategy)
    assert [signature(r) for r in ours] == [signature(r) for r in local]
    assert [r.extensions for r in ours] == [0, 1, 0, 1]
    assert [r.thinking_ended_by for r in ours] == ["policy", "model", "policy", "model"]
    for r, mine in zip(ours, local, strict=True):
        assert r.extension_signals == pytest.approx(mine.extension_signals, abs=1e-5)


def test_a_sampled_adaptive_output_reports_the_processors_signals_through_a_server(
    remote: BudgetForcedGenerator, generator: Any
) -> None:
    """Under sampling the sampled token is often not the most likely one: the signals a
    server's output reports are read off each step's top-1 (the largest of its top
    log-probabilities), and equal those the in-process processor recorded."""
    budget = ThinkingBudget(adaptive={"threshold": 0.9})  # type: ignore[arg-type]
    questions = QUESTIONS * 2
    sampling = {"temperature": 0.8, "seed": 7}
    ours = remote.generate(questions, budget, **sampling)
    local = generator.generate(questions, budget, **sampling)
    assert [r.token_ids for r in ours] == [r.token_ids for r in local]
    assert any(r.extension_signals for r in local), [r.extension_signals for r in local]
    for r, mine in zip(ours, local, strict=True):
        assert r.extension_signals == pytest.approx(mine.extension_signals, abs=1e-5)
        assert r.thinking_end_signal == pytest.approx(mine.thinking_end_signal, abs=1e-5)
        assert r.thinking_ended_by == mine.thinking_ended_by


def test_adaptive_rounds_on_a_server_without_the_processor_are_refused(
    fallback: BudgetForcedGenerator,
) -> None:
    with pytest.raises(BudgetError, match="adaptive: the rounds strategy reads the signal"):
        fallback.generate(QUESTIONS[0], ThinkingBudget(adaptive={}))  # type: ignore[arg-type]


def test_remote_stream_gives_the_same_events_as_in_process(
    remote: BudgetForcedGenerator, generator: Any
) -> None:
    budget = ThinkingBudget(extensions=2, max_answer_tokens=16)

    def kinds_and_text(events: list[Any]) -> tuple[list[str], str, Any]:
        final = events[-1]
        assert isinstance(final, FinalResult)
        names = [type(e).__name__ for e in events if isinstance(e, (ExtensionInserted,))]
        text = "".join(getattr(e, "text", "") for e in events)
        return names, text, signature(final.result)

    remote_events = list(remote.stream("What is 12 + 34?", budget))
    local_events = list(generator.stream("What is 12 + 34?", budget))
    assert kinds_and_text(remote_events) == kinds_and_text(local_events)
    assert remote_events[-1].result.extensions == 2


async def test_async_calls_and_many_threads_share_the_server(
    remote: BudgetForcedGenerator, generator: Any
) -> None:
    questions = [f"What is {a} + {a * 3}?" for a in range(11, 27)]
    budgets = [BUDGETS[i % len(BUDGETS)] for i in range(len(questions))]
    expected = [signature(r) for r in generator.generate(questions, budgets)]
    from_tasks = await asyncio.gather(
        *(remote.agenerate(q, b) for q, b in zip(questions, budgets, strict=True))
    )
    assert [signature(r) for (r,) in from_tasks] == expected
    with ThreadPoolExecutor(8) as pool:
        pairs = zip(questions, budgets, strict=True)
        from_threads = list(pool.map(lambda qb: remote.generate(*qb)[0], pairs))
    assert [signature(r) for r in from_threads] == expected


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_breaking_out_of_a_remote_stream_aborts_on_the_server(
    remote: BudgetForcedGenerator, servers: dict[str, VllmServer]
) -> None:
    """The server stops the request it was streaming once the client lets go of the stream.

    Counted on the server: a request that ran to its end adds one to
    ``vllm:request_success_total`` (vLLM does not count aborted ones there) and its full length
    to the generated tokens; an aborted one adds nothing and fewer tokens. This machine (a
    shared VM) now and then stalls a whole process for a second or two, about as long as the
    toy takes for this request; a run where the request ended before the client let go had
    nothing to abort (its counts are still checked exactly) and is run again, up to five times.
    """
    server = servers["plugin"]
    question, budget = "What is 12 + 34?", ThinkingBudget(min_thinking_tokens=400)
    (whole,) = remote.generate(question, budget)
    for _ in range(5):
        tokens = server.metric("vllm:generation_tokens_total")
        finished = server.metric("vllm:request_success_total")
        stream = remote.stream(question, budget)
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        wait_until(lambda: remote.engine.num_unfinished_requests() == 0)  # connection closed
        wait_until(lambda: server.metric("vllm:num_requests_running") == 0)
        generated = server.metric("vllm:generation_tokens_total") - tokens
        if server.metric("vllm:request_success_total") == finished:  # aborted, not finished
            assert 4 <= generated < len(whole.token_ids)
            return
        assert server.metric("vllm:request_success_total") == finished + 1
        assert generated == len(whole.token_ids)
    pytest.fail("in five tries the request always ended before the client let go of it")


def test_the_server_rejects_a_malformed_budget_and_keeps_serving(
    remote: BudgetForcedGenerator, servers: dict[str, VllmServer]
) -> None:
    body = {"model": TOY, "prompt": [5, 6], "max_tokens": 2, "vllm_xargs": {"s1_budget": "{}"}}
    reply = httpx.post(servers["plugin"].url + "/v1/completions", json=body, timeout=30)
    assert reply.status_code == 400
    assert "s1_budget.end must be a list of token ids" in reply.json()["error"]["message"]

    async def bad() -> None:
        request = GenerationRequest([5, 6], max_tokens=2, forcing={"bogus": 1})
        async for _ in remote.engine.stream(request):
            pass

    with pytest.raises(ValueError, match=r"unknown settings \['bogus'\]"):
        remote.engine.run_sync(bad())
    (r,) = remote.generate("What is 12 + 34?", ThinkingBudget(max_thinking_tokens=5))
    assert r.thinking_tokens == 5


def test_langchain_runs_unchanged_on_the_remote_backend(remote: BudgetForcedGenerator) -> None:
    chat = ChatBudgetForced(generator=remote, max_thinking_tokens=9)
    message = chat.invoke("What is 12 + 34?")
    reasoning = [b for b in message.content_blocks if b["type"] == "reasoning"]
    assert len(reasoning) == 1
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_token_details"]["reasoning"] == 9
    assert message.response_metadata["model_name"] == TOY
    batch = chat.batch(["What is 1 + 2?", "What is 30 + 40?"])
    assert [m.usage_metadata["output_token_details"]["reasoning"] for m in batch] == [9, 9]


async def test_llama_index_runs_unchanged_on_the_remote_backend(
    remote: BudgetForcedGenerator,
) -> None:
    llm = BudgetForcedLLM(generator=remote, extensions=1)
    response = await llm.acomplete("What is 12 + 34?")
    assert response.additional_kwargs["extensions"] == 1
    block = response.additional_kwargs["thinking_block"]
    assert block.num_tokens == response.raw.thinking_tokens > 0
    assert block.content == response.raw.thinking


# -- the fallback: a server without the plugin -----------------------------------------------


def test_fallback_runs_rounds_with_the_same_results(
    fallback: BudgetForcedGenerator, generator: Any
) -> None:
    assert fallback.engine.forcing_in_engine is False
    ours = fallback.generate(QUESTIONS, BUDGETS)  # asks for single_pass, gets rounds
    assert [r.strategy for r in ours] == ["rounds"] * len(QUESTIONS)
    assert ours[0].thinking_tokens == 9
    assert ours[1].extensions == 1
    assert ours[2].thinking_tokens >= 70
    local = generator.generate(QUESTIONS, BUDGETS, strategy="rounds")
    assert [signature(r) for r in ours] == [signature(r) for r in local]


def test_requiring_the_plugin_fails_clearly_on_a_server_without_it(
    servers: dict[str, VllmServer],
) -> None:
    url = servers["plain"].url
    with pytest.raises(EngineError, match=f"{url}: no budget forcing in the server"):
        RemoteEngine(url, forcing="plugin")


def test_requests_spread_over_several_servers(servers: dict[str, VllmServer]) -> None:
    urls = [servers["plugin"].url, servers["plain"].url]

    def served(url: str) -> float:
        text = httpx.get(url + "/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('http_requests_total{handler="/v1/completions"')
        )

    before = [served(u) for u in urls]
    with BudgetForcedGenerator.from_servers(urls) as fleet:
        # One server lacks the plugin, so the whole fleet runs in rounds, everywhere alike.
        assert fleet.engine.forcing_in_engine is False
        results = fleet.generate(QUESTIONS * 4, BUDGETS * 4)
    assert [r.thinking_tokens for r in results[:4]] == [r.thinking_tokens for r in results[4:8]]
    after = [served(u) for u in urls]
    assert all(b > a for a, b in zip(before, after, strict=True)), (before, after)


# -- clear errors ----------------------------------------------------------------------------


def test_an_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(EngineError, match=f"{url} is unreachable: .*cannot connect"):
        RemoteEngine(url, **FAST_FAIL)
    assert time.monotonic() - started < 15


def test_a_model_mismatch_is_a_clear_error(servers: dict[str, VllmServer]) -> None:
    url = servers["plugin"].url
    with pytest.raises(EngineError, match=f"model mismatch: {url} serves .* not 'Qwen/Qwen3-8B'"):
        RemoteEngine(url, model="Qwen/Qwen3-8B")


def test_bad_remote_configuration_is_rejected() -> None:
    with pytest.raises(ValidationError, match="is not an http"):
        RemoteConfig(base_urls=("127.0.0.1:8000",))
    with pytest.raises(ValidationError, match="base_urls"):
        RemoteConfig(base_urls=())
    with pytest.raises(ValidationError, match="max_retries"):
        RemoteConfig(base_urls=("http://h:1",), max_retries=-1)
    assert RemoteConfig(base_urls="http://h:1/v1/").base_urls == ("http://h:1",)


def test_a_request_becomes_a_completions_request() -> None:
    plan = ForcingPlan(end=(4,), eos=(2,), max_thinking=7)
    request = GenerationRequest(
        [1, 2, 3],
        max_tokens=20,
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        seed=3,
        stop=("</answer>",),
        stop_token_ids=(4, 2),
        logprobs=0,
        forcing=plan.to_extra_args(),
        json_schema={"type": "object"},
    )
    body = completion_body(request, "m")
    assert body == {
        "model": "m",
        "prompt": [1, 2, 3],
        "max_tokens": 20,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "seed": 3,
        "n": 1,
        "stream": True,
        "return_token_ids": True,
        "skip_special_tokens": True,
        "stop": ["</answer>"],
        "include_stop_str_in_output": False,
        "stop_token_ids": [4, 2],
        "logprobs": 0,
        "vllm_xargs": {"s1_budget": plan.to_json()},
        "structured_outputs": {"json": {"type": "object"}, "disable_any_whitespace": True},
    }
    assert ForcingPlan.from_extra_args(body["vllm_xargs"]["s1_budget"]) == plan


def test_transient_failures_are_retried_with_backoff(
    servers: dict[str, VllmServer], generator: Any
) -> None:
    (expected,) = generator.generate(QUESTIONS[0], BUDGETS[0])
    with FlakyProxy(servers["plugin"].url) as proxy:
        gen = BudgetForcedGenerator.from_servers(proxy.url, max_retries=2, backoff_s=0.05)
        try:
            proxy.fail_next, seen = 2, proxy.completions
            (result,) = gen.generate(QUESTIONS[0], BUDGETS[0])
            assert proxy.completions - seen == 3  # two 503s, then served
            assert signature(result) == signature(expected)

            proxy.fail_next, proxy.status, seen = 3, 429, proxy.completions
            with pytest.raises(EngineError, match=r"after 3 attempts; last: .*HTTP 429"):
                gen.generate(QUESTIONS[0], BUDGETS[0])
            assert proxy.completions - seen == 3
        finally:
            gen.close()


def test_a_stalled_server_times_out_and_the_request_is_retried(
    servers: dict[str, VllmServer], generator: Any
) -> None:
    (expected,) = generator.generate(QUESTIONS[0], BUDGETS[0])
    with FlakyProxy(servers["plugin"].url) as proxy:
        gen = BudgetForcedGenerator.from_servers(
            proxy.url, read_timeout_s=1.0, max_retries=1, backoff_s=0.05
        )
        try:
            proxy.stall_next, seen = 1, proxy.completions
            started = time.monotonic()
            (result,) = gen.generate(QUESTIONS[0], BUDGETS[0])
            assert proxy.completions - seen == 2  # the stalled attempt, then the retry
            assert time.monotonic() - started < proxy.stall_s
            assert signature(result) == signature(expected)

            proxy.stall_next = 2
            with pytest.raises(EngineError, match=r"no reply within 1.0 s"):
                gen.generate(QUESTIONS[0], BUDGETS[0])
        finally:
            gen.close()


# -- the command line ------------------------------------------------------------------------


def test_serve_runs_vllms_own_server_with_processed_logprobs() -> None:
    from typer.testing import CliRunner

    from s1_integrations.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--port", "8123", "--dry-run", "--max-num-seqs", "4"], terminal_width=400
    )
    assert result.exit_code == 0, result.output
    argv = result.output.split()
    assert argv[1:] == [
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        TOY,
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--logprobs-mode",
        "processed_logprobs",
        "--logits-processors",
        PROCESSOR_FQCN,
        "--max-num-seqs",
        "4",
        "--dtype",
        "float32",
        # What serve adds for any OpenAI client (test_openai_clients.py drives them).
        "--reasoning-parser",
        "qwen3",
        "--chat-template",
        argv[-6],
        "--kv-cache-memory-bytes",
        str(2 * 1024**3),
        # Whole prompts at once on the CPU: seeded requests survive a busy batch.
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        "2048",
    ]
    assert Path(argv[-6]).read_text(encoding="utf-8").endswith('{{- "<think>" }}{%- endif %}')
    given = CliRunner().invoke(
        app, ["serve", "--dry-run", "--max-num-batched-tokens", "512"], terminal_width=400
    )
    assert "--no-enable-chunked-prefill" not in given.output.split()  # the operator decides


def test_ask_answers_through_a_server(servers: dict[str, VllmServer]) -> None:
    from typer.testing import CliRunner

    from s1_integrations.cli import app

    args = ["ask", "What is 12 + 34?", "--max-thinking", "5", "--server", servers["plugin"].url]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "thinking tokens 5," in result.output
    assert "strategy single_pass" in result.output


def test_free_tool_calls_are_held_to_the_tools_through_a_server(
    servers: dict[str, VllmServer], generator: Any
) -> None:
    """The answer's structural tag travels in the completion request: the same call as in
    process, naming the bound tool (the toy alone garbles the name)."""
    from test_toy_model import TOOL

    messages = [{"role": "user", "content": "What is blend_numbers(12, 30)?"}]
    with BudgetForcedGenerator.from_servers(servers["plugin"].url) as remote:
        (got,) = remote.generate([messages], ThinkingBudget(), tools=[TOOL])
    (want,) = generator.generate([messages], ThinkingBudget(), tools=[TOOL])
    assert got.token_ids == want.token_ids
    _, (call,) = parse_tool_calls(got.answer, [TOOL], "auto")
    assert (call.name, call.arguments) == ("blend_numbers", {"a": 12, "b": 30})


# -- a killed server (last: it takes the flagged server down) ----------------------------------


def test_a_killed_server_fails_pending_and_later_calls_and_the_fleet_carries_on(
    servers: dict[str, VllmServer], generator: Any
) -> None:
    doomed, healthy = servers["flagged"], servers["plugin"]
    alone = BudgetForcedGenerator.from_servers(doomed.url, **FAST_FAIL)
    fleet = BudgetForcedGenerator.from_servers([doomed.url, healthy.url], **FAST_FAIL)
    errors: dict[str, BaseException] = {}
    seen: list[tuple[float, Any]] = []  # (when, event): says what happened if this fails
    streaming = threading.Event()

    # Thinking that takes most of the context, for a stream and a batch beside it: the batch
    # keeps the server's steps slow, so the requests are still generating when the server is
    # killed. (Alone, the stream's 1,800 tokens took about 4 s here, and /metrics, answered
    # by the same busy server, once took as long.)
    long = ThinkingBudget(min_thinking_tokens=alone.max_model_len - 200)
    batch = ["What is 12 + 34?"] * 15

    def pending(name: str, call: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                call()
            except BaseException as e:
                errors[name] = e

        return run

    def stream() -> None:
        for event in alone.stream("What is 12 + 34?", long):
            seen.append((time.monotonic(), event))
            streaming.set()

    running: list[float] = []  # what /metrics said, in order: says what happened if this fails

    def all_generating(workers: list[threading.Thread]) -> bool:
        """Whether the server ran the batch and the stream all at once before one finished."""
        while all(worker.is_alive() for worker in workers):
            running.append(doomed.metric("vllm:num_requests_running"))
            if running[-1] == len(batch) + 1:
                return True
        return False

    for _ in range(5):
        seen.clear()
        streaming.clear()
        workers = [
            threading.Thread(target=pending("batch", lambda: alone.generate(batch, long))),
            threading.Thread(target=pending("stream", stream)),
        ]
        for worker in workers:
            worker.start()
        assert streaming.wait(timeout=120)
        if all_generating(workers):
            break  # all still generating, the stream included: the kill lands mid-request
        # One finished before /metrics counted them all: that run proves nothing.
        for worker in workers:
            worker.join(timeout=300)
        assert not errors, errors
    else:
        pytest.fail(f"requests running when /metrics answered: {running}, not {len(batch) + 1}")
    killed = time.monotonic()
    doomed.kill()
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive()
    story = (
        f"{len(seen)} events, the first {killed - seen[0][0]:.3f} s before the kill, the last "
        f"{seen[-1][0] - killed:.3f} s after it: {type(seen[-1][1]).__name__} "
        f"{repr(seen[-1][1])[:300]}"
    )
    assert sorted(errors) == ["batch", "stream"], story
    for error in errors.values():
        assert isinstance(error, EngineError)
        assert doomed.url in str(error)

    started = time.monotonic()
    with pytest.raises(EngineError, match="no server could serve the request"):
        alone.generate("What is 1 + 2?", ThinkingBudget(max_thinking_tokens=3))
    assert time.monotonic() - started < 15
    # The fleet retries on the server that is still up.
    results = fleet.generate(QUESTIONS, BUDGETS)
    expected = generator.generate(QUESTIONS, BUDGETS)
    assert [signature(r) for r in results] == [signature(r) for r in expected]
    alone.close()
    fleet.close()
