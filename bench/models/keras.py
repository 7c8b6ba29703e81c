"""Keras HDF5 models, rebuilt in PyTorch (:mod:`bench.models.keras_net`, loaded only when one is built):
the ``keras_hdf5`` family (``@register("model", "keras_hdf5")``), used by the dl_l8s2_uv networks."""

from __future__ import annotations

from pathlib import Path

from bench.core.registry import register
from bench.core.results import sha256
from bench.models.base import Built, Contract, project_logits


@register("model", "keras_hdf5")
def keras_hdf5(in_channels: int, weight_files: list, contract: dict | None = None, multiple_of: int = 8) -> Built:
    """A Keras HDF5 model rebuilt in PyTorch; a one-channel sigmoid output is cloud probability."""
    from bench.models.keras_net import MultipleOf, read_keras

    path = Path(weight_files[0])
    net = MultipleOf(read_keras(path, in_channels), multiple_of, in_channels)
    spec = Contract.parse(contract, str(path))
    module = project_logits(net, spec, sigmoid=len(spec.output_names) == 2)
    return Built(module.eval(), in_channels, f"pretrained {path.name} sha256:{sha256(path)[:12]}")
