"""CloudSEN12+ (the study's training data), read two ways:

* ``cloudsen12``: the published TACO files ``cloudsen12-l1c.*.part.taco`` through ``tacoreader.v1``
  (tacoreader 2.x reads the published v1 format there). Each row is one 509 x 509 L1C patch padded to
  512 x 512 (the padding is nodata) with 13 bands B01..B12 (B8A after B08) in uint16 digital numbers
  (reflectance = DN / 10,000) and a label GeoTIFF with codes 0 clear, 1 thick cloud, 2 thin cloud,
  3 cloud shadow, 99 nodata. Row metadata used: ``tortilla:data_split`` (train / validation / test),
  ``label_type`` (high / scribble / nolabel), ``stac:time_start``, ``roi_id``.
* ``copernicus_cloud_s2``: the Copernicus-Bench Cloud-S2 subset (1699 / 567 / 551 high-quality patches)
  through torchgeo's ``CopernicusBenchCloudS2`` file layout.

Files are looked up under the data root (``--data-root`` or ``CLOUDBENCH_DATA``); CloudSEN12+ can also be
read remotely (``remote``) where there is internet. Without either, one message says how to get them.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import check_keys, require
from bench.datasets.base import Dataset, SceneData, data_root, open_raster, parse_common
from bench.errors import DataError
from bench.registry import register

COMMON_KEYS = {"name", "version", "type", "description", "license", "reference", "bands", "scale", "labels"}
#: columns a CloudSEN12+ TACO file must have; without them the data root holds other files.
REQUIRED_COLUMNS = ("tortilla:id", "tortilla:data_split", "label_type", "stac:time_start")


def missing_data(name: str, where: Path | str | None, download: str) -> DataError:
    root = f"at {where}" if where else "(no data root: pass --data-root or set CLOUDBENCH_DATA)"
    return DataError(f"dataset {name!r} not found {root}; run `bench data download {download}` on a machine "
                     "with internet, or pass --data-root pointing to a folder that holds it")


def iso_time(value: Any) -> str | None:
    """``stac:time_start`` as ISO text: it is epoch seconds in the published files, a timestamp elsewhere."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (int, np.integer, float, np.floating)):
        seconds = float(value) / (1e6 if float(value) > 1e11 else 1)  # microseconds in TACO 2
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if hasattr(value, "isoformat"):
        return value.isoformat()[:19]
    return str(value)[:19]


def _check_cloudsen12(settings: Mapping[str, Any], where: str) -> None:
    check_keys(settings, COMMON_KEYS | {"files", "remote", "download"}, where)
    require(settings, "files", where)
    parse_common(settings, where)


@register("dataset", "cloudsen12", check=_check_cloudsen12,
          description="CloudSEN12+ L1C patches from the published TACO files, through tacoreader.")
class CloudSEN12(Dataset):
    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.files_glob, self.remote = settings["files"], settings.get("remote")
        self.download_name = settings.get("download", "cloudsen12")
        self._table = None

    def paths(self) -> list[Path]:
        root = data_root()
        return sorted(Path(p) for p in glob.glob(str(root / self.files_glob))) if root else []

    def table(self):
        """The metadata of every patch (a ``TortillaDataFrame``), loaded once."""
        if self._table is None:
            import tacoreader.v1 as taco

            paths = self.paths()
            root = data_root()
            if paths:
                try:
                    table = taco.load([str(p) for p in paths]) if len(paths) > 1 else taco.load(str(paths[0]))
                except Exception as err:
                    raise DataError(f"{paths[0].parent}: cannot read {self.files_glob} as TACO files ({err}); "
                                    "the data root holds other or damaged files") from None
            elif self.remote and not (root and root.exists()):
                try:
                    table = taco.load(self.remote)
                except Exception:
                    raise missing_data(self.name, root / self.files_glob if root else None, self.download_name) from None
            else:
                raise missing_data(self.name, root / self.files_glob if root else None, self.download_name)
            missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
            if missing:
                raise DataError(f"the files matching {self.files_glob} are TACO files but not CloudSEN12+: "
                                f"no column {missing[0]!r}; the data root holds the wrong files")
            table = table.reset_index(drop=True)
            self._rows = {str(i): k for k, i in enumerate(table["tortilla:id"])}
            self._table = table
        return self._table

    def scene_ids(self) -> list[str]:
        return [str(i) for i in self.table()["tortilla:id"]]

    def scene_meta(self, scene_id: str) -> dict[str, Any]:
        row = self.table().iloc[self._rows[scene_id]]
        return {"split": row["tortilla:data_split"], "label_type": row["label_type"],
                "acquired": iso_time(row["stac:time_start"]), "roi_id": row.get("roi_id")}

    def scene_shape(self, scene_id: str) -> tuple[int, int]:
        image, _ = self._members(scene_id)
        with open_raster(image) as src:
            return src.height, src.width

    def files(self, scene_id: str) -> list[Path]:
        subfile = self.table().iloc[self._rows[scene_id]]["internal:subfile"]
        path = subfile.split(",", 1)[1]
        return [Path(path)] if Path(path).exists() else []

    def _members(self, scene_id: str) -> tuple[str, str]:
        """GDAL paths (``/vsisubfile/...``) of a patch's L1C image and label inside the TACO file."""
        sample = self.table().read(self._rows[scene_id])
        ids = list(sample["tortilla:id"])
        img = ids.index("s2l1c") if "s2l1c" in ids else 0
        lbl = ids.index("target") if "target" in ids else 1
        return sample.read(img), sample.read(lbl)

    def read(self, scene_id: str, bands: list[str], window: tuple[slice, slice] | None = None,
             strict: bool = False) -> SceneData:
        from rasterio.windows import Window

        idx = self.band_indices(bands)
        image, label = self._members(scene_id)
        where = f"{self.name} patch {scene_id}"
        with open_raster(image) as img, open_raster(label) as msk:
            if img.count != len(self.bands):
                raise DataError(f"{where}: has {img.count} bands, expected {len(self.bands)}")
            win = None if window is None else Window.from_slices(*window, height=img.height, width=img.width)
            raw = img.read([i + 1 for i in idx], window=win)
            codes = msk.read(1, window=win)
        return self.finish(scene_id, raw, codes, where, strict, {**self.scene_meta(scene_id), "dataset": self.name})


def _check_copernicus(settings: Mapping[str, Any], where: str) -> None:
    check_keys(settings, COMMON_KEYS | {"folder"}, where)
    parse_common(settings, where)


@register("dataset", "copernicus_cloud_s2", check=_check_copernicus,
          description="Copernicus-Bench Cloud-S2 (a CloudSEN12+ subset) in torchgeo's CopernicusBenchCloudS2 layout.")
class CopernicusCloudS2(Dataset):
    """``<data root>/<folder>/cloud_s2/{train,val,test}.csv``, ``s2_toa/<id>.tif``, ``cloud/<id>.tif``.

    The split files and band names are torchgeo's (``CopernicusBenchCloudS2``); scene metadata
    ``split`` is ``train``, ``val`` or ``test`` and ``acquired`` comes from the file name.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.folder = settings.get("folder", "copernicus_bench")
        self._index: dict[str, str] | None = None

    def _scenes(self) -> dict[str, str]:
        if self._index is None:
            from torchgeo.datasets import CopernicusBenchCloudS2, DatasetNotFoundError

            root = data_root()
            if root is None:
                raise missing_data(self.name, None, "copernicus_cloud_s2")
            self._index = {}
            for split in ("train", "val", "test"):
                try:
                    ds = CopernicusBenchCloudS2(root=str(root / self.folder), split=split, download=False)
                except DatasetNotFoundError:
                    raise missing_data(self.name, root / self.folder / CopernicusBenchCloudS2.directory,
                                       "copernicus_cloud_s2") from None
                self._dir = Path(ds.root) / ds.directory
                self._regex = ds.filename_regex
                self._index.update({str(f): split for f in ds.files})
        return self._index

    def scene_ids(self) -> list[str]:
        return list(self._scenes())

    def scene_meta(self, scene_id: str) -> dict[str, Any]:
        import re

        split = self._scenes()[scene_id]
        m = re.match(self._regex, scene_id)
        date = m.group("date") if m and "date" in m.groupdict() else None
        acquired = f"{date[:4]}-{date[4:6]}-{date[6:8]}T{date[9:11]}:{date[11:13]}:{date[13:15]}" if date else None
        return {"split": split, "acquired": acquired}

    def _paths(self, scene_id: str) -> tuple[Path, Path]:
        self._scenes()
        return self._dir / "s2_toa" / f"{scene_id}.tif", self._dir / "cloud" / f"{scene_id}.tif"

    def files(self, scene_id: str) -> list[Path]:
        return list(self._paths(scene_id))

    def scene_shape(self, scene_id: str) -> tuple[int, int]:
        with open_raster(self._paths(scene_id)[0]) as src:
            return src.height, src.width

    def read(self, scene_id: str, bands: list[str], window: tuple[slice, slice] | None = None,
             strict: bool = False) -> SceneData:
        from rasterio.windows import Window

        image, label = self._paths(scene_id)
        idx = self.band_indices(bands)
        with open_raster(image) as img, open_raster(label) as msk:
            win = None if window is None else Window.from_slices(*window, height=img.height, width=img.width)
            raw = img.read([i + 1 for i in idx], window=win)
            codes = msk.read(1, window=win)
        return self.finish(scene_id, raw, codes, str(image), strict, {**self.scene_meta(scene_id), "dataset": self.name})
