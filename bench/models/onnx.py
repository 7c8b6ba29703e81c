"""DLR's ukis-csmask: ONNX networks run with ONNX Runtime (``@register("model", "ukis_csmask")``).

The model files and their JSON statistics are the ones in the ``ukis-csmask`` wheel. Prediction follows
the package's ``CSmask`` step by step: per-band standardisation with the file's mean and standard
deviation, 256 px tiles with 20 % overlap (the package's own ``tile_array``), softmax, smooth blending of
the tiles (``untile_array``), argmax; classes 0 background, 1 cloud, 2 cloud shadow. One ONNX session is
kept for all scenes (``CSmask`` opens one per image).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.core.errors import ConfigError
from bench.core.registry import register
from bench.core.results import sha256
from bench.models.base import Built


class CSMaskModel:
    """A scene model: (C, H, W) reflectance in the file's band order -> (H, W) codes 0 / 1 / 2."""

    def __init__(self, model_file: Path, batch_size: int = 1, threads: int = 0) -> None:
        import onnxruntime

        meta = json.loads(model_file.with_suffix(".json").read_text())
        self.band_names = meta["data"]["dataset_statistics"]["band_names"]
        mean, std = meta["data"]["dataset_statistics"]["img"]
        self.mean, self.std = np.float32(mean), np.float32(std)
        self.size = meta["data"]["target_size"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(model_file), sess_options=options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name, self.batch_size = self.session.get_inputs()[0].name, batch_size

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) blended class probabilities, as ``CSmask._csm`` computes them."""
        from scipy.special import softmax
        from ukis_csmask.utils import tile_array, untile_array

        img = (np.nan_to_num(np.moveaxis(image, 0, -1)).astype(np.float32) - self.mean) / self.std
        x = np.moveaxis(tile_array(img, xsize=self.size[0], ysize=self.size[1], overlap=0.2), -1, 1)
        probs = np.concatenate([softmax(self.session.run(None, {self.input_name: x[i:i + self.batch_size]})[0], axis=1)
                                for i in range(0, len(x), self.batch_size)])
        return untile_array(np.moveaxis(probs, 1, -1), (img.shape[0], img.shape[1], probs.shape[1]), overlap=0.2,
                            smooth_blending=True)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class codes."""
        return np.argmax(self.probabilities(image), axis=2).astype(np.uint8)

    def predict_with_probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) uint8 class codes and the (3, H, W) blended softmax they are the argmax of."""
        probs = self.probabilities(image)
        return np.argmax(probs, axis=2).astype(np.uint8), np.moveaxis(probs, -1, 0)


@register("model", "ukis_csmask")
def ukis_csmask(in_channels: int, weight_files: list, batch_size: int = 1) -> Built:
    """ukis-csmask ONNX model (U-Net, EfficientNet-B4) of the file the contract names."""
    path = Path(weight_files[0])
    model = CSMaskModel(path, batch_size)
    if len(model.band_names) != in_channels:
        raise ConfigError(f"{path.name} takes {len(model.band_names)} bands ({', '.join(model.band_names)}); "
                          f"its contract gives {in_channels}")
    return Built(model, in_channels, f"pretrained {path.name} sha256:{sha256(path)[:12]}")
