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

import glob
import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import check_keys, require
from bench.errors import ConfigError, DataError, did_you_mean
from bench.labels import LabelMap
from bench.registry import register

#: Sentinel-2 MSI band names, in the order of the L1C product (B8A after B08).
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
REFERENCE_TYPES = ("human", "algorithmic")
#: reflectance above this in more than 1 % of valid pixels means the data are digital numbers.
REFLECTANCE_MAX = 5.0


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

    def __init__(self, name: str, bands: list[str], labels: LabelMap, reference: str, scale: Scale,
                 version: int = 1, description: str = "", origin: str = "") -> None:
        self.name, self.bands, self.labels, self.reference = name, list(bands), labels, reference
        self.scale, self.version, self.description, self.origin = scale, version, description, origin

    def scene_ids(self) -> list[str]:
        raise NotImplementedError

    def scene_meta(self, scene_id: str) -> dict[str, Any]:
        return {}

    def files(self, scene_id: str) -> list[Path]:
        """Files read for a scene (their sha256 goes into results)."""
        return []

    def read(self, scene_id: str, bands: list[str], window: tuple[slice, slice] | None = None,
             strict: bool = False) -> SceneData:
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
               meta: dict[str, Any]) -> SceneData:
        """Common checks: units, NaN/inf as nodata, label codes known, valid mask."""
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
        self.labels.check(codes[valid], where)
        nodata_codes = [c for c, s in self.labels.codes.items() if not s]
        valid &= ~np.isin(codes, nodata_codes)
        refl[:, ~valid] = np.nan
        return SceneData(scene_id, refl, codes.astype(np.int32), valid, meta)


def _parse_common(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    reference = require(settings, "reference", where)
    if reference not in REFERENCE_TYPES:
        raise ConfigError(f"{where}: reference must be one of {REFERENCE_TYPES}, got {reference!r}")
    bands = list(require(settings, "bands", where))
    for b in bands:
        if b not in S2_BANDS:
            raise ConfigError(f"{where}: unknown Sentinel-2 band {b!r}{did_you_mean(b, S2_BANDS)}")
    labels = require(settings, "labels", where)
    check_keys(labels, {"codes"}, f"{where} [labels]")
    return {"bands": bands, "reference": reference,
            "labels": LabelMap.parse(require(labels, "codes", f"{where} [labels]"), f"{where} [labels.codes]"),
            "scale": Scale.parse(settings.get("scale", {}), f"{where} [scale]")}


GEOTIFF_KEYS = {"name", "version", "type", "description", "license", "reference", "bands", "scale", "labels",
                "images", "masks", "root"}


def _check_geotiff(settings: Mapping[str, Any], where: str) -> None:
    check_keys(settings, GEOTIFF_KEYS, where)
    require(settings, "images", where)
    require(settings, "masks", where)
    _parse_common(settings, where)


@register("dataset", "geotiff", check=_check_geotiff)
def geotiff(**settings: Any) -> "GeoTiffDataset":
    """A folder of image GeoTIFFs with label GeoTIFFs matched by name."""
    return GeoTiffDataset(settings)


class GeoTiffDataset(Dataset):
    """Images matched to masks by file stem: ``images = "images/*.tif"``, ``masks = "masks/{stem}.tif"``.

    Paths are relative to ``root`` (default: the folder of the TOML file). Each image's bands are in
    the declared ``bands`` order; the acquisition time comes from the GeoTIFF tag ``ACQUIRED`` if set.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        where = settings.get("_origin", "dataset")
        common = _parse_common(settings, where)
        super().__init__(settings["name"], version=int(settings.get("version", 1)),
                         description=settings.get("description", ""), origin=where, **common)
        base = Path(settings.get("_origin", ".")).parent
        self.root = (base / settings.get("root", ".")).resolve()
        self.images_glob, self.masks_template = settings["images"], settings["masks"]
        self._scenes: dict[str, tuple[Path, Path]] | None = None

    def _index(self) -> dict[str, tuple[Path, Path]]:
        if self._scenes is None:
            images = sorted(Path(p) for p in glob.glob(str(self.root / self.images_glob)))
            if not images:
                raise DataError(f"dataset {self.name!r}: no image matches {self.root / self.images_glob}; "
                                "check 'root' and 'images' in its TOML")
            self._scenes = {}
            for img in images:
                mask = self.root / self.masks_template.format(stem=img.stem, name=img.name)
                if mask.resolve() == img.resolve():
                    continue
                if not mask.exists():
                    raise DataError(f"dataset {self.name!r}: image {img} has no mask at {mask}")
                self._scenes[img.stem] = (img, mask)
        return self._scenes

    def scene_ids(self) -> list[str]:
        return list(self._index())

    def files(self, scene_id: str) -> list[Path]:
        return list(self._index()[scene_id])

    def scene_meta(self, scene_id: str) -> dict[str, Any]:
        img, _ = self._index()[scene_id]
        with _open(img) as src:
            tags = src.tags()
        return {"acquired": tags.get("ACQUIRED")} if tags.get("ACQUIRED") else {}

    def read(self, scene_id: str, bands: list[str], window: tuple[slice, slice] | None = None,
             strict: bool = False) -> SceneData:
        from rasterio.windows import Window

        img_path, mask_path = self._index()[scene_id]
        idx = self.band_indices(bands)
        with _open(img_path) as img, _open(mask_path) as msk:
            if img.count != len(self.bands):
                raise DataError(f"{img_path}: has {img.count} bands, dataset {self.name!r} declares "
                                f"{len(self.bands)} ({', '.join(self.bands)})")
            if (img.height, img.width) != (msk.height, msk.width):
                raise DataError(f"{img_path} is {img.height}x{img.width} but its mask {mask_path} is "
                                f"{msk.height}x{msk.width}")
            if img.crs != msk.crs:
                raise DataError(f"{img_path} has CRS {img.crs} but its mask {mask_path} has {msk.crs}")
            win = None
            if window is not None:
                rows, cols = window
                win = Window.from_slices(rows, cols, height=img.height, width=img.width, boundless=False)
            try:
                raw = img.read([i + 1 for i in idx], window=win)
                codes = msk.read(1, window=win)
            except Exception as err:  # rasterio raises its own errors for truncated or corrupt files
                raise DataError(f"{img_path}: cannot read ({err}); the file is truncated or corrupt") from None
            meta = {"acquired": img.tags().get("ACQUIRED"), "crs": str(img.crs) if img.crs else None,
                    "dataset": self.name}
        return self.finish(scene_id, raw, codes, str(img_path), strict, meta)


def _open(path: Path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable GeoTIFF ({err})") from None


def sha256(path: str | Path, _cache: dict[tuple[str, int, float], str] = {}) -> str:  # noqa: B006
    """sha256 of a file, cached per (path, size, mtime) for the process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime)
    if key not in _cache:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]


def load_dataset(ref: str, registry: Any = None) -> Dataset:
    """A dataset by registered name (``ukis_csmask_s2``) or by the path of its TOML file."""
    from bench.config import read_toml
    from bench.registry import get_registry

    reg = registry or get_registry()
    if ref.endswith(".toml") or "/" in ref:
        path = Path(ref)
        doc = read_toml(path)
        builder = reg.builder("dataset", doc.get("type", "geotiff"))
        builder.validate(doc, str(path))
        settings, origin = {"name": path.stem, **doc}, str(path)
    else:
        entry = reg.get("dataset", ref)
        settings, origin, builder = dict(entry.settings), entry.origin, entry.builder
    return builder.fn(**settings, _origin=origin)
