"""From scenario splits to tensors: random training crops, evaluation tiles, one LightningDataModule.

* Training: ``samples_per_epoch`` random crops of ``patch`` x ``patch`` per epoch, drawn from a
  generator seeded with (seed, epoch), so a run and its resumption see the same crops. Scenes are
  picked in proportion to their area. Targets are project class indices, nodata = ``IGNORE``.
* Evaluation: :func:`tile_grid` covers every pixel of a scene exactly once with tiles of at most
  ``patch`` x ``patch``, edges included; a smaller edge tile is padded (mirrored) to full size for the
  model and cropped back, and its padding never reaches the metrics.
* Normalization runs on every crop or tile after reading; nodata (NaN) becomes 0 afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bench.datasets import SceneData, sha256
from bench.errors import DataError
from bench.labels import IGNORE, EvalSpace, LabelMap
from bench.normalizers import Normalizer
from bench.scenarios import Scenario


@dataclass
class Split:
    """The scenes of one split in memory, with their label mapping and the files they came from."""

    name: str
    dataset: str
    scenes: list[SceneData]
    labels: LabelMap
    reference: str
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256

    def samples(self):
        """``(image, valid)`` pairs, as normalizers fit on them."""
        return ((s.image, s.valid) for s in self.scenes)


def load_split(scenario: Scenario, split: str, strict: bool = False) -> Split:
    """Read every scene of ``split`` in the scenario's bands (and window)."""
    ds = scenario.dataset(split)
    source = scenario.sources[split]
    scenes, files = [], {}
    for sid in source.select(ds):
        scenes.append(ds.read(sid, list(scenario.bands), source.slices(), strict=strict))
        files.update({str(p): sha256(p) for p in ds.files(sid)})
    return Split(split, ds.name, scenes, ds.labels, ds.reference, files)


def tile_grid(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """``(row0, col0, row1, col1)`` tiles of at most ``tile`` px covering every pixel exactly once."""
    return [(r, c, min(r + tile, height), min(c + tile, width))
            for r in range(0, height, tile) for c in range(0, width, tile)]


def pad_to(x: np.ndarray, size: int, value: float | None = None) -> np.ndarray:
    """Pad the last two axes at the bottom / right to ``size``: mirrored, or with ``value``."""
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, size - h), (0, size - w)]
    if value is None:
        return np.pad(x, pad, mode="symmetric")
    return np.pad(x, pad, mode="constant", constant_values=value)


def model_input(x: np.ndarray) -> torch.Tensor:
    """A normalized float32 array with NaN for nodata -> tensor with 0 for nodata."""
    return torch.from_numpy(np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0))


def train_targets(scene: SceneData, labels: LabelMap) -> np.ndarray:
    y = labels.train_targets(scene.codes)
    y[~scene.valid] = IGNORE
    return y


class RandomCrops(Dataset):
    """``length`` random crops per epoch; call :meth:`set_epoch` before each epoch."""

    def __init__(self, split: Split, normalizer: Normalizer, patch: int, length: int, seed: int) -> None:
        self.images = [s.image for s in split.scenes]
        self.targets = [train_targets(s, split.labels) for s in split.scenes]
        self.normalizer, self.patch, self.length, self.seed = normalizer, patch, length, seed
        for s in split.scenes:
            h, w = s.image.shape[1:]
            if patch > min(h, w):
                raise DataError(f"patch size {patch} is larger than training scene {s.id!r} of dataset "
                                f"{split.dataset!r} ({h} x {w} px); pass a --patch-size of at most "
                                f"{min(h, w) // 32 * 32}")
        area = np.array([im.shape[1] * im.shape[2] for im in self.images], dtype=np.float64)
        self.weights = area / area.sum()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        self.picks = []
        for k in rng.choice(len(self.images), size=self.length, p=self.weights):
            h, w = self.images[k].shape[1:]
            self.picks.append((int(k), int(rng.integers(0, h - self.patch + 1)),
                               int(rng.integers(0, w - self.patch + 1))))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, r, c = self.picks[i]
        p = self.patch
        x = self.normalizer.transform(self.images[k][:, r:r + p, c:c + p])
        y = self.targets[k][r:r + p, c:c + p]
        return model_input(x), torch.from_numpy(y.astype(np.int64))


class Tiles(Dataset):
    """Evaluation tiles of every scene, padded to ``patch``; targets are groups of ``space``."""

    def __init__(self, split: Split, normalizer: Normalizer, patch: int, space: EvalSpace) -> None:
        self.patch = patch
        self.images, self.refs, self.items = [], [], []
        for k, s in enumerate(split.scenes):
            self.images.append(normalizer.transform(s.image))
            ref = split.labels.reference_groups(s.codes, space)
            ref[~s.valid] = IGNORE
            self.refs.append(ref)
            self.items += [(k, *t) for t in tile_grid(*s.image.shape[1:], patch)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, r0, c0, r1, c1 = self.items[i]
        x = pad_to(self.images[k][:, r0:r1, c0:c1], self.patch)
        y = pad_to(self.refs[k][r0:r1, c0:c1], self.patch, value=IGNORE)
        return model_input(x), torch.from_numpy(y.astype(np.int64))


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
