"""Every path runs at the precision its caller asked for, on any CPU: bf16 native, emulated or absent.

``$CLOUDBENCH_BF16`` (``fast`` / ``slow``) stands in for the hardware, so ``auto`` is tested both ways here;
a probe network records whether autocast was on when it ran, so a path that silently runs at another
precision than the one it records fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from bench.core.errors import ConfigError
from bench.data.normalizers import Percentile
from bench.models.base import Contract
from bench.run.inference import BF16_ENV, FastPaths, bf16_is_fast, resolve_precision
from bench.run.predict import Predictor, predict
from conftest import UKIS_BANDS, write_tif

REPO = Path(__file__).resolve().parent.parent


class Probe(nn.Module):
    """A 1 x 1 convolution that records, at each call, the autocast dtype it ran under (None: fp32)."""

    def __init__(self, bands: int) -> None:
        super().__init__()
        self.conv, self.seen = nn.Conv2d(bands, 4, 1), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = torch.is_autocast_enabled("cpu")
        self.seen.append(torch.get_autocast_dtype("cpu") if on else None)
        return self.conv(x)


def ran_as(probe: Probe) -> set[str]:
    return {"bf16" if d == torch.bfloat16 else "fp32" if d is None else str(d) for d in probe.seen}


@pytest.mark.parametrize("forced, auto", [("fast", "bf16"), ("slow", "fp32")])
def test_auto_follows_the_hardware_or_the_override(monkeypatch, forced, auto):
    monkeypatch.setenv(BF16_ENV, forced)
    assert bf16_is_fast("cpu") is (forced == "fast") and resolve_precision("auto", "cpu") == auto
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setenv(BF16_ENV, "sometimes")
    with pytest.raises(ConfigError, match=BF16_ENV):
        bf16_is_fast("cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_runs_at_the_precision_it_was_given(precision):
    probe = Probe(3)
    out = FastPaths(precision).logits(probe, torch.rand(2, 3, 32, 32), "cpu")
    assert ran_as(probe) == {precision} and out.dtype == torch.float32


@pytest.mark.parametrize("forced", ["fast", "slow"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bench_predict_runs_and_records_the_precision_asked_for(tmp_path, ukis, monkeypatch, forced, precision):
    monkeypatch.setenv(BF16_ENV, forced)  # what auto would pick must not leak into an explicit choice
    src = write_tif(tmp_path / "scene.tif", ukis[0][:, :64, :96])
    probe = Probe(len(UKIS_BANDS))
    norm = Percentile(0, 100).fit([(ukis[0][:, :64, :64], None)])
    predictor = Predictor("probe", probe, norm, UKIS_BANDS, Contract())
    w = predict(predictor, src, tmp_path / "mask.tif", bands=UKIS_BANDS, tile=64, overlap=0, progress=False,
                fast=FastPaths(resolve_precision(precision, "cpu")))
    with rasterio.open(w.mask) as m:
        assert json.loads(m.tags()["fast_paths"])["precision"] == precision
    assert w.fast_paths["precision"] == precision and ran_as(probe) == {precision}


@pytest.mark.parametrize("asked, forced, expected", [("fp32", "fast", "fp32"), ("auto", "fast", "bf16"),
                                                     ("auto", "slow", "fp32")])
def test_a_run_trains_and_evaluates_at_one_precision(tmp_path, monkeypatch, asked, forced, expected):
    from bench.run.inference import FastPaths as Paths
    from bench.run.runner import RunConfig, run

    monkeypatch.setenv(BF16_ENV, forced)
    used = []
    logits = Paths.logits
    monkeypatch.setattr(Paths, "logits", lambda self, *a: used.append(self.precision) or logits(self, *a))
    res = run(RunConfig(model="unet_mnv2", norm="percentile", scenario="samples_cross", weights="random",
                        recipe={"max_steps": 1, "epochs": 1, "batch_size": 2, "samples_per_epoch": 2,
                                "precision": asked, "patch_size": 64},  # small tiles: bf16 may be emulated
                        out=str(tmp_path), figure=False, leaderboards=False, wandb="off", progress=False,
                        label_free=False))
    result = json.loads(res.path.read_text())
    assert result["train"]["precision"] == {"fp32": "32-true", "bf16": "bf16-mixed"}[expected]
    assert result["metrics"]["fast_paths"]["precision"] == expected and set(used) == {expected}
    assert result["recipe"].get("precision", "fp32") == expected
    assert np.isfinite(result["metrics"]["miou"])


def test_a_zoo_model_runs_in_fp32_as_upstream_unless_bf16_is_asked_for(tmp_path, monkeypatch):
    """With bf16 fast, auto still runs a pretrained model zero-shot in fp32 (upstream's precision): in a run's
    plan and in bench predict; asking for bf16 gets bf16, and a fine-tuned run follows auto."""
    import rasterio

    from bench.cli import main
    from bench.run.plan import RunConfig, plan

    monkeypatch.setenv(BF16_ENV, "fast")
    assert plan(RunConfig(model="dl_l8s2_uv_6b", scenario="samples_intra", out=str(tmp_path))).recipe.precision == "fp32"
    assert plan(RunConfig(model="dl_l8s2_uv_6b", norm="percentile", finetune=True, scenario="samples_intra",
                          out=str(tmp_path))).recipe.precision == "bf16"
    scene = tmp_path / "scene.tif"
    with rasterio.open(REPO / "bench" / "data" / "samples" / "ukis_csmask_s2" / "images" / "ukis_csmask_s2.tif") as src:
        profile, data = src.profile, src.read(window=((0, 64), (0, 64)))
    with rasterio.open(scene, "w", **{**profile, "height": 64, "width": 64, "transform": src.transform}) as dst:
        dst.write(data)
    for extra, expected in (([], "fp32"), (["--precision", "bf16"], "bf16")):
        out = tmp_path / f"mask_{expected}.tif"
        assert main(["predict", "--model", "dl_l8s2_uv_6b", str(scene), "--out", str(out), "--bands",
                     ",".join(UKIS_BANDS), "--quiet", *extra]) == 0
        with rasterio.open(out) as m:
            assert json.loads(m.tags()["fast_paths"])["precision"] == expected
