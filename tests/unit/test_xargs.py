"""Plain-word budgets in ``vllm_xargs`` (engine/xargs.py), resolved with the toy's tokenizer.

No engine: what the processor's ``validate_params`` does to one request's ``vllm_xargs`` in the
API server, and the start-up pieces of ``s1-integrations serve`` (effort table, flags).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from s1_integrations import ThinkingBudget, toy_model_path
from s1_integrations.core.adaptive import AdaptivePolicy
from s1_integrations.core.forcing import ForcingPlan
from s1_integrations.core.knobs import DEFAULT_EFFORT_TABLE
from s1_integrations.core.plans import PlanBuilder
from s1_integrations.engine.server import opening_chat_template, serve_defaults
from s1_integrations.engine.xargs import (
    EFFORT_TABLE_ENV,
    TOKENIZER_ENV,
    load_effort_table,
    looks_like_ours,
    plain_budget,
    resolve_plain_words,
    served_tokenizer_source,
)

TOY = str(toy_model_path())


@pytest.fixture(scope="module")
def builder() -> PlanBuilder:
    return PlanBuilder(AutoTokenizer.from_pretrained(TOY))


def resolved(builder: PlanBuilder, xargs: dict[str, object], **kw: object) -> dict[str, object]:
    out = dict(xargs)
    resolve_plain_words(out, builder=builder, **kw)  # type: ignore[arg-type]
    return out


def test_plain_words_become_the_plan_the_client_would_send(builder: PlanBuilder) -> None:
    out = resolved(
        builder,
        {"max_thinking_tokens": 8, "extensions": 1, "extension_phrases": "Hmm", "session_id": "x"},
    )
    assert set(out) == {"s1_budget", "session_id"}  # other keys pass untouched
    assert out["session_id"] == "x"
    budget = ThinkingBudget(max_thinking_tokens=8, extensions=1, extension_phrases=("Hmm",))
    assert out["s1_budget"] == builder.plan_for(budget).to_json()
    plan = ForcingPlan.from_extra_args(str(out["s1_budget"]))
    assert plan.max_thinking == 8
    assert plan.extensions == 1
    assert plan.phrases == (builder.encode("Hmm"),)


def test_phrases_as_a_list_and_every_field_arrive(builder: PlanBuilder) -> None:
    words = {
        "max_thinking_tokens": 30,
        "min_thinking_tokens": 10,
        "extensions": 2,
        "extension_phrases": ["Wait", "Hmm"],
        "conclusion": "So",
        "max_answer_tokens": 12,
        "soft_landing_tokens": 5,
    }
    plan = ForcingPlan.from_extra_args(str(resolved(builder, words)["s1_budget"]))
    assert plan.min_thinking == 10
    assert plan.phrases == (builder.encode("Wait"), builder.encode("Hmm"))
    assert plan.conclusion == builder.encode("So")
    assert plan.max_answer == 12
    assert plan.landing == 5
    assert plan.breaks  # the soft landing's break tokens, classified by the server


@pytest.mark.parametrize(
    ("words", "policy"),
    [
        ({"adaptive": True}, AdaptivePolicy()),
        ({"adaptive": 1}, AdaptivePolicy()),
        ({"adaptive": "true"}, AdaptivePolicy()),
        (
            {"adaptive": '{"threshold": 0.3, "max_extensions": 2}'},
            AdaptivePolicy(threshold=0.3, max_extensions=2),
        ),
        ({"adaptive_threshold": 0.6}, AdaptivePolicy(threshold=0.6)),
        (
            {"adaptive_signal": "mean_top1", "adaptive_max_extensions": 3},
            AdaptivePolicy(signal="mean_top1", max_extensions=3),
        ),
        (
            {"adaptive": '{"signal": "mean_top1"}', "adaptive_threshold": 0.2},
            AdaptivePolicy(signal="mean_top1", threshold=0.2),
        ),
        ({"adaptive": False}, None),
        ({"adaptive": "false"}, None),
    ],
)
def test_the_adaptive_policy_in_plain_words(
    builder: PlanBuilder, words: dict[str, object], policy: AdaptivePolicy | None
) -> None:
    budget = plain_budget({"max_thinking_tokens": 64, **words})
    assert budget.adaptive == policy
    plan = ForcingPlan.from_extra_args(
        str(resolved(builder, {"max_thinking_tokens": 64, **words})["s1_budget"])
    )
    assert plan == builder.plan_for(ThinkingBudget(max_thinking_tokens=64, adaptive=policy))
    if policy is not None:
        assert (plan.adaptive_signal, plan.adaptive_threshold, plan.adaptive_max) == (
            policy.signal,
            policy.threshold,
            policy.max_extensions,
        )


def test_resolving_twice_changes_nothing(builder: PlanBuilder) -> None:
    once = resolved(builder, {"max_thinking_tokens": 3})
    assert resolved(builder, once) == once


def test_no_keys_of_ours_is_left_alone(builder: PlanBuilder) -> None:
    xargs = {"kv_transfer_params": "x", "session_id": "y"}
    assert resolved(builder, xargs) == xargs


@pytest.mark.parametrize(
    ("xargs", "message"),
    [
        ({"max_thinking_token": 8}, "did you mean 'max_thinking_tokens'"),
        ({"extensons": 1}, "did you mean 'extensions'"),
        ({"s1_budgett": "{}"}, "did you mean 's1_budget'"),
        ({"reasoning_efort": "low"}, "did you mean 'reasoning_effort'"),
        ({"thinking_token_budget": 4}, "thinking_token_budget is a request field"),
        ({"max_thinking_tokens": -1}, r"vllm_xargs\.max_thinking_tokens: .*greater than or equal"),
        ({"max_thinking_tokens": "many"}, r"vllm_xargs\.max_thinking_tokens: "),
        ({"extensions": 1.5}, r"vllm_xargs\.extensions: "),
        ({"extension_phrases": [" "]}, r"vllm_xargs\.extension_phrases: .*contain text"),
        ({"reasoning_effort": "huge"}, r"vllm_xargs\.reasoning_effort: 'huge' is not one of"),
        ({"min_thinking_tokens": 9, "max_thinking_tokens": 5}, "exceeds max_thinking_tokens"),
        ({"conclusion": "so the answer is", "max_thinking_tokens": 2}, r"vllm_xargs\.conclusion"),
        ({"reasoning_effort": "none", "max_thinking_tokens": 5}, "reasoning_effort='none' means"),
        ({"max_thinking_tokens": 8, "s1_budget": "{}"}, "both give a budget"),
        ({"adaptive_treshold": 0.3}, "did you mean 'adaptive_threshold'"),
        # the early exit's fields are adaptive_exit_*; Anthropic's budget_tokens is not ours
        ({"adaptive": True, "exit_after": 8}, r"unexpected key \['exit_after'\]"),
        ({"budget_tokens": 100}, r"unexpected key \['budget_tokens'\]"),
        ({"adaptive_threshold": 1.5}, r"vllm_xargs\.adaptive_threshold: .*less than or equal"),
        ({"adaptive_signal": "entropy"}, r"vllm_xargs\.adaptive_signal: unknown signal"),
        ({"adaptive_max_extensions": -1}, r"vllm_xargs\.adaptive_max_extensions: .*greater"),
        ({"adaptive": "yes"}, r"vllm_xargs\.adaptive: 'yes' is not true, false or a JSON"),
        ({"adaptive": '{"treshold": 0.3}'}, r"vllm_xargs\.adaptive: .*[Ee]xtra"),
        ({"adaptive": '{"threshold": 0.3}', "adaptive_threshold": 0.4}, "both set threshold"),
        ({"adaptive": False, "adaptive_threshold": 0.4}, "adaptive is off but"),
        ({"adaptive": True, "extensions": 2}, "exclude each other"),
        # A boolean is no count: lax parsing would read true as 1.
        ({"max_thinking_tokens": True}, r"vllm_xargs\.max_thinking_tokens: true is not a number"),
        ({"extensions": False}, r"vllm_xargs\.extensions: false is not a number"),
        ({"adaptive_exit_after": True}, r"vllm_xargs\.adaptive_exit_after: true is not a"),
        ({"adaptive_threshold": True}, r"vllm_xargs\.adaptive_threshold: true is not a"),
    ],
)
def test_typos_and_bad_values_are_refused_naming_the_key(
    builder: PlanBuilder, xargs: dict[str, object], message: str
) -> None:
    given = dict(xargs)
    with pytest.raises(ValueError, match=message):
        resolve_plain_words(given, builder=builder)
    assert given == xargs  # nothing half-resolved


@pytest.mark.parametrize("xargs", [{"max_thinking_tokens": 8}, {"s1_budget": "{}"}])
def test_vllms_thinking_token_budget_beside_ours_is_a_conflict(
    builder: PlanBuilder, xargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match=r"^thinking_token_budget: .*both given"):
        resolve_plain_words(dict(xargs), thinking_token_budget=4, builder=builder)
    resolve_plain_words({}, thinking_token_budget=4, builder=builder)  # alone: vLLM's business


def test_keys_that_look_like_ours() -> None:
    for key in (
        "s1_anything",
        "max_thinking",
        "answer_tokens_max",
        "effort",
        "extensionz",
        "adaptive_x",
        "exit_after",
        "exit_threshold",
        "budget_tokens",
    ):
        assert looks_like_ours(key), key
    for key in ("session_id", "kv_transfer_params", "ec_transfer_params", "my_processor_k"):
        assert not looks_like_ours(key), key


def test_reasoning_effort_maps_by_the_default_table() -> None:
    for level in ("none", "low", "medium", "high"):
        expected = ThinkingBudget().model_copy(update=DEFAULT_EFFORT_TABLE.fields_for(level))
        assert plain_budget({"reasoning_effort": level}, DEFAULT_EFFORT_TABLE) == expected
    assert plain_budget({"reasoning_effort": "none"}).max_thinking_tokens == 0
    assert plain_budget({"reasoning_effort": "low"}).max_thinking_tokens == 1024


def test_an_operator_table_replaces_the_entries_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "effort.json"
    table.write_text(json.dumps({"low": {"max_thinking_tokens": 4}}))
    monkeypatch.setenv(EFFORT_TABLE_ENV, str(table))
    assert plain_budget({"reasoning_effort": "low"}).max_thinking_tokens == 4
    assert plain_budget({"reasoning_effort": "high"}).max_thinking_tokens == 16384
    inline = '{"medium": {"max_thinking_tokens": 7, "extensions": 1}}'
    assert load_effort_table(inline).fields_for("medium") == {
        "max_thinking_tokens": 7,
        "extensions": 1,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not JSON"),
        ("/no/such/file.json", "neither a JSON object nor the path of a file"),
        ('{"low": {"max_thinking_token": 4}}', r"low: .*not ThinkingBudget fields"),
        ('{"lowish": {"max_thinking_tokens": 4}}', "lowish"),
        ('{"low": {"max_thinking_tokens": -4}}', "low"),
    ],
)
def test_a_bad_operator_table_is_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_effort_table(value)


def test_the_tokenizer_comes_from_the_server_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKENIZER_ENV, raising=False)
    python = ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert served_tokenizer_source([*python, "--model", "m", "--port", "1"]) == "m"
    assert served_tokenizer_source([*python, "--model=m", "--tokenizer", "t"]) == "t"
    assert served_tokenizer_source(["vllm", "serve", "m", "--port", "1"]) == "m"
    assert served_tokenizer_source(["vllm", "serve", "--port", "1"]) is None
    monkeypatch.setenv(TOKENIZER_ENV, "e")
    assert served_tokenizer_source([*python, "--model", "m"]) == "e"


def test_without_a_known_tokenizer_plain_words_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TOKENIZER_ENV, raising=False)
    monkeypatch.setattr("sys.argv", ["vllm", "serve", "--port", "1"])
    with pytest.raises(ValueError, match="need the served model's tokenizer"):
        resolve_plain_words({"max_thinking_tokens": 3})


def test_serve_opens_the_thinking_and_picks_the_parser(builder: PlanBuilder) -> None:
    template = opening_chat_template(builder.tokenizer, builder.thinking_format)
    assert template is not None
    text = builder.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}],
        chat_template=template,
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text.endswith("<|im_start|>assistant\n<think>")
    # The opened template opens nothing more: it is left as it is.
    opened = AutoTokenizer.from_pretrained(TOY)
    opened.chat_template = template
    assert opening_chat_template(opened, builder.thinking_format) is None

    flags = serve_defaults(TOY, [], env={})
    assert flags[:2] == ["--reasoning-parser", "qwen3"]
    assert flags[2] == "--chat-template"
    assert Path(flags[3]).read_text(encoding="utf-8") == template
    assert flags[4:] == [  # this CPU machine
        "--kv-cache-memory-bytes",
        str(2 * 1024**3),
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        "2048",
    ]
    given = ["--reasoning-parser", "deepseek_r1", "--chat-template", "t.jinja"]
    given += ["--max-num-batched-tokens", "4096"]
    assert serve_defaults(TOY, [*given, "--kv-cache-memory-bytes=1"], env={}) == []
    assert "--kv-cache-memory-bytes" not in serve_defaults(
        TOY, [], env={"VLLM_CPU_KVCACHE_SPACE": "1"}
    )


def test_s1s_format_gets_our_reasoning_parser(tmp_path: Path) -> None:
    """s1's own format (``<|im_start|>think``): no vLLM parser reads it; ours, as a plugin."""
    tokenizer = AutoTokenizer.from_pretrained(TOY)
    tokenizer.chat_template = str(tokenizer.chat_template).replace(
        "'<|im_start|>assistant\\n'", "'<|im_start|>think'"
    )
    assert "<|im_start|>think" in tokenizer.chat_template
    tokenizer.save_pretrained(tmp_path)
    flags = serve_defaults(str(tmp_path), ["--kv-cache-memory-bytes", "1"], env={})
    assert flags[:4] == [
        "--reasoning-parser-plugin",
        "s1_integrations.engine.reasoning",
        "--reasoning-parser",
        "s1",
    ]
    assert "--chat-template" not in flags  # its generation prompt opens the thinking already
    assert "--reasoning-config" not in flags
    given = ["--reasoning-parser-plugin", "mine.py", "--kv-cache-memory-bytes", "1"]
    assert serve_defaults(str(tmp_path), given, env={})[:2] == ["--reasoning-parser", "s1"]
