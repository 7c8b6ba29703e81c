"""The scenes of a scenario's splits, read lazily, and the pixel arithmetic shared by training,
evaluation and prediction (no torch here).

* :func:`load_split` checks a split's bands and checksums its files; scenes are read on first use and
  kept in a small LRU cache.
* :func:`tile_grid` covers every pixel of a scene exactly once with tiles of at most ``patch`` x ``patch``,
  edges included; :func:`pad_to` mirrors a smaller edge tile to full size (its padding never reaches
  the metrics).
* Normalization: scene-level normalizers run on whole scenes (:func:`scene_input`, cached by
  :class:`NormalizedScenes`), pixel- and patch-level ones on every crop or tile (:func:`tile_input`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.core.errors import DataError
from bench.core.labels import IGNORE, EvalSpace, LabelMap
from bench.core.results import key, write_json
from bench.core.results import CACHE, sha256
from bench.data.datasets import Dataset, SceneData
from bench.data.normalizers import Normalizer
from bench.data.scenarios import Scenario


#: what a scene read whole may take as float32 values, a share of the 1.5 GB that a prediction of a 13-band
#: scene is held to (peak RSS, with torch and the model): a scene up to that size is read whole (its
#: scene-level statistics are exact), a larger one in strips (statistics streamed, error below 4 x range /
#: 65,536 per band), so that memory is bounded at every scene size: in evaluation, prediction, the data
#: check before training (:func:`validate_split`) and the normalization sanity gate
WHOLE_BYTES = 128 << 20


def whole_pixels(channels: int) -> int:
    """The most pixels of a ``channels``-band scene that is read whole (2.58 Mpx, 1606 px square, at 13 bands)."""
    return WHOLE_BYTES // (4 * max(channels, 1))


def row_windows(height: int, width: int, channels: int) -> list[tuple[int, int]]:
    """Row ranges of a scene read in pieces of at most :data:`WHOLE_BYTES` (one range where it fits)."""
    rows = max(1, whole_pixels(channels) // max(width, 1))
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


@dataclass
class SceneRef:
    """A scene of a dataset, read on demand in the scenario's bands and window."""

    dataset: Dataset
    id: str
    bands: list[str]
    window: tuple[slice, slice] | None = None
    strict: bool = False

    def shape(self) -> tuple[int, int]:
        """(height, width) of the scene or its window, from metadata."""
        h, w = self.dataset.scene_shape(self.id)
        if self.window is None:
            return h, w
        rows, cols = self.window
        return len(range(h)[rows]), len(range(w)[cols])

    def load(self) -> SceneData:
        """Read the scene (bands, window) from its dataset."""
        return self.dataset.read(self.id, self.bands, self.window, strict=self.strict)

    def load_window(self, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> SceneData:
        """Read rows ``r0:r1`` and columns ``c0:c1`` of the scene (of its window, if it has one) only."""
        rows, cols = self.window or (slice(0, None), slice(0, None))
        row0, col0 = rows.start or 0, cols.start or 0
        c1 = self.shape()[1] if c1 is None else c1
        window = (slice(row0 + r0, row0 + r1), slice(col0 + c0, col0 + c1))
        return self.dataset.read(self.id, self.bands, window, strict=self.strict)


class LazyScenes(Sequence):
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
        self.scenes = LazyScenes(self.refs, self.cache_size)

    def samples(self):
        """``(image, valid)`` pairs, as normalizers fit on them (streamed, one scene at a time)."""
        return ((s.image, s.valid) for s in self.scenes)

    def ids(self) -> list[str]:
        """Scene ids, in order."""
        return [r.id for r in self.refs] if self.refs else [s.id for s in self.scenes]

    def band_count(self) -> int:
        """How many bands each scene has (from its references where the scenes are not read yet)."""
        if self.refs:
            return len(self.refs[0].bands)
        return self.scenes[0].image.shape[0] if len(self.scenes) else 1

    def is_large(self, i: int) -> bool:
        """Scene ``i`` is above :func:`whole_pixels`: it is read in row windows, never whole."""
        if not self.refs:
            return False
        h, w = self.refs[i].shape()
        return h * w > whole_pixels(self.band_count())

    def pieces(self, i: int) -> "Iterator[SceneData]":
        """Scene ``i`` whole (through the cache), or, if it :meth:`is_large`, window after window of rows."""
        if not self.is_large(i):
            yield self.scenes[i]
            return
        ref = self.refs[i]
        for r0, r1 in row_windows(*ref.shape(), self.band_count()):
            yield ref.load_window(r0, r1)

    def shapes(self) -> list[tuple[int, int]]:
        """(height, width) of every scene, from metadata where the scenes are not read yet."""
        return [r.shape() for r in self.refs] if self.refs else [s.image.shape[1:] for s in self.scenes]

    @classmethod
    def of(cls, name: str, scenes: list[SceneData], labels: LabelMap, reference: str) -> "Split":
        """A split of scenes already in memory (benchmarks, notebooks)."""
        split = cls(name, "memory", [], labels, reference)
        split.scenes = scenes
        return split


def load_split(scenario: Scenario, split: str, strict: bool = False, bands: Sequence[str] | None = None) -> Split:
    """The scenes of ``split`` in ``bands`` (default: the scenario's) and window (checked now, read lazily)."""
    ds = scenario.dataset(split)
    source = scenario.sources[split]
    bands = list(bands or scenario.bands)
    ds.band_indices(bands)  # a missing band fails before any training
    where = f"{scenario.origin or scenario.name} [{split}]"
    refs = [SceneRef(ds, sid, bands, source.slices(), strict) for sid in source.select(ds, where)]
    files = {str(p): sha256(p) for ref in refs for p in ds.files(ref.id)}
    return Split(split, ds.name, refs, ds.labels, ds.reference, files)


VALIDATED = CACHE / "validated.json"  # splits read and found good, by content: not read again
_validated: set[str] = set()


def validate_split(split: Split, where: str) -> None:
    """Read every scene of ``split`` (through its cache), so that bad data (a missing band, an unknown label
    code, wrong units, NaN under ``--strict``, image and mask that differ) fails before any model trains,
    naming ``where`` (the scenario file and split) and the file. A split found good before (same files by
    checksum, scenes, bands, window, label mapping and scale), in this process or an earlier one, is not read
    again: the check costs one read of the data per machine, not one per run."""
    key = validation_key(split)
    if key in _validated or key in _read_validated():
        _validated.add(key)
        return
    for i in range(len(split.scenes)):
        try:
            for _ in split.pieces(i):  # a large scene window by window: memory bounded at every size
                pass
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
    _validated.add(key)
    if split.files:  # content known by checksum: remembered across processes
        write_json(VALIDATED, sorted(_read_validated() | {key}))


def validation_key(split: Split) -> str:
    """What decides whether a split reads without error: its files' content and how they are read."""
    ds = split.refs[0].dataset if split.refs else None
    how = {"labels": split.labels.to_dict(), "scale": vars(ds.scale) if ds else None}
    return key([split.dataset, sorted(split.files.values()), how,
                [(r.id, r.bands, str(r.window), r.strict) for r in split.refs]])


def _read_validated() -> set[str]:
    try:
        return set(json.loads(VALIDATED.read_text()))
    except (OSError, ValueError):
        return set()


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


def scene_input(normalizer: Normalizer, image: np.ndarray) -> np.ndarray:
    """The whole-scene step of normalization: scene-level normalizers run here, the others later per tile."""
    return normalizer.transform(image) if normalizer.level == "scene" else image


def tile_input(normalizer: Normalizer, tile: np.ndarray) -> np.ndarray:
    """The per-crop / per-tile step: pixel- and patch-level normalizers run here."""
    return tile if normalizer.level == "scene" else normalizer.transform(tile)


class NormalizedScenes:
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


