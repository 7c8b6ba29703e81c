"""Unlabelled scenes to predict, read a strip of rows at a time: a GeoTIFF or a Sentinel-2 L1C ``.SAFE``
product (folder or zip).

* **GeoTIFF.** Bands are named by ``bands`` (the file's order), else by the file's band descriptions
  (``B02`` or ``B2``); a file with neither is refused. Integer values are taken as L1C digital numbers
  (reflectance = (DN + ``offset``) / 10,000), floats as reflectance, unless ``scale`` says otherwise. The
  file's nodata value and mask become NaN.
* **SAFE.** The 13 ``IMG_DATA/*_B??.jp2`` of the granule; the 20 m and 60 m bands are resampled
  (bilinear, nodata excluded) to the 10 m grid of B02. Reflectance = (DN + RADIO_ADD_OFFSET) /
  QUANTIFICATION_VALUE, both read from ``MTD_MSIL1C.xml`` (the offset is -1000 from processing baseline
  04.00, absent before). DN 0 is nodata.

Every reader gives ``read(row0, row1)``: the scene's rows in the requested bands as float32 reflectance
(C, rows, width), NaN at nodata; memory is that of the rows read, never the whole scene. A strip that is
converted tile by tile is held as the file stores it where that is 8- or 16-bit integers whose nodata is
told by their values (``read_counts``: uint16 digital numbers take half the memory of float32; other files
give float32 reflectance there too), and each tile becomes reflectance as it is cut (``reflectance``: the
same values as ``read`` gives).
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import DataError, did_you_mean
from bench.data.datasets.base import S2_BANDS

SAFE_METADATA = "MTD_MSIL1C.xml"
SAMPLE_STEP = 16  # the scene checks read every 16th row and column
#: a pixel-interleaved GeoTIFF is checked first on this many strips of its block rows, evenly spaced (a
#: full 10980 px tile: 4 of 22, 3 s instead of 15 from disk); a scene it would refuse is read in full
SAMPLE_STRIPS = 4
REFLECTANCE_MEDIAN_MAX = 2.0  # a band's median reflectance above this: digital numbers read as reflectance
REFLECTANCE_MAX_MIN = 0.02  # no reflectance above this in any band: reflectance scaled down a second time


def band_name(text: str | None) -> str | None:
    """``B02`` for ``B02``, ``B2``, ``b2`` or ``B02 (490 nm)``; None for anything else."""
    m = re.match(r"^\s*[Bb](\d{1,2}|8[Aa])\b", text or "")
    if not m:
        return None
    num = m.group(1).upper()
    name = "B8A" if num == "8A" else f"B{int(num):02d}"
    return name if name in S2_BANDS else None


@dataclass
class Raster:
    """A scene to predict: its size, georeferencing, band names and a strip reader (see the module docstring)."""

    path: Path
    kind: str  # "GeoTIFF" | "SAFE"
    height: int
    width: int
    crs: Any
    transform: Any
    bands: list[str]  # what the scene holds, by name
    wanted: list[str] = field(default_factory=list)  # what read() returns, in this order
    meta: dict[str, Any] = field(default_factory=dict)

    def select(self, bands: list[str]) -> "Raster":
        """Read ``bands`` (by name, in that order); a band the scene lacks raises, naming the file."""
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise DataError(f"{self.path}: has no band {', '.join(missing)} (it has {', '.join(self.bands)}), "
                            f"which the model needs ({', '.join(bands)})")
        self.wanted = list(bands)
        return self

    def read(self, row0: int, row1: int) -> np.ndarray:
        """Rows ``row0:row1`` of the selected bands: float32 reflectance, NaN at nodata."""
        return self.reflectance(self.read_counts(row0, row1))

    def read_counts(self, row0: int, row1: int) -> np.ndarray:
        """Rows ``row0:row1`` of the selected bands as stored (integer digital numbers where the file holds
        them and its nodata is told by their values; else float32 reflectance, NaN at nodata)."""
        raise NotImplementedError

    def reflectance(self, counts: np.ndarray) -> np.ndarray:
        """float32 reflectance, NaN at nodata, of values (or a window of them) that :meth:`read_counts` gave."""
        return counts

    def nodata(self, counts: np.ndarray) -> np.ndarray:
        """(rows, width) True where a band of :meth:`read_counts`'s values is nodata."""
        return np.isnan(counts).any(0)

    @property
    def stem(self) -> str:
        """The scene's name without its suffixes: ``T35VLC_20240816`` of ``T35VLC_20240816.SAFE.zip``."""
        return scene_stem(self.path)

    def scene_meta(self) -> dict[str, Any]:
        """What a model that knows scenes (masks from files) finds it by: path, stem, CRS and transform."""
        return {**self.meta, "image": str(self.path), "stem": self.stem,
                "crs": str(self.crs) if self.crs else None, "transform": list(self.transform)[:6]}

    def sample(self, step: int = SAMPLE_STEP, strips: int | None = None) -> np.ndarray:
        """Every ``step``-th row and column of the selected bands (reflectance, NaN at nodata), for checks
        that must see the whole scene before any pixel is predicted; ``strips``: where reading them means
        decoding every block, only the rows of that many evenly spaced strips of blocks."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the files."""

    def __enter__(self) -> "Raster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GeoTiff(Raster):
    """A multi-band GeoTIFF (see the module docstring)."""

    def __init__(self, path: Path, bands: list[str] | None = None, scale: float | None = None,
                 offset: float = 0.0) -> None:
        from bench.data.datasets.base import open_raster

        self.src = open_raster(path)
        names = self._names(path, bands)
        integer = np.issubdtype(np.dtype(self.src.dtypes[0]), np.integer)
        self.scale = scale if scale is not None else (1e-4 if integer else 1.0)
        self.offset = offset
        self.integer = integer
        super().__init__(path, "GeoTIFF", self.src.height, self.src.width, self.src.crs, self.src.transform, names,
                         meta={"units": f"(value + {offset:g}) x {self.scale:g}", "nodata": self.src.nodata})

    def _names(self, path: Path, bands: list[str] | None) -> list[str]:
        count = self.src.count
        if bands:
            if len(bands) != count:
                raise DataError(f"{path}: has {count} bands, --bands names {len(bands)} ({', '.join(bands)})")
            for b in bands:
                if b not in S2_BANDS:
                    raise DataError(f"--bands: unknown Sentinel-2 band {b!r}{did_you_mean(b, S2_BANDS)}")
            return list(bands)
        names = [band_name(d) for d in self.src.descriptions]
        if None in names or len(set(names)) != count:
            raise DataError(f"{path}: its {count} bands are not named by their descriptions "
                            f"({list(self.src.descriptions)}); pass --bands with one Sentinel-2 band name per "
                            "band in the file's order, e.g. --bands " + ",".join(S2_BANDS[:count]))
        return names  # type: ignore[return-value]

    def read(self, row0: int, row1: int) -> np.ndarray:
        from rasterio.windows import Window

        idx = [self.bands.index(b) + 1 for b in self.wanted]
        window = Window(0, row0, self.width, row1 - row0)
        try:  # GDAL converts block by block: one strip-sized float array, no integer copy or mask beside it
            x = self.src.read(idx, window=window, out_dtype="float32")
            self.mark_nodata(x, idx, window)
        except Exception as err:
            raise DataError(f"{self.path}: cannot read rows {row0}-{row1} ({err})") from None
        return self.scaled(x)

    def scaled(self, x: np.ndarray) -> np.ndarray:
        """float32 values of the file as reflectance, in place: (value + offset) x scale."""
        x += np.float32(self.offset)
        x *= np.float32(self.scale)
        return x

    def counted_nodata(self) -> list[float] | None:
        """Each selected band's nodata value ([] where every value is valid), or None where a mask band
        tells nodata or the values are not 8- or 16-bit integers: then :meth:`read_counts` gives reflectance."""
        from rasterio.enums import MaskFlags

        flags = [self.src.mask_flag_enums[self.bands.index(b)] for b in self.wanted]
        if not self.integer or np.dtype(self.src.dtypes[0]).itemsize > 2:  # 32-bit: float32 compares inexactly
            return None
        if all(MaskFlags.all_valid in f for f in flags):
            return []
        if all(f == [MaskFlags.nodata] for f in flags):
            return [self.src.nodatavals[self.bands.index(b)] for b in self.wanted]
        return None

    def read_counts(self, row0: int, row1: int) -> np.ndarray:
        from rasterio.windows import Window

        if self.counted_nodata() is None:
            return self.read(row0, row1)
        idx = [self.bands.index(b) + 1 for b in self.wanted]
        try:
            return self.src.read(idx, window=Window(0, row0, self.width, row1 - row0))
        except Exception as err:
            raise DataError(f"{self.path}: cannot read rows {row0}-{row1} ({err})") from None

    def reflectance(self, counts: np.ndarray) -> np.ndarray:
        if counts.dtype.kind == "f":  # read as reflectance already
            return counts
        x = counts.astype(np.float32)
        for band, c, value in zip(x, counts, self.counted_nodata() or []):
            band[c == value] = np.nan
        return self.scaled(x)

    def nodata(self, counts: np.ndarray) -> np.ndarray:
        if counts.dtype.kind == "f":
            return np.isnan(counts).any(0)
        out = np.zeros(counts.shape[1:], dtype=bool)
        for c, value in zip(counts, self.counted_nodata() or []):
            out |= c == value
        return out

    def mark_nodata(self, x: np.ndarray, idx: list[int], window: Any) -> None:
        """NaN where the file says a value is not valid (rasterio's masks): its nodata value, band by band,
        or a mask band read for the window."""
        from rasterio.enums import MaskFlags

        flags = [self.src.mask_flag_enums[i - 1] for i in idx]
        if all(MaskFlags.all_valid in f for f in flags):
            return
        if all(f == [MaskFlags.nodata] for f in flags):
            for band, i in zip(x, idx):
                band[band == np.float32(self.src.nodatavals[i - 1])] = np.nan
            return
        x[self.src.read_masks(idx, window=window) == 0] = np.nan

    def sample(self, step: int = SAMPLE_STEP, strips: int | None = None) -> np.ndarray:
        """Every ``step``-th row and column. A pixel-interleaved file with several bands is read in strips of
        its block rows, each block decoded once: GDAL's decimated read walks it band by band, decoding every
        block once per band (20 s instead of 1 s for a 3072 px, 13-band file, with predict's block cache)."""
        from rasterio.enums import Resampling

        idx = [self.bands.index(b) + 1 for b in self.wanted]
        if self.src.interleaving is not None and self.src.interleaving.value == "PIXEL" and len(idx) > 1:
            rows = max(self.src.block_shapes[0][0], step)
            rows -= rows % step
            starts = list(range(0, self.height, rows))
            if strips is not None and strips < len(starts):
                starts = [starts[i] for i in np.linspace(0, len(starts) - 1, strips).round().astype(int)]
            return np.concatenate([self.read(r, min(r + rows, self.height))[:, ::step, ::step].copy()  # not a view
                                   for r in starts], axis=1)
        shape = (len(idx), max(self.height // step, 1), max(self.width // step, 1))
        raw = self.src.read(idx, out_shape=shape, masked=True, resampling=Resampling.nearest)
        x = self.scaled(raw.data.astype(np.float32))
        x[np.ma.getmaskarray(raw)] = np.nan
        return x

    def close(self) -> None:
        self.src.close()


class Safe(Raster):
    """A Sentinel-2 L1C product, ``.SAFE`` folder or its zip (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        metadata, images = safe_files(path)
        self.quantification, offsets, baseline = safe_radiometry(metadata, path)
        self.offsets = {b: offsets.get(i, 0.0) for i, b in enumerate(S2_BANDS)}
        self.sources, self.views = {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b in S2_BANDS:
                self.sources[b] = rasterio.open(images[b])
        ref = self.sources["B02"]
        for b, src in self.sources.items():
            same = (src.height, src.width) == (ref.height, ref.width)
            self.views[b] = src if same else WarpedVRT(
                src, crs=ref.crs, transform=ref.transform, width=ref.width, height=ref.height,
                resampling=Resampling.bilinear, src_nodata=0, nodata=0)
        super().__init__(path, "SAFE", ref.height, ref.width, ref.crs, ref.transform, list(S2_BANDS),
                         meta={"processing_baseline": baseline, "quantification": self.quantification,
                               "radio_add_offset": offsets.get(1, 0.0)})

    def read_counts(self, row0: int, row1: int) -> np.ndarray:
        from rasterio.windows import Window

        out = np.empty((len(self.wanted), row1 - row0, self.width), dtype=self.views[self.wanted[0]].dtypes[0])
        for i, b in enumerate(self.wanted):
            try:
                self.views[b].read(1, window=Window(0, row0, self.width, row1 - row0), out=out[i])
            except Exception as err:
                raise DataError(f"{self.path}: cannot read band {b} ({err})") from None
        return out

    def reflectance(self, counts: np.ndarray) -> np.ndarray:
        out = np.empty(counts.shape, dtype=np.float32)
        for i, (b, dn) in enumerate(zip(self.wanted, counts)):
            out[i] = (dn.astype(np.float32) + np.float32(self.offsets[b])) / np.float32(self.quantification)
            out[i][dn == 0] = np.nan
        return out

    def nodata(self, counts: np.ndarray) -> np.ndarray:
        return (counts == 0).any(0)

    def sample(self, step: int = SAMPLE_STEP, strips: int | None = None) -> np.ndarray:
        from rasterio.enums import Resampling  # JPEG 2000 decodes a decimated read from its own levels

        shape = (max(self.height // step, 1), max(self.width // step, 1))
        return self.reflectance(np.stack([self.sources[b].read(1, out_shape=shape, resampling=Resampling.nearest)
                                          for b in self.wanted]))

    def close(self) -> None:
        for v in {*self.views.values(), *self.sources.values()}:
            v.close()


def scene_stem(path: Path) -> str:
    """A scene file's name without ``.zip``, ``.SAFE``, ``.tif`` or ``.tiff``."""
    name = path.name.removesuffix(".zip").removesuffix(".SAFE")
    return Path(name).stem if name.lower().endswith((".tif", ".tiff")) else name


def check_scene(raster: Raster) -> None:
    """Refuse, before any pixel is predicted, a scene with no valid pixel or whose values say its units are
    wrong: digital numbers read as reflectance (a median above :data:`REFLECTANCE_MEDIAN_MAX`), or
    reflectance divided by 10,000 as if it were digital numbers (nothing above :data:`REFLECTANCE_MAX_MIN`).
    Checked on every :data:`SAMPLE_STEP`-th row and column (first of :data:`SAMPLE_STRIPS` strips, and a
    scene is refused only on all of them), naming the file, the band and what to pass."""
    problem = scene_problem(raster, raster.sample(strips=SAMPLE_STRIPS))
    if problem is not None:
        problem = scene_problem(raster, raster.sample())
    if problem is not None:
        raise DataError(problem)


def scene_problem(raster: Raster, x: np.ndarray) -> str | None:
    """What :func:`check_scene` refuses in the sampled values ``x``, or None."""
    valid = np.isfinite(x).all(0)
    if not valid.any():
        return (f"{raster.path}: no valid pixel (every {SAMPLE_STEP}th row and column is nodata in "
                f"{', '.join(raster.wanted)}); nothing to mask")
    median = np.median(x[:, valid], axis=1)
    units = raster.meta.get("units", "its units")
    if median.max() > REFLECTANCE_MEDIAN_MAX:
        b = int(median.argmax())
        return (f"{raster.path}: band {raster.wanted[b]} has median {median[b]:.4g} as reflectance "
                f"({units}): these look like digital numbers read as reflectance; pass --scale 0.0001 "
                "(and --offset -1000 for processing baseline 04.00 or later)")
    if np.nanmax(x[:, valid]) < REFLECTANCE_MAX_MIN:
        return (f"{raster.path}: no value above {np.nanmax(x[:, valid]):.3g} as reflectance ({units}): "
                "these look like reflectance divided by 10,000 again; pass --scale 1")
    return None


def safe_files(path: Path) -> tuple[bytes, dict[str, str]]:
    """The product metadata (bytes) and the rasterio path of each band's JP2, from a folder or a zip."""
    if path.suffix.lower() == ".zip":
        try:
            names = zipfile.ZipFile(path).namelist()
        except (OSError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: not a readable zip ({err})") from None
        meta = [n for n in names if n.endswith("/" + SAFE_METADATA) or n == SAFE_METADATA]
        jp2 = {n.rsplit("/", 1)[-1]: f"/vsizip/{path.resolve()}/{n}" for n in names if "/IMG_DATA/" in n}
        read_meta = (lambda: zipfile.ZipFile(path).read(meta[0])) if meta else None
    else:
        meta = [str(p) for p in path.glob(SAFE_METADATA)]
        jp2 = {p.name: str(p) for p in path.glob("GRANULE/*/IMG_DATA/*.jp2")}
        read_meta = (lambda: Path(meta[0]).read_bytes()) if meta else None
    if read_meta is None:
        raise DataError(f"{path}: no {SAFE_METADATA}; not a Sentinel-2 L1C product")
    images = {}
    for b in S2_BANDS:
        found = [v for k, v in jp2.items() if k.endswith(f"_{b}.jp2")]
        if len(found) != 1:
            raise DataError(f"{path}: {'no' if not found else 'several'} GRANULE/*/IMG_DATA/*_{b}.jp2 "
                            f"({len(found)} found); an L1C product has one per band")
        images[b] = found[0]
    return read_meta(), images


def safe_radiometry(metadata: bytes, path: Path) -> tuple[float, dict[int, float], str | None]:
    """QUANTIFICATION_VALUE, RADIO_ADD_OFFSET per band id (0 = B01 ... 12 = B12) and PROCESSING_BASELINE."""
    try:
        root = ET.fromstring(metadata)
    except ET.ParseError as err:
        raise DataError(f"{path}: {SAFE_METADATA} is not valid XML ({err})") from None
    q = next((e.text for e in root.iter() if e.tag.endswith("QUANTIFICATION_VALUE")), None)
    if q is None:
        raise DataError(f"{path}: {SAFE_METADATA} has no QUANTIFICATION_VALUE")
    offsets = {int(e.attrib["band_id"]): float(e.text) for e in root.iter() if e.tag.endswith("RADIO_ADD_OFFSET")}
    baseline = next((e.text for e in root.iter() if e.tag.endswith("PROCESSING_BASELINE")), None)
    return float(q), offsets, baseline


def open_scene(path: str | Path, bands: list[str] | None = None, scale: float | None = None,
               offset: float = 0.0) -> Raster:
    """A GeoTIFF or an L1C product (``.SAFE`` folder, or a zip of one) as a :class:`Raster`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix.lower() == ".zip":
        if bands:
            raise DataError(f"{path}: --bands is for GeoTIFFs; an L1C product names its own bands")
        return Safe(path)
    return GeoTiff(path, bands, scale, offset)
