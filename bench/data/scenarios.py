"""Scenarios: which data trains, validates and tests a model, with which bands, judged in which label space.

A scenario is one TOML file under ``scenarios/`` (or any path given to ``--scenario``)::

    name = "samples_cross"
    version = 1
    description = "..."
    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]

    include = "base/samples.toml" # optional: read this file first, merge this one over it

    [recipe]                      # defaults that suit this data (bench.core.recipe); flags override them
    patch_size = 128

    [train]
    dataset = "ukis_csmask_s2"    # a registered dataset, or the path of a dataset TOML
    window = { rows = [0, 512], cols = [0, 384] }   # optional: a pixel window of every scene
    scenes = ["..."]              # optional: scene ids to keep
    months = [7]                  # optional: keep scenes acquired in these months

    [val]  ...
    [test] ...

    [evaluation]                  # optional label space {group: [classes]}; default: the finest the
    cloud = ["cloud"]             # test reference supports (see bench.core.labels)
    not_cloud = ["not_cloud"]

The reference type (human or algorithmic) is the test dataset's, and leaderboards show it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.config import check_keys, require
from bench.core.recipe import Recipe
from bench.data.datasets import Dataset, load_dataset
from bench.data.datasets.base import check_bands
from bench.core.errors import ConfigError, DataError, did_you_mean
from bench.core.labels import EvalSpace
from bench.core.metrics import BOUNDARY_PX
from bench.core.registry import Registry, get_registry, register

SPLITS = ("train", "val", "test")
SOURCE_KEYS = {"dataset", "window", "scenes", "months", "where"}


@dataclass(frozen=True)
class Source:
    """The scenes of one split: a dataset, optionally a pixel window and a scene / month filter."""

    dataset: str
    window: tuple[tuple[int, int], tuple[int, int]] | None = None
    scenes: tuple[str, ...] | None = None
    months: tuple[int, ...] | None = None
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # metadata filters: key -> accepted values

    @classmethod
    def parse(cls, table: Mapping[str, Any], where: str) -> "Source":
        """A ``[train]`` / ``[val]`` / ``[test]`` table; errors name the file and the key."""
        check_keys(table, SOURCE_KEYS, where)
        window = table.get("window")
        if window is not None:
            check_keys(window, {"rows", "cols"}, f"{where} window")
            rows, cols = (tuple(int(v) for v in require(window, k, f"{where} window")) for k in ("rows", "cols"))
            if len(rows) != 2 or len(cols) != 2 or rows[0] >= rows[1] or cols[0] >= cols[1]:
                raise ConfigError(f"{where}: window rows and cols must be [start, stop] with start < stop")
            window = (rows, cols)
        scenes = tuple(table["scenes"]) if "scenes" in table else None
        months = tuple(int(m) for m in table["months"]) if "months" in table else None
        filters = tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in table.get("where", {}).items())
        return cls(str(require(table, "dataset", where)), window, scenes, months, filters)

    def slices(self) -> tuple[slice, slice] | None:
        """The window as (rows, cols) slices, or None for whole scenes."""
        return None if self.window is None else (slice(*self.window[0]), slice(*self.window[1]))

    def to_dict(self) -> dict[str, Any]:
        """The source as results record it (and as run keys hash it)."""
        return {"dataset": self.dataset, "window": self.window, "scenes": self.scenes, "months": self.months,
                "where": {k: list(v) for k, v in self.where}}

    def select(self, ds: Dataset, where: str = "") -> list[str]:
        """Scene ids of ``ds`` that this source keeps; an empty selection raises, naming ``where`` (the
        scenario file and split) and the filters."""
        ids = ds.scene_ids()
        if self.scenes is not None:
            missing = [s for s in self.scenes if s not in ids]
            if missing:
                raise DataError(f"dataset {ds.name!r} has no scene {missing[0]!r}{did_you_mean(missing[0], ids)}")
            ids = [s for s in ids if s in self.scenes]
        if self.months is not None or self.where:
            metas = {s: ds.scene_meta(s) for s in ids}
            if self.where and ids:
                unknown = [k for k, _ in self.where if k not in metas[ids[0]]]
                if unknown:
                    raise ConfigError(f"dataset {ds.name!r} has no scene metadata {unknown[0]!r} to filter on"
                                      f"{did_you_mean(unknown[0], metas[ids[0]])}")
            ids = [s for s in ids if all(metas[s].get(k) in v for k, v in self.where)
                   and (self.months is None or _month(metas[s]) in self.months)]
        if not ids:
            raise DataError(f"{where or 'scenario'}: empty split: no scene of dataset {ds.name!r} has "
                            f"{self.describe_filters()}")
        return ids

    def describe_filters(self) -> str:
        """The scene filters as a scenario file writes them: ``months = [13]; where = {split = "x"}``."""
        parts = [f"scenes = {list(self.scenes)}" if self.scenes is not None else "",
                 f"months = {list(self.months)}" if self.months is not None else "",
                 "where = {" + ", ".join(f"{k} = {list(v) if len(v) > 1 else v[0]!r}" for k, v in self.where) + "}"
                 if self.where else ""]
        return "; ".join(p for p in parts if p) or "any scene (the dataset has none)"


def _month(meta: Mapping[str, Any]) -> int | None:
    acquired = meta.get("acquired")
    return int(acquired[5:7]) if acquired else None


@dataclass(frozen=True)
class Scenario:
    """What trains, validates and tests a model, in which bands, judged in which label space."""

    name: str
    version: int
    description: str
    bands: tuple[str, ...]
    sources: Mapping[str, Source]
    recipe: Mapping[str, Any] = field(default_factory=dict)
    evaluation: EvalSpace | None = None
    origin: str = ""
    shift: Mapping[str, Any] | None = None  # {"type": shift name, "severities": [0, ..., 5]}
    boundary_px: tuple[int, ...] = BOUNDARY_PX  # boundary tolerances of the scores (bench.core.metrics)

    def dataset(self, split: str, registry: Registry | None = None) -> Dataset:
        """The dataset of ``split`` (a relative TOML path is relative to the scenario file)."""
        return load_dataset(self._dataset_ref(split), registry)

    def _dataset_ref(self, split: str) -> str:
        ref = self.sources[split].dataset
        if ref.endswith(".toml") and not Path(ref).is_absolute() and self.origin:
            ref = str(Path(self.origin).parent / ref)  # relative to the scenario file
        return ref

    def eval_space(self, registry: Registry | None = None) -> EvalSpace:
        """The label space of the test reference: declared, or the finest its codes support."""
        labels = self.dataset("test", registry).labels
        if self.evaluation is None:
            return labels.finest_space()
        labels.check_space(self.evaluation, f"{self.origin} [evaluation]")
        return self.evaluation

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario, as results record it."""
        return {"name": self.name, "version": self.version, "bands": list(self.bands),
                "sources": {k: v.to_dict() for k, v in self.sources.items()}, "recipe": dict(self.recipe),
                "evaluation": self.evaluation.to_dict() if self.evaluation else None, "origin": self.origin,
                "shift": dict(self.shift) if self.shift else None, "boundary_px": list(self.boundary_px)}


@register("scenario", "scenario")
def scenario(*, name: str, version: int, bands: list[str], train: dict[str, Any], val: dict[str, Any],
             test: dict[str, Any], description: str = "", recipe: dict[str, Any] | None = None,
             evaluation: dict[str, list[str]] | None = None, shift: dict[str, Any] | None = None,
             boundary_px: list[int] | None = None, origin: str = "") -> Scenario:
    """A scenario file: train / val / test sources, bands, evaluation label space and the boundary
    tolerances (px) its scores are also given at."""
    where = origin or name
    check_bands(bands, where)
    sources = {s: Source.parse(t, f"{where} [{s}]") for s, t in zip(SPLITS, (train, val, test))}
    recipe = Recipe.check_values(recipe or {}, f"{where} [recipe]")
    space = EvalSpace.parse(evaluation, f"{where} [evaluation]") if evaluation is not None else None
    return Scenario(name, version, description, tuple(bands), sources, recipe, space, where,
                    parse_shift(shift, f"{where} [shift]") if shift is not None else None,
                    parse_tolerances(boundary_px, where))


def parse_tolerances(values: list[int] | None, where: str) -> tuple[int, ...]:
    """A scenario's ``boundary_px``: distinct integers >= 0, sorted (default :data:`BOUNDARY_PX`)."""
    if values is None:
        return BOUNDARY_PX
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ConfigError(f"{where}: boundary_px must be a list of integers >= 0 (pixels), got {values}")
    return tuple(sorted(set(values)))


def parse_shift(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"type": shift name, "severities": [0..5]}`` from a scenario's ``[shift]`` table."""
    check_keys(table, {"type", "severities"}, where)
    require(table, "type", where)
    severities = [int(v) for v in table.get("severities", range(6))]
    if not severities or any(not 0 <= v <= 5 for v in severities):
        raise ConfigError(f"{where}: severities must be integers from 0 to 5, got {severities}")
    return {"type": table["type"], "severities": severities}


def load_scenario(ref: str, registry: Registry | None = None) -> Scenario:
    """A scenario by registered name (``samples_cross``) or by path (``./my_scenario.toml``)."""
    entry = (registry or get_registry()).find("scenario", ref, default_type="scenario")
    return entry.build(origin=entry.origin)
