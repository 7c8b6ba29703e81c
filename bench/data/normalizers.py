"""Input normalizers: explicit fitted objects, fitted on the training split only.

Contract of every normalizer:

* ``fit(samples)`` takes an iterable of ``(image, valid)`` pairs, ``image`` of shape (C, H, W) in
  reflectance and ``valid`` a (H, W) boolean mask of usable pixels (``None``: all usable). Pixels outside
  ``valid`` are ignored; NaN or inf inside it is refused. Fitting streams: memory does not grow with the
  number of samples.
* ``transform(x)`` maps a numpy array or torch tensor of shape (C, H, W) or (N, C, H, W) to the same
  shape and type. NaN stays NaN (the model input fills it later). Calling it before ``fit`` raises.
* ``state_dict()`` / ``load_state_dict()`` round-trip everything ``transform`` needs, as plain JSON
  values: it is saved with the checkpoint and written into every result.
* ``level`` says what one ``transform`` call must see: ``"pixel"`` (pointwise: any crop gives the same
  numbers), ``"scene"`` (statistics of the whole scene: applied to full scenes before cropping or
  tiling) or ``"patch"`` (statistics of each crop or tile: applied to each one).

A normalizer type is one class marked ``@register("norm", ...)``; a named setting of it (``percentile``
with P1/P99) is one table in ``registry/norms.toml``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sys
from typing import TYPE_CHECKING

import numpy as np

from bench.core.errors import BenchError, DataError
from bench.data.quantiles import StreamingQuantiles
from bench.core.registry import register

if TYPE_CHECKING:
    import torch

Sample = tuple[np.ndarray, "np.ndarray | None"]


def is_tensor(x: Any) -> bool:
    """True for a torch tensor (without importing torch: a tensor means torch is loaded already)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class NotFittedError(BenchError):
    """``transform`` was called on a normalizer that has not been fitted or loaded."""


class Normalizer:
    """Base class: subclasses implement ``_fit``, ``_params`` and the state of their statistics."""

    type_name = "base"
    needs_fit = True
    level = "pixel"

    def __init__(self) -> None:
        self.fitted = not self.needs_fit
        self.n_bands: int | None = None

    # -- public API -------------------------------------------------------------------------------
    def fit(self, samples: Iterable[Sample]) -> "Normalizer":
        """Fit the statistics on the training samples; returns ``self``."""
        self._reset()
        seen = 0
        for i, (image, valid) in enumerate(samples):
            values = _valid_values(image, valid, i)
            if self.n_bands is None:
                self.n_bands = len(values)
            elif len(values) != self.n_bands:
                raise DataError(f"training image {i} has {len(values)} bands, earlier ones {self.n_bands}")
            self._update(values)
            seen += sum(v.size for v in values)
        if self.needs_fit and seen == 0:
            raise DataError(f"cannot fit normalizer {self.type_name!r}: no valid training pixels")
        self._finish()
        self.fitted = True
        return self

    def transform(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalize (C, H, W) or (N, C, H, W) reflectance, numpy or torch; NaN (nodata) stays NaN."""
        if not self.fitted:
            raise NotFittedError(f"normalizer {self.type_name!r} was not fitted: call fit() on the "
                                 "training split (or load_state_dict()) before transform()")
        bands = x.shape[-3]
        if self.n_bands is not None and bands != self.n_bands:
            raise DataError(f"normalizer {self.type_name!r} was fitted on {self.n_bands} bands, "
                            f"got an input with {bands}")
        return self._apply(x)

    def scene_function(self, strips: Iterable[np.ndarray]):  # noqa: ANN201 - (C, h, W) -> same
        """The normalization of one scene that is read in ``strips`` of rows, as a function of a strip: a
        scene-level normalizer takes its statistics from one streamed pass over ``strips`` (bounded memory);
        a pixel-level one is :meth:`transform`; a patch-level one is applied to each tile later (identity)."""
        if self.level == "patch":
            return lambda x: x
        if self.level == "pixel":
            return self.transform
        if not self.fitted:
            raise NotFittedError(f"normalizer {self.type_name!r} was not fitted")
        hist = None
        for strip in strips:
            if hist is None:
                hist = StreamingQuantiles(len(strip))
            for b, band in enumerate(strip):
                hist.update(b, band[np.isfinite(band)])
        if hist is None:
            raise DataError("a scene with no rows has no statistics")
        quantiles = np.nan_to_num(np.stack([hist.quantile(q) for q in self._scene_levels()], axis=1))  # no data: 0
        return lambda x: _per_image(lambda a: self._with_quantiles(a, quantiles), x)

    def _scene_levels(self) -> np.ndarray:
        raise NotImplementedError

    def _with_quantiles(self, a: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The fitted state, JSON-able: saved with the model and in every result."""
        return {"type": self.type_name, "fitted": self.fitted, "n_bands": self.n_bands, **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> "Normalizer":
        """Restore a fitted state from :meth:`state_dict`."""
        if state.get("type") != self.type_name:
            raise BenchError(f"state of normalizer {state.get('type')!r} cannot load into {self.type_name!r}")
        self.fitted, self.n_bands = bool(state["fitted"]), state["n_bands"]
        self._load(state)
        return self

    # -- for subclasses ---------------------------------------------------------------------------
    def _reset(self) -> None:
        self.n_bands = None

    def _update(self, values: list[np.ndarray]) -> None: ...

    def _finish(self) -> None: ...

    def _apply(self, x):  # noqa: ANN001 - numpy or torch
        return x

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: dict[str, Any]) -> None: ...


def _valid_values(image: np.ndarray, valid: np.ndarray | None, i: int) -> list[np.ndarray]:
    """The usable values of each band of one (C, H, W) image; NaN/inf inside ``valid`` raise."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise DataError(f"training image {i} must have shape (bands, height, width), got {image.shape}")
    if valid is None:
        valid = np.ones(image.shape[1:], dtype=bool)
    elif valid.shape != image.shape[1:]:
        raise DataError(f"training image {i}: valid mask {valid.shape} does not match image {image.shape[1:]}")
    values = [band[valid] for band in image]
    for b, v in enumerate(values):
        bad = int((~np.isfinite(v)).sum())
        if bad:
            raise DataError(f"training image {i}, band {b}: {bad} NaN or inf values inside the valid "
                            "mask; mark them as nodata (valid=False) before fitting")
    return values


def _per_band(values: list[float] | np.ndarray, like: np.ndarray | torch.Tensor):
    """Per-band parameters shaped (C, 1, 1) in the array library and dtype of ``like``."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 1, 1)
    if is_tensor(like):
        torch = sys.modules["torch"]
        return torch.as_tensor(arr, dtype=like.dtype if like.is_floating_point() else torch.float32,
                               device=like.device)
    return arr.astype(like.dtype if np.issubdtype(like.dtype, np.floating) else np.float32)


class _QuantileFit(Normalizer):
    """Fits per-band quantiles of the training split with :class:`StreamingQuantiles` (bounded memory);
    subclasses read what they need from ``self._hist`` in ``_finish``."""

    def __init__(self, bins: int = 65536) -> None:
        super().__init__()
        self.bins = int(bins)
        self._hist: StreamingQuantiles | None = None

    def _update(self, values: list[np.ndarray]) -> None:
        if self._hist is None:
            self._hist = StreamingQuantiles(len(values), self.bins)
        for b, v in enumerate(values):
            self._hist.update(b, v)


@register("norm", "identity")
class Identity(Normalizer):
    """No normalization: the model sees top-of-atmosphere reflectance as it is."""

    type_name = "identity"
    needs_fit = False


@register("norm", "percentile")
class Percentile(_QuantileFit):
    """Per-band percentile min-max: ``(clip(x, P_low, P_high) - P_low) / (P_high - P_low)``.

    ``P_low`` / ``P_high`` are the ``low`` / ``high`` percentiles of each band over the valid pixels of
    the training split. The study writes ``clip(X, P99, P1) / (P99 - P1)`` without subtracting
    ``P1``; this is the standard min-max form, which maps P_low to 0 and P_high to 1. A band with
    ``P_high == P_low`` maps to 0. Quantiles come from :class:`StreamingQuantiles` (bounded memory,
    error below ``4 x range / bins``).
    """

    type_name = "percentile"

    def __init__(self, low: float = 1.0, high: float = 99.0, bins: int = 65536) -> None:
        if not 0 <= low < high <= 100:
            raise BenchError(f"percentile normalizer needs 0 <= low < high <= 100, got low={low}, high={high}")
        super().__init__(bins)
        self.low, self.high = float(low), float(high)
        self.p_low: list[float] | None = None
        self.p_high: list[float] | None = None

    def _finish(self) -> None:
        self.p_low = self._hist.quantile(self.low / 100).tolist()
        self.p_high = self._hist.quantile(self.high / 100).tolist()
        self._hist = None

    def _apply(self, x):  # noqa: ANN001
        lo, hi = _per_band(self.p_low, x), _per_band(self.p_high, x)
        span = hi - lo
        scale = 1 / span.clip(min=1e-12) if is_tensor(x) else 1 / np.maximum(span, 1e-12)
        clipped = x.clip(lo, hi) if is_tensor(x) else np.clip(x, lo, hi)
        return (clipped - lo) * scale

    def _state(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "p_low": self.p_low, "p_high": self.p_high}

    def _load(self, state: dict[str, Any]) -> None:
        self.low, self.high = state["low"], state["high"]
        self.p_low, self.p_high = state["p_low"], state["p_high"]


@register("norm", "zscore")
class ZScore(Normalizer):
    """Per-band z-score ``(x - mean) / std`` with mean and standard deviation of the training split.

    Streams with Chan's parallel update of (count, mean, sum of squared deviations) in float64.
    """

    type_name = "zscore"

    def __init__(self) -> None:
        super().__init__()
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        self._acc: np.ndarray | None = None  # (bands, 3): count, mean, M2

    def _update(self, values: list[np.ndarray]) -> None:
        if self._acc is None:
            self._acc = np.zeros((len(values), 3))
        for b, v in enumerate(values):
            if v.size == 0:
                continue
            v = v.astype(np.float64)
            n_b, mean_b, m2_b = v.size, float(v.mean()), float(((v - v.mean()) ** 2).sum())
            n_a, mean_a, m2_a = self._acc[b]
            n = n_a + n_b
            delta = mean_b - mean_a
            self._acc[b] = (n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n)

    def _finish(self) -> None:
        n, mean, m2 = self._acc.T
        self.mean = mean.tolist()
        self.std = np.sqrt(m2 / np.maximum(n, 1)).tolist()
        self._acc = None

    def _apply(self, x):  # noqa: ANN001
        mean = _per_band(self.mean, x)
        std = np.maximum(np.asarray(self.std), 1e-12).tolist()
        return (x - mean) / _per_band(std, x)

    def _state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def _load(self, state: dict[str, Any]) -> None:
        self.mean, self.std = state["mean"], state["std"]


def _finite_quantiles(x: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """(bands, len(qs)) quantiles of each band of a (C, H, W) array over its finite values."""
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    out = np.zeros((len(flat), len(qs)))
    for b, v in enumerate(flat):
        v = v[np.isfinite(v)]
        out[b] = np.quantile(v, qs) if v.size else 0.0
    return out


def _numpy(x):  # noqa: ANN001
    return (x.detach().cpu().numpy(), x) if is_tensor(x) else (x, None)


def _like(y: np.ndarray, ref):  # noqa: ANN001
    return y if ref is None else sys.modules["torch"].as_tensor(y, dtype=ref.dtype, device=ref.device)


def _per_image(fn, x):  # noqa: ANN001 - apply a (C, H, W) function to (C, H, W) or (N, C, H, W)
    arr, ref = _numpy(x)
    out = fn(arr) if arr.ndim == 3 else np.stack([fn(a) for a in arr])
    return _like(out.astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32), ref)


@register("norm", "percentile_scene")
class PercentileScene(Normalizer):
    """Per-band percentile min-max with P_low / P_high of each scene itself (no training statistics).

    ``(clip(x, P_low, P_high) - P_low) / (P_high - P_low)`` where the percentiles are those of the scene
    being normalized: training scenes and test scenes alike. Invariant to a positive per-band gain.
    """

    type_name = "percentile_scene"
    needs_fit = False
    level = "scene"

    def __init__(self, low: float = 1.0, high: float = 99.0) -> None:
        super().__init__()
        self.low, self.high = float(low), float(high)

    def _scene_levels(self) -> np.ndarray:
        return np.array([self.low, self.high]) / 100

    def _with_quantiles(self, a: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
        lo, hi = quantiles[:, 0, None, None], quantiles[:, 1, None, None]
        return (np.clip(a, lo, hi) - lo) / np.maximum(hi - lo, 1e-12)

    def _apply(self, x):  # noqa: ANN001
        return _per_image(lambda a: self._with_quantiles(a, _finite_quantiles(a, self._scene_levels())), x)

    def _state(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}

    def _load(self, state: dict[str, Any]) -> None:
        self.low, self.high = state["low"], state["high"]


@register("norm", "zscore_patch")
class ZScorePatch(Normalizer):
    """Per-patch, per-band z-score (as OmniCloudMask does): statistics of each crop or tile itself.

    Invariant to a positive per-band gain and to a per-band offset.
    """

    type_name = "zscore_patch"
    needs_fit = False
    level = "patch"

    def _apply(self, x):  # noqa: ANN001
        def one(a: np.ndarray) -> np.ndarray:
            flat = a.reshape(a.shape[0], -1).astype(np.float64)
            mean = np.nanmean(flat, axis=1)[:, None, None] if np.isfinite(flat).any() else 0.0
            std = np.nanstd(flat, axis=1)[:, None, None] if np.isfinite(flat).any() else 1.0
            return (a - mean) / np.maximum(std, 1e-6)

        return _per_image(one, x)


@register("norm", "histmatch")
class HistMatch(_QuantileFit):
    """Match each band's histogram to the training split's: fitted on the training split, applied per scene.

    The training distribution is kept as ``quantiles`` evenly spaced quantiles per band (streamed, bounded
    memory). A scene's values are mapped through its own empirical CDF onto the training quantiles, so
    its per-band distribution becomes the training one; training scenes map (almost) onto themselves.
    """

    type_name = "histmatch"
    level = "scene"

    def __init__(self, quantiles: int = 1001, bins: int = 65536) -> None:
        super().__init__(bins)
        self.n_quantiles = int(quantiles)
        self.reference: list[list[float]] | None = None

    def _scene_levels(self) -> np.ndarray:
        return np.linspace(0, 1, self.n_quantiles)

    def _finish(self) -> None:
        self.reference = np.stack([self._hist.quantile(q) for q in self._scene_levels()], axis=1).tolist()
        self._hist = None

    def _with_quantiles(self, a: np.ndarray, src: np.ndarray) -> np.ndarray:
        ref = np.asarray(self.reference)
        out = np.empty_like(a, dtype=np.float64)
        for b in range(len(a)):
            # ties in the source quantiles (flat histograms) would make interp ill-defined: keep unique
            qs, idx = np.unique(src[b], return_index=True)
            out[b] = np.interp(a[b], qs, ref[b][idx]) if len(qs) > 1 else ref[b][len(ref[b]) // 2]
        out[~np.isfinite(a)] = np.nan
        return out

    def _apply(self, x):  # noqa: ANN001
        return _per_image(lambda a: self._with_quantiles(a, _finite_quantiles(a, self._scene_levels())), x)

    def _state(self) -> dict[str, Any]:
        return {"quantiles": self.n_quantiles, "reference": self.reference}

    def _load(self, state: dict[str, Any]) -> None:
        self.n_quantiles, self.reference = state["quantiles"], state["reference"]
