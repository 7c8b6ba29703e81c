"""Label-free estimates in a run's result and in ``bench assess``: what each result records, that it never
reads the reference, calibration once per model, the report's schema, verdicts and refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.cli import main
from bench.run.assess import headline, verdict
from bench.run.label_free import LabelFree, load_predictions
from conftest import UKIS_BANDS, write_tif

REPO = Path(__file__).resolve().parent.parent
TINY = {"max_steps": 2, "epochs": 1, "batch_size": 4, "samples_per_epoch": 8, "precision": "fp32"}  # one precision on every CPU


@pytest.fixture(scope="module")
def shift_run(tmp_path_factory):  # noqa: ANN201 - a real unet_mnv2 (2 steps) evaluated on shift_haze
    from bench.run.runner import RunConfig, run

    out = tmp_path_factory.mktemp("runs")
    res = run(RunConfig(model="unet_mnv2", norm="percentile", scenario="shift_haze", weights="random", recipe=TINY,
                        out=str(out), figure=False, leaderboards=False, wandb="off", progress=False))
    return res.path


def test_every_result_records_label_free_beside_its_metrics(shift_run):
    r = json.loads(shift_run.read_text())
    lf, cal = r["label_free"], r["label_free"]["calibration"]
    assert cal["source"] == {"scenario": "shift_haze", "split": "val", "dataset": "ukis_csmask_s2"}
    assert set(lf["estimates"]["accuracy"]) == {"no_drop", "confidence", "atc", "doc", "calibrated"}
    assert lf["estimates"]["accuracy"]["no_drop"] == cal["accuracy"]
    for k, sev in r["per_severity"].items():  # each severity has its own estimates, over the pixels it scored
        assert sev["label_free"]["signals"]["pixels"] == sev["n_pixels"]
        assert set(sev["label_free"]["per_scene"]) == set(sev["per_scene"])
    assert lf["signals"]["pixels"] == r["metrics"]["n_pixels"]  # pooled over severities, like the headline
    maps = load_predictions(shift_run.parent / lf["predictions"])
    assert {k.split("/")[0] for k in maps} == {"val", "test"}
    assert {k.split("/")[1] for k in maps if k.startswith("test/")} == set(r["per_severity"])
    assert len(lf["signals"]["input_shift"]["outside"]) == len(UKIS_BANDS)


def test_calibration_is_the_model_scored_on_its_validation_split_made_once(shift_run):
    from bench.run.evaluate import evaluate
    from bench.run.plan import RunConfig, plan
    from bench.run.training import train_or_load

    r = json.loads(shift_run.read_text())
    p = plan(RunConfig(model="unet_mnv2", norm="percentile", scenario="shift_haze", weights="random", recipe=TINY,
                       out=str(shift_run.parents[2])))
    t = train_or_load(p)
    val = evaluate(t.module, t.normalizer, p.splits["val"], p.space, p.recipe.patch_size, p.recipe.batch_size)
    cal = r["label_free"]["calibration"]
    assert cal["accuracy"] == val.metrics["accuracy"] and cal["miou"] == val.metrics["miou"]
    cached = list(p.train_dir.glob("calibration-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["temperature"] == cal["temperature"]


def test_the_estimates_never_read_the_reference(shift_run):
    from bench.data.splits import Split
    from bench.run.evaluate import evaluate
    from bench.run.plan import RunConfig, plan
    from bench.run.training import train_or_load

    p = plan(RunConfig(model="unet_mnv2", norm="percentile", scenario="shift_haze", weights="random", recipe=TINY,
                       out=str(shift_run.parents[2])))
    t = train_or_load(p)
    test = p.splits["test"]
    wrong = Split.of("test", [replace(s, codes=np.roll(s.codes, 37, axis=1)) for s in test.scenes], test.labels,
                     test.reference)
    cal = json.loads(shift_run.read_text())["label_free"]["calibration"]
    a, b = (evaluate(t.module, t.normalizer, split, p.space, p.recipe.patch_size, p.recipe.batch_size,
                     label_free=LabelFree(p.space, cal)) for split in (test, wrong))
    assert a.metrics["confusion"] != b.metrics["confusion"]  # the reference moved ...
    strip = lambda lf: {k: v for k, v in lf.items() if k != "per_scene"}  # noqa: E731
    assert strip(a.label_free) == strip(b.label_free)  # ... the estimates did not


class Symmetric(nn.Module):
    """A 1 x 1 convolution: its prediction of a flipped input is the flipped prediction."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(len(UKIS_BANDS), 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Lopsided(Symmetric):
    """The same, shifted 3 px to the right: flipping the input changes its prediction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(self.conv(x), 3, dims=-1) + torch.linspace(0, 2, x.shape[-1])


@pytest.mark.parametrize("net, consistent", [(Symmetric, True), (Lopsided, False)])
def test_flip_consistency_is_measured_on_request(tiny_dataset, tmp_path, net, consistent):
    from bench.core.labels import EvalSpace
    from bench.data.normalizers import Percentile
    from bench.data.scenarios import load_scenario
    from bench.data.splits import load_split
    from bench.run.evaluate import evaluate
    from conftest import write_scenario

    sc = load_scenario(str(write_scenario(tmp_path / "mine.toml", str(tiny_dataset), str(tiny_dataset))))
    split = load_split(sc, "test")
    space = EvalSpace.parse({"clear": ["clear"], "cloud": ["cloud"], "cloud_shadow": ["cloud_shadow"]}, "t")
    norm = Percentile().fit([(s.image, None) for s in split.scenes])
    ev = evaluate(net().eval(), norm, split, space, 64, 4, label_free=LabelFree(space, None, consistency=True))
    held = ev.label_free["signals"]["consistency"]
    assert held == 1.0 if consistent else held < 0.95
    plain = evaluate(net().eval(), norm, split, space, 64, 4, label_free=LabelFree(space, None))
    assert plain.label_free["signals"]["consistency"] is None


def test_verdicts_say_what_to_do():
    cal = {"miou": 0.8}
    est = {"miou": headline({"calibrated": 0.78, "doc": 0.7}, "miou")}
    assert est["miou"] == {"value": 0.78, "low": 0.7, "high": 0.78, "method": "calibrated"}
    assert verdict(est, cal, None).startswith("holds")
    assert verdict({"miou": headline({"calibrated": 0.6}, "miou")}, cal, None).startswith("degraded")
    shift = {"outside": [0.4, 0.01], "flagged": ["B02"]}
    assert verdict(est, cal, shift).startswith("outside") and "retrain" in verdict(est, cal, shift)
    caveat = verdict(est, cal, shift, trained_here=False)  # a pretrained model: only its calibration inputs known
    assert caveat.startswith("holds") and "B02" in caveat
    assert verdict({"miou": headline({}, "miou")}, None, None).startswith("unknown")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, ukis):  # noqa: ANN201 - two GeoTIFFs cut from the ukis patch, bands named
    root = tmp_path_factory.mktemp("scenes")
    return [write_tif(root / f"{k}.tif", ukis[0][:, r:r + 96, c:c + 128]) for k, (r, c) in
            {"a": (0, 0), "b": (300, 200)}.items()]


def test_bench_assess_prints_estimates_and_writes_the_schema(scenes, tmp_path, capsys):
    out = tmp_path / "assess.json"
    code = main(["assess", *map(str, scenes), "--bands", ",".join(UKIS_BANDS), "--model", "ukis_csmask_4b_l1c",
                 "--model", "ukis_csmask_6b_l1c", "--model", "dl_l8s2_uv_4b", "--tile", "128", "--precision", "fp32",
                 "--json", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "recommended:" in printed and "ukis_csmask_4b_l1c/native" in printed
    report = json.loads(out.read_text())
    assert report["scenes"] == ["a.tif", "b.tif"] and len(report["models"]) == 3
    for m in report["models"]:
        assert {"name", "normalizer", "estimates", "signals", "verdict", "calibration"} <= set(m)
        for metric in ("accuracy", "miou"):
            e = m["estimates"][metric]
            assert set(e) == {"value", "low", "high", "method"} and e["low"] <= e["value"] <= e["high"]
        assert m["calibration"]["source"]["scenario"] == "samples_intra"
    ukis4, ukis6, dl = report["models"]
    assert list(dl["calibration"]["space"]) == ["cloud", "not_cloud"]  # it cannot tell shadow from clear
    assert len(ukis4["calibration"]["space"]) == 3
    # agreement on the line between the two calibrated on the same split in the same space, not the third
    assert ukis4["estimates"]["by_method"]["accuracy"]["aol"] is not None
    assert ukis6["estimates"]["by_method"]["accuracy"]["aol"] is not None
    assert dl["estimates"]["by_method"]["accuracy"]["aol"] is None
    # the estimators the committed label-free board finds closest across datasets come first
    assert ukis4["estimates"]["accuracy"]["method"] == "aol" and ukis4["estimates"]["miou"]["method"] == "calibrated"
    assert dl["estimates"]["accuracy"]["method"] == "atc"  # no agreement on the line for it: the next one
    matrix = report["agreement"]["matrix"]
    assert matrix[0][0] == 1.0 and matrix[0][1] == matrix[1][0] and 0 <= matrix[0][1] <= 1
    assert report["recommended"] in (0, 1, 2)


def test_bench_assess_refuses_what_it_cannot_read(scenes, tmp_path, capsys):
    assert main(["assess", str(scenes[0]), "--bands", "B02,B03,B04", "--model", "ukis_csmask_4b_l1c"]) == 2
    assert "a.tif" in capsys.readouterr().err  # 3 band names for a file of 6
    assert main(["assess", str(scenes[0]), "--bands", "B02,B03,B04,B05,B11,B12", "--model",
                 "ukis_csmask_4b_l1c", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "a.tif" in err and "B08" in err  # the band the model needs is not in the file
    assert main(["assess", str(scenes[0])]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["assess", str(scenes[0]), "--scenario", "shift_haze", "--model", "hollstein"]) == 2
    assert main(["assess", str(scenes[0]), "--model", "unet_mnv2"]) == 2
    assert "--run" in capsys.readouterr().err


def test_bench_assess_on_a_shift_scenario_estimates_each_severity(shift_run, tmp_path, capsys):
    out = tmp_path / "sev.json"
    assert main(["assess", "--scenario", "shift_haze", "--run", str(shift_run), "--tile", "128",
                 "--precision", "fp32", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert [s["severity"] for s in report["severities"]] == list(range(6))
    r = json.loads(shift_run.read_text())
    for s in report["severities"]:  # the same model, calibration and scenes as the run: the same estimates
        ran = r["per_severity"][str(s["severity"])]["label_free"]["estimates"]["miou"]["calibrated"]
        assert s["models"][0]["estimates"]["by_method"]["miou"]["calibrated"] == pytest.approx(ran, abs=1e-6)
    assert capsys.readouterr().out.count("recommended:") == 6


def test_masks_made_elsewhere_join_the_agreement(tmp_path):
    """s2cloudless's own masks, written by bench predict and read back as a masks model, agree with it on
    every pixel; the same masks with one scene flipped agree less, by that scene's share of the pixels."""
    import rasterio

    images = REPO / "bench" / "data" / "samples" / "eolearn_slovenia" / "images"
    bands = "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B10,B11,B12"
    assert main(["predict", "--model", "s2cloudless", str(images), "--out-dir", str(tmp_path / "own"),
                 "--bands", bands, "--quiet"]) == 0
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for i, mask in enumerate(sorted((tmp_path / "own").glob("*.tif"))):
        with rasterio.open(mask) as src:
            profile, codes = src.profile, src.read(1)
        with rasterio.open(flipped / mask.name, "w", **profile) as dst:  # the first scene: cloud <-> clear
            dst.write(np.where(codes == 255, 255, np.where(codes == 0, 1, 0)) if i == 0 else codes, 1)
    scenes = [str(p) for p in sorted(images.glob("*.tif"))]
    agreements = []
    for folder in ("own", "flipped"):
        out = tmp_path / f"{folder}.json"
        assert main(["assess", *scenes, "--bands", bands, "--model", "s2cloudless", "--model", "masks_cloudbench",
                     "--masks", str(tmp_path / folder), "--precision", "fp32", "--json", str(out), "--quiet"]) == 0
        report = json.loads(out.read_text())
        assert report["models"][1]["verdict"].startswith("unknown")  # no probabilities, no calibration
        agreements.append(report["agreement"]["matrix"][0][1])
    assert agreements[0] == 1.0 and agreements[1] == pytest.approx(4 / 5, abs=1e-6)  # five scenes of equal size
