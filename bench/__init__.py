"""cloudbench: does this Sentinel-2 cloud mask, with this input normalization, still work on data it
was not trained on? A registry of models, normalizers, adapters, datasets and scenarios, and a runner
that trains, evaluates and writes leaderboards."""

__version__ = "0.1.0"

from bench.core.registry import get_registry, register  # noqa: E402

__all__ = ["__version__", "get_registry", "register"]
