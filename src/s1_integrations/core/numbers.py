"""Number types for the public configuration that refuse ``true`` and ``false``.

pydantic's lax mode reads ``True`` as 1 for an int field (1.0 for a float), and JSON clients
send booleans easily: ``max_thinking_tokens: true`` is a mistake to name, not a budget of one
token. Numbers written as strings ("256") stay accepted, as lax mode takes them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not a number")
    return value


#: A whole number (token counts, extensions).
Count = Annotated[int, BeforeValidator(_not_a_bool)]
#: A real number (probabilities and thresholds).
Real = Annotated[float, BeforeValidator(_not_a_bool)]
