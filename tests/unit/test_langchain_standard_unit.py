"""LangChain's standard chat model unit tests (``ChatModelUnitTests``): no engine starts."""

from __future__ import annotations

from langchain_tests.unit_tests import ChatModelUnitTests

from standard_config import StandardConfig


class TestChatBudgetForcedUnit(StandardConfig, ChatModelUnitTests):
    pass
