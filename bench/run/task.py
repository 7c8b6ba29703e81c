"""The one LightningModule: semantic segmentation into the four project classes.

Training minimises smp's multiclass Dice loss (nodata ignored) with Adam, as in the study. Validation
folds predictions into the validation reference's label space and logs ``val_miou``, the quantity
that early stopping and checkpointing follow.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
from torch import nn

from bench.core.labels import IGNORE, EvalSpace
from bench.core.metrics import confusion, scores
from bench.models.base import check_input, class_indices



class SegmentationTask(pl.LightningModule):
    def __init__(self, model: nn.Module, in_channels: int, val_space: EvalSpace, lr: float = 1e-3,
                 target_lut: np.ndarray | None = None, channels_last: bool = False) -> None:
        super().__init__()
        self.model, self.in_channels, self.lr, self.channels_last = model, in_channels, lr, channels_last
        if channels_last:
            self.model = model.to(memory_format=torch.channels_last)
        # a fine-tuned model keeps its own outputs: targets fold into the classes it predicts
        lut = np.append(target_lut if target_lut is not None else np.arange(4), [IGNORE] * 252).astype(np.int64)
        self.register_buffer("target_lut", torch.from_numpy(lut), persistent=False)
        self.fold_targets = target_lut is not None and list(target_lut) != list(range(4))
        self.loss = smp.losses.DiceLoss(mode="multiclass", ignore_index=IGNORE)
        self.val_names = val_space.names
        self.register_buffer("val_lut", torch.from_numpy(val_space.class_lut().astype(np.int64)), persistent=False)
        self._cm = np.zeros((len(self.val_names),) * 2, dtype=np.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.fold_targets:
            y = self.target_lut[y.long()]
        loss = self.loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._cm[:] = 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, ref = batch
        pred = self.val_lut[class_indices(self(x))]
        self._cm += confusion(ref.cpu().numpy(), pred.cpu().numpy(), len(self.val_names))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.world_size > 1:  # every rank saw a shard of the validation tiles: add them up
            self._cm = self.all_gather(torch.from_numpy(self._cm)).sum(0).cpu().numpy()
        miou = scores(self._cm, self.val_names)["miou"]
        self.log("val_miou", float(miou) if miou is not None else 0.0, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=self.lr)
