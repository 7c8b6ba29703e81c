"""What the label-free signals cost: evaluation with them against evaluation without, on the same scene
in one run; rounds alternate to share the machine's noise. The flip-consistency pass (opt-in) and the
calibration pass (once per model, cached beside it) are timed apart.

Scene: the real ukis-csmask patch mirrored to 1024 x 768 (12 tiles of 256), unet_mnv2 (random weights),
fp32, 2 threads. Prints tiles/s and the ratio with / without (target >= 0.87, a cost of at most 15 %).

    python benchmarks/label_free_cost.py [--patch 256 --batch 16 --rounds 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from common import alternate, mirrored_split, report

from bench.core.registry import get_registry
from bench.data.splits import tile_grid
from bench.run.evaluate import evaluate, predicted_strips, scene_inputs
from bench.run.inference import FastPaths, Tiling
from bench.run.label_free import LabelFree, calibrate

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    src, test = mirrored_split()
    space = test.labels.finest_space()
    norm = get_registry().get("norm", "percentile").build().fit(src.samples())
    model = get_registry().get("model", "unet_mnv2").build(in_channels=6).module.eval()
    fast = FastPaths("fp32")
    n = len(tile_grid(*test.scenes[0].image.shape[1:], args.patch))
    t0 = time.perf_counter()
    strips = lambda scene: predicted_strips(model, scene, Tiling(args.patch), args.batch, "cpu", fast,  # noqa: E731
                                            probabilities=True)
    cal, _ = calibrate(scene_inputs(test, norm, Tiling(args.patch)), strips, space, test.labels)
    cal_s = time.perf_counter() - t0

    def run(label_free: bool, flip: bool = False):  # noqa: ANN202
        def timed() -> float:
            t0 = time.perf_counter()
            evaluate(model, norm, test, space, args.patch, args.batch, fast=fast,
                     label_free=LabelFree(space, cal, flip) if label_free else None)
            return n / (time.perf_counter() - t0)
        return timed

    best = alternate({"with": run(True), "without": run(False), "flip": run(True, True)}, args.rounds)
    print(f"{n} tiles of {args.patch}, batch {args.batch}, {args.rounds} rounds (best of each), 2 threads")
    report("with label-free signals", best["with"], "without", best["without"], "tiles/s", 0.87)
    report("with flip consistency", best["flip"], "without", best["without"], "tiles/s", 0.45)
    print(f"calibration pass (once per model, cached): {cal_s:.2f} s for {n} tiles")


if __name__ == "__main__":
    main()
