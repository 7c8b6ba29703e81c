"""``bench run`` as a Python API: train (or reuse) a model, evaluate it on a scenario, record everything.

    from bench.runner import RunConfig, run
    result = run(RunConfig(model="unet_mnv2", norm="percentile", scenario="samples_cross"))
    result.metrics["miou"], result.path, result.figure

Recipe values left as ``None`` take the scenario's ``[recipe]`` preset, else the study's default
(:data:`STUDY_RECIPE`). A finished result is never recomputed unless ``force``; an interrupted training
resumes from its last checkpoint when the same run is started again.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.registry import get_registry

#: the study's training recipe: Dice loss, Adam 1e-3, 30 epochs, batch 16, 256 x 256 patches.
STUDY_RECIPE: dict[str, Any] = {"epochs": 30, "batch_size": 16, "patch_size": 256, "lr": 1e-3, "patience": 10,
                                "max_steps": -1, "samples_per_epoch": None}


WANDB_MODES = ("offline", "online", "off")


@dataclass
class RunConfig:
    model: str = "unet_mnv2"
    norm: str = "percentile"
    scenario: str = "samples_cross"
    adapt: str = "none"
    seed: int = 0
    # recipe: None = the scenario's preset, else STUDY_RECIPE
    epochs: int | None = None
    batch_size: int | None = None
    patch_size: int | None = None
    max_steps: int | None = None
    samples_per_epoch: int | None = None
    lr: float | None = None
    patience: int | None = None
    # where and how
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
        if not (self.scenario.endswith(".toml") or "/" in self.scenario):
            reg.get("scenario", self.scenario)
        for name in ("epochs", "batch_size", "samples_per_epoch", "patience"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
        if self.patch_size is not None and (self.patch_size < 32 or self.patch_size % 32):
            raise ConfigError(f"--patch-size must be a multiple of 32 (the encoders downsample 32x), "
                              f"got {self.patch_size}")
        if self.max_steps is not None and self.max_steps != -1 and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be at least 1 (or -1 for no limit), got {self.max_steps}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.wandb not in WANDB_MODES:
            from bench.errors import unknown

            raise unknown("--wandb mode", self.wandb, list(WANDB_MODES))
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise ConfigError(f"--data-root {self.data_root!r} is not a folder")

    def recipe(self, scenario_recipe: dict[str, Any]) -> dict[str, Any]:
        out = dict(STUDY_RECIPE)
        out.update(scenario_recipe)
        out.update({k: getattr(self, k) for k in STUDY_RECIPE if getattr(self, k) is not None})
        return out

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("callbacks")
        return d


@dataclass
class RunResult:
    path: Path
    metrics: dict[str, Any]
    figure: Path | None
    leaderboard: Path | None
    trained: bool  # False when the model came from an earlier run
    skipped: bool  # True when the result already existed


@dataclass
class Plan:
    """What a run will do, worked out before any pixel is read: identities, keys and where things go."""

    cfg: RunConfig
    scenario: Any
    recipe: dict[str, Any]
    splits: dict[str, Any]
    train_id: dict[str, Any]
    train_key: str
    eval_key: str
    train_dir: Path
    result_path: Path

    @property
    def done(self) -> bool:
        return self.result_path.exists()

    @property
    def trained(self) -> bool:
        from bench.training import MODEL_FILE

        return (self.train_dir / MODEL_FILE).exists()


def plan(cfg: RunConfig) -> Plan:
    """Validate ``cfg`` and work out its identities: the train key (what determines the trained model) and
    the eval key (that plus test data, label space, adapter and shift). Data files are checksummed (cached)
    but not read."""
    from bench.data import load_split
    from bench.results import key
    from bench.scenarios import load_scenario

    cfg.validate()
    if cfg.data_root:  # datasets find downloaded data through CLOUDBENCH_DATA (see bench.datasets.data_root)
        os.environ["CLOUDBENCH_DATA"] = str(Path(cfg.data_root).resolve())
    reg = get_registry()
    scenario = load_scenario(cfg.scenario)
    recipe = cfg.recipe(dict(scenario.recipe))
    splits = {s: load_split(scenario, s, strict=cfg.strict) for s in ("train", "val", "test")}

    def identity(split: str) -> dict[str, Any]:
        sp = splits[split]
        # content, not location: the same data in another checkout or data root is the same identity
        return {"source": scenario.sources[split].to_dict(), "dataset": sp.dataset,
                "sha256": sorted(sp.files.values())}

    train_id = {"model": _ident(reg.get("model", cfg.model)), "norm": _ident(reg.get("norm", cfg.norm)),
                "bands": list(scenario.bands), "train": identity("train"), "val": identity("val"),
                "recipe": recipe, "seed": cfg.seed}
    if cfg.devices * cfg.num_nodes > 1:  # the batch is per device: more processes train a different model
        train_id["world_size"] = cfg.devices * cfg.num_nodes
    train_key = key(train_id)
    eval_key = key({"train": train_key, "test": identity("test"), "space": scenario.eval_space().to_dict(),
                    "adapter": _ident(reg.get("adapter", cfg.adapt)), "shift": scenario.shift})
    out = Path(cfg.out)
    stem = f"{cfg.model}-{cfg.norm}-{cfg.adapt}-s{cfg.seed}-{eval_key[:10]}"
    return Plan(cfg, scenario, recipe, splits, train_id, train_key, eval_key,
                out / "models" / f"{cfg.model}-{cfg.norm}-s{cfg.seed}-{train_key[:10]}",
                out / "results" / scenario.name / f"{stem}.json")


def run(cfg: RunConfig | Plan) -> RunResult:
    """Train or reuse, evaluate, write the result JSON, the figure and the scenario's leaderboard.

    Under a multi-process strategy (``ddp``) every process trains; only rank 0 evaluates and writes."""
    import torch

    from bench.evaluate import BLOCK, evaluate
    from bench.results import git_state, hardware, read_result, versions, write_json
    from bench.training import train_or_load

    t0 = time.perf_counter()
    p = cfg if isinstance(cfg, Plan) else plan(cfg)
    cfg, scenario, recipe, splits = p.cfg, p.scenario, p.recipe, p.splits
    reg = get_registry()
    model_entry, norm_entry, adapt_entry = (reg.get("model", cfg.model), reg.get("norm", cfg.norm),
                                            reg.get("adapter", cfg.adapt))
    space = scenario.eval_space()
    t_data = time.perf_counter() - t0
    shift_fn = reg.get("shift", scenario.shift["type"]).builder.fn if scenario.shift else None
    out, result_path, train_key, eval_key = Path(cfg.out), p.result_path, p.train_key, p.eval_key
    if result_path.exists() and not cfg.force:
        existing = read_result(result_path)
        if existing is not None:
            print(f"result exists, skipped (pass --force to redo): {result_path}", file=sys.stderr)
            fig = result_path.with_suffix(".png")
            return RunResult(result_path, existing["metrics"], fig if fig.exists() else None, None, False, True)

    trained = train_or_load(cfg, recipe, model_entry, norm_entry, scenario, splits, space, p.train_dir, p.train_id)
    if trained.rank != 0:  # another process of a multi-process strategy: rank 0 evaluates and writes
        return RunResult(result_path, {}, None, None, trained.fresh, False)

    t1 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda") else "cpu"
    from bench.sanity import check as sanity_check

    strongest = (shifted(splits["test"], shift_fn, max(scenario.shift["severities"]), list(scenario.bands))
                 if shift_fn else splits["test"])  # a shift scenario is checked at its strongest severity
    sanity = sanity_check(splits["train"], strongest, trained.normalizer, list(scenario.bands))
    per_severity, blocks = {}, {}
    for severity in scenario.shift["severities"] if shift_fn else [None]:
        test = splits["test"] if severity is None else shifted(splits["test"], shift_fn, severity, list(scenario.bands))
        adapter = adapt_entry.build()
        ev = evaluate(trained.module.to(device), trained.normalizer, test, space, recipe["patch_size"],
                      recipe["batch_size"], device, adapter)
        if severity is not None:
            per_severity[str(severity)] = {**ev.metrics, "per_scene": ev.per_scene}
        for b, cm in ev.blocks.items():  # pooled over severities, as the headline metrics are
            blocks[b] = blocks.get(b, 0) + cm
    t_eval = time.perf_counter() - t1
    metrics = ev.metrics
    if per_severity:  # the headline: every severity's pixels pooled in one confusion matrix
        import numpy as np

        from bench.metrics import scores

        pooled = sum(np.array(m["confusion"]) for m in per_severity.values())
        metrics = {**ev.metrics, **scores(pooled, space.names), "pooled_over_severities": sorted(per_severity, key=int)}

    result = {
        "format": 1,
        "command": cfg.command or _command(),
        "config": cfg.record(),
        "recipe": recipe,
        "scenario": {"name": scenario.name, "version": scenario.version, "description": scenario.description,
                     "reference": splits["test"].reference, "definition": scenario.to_dict()},
        "model": {**model_entry.summary(), "in_channels": len(scenario.bands), "weights": trained.weights},
        "normalizer": {**norm_entry.summary(), "state": trained.normalizer.state_dict()},
        "adapter": {**adapt_entry.summary(), **adapter.describe()},
        "seed": cfg.seed,
        "metrics": metrics,
        "per_scene": ev.per_scene,
        "per_month": ev.per_month,
        "per_severity": per_severity or None,
        "blocks": {"size": BLOCK, "ids": list(blocks), "confusion": [cm.ravel().tolist() for cm in blocks.values()]},
        "sanity": sanity,
        "train": trained.record,
        "train_key": train_key,
        "eval_key": eval_key,
        "checkpoint": str(trained.path),
        "logs": trained.record.get("logs"),
        "data": {s: {"dataset": sp.dataset, "reference": sp.reference, "scenes": [x.id for x in sp.scenes],
                     "files": sp.files} for s, sp in splits.items()},
        "versions": versions(),
        "git": git_state(),
        "hardware": {**hardware(), "device": device},
        "timings": {"data_s": t_data, "train_s": trained.record.get("train_s", 0.0) if trained.fresh else 0.0,
                    "eval_s": t_eval, "total_s": time.perf_counter() - t0},
    }
    figure = None
    if cfg.figure:
        from bench.figures import run_figure

        title = f"{cfg.model} x {cfg.norm} x {cfg.adapt} on {scenario.name}"
        if per_severity:
            title += f" ({scenario.shift['type']}, severity {severity})"
        figure = run_figure(result_path.with_suffix(".png"), test, ev, space, list(scenario.bands), title=title)
        result["figure"] = str(figure)
    write_json(result_path, result)
    board = None
    if cfg.leaderboards is not False:
        from bench.leaderboard import write_leaderboards

        dest = out / "leaderboards" if cfg.leaderboards is True else Path(cfg.leaderboards)
        board = write_leaderboards(cfg.out, dest, scenarios=[scenario.name])[0]
    return RunResult(result_path, metrics, figure, board, trained.fresh, False)


def shifted(split: Any, shift_fn: Any, severity: int, bands: list[str]) -> Any:
    """The test split with a controlled shift applied to every scene's reflectance (nodata kept)."""
    import zlib

    from bench.data import Split
    from bench.datasets import SceneData

    scenes = [SceneData(s.id, shift_fn(s.image, severity, bands, seed=zlib.crc32(s.id.encode())),
                        s.codes, s.valid, s.meta) for s in split.scenes]
    out = Split.of(split.name, scenes, split.labels, split.reference)
    out.dataset, out.files = split.dataset, split.files
    return out


def _ident(entry: Any) -> dict[str, Any]:
    """What of a registry entry determines results (not its description or where it was declared)."""
    return {"name": entry.name, "type": entry.builder.name,
            "settings": {k: v for k, v in entry.settings.items() if k != "description"}}


def _command() -> str:
    import shlex

    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return shlex.join(argv)


__all__ = ["RunConfig", "RunResult", "Plan", "plan", "run", "STUDY_RECIPE"]
