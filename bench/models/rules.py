"""Rule-based masks (``@register("model", "hollstein")``): no weights, nothing to train.

Hollstein et al. 2016, "Ready-to-Use Methods for the Detection of Clouds, Cirrus, Snow, Shadow, Water and
Clear Sky Pixels in Sentinel-2 MSI Images", Remote Sensing 8(8):666, doi:10.3390/rs8080666: the decision
tree of its figure 8 on L1C reflectance, with the paper's thresholds. Output codes: 0 clear, 1 cloud,
2 cirrus, 3 shadow, 4 snow, 5 water.
"""

from __future__ import annotations

import numpy as np

from bench.core.errors import ConfigError
from bench.core.registry import register
from bench.models.base import Built

CLEAR, CLOUD, CIRRUS, SHADOW, SNOW, WATER = range(6)
#: the bands the tree reads, in the order the contract gives them
BANDS = ("B01", "B02", "B03", "B05", "B06", "B07", "B8A", "B09", "B10", "B11")


def hollstein_tree(b: dict[str, np.ndarray]) -> np.ndarray:
    """The figure-8 tree on reflectance arrays keyed by band name; (H, W) uint8 codes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bright = b["B03"] >= 0.319
        dark_nir = b["B8A"] < 0.166
        low_b3_b7 = b["B03"] - b["B07"] < 0.027
        # dark, low NIR: shadow / clear / water
        a = np.where(low_b3_b7, np.where(b["B09"] - b["B11"] < -0.097, CLEAR, SHADOW),
                     np.where(b["B09"] - b["B11"] < 0.021, WATER, SHADOW))
        # dark, high NIR: cirrus or clear
        c = np.where(b["B02"] / b["B10"] < 14.689, np.where(b["B02"] / b["B09"] < 0.788, CLEAR, CIRRUS), CLEAR)
        # bright: cloud / cirrus / clear / snow / shadow
        d = np.where(b["B11"] - b["B10"] < 0.255, np.where(b["B06"] - b["B07"] < -0.016, CLOUD, CIRRUS),
                     np.where(b["B01"] < 0.3, CLEAR, CLOUD))
        e = np.where(b["B03"] < 0.525, np.where(b["B01"] / b["B05"] < 1.184, CLEAR, SHADOW), SNOW)
        out = np.where(bright, np.where(b["B05"] / b["B11"] < 4.33, d, e), np.where(dark_nir, a, c))
    return out.astype(np.uint8)


class Hollstein:
    """A scene model: (10, H, W) reflectance in :data:`BANDS` order -> (H, W) codes."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 codes of the decision tree."""
        return hollstein_tree(dict(zip(BANDS, np.nan_to_num(image))))


@register("model", "hollstein")
def hollstein(in_channels: int) -> Built:
    """Hollstein et al. 2016 decision tree for L1C (clear, cloud, cirrus, shadow, snow, water)."""
    if in_channels != len(BANDS):
        raise ConfigError(f"hollstein reads the {len(BANDS)} bands {', '.join(BANDS)}; got {in_channels}")
    return Built(Hollstein(), in_channels, "rules (no weights)")
