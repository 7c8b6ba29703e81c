"""Write small TACO v1 files in the layout of the published ``cloudsen12-l1c.*.part.taco``.

TACO v1, as tacoreader.v1 writes and reads it (``tacoreader/v1/compile.py``, ``loader_dataframe.py``,
``loader_metadata.py``): a 200-byte header of 2 magic bytes (``WX`` for a TACO, ``#y`` for a tortilla),
the footer's offset and length, the number of data partitions (8 bytes each, little endian), for a TACO
the collection JSON's offset and length at bytes 26-42, zeros up to byte 200; the payload from byte 200;
then a Parquet footer with one row per item (``tortilla:id``, ``tortilla:file_format``,
``tortilla:offset``, ``tortilla:length`` plus metadata), and for a TACO the collection JSON. A
CloudSEN12+ row is a tortilla holding two GeoTIFFs, ``s2l1c`` and ``target``, with the published
metadata columns (:data:`COLUMNS`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.transform import from_origin


def _geotiff(array: np.ndarray) -> bytes:
    array = array[None] if array.ndim == 2 else array
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", height=array.shape[1], width=array.shape[2], count=len(array),
                      dtype=array.dtype, crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10)) as dst:
            dst.write(array)
        return mem.read()


#: the row metadata of the published CloudSEN12+ parts (besides the tortilla:* columns), with defaults
COLUMNS = {"tortilla:data_split": "train", "label_type": "high", "real_proj_shape": 509, "roi_id": "ROI_00000",
           "old_roi_id": "ROI_00000", "clear_percentage": 100.0, "thick_percentage": 0.0, "thin_percentage": 0.0,
           "cloud_shadow_percentage": 0.0, "stac:crs": "EPSG:32633", "stac:time_start": 0, "stac:time_end": 0,
           "stac:raster_shape": [512, 512], "stac:geotransform": [500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0],
           "stac:centroid": "POINT (15 45)"}
HEADER = 200


def _container(magic: bytes, blobs: list[bytes], rows: list[dict]) -> bytes:
    payload = b""
    for row, blob in zip(rows, blobs):
        row["tortilla:offset"], row["tortilla:length"] = HEADER + len(payload), len(blob)
        payload += blob
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    footer = sink.getvalue()
    footer_offset = HEADER + len(payload)
    collection = json.dumps({"id": "cloudsen12-l1c", "dataset_version": "1.1.2"}).encode() if magic == b"WX" else b""
    header = (magic + footer_offset.to_bytes(8, "little") + len(footer).to_bytes(8, "little")
              + (1).to_bytes(8, "little"))
    if collection:
        header += (footer_offset + len(footer)).to_bytes(8, "little") + len(collection).to_bytes(8, "little")
    header += b"\0" * (HEADER - len(header))
    return header + payload + footer + collection


def write_cloudsen12_part(path: Path, samples: list[dict], published_columns: bool = True) -> Path:
    """``samples``: dicts with ``image`` (13, H, W) uint16, ``label`` (H, W) uint8 and row metadata over
    the published columns' defaults (``published_columns=False``: only what the samples give)."""
    blobs, rows = [], []
    for i, s in enumerate(samples):
        inner = [{"tortilla:id": "s2l1c", "tortilla:file_format": "GTiff"},
                 {"tortilla:id": "target", "tortilla:file_format": "GTiff"}]
        blobs.append(_container(b"#y", [_geotiff(s["image"]), _geotiff(s["label"])], inner))
        given = {k: v for k, v in s.items() if k not in ("image", "label")}
        meta = {**COLUMNS, "stac:raster_shape": list(s["label"].shape), **given} if published_columns else given
        rows.append({"tortilla:id": meta.pop("id", f"ROI_{i:05d}"), "tortilla:file_format": "TORTILLA", **meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_container(b"WX", blobs, rows))
    return path
