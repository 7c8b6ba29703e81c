"""`bench predict` and the inference path it shares with evaluation: tiles and overlaps, strips, nodata,
band naming, SAFE products, interruption, and agreement with evaluation on a real scene."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from bench.cli import main
from bench.core.errors import ConfigError, DataError
from bench.data.normalizers import HistMatch, Percentile, PercentileScene, ZScore
from bench.data.rasters import SAMPLE_STRIPS, check_scene, band_name, open_scene
from bench.models.base import Contract, class_indices
from bench.run.inference import FastPaths, Tiling, class_batches, predict_strips, resolve_precision
from bench.run.predict import Predictor, looked_up, predict
from conftest import UKIS_BANDS

REPO = Path(__file__).resolve().parent.parent
EOLEARN = REPO / "bench" / "data" / "samples" / "eolearn_slovenia" / "images" / "2015-07-11.tif"
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


class LocalNet(nn.Module):
    """A 3 x 3 convolution with edge-replicating padding: each output pixel sees its 8 neighbours only, so a
    scene predicted in tiles that overlap by at least 1 px must equal the scene predicted whole."""

    def __init__(self, bands: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(bands, 4, 3, padding=1, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def whole(net: nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(np.nan_to_num(image))[None]).argmax(1)[0].numpy()


def tiled(net: nn.Module, image: np.ndarray, tiling: Tiling, strips=None, batch_size: int = 3) -> np.ndarray:  # noqa: ANN001
    run = class_batches(FastPaths(channels_last=False), net, "cpu")
    parts = list(predict_strips(lambda r0, r1: image[:, r0:r1], *image.shape[1:], tiling, run, batch_size,
                                strips=strips))
    assert [p[0] for p in parts] == sorted(p[0] for p in parts)  # strips come out in order
    return np.concatenate([p[2][0] for p in parts])


@pytest.mark.parametrize("shape", [(200, 170), (64, 64), (65, 97), (31, 300), (113, 64)])
def test_overlapping_tiles_cover_every_pixel_once(shape):
    tiling = Tiling(64, 8)
    count = np.zeros(shape, dtype=int)
    for r0, r1 in tiling.strips(*shape, whole_pixels=0):
        for (wr, wc, wr1, wc1), (dr, dc, h, w) in tiling.tiles(r0, r1, *shape):
            assert 0 <= wr < wr1 <= shape[0] and 0 <= wc < wc1 <= shape[1] and wr1 - wr <= 64 and wc1 - wc <= 64
            # a tile is whole unless the scene's side is shorter than a tile: the last one sits flush
            assert wr1 - wr == min(64, shape[0]) and wc1 - wc == min(64, shape[1])
            count[wr + dr:wr + dr + h, wc + dc:wc + dc + w] += 1
    assert (count == 1).all()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_class_of_a_pixel_is_the_first_of_its_largest_logits(layout):
    logits = torch.randint(0, 3, (2, 4, 33, 40)).float().contiguous(memory_format=layout)  # many ties
    logits[0, :, 0, 0] = torch.tensor([1.0, 5.0, 5.0, 0.0])
    assert torch.equal(class_indices(logits), logits.argmax(1))
    assert class_indices(logits)[0, 0, 0] == 1 and class_indices(logits, keepdim=True).shape == (2, 1, 33, 40)


def test_a_scene_that_fits_in_a_tile_is_one_tile_as_a_whole(ukis):
    """512 x 512 with the 512 px default tile and 32 px overlap: one tile, not four; 101 x 100: one tile
    padded to 128 x 128 (a multiple of 32), not to the tile's 512; both equal the untiled prediction."""
    net = LocalNet(len(ukis[0])).eval()
    for image, side in ((ukis[0][:, :512, :512], 512), (ukis[0][:, :101, :100], 128)):
        tiling = Tiling(512, 32)
        shapes = []
        fast = class_batches(FastPaths(channels_last=False), net, "cpu")
        run = lambda x: shapes.append(tuple(x.shape)) or fast(x)  # noqa: E731
        out = np.concatenate([p[2][0] for p in predict_strips(lambda r0, r1: image[:, r0:r1], *image.shape[1:],
                                                              tiling, run, 4)])
        assert shapes == [(1, len(image), side, side)]
        assert (out == whole(net, image[:, :, :])).all()


def test_the_last_tile_sits_flush_with_the_edge():
    assert Tiling(512).spans(1000) == [(0, 512, 0, 500), (488, 1000, 500, 1000)]  # 24 px overlap split at 500
    tiling = Tiling(512, 32)  # at least 64 px of overlap: three tiles spread evenly
    assert tiling.spans(1000) == [(0, 512, 0, 378), (244, 756, 378, 622), (488, 1000, 622, 1000)]
    assert len(tiling.spans(512)) == 1 and tiling.size(101) == 128 and tiling.size(5000) == 512
    spans = tiling.spans(10980)  # a full Sentinel-2 tile: every overlap at least 2 x 32 px
    assert spans[0][0] == 0 and spans[-1][1] == 10980
    assert all(a[1] - b[0] >= 64 for a, b in zip(spans, spans[1:]))


def test_overlap_removes_seams_and_strips_change_nothing(ukis):
    image = ukis[0][:, :200, :170]
    net = LocalNet(len(image)).eval()
    expected = whole(net, image)
    for tiling in (Tiling(64, 1), Tiling(96, 16)):
        assert (tiled(net, image, tiling) == expected).all()
        strips = tiling.strips(*image.shape[1:], whole_pixels=0)
        assert len(strips) > 1 and (tiled(net, image, tiling, strips) == expected).all()
    even = image[:, :192, :128]  # sides that are multiples of the tile: without overlap, tiles only touch
    seams = tiled(net, even, Tiling(64, 0)) != whole(net, even)  # and their edges differ
    assert seams.any() and not seams[1:63, 1:63].any()


def test_precision_choice_follows_the_hardware():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="overlap"):
        Tiling(64, 32)


@pytest.mark.parametrize("norm", [PercentileScene(), HistMatch(quantiles=101)])
def test_streamed_scene_statistics_match_the_whole_scene(ukis, norm):
    image = ukis[0]
    if norm.needs_fit:
        norm.fit([(image[:, :256], None)])
    strips = [(r, min(r + 100, 512)) for r in range(0, 512, 100)]
    fn = norm.scene_function(image[:, r0:r1] for r0, r1 in strips)
    streamed = np.concatenate([fn(image[:, r0:r1]) for r0, r1 in strips], axis=1)
    exact = norm.transform(image)
    assert np.abs(streamed - exact).max() < 0.01 * np.abs(exact).max()


def scene_tif(tmp_path: Path, image: np.ndarray, descriptions: list[str] | None = None, nodata=None) -> Path:  # noqa: ANN001
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", height=image.shape[1], width=image.shape[2], count=len(image),
                       dtype=image.dtype, crs="EPSG:32633", transform=from_origin(465180, 5080260, 10, 10),
                       nodata=nodata) as dst:
        dst.write(image)
        for i, d in enumerate(descriptions or [], 1):
            dst.set_band_description(i, d)
    return path


def local_predictor(bands: list[str], norm=None) -> Predictor:  # noqa: ANN001
    return Predictor("local", LocalNet(len(bands)), norm or Percentile(0, 100).fit([(np.zeros((len(bands), 2, 2)), None),
                                                                                   (np.ones((len(bands), 2, 2)), None)]),
                     bands, Contract())


def test_predict_keeps_georeferencing_nodata_and_colours(tmp_path, ukis):
    image = (ukis[0][:, :150, :130] * 10000).astype(np.uint16)
    image[:, 10:20, 30:50] = 0  # nodata
    src = scene_tif(tmp_path, image, ["B2", "B03 (blue)", "B4", "B8", "B11", "B12"], nodata=0)
    predictor = local_predictor(UKIS_BANDS)
    w = predict(predictor, src, tmp_path / "mask.tif", tmp_path / "probs.tif", tile=64, overlap=4, progress=False,
                fast=FastPaths(channels_last=False))
    with rasterio.open(src) as a, rasterio.open(w.mask) as m, rasterio.open(tmp_path / "probs.tif") as p:
        assert (m.crs, m.transform, m.shape) == (a.crs, a.transform, a.shape)
        mask, probs = m.read(1), p.read()
        assert m.nodata == 255 and m.colormap(1)[255][3] == 0 and m.colormap(1)[3] == (84, 39, 143, 255)
        assert m.profile["compress"] == "deflate" and m.profile["tiled"]
    assert (mask[10:20, 30:50] == 255).all() and (probs[:, 10:20, 30:50] == 255).all()
    assert w.nodata_pixels == 200 and (mask != 255).sum() == 150 * 130 - 200
    expected = whole(predictor.module.eval(), predictor.normalizer.transform(image.astype(np.float32) * 1e-4))
    valid = mask != 255
    assert (mask[valid] == expected[valid]).all()  # nodata reaches the model as 0, whole or tiled
    assert np.abs(probs[:, valid].sum(0).astype(int) - 100).max() <= 2  # percent, rounded
    chosen = np.take_along_axis(probs, np.where(valid, mask, 0)[None], 0)[0]
    assert (chosen[valid] == probs[:, valid].max(0)).all()  # the class has the highest probability (ties: rounding)


def test_bands_are_named_by_flag_or_description_else_refused(tmp_path, ukis):
    assert [band_name(t) for t in ("B2", "b02", "B8A", "B8a (865 nm)", "red", None, "B13")] == \
        ["B02", "B02", "B8A", "B8A", None, None, None]
    src = scene_tif(tmp_path, ukis[0][:, :64, :64])
    with pytest.raises(DataError, match=r"scene.tif: its 6 bands are not named.*--bands"):
        open_scene(src)
    with pytest.raises(DataError, match="has 6 bands, --bands names 4"):
        open_scene(src, ["B02", "B03", "B04", "B08"])
    with pytest.raises(DataError, match=r"scene.tif: has no band B01.*which the model needs"):
        open_scene(src, UKIS_BANDS).select(["B01", "B02"])
    x = open_scene(src, UKIS_BANDS).select(["B04", "B02"]).read(0, 8)
    assert np.allclose(x, ukis[0][[2, 0], :8, :64])  # float: reflectance as it is, bands reordered


def write_safe(root: Path, dn: dict[str, np.ndarray], offset: int | None) -> Path:
    """A small L1C-like product: MTD_MSIL1C.xml and GRANULE/*/IMG_DATA/*_B??.jp2 (lossless), at 10/20/60 m."""
    safe = root / "S2B_MSIL1C_20240816T100559_N0511_R022_T34VEJ_20240816T120000.SAFE"
    img = safe / "GRANULE" / "L1C_T34VEJ_A000001_20240816T100559" / "IMG_DATA"
    img.mkdir(parents=True)
    offsets = "".join(f'<RADIO_ADD_OFFSET band_id="{i}">{offset}</RADIO_ADD_OFFSET>' for i in range(13)) if offset else ""
    (safe / "MTD_MSIL1C.xml").write_text(
        '<?xml version="1.0"?><n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">'
        "<n1:General_Info><Product_Info><PROCESSING_BASELINE>05.11</PROCESSING_BASELINE></Product_Info>"
        "<Product_Image_Characteristics><QUANTIFICATION_VALUE unit=\"none\">10000</QUANTIFICATION_VALUE>"
        f"<Radiometric_Offset_List>{offsets}</Radiometric_Offset_List></Product_Image_Characteristics>"
        "</n1:General_Info></n1:Level-1C_User_Product>")
    for band, a in dn.items():
        res = 600 // a.shape[0]
        with rasterio.open(img / f"T34VEJ_20240816T100559_{band}.jp2", "w", driver="JP2OpenJPEG", height=a.shape[0],
                           width=a.shape[1], count=1, dtype="uint16", crs="EPSG:32634",
                           transform=from_origin(500000, 6300000, res, res), QUALITY=100, REVERSIBLE="YES") as d:
            d.write(a[None])
    return safe


def test_safe_products_are_read_at_10_m_with_their_offset(tmp_path):
    rng = np.random.default_rng(0)
    size = {"B02": 60, "B03": 60, "B04": 60, "B08": 60, "B01": 10, "B09": 10, "B10": 10}
    dn = {b: rng.integers(1000, 6000, (size.get(b, 30),) * 2).astype(np.uint16) for b in S2}
    dn["B02"][:5, :5] = 0
    safe = write_safe(tmp_path, dn, offset=-1000)
    scene = open_scene(safe).select(["B02", "B11", "B01"])
    assert (scene.height, scene.width, scene.meta["processing_baseline"]) == (60, 60, "05.11")
    x = scene.read(0, 60)
    assert x.shape == (3, 60, 60) and np.isnan(x[0, :5, :5]).all()
    assert np.allclose(x[0, 5:, 5:], (dn["B02"][5:, 5:].astype(np.float32) - 1000) / 10000)
    assert np.allclose(x[1, 20:40:2, 20:40:2].mean(), ((dn["B11"][10:20, 10:20].astype(np.float32) - 1000) / 10000).mean(), atol=0.01)
    assert np.allclose(scene.read(10, 20), x[:, 10:20], equal_nan=True)  # windows read the same pixels
    counts = scene.read_counts(0, 60)  # as stored, then a tile converted as it is cut
    assert counts.dtype == np.uint16 and np.array_equal(scene.nodata(counts), np.isnan(x).any(0))
    np.testing.assert_array_equal(scene.reflectance(counts[:, 3:9, 2:50]), x[:, 3:9, 2:50])
    zipped = tmp_path / "product.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in safe.rglob("*"):
            z.write(f, f.relative_to(tmp_path))
    assert np.allclose(open_scene(zipped).select(["B02", "B11", "B01"]).read(0, 60), x, equal_nan=True)
    old = write_safe(tmp_path / "old", dn, offset=None)  # before baseline 04.00: no offset
    assert np.allclose(open_scene(old).select(["B02"]).read(5, 6)[0, 0, 5:], dn["B02"][5, 5:] / 10000)
    (safe / "MTD_MSIL1C.xml").unlink()
    with pytest.raises(DataError, match="no MTD_MSIL1C.xml"):
        open_scene(safe)


def test_interrupted_prediction_leaves_no_output(tmp_path, ukis):
    src = scene_tif(tmp_path, ukis[0][:, :200, :200], UKIS_BANDS)
    predictor = local_predictor(UKIS_BANDS)
    calls = []

    def stop(x):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return LocalNet.forward(predictor.module, x)

    predictor.module.forward = stop
    with pytest.raises(KeyboardInterrupt):
        predict(predictor, src, tmp_path / "out" / "mask.tif", tile=64, overlap=0, batch_size=2, progress=False)
    assert len(calls) == 2 and list((tmp_path / "out").iterdir()) == []
    (tmp_path / "out" / "mask.tif").write_text("mine")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        predict(predictor, src, tmp_path / "out" / "mask.tif", progress=False)
    assert (tmp_path / "out" / "mask.tif").read_text() == "mine"


def test_cli_predicts_an_embedded_scene_with_a_zoo_model(tmp_path, capsys):
    out = tmp_path / "s2cloudless.tif"
    assert main(["predict", "--model", "s2cloudless", str(EOLEARN), "--out", str(out), "--quiet"]) == 2
    assert "--bands" in capsys.readouterr().err
    assert main(["predict", "--model", "s2cloudless", str(EOLEARN), "--bands", ",".join(S2), "--out", str(out),
                 "--quiet"]) == 0
    with rasterio.open(EOLEARN) as a, rasterio.open(out) as m:
        assert (m.crs, m.transform, m.shape) == (a.crs, a.transform, a.shape)
        mask = m.read(1)
    reference = rasterio.open(EOLEARN.parent.parent / "masks" / EOLEARN.name).read(1)
    assert ((mask == 1) == (reference == 1)).mean() > 0.99  # the eo-learn masks are s2cloudless output
    assert main(["predict", "--model", "s2cloudless", str(EOLEARN), "--bands", ",".join(S2), "--out", str(out),
                 "--probabilities", str(tmp_path / "p.tif"), "--overwrite"]) == 2
    assert "gives classes, not probabilities" in capsys.readouterr().err
    assert main(["predict", "--model", "unet_mnv2", str(EOLEARN), "--out", str(out), "--overwrite"]) == 2
    assert "pass --run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):  # noqa: ANN201 - a real unet_mnv2 trained for 2 steps on the ukis patch
    from bench.run.runner import RunConfig, run

    out = tmp_path_factory.mktemp("runs")
    res = run(RunConfig(model="unet_mnv2", norm="percentile", scenario="samples_cross", weights="random",
                        recipe={"max_steps": 2, "epochs": 1, "batch_size": 4, "samples_per_epoch": 8}, out=str(out),
                        figure=False, leaderboards=False, wandb="off", progress=False))
    return res.path


def evaluation_of(result: Path, **kwargs):  # noqa: ANN003, ANN201
    from bench.run.evaluate import evaluate
    from bench.run.plan import RunConfig, plan
    from bench.run.training import train_or_load

    p = plan(RunConfig(model="unet_mnv2", norm="percentile", scenario="samples_cross", weights="random",
                       recipe={"max_steps": 2, "epochs": 1, "batch_size": 4, "samples_per_epoch": 8},
                       out=str(result.parents[2])))
    t = train_or_load(p)
    args = dict(patch=p.recipe.patch_size, batch_size=p.recipe.batch_size) | kwargs
    return p, t, evaluate(t.module, t.normalizer, p.splits["test"], p.space, **args)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # the same precision on both paths, on every CPU
def test_predict_equals_the_evaluation_of_the_same_run(trained_run, tmp_path, precision):
    tile = 128  # the 101 x 100 scenes in one tile each (bf16 may be emulated: no more pixels than needed)
    p, _, ev = evaluation_of(trained_run, fast=FastPaths(precision), patch=tile)
    lut = p.space.class_lut()
    images = EOLEARN.parent
    for scene, expected in ev.predictions.items():
        out = tmp_path / f"{scene}.tif"
        main(["predict", "--run", str(trained_run), str(images / f"{scene}.tif"), "--bands", ",".join(S2),
              "--out", str(out), "--tile", str(tile), "--overlap", "0", "--precision", precision,
              "--quiet"])
        assert json.loads(rasterio.open(out).tags()["fast_paths"])["precision"] == precision
        mask = rasterio.open(out).read(1)
        valid = expected != 255
        assert valid.any() and (lut[mask[valid]] == expected[valid]).all()
    if precision != "fp32":
        return
    folder = Path(json.loads(trained_run.read_text())["checkpoint"]).parent  # the model folder works as --run
    main(["predict", "--run", str(folder), str(images / f"{scene}.tif"), "--bands", ",".join(S2), "--out", str(out),
          "--tile", str(tile), "--overlap", "0", "--precision", precision, "--overwrite", "--quiet"])
    assert (lut[rasterio.open(out).read(1)[valid]] == expected[valid]).all()


def test_every_runtime_masks_a_scene_as_torch_does(trained_run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    tile = 128
    p, _, torch_ev = evaluation_of(trained_run, fast=FastPaths("fp32"), patch=tile)
    scene, expected = next(iter(torch_ev.predictions.items()))
    valid = expected != 255
    model_folder = Path(json.loads(trained_run.read_text())["checkpoint"]).parent
    for runtime in ("onnxruntime", "openvino", "auto"):
        out = tmp_path / f"{runtime}.tif"
        main(["predict", "--run", str(trained_run), str(EOLEARN.parent / f"{scene}.tif"), "--bands", ",".join(S2),
              "--out", str(out), "--tile", str(tile), "--overlap", "0", "--precision", "fp32", "--runtime", runtime,
              "--quiet"])
        ran = json.loads(rasterio.open(out).tags()["fast_paths"])["runtime"]
        assert ran == runtime if runtime != "auto" else ran in ("torch", "onnxruntime", "openvino")
        assert (p.space.class_lut()[rasterio.open(out).read(1)[valid]] == expected[valid]).mean() >= 0.999
    assert len(list((model_folder / "exports").glob("*.onnx"))) == 1  # exported beside the model, once
    exported = evaluation_of(trained_run, fast=FastPaths("fp32", runtime="onnxruntime", exports=str(model_folder)),
                             patch=tile)[2]
    assert exported.metrics["fast_paths"]["runtime"] == "onnxruntime"
    for s, pred in torch_ev.predictions.items():
        assert (exported.predictions[s] == pred).mean() >= 0.999


def test_windowed_evaluation_equals_the_whole_scene_evaluation(trained_run):
    _, _, whole_ = evaluation_of(trained_run, patch=32)
    _, _, strips = evaluation_of(trained_run, patch=32, whole_pixels=0)  # 32-row strips read from the files
    assert strips.metrics["confusion"] == whole_.metrics["confusion"]
    for scene in whole_.predictions:
        assert (strips.predictions[scene] == whole_.predictions[scene]).all()
    p, t, _ = evaluation_of(trained_run)
    from bench.run.evaluate import evaluate

    scene_norm = PercentileScene()
    exact = evaluate(t.module, scene_norm, p.splits["test"], p.space, 32, 4)
    streamed = evaluate(t.module, scene_norm, p.splits["test"], p.space, 32, 4, whole_pixels=0)
    agree = np.mean([(exact.predictions[s] == streamed.predictions[s]).mean() for s in exact.predictions])
    assert agree > 0.99


@pytest.mark.parametrize("norm", ["percentile", "percentile_scene"])
def test_training_crops_of_large_scenes_are_read_window_by_window(tiny_dataset, tmp_path, norm):
    from bench.core.registry import get_registry
    from bench.data.scenarios import load_scenario
    from bench.data.splits import load_split
    from bench.run.loaders import RandomCrops
    from conftest import write_scenario

    scenario = load_scenario(str(write_scenario(tmp_path / "s.toml", str(tiny_dataset), str(tiny_dataset))))
    split = load_split(scenario, "train")
    normalizer = get_registry().get("norm", norm).build().fit(split.samples())
    whole_, windowed = (RandomCrops(split, normalizer, 64, 6, seed=0) for _ in range(2))
    windowed.whole_pixels = 0  # every scene counts as large: each crop is its own windowed read
    for i in range(6):
        (xa, ya), (xb, yb) = whole_[i], windowed[i]
        assert (ya == yb).all()
        assert torch.allclose(xa, xb, atol=0 if norm == "percentile" else 0.01)


@pytest.mark.parametrize("norm", [None, PercentileScene()])
@pytest.mark.parametrize("stored", ["reflectance", "digital numbers"])  # strips held as float32, or as uint16
def test_a_scene_predicted_in_strips_equals_it_predicted_whole(tmp_path, ukis, norm, stored):
    image = ukis[0][:, :300, :260]
    if stored == "digital numbers":
        image = np.round(image * 10000).clip(1, 65535).astype(np.uint16)
        image[:, 100:110, :50] = 0  # nodata
    src = scene_tif(tmp_path, image, UKIS_BANDS, nodata=0 if stored == "digital numbers" else None)
    predictor = local_predictor(UKIS_BANDS, norm)
    masks = []
    for whole_pixels, name in ((10 ** 9, "whole.tif"), (0, "strips.tif")):  # 0: 64 - 2 x 8 = 48-row strips
        predict(predictor, src, tmp_path / name, tile=64, overlap=8, progress=False, whole_pixels=whole_pixels)
        masks.append(rasterio.open(tmp_path / name).read(1))
    agree = (masks[0] == masks[1]).mean()
    assert agree == 1 if norm is None else agree > 0.99  # scene statistics: exact whole, streamed in strips


@pytest.mark.parametrize("norm", [Percentile(), ZScore(), HistMatch(), PercentileScene()])
@pytest.mark.parametrize("dtype", ["uint16", "uint8", "int16", "uint32"])  # by table, then computed
def test_a_tile_of_digital_numbers_is_normalized_by_table_as_by_computing_it(tmp_path, norm, dtype):
    rng = np.random.default_rng(0)
    dn = rng.integers(0, 250 if dtype == "uint8" else 12000, (3, 50, 40)).astype(dtype)
    dn[:, :4] = 0  # nodata
    path = scene_tif(tmp_path, dn, ["B02", "B03", "B04"], nodata=0)
    with open_scene(path, offset=-1000).select(["B02", "B03", "B04"]) as raster:
        reflectance = raster.read(0, 50)
        train = [(rng.uniform(0, 0.6, (3, 30, 30)).astype(np.float32), None)]
        pointwise = norm.fit(train).scene_function([reflectance])  # a scene-level one: after its pass
        counts = raster.read_counts(0, 50)[:, 2:41, 3:37]  # rows 2 and 3 nodata
        assert counts.dtype == (np.float32 if dtype == "uint32" else dtype)  # 32-bit: read as reflectance
        expected = pointwise(reflectance[:, 2:41, 3:37])
        np.testing.assert_array_equal(looked_up(raster, pointwise)(counts), expected)
        batch = np.full((2, *counts.shape), np.nan, dtype=np.float32)  # into a model's batch: nodata as 0
        looked_up(raster, pointwise).into(counts, batch[1])
        np.testing.assert_array_equal(batch[1], np.where(np.isfinite(expected), expected, 0))
        assert np.isnan(batch[0]).all() and not np.isfinite(expected).all()


def test_a_folder_of_scenes_with_one_command_resumes_and_reports_a_failure(tmp_path, capsys):
    """--out-dir: each scene's mask with its class percentages; a broken scene is reported and the others
    go on (exit 1); the same command again skips the complete masks and redoes an interrupted one."""
    import shutil

    scenes = tmp_path / "scenes"
    shutil.copytree(EOLEARN.parent, scenes)
    (scenes / "zz_broken.tif").write_text("not a GeoTIFF")
    args = ["predict", "--model", "s2cloudless", str(scenes), "--out-dir", str(tmp_path / "masks"),
            "--bands", ",".join(S2), "--quiet"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "6 scenes: 5 written, 0 skipped, 1 failed" in out and "zz_broken.tif   failed" in out
    masks = sorted((tmp_path / "masks").glob("*.tif"))
    assert [m.stem for m in masks] == [p.stem for p in sorted(EOLEARN.parent.glob("*.tif"))]
    with rasterio.open(masks[1]) as m:  # 2015-07-31: almost all cloud
        tags, classes = m.tags(), m.read(1)
    cloud = np.isin(classes, [1, 2]).sum() / (classes != 255).sum()
    assert float(tags["cloud_percent"]) == pytest.approx(100 * cloud, abs=0.01) and cloud > 0.9
    assert sum(float(tags[f"{c}_percent"]) for c in ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")) == pytest.approx(100, abs=0.05)
    masks[0].unlink()  # as if a kill had stopped the batch before its first mask was renamed into place
    (tmp_path / "masks" / f".{masks[0].name}.partial").write_bytes(b"half a file")
    (scenes / "zz_broken.tif").unlink()
    assert main(args) == 0
    assert "5 scenes: 1 written, 4 skipped, 0 failed" in capsys.readouterr().out and masks[0].exists()


def test_inputs_by_glob_and_list_file_and_an_output_that_is_an_input_is_never_written(tmp_path, capsys):
    from bench.run.predict_many import scene_paths

    listed = tmp_path / "scenes.txt"
    listed.write_text(f"{EOLEARN}  # the July scene\n\n{EOLEARN.parent / '2015-07-31.tif'}\n")
    assert scene_paths([f"@{listed}", str(EOLEARN.parent / "2015-07-*.tif")]) == [
        EOLEARN, EOLEARN.parent / "2015-07-31.tif"]
    with pytest.raises(DataError, match="names no scene"):
        scene_paths([str(tmp_path / "*.tif")])
    copy = tmp_path / "scene.tif"
    copy.write_bytes(EOLEARN.read_bytes())
    for extra in ([], ["--overwrite"]):
        assert main(["predict", "--model", "s2cloudless", str(copy), "--out", str(tmp_path / "." / "scene.tif"),
                     "--bands", ",".join(S2), "--quiet", *extra]) == 2
        assert "is the input scene" in capsys.readouterr().err
    assert copy.read_bytes() == EOLEARN.read_bytes()


def test_inputs_whose_units_are_wrong_or_with_no_valid_pixel_are_refused_before_predicting(tmp_path, capsys):
    """Digital numbers stored as floats (read as reflectance), reflectance stored as integers x 1 (read as
    digital numbers), and a scene that is all nodata: each refused with the file and what to pass."""
    with rasterio.open(EOLEARN) as src:
        dn, profile = src.read(), src.profile
    cases = {"dn_as_float.tif": (dn.astype("float32"), "float32", 0, "--scale 0.0001"),
             "reflectance_as_dn.tif": ((dn > 1500).astype("uint16"), "uint16", None, "--scale 1"),
             "all_nodata.tif": (np.zeros_like(dn), "uint16", 0, "no valid pixel")}
    for name, (data, dtype, nodata, says) in cases.items():
        path = tmp_path / name
        with rasterio.open(path, "w", **{**profile, "dtype": dtype, "nodata": nodata}) as dst:
            dst.write(data.astype(dtype))
        assert main(["predict", "--model", "s2cloudless", str(path), "--out", str(tmp_path / f"mask_{name}"),
                     "--bands", ",".join(S2), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and says in err, err
        assert not (tmp_path / f"mask_{name}").exists()


def test_jobs_mask_scenes_in_worker_processes_as_one_process_does(tmp_path):
    images = EOLEARN.parent
    common = ["--model", "s2cloudless", str(images), "--bands", ",".join(S2), "--quiet"]
    assert main(["predict", *common, "--out-dir", str(tmp_path / "one")]) == 0
    assert main(["predict", *common, "--out-dir", str(tmp_path / "two"), "--jobs", "2"]) == 0
    # the Slurm path, through submitit's local executor: 2 jobs, each with its share of the scenes
    assert main(["predict", *common, "--out-dir", str(tmp_path / "submitted"), "--jobs", "2",
                 "--launcher", "submitit_local"]) == 0
    masks = sorted((tmp_path / "one").glob("*.tif"))
    assert len(masks) == 5 and len(list((tmp_path / "submitted" / ".jobs").rglob("*_log.out"))) == 2
    for mask in masks:
        for other in ("two", "submitted"):
            with rasterio.open(mask) as a, rasterio.open(tmp_path / other / mask.name) as b:
                assert (a.read(1) == b.read(1)).all() and a.tags()["cloud_percent"] == b.tags()["cloud_percent"]
    assert main(["predict", *common, "--out", str(tmp_path / "x.tif"), "--jobs", "2"]) == 2  # one scene, one job


def test_a_submitted_job_that_fails_marks_its_scenes_failed_and_the_others_go_on(tmp_path):
    from bench.run.predict_many import predict_submitted, scene_paths

    class Job:  # what a submitit job offers: an id and its result, or its error
        def __init__(self, fn, args, lost: bool) -> None:  # noqa: ANN001
            self.fn, self.args, self.lost, self.job_id = fn, args, lost, "17"

        def result(self):  # noqa: ANN202
            if self.lost:
                raise RuntimeError("node lost\ntraceback ...")
            return self.fn(*self.args)

    class Executor:
        def __init__(self) -> None:
            self.jobs: list[Job] = []

        def submit(self, fn, *args):  # noqa: ANN001, ANN002, ANN202
            self.jobs.append(Job(fn, args, lost=not self.jobs))
            return self.jobs[-1]

    scenes = scene_paths([str(EOLEARN.parent)])
    outcomes = predict_submitted(Executor(), "s2cloudless", None, None, scenes, tmp_path, 2, progress=False,
                                 bands=S2)
    assert [o.status for o in outcomes] == ["failed", "written"] * 2 + ["failed"]  # every 2nd scene per job
    assert outcomes[0].detail == "job 17: node lost"
    assert sorted(p.name for p in tmp_path.glob("*.tif")) == sorted(o.mask.name for o in outcomes[1::2])


def test_reading_ahead_gives_every_item_in_order_and_raises_the_readers_error():
    from bench.run.inference import read_ahead

    assert list(read_ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():  # noqa: ANN202
        yield 1
        raise OSError("band 3: read error")

    with pytest.raises(OSError, match="read error"):
        list(read_ahead(failing()))
    produced = []

    def endless():  # noqa: ANN202
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = read_ahead(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # the consumer stops: the reading thread stops too, a few items ahead at most
    n = len(produced)
    import time

    time.sleep(0.3)
    assert len(produced) == n <= 5


def test_a_scene_is_read_whole_only_while_it_fits_the_memory_share_of_its_band_count():
    from bench.run.inference import WHOLE_BYTES, whole_pixels

    tiling = Tiling(512, 32)
    side = 2000  # 4 Mpx: 208 MB of float32 at 13 bands, 64 MB at 4
    assert 4 * 4 * side * side <= WHOLE_BYTES < 4 * 13 * side * side
    assert tiling.strips(side, side, whole_pixels=whole_pixels(4)) == [(0, side)]
    strips = tiling.strips(side, side, whole_pixels=whole_pixels(13))
    assert len(strips) > 1 and strips[0][0] == 0 and strips[-1][1] == side


def test_the_input_check_samples_every_16th_row_and_column_of_a_pixel_interleaved_scene(tmp_path):
    src = tmp_path / "scene.tif"
    data = np.random.default_rng(0).integers(1, 10000, (13, 300, 200)).astype(np.uint16)
    with rasterio.open(src, "w", driver="GTiff", height=300, width=200, count=13, dtype="uint16", tiled=True,
                       blockxsize=64, blockysize=64, interleave="pixel", crs="EPSG:32633",
                       transform=from_origin(0, 0, 10, 10)) as dst:
        dst.write(data)
    with open_scene(src, S2, None, 0.0).select(S2) as raster:
        assert raster.src.interleaving.value == "PIXEL"
        np.testing.assert_array_equal(raster.sample(), data[:, ::16, ::16].astype(np.float32) * np.float32(1e-4))
        rows = np.r_[0:64:16, 256:300:16]  # 2 evenly spaced strips of the 5 of block rows: the first and last
        np.testing.assert_array_equal(raster.sample(strips=2), data[:, rows, ::16].astype(np.float32) * np.float32(1e-4))


def test_a_scene_is_refused_only_on_its_full_sample(tmp_path):
    src = tmp_path / "scene.tif"
    data = np.zeros((13, 300, 200), dtype=np.uint16)
    data[:, 140:150] = 3000  # valid rows only in a strip that the first, sparse sample leaves out
    with rasterio.open(src, "w", driver="GTiff", height=300, width=200, count=13, dtype="uint16", tiled=True,
                       blockxsize=16, blockysize=16, interleave="pixel", nodata=0, crs="EPSG:32633",
                       transform=from_origin(0, 0, 10, 10)) as dst:
        dst.write(data)
    with open_scene(src, S2, None, 0.0).select(S2) as raster:
        assert not np.isfinite(raster.sample(strips=SAMPLE_STRIPS)).any()
        check_scene(raster)  # accepted: the full sample has valid pixels


def test_ramp_blending_masks_a_trained_model_as_cropping_does_but_for_seams(trained_run, tmp_path):
    import rasterio

    masks = {}
    for blend in ("crop", "ramp"):
        out = tmp_path / f"{blend}.tif"
        main(["predict", "--run", str(trained_run), str(EOLEARN), "--bands", ",".join(S2), "--out", str(out),
              "--tile", "64", "--overlap", "16", "--blend", blend, "--precision", "fp32", "--quiet"])
        with rasterio.open(out) as f:
            masks[blend], tags = f.read(1), f.tags()
        assert tags["blend"] == blend
    assert 0.8 <= (masks["crop"] == masks["ramp"]).mean() < 1  # the same model (trained 2 steps: noisy at tile edges)


@pytest.mark.parametrize("kind", ["nodata value", "mask band", "all valid"])
def test_a_strip_is_read_with_the_files_nodata_as_rasterio_masks_it(tmp_path, kind):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 5000, (3, 40, 30)).astype(np.uint16)
    data[:, :5] = 0
    data[1, 10:12, 3:9] = 0
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", height=40, width=30, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(0, 0, 10, 10), nodata=0 if kind == "nodata value" else None) as dst:
        dst.write(data)
        if kind == "mask band":
            dst.write_mask(np.where(np.arange(40)[:, None] < 5, 0, 255).astype(np.uint8).repeat(30, 1))
    with rasterio.open(path) as f:
        masked = f.read(window=rasterio.windows.Window(0, 3, 30, 20), masked=True)
    expected = np.where(np.ma.getmaskarray(masked), np.nan, masked.data.astype(np.float32) * np.float32(1e-4))
    with open_scene(path, ["B02", "B03", "B04"], offset=-2).select(["B02", "B03", "B04"]) as raster:
        got, counts = raster.read(3, 23), raster.read_counts(3, 23)
        tile = raster.reflectance(counts[:, 4:9, 2:20])  # a strip held as stored, a tile converted as it is cut
        nodata = raster.nodata(counts)
    expected = np.where(np.isnan(expected), np.nan, (masked.data.astype(np.float32) - 2) * np.float32(1e-4))
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert np.isnan(got).any() == (kind != "all valid")
    assert counts.dtype == (np.float32 if kind == "mask band" else np.uint16)  # a mask band: read as reflectance
    np.testing.assert_array_equal(tile, got[:, 4:9, 2:20])
    np.testing.assert_array_equal(nodata, np.isnan(got).any(0))
