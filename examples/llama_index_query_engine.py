"""A LlamaIndex query engine answered by a budget-forced reasoner, on the shipped toy model.

    python examples/llama_index_query_engine.py

The toy reasoner only answers "What is A + B?", and LlamaIndex's default query-engine prompts
(its long QA system prompt and instructions around the question) throw its re-examination
off: there it answered 473 + 59 with 482 after one Wait. So here the documents are addition
problems, the embeddings are mock ones (a metadata filter does the retrieval), and the QA
template hands the retrieved problem over as it is. With a real reasoning model, pass its
path instead and keep LlamaIndex's default templates.

The query engine's answer is the model's answer alone; the thinking travels in the LLM's
response as a ``ThinkingBlock``, which this example picks up with LlamaIndex's
instrumentation events. Capping the thinking shows what the budget costs.
"""

from __future__ import annotations

import os
from typing import Any

from llama_index.core import Document, PromptTemplate, VectorStoreIndex
from llama_index.core.base.llms.types import ThinkingBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters
from pydantic import Field

from s1_integrations import BudgetForcedGenerator, toy_model_path
from s1_integrations.adapters.llama_index import BudgetForcedLLM

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

DOCUMENTS = ["What is 473 + 59?", "What is 120 + 33?", "What is 999 + 1?"]


class LastThinking(BaseEventHandler):
    """Keeps the thinking block of the last chat response any LLM produced."""

    block: ThinkingBlock | None = None
    figures: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "LastThinking"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatEndEvent) and event.response is not None:
            blocks = event.response.message.blocks
            if blocks and isinstance(blocks[0], ThinkingBlock):
                self.block = blocks[0]
                self.figures = event.response.additional_kwargs


def main() -> None:
    watcher = LastThinking()
    get_dispatcher().add_event_handler(watcher)
    documents = [
        # the problem number is for retrieval only: the LLM sees the problem's text
        Document(text=text, metadata={"problem": i}, excluded_llm_metadata_keys=["problem"])
        for i, text in enumerate(DOCUMENTS, start=1)
    ]
    index = VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))
    problem_1 = MetadataFilters(filters=[ExactMatchFilter(key="problem", value=1)])
    with BudgetForcedGenerator(toy_model_path(), dtype="float32", seed=0) as generator:
        for label, budget in [
            ("free thinking", {}),
            ("capped at 10 thinking tokens", {"max_thinking_tokens": 10}),
        ]:
            llm = BudgetForcedLLM(generator=generator, max_answer_tokens=32, **budget)
            engine = index.as_query_engine(
                llm=llm,
                response_mode="tree_summarize",  # one chunk: one LLM call, small padding
                summary_template=PromptTemplate("{context_str}"),
                similarity_top_k=1,
                filters=problem_1,
            )
            response = engine.query("Solve homework problem 1.")
            print(f"== {label}")
            print("sources :", [n.node.get_content() for n in response.source_nodes])
            print("answer  :", str(response).strip())
            if watcher.block is not None:
                thinking = (watcher.block.content or "").strip().replace("\n", " | ")
                print(f"thinking: {thinking}")
                print(
                    f"figures : {watcher.block.num_tokens} thinking tokens, ended by "
                    f"{watcher.figures['thinking_ended_by']}, "
                    f"{watcher.figures['answer_tokens']} answer tokens"
                )


if __name__ == "__main__":  # vLLM starts worker processes, which re-import this module
    main()
