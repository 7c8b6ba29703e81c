"""The model zoo: each pretrained mask against its upstream package (or the original Keras outputs), the
contract's refusals, zero-shot and fine-tuned runs, hub loading, and how boards place zoo rows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.errors import ConfigError, DataError
from bench.core.registry import get_registry
from bench.data.datasets import load_dataset
from bench.core.results import sha256
from bench.models.base import contract_of
from bench.run.plan import MissingBands, RunConfig, plan

from conftest import REPO

MODELS = REPO.parent / "shared" / "models" / "dl_l8s2_uv"
EOLEARN = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def build(name: str):
    """A zoo model as a run builds it: contract bands, its weight files located."""
    entry = get_registry().get("model", name)
    contract = contract_of(entry)
    p = plan(RunConfig(model=name, scenario="samples_cross",  # its test data have all 13 bands
                       out="/nonexistent-out"))
    return entry.build(in_channels=len(contract.bands), weight_files=[str(f) for f in p.weight_files]), contract


def scenes(bands: list[str], dataset: str = "eolearn_slovenia") -> list[np.ndarray]:
    ds = load_dataset(dataset)
    return [ds.read(sid, bands).image for sid in ds.scene_ids()]


@pytest.mark.parametrize("name", ["s2cloudless", "s2cloudless_pixel"])
def test_s2cloudless_masks_are_upstreams(name):
    from s2cloudless import S2PixelCloudDetector

    built, contract = build(name)
    settings = get_registry().get("model", name).settings
    upstream = S2PixelCloudDetector(threshold=settings["threshold"], average_over=settings["average_over"],
                                    dilation_size=settings["dilation_size"], all_bands=False)
    cloudy = 0
    for image in scenes(list(contract.bands)):
        ours = built.module.predict(image)
        theirs = upstream.get_cloud_masks(np.moveaxis(image, 0, -1)[None])[0]
        np.testing.assert_array_equal(ours, theirs)
        cloudy += int(ours.any())
    assert cloudy == 2  # the two cloudy eo-learn scenes, not the three clear ones


@pytest.mark.parametrize("name", ["ukis_csmask_6b_l1c", "ukis_csmask_4b_l1c"])
def test_ukis_csmask_masks_are_upstreams(name, ukis):
    from ukis_csmask.mask import CSmask

    built, contract = build(name)
    image = ukis[0][:len(contract.bands)]
    upstream = CSmask(np.moveaxis(image, 0, -1).copy(), band_order=["blue", "green", "red", "nir", "swir16", "swir22"][:len(contract.bands)],
                      product_level="l1c", intra_op_num_threads=2)
    ours = built.module.predict(image)
    np.testing.assert_array_equal(ours, upstream.csm[..., 0])
    assert set(np.unique(ours)) == {0, 1, 2}


@pytest.mark.skipif(not (MODELS / "reference_outputs.npz").exists(), reason="needs ../shared/models/dl_l8s2_uv")
@pytest.mark.parametrize("name,key", [("dl_l8s2_uv_6b", "rgbiswir"), ("dl_l8s2_uv_4b", "rgbi")])
def test_dl_l8s2_uv_port_gives_the_keras_probabilities(name, key):
    """The PyTorch port against what the original Keras models predict (tensorflow, PROVENANCE.md)."""
    ref = np.load(MODELS / "reference_outputs.npz")
    shared = REPO.parent / "shared" / "data"
    img = np.load(shared / "ukis_csmask_s2" / "sentinel2.npz")["img"]
    eo = np.load(shared / "eolearn_testeopatch" / "REFERENCE_SCENES.npy")
    built, contract = build(name)
    net = built.module.net  # the port before the project head: logits of cloud
    n = len(contract.bands)
    with torch.no_grad():
        ukis_p = torch.sigmoid(net(torch.from_numpy(np.moveaxis(img[..., :n], -1, 0)[None].copy())))[0, 0].numpy()
        eo_p = torch.sigmoid(net(torch.from_numpy(np.moveaxis(eo[..., [1, 2, 3, 7, 11, 12][:n]], -1, 1).copy())))[:, 0].numpy()
    assert np.abs(ukis_p - ref[f"{key}_ukis"]).max() < 1e-4
    assert np.abs(eo_p - ref[f"{key}_eolearn"]).max() < 1e-4
    from bench.run.inference import FastPaths, Tiling, class_batches, predict_strips

    image = np.moveaxis(img[..., :n], -1, 0).copy()  # the 512 px patch, with the default tiling: one tile
    run = class_batches(FastPaths(), FastPaths().prepare(built.module.eval(), "cpu"), "cpu", probabilities=True)
    (_, _, out), = predict_strips(lambda r0, r1: image[:, r0:r1], *image.shape[1:], Tiling(512, 32), run, 1)
    assert np.abs(out[1 + 1] - ref[f"{key}_ukis"]).max() < 1e-4  # thick_cloud: the model's cloud probability
    shipped = REPO / "bench" / "models" / "weights" / "dl_l8s2_uv" / "landsatbiomeRGBISWIR7.hdf5"
    assert sha256(shipped) == sha256(MODELS / shipped.name)  # the shipped file is upstream's


def test_project_head_keeps_the_models_own_decision():
    """Sigmoid output: argmax of the project logits is cloud exactly where p > 0.5; a four-class network's
    logits pass through unchanged."""
    built, _ = build("dl_l8s2_uv_6b")
    x = torch.from_numpy(np.stack(scenes(["B02", "B03", "B04", "B08", "B11", "B12"])))
    with torch.no_grad():
        logits, p = built.module(x), torch.sigmoid(built.module.net(x))[:, 0]
    assert torch.equal(logits.argmax(1) == 1, p > 0.5) and not (logits.argmax(1) >= 2).any()
    assert 0 < (p > 0.5).float().mean() < 1
    from bench.models.base import Contract, project_logits

    net = torch.nn.Conv2d(3, 4, 1)
    head = project_logits(net, Contract())
    assert torch.equal(head(torch.ones(1, 3, 4, 4)), net(torch.ones(1, 3, 4, 4)))


def test_hollstein_tree_follows_the_papers_thresholds():
    """One spectrum per leaf of the figure-8 tree (reflectance), each landing where the thresholds say."""
    from bench.models.rules import BANDS, CIRRUS, CLEAR, CLOUD, SHADOW, SNOW, WATER, hollstein_tree

    base = dict(B01=0.1, B02=0.1, B03=0.1, B05=0.1, B06=0.1, B07=0.1, B8A=0.1, B09=0.1, B10=0.01, B11=0.1)
    cases = [  # (changes to base, leaf)
        (dict(B03=0.1, B8A=0.1, B07=0.1, B09=0.0, B11=0.2), CLEAR),          # B3-B7 < .027, B9-B11 < -.097
        (dict(B03=0.1, B8A=0.1, B07=0.1, B09=0.1, B11=0.1), SHADOW),         # B9-B11 >= -.097
        (dict(B03=0.2, B8A=0.1, B07=0.1, B09=0.1, B11=0.1), WATER),          # B3-B7 >= .027, B9-B11 < .021
        (dict(B03=0.2, B8A=0.1, B07=0.1, B09=0.2, B11=0.1), SHADOW),         # B9-B11 >= .021
        (dict(B8A=0.3, B02=0.1, B10=0.01, B09=0.2), CLEAR),                  # B2/B10 < 14.689, B2/B9 < .788
        (dict(B8A=0.3, B02=0.1, B10=0.01, B09=0.1), CIRRUS),                 # B2/B9 >= .788
        (dict(B8A=0.3, B02=0.2, B10=0.01), CLEAR),                           # B2/B10 >= 14.689
        (dict(B03=0.4, B05=0.4, B11=0.3, B10=0.1, B06=0.3, B07=0.4), CLOUD),  # B5/B11 < 4.33, B11-B10 < .255, B6-B7 < -.016
        (dict(B03=0.4, B05=0.4, B11=0.3, B10=0.1, B06=0.4, B07=0.4), CIRRUS),
        (dict(B03=0.4, B05=0.4, B11=0.4, B10=0.1, B01=0.2), CLEAR),           # B11-B10 >= .255, B1 < .3
        (dict(B03=0.4, B05=0.4, B11=0.4, B10=0.1, B01=0.4), CLOUD),
        (dict(B03=0.4, B05=0.5, B11=0.1, B01=0.5), CLEAR),                    # B5/B11 >= 4.33, B3 < .525, B1/B5 < 1.184
        (dict(B03=0.4, B05=0.5, B11=0.1, B01=0.7), SHADOW),
        (dict(B03=0.6, B05=0.5, B11=0.1), SNOW),
    ]
    for changes, leaf in cases:
        spectrum = {**base, **changes}
        got = hollstein_tree({b: np.full((1, 1), spectrum[b]) for b in BANDS})[0, 0]
        assert got == leaf, (changes, got, leaf)


def test_a_scenario_without_the_models_bands_is_refused_before_anything_runs():
    with pytest.raises(MissingBands) as err:
        plan(RunConfig(model="s2cloudless", scenario="samples_intra"))
    text = str(err.value)
    assert "'s2cloudless'" in text and "B01, B05, B8A, B09, B10" in text and "samples_intra.toml" in text
    with pytest.raises(MissingBands, match="omnicloudmask.*B8A"):  # before looking for its weights
        plan(RunConfig(model="omnicloudmask", scenario="samples_intra"))


@pytest.mark.parametrize("cfg,message", [
    (dict(model="s2cloudless", norm="percentile"), "--norm native.*add --finetune.*not possible for this lightgbm"),
    (dict(model="dl_l8s2_uv_6b", norm="percentile"), "add --finetune to train"),
    (dict(model="ukis_csmask_6b_l1c", finetune=True), "cannot be fine-tuned: it is a onnx model"),
    (dict(model="unet_mnv2", norm="native"), "use --norm none"),
    (dict(model="unet_mnv2", finetune=True), "trained here from scratch"),
    (dict(model="ukis_csmask_6b_l1c", adapt="tent"), "needs a PyTorch model"),
])
def test_the_contract_refuses_what_a_model_cannot_do(cfg, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(scenario="samples_intra", **cfg).validate()


def test_a_pretrained_model_defaults_to_its_own_preprocessing():
    zoo, trained = RunConfig(model="dl_l8s2_uv_6b"), RunConfig(model="unet_mnv2")
    zoo.validate(), trained.validate()
    assert (zoo.norm, trained.norm) == ("native", "percentile")


def test_zero_shot_run_reads_only_the_test_split_and_trains_nothing(tmp_path, capsys):
    from bench.run.runner import run

    cfg = RunConfig(model="s2cloudless", scenario="samples_cross", out=str(tmp_path), figure=False, wandb="off")
    res = run(cfg)
    result = json.loads(res.path.read_text())
    assert list(result["data"]) == ["test"] and result["train"]["steps"] == 0
    assert result["model"]["mode"] == "zero-shot" and result["model"]["bands"] == ["B01", "B02", "B04", "B05", "B08",
                                                                                   "B8A", "B09", "B10", "B11", "B12"]
    assert result["scenario"]["reference_by"] == "s2cloudless"
    assert not (tmp_path / "models").exists()
    sha = next(iter(result["train"]["weight_files"].values()))
    assert plan(cfg).train_id["weights"] == [sha]
    assert plan(replace(cfg, seed=3)).result_path == res.path  # zero-shot: the seed changes nothing


def test_hub_model_offline_without_weights_stops_at_once_saying_how(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"huggingface-cli download isp-uv-es/cloudsen12_models UNetMobV2_V2.pt.*--weights"):
        plan(RunConfig(model="cloudsen12_unetmobv2", scenario="samples_temporal"))


def hf_cache(root: Path, repo: str, files: dict[str, object]) -> None:
    """Files laid out as the Hugging Face hub cache holds them (refs/main -> snapshots/<revision>/)."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for name, state in files.items():
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(snap / name))
        else:
            torch.save(state, snap / name)


def test_hub_models_load_from_the_local_cache(monkeypatch, tmp_path):
    """Architecture-compatible weights in a temporary cache: both hub models build, load them and run."""
    import huggingface_hub.constants as hf
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    unet = smp.Unet("mobilenet_v2", encoder_weights=None, in_channels=13, classes=4)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in unet.state_dict().items()}}  # a Lightning checkpoint
    ocm = {c["weights"][i].rsplit("/", 1)[1]: smp.Unet(e, encoder_weights=None, in_channels=3, classes=4).state_dict()
           for c in [contract_of(get_registry().get("model", "omnicloudmask")).__dict__]
           for i, e in enumerate(["tu-regnety_004", "tu-edgenext_small"])}
    hf_cache(tmp_path, "isp-uv-es/cloudsen12_models", {"UNetMobV2_V2.pt": ckpt})
    hf_cache(tmp_path, "NickWright/OmniCloudMask", ocm)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    built, _ = build("cloudsen12_unetmobv2")
    x = torch.from_numpy(scenes(EOLEARN)[0][None, :, :96, :96])
    with torch.no_grad():
        assert torch.equal(built.module(x), unet.eval()(x))  # the file's weights, upstream's architecture
    built, _ = build("omnicloudmask")
    with torch.no_grad():
        out = built.module(x[:, [3, 2, 8]])
    assert out.shape == (1, 4, 96, 96) and torch.isfinite(out).all()
    with pytest.raises(DataError, match="not weights of this architecture"):
        from bench.models.hub_net import load_into, unet as make

        load_into(make("mobilenet_v2", 13), next(tmp_path.glob("models--Nick*/snapshots/*/*regnety*")))


def test_hub_weights_are_found_where_upstreams_own_downloaders_keep_them(monkeypatch, tmp_path):
    """cloudsen12_models' load_model_by_name keeps weights in ~/.georeader; omnicloudmask's get_models in its
    platformdirs user data folder, one folder per release (the newest is used)."""
    import huggingface_hub.constants as hf

    from bench.run.plan import find_weights

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    georeader = tmp_path / "home" / ".georeader" / "UNetMobV2_V2.pt"
    georeader.parent.mkdir(parents=True)
    georeader.write_bytes(b"weights")
    cs12 = contract_of(get_registry().get("model", "cloudsen12_unetmobv2"))
    assert find_weights(RunConfig(model="cloudsen12_unetmobv2"), cs12) == [georeader]
    ocm = contract_of(get_registry().get("model", "omnicloudmask"))
    names = [spec.rsplit("/", 1)[1] for spec in ocm.weights]
    for version in ("1.8.1", "1.10.0", "1.9.2"):
        folder = tmp_path / "share" / "omnicloudmask" / version
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(version.encode())
    newest = tmp_path / "share" / "omnicloudmask" / "1.10.0"
    assert find_weights(RunConfig(model="omnicloudmask"), ocm) == [newest / n for n in names]
    georeader.unlink()
    with pytest.raises(DataError, match="home:.georeader/UNetMobV2_V2.pt"):  # every place looked in is named
        find_weights(RunConfig(model="cloudsen12_unetmobv2"), cs12)


def test_fine_tuning_trains_the_pretrained_model_and_records_its_cost(tmp_path):
    from bench.run.runner import run

    cfg = RunConfig(model="dl_l8s2_uv_6b", finetune=True, norm="percentile", scenario="samples_intra",
                    out=str(tmp_path), figure=False, wandb="off", recipe={"max_steps": 2})
    res = run(cfg)
    result = json.loads(res.path.read_text())
    assert result["model"]["mode"] == "fine-tuned" and result["train"]["steps"] == 2 and result["train"]["train_s"] > 0
    assert result["train_key"] != plan(replace(cfg, finetune=False, norm="native")).train_key
    trained = torch.load(next((tmp_path / "models").glob("*/model.pt")), weights_only=True)["state_dict"]
    pretrained, _ = build("dl_l8s2_uv_6b")
    changed = [k for k, v in pretrained.module.state_dict().items() if not torch.equal(v, trained[k])]
    assert changed and not any("normalization" in k for k in changed)  # trained; the fixed input scaling is not

    from bench.boards.leaderboard import table

    row = table([result]).iloc[0]
    assert row["mode"] == "fine-tuned" and row["trained on"].endswith("then this scenario's train split")


def test_same_as_reference_rows_are_listed_last_and_not_ranked(tmp_path):
    """s2cloudless scores itself on the s2cloudless reference of samples_cross: listed last, never `best`."""
    from bench.boards.leaderboard import leading_comparisons, row_groups, table
    from bench.run.runner import run

    results = [json.loads(run(RunConfig(model=m, scenario="samples_cross", out=str(tmp_path), figure=False,
                                        leaderboards=False)).path.read_text())
               for m in ("s2cloudless", "hollstein", "dl_l8s2_uv_6b")]
    df = table(results)
    assert results[0]["metrics"]["miou"] > max(r["metrics"]["miou"] for r in results[1:])  # it would win
    last = df.iloc[-1]
    assert (last["model"], last["trained on"], bool(last["ranked"])) == ("s2cloudless", "same as reference", False)
    assert df.loc[0, "tied"] == "best" and df.loc[0, "model"] != "s2cloudless" and pd_isna(last["tied"])
    assert all("s2cloudless" not in (a[0], b[0]) for a, b, _ in leading_comparisons(df, row_groups(results)))


def pd_isna(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_sweep_runs_pretrained_models_once_and_where_they_can(capsys):
    from bench.sweep.grid import Grid, plans

    grid = Grid(models="unet_mnv2,s2cloudless,dl_l8s2_uv_6b", norms="native,percentile", scenarios="samples_intra",
                seeds=2)
    cells = [(c.model, c.norm, c.seed) for c in grid.configs()]
    assert cells == [("unet_mnv2", "percentile", 0), ("unet_mnv2", "percentile", 1), ("s2cloudless", "native", 0),
                     ("dl_l8s2_uv_6b", "native", 0)]
    assert [p.cfg.model for p in plans(grid)] == ["unet_mnv2", "unet_mnv2", "dl_l8s2_uv_6b"]
    assert "skipped s2cloudless on samples_intra" in capsys.readouterr().err
    tuned = Grid(models="dl_l8s2_uv_6b,ukis_csmask_6b_l1c", norms="native,percentile", scenarios="samples_intra",
                 seeds=1, base=RunConfig(finetune=True))
    assert [(c.model, c.norm) for c in tuned.configs()] == [("dl_l8s2_uv_6b", "native"), ("dl_l8s2_uv_6b", "percentile"),
                                                            ("ukis_csmask_6b_l1c", "native")]


def test_bench_list_models_shows_framework_and_mode(capsys):
    from bench.cli import main

    assert main(["list", "models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["unet_mnv2"].endswith("[pytorch; trained here]")
    assert lines["s2cloudless"].endswith("[lightgbm; pretrained: zero-shot]")
    assert lines["dl_l8s2_uv_6b"].endswith("pretrained: zero-shot + fine-tune]")
    assert "[onnx; pretrained: zero-shot]" in lines["ukis_csmask_6b_l1c"]


def test_every_model_contract_parses_and_names_real_bands():
    from bench.data.datasets.base import check_bands

    for entry in get_registry().entries("model"):
        contract = contract_of(entry)
        if contract.pretrained and contract.framework == "masks":  # masks made elsewhere: no bands, no weights
            assert contract.bands is None and not contract.weights, entry.name
        elif contract.pretrained:
            check_bands(list(contract.bands), entry.name)
            assert contract.weights or contract.framework == "rules", entry.name
            assert len(contract.output_names) == len(contract.outputs.codes), entry.name


def test_zero_shot_and_fine_tuned_runs_of_one_model_are_separate_rows():
    from bench.boards.leaderboard import table

    def result(mode, miou):
        return {"config": {"model": "dl_l8s2_uv_6b", "norm": "native", "adapt": "none"}, "seed": 0,
                "model": {"mode": mode, "contract": {"algorithm": "dl_l8s2_uv"}}, "recipe": {"epochs": 30},
                "scenario": {"name": "s", "version": 1}, "train": {"steps": 0 if mode == "zero-shot" else 90},
                "metrics": {"miou": miou, "accuracy": miou, "iou": {"cloud": miou}}}

    df = table([result("zero-shot", 0.8), result("fine-tuned", 0.6)])
    assert sorted(zip(df["mode"], df["mIoU"])) == [("fine-tuned", 0.6), ("zero-shot", 0.8)]
