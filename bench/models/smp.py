"""segmentation-models-pytorch networks: the ``smp`` family (``@register("model", "smp")``); a variant
is one table in ``registry/models.toml`` (``unet_mnv2 = smp unet + mobilenet_v2``). The contract is
:mod:`bench.models.base`.

Pretrained encoder weights are read from the local Hugging Face cache only: a hub lookup cannot succeed
offline and takes about 23 s to fail. Without them the model starts from random weights after one warning,
and results record which.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from bench.core.labels import N_CLASSES
from bench.core.registry import register
from bench.models.base import Built

_warned: set[str] = set()


def cached_encoder_weights(encoder: str, weights: str | None) -> str | None:
    """Path of ``encoder``'s ``weights`` in the local Hugging Face cache, or None if not there."""
    if not weights:
        return None
    from huggingface_hub import try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights)
    if not settings:
        return None
    path = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings["revision"])
    return path if isinstance(path, str) else None


@contextmanager
def _hub_offline():
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


@register("model", "smp")
def smp_model(arch: str, encoder: str, in_channels: int, encoder_weights: str | None = "imagenet",
              classes: int = N_CLASSES) -> Built:
    """segmentation-models-pytorch: ``smp.create_model(arch, encoder_name=encoder, ...)``."""
    import segmentation_models_pytorch as smp  # here, not above: listing models does not load torch

    found = cached_encoder_weights(encoder, encoder_weights)
    if encoder_weights and not found:
        if encoder not in _warned:
            _warned.add(encoder)
            warnings.warn(f"{encoder_weights} weights for encoder {encoder!r} are not in the local "
                          "Hugging Face cache; training from random weights (results record this)",
                          stacklevel=2)
        weights = f"random ({encoder_weights} weights not in local cache)"
    else:
        weights = encoder_weights or "random"
    with _hub_offline():
        module = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights if found else None,
                                  in_channels=in_channels, classes=classes)
    return Built(module, in_channels, weights)
