"""One Sentinel Hub L1C scene (the study's test data: August, Latvia), fetched with sentinelhub-py and
cached as GeoTIFF.

**One acquisition, not a mosaic.** The Catalog API lists the Sentinel-2 L1C acquisitions over the TOML's
``bbox`` within ``time_interval``; the scene is the one whose cloud cover lies in ``cloud_cover``
(``[min, max]`` percent) closest in time to ``target_date`` (default: the middle of the interval), or the
date a user pins with ``date``. Its date, tile and product id are written into the cache's metadata and so
into every result.

**The request**: ``SentinelHubRequest`` for that day, all 13 bands as reflectance, harmonized values
(``processing.harmonizeValues``, which removes the processing-baseline 04.00 offset), plus the ``CLM``
cloud mask and ``dataMask``. Each input band gets the units that sentinelhub's own band metadata allows
(``DataCollection.SENTINEL2_L1C.bands`` / ``.metabands``): reflectance for the 13 bands, DN for ``CLM``
and ``dataMask``, which exist only in DN.

**Which service.** ``DataCollection.SENTINEL2_L1C`` carries the commercial service URL, which overrides
``sh_base_url``. A configuration whose ``sh_base_url`` is the Copernicus Data Space Ecosystem
(``https://sh.dataspace.copernicus.eu``, with its ``sh_token_url``) gets the collection defined from that
URL instead, so the free CDSE service works with the same TOML. Credentials come from sentinelhub's own
configuration (``sentinelhub.config``) or its environment variables; they are never written into results,
logs or messages. A failed request shows the service's own reason.

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
    input: [{bands: [%(bands)s, "CLM", "dataMask"], units: [%(units)s]}],
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


#: the Copernicus Data Space Ecosystem's Sentinel Hub deployment
CDSE_URL = "https://sh.dataspace.copernicus.eu"


def band_units(bands: list[str]) -> list[str]:
    """Each band's units as sentinelhub's own metadata gives them: reflectance where the band has it (the 13
    spectral bands), else its first unit (DN for ``CLM`` and ``dataMask``)."""
    from sentinelhub import DataCollection

    meta = {b.name: b for b in (*DataCollection.SENTINEL2_L1C.bands, *DataCollection.SENTINEL2_L1C.metabands)}
    units = []
    for b in bands:
        if b not in meta:
            raise ConfigError(f"Sentinel Hub's SENTINEL2_L1C has no band {b!r}")
        names = [u.value for u in meta[b].units]
        units.append("REFLECTANCE" if "REFLECTANCE" in names else names[0])
    return units


def evalscript(bands: list[str]) -> str:
    """The Sentinel Hub evalscript that returns ``bands`` (reflectance) and the CLM layer (DN)."""
    units = band_units([*bands, "CLM", "dataMask"])
    return EVALSCRIPT % {"bands": ", ".join(f'"{b}"' for b in bands), "n": len(bands),
                         "units": ", ".join(f'"{u}"' for u in units),
                         "zeros": ", ".join("0" for _ in bands), "values": ", ".join(f"s.{b}" for b in bands)}


def collection(config: Any = None):  # noqa: ANN201 - a sentinelhub DataCollection
    """Sentinel-2 L1C on the service ``config`` points at: the predefined collection (commercial Sentinel
    Hub), or one defined from the configured base URL when that is another deployment (CDSE)."""
    from sentinelhub import DataCollection

    base = (getattr(config, "sh_base_url", None) or "").rstrip("/")
    if not base or base == DataCollection.SENTINEL2_L1C.service_url.rstrip("/"):
        return DataCollection.SENTINEL2_L1C
    import zlib

    name = "SENTINEL2_L1C_CDSE" if base == CDSE_URL else f"SENTINEL2_L1C_{zlib.crc32(base.encode()):08x}"
    return DataCollection.SENTINEL2_L1C.define_from(name, service_url=base)


def choose_acquisition(items: list[dict[str, Any]], cloud_cover: tuple[float, float], target: str) -> dict[str, Any]:
    """The Catalog item (STAC feature) whose ``eo:cloud_cover`` lies in ``cloud_cover`` and whose date is
    closest to ``target`` (ties: the lower cloud cover, then the earlier). None in range is an error that
    lists what there is."""
    from datetime import date

    def day(item: dict[str, Any]) -> date:
        return date.fromisoformat(item["properties"]["datetime"][:10])

    lo, hi = cloud_cover
    fits = [i for i in items if lo <= float(i["properties"].get("eo:cloud_cover", -1)) <= hi]
    if not fits:
        seen = ", ".join(f"{i['properties']['datetime'][:10]} ({i['properties'].get('eo:cloud_cover')} %)"
                         for i in items) or "none"
        raise DataError(f"no acquisition with cloud cover in [{lo}, {hi}] %; the catalog has: {seen}. Widen "
                        "cloud_cover or pin one with date = \"YYYY-MM-DD\"")
    t = date.fromisoformat(target[:10])
    return min(fits, key=lambda i: (abs((day(i) - t).days), float(i["properties"]["eo:cloud_cover"]), day(i)))


def tile_of(product_id: str) -> str | None:
    """The MGRS tile of a Sentinel-2 product id (``..._T34VFJ_...`` -> ``34VFJ``)."""
    import re

    found = re.search(r"_T(\d{2}[A-Z]{3})_", product_id)
    return found.group(1) if found else None


@register("dataset", "sentinelhub", description="A Sentinel Hub L1C scene for a bbox and time interval, cached as GeoTIFF.")
class SentinelHubScene(Dataset):
    """One scene fetched with sentinelhub-py for ``bbox`` and ``time_interval``, cached under the data root
    as ``<cache>/image.tif`` (13 bands, reflectance) and ``clm.tif`` (the reference, or ``mask``)."""

    def __init__(self, *, bbox: list[float], time_interval: list[Any], cache: str, crs: str = "EPSG:4326",
                 resolution: float = 10.0, cloud_cover: list[float] | None = None, target_date: str | None = None,
                 date: str | None = None, mask: str | None = None, **common: Any) -> None:
        """``bbox`` = [min_x, min_y, max_x, max_y] in ``crs``; ``time_interval`` = [start, end]; the scene is
        the acquisition chosen by ``cloud_cover`` ([min, max] %, default [20, 80]) and ``target_date``, or the
        pinned ``date``."""
        super().__init__(**common)
        if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise ConfigError(f"{self.origin}: bbox must be [min_x, min_y, max_x, max_y], got {bbox}")
        if len(time_interval) != 2 or str(time_interval[0]) > str(time_interval[1]):
            raise ConfigError(f"{self.origin}: time_interval must be [start, end], got {time_interval}")
        cloud_cover = list(cloud_cover if cloud_cover is not None else [20.0, 80.0])
        if len(cloud_cover) != 2 or not 0 <= cloud_cover[0] <= cloud_cover[1] <= 100:
            raise ConfigError(f"{self.origin}: cloud_cover must be [min, max] percent, got {cloud_cover}")
        self.bbox, self.crs = [float(v) for v in bbox], crs
        self.time_interval = tuple(str(t)[:10] for t in time_interval)
        self.resolution, self.cloud_cover = float(resolution), (float(cloud_cover[0]), float(cloud_cover[1]))
        self.target_date, self.date = target_date or self._middle(), date
        self.cache_dir, self.mask = cache, mask

    def _middle(self) -> str:
        from datetime import date

        a, b = (date.fromisoformat(t) for t in self.time_interval)
        return (a + (b - a) / 2).isoformat()

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
    def request(self, config: Any = None, day: str | None = None):
        """The ``SentinelHubRequest`` for one day (``day``, else the pinned ``date``, else the whole
        interval: what a dry run shows before the catalog is asked), built offline; nothing is sent."""
        from sentinelhub import CRS, BBox, MimeType, SentinelHubRequest, bbox_to_dimensions

        bbox = BBox(self.bbox, crs=CRS(self.crs))
        day = day or self.date
        interval = (day, day) if day else self.time_interval
        return SentinelHubRequest(
            evalscript=evalscript(list(S2_BANDS)),
            input_data=[SentinelHubRequest.input_data(
                data_collection=collection(config), time_interval=interval,
                other_args={"processing": {"harmonizeValues": True}})],
            responses=[SentinelHubRequest.output_response("bands", MimeType.TIFF),
                       SentinelHubRequest.output_response("clm", MimeType.TIFF)],
            bbox=bbox, size=bbox_to_dimensions(bbox, resolution=self.resolution), config=config)

    def acquisition(self, config: Any) -> dict[str, Any]:
        """The acquisition to fetch: the pinned ``date``, else the Catalog API's choice (see the module)."""
        if self.date:
            return {"datetime": self.date, "id": None, "cloud_cover": None, "rule": "pinned date"}
        from sentinelhub import CRS, BBox, SentinelHubCatalog

        items = list(SentinelHubCatalog(config=config).search(
            collection(config), bbox=BBox(self.bbox, crs=CRS(self.crs)), time=self.time_interval,
            fields={"include": ["id", "properties.datetime", "properties.eo:cloud_cover"], "exclude": []}))
        item = choose_acquisition(items, self.cloud_cover, self.target_date)
        return {"datetime": item["properties"]["datetime"], "id": item["id"],
                "cloud_cover": item["properties"]["eo:cloud_cover"],
                "rule": f"cloud cover in {list(self.cloud_cover)} %, closest to {self.target_date}"}

    def fetch(self) -> Path:
        """Choose the acquisition, download it and write the GeoTIFF cache; a clear error without credentials
        or network, with the service's own reason when it refuses."""
        from sentinelhub import SHConfig

        config = SHConfig()
        if not (config.sh_client_id and config.sh_client_secret):
            raise self._missing("no Sentinel Hub credentials are configured")
        if self.cache() is None:
            raise self._missing("no data root is set (pass --data-root or set CLOUDBENCH_DATA)")
        try:
            chosen = self.acquisition(config)
            (data,) = self.request(config, chosen["datetime"][:10]).get_data()
        except DataError:
            raise
        except Exception as err:  # network or service errors: the service's reason, never the credentials
            reason = str(err)
            for secret in (config.sh_client_id, config.sh_client_secret):
                reason = reason.replace(secret, "***")
            raise DataError(f"dataset {self.name!r}: the Sentinel Hub request failed ({type(err).__name__}: "
                            f"{reason}); check the network and the credentials' access, or put the scene in the "
                            f"cache folder {self.cache()}") from None
        self.write_cache(data["bands.tif"], data["clm.tif"], chosen)
        return self.cache() / "image.tif"

    def write_cache(self, bands, clm, chosen: dict[str, Any] | None = None) -> None:  # noqa: ANN001 - arrays (H, W, 13) and (H, W)
        """Write the cached scene as GeoTIFFs georeferenced by the request's bbox, tagged with the chosen
        acquisition (date, tile, product id, cloud cover, the rule that chose it)."""
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
        chosen = chosen or {}
        when = chosen.get("datetime") or f"{self.time_interval[0]}T00:00:00"
        tags = {"ACQUIRED": when, "TIME_INTERVAL": "/".join(self.time_interval), "PRODUCT_ID": chosen.get("id") or "",
                "TILE": tile_of(chosen.get("id") or "") or "", "CLOUD_COVER": str(chosen.get("cloud_cover") or ""),
                "CHOSEN_BY": chosen.get("rule") or "", "SOURCE": "Sentinel Hub SENTINEL2_L1C, harmonizeValues=true"}
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
        """The acquisition pinned in the cache's tags (date, tile, product id), else the interval's start."""
        meta = {"acquired": f"{self.time_interval[0]}T00:00:00", "time_interval": "/".join(self.time_interval)}
        cache = self.cache()
        if cache is not None and (cache / "image.tif").exists():
            with open_raster(cache / "image.tif") as src:
                tags = src.tags()
            meta.update({k: tags[t] for k, t in (("acquired", "ACQUIRED"), ("tile", "TILE"),
                         ("product_id", "PRODUCT_ID"), ("cloud_cover", "CLOUD_COVER")) if tags.get(t)})
        return meta

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
