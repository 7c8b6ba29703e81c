"""``bench sweep``: cross models x normalizers x adapters x scenarios x seeds, and run every cell as
``bench run`` would.

    from bench.sweep import Grid, sweep
    summary = sweep(Grid(models="unet_*", norms="none,percentile", adapts="none,adabn",
                         scenarios="samples_*", seeds=3))

* Each axis takes names and shell-style wildcards, comma-separated (as in ``bench list``).
* A cell whose result exists is skipped. Cells are grouped by the model they need (same train key):
  one job trains it once (or reuses it) and then evaluates every scenario and adapter that needs it,
  so 3 normalizers x 4 scenarios sharing one training set train 3 models, not 12.
* Killed at any point, the same command resumes: finished results stay, an unfinished training
  continues from its last checkpoint, and nothing is half-written (atomic files, a lock per model).
* Jobs run through a :class:`bench.launchers.Launcher`: local worker processes (``--jobs N``), or
  Slurm through submitit.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.registry import get_registry
from bench.runner import Plan, RunConfig, plan


@dataclass
class Grid:
    """The axes of a sweep (names or wildcards, comma-separated) and the settings every cell shares."""

    models: str = "unet_mnv2"
    norms: str = "percentile"
    adapts: str = "none"
    scenarios: str = "samples_cross"
    seeds: str | int = 1  # a count (3: seeds 0, 1, 2) or a list ("0,4,7")
    base: RunConfig = field(default_factory=RunConfig)  # recipe, data root, out, devices, ...

    def seed_list(self) -> list[int]:
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
        """Every cell, scenario-major (so a scenario's leaderboard fills in early)."""
        axes = {"model": expand("model", self.models), "norm": expand("norm", self.norms),
                "adapter": expand("adapter", self.adapts), "scenario": expand("scenario", self.scenarios)}
        return [replace(self.base, model=m, norm=n, adapt=a, scenario=s, seed=seed)
                for s in axes["scenario"] for m in axes["model"] for n in axes["norm"]
                for seed in self.seed_list() for a in axes["adapter"]]


def expand(kind: str, spec: str) -> list[str]:
    """``"unet_*,segformer_b0"`` -> matching registered names, in the order given; a scenario may also be
    a TOML path. A pattern that matches nothing is an error with the closest names."""
    reg = get_registry()
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if kind == "scenario" and (part.endswith(".toml") or "/" in part):
            found = [part]
        elif any(ch in part for ch in "*?["):
            found = reg.names(kind, part)
            if not found:
                from bench.errors import unknown

                raise unknown(f"pattern for {kind}s", part, reg.names(kind))
        else:
            reg.get(kind, part)  # unknown name -> "did you mean"
            found = [part]
        out += [f for f in found if f not in out]
    if not out:
        raise ConfigError(f"no {kind} given")
    return out


@dataclass
class Summary:
    cells: int
    done_before: int  # results that already existed
    ran: int  # results written by this sweep
    failed: list[str]  # result paths that are still missing
    models_to_train: int  # models the sweep had to train (not found finished at its start)
    models_reused: int  # finished models found at the start and reused
    wall_s: float
    leaderboards: list[Path]
    folder: Path | None


def cell_command(cfg: RunConfig) -> str:
    """The ``bench run`` command that reproduces one cell."""
    args = ["bench", "run", "--model", cfg.model, "--norm", cfg.norm, "--adapt", cfg.adapt, "--scenario",
            cfg.scenario, "--seed", str(cfg.seed)]
    defaults = RunConfig()
    for name in ("epochs", "batch_size", "patch_size", "max_steps", "samples_per_epoch", "lr", "patience",
                 "data_root", "out", "accelerator", "devices", "strategy", "num_nodes", "wandb"):
        value = getattr(cfg, name)
        if value is not None and value != getattr(defaults, name):
            args += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(args)


def plans(grid: Grid) -> list[Plan]:
    """Validate every cell and work out its keys (checksums data, reads no pixels)."""
    return [plan(cfg) for cfg in grid.configs()]


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
        status = "done (cached)" if p.done else ("evaluate (model cached)" if p.trained else "train + evaluate")
        c = p.cfg
        rows.append([c.scenario, c.model, c.norm, c.adapt, c.seed, status, p.train_dir.name])
    pending = [p for p in cells if not p.done]
    train = {p.train_dir for p in pending if not p.trained}
    text = tabulate(rows, headers=["scenario", "model", "norm", "adapt", "seed", "status", "model folder"])
    return (f"{text}\n\n{len(cells)} cells: {len(cells) - len(pending)} cached, {len(pending)} to run; "
            f"{len(train)} models to train, {len({p.train_dir for p in pending}) - len(train)} to reuse")


def sweep(grid: Grid, launcher: Any = None, leaderboards: str | Path | bool = True, command: str | None = None,
          progress: bool = True, poll_s: float = 1.0) -> Summary:
    """Run every cell not yet done; return what happened. Leaderboards of the swept scenarios are
    regenerated at the end (``leaderboards``: True for ``<out>/leaderboards``, a folder, or False)."""
    from tqdm.auto import tqdm

    from bench.launchers import Launcher
    from bench.results import key, write_json

    t0 = time.perf_counter()
    cells = plans(grid)
    out = Path(grid.base.out)
    launcher = launcher or Launcher()
    launcher.folder = out / "sweeps"  # submitit keeps its job files beside the sweep's
    command = command or "bench sweep (Python API)"
    pending = [p for p in cells if not p.done]
    todo = groups(pending)
    to_train = sum(1 for d, ps in todo.items() if not ps[0].trained)
    folder = out / "sweeps" / key([p.eval_key for p in cells])[:12]
    write_json(folder / "cells.json", {"command": command, "cells": [
        {"scenario": p.cfg.scenario, "model": p.cfg.model, "norm": p.cfg.norm, "adapt": p.cfg.adapt,
         "seed": p.cfg.seed, "result": str(p.result_path), "model_folder": str(p.train_dir),
         "command": cell_command(p.cfg)} for p in cells]})
    print(f"{len(cells)} cells: {len(cells) - len(pending)} cached, {len(pending)} to run in {len(todo)} jobs "
          f"({to_train} models to train); {launcher.kind} launcher, {launcher.jobs} at a time; logs in {folder}",
          file=sys.stderr, flush=True)

    queue = list(todo.items())
    running: dict[Path, tuple[Any, list[Plan]]] = {}
    counted = {p.result_path for p in cells if p.done}
    bar = tqdm(total=len(cells), initial=len(counted), unit="cell", desc="sweep", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    failed_logs = []
    try:
        while queue or running:
            while queue and len(running) < launcher.jobs:
                train_dir, ps = queue.pop(0)
                spec = write_json(folder / "jobs" / f"{train_dir.name}.json",
                                  {"command": command, "cells": [_record(p.cfg, command) for p in ps]})
                running[train_dir] = (launcher.start(spec, folder / "logs" / f"{train_dir.name}.log"), ps)
            time.sleep(poll_s)
            for train_dir, (job, ps) in list(running.items()):
                new = {p.result_path for p in ps if p.result_path not in counted and p.result_path.exists()}
                counted |= new
                bar.update(len(new))
                if job.done():
                    del running[train_dir]
                    if not job.ok() or any(not p.result_path.exists() for p in ps):
                        failed_logs.append(job.log)
                        bar.write(f"job {train_dir.name} failed; its log: {job.log}\n{_tail(job.log)}")
            bar.set_postfix_str(f"{len(running)} running, {len(failed_logs)} failed", refresh=False)
    except KeyboardInterrupt:
        for job, _ in running.values():
            job.stop()
        raise KeyboardInterrupt("sweep interrupted; run the same command again to resume") from None
    finally:
        bar.close()

    boards: list[Path] = []
    if leaderboards is not False:
        from bench.leaderboard import write_leaderboards

        dest = out / "leaderboards" if leaderboards is True else Path(leaderboards)
        names = sorted({p.scenario.name for p in cells})
        boards = write_leaderboards(out, dest, scenarios=names, command=command)
    failed = [str(p.result_path) for p in cells if not p.result_path.exists()]
    return Summary(len(cells), len(cells) - len(pending), len(pending) - len(failed), failed, to_train,
                   len(todo) - to_train, time.perf_counter() - t0, boards, folder)


def _record(cfg: RunConfig, command: str) -> dict[str, Any]:
    d = cfg.record()
    d.update(command=command, leaderboards=False, progress=False)
    return d


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_spec(spec: Path) -> int:
    """The worker: run the cells listed in ``spec`` one after the other (they share one trained model).
    Returns the number of cells that failed; one failing cell does not stop the others."""
    import os
    import traceback

    from bench.runner import run

    if os.environ.get("CLOUDBENCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["CLOUDBENCH_THREADS"]))
    cells = json.loads(Path(spec).read_text())["cells"]
    failed = 0
    for d in cells:
        cfg = RunConfig(**{k: v for k, v in d.items() if k in RunConfig.__dataclass_fields__})
        print(f"== {cell_command(cfg)}", flush=True)
        try:
            res = run(cfg)
            if res.metrics:
                print(f"mIoU {res.metrics.get('miou')}: {res.path}", flush=True)
        except KeyboardInterrupt:
            raise
        except Exception:  # noqa: BLE001 - reported in the log; the sweep reports the missing result
            traceback.print_exc()
            failed += 1
    return failed


if __name__ == "__main__":  # python -m bench.sweep <cells.json>
    import warnings

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    sys.exit(1 if run_spec(Path(sys.argv[1])) else 0)


__all__ = ["Grid", "Summary", "sweep", "plans", "groups", "dry_run", "expand", "cell_command", "run_spec"]
