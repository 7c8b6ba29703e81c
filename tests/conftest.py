"""Shared fixtures: real Sentinel-2 samples (../shared/data when present, else the embedded copies),
and helpers that write small GeoTIFF datasets and scenarios from them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
UKIS_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


@pytest.fixture(scope="session")
def ukis() -> tuple[np.ndarray, np.ndarray]:
    """The real ukis-csmask patch: (6, 512, 512) reflectance and (512, 512) codes 0 shadow .. 4 cloud."""
    npz = SHARED / "ukis_csmask_s2" / "sentinel2.npz"
    if npz.exists():
        d = np.load(npz)
        return d["img"].transpose(2, 0, 1).astype(np.float32), d["msk"][..., 0]
    from bench.data.datasets import load_dataset

    s = load_dataset("ukis_csmask_s2").read("ukis_csmask_s2", UKIS_BANDS)
    return s.image, s.codes.astype(np.uint8)


def write_tif(path: Path, array: np.ndarray, crs: str | None = None) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    array = array[None] if array.ndim == 2 else array
    transform = from_origin(465180, 5080260, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=len(array),
                       dtype=array.dtype, crs=crs or "EPSG:32633", transform=transform) as dst:
        dst.write(array)
    return path


def write_dataset(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray], bands: list[str],
                  scale: str = 'kind = "reflectance"', codes: str | None = None, reference: str = "human",
                  name: str = "mine") -> Path:
    """A bring-your-own GeoTIFF dataset: images/<id>.tif, masks/<id>.tif and dataset.toml."""
    for sid, img in images.items():
        write_tif(root / "images" / f"{sid}.tif", img)
        write_tif(root / "masks" / f"{sid}.tif", masks[sid])
    codes = codes or '{ 0 = "cloud_shadow", 1 = "clear", 2 = "clear", 3 = "clear", 4 = "cloud" }'
    toml = root / "dataset.toml"
    toml.write_text(textwrap.dedent(f"""\
        name = "{name}"
        version = 1
        reference = "{reference}"
        bands = {bands!r}
        images = "images/*.tif"
        masks = "masks/{{stem}}.tif"
        [scale]
        {scale}
        [labels]
        codes = {codes}
        """).replace("'", '"'))
    return toml


def write_scenario(path: Path, train: str, test: str, bands: list[str] = UKIS_BANDS, val: str | None = None,
                   extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        name = "{path.stem}"
        version = 1
        bands = {bands!r}
        [recipe]
        patch_size = 64
        batch_size = 4
        samples_per_epoch = 4
        epochs = 1
        [train]
        dataset = "{train}"
        [val]
        dataset = "{val or train}"
        [test]
        dataset = "{test}"
        """).replace("'", '"') + extra)
    return path


@pytest.fixture
def tiny_dataset(tmp_path: Path, ukis) -> Path:
    """Two 128 x 128 scenes cut from the real ukis patch, as a GeoTIFF dataset in reflectance."""
    img, msk = ukis
    return write_dataset(tmp_path / "mine", {"a": img[:, :128, :128], "b": img[:, 200:328, 300:428]},
                         {"a": msk[:128, :128], "b": msk[200:328, 300:428]}, UKIS_BANDS)
