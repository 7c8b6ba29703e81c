"""Controlled shifts of real test data, at severities 0 (identity) to 5 (strongest).

A shift type is one ``@register("shift", ...)`` function ``(image, severity, bands, seed) -> image`` on
(C, H, W) top-of-atmosphere reflectance, NaN = nodata (kept). A scenario applies one with::

    [shift]
    type = "haze"
    severities = [0, 1, 2, 3, 4, 5]

and its results hold metrics per severity. Built-in shifts and their strength at severity ``s``:

* ``gain``: illumination / season: visible bands (B01..B05) x (1 - 0.06 s), the others x (1 + 0.06 s).
* ``offset``: + 0.02 s reflectance in every band; s = 5 is the processing-baseline 04.00 offset
  (+1000 DN = +0.1) left uncorrected.
* ``haze``: additive path radiance 0.02 s (490 nm / wavelength)^2: strongest in the blue bands.
* ``noise``: Gaussian noise of standard deviation 0.005 s (seeded per scene: reproducible).
* ``resolution``: block average over factors 1, 2, 3, 4, 6, 8 then nearest upsampling, as from
  10 m to 20 m (s = 1) and 60 m (s = 4).
"""

from __future__ import annotations

import zlib

import numpy as np

from bench.core.registry import Entry, register
from bench.data.datasets import SceneData
from bench.data.splits import Split

#: central wavelength (nm) of each Sentinel-2 band.
WAVELENGTH = {"B01": 443, "B02": 490, "B03": 560, "B04": 665, "B05": 705, "B06": 740, "B07": 783, "B08": 842,
              "B8A": 865, "B09": 945, "B10": 1375, "B11": 1610, "B12": 2190}
VISIBLE = {"B01", "B02", "B03", "B04", "B05"}
RESOLUTION_FACTORS = (1, 2, 3, 4, 6, 8)


def _per_band(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)[:, None, None]


@register("shift", "gain", entry=True)
def gain(image: np.ndarray, severity: int, bands: list[str], seed: int = 0) -> np.ndarray:
    """Per-band gain: visible bands darker, red-edge / NIR / SWIR brighter, by 6 % per severity step."""
    g = [1 - 0.06 * severity if b in VISIBLE else 1 + 0.06 * severity for b in bands]
    return image * _per_band(g)


@register("shift", "offset", entry=True)
def offset(image: np.ndarray, severity: int, bands: list[str], seed: int = 0) -> np.ndarray:
    """Additive offset of 0.02 reflectance per severity step (s = 5: the uncorrected 04.00 offset)."""
    return image + np.float32(0.02 * severity)


@register("shift", "haze", entry=True)
def haze(image: np.ndarray, severity: int, bands: list[str], seed: int = 0) -> np.ndarray:
    """Additive haze (path radiance) 0.02 s (490 / wavelength)^2, strongest in the blue bands."""
    return image + _per_band([0.02 * severity * (490 / WAVELENGTH[b]) ** 2 for b in bands])


@register("shift", "noise", entry=True)
def noise(image: np.ndarray, severity: int, bands: list[str], seed: int = 0) -> np.ndarray:
    """Gaussian noise with standard deviation 0.005 s."""
    rng = np.random.default_rng(seed)
    return image + rng.normal(0, 0.005 * severity, image.shape).astype(np.float32)


@register("shift", "resolution", entry=True)
def resolution(image: np.ndarray, severity: int, bands: list[str], seed: int = 0) -> np.ndarray:
    """Loss of resolution: block means over 1, 2, 3, 4, 6, 8 px, upsampled back by repetition."""
    f = RESOLUTION_FACTORS[severity]
    if f == 1:
        return image
    c, h, w = image.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    padded = np.pad(image, ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
    blocks = np.nanmean(padded.reshape(c, hp // f, f, wp // f, f), axis=(2, 4))
    out = blocks.repeat(f, axis=1).repeat(f, axis=2)[:, :h, :w].astype(image.dtype)
    out[np.isnan(image)] = np.nan
    return out


def shifted(split: Split, shift: Entry, severity: int, bands: list[str]) -> Split:
    """``split`` with the shift ``shift`` applied to every scene's reflectance at ``severity`` (nodata kept;
    each scene's noise is seeded by its id)."""
    scenes = [SceneData(s.id, shift.build(image=s.image, severity=severity, bands=bands, seed=zlib.crc32(s.id.encode())),
                        s.codes, s.valid, s.meta) for s in split.scenes]
    out = Split.of(split.name, scenes, split.labels, split.reference)
    out.dataset, out.files = split.dataset, split.files
    return out
