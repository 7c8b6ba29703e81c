"""Datasets: where labelled Sentinel-2 scenes come from, read into reflectance and label codes.

A dataset type is one ``@register("dataset", ...)`` factory; a dataset is one TOML file (the embedded
samples ship as ``bench/samples/*/dataset.toml``; a user's own is a path). Every type returns a
:class:`Dataset`, whose :meth:`Dataset.read` gives a :class:`SceneData`:

* ``image``: (C, H, W) float32 top-of-atmosphere reflectance for the requested bands, NaN where nodata;
* ``codes``: (H, W) int32 raw label codes of the source (mapped to classes by its :class:`LabelMap`);
* ``valid``: (H, W) bool, False where the image or the label is nodata.

Bad data is refused with the file and the reason: a missing band, a label code not in the mapping,
digital numbers declared as reflectance or the reverse, image and mask of different shape or CRS, a
truncated file. NaN or inf pixels become nodata with a warning that counts them (``strict``: refused).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.config import check_keys, require
from bench.core.errors import ConfigError, DataError, did_you_mean
from bench.core.labels import LabelMap
from bench.core.registry import Registry, get_registry

#: Sentinel-2 MSI band names, in the order of the L1C product (B8A after B08).
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
REFERENCE_TYPES = ("human", "algorithmic")
#: reflectance above this in more than 1 % of valid pixels means the data are digital numbers.
REFLECTANCE_MAX = 5.0


def check_bands(bands: list[str], where: str) -> None:
    """Refuse a band name that Sentinel-2 does not have, suggesting the closest."""
    for b in bands:
        if b not in S2_BANDS:
            raise ConfigError(f"{where}: unknown Sentinel-2 band {b!r}{did_you_mean(b, S2_BANDS)}")


@dataclass
class SceneData:
    """One scene (or a window of it), ready for normalization and cropping."""

    id: str
    image: np.ndarray
    codes: np.ndarray
    valid: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scale:
    """How stored values become reflectance: ``(value + offset) * factor``.

    ``kind = "reflectance"`` stores reflectance (factor 1, offset 0); ``"digital_numbers"`` stores L1C DN,
    usually factor 1e-4, and offset -1000 for processing baseline 04.00 (scenes from 25 January 2022 on).
    """

    kind: str = "reflectance"
    factor: float = 1.0
    offset: float = 0.0
    nodata: float | None = None  # stored value that marks nodata (in every band)

    @classmethod
    def parse(cls, table: Mapping[str, Any], where: str) -> "Scale":
        check_keys(table, {"kind", "factor", "offset", "nodata"}, where)
        kind = table.get("kind", "reflectance")
        if kind not in ("reflectance", "digital_numbers"):
            raise ConfigError(f"{where}: kind must be 'reflectance' or 'digital_numbers', got {kind!r}")
        default_factor = 1e-4 if kind == "digital_numbers" else 1.0
        return cls(kind, float(table.get("factor", default_factor)), float(table.get("offset", 0.0)),
                   table.get("nodata"))

    def apply(self, raw: np.ndarray, where: str) -> np.ndarray:
        """Reflectance from stored values, checking that they are in the declared units."""
        x = raw.astype(np.float32)
        finite = x[np.isfinite(x)]
        if self.nodata is not None:
            finite = finite[finite != self.nodata]
        if finite.size:
            p99 = float(np.percentile(finite, 99))
            if self.kind == "reflectance" and p99 > REFLECTANCE_MAX:
                raise DataError(f"{where}: values up to {p99:.0f} (99th percentile) look like digital "
                                "numbers, but the dataset declares reflectance; set "
                                '[scale] kind = "digital_numbers", factor = 0.0001')
            if self.kind == "digital_numbers" and p99 <= REFLECTANCE_MAX:
                raise DataError(f"{where}: values up to {p99:.3f} (99th percentile) look like reflectance, "
                                'but the dataset declares digital numbers; set [scale] kind = "reflectance"')
        if self.kind == "digital_numbers":
            x = (x + self.offset) * self.factor
        return x


class Dataset:
    """Scenes of one source with their band names, scale, label mapping and reference type."""

    def __init__(self, *, name: str, bands: list[str], reference: str, labels: dict[str, Any], version: int = 1,
                 description: str = "", license: str = "", scale: dict[str, Any] | None = None,
                 reference_by: str = "", origin: str = "dataset") -> None:
        """The settings every dataset TOML has; ``origin`` is the file it came from (errors name it).
        ``reference_by``: the algorithm that made an algorithmic reference (e.g. ``s2cloudless``): a model of
        that algorithm is scored against itself there."""
        self.origin, self.name, self.version, self.reference_by = origin, name, version, reference_by
        self.description, self.license = description, license
        if reference not in REFERENCE_TYPES:
            raise ConfigError(f"{origin}: reference must be one of {REFERENCE_TYPES}, got {reference!r}")
        check_bands(bands, origin)
        check_keys(labels, {"codes"}, f"{origin} [labels]")
        self.bands, self.reference = list(bands), reference
        self.labels = LabelMap.parse(require(labels, "codes", f"{origin} [labels]"), f"{origin} [labels.codes]")
        self.scale = Scale.parse(scale or {}, f"{origin} [scale]")

    def scene_ids(self) -> list[str]:
        """Ids of every scene (raises a DataError saying how to get the data when it is not found)."""
        raise NotImplementedError

    def available(self) -> str:
        """Where the data is found (raises a DataError saying how to get it when it is not)."""
        self.scene_ids()
        return str(data_root())

    def scene_meta(self, scene_id: str) -> dict[str, Any]:
        """Metadata that scenarios filter on: ``acquired`` (ISO time), and e.g. ``split``, ``label_type``."""
        return {}

    def scene_shape(self, scene_id: str) -> tuple[int, int]:
        """(height, width) of a scene, without reading its pixels."""
        raise NotImplementedError

    def files(self, scene_id: str) -> list[Path]:
        """Files read for a scene (their sha256 goes into results)."""
        return []

    def read(self, scene_id: str, bands: list[str], window: tuple[slice, slice] | None = None,
             strict: bool = False) -> SceneData:
        """One scene in ``bands`` (in that order), optionally a pixel window of it, as reflectance with
        its label codes and valid mask (:meth:`finish` applies the common checks)."""
        raise NotImplementedError

    def band_indices(self, bands: list[str]) -> list[int]:
        """Positions of ``bands`` in this dataset's band list; a missing band raises."""
        out = []
        for b in bands:
            if b not in self.bands:
                raise DataError(f"dataset {self.name!r} has no band {b!r} (it has {', '.join(self.bands)})"
                                f"{did_you_mean(b, self.bands) if b not in S2_BANDS else ''}")
            out.append(self.bands.index(b))
        return out

    def finish(self, scene_id: str, image: np.ndarray, codes: np.ndarray, where: str, strict: bool,
               meta: dict[str, Any], codes_where: str | None = None) -> SceneData:
        """Common checks: units, NaN/inf as nodata, label codes known (an unknown code names ``codes_where``,
        the file that holds the labels, default ``where``), valid mask."""
        valid = np.ones(codes.shape, dtype=bool)
        if self.scale.nodata is not None:
            valid &= ~np.all(image == self.scale.nodata, axis=0)
        refl = self.scale.apply(image, where)
        bad = ~np.isfinite(refl)
        n_bad = int(bad.any(axis=0)[valid].sum())
        if n_bad:
            if strict:
                raise DataError(f"{where}: {n_bad} pixels have NaN or inf values (refused with --strict)")
            warnings.warn(f"{where}: {n_bad} pixels have NaN or inf values; treated as nodata", stacklevel=2)
        valid &= ~bad.any(axis=0)
        self.labels.check(codes[valid], codes_where or where)
        nodata_codes = [c for c, s in self.labels.codes.items() if not s]
        valid &= ~np.isin(codes, nodata_codes)
        refl[:, ~valid] = np.nan
        return SceneData(scene_id, refl, codes.astype(np.int32), valid, meta)


def missing_data(name: str, where: Path | str | None, download: str) -> DataError:
    """The error for data that is not on disk: where it was looked for and how to get it."""
    root = f"at {where}" if where else "(no data root: pass --data-root or set CLOUDBENCH_DATA)"
    return DataError(f"dataset {name!r} not found {root}; run `bench data download {download}` on a machine "
                     "with internet, or pass --data-root pointing to a folder that holds it")


def open_raster(path: Path | str):
    """``rasterio.open`` with a DataError naming the file when it is missing, truncated or not a raster."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable GeoTIFF ({err})") from None


def data_root() -> Path | None:
    """Where downloaded datasets live: ``--data-root`` (the runner sets ``CLOUDBENCH_DATA``) or the env var."""
    root = os.environ.get("CLOUDBENCH_DATA")
    return Path(root).expanduser() if root else None




def load_dataset(ref: str, registry: Registry | None = None) -> Dataset:
    """A dataset by registered name (``ukis_csmask_s2``) or by the path of its TOML file."""
    entry = (registry or get_registry()).find("dataset", ref, default_type="geotiff")
    return entry.build(origin=entry.origin)
