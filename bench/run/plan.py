"""What a run is, worked out before any pixel is read: :class:`RunConfig` (what the user asked for) and
:class:`Plan` (its scenario, resolved recipe, splits, identities and where its files go).

A run has one of three modes: ``trained`` (a model without a contract, trained here from scratch),
``zero-shot`` (a pretrained model as it comes, with its own preprocessing: ``--norm native``; only the test
split is read) or ``fine-tuned`` (a pretrained PyTorch model trained further on the scenario's training
split with the usual recipe and any normalizer: ``--finetune``). Bands are the scenario's for a trained
model and the contract's, picked from the data by name, for a pretrained one.

The train key hashes what determines a trained model (model, normalizer, training and validation data
with their sha256, bands, recipe, seed; a pretrained model's weight files by sha256); the eval key adds the
test data, label space, adapter and shift.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.core.errors import ConfigError, DataError, unknown
from bench.core.labels import EvalSpace
from bench.core.metrics import BOUNDARY_PX
from bench.core.recipe import RUNTIMES, Recipe
from bench.core.registry import Entry, get_registry, is_path
from bench.core.results import RESULT_FORMAT, key, read_result, sha256
from bench.data.scenarios import SPLITS, Scenario, load_scenario
from bench.data.splits import Split, load_split, validate_split
from bench.models.base import MASKS, Contract, contract_of, locate_weights

WANDB_MODES = ("offline", "online", "off")
MODEL_FILE = "model.pt"
NATIVE = "native"  # the normalizer name of a pretrained model's own preprocessing
MODES = ("trained", "zero-shot", "fine-tuned")
INIT_WEIGHTS = ("imagenet", "random")  # --weights of a model trained here


@dataclass
class RunConfig:
    """One ``bench run``: which model, normalizer, adapter and scenario, the recipe values given on the
    command line (``recipe``; the rest come from the scenario's preset, else the study's), and where and
    how to run."""

    model: str = "unet_mnv2"
    norm: str | None = None  # None: "native" for a pretrained model, else "percentile" (the study's)
    scenario: str = "samples_cross"
    adapt: str = "none"
    seed: int = 0
    finetune: bool = False  # train a pretrained model further on the scenario's training split
    # a pretrained model's weight files (comma-separated) instead of its own; for a model trained here,
    # its initial encoder weights: "imagenet" or "random" (default: the model's setting, imagenet)
    weights: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)  # e.g. {"epochs": 5}; see bench.core.recipe.Recipe
    settings: dict[str, Any] = field(default_factory=dict)  # model settings replaced (--set threshold=0.3)
    data_root: str | None = None
    out: str = "runs"
    leaderboards: str | bool = True  # True: <out>/leaderboards; False: none; or a folder
    force: bool = False
    reevaluate: bool = False  # evaluate again a result of an older format (RESULT_FORMAT), with its model
    strict: bool = False
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"  # any Lightning strategy: ddp, ddp_spawn, fsdp, ...
    num_nodes: int = 1
    num_workers: int = 0
    channels_last: bool = True  # channels_last for inference, and for training with bf16 or on a GPU
    compile: bool = False  # torch.compile the model for inference
    runtime: str = "torch"  # inference runtime: torch, onnxruntime, openvino or auto (bench.run.runtimes)
    wandb: str = "offline"  # offline (default), online, or off; Lightning's CSV logs are always written
    figure: bool = True
    label_free: bool = True  # record the label-free signals and estimates (bench.run.label_free) beside the metrics
    consistency: bool = False  # label-free: one more inference pass with the input flipped (flip consistency)
    progress: bool = True
    callbacks: list = field(default_factory=list)  # extra Lightning callbacks (not recorded)
    command: str | None = None  # the command line that asked for this run (the CLI sets it)

    def validate(self) -> None:
        """Check names and values before any data is read or any model is built."""
        reg = get_registry()
        contract = contract_of(model_entry(self))
        if self.norm is None:
            self.norm = NATIVE if contract.pretrained else "percentile"
        reg.get("norm", self.norm)
        reg.get("adapter", self.adapt)
        check_mode(self, contract)
        if not is_path(self.scenario):
            reg.get("scenario", self.scenario)
        Recipe.check_values(self.recipe, "command line")
        if self.runtime not in RUNTIMES:
            raise unknown("--runtime", self.runtime, list(RUNTIMES))
        if self.recipe.get("precision") == "int8" and self.runtime != "openvino":
            raise ConfigError("--precision int8 runs through OpenVINO (an NNCF int8 model): add --runtime openvino")
        if self.runtime in ("onnxruntime", "openvino") and self.adapt != "none":
            raise ConfigError(f"--runtime {self.runtime} runs a fixed network, and the adapter {self.adapt!r} changes "
                              "it while it predicts: use --runtime torch or auto (auto runs torch there)")
        if self.wandb not in WANDB_MODES:
            raise unknown("--wandb mode", self.wandb, list(WANDB_MODES))
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise ConfigError(f"--data-root {self.data_root!r} is not a folder")

    def record(self) -> dict[str, Any]:
        """The config as results record it (callbacks left out)."""
        d = asdict(self)
        d.pop("callbacks")
        return d

    def mode(self, contract: Contract) -> str:
        """``trained``, ``zero-shot`` or ``fine-tuned`` (see the module docstring)."""
        return "fine-tuned" if self.finetune else "zero-shot" if contract.pretrained else "trained"


def model_entry(cfg: RunConfig) -> Entry:
    """The run's model entry, with the settings given by ``--set`` replaced (they enter its identity, so
    each value is its own result and leaderboard row)."""
    return get_registry().get("model", cfg.model).with_settings(cfg.settings)


def parse_setting(text: str) -> tuple[str, list[Any]]:
    """``"threshold=0.3,0.4"`` -> ``("threshold", [0.3, 0.4])``; each value read as a TOML value (a number,
    true / false, a quoted string), else taken as a string."""
    import tomllib

    name, eq, values = text.partition("=")
    if not eq or not name.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE (several values: KEY=V1,V2)")
    out = []
    for v in values.split(","):
        try:
            out.append(tomllib.loads(f"v = {v.strip()}")["v"])
        except tomllib.TOMLDecodeError:
            out.append(v.strip())
    return name.strip(), out


def check_mode(cfg: RunConfig, contract: Contract) -> None:
    """Refuse what a model's contract does not allow: another normalizer without ``--finetune``, fine-tuning
    a model that is trained here or cannot be trained, a test-time adapter on a model that is not PyTorch."""
    if not contract.pretrained:
        if cfg.norm == NATIVE:
            raise ConfigError(f"--norm native is a pretrained model's own preprocessing; {cfg.model} is trained "
                              "here from scratch: use --norm none for no normalization")
        if cfg.finetune:
            raise ConfigError(f"--finetune needs a pretrained model; {cfg.model} is trained here from scratch "
                              "(bench list models shows which are pretrained)")
        if cfg.weights not in (None, *INIT_WEIGHTS):
            raise ConfigError(f"--weights for {cfg.model} (trained here) is its initial encoder weights: "
                              f"{' or '.join(INIT_WEIGHTS)}, not {cfg.weights!r}")
        return
    if cfg.finetune and not contract.trainable:
        raise ConfigError(f"{cfg.model} cannot be fine-tuned: it is a {contract.framework} model, not a "
                          "trainable PyTorch network; run it zero-shot (--norm native)")
    if not cfg.finetune and cfg.norm != NATIVE:
        raise ConfigError(f"{cfg.model} runs zero-shot with its own preprocessing (--norm native); --norm "
                          f"{cfg.norm} changes its input, which it was not trained on: add --finetune to train "
                          "it on normalized inputs" + ("" if contract.trainable else
                                                       f" (not possible for this {contract.framework} model)"))
    if cfg.adapt != "none" and not contract.framework.startswith("pytorch"):
        raise ConfigError(f"test-time adapter {cfg.adapt!r} needs a PyTorch model; {cfg.model} is "
                          f"{contract.framework}: use --adapt none")


@dataclass
class Plan:
    """What a run will do: identities, keys and where things go."""

    cfg: RunConfig
    scenario: Scenario
    recipe: Recipe
    splits: dict[str, Split]
    train_id: dict[str, Any]
    train_key: str
    eval_key: str
    train_dir: Path
    result_path: Path
    space: EvalSpace  # the label space the test reference is judged in
    bands: tuple[str, ...] = ()  # the model's input bands, in its order
    mode: str = "trained"  # see MODES
    contract: Contract = field(default_factory=Contract)
    weight_files: list[Path] = field(default_factory=list)  # a pretrained model's, located on this machine

    @property
    def done(self) -> bool:
        """The result exists (with ``reevaluate``: and has this cloudbench's result format)."""
        if not self.result_path.exists():
            return False
        if not self.cfg.reevaluate:
            return True
        found = read_result(self.result_path)
        return found is not None and found.get("format", 1) >= RESULT_FORMAT

    @property
    def exports(self) -> str | None:
        """The folder for the runtime exports of the model (its own, for one trained here; None: the user
        cache, for a pretrained model run as it comes)."""
        return None if self.mode == "zero-shot" else str(self.train_dir)

    @property
    def trained(self) -> bool:
        """The model to evaluate exists: finished training, or a pretrained model run zero-shot."""
        return self.mode == "zero-shot" or (self.train_dir / MODEL_FILE).exists()

    def entries(self) -> tuple[Entry, Entry, Entry]:
        """The registry entries of the model, the normalizer and the adapter."""
        reg = get_registry()
        return model_entry(self.cfg), reg.get("norm", self.cfg.norm), reg.get("adapter", self.cfg.adapt)


def plan(cfg: RunConfig) -> Plan:
    """Validate ``cfg``, read and check every split's data, and work out the run's identities."""
    cfg.validate()
    if cfg.data_root:  # datasets find downloaded data through CLOUDBENCH_DATA (see bench.data.datasets.data_root)
        os.environ["CLOUDBENCH_DATA"] = str(Path(cfg.data_root).resolve())
    scenario = load_scenario(cfg.scenario)
    model, norm, adapter = model_entry(cfg), get_registry().get("norm", cfg.norm), get_registry().get("adapter", cfg.adapt)
    contract = contract_of(model)
    if contract.framework == MASKS and scenario.shift:
        raise ConfigError(f"{cfg.model} reads masks made before the run: they cannot see scenario "
                          f"{scenario.name!r}'s controlled {scenario.shift['type']} shift; run it on a scenario without one")
    mode, bands = cfg.mode(contract), contract.bands or scenario.bands
    needed = zero_shot_splits(bands, scenario) if mode == "zero-shot" else SPLITS
    check_bands_of(cfg.model, bands, scenario, needed)
    weight_files = find_weights(cfg, contract) if contract.pretrained else []
    recipe = Recipe.resolve(scenario.recipe, cfg.recipe)
    recipe = replace(recipe, precision=run_precision(recipe.precision, cfg, contract))
    splits = {s: load_split(scenario, s, strict=cfg.strict, bands=bands) for s in needed}
    for name, split in splits.items():  # every file read and checked now, not after training
        validate_split(split, f"{scenario.origin or scenario.name} [{name}]")
    train_id = training_identity(cfg, scenario, splits, recipe, mode, bands, weight_files)
    train_key = key(train_id)
    space = scenario.eval_space()
    eval_key = key({"train": train_key, "test": data_identity(scenario, splits, "test"),
                    "space": space.to_dict(), "adapter": identity(adapter), "shift": scenario.shift,
                    **({"precision": recipe.precision} if recipe.precision != "fp32" else {}),
                    **({"boundary_px": list(scenario.boundary_px)} if scenario.boundary_px != BOUNDARY_PX else {})})
    out = Path(cfg.out)
    tag = {"trained": f"s{cfg.seed}", "zero-shot": "zeroshot", "fine-tuned": f"ft-s{cfg.seed}"}[mode]
    return Plan(cfg, scenario, recipe, splits, train_id, train_key, eval_key,
                out / "models" / f"{cfg.model}-{cfg.norm}-{tag}-{train_key[:10]}",
                out / "results" / scenario.name / f"{cfg.model}-{cfg.norm}-{cfg.adapt}-{tag}-{eval_key[:10]}.json",
                space, tuple(bands), mode, contract, weight_files)


def run_precision(precision: str, cfg: RunConfig, contract: Contract) -> str:
    """``fp32`` or ``bf16`` for this run: ``auto`` is bf16 where the device runs it fast, but fp32 for a
    pretrained model run zero-shot (as upstream runs it); a model that is not PyTorch runs as it is (fp32)."""
    from bench.run.inference import resolve_precision  # torch: loaded once the run is planned, not to check it

    if not contract.framework.startswith("pytorch"):
        return "fp32"
    return resolve_precision(precision, run_device(cfg), cfg.mode(contract) == "zero-shot", contract.upstream_precision)


def run_device(cfg: RunConfig) -> str:
    """``cuda`` when a GPU is there and the accelerator allows it, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda") else "cpu"


def training_identity(cfg: RunConfig, scenario: Scenario, splits: dict[str, Split], recipe: Recipe, mode: str,
                      bands: tuple[str, ...], weight_files: list[Path]) -> dict[str, Any]:
    """What determines the model a run evaluates. Zero-shot: the model and its weight files' sha256 (no
    data, normalizer or seed). Otherwise the model, normalizer, bands, training and validation data, recipe
    and seed, plus the starting weights' sha256 when fine-tuning."""
    reg = get_registry()
    model, norm = model_entry(cfg), reg.get("norm", cfg.norm)
    weights = {"weights": [sha256(f) for f in weight_files]} if weight_files else {}
    if mode == "zero-shot":
        files = {"mask_files": mask_files(model)} if contract_of(model).framework == MASKS else {}
        return {"model": identity(model), **weights, **files, "mode": mode, "bands": list(bands)}
    train_id = {"model": identity(model), "norm": identity(norm), "bands": list(bands),
                "train": data_identity(scenario, splits, "train"), "val": data_identity(scenario, splits, "val"),
                "recipe": recipe.for_training().to_dict(), "seed": cfg.seed}
    if mode == "fine-tuned":
        train_id.update(weights, mode=mode)
    if mode == "trained" and cfg.weights:  # given explicitly (the default keeps earlier keys)
        train_id["init_weights"] = cfg.weights
    if cfg.devices * cfg.num_nodes > 1:  # the batch is per device: more processes train a different model
        train_id["world_size"] = cfg.devices * cfg.num_nodes
    return train_id


def mask_files(entry: Entry) -> dict[str, str]:
    """sha256 of every file a model of precomputed masks may read (its template under its root, each field a
    wildcard): new masks in the same folder are a new model, never an old result."""
    root, template = entry.settings.get("root"), str(entry.settings.get("template", ""))
    if not root or not Path(root).expanduser().is_dir():
        return {}
    folder = Path(root).expanduser()
    pattern = re.sub(r"\{[^}]*\}", "*", template)
    return {f.relative_to(folder).as_posix(): sha256(f) for f in sorted(folder.glob(pattern)) if f.is_file()}


class MissingBands(ConfigError):
    """A scenario's data lack a band that the model needs."""


def zero_shot_splits(bands: tuple[str, ...], scenario: Scenario) -> tuple[str, ...]:
    """What a pretrained model run zero-shot reads: the test split, and the validation split to calibrate
    its label-free estimates on where that split has the model's bands."""
    return ("val", "test") if all(b in scenario.dataset("val").bands for b in bands) else ("test",)


def check_bands_of(model: str, bands: tuple[str, ...], scenario: Scenario, splits: tuple[str, ...]) -> None:
    """Refuse, before anything runs, a scenario whose data lack a band the model needs: naming the model,
    the missing bands, the scenario file, the split and its dataset."""
    for split in splits:
        ds = scenario.dataset(split)
        missing = [b for b in bands if b not in ds.bands]
        if missing:
            raise MissingBands(f"model {model!r} needs bands {', '.join(missing)}, which scenario {scenario.name!r} "
                              f"({scenario.origin or 'registered'}) [{split}] lacks: dataset {ds.name!r} has "
                              f"{', '.join(ds.bands)}")


def find_weights(cfg: RunConfig, contract: Contract) -> list[Path]:
    """A pretrained model's weight files: ``--weights`` paths, else where its contract says they are (an
    installed package, cloudbench itself, the local Hugging Face cache). Missing ones stop the run at once,
    saying how to get them."""
    if cfg.weights:
        paths = [Path(p).expanduser() for p in cfg.weights.split(",")]
        if len(paths) != len(contract.weights):
            raise ConfigError(f"--weights: {cfg.model} takes {len(contract.weights)} weight file(s), got {len(paths)}")
        for p in paths:
            if not p.is_file():
                raise DataError(f"--weights {p}: no such file")
        return paths
    found = [locate_weights(spec) for spec in contract.weights]
    missing = [spec for spec, path in zip(contract.weights, found) if path is None]
    if missing:
        raise DataError(f"{cfg.model}: weights not on this machine ({', '.join(missing)}); this machine cannot "
                        f"fetch them now. Get them with: {contract.get_weights}. Then run again, or pass "
                        "--weights PATH")
    return [p for p in found if p is not None]


def data_identity(scenario: Scenario, splits: dict[str, Split], split: str) -> dict[str, Any]:
    """What of a split decides results: its source and the content of its files, not their location."""
    sp = splits[split]
    return {"source": scenario.sources[split].to_dict(), "dataset": sp.dataset, "sha256": sorted(sp.files.values())}


def identity(entry: Entry) -> dict[str, Any]:
    """What of a registry entry determines results (not its description or where it was declared)."""
    return {"name": entry.name, "type": entry.builder.name,
            "settings": {k: v for k, v in entry.settings.items() if k != "description"}}


def command_line() -> str:
    """The command line of this process, as a shell would take it."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return shlex.join(argv)
