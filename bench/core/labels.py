"""Project classes, how a source's label codes map to them, and evaluation label spaces.

Every model predicts the four project classes ``clear, thick_cloud, thin_cloud, cloud_shadow``.
Sources label differently: a code may name one project class or a *set* of them that the reference
cannot tell apart (``cloud`` = thick or thin; ``not_cloud`` = clear or shadow), or ``nodata``.

* **Training** target of a code: its set's first class in project order (``cloud`` trains as
  ``thick_cloud``, ``not_cloud`` as ``clear``); ``nodata`` is left out of the loss.
* **Evaluation** happens in a label space of groups that partition the four classes. Predictions fold
  class -> group; reference codes fold code -> group, which needs each code's set inside one group.
  The finest such space is derived from the codes (:meth:`LabelMap.finest_space`); a scenario may
  declare a coarser one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bench.core.errors import ConfigError, DataError, did_you_mean

CLASSES: tuple[str, ...] = ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")
N_CLASSES = len(CLASSES)
IGNORE = 255  # target / group value of pixels left out of loss and metrics
#: colours of classes and groups by name (figures, the colour table of predicted masks)
COLOURS = {"clear": "#3a7d44", "not_cloud": "#3a7d44", "thick_cloud": "#f2f2f2", "cloud": "#f2f2f2",
           "thin_cloud": "#9ecae1", "cloud_shadow": "#54278f"}

#: names that stand for sets of project classes, besides the classes themselves.
ALIASES: dict[str, tuple[str, ...]] = {
    "cloud": ("thick_cloud", "thin_cloud"),
    "not_cloud": ("clear", "cloud_shadow"),
    "nodata": (),
}


def class_set(name: str, where: str) -> frozenset[int]:
    """Indices of the project classes that ``name`` (a class or an alias) stands for."""
    if name in CLASSES:
        return frozenset({CLASSES.index(name)})
    if name in ALIASES:
        return frozenset(CLASSES.index(c) for c in ALIASES[name])
    raise ConfigError(f"{where}: unknown class {name!r}{did_you_mean(name, [*CLASSES, *ALIASES])}")


def group_name(classes: frozenset[int]) -> str:
    """``cloud`` for {thick, thin}, ``not_cloud`` for {clear, shadow}, else the class names joined by +."""
    for alias, members in ALIASES.items():
        if members and classes == frozenset(CLASSES.index(c) for c in members):
            return alias
    return "+".join(CLASSES[i] for i in sorted(classes))


@dataclass(frozen=True)
class EvalSpace:
    """Groups of project classes that a reference can tell apart, e.g. ``cloud`` vs ``not_cloud``."""

    groups: tuple[tuple[str, frozenset[int]], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.groups]

    @classmethod
    def parse(cls, table: Mapping[str, Sequence[str]], where: str) -> "EvalSpace":
        """From ``{group: [class or alias, ...]}``; the groups must partition the four classes."""
        groups = []
        for name, members in table.items():
            if isinstance(members, str):
                members = [members]
            s = frozenset().union(*(class_set(m, f"{where} [{name}]") for m in members))
            groups.append((name, s))
        space = cls(tuple(groups))
        space._check_partition(where)
        return space

    def _check_partition(self, where: str) -> None:
        seen: dict[int, str] = {}
        for name, s in self.groups:
            for c in s:
                if c in seen:
                    raise ConfigError(f"{where}: class {CLASSES[c]!r} is in two groups, {seen[c]!r} and {name!r}")
                seen[c] = name
        missing = [CLASSES[c] for c in range(N_CLASSES) if c not in seen]
        if missing:
            raise ConfigError(f"{where}: classes {missing} are in no group; every class must fold somewhere")

    def class_lut(self) -> np.ndarray:
        """(4,) array: project class index -> group index."""
        lut = np.empty(N_CLASSES, dtype=np.uint8)
        for g, (_, s) in enumerate(self.groups):
            lut[list(s)] = g
        return lut

    def to_dict(self) -> dict[str, list[str]]:
        """The label space as ``{group: [classes]}``."""
        return {name: [CLASSES[c] for c in sorted(s)] for name, s in self.groups}


@dataclass(frozen=True)
class LabelMap:
    """A source's label codes -> sets of project classes (empty set: nodata)."""

    codes: Mapping[int, frozenset[int]]

    @classmethod
    def parse(cls, table: Mapping[str, str | Sequence[str]], where: str) -> "LabelMap":
        """From TOML ``{"0" = "cloud_shadow", "4" = "cloud", "99" = "nodata"}``."""
        codes: dict[int, frozenset[int]] = {}
        for key, value in table.items():
            try:
                code = int(key)
            except ValueError:
                raise ConfigError(f"{where}: label code {key!r} is not an integer") from None
            names = [value] if isinstance(value, str) else list(value)
            codes[code] = frozenset().union(*(class_set(n, f"{where} code {code}") for n in names))
        return cls(codes)

    def to_dict(self) -> dict[str, list[str]]:
        """The mapping as ``{code: [classes]}`` (empty for nodata)."""
        return {str(k): [CLASSES[c] for c in sorted(v)] or ["nodata"] for k, v in sorted(self.codes.items())}

    def check(self, codes: np.ndarray, where: str) -> None:
        """Refuse codes that the map does not know: which code, how many pixels, where."""
        values, counts = np.unique(codes, return_counts=True)
        unknown = [(int(v), int(c)) for v, c in zip(values, counts) if int(v) not in self.codes]
        if unknown:
            listed = ", ".join(f"code {v} ({c} pixels)" for v, c in unknown)
            raise DataError(f"{where}: label {listed} not in the label mapping "
                            f"(known codes: {sorted(self.codes)}); add it to the dataset's [labels.codes]")

    def _lut(self, values_for: dict[int, int]) -> np.ndarray:
        size = max(max(self.codes) + 1, 256)
        lut = np.full(size, IGNORE, dtype=np.uint8)
        for code, v in values_for.items():
            lut[code] = v
        return lut

    def train_targets(self, codes: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class index per pixel (IGNORE for nodata); codes must be checked first."""
        lut = self._lut({c: min(s) for c, s in self.codes.items() if s})
        return lut[codes.astype(np.int64)]

    def reference_groups(self, codes: np.ndarray, space: EvalSpace) -> np.ndarray:
        """(H, W) uint8 group index of ``space`` per pixel (IGNORE for nodata)."""
        self.check_space(space, "evaluation label space")
        lut_cls = space.class_lut()
        lut = self._lut({c: int(lut_cls[min(s)]) for c, s in self.codes.items() if s})
        return lut[codes.astype(np.int64)]

    def check_space(self, space: EvalSpace, where: str) -> None:
        """Each code's set of classes must lie inside one group of ``space``."""
        lut = space.class_lut()
        for code, s in self.codes.items():
            if len({int(lut[c]) for c in s}) > 1:
                raise ConfigError(f"{where}: reference code {code} stands for {sorted(CLASSES[c] for c in s)}, "
                                  f"which {space.names} splits; the reference cannot be evaluated that finely")

    def finest_space(self) -> EvalSpace:
        """The finest partition of the four classes in which every code's set lies inside one group."""
        parent = list(range(N_CLASSES))

        def root(c: int) -> int:
            while parent[c] != c:
                c = parent[c]
            return c

        for s in self.codes.values():
            first, *rest = sorted(s) or [None]
            for c in rest:
                parent[root(c)] = root(first)
        members: dict[int, set[int]] = {}
        for c in range(N_CLASSES):
            members.setdefault(root(c), set()).add(c)
        groups = sorted((frozenset(m) for m in members.values()), key=min)
        return EvalSpace(tuple((group_name(g), g) for g in groups))
