"""Training with Lightning, or reuse of an earlier trained model with the same identity.

One trained model lives in one folder (see :mod:`bench.results`). ``model.pt`` exists only once
training has finished; until then ``checkpoints/last.ckpt`` (written at the end of every epoch) lets
the same run resume. Checkpoints are read with ``weights_only=True``; a damaged one is set aside.
A lock beside the folder makes a second process wait for a model being trained, then reuse it.

Logs: Lightning's CSV logger always, and wandb through Lightning's ``WandbLogger`` (offline by default:
``wandb sync <folder>`` uploads it later). Under a multi-process strategy every rank trains and only
rank 0 writes ``model.pt``; the others wait for it at a barrier.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from lightning_fabric.utilities.rank_zero import _get_rank
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from bench.data import CloudDataModule, Split
from bench.labels import EvalSpace
from bench.normalizers import Normalizer
from bench.registry import Entry
from bench.results import file_lock, load_torch, save_torch, write_json
from bench.scenarios import Scenario
from bench.task import SegmentationTask

MODEL_FILE = "model.pt"


@dataclass
class Trained:
    module: nn.Module
    normalizer: Normalizer
    weights: str
    record: dict[str, Any]
    path: Path
    fresh: bool  # trained in this call (False: loaded from an earlier run)
    rank: int = 0  # process rank under a multi-process strategy (only rank 0 evaluates)


class _NormalizerInCheckpoint(pl.Callback):
    """Saves the fitted normalizer's state inside every Lightning checkpoint."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.state = normalizer.state_dict()

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["normalizer"] = self.state


def _build(model_entry: Entry, norm_entry: Entry, in_channels: int):
    built = model_entry.build(in_channels=in_channels)
    return built, norm_entry.build()


def train_or_load(cfg: Any, recipe: dict[str, Any], model_entry: Entry, norm_entry: Entry, scenario: Scenario,
                  splits: dict[str, Split], space: EvalSpace, train_dir: Path, train_id: dict[str, Any]) -> Trained:
    """The trained model of this identity: loaded from ``train_dir`` if finished, else trained there."""
    if _get_rank():  # a process that a multi-process strategy started: rank 0 holds the lock already
        return _train_or_load(cfg, recipe, model_entry, norm_entry, scenario, splits, space, train_dir, train_id)
    with file_lock(train_dir.with_name(train_dir.name + ".lock")):
        return _train_or_load(cfg, recipe, model_entry, norm_entry, scenario, splits, space, train_dir, train_id)


def _train_or_load(cfg: Any, recipe: dict[str, Any], model_entry: Entry, norm_entry: Entry, scenario: Scenario,
                   splits: dict[str, Split], space: EvalSpace, train_dir: Path, train_id: dict[str, Any]) -> Trained:
    final = train_dir / MODEL_FILE
    in_channels = len(scenario.bands)
    if final.exists() and not cfg.force:
        state = load_torch(final)
        if state is not None:
            built, normalizer = _build(model_entry, norm_entry, in_channels)
            built.module.load_state_dict(state["state_dict"])
            normalizer.load_state_dict(state["normalizer"])
            print(f"reusing trained model {final}", flush=True)
            return Trained(built.module, normalizer, state["weights"], state["record"], final, fresh=False,
                           rank=_get_rank() or 0)

    t0 = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    built, normalizer = _build(model_entry, norm_entry, in_channels)
    normalizer.fit(splits["train"].samples())
    val_space = splits["val"].labels.finest_space()
    datamodule = CloudDataModule(splits["train"], splits["val"], normalizer, val_space, recipe["patch_size"],
                                 recipe["batch_size"], _samples_per_epoch(recipe, splits["train"]), cfg.seed,
                                 cfg.num_workers)
    task = SegmentationTask(built.module, in_channels, val_space, lr=recipe["lr"])

    ckpt_dir = train_dir / "checkpoints"
    resume = _resume_from(ckpt_dir / "last.ckpt") if not cfg.force else None
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_miou", mode="max",
                                 save_top_k=1, save_last=True, enable_version_counter=False,
                                 save_on_train_epoch_end=False)
    loggers = [CSVLogger(train_dir, name="logs")]  # logs/version_N: a resumed run keeps earlier logs
    if cfg.wandb != "off":
        loggers.append(_wandb_logger(cfg, train_dir, train_id))
    trainer = pl.Trainer(
        max_epochs=recipe["epochs"], max_steps=recipe["max_steps"], accelerator=cfg.accelerator,
        devices=cfg.devices, strategy=cfg.strategy, num_nodes=cfg.num_nodes, deterministic=True,
        num_sanity_val_steps=0, reload_dataloaders_every_n_epochs=1, log_every_n_steps=1,
        enable_progress_bar=cfg.progress, enable_model_summary=False, logger=loggers,
        callbacks=[checkpoint, EarlyStopping("val_miou", mode="max", patience=recipe["patience"],
                                 check_on_train_epoch_end=False),
                   _NormalizerInCheckpoint(normalizer), *cfg.callbacks],
    )
    if not _get_rank():
        write_json(train_dir / "train.json", {"identity": train_id, "status": "training"})
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        logs = _logs(trainer, train_dir) if trainer.global_rank == 0 else {}
    except SystemExit as exit_:  # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown
        raise KeyboardInterrupt(f"training interrupted; run the same command again to resume from "
                                f"{ckpt_dir / 'last.ckpt'}") from exit_
    finally:
        if cfg.wandb != "off":
            import wandb

            wandb.finish()
    if trainer.global_rank != 0:  # rank 0 saves; wait until model.pt is there, then go on as a reuse
        trainer.strategy.barrier("model.pt written")
        return Trained(built.module, normalizer, built.weights, {}, final, fresh=True, rank=trainer.global_rank)

    best = checkpoint.best_model_path
    best_state = load_torch(Path(best)) if best else None
    if best_state is not None:  # back to the weights of the best validation mIoU
        task.load_state_dict(best_state["state_dict"])
    train_s = time.perf_counter() - t0
    steps = trainer.global_step
    record = {
        "epochs": trainer.current_epoch, "steps": steps, "resumed_from": str(resume) if resume else None,
        "best_val_miou": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "best_checkpoint": best or None, "stopped_early": bool(trainer.should_stop and trainer.current_epoch < recipe["epochs"]),
        "train_s": train_s, "images_per_s": steps * recipe["batch_size"] / train_s if train_s else None,
        "samples_per_epoch": datamodule.train_set.length, "val_label_space": val_space.to_dict(),
        "logs": logs, "weights": built.weights,
        "strategy": type(trainer.strategy).__name__, "world_size": trainer.world_size,
        "accelerator": type(trainer.accelerator).__name__,
    }
    save_torch(final, {"format": 1, "state_dict": built.module.state_dict(), "normalizer": normalizer.state_dict(),
                       "weights": built.weights, "record": record, "in_channels": in_channels,
                       "bands": list(scenario.bands), "model": model_entry.name, "norm": norm_entry.name})
    write_json(train_dir / "train.json", {"identity": train_id, "status": "finished", **record})
    if trainer.world_size > 1:
        trainer.strategy.barrier("model.pt written")
    return Trained(built.module, normalizer, built.weights, record, final, fresh=True)


def _wandb_logger(cfg: Any, train_dir: Path, train_id: dict[str, Any]) -> pl.loggers.Logger:
    """Lightning's WandbLogger, offline unless ``--wandb online``; a resumed training continues its run."""
    import os

    from pytorch_lightning.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    run_id = f"{train_dir.name[-10:]}"  # the train key prefix: one wandb run per trained model
    logger = WandbLogger(project=os.environ.get("WANDB_PROJECT", "cloudbench"), name=train_dir.name, id=run_id,
                       save_dir=str(train_dir), offline=cfg.wandb == "offline", resume="allow",
                       config={"model": cfg.model, "norm": cfg.norm, "seed": cfg.seed,
                               "recipe": train_id["recipe"], "bands": train_id["bands"]})
    logger._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None, which wandb >= 0.19 warns about
    return logger


def _logs(trainer: pl.Trainer, train_dir: Path) -> dict[str, Any]:
    """Where this training's logs are: Lightning's CSV file, and the wandb run folder or URL."""
    out: dict[str, Any] = {"csv": None, "wandb": None}
    for lg in trainer.loggers:
        if isinstance(lg, CSVLogger):
            out["csv"] = str(Path(lg.log_dir) / "metrics.csv")
        elif type(lg).__name__ == "WandbLogger":
            run = lg.experiment
            out["wandb"] = str(Path(run.dir).parent)
            out["wandb_mode"] = "offline" if getattr(run, "offline", getattr(run.settings, "_offline", False)) else "online"
            out["wandb_url"] = getattr(run, "url", None)
    return out


def _resume_from(last: Path) -> Path | None:
    """``last.ckpt`` if it exists and loads (weights only); a damaged one is set aside."""
    if not last.exists():
        return None
    if load_torch(last) is None:
        return None
    print(f"resuming from {last}", flush=True)
    return last


def _samples_per_epoch(recipe: dict[str, Any], train: Split) -> int:
    """Recipe value, else one crop per patch-sized area of valid training pixels (at least one batch)."""
    if recipe.get("samples_per_epoch"):
        return int(recipe["samples_per_epoch"])
    valid = sum(int(s.valid.sum()) for s in train.scenes)
    return max(recipe["batch_size"], -(-valid // recipe["patch_size"] ** 2))
