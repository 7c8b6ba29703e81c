"""Shared by the benchmark scripts: time two ways of doing the same work, alternating, in one run."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.data.datasets import SceneData
from bench.data.scenarios import load_scenario
from bench.data.splits import Split, load_split


def alternate(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Best rate of each function over ``rounds`` alternating rounds (after one warm-up of each), so that
    the machine's noise falls on both sides alike."""
    for fn in runs.values():
        fn()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            rates[name].append(fn())
    return {name: max(r) for name, r in rates.items()}


def report(ours: str, rate: float, bare: str, bare_rate: float, unit: str, target: float) -> None:
    """Print both rates and their ratio against the target."""
    width = max(len(ours), len(bare))
    print(f"{bare:<{width}} : {bare_rate:7.2f} {unit}")
    print(f"{ours:<{width}} : {rate:7.2f} {unit}")
    print(f"ratio {ours} / {bare}: {rate / bare_rate:.3f}  (target >= {target:.2f})")


def mirrored_split() -> tuple[Split, Split]:
    """The training split, and a test split of one 1024 x 768 scene mirrored from it."""
    src = load_split(load_scenario("samples_intra"), "train")
    full = load_split(load_scenario("samples_intra"), "test")
    ukis = src.scenes[0]
    image = np.concatenate([np.concatenate([ukis.image, ukis.image[:, :, ::-1]], 2)] * 2, 1)
    codes = np.concatenate([np.concatenate([ukis.codes, ukis.codes[:, ::-1]], 1)] * 2, 0)
    scene = SceneData("mirrored", image, codes, np.ones(codes.shape, bool), {})
    return src, Split.of("test", [scene], full.labels, full.reference)
