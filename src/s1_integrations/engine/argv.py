"""Reading flags off a vLLM command line (``--name value`` or ``--name=value``).

``s1-integrations serve`` reads the operator's flags to add only the defaults they did not
give; the processor, inside the server, reads the server's own command for its tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence


def has_flag(argv: Sequence[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in argv)


def flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of the first ``name`` flag in ``argv``, or ``None`` where there is none."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None
