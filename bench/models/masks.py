"""Masks made by other tools, as a model (``@register("model", "masks")``): one mask file per scene, its codes
mapped to the contract's outputs by a declared code table; no weights, and the image is not read.

A :class:`CodeTable` says how to read a mask file: which band, optionally which bits of each value make the
code (QA60's opaque and cirrus flags: ``bits = [10, 11]``, bit i of the list is bit i of the code), and each
code's project class, group (``cloud``, ``not_cloud``) or ``nodata``. Pixels that the file itself marks
invalid (its nodata value or mask band, as GDAL reads them) are nodata whatever their code. ``bench score``
reads files through the same table.

The model binds to each test scene (:meth:`PrecomputedMasks.bind`): the file ``root / template`` with
``{scene}`` (the scene id) and ``{stem}`` (the image's file stem; the scene id where a dataset has none) filled
in. A scene without a file, a code outside the table and a file on another grid than the scene (shape, CRS,
transform) are refused with the file and the reason. Nodata pixels come out as :data:`NODATA_CODE`, a code no
contract output has, which evaluation reads as no prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import ConfigError, DataError
from bench.core.labels import CLASSES, LabelMap
from bench.core.registry import register
from bench.models.base import Built, Contract

#: output code of a nodata pixel (no contract output; evaluation reads it as no class)
NODATA_CODE = 255
#: the keys of a code table (a ``masks`` model's settings of the same names, a table file of ``bench score``)
TABLE_KEYS = ("codes", "bits", "band")
TEMPLATE_FIELDS = ("scene", "stem")
GRID_TOLERANCE = 0.01  # of a pixel: transforms closer than this are the same grid


@dataclass(frozen=True)
class CodeTable:
    """How to read a mask file: its ``band`` (1-based), the ``bits`` of each value that make the code (none:
    the value is the code) and each code's classes (``labels``; an empty set is nodata)."""

    labels: LabelMap
    bits: tuple[int, ...] = ()
    band: int = 1

    @classmethod
    def parse(cls, codes: Mapping[str, str | Sequence[str]], bits: Sequence[int] | None = None, band: int = 1,
              where: str = "code table") -> "CodeTable":
        """From ``{"3": "cloud_shadow", "8": "cloud", "0": "nodata"}`` (TOML keys are strings), checked."""
        if not codes:
            raise ConfigError(f"{where}: the code table is empty; give each code of the files a class")
        labels = LabelMap.parse(codes, where)
        bits = tuple(bits or ())
        if len(set(bits)) != len(bits) or any(not 0 <= b < 63 for b in bits):
            raise ConfigError(f"{where}: bits must be distinct bit positions 0-62, got {list(bits)}")
        too_big = sorted(c for c in labels.codes if c < 0 or (bits and c >= 1 << len(bits)))
        if too_big:
            raise ConfigError(f"{where}: codes {too_big} cannot occur: a code is "
                              + (f"{len(bits)} bit(s) ({list(bits)}), 0-{(1 << len(bits)) - 1}" if bits else "at least 0"))
        if band < 1:
            raise ConfigError(f"{where}: band is 1-based, got {band}")
        return cls(labels, bits, band)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], where: str) -> "CodeTable":
        """From a table with the keys of :data:`TABLE_KEYS` (a ``masks`` preset's settings, a table file)."""
        if "codes" not in settings:
            raise ConfigError(f"{where}: missing required key 'codes' (code -> class, alias or nodata)")
        return cls.parse(settings["codes"], settings.get("bits"), int(settings.get("band", 1)), where)

    def codes_of(self, values: np.ndarray) -> np.ndarray:
        """int64 codes of a file's integer values: the values, or the table's bits of them."""
        values = values.astype(np.int64)
        if not self.bits:
            return values
        return sum(((values >> b) & 1) << i for i, b in enumerate(self.bits))

    def decode(self, values: np.ndarray, file_valid: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        """(codes, valid) of a file's values where the file marks ``file_valid``: codes (0 where the file
        says nodata) and where they stand for classes; a code outside the table, or a value that is not an
        integer, is refused naming the codes, their pixel counts and ``where``."""
        file_valid = file_valid & ~np.isnan(values) if values.dtype.kind == "f" else file_valid
        if values.dtype.kind == "f" and np.any(values[file_valid] != np.floor(values[file_valid])):
            raise DataError(f"{where}: mask values must be integer codes; found fractions")
        codes = np.where(file_valid, self.codes_of(np.where(file_valid, values, 0)), 0)
        known = np.isin(codes, list(self.labels.codes))
        if not known[file_valid].all():
            found, counts = np.unique(codes[file_valid & ~known], return_counts=True)
            listed = ", ".join(f"code {v} ({c} pixels)" for v, c in zip(found.tolist(), counts.tolist()))
            raise DataError(f"{where}: {listed} not in the code table (known codes: {sorted(self.labels.codes)})"
                            "; add them to the table's codes")
        nodata = [c for c, s in self.labels.codes.items() if not s]
        return codes, file_valid & ~np.isin(codes, nodata)

    def read(self, src: Any, where: str, rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(codes, valid) of an open rasterio dataset, all of it or rows ``r0:r1`` (:meth:`decode`)."""
        from rasterio.windows import Window

        if self.band > src.count:
            raise DataError(f"{where}: the code table reads band {self.band}; the file has {src.count}")
        window = Window(0, rows[0], src.width, rows[1] - rows[0]) if rows else None
        values = src.read(self.band, window=window)
        return self.decode(values, src.read_masks(self.band, window=window) > 0, where)

    def output_lut(self, contract: Contract, where: str) -> np.ndarray:
        """int64 LUT: code -> the contract's output index that stands for the same classes, :data:`NODATA_CODE`
        for nodata; a code whose classes no output stands for is refused, naming it."""
        outputs = {s: i for i, s in sorted(contract.outputs.codes.items(), reverse=True)}  # first output wins
        lut = np.full(max(self.labels.codes) + 1, NODATA_CODE, dtype=np.int64)
        for code, s in sorted(self.labels.codes.items()):
            if s and s not in outputs:
                named = sorted(CLASSES[c] for c in s)
                raise ConfigError(f"{where}: code {code} = {named} is not among the contract's outputs "
                                  f"{list(contract.output_names)} ({contract.outputs.to_dict()}); add it to the "
                                  "[contract] outputs or map the code to one of them")
            lut[code] = outputs[s] if s else NODATA_CODE
        return lut


def grid_differences(a: tuple[tuple[int, int], Any, Any], b: tuple[tuple[int, int], Any, Any]) -> list[str]:
    """How two grids ``(shape, crs, transform)`` differ (empty: the same): shape, and CRS and transform where
    both are known (transforms within :data:`GRID_TOLERANCE` of a pixel are the same)."""
    (shape_a, crs_a, tr_a), (shape_b, crs_b, tr_b) = a, b
    out = []
    if tuple(shape_a) != tuple(shape_b):
        out.append(f"shape {tuple(shape_a)} vs {tuple(shape_b)}")
    if crs_a and crs_b and not same_crs(crs_a, crs_b):
        out.append(f"CRS {crs_a} vs {crs_b}")
    if tr_a is not None and tr_b is not None:
        ta, tb = np.asarray(list(tr_a)[:6], dtype=np.float64), np.asarray(list(tr_b)[:6], dtype=np.float64)
        pixel = min(abs(ta[0]), abs(ta[4])) or 1.0
        if not np.allclose(ta, tb, rtol=0, atol=GRID_TOLERANCE * pixel):
            out.append(f"transform {ta.tolist()} vs {tb.tolist()}")
    return out


def same_crs(a: Any, b: Any) -> bool:
    """Two CRSs (rasterio CRS objects or strings) are the same."""
    from rasterio.crs import CRS

    try:
        return CRS.from_user_input(a) == CRS.from_user_input(b)
    except Exception:  # noqa: BLE001 - a CRS rasterio cannot read is compared as text
        return str(a) == str(b)


@dataclass
class BoundMasks:
    """The mask file of one scene, its grid checked: :meth:`predict_rows` gives output codes of its rows."""

    path: Path
    table: CodeTable
    lut: np.ndarray

    def predict_rows(self, r0: int, r1: int) -> np.ndarray:
        """(r1 - r0, W) uint8 contract output codes of rows ``r0:r1`` (:data:`NODATA_CODE` at nodata)."""
        import rasterio

        with rasterio.open(self.path) as src:
            codes, valid = self.table.read(src, str(self.path), (r0, r1))
        return np.where(valid, self.lut[np.where(valid, codes, 0)], NODATA_CODE).astype(np.uint8)


@dataclass
class PrecomputedMasks:
    """A scene model of precomputed masks: ``bind`` finds and checks a scene's file (see the module docstring)."""

    root: Path
    template: str
    table: CodeTable
    lut: np.ndarray

    def path_of(self, scene_id: str, meta: Mapping[str, Any]) -> Path:
        """The mask file of a scene: ``root / template`` with ``{scene}`` and ``{stem}`` filled in."""
        return self.root / self.template.format(scene=scene_id, stem=meta.get("stem") or scene_id)

    def bind(self, scene_id: str, meta: Mapping[str, Any], shape: tuple[int, int]) -> BoundMasks:
        """The scene's mask file, refused if it is missing or on another grid than the scene."""
        import rasterio

        path = self.path_of(scene_id, meta)
        if not path.is_file():
            raise DataError(f"masks: scene {scene_id!r} has no mask file: looked for {path} (template "
                            f"{self.template!r} under root {self.root})")
        with rasterio.open(path) as src:
            grid = ((src.height, src.width), src.crs, src.transform)
        differ = grid_differences(grid, (shape, meta.get("crs"), meta.get("transform")))
        if differ:
            raise DataError(f"masks: {path} is not on the grid of scene {scene_id!r} "
                            f"({meta.get('image') or 'its image'}): {'; '.join(differ)} (mask vs scene)")
        return BoundMasks(path, self.table, self.lut)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Refused: precomputed masks are read by scene (``bind``), not made from pixels."""
        raise ConfigError("a masks model reads one mask file per scene; it cannot predict an image without "
                          "knowing its scene (evaluation and bench run bind it to each scene)")


def check_template(template: str, where: str) -> None:
    """A path template may use ``{scene}`` and ``{stem}`` only."""
    try:
        template.format(**{f: "x" for f in TEMPLATE_FIELDS})
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}: template {template!r} may use {{scene}} and {{stem}} only ({e})") from None


@register("model", "masks")
def masks(in_channels: int, codes: dict[str, str | list[str]], template: str, root: str | None = None,
          bits: list[int] | None = None, band: int = 1, contract: dict | None = None) -> Built:
    """Precomputed mask files (one per scene) read through a code table; ``contract`` is the entry's own
    ``[contract]`` table, whose outputs must stand for every class the table names."""
    if root is None:
        raise ConfigError("masks: no folder of mask files: pass --masks DIR (bench run / sweep) or set root "
                          "in the model's TOML table")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"masks: root {root!r} is not a folder (--masks DIR names the folder of mask files)")
    check_template(template, "masks")
    table = CodeTable.parse(codes, bits, band, "masks codes")
    lut = table.output_lut(Contract.parse(contract, "masks [contract]"), "masks codes")
    return Built(PrecomputedMasks(folder, template, table, lut), in_channels,
                 f"precomputed masks {folder / template} (no weights)")
