"""Training with Lightning, or reuse of an earlier trained model with the same identity.

One trained model lives in one folder (see :mod:`bench.core.results`). ``model.pt`` exists only once
training has finished; until then ``checkpoints/last.ckpt`` (written at the end of every epoch) lets
the same run resume. Checkpoints are read with ``weights_only=True``; a damaged one is set aside.
A lock beside the folder makes a second process wait for a model being trained, then reuse it.

Logs: Lightning's CSV logger always, and wandb through Lightning's ``WandbLogger`` (offline by default:
``wandb sync <folder>`` uploads it later). Under a multi-process strategy every rank trains and only
rank 0 writes ``model.pt``; the others wait for it at a barrier.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from bench.core.progress import Progress
from bench.core.results import file_lock, sha256, write_json
from bench.data.normalizers import Normalizer
from bench.data.splits import Split
from bench.run.checkpoints import load_torch, save_torch
from bench.run.loaders import CloudDataModule
from bench.run.plan import MODEL_FILE, Plan, run_device
from bench.run.task import SegmentationTask


@dataclass
class Trained:
    """A trained model with its fitted normalizer, and what its training recorded."""

    module: nn.Module
    normalizer: Normalizer
    weights: str
    record: dict[str, Any]
    path: Path
    fresh: bool  # trained in this call (False: loaded from an earlier run)
    rank: int = 0  # process rank under a multi-process strategy (only rank 0 evaluates)


class NormalizerInCheckpoint(pl.Callback):
    """Saves the fitted normalizer's state inside every Lightning checkpoint."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.state = normalizer.state_dict()

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict) -> None:
        """Add the normalizer's state to ``checkpoint``."""
        checkpoint["normalizer"] = self.state


class TrainingProgress(pl.Callback):
    """One progress display for a whole training (not one bar per epoch): epoch k/N, steps, the best val
    mIoU so far and an ETA; plain periodic lines when the output is not a terminal."""

    def __init__(self, p: Plan, checkpoint: ModelCheckpoint) -> None:
        self.recipe, self.checkpoint, self.enabled = p.recipe, checkpoint, p.cfg.progress
        self.progress: Progress | None = None
        self.best: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Start the display at the first epoch of this process (after a resume: where it resumed)."""
        if self.progress is None:
            total = self.recipe.epochs * trainer.num_training_batches
            if self.recipe.max_steps > 0:
                total = min(total, self.recipe.max_steps)
            score = self.checkpoint.best_model_score
            self.best = float(score) if score is not None else None
            self.progress = Progress(total, "steps", "", initial=trainer.global_step,
                                     enabled=self.enabled and trainer.is_global_zero)
        self.progress.update(0, desc=f"epoch {trainer.current_epoch + 1}/{self.recipe.epochs}")

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        """One step done."""
        self.progress.update(1)

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Show the best validation mIoU so far."""
        value = trainer.callback_metrics.get("val_miou")
        if value is not None and self.progress is not None:
            self.best = float(value) if self.best is None else max(self.best, float(value))
            self.progress.update(0, status=f"best val mIoU {self.best:.3f}")

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Close the display."""
        if self.progress is not None:
            self.progress.close()


def rank() -> int:
    """This process's rank under a multi-process strategy (0 otherwise)."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def train_or_load(p: Plan) -> Trained:
    """The model ``p`` evaluates: a pretrained one as it comes (zero-shot), else the trained or fine-tuned
    model of ``p``'s identity, loaded from ``p.train_dir`` if finished, else trained there."""
    if p.mode == "zero-shot":
        return pretrained(p)
    if rank():  # a process that a multi-process strategy started: rank 0 holds the lock already
        return load_trained(p) or fit(p)
    with file_lock(p.train_dir.with_name(p.train_dir.name + ".lock")):
        return load_trained(p) or fit(p)


def build(p: Plan) -> tuple[Any, Normalizer]:
    """A fresh model (its :class:`bench.models.base.Built`; a pretrained one with its weights) and an
    unfitted normalizer for ``p``."""
    model, norm, _ = p.entries()
    if p.mode == "trained" and p.cfg.weights:  # --weights random | imagenet
        model = replace(model, settings={**model.settings, "encoder_weights": None if p.cfg.weights == "random" else "imagenet"})
    runtime: dict[str, Any] = {"in_channels": len(p.bands)}
    if p.weight_files:
        runtime["weight_files"] = [str(f) for f in p.weight_files]
    return model.build(**runtime), norm.build()


def pretrained(p: Plan) -> Trained:
    """A pretrained model as it comes, with its own preprocessing (the ``native`` normalizer passes the
    reflectance through): nothing is trained or written."""
    built, normalizer = build(p)
    record = {"mode": "zero-shot", "steps": 0, "train_s": 0.0, "weights": built.weights,
              "weight_files": {str(f): sha256(f) for f in p.weight_files}}
    return Trained(built.module, normalizer, built.weights, record, p.weight_files[0] if p.weight_files else Path(),
                   fresh=False)


def load_trained(p: Plan) -> Trained | None:
    """The finished model of ``p``, or None (not trained yet, ``--force``, or set aside as damaged)."""
    final = p.train_dir / MODEL_FILE
    if p.cfg.force or not final.exists():
        return None
    state = load_torch(final)
    if state is None:
        return None
    built, normalizer = build(p)
    built.module.load_state_dict(state["state_dict"])
    normalizer.load_state_dict(state["normalizer"])
    print(f"reusing trained model {final}", flush=True)
    return Trained(built.module, normalizer, state["weights"], state["record"], final, fresh=False, rank=rank())


def fit(p: Plan) -> Trained:
    """Fit the normalizer on the training split, then train the model (resuming from ``last.ckpt``)."""
    t0 = time.perf_counter()
    pl.seed_everything(p.cfg.seed, workers=True, verbose=False)
    built, normalizer = build(p)
    built.module.train()  # a pretrained model comes in eval mode, and Lightning keeps submodules' modes
    normalizer.fit(p.splits["train"].samples())
    val_space = p.splits["val"].labels.finest_space()
    datamodule = CloudDataModule(p.splits["train"], p.splits["val"], normalizer, val_space, p.recipe.patch_size,
                                 p.recipe.batch_size, samples_per_epoch(p), p.cfg.seed, p.cfg.num_workers)
    task = SegmentationTask(built.module, len(p.bands), val_space, lr=p.recipe.lr, target_lut=p.contract.target_lut(),
                            channels_last=training_channels_last(p))
    checkpoint = ModelCheckpoint(dirpath=p.train_dir / "checkpoints", filename="best", monitor="val_miou",
                                 mode="max", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=False)
    trainer = make_trainer(p, checkpoint, NormalizerInCheckpoint(normalizer), TrainingProgress(p, checkpoint),
                           last_checkpoint(p))
    resume = resume_from(p.train_dir / "checkpoints" / "last.ckpt") if not p.cfg.force else None
    if not rank():
        write_json(p.train_dir / "train.json", {"identity": p.train_id, "status": "training"})
    logs = run_trainer(p, trainer, task, datamodule, resume)
    if trainer.global_rank != 0:  # rank 0 saves; wait until model.pt is there, then go on as a reuse
        trainer.strategy.barrier("model.pt written")
        return Trained(built.module, normalizer, built.weights, {}, p.train_dir / MODEL_FILE, True, trainer.global_rank)
    best = load_torch(Path(checkpoint.best_model_path)) if checkpoint.best_model_path else None
    if best is not None:  # back to the weights of the best validation mIoU
        task.load_state_dict(best["state_dict"])
    record = training_record(p, trainer, checkpoint, datamodule, resume, time.perf_counter() - t0)
    record.update(logs=logs, weights=built.weights, val_label_space=val_space.to_dict(), mode=p.mode)
    final = save_model(p, built, normalizer, record)
    if trainer.world_size > 1:
        trainer.strategy.barrier("model.pt written")
    return Trained(built.module, normalizer, built.weights, record, final, fresh=True)


def training_channels_last(p: Plan) -> bool:
    """channels_last for training with bf16 or on a GPU. On an fp32 CPU it was 1.18x faster per step here
    (``benchmarks/precision.py``) but changes the rounding of the trained weights, and a training run
    follows another path from there (the default ``bench run`` gave mIoU 0.419 instead of 0.489): fp32 CPU
    training keeps the contiguous format, so that it reproduces the models behind the committed boards."""
    return p.cfg.channels_last and (p.recipe.precision == "bf16" or run_device(p.cfg) == "cuda")


def last_checkpoint(p: Plan) -> ModelCheckpoint:
    """``checkpoints/last.ckpt`` after every epoch's validation, improved or not (a checkpoint that follows
    val mIoU writes ``last`` only when it improves: a run killed later would resume epochs back). It runs
    after the best-model checkpoint, so it holds that one's state too. An interrupt loses at most the
    current epoch: a mid-epoch state is not saved, since the next epoch's crops are drawn afresh."""
    return ModelCheckpoint(dirpath=p.train_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False, save_on_train_epoch_end=False)


def make_trainer(p: Plan, checkpoint: ModelCheckpoint, *callbacks: pl.Callback) -> pl.Trainer:
    """The Lightning trainer of ``p``'s recipe and hardware, checkpointing and stopping on val mIoU."""
    loggers: list[Logger] = [CSVLogger(p.train_dir, name="logs")]  # logs/version_N: a resume keeps earlier logs
    if p.cfg.wandb != "off":
        loggers.append(wandb_logger(p))
    stop = EarlyStopping("val_miou", mode="max", patience=p.recipe.patience, check_on_train_epoch_end=False)
    return pl.Trainer(
        max_epochs=p.recipe.epochs, max_steps=p.recipe.max_steps, accelerator=p.cfg.accelerator,
        devices=p.cfg.devices, strategy=p.cfg.strategy, num_nodes=p.cfg.num_nodes, deterministic=True,
        num_sanity_val_steps=0, reload_dataloaders_every_n_epochs=1, log_every_n_steps=1,
        precision="bf16-mixed" if p.recipe.precision == "bf16" else "32-true",
        enable_progress_bar=False, enable_model_summary=False, logger=loggers,
        callbacks=[checkpoint, stop, *callbacks, *p.cfg.callbacks])


def run_trainer(p: Plan, trainer: pl.Trainer, task: SegmentationTask, datamodule: CloudDataModule,
                resume: Path | None) -> dict[str, Any]:
    """``trainer.fit``; Ctrl-C becomes a KeyboardInterrupt that says how to resume. Returns the logs."""
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        return logs_of(trainer) if trainer.global_rank == 0 else {}
    except SystemExit as exit_:  # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown
        raise KeyboardInterrupt(f"training interrupted; run the same command again to resume from "
                                f"{p.train_dir / 'checkpoints' / 'last.ckpt'}") from exit_
    finally:
        if p.cfg.wandb != "off":
            import wandb

            wandb.finish()


def training_record(p: Plan, trainer: pl.Trainer, checkpoint: ModelCheckpoint, datamodule: CloudDataModule,
                    resume: Path | None, train_s: float) -> dict[str, Any]:
    """What a finished training recorded: steps, best val mIoU, early stop, speed, strategy."""
    steps = trainer.global_step
    return {
        "epochs": trainer.current_epoch, "steps": steps, "resumed_from": str(resume) if resume else None,
        "best_val_miou": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "best_checkpoint": checkpoint.best_model_path or None,
        "stopped_early": bool(trainer.should_stop and trainer.current_epoch < p.recipe.epochs),
        "train_s": train_s, "images_per_s": steps * p.recipe.batch_size / train_s if train_s else None,
        "samples_per_epoch": datamodule.train_set.length, "strategy": type(trainer.strategy).__name__,
        "world_size": trainer.world_size, "accelerator": type(trainer.accelerator).__name__,
        "precision": trainer.precision, "channels_last": training_channels_last(p),
    }


def save_model(p: Plan, built: Any, normalizer: Normalizer, record: dict[str, Any]) -> Path:
    """Write ``model.pt`` (weights, normalizer state, record) and mark ``train.json`` finished."""
    final = save_torch(p.train_dir / MODEL_FILE, {
        "format": 1, "state_dict": built.module.state_dict(), "normalizer": normalizer.state_dict(),
        "weights": built.weights, "record": record, "in_channels": len(p.bands),
        "bands": list(p.bands), "model": p.cfg.model, "norm": p.cfg.norm, "mode": p.mode})
    write_json(p.train_dir / "train.json", {"identity": p.train_id, "status": "finished", **record})
    return final


def wandb_logger(p: Plan) -> Logger:
    """Lightning's WandbLogger, offline unless ``--wandb online``; a resumed training continues its run."""
    from pytorch_lightning.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(project=os.environ.get("WANDB_PROJECT", "cloudbench"), name=p.train_dir.name,
                         id=p.train_dir.name[-10:],  # the train key prefix: one wandb run per trained model
                         save_dir=str(p.train_dir), offline=p.cfg.wandb == "offline", resume="allow",
                         config={"model": p.cfg.model, "norm": p.cfg.norm, "seed": p.cfg.seed,
                                 "recipe": p.train_id["recipe"], "bands": p.train_id["bands"]})
    # Lightning always passes anonymous=None, which wandb >= 0.19 warns about on every run; its init
    # arguments are only reachable through this attribute
    logger._wandb_init.pop("anonymous", None)
    return logger


def logs_of(trainer: pl.Trainer) -> dict[str, Any]:
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


def resume_from(last: Path) -> Path | None:
    """``last.ckpt`` if it exists and loads (weights only); a damaged one is set aside."""
    if not last.exists() or load_torch(last) is None:
        return None
    print(f"resuming from {last}", flush=True)
    return last


def samples_per_epoch(p: Plan) -> int:
    """Recipe value, else one crop per patch-sized area of valid training pixels (at least one batch)."""
    if p.recipe.samples_per_epoch:
        return int(p.recipe.samples_per_epoch)
    train: Split = p.splits["train"]
    valid = sum(int(s.valid.sum()) for s in train.scenes)
    return max(p.recipe.batch_size, -(-valid // p.recipe.patch_size ** 2))
