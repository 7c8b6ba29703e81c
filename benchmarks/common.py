"""Shared by the benchmark scripts: time two ways of doing the same work, alternating, in one run."""

from __future__ import annotations

from collections.abc import Callable


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
