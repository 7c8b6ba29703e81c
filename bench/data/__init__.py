"""Data: datasets (where scenes come from), scenarios (which data trains and tests), splits (scenes read
lazily, tiling arithmetic), normalizers, controlled shifts, the sanity gate and downloads. Imports
:mod:`bench.core` only."""
