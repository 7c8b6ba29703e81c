"""One Sentinel Hub L1C scene (the study's test data: August, Latvia), fetched with sentinelhub-py and
cached as GeoTIFF.

The request: ``SentinelHubRequest`` on ``DataCollection.SENTINEL2_L1C`` for the TOML's ``bbox`` and
``time_interval``, all 13 bands as reflectance, harmonized values (``processing.harmonizeValues``, which
removes the processing-baseline 04.00 offset), least-cloudy mosaicking, plus the scene's ``CLM`` cloud
mask and ``dataMask``. Credentials come from sentinelhub's own configuration (``sentinelhub.config``)
or its environment variables; they are never written into results, logs or messages.

Cache (under the data root, folder ``cache``): ``image.tif`` (13 bands, float32 reflectance, 0 where
``dataMask`` is 0) and ``clm.tif`` (uint8: 0 no cloud, 1 cloud, 255 nodata). The reference is the CLM
layer (algorithmic, cloud vs. not cloud) unless ``mask`` names a user's mask GeoTIFF; then ``labels``
and ``reference`` describe that mask. Without a cache and without credentials or network, one message
says what is missing and how to provide it; there is never a fallback to other data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.data.datasets.base import S2_BANDS, Dataset, SceneData, data_root, open_raster
from bench.core.errors import ConfigError, DataError
from bench.core.registry import register

EVALSCRIPT = """//VERSION=3
function setup() {
  return {
    input: [{bands: [%(bands)s, "CLM", "dataMask"], units: "REFLECTANCE"}],
    output: [
      {id: "bands", bands: %(n)d, sampleType: "FLOAT32"},
      {id: "clm", bands: 1, sampleType: "UINT8"}
    ]
  };
}
function evaluatePixel(s) {
  if (s.dataMask == 0) {
    return {bands: [%(zeros)s], clm: [255]};
  }
  return {bands: [%(values)s], clm: [s.CLM]};
}
"""


def evalscript(bands: list[str]) -> str:
    """The Sentinel Hub evalscript that returns ``bands`` and the CLM layer."""
    return EVALSCRIPT % {"bands": ", ".join(f'"{b}"' for b in bands), "n": len(bands),
                         "zeros": ", ".join("0" for _ in bands), "values": ", ".join(f"s.{b}" for b in bands)}


@register("dataset", "sentinelhub", description="A Sentinel Hub L1C scene for a bbox and time interval, cached as GeoTIFF.")
class SentinelHubScene(Dataset):
    """One scene fetched with sentinelhub-py for ``bbox`` and ``time_interval``, cached under the data root
    as ``<cache>/image.tif`` (13 bands, reflectance) and ``clm.tif`` (the reference, or ``mask``)."""

    def __init__(self, *, bbox: list[float], time_interval: list[Any], cache: str, crs: str = "EPSG:4326",
                 resolution: float = 10.0, mosaicking_order: str = "leastCC", max_cloud_coverage: float | None = None,
                 mask: str | None = None, **common: Any) -> None:
        """``bbox`` = [min_x, min_y, max_x, max_y] in ``crs``; ``time_interval`` = [start, end]."""
        super().__init__(**common)
        if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise ConfigError(f"{self.origin}: bbox must be [min_x, min_y, max_x, max_y], got {bbox}")
        if len(time_interval) != 2 or str(time_interval[0]) > str(time_interval[1]):
            raise ConfigError(f"{self.origin}: time_interval must be [start, end], got {time_interval}")
        self.bbox = [float(v) for v in bbox]
        self.crs = crs
        self.time_interval = tuple(str(t) for t in time_interval)
        self.resolution = float(resolution)
        self.mosaicking_order = mosaicking_order
        self.max_cloud_coverage = max_cloud_coverage
        self.cache_dir, self.mask = cache, mask

    # -- where the scene lives --------------------------------------------------------------------
    def cache(self) -> Path | None:
        """The cache folder under the data root, or None without a data root."""
        root = data_root()
        return root / self.cache_dir if root else None

    def _paths(self) -> tuple[Path, Path]:
        cache = self.cache()
        if cache is None:
            raise self._missing("no data root is set (pass --data-root or set CLOUDBENCH_DATA)")
        image = cache / "image.tif"
        mask = Path(self.mask) if self.mask else cache / "clm.tif"
        if self.mask and not mask.is_absolute():
            mask = data_root() / mask
        if not image.exists():
            self.fetch()
        if not mask.exists():
            raise DataError(f"dataset {self.name!r}: reference mask {mask} not found")
        return image, mask

    def _missing(self, what: str) -> DataError:
        target = f"{self.cache()}/image.tif" if self.cache() else "<data root>/" + self.cache_dir + "/image.tif"
        return DataError(
            f"dataset {self.name!r}: {what}, and the scene is not cached at {target}. Either put a 13-band L1C "
            f"reflectance GeoTIFF there (with clm.tif beside it, or a mask named by 'mask'), or give Sentinel Hub "
            "credentials (`sentinelhub.config --sh_client_id ID --sh_client_secret SECRET`, or the environment "
            f"variables SH_CLIENT_ID and SH_CLIENT_SECRET) and run `bench data download {self.name} --data-root DIR` "
            "on a machine with internet")

    # -- the request --------------------------------------------------------------------------------
    def request(self, config: Any = None):
        """The ``SentinelHubRequest`` for this scene (built offline; nothing is sent)."""
        from sentinelhub import (CRS, BBox, DataCollection, MimeType, MosaickingOrder, SentinelHubRequest,
                                 bbox_to_dimensions)

        bbox = BBox(self.bbox, crs=CRS(self.crs))
        size = bbox_to_dimensions(bbox, resolution=self.resolution)
        extra = {"processing": {"harmonizeValues": True}}
        data_filter = {}
        if self.max_cloud_coverage is not None:
            data_filter["maxcc"] = float(self.max_cloud_coverage)
        return SentinelHubRequest(
            evalscript=evalscript(list(S2_BANDS)),
            input_data=[SentinelHubRequest.input_data(
                data_collection=DataCollection.SENTINEL2_L1C, time_interval=self.time_interval,
                mosaicking_order=MosaickingOrder(self.mosaicking_order), other_args=extra, **data_filter)],
            responses=[SentinelHubRequest.output_response("bands", MimeType.TIFF),
                       SentinelHubRequest.output_response("clm", MimeType.TIFF)],
            bbox=bbox, size=size, config=config)

    def fetch(self) -> Path:
        """Download the scene and write the GeoTIFF cache; a clear error without credentials or network."""
        from sentinelhub import SHConfig

        config = SHConfig()
        if not (config.sh_client_id and config.sh_client_secret):
            raise self._missing("no Sentinel Hub credentials are configured")
        if self.cache() is None:
            raise self._missing("no data root is set (pass --data-root or set CLOUDBENCH_DATA)")
        try:
            (data,) = self.request(config).get_data()
        except Exception as err:  # network or service errors; their text holds no credentials
            raise DataError(f"dataset {self.name!r}: the Sentinel Hub request failed ({type(err).__name__}); "
                            "check the network and the credentials' access, or put the scene in the cache "
                            f"folder {self.cache()}") from None
        self.write_cache(data["bands.tif"], data["clm.tif"])
        return self.cache() / "image.tif"

    def write_cache(self, bands, clm) -> None:  # noqa: ANN001 - arrays (H, W, 13) and (H, W)
        """Write the cached scene as GeoTIFFs georeferenced by the request's bbox."""
        import numpy as np
        import rasterio
        from rasterio.transform import from_bounds

        bands = np.asarray(bands, dtype=np.float32)
        bands = bands.transpose(2, 0, 1) if bands.ndim == 3 else bands[None]
        h, w = bands.shape[1:]
        transform = from_bounds(*self.bbox, w, h)
        cache = self.cache()
        cache.mkdir(parents=True, exist_ok=True)
        meta = dict(driver="GTiff", height=h, width=w, crs=self.crs, transform=transform, compress="deflate")
        tags = {"ACQUIRED": f"{self.time_interval[0]}T00:00:00", "TIME_INTERVAL": "/".join(self.time_interval),
                "SOURCE": "Sentinel Hub SENTINEL2_L1C, harmonizeValues=true"}
        with rasterio.open(cache / "image.tif", "w", count=len(bands), dtype="float32", **meta) as dst:
            dst.write(bands)
            dst.update_tags(**tags)
        with rasterio.open(cache / "clm.tif", "w", count=1, dtype="uint8", **meta) as dst:
            dst.write(np.asarray(clm, dtype=np.uint8).reshape(1, h, w))
            dst.update_tags(**tags)

    # -- Dataset API --------------------------------------------------------------------------------
    def available(self) -> str:
        cache = self.cache()
        if cache is None or not (cache / "image.tif").exists():
            raise self._missing("not downloaded")
        return str(cache)

    def scene_ids(self) -> list[str]:
        return ["scene"]

    def files(self, scene_id: str) -> list[Path]:
        return list(self._paths())

    def scene_meta(self, scene_id: str) -> dict[str, Any]:
        return {"acquired": f"{self.time_interval[0]}T00:00:00", "time_interval": "/".join(self.time_interval)}

    def scene_shape(self, scene_id: str) -> tuple[int, int]:
        with open_raster(self._paths()[0]) as src:
            return src.height, src.width

    def read(self, scene_id: str, bands: list[str], window: tuple[slice, slice] | None = None,
             strict: bool = False) -> SceneData:
        from rasterio.windows import Window

        image, mask = self._paths()
        idx = self.band_indices(bands)
        with open_raster(image) as img, open_raster(mask) as msk:
            if img.count != len(self.bands):
                raise DataError(f"{image}: has {img.count} bands, dataset {self.name!r} declares {len(self.bands)}")
            if (img.height, img.width) != (msk.height, msk.width) or img.crs != msk.crs:
                raise DataError(f"{image} ({img.height}x{img.width}, {img.crs}) and its mask {mask} "
                                f"({msk.height}x{msk.width}, {msk.crs}) differ in shape or CRS")
            win = None if window is None else Window.from_slices(*window, height=img.height, width=img.width)
            raw = img.read([i + 1 for i in idx], window=win)
            codes = msk.read(1, window=win)
        return self.finish(scene_id, raw, codes, str(image), strict, {**self.scene_meta(scene_id), "dataset": self.name},
                           codes_where=str(mask))
