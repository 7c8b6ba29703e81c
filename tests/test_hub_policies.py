"""Pretrained networks run as upstream runs them: with architecture-compatible random weights written under
the real file names, cloudbench's mask of a scene equals upstream's own inference function's mask pixel for
pixel, in fp32 (omnicloudmask's ``predict_from_array``, cloudsen12_models' ``CDModel.predict``); and the
tiling pieces each contract's inference policy is made of."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.core.errors import ConfigError
from bench.core.registry import get_registry
from bench.models.base import contract_of
from bench.run.inference import Tiling, model_tiling, pad_input, shifted_from_nodata
from conftest import write_tif

OCM_FILES = {"tu-regnety_004": "PM_model_OCM_7.97_R_G_NIR_3_smp_regnety_004.pycls_in1k_PT_state.safetensors",
             "tu-edgenext_small": "PM_model_OCM_7.97_R_G_NIR_3_smp_edgenext_small.usi_in1k_PT_state.safetensors"}
L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
EOLEARN = Path(__file__).resolve().parent.parent / "bench" / "data" / "samples" / "eolearn_slovenia" / "images"


def random_unet(encoder: str, in_channels: int, seed: int) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    return smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=4).eval()


def tiled_scene(ukis, height: int, width: int, nodata_cols: int) -> np.ndarray:
    """(3, height, width) float32 reflectance from the real ukis patch (B04, B03, B08 as red, green, NIR),
    mirrored to size, with its first ``nodata_cols`` columns nodata in every band."""
    image = ukis[0][[2, 1, 3], :height, :width]
    scene = np.pad(image, ((0, 0), (0, height - image.shape[1]), (0, width - image.shape[2])), mode="symmetric")
    scene = scene.astype(np.float32)
    scene[:, :, :nodata_cols] = np.nan
    return scene


@pytest.mark.parametrize("height, width, nodata_cols", [
    (520, 700, 100),  # one square patch of 520 px sharing 300 px with the next, the first moved off the nodata
    (400, 500, 200),  # 40 % nodata: patches of half the shorter side, 200 px sharing 100 (check_patch_size)
])
def test_omnicloudmask_masks_a_scene_as_predict_from_array_does(tmp_path, ukis, height, width, nodata_cols):
    ocm = pytest.importorskip("omnicloudmask")
    from omnicloudmask.model_utils import load_model_from_weights
    from safetensors.torch import save_file

    files = []
    for seed, (encoder, name) in enumerate(OCM_FILES.items()):
        save_file(random_unet(encoder, 3, seed).state_dict(), str(tmp_path / name))
        files.append(tmp_path / name)
    scene = tiled_scene(ukis, height, width, nodata_cols)
    models = [load_model_from_weights(e, str(f), "smp", torch.device("cpu")) for e, f in zip(OCM_FILES, files)]
    upstream = ocm.predict_from_array(scene, inference_device="cpu", custom_models=models)[0]

    tif = write_tif(tmp_path / "scene.tif", scene)
    out, probs = tmp_path / "mask.tif", tmp_path / "probabilities.tif"
    main(["predict", "--model", "omnicloudmask", "--weights", ",".join(map(str, files)), str(tif),
          "--bands", "B04,B03,B8A", "--out", str(out), "--probabilities", str(probs), "--probability-type",
          "float32", "--precision", "auto", "--quiet"])
    import rasterio

    with rasterio.open(out) as f, rasterio.open(probs) as p:
        ours, tags, prob = f.read(1), f.tags(), p.read()
    assert (tags["tile"], tags["overlap"], tags["blend"]) == ("1000", "300", "ramp")
    valid = np.isfinite(scene).all(0)
    assert (ours[~valid] == 255).all()
    assert len(np.unique(upstream[valid])) > 1  # random weights that still tell pixels apart
    # pixel for pixel but at exact ties: upstream standardises each patch in numpy, cloudbench in torch, so
    # logits differ in their last bits; where the two classes' probabilities are that close, argmax may flip
    rows, cols = np.nonzero(valid & (ours != upstream))
    assert len(rows) <= valid.sum() * 1e-5
    tie = np.abs(prob[ours[rows, cols], rows, cols] - prob[upstream[rows, cols], rows, cols])
    assert (tie < 1e-5).all(), tie


def test_cloudsen12_masks_a_scene_as_cdmodel_predict_does(tmp_path):
    cs = pytest.importorskip("cloudsen12_models.cloudsen12")
    import rasterio

    torch.save(random_unet("mobilenet_v2", 13, 0).state_dict(), tmp_path / "UNetMobV2_V2.pt")
    upstream_model = cs.load_model_by_name("UNetMobV2_V2", weights_folder=str(tmp_path))
    with rasterio.open(EOLEARN / "2015-07-11.tif") as f:  # 101 x 100 px: reflected to 128 x 128 around the centre
        scene = (f.read().astype(np.float32) / 10_000).astype(np.float32)
    upstream = upstream_model.predict(scene)

    tif = write_tif(tmp_path / "scene.tif", scene)
    out = tmp_path / "mask.tif"
    main(["predict", "--model", "cloudsen12_unetmobv2", "--weights", str(tmp_path / "UNetMobV2_V2.pt"), str(tif),
          "--bands", ",".join(L1C), "--out", str(out), "--quiet"])
    with rasterio.open(out) as f:
        ours = f.read(1)
    assert len(np.unique(upstream)) > 1
    assert (ours == upstream).all()


def test_each_hub_contract_declares_upstreams_policy():
    reg = get_registry()
    ocm = model_tiling(contract_of(reg.get("model", "omnicloudmask")), 256)
    assert (ocm.tile, ocm.overlap, ocm.blend, ocm.fit, ocm.shift_nodata) == (1000, 300, "ramp", "square", True)
    assert ocm.fitted(700, 900).tile == 700  # a smaller scene: one square patch of its shorter side
    cs = model_tiling(contract_of(reg.get("model", "cloudsen12_unetmobv2")), 256)
    assert cs.fitted(101, 100).tile == 128 and cs.pad == "centre"  # the whole scene, as padded_predict
    assert cs.fitted(10980, 10980).tile == 256  # above the memory budget: the run's tiles
    assert model_tiling(contract_of(reg.get("model", "unet_mnv2")), 256) == Tiling(256)  # no policy: the run's
    for name in ("omnicloudmask", "cloudsen12_unetmobv2"):
        assert contract_of(reg.get("model", name)).upstream_precision == "fp32"


def test_ramp_weights_are_omnicloudmasks_gradient_mask():
    mu = pytest.importorskip("omnicloudmask.model_utils")
    for tile, overlap in ((1000, 300), (256, 64), (100, 0)):
        upstream = mu.create_gradient_mask(tile, overlap, torch.device("cpu"), torch.float32).numpy()
        np.testing.assert_allclose(Tiling(tile, overlap, "ramp", fit="square").weights(), upstream, rtol=1e-6)


def test_ramp_tiles_start_every_stride_and_the_last_sits_on_the_edge():
    mu = pytest.importorskip("omnicloudmask.raster_utils")
    t = Tiling(1000, 300, "ramp", fit="square")
    for height, width in ((1000, 1000), (2000, 1700), (10980, 10980)):
        ours = sorted({(w[0], w[2], w[1], w[3]) for w, _ in t.tiles(0, height, height, width)})
        upstream = sorted(set(mu.make_patch_indexes(array_width=width, array_height=height, patch_size=1000,
                                                     patch_overlap=300)))
        assert ours == upstream


def test_a_window_moves_off_nodata_edges_as_get_patch_moves_it():
    rng = np.random.default_rng(0)
    image = rng.random((3, 60, 80)).astype(np.float32) + 0.1
    image[:, :, :25] = np.nan  # nodata left
    image[:, 50:, :] = 0  # nodata bottom (0 is nodata too)
    nodata = np.isnan(image) | (image == 0)
    assert shifted_from_nodata(nodata, (0, 0, 40, 40), 0) == (0, 25, 40, 65)  # moved right to the first valid column
    assert shifted_from_nodata(nodata, (20, 40, 60, 80), 0) == (10, 40, 50, 80)  # moved up off the bottom
    assert shifted_from_nodata(nodata, (0, 0, 40, 20), 0) is None  # nothing valid: left out


def test_centre_padding_reflects_as_padded_predict():
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    padded = pad_input(x, (32, 32), "centre")
    top, left = (32 - 5) // 2, (32 - 7) // 2
    assert (padded[:, top:top + 5, left:left + 7] == x).all()
    assert (padded == np.pad(x, ((0, 0), (13, 14), (12, 13)), mode="reflect")).all()
    assert Tiling(32, pad="centre").padding(5, 7, (32, 32)) == (13, 12)


def test_ramp_blending_of_a_pointwise_model_equals_cropping(tmp_path, ukis):
    """Where every tile gives a pixel the same logits, the blend is that prediction: no seam, nothing lost."""
    from bench.run.evaluate import predict_scene
    from bench.run.inference import FastPaths

    torch.manual_seed(0)
    model = torch.nn.Conv2d(6, 4, 1).eval()
    image = ukis[0][:, :300, :260]
    crop = predict_scene(model, image, 128, 2, fast=FastPaths("fp32"))
    from bench.run.inference import ClassBatches, predict_strips

    run = ClassBatches(FastPaths("fp32"), model, "cpu")
    ramp = np.concatenate([o[0] for _, _, o in predict_strips(lambda r0, r1: image[:, r0:r1], 300, 260,
                                                               Tiling(128, 48, "ramp"), run, 2)])
    assert (ramp == crop).all()


def test_a_wrong_policy_is_refused_naming_it():
    from bench.models.base import InferencePolicy

    with pytest.raises(ConfigError, match="blend must be one of crop, ramp"):
        InferencePolicy.parse({"tile": 1000, "blend": "feather"}, "mine [contract] inference")
    with pytest.raises(ConfigError, match="unknown key 'overlpa'"):
        InferencePolicy.parse({"tile": 1000, "overlpa": 3}, "mine [contract] inference")
    with pytest.raises(ConfigError, match="shift_nodata"):
        Tiling(512, 32, "crop", shift_nodata=True)
