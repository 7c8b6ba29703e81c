"""``bench run`` as a Python API: plan, train (or reuse), evaluate, record, publish; each step is a
function a test can call on its own.

    from bench.run.runner import RunConfig, run
    result = run(RunConfig(model="unet_mnv2", norm="percentile", scenario="samples_cross", recipe={"epochs": 5}))
    result.metrics["miou"], result.path, result.figure

Recipe values not given take the scenario's ``[recipe]`` preset, else the study's (:class:`Recipe`). A
finished result is never recomputed unless ``force``; an interrupted training resumes from its last
checkpoint when the same run is started again.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.boards.leaderboard import write_leaderboards
from bench.core.labels import EvalSpace
from bench.core.metrics import boundary_summary, cover_summary, pool_probabilities, scores
from bench.core.recipe import Recipe
from bench.core.registry import get_registry
from bench.core.results import RESULT_FORMAT, git_state, read_result, versions, write_json
from bench.data.sanity import check as sanity_check
from bench.data.sanity import normalized
from bench.data.shifts import shifted
from bench.data.splits import Split
from bench.run.evaluate import BLOCK, Evaluation, evaluate
from bench.run.figures import run_figure
from bench.run.inference import FastPaths
from bench.run.label_free import save_predictions
from bench.run.calibration import FreeOfLabels
from bench.run.plan import Plan, RunConfig, command_line, plan, run_device
from bench.run.training import Trained, train_or_load

__all__ = ["RunConfig", "RunResult", "Plan", "Recipe", "plan", "run", "evaluate_run", "record", "publish"]


@dataclass
class RunResult:
    """What ``run`` returns: where the result is, its metrics, figure and leaderboard."""

    path: Path
    metrics: dict[str, Any]
    figure: Path | None
    leaderboard: Path | None
    trained: bool  # False when the model came from an earlier run
    skipped: bool  # True when the result already existed


@dataclass
class Evaluated:
    """A trained model's evaluation on a scenario: at each severity of a shift, or once."""

    metrics: dict[str, Any]  # the headline (every severity's pixels pooled for a shift)
    per_severity: dict[str, dict[str, Any]]  # "K" -> metrics and per-scene scores; empty without a shift
    blocks: dict[str, np.ndarray]  # per-block confusion matrices, pooled over severities
    shown: Evaluation  # the evaluation the figure shows: the strongest severity of a shift
    shown_split: Split  # and its test scenes
    shown_severity: int | None
    adapter: dict[str, Any]  # the adapter's protocol and budget, added up over severities
    sanity: dict[str, Any]
    device: str
    eval_s: float
    label_free: dict[str, Any] | None = None  # signals and estimates (bench.run.label_free)
    maps: dict[str, np.ndarray] | None = None  # predicted groups of the calibration and test scenes


def run(cfg: RunConfig | Plan) -> RunResult:
    """Plan, train or reuse, evaluate, record and publish one run (see the module docstring).

    Under a multi-process strategy (``ddp``) every process trains; only rank 0 evaluates and writes."""
    t0 = time.perf_counter()
    p = cfg if isinstance(cfg, Plan) else plan(cfg)
    t_plan = time.perf_counter() - t0
    if p.done and not p.cfg.force:
        existing = read_result(p.result_path)
        if existing is not None:
            print(f"result exists, skipped (pass --force to redo): {p.result_path}", file=sys.stderr)
            fig = p.result_path.with_suffix(".png")
            return RunResult(p.result_path, existing["metrics"], fig if fig.exists() else None, None, False, True)
    trained = train_or_load(p)
    if trained.rank != 0:  # another process of a multi-process strategy: rank 0 evaluates and writes
        return RunResult(p.result_path, {}, None, None, trained.fresh, False)
    evaluated = evaluate_run(p, trained)
    result = record(p, trained, evaluated, {"data_s": t_plan, "eval_s": evaluated.eval_s,
                                            "total_s": time.perf_counter() - t0})
    figure, board = publish(p, result, evaluated)
    return RunResult(p.result_path, result["metrics"], figure, board, trained.fresh, False)


def int8_calibration(p: Plan, trained: Trained) -> dict[str, Any]:
    """For ``--precision int8``: the training split's tiles that calibrate the int8 model (none for a model
    run zero-shot, which has no training split here: int8 is then refused), named ``train`` in the model's
    own exports folder."""
    if p.recipe.precision != "int8" or "train" not in p.splits:
        return {}
    from bench.data.splits import tile_grid
    from bench.run.runtimes import calibration_tiles

    train, patch = p.splits["train"], p.recipe.patch_size
    total = sum(len(tile_grid(h, w, patch)) for h, w in train.shapes())
    return {"calibration": lambda: calibration_tiles(normalized(train, trained.normalizer), patch, total),
            "tag": "train"}


def evaluate_run(p: Plan, trained: Trained) -> Evaluated:
    """The sanity check, then the evaluation at every severity of the scenario's shift (or once)."""
    t0 = time.perf_counter()
    bands, test, shift = list(p.bands), p.splits["test"], p.scenario.shift
    shift_entry = get_registry().get("shift", shift["type"]) if shift else None
    severities = shift["severities"] if shift else [None]
    strongest = shifted(test, shift_entry, max(severities), bands) if shift else test
    sanity = (sanity_check(p.splits["train"], strongest, trained.normalizer, bands)  # at the strongest severity
              if "train" in p.splits else {"skipped": "zero-shot: the model saw no training split here"})
    device = run_device(p.cfg)
    module = trained.module.to(device) if isinstance(trained.module, torch.nn.Module) else trained.module
    fast = FastPaths(p.recipe.precision, p.cfg.channels_last, p.cfg.compile, p.cfg.runtime, p.exports,
                     **int8_calibration(p, trained))
    _, _, adapter_entry = p.entries()
    free = FreeOfLabels(p, trained, module, device, fast, sanity) if p.cfg.label_free else None
    per_severity, blocks, budgets = {}, {}, []
    for severity in severities:
        split = test if severity is None else shifted(test, shift_entry, severity, bands)
        adapter = adapter_entry.build()
        ev = evaluate(module, trained.normalizer, split, p.space, p.recipe.patch_size, p.recipe.batch_size,
                      device, adapter, p.contract, fast, label_free=free.evaluation() if free else None,
                      boundary_px=p.scenario.boundary_px)
        budgets.append(adapter.describe())
        if free:
            free.add(ev, split, severity)
        if severity is not None:
            per_severity[str(severity)] = {**ev.metrics, "per_scene": ev.per_scene,
                                           **({"label_free": ev.label_free} if free else {})}
        for b, cm in ev.blocks.items():  # pooled over severities, as the headline metrics are
            blocks[b] = blocks.get(b, 0) + cm
    metrics = pooled_metrics(per_severity, p.space) if per_severity else ev.metrics
    return Evaluated(metrics, per_severity, blocks, ev, split, severities[-1], added_budgets(budgets), sanity,
                     device, time.perf_counter() - t0, free.record() if free else None, free.maps if free else None)


def pooled_metrics(per_severity: dict[str, dict[str, Any]], space: EvalSpace) -> dict[str, Any]:
    """The headline of a shift: every severity's pixels pooled in one confusion matrix (and in one at each
    boundary tolerance), every (severity, scene) in the cloud cover, every probability counted."""
    groups, names = space.to_dict(), space.names
    last = per_severity[max(per_severity, key=int)]
    pooled = sum(np.array(m["confusion"]) for m in per_severity.values())
    near = {px: sum(np.array(m["boundary"][px]["confusion"]) for m in per_severity.values()) for px in last["boundary"]}
    scenes = {f"{sev}/{s}": m for sev, sm in per_severity.items() for s, m in sm["per_scene"].items()}
    return {**last, **scores(pooled, names, groups),
            "boundary": boundary_summary(near, int(pooled.sum()), names, groups),
            "cloud_cover": cover_summary(scenes, groups, names),
            "probabilities": pool_probabilities([m.get("probabilities") for m in per_severity.values()]),
            "pooled_over_severities": sorted(per_severity, key=int)}


def added_budgets(described: list[dict[str, Any]]) -> dict[str, Any]:
    """One adapter description for several evaluations: the protocol, and every budget figure added up."""
    total: dict[str, Any] = {}
    for d in described:
        for k, v in d["budget"].items():
            total[k] = total.get(k, 0) + v if isinstance(v, (int, float)) else v
    return {"protocol": described[0]["protocol"], "budget": total, "evaluations": len(described)}


def record(p: Plan, trained: Trained, ev: Evaluated, timings: dict[str, float]) -> dict[str, Any]:
    """The result document: config, scenario, model, normalizer, adapter, metrics, provenance, timings."""
    model, norm, adapter = p.entries()
    splits = p.splits
    return {
        "format": RESULT_FORMAT,
        "command": p.cfg.command or command_line(),
        "config": p.cfg.record(),
        "recipe": p.recipe.to_dict(),
        "scenario": {"name": p.scenario.name, "version": p.scenario.version, "description": p.scenario.description,
                     "reference": splits["test"].reference, "reference_by": p.scenario.dataset("test").reference_by,
                     "definition": p.scenario.to_dict()},
        "model": {**model.summary(), "in_channels": len(p.bands), "bands": list(p.bands), "weights": trained.weights,
                  "mode": p.mode, "contract": p.contract.summary()},
        "normalizer": {**norm.summary(), "state": trained.normalizer.state_dict()},
        "adapter": {**adapter.summary(), **ev.adapter},
        "seed": p.cfg.seed,
        "metrics": ev.metrics,
        "per_scene": ev.shown.per_scene,  # of the strongest severity for a shift (each is in per_severity)
        "per_month": ev.shown.per_month,
        "per_severity": ev.per_severity or None,
        "blocks": {"size": BLOCK, "ids": list(ev.blocks), "confusion": [cm.ravel().tolist() for cm in ev.blocks.values()]},
        "sanity": ev.sanity,
        "label_free": ev.label_free,
        "train": trained.record,
        "train_key": p.train_key,
        "eval_key": p.eval_key,
        "checkpoint": str(trained.path),
        "logs": trained.record.get("logs"),
        "data": {s: {"dataset": sp.dataset, "reference": sp.reference, "scenes": [x.id for x in sp.scenes],
                     "files": sp.files} for s, sp in splits.items()},
        "versions": versions(),
        "git": git_state(),
        "hardware": {**hardware(), "device": ev.device},
        "timings": {**timings, "train_s": trained.record.get("train_s", 0.0) if trained.fresh else 0.0},
    }


def publish(p: Plan, result: dict[str, Any], ev: Evaluated) -> tuple[Path | None, Path | None]:
    """Draw the figure, write the result JSON, regenerate the scenario's leaderboard; their paths."""
    figure = None
    if p.cfg.figure:
        title = f"{p.cfg.model} x {p.cfg.norm} x {p.cfg.adapt} on {p.scenario.name}"
        if ev.per_severity:
            title += f" ({p.scenario.shift['type']}, severity {ev.shown_severity})"
        figure = run_figure(p.result_path.with_suffix(".png"), ev.shown_split, ev.shown, p.space,
                            list(p.bands), title=title)
        result["figure"] = str(figure)
    if ev.maps is not None and result.get("label_free"):
        result["label_free"]["predictions"] = save_predictions(p.result_path.with_suffix(".npz"), ev.maps).name
    write_json(p.result_path, result)
    if p.cfg.leaderboards is False:
        return figure, None
    dest = Path(p.cfg.out) / "leaderboards" if p.cfg.leaderboards is True else Path(p.cfg.leaderboards)
    return figure, write_leaderboards(p.cfg.out, dest, scenarios=[p.scenario.name])[0]


def hardware() -> dict[str, Any]:
    """The machine and torch's thread count (which changes results in the third decimal on a CPU)."""
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
