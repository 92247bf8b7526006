"""Makes a Python process see vLLM as it is where s1-integrations is not installed.

On ``PYTHONPATH``, this runs at the start of every process of a test server (the API server
and the engine-core and worker processes vLLM spawns), hiding this package's entry point in
``vllm.logits_processors``: the server then has no budget-forcing plugin, which is what the
remote backend's fallback to rounds is tested against.
"""

import importlib.metadata as _metadata

_entry_points = _metadata.entry_points


def _without_budget_forcing(**params):  # type: ignore[no-untyped-def]
    found = _entry_points(**params)
    if params.get("group") == "vllm.logits_processors":
        return _metadata.EntryPoints(
            ep for ep in found if not ep.value.startswith("s1_integrations.")
        )
    return found


_metadata.entry_points = _without_budget_forcing  # type: ignore[assignment]
