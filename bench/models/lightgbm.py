"""s2cloudless (Sentinel Hub): a LightGBM pixel classifier on 10 L1C bands, then its own spatial
post-processing (averaging over a disk, threshold, dilation); ``@register("model", "s2cloudless")``.

The model file is the one in the ``s2cloudless`` wheel, run through the package's own
``S2PixelCloudDetector``, so its masks are upstream's by construction. The upstream class defaults are
the settings' defaults: threshold 0.4, ``average_over`` 1, ``dilation_size`` 1 (its README example uses 4
and 2); 0 switches a step off, which gives the pixel classifier alone.
"""

from __future__ import annotations

import numpy as np

from bench.core.errors import ConfigError
from bench.core.registry import register
from bench.models.base import Built

#: the bands S2PixelCloudDetector takes with all_bands=False, in its order (s2cloudless.utils.MODEL_BANDS)
BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")


class S2Cloudless:
    """A scene model: (10, H, W) reflectance -> (H, W) codes 0 = no cloud, 1 = cloud."""

    def __init__(self, threshold: float, average_over: int, dilation_size: int, model_file: str) -> None:
        from s2cloudless import S2PixelCloudDetector

        self.detector = S2PixelCloudDetector(threshold=threshold, all_bands=False, average_over=average_over,
                                             dilation_size=dilation_size, model_filename=model_file)

    def probability(self, image: np.ndarray) -> np.ndarray:
        """(H, W) cloud probability of the pixel classifier (NaN read as 0, as upstream has no nodata)."""
        data = np.nan_to_num(np.moveaxis(image, 0, -1)[None].astype(np.float32))
        return self.detector.get_cloud_probability_maps(data)[0]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 cloud mask after upstream's post-processing."""
        return self.detector.get_mask_from_prob(self.probability(image)[None])[0].astype(np.uint8)

    def predict_with_probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mask of :meth:`predict` and the pixel classifier's (2, H, W) probabilities of its codes
        (no cloud, cloud) it was made from."""
        prob = self.probability(image)
        mask = self.detector.get_mask_from_prob(prob[None])[0].astype(np.uint8)
        return mask, np.stack([1.0 - prob, prob]).astype(np.float32)


@register("model", "s2cloudless")
def s2cloudless(in_channels: int, weight_files: list, threshold: float = 0.4, average_over: int = 1,
                dilation_size: int = 1) -> Built:
    """s2cloudless: LightGBM pixel classifier + disk averaging, threshold and dilation (upstream defaults)."""
    if in_channels != len(BANDS):
        raise ConfigError(f"s2cloudless takes the {len(BANDS)} bands {', '.join(BANDS)}; got {in_channels}")
    if not 0 < threshold < 1 or average_over < 0 or dilation_size < 0:
        raise ConfigError("s2cloudless: threshold must be in (0, 1), average_over and dilation_size >= 0")
    return Built(S2Cloudless(threshold, average_over, dilation_size, str(weight_files[0])), in_channels,
                 "pretrained")
