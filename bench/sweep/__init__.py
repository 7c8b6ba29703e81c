"""Sweeps: :mod:`~bench.sweep.grid` (what is crossed), :mod:`~bench.sweep.launchers` (where jobs run),
:mod:`~bench.sweep.worker` (one job) and :mod:`~bench.sweep.driver` (the loop that starts and watches
them)."""
