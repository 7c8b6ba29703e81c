"""Streaming percentile fit against numpy.percentile on the same data, at two data sizes.

Data: the real ukis-csmask patch (6 bands, 512 x 512), repeated with random flips, shifts and a
multiplicative jitter, so that values keep a real reflectance distribution. For each size it prints
the time ratio (streaming / numpy), the peak traced memory of each, and the largest quantile error
as a fraction of the band's range. Targets: streaming memory flat in data size; error <= 0.1 %.

    python benchmarks/percentile_fit.py [--sizes 1e8 2e8]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from bench.data.datasets import load_dataset
from bench.data.normalizers import Percentile

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def chunks(base: np.ndarray, n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = np.flip(base, axis=int(rng.integers(1, 3))) if rng.random() < 0.5 else base
        x = np.roll(x, int(rng.integers(0, 512)), axis=2)
        yield (x * rng.uniform(0.9, 1.1, size=(len(x), 1, 1))).astype(np.float32)


def measure(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e8, 2e8], help="values per fit (all bands)")
    args = ap.parse_args()
    base = load_dataset("ukis_csmask_s2").read("ukis_csmask_s2", BANDS).image
    print(f"{'values':>12} {'stream s':>9} {'numpy s':>8} {'time ratio':>10} {'stream MiB':>10} {'numpy MiB':>10} "
          f"{'max err / range':>15}")
    for size in args.sizes:
        n = max(1, round(size / base.size))

        def stream():
            return Percentile().fit((c, None) for c in chunks(base, n, 0))

        def exact():
            data = np.concatenate([c.reshape(len(c), -1) for c in chunks(base, n, 0)], axis=1)
            return np.percentile(data, [1, 99], axis=1), data.min(1), data.max(1)

        norm, t_s, m_s = measure(stream)
        (p, lo, hi), t_n, m_n = measure(exact)
        err = max(np.max(np.abs(np.array(norm.p_low) - p[0]) / (hi - lo)),
                  np.max(np.abs(np.array(norm.p_high) - p[1]) / (hi - lo)))
        print(f"{n * base.size:>12.3g} {t_s:>9.2f} {t_n:>8.2f} {t_s / t_n:>10.2f} {m_s / 2**20:>10.1f} "
              f"{m_n / 2**20:>10.1f} {100 * err:>14.5f}%")


if __name__ == "__main__":
    main()
