"""The model contract shared by every framework.

``entry.build(in_channels=C)`` returns a :class:`Built`. Its ``module`` is either a torch module that maps
(N, C, H, W) float input, H and W multiples of 32, to (N, 4, H, W) logits over the project classes (clear,
thick cloud, thin cloud, cloud shadow), or a :class:`SceneModel` (a LightGBM, ONNX or rule-based mask)
that maps a whole (C, H, W) scene to its own output codes.

What a model takes and gives is its :class:`Contract`, declared in its TOML table as ``[name.contract]``
the way a dataset declares its labels: the bands it needs by name and in its order, their units, its own
preprocessing, its output codes mapped to project classes or groups (``cloud``, ``not_cloud``), whether it
can be trained, and what it was trained on. A model without a contract (``unet_mnv2``) is trained here:
it takes the scenario's bands and predicts the four project classes.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bench.core.config import check_keys
from bench.core.errors import ConfigError, DataError
from bench.core.recipe import BLENDS
from bench.core.labels import CLASSES, IGNORE, N_CLASSES, LabelMap

if TYPE_CHECKING:  # the contract names torch types; importing it is left to the model that is built
    import torch
    from torch import nn

#: framework of a model without a contract (trained here with smp / PyTorch)
TRAINED = "pytorch"
#: framework of masks made by another tool, read from files (bench.models.masks)
MASKS = "masks"
CONTRACT_KEYS = {"framework", "bands", "units", "preprocessing", "outputs", "output_names", "trainable",
                 "trained_on", "citation", "licence", "algorithm", "weights", "get_weights", "inference"}
INFERENCE_KEYS = {"tile", "overlap", "blend", "pad", "fit", "shift_nodata", "precision", "source"}
PADS = ("end", "centre")
FITS = ("pad", "square")
REFLECTANCE = "L1C top-of-atmosphere reflectance (digital number / 10,000)"


class SceneModel(Protocol):
    """A model that is not a torch module: it predicts whole scenes (its own tiling and post-processing).

    One that also gives probabilities has ``predict_with_probabilities(image) -> (codes, (n_codes, H, W)
    probabilities of its own output codes)``; the label-free confidence signals need it."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 output codes of a (C, H, W) reflectance scene in the contract's bands (NaN = nodata)."""


@dataclass
class Built:
    """A model and the weights it started from (``"imagenet"``, ``"random"`` with the reason, or a pretrained
    model's weight file and sha256)."""

    module: Any  # nn.Module or SceneModel
    in_channels: int
    weights: str


@dataclass(frozen=True)
class InferencePolicy:
    """How upstream tiles a scene for its network, declared as ``[name.contract.inference]``; evaluation,
    ``bench predict`` and ``bench assess`` tile the model this way (:func:`bench.run.inference.model_tiling`).

    * ``tile``: the patch side in px, or ``"scene"``: the whole scene is one patch (up to the memory budget;
      a larger scene is tiled as any other model's);
    * ``overlap``: with ``blend = "crop"`` the px discarded at each inner tile side, with ``"ramp"`` the px
      two neighbours share, their logits weighted by linear ramps across it;
    * ``pad``: a patch smaller than the model input is mirrored at the ``end`` (bottom / right) or reflected
      around its ``centre``; ``fit = "square"``: a scene side shorter than the tile shrinks the tile (square)
      to that side rather than padding; ``shift_nodata``: a patch whose edge row or column is all nodata
      moves inward, and one with no valid pixel is skipped;
    * ``precision``: what upstream runs in (``auto`` then picks it); ``source``: the upstream code it follows.
    """

    tile: int | str = 0  # 0: the run's own tile size
    overlap: int = 0
    blend: str = "crop"
    pad: str = "end"
    fit: str = "pad"
    shift_nodata: bool = False
    precision: str = "fp32"
    source: str = ""

    @classmethod
    def parse(cls, table: dict[str, Any] | None, where: str) -> "InferencePolicy | None":
        """From a contract's ``inference`` table (absent: the run's tiling)."""
        if not table:
            return None
        check_keys(table, INFERENCE_KEYS, where)
        policy = cls(**table)
        for name, value, allowed in (("blend", policy.blend, BLENDS), ("pad", policy.pad, PADS),
                                     ("fit", policy.fit, FITS), ("precision", policy.precision, ("fp32", "bf16"))):
            if value not in allowed:
                raise ConfigError(f"{where}: {name} must be one of {', '.join(allowed)}, got {value!r}")
        if not (policy.tile == "scene" or (isinstance(policy.tile, int) and policy.tile >= 32)):
            raise ConfigError(f"{where}: tile must be \"scene\" or at least 32 px, got {policy.tile!r}")
        return policy

    def summary(self) -> dict[str, Any]:
        """What results record about the policy."""
        return {k: getattr(self, k) for k in ("tile", "overlap", "blend", "pad", "fit", "shift_nodata",
                                               "precision", "source")}


@dataclass(frozen=True)
class Contract:
    """What a model takes and gives (see the module docstring)."""

    framework: str = TRAINED
    bands: tuple[str, ...] | None = None  # None: the scenario's bands (a model trained here)
    units: str = REFLECTANCE
    preprocessing: str = "the run's normalizer, fitted on the scenario's training split"
    outputs: LabelMap = field(default_factory=lambda: LabelMap({i: frozenset({i}) for i in range(N_CLASSES)}))
    output_names: tuple[str, ...] = CLASSES
    trainable: bool = True
    trained_on: str = ""  # "" = trained here, on the scenario's training split
    citation: str = ""
    licence: str = ""
    algorithm: str = ""  # the algorithm family, e.g. "s2cloudless": a reference it made scores itself
    weights: tuple[str, ...] = ()  # where each weight file is (bench.models.base.locate_weights): "hf:<repo>/<file> | ..."
    get_weights: str = ""  # how to get them where they are not here
    inference: InferencePolicy | None = None  # how upstream tiles scenes for it (None: the run's tiling)

    @property
    def upstream_precision(self) -> str:
        """The precision upstream runs the model in (its inference policy's; fp32 where none says)."""
        return self.inference.precision if self.inference else "fp32"

    @property
    def pretrained(self) -> bool:
        """A model that comes trained (zero-shot by default) rather than one trained here."""
        return bool(self.trained_on)

    @classmethod
    def parse(cls, table: dict[str, Any] | None, where: str) -> "Contract":
        """From a model's ``[name.contract]`` table (absent: a model trained here)."""
        if not table:
            return cls()
        check_keys(table, CONTRACT_KEYS, where)
        outputs = list(table.get("outputs", CLASSES))
        codes = LabelMap.parse({str(i): v for i, v in enumerate(outputs)}, f"{where} outputs")
        names = tuple(table.get("output_names", [o if isinstance(o, str) else "+".join(o) for o in outputs]))
        if len(names) != len(outputs):
            raise ConfigError(f"{where}: output_names has {len(names)} names for {len(outputs)} outputs")
        bands = table.get("bands")
        if bands is not None and (not bands or len(set(bands)) != len(bands)):
            raise ConfigError(f"{where}: bands must be a non-empty list of distinct band names, got {bands}")
        weights = table.get("weights", [])
        return cls(framework=str(table.get("framework", TRAINED)), bands=tuple(bands) if bands else None,
                   units=table.get("units", REFLECTANCE), preprocessing=table.get("preprocessing", "none"),
                   outputs=codes, output_names=names, trainable=bool(table.get("trainable", False)),
                   trained_on=str(table.get("trained_on", "")), citation=table.get("citation", ""),
                   licence=table.get("licence", ""), algorithm=table.get("algorithm", ""),
                   weights=tuple([weights] if isinstance(weights, str) else weights),
                   get_weights=table.get("get_weights", ""),
                   inference=InferencePolicy.parse(table.get("inference"), f"{where} inference"))

    def class_of_code(self) -> np.ndarray:
        """(256,) uint8: output code -> the project class it predicts (its set's first: ``cloud`` ->
        thick_cloud, ``not_cloud`` -> clear), IGNORE for nodata and unknown codes."""
        lut = np.full(256, IGNORE, dtype=np.uint8)
        for code, s in self.outputs.codes.items():
            if s:
                lut[code] = min(s)
        return lut

    def target_lut(self) -> np.ndarray:
        """(4,) uint8: project class -> the class this model can predict for it (fine-tuning keeps the
        model's own outputs: a cloud / not-cloud model learns shadow as clear), IGNORE where none can."""
        lut = np.full(N_CLASSES, IGNORE, dtype=np.uint8)
        for s in self.outputs.codes.values():
            for c in s:
                lut[c] = min(s)
        return lut

    def missing(self) -> list[str]:
        """Project classes that no output code of the model stands for."""
        covered = set().union(*self.outputs.codes.values())
        return [CLASSES[c] for c in range(N_CLASSES) if c not in covered]

    def summary(self) -> dict[str, Any]:
        """What results and ``bench list`` show about the contract."""
        return {"framework": self.framework, "bands": list(self.bands) if self.bands else None,
                "units": self.units, "preprocessing": self.preprocessing, "outputs": self.outputs.to_dict(),
                "output_names": list(self.output_names), "trainable": self.trainable,
                "trained_on": self.trained_on or "this scenario's training split", "citation": self.citation,
                "licence": self.licence, "algorithm": self.algorithm,
                **({"inference": self.inference.summary()} if self.inference else {})}


def contract_of(entry: Any) -> Contract:
    """The contract of a model entry (its ``contract`` table, checked)."""
    return Contract.parse(entry.settings.get("contract"), f"{entry.origin or entry.name} [contract]")


def locate_weights(spec: str) -> Path | None:
    """The local file a weight spec names, or None where it is not on this machine (nothing is fetched).
    A spec is one place or several, ``A | B``, tried in order:

    * ``package:<pkg>/<path>`` inside an installed package (not imported), ``bench:<path>`` inside cloudbench;
    * ``hf:<repo>/<file>`` in the local Hugging Face cache;
    * ``home:<path>`` under the home folder (cloudsen12_models keeps its downloads in ``~/.georeader``);
    * ``userdata:<app>/<file>`` in the app's platformdirs user data folder, or any version folder inside it
      (omnicloudmask keeps its downloads in ``user_data_dir("omnicloudmask", version=...)``), newest first.
    """
    if "|" in spec:
        return next(filter(None, (locate_weights(s.strip()) for s in spec.split("|"))), None)
    kind, _, rest = spec.partition(":")
    if kind == "bench":
        path = Path(__file__).resolve().parents[1] / rest
    elif kind == "package":
        pkg, _, inner = rest.partition("/")
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(list(found.submodule_search_locations)[0]) / inner
    elif kind == "hf":
        from huggingface_hub import try_to_load_from_cache

        owner, name, filename = rest.split("/", 2)
        cached = try_to_load_from_cache(f"{owner}/{name}", filename)
        return Path(cached) if isinstance(cached, str) else None
    elif kind == "home":
        path = Path.home() / rest
    elif kind == "userdata":
        return user_data_file(*rest.split("/", 1))
    else:
        raise ConfigError(f"weight spec {spec!r}: expected package:, bench:, hf:, home: or userdata:")
    return path if path.is_file() else None


def user_data_file(app: str, name: str) -> Path | None:
    """``name`` in ``app``'s platformdirs user data folder or one of its version folders (newest first)."""
    import platformdirs

    root = Path(platformdirs.user_data_dir(app))
    versions = sorted((d for d in root.glob("*") if d.is_dir()), key=lambda d: [int(p) if p.isdigit() else 0
                                                                             for p in d.name.split(".")], reverse=True)
    return next((p for p in (root / name, *(d / name for d in versions)) if p.is_file()), None)


def class_indices(logits: "torch.Tensor", keepdim: bool = False) -> "torch.Tensor":
    """The class of each pixel of (N, K, H, W) logits: the first of its largest (``argmax(1)``, through
    ``max``: on the CPU, torch's argmax over a channel dimension is 10 to 20 times slower)."""
    return logits.max(1, keepdim=keepdim).indices


def check_input(x: torch.Tensor, in_channels: int) -> None:
    """Refuse input whose band count differs from the model's ``in_channels``."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise DataError(f"the model takes {in_channels} bands, the data has "
                        f"{x.shape[1] if x.ndim == 4 else 'shape ' + str(tuple(x.shape))}: "
                        "the scenario's band list must match the one the model was trained with")


def project_logits(module: nn.Module, contract: Contract, sigmoid: bool = False) -> nn.Module:
    """A torch zoo network (logits over its own output codes, or one sigmoid channel for code 1) as a module
    that gives (N, 4, H, W) logits over the project classes: log-probability of each class's code, so the
    argmax is the model's own and fine-tuning trains the model's own outputs."""
    from bench.models.heads import ProjectLogits  # torch, loaded only for torch models

    return ProjectLogits(module, contract.class_of_code()[:len(contract.output_names)], sigmoid)
