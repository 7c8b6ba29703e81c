"""The training recipe: one dataclass owns its settings, their defaults (the study's), their command-line
flags and the checks of a scenario's ``[recipe]`` preset.

    Recipe()                                   # the study: Dice loss, Adam 1e-3, 30 epochs, batch 16, 256 px
    Recipe.resolve(scenario.recipe, {"epochs": 5})   # preset over the study, command-line values over both

A resolved recipe is part of a trained model's identity (:meth:`Recipe.to_dict`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from bench.core.config import check_arguments
from bench.core.errors import ConfigError

COMMAND_LINE = "command line"
#: int8: inference only (OpenVINO, NNCF post-training quantization on the training split); training runs fp32
PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: inference runtimes (bench.run.runtimes): torch, or the network exported to ONNX and run by one of two
RUNTIMES = ("torch", "onnxruntime", "openvino", "auto")
#: how overlapping tiles make one prediction (bench.run.inference.Tiling): crop each to its core, or ramp-weighted mean
BLENDS = ("crop", "ramp")


def _setting(default: Any, help: str, minimum: int | None = None) -> Any:
    return field(default=default, metadata={"help": help, "minimum": minimum})


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. Each field is a ``--flag`` of ``bench run`` and ``bench sweep`` and a key of
    a scenario's ``[recipe]`` table."""

    epochs: int = _setting(30, "maximum epochs (study: 30)", minimum=1)
    batch_size: int = _setting(16, "study: 16", minimum=1)
    patch_size: int = _setting(256, "training crop and evaluation tile size, multiple of 32 (study: 256)")
    lr: float = _setting(1e-3, "Adam learning rate (study: 1e-3)")
    patience: int = _setting(10, "early-stopping patience in epochs on val mIoU", minimum=1)
    max_steps: int = _setting(-1, "stop after this many optimizer steps (-1: no limit)")
    samples_per_epoch: int | None = _setting(None, "random crops per epoch (default: one per patch-sized area of "
                                             "valid training pixels)", minimum=1)
    precision: str = _setting("auto", "fp32, bf16 (autocast) or auto: bf16 where the hardware runs it fast (a CPU "
                              "with AMX or AVX512-BF16, a CUDA GPU), else fp32; int8: trained in fp32, evaluated "
                              "int8 through OpenVINO (NNCF, calibrated on the training split; --runtime openvino)")

    def check(self, where: str) -> None:
        """Refuse values no training can use; ``where`` names the preset's file, or ``command line``."""
        def name(key: str) -> str:
            return f"--{key.replace('_', '-')}" if where == COMMAND_LINE else f"{where}: {key}"

        for f in fields(self):
            v, low = getattr(self, f.name), f.metadata["minimum"]
            if low is not None and v is not None and v < low:
                raise ConfigError(f"{name(f.name)} must be at least {low}, got {v}")
        if self.patch_size < 32 or self.patch_size % 32:
            raise ConfigError(f"{name('patch_size')} must be a multiple of 32 (the encoders downsample 32x), "
                              f"got {self.patch_size}")
        if self.max_steps != -1 and self.max_steps < 1:
            raise ConfigError(f"{name('max_steps')} must be at least 1 (or -1 for no limit), got {self.max_steps}")
        if not self.lr > 0:
            raise ConfigError(f"{name('lr')} must be positive, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{name('precision')} must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def names(cls) -> list[str]:
        """The settings, in declaration order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def check_values(cls, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """A partial recipe (a preset, or command-line overrides): known keys, right types, sane values."""
        checked = check_arguments(cls, values, where)
        cls(**checked).check(where)
        return checked

    @classmethod
    def resolve(cls, preset: Mapping[str, Any] = {}, overrides: Mapping[str, Any] = {}) -> "Recipe":  # noqa: B006
        """The study's recipe, updated by a scenario's ``preset``, updated by ``overrides`` (None = not given)."""
        values = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**cls.check_values(values, "recipe"))

    def for_training(self) -> "Recipe":
        """The recipe a model is trained with: int8 is an inference precision, so its model trains in fp32
        (and is the fp32 run's model)."""
        return replace(self, precision="fp32") if self.precision == "int8" else self

    def to_dict(self) -> dict[str, Any]:
        """Every setting: what results record and what a trained model's identity hashes. fp32 precision is
        left out, so that results made before the setting existed keep their identity."""
        d = asdict(self)
        if d["precision"] == "fp32":
            d.pop("precision")
        return d

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """One ``--flag`` per setting, defaulting to None (= the scenario's preset, else the study's)."""
        for f in fields(cls):
            kind = {"lr": float, "precision": str}.get(f.name, int)
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, help=f.metadata["help"])

    @classmethod
    def overrides(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The settings given on the command line, checked."""
        given = {n: getattr(args, n) for n in cls.names() if getattr(args, n, None) is not None}
        return cls.check_values(given, COMMAND_LINE) if given else {}

    @staticmethod
    def flags(overrides: Mapping[str, Any]) -> list[str]:
        """``["--epochs", "5", ...]``: the command-line form of ``overrides``."""
        out: list[str] = []
        for name, value in overrides.items():
            if value is not None:
                out += [f"--{name.replace('_', '-')}", str(value)]
        return out
