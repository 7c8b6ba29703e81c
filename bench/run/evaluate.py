"""Evaluation: predict every test scene tile by tile, fold into the evaluation label space, score.

Returns the overall confusion matrix and scores over all valid test pixels, the same per scene, the
confusion matrix of every ``BLOCK`` x ``BLOCK`` block of every scene (the resampling units of the paired
bootstrap in :mod:`bench.boards.stats`), and the per-scene predictions (for figures).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from bench.data.splits import SceneRef, Split, reference_groups
from bench.run.inference import whole_pixels as whole_pixels_of
from bench.run.inference import (FastPaths, HeldRows, Tiling, class_batches, input_batches, model_tiling,
                                 predict_strips, scene_model_strips, tile_stream)
from bench.models.adapters import Adapter, NoAdaptation
from bench.core.label_free import fold
from bench.core.labels import IGNORE, N_CLASSES, EvalSpace, LabelMap
from bench.core.metrics import (BOUNDARY_PX, NAN_RULE, ProbabilityTally, boundary_confusions, boundary_summary,
                                 confusion, cover_summary, scores)
from bench.data.normalizers import Normalizer
from bench.models.base import Contract, SceneModel
from bench.run.label_free import LabelFree, SceneSignals


#: side in pixels of the spatial blocks that the paired bootstrap resamples (blocks keep nearby,
#: correlated pixels together; a scene edge gives smaller blocks)
BLOCK = 64


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    per_scene: dict[str, dict[str, Any]]
    blocks: dict[str, np.ndarray]  # "<scene>@<row>,<col>" -> (k, k) confusion of that block
    per_month: dict[str, dict[str, Any]]  # "MM" -> scores over the scenes acquired in that month
    predictions: dict[str, np.ndarray]  # scene id -> (H, W) group index, IGNORE at nodata
    references: dict[str, np.ndarray]  # scene id -> (H, W) group index, IGNORE at nodata
    label_free: dict[str, Any] | None = None  # signals and estimates (bench.run.label_free), when asked for


def block_confusions(scene: str, reference: np.ndarray, prediction: np.ndarray, k: int,
                     block: int = BLOCK) -> dict[str, np.ndarray]:
    """``{"<scene>@<row0>,<col0>": (k, k) confusion}`` of each block holding at least one valid pixel."""
    h, w = reference.shape
    nbc = -(-w // block)
    rows, cols = np.indices((h, w))
    ids = ((rows // block) * nbc + cols // block).ravel()
    ref, pred = reference.ravel().astype(np.int64), prediction.ravel().astype(np.int64)
    keep = ref != IGNORE
    nb = -(-h // block) * nbc
    counts = np.bincount(ids[keep] * k * k + ref[keep] * k + pred[keep], minlength=nb * k * k).reshape(nb, k, k)
    return {f"{scene}@{b // nbc * block},{b % nbc * block}": counts[b] for b in np.flatnonzero(counts.sum((1, 2)))}


@dataclass
class SceneInput:
    """How one test scene reaches the model: rows ``r0:r1`` normalized on demand, the reference beside them."""

    id: str
    height: int
    width: int
    read: Callable[[int, int], np.ndarray]  # rows -> normalized (C, h, W), NaN = nodata
    labels: Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # rows -> (codes, valid)
    meta: dict[str, Any]
    strips: list[tuple[int, int]]


def scene_inputs(test: Split, normalizer: Normalizer, tiling: Tiling, whole_pixels: int | None = None):
    """Each test scene as a :class:`SceneInput`: a scene up to ``whole_pixels`` (default: by its band count,
    :func:`bench.run.inference.whole_pixels`) is read whole (exact scene statistics), a larger one strip by
    strip from its dataset (streamed statistics)."""
    whole_pixels = whole_pixels if whole_pixels is not None else whole_pixels_of(test.band_count())
    for i, shape in enumerate(test.shapes()):
        if not test.refs or shape[0] * shape[1] <= whole_pixels:
            scene = test.scenes[i]
            image = scene.image if normalizer.level == "patch" else normalizer.transform(scene.image)
            yield SceneInput(scene.id, *shape, lambda r0, r1, image=image: image[:, r0:r1],
                             lambda r0, r1, scene=scene: (scene.codes[r0:r1], scene.valid[r0:r1]), scene.meta,
                             [(0, shape[0])])
        else:
            yield strip_input(test.refs[i], normalizer, tiling, shape, whole_pixels)


def strip_input(ref: SceneRef, normalizer: Normalizer, tiling: Tiling, shape: tuple[int, int],
                whole_pixels: int) -> SceneInput:
    """A large scene read strip by strip through its dataset's windowed reads."""
    strips = tiling.strips(*shape, whole_pixels=whole_pixels)
    held = HeldRows()
    fn = normalizer.scene_function(ref.load_window(r0, r1).image for r0, r1 in strips)
    first = ref.load_window(0, 1)

    def read(r0: int, r1: int) -> np.ndarray:
        data = ref.load_window(r0, r1)
        held.keep(r0, data.codes, data.valid)
        return fn(data.image)

    return SceneInput(ref.id, *shape, read, held.take, first.meta, strips)


def predicted_strips(model: nn.Module | SceneModel, scene: SceneInput, tiling: Tiling, batch_size: int,
                     device: str, fast: FastPaths, tile_fn=None, contract: Contract | None = None,  # noqa: ANN001
                     probabilities: bool = False, flip: bool = False):  # noqa: ANN201
    """``(row0, row1, outputs)`` of each strip of ``scene``: ``outputs[0]`` the project class index per pixel,
    then (with ``probabilities``, for a model that gives them) the probability of each project class, then
    (with ``flip``, torch models) whether the prediction of the flipped input agrees."""
    if not isinstance(model, nn.Module):
        yield from scene_model_strips(scene.read, scene.height, scene.width, tiling, model, contract or Contract(),
                                      scene.strips, probabilities=probabilities, scene=(scene.id, scene.meta))
        return
    run = class_batches(fast, fast.prepare(model, device), device, probabilities, flip)
    yield from predict_strips(scene.read, scene.height, scene.width, tiling, run, batch_size, tile_fn,
                              scene.strips)


def predict_scene(model: nn.Module | SceneModel, image: np.ndarray, patch: int, batch_size: int,
                  device: str = "cpu", tile_fn=None, contract: Contract | None = None,  # noqa: ANN001
                  fast: FastPaths | None = None) -> np.ndarray:
    """(H, W) project class index of a (C, H, W) normalized scene in memory (NaN = nodata)."""
    h, w = image.shape[1:]
    scene = SceneInput("scene", h, w, lambda r0, r1: image[:, r0:r1], None, {}, [(0, h)])
    return np.concatenate([p[0] for _, _, p in predicted_strips(model, scene, model_tiling(contract, patch), batch_size, device,
                                                                fast or FastPaths(), tile_fn, contract)])


def group_maps(scene: SceneInput, strips, lut: np.ndarray, labels: LabelMap,  # noqa: ANN001
               space: EvalSpace, signals: SceneSignals | None = None,
               tally: ProbabilityTally | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) predicted and reference groups of ``space`` of one scene from its predicted ``strips``,
    IGNORE at nodata; ``signals`` sees the outputs of the pixels that are scored, never their reference;
    ``tally`` counts the model's probabilities (where it gives them) against the reference."""
    pred = np.empty((scene.height, scene.width), dtype=np.uint8)
    ref = np.empty_like(pred)
    for r0, r1, out in strips:
        codes, valid = scene.labels(r0, r1)
        pred[r0:r1] = np.where(valid, lut[out[0].astype(np.uint8)], IGNORE)
        # a pixel the model leaves without a class (a mask file's nodata) is left out, as nodata is
        ref[r0:r1] = np.where(pred[r0:r1] == IGNORE, IGNORE, reference_groups(codes, valid, labels, space))
        keep = ref[r0:r1] != IGNORE
        if signals is not None:
            signals.add(out, pred[r0:r1], keep)
        if tally is not None and len(out) >= 1 + N_CLASSES:
            tally.add(fold(out[1:1 + N_CLASSES][:, keep], lut[:N_CLASSES], len(space.names)),
                      pred[r0:r1][keep], ref[r0:r1][keep])
    return pred, ref


def field_extras(near: dict[str, np.ndarray], per_scene: dict[str, dict[str, Any]],
                 tally: ProbabilityTally | None, space: EvalSpace) -> dict[str, Any]:
    """The scores at each boundary tolerance, the cloud cover of each scene, and what the model's
    probabilities tell against the reference (None without probabilities)."""
    groups, total = space.to_dict(), sum(int(m["n_pixels"]) for m in per_scene.values())
    return {"boundary": boundary_summary(near, total, space.names, groups),
            "cloud_cover": cover_summary(per_scene, groups, space.names),
            "probabilities": tally.record() if tally else None}


def add_month(months: dict[str, Any], meta: dict[str, Any], cm: np.ndarray) -> None:
    """Add a scene's confusion to the month it was acquired in (``"MM"``), if known."""
    if meta.get("acquired"):
        month = meta["acquired"][5:7]
        months[month] = months.get(month, 0) + cm


@dataclass
class Scored:
    """The confusion matrices of an evaluation, added up scene by scene: in all, per block, per boundary
    tolerance and per month, with each scene's scores and its predicted and reference maps."""

    space: EvalSpace
    boundary_px: tuple[int, ...] = BOUNDARY_PX
    total: np.ndarray = field(init=False)
    per_scene: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: dict[str, np.ndarray] = field(default_factory=dict)
    near: dict[str, np.ndarray] = field(default_factory=dict)
    months: dict[str, np.ndarray] = field(default_factory=dict)
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    refs: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.total = np.zeros((len(self.space.names),) * 2, dtype=np.int64)

    @property
    def groups(self) -> dict[str, list[str]]:
        """The label space as ``{group: [classes]}``."""
        return self.space.to_dict()

    def add(self, scene: SceneInput, pred: np.ndarray, ref: np.ndarray) -> None:
        """Count one scene's predicted and reference groups."""
        k = len(self.space.names)
        cm = confusion(ref, pred, k)
        self.total = self.total + cm
        self.blocks.update(block_confusions(scene.id, ref, pred, k))
        for px, c in boundary_confusions(ref, pred, k, self.boundary_px).items():
            self.near[px] = self.near.get(px, 0) + c
        add_month(self.months, scene.meta, cm)
        self.per_scene[scene.id] = {**scores(cm, self.space.names, self.groups), "acquired": scene.meta.get("acquired")}
        self.preds[scene.id], self.refs[scene.id] = pred, ref


def unlabelled_batches(scene: SceneInput, tiling: Tiling, batch_size: int, device: str, tile_fn=None):  # noqa: ANN001, ANN201
    """The model inputs of ``scene``, batch by batch, without its reference (what an adapter may see)."""
    tiles = tile_stream(scene.read, scene.height, scene.width, tiling, scene.strips)
    size = tiling.shape(scene.height, scene.width)
    return (x.to(device) for _, x in input_batches(tiles, batch_size, size, tiling.pad, tile_fn))


def evaluate(model: nn.Module | SceneModel, normalizer: Normalizer, test: Split, space: EvalSpace, patch: int,
             batch_size: int, device: str = "cpu", adapter: Adapter | None = None,
             contract: Contract | None = None, fast: FastPaths | None = None,
             whole_pixels: int | None = None, label_free: LabelFree | None = None,
             boundary_px: tuple[int, ...] = BOUNDARY_PX) -> Evaluation:
    """Scores of ``model`` on every valid pixel of ``test`` in label space ``space`` (a pretrained model's
    output codes become project classes by its ``contract``), the field's scores beside IoU, at every
    boundary tolerance of ``boundary_px`` and per cloud-cover bin (:mod:`bench.core.metrics`); with
    ``label_free``, the label-free signals and estimates of the same pass (:mod:`bench.run.label_free`) in
    ``Evaluation.label_free``, and the calibration of the model's probabilities against the reference.

    An ``adapter`` sees the normalized test tiles (never the reference): once for all scenes
    (``per_test_set``) or, starting again from the trained model, for each scene (``per_scene``).
    """
    if isinstance(model, nn.Module):
        model.eval()
    adapter, tiling = adapter or NoAdaptation(), model_tiling(contract, patch)
    fast = (fast or FastPaths()).adapted(adapter.protocol != "none")
    free = (True, label_free.consistency) if label_free else (False, False)  # probabilities, flip
    tile_fn = (lambda t: normalizer.transform(t)) if normalizer.level == "patch" else None

    def batches(scene: SceneInput):  # noqa: ANN202
        return unlabelled_batches(scene, tiling, batch_size, device, tile_fn)

    adapted = model
    if adapter.protocol == "per_test_set":
        every = (x for scene in scene_inputs(test, normalizer, tiling, whole_pixels) for x in batches(scene))
        adapted = adapter.adapt(copy.deepcopy(model), every)
    lut = np.append(space.class_lut(), np.full(256 - 4, IGNORE, dtype=np.uint8))
    tally = ProbabilityTally(space.to_dict()) if label_free else None
    scored = Scored(space, boundary_px)
    for scene in scene_inputs(test, normalizer, tiling, whole_pixels):
        if adapter.protocol == "per_scene":
            adapted = adapter.adapt(copy.deepcopy(model), batches(scene))
        strips = predicted_strips(adapted, scene, tiling, batch_size, device, fast, tile_fn, contract, *free)
        scored.add(scene, *group_maps(scene, strips, lut, test.labels, space,
                                      label_free and label_free.scene(scene.id), tally))
    metrics = {**scores(scored.total, space.names, scored.groups),
               **field_extras(scored.near, scored.per_scene, tally, space),
               "label_space": scored.groups, "nan_rule": NAN_RULE, "adapter": adapter.describe(),
               **({"fast_paths": fast.describe()} if isinstance(model, nn.Module) else {})}
    per_month = {m: scores(cm, space.names, scored.groups) for m, cm in sorted(scored.months.items())}
    return Evaluation(metrics, scored.per_scene, scored.blocks, per_month, scored.preds, scored.refs,
                      label_free.record() if label_free else None)
