"""segmentation-models-pytorch networks: the ``smp`` family (``@register("model", "smp")``); a variant
is one table in ``registry/models.toml`` (``unet_mnv2 = smp unet + mobilenet_v2``). The contract is
:mod:`bench.models.base`.

Pretrained encoder weights are looked for in the local Hugging Face cache first, then fetched through
smp's own hub path (the encoder's ``repo_id`` and ``revision``) when huggingface.co answers within
:data:`PROBE_S` seconds (a full hub lookup offline takes about 23 s to fail). Only when both fail does the
model start from random weights, after one warning; results record which. ``--weights random`` or
``imagenet`` makes the choice explicit.
"""

from __future__ import annotations

import functools
import os
import warnings
from contextlib import contextmanager
from bench.core.labels import N_CLASSES
from bench.core.registry import register
from bench.models.base import Built

_warned: set[str] = set()
#: seconds to wait for huggingface.co before training from random weights
PROBE_S = 3.0
#: the files smp's hub path reads for an encoder's weights (``encoders.get_encoder``), in that order
HUB_FILES = ("config.json", "model.safetensors")


class RandomWeights(UserWarning):
    """Pretrained encoder weights were asked for but are not here: training starts from random weights."""


def cached_encoder_weights(encoder: str, weights: str | None) -> str | None:
    """Path of ``encoder``'s ``weights`` in the local Hugging Face cache, or None if not there."""
    if not weights:
        return None
    from huggingface_hub import try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights)
    if not settings:
        return None
    paths = [try_to_load_from_cache(settings["repo_id"], f, revision=settings["revision"]) for f in HUB_FILES]
    return paths[-1] if all(isinstance(p, str) for p in paths) else None


@functools.lru_cache(maxsize=None)
def hub_reachable(host: str = "huggingface.co", timeout: float = PROBE_S) -> bool:
    """True if ``host`` accepts a connection within ``timeout`` seconds (no request is sent)."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def fetched_encoder_weights(encoder: str, weights: str | None) -> str | None:
    """Fetch ``encoder``'s ``weights`` into the local cache through smp's hub path (its ``repo_id`` and
    ``revision``); None where the hub does not answer or the download fails."""
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights or "")
    if not settings or not hub_reachable():
        return None
    from huggingface_hub import hf_hub_download

    try:
        return [hf_hub_download(settings["repo_id"], f, revision=settings["revision"]) for f in HUB_FILES][-1]
    except Exception:  # noqa: BLE001 - any hub failure falls back to random weights, with the warning
        return None


@contextmanager
def _hub_offline():
    """huggingface_hub offline while smp builds (the weights are in the cache by then, or not used):
    its constant is read at import, so it is set beside the environment variable."""
    import huggingface_hub.constants as hf

    old, old_const = os.environ.get("HF_HUB_OFFLINE"), hf.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hf.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hf.HF_HUB_OFFLINE = old_const
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
    if encoder_weights and not found and fetched_encoder_weights(encoder, encoder_weights):
        found = cached_encoder_weights(encoder, encoder_weights)  # where smp will look for them
    if encoder_weights and not found:
        if encoder not in _warned:
            _warned.add(encoder)
            warnings.warn(f"{encoder_weights} weights for encoder {encoder!r} are not in the local "
                          "Hugging Face cache and the hub cannot be reached; training from random weights "
                          "(results record this). Run once with internet to cache them, or pass --weights "
                          "random to choose random weights without this warning", RandomWeights, stacklevel=2)
        weights = f"random ({encoder_weights} weights not in local cache)"
    else:
        weights = encoder_weights or "random"
    with _hub_offline():
        module = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights if found else None,
                                  in_channels=in_channels, classes=classes)
    return Built(module, in_channels, weights)
