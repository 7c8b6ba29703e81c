"""Test-time adapters: change a trained model on unlabelled test data before evaluation.

An adapter type is one ``@register("adapter", ...)`` factory returning an object with
``adapt(model, batches) -> model``; ``none`` leaves the model as trained.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from bench.registry import register


@register("adapter", "none", entry=True)
class NoAdaptation:
    """No test-time adaptation: evaluate the model as trained."""

    protocol = "none"

    def adapt(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
        return model
