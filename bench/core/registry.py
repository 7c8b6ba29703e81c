"""One typed registry for every kind of plugin: models, normalizers, adapters, scenarios and datasets.

Two things live in it:

* a **builder** is a Python factory, marked where it is defined with ``@register(kind, name)``:
  a model family (``smp``), a normalizer class (``percentile``), a dataset type (``geotiff``);
* an **entry** is what a user names on the command line (``unet_mnv2``, ``percentile``,
  ``samples_cross``): a builder plus settings, usually one table in a TOML file under ``registry/``
  or one file under ``scenarios/``.

Plugins, the built-ins included, arrive through one entry-point group, ``cloudbench.plugins``. An
entry point names either a module (its ``@register``-marked builders are added) or a callable that
takes the :class:`Registry` (and may add builders, entries or TOML files). A plugin that fails to load
is skipped with a warning and leaves nothing behind; a duplicate name always raises.
"""

from __future__ import annotations

import fnmatch
import inspect
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from bench.core.config import check_arguments, read_toml
from bench.core.errors import ConfigError, DuplicateNameError, unknown

GROUP = "cloudbench.plugins"

#: kind -> the word used in messages and in ``bench list``.
KINDS: dict[str, str] = {
    "model": "model",
    "norm": "normalizer",
    "adapter": "adapter",
    "scenario": "scenario",
    "dataset": "dataset",
    "shift": "shift",
}
#: plural forms accepted by ``bench list``.
KIND_ALIASES = {"models": "model", "norms": "norm", "normalizers": "norm", "adapters": "adapter",
                "scenarios": "scenario", "datasets": "dataset", "shifts": "shift"}

#: keys every TOML entry may have besides its builder's parameters.
ENTRY_KEYS = {"type", "description"}
#: keys an entry of one kind may have besides those: a model's input / output contract (bench.models.base).
KIND_KEYS: dict[str, frozenset[str]] = {"model": frozenset({"contract"})}
#: parameters of each kind's builders that are given when an entry is built, never in its settings.
RUNTIME: dict[str, frozenset[str]] = {
    "model": frozenset({"in_channels", "weight_files"}),  # weight_files: a pretrained model's, located at run time
    "norm": frozenset(),
    "adapter": frozenset(),
    "scenario": frozenset({"origin"}),
    "dataset": frozenset({"origin"}),
    "shift": frozenset({"image", "severity", "bands", "seed"}),
}


@dataclass(frozen=True)
class Builder:
    """A factory of one kind, called with keyword arguments: an entry's settings plus run-time ones."""

    kind: str
    name: str
    fn: Callable[..., Any]
    description: str = ""

    def arguments(self, settings: Mapping[str, Any], where: str) -> dict[str, Any]:
        """``settings`` checked against the factory's signature and types (unknown keys get "did you
        mean"); returns the keyword arguments to call it with."""
        return check_arguments(self.fn, settings, where, skip=RUNTIME[self.kind],
                               extra=ENTRY_KEYS | KIND_KEYS.get(self.kind, frozenset()))


@dataclass(frozen=True)
class Entry:
    """A named, configured plugin: ``build()`` calls its builder with its settings."""

    kind: str
    name: str
    builder: Builder
    settings: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    origin: str = ""

    def build(self, **runtime: Any) -> Any:
        """Call the builder with this entry's settings plus ``runtime`` arguments (e.g. ``in_channels``):
        the one way a registered builder is called."""
        return self.builder.fn(**self.builder.arguments(self.settings, self.origin or self.name), **runtime)

    def with_settings(self, overrides: Mapping[str, Any], where: str = "--set") -> "Entry":
        """This entry with some settings replaced (``bench run --set threshold=0.3``), checked against the
        builder's signature and types; the same entry when there are none."""
        if not overrides:
            return self
        runtime = RUNTIME[self.kind] & set(overrides)
        if runtime or "contract" in overrides:
            raise ConfigError(f"{where}: {', '.join(sorted(runtime or {'contract'}))} is not a setting of "
                              f"{self.name!r} that a run may change")
        changed = replace(self, settings={**self.settings, **overrides})
        self.builder.arguments(changed.settings, f"{where} for {self.kind} {self.name!r}")
        return changed

    def summary(self) -> dict[str, Any]:
        """What results record about this entry."""
        return {"name": self.name, "type": self.builder.name, "settings": dict(self.settings),
                "origin": self.origin}


def register(kind: str, name: str, *, description: str | None = None, entry: bool = False) -> Callable:
    """Mark a factory as a builder of ``kind``; ``entry=True`` also makes it an entry of the same name.

    Marking does not register anything by itself: the registry picks marked builders up from the
    module that an entry point (the built-ins' or a third party's) names.
    """
    if kind not in KINDS:
        raise unknown("plugin kind", kind, KINDS)

    def mark(fn: Callable) -> Callable:
        doc = description if description is not None else (inspect.getdoc(fn) or "").split("\n")[0]
        marks = list(getattr(fn, "__bench_builders__", ()))
        marks.append({"kind": kind, "name": name, "description": doc, "entry": entry})
        fn.__bench_builders__ = marks
        return fn

    return mark


class Registry:
    """Builders and entries of every kind, with "did you mean" on unknown names."""

    def __init__(self) -> None:
        self._builders: dict[str, dict[str, Builder]] = {k: {} for k in KINDS}
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}

    # -- adding ---------------------------------------------------------------------------------
    def add_builder(self, kind: str, name: str, fn: Callable, description: str = "") -> Builder:
        """Add a factory of ``kind`` under ``name``; a second one of the same name raises."""
        self._check_kind(kind)
        if name in self._builders[kind]:
            old = self._builders[kind][name]
            raise DuplicateNameError(f"{KINDS[kind]} type {name!r} is registered twice: by "
                                     f"{_where(old.fn)} and by {_where(fn)}")
        b = Builder(kind, name, fn, description)
        self._builders[kind][name] = b
        return b

    def add(self, kind: str, name: str, *, type: str, settings: Mapping[str, Any] | None = None,
            description: str = "", origin: str = "") -> Entry:
        """Add an entry; its settings are validated against its builder (unknown keys raise)."""
        self._check_kind(kind)
        settings = dict(settings or {})
        builder = self.builder(kind, type)
        builder.arguments(settings, origin or f"{KINDS[kind]} {name!r}")
        return self._insert(Entry(kind, name, builder, settings, description or builder.description, origin))

    def _insert(self, e: Entry) -> Entry:
        if e.name in self._entries[e.kind]:
            raise DuplicateNameError(f"{KINDS[e.kind]} {e.name!r} is registered twice: in "
                                     f"{self._entries[e.kind][e.name].origin or '?'} and in "
                                     f"{e.origin or f'{KINDS[e.kind]} {e.name!r}'}")
        self._entries[e.kind][e.name] = e
        return e

    def add_module(self, module: types.ModuleType) -> None:
        """Add every ``@register``-marked builder defined in ``module``."""
        for obj in vars(module).values():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            marks = vars(obj).get("__bench_builders__", ()) if isinstance(obj, type) else getattr(obj, "__bench_builders__", ())
            for mark in marks:  # a subclass does not inherit its parent's registration
                self.add_builder(mark["kind"], mark["name"], obj, mark["description"])
                if mark["entry"]:
                    self.add(mark["kind"], mark["name"], type=mark["name"],
                             description=mark["description"], origin=module.__name__)

    def add_toml_tables(self, kind: str, path: str | Path) -> None:
        """Add one entry per top-level table of a TOML file (``registry/models.toml``)."""
        doc = read_toml(path)
        for name, table in doc.items():
            where = f"{path} [{name}]"
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: {name!r} must be a table ([{name}]), not a value")
            if "type" not in table:
                raise ConfigError(f"{where}: missing required key 'type' (the {KINDS[kind]} type)")
            self.add(kind, name, type=table["type"], settings=table,
                     description=table.get("description", ""), origin=where)

    def entry_from_file(self, kind: str, path: str | Path, default_type: str) -> Entry:
        """An entry from a whole TOML file (a scenario, a dataset), checked but not added; its name is the
        file's ``name``, else its stem."""
        path = Path(path)
        doc = read_toml(path)
        name = doc.get("name", path.stem)
        builder = self.builder(kind, doc.get("type", default_type))
        settings = {**doc, "name": name}
        builder.arguments(settings, str(path))
        return Entry(kind, name, builder, settings, doc.get("description", "") or builder.description, str(path))

    def find(self, kind: str, ref: str, default_type: str) -> Entry:
        """An entry by registered name (``samples_cross``), or from the TOML file ``ref`` names
        (``./my_scenario.toml``: see :func:`is_path`)."""
        return self.entry_from_file(kind, ref, default_type) if is_path(ref) else self.get(kind, ref)

    def add_toml_file(self, kind: str, path: str | Path, default_type: str) -> Entry:
        """Add one entry from a whole TOML file (see :meth:`entry_from_file`)."""
        return self._insert(self.entry_from_file(kind, path, default_type))  # checked there already

    # -- looking up -----------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Entry:
        """The entry ``name`` of ``kind``; an unknown name suggests the closest."""
        self._check_kind(kind)
        try:
            return self._entries[kind][name]
        except KeyError:
            raise unknown(KINDS[kind], name, self._entries[kind]) from None

    def builder(self, kind: str, name: str) -> Builder:
        """The builder ``name`` of ``kind``; an unknown name suggests the closest."""
        self._check_kind(kind)
        try:
            return self._builders[kind][name]
        except KeyError:
            raise unknown(f"{KINDS[kind]} type", name, self._builders[kind]) from None

    def names(self, kind: str, pattern: str = "*") -> list[str]:
        """Entry names of ``kind`` matching a shell-style wildcard, sorted."""
        self._check_kind(kind)
        return sorted(n for n in self._entries[kind] if fnmatch.fnmatchcase(n, pattern))

    def entries(self, kind: str, pattern: str = "*") -> list[Entry]:
        """Entries of ``kind`` matching a shell-style wildcard, sorted by name."""
        return [self._entries[kind][n] for n in self.names(kind, pattern)]

    def __iter__(self) -> Iterator[Entry]:
        for kind in KINDS:
            yield from self.entries(kind)

    # -- transactions (a failing plugin leaves nothing behind) -----------------------------------
    def snapshot(self) -> tuple[dict, dict]:
        """A copy of every builder and entry, for :meth:`restore`."""
        return ({k: dict(v) for k, v in self._builders.items()},
                {k: dict(v) for k, v in self._entries.items()})

    def restore(self, snap: tuple[dict, dict]) -> None:
        """Go back to a :meth:`snapshot` (a plugin that failed half-way leaves nothing behind)."""
        self._builders, self._entries = ({k: dict(v) for k, v in s.items()} for s in snap)

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise unknown("plugin kind", kind, KINDS)


def is_path(ref: str) -> bool:
    """A scenario or dataset named by the path of its TOML file rather than by a registered name."""
    return ref.endswith(".toml") or "/" in ref


def _where(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def load_plugins(reg: Registry) -> Registry:
    """Load every plugin of the ``cloudbench.plugins`` entry-point group into ``reg``."""
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.value != "bench.builtins:register", e.name)):
        builtin = ep.value.startswith("bench.")
        snap = reg.snapshot()
        try:
            obj = ep.load()
            if isinstance(obj, types.ModuleType):
                reg.add_module(obj)
            elif callable(obj):
                obj(reg)
            else:
                raise TypeError(f"entry point {ep.value!r} is neither a module nor a callable")
        except DuplicateNameError:
            raise
        except Exception as err:
            if builtin:
                raise
            reg.restore(snap)
            warnings.warn(f"cloudbench plugin {ep.name!r} ({ep.value}) failed to load and was "
                          f"skipped: {type(err).__name__}: {err}", stacklevel=2)
    return reg


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, with all plugins loaded (once, or again with ``reload=True``)."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = load_plugins(Registry())
    return _REGISTRY
