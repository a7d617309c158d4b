"""Small building blocks the models share.

Each parameter lives in a module whose forward says how it enters the score,
so a wrapper (per-user gradient clipping) can hook the module instead of
special-casing free parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class Offset(nn.Module):
    """Adds one learned scalar to its input: ``forward(x) = x + bias``."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))  # (1,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias
