"""What a sweep crosses: :class:`Grid` (models x normalizers x adapters x scenarios x seeds, each axis
names or shell-style wildcards, comma-separated), its cells planned (:func:`plans`) and grouped by the
trained model they need (:func:`groups`), and the ``bench run`` command of each cell."""

from __future__ import annotations

import itertools
import json
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.core.errors import ConfigError, unknown
from bench.core.recipe import Recipe
from bench.core.registry import get_registry, is_path
from bench.models.base import contract_of
from bench.run.plan import NATIVE, MissingBands, Plan, RunConfig, plan


@dataclass
class Grid:
    """The axes of a sweep (names or wildcards, comma-separated) and the settings every cell shares."""

    models: str = "unet_mnv2"
    norms: str = "percentile"
    adapts: str = "none"
    scenarios: str = "samples_cross"
    seeds: str | int = 1  # a count (3: seeds 0, 1, 2) or a list ("0,4,7")
    settings: dict[str, list[Any]] = field(default_factory=dict)  # model settings crossed (--set KEY=V1,V2)
    base: RunConfig = field(default_factory=RunConfig)  # recipe, data root, out, devices, ...

    def seed_list(self) -> list[int]:
        """The seeds: ``3`` -> [0, 1, 2]; ``"0,4,7"`` -> [0, 4, 7]."""
        text = str(self.seeds).strip()
        try:
            if "," in text:
                return sorted({int(s) for s in text.split(",") if s.strip()})
            n = int(text)
        except ValueError:
            raise ConfigError(f"--seeds takes a count (3) or a list (0,4,7), got {self.seeds!r}") from None
        if n < 1:
            raise ConfigError(f"--seeds must be at least 1, got {n}")
        return list(range(n))

    def configs(self) -> list[RunConfig]:
        """Every cell, scenario-major (so a scenario's leaderboard fills in early). A pretrained model runs
        once, zero-shot with its own preprocessing (``native``), unless the base config fine-tunes and the
        model can be trained; a model trained here skips ``native``."""
        axes = {"model": expand("model", self.models), "norm": expand("norm", self.norms),
                "adapter": expand("adapter", self.adapts), "scenario": expand("scenario", self.scenarios)}
        return [replace(self.base, model=m, norm=n, adapt=a, scenario=s, seed=seed, finetune=tune, settings=st)
                for s in axes["scenario"] for m in axes["model"] for n, seeds, tune in self.cells_of(m, axes["norm"])
                for seed in seeds for a in axes["adapter"] for st in self.setting_values()]

    def setting_values(self) -> list[dict[str, Any]]:
        """Every combination of the crossed model settings (``[{}]`` without any)."""
        keys = list(self.settings)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.settings[k] for k in keys))]

    def cells_of(self, model: str, norms: list[str]) -> list[tuple[str, list[int], bool]]:
        """(normalizer, seeds, fine-tune) that ``model`` runs with (see :meth:`configs`)."""
        contract = contract_of(get_registry().get("model", model))
        if not contract.pretrained:
            return [(n, self.seed_list(), False) for n in norms if n != NATIVE]
        if self.base.finetune and contract.trainable:
            return [(n, self.seed_list(), True) for n in norms]
        return [(NATIVE, self.seed_list()[:1], False)]  # zero-shot: deterministic, one run


def expand(kind: str, spec: str) -> list[str]:
    """``"unet_*,segformer_b0"`` -> matching registered names, in the order given; a scenario may also be
    a TOML path. A pattern that matches nothing is an error with the closest names."""
    reg = get_registry()
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if kind == "scenario" and is_path(part):
            found = [part]
        elif any(ch in part for ch in "*?["):
            found = reg.names(kind, part)
            if not found:
                raise unknown(f"pattern for {kind}s", part, reg.names(kind))
        else:
            reg.get(kind, part)  # unknown name -> "did you mean"
            found = [part]
        out += [f for f in found if f not in out]
    if not out:
        raise ConfigError(f"no {kind} given")
    return out


def cell_command(cfg: RunConfig) -> str:
    """The ``bench run`` command that reproduces one cell."""
    args = ["bench", "run", "--model", cfg.model, "--norm", cfg.norm, "--adapt", cfg.adapt, "--scenario",
            cfg.scenario, "--seed", str(cfg.seed)] + (["--finetune"] if cfg.finetune else [])
    args += Recipe.flags(cfg.recipe)
    defaults = RunConfig()
    for name in ("data_root", "out", "accelerator", "devices", "strategy", "num_nodes", "wandb"):
        value = getattr(cfg, name)
        if value is not None and value != getattr(defaults, name):
            args += [f"--{name.replace('_', '-')}", str(value)]
    args += (["--no-channels-last"] if not cfg.channels_last else []) + (["--compile"] if cfg.compile else [])
    args += ["--runtime", cfg.runtime] if cfg.runtime != defaults.runtime else []
    args += ["--reevaluate"] if cfg.reevaluate else []
    for k, v in cfg.settings.items():
        args += ["--set", f"{k}={json.dumps(v)}"]  # read back as TOML values
    return shlex.join(args)


def plans(grid: Grid) -> list[Plan]:
    """Validate every cell and work out its keys (checksums data, reads no pixels). A cell whose scenario
    lacks bands its model needs is left out, saying so (a pretrained model runs where it can)."""
    out = []
    for cfg in grid.configs():
        try:
            out.append(plan(cfg))
        except MissingBands as err:
            print(f"skipped {cfg.model} on {cfg.scenario}: {err}", file=sys.stderr)
    return out


def groups(cells: list[Plan]) -> dict[Path, list[Plan]]:
    """Cells by the trained model they need, in first-seen order."""
    out: dict[Path, list[Plan]] = {}
    for p in cells:
        out.setdefault(p.train_dir, []).append(p)
    return out


def dry_run(cells: list[Plan]) -> str:
    """A table of every cell and what a sweep would do with it."""
    from tabulate import tabulate

    rows = []
    for p in cells:
        status = ("done (cached)" if p.done else "evaluate (zero-shot)" if p.mode == "zero-shot" else
                  "evaluate (model cached)" if p.trained else "train + evaluate")
        c = p.cfg
        rows.append([c.scenario, c.model, c.norm, c.adapt, c.seed, status, p.train_dir.name])
    pending = [p for p in cells if not p.done]
    train = {p.train_dir for p in pending if not p.trained}
    text = tabulate(rows, headers=["scenario", "model", "norm", "adapt", "seed", "status", "model folder"])
    return (f"{text}\n\n{len(cells)} cells: {len(cells) - len(pending)} cached, {len(pending)} to run; "
            f"{len(train)} models to train, {len({p.train_dir for p in pending}) - len(train)} to reuse")
