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


def test_imagenet_weights_come_from_the_cache_then_the_hub_then_random(tmp_path, monkeypatch):
    """Cache empty and hub unreachable: random weights, said once. Hub reachable: fetched through smp's own
    hub path (repo_id, revision) into the cache, then loaded."""
    import huggingface_hub
    import huggingface_hub.constants as hf
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders

    from bench.models import smp as smp_family

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    for fn in (smp_family.hub_reachable, smp_family.fetched_encoder_weights):
        fn.cache_clear()
    monkeypatch.setattr(smp_family, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(smp_family, "_warned", set())
    with pytest.warns(UserWarning, match="hub cannot be reached; training from random weights"):
        built = get_registry().get("model", "unet_mnv2").build(in_channels=3)
    assert built.weights.startswith("random")

    settings = encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    state = smp.encoders.get_encoder("mobilenet_v2", weights=None).state_dict()
    marker = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in state.items()}
    asked = []

    def download(repo_id, filename, revision=None, **kwargs):  # what the hub would put in the cache
        asked.append((repo_id, filename, revision))
        snap = tmp_path / f"models--{repo_id.replace('/', '--')}" / "snapshots" / revision
        snap.mkdir(parents=True, exist_ok=True)
        if filename == "config.json":
            (snap / filename).write_text("{}")
        else:
            save_file({k: v.contiguous() for k, v in marker.items()}, str(snap / filename))
        return str(snap / filename)

    monkeypatch.setattr(smp_family, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    smp_family.fetched_encoder_weights.cache_clear()
    built = get_registry().get("model", "unet_mnv2").build(in_channels=3)
    assert asked == [(settings["repo_id"], f, settings["revision"]) for f in ("config.json", "model.safetensors")]
    assert built.weights == "imagenet"
    first = next(p for n, p in built.module.encoder.named_parameters() if n.endswith("weight") and p.ndim == 4)
    assert torch.all(first == 0.5)  # the fetched file's weights (3 input bands: smp keeps the RGB kernel)
    smp_family.fetched_encoder_weights.cache_clear()  # nothing of this fake hub outlives the test


def test_weights_flag_makes_the_initial_weights_explicit(tmp_path):
    from bench.core.errors import ConfigError
    from bench.run.plan import RunConfig, plan

    with pytest.raises(ConfigError, match="imagenet or random, not 'foo'"):
        RunConfig(model="unet_mnv2", weights="foo").validate()
    default, random_init = (plan(RunConfig(scenario="samples_intra", out=str(tmp_path), weights=w)) for w in (None, "random"))
    assert "init_weights" not in default.train_id and random_init.train_id["init_weights"] == "random"
    assert default.train_key != random_init.train_key
    from bench.run.training import build

    built, _ = build(random_init)
    assert built.weights == "random"
