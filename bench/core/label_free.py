"""Label-free estimates of how well a segmentation model does on unlabelled pixels, from its probabilities.

Everything happens in an evaluation label space of ``G`` groups: class probabilities ``(K, P)`` fold into
group probabilities ``(G, P)`` by a ``(K,)`` lookup table class -> group, and the model's prediction is the
argmax of the group probabilities at temperature 1. Pixels come as flat arrays; the accumulators add them
call by call and merge, so a scene of any size streams through strip by strip.

* :class:`Calibrator`, on labelled validation pixels: the temperature of least NLL on the grid
  ``TEMPERATURES``, the ATC threshold (Garg et al., ICLR 2022), accuracy, mIoU and mean confidence.
* :class:`Signals`, on unlabelled pixels: mean confidence and entropy, the fraction above the ATC
  threshold, and an estimated confusion matrix (group probabilities summed into the column of the
  predicted group), turned into accuracy and mIoU estimates by :meth:`Signals.estimates`.
* Agreement-on-the-line (Baek et al., NeurIPS 2022) and a per-band input shift against training quantiles.

Rule for what cannot be computed: an estimate that lacks its ingredients (no calibration, no probabilities,
no pixels) is ``None``, never NaN; a group with zero union has no IoU and is left out of the mean IoU, as in
:mod:`bench.core.metrics`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from bench.core.labels import IGNORE
from bench.core.metrics import confusion, scores

BINS = 1000  # confidence histogram bins on [0, 1]
#: temperature grid 0.25 .. 8, ratio 2 ** 0.1 between neighbours, so 0.5, 1, 2 and 4 are on it exactly
TEMPERATURES = 2.0 ** np.linspace(-2.0, 3.0, 51)
assert TEMPERATURES[20] == 1.0, "the temperature grid must hold T = 1 (no scaling)"
LEVELS = np.linspace(0.0, 1.0, 101)  # quantile levels of input_shift
#: a band is flagged when more than this fraction of its test values lie outside the training P1-P99 (0.02 expected)
OUTSIDE_FLAG = 0.10


def fold(probs: np.ndarray, lut: np.ndarray, groups: int) -> np.ndarray:
    """(K, P) class probabilities -> (G, P) float64 group probabilities (the sum of the member classes)."""
    probs, lut = np.asarray(probs, dtype=np.float64), np.asarray(lut)
    if probs.ndim != 2 or len(probs) != len(lut):
        raise ValueError(f"probabilities of shape {probs.shape} do not match a lut of {len(lut)} classes")
    return np.eye(groups)[lut].T @ probs


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(K, P) probabilities after temperature scaling, softmax(log(p) / T); p = 0 stays 0, T = 1 keeps p.

    Computed as p ** (1 / T), renormalized: the same softmax without a log and an exp per value (a
    pixel's largest probability is at least 1 / K, so nothing that counts underflows)."""
    p = np.asarray(probs)
    p = p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)
    q = p ** (1.0 / temperature)
    return q / q.sum(axis=0)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0))
    return e / e.sum(axis=0)


def _checked_groups(predicted: np.ndarray, groups: int) -> np.ndarray:
    """``predicted`` as int64 group indices, refused when one lies outside 0..groups - 1."""
    pred = np.asarray(predicted).ravel().astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() >= groups):
        raise ValueError(f"predicted groups must lie in 0..{groups - 1}")
    return pred


def _histogram(top: np.ndarray) -> np.ndarray:
    """Counts of ``top`` in BINS equal bins on [0, 1] (1.0 in the last bin, as np.histogram)."""
    return np.bincount(np.clip((top * BINS).astype(np.int64), 0, BINS - 1), minlength=BINS)


def _atc_threshold(hist: np.ndarray, correct: int) -> float:
    """The t with ``correct`` pixels above it, interpolated linearly inside its histogram bin."""
    above = np.append(np.cumsum(hist[::-1])[::-1], 0)  # above[i]: pixels in bins i and up
    i = int(np.searchsorted(-above, -correct, side="right")) - 1  # last edge with >= correct above it
    if i >= BINS:
        return 1.0
    return float((i + 1 - (correct - above[i + 1]) / hist[i]) / BINS)


def _nll(probs: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Summed -log p(reference group) per temperature of TEMPERATURES; ``member`` (K, P): class c is in
    pixel p's reference group. float32 inside the loop: twice as fast, and the argmin does not move."""
    logp = np.log(probs, out=np.full_like(probs, -np.inf), where=probs > 0)
    logp = (logp - logp.max(axis=0)).astype(np.float32)  # shifted like softmax, so exp never overflows
    nll = np.empty(len(TEMPERATURES))
    for i, t in enumerate(TEMPERATURES):
        e = np.exp(logp / np.float32(t))
        p_ref = np.maximum(np.where(member, e, 0).sum(axis=0) / e.sum(axis=0), 1e-12)
        nll[i] = -np.log(p_ref).sum(dtype=np.float64)
    return nll


class Calibrator:
    """Accumulates on labelled validation pixels what calibration needs: NLL per temperature of
    TEMPERATURES, the histogram of the max group probability, the argmax confusion and summed max-prob."""

    def __init__(self, groups: int, lut: np.ndarray) -> None:
        self.groups, self.lut = groups, np.asarray(lut)
        self.nll = np.zeros(len(TEMPERATURES))  # summed -log p(reference group) per temperature
        self.hist = np.zeros(BINS, dtype=np.int64)  # max group probability at T = 1
        self.confusion = np.zeros((groups, groups), dtype=np.int64)  # rows reference, columns predicted
        self.confidence = 0.0
        self.pixels = 0  # labelled pixels added
        self.scored = 0  # ... of them with probabilities

    def add(self, probs: np.ndarray, reference: np.ndarray, predicted: np.ndarray | None = None) -> None:
        """Add ``probs`` (K, P) class probabilities against ``reference`` (P,) groups (IGNORE is skipped);
        ``predicted`` (P,): the model's groups, by default the argmax of the group probabilities."""
        probs, ref = np.asarray(probs, dtype=np.float64), np.asarray(reference).ravel()
        pred = None if predicted is None else _checked_groups(predicted, self.groups)
        if probs.ndim != 2 or probs.shape[1] != ref.size or (pred is not None and pred.size != ref.size):
            raise ValueError(f"probabilities of shape {probs.shape}, {ref.size} reference pixels and "
                             f"{ref.size if pred is None else pred.size} predicted ones do not match")
        keep = ref != IGNORE
        probs, ref = probs[:, keep], ref[keep].astype(np.int64)
        pred = None if pred is None else pred[keep]
        if ref.size and (ref.min() < 0 or ref.max() >= self.groups):
            raise ValueError(f"reference groups must lie in 0..{self.groups - 1} or be {IGNORE}")
        self.nll += _nll(probs, self.lut[:, None] == ref)
        g = fold(probs, self.lut, self.groups)
        top = g.max(axis=0)
        self.hist += _histogram(top)
        self.confusion += confusion(ref, g.argmax(axis=0) if pred is None else pred, self.groups)
        self.confidence += float(top.sum())
        self.pixels += ref.size
        self.scored += ref.size

    def add_classes(self, reference: np.ndarray, predicted: np.ndarray) -> None:
        """Add the predicted groups of a model that gives only classes (Hollstein's rules): its accuracy and
        mIoU, what agreement on the line starts from, without temperature or threshold."""
        ref, pred = np.asarray(reference).ravel(), _checked_groups(predicted, self.groups)
        keep = ref != IGNORE
        self.confusion += confusion(ref[keep], pred[keep], self.groups)
        self.pixels += int(keep.sum())

    def result(self, names: list[str]) -> dict:
        """JSON-ready calibration: temperature, atc_threshold, accuracy, miou, iou, confidence, pixels.

        ``atc_threshold`` is the t whose fraction of validation pixels with max group probability > t
        equals the validation accuracy; it, the temperature and the confidence are None where no pixel
        came with probabilities. Raises ValueError when no labelled pixel was added."""
        if self.pixels == 0:
            raise ValueError("no labelled pixel was added: there is nothing to calibrate on")
        s = scores(self.confusion, names)
        probs = self.scored == self.pixels
        return {"temperature": float(TEMPERATURES[int(np.argmin(self.nll))]) if probs else None,
                "atc_threshold": _atc_threshold(self.hist, int(np.trace(self.confusion))) if probs else None,
                "accuracy": s["accuracy"], "miou": s["miou"], "iou": s["iou"],
                "confidence": self.confidence / self.pixels if probs else None, "pixels": self.pixels}


def _columns(g: np.ndarray, predicted: np.ndarray, groups: int) -> np.ndarray:
    """(G, G): column j sums the probability vectors of the pixels predicted as j."""
    return np.stack([np.bincount(predicted, weights=row, minlength=groups) for row in g])


def _confusion_scores(cm: np.ndarray, zero: list[int] | tuple = ()) -> tuple[float | None, list[float | None],
                                                                           float | None]:
    """Accuracy, per-group IoU and mean IoU of a float confusion; None where undefined; groups in ``zero``
    count with IoU 0."""
    tp, total = np.diag(cm), cm.sum()
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    iou[list(zero)] = 0.0
    present = ~np.isnan(iou)
    return (float(tp.sum() / total) if total > 0 else None, [None if np.isnan(v) else float(v) for v in iou],
            float(iou[present].mean()) if present.any() else None)


class Signals:
    """Accumulates label-free signals on unlabelled pixels, calibrated by a :meth:`Calibrator.result`
    dict (None: no calibration, and the atc, doc and calibrated estimates are None)."""

    def __init__(self, groups: int, lut: np.ndarray, calibration: dict | None = None,
                 never: tuple[int, ...] = ()) -> None:
        self.groups, self.lut, self.calibration = groups, np.asarray(lut), calibration
        self.never = tuple(never)  # groups no output of the model stands for (shadow, for a cloud mask)
        self.pixels = 0  # every pixel added, with or without probabilities
        self.scored = 0  # the pixels that came with probabilities
        self.confidence = self.entropy = 0.0  # sums of max group probability and entropy (nats), T = 1
        self.above = 0  # pixels with max group probability above the ATC threshold
        self.predicted = np.zeros(groups, dtype=np.int64)
        self.raw = np.zeros((groups, groups))  # estimated confusion from T = 1 probabilities
        self.calibrated = np.zeros((groups, groups))  # ... from the calibration's tempered probabilities

    def add(self, probs: np.ndarray, predicted: np.ndarray | None = None) -> None:
        """Add (K, P) class probabilities of valid pixels; ``predicted`` (P,): the model's groups, by
        default the argmax of the group probabilities at T = 1."""
        g = fold(probs, self.lut, self.groups)
        top = g.max(axis=0)
        pred = g.argmax(axis=0) if predicted is None else _checked_groups(predicted, self.groups)
        if pred.size != top.size:
            raise ValueError(f"{pred.size} predicted pixels for {top.size} pixels of probabilities")
        self._count(pred)
        self.scored += pred.size
        self.confidence += float(top.sum())
        self.entropy -= float((g * np.log(g, out=np.zeros_like(g), where=g > 0)).sum())
        self.raw += _columns(g, pred, self.groups)
        if self.calibration is not None and self.calibration.get("temperature") is not None:
            self.above += int((top > self.calibration["atc_threshold"]).sum())
            calibrated = fold(tempered(probs, self.calibration["temperature"]), self.lut, self.groups)
            self.calibrated += _columns(calibrated, pred, self.groups)

    def add_classes(self, predicted: np.ndarray) -> None:
        """Add (P,) predicted group indices of a model without probabilities: only pixels and counts grow."""
        self._count(_checked_groups(predicted, self.groups))

    def _count(self, pred: np.ndarray) -> None:
        self.pixels += pred.size
        self.predicted += np.bincount(pred, minlength=self.groups)

    def merge(self, other: Signals) -> None:
        """Add the counts of ``other`` (same groups and calibration), e.g. a scene's into a total."""
        key = (lambda s: None if s.calibration is None
               else (s.calibration["temperature"], s.calibration["atc_threshold"]))
        if other.groups != self.groups or key(other) != key(self):
            raise ValueError("can only merge signals of the same groups and calibration")
        for name in ("pixels", "scored", "confidence", "entropy", "above", "predicted", "raw", "calibrated"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def _mean(self, total: float) -> float | None:
        return float(total / self.scored) if self.scored else None

    def signals(self, cloud_groups: list[int]) -> dict:
        """pixels, confidence and entropy (means), atc_fraction, cloud_fraction (predicted in cloud_groups)."""
        cloud = int(self.predicted[list(cloud_groups)].sum())
        return {"pixels": self.pixels, "confidence": self._mean(self.confidence),
                "entropy": self._mean(self.entropy),
                "atc_fraction": self._mean(self.above) if (self.calibration or {}).get("atc_threshold") is not None else None,
                "cloud_fraction": cloud / self.pixels if self.pixels else None}

    def estimates(self, names: list[str]) -> dict:
        """Accuracy and mIoU estimates by method (no_drop, confidence, atc, doc, calibrated) and the
        calibrated IoU per group; each a float or None where it cannot be computed."""
        if len(names) != self.groups:
            raise ValueError(f"{len(names)} names for {self.groups} groups")
        cal, conf = self.calibration or {}, self._mean(self.confidence)
        # a group the model never predicts has no estimated pixel, yet where the calibration reference had it
        # the reference here likely has it too: its IoU is 0, not left out (else a cloud-only mask scores high)
        zero = [g for g in self.never if (cal.get("iou") or {}).get(names[g]) is not None]
        _, _, raw_miou = _confusion_scores(self.raw, zero)
        acc, iou, miou = _confusion_scores(self.calibrated, zero)
        if not self.calibration or not self.scored:
            acc, iou, miou = None, [None] * self.groups, None

        def doc(score: float | None) -> float | None:  # Guillory et al., ICCV 2021
            if score is None or conf is None or cal.get("confidence") is None:
                return None
            return float(np.clip(score - (cal["confidence"] - conf), 0.0, 1.0))

        return {"accuracy": {"no_drop": cal.get("accuracy"), "confidence": conf,
                             "atc": self.signals([])["atc_fraction"], "doc": doc(cal.get("accuracy")),
                             "calibrated": acc},
                "miou": {"no_drop": cal.get("miou"), "confidence": raw_miou,
                         "doc": doc(cal.get("miou")), "calibrated": miou},
                "iou": {"calibrated": dict(zip(names, iou))}}


def _probit(rate: np.ndarray) -> np.ndarray:
    return stats.norm.ppf(np.clip(np.asarray(rate, dtype=np.float64), 1e-4, 1 - 1e-4))


#: the least spread of ID agreement (probit units) that a slope is fitted to; below it the slope is 1
MIN_SPREAD = 0.25


def probit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope a and intercept b of the least-squares line probit(y) = a * probit(x) + b (rates clipped to
    [1e-4, 1 - 1e-4]); with fewer than 3 points or x spread over less than :data:`MIN_SPREAD` in probit
    units, a = 1 and b = mean(probit(y) - probit(x)): a slope fitted to pairs that barely differ in
    agreement runs off (three seeds of one model at ID agreement 0.60-0.62 gave a = 40)."""
    px, py = _probit(x).ravel(), _probit(y).ravel()
    if px.size == 0 or px.size != py.size:
        raise ValueError(f"need as many x as y rates, at least one: got {px.size} and {py.size}")
    if px.size < 3 or np.ptp(px) < MIN_SPREAD:
        return 1.0, float(np.mean(py - px))
    a, b = np.polyfit(px, py, 1)
    return float(a), float(b)


def agreement_on_the_line(id_agreement: np.ndarray, ood_agreement: np.ndarray,
                          id_accuracy: np.ndarray) -> np.ndarray:
    """Each model's estimated OOD accuracy Phi(a * Phi^-1(id_accuracy) + b), with (a, b) the probit line
    of the model pairs' OOD agreement against their ID agreement (Baek et al., NeurIPS 2022)."""
    a, b = probit_line(id_agreement, ood_agreement)
    return stats.norm.cdf(a * _probit(id_accuracy) + b)


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(agreeing, compared) pixels of two predictions, over pixels where neither is IGNORE."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    keep = (a != IGNORE) & (b != IGNORE)
    return int((a[keep] == b[keep]).sum()), int(keep.sum())


def input_shift(train_quantiles: np.ndarray, test_values: list[np.ndarray]) -> dict:
    """Per band, how far test inputs lie from the training inputs.

    ``train_quantiles`` (C, 101): quantiles at LEVELS of the normalized training inputs (a row with NaN is
    an unknown band); ``test_values``: per band a 1-D sample of normalized test values (non-finite ones are
    dropped). Returns ``{"outside": fraction below train P1 or above P99, "distance": 1-Wasserstein distance
    between test and train quantiles / (P99 - P1)}``, lists with None for unknown or empty bands."""
    train = np.asarray(train_quantiles, dtype=np.float64)
    if train.ndim != 2 or train.shape[1] != len(LEVELS) or len(train) != len(test_values):
        raise ValueError(f"train quantiles of shape {train.shape} do not match {len(test_values)} bands "
                         f"x {len(LEVELS)} levels")
    outside, distance = [], []
    for q, v in zip(train, test_values):
        v = np.asarray(v, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if np.isnan(q).any() or v.size == 0:
            outside.append(None)
            distance.append(None)
            continue
        lo, hi = q[1], q[99]
        spread = hi - lo if hi - lo > 1e-12 else 1.0
        outside.append(float(np.mean((v < lo) | (v > hi))))
        distance.append(float(np.abs(np.quantile(v, LEVELS) - q).mean() / spread))
    return {"outside": outside, "distance": distance}


def flagged_bands(shift: dict, bands: list[str]) -> list[str]:
    """Names of the bands whose outside fraction (of :func:`input_shift`) exceeds OUTSIDE_FLAG."""
    return [b for b, o in zip(bands, shift["outside"]) if o is not None and o > OUTSIDE_FLAG]


def spearman(x, y) -> float | None:
    """Spearman rank correlation of the finite (x, y) pairs; None with fewer than 3 or constant input."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)
