"""Reading data and cutting it into patches and tiles; each bad input gets a clear error."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.data.splits import load_split, tile_grid
from bench.data.datasets import load_dataset
from bench.core.errors import DataError
from bench.data.scenarios import load_scenario
from conftest import UKIS_BANDS, write_dataset, write_scenario


@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from([32, 64, 128, 256]))
def test_tiles_cover_every_pixel_exactly_once(h, w, tile):
    seen = np.zeros((h, w), dtype=int)
    for r0, c0, r1, c1 in tile_grid(h, w, tile):
        assert r1 - r0 <= tile and c1 - c0 <= tile
        seen[r0:r1, c0:c1] += 1
    assert (seen == 1).all()


def test_embedded_scenarios_read_real_data():
    s = load_scenario("samples_cross")
    train, test = load_split(s, "train"), load_split(s, "test")
    assert train.scenes[0].image.shape == (6, 512, 384)
    assert [x.id for x in test.scenes] == ["2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09"]
    assert test.reference == "algorithmic" and train.reference == "human"
    img = test.scenes[0].image
    assert 0 < np.nanmin(img) and np.nanmax(img) < 1.5  # reflectance, not digital numbers
    assert all(len(sha) == 64 for sha in test.files.values()) and len(test.files) == 10


def test_a_band_the_source_lacks(tiny_dataset, tmp_path):
    scenario = write_scenario(tmp_path / "s.toml", str(tiny_dataset), str(tiny_dataset),
                              bands=["B02", "B03", "B04", "B8A"])
    with pytest.raises(DataError, match="dataset 'mine' has no band 'B8A'"):
        load_split(load_scenario(str(scenario)), "train")


def test_digital_numbers_declared_as_reflectance(tmp_path, ukis):
    img, msk = ukis
    toml = write_dataset(tmp_path / "dn", {"a": (img[:, :64, :64] * 10000).astype(np.uint16)}, {"a": msk[:64, :64]},
                         UKIS_BANDS)
    with pytest.raises(DataError, match="look like digital numbers, but the dataset declares reflectance"):
        load_dataset(str(toml)).read("a", UKIS_BANDS)


def test_reflectance_declared_as_digital_numbers(tmp_path, ukis):
    img, msk = ukis
    toml = write_dataset(tmp_path / "r", {"a": img[:, :64, :64]}, {"a": msk[:64, :64]}, UKIS_BANDS,
                         scale='kind = "digital_numbers"\nfactor = 0.0001')
    with pytest.raises(DataError, match="look like reflectance, but the dataset declares digital numbers"):
        load_dataset(str(toml)).read("a", UKIS_BANDS)


def test_processing_baseline_offset_is_applied(tmp_path, ukis):
    img, msk = ukis
    dn = (img[:, :64, :64] * 10000 + 1000).astype(np.uint16)  # as stored from baseline 04.00 on
    toml = write_dataset(tmp_path / "pb4", {"a": dn}, {"a": msk[:64, :64]}, UKIS_BANDS,
                         scale='kind = "digital_numbers"\nfactor = 0.0001\noffset = -1000')
    got = load_dataset(str(toml)).read("a", UKIS_BANDS).image
    np.testing.assert_allclose(got, img[:, :64, :64], atol=1.5e-4)


def test_unknown_label_code(tmp_path, ukis):
    img, msk = ukis
    bad = msk[:64, :64].copy()
    bad[:2, :3] = 9
    toml = write_dataset(tmp_path / "codes", {"a": img[:, :64, :64]}, {"a": bad}, UKIS_BANDS)
    with pytest.raises(DataError, match=r"masks/a.tif: label code 9 \(6 pixels\) not in the label mapping"):
        load_dataset(str(toml)).read("a", UKIS_BANDS)  # the mask file holds the code, not the image


def test_nan_pixels_become_nodata_with_a_count_or_are_refused_when_strict(tmp_path, ukis):
    img, msk = ukis
    x = img[:, :64, :64].copy()
    x[1, 10, 10:15] = np.nan
    x[4, 20, 20] = np.inf
    ds = load_dataset(str(write_dataset(tmp_path / "nan", {"a": x}, {"a": msk[:64, :64]}, UKIS_BANDS)))
    with pytest.warns(UserWarning, match="6 pixels have NaN or inf values; treated as nodata"):
        scene = ds.read("a", UKIS_BANDS)
    assert (~scene.valid).sum() == 6 and np.isnan(scene.image[:, ~scene.valid]).all()
    with pytest.raises(DataError, match="6 pixels have NaN or inf values \\(refused with --strict\\)"):
        ds.read("a", UKIS_BANDS, strict=True)


def test_image_and_mask_of_different_shape(tmp_path, ukis):
    img, msk = ukis
    toml = write_dataset(tmp_path / "shape", {"a": img[:, :64, :64]}, {"a": msk[:64, :60]}, UKIS_BANDS)
    with pytest.raises(DataError, match="is 64x64 but its mask .* is 64x60"):
        load_dataset(str(toml)).read("a", UKIS_BANDS)


def test_truncated_geotiff(tmp_path, ukis):
    img, msk = ukis
    toml = write_dataset(tmp_path / "trunc", {"a": img[:, :64, :64]}, {"a": msk[:64, :64]}, UKIS_BANDS)
    tif = tmp_path / "trunc" / "images" / "a.tif"
    tif.write_bytes(tif.read_bytes()[:2000])
    with pytest.raises(DataError, match="a.tif: (not a readable GeoTIFF|cannot read)"):
        load_dataset(str(toml)).read("a", UKIS_BANDS)


def test_empty_split(tiny_dataset, tmp_path):
    scenario = write_scenario(tmp_path / "s.toml", str(tiny_dataset), str(tiny_dataset))
    text = scenario.read_text().replace('[test]\ndataset', '[test]\nmonths = [12]\ndataset')
    scenario.write_text(text)
    with pytest.raises(DataError, match=r"s.toml \[test\]: empty split: no scene of dataset 'mine' has months = \[12\]$"):
        load_split(load_scenario(str(scenario)), "test")


def test_bad_test_data_fails_before_any_model_trains(tmp_path, ukis, capsys):
    """A label code the mapping lacks, in the test split only, stops `bench run` before training: the
    message names the scenario file, the split and the mask file."""
    from bench.cli import main

    img, msk = ukis
    good = write_dataset(tmp_path / "good", {"a": img[:, :64, :64]}, {"a": msk[:64, :64]}, UKIS_BANDS, name="good")
    bad_mask = msk[:64, :64].copy()
    bad_mask[5, 5] = 9
    bad = write_dataset(tmp_path / "bad", {"b": img[:, :64, :64]}, {"b": bad_mask}, UKIS_BANDS, name="bad")
    scenario = write_scenario(tmp_path / "s.toml", str(good), str(bad))
    rc = main(["run", "--scenario", str(scenario), "--out", str(tmp_path / "runs"), "--no-leaderboard", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(r"s.toml \[test\]: .*bad/masks/b.tif: label code 9 \(1 pixels\)", err), err
    assert not (tmp_path / "runs" / "models").exists()  # nothing was trained


def test_patch_larger_than_a_training_scene(tiny_dataset, tmp_path):
    from bench.cli import main

    scenario = write_scenario(tmp_path / "s.toml", str(tiny_dataset), str(tiny_dataset))
    rc = main(["run", "--scenario", str(scenario), "--patch-size", "256", "--out", str(tmp_path / "runs"),
               "--no-leaderboard", "--quiet"])
    assert rc == 2


def test_patch_error_message(tiny_dataset, tmp_path):
    from bench.run.loaders import RandomCrops

    split = load_split(load_scenario(str(write_scenario(tmp_path / "s.toml", str(tiny_dataset), str(tiny_dataset)))),
                       "train")
    norm = __import__("bench.core.registry", fromlist=["x"]).get_registry().get("norm", "none").build()
    with pytest.raises(DataError, match=r"patch size 256 is larger than training scene 'a' .*128 x 128.*at most 128"):
        RandomCrops(split, norm, 256, 4, 0)


def test_a_split_found_good_is_not_read_again(tmp_path, monkeypatch):
    """Checking every file before training costs one read per machine: the next process trusts a split
    whose files (by checksum), bands and window were found good; another window is read again."""
    import bench.data.splits as splits

    monkeypatch.setattr(splits, "VALIDATED", tmp_path / "validated.json")
    monkeypatch.setattr(splits, "_validated", set())
    scenario = load_scenario("samples_intra")
    splits.validate_split(load_split(scenario, "test"), "samples_intra [test]")
    assert (tmp_path / "validated.json").exists()
    monkeypatch.setattr(splits, "_validated", set())  # a new process

    def unread(self, i):
        raise AssertionError("read again")

    monkeypatch.setattr(splits.LazyScenes, "__getitem__", unread)
    splits.validate_split(load_split(scenario, "test"), "samples_intra [test]")
    with pytest.raises(AssertionError, match="read again"):
        splits.validate_split(load_split(scenario, "val"), "samples_intra [val]")


def test_a_large_scene_is_checked_window_by_window_never_whole(tmp_path, monkeypatch):
    """Memory bounded at every size: above the budget, the data check before training and the sanity gate
    read a scene in row windows, and give what reading it whole gives."""
    import bench.data.splits as splits
    from bench.core.registry import get_registry
    from bench.data.sanity import check

    scenario = load_scenario("samples_intra")
    train, test = load_split(scenario, "train"), load_split(scenario, "test")
    whole = {}
    for name in ("percentile", "percentile_scene"):
        norm = get_registry().get("norm", name).build().fit(train.samples())
        whole[name] = check(train, test, norm, UKIS_BANDS)
    monkeypatch.setattr(splits, "VALIDATED", tmp_path / "validated.json")
    monkeypatch.setattr(splits, "_validated", set())
    monkeypatch.setattr(splits, "WHOLE_BYTES", 4 * len(UKIS_BANDS) * 5000)  # 5000 px at once
    big = load_split(scenario, "test")
    assert all(big.is_large(i) for i in range(len(big.scenes)))

    def whole_read(self):
        raise AssertionError("read whole")

    monkeypatch.setattr(splits.SceneRef, "load", whole_read)
    splits.validate_split(big, "samples_intra [test]")
    for name in ("percentile", "percentile_scene"):
        norm = get_registry().get("norm", name).build().fit(train.samples())
        windowed = check(train, big, norm, UKIS_BANDS)
        np.testing.assert_allclose(windowed["test"]["quantiles"], whole[name]["test"]["quantiles"], atol=1e-3)
        assert windowed["warnings"] == whole[name]["warnings"]
