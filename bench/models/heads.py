"""A pretrained network's own outputs as project-class logits (see :func:`bench.models.base.project_logits`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.labels import N_CLASSES

#: log-probability given to a project class that the network cannot predict (finite: Dice stays defined)
NEVER = -1e4


class ProjectLogits(nn.Module):
    """``net`` (logits over K codes, or one sigmoid channel) -> (N, 4, H, W) project-class logits.

    ``classes[k]`` is the project class of code k. Where the codes are the four project classes in
    order, the network's logits pass through unchanged (its argmax is bit-identical)."""

    def __init__(self, net: nn.Module, classes: np.ndarray, sigmoid: bool = False) -> None:
        super().__init__()
        self.net, self.sigmoid = net, sigmoid
        self.identity = not sigmoid and list(classes) == list(range(N_CLASSES))
        onehot = torch.zeros(len(classes), N_CLASSES)
        onehot[torch.arange(len(classes)), torch.as_tensor(classes.astype(np.int64))] = 1.0
        self.register_buffer("onehot", onehot, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project-class logits of ``x``."""
        out = self.net(x)
        if self.identity:
            return out
        logp = torch.cat([F.logsigmoid(-out), F.logsigmoid(out)], 1) if self.sigmoid else F.log_softmax(out, 1)
        probs = torch.einsum("nkhw,kc->nchw", logp.exp(), self.onehot.to(logp.dtype))
        return torch.where(probs > 0, probs.clamp_min(1e-30).log(), torch.full_like(probs, NEVER))
