"""Pixels per second of each offline zoo model through cloudbench's evaluation, against the upstream
package's own inference on the same scene, side by side in one run; and whether the two masks agree.

    python benchmarks/zoo_throughput.py [--size 1024] [--rounds 3] [--threads 2]

The scene is a real embedded sample mirrored out to ``--size`` x ``--size`` px (eo-learn's 13-band scene for
s2cloudless, the ukis-csmask patch for ukis-csmask). Upstream: ``S2PixelCloudDetector.get_cloud_masks`` and
``CSmask(...).csm``; cloudbench: :func:`bench.run.evaluate.evaluate` (prediction, folding into the label
space, confusion matrices per scene and per 64 px block). Target: ratio (cloudbench / upstream) >= 0.9;
masks identical.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.core.registry import get_registry
from bench.data.datasets import SceneData, load_dataset
from bench.data.splits import Split
from bench.models.base import contract_of
from bench.run.evaluate import evaluate
from bench.run.plan import RunConfig, find_weights

UKIS_NAMES = ["blue", "green", "red", "nir", "swir16", "swir22"]


def scene(dataset: str, bands: list[str], size: int) -> np.ndarray:
    """A real scene of ``dataset`` in ``bands``, mirrored to ``size`` x ``size`` px."""
    ds = load_dataset(dataset)
    image = np.nan_to_num(ds.read(ds.scene_ids()[0], bands).image)
    h, w = image.shape[1:]
    return np.pad(image, [(0, 0), (0, max(0, size - h)), (0, max(0, size - w))], mode="symmetric")[:, :size, :size]


def upstream(name: str, image: np.ndarray):  # noqa: ANN201 - a function of nothing that returns the mask
    """The upstream package's own inference of ``name`` on ``image``, as a no-argument callable."""
    settings = get_registry().get("model", name).settings
    if name.startswith("s2cloudless"):
        from s2cloudless import S2PixelCloudDetector

        detector = S2PixelCloudDetector(threshold=settings["threshold"], average_over=settings["average_over"],
                                        dilation_size=settings["dilation_size"], all_bands=False)
        data = np.moveaxis(image, 0, -1)[None]
        return lambda: detector.get_cloud_masks(data)[0]
    from ukis_csmask.mask import CSmask

    hwc = np.moveaxis(image, 0, -1).copy()
    return lambda: CSmask(hwc.copy(), band_order=UKIS_NAMES[:len(image)], product_level="l1c").csm[..., 0]


def ours(name: str, image: np.ndarray):  # noqa: ANN201
    """cloudbench's evaluation of ``name`` on ``image`` (all pixels valid), returning the predicted codes."""
    entry = get_registry().get("model", name)
    contract = contract_of(entry)
    files = [str(f) for f in find_weights(RunConfig(model=name), contract)]
    model = entry.build(in_channels=len(contract.bands), weight_files=files).module
    labels = contract.outputs  # the reference's codes are the model's: evaluation's groups are its codes
    codes = np.zeros(image.shape[1:], dtype=np.uint8)
    split = Split.of("test", [SceneData("s", image, codes, np.ones(codes.shape, bool))], labels, "human")
    space = labels.finest_space()
    identity = get_registry().get("norm", "native").build()
    return lambda: evaluate(model, identity, split, space, 256, 8, "cpu", contract=contract).predictions["s"]


def best_time(fn, rounds: int) -> float:  # noqa: ANN001
    """Best wall time of ``fn`` over ``rounds`` calls."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    """Time each model both ways, alternating rounds, and print pixels/s, the ratio and the agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {"s2cloudless": "eolearn_slovenia", "s2cloudless_pixel": "eolearn_slovenia",
              "ukis_csmask_6b_l1c": "ukis_csmask_s2", "ukis_csmask_4b_l1c": "ukis_csmask_s2"}
    print(f"scene {args.size} x {args.size} px, best of {args.rounds}, {args.threads} threads")
    print(f"{'model':<20} {'cloudbench px/s':>16} {'upstream px/s':>14} {'ratio':>6}  masks")
    for name, dataset in models.items():
        image = scene(dataset, list(contract_of(get_registry().get("model", name)).bands), args.size)
        theirs, mine = upstream(name, image), ours(name, image)
        t_theirs, t_mine = best_time(theirs, args.rounds), best_time(mine, args.rounds)
        a, b = mine(), theirs()
        agree = "identical" if np.array_equal(a, b) else f"{(a == b).mean():.4%} of pixels agree"
        px = args.size ** 2
        print(f"{name:<20} {px / t_mine:>16,.0f} {px / t_theirs:>14,.0f} {t_theirs / t_mine:>6.2f}  {agree}")


if __name__ == "__main__":
    main()
