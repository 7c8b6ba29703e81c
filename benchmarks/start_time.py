"""Start-up time of the quick commands (`bench --help`, `bench list`, `bench data info`, an argument error)
against the bare interpreter and against importing torch, side by side in one run.

    python benchmarks/start_time.py [--rounds 5]

Target: each quick command under 1 s on an idle machine, i.e. far below the cost of importing torch (which
they must not do). Prints each command's best wall time over the rounds and its ratio to `import torch`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "bench --help": [sys.executable, "-m", "bench.cli", "--help"],
    "bench list": [sys.executable, "-m", "bench.cli", "list"],
    "bench data info": [sys.executable, "-m", "bench.cli", "data", "info"],
    "bench run --norm percentil (error)": [sys.executable, "-m", "bench.cli", "run", "--norm", "percentil"],
}


def wall(cmd: list[str]) -> float:
    """Seconds one command takes, output discarded."""
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    """Time every command ``--rounds`` times, alternating, and print the best of each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    best = {name: float("inf") for name in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            best[name] = min(best[name], wall(cmd))
    torch_s = best["python -c 'import torch'"]
    width = max(map(len, COMMANDS))
    for name, s in best.items():
        verdict = "" if not name.startswith("bench") else ("  ok (< 1 s)" if s < 1 else "  SLOW (target < 1 s)")
        print(f"{name:<{width}} : {s:6.2f} s  ratio to import torch {s / torch_s:.2f}{verdict}")


if __name__ == "__main__":
    main()
