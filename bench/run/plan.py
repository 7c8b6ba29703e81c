"""What a run is, worked out before any pixel is read: :class:`RunConfig` (what the user asked for) and
:class:`Plan` (its scenario, resolved recipe, splits, identities and where its files go).

The train key hashes what determines a trained model (model, normalizer, training and validation data
with their sha256, bands, recipe, seed); the eval key adds the test data, label space, adapter and shift.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import ConfigError, unknown
from bench.core.labels import EvalSpace
from bench.core.recipe import Recipe
from bench.core.registry import Entry, get_registry, is_path
from bench.core.results import key
from bench.data.scenarios import SPLITS, Scenario, load_scenario
from bench.data.splits import Split, load_split, validate_split

WANDB_MODES = ("offline", "online", "off")
MODEL_FILE = "model.pt"


@dataclass
class RunConfig:
    """One ``bench run``: which model, normalizer, adapter and scenario, the recipe values given on the
    command line (``recipe``; the rest come from the scenario's preset, else the study's), and where and
    how to run."""

    model: str = "unet_mnv2"
    norm: str = "percentile"
    scenario: str = "samples_cross"
    adapt: str = "none"
    seed: int = 0
    recipe: dict[str, Any] = field(default_factory=dict)  # e.g. {"epochs": 5}; see bench.core.recipe.Recipe
    data_root: str | None = None
    out: str = "runs"
    leaderboards: str | bool = True  # True: <out>/leaderboards; False: none; or a folder
    force: bool = False
    strict: bool = False
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"  # any Lightning strategy: ddp, ddp_spawn, fsdp, ...
    num_nodes: int = 1
    num_workers: int = 0
    wandb: str = "offline"  # offline (default), online, or off; Lightning's CSV logs are always written
    figure: bool = True
    progress: bool = True
    callbacks: list = field(default_factory=list)  # extra Lightning callbacks (not recorded)
    command: str | None = None  # the command line that asked for this run (the CLI sets it)

    def validate(self) -> None:
        """Check names and values before any data is read or any model is built."""
        reg = get_registry()
        reg.get("model", self.model)
        reg.get("norm", self.norm)
        reg.get("adapter", self.adapt)
        if not is_path(self.scenario):
            reg.get("scenario", self.scenario)
        Recipe.check_values(self.recipe, "command line")
        if self.wandb not in WANDB_MODES:
            raise unknown("--wandb mode", self.wandb, list(WANDB_MODES))
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise ConfigError(f"--data-root {self.data_root!r} is not a folder")

    def record(self) -> dict[str, Any]:
        """The config as results record it (callbacks left out)."""
        d = asdict(self)
        d.pop("callbacks")
        return d


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

    @property
    def done(self) -> bool:
        """The result exists."""
        return self.result_path.exists()

    @property
    def trained(self) -> bool:
        """The trained model exists (finished training)."""
        return (self.train_dir / MODEL_FILE).exists()

    def entries(self) -> tuple[Entry, Entry, Entry]:
        """The registry entries of the model, the normalizer and the adapter."""
        reg = get_registry()
        return reg.get("model", self.cfg.model), reg.get("norm", self.cfg.norm), reg.get("adapter", self.cfg.adapt)


def plan(cfg: RunConfig) -> Plan:
    """Validate ``cfg``, read and check every split's data, and work out the run's identities."""
    cfg.validate()
    if cfg.data_root:  # datasets find downloaded data through CLOUDBENCH_DATA (see bench.data.datasets.data_root)
        os.environ["CLOUDBENCH_DATA"] = str(Path(cfg.data_root).resolve())
    scenario = load_scenario(cfg.scenario)
    recipe = Recipe.resolve(scenario.recipe, cfg.recipe)
    splits = {s: load_split(scenario, s, strict=cfg.strict) for s in SPLITS}
    for name, split in splits.items():  # every file read and checked now, not after training
        validate_split(split, f"{scenario.origin or scenario.name} [{name}]")
    model, norm, adapter = (get_registry().get(k, n) for k, n in
                            (("model", cfg.model), ("norm", cfg.norm), ("adapter", cfg.adapt)))
    train_id = {"model": identity(model), "norm": identity(norm), "bands": list(scenario.bands),
                "train": data_identity(scenario, splits, "train"), "val": data_identity(scenario, splits, "val"),
                "recipe": recipe.to_dict(), "seed": cfg.seed}
    if cfg.devices * cfg.num_nodes > 1:  # the batch is per device: more processes train a different model
        train_id["world_size"] = cfg.devices * cfg.num_nodes
    train_key = key(train_id)
    space = scenario.eval_space()
    eval_key = key({"train": train_key, "test": data_identity(scenario, splits, "test"),
                    "space": space.to_dict(), "adapter": identity(adapter), "shift": scenario.shift})
    out = Path(cfg.out)
    stem = f"{cfg.model}-{cfg.norm}-{cfg.adapt}-s{cfg.seed}-{eval_key[:10]}"
    return Plan(cfg, scenario, recipe, splits, train_id, train_key, eval_key,
                out / "models" / f"{cfg.model}-{cfg.norm}-s{cfg.seed}-{train_key[:10]}",
                out / "results" / scenario.name / f"{stem}.json", space)


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
