"""Evaluation: predict every test scene tile by tile, fold into the evaluation label space, score.

Returns the overall confusion matrix and scores over all valid test pixels, the same per scene, and
the per-scene predictions (for figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.data import Split, model_input, pad_to, reference_groups, scene_input, tile_grid, tile_input
from bench.labels import IGNORE, EvalSpace
from bench.metrics import NAN_RULE, confusion, scores
from bench.normalizers import Normalizer


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    per_scene: dict[str, dict[str, Any]]
    per_month: dict[str, dict[str, Any]]  # "MM" -> scores over the scenes acquired in that month
    predictions: dict[str, np.ndarray]  # scene id -> (H, W) group index, IGNORE at nodata
    references: dict[str, np.ndarray]  # scene id -> (H, W) group index, IGNORE at nodata


@torch.no_grad()
def predict_scene(model: nn.Module, image: np.ndarray, patch: int, batch_size: int,
                  device: torch.device | str = "cpu", tile_fn=None) -> np.ndarray:  # noqa: ANN001
    """(H, W) project class index for a (C, H, W) scene, NaN = nodata; ``tile_fn`` normalizes each tile."""
    h, w = image.shape[1:]
    out = np.zeros((h, w), dtype=np.uint8)
    tiles = tile_grid(h, w, patch)
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i:i + batch_size]
        x = torch.stack([model_input(pad_to((tile_fn or (lambda t: t))(image[:, r0:r1, c0:c1]), patch))
                         for r0, c0, r1, c1 in chunk])
        pred = model(x.to(device)).argmax(1).cpu().numpy().astype(np.uint8)
        for (r0, c0, r1, c1), p in zip(chunk, pred):
            out[r0:r1, c0:c1] = p[:r1 - r0, :c1 - c0]
    return out


def evaluate(model: nn.Module, normalizer: Normalizer, test: Split, space: EvalSpace, patch: int,
             batch_size: int, device: torch.device | str = "cpu") -> Evaluation:
    """Scores of ``model`` on every valid pixel of ``test`` in label space ``space``."""
    model.eval()
    k, lut = len(space.names), space.class_lut()
    total = np.zeros((k, k), dtype=np.int64)
    per_scene, preds, refs, months = {}, {}, {}, {}
    for scene in test.scenes:
        image = scene_input(normalizer, scene.image)
        pred = lut[predict_scene(model, image, patch, batch_size, device, lambda t: tile_input(normalizer, t))]
        ref = reference_groups(scene.codes, scene.valid, test.labels, space)
        pred[~scene.valid] = IGNORE
        cm = confusion(ref, pred, k)
        total += cm
        if scene.meta.get("acquired"):
            month = scene.meta["acquired"][5:7]
            months[month] = months.get(month, 0) + cm
        per_scene[scene.id] = {**scores(cm, space.names), "acquired": scene.meta.get("acquired")}
        preds[scene.id], refs[scene.id] = pred, ref
    metrics = {**scores(total, space.names), "label_space": space.to_dict(), "nan_rule": NAN_RULE}
    per_month = {m: scores(cm, space.names) for m, cm in sorted(months.items())}
    return Evaluation(metrics, per_scene, per_month, preds, refs)
