"""Bring-your-own data: a folder of image GeoTIFFs with label GeoTIFFs matched by name (also how the
embedded samples ship)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from bench.data.datasets.base import Dataset, SceneData, open_raster
from bench.core.errors import DataError
from bench.core.registry import register

@register("dataset", "geotiff", description="A folder of image GeoTIFFs with label GeoTIFFs matched by name.")
class GeoTiffDataset(Dataset):
    """Images matched to masks by file stem: ``images = "images/*.tif"``, ``masks = "masks/{stem}.tif"``.

    Paths are relative to ``root`` (default: the folder of the TOML file). Each image's bands are in
    the declared ``bands`` order; the acquisition time comes from the GeoTIFF tag ``ACQUIRED`` if set.
    """

    def __init__(self, *, images: str, masks: str, root: str = ".", **common: Any) -> None:
        """``images``: a glob; ``masks``: a template with ``{stem}`` / ``{name}``; both under ``root``."""
        super().__init__(**common)
        self.root = (Path(self.origin).parent / root).resolve()
        self.images_glob, self.masks_template = images, masks
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

    def available(self) -> str:
        self._index()
        return "embedded" if "samples" in self.root.parts else str(self.root)

    def scene_ids(self) -> list[str]:
        return list(self._index())

    def files(self, scene_id: str) -> list[Path]:
        return list(self._index()[scene_id])

    def scene_meta(self, scene_id: str) -> dict[str, Any]:
        img, _ = self._index()[scene_id]
        with open_raster(img) as src:
            tags = src.tags()
        return {k.lower(): v for k, v in tags.items() if k.isupper() and k != "AREA_OR_POINT"}

    def scene_shape(self, scene_id: str) -> tuple[int, int]:
        with open_raster(self._index()[scene_id][0]) as src:
            return src.height, src.width

    def read(self, scene_id: str, bands: list[str], window: tuple[slice, slice] | None = None,
             strict: bool = False) -> SceneData:
        from rasterio.windows import Window

        img_path, mask_path = self._index()[scene_id]
        idx = self.band_indices(bands)
        with open_raster(img_path) as img, open_raster(mask_path) as msk:
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
        return self.finish(scene_id, raw, codes, str(img_path), strict, meta, codes_where=str(mask_path))


