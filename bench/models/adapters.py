"""Test-time adapters: change a trained model on unlabelled test inputs before it predicts.

An adapter type is one ``@register("adapter", ...)`` class; a named setting is one table in
``registry/adapters.toml``. Contract:

* ``protocol``: ``"per_scene"`` (episodic: the trained model is restored before every test scene and
  adapted on that scene's tiles) or ``"per_test_set"`` (adapted once on all test tiles); ``"none"``.
* ``adapt(model, batches)`` takes the model and an iterable of normalized input batches (N, C, H, W),
  never labels, and returns the model to predict with. It never retrains from scratch and never sees
  the reference.
* ``budget()`` says how much test data and how many steps it used; results record it with the protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bench.core.errors import ConfigError
from bench.core.registry import register

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported where a model is adapted (it is loaded by then): listing adapters stays fast.


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


PROTOCOLS = ("per_scene", "per_test_set")


def _protocol(value: str) -> str:
    if value not in PROTOCOLS:
        raise ConfigError(f"adapter protocol must be one of {PROTOCOLS}, got {value!r}")
    return value


class Adapter:
    """Base of test-time adapters: ``adapt`` returns the model to predict with; ``budget`` counts what it used."""
    protocol = "none"

    def __init__(self) -> None:
        self.seen_batches = 0
        self.seen_images = 0

    def adapt(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
        """The model to predict with, adapted on unlabelled normalized ``batches`` (N, C, H, W)."""
        return model

    def budget(self) -> dict[str, Any]:
        """How much test data (batches, images) and how many steps adaptation used."""
        return {"batches": self.seen_batches, "images": self.seen_images}

    def describe(self) -> dict[str, Any]:
        """The protocol and budget, as results record them."""
        return {"protocol": self.protocol, "budget": self.budget()}


@register("adapter", "none")
class NoAdaptation(Adapter):
    """No test-time adaptation: evaluate the model as trained."""


@register("adapter", "adabn")
class AdaBN(Adapter):
    """AdaBN (Li et al. 2016): re-estimate BatchNorm running statistics on unlabelled test inputs.

    Running means and variances are reset and recomputed as the cumulative average over the test
    batches; no weight, bias or other parameter changes.
    """

    def __init__(self, protocol: str = "per_scene") -> None:
        super().__init__()
        self.protocol = _protocol(protocol)

    def adapt(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
        """Reset every BatchNorm's running statistics and re-estimate them on ``batches``."""
        import torch

        with torch.no_grad():
            return self._reestimate(model, batches)

    def _reestimate(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
        bns = batchnorms(model)
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over all test batches
        model.eval()
        for m in bns:
            m.train()
        for x in batches:
            model(x)
            self.seen_batches += 1
            self.seen_images += len(x)
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
        return model.eval()


@register("adapter", "tent")
class Tent(Adapter):
    """TENT (Wang et al. 2021): minimise the entropy of predictions on unlabelled test inputs, updating only
    the BatchNorm affine parameters (weight, bias) for ``steps`` Adam steps per batch.

    During and after adaptation the BatchNorm layers normalize with the statistics of the current batch
    (as TENT does); their running statistics are left as trained.
    """

    def __init__(self, protocol: str = "per_scene", steps: int = 1, lr: float = 1e-3) -> None:
        super().__init__()
        self.protocol, self.steps, self.lr = _protocol(protocol), int(steps), float(lr)

    def adapt(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
        """Entropy minimisation on the BatchNorm affine parameters, ``steps`` Adam steps per batch."""
        import torch

        bns = batchnorms(model)
        for p in model.parameters():
            p.requires_grad_(False)
        params = []
        saved = [m.num_batches_tracked.clone() for m in bns]
        model.eval()
        for m in bns:
            m.train()
            m.momentum = 0.0  # batch statistics are used, running statistics stay as trained
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(True)
                    params.append(p)
        optimizer = torch.optim.Adam(params, lr=self.lr)
        with torch.enable_grad():
            for x in batches:
                for _ in range(self.steps):
                    probs = model(x).softmax(1)
                    entropy = -(probs * probs.clamp_min(1e-8).log()).sum(1).mean()
                    optimizer.zero_grad()
                    entropy.backward()
                    optimizer.step()
                self.seen_batches += 1
                self.seen_images += len(x)
        for m, tracked in zip(bns, saved):
            m.num_batches_tracked.copy_(tracked)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def budget(self) -> dict[str, Any]:
        return {**super().budget(), "steps_per_batch": self.steps, "lr": self.lr}
