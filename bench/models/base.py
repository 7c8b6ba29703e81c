"""The model contract shared by every framework.

``entry.build(in_channels=C)`` returns a :class:`Built` whose ``module`` maps (N, C, H, W) float input,
H and W multiples of 32, to (N, 4, H, W) logits over the project classes (clear, thick cloud, thin cloud,
cloud shadow), and whose ``weights`` says which initial weights it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.core.errors import DataError

if TYPE_CHECKING:  # the contract names torch types; importing it is left to the model that is built
    import torch
    from torch import nn


@dataclass
class Built:
    """A model and the weights it started from (``"imagenet"`` or ``"random"`` with the reason)."""

    module: nn.Module
    in_channels: int
    weights: str


def check_input(x: torch.Tensor, in_channels: int) -> None:
    """Refuse input whose band count differs from the model's ``in_channels``."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise DataError(f"the model takes {in_channels} bands, the data has "
                        f"{x.shape[1] if x.ndim == 4 else 'shape ' + str(tuple(x.shape))}: "
                        "the scenario's band list must match the one the model was trained with")
