"""The built-in plugins, loaded through the ``cloudbench.plugins`` entry point like any third-party one."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.core.registry import Registry
from bench.data import normalizers, scenarios, shifts
from bench.data.datasets import cloudsen12, copernicus, geotiff, sentinelhub
from bench.models import adapters, hub, keras, lightgbm, masks, onnx, rules, smp

PACKAGE = Path(__file__).resolve().parent
SAMPLES = PACKAGE / "data" / "samples"
BUILDER_MODULES = (smp, lightgbm, onnx, keras, rules, hub, masks, normalizers, adapters, shifts, geotiff, cloudsen12, copernicus, sentinelhub, scenarios)


def catalogue_dir(name: str) -> Path:
    """``registry/`` or ``scenarios/``: in the checkout (editable install) or under ``<prefix>/share``."""
    for candidate in (PACKAGE.parent / name, Path(sys.prefix) / "share" / "cloudbench" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cloudbench's {name}/ folder is missing: reinstall with `pip install -e .`")


def register(reg: Registry) -> None:
    """Builders from the package's modules, then the TOML entries that use them."""
    for module in BUILDER_MODULES:
        reg.add_module(module)
    reg.add_toml_tables("model", catalogue_dir("registry") / "models.toml")
    reg.add_toml_tables("norm", catalogue_dir("registry") / "norms.toml")
    reg.add_toml_tables("adapter", catalogue_dir("registry") / "adapters.toml")
    for path in [*sorted(SAMPLES.glob("*/dataset.toml")), *sorted((catalogue_dir("registry") / "datasets").glob("*.toml"))]:
        reg.add_toml_file("dataset", path, default_type="geotiff")
    for path in sorted(catalogue_dir("scenarios").glob("*.toml")):
        reg.add_toml_file("scenario", path, default_type="scenario")
