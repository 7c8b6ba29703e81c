"""Masks made by other tools as a model (type ``masks``): each preset's code table against its published
table, reading a scene's file strip by strip, and the refusals (no root, no file, an unknown code, another
grid, a code the contract cannot give)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from bench.core.errors import ConfigError, DataError
from bench.core.labels import CLASSES, IGNORE, class_set
from bench.core.registry import Registry, get_registry
from bench.models import masks
from bench.models.base import contract_of
from bench.models.masks import NODATA_CODE, CodeTable
from bench.run.inference import Tiling, scene_model_strips

TRANSFORM = from_origin(465180, 5080260, 10, 10)
CRS = "EPSG:32633"

# ---- The published code tables, transcribed with their sources, and what each published class is here ----
#: preset -> (source, {code: the producer's name of it})
PUBLISHED = {
    "masks_sen2cor_scl": (
        "ESA S2 MPC Sen2Cor Configuration and User Manual S2-PDGS-MPC-L2A-SUM-V2.9 (2020); the same list in the "
        "Earth Engine catalogue COPERNICUS/S2_SR_HARMONIZED band SCL and Sentinel Hub's SCL custom script",
        {0: "NO_DATA", 1: "SATURATED_OR_DEFECTIVE", 2: "DARK_AREA_PIXELS", 3: "CLOUD_SHADOWS", 4: "VEGETATION",
         5: "NOT_VEGETATED", 6: "WATER", 7: "UNCLASSIFIED", 8: "CLOUD_MEDIUM_PROBABILITY",
         9: "CLOUD_HIGH_PROBABILITY", 10: "THIN_CIRRUS", 11: "SNOW"}),
    "masks_fmask4": (
        "GERS lab Fmask README, 4.6 / 4.7 Version: 'XXXFmask.tif ... 0 => clear land pixel, 1 => clear water "
        "pixel, 2 => cloud shadow, 3 => snow, 4 => cloud, 255 => no observation'",
        {0: "clear land pixel", 1: "clear water pixel", 2: "cloud shadow", 3: "snow", 4: "cloud",
         255: "no observation"}),
    "masks_fmask5": (
        "GERSL/Fmask README, Output table; src/constant.py LABEL_LAND=0, LABEL_WATER=1, LABEL_SHADOW=2, "
        "LABEL_SNOW=3, LABEL_CLOUD=4, LABEL_FILL=255",
        {0: "Land", 1: "Water", 2: "Cloud Shadow", 3: "Snow/Ice", 4: "Cloud", 255: "Filled"}),
    "masks_clm": (
        "Sentinel Hub, Cloud Masks and Cloud Probabilities: 'CLM: 0 (no clouds), 1 (clouds), 255 (no data)'",
        {0: "no clouds", 1: "clouds", 255: "no data"}),
    "masks_omnicloudmask": (
        "omnicloudmask 1.8.1 constants.py: CLASS_NAMES = {0: 'CLEAR', 1: 'THICK_CLOUD', 2: 'THIN_CLOUD', "
        "3: 'CLOUD_SHADOW'}",
        {0: "CLEAR", 1: "THICK_CLOUD", 2: "THIN_CLOUD", 3: "CLOUD_SHADOW"}),
    "masks_cloudsen12": (
        "Aybar et al., CloudSEN12, Scientific Data 9:782 (2022), table 3; 99 unlabelled as CloudSEN12+ labels "
        "use it (OmniCloudMask's training code: ignore_index=99)",
        {0: "Clear", 1: "Thick Cloud", 2: "Thin Cloud", 3: "Cloud Shadow", 99: "unlabelled"}),
    "masks_cloudsen12_scribble": (
        "isp-uv-es/CloudSEN12Plus dataset card (commit 555bc10), 'For human scribble labels'",
        {0: "clear", 1: "thick-cloud border", 2: "thick-cloud center", 3: "thin-cloud border",
         4: "thin-cloud center", 5: "cloud-shadow border", 6: "cloud-shadow center", 99: "unlabelled"}),
}
#: the producer's class -> the project class, group or nodata it stands for (the judgement calls of
#: registry/models.toml: a cloud flag that does not say thick or thin is ``cloud``; a mask without shadows
#: says ``not_cloud``; snow, water and terrain shadow are clear surfaces)
MEANING = {
    "NO_DATA": "nodata", "SATURATED_OR_DEFECTIVE": "nodata", "DARK_AREA_PIXELS": "clear",
    "CLOUD_SHADOWS": "cloud_shadow", "VEGETATION": "clear", "NOT_VEGETATED": "clear", "WATER": "clear",
    "UNCLASSIFIED": "clear", "CLOUD_MEDIUM_PROBABILITY": "cloud", "CLOUD_HIGH_PROBABILITY": "cloud",
    "THIN_CIRRUS": "thin_cloud", "SNOW": "clear",
    "clear land pixel": "clear", "clear water pixel": "clear", "cloud shadow": "cloud_shadow", "snow": "clear",
    "cloud": "cloud", "no observation": "nodata",
    "Land": "clear", "Water": "clear", "Cloud Shadow": "cloud_shadow", "Snow/Ice": "clear", "Cloud": "cloud",
    "Filled": "nodata",
    "no clouds": "not_cloud", "clouds": "cloud", "no data": "nodata",
    "CLEAR": "clear", "THICK_CLOUD": "thick_cloud", "THIN_CLOUD": "thin_cloud", "CLOUD_SHADOW": "cloud_shadow",
    "Clear": "clear", "Thick Cloud": "thick_cloud", "Thin Cloud": "thin_cloud", "unlabelled": "nodata",
    "clear": "clear", "thick-cloud border": "thick_cloud", "thick-cloud center": "thick_cloud",
    "thin-cloud border": "thin_cloud", "thin-cloud center": "thin_cloud", "cloud-shadow border": "cloud_shadow",
    "cloud-shadow center": "cloud_shadow",
}


def table_of(name: str) -> CodeTable:
    return CodeTable.from_settings(get_registry().get("model", name).settings, name)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_a_presets_code_table_is_its_published_table(name):
    source, published = PUBLISHED[name]
    expected = {code: class_set(MEANING[label], source) for code, label in published.items()}
    assert dict(table_of(name).labels.codes) == expected, source


def test_bench_predicts_codes_are_the_masks_cloudbench_table():
    from bench.run.predict import NODATA  # what bench predict writes: the class index, 255 at nodata

    published = {**dict(enumerate(CLASSES)), NODATA: "nodata"}
    assert dict(table_of("masks_cloudbench").labels.codes) == {c: class_set(n, "predict") for c, n in published.items()}


def test_qa60_reads_bit_10_opaque_and_bit_11_cirrus():
    """Earth Engine catalogue, COPERNICUS/S2_HARMONIZED band QA60: bit 10 opaque clouds, bit 11 cirrus clouds,
    bits 0-9 unused."""
    table = table_of("masks_qa60")
    values = np.array([[0, 1024, 2048, 3072, 1024 | 7, 1 << 12]])
    codes, valid = table.decode(values, np.ones(values.shape, bool), "qa60")
    assert codes.tolist() == [[0, 1, 2, 3, 1, 0]] and valid.all()
    classes = [sorted(CLASSES[c] for c in table.labels.codes[int(k)]) for k in codes[0]]
    assert classes == [["clear", "cloud_shadow"], ["thick_cloud"], ["thin_cloud"], ["thick_cloud"],
                       ["thick_cloud"], ["clear", "cloud_shadow"]]


def test_every_masks_preset_is_checked_here_and_runs_zero_shot_without_weights(tmp_path):
    presets = [e for e in get_registry().entries("model") if e.builder.name == "masks"]
    assert sorted(e.name for e in presets) == sorted([*PUBLISHED, "masks_qa60", "masks_cloudbench"])
    for entry in presets:
        contract = contract_of(entry)
        assert contract.framework == "masks" and contract.pretrained and not contract.weights, entry.name
        assert contract.citation and contract.licence and len(contract.output_names) == len(contract.outputs.codes)
        assert entry.with_settings({"root": str(tmp_path)}).build(in_channels=13).weights.endswith("(no weights)")
    assert contract_of(get_registry().get("model", "masks_clm")).algorithm == "s2cloudless"  # scores itself as such


# ---- Reading a scene's mask file -----------------------------------------------------------------------
def write_mask(path: Path, array: np.ndarray, transform=TRANSFORM, crs: str | None = CRS,  # noqa: ANN001
               nodata: float | None = None) -> Path:
    array = array[None] if array.ndim == 2 else array
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=len(array),
                       dtype=array.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(array)
    return path


def meta(stem: str = "a", **extra) -> dict:  # noqa: ANN003
    return {"stem": stem, "crs": CRS, "transform": list(TRANSFORM)[:6], "image": f"images/{stem}.tif", **extra}


def model(root: Path, name: str = "masks_cloudbench", **settings):  # noqa: ANN003, ANN201
    return get_registry().get("model", name).with_settings({"root": str(root), **settings}).build(in_channels=13).module


def classes_of(module, scene: str, shape: tuple[int, int], name: str, strips=None, **extra) -> np.ndarray:  # noqa: ANN001, ANN003
    """The project classes evaluation gets from a masks model, strip by strip, the image never read."""
    contract = contract_of(get_registry().get("model", name))
    parts = scene_model_strips(None, *shape, Tiling(32), module, contract, strips, scene=(scene, meta(**extra)))
    return np.concatenate([p[2][0] for p in parts])


def test_a_scene_reads_its_file_through_the_code_table_strip_by_strip(tmp_path):
    scl = np.array([[0, 3, 8, 9], [10, 4, 11, 1], [2, 7, 5, 6]], dtype=np.uint8)
    write_mask(tmp_path / "T33_SCL.tif", scl)
    m = model(tmp_path, "masks_sen2cor_scl")
    clear, thick, thin, shadow = range(4)
    expected = [[IGNORE, shadow, thick, thick], [thin, clear, clear, IGNORE], [clear, clear, clear, clear]]
    got = classes_of(m, "scene-1", (3, 4), "masks_sen2cor_scl", stem="T33", strips=[(0, 1), (1, 3)])
    assert got.tolist() == expected  # "cloud" (8, 9) gives its set's first class, as every cloud-only model does
    assert m.bind("scene-1", meta("T33"), (3, 4)).predict_rows(1, 2).tolist() == [[3, 0, 0, NODATA_CODE]]


def test_the_files_nodata_value_is_nodata_whatever_the_code(tmp_path):
    write_mask(tmp_path / "a.tif", np.array([[0, 1], [3, 2]], dtype=np.uint8), nodata=3)
    assert classes_of(model(tmp_path), "a", (2, 2), "masks_cloudbench").tolist() == [[0, 1], [IGNORE, 2]]


def test_template_band_and_bits_are_settings(tmp_path):
    qa = np.stack([np.zeros((1, 3), np.uint16), np.array([[0, 1024, 2048]], np.uint16)])
    write_mask(tmp_path / "scene-7__a.tif", qa)
    m = model(tmp_path, "masks_qa60", template="{scene}__{stem}.tif", band=2)
    assert classes_of(m, "scene-7", (1, 3), "masks_qa60").tolist() == [[0, 1, 2]]
    with pytest.raises(ConfigError, match=r"template '\{tile\}.tif' may use \{scene\} and \{stem\} only"):
        model(tmp_path, template="{tile}.tif")


# ---- Refusals ---------------------------------------------------------------------------------------------
def test_without_a_folder_the_model_says_to_pass_masks(tmp_path):
    with pytest.raises(ConfigError, match=r"pass --masks DIR .* or set root in the model's TOML"):
        get_registry().get("model", "masks_cloudbench").build(in_channels=13)
    with pytest.raises(ConfigError, match="is not a folder"):
        model(tmp_path / "nowhere")


def test_a_scene_without_a_mask_file_is_refused_naming_the_path(tmp_path):
    with pytest.raises(DataError, match=rf"scene 'b' has no mask file: looked for {tmp_path}/b_SCL.tif"):
        model(tmp_path, "masks_sen2cor_scl").bind("b", meta("b"), (2, 2))


def test_a_code_outside_the_table_is_refused_with_its_pixels_and_file(tmp_path):
    path = write_mask(tmp_path / "a.tif", np.array([[0, 7], [7, 200]], dtype=np.uint8))
    bound = model(tmp_path).bind("a", meta(), (2, 2))
    with pytest.raises(DataError, match=rf"{path}: code 7 \(2 pixels\), code 200 \(1 pixels\) not in the code table"):
        bound.predict_rows(0, 2)
    with pytest.raises(DataError, match=r"code 7 \(1 pixels\) not in"):  # a strip counts its own pixels
        bound.predict_rows(0, 1)
    write_mask(tmp_path / "b.tif", np.array([[0, 1], [2, 3]], dtype=np.uint8))
    assert model(tmp_path).bind("b", meta("b"), (2, 2)).predict_rows(0, 2).tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize("change,reason", [
    ({"shape": (3, 2)}, r"shape \(2, 2\) vs \(3, 2\)"),
    ({"crs": "EPSG:32634"}, "CRS EPSG:32633 vs EPSG:32634"),
    ({"transform": list(from_origin(465200, 5080260, 10, 10))[:6]}, "transform .*465180.* vs .*465200"),
])
def test_a_mask_on_another_grid_than_its_scene_is_refused_naming_both(tmp_path, change, reason):
    path = write_mask(tmp_path / "a.tif", np.zeros((2, 2), dtype=np.uint8))
    shape = change.pop("shape", (2, 2))
    with pytest.raises(DataError, match=rf"{path} is not on the grid of scene 'a' \(images/a.tif\): {reason}"):
        model(tmp_path).bind("a", meta(**change), shape)


def test_a_grid_within_a_hundredth_of_a_pixel_is_the_same_grid(tmp_path):
    write_mask(tmp_path / "a.tif", np.zeros((2, 2), dtype=np.uint8))
    close = list(from_origin(465180.05, 5080260, 10, 10))[:6]
    assert model(tmp_path).bind("a", meta(transform=close), (2, 2)).predict_rows(0, 2).tolist() == [[0, 0], [0, 0]]


def test_a_code_the_contract_cannot_give_is_refused_when_built(tmp_path):
    reg = Registry()
    reg.add_module(masks)
    settings = {"codes": {"0": "clear", "4": "cloud"}, "template": "{stem}.tif", "root": str(tmp_path),
                "contract": {"framework": "masks", "outputs": ["clear", "thick_cloud", "thin_cloud", "cloud_shadow"],
                             "trained_on": "another tool"}}
    entry = reg.add("model", "mine", type="masks", settings=settings)
    with pytest.raises(ConfigError, match=r"code 4 = \['thick_cloud', 'thin_cloud'\] is not among the contract's outputs"):
        entry.build(in_channels=1)
    fixed = {**settings, "contract": {**settings["contract"], "outputs": ["clear", "cloud"]}}
    assert reg.add("model", "fixed", type="masks", settings=fixed).build(in_channels=1).module.lut.tolist() == [0, 255, 255, 255, 1]


def test_a_masks_model_cannot_predict_an_image_without_its_scene(tmp_path):
    with pytest.raises(ConfigError, match="reads one mask file per scene"):
        model(tmp_path).predict(np.zeros((13, 2, 2), np.float32))


def test_omnicloudmasks_nodata_is_its_files_mask_band(tmp_path):
    """OmniCloudMask writes nodata as 0, like clear, and marks it in an internal mask band (0 = nodata)."""
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(tmp_path / "a_OCM.tif", "w", driver="GTiff", height=1, width=3, count=1, dtype="uint8",
                           crs=CRS, transform=TRANSFORM) as dst:
            dst.write(np.array([[0, 0, 3]], np.uint8), 1)
            dst.write_mask(np.array([[0, 255, 255]], np.uint8))
    m = model(tmp_path, "masks_omnicloudmask")
    assert classes_of(m, "a", (1, 3), "masks_omnicloudmask").tolist() == [[IGNORE, 0, 3]]
