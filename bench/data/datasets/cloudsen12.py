"""CloudSEN12+ (the study's training data), ``type = "cloudsen12"``: the published TACO files ``cloudsen12-l1c.*.part.taco`` through ``tacoreader.v1``
  (tacoreader 2.x reads the published v1 format there). Each row is one L1C patch, 509 x 509 padded to
  512 x 512 or 2000 x 2000 padded to 2048 x 2048 (``real_proj_shape`` says which; the padding is
  nodata), with 13 bands B01..B12 (B8A after B08) in uint16 digital numbers (reflectance = DN / 10,000)
  and a label GeoTIFF with codes 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow, 99 nodata. Row
  metadata used: ``tortilla:data_split`` (train / validation / test), ``label_type`` (high / scribble /
  nolabel; a scribble label is sparse, its unlabelled pixels are nodata), ``real_proj_shape``,
  ``stac:time_start``, ``roi_id``. Only the patch sizes in ``patch_sizes`` are kept (default: the 509 px
  patches, as the study used).

Files are looked up under the data root (``--data-root`` or ``CLOUDBENCH_DATA``), or read remotely
(``remote``) where there is internet. Without either, one message says how to get them.
"""

from __future__ import annotations

import glob
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.datasets.base import Dataset, SceneData, data_root, missing_data, open_raster
from bench.core.errors import DataError
from bench.core.registry import register

#: columns a CloudSEN12+ TACO file must have; without them the data root holds other files.
REQUIRED_COLUMNS = ("tortilla:id", "tortilla:data_split", "label_type", "stac:time_start")


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


@register("dataset", "cloudsen12", description="CloudSEN12+ L1C patches from the published TACO files, through tacoreader.")
class CloudSEN12(Dataset):
    """CloudSEN12+ patches: ``files`` (a glob under the data root) read with ``tacoreader.v1``; scene
    metadata ``split``, ``label_type``, ``acquired`` and ``roi_id`` come from the TACO table."""

    def __init__(self, *, files: str, remote: str | None = None, download: str = "cloudsen12",
                 patch_sizes: list[int] | None = None, **common: Any) -> None:
        """``remote``: what tacoreader reads when no data root is set; ``download``: the dataset to fetch;
        ``patch_sizes``: the ``real_proj_shape`` values kept (default [509])."""
        super().__init__(**common)
        self.files_glob, self.remote, self.download_name = files, remote, download
        self.patch_sizes = list(patch_sizes or [509])
        self._table = None

    def paths(self) -> list[Path]:
        """The TACO files under the data root that match ``files``."""
        root = data_root()
        return sorted(Path(p) for p in glob.glob(str(root / self.files_glob))) if root else []

    def available(self) -> str:
        """Where the TACO files are on disk; a remote read is not looked at (it would go to the network)."""
        root = data_root()
        if not self.paths():
            raise missing_data(self.name, root / self.files_glob if root else None, self.download_name)
        self.scene_ids()
        return str(root)

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
                check_no_part_skipped(table, paths)
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
            if "real_proj_shape" in table.columns:  # 2000 px patches too, unless asked for
                table = table[table["real_proj_shape"].astype(int).isin(self.patch_sizes)]
            table = table.reset_index(drop=True)
            self._rows = {str(i): k for k, i in enumerate(table["tortilla:id"])}
            self._table = table
        return self._table

    def scene_ids(self) -> list[str]:
        return [str(i) for i in self.table()["tortilla:id"]]


    def scene_meta(self, scene_id: str) -> dict[str, Any]:
        row = self.table().iloc[self._rows[scene_id]]
        shape = row.get("real_proj_shape")
        return {"split": row["tortilla:data_split"], "label_type": row["label_type"],
                "acquired": iso_time(row["stac:time_start"]), "roi_id": row.get("roi_id"),
                "real_proj_shape": None if shape is None else int(shape)}

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
        return self.finish(scene_id, raw, codes, where, strict, {**self.scene_meta(scene_id), "dataset": self.name},
                           codes_where=f"{where}, its label")


def check_no_part_skipped(table, paths: list[Path]) -> None:  # noqa: ANN001 - a TortillaDataFrame
    """tacoreader reads several parts in threads and only prints an error for a part it cannot read (a
    truncated download), leaving its patches out: a run would train on fewer patches without a word.
    Every part must contribute rows; one that does not is named."""
    from tacoreader.v1.loader_utils import transform_to_gdal_vfs

    read = {str(s).rsplit(",", 1)[-1] for s in table["internal:subfile"]}
    skipped = [p for p in paths if transform_to_gdal_vfs(str(p)) not in read]
    if skipped:
        raise DataError(f"{skipped[0]}: tacoreader could not read this part and left its patches out "
                        f"({len(skipped)} of {len(paths)} parts); it is damaged or incomplete: delete it and run "
                        "`bench data download cloudsen12` again (it resumes), then `bench data verify cloudsen12`")
