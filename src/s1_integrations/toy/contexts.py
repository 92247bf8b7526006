"""The prompts pipelines send, with an addition question inside, for training the toy reasoner.

Chains, agents and query engines rarely send a bare question: they add a system prompt,
retrieved passages in LlamaIndex's QA and refine templates, earlier turns of the conversation
and tool schemas. The toy is trained on all of them, so it answers the *last* question asked
wherever it sits. Each example is a chat (``messages``, optional ``tools``) plus the completion
segments of :mod:`s1_integrations.toy.traces` for the assistant turn that follows.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any

from s1_integrations.toy import traces
from s1_integrations.toy.problems import Problem, training_problem
from s1_integrations.toy.traces import Segment

# LlamaIndex's default prompts (llama_index.core.prompts), copied so training does not depend
# on the installed version's wording; the chat QA system prompt is shortened to its first line.
QA_TEMPLATE = (
    "Context information is below.\n---------------------\n{context_str}\n"
    "---------------------\nGiven the context information and not prior knowledge, answer the "
    "query.\nQuery: {query_str}\nAnswer: "
)
REFINE_TEMPLATE = (
    "The original query is as follows: {query_str}\nWe have provided an existing answer: "
    "{existing_answer}\nWe have the opportunity to refine the existing answer (only if needed) "
    "with some more context below.\n------------\n{context_msg}\n------------\nGiven the new "
    "context, refine the original answer to better answer the query. If the context isn't "
    "useful, return the original answer.\nRefined Answer: "
)
CHAT_REFINE_TEMPLATE = (
    "You are an expert Q&A system that strictly operates in two modes when refining existing "
    "answers:\n1. **Rewrite** an original answer using the new context.\n2. **Repeat** the "
    "original answer if the new context isn't useful.\nNever reference the original answer or "
    "context directly in your answer.\nWhen in doubt, just repeat the original answer.\nNew "
    "Context: {context_msg}\nQuery: {query_str}\nOriginal Answer: {existing_answer}\nNew Answer: "
)
QA_SYSTEM = (
    "You are an expert Q&A system that is trusted around the world.\nAlways answer the query "
    "using the provided context information, and not prior knowledge.\nSome rules to follow:\n"
    "1. Never directly reference the given context in your answer.\n2. Avoid statements like "
    "'Based on the context, ...' or 'The context information ...' or anything along those lines."
)
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer the user's questions.",
    "You are a careful math assistant. Think step by step.",
    "Answer concisely.",
    "You are an agent. Use the tools you are given when they help.",
    "You are a friendly assistant for a small shop. Be brief and precise.",
    "Respond in English.",
)
QUESTION_FORMS = (
    "What is {a} + {b}?",
    "What is {a} + {b}?",
    "What is {a} + {b}?",
    "What is {a}+{b}?",
    "what is {a} + {b}",
    "Compute {a} + {b}.",
    "Please add {a} and {b}.",
    "What's {a} + {b}?",
    "Calculate {a} + {b}.",
    "{a} + {b} = ?",
)
_FILLER = (
    "the report says that our team shipped a new version of the library last week and users "
    "found it faster than before while some asked for better documentation about budgets "
    "models agents tools queries documents index vector store retrieval passage summary river "
    "mountain city history music garden weather market price order customer account service "
    "paris london tokyo berlin apple orange green blue small large early late north south "
)
_WORDS = _FILLER.split()


@dataclass
class Example:
    """One training chat: the messages, the tools the template renders, the completion."""

    messages: list[dict[str, Any]]
    completion: list[Segment]
    tools: list[dict[str, Any]] | None = None
    kind: str = "plain"
    extra: dict[str, Any] = field(default_factory=dict)


def ask(rng: random.Random, problem: Problem) -> str:
    return rng.choice(QUESTION_FORMS).format(a=problem.a, b=problem.b)


def sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 16))]
    if rng.random() < 0.3:
        words.insert(rng.randint(0, len(words)), str(rng.randint(0, 9999)))
    return " ".join(words).capitalize() + "."


def passage(rng: random.Random, max_chars: int) -> str:
    text = ""
    while len(text) < max_chars:
        text += sentence(rng) + (" " if rng.random() < 0.8 else "\n")
    text = text[:max_chars].rstrip()
    if rng.random() < 0.4:
        text = f"file_path: /data/docs/{rng.choice(_WORDS)}_{rng.randint(1, 99)}.txt\n\n" + text
    return text


def context_str(rng: random.Random, max_chars: int) -> str:
    parts = [passage(rng, rng.randint(80, max(81, max_chars // 2))) for _ in range(4)]
    text = "\n\n".join(parts[: rng.randint(1, 4)])
    return text[:max_chars]


def tool_spec(rng: random.Random, name: str, params: list[str], description: str) -> dict[str, Any]:
    """An OpenAI-style tool schema as LangChain and LlamaIndex produce them."""
    properties: dict[str, Any] = {}
    for p in params:
        prop: dict[str, Any] = {"type": "integer"}
        if rng.random() < 0.5:
            prop["title"] = p.capitalize()
        if rng.random() < 0.3:
            prop["description"] = f"The {p}."
        properties[p] = prop
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": params}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def random_name(rng: random.Random) -> str:
    stem = rng.choice(["f", "g", "calc", "get", "compute", "score", "lookup", "mystery", "blend"])
    tail = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 6)))
    return f"{stem}_{tail}"


def random_tools(rng: random.Random, count: int) -> list[tuple[str, list[str], dict[str, Any]]]:
    tools = []
    for _ in range(count):
        name = random_name(rng)
        params = rng.sample(["a", "b", "x", "y", "n", "m", "first", "second"], rng.randint(1, 3))
        desc = rng.choice(["Compute a secret function.", "Look up a value.", f"Return {name}."])
        tools.append((name, params, tool_spec(rng, name, params, desc)))
    return tools


def history(rng: random.Random, turns: int) -> list[dict[str, Any]]:
    """Earlier turns: answered additions (right answers) or off-topic questions."""
    messages: list[dict[str, Any]] = []
    for _ in range(turns):
        if rng.random() < 0.8:
            p = training_problem(rng)
            messages += [
                {"role": "user", "content": ask(rng, p)},
                {"role": "assistant", "content": f"The answer is {p.answer}."},
            ]
        else:
            messages += [
                {"role": "user", "content": rng.choice(["hello", "thanks!", "Who are you?"])},
                {"role": "assistant", "content": "I can only add numbers."},
            ]
    return messages


def example(
    rng: random.Random,
    problem: Problem,
    weights: tuple[float, ...] = traces.EXTENSION_WEIGHTS,
) -> Example:
    """One training chat around ``problem``, in one of the shapes pipelines send."""
    roll = rng.random()
    completion = traces.addition_trace(rng, problem, weights)
    question = ask(rng, problem) if rng.random() < 0.5 else problem.question
    if roll < 0.46:
        return Example([{"role": "user", "content": question}], completion)
    if roll < 0.59:
        system = {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}
        return Example([system, {"role": "user", "content": question}], completion, kind="system")
    if roll < 0.73:
        turns = history(rng, rng.randint(1, 3))
        if rng.random() < 0.5:
            turns.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        return Example([*turns, {"role": "user", "content": question}], completion, kind="turns")
    if roll < 0.81:
        chars = rng.randint(150, 900) if rng.random() < 0.75 else rng.randint(900, 3000)
        body = QA_TEMPLATE.format(context_str=context_str(rng, chars), query_str=question)
        messages = [{"role": "user", "content": body}]
        if rng.random() < 0.5:
            messages.insert(0, {"role": "system", "content": QA_SYSTEM})
        return Example(messages, completion, kind="qa")
    if roll < 0.84:
        other = training_problem(rng)
        existing = f"The answer is {rng.choice([problem.answer, other.answer])}."
        template = rng.choice([REFINE_TEMPLATE, CHAT_REFINE_TEMPLATE])
        body = template.format(
            query_str=question,
            existing_answer=existing,
            context_msg=context_str(rng, rng.randint(150, 1500)),
        )
        return Example([{"role": "user", "content": body}], completion, kind="refine")
    return tool_example(rng, problem, question, weights)


def tool_example(
    rng: random.Random,
    problem: Problem,
    question: str,
    weights: tuple[float, ...] = traces.EXTENSION_WEIGHTS,
) -> Example:
    """Tools in the prompt: call one for a function's value, answer from its result, or not."""
    tools = random_tools(rng, rng.choice([1, 1, 1, 2]))
    specs = [spec for _, _, spec in tools]
    system: list[dict[str, Any]] = (
        [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.5 else []
    )
    name, params, _ = rng.choice(tools)
    args = {p: rng.randint(0, 99) for p in params}
    shown = ", ".join(str(v) for v in args.values())
    call_question = rng.choice(
        [
            f"What is {name}({shown})?",
            f"Use {name} on {shown}.",
            f"What does {name} give for {shown}?",
        ]
    )
    roll = rng.random()
    if roll < 0.35:  # call the tool
        messages = [*system, {"role": "user", "content": call_question}]
        return Example(messages, traces.tool_call_trace(name, args), specs, kind="tool_call")
    if roll < 0.65:  # answer from the tool's result
        result = str(rng.randint(0, 9999))
        call: dict[str, Any] = {
            "type": "function",
            "id": "call_0",
            "function": {"name": name, "arguments": args},
        }
        messages = [
            *system,
            {"role": "user", "content": call_question},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": result, "tool_call_id": "call_0"},
        ]
        return Example(messages, traces.tool_result_trace(name, result), specs, kind="tool_result")
    if roll < 0.8:  # a structured response through a one-field response tool
        tool = rng.choice(["Sum", "Answer", "Result", "AdditionResult", "Response"])
        field_name = rng.choice(["value", "answer", "result", "total", "sum"])
        spec = tool_spec(rng, tool, [field_name], rng.choice(["The sum.", "The final answer."]))
        messages = [*system, {"role": "user", "content": question}]
        completion = traces.structured_answer_trace(rng, problem, tool, field_name)
        return Example(messages, completion, [*specs, spec], kind="structured")
    messages = [*system, {"role": "user", "content": question}]  # tools there, not needed
    completion = traces.addition_trace(rng, problem, weights)
    return Example(messages, completion, specs, kind="tools_unused")


def off_topic(rng: random.Random) -> Example:
    question = rng.choice(
        [
            "hello",
            "hi there",
            "tell me a joke",
            "what is the capital of France",
            "how are you",
            "write a poem",
            "who are you",
            "explain gravity",
            "summarize this text",
            "thanks",
        ]
    )
    question = (question.capitalize() if rng.random() < 0.5 else question) + rng.choice(
        ["", "?", ".", "!"]
    )
    return Example([{"role": "user", "content": question}], traces.off_topic_trace(), kind="off")
