"""The layers' import directions (docs/architecture.md), read off the code itself."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "s1_integrations"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _offending(layer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((PACKAGE / layer).glob("*.py")):
        hits = sorted(
            m for m in _imports(path) if m.split(".")[0] in forbidden or m.startswith(forbidden)
        )
        if hits:
            bad[path.name] = hits
    return bad


def test_the_core_imports_no_engine_and_nothing_above_it() -> None:
    forbidden = (
        "vllm",
        "torch",
        "s1_integrations.engine",
        "s1_integrations.adapters",
        "s1_integrations.scaling",
        "s1_integrations.cli",
    )
    assert _offending("core", forbidden) == {}


def test_the_adapters_import_no_engine() -> None:
    forbidden = ("vllm", "torch", "s1_integrations.engine")
    assert _offending("adapters", forbidden) == {}


#: Imports the client's modules with vLLM and torch made unimportable.
WITHOUT_VLLM = textwrap.dedent(
    """
    import importlib, sys

    class Absent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("vllm", "torch"):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Absent())
    for module in sys.argv[1:]:
        importlib.import_module(module)
    from s1_integrations import BudgetForcedGenerator, BudgetForcedLLM, ChatBudgetForced
    print(sorted({m.split(".")[0] for m in sys.modules} & {"vllm", "torch"}))
    """
)


@pytest.mark.parametrize(
    "modules",
    [
        ["s1_integrations", "s1_integrations.core.generator", "s1_integrations.engine.remote"],
        ["s1_integrations.adapters.langchain", "s1_integrations.adapters.llama_index"],
    ],
)
def test_the_client_side_imports_without_vllm_or_torch(modules: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_VLLM, *modules], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]"


def test_the_in_process_backend_is_what_needs_vllm() -> None:
    """The negative control: the same blocker does stop the in-process engine's module."""
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_VLLM, "s1_integrations.engine.engine"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert "No module named" in run.stderr
