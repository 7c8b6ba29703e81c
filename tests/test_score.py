"""``bench score``: masks against reference masks with evaluation's metrics. On the embedded eo-learn scenes
(CLM codes: 0 no cloud, 1 cloud): the masks against themselves, bench predict's s2cloudless masks against
them (the figures of ``bench run --model s2cloudless``), and those masks read back as a ``masks`` model; then
code tables, label spaces, nodata, grids and the refusals on tiny rasters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from bench.cli import main
from bench.core.errors import ConfigError, DataError, UnknownNameError
from bench.run.score import code_table, pairs_of, score

REPO = Path(__file__).resolve().parent.parent
EOLEARN = REPO / "bench" / "data" / "samples" / "eolearn_slovenia"
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
CLM = {"pred_codes": "masks_clm", "ref_codes": "masks_clm"}
FIGURES = ("iou", "miou", "accuracy", "n_pixels", "confusion", "field", "boundary", "cloud_cover")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    """bench predict's s2cloudless masks of the five eo-learn scenes, named by scene (codes 0-3, 255)."""
    out = tmp_path_factory.mktemp("s2cloudless_masks")
    for image in sorted((EOLEARN / "images").glob("*.tif")):
        assert main(["predict", "--model", "s2cloudless", str(image), "--bands", ",".join(S2),
                     "--out", str(out / image.name), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(predicted, tmp_path_factory) -> tuple[dict, dict, Path]:
    """``bench run`` on samples_cross of s2cloudless, and of its predicted masks read as a masks model."""
    from bench.run.runner import RunConfig, run

    out = tmp_path_factory.mktemp("runs")
    common = dict(scenario="samples_cross", out=str(out), figure=False, wandb="off", label_free=False,
                  leaderboards=False, progress=False)
    results = [run(RunConfig(model="s2cloudless", **common)),
               run(RunConfig(model="masks_cloudbench", settings={"root": str(predicted)}, **common))]
    s2, masks = (json.loads(r.path.read_text()) for r in results)
    return s2, masks, out


def reordered(cm: list, classes: list[str], to: list[str]) -> list:
    """A confusion matrix with its groups in the order ``to``."""
    idx = [classes.index(c) for c in to]
    return np.asarray(cm)[np.ix_(idx, idx)].tolist()


def unordered(d):  # noqa: ANN001, ANN201
    """Scores without what lists groups in their order (confusion matrices, class lists): the run's label
    space lists cloud first, the score's the finest space in class order."""
    if isinstance(d, dict):
        return {k: unordered(v) for k, v in d.items() if k not in ("confusion", "classes")}
    return d


def test_masks_scored_against_themselves_score_one_everywhere():
    report = score(pairs_of(ref_dir=str(EOLEARN / "masks"), pred_dir=str(EOLEARN / "masks")), **CLM)
    pooled = report["pooled"]
    assert report["label_space"] == {"not_cloud": ["clear", "cloud_shadow"], "cloud": ["thick_cloud", "thin_cloud"]}
    assert pooled["miou"] == pooled["accuracy"] == 1.0 and set(pooled["iou"].values()) == {1.0}
    assert {v for kind in ("pa", "ua", "f1") for v in pooled["field"][kind].values()} == {1.0}
    assert pooled["field"]["cloud"]["boa"] == 1.0 and pooled["field"]["shadow"] is None  # no shadow group
    assert {b["miou"] for b in pooled["boundary"].values()} == {1.0}
    assert pooled["cloud_cover"]["mae"] == 0.0 and len(report["pairs"]) == 5
    assert all(m["accuracy"] == 1.0 for m in report["pairs"].values())


def test_predicted_masks_score_exactly_as_bench_run_evaluates_the_model(predicted, runs):
    s2, _, _ = runs
    report = score(pairs_of(pred_dir=str(predicted), ref_dir=str(EOLEARN / "masks")), ref_codes="masks_clm")
    assert sorted(report["pairs"]) == sorted(s2["data"]["test"]["scenes"])
    run_classes, mine = s2["metrics"]["classes"], report["pooled"]["classes"]
    for scene, m in report["pairs"].items():
        assert m["confusion"] == reordered(s2["per_scene"][scene]["confusion"], run_classes, mine), scene
    pooled = report["pooled"]
    assert pooled["confusion"] == reordered(s2["metrics"]["confusion"], run_classes, mine)
    for k in ("iou", "miou", "accuracy", "n_pixels", "field", "boundary", "cloud_cover"):
        assert unordered(pooled[k]) == unordered(s2["metrics"][k]), k
    assert 0.99 < pooled["miou"] < 1.0  # a real comparison: 82 pixels of one scene differ


def test_predicted_masks_read_as_a_model_give_the_models_row(runs):
    from bench.boards.leaderboard import write_leaderboards

    s2, masks, out = runs
    assert masks["model"]["mode"] == "zero-shot" and masks["model"]["contract"]["framework"] == "masks"
    for k in FIGURES:
        assert masks["metrics"][k] == s2["metrics"][k], k
    assert {s: m["confusion"] for s, m in masks["per_scene"].items()} == {s: m["confusion"] for s, m in s2["per_scene"].items()}
    write_leaderboards(out, out / "boards", scenarios=["samples_cross"])
    board = pd.read_csv(out / "boards" / "samples_cross.csv").set_index("model")
    assert board.loc["masks_cloudbench", "mIoU"] == board.loc["s2cloudless", "mIoU"] == round(s2["metrics"]["miou"], 4)
    assert board.loc["s2cloudless", "trained on"] == "same as reference"  # the eo-learn masks are s2cloudless's
    assert bool(board.loc["masks_cloudbench", "ranked"])  # what made these files is not declared


def test_the_cli_prints_pairs_and_the_pooled_row_and_writes_json(predicted, tmp_path, capsys):
    scene = "2015-07-31.tif"
    assert main(["score", str(predicted / scene), str(EOLEARN / "masks" / scene), "--ref-codes", "masks_clm",
                 "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "label space: not_cloud = clear + cloud_shadow; cloud = thick_cloud + thin_cloud" in out
    assert "2015-07-31  10100" in out and "pooled      10100" in out and "4 px" in out
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["schema"] == "cloudbench score 1" and report["pooled"]["confusion"] == [[0, 0], [82, 10018]]


# ---- Tiny rasters -----------------------------------------------------------------------------------------
def tif(path: Path, array: np.ndarray, size: float = 10, x: float = 465180, crs: str | None = "EPSG:32633",
        nodata: float | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[0], width=array.shape[1], count=1,
                       dtype=array.dtype, crs=crs, transform=from_origin(x, 5080260, size, size), nodata=nodata) as dst:
        dst.write(array, 1)
    return path


REF = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [3, 3, 2, 2], [3, 3, 2, 2]], dtype=np.uint8)  # masks_cloudbench codes


def test_nodata_on_either_side_is_left_out(tmp_path):
    pred = REF.copy()
    pred[0, 0] = 255  # bench predict's nodata code
    ref = REF.copy()
    ref[3, 3] = 9  # the reference file's nodata value
    report = score(pairs_of([str(tif(tmp_path / "p.tif", pred)), str(tif(tmp_path / "r.tif", ref, nodata=9))]))
    assert report["pooled"]["n_pixels"] == 14 and report["pooled"]["accuracy"] == 1.0


def test_the_label_space_is_the_finest_both_tables_allow(tmp_path):
    pair = pairs_of([str(tif(tmp_path / "p.tif", np.array([[0, 1]], np.uint8))),
                     str(tif(tmp_path / "r.tif", np.array([[0, 2]], np.uint8)))])
    assert list(score(pair)["label_space"]) == ["clear", "thick_cloud", "thin_cloud", "cloud_shadow"]
    two = score(pair, pred_codes="0=clear,1=cloud")  # a cloud flag that does not say thick or thin
    assert two["label_space"]["cloud"] == ["thick_cloud", "thin_cloud"] and two["pooled"]["accuracy"] == 1.0
    assert list(score(pair, pred_codes="0=not_cloud,1=cloud")["label_space"]) == ["not_cloud", "cloud"]


def test_code_tables_come_from_presets_files_or_inline(tmp_path):
    (tmp_path / "qa.toml").write_text('bits = [10, 11]\ncodes = { 0 = "not_cloud", 1 = "thick_cloud", 2 = "thin_cloud", 3 = "thick_cloud" }\n')
    (tmp_path / "clm.json").write_text('{"0": "not_cloud", "1": "cloud", "255": "nodata"}')
    assert code_table(str(tmp_path / "qa.toml")) == code_table("masks_qa60")
    assert code_table(str(tmp_path / "clm.json")) == code_table("masks_clm") == code_table("0=not_cloud,1=cloud,255=nodata")
    assert code_table("3=clear+cloud_shadow").labels.codes[3] == frozenset({0, 3})
    with pytest.raises(UnknownNameError, match="did you mean 'masks_clm'"):
        code_table("masks_clmm")
    with pytest.raises(ConfigError, match="'unet_mnv2': a model, not a masks preset"):
        code_table("unet_mnv2")
    with pytest.raises(ConfigError, match="expected CODE=CLASS"):
        code_table("0=clear,1")


def test_a_code_outside_the_table_is_refused_naming_the_file(tmp_path):
    pred = tif(tmp_path / "p.tif", np.array([[0, 7, 7]], np.uint8))
    with pytest.raises(DataError, match=rf"{pred}: code 7 \(2 pixels\) not in the code table"):
        score(pairs_of([str(pred), str(tif(tmp_path / "r.tif", np.array([[0, 1, 1]], np.uint8)))]))


@pytest.mark.parametrize("other,reason", [
    (dict(array=REF[:3]), r"shape \(3, 4\) vs \(4, 4\)"),
    (dict(array=REF, crs="EPSG:32634"), "CRS EPSG:32634 vs EPSG:32633"),
    (dict(array=REF, x=465190), "transform"),
])
def test_another_grid_is_refused_naming_both_files(tmp_path, other, reason):
    pred, ref = tif(tmp_path / "p.tif", **other), tif(tmp_path / "r.tif", REF)
    with pytest.raises(DataError, match=rf"{pred} is not on the grid of {ref}: {reason} .*pass --reproject"):
        score(pairs_of([str(pred), str(ref)]))


def test_reproject_resamples_pred_onto_the_references_grid(tmp_path):
    ref = tif(tmp_path / "r.tif", REF)
    coarse = tif(tmp_path / "p20.tif", REF[::2, ::2], size=20)  # the same masks at 20 m
    same = score(pairs_of([str(tif(tmp_path / "p.tif", REF)), str(ref)]))
    assert score(pairs_of([str(coarse), str(ref)]), reproject=True)["pooled"] == same["pooled"]
    shifted = tif(tmp_path / "shifted.tif", REF[:, :2], x=465180 + 20)  # covers the right half only
    half = score(pairs_of([str(shifted), str(ref)]), reproject=True)["pooled"]
    assert half["n_pixels"] == 8  # outside PRED's footprint is nodata
    assert main(["score", str(coarse), str(ref)]) == 2


def test_pairs_come_from_arguments_folders_or_a_list_file(tmp_path, capsys):
    for side in ("pred", "ref"):
        (tmp_path / side).mkdir()
        for name in ("a", "b"):
            tif(tmp_path / side / f"{name}.tif", REF)
    (tmp_path / "pairs.txt").write_text("# pred ref\npred/a.tif ref/a.tif\n\npred/b.tif, ref/b.tif\n")
    by_folder = pairs_of(pred_dir=str(tmp_path / "pred"), ref_dir=str(tmp_path / "ref"))
    assert [p.name for p in by_folder] == ["a", "b"] and pairs_of(pairs_file=str(tmp_path / "pairs.txt")) == by_folder
    tif(tmp_path / "ref" / "c.tif", REF)
    with pytest.raises(DataError, match=r"pred has no mask for c \(files are matched by stem\)"):
        pairs_of(pred_dir=str(tmp_path / "pred"), ref_dir=str(tmp_path / "ref"))
    assert main(["score", str(tmp_path / "pred" / "a.tif")]) == 2
    assert capsys.readouterr().err == "error: files come in pairs, PRED REF [PRED REF ...]; got 1\n"
    assert main(["score", str(tmp_path / "pred" / "a.tif"), str(tmp_path / "missing.tif")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing.tif: no such file")
