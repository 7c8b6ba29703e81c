"""From splits to tensors: random training crops, evaluation tiles, one LightningDataModule.

* Training: ``samples_per_epoch`` random crops of ``patch`` x ``patch`` per epoch, drawn from a
  generator seeded with (seed, epoch), so a run and its resumption see the same crops. Scenes are
  picked in proportion to their area. Targets are project class indices, nodata = ``IGNORE``. A scene
  up to :func:`bench.run.inference.whole_pixels` is read whole once (and cached); from a larger one (a
  full tile) only each crop's window is read, a scene-level normalizer taking its statistics from one
  streamed pass over the scene, so DataLoader workers (``--num-workers``) hold crops, not scenes.
* Evaluation tiles follow :func:`bench.data.splits.tile_grid`; nodata (NaN) becomes 0 for the model.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from bench.core.errors import DataError
from bench.run.inference import finite, whole_pixels
from bench.core.labels import IGNORE, EvalSpace
from bench.data.normalizers import Normalizer
from bench.data.splits import (NormalizedScenes, Split, pad_to, reference_groups, tile_grid, tile_input,
                               train_targets)


def model_input(x: np.ndarray) -> torch.Tensor:
    """A normalized float32 array with NaN for nodata -> tensor with 0 for nodata."""
    return torch.from_numpy(finite(x.astype(np.float32)))  # a copy, made finite in place


class RandomCrops(TorchDataset):
    """``length`` random crops per epoch; call :meth:`set_epoch` before each epoch."""

    def __init__(self, split: Split, normalizer: Normalizer, patch: int, length: int, seed: int) -> None:
        self.split, self.normalizer, self.patch, self.length, self.seed = split, normalizer, patch, length, seed
        self.inputs = NormalizedScenes(split, normalizer)
        self.whole_pixels, self.scene_fns = whole_pixels(split.band_count()), {}
        self.shapes = split.shapes()
        for sid, (h, w) in zip(split.ids(), self.shapes):
            if patch > min(h, w):
                raise DataError(f"patch size {patch} is larger than training scene {sid!r} of dataset "
                                f"{split.dataset!r} ({h} x {w} px); pass a --patch-size of at most "
                                f"{min(h, w) // 32 * 32}")
        area = np.array([h * w for h, w in self.shapes], dtype=np.float64)
        self.weights = area / area.sum()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops from a generator seeded with (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        self.picks = []
        for k in rng.choice(len(self.shapes), size=self.length, p=self.weights):
            h, w = self.shapes[k]
            self.picks.append((int(k), int(rng.integers(0, h - self.patch + 1)),
                               int(rng.integers(0, w - self.patch + 1))))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, r, c = self.picks[i]
        p = self.patch
        h, w = self.shapes[k]
        if self.split.refs and h * w > self.whole_pixels:
            x, codes, valid = self.window(k, r, c)
        else:
            scene = self.split.scenes[k]
            x = self.inputs[k][:, r:r + p, c:c + p]
            codes, valid = scene.codes[r:r + p, c:c + p], scene.valid[r:r + p, c:c + p]
        y = train_targets(codes, valid, self.split.labels)
        return model_input(tile_input(self.normalizer, x)), torch.from_numpy(y.astype(np.int64))

    def window(self, k: int, r: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One crop of a large scene read on its own, normalized with the scene's streamed statistics."""
        ref, p = self.split.refs[k], self.patch
        data = ref.load_window(r, r + p, c, c + p)
        if self.normalizer.level != "scene":  # pixel and patch levels: applied to the crop by tile_input
            return data.image, data.codes, data.valid
        if k not in self.scene_fns:
            rows = range(0, self.shapes[k][0], 512)
            self.scene_fns[k] = self.normalizer.scene_function(
                ref.load_window(r0, min(r0 + 512, self.shapes[k][0])).image for r0 in rows)
        return self.scene_fns[k](data.image), data.codes, data.valid


class Tiles(TorchDataset):
    """Evaluation tiles of every scene, padded to ``patch``; targets are groups of ``space``."""

    def __init__(self, split: Split, normalizer: Normalizer, patch: int, space: EvalSpace) -> None:
        self.split, self.normalizer, self.patch, self.space = split, normalizer, patch, space
        self.inputs = NormalizedScenes(split, normalizer)
        self.items = [(k, *t) for k, shape in enumerate(split.shapes()) for t in tile_grid(*shape, patch)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, r0, c0, r1, c1 = self.items[i]
        scene = self.split.scenes[k]
        x = pad_to(tile_input(self.normalizer, self.inputs[k][:, r0:r1, c0:c1]), self.patch)
        ref = reference_groups(scene.codes[r0:r1, c0:c1], scene.valid[r0:r1, c0:c1], self.split.labels, self.space)
        return model_input(x), torch.from_numpy(pad_to(ref, self.patch, value=IGNORE).astype(np.int64))


class CloudDataModule(pl.LightningDataModule):
    """Training crops and validation tiles of a scenario, normalized by a fitted normalizer."""

    def __init__(self, train: Split, val: Split, normalizer: Normalizer, val_space: EvalSpace, patch: int,
                 batch_size: int, samples_per_epoch: int, seed: int, num_workers: int = 0) -> None:
        super().__init__()
        self.train_set = RandomCrops(train, normalizer, patch, samples_per_epoch, seed)
        self.val_set = Tiles(val, normalizer, patch, val_space)
        self.batch_size, self.num_workers = batch_size, num_workers

    def train_dataloader(self) -> DataLoader:
        self.train_set.set_epoch(self.trainer.current_epoch if self.trainer else 0)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)
