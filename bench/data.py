"""From scenario splits to tensors: random training crops, evaluation tiles, one LightningDataModule.

* Training: ``samples_per_epoch`` random crops of ``patch`` x ``patch`` per epoch, drawn from a
  generator seeded with (seed, epoch), so a run and its resumption see the same crops. Scenes are
  picked in proportion to their area. Targets are project class indices, nodata = ``IGNORE``.
* Evaluation: :func:`tile_grid` covers every pixel of a scene exactly once with tiles of at most
  ``patch`` x ``patch``, edges included; a smaller edge tile is padded (mirrored) to full size for the
  model and cropped back, and its padding never reaches the metrics.
* Normalization: scene-level normalizers run on whole scenes (once, cached), pixel- and patch-level ones
  on every crop or tile; nodata (NaN) becomes 0 afterwards.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from bench.datasets import Dataset, SceneData, sha256
from bench.errors import DataError
from bench.labels import IGNORE, EvalSpace, LabelMap
from bench.normalizers import Normalizer
from bench.scenarios import Scenario


@dataclass
class SceneRef:
    """A scene of a dataset, read on demand in the scenario's bands and window."""

    dataset: Dataset
    id: str
    bands: list[str]
    window: tuple[slice, slice] | None = None
    strict: bool = False

    def shape(self) -> tuple[int, int]:
        h, w = self.dataset.scene_shape(self.id)
        if self.window is None:
            return h, w
        rows, cols = self.window
        return len(range(h)[rows]), len(range(w)[cols])

    def load(self) -> SceneData:
        return self.dataset.read(self.id, self.bands, self.window, strict=self.strict)


class _Scenes(Sequence):
    """The scenes of a split, read on first use and kept in a small LRU cache."""

    def __init__(self, refs: list[SceneRef], cache_size: int) -> None:
        self.refs, self.cache_size = refs, cache_size
        self._cache: OrderedDict[int, SceneData] = OrderedDict()

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i):  # noqa: ANN001 - int or slice
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        if i in self._cache:
            self._cache.move_to_end(i)
        else:
            self._cache[i] = self.refs[i].load()
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._cache[i]


@dataclass
class Split:
    """The scenes of one split (read lazily), their label mapping and the files they come from."""

    name: str
    dataset: str
    refs: list[SceneRef]
    labels: LabelMap
    reference: str
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256
    cache_size: int = 64

    def __post_init__(self) -> None:
        self.scenes = _Scenes(self.refs, self.cache_size)

    def samples(self):
        """``(image, valid)`` pairs, as normalizers fit on them (streamed, one scene at a time)."""
        return ((s.image, s.valid) for s in self.scenes)

    def ids(self) -> list[str]:
        return [r.id for r in self.refs] if self.refs else [s.id for s in self.scenes]

    def shapes(self) -> list[tuple[int, int]]:
        """(height, width) of every scene, from metadata where the scenes are not read yet."""
        return [r.shape() for r in self.refs] if self.refs else [s.image.shape[1:] for s in self.scenes]

    @classmethod
    def of(cls, name: str, scenes: list[SceneData], labels: LabelMap, reference: str) -> "Split":
        """A split of scenes already in memory (benchmarks, notebooks)."""
        split = cls(name, "memory", [], labels, reference)
        split.scenes = scenes
        return split


def load_split(scenario: Scenario, split: str, strict: bool = False) -> Split:
    """The scenes of ``split`` in the scenario's bands and window (checked now, read lazily)."""
    ds = scenario.dataset(split)
    source = scenario.sources[split]
    ds.band_indices(list(scenario.bands))  # a missing band fails before any training
    refs = [SceneRef(ds, sid, list(scenario.bands), source.slices(), strict) for sid in source.select(ds)]
    files = {str(p): sha256(p) for ref in refs for p in ds.files(ref.id)}
    return Split(split, ds.name, refs, ds.labels, ds.reference, files)


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


def scene_input(normalizer: Normalizer, image: np.ndarray) -> np.ndarray:
    """The whole-scene step of normalization: scene-level normalizers run here, the others later per tile."""
    return normalizer.transform(image) if normalizer.level == "scene" else image


def tile_input(normalizer: Normalizer, tile: np.ndarray) -> np.ndarray:
    """The per-crop / per-tile step: pixel- and patch-level normalizers run here."""
    return tile if normalizer.level == "scene" else normalizer.transform(tile)


class _NormalizedScenes:
    """Scene-level normalization of a split's scenes, computed once per scene (LRU like the raw scenes)."""

    def __init__(self, split: "Split", normalizer: Normalizer) -> None:
        self.split, self.normalizer = split, normalizer
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getitem__(self, k: int) -> np.ndarray:
        if self.normalizer.level != "scene":
            return self.split.scenes[k].image
        if k not in self._cache:
            self._cache[k] = scene_input(self.normalizer, self.split.scenes[k].image)
            while len(self._cache) > self.split.cache_size:
                self._cache.popitem(last=False)
        return self._cache[k]


def train_targets(codes: np.ndarray, valid: np.ndarray, labels: LabelMap) -> np.ndarray:
    """Project class index per pixel, IGNORE where nodata."""
    y = labels.train_targets(codes)
    y[~valid] = IGNORE
    return y


def reference_groups(codes: np.ndarray, valid: np.ndarray, labels: LabelMap, space: EvalSpace) -> np.ndarray:
    """Group of ``space`` per reference pixel, IGNORE where nodata."""
    ref = labels.reference_groups(codes, space)
    ref[~valid] = IGNORE
    return ref


class RandomCrops(TorchDataset):
    """``length`` random crops per epoch; call :meth:`set_epoch` before each epoch."""

    def __init__(self, split: Split, normalizer: Normalizer, patch: int, length: int, seed: int) -> None:
        self.split, self.normalizer, self.patch, self.length, self.seed = split, normalizer, patch, length, seed
        self.inputs = _NormalizedScenes(split, normalizer)
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
        scene = self.split.scenes[k]
        x = tile_input(self.normalizer, self.inputs[k][:, r:r + p, c:c + p])
        y = train_targets(scene.codes[r:r + p, c:c + p], scene.valid[r:r + p, c:c + p], self.split.labels)
        return model_input(x), torch.from_numpy(y.astype(np.int64))


class Tiles(TorchDataset):
    """Evaluation tiles of every scene, padded to ``patch``; targets are groups of ``space``."""

    def __init__(self, split: Split, normalizer: Normalizer, patch: int, space: EvalSpace) -> None:
        self.split, self.normalizer, self.patch, self.space = split, normalizer, patch, space
        self.inputs = _NormalizedScenes(split, normalizer)
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
