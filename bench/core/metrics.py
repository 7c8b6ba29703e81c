"""Confusion matrices and the scores derived from them, in an evaluation label space.

Rule for absent classes: a class with no pixel in the reference and none in the prediction
(TP + FP + FN = 0) has IoU NaN and is left out of the mean IoU. A class present in either one
counts, even at IoU 0. Overall accuracy is trace / total over all valid pixels. Scores are stored
as JSON with NaN written as null.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.core.labels import IGNORE

NAN_RULE = ("IoU of a class absent from both reference and prediction is NaN (null in JSON) "
            "and is left out of the mean IoU")


def confusion(reference: np.ndarray, prediction: np.ndarray, k: int) -> np.ndarray:
    """(k, k) int64 counts, rows = reference group, columns = predicted group; IGNORE pixels skipped."""
    ref = np.asarray(reference).ravel().astype(np.int64)
    pred = np.asarray(prediction).ravel().astype(np.int64)
    keep = ref != IGNORE
    return np.bincount(ref[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def scores(cm: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per-class IoU, mean IoU (NaN classes left out) and overall accuracy of a confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    total = int(cm.sum())
    present = ~np.isnan(iou)
    return {
        "iou": {n: _num(v) for n, v in zip(names, iou)},
        "miou": _num(iou[present].mean()) if present.any() else None,
        "accuracy": _num(tp.sum() / total) if total else None,
        "n_pixels": total,
        "confusion": cm.tolist(),
        "classes": list(names),
    }


def _num(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v
