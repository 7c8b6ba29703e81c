"""Confusion matrices and the scores derived from them, in an evaluation label space.

Rule for absent classes: a class with no pixel in the reference and none in the prediction
(TP + FP + FN = 0) has IoU NaN and is left out of the mean IoU. A class present in either one
counts, even at IoU 0. Overall accuracy is trace / total over all valid pixels. Scores are stored
as JSON with NaN written as null.

Besides IoU, the scores the cloud-mask literature reports (the CloudSEN12 paper, Aybar et al., Scientific
Data 2022; CMIX, Skakun et al., Remote Sensing of Environment 2022), all from the same confusion matrix:

* per group: producer's accuracy PA = TP / (TP + FN) (recall), user's accuracy UA = TP / (TP + FP)
  (precision) and F1 = 2 TP / (2 TP + FP + FN);
* for cloud against not cloud, and for shadow against the rest where the label space has a shadow group:
  balanced overall accuracy BOA = (PA + TNR) / 2 with TNR = TN / (TN + FP), omission error 1 - PA and
  commission error 1 - UA (:func:`binary_scores`);
* the cloud cover of a scene (:func:`cloud_cover`) and CloudSEN12's cover bins (:data:`COVER_BINS`);
* with a boundary tolerance of k px, the same scores without the pixels within k px (a (2k + 1)-px
  square) of a pixel of another reference group (:func:`boundary_confusions`);
* for models that give probabilities: the expected calibration error over equal-width confidence bins
  (Guo et al., ICML 2017) and the cloud scores at every threshold of the cloud probability
  (:class:`ProbabilityTally`).

A score whose denominator is zero is None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.core.labels import IGNORE

NAN_RULE = ("IoU of a class absent from both reference and prediction is NaN (null in JSON) "
            "and is left out of the mean IoU")
CLOUD = frozenset({"thick_cloud", "thin_cloud"})
SHADOW = frozenset({"cloud_shadow"})
#: boundary tolerances (px at the scene's resolution) of every evaluation unless a scenario declares its own
BOUNDARY_PX = (0, 1, 2, 4)
#: CloudSEN12's cloud-cover bins (per cent of a scene's valid pixels): name, lower bound (exclusive,
#: except for ``clear``), upper bound (inclusive)
COVER_BINS = (("clear", 0.0, 0.0), ("almost clear", 0.0, 25.0), ("low", 25.0, 45.0), ("mid", 45.0, 65.0),
              ("cloudy", 65.0, 100.0))
CALIBRATION_BINS = 15  # equal-width confidence bins of the expected calibration error
PROBABILITY_BINS = 100  # bins of the cloud probability (thresholds at every 0.01)


def confusion(reference: np.ndarray, prediction: np.ndarray, k: int) -> np.ndarray:
    """(k, k) int64 counts, rows = reference group, columns = predicted group; IGNORE pixels skipped."""
    ref = np.asarray(reference).ravel().astype(np.int64)
    pred = np.asarray(prediction).ravel().astype(np.int64)
    keep = ref != IGNORE
    return np.bincount(ref[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def scores(cm: np.ndarray, names: list[str], space: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Per-class IoU, mean IoU (NaN classes left out) and overall accuracy of a confusion matrix; with the
    label ``space`` (``{group: [classes]}``) also the field's scores (:func:`field_scores`) as ``field``."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    total = int(cm.sum())
    present = ~np.isnan(iou)
    out = {
        "iou": {n: _num(v) for n, v in zip(names, iou)},
        "miou": _num(iou[present].mean()) if present.any() else None,
        "accuracy": _num(tp.sum() / total) if total else None,
        "n_pixels": total,
        "confusion": cm.tolist(),
        "classes": list(names),
    }
    return {**out, "field": field_scores(cm, names, space)} if space is not None else out


def field_scores(cm: np.ndarray, names: list[str], space: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """``{"pa", "ua", "f1"}`` per group, and ``cloud`` / ``shadow``: :func:`binary_scores` of cloud against
    not cloud and of shadow against the rest (None where the label space cannot tell them apart)."""
    cm = np.asarray(cm, dtype=np.int64)
    tp, ref, pred = np.diag(cm), cm.sum(1), cm.sum(0)
    return {"pa": {n: _ratio(t, r) for n, t, r in zip(names, tp, ref)},
            "ua": {n: _ratio(t, p) for n, t, p in zip(names, tp, pred)},
            "f1": {n: _ratio(2 * t, r + p) for n, t, r, p in zip(names, tp, ref, pred)},
            **{kind: binary_scores(cm, g) if (g := positive_groups(space, kind)) else None
               for kind in ("cloud", "shadow")}}


def positive_groups(space: Mapping[str, Sequence[str]], kind: str) -> list[int] | None:
    """Indices of the groups that make up ``kind`` (``cloud``: thick and thin cloud; ``shadow``: cloud
    shadow) in a label space ``{group: [classes]}``; None where a group mixes it with other classes, or
    where no group or every group is of that kind."""
    wanted = CLOUD if kind == "cloud" else SHADOW
    inside = [set(members) <= wanted for members in space.values()]
    mixed = any(set(members) & wanted and not set(members) <= wanted for members in space.values())
    if mixed or not any(inside) or all(inside):
        return None
    return [i for i, yes in enumerate(inside) if yes]


def binary_counts(cm: np.ndarray, positive: Sequence[int]) -> tuple[np.ndarray, ...]:
    """(TP, FN, FP, TN) of the ``positive`` groups against the rest, over confusion matrices ``(..., k, k)``."""
    cm = np.asarray(cm, dtype=np.float64)
    mask = np.zeros(cm.shape[-1], dtype=bool)
    mask[list(positive)] = True
    tp = cm[..., mask, :][..., mask].sum((-1, -2))
    fn = cm[..., mask, :][..., ~mask].sum((-1, -2))
    fp = cm[..., ~mask, :][..., mask].sum((-1, -2))
    tn = cm[..., ~mask, :][..., ~mask].sum((-1, -2))
    return tp, fn, fp, tn


def binary_scores(cm: np.ndarray, positive: Sequence[int]) -> dict[str, float | None]:
    """PA, UA, TNR, BOA, F1, omission and commission error of the ``positive`` groups against the rest."""
    tp, fn, fp, tn = (float(v) for v in binary_counts(cm, positive))
    pa, ua, tnr = _ratio(tp, tp + fn), _ratio(tp, tp + fp), _ratio(tn, tn + fp)
    return {"pa": pa, "ua": ua, "tnr": tnr, "boa": None if pa is None or tnr is None else (pa + tnr) / 2,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "omission": None if pa is None else 1 - pa,
            "commission": None if ua is None else 1 - ua}


def boa(cm: np.ndarray, positive: Sequence[int]) -> np.ndarray:
    """Balanced overall accuracy of confusion matrices ``(..., k, k)`` (NaN where undefined)."""
    tp, fn, fp, tn = binary_counts(cm, positive)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (tp / (tp + fn) + tn / (tn + fp)) / 2


def cloud_cover(cm: np.ndarray, space: Mapping[str, Sequence[str]]) -> tuple[float, float] | None:
    """(reference, predicted) cloud fraction of a scene's valid pixels, from its confusion matrix; None
    where the label space has no cloud group or the scene no valid pixel."""
    groups = positive_groups(space, "cloud")
    cm = np.asarray(cm, dtype=np.float64)
    if not groups or cm.sum() == 0:
        return None
    return float(cm[groups].sum() / cm.sum()), float(cm[:, groups].sum() / cm.sum())


def cover_bin(fraction: float) -> str:
    """The CloudSEN12 bin (:data:`COVER_BINS`) of a cloud fraction (0-1)."""
    percent = 100 * fraction
    if percent <= 0:
        return COVER_BINS[0][0]
    return next(name for name, _, high in COVER_BINS[1:] if percent <= high)


def cover_summary(per_scene: Mapping[str, Mapping[str, Any]], space: Mapping[str, Sequence[str]],
                  names: list[str]) -> dict[str, Any] | None:
    """Predicted against reference cloud cover of each scene (``{scene: scores with confusion}``): the mean
    absolute error and bias (predicted - reference) in cloud fraction, and the scores of the scenes of each
    cover bin pooled; None where the label space has no cloud group."""
    covers = {s: c for s, m in per_scene.items() if (c := cloud_cover(m["confusion"], space)) is not None}
    if not covers:
        return None
    err = np.array([p - r for r, p in covers.values()])
    bins: dict[str, Any] = {}
    for s, (r, _) in covers.items():
        b = bins.setdefault(cover_bin(r), {"scenes": 0, "confusion": 0})
        b["scenes"] += 1
        b["confusion"] = b["confusion"] + np.asarray(per_scene[s]["confusion"], dtype=np.int64)
    by_bin = {name: {**scores(bins[name]["confusion"], names, space), "scenes": bins[name]["scenes"]}
              for name, _, _ in COVER_BINS if name in bins}
    return {"mae": float(np.abs(err).mean()), "bias": float(err.mean()), "scenes": len(covers),
            "per_scene": {s: {"reference": r, "predicted": p} for s, (r, p) in covers.items()}, "by_bin": by_bin}


def boundary_excluded(reference: np.ndarray, k: int) -> np.ndarray:
    """(H, W) bool: valid pixels within ``k`` px (a (2k + 1)-px square) of a valid pixel of another
    reference group (nodata is no group)."""
    if k <= 0:
        return np.zeros(reference.shape, dtype=bool)
    from scipy.ndimage import maximum_filter, minimum_filter

    ref = reference.astype(np.int16)
    valid = reference != IGNORE
    size = 2 * k + 1
    high = maximum_filter(np.where(valid, ref, -1), size=size, mode="constant", cval=-1)
    low = minimum_filter(np.where(valid, ref, 1000), size=size, mode="constant", cval=1000)
    return valid & ((high > ref) | (low < ref))


def boundary_confusions(reference: np.ndarray, prediction: np.ndarray, k: int,
                        tolerances: Sequence[int] = BOUNDARY_PX) -> dict[str, np.ndarray]:
    """``{"<px>": (k, k) confusion}`` of a scene with the pixels near reference boundaries left out, at each
    boundary tolerance."""
    out = {}
    for px in tolerances:
        ref = np.where(boundary_excluded(reference, px), IGNORE, reference)
        out[str(px)] = confusion(ref, prediction, k)
    return out


def boundary_summary(confusions: Mapping[str, Any], total: int, names: list[str],
                     space: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Per tolerance: the share of the valid pixels kept, mIoU, accuracy and the cloud BOA."""
    out = {}
    for px, cm in confusions.items():
        s = scores(cm, names, space)
        cloud = s["field"]["cloud"] or {}
        out[px] = {"kept": s["n_pixels"] / total if total else None, "miou": s["miou"],
                   "accuracy": s["accuracy"], "boa_cloud": cloud.get("boa"), "confusion": s["confusion"]}
    return out


class ProbabilityTally:
    """What the probabilities of a model tell against the reference: counts per confidence bin (the
    reliability diagram and the expected calibration error of its predicted group) and, where the label
    space has cloud groups, the cloud probability of reference-cloud and reference-not-cloud pixels per
    0.01 bin (scores at any threshold)."""

    def __init__(self, space: Mapping[str, Sequence[str]]):
        self.cloud = positive_groups(space, "cloud")
        self.count = np.zeros(CALIBRATION_BINS, dtype=np.int64)
        self.confidence = np.zeros(CALIBRATION_BINS)
        self.correct = np.zeros(CALIBRATION_BINS, dtype=np.int64)
        self.cloudy = np.zeros(PROBABILITY_BINS, dtype=np.int64)
        self.clear = np.zeros(PROBABILITY_BINS, dtype=np.int64)

    def add(self, probabilities: np.ndarray, predicted: np.ndarray, reference: np.ndarray) -> None:
        """``probabilities`` (groups, n) of the predicted pixels, their ``predicted`` and ``reference`` groups (n,)."""
        if not len(predicted):
            return
        conf = np.take_along_axis(probabilities, predicted[None].astype(np.int64), 0)[0].astype(np.float64)
        b = np.clip((conf * CALIBRATION_BINS).astype(np.int64), 0, CALIBRATION_BINS - 1)
        self.count += np.bincount(b, minlength=CALIBRATION_BINS)
        self.confidence += np.bincount(b, conf, minlength=CALIBRATION_BINS)
        self.correct += np.bincount(b, predicted == reference, minlength=CALIBRATION_BINS).astype(np.int64)
        if self.cloud:
            p = probabilities[self.cloud].sum(0)
            pb = np.clip((p * PROBABILITY_BINS).astype(np.int64), 0, PROBABILITY_BINS - 1)
            is_cloud = np.isin(reference, self.cloud)
            self.cloudy += np.bincount(pb[is_cloud], minlength=PROBABILITY_BINS)
            self.clear += np.bincount(pb[~is_cloud], minlength=PROBABILITY_BINS)

    def record(self) -> dict[str, Any] | None:
        """JSON-ready counts and the expected calibration error (None if no pixel was added)."""
        if not self.count.sum():
            return None
        return {"calibration": {"bins": CALIBRATION_BINS, "count": self.count.tolist(),
                                "confidence": self.confidence.tolist(), "correct": self.correct.tolist(),
                                "ece": expected_calibration_error(self.count, self.confidence, self.correct)},
                "cloud_probability": {"bins": PROBABILITY_BINS, "cloud": self.cloudy.tolist(),
                                      "not_cloud": self.clear.tolist()} if self.cloud else None}


def expected_calibration_error(count: Sequence[int], confidence: Sequence[float], correct: Sequence[int]) -> float | None:
    """ECE = sum over bins of (pixels in bin / pixels) x |accuracy in bin - mean confidence in bin|."""
    n, conf, ok = (np.asarray(v, dtype=np.float64) for v in (count, confidence, correct))
    if n.sum() == 0:
        return None
    seen = n > 0
    return float((np.abs(ok[seen] - conf[seen]) / n.sum()).sum())


def threshold_scores(cloud: Sequence[int], not_cloud: Sequence[int], thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """The cloud scores (:func:`binary_scores`) with cloud predicted where the cloud probability is at
    least each threshold, from the per-bin counts of :class:`ProbabilityTally`."""
    pos, neg = np.asarray(cloud, dtype=np.int64), np.asarray(not_cloud, dtype=np.int64)
    bins = len(pos)
    out = []
    for t in thresholds:
        first = min(max(int(math.ceil(round(t * bins, 6))), 0), bins)
        tp, fp = pos[first:].sum(), neg[first:].sum()
        cm = np.array([[tp, pos.sum() - tp], [fp, neg.sum() - fp]])
        out.append({"threshold": float(t), **binary_scores(cm, [0])})
    return out


def pool_probabilities(records: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Several :meth:`ProbabilityTally.record` added up (the severities of a shift)."""
    records = [r for r in records if r]
    if not records:
        return None
    cal = {k: np.sum([r["calibration"][k] for r in records], axis=0) for k in ("count", "confidence", "correct")}
    probs = [r["cloud_probability"] for r in records if r.get("cloud_probability")]
    return {"calibration": {"bins": CALIBRATION_BINS, **{k: v.tolist() for k, v in cal.items()},
                            "ece": expected_calibration_error(cal["count"], cal["confidence"], cal["correct"])},
            "cloud_probability": {"bins": PROBABILITY_BINS,
                                  **{k: np.sum([p[k] for p in probs], axis=0).tolist() for k in ("cloud", "not_cloud")}}
            if probs else None}


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def _num(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v
