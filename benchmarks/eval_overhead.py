"""The evaluation pipeline (normalization, tiling, folding, confusion matrix) against bare model inference
on the same tiles, in one run; runs alternate to share the machine's noise.

Scene: the real ukis-csmask patch mirrored to 1024 x 1024 (16 tiles of 256). Prints tiles/s of each
and the ratio pipeline / bare (target >= 0.90).

    python benchmarks/eval_overhead.py [--patch 256 --batch 16 --rounds 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from common import alternate, mirrored_split, report

from bench.data.splits import pad_to, tile_grid
from bench.run.loaders import model_input
from bench.run.evaluate import evaluate
from bench.core.registry import get_registry

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    src, test = mirrored_split()  # the ukis patch's 512 x 384 training window mirrored into 1024 x 768
    image = test.scenes[0].image
    space = test.labels.finest_space()
    norm = get_registry().get("norm", "percentile").build().fit(src.samples())
    model = get_registry().get("model", "unet_mnv2").build(in_channels=6).module.eval()
    tiles = tile_grid(*image.shape[1:], args.patch)
    normed = norm.transform(image)
    stacked = torch.stack([model_input(pad_to(normed[:, r0:r1, c0:c1], args.patch)) for r0, c0, r1, c1 in tiles])

    def bare() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(stacked), args.batch):
            model(stacked[i:i + args.batch]).argmax(1)
        return len(tiles) / (time.perf_counter() - t0)

    def pipeline() -> float:
        t0 = time.perf_counter()
        evaluate(model, norm, test, space, args.patch, args.batch)
        return len(tiles) / (time.perf_counter() - t0)

    best = alternate({"pipeline": pipeline, "bare": bare}, args.rounds)
    print(f"{len(tiles)} tiles of {args.patch}, batch {args.batch}, {args.rounds} rounds (best of each)")
    report("pipeline", best["pipeline"], "bare", best["bare"], "tiles/s", 0.90)


if __name__ == "__main__":
    main()
