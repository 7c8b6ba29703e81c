"""Every registered model: a forward pass on tiny input gives (N, 4, H, W) logits."""

from __future__ import annotations

import pytest
import torch

from bench.core.errors import DataError
from bench.core.labels import EvalSpace
from bench.core.registry import get_registry
from bench.models.base import contract_of
from bench.run.task import SegmentationTask

MODELS = [n for n in get_registry().names("model")  # trained here; the zoo is tested in test_zoo.py
          if not contract_of(get_registry().get("model", n)).pretrained]


@pytest.mark.filterwarnings("ignore:imagenet weights")
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("bands", [6, 13])
def test_forward_shape(name, bands):
    built = get_registry().get("model", name).build(in_channels=bands)
    built.module.eval()
    with torch.no_grad():
        out = built.module(torch.randn(2, bands, 64, 64))
    assert out.shape == (2, 4, 64, 64)
    assert built.in_channels == bands


@pytest.mark.filterwarnings("ignore:imagenet weights")
def test_reference_model_is_unet_with_mobilenet_v2():
    import segmentation_models_pytorch as smp

    module = get_registry().get("model", "unet_mnv2").build(in_channels=13).module
    assert isinstance(module, smp.Unet)
    assert type(module.encoder).__name__ == "MobileNetV2Encoder"
    assert module.encoder.features[0][0].in_channels == 13


def test_missing_pretrained_weights_warn_once_and_are_recorded(monkeypatch):
    import bench.models.smp as models

    monkeypatch.setattr(models, "_warned", set())
    with pytest.warns(UserWarning, match="not in the local Hugging Face cache") as record:
        built = get_registry().get("model", "unet_mnv2").build(in_channels=6)
        get_registry().get("model", "unet_mnv2").build(in_channels=6)
    assert len([w for w in record if "Hugging Face" in str(w.message)]) == 1
    assert built.weights.startswith("random")


@pytest.mark.filterwarnings("ignore:imagenet weights")
def test_band_count_other_than_in_channels_is_refused():
    built = get_registry().get("model", "unet_mnv2").build(in_channels=6)
    space = EvalSpace.parse({"cloud": ["cloud"], "not_cloud": ["not_cloud"]}, "t")
    task = SegmentationTask(built.module, 6, space)
    with pytest.raises(DataError, match="the model takes 6 bands, the data has 13"):
        task(torch.zeros(1, 13, 64, 64))
