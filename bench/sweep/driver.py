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
* Jobs run through a :class:`bench.sweep.launchers.Launcher`: local worker processes (``--jobs N``), or
  Slurm through submitit.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.boards.leaderboard import write_leaderboards
from bench.core.progress import Progress
from bench.core.results import key, write_json
from bench.run.plan import Plan, RunConfig
from bench.sweep.grid import Grid, cell_command, groups, plans
from bench.sweep.launchers import Launcher


@dataclass
class Summary:
    """What a sweep did."""

    cells: int
    done_before: int  # results that already existed
    ran: int  # results written by this sweep
    failed: list[str]  # result paths that are still missing
    models_to_train: int  # models the sweep had to train (not found finished at its start)
    models_reused: int  # finished models found at the start and reused
    wall_s: float
    leaderboards: list[Path]
    folder: Path | None
    pretrained: int = 0  # pretrained models run zero-shot (nothing to train)


def sweep(grid: Grid, launcher: Any = None, leaderboards: str | Path | bool = True, command: str | None = None,
          progress: bool = True, poll_s: float = 1.0) -> Summary:
    """Run every cell not yet done; return what happened. Leaderboards of the swept scenarios are
    regenerated at the end (``leaderboards``: True for ``<out>/leaderboards``, a folder, or False)."""
    t0 = time.perf_counter()
    cells = plans(grid)
    out = Path(grid.base.out)
    launcher = launcher or Launcher()
    launcher.folder = out / "sweeps"  # submitit keeps its job files beside the sweep's
    command = command or "bench sweep (Python API)"
    pending = [p for p in cells if not p.done]
    todo = groups(pending)
    to_train = sum(1 for ps in todo.values() if not ps[0].trained)
    zero_shot = sum(1 for ps in todo.values() if ps[0].mode == "zero-shot")
    folder = write_cells(out / "sweeps", cells, command)
    print(f"{len(cells)} cells: {len(cells) - len(pending)} cached, {len(pending)} to run in {len(todo)} jobs "
          f"({to_train} models to train); {launcher.kind} launcher, {launcher.jobs} at a time; logs in {folder}",
          file=sys.stderr, flush=True)
    run_jobs(todo, launcher, folder, command, done=sum(p.done for p in cells), total=len(cells),
             progress=progress, poll_s=poll_s)
    boards: list[Path] = []
    if leaderboards is not False:
        dest = out / "leaderboards" if leaderboards is True else Path(leaderboards)
        boards = write_leaderboards(out, dest, scenarios=sorted({p.scenario.name for p in cells}), command=command)
    failed = [str(p.result_path) for p in cells if not p.result_path.exists()]
    return Summary(len(cells), len(cells) - len(pending), len(pending) - len(failed), failed, to_train,
                   len(todo) - to_train - zero_shot, time.perf_counter() - t0, boards, folder, zero_shot)


def write_cells(sweeps: Path, cells: list[Plan], command: str) -> Path:
    """The sweep's folder (named by its cells) with ``cells.json``: every cell, its result and command."""
    folder = sweeps / key([p.eval_key for p in cells])[:12]
    write_json(folder / "cells.json", {"command": command, "cells": [
        {"scenario": p.cfg.scenario, "model": p.cfg.model, "norm": p.cfg.norm, "adapt": p.cfg.adapt,
         "seed": p.cfg.seed, "result": str(p.result_path), "model_folder": str(p.train_dir),
         "command": cell_command(p.cfg)} for p in cells]})
    return folder


def run_jobs(todo: dict[Path, list[Plan]], launcher: Launcher, folder: Path, command: str, done: int, total: int,
             progress: bool = True, poll_s: float = 1.0) -> list[Path]:
    """Start one job per trained model, at most ``launcher.jobs`` at a time, and watch them to the end
    with one progress bar over the cells; returns the logs of failed jobs. Ctrl-C stops every job."""
    queue, running, failed = list(todo.items()), {}, []
    bar = Progress(total, "cells", "sweep", initial=done, enabled=progress)
    counted: set[Path] = set()
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
                        failed.append(job.log)
                        bar.write(f"job {train_dir.name} failed; its log: {job.log}\n{_tail(job.log)}")
            bar.update(0, status=f"{len(running)} running, {len(failed)} failed")
    except KeyboardInterrupt:
        for job, _ in running.values():
            job.stop()
        raise KeyboardInterrupt("sweep interrupted; run the same command again to resume") from None
    finally:
        bar.close()
    return failed


def _record(cfg: RunConfig, command: str) -> dict[str, Any]:
    d = cfg.record()
    d.update(command=command, leaderboards=False, progress=False)
    return d


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
