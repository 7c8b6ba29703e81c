"""Write the embedded samples (bench/data/samples/) from the copies in ../shared/data.

Reflectance is stored as uint16 L1C digital numbers (reflectance x 10,000, which is how both sources
were made: the round trip is exact to float32 precision) in deflate-compressed GeoTIFFs, so that the
embedded data go through the same GeoTIFF reader as a user's own. Run from the repository root:
``python tools/make_samples.py [../shared/data]``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_bounds

SHARED = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
OUT = Path("bench/data/samples")
PROFILE = dict(driver="GTiff", compress="deflate", predictor=2, zlevel=9, tiled=False)


def write(path: Path, array: np.ndarray, crs=None, transform=None, tags=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, h, w = array.shape
    with rasterio.open(path, "w", height=h, width=w, count=count, dtype=array.dtype, crs=crs,
                       transform=transform or rasterio.Affine.identity(), **PROFILE) as dst:
        dst.write(array)
        if tags:
            dst.update_tags(**tags)


def to_dn(reflectance: np.ndarray) -> np.ndarray:
    return np.round(reflectance.astype(np.float64) * 10000).clip(0, 65535).astype(np.uint16)


def ukis() -> None:
    src = SHARED / "ukis_csmask_s2"
    out = OUT / "ukis_csmask_s2"
    d = np.load(src / "sentinel2.npz")
    write(out / "images" / "ukis_csmask_s2.tif", to_dn(d["img"]).transpose(2, 0, 1))
    write(out / "masks" / "ukis_csmask_s2.tif", d["msk"].transpose(2, 0, 1).astype(np.uint8))
    shutil.copy(src / "PROVENANCE.md", out / "PROVENANCE.md")


def eolearn() -> None:
    src = SHARED / "eolearn_testeopatch"
    out = OUT / "eolearn_slovenia"
    scenes = np.load(src / "REFERENCE_SCENES.npy")
    clm = np.load(src / "CLM.npy")
    index = json.loads((src / "reference_scene_index.json").read_text())
    bbox = np.array(json.loads((src / "bbox.geojson").read_text())["coordinates"][0])
    west, south = bbox.min(axis=0)
    east, north = bbox.max(axis=0)
    _, h, w, _ = scenes.shape
    transform = from_bounds(west, south, east, north, w, h)
    for i, (t, stamp) in enumerate(zip(index["time_index"], index["timestamp"])):
        name = stamp[:10]
        write(out / "images" / f"{name}.tif", to_dn(scenes[i]).transpose(2, 0, 1), "EPSG:32633", transform,
              {"ACQUIRED": stamp})
        write(out / "masks" / f"{name}.tif", clm[t].transpose(2, 0, 1).astype(np.uint8), "EPSG:32633",
              transform, {"ACQUIRED": stamp})
    shutil.copy(src / "PROVENANCE.md", out / "PROVENANCE.md")


if __name__ == "__main__":
    ukis()
    eolearn()
    print(f"wrote {sum(f.stat().st_size for f in OUT.rglob('*.tif')) / 1e6:.2f} MB of GeoTIFFs under {OUT}")
