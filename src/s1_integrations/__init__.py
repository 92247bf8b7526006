"""s1 budget forcing for vLLM, with LangChain and LlamaIndex adapters.

Heavy modules (vLLM, LangChain, LlamaIndex) load on first use, so ``import s1_integrations``
stays fast and the adapters' frameworks stay optional at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from s1_integrations.core.adaptive import AdaptivePolicy
from s1_integrations.core.budget import BudgetError, ThinkingBudget
from s1_integrations.core.formats import (
    S1_FORMAT,
    THINK_TAGS,
    ThinkingFormat,
    ThinkingFormatError,
    detect_format,
)
from s1_integrations.core.knobs import ConflictingSettingsError, EffortTable
from s1_integrations.core.prompts import PromptError
from s1_integrations.core.results import (
    AnswerDelta,
    BudgetForcedResult,
    ExtensionInserted,
    FinalResult,
    StreamEvent,
    ThinkingDelta,
    Vote,
    VotedResult,
)
from s1_integrations.core.votes import VOTE_METHODS, normalise_answer
from s1_integrations.toy import heldout_path, toy_model_path

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator, SamplingOptions
    from s1_integrations.engine.bridge import EngineClosedError, EngineError
    from s1_integrations.engine.engine import InProcessEngine
    from s1_integrations.engine.remote import RemoteConfig, RemoteEngine

_LAZY = {
    "BudgetForcedGenerator": "s1_integrations.core.generator",
    "SamplingOptions": "s1_integrations.core.generator",
    "InProcessEngine": "s1_integrations.engine.engine",
    "EngineError": "s1_integrations.engine.bridge",
    "EngineClosedError": "s1_integrations.engine.bridge",
    "RemoteEngine": "s1_integrations.engine.remote",
    "RemoteConfig": "s1_integrations.engine.remote",
    "ChatBudgetForced": "s1_integrations.adapters.langchain",
    "BudgetForcedLLM": "s1_integrations.adapters.llama_index",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 's1_integrations' has no attribute {name!r}")


__all__ = [
    "S1_FORMAT",
    "THINK_TAGS",
    "VOTE_METHODS",
    "AdaptivePolicy",
    "AnswerDelta",
    "BudgetError",
    "BudgetForcedGenerator",
    "BudgetForcedLLM",
    "BudgetForcedResult",
    "ChatBudgetForced",
    "ConflictingSettingsError",
    "EffortTable",
    "EngineClosedError",
    "EngineError",
    "ExtensionInserted",
    "FinalResult",
    "InProcessEngine",
    "PromptError",
    "RemoteConfig",
    "RemoteEngine",
    "SamplingOptions",
    "StreamEvent",
    "ThinkingBudget",
    "ThinkingDelta",
    "ThinkingFormat",
    "ThinkingFormatError",
    "Vote",
    "VotedResult",
    "detect_format",
    "heldout_path",
    "normalise_answer",
    "toy_model_path",
]
