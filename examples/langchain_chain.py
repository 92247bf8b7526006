"""A LangChain chain and an agent tool on the toy reasoner, with the thinking shown.

python examples/langchain_chain.py
"""

import asyncio

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from s1_integrations.adapters.langchain import ChatBudgetForced, reasoning_tool


async def main() -> None:
    llm = ChatBudgetForced(engine_args={"dtype": "float32"}, max_thinking_tokens=64)
    prompt = ChatPromptTemplate.from_messages([("human", "What is {a} + {b}?")])

    # A chain hands a call's keywords to its first step only: bind them to the model.
    msg = (prompt | llm.bind(extensions=1)).invoke({"a": 4857, "b": 2968})
    print("answer:   ", msg.content)
    print("reasoning:", msg.content_blocks[0])
    print("usage:    ", msg.usage_metadata)
    print("budget:   ", {k: msg.response_metadata[k] for k in ("thinking_tokens", "extensions")})

    chain = prompt | llm | StrOutputParser()
    answers = await chain.abatch([{"a": i, "b": 2 * i} for i in range(10, 42)])
    print(f"\n{len(answers)} answers in one engine batch, e.g. {answers[0]!r}")

    tool = reasoning_tool(llm._get_generator(), budget={"min_thinking_tokens": 40})
    out = await tool.ainvoke(
        {
            "name": "think_hard",
            "args": {"question": "What is 999 + 1?"},
            "id": "1",
            "type": "tool_call",
        }
    )
    print("\ntool answer:", out.content, "| thinking tokens:", out.artifact["thinking_tokens"])


if __name__ == "__main__":  # vLLM starts worker processes with spawn
    asyncio.run(main())
