"""One generator per model and engine configuration, shared by every adapter object."""

from __future__ import annotations

import json
import threading
from typing import Any

from s1_integrations.core.generator import BudgetForcedGenerator

_lock = threading.Lock()
_generators: dict[tuple[str | None, str], BudgetForcedGenerator] = {}


def shared_generator(model: str | None, engine_args: dict[str, Any]) -> BudgetForcedGenerator:
    """The process's generator (and engine) for ``model`` with ``engine_args``.

    LangChain and LlamaIndex build, copy and rebind model objects freely; an engine holds the
    weights and the KV cache, so every adapter object with the same configuration shares it.
    A closed engine is replaced on the next use.
    """
    key = (model, json.dumps(engine_args, sort_keys=True, default=str))
    with _lock:
        generator = _generators.get(key)
        if generator is None or generator.engine.closed:
            generator = BudgetForcedGenerator(model, **engine_args)
            _generators[key] = generator
        return generator
