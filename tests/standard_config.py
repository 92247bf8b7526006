"""What both of LangChain's standard suites need to know about ``ChatBudgetForced``.

The unit suite runs in ``tests/unit/test_langchain_standard_unit.py`` (no engine), the
integration suite in ``tests/integration/test_langchain_standard.py`` (the real engine).
"""

from __future__ import annotations

from conftest import ENGINE_ARGS, TOY
from s1_integrations.adapters.langchain import ChatBudgetForced
from s1_integrations.core.knobs import NETWORK_SETTINGS

PARAMS = {
    "model": TOY,
    "engine_args": ENGINE_ARGS,
    "max_thinking_tokens": 48,
}


class StandardConfig:
    """What both standard suites need to know about the model under test."""

    @property
    def chat_model_class(self) -> type[ChatBudgetForced]:
        return ChatBudgetForced

    @property
    def chat_model_params(self) -> dict:
        return PARAMS

    @property
    def standard_chat_model_params(self) -> dict:
        """LangChain's standard constructor parameters, less the network client's.

        ``timeout``, ``max_retries`` and ``api_key`` configure an HTTP client; the engine runs
        in this process, so ``ChatBudgetForced`` refuses them with a ``TypeError`` (pointing to
        ``BudgetForcedGenerator.from_servers`` for servers) instead of ignoring them.
        ``max_tokens`` is the answer's cap (``max_answer_tokens``): 64 keeps the toy's
        rambling answers short, as before.
        """
        params = {
            k: v for k, v in super().standard_chat_model_params.items() if k not in NETWORK_SETTINGS
        }
        return {**params, "max_tokens": 64}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True
