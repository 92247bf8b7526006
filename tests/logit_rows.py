"""Hand-built logits rows and plans for driving the processor without an engine.

A row's top-1 probability is known exactly: the top token tied with ``share - 1`` others
(every other entry ``-inf``) has top-1 ``1/share``; a lone finite entry, exactly 1.
"""

from __future__ import annotations

import torch

from s1_integrations.core.forcing import ForcingPlan

V = 16
END, EOS, WAIT, A, B = 10, 11, 12, 1, 2
NEG = float("-inf")


def plan(**kw: object) -> ForcingPlan:
    """A one-token end delimiter, end of sequence and "Wait" phrase, over ``V`` tokens."""
    return ForcingPlan(end=(END,), eos=(EOS,), phrases=((WAIT,),), **kw)  # type: ignore[arg-type]


def tied(share: int) -> torch.Tensor:
    """A row whose top token is A (it wins the argmax, the lowest index), tied with
    ``share - 1`` others: top-1 exactly ``1/share``."""
    row = torch.full((V,), NEG)
    row[A] = 0.0
    for t in range(3, 3 + share - 1):
        row[t] = 0.0
    return row


def end_row() -> torch.Tensor:
    """A row where the model asks to end its thinking (the end delimiter on top)."""
    row = torch.zeros(V)
    row[END] = 5.0
    return row
