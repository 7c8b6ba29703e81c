"""Keras HDF5 models rebuilt in PyTorch from the file's own layer graph and weights (h5py, no TensorFlow);
the builder is :func:`bench.models.keras.keras_hdf5`.

:class:`KerasGraph` reads ``model_config`` (the layer list with each layer's inbound layers) and builds one
torch op per layer; ``forward`` runs them in the file's order. The layers these files use are supported:
InputLayer, Conv2D, SeparableConv2D, Conv2DTranspose, BatchNormalization, Activation, MaxPooling2D and
Concatenate, channels last in Keras and channels first here. Another layer type is refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core.errors import ConfigError
from bench.models.base import check_input

ACTIVATIONS = {"linear": nn.Identity, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softmax": lambda: nn.Softmax(1)}


def _padding(cfg: dict[str, Any]) -> int:
    if cfg.get("padding", "valid") == "valid":
        return 0
    k = cfg["kernel_size"][0]
    if k % 2 == 0 or cfg.get("strides", [1, 1])[0] != 1:
        raise ConfigError(f"Keras layer {cfg['name']}: 'same' padding only with odd kernels and stride 1")
    return k // 2


class SeparableConv(nn.Module):
    """Keras SeparableConv2D: a depthwise then a pointwise convolution (bias on the pointwise)."""

    def __init__(self, cin: int, cfg: dict[str, Any]) -> None:
        super().__init__()
        k, m = cfg["kernel_size"], cfg.get("depth_multiplier", 1)
        self.depthwise = nn.Conv2d(cin, cin * m, k, padding=_padding(cfg), groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin * m, cfg["filters"], 1, bias=cfg.get("use_bias", True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise, then pointwise."""
        return self.pointwise(self.depthwise(x))


def _op(layer: dict[str, Any], cin: int) -> tuple[nn.Module, int]:
    """The torch op of one Keras layer and its number of output channels."""
    kind, cfg = layer["class_name"], layer["config"]
    act = ACTIVATIONS[cfg.get("activation", "linear")]()
    if kind == "Conv2D":
        conv = nn.Conv2d(cin, cfg["filters"], cfg["kernel_size"], cfg["strides"], _padding(cfg), bias=cfg["use_bias"])
        return nn.Sequential(conv, act), cfg["filters"]
    if kind == "SeparableConv2D":
        return nn.Sequential(SeparableConv(cin, cfg), act), cfg["filters"]
    if kind == "Conv2DTranspose":
        if cfg["kernel_size"] != cfg["strides"]:
            raise ConfigError(f"Keras layer {cfg['name']}: Conv2DTranspose only with kernel size = stride")
        conv = nn.ConvTranspose2d(cin, cfg["filters"], cfg["kernel_size"], cfg["strides"], bias=cfg["use_bias"])
        return nn.Sequential(conv, act), cfg["filters"]
    if kind == "BatchNormalization":
        return nn.BatchNorm2d(cin, eps=cfg["epsilon"], momentum=1 - cfg["momentum"]), cin
    if kind == "Activation":
        return act, cin
    if kind == "MaxPooling2D":
        return nn.MaxPool2d(cfg["pool_size"], cfg["strides"]), cin
    raise ConfigError(f"Keras layer type {kind} ({cfg['name']}) is not supported by the port")


class KerasGraph(nn.Module):
    """A Keras functional model as a torch module: layers run in the file's order, by name."""

    def __init__(self, config: dict[str, Any], in_channels: int) -> None:
        super().__init__()
        self.order: list[tuple[str, str, list[str]]] = []  # (name, class, inbound names)
        self.ops = nn.ModuleDict()
        channels: dict[str, int] = {}
        for layer in config["config"]["layers"]:
            name, kind = layer["name"], layer["class_name"]
            inbound = [node[0] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            self.order.append((name, kind, inbound))
            if kind == "InputLayer":
                channels[name] = in_channels
            elif kind == "Concatenate":
                channels[name] = sum(channels[i] for i in inbound)
            else:
                self.ops[name], channels[name] = _op(layer, channels[inbound[0]])
        self.output = config["config"]["output_layers"][0][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers; the output layer's activation is left out (logits for a sigmoid output)."""
        out: dict[str, torch.Tensor] = {}
        for name, kind, inbound in self.order:
            if kind == "InputLayer":
                out[name] = x
            elif kind == "Concatenate":
                out[name] = torch.cat([out[i] for i in inbound], 1)
            elif name == self.output:
                out[name] = self.ops[name][0](out[inbound[0]])  # the convolution; its activation is the head's
            else:
                out[name] = self.ops[name](out[inbound[0]])
        return out[self.output]


def load_keras_weights(model: KerasGraph, weights: Any) -> None:
    """Copy every layer's weights from an h5py ``model_weights`` group (Keras layout) into ``model``."""
    def w(layer: str, name: str) -> torch.Tensor:  # by the layer's weight_names ("<scope>/<name>:0")
        group = weights[layer]
        for full in group.attrs["weight_names"]:
            full = full.decode() if isinstance(full, bytes) else full
            if full.rsplit("/", 1)[-1] == f"{name}:0":
                return torch.from_numpy(np.asarray(group[full], dtype=np.float32))
        raise ConfigError(f"Keras file: layer {layer} has no weight {name!r}")

    for name, kind, _ in model.order:
        op = model.ops[name] if name in model.ops else None
        if kind in ("Conv2D", "Conv2DTranspose"):
            conv = op[0]
            kernel = w(name, "kernel")  # (kh, kw, in, out); transposed: (kh, kw, out, in)
            conv.weight.data = kernel.permute(3, 2, 0, 1).contiguous()  # torch: (out, in, ...) / (in, out, ...)
            if conv.bias is not None:
                conv.bias.data = w(name, "bias")
        elif kind == "SeparableConv2D":
            sep = op[0]
            sep.depthwise.weight.data = w(name, "depthwise_kernel").permute(2, 3, 0, 1).reshape(sep.depthwise.weight.shape).contiguous()
            sep.pointwise.weight.data = w(name, "pointwise_kernel").permute(3, 2, 0, 1).contiguous()
            sep.pointwise.bias.data = w(name, "bias")
        elif kind == "BatchNormalization":
            op.weight.data, op.bias.data = w(name, "gamma"), w(name, "beta")
            op.running_mean.data, op.running_var.data = w(name, "moving_mean"), w(name, "moving_variance")


def read_keras(path: Path, in_channels: int) -> KerasGraph:
    """The network of a Keras HDF5 file, with its weights, in eval mode; layers Keras marks not trainable
    (dl_l8s2_uv's input scaling) are frozen."""
    import h5py

    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        model = KerasGraph(config, in_channels)
        load_keras_weights(model, f["model_weights"])
    for layer in config["config"]["layers"]:
        if layer["config"].get("trainable") is False and layer["name"] in model.ops:
            model.ops[layer["name"]].requires_grad_(False)
    return model.eval()


class MultipleOf(nn.Module):
    """Pads input by reflection to a multiple of ``k`` (as upstream does) and crops the output back."""

    def __init__(self, net: nn.Module, k: int, in_channels: int) -> None:
        super().__init__()
        self.net, self.k, self.in_channels = net, k, in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output at ``x``'s size."""
        check_input(x, self.in_channels)
        h, w = x.shape[-2:]
        ph, pw = -h % self.k, -w % self.k
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
        return self.net(x)[..., :h, :w]
