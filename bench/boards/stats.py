"""Statistics for leaderboards: confidence intervals over seeds, and bootstraps over test blocks and seeds.

* :func:`seed_interval`: mean and half-width of the two-sided Student-t confidence interval of a
  metric over runs that differ only in their seed (training noise).
* :func:`hierarchical_bootstrap` (what the boards use): does entry A beat entry B, given both training
  noise and the choice of test pixels? Each replicate draws test blocks with replacement (the same draw
  for A and B) and, independently for A and B, seeds with replacement; the mean IoU of each drawn seed is
  taken on the drawn blocks and averaged. The seed draw is rescaled by sqrt(n / (n - 1)) (the bootstrap
  underestimates a variance from n draws by that factor), and the interval is the observed difference
  ± t x the replicates' standard deviation, with Welch's degrees of freedom from the seed counts: with
  two or three seeds a bootstrap percentile interval is far too narrow (``tests/test_stats.py`` measures
  the false-positive rate on simulated entries of equal skill). With one seed on both sides there is no
  training noise to resample and it falls back to the block bootstrap below.
* :func:`paired_bootstrap`: A against B on the same test pixels only. The test set is cut into
  spatial blocks (``bench.run.evaluate.BLOCK`` px, the confusion matrix of each stored in the results);
  each replicate draws blocks with replacement, the *same* draw for A and B, pools each run's confusion
  matrices over the drawn blocks, and takes the difference of the seed-averaged mean IoU. The
  percentile interval of that difference is reported, and ``p`` is the share of replicates in which A
  does not beat B (a one-sided bootstrap p-value). Resampling blocks rather than pixels keeps the
  spatial correlation of neighbouring pixels, so the interval is not falsely narrow.

An entry is *tied with the best* when the interval of (best - entry) reaches 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


def seed_interval(values: Any, level: float = LEVEL) -> tuple[float, float]:
    """``(mean, half_width)`` of the Student-t interval over runs; half-width NaN for fewer than two."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) < 2:
        return float(x.mean()), math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def miou(cm: np.ndarray) -> np.ndarray:
    """Mean IoU of confusion matrices ``(..., k, k)``, leaving out classes absent from both reference and
    prediction (as :func:`bench.core.metrics.scores` does); NaN where every class is absent."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    union = cm.sum(-1) + cm.sum(-2) - tp
    present = union > 0
    iou = np.where(present, tp / np.where(present, union, 1.0), 0.0)
    count = present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, iou.sum(-1) / count, np.nan)


#: a score of confusion matrices ``(..., k, k)`` -> ``(...)`` (NaN where undefined)
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass
class Comparison:
    """A minus B: observed difference in mean IoU, its bootstrap interval, and the one-sided p-value."""

    diff: float
    low: float
    high: float
    p: float
    blocks: int
    resamples: int
    seeds: tuple[int, int] = (1, 1)  # runs of A and of B; (1, 1): test blocks only, no training noise

    @property
    def significant(self) -> bool:
        """A beats B: the whole interval lies above zero."""
        return self.low > 0


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                     level: float = LEVEL, stat: Statistic = miou) -> Comparison:
    """Compare entries A and B given their per-block confusion matrices ``(runs, blocks, k, k)``, blocks in
    the same order for both (the runs of A and of B need not match: they are averaged separately), in
    ``stat`` of the pooled confusion matrices (mean IoU, or e.g. the balanced overall accuracy)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"A and B must cover the same blocks and classes, got {a.shape} and {b.shape}")
    n = a.shape[1]
    observed = float(nanmean(stat(a.sum(1))) - nanmean(stat(b.sum(1))))
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(n, 1))  # bound the (replicates x blocks) weight matrix
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(m, n))
        weights = np.zeros((m, n))
        np.add.at(weights, (np.repeat(np.arange(m), n), draws.ravel()), 1.0)
        stat_a = nanmean(stat(np.einsum("rn,snkl->rskl", weights, a)), axis=1)
        stat_b = nanmean(stat(np.einsum("rn,snkl->rskl", weights, b)), axis=1)
        diffs[start:start + m] = stat_a - stat_b
    diffs = diffs[np.isfinite(diffs)]  # a draw on which the statistic is undefined (BOA of blocks without cloud)
    low, high = np.quantile(diffs, [0.5 - level / 2, 0.5 + level / 2]) if len(diffs) else (math.nan, math.nan)
    return Comparison(observed, float(low), float(high), float(np.mean(diffs <= 0)) if len(diffs) else math.nan, n, resamples,
                      (a.shape[0], b.shape[0]))


def hierarchical_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                           level: float = LEVEL, stat: Statistic = miou) -> Comparison:
    """Compare A and B from their per-block confusion matrices ``(runs, blocks, k, k)`` (blocks in the same
    order), resampling test blocks (paired) and each side's seeds (see the module docstring), in ``stat``."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"A and B must cover the same blocks and classes, got {a.shape} and {b.shape}")
    if len(a) < 2 and len(b) < 2:
        return paired_bootstrap(a, b, resamples, seed, level, stat)
    rng = np.random.default_rng(seed)
    weights = block_weights(rng, a.shape[1], resamples)
    diffs = _seed_resampled(rng, weights, a, stat) - _seed_resampled(rng, weights, b, stat)
    per_run_a, per_run_b = stat(a.sum(1)), stat(b.sum(1))
    observed = float(nanmean(per_run_a) - nanmean(per_run_b))
    va, vb = (np.nanvar(x, ddof=1) / len(x) if len(x) > 1 else 0.0 for x in (per_run_a, per_run_b))
    df = (va + vb) ** 2 / sum(v ** 2 / (len(x) - 1) for v, x in ((va, a), (vb, b)) if len(x) > 1 and v > 0) \
        if va + vb > 0 else max(len(a), len(b)) - 1
    diffs = diffs[np.isfinite(diffs)]  # a draw on which the statistic is undefined
    se = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(stats.t.sf(observed / se, df)) if se > 0 else float(observed <= 0)
    return Comparison(observed, observed - half, observed + half, p, a.shape[1], resamples, (len(a), len(b)))


def block_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """``(resamples, n)`` counts of each of ``n`` blocks in each replicate's draw with replacement."""
    draws = rng.integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.repeat(np.arange(resamples), n), draws.ravel()), 1.0)
    return weights


def _seed_resampled(rng: np.random.Generator, weights: np.ndarray, x: np.ndarray, stat: Statistic = miou) -> np.ndarray:
    """Per replicate: ``stat`` of each run on the drawn blocks, averaged over a draw of the runs
    (rescaled so that its spread estimates the seed-to-seed variance without bias)."""
    per_run = stat(np.einsum("rn,snkl->rskl", weights, x))  # (replicates, runs)
    n = x.shape[0]
    if n < 2:
        return per_run[:, 0]
    drawn = np.take_along_axis(per_run, rng.integers(0, n, size=per_run.shape), axis=1)
    centre = nanmean(per_run, axis=1)
    return centre + np.sqrt(n / (n - 1)) * (nanmean(drawn, axis=1) - centre)


def nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """The mean of the defined values along ``axis``; NaN, without a warning, where there is none."""
    x = np.asarray(x, dtype=np.float64)
    defined = np.isfinite(x)
    count = defined.sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, x, 0.0).sum(axis) / np.where(count > 0, count, np.nan)


def blocks_of(results: list[dict[str, Any]], ids: list[str] | None = None) -> tuple[list[str], np.ndarray] | None:
    """Per-block confusion matrices of some runs as ``(ids, array (runs, blocks, k, k))``, on the blocks
    in ``ids`` (default: those every run has); None if a run has no blocks stored (an older result)."""
    per_run = []
    for r in results:
        blk = r.get("blocks")
        if not blk or not blk.get("ids"):
            return None
        k = len(r["metrics"]["classes"])
        per_run.append(dict(zip(blk["ids"], np.asarray(blk["confusion"], dtype=np.int64).reshape(-1, k, k))))
    if ids is None:
        ids = sorted(set.intersection(*(set(d) for d in per_run)))
    if not ids or any(i not in d for d in per_run for i in ids):
        return None
    return ids, np.stack([np.stack([d[i] for i in ids]) for d in per_run])


__all__ = ["seed_interval", "miou", "hierarchical_bootstrap", "paired_bootstrap", "Comparison", "blocks_of", "LEVEL",
           "RESAMPLES"]
