"""Scenarios: which data trains, validates and tests a model, with which bands, judged in which label space.

A scenario is one TOML file under ``scenarios/`` (or any path given to ``--scenario``)::

    name = "samples_cross"
    version = 1
    description = "..."
    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]

    [recipe]                      # defaults that suit this data; command-line flags override them
    patch_size = 128

    [train]
    dataset = "ukis_csmask_s2"    # a registered dataset, or the path of a dataset TOML
    window = { rows = [0, 512], cols = [0, 384] }   # optional: a pixel window of every scene
    scenes = ["..."]              # optional: scene ids to keep
    months = [7]                  # optional: keep scenes acquired in these months

    [val]  ...
    [test] ...

    [evaluation]                  # optional label space {group: [classes]}; default: the finest the
    cloud = ["cloud"]             # test reference supports (see bench.labels)
    not_cloud = ["not_cloud"]

The reference type (human or algorithmic) is the test dataset's, and leaderboards show it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import check_keys, read_toml, require
from bench.datasets import S2_BANDS, Dataset, load_dataset
from bench.errors import ConfigError, DataError, did_you_mean
from bench.labels import EvalSpace
from bench.registry import Registry, get_registry, register

SPLITS = ("train", "val", "test")
SCENARIO_KEYS = {"name", "version", "description", "type", "bands", "recipe", "evaluation", "shift", *SPLITS}
SOURCE_KEYS = {"dataset", "window", "scenes", "months", "where"}
#: recipe keys a scenario may preset (the study's values are the command-line defaults).
RECIPE_KEYS = {"patch_size", "batch_size", "epochs", "max_steps", "samples_per_epoch", "lr", "patience"}


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
        return None if self.window is None else (slice(*self.window[0]), slice(*self.window[1]))

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "window": self.window, "scenes": self.scenes, "months": self.months,
                "where": {k: list(v) for k, v in self.where}}

    def select(self, ds: Dataset) -> list[str]:
        """Scene ids of ``ds`` that this source keeps; an empty selection raises."""
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
            raise DataError(f"empty split: no scene of dataset {ds.name!r} matches {self.to_dict()}")
        return ids


def _month(meta: Mapping[str, Any]) -> int | None:
    acquired = meta.get("acquired")
    return int(acquired[5:7]) if acquired else None


@dataclass(frozen=True)
class Scenario:
    name: str
    version: int
    description: str
    bands: tuple[str, ...]
    sources: Mapping[str, Source]
    recipe: Mapping[str, Any] = field(default_factory=dict)
    evaluation: EvalSpace | None = None
    origin: str = ""
    shift: Mapping[str, Any] | None = None  # {"type": shift name, "severities": [0, ..., 5]}

    def dataset(self, split: str, registry: Registry | None = None) -> Dataset:
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
        return {"name": self.name, "version": self.version, "bands": list(self.bands),
                "sources": {k: v.to_dict() for k, v in self.sources.items()}, "recipe": dict(self.recipe),
                "evaluation": self.evaluation.to_dict() if self.evaluation else None, "origin": self.origin,
                "shift": dict(self.shift) if self.shift else None}


def parse_scenario(doc: Mapping[str, Any], where: str) -> Scenario:
    """Validate a scenario document; every problem names the file and the key."""
    check_keys(doc, SCENARIO_KEYS, where)
    bands = tuple(require(doc, "bands", where))
    for b in bands:
        if b not in S2_BANDS:
            raise ConfigError(f"{where}: unknown Sentinel-2 band {b!r}{did_you_mean(b, S2_BANDS)}")
    if "version" not in doc:
        raise ConfigError(f"{where}: missing required key 'version' (bump it when the scenario changes)")
    sources = {s: Source.parse(require(doc, s, where), f"{where} [{s}]") for s in SPLITS}
    recipe = doc.get("recipe", {})
    check_keys(recipe, RECIPE_KEYS, f"{where} [recipe]")
    evaluation = EvalSpace.parse(doc["evaluation"], f"{where} [evaluation]") if "evaluation" in doc else None
    shift = doc.get("shift")
    if shift is not None:
        check_keys(shift, {"type", "severities"}, f"{where} [shift]")
        require(shift, "type", f"{where} [shift]")
        severities = [int(v) for v in shift.get("severities", range(6))]
        if not severities or any(not 0 <= v <= 5 for v in severities):
            raise ConfigError(f"{where} [shift]: severities must be integers from 0 to 5, got {severities}")
        shift = {"type": shift["type"], "severities": severities}
    return Scenario(doc.get("name", Path(where).stem), int(doc["version"]), doc.get("description", ""),
                    bands, sources, dict(recipe), evaluation, where, shift)


@register("scenario", "scenario", check=lambda doc, where: parse_scenario(doc, where) and None)
def scenario(**doc: Any) -> Scenario:
    """A scenario file: train / val / test sources, bands and evaluation label space."""
    origin = doc.pop("_origin", "")
    return parse_scenario(doc, origin)


def load_scenario(ref: str, registry: Registry | None = None) -> Scenario:
    """A scenario by registered name (``samples_cross``) or by path (``./my_scenario.toml``)."""
    if ref.endswith(".toml") or "/" in ref:
        path = Path(ref)
        doc = read_toml(path)
        return parse_scenario({"name": path.stem, **doc}, str(path))
    entry = (registry or get_registry()).get("scenario", ref)
    return entry.builder.fn(**entry.settings, _origin=entry.origin)
