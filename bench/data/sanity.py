"""Normalization sanity gate: per-band statistics of what the model sees in training and at test time.

Before evaluation, the runner records for every band the 1st, 50th and 99th percentiles of the normalized
training inputs and of the normalized test inputs, and warns when a test band's median lies outside the
training band's [P1, P99] range (the model sees inputs it never saw), or when raw test reflectance looks
like the wrong units. The 101 percentiles of each are kept too: the label-free input shift
(:func:`bench.core.label_free.input_shift`) measures how far the test inputs lie from them. Leaderboards warn when two different normalizers or adapters give bit-identical
metrics: a sign that one of them did nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from bench.core.label_free import flagged_bands, input_shift
from bench.data.splits import Split, scene_input, tile_input
from bench.data.normalizers import Normalizer

#: at most this many values per band and split enter the statistics (a fixed-size random sample).
SAMPLE = 200_000
QUANTILES = np.linspace(0, 1, 101)


def band_samples(images: Iterable[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Per band, up to :data:`SAMPLE` finite values of each (C, H, W) array (a fixed-seed random sample)."""
    rng = np.random.default_rng(seed)
    per_band: list[list[np.ndarray]] = []
    for img in images:
        flat = img.reshape(img.shape[0], -1)
        if not per_band:
            per_band = [[] for _ in range(len(flat))]
        for b, v in enumerate(flat):
            v = v[np.isfinite(v)]
            per_band[b].append(v if v.size <= SAMPLE else rng.choice(v, SAMPLE, replace=False))
    return [np.concatenate(v) if v else np.array([]) for v in per_band]


def stats_of(values: list[np.ndarray]) -> dict[str, list]:
    """P1, median and P99 per band of :func:`band_samples`, and the 101 percentiles 0..100 (``quantiles``)."""
    q = np.array([np.quantile(v, QUANTILES) if v.size else np.full(len(QUANTILES), np.nan) for v in values])
    return {"p1": q[:, 1].tolist(), "median": q[:, 50].tolist(), "p99": q[:, 99].tolist(),
            "quantiles": np.round(q, 6).tolist()}


def band_stats(images: Iterable[np.ndarray], seed: int = 0) -> dict[str, list]:
    """P1, median and P99 (and the 101 percentiles) per band of (C, H, W) arrays, over their finite values."""
    return stats_of(band_samples(images, seed))


def normalized(split: Split, normalizer: Normalizer) -> Iterable[np.ndarray]:
    """The split's scenes as the model sees them (scene- and tile-level normalization applied); a large
    scene window by window (:meth:`bench.data.splits.Split.pieces`), a scene-level normalizer then
    taking its statistics from a first streamed pass, as evaluation does."""
    for i in range(len(split.scenes)):
        if not split.is_large(i):
            yield tile_input(normalizer, scene_input(normalizer, split.scenes[i].image))
            continue
        fn = normalizer.scene_function(p.image for p in split.pieces(i)) if normalizer.level == "scene" else None
        for piece in split.pieces(i):
            yield fn(piece.image) if fn else tile_input(normalizer, piece.image)


def raw(split: Split) -> Iterable[np.ndarray]:
    """The split's scenes as read (reflectance), a large one window by window."""
    return (p.image for i in range(len(split.scenes)) for p in split.pieces(i))


def apart(value: float, lo: float, hi: float) -> tuple[str, str, str]:
    """The three numbers with as many significant digits as it takes to show ``value`` differ from both
    bounds (``1.0003`` against ``1``, not ``1`` against ``1``)."""
    for digits in range(3, 13):
        texts = tuple(f"{v:.{digits}g}" for v in (value, lo, hi))
        if texts[0] not in texts[1:]:
            return texts
    return texts


def outside_message(band: str, median: float, lo: float, hi: float) -> str:
    """What a test median outside the training P1-P99 means, in words a newcomer can act on."""
    m, low, high = apart(median, lo, hi)
    below = median < lo
    return (f"band {band}: at least half of the test values lie {'below' if below else 'above'} the training "
            f"data's {'1st' if below else '99th'} percentile (normalized test median {m}, training P1-P99 "
            f"[{low}, {high}]): the test scenes are {'darker' if below else 'brighter'} in {band} than anything "
            "the model was trained on, so expect it to do worse there; a scene-level normalizer "
            "(--norm percentile_scene) rescales each scene by its own range")


def check(train: Split, test: Split, normalizer: Normalizer, bands: list[str]) -> dict[str, Any]:
    """Statistics of the normalized train and test inputs, and the warnings they raise."""
    test_values = band_samples(normalized(test, normalizer))
    stats = {"train": band_stats(normalized(train, normalizer)), "test": stats_of(test_values)}
    shift = input_shift(np.array(stats["train"]["quantiles"]), test_values)
    raw_ = band_stats(raw(test))
    found = []
    for b, band in enumerate(bands):
        lo, hi, med = stats["train"]["p1"][b], stats["train"]["p99"][b], stats["test"]["median"][b]
        if np.isfinite(med) and not lo <= med <= hi:
            found.append(outside_message(band, med, lo, hi))
        if raw_["median"][b] > 2 or raw_["median"][b] < -0.5:
            found.append(f"band {band}: test reflectance median {raw_['median'][b]:.3g} looks like the wrong units")
    for message in found:
        warnings.warn(f"normalization sanity: {message}", stacklevel=2)
    return {**stats, "bands": bands, "warnings": found,
            "input_shift": {**shift, "bands": bands, "flagged": flagged_bands(shift, bands)}}


def shift_of(train_quantiles: list, test: Split, normalizer: Normalizer, bands: list[str]) -> dict[str, Any]:
    """How far ``test``'s normalized inputs lie from the training inputs whose percentiles are given (see
    :func:`bench.core.label_free.input_shift`), with the flagged bands named."""
    shift = input_shift(np.array(train_quantiles, dtype=float), band_samples(normalized(test, normalizer)))
    return {**shift, "bands": bands, "flagged": flagged_bands(shift, bands)}
