"""Cost of each normalizer and adapter per 256 x 256 13-band image, relative to one forward pass of
unet_mnv2 on the same image, all measured in one run (best of several repeats).

Image: the five real eo-learn scenes (13 bands) mirrored into 256 x 256. Normalizers are fitted on the
same data first (fitting is not timed). Adapters are timed adapting on that one image.

    python benchmarks/norm_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import torch

from bench.data.datasets import load_dataset
from bench.core.registry import get_registry

warnings.filterwarnings("ignore")
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ds = load_dataset("eolearn_slovenia")
    scene = ds.read(ds.scene_ids()[4], S2).image
    image = np.pad(scene, ((0, 0), (0, 256 - scene.shape[1]), (0, 256 - scene.shape[2])), mode="symmetric")
    reg = get_registry()
    model = reg.get("model", "unet_mnv2").build(in_channels=13).module.eval()
    x = torch.from_numpy(image[None].astype(np.float32))
    with torch.no_grad():
        model(x)
        forward = best(lambda: model(x), args.repeats)
    print(f"forward pass of unet_mnv2, one 13 x 256 x 256 image: {forward * 1000:.1f} ms (= 1.00)")
    print(f"{'what':<26} {'ms':>8} {'ratio':>8}")
    for name in reg.names("norm"):
        norm = reg.get("norm", name).build().fit([(image, None)])
        t = best(lambda: norm.transform(image), args.repeats)
        print(f"{'norm ' + name:<26} {t * 1000:>8.2f} {t / forward:>8.3f}")
    for name in reg.names("adapter"):
        t = best(lambda: reg.get("adapter", name).build().adapt(copy.deepcopy(model), [x]), args.repeats)
        copy_t = best(lambda: copy.deepcopy(model), args.repeats)
        print(f"{'adapt ' + name:<26} {t * 1000:>8.2f} {t / forward:>8.3f}   (of which model copy {copy_t * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
