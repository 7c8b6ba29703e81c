"""Evaluation: predict every test scene tile by tile, fold into the evaluation label space, score.

Returns the overall confusion matrix and scores over all valid test pixels, the same per scene, the
confusion matrix of every ``BLOCK`` x ``BLOCK`` block of every scene (the resampling units of the paired
bootstrap in :mod:`bench.boards.stats`), and the per-scene predictions (for figures).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.data.splits import Split, pad_to, reference_groups, scene_input, tile_grid, tile_input
from bench.run.loaders import model_input
from bench.models.adapters import Adapter, NoAdaptation
from bench.core.labels import IGNORE, EvalSpace
from bench.core.metrics import NAN_RULE, confusion, scores
from bench.data.normalizers import Normalizer
from bench.models.base import Contract, SceneModel


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


def tile_batches(image: np.ndarray, patch: int, batch_size: int, tile_fn=None):  # noqa: ANN001
    """``(tiles, batch)`` pairs covering a (C, H, W) scene; each tile normalized by ``tile_fn`` and padded."""
    tiles = tile_grid(*image.shape[1:], patch)
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i:i + batch_size]
        yield chunk, torch.stack([model_input(pad_to((tile_fn or (lambda t: t))(image[:, r0:r1, c0:c1]), patch))
                                  for r0, c0, r1, c1 in chunk])


@torch.no_grad()
def predict_scene(model: nn.Module | SceneModel, image: np.ndarray, patch: int, batch_size: int,
                  device: torch.device | str = "cpu", tile_fn=None, contract: Contract | None = None) -> np.ndarray:  # noqa: ANN001
    """(H, W) project class index for a (C, H, W) scene, NaN = nodata; ``tile_fn`` normalizes each tile. A
    scene model (not torch) predicts the whole scene at once, its codes mapped by its ``contract``."""
    if not isinstance(model, nn.Module):
        return (contract or Contract()).class_of_code()[model.predict(tile_fn(image) if tile_fn else image)]
    out = np.zeros(image.shape[1:], dtype=np.uint8)
    for chunk, x in tile_batches(image, patch, batch_size, tile_fn):
        pred = model(x.to(device)).argmax(1).cpu().numpy().astype(np.uint8)
        for (r0, c0, r1, c1), p in zip(chunk, pred):
            out[r0:r1, c0:c1] = p[:r1 - r0, :c1 - c0]
    return out


def evaluate(model: nn.Module | SceneModel, normalizer: Normalizer, test: Split, space: EvalSpace, patch: int,
             batch_size: int, device: torch.device | str = "cpu", adapter: Adapter | None = None,
             contract: Contract | None = None) -> Evaluation:
    """Scores of ``model`` on every valid pixel of ``test`` in label space ``space`` (a pretrained model's
    output codes become project classes by its ``contract``).

    An ``adapter`` sees the normalized test tiles (never the reference): once for all scenes
    (``per_test_set``) or, starting again from the trained model, for each scene (``per_scene``).
    """
    if isinstance(model, nn.Module):
        model.eval()
    adapter = adapter or NoAdaptation()

    def inputs(scene):  # noqa: ANN001, ANN202
        return scene_input(normalizer, scene.image), (lambda t: tile_input(normalizer, t))

    def batches(image, fn):  # noqa: ANN001, ANN202 - unlabelled inputs only
        return (x.to(device) for _, x in tile_batches(image, patch, batch_size, fn))

    adapted = model
    if adapter.protocol == "per_test_set":
        every = (x for scene in test.scenes for x in batches(*inputs(scene)))
        adapted = adapter.adapt(copy.deepcopy(model), every)
    k, lut = len(space.names), np.append(space.class_lut(), np.full(256 - 4, IGNORE, dtype=np.uint8))
    total = np.zeros((k, k), dtype=np.int64)
    per_scene, preds, refs, months, blocks = {}, {}, {}, {}, {}
    for scene in test.scenes:
        image, fn = inputs(scene)
        if adapter.protocol == "per_scene":
            adapted = adapter.adapt(copy.deepcopy(model), batches(image, fn))
        pred = lut[predict_scene(adapted, image, patch, batch_size, device, fn, contract)]
        ref = reference_groups(scene.codes, scene.valid, test.labels, space)
        pred[~scene.valid] = IGNORE
        cm = confusion(ref, pred, k)
        total += cm
        blocks.update(block_confusions(scene.id, ref, pred, k))
        if scene.meta.get("acquired"):
            month = scene.meta["acquired"][5:7]
            months[month] = months.get(month, 0) + cm
        per_scene[scene.id] = {**scores(cm, space.names), "acquired": scene.meta.get("acquired")}
        preds[scene.id], refs[scene.id] = pred, ref
    metrics = {**scores(total, space.names), "label_space": space.to_dict(), "nan_rule": NAN_RULE,
               "adapter": adapter.describe()}
    per_month = {m: scores(cm, space.names) for m, cm in sorted(months.items())}
    return Evaluation(metrics, per_scene, blocks, per_month, preds, refs)
