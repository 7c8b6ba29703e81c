"""Bounded-memory per-band quantiles: exact counts on an aligned histogram grid that coarsens as needed.

Each band keeps ``bins`` counters over bins of width ``w = 2**k`` aligned to multiples of ``w``. When new
values fall outside the grid, pairs of bins are merged (``w`` doubles; merging is exact because the grid
is aligned) until the data fit. Memory is ``bands x bins x 8`` bytes whatever the data size.

Error bound: a quantile is interpolated inside the bin that holds its rank, so it differs from
``numpy.percentile`` (linear method) by less than the final bin width, and the final width is at most
``4 x (max - min) / bins`` of the values seen. With the default 65,536 bins that is 0.006 % of the band's
range (``benchmarks/percentile_fit.py`` measures it).
"""

from __future__ import annotations

import math

import numpy as np


class StreamingQuantiles:
    """Per-band quantiles of a stream of values, in memory that does not grow with the stream."""

    def __init__(self, n_bands: int, bins: int = 65536) -> None:
        if bins < 16:
            raise ValueError(f"bins must be at least 16, got {bins}")
        self.bins = bins
        self.counts = np.zeros((n_bands, bins), dtype=np.int64)
        self.k0 = np.zeros(n_bands, dtype=np.int64)  # index of the first bin on the grid of width w
        self.width = np.full(n_bands, np.nan)  # bin width per band, a power of two; NaN until data
        self.vmin = np.full(n_bands, np.inf)
        self.vmax = np.full(n_bands, -np.inf)

    @property
    def n(self) -> np.ndarray:
        return self.counts.sum(axis=1)

    def update(self, band: int, values: np.ndarray) -> None:
        """Add finite ``values`` (any shape) to band ``band``."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        lo, hi = float(v.min()), float(v.max())
        self.vmin[band] = min(self.vmin[band], lo)
        self.vmax[band] = max(self.vmax[band], hi)
        if np.isnan(self.width[band]):  # first data: the span fills at most half of the grid
            span = max(hi - lo, abs(hi) * 1e-6, 1e-12)
            self.width[band] = 2.0 ** math.ceil(math.log2(span / (self.bins / 2)))
            self.k0[band] = math.floor(lo / self.width[band])
        # the grid must hold every value seen so far: coarsen until their bins fit, then re-anchor
        kmin, kmax = (math.floor(v / self.width[band]) for v in (self.vmin[band], self.vmax[band]))
        while kmax - kmin + 1 > self.bins:
            self._coarsen(band)
            kmin, kmax = kmin // 2, kmax // 2
        if kmin < self.k0[band] or kmax > self.k0[band] + self.bins - 1:
            moved = np.zeros(self.bins, dtype=np.int64)
            used = np.nonzero(self.counts[band])[0]
            moved[used + int(self.k0[band] - kmin)] = self.counts[band, used]
            self.counts[band] = moved
            self.k0[band] = kmin
        idx = np.floor(v / self.width[band]).astype(np.int64) - self.k0[band]
        np.clip(idx, 0, self.bins - 1, out=idx)  # guards float rounding at the grid's two ends
        self.counts[band] += np.bincount(idx, minlength=self.bins)

    def _coarsen(self, band: int) -> None:
        k = self.k0[band] + np.arange(self.bins)
        new_k0 = self.k0[band] // 2
        merged = np.zeros(self.bins, dtype=np.int64)
        np.add.at(merged, k // 2 - new_k0, self.counts[band])
        self.counts[band] = merged
        self.k0[band] = new_k0
        self.width[band] *= 2

    def quantile(self, q: float) -> np.ndarray:
        """Per-band ``q``-quantile (``q`` in [0, 1]), like ``numpy.quantile(..., method="linear")``."""
        out = np.full(len(self.counts), np.nan)
        for b, counts in enumerate(self.counts):
            n = int(counts.sum())
            if n == 0:
                continue
            rank = q * (n - 1)
            lo_rank, frac = int(math.floor(rank)), rank - math.floor(rank)
            v0 = self._value_at_rank(b, lo_rank)
            v1 = self._value_at_rank(b, min(lo_rank + 1, n - 1))
            out[b] = v0 + frac * (v1 - v0)
        return out

    def _value_at_rank(self, band: int, rank: int) -> float:
        cum = np.cumsum(self.counts[band])
        i = int(np.searchsorted(cum, rank, side="right"))
        before = cum[i - 1] if i > 0 else 0
        inside = (rank - before + 0.5) / self.counts[band, i]
        value = (self.k0[band] + i + inside) * self.width[band]
        return float(min(max(value, self.vmin[band]), self.vmax[band]))
