"""Training throughput through the harness (Lightning module + data module) against a bare PyTorch
loop over the same tensors, same model, batch and steps; runs alternate to share the machine's noise.

    python benchmarks/train_overhead.py [--patch 128 --batch 16 --steps 8 --rounds 3]

Prints images/s of each and the ratio harness / bare (target >= 0.95).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch

from common import alternate, report

from bench.data.splits import load_split
from bench.run.loaders import CloudDataModule
from bench.core.labels import IGNORE
from bench.core.registry import get_registry
from bench.data.scenarios import load_scenario
from bench.run.task import SegmentationTask

warnings.filterwarnings("ignore")
logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    scenario = load_scenario("samples_intra")
    train, val = load_split(scenario, "train"), load_split(scenario, "val")
    norm = get_registry().get("norm", "percentile").build().fit(train.samples())
    space = val.labels.finest_space()
    dm = CloudDataModule(train, val, norm, space, args.patch, args.batch, args.batch * args.steps, seed=0)
    batches = [(x, y) for x, y in torch.utils.data.DataLoader(dm.train_set, batch_size=args.batch)]

    def model():
        torch.manual_seed(0)
        return get_registry().get("model", "unet_mnv2").build(in_channels=6).module

    def bare() -> float:
        m = model().train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        loss_fn = smp.losses.DiceLoss(mode="multiclass", ignore_index=IGNORE)
        t0 = time.perf_counter()
        for x, y in batches:
            opt.zero_grad()
            loss_fn(m(x), y).backward()
            opt.step()
        return args.batch * len(batches) / (time.perf_counter() - t0)

    def harness() -> float:
        task = SegmentationTask(model(), 6, space)
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", limit_val_batches=0, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
        timer = {}

        class Clock(pl.Callback):  # time the training loop itself, not the Trainer's set-up
            def on_train_epoch_start(self, *a):
                timer["t0"] = time.perf_counter()

            def on_train_epoch_end(self, *a):
                timer["t1"] = time.perf_counter()

        trainer.callbacks.append(Clock())
        trainer.fit(task, datamodule=dm)
        return args.batch * args.steps / (timer["t1"] - timer["t0"])

    best = alternate({"harness": harness, "bare": bare}, args.rounds)
    print(f"patch {args.patch}, batch {args.batch}, {args.steps} steps x {args.rounds} rounds (best of each)")
    report("harness", best["harness"], "bare", best["bare"], "images/s", 0.95)


if __name__ == "__main__":
    main()
