"""The fast paths side by side in one run: fp32, channels_last, and channels_last + bf16 autocast, and the
exported runtimes (ONNX Runtime fp32, OpenVINO fp32, OpenVINO bf16 where the CPU has it, and OpenVINO int8
quantized by NNCF: on random tiles for the speed, on the training split for the mIoU), for unet_mnv2
inference (256 px, batch 8), and training steps (128 px, batch 16) for the torch paths; images/s and the
ratio to fp32, argmax agreement with fp32, and the mIoU of a trained model on samples_intra evaluated each way.

    python benchmarks/precision.py [--threads 2] [--rounds 3] [--device cpu] [--result RESULT.json]

``--result``: a unet_mnv2 result on samples_intra (default: the newest under runs/results/samples_intra);
without one the mIoU comparison is skipped. Target: the mIoU of every fast path within 0.01 of fp32. The
script says whether this machine runs bf16 natively (AMX / AVX512-BF16): elsewhere the CPU emulates it and
bf16 is slower, which is why ``--precision auto`` picks fp32 there.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import alternate
from bench.run.inference import FastPaths, bf16_is_fast

PATHS = {"fp32": FastPaths("fp32", False), "channels_last": FastPaths("fp32", True),
         "channels_last+bf16": FastPaths("bf16", True)}
TRAINING = dict(PATHS)  # the exported runtimes predict only


def add_runtimes(exports: str) -> None:
    """The exported runtimes that can run here, beside the torch paths (exports in a temporary folder)."""
    from bench.run import runtimes

    for name in runtimes.EXPORTED:
        if runtimes.refusal(name, "cpu", False) is None:
            PATHS[f"{name} fp32"] = FastPaths("fp32", runtime=name, exports=exports)
    if "openvino fp32" in PATHS and runtimes.openvino_has_bf16():
        PATHS["openvino bf16"] = FastPaths("bf16", runtime="openvino", exports=exports)
    if "openvino fp32" in PATHS:
        tiles = [torch.rand(1, 13, 256, 256, generator=torch.Generator().manual_seed(i)).numpy() for i in range(16)]
        PATHS["openvino int8"] = FastPaths("int8", runtime="openvino", exports=exports, calibration=lambda: tiles,
                                           tag="random")


def network() -> torch.nn.Module:
    """unet_mnv2 with 13 input bands and random weights."""
    from bench.core.registry import get_registry

    entry = get_registry().get("model", "unet_mnv2")
    return replace(entry, settings={**entry.settings, "encoder_weights": None}).build(in_channels=13).module


def inference(device: str, rounds: int) -> None:
    """Images/s of each fast path and its argmax agreement with fp32."""
    torch.manual_seed(0)
    nets = {name: network() for name in PATHS}
    for net in nets.values():
        net.load_state_dict(nets["fp32"].state_dict())
        net.eval()
    x = torch.rand(8, 13, 256, 256)
    fns = {name: PATHS[name].prepare(nets[name], device) for name in PATHS}
    from bench.run import runtimes

    required, runtimes.AGREEMENT["int8"] = runtimes.AGREEMENT["int8"], 0.0  # random weights: timed, not gated
    for name in PATHS:
        PATHS[name].logits(fns[name], x[:1], device)  # exported, checked (and quantized) before the clock starts
    runtimes.AGREEMENT["int8"] = required

    def timed(name: str):  # noqa: ANN202
        def run() -> float:
            t = time.perf_counter()
            PATHS[name].logits(fns[name], x, device)
            return len(x) / (time.perf_counter() - t)
        return run

    rates = alternate({name: timed(name) for name in PATHS}, rounds)  # int8: speed only (random weights and tiles)
    ref = PATHS["fp32"].logits(fns["fp32"], x, device).argmax(1)
    print("inference, unet_mnv2, 256 px, batch 8")
    for name, rate in rates.items():
        agree = (PATHS[name].logits(fns[name], x, device).argmax(1) == ref).float().mean().item()
        print(f"  {name:<20} {rate:7.2f} images/s  x{rate / rates['fp32']:.2f}  argmax agreement {agree:.4f}  "
              f"(ran {PATHS[name].describe()['runtime']})")


def training(device: str, rounds: int) -> None:
    """Training steps (Dice loss, Adam) per second of each fast path, in images/s."""
    import segmentation_models_pytorch as smp

    x, y = torch.rand(16, 13, 128, 128), torch.randint(0, 4, (16, 128, 128))
    loss = smp.losses.DiceLoss("multiclass")

    def timed(name: str):  # noqa: ANN202
        fast = PATHS[name]
        torch.manual_seed(0)
        net = network().to(device).train()
        xi = x.to(device)
        if fast.channels_last:
            net, xi = net.to(memory_format=torch.channels_last), xi.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters())
        kind = "cuda" if device.startswith("cuda") else "cpu"

        def run() -> float:
            t = time.perf_counter()
            with torch.autocast(kind, dtype=torch.bfloat16, enabled=fast.precision == "bf16"):
                value = loss(net(xi), y.to(device))
            opt.zero_grad()
            value.backward()
            opt.step()
            return len(x) / (time.perf_counter() - t)
        return run

    rates = alternate({name: timed(name) for name in TRAINING}, rounds)
    print("training, unet_mnv2, 128 px, batch 16")
    for name, rate in rates.items():
        print(f"  {name:<20} {rate:7.2f} images/s  x{rate / rates['fp32']:.2f}")


def miou(result: Path | None, device: str) -> None:
    """mIoU of one trained model on its test split, evaluated with each fast path."""
    if result is None:
        print("mIoU: no samples_intra result found; run `bench run --scenario samples_intra` first, or pass --result")
        return
    import json

    from bench.run.evaluate import evaluate
    from bench.run.plan import RunConfig, plan
    from bench.run.runner import int8_calibration
    from bench.run.training import train_or_load

    cfg = json.loads(result.read_text())["config"]
    p = plan(RunConfig(**{k: v for k, v in cfg.items() if k in RunConfig.__dataclass_fields__ and k != "callbacks"}))
    trained = train_or_load(p)
    print(f"mIoU of {result.name} on {p.scenario.name}")
    base = None
    for name, fast in PATHS.items():
        if fast.precision == "int8":  # calibrated on the model's own training split, exported apart
            fast = replace(fast, **{**int8_calibration(replace(p, recipe=replace(p.recipe, precision="int8")), trained),
                                    "tag": "train-benchmark"})
        ev = evaluate(trained.module, trained.normalizer, p.splits["test"], p.space, p.recipe.patch_size,
                      p.recipe.batch_size, device, fast=fast)
        base = ev.metrics["miou"] if base is None else base
        ran = ev.metrics["fast_paths"]
        print(f"  {name:<20} mIoU {ev.metrics['miou']:.4f}  difference {ev.metrics['miou'] - base:+.4f} (target within "
              f"0.01); ran {ran['runtime']}{', agreement ' + str(ran['agreement']) if 'agreement' in ran else ''}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--result", type=Path, help="a unet_mnv2 result JSON on samples_intra")
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.device}, {args.threads} threads; bf16 runs natively here: {bf16_is_fast(args.device)}; "
          f"CPU: {cpu_flags()}")
    with tempfile.TemporaryDirectory() as exports:
        if args.device == "cpu":
            add_runtimes(exports)
        inference(args.device, args.rounds)
        if not args.skip_training:
            training(args.device, args.rounds)
        found = sorted(Path("runs/results/samples_intra").glob("unet_mnv2-percentile-none-s0-*.json"),
                       key=lambda f: f.stat().st_mtime)
        miou(args.result or (found[-1] if found else None), args.device)


def cpu_flags() -> str:
    """The CPU's model and which of AVX2 / AVX512-BF16 / AMX it has."""
    from bench.run.runtimes import cpu_name

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    has = [name for name, flag in (("AVX2", "avx2"), ("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_tile"))
           if flag in flags]
    return f"{cpu_name()} ({', '.join(has) or 'none of AVX2, AVX512-BF16, AMX'})"


if __name__ == "__main__":
    main()
