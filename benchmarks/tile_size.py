"""Which tile size ``bench predict`` should default to: 512, 768 and 1024 px side by side in one run.

    python benchmarks/tile_size.py [--overlap 32] [--threads 2] [--rounds 3] [--runtime torch]

Each tile size runs unet_mnv2 (13 bands, random weights, fp32) on batches of about a million pixels
(4 x 512², 2 x 768², 1 x 1024²), alternating between sizes in each round. What counts is the rate of
*kept* pixels: a tile's outer ``overlap`` px on each side are predicted and then discarded, so a larger
tile wastes less (23 % of a 512 px tile at 32 px overlap, 12 % of a 1024 px one). The peak RSS of one
batch of each size is measured in a child process of its own. The best rate, relative to 512 px, and the
peak memory decide the default (target: the fastest whose peak stays within 1.5 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.common import alternate

SIZES = {512: 4, 768: 2, 1024: 1}  # tile -> batch: about 1 Mpx per batch


def network() -> torch.nn.Module:
    """unet_mnv2 with 13 input bands and random weights."""
    from dataclasses import replace

    from bench.core.registry import get_registry

    entry = get_registry().get("model", "unet_mnv2")
    return replace(entry, settings={**entry.settings, "encoder_weights": None}).build(in_channels=13).module.eval()


def peak_rss_mb(tile: int, runtime: str, exports: str) -> float:
    """Peak RSS of a child process that predicts one batch of ``tile`` px tiles."""
    code = (f"import torch, resource, sys; sys.path.insert(0, '.'); torch.set_num_threads(2)\n"
            f"from benchmarks.tile_size import network; from bench.run.inference import FastPaths\n"
            f"f = FastPaths('fp32', runtime={runtime!r}, exports={exports!r}); net = network()\n"
            f"f.logits(f.prepare(net, 'cpu'), torch.rand({SIZES[tile]}, 13, {tile}, {tile}), 'cpu')\n"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime", "openvino"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from bench.run.inference import FastPaths

    with tempfile.TemporaryDirectory() as exports:
        fast, net = FastPaths("fp32", runtime=args.runtime, exports=exports), network()
        fn = fast.prepare(net, "cpu")

        def timed(tile: int):  # noqa: ANN202
            x = torch.rand(SIZES[tile], 13, tile, tile)
            kept = SIZES[tile] * (tile - 2 * args.overlap) ** 2

            def run() -> float:
                t = time.perf_counter()
                fast.logits(fn, x, "cpu")
                return kept / (time.perf_counter() - t)
            return run

        rates = alternate({tile: timed(tile) for tile in SIZES}, args.rounds)
        peaks = {tile: peak_rss_mb(tile, args.runtime, exports) for tile in SIZES}
    print(f"unet_mnv2, 13 bands, fp32, {args.runtime}, {args.threads} threads, overlap {args.overlap} px: kept pixels/s")
    print(json.dumps({"runtime": fast.describe()["runtime"]}))
    for tile, rate in rates.items():
        print(f"  {tile:>5} px x {SIZES[tile]}: {rate / 1e3:8.1f} kpx/s  x{rate / rates[512]:.2f} of 512 px  "
              f"peak RSS of one batch {peaks[tile]:.0f} MB")


if __name__ == "__main__":
    main()
