"""Bring-your-own data: a folder of image GeoTIFFs with label GeoTIFFs matched by name (also how the
embedded samples ship)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.datasets.base import Dataset, SceneData, data_root, missing_data, open_raster
from bench.core.errors import DataError
from bench.core.registry import register

@register("dataset", "geotiff", description="A folder of image GeoTIFFs with label GeoTIFFs matched by name.")
class GeoTiffDataset(Dataset):
    """Images matched to masks by file stem: ``images = "images/*.tif"``, ``masks = "masks/{stem}.tif"``.

    Paths are relative to ``root``: the folder of the TOML file by default, or ``data:<folder>`` under
    the data root (downloaded data). Each image's bands are in the declared ``bands`` order; the
    acquisition time comes from the GeoTIFF tag ``ACQUIRED`` if set. Templates may use ``{stem}``,
    ``{name}`` and ``{dir}`` (the image's folder relative to ``root``): ``scene_id = "{dir}"`` names scenes
    by folder where every image is ``S2L1C.tif``. ``skip_unlabelled`` leaves out images without a mask;
    ``mask_nodata_code`` is the label code given to the mask file's own nodata value (unlabelled pixels).
    """

    def __init__(self, *, images: str, masks: str, root: str = ".", scene_id: str = "{stem}",
                 skip_unlabelled: bool = False, mask_nodata_code: int | None = None, **common: Any) -> None:
        """``images``: a glob; ``masks``: a template; both under ``root``."""
        super().__init__(**common)
        self.root_spec = root
        self.images_glob, self.masks_template, self.id_template = images, masks, scene_id
        self.skip_unlabelled, self.mask_nodata_code = skip_unlabelled, mask_nodata_code
        self._scenes: dict[str, tuple[Path, Path]] | None = None

    @property
    def root(self) -> Path:
        """The folder the globs are under (``data:<folder>``: under the data root, which must exist)."""
        if not self.root_spec.startswith("data:"):
            return (Path(self.origin).parent / self.root_spec).resolve()
        base = data_root()
        folder = base / self.root_spec[5:] if base else None
        if folder is None or not folder.is_dir():
            raise missing_data(self.name, folder, self.name)
        return folder

    def _index(self) -> dict[str, tuple[Path, Path]]:
        if self._scenes is None:
            root = self.root
            images = sorted(Path(p) for p in glob.glob(str(root / self.images_glob)))
            if not images:
                raise DataError(f"dataset {self.name!r}: no image matches {root / self.images_glob}; "
                                "check 'root' and 'images' in its TOML")
            self._scenes = {}
            for img in images:
                fields = {"stem": img.stem, "name": img.name, "dir": img.parent.relative_to(root).as_posix()}
                mask = root / self.masks_template.format(**fields)
                if mask.resolve() == img.resolve() or (self.skip_unlabelled and not mask.exists()):
                    continue
                if not mask.exists():
                    raise DataError(f"dataset {self.name!r}: image {img} has no mask at {mask}")
                self._scenes[self.id_template.format(**fields)] = (img, mask)
            if not self._scenes:
                raise DataError(f"dataset {self.name!r}: no image under {root} has a mask "
                                f"({self.masks_template})")
        return self._scenes

    def available(self) -> str:
        """Where the images are (``embedded`` for the samples shipped in the package)."""
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
                if self.mask_nodata_code is not None and msk.nodata is not None:
                    codes = np.where(codes == msk.nodata, self.mask_nodata_code, codes)
            except Exception as err:  # rasterio raises its own errors for truncated or corrupt files
                raise DataError(f"{img_path}: cannot read ({err}); the file is truncated or corrupt") from None
            meta = {"acquired": img.tags().get("ACQUIRED"), "crs": str(img.crs) if img.crs else None,
                    "dataset": self.name, "image": str(img_path), "stem": img_path.stem,
                    "transform": list(img.transform)[:6]}
        return self.finish(scene_id, raw, codes, str(img_path), strict, meta, codes_where=str(mask_path))


