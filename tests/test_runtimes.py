"""Exported runtimes (ONNX Runtime, OpenVINO): exported once per weights, checked against torch on the first
real batch, set aside when they disagree, refused where they cannot run, and ``auto`` picking the fastest."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bench.core.errors import ConfigError, UnknownNameError
from bench.run import runtimes
from bench.run.inference import FastPaths
from bench.run.plan import RunConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


def small_net(seed: int = 0) -> nn.Module:
    """Convolution, BatchNorm with trained statistics, a stride-2 step and an upsampling, as a U-Net has."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1),
                        nn.Upsample(scale_factor=2), nn.Conv2d(8, 4, 1))
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2.0)
    nn.init.normal_(net[5].weight, std=1.0)  # every class predicted somewhere
    return net.eval()


def batch(n: int = 2, size: tuple[int, int] = (64, 96)) -> torch.Tensor:
    return torch.randn(n, 6, *size, generator=torch.Generator().manual_seed(1))


def logits(fast: FastPaths, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return fast.logits(fast.prepare(net, "cpu"), x, "cpu")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_an_exported_runtime_gives_torch_logits_at_any_tile_size(runtime, tmp_path):
    net = small_net()
    fast = FastPaths("fp32", runtime=runtime, exports=str(tmp_path))
    fn = fast.prepare(net, "cpu")
    for x in (batch(3), batch(1), batch(1, (32, 160))):  # one export: any batch, height and width
        expected = FastPaths("fp32").logits(net, x, "cpu")
        assert torch.allclose(fast.logits(fn, x, "cpu"), expected, atol=1e-4)
    assert fast.describe()["runtime"] == runtime
    assert len(list(tmp_path.glob("exports/*.onnx"))) == 1


def test_an_export_is_made_once_per_weights(tmp_path, monkeypatch):
    made = []
    export = runtimes.export_onnx
    monkeypatch.setattr(runtimes, "export_onnx", lambda *a: made.append(a[2].name) or export(*a))
    for net in (small_net(), small_net(), small_net(seed=1)):  # a copy of the same weights reuses its export
        logits(FastPaths(runtime="onnxruntime", exports=str(tmp_path)), net, batch())
    assert len(made) == 2 and made[0] != made[1]
    memo = json.loads((tmp_path / "exports" / made[0]).with_suffix(".json").read_text())
    (check,) = memo["checks"].values()
    assert check["passed"] and check["agreement"] == 1.0


def test_a_runtime_that_disagrees_with_torch_is_set_aside(tmp_path, monkeypatch):
    monkeypatch.setitem(runtimes.SESSIONS, "onnxruntime", lambda *a: (lambda x: -small_net()(x)))  # argmin, not argmax
    net, x = small_net(), batch()
    fast = FastPaths("fp32", runtime="onnxruntime", exports=str(tmp_path))
    with pytest.warns(runtimes.RuntimeSetAside, match="set aside and torch runs"):
        out = logits(fast, net, x)
    assert torch.equal(out, FastPaths("fp32").logits(net, x, "cpu"))
    assert fast.describe()["runtime"] == "torch"
    (memo,) = tmp_path.glob("exports/*.json")
    assert not next(iter(json.loads(memo.read_text())["checks"].values()))["passed"]
    again = FastPaths("fp32", runtime="onnxruntime", exports=str(tmp_path))
    with pytest.warns(runtimes.RuntimeSetAside):  # remembered: it is not tried again
        logits(again, small_net(), x)


def test_auto_runs_the_fastest_runtime_that_passed_and_remembers_it(tmp_path, monkeypatch):
    seconds = {"torch": 3.0, "onnxruntime": 2.0, "openvino": 1.0}
    monkeypatch.setattr(runtimes, "median_seconds", lambda fns: {k: seconds[k] for k in fns})
    fast = FastPaths("fp32", runtime="auto", exports=str(tmp_path))
    assert torch.allclose(logits(fast, small_net(), batch()), FastPaths("fp32").logits(small_net(), batch(), "cpu"),
                          atol=1e-4)
    assert fast.describe()["runtime"] == "openvino"

    def measured(fns):  # noqa: ANN001, ANN202
        raise AssertionError("measured again")

    monkeypatch.setattr(runtimes, "median_seconds", measured)
    loaded = []
    sessions = dict(runtimes.SESSIONS)
    monkeypatch.setitem(runtimes.SESSIONS, "onnxruntime", lambda *a: loaded.append("onnxruntime") or sessions["onnxruntime"](*a))
    monkeypatch.setitem(runtimes.SESSIONS, "openvino", lambda *a: loaded.append("openvino") or sessions["openvino"](*a))
    again = FastPaths("fp32", runtime="auto", exports=str(tmp_path))
    logits(again, small_net(), batch())
    assert again.describe()["runtime"] == "openvino"
    assert loaded == ["openvino"]  # only the one chosen before is loaded: the others' memory is not taken


def test_runtimes_that_cannot_run_are_refused_by_name_and_left_out_by_auto(tmp_path, monkeypatch):
    net = small_net()
    with pytest.raises(ConfigError, match="fp32 only"):
        logits(FastPaths("bf16", runtime="onnxruntime", exports=str(tmp_path)), net, batch())
    monkeypatch.setattr(runtimes, "openvino_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="no native bf16"):
        logits(FastPaths("bf16", runtime="openvino", exports=str(tmp_path)), net, batch())
    with pytest.raises(ConfigError, match="runs on the CPU"):
        FastPaths(runtime="openvino").exported(net, net, "cuda:0", False)
    tent_like = small_net().train()  # BatchNorm on batch statistics: the network changes with its input
    with pytest.raises(ConfigError, match="fixed network"):
        FastPaths(runtime="onnxruntime").prepare(tent_like, "cpu")
    auto = FastPaths(runtime="auto", exports=str(tmp_path))
    auto.prepare(tent_like, "cpu")
    assert auto.describe()["runtime"] == "torch"
    bf16_auto = FastPaths("bf16", runtime="auto", exports=str(tmp_path))  # neither runs bf16 here: torch
    monkeypatch.setattr(runtimes, "median_seconds", lambda fns: {k: float(k != "torch") for k in fns})
    logits(bf16_auto, small_net().eval(), batch())
    assert bf16_auto.describe() == {"precision": "bf16", "channels_last": True, "compile": False, "runtime": "torch"}
    with pytest.raises(ConfigError, match="changes it while it predicts"):
        RunConfig(adapt="tent", runtime="openvino").validate()
    with pytest.raises(UnknownNameError, match="did you mean 'onnxruntime'"):
        RunConfig(runtime="onnx-runtime").validate()


def test_a_sweep_cell_keeps_its_runtime_and_its_identity():
    """A cell's command carries ``--runtime``; its keys are the torch cell's (a runtime that passed its check
    gives torch's masks), so a cached torch result serves it."""
    from dataclasses import replace

    from bench.sweep.grid import Grid, cell_command, plans

    base = RunConfig(model="s2cloudless", scenario="samples_temporal")
    (torch_cell,) = plans(Grid(models="s2cloudless", scenarios="samples_temporal", base=base))
    (onnx_cell,) = plans(Grid(models="s2cloudless", scenarios="samples_temporal", base=replace(base, runtime="auto")))
    assert "--runtime auto" in cell_command(onnx_cell.cfg) and "--runtime" not in cell_command(torch_cell.cfg)
    assert (onnx_cell.train_key, onnx_cell.eval_key) == (torch_cell.train_key, torch_cell.eval_key)


def test_int8_is_quantized_once_on_its_calibration_tiles_and_checked_against_fp32(tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    net, x = small_net(), batch()
    calls = []

    def calibration():
        calls.append(1)
        return [batch(1, (64, 64)).numpy() for _ in range(8)]

    monkeypatch.setitem(runtimes.AGREEMENT, "int8", 0.0)  # this check passes whatever the agreement
    fast = FastPaths("int8", runtime="openvino", exports=str(tmp_path), calibration=calibration, tag="train")
    out = logits(fast, net, x)
    fp32 = FastPaths("fp32").logits(net, x, "cpu")
    assert fast.describe()["runtime"] == "openvino"
    assert fast.describe()["agreement"] == {"openvino": pytest.approx(runtimes.agreement(out, fp32), abs=1e-6)}
    assert not torch.equal(out, fp32) and torch.allclose(out, fp32, atol=0.5)  # quantized: near fp32, not it
    assert len(list(tmp_path.glob("exports/*-int8-train.xml"))) == 1
    assert len(list(tmp_path.glob("exports/*-int8-train.bin"))) == 1
    logits(FastPaths("int8", runtime="openvino", exports=str(tmp_path), tag="train"), small_net(), x)
    assert calls == [1]  # made once: the second use needs no calibration
    monkeypatch.setitem(runtimes.AGREEMENT, "int8", 1.01)  # a check it cannot pass: refused, never fp32 as int8
    with pytest.raises(ConfigError, match="the int8 model agreed with torch fp32 on"):
        logits(FastPaths("int8", runtime="openvino", exports=str(tmp_path / "b"), calibration=calibration,
                         tag="train"), small_net(), x)


def test_int8_needs_openvino_and_a_training_split(tmp_path):
    with pytest.raises(ConfigError, match="int8 runs through OpenVINO"):
        logits(FastPaths("int8", runtime="torch"), small_net(), batch())
    with pytest.raises(ConfigError, match="int8 calibrates on a training split"):
        logits(FastPaths("int8", runtime="openvino", exports=str(tmp_path)), small_net(seed=3), batch())
    with pytest.raises(ConfigError, match="int8 runs through OpenVINO"):
        RunConfig(model="unet_mnv2", recipe={"precision": "int8"}, runtime="auto").validate()
