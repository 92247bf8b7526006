"""Free tool calls held to the bound tools (``core/toolcalls.tool_call_tag``), no engine.

The tag is compiled with the grammar compiler vLLM uses, over the toy's tokenizer, and asked
what it accepts: free text, then after ``<tool_call>`` only a call of a bound tool.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import xgrammar as xgr

from conftest import TOY
from s1_integrations.core.backend import GenerationRequest
from s1_integrations.core.sampling import SamplingOptions
from s1_integrations.core.toolcalls import parse_tool_calls, tool_call_tag
from s1_integrations.engine.vllm_types import sampling_params
from s1_integrations.engine.wire import completion_body


def tool(name: str, *params: str) -> dict[str, Any]:
    properties = {p: {"type": "integer"} for p in params}
    schema = {"type": "object", "properties": properties, "required": list(params)}
    return {"type": "function", "function": {"name": name, "parameters": schema}}


TOOLS = [tool("blend_qx", "a", "b"), tool("lookup_z", "n")]


@pytest.fixture(scope="module")
def compiler() -> xgr.GrammarCompiler:
    from transformers import AutoTokenizer

    info = xgr.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(TOY))
    return xgr.GrammarCompiler(info)


def accepts(compiler: xgr.GrammarCompiler, tag: dict[str, Any], text: str) -> bool:
    items = [
        xgr.StructuralTagItem(begin=s["begin"], schema=json.dumps(s["schema"]), end=s["end"])
        for s in tag["structures"]
    ]
    matcher = xgr.GrammarMatcher(compiler.compile_structural_tag(items, tag["triggers"]))
    return bool(matcher.accept_string(text))


def test_the_tag_lets_text_through_and_holds_each_call_to_a_bound_tool(compiler) -> None:
    tag = tool_call_tag(TOOLS)
    call = '<tool_call>\n{"name": "blend_qx", "arguments": {"a":12,"b":30}}\n</tool_call>'
    assert accepts(compiler, tag, "\nThe answer is 42.")
    assert accepts(compiler, tag, "\n" + call)
    assert accepts(
        compiler,
        tag,
        call + "\n" + call.replace("blend_qx", "lookup_z").replace('{"a":12,"b":30}', '{"n":7}'),
    )
    # A name that is no bound tool, a key the schema lacks, a value of the wrong type: refused.
    assert not accepts(compiler, tag, call.replace("blend_qx", "blend_qy"))
    assert not accepts(compiler, tag, call.replace('"b":30', '"c":30'))
    assert not accepts(compiler, tag, call.replace("30", '"thirty"'))
    # What the tag lets through is what the adapters read back as the call.
    _, (parsed,) = parse_tool_calls(call, TOOLS, "auto")
    assert (parsed.name, parsed.arguments) == ("blend_qx", {"a": 12, "b": 30})


def test_a_tool_without_parameters_takes_an_empty_object(compiler) -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    tag = tool_call_tag([bare])
    assert accepts(compiler, tag, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')


def test_the_tag_reaches_vllm_and_the_servers() -> None:
    tag = SamplingOptions(answer_tag=tool_call_tag(TOOLS)).answer_tag
    assert tag is not None
    request = GenerationRequest([1], max_tokens=4, structural_tag=tag)
    params = sampling_params(request)
    assert params.structured_outputs is not None
    assert json.loads(params.structured_outputs.structural_tag) == tag
    assert params.structured_outputs.json is None
    body = completion_body(request, "m")
    assert json.loads(body["structured_outputs"]["structural_tag"]) == tag
    assert body["structured_outputs"]["disable_any_whitespace"] is True


@pytest.mark.parametrize(
    ("tag", "match"),
    [
        ({"structures": []}, "expected {'structures'"),
        ({"structures": [], "triggers": []}, "answer_tag.triggers"),
        ({"structures": [{"begin": "<x>"}], "triggers": ["<x>"]}, r"structures\[0\]: expected"),
        (
            {"structures": [{"begin": "<y>", "schema": {}, "end": "</y>"}], "triggers": ["<x>"]},
            "begin starts with no trigger",
        ),
        (
            {
                "structures": [{"begin": "<x>", "schema": {"type": "nope"}, "end": "</x>"}],
                "triggers": ["<x>"],
            },
            r"answer_tag.structures\[0\].schema: ",
        ),
    ],
)
def test_a_bad_tag_is_refused_before_the_engine(tag: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SamplingOptions(answer_tag=tag)
