"""Copernicus-Bench Cloud-S2 (a CloudSEN12+ subset: 1699 / 567 / 551 high-quality patches) in torchgeo's
``CopernicusBenchCloudS2`` file layout, ``type = "copernicus_cloud_s2"``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core.registry import register
from bench.data.datasets.base import Dataset, SceneData, data_root, missing_data, open_raster


@register("dataset", "copernicus_cloud_s2", description="Copernicus-Bench Cloud-S2 (a CloudSEN12+ subset) in torchgeo's CopernicusBenchCloudS2 layout.")
class CopernicusCloudS2(Dataset):
    """``<data root>/<folder>/cloud_s2/{train,val,test}.csv``, ``s2_toa/<id>.tif``, ``cloud/<id>.tif``.

    The split files and band names are torchgeo's (``CopernicusBenchCloudS2``); scene metadata
    ``split`` is ``train``, ``val`` or ``test`` and ``acquired`` comes from the file name.
    """

    def __init__(self, *, folder: str = "copernicus_bench", **common: Any) -> None:
        """``folder``: under the data root, holding ``cloud_s2/``."""
        super().__init__(**common)
        self.folder = folder
        self._index: dict[str, str] | None = None

    def _scenes(self) -> dict[str, str]:
        if self._index is None:
            root = data_root()
            if root is None:  # before torchgeo is imported (seconds): `bench data info` stays fast
                raise missing_data(self.name, None, "copernicus_cloud_s2")
            from torchgeo.datasets import CopernicusBenchCloudS2, DatasetNotFoundError

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
        return self.finish(scene_id, raw, codes, str(image), strict, {**self.scene_meta(scene_id), "dataset": self.name},
                           codes_where=str(label))
