"""Write small TACO v1 files in the layout of the published ``cloudsen12-l1c.*.part.taco``.

TACO v1 (what tacoreader.v1 reads): 2 magic bytes (``WX`` for a TACO, ``#y`` for a tortilla), the
footer's offset and length (8 bytes each, little endian), the payload, then a Parquet footer with one
row per item (``tortilla:id``, ``tortilla:file_format``, ``tortilla:offset``, ``tortilla:length`` plus
metadata). A CloudSEN12+ row is a tortilla holding two GeoTIFFs: ``s2l1c`` and ``target``.
"""

from __future__ import annotations

import io
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


def _container(magic: bytes, blobs: list[bytes], rows: list[dict]) -> bytes:
    offset, payload = 18, b""
    for row, blob in zip(rows, blobs):
        row["tortilla:offset"], row["tortilla:length"] = offset + len(payload), len(blob)
        payload += blob
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    footer = sink.getvalue()
    header = magic + (18 + len(payload)).to_bytes(8, "little") + len(footer).to_bytes(8, "little")
    return header + payload + footer


def write_cloudsen12_part(path: Path, samples: list[dict]) -> Path:
    """``samples``: dicts with ``image`` (13, H, W) uint16, ``label`` (H, W) uint8 and row metadata."""
    blobs, rows = [], []
    for i, s in enumerate(samples):
        inner = [{"tortilla:id": "s2l1c", "tortilla:file_format": "GTiff"},
                 {"tortilla:id": "target", "tortilla:file_format": "GTiff"}]
        blobs.append(_container(b"#y", [_geotiff(s["image"]), _geotiff(s["label"])], inner))
        meta = {k: v for k, v in s.items() if k not in ("image", "label")}
        rows.append({"tortilla:id": meta.pop("id", f"ROI_{i:05d}"), "tortilla:file_format": "TORTILLA", **meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_container(b"WX", blobs, rows))
    return path
