"""Real dataset sources, offline, on real samples written in the real formats: CloudSEN12+ TACO files read
through tacoreader.v1, the Copernicus-Bench Cloud-S2 layout, the Sentinel Hub request and its GeoTIFF cache,
and a user's own GeoTIFFs."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import numpy as np
import pytest
from pathlib import Path

from bench.data.download import check
from bench.cli import main
from bench.data.datasets import load_dataset
from bench.core.errors import DataError
from bench.data.scenarios import load_scenario
from conftest import REPO, UKIS_BANDS, write_dataset, write_scenario, write_tif
from taco_v1 import write_cloudsen12_part

pytestmark = pytest.mark.filterwarnings("ignore:imagenet weights")
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


@pytest.fixture(scope="module")
def eolearn():
    """The five real eo-learn scenes: {date: ((13, 101, 100) DN uint16, (101, 100) CLM)}."""
    ds = load_dataset("eolearn_slovenia")
    out = {}
    for sid in ds.scene_ids():
        s = ds.read(sid, S2)
        out[sid] = (np.round(s.image * 10000).astype(np.uint16), s.codes.astype(np.uint8))
    return out


def _epoch(date: str) -> int:
    return int(datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp())


@pytest.fixture
def cloudsen12_root(tmp_path, eolearn):
    """A data root holding two CloudSEN12+ part files built from the real eo-learn scenes, each padded
    to 128 x 128 with nodata (DN 0, label 99) as the published 509 -> 512 patches are."""
    splits = {"2015-07-11": "train", "2015-07-31": "train", "2015-08-20": "validation", "2015-08-30": "test",
              "2015-09-09": "test"}
    samples = []
    for i, (date, (img, clm)) in enumerate(sorted(eolearn.items())):
        image = np.zeros((13, 128, 128), np.uint16)
        image[:, :101, :100] = img
        label = np.full((128, 128), 99, np.uint8)
        label[:101, :100] = np.where(clm == 1, 1, 0)  # cloud -> thick cloud, else clear
        samples.append({"image": image, "label": label, "id": f"ROI_{i:05d}__{date.replace('-', '')}",
                        "tortilla:data_split": splits[date], "label_type": "high",
                        "stac:time_start": _epoch(date), "roi_id": f"ROI_{i:05d}"})
    # the months of the real scenes are July to September; make one June so that the temporal split has data
    samples[0]["stac:time_start"] = _epoch("2015-06-28")
    samples[2]["stac:time_start"] = _epoch("2015-06-30")
    samples[2]["tortilla:data_split"] = "validation"
    root = tmp_path / "data"
    write_cloudsen12_part(root / "cloudsen12" / "cloudsen12-l1c.0000.part.taco", samples[:3])
    write_cloudsen12_part(root / "cloudsen12" / "cloudsen12-l1c.0001.part.taco", samples[3:])
    return root


def test_cloudsen12_reads_through_tacoreader(cloudsen12_root, monkeypatch):
    monkeypatch.setenv("CLOUDBENCH_DATA", str(cloudsen12_root))
    ds = load_dataset("cloudsen12_l1c")
    assert len(ds.scene_ids()) == 5
    sid = ds.scene_ids()[3]
    meta = ds.scene_meta(sid)
    assert meta["split"] == "test" and meta["label_type"] == "high" and meta["acquired"].startswith("2015-08-30")
    scene = ds.read(sid, S2)
    assert scene.image.shape == (13, 128, 128)
    assert scene.valid.sum() == 101 * 100  # padding (DN 0) and code 99 are nodata, not errors
    np.testing.assert_allclose(scene.image[:, :101, :100], load_dataset("eolearn_slovenia").read("2015-08-30", S2).image,
                               atol=1e-6)
    assert [p.name for p in ds.files(sid)] == ["cloudsen12-l1c.0001.part.taco"]


def test_a_part_that_tacoreader_skips_is_named_not_left_out(cloudsen12_root, monkeypatch, capsys):
    monkeypatch.setenv("CLOUDBENCH_DATA", str(cloudsen12_root))
    part = cloudsen12_root / "cloudsen12" / "cloudsen12-l1c.0001.part.taco"
    part.write_bytes(part.read_bytes()[:100])  # an interrupted download: tacoreader prints an error, skips it
    with pytest.raises(DataError, match=r"0001.part.taco: tacoreader could not read this part .*1 of 2 parts"):
        load_dataset("cloudsen12_l1c").scene_ids()
    assert "Error processing file" in capsys.readouterr().out  # what tacoreader itself does: print and go on


def test_cloudsen12_keeps_509_px_patches_unless_asked_and_reads_scribbles_as_sparse(tmp_path, eolearn, monkeypatch):
    """A part in the published layout holding a 509 px patch (padded to 512), a 2000 px one (padded to 2048)
    and a scribble-labelled one: the reader keeps the 509 px patches by default; scribbles' unlabelled
    pixels (99) are nodata."""

    img, clm = eolearn["2015-08-20"]
    small = np.zeros((13, 512, 512), np.uint16)
    small[:, :101, :100] = img
    label = np.full((512, 512), 99, np.uint8)
    label[:101, :100] = clm
    scribble = np.full((512, 512), 99, np.uint8)
    scribble[10:20, 10:60] = 1  # a few strokes
    big = np.zeros((13, 2048, 2048), np.uint16)
    big[:, :101, :100] = img
    part = tmp_path / "cloudsen12" / "cloudsen12-l1c.0000.part.taco"
    write_cloudsen12_part(part, [
        {"image": small, "label": label, "id": "ROI_1__509", "real_proj_shape": 509, "tortilla:data_split": "test"},
        {"image": big, "label": np.full((2048, 2048), 99, np.uint8), "id": "ROI_2__2000", "real_proj_shape": 2000,
         "tortilla:data_split": "test"},
        {"image": small, "label": scribble, "id": "ROI_3__sc", "label_type": "scribble", "tortilla:data_split": "test"}])
    assert part.read_bytes()[:2] == b"WX" and int.from_bytes(part.read_bytes()[26:34], "little") > 200
    monkeypatch.setenv("CLOUDBENCH_DATA", str(tmp_path))
    ds = load_dataset("cloudsen12_l1c")
    assert ds.scene_ids() == ["ROI_1__509", "ROI_3__sc"] and ds.scene_meta("ROI_1__509")["real_proj_shape"] == 509
    sc = ds.read("ROI_3__sc", S2)
    assert int(sc.valid.sum()) == 500 and (sc.codes[sc.valid] == 1).all()
    both = tmp_path / "both.toml"
    text = (REPO / "registry" / "datasets" / "cloudsen12_l1c.toml").read_text()
    both.write_text(text.replace("patch_sizes = [509]", "patch_sizes = [509, 2000]").replace('name = "cloudsen12_l1c"', 'name = "both"'))
    assert load_dataset(str(both)).scene_ids() == ["ROI_1__509", "ROI_2__2000", "ROI_3__sc"]
    scenario = load_scenario("cloudsen12_scribble")
    assert scenario.sources["test"].select(ds) == ["ROI_3__sc"]


def test_cloudsen12_splits_and_months_select_from_metadata(cloudsen12_root, monkeypatch):
    monkeypatch.setenv("CLOUDBENCH_DATA", str(cloudsen12_root))
    scenario = load_scenario("cloudsen12_temporal")
    ds = scenario.dataset("train")
    pick = {s: [ds.scene_meta(i)["acquired"][:10] for i in scenario.sources[s].select(ds)] for s in ("train", "val", "test")}
    assert pick == {"train": ["2015-06-28"], "val": ["2015-06-30"], "test": ["2015-08-30", "2015-09-09"]}
    intra = load_scenario("cloudsen12_intra")
    assert len(intra.sources["train"].select(ds)) == 2 and len(intra.sources["test"].select(ds)) == 2


def test_signature_command_runs_offline_on_cached_data(cloudsen12_root, eolearn, tmp_path, capsys):
    """`bench run --model unet_mnv2 --norm percentile --scenario sentinelhub_aug`: trained on CloudSEN12+
    June patches (TACO), tested on a cached Sentinel Hub scene (real Sentinel Hub output, eo-learn)."""
    cache = cloudsen12_root / "sentinelhub" / "latvia_aug"
    img, clm = eolearn["2015-07-31"]
    write_tif(cache / "image.tif", (img / 10000).astype(np.float32))
    write_tif(cache / "clm.tif", clm)
    rc = main(["run", "--model", "unet_mnv2", "--norm", "percentile", "--scenario", "sentinelhub_aug",
               "--data-root", str(cloudsen12_root), "--patch-size", "64", "--batch-size", "2",
               "--samples-per-epoch", "2", "--epochs", "1", "--out", str(tmp_path / "runs"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    (result,) = (tmp_path / "runs" / "results" / "sentinelhub_aug").glob("*.json")
    r = json.loads(result.read_text())
    assert r["scenario"]["reference"] == "algorithmic" and r["metrics"]["classes"] == ["not_cloud", "cloud"]
    assert r["data"]["train"]["scenes"] == ["ROI_00000__20150711"]  # the only June training patch
    assert any(f.endswith("cloudsen12-l1c.0000.part.taco") for f in r["data"]["train"]["files"])
    assert r["metrics"]["n_pixels"] == 101 * 100


def test_temporal_results_are_reported_per_month(cloudsen12_root, tmp_path):
    rc = main(["run", "--scenario", "cloudsen12_temporal", "--data-root", str(cloudsen12_root), "--patch-size", "64",
               "--batch-size", "2", "--samples-per-epoch", "2", "--epochs", "1", "--out", str(tmp_path / "runs"),
               "--quiet", "--no-figure"])
    assert rc == 0
    (result,) = (tmp_path / "runs" / "results" / "cloudsen12_temporal").glob("*.json")
    per_month = json.loads(result.read_text())["per_month"]
    assert sorted(per_month) == ["08", "09"] and per_month["08"]["n_pixels"] == 101 * 100


def test_copernicus_cloud_s2_layout(tmp_path, eolearn, monkeypatch):
    root = tmp_path / "data" / "copernicus_bench" / "cloud_s2"
    names = {"train": [], "val": [], "test": []}
    for split, (date, (img, clm)) in zip(["train", "train", "val", "test", "test"], sorted(eolearn.items())):
        name = f"ROI_{len(sum(names.values(), [])):05d}__{date.replace('-', '')}T100000"
        write_tif(root / "s2_toa" / f"{name}.tif", img)
        write_tif(root / "cloud" / f"{name}.tif", clm)
        names[split].append(name)
    for split, files in names.items():
        (root / f"{split}.csv").write_text("".join(f"{n}\n" for n in files))
    monkeypatch.setenv("CLOUDBENCH_DATA", str(tmp_path / "data"))
    scenario = load_scenario("copernicus_cloud_s2")
    ds = scenario.dataset("test")
    test = scenario.sources["test"].select(ds)
    assert test == names["test"] and ds.scene_meta(test[0])["acquired"] == "2015-08-30T10:00:00"
    assert ds.read(test[0], S2).image.shape == (13, 101, 100)


def test_missing_data_stops_at_once_with_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CLOUDBENCH_DATA", raising=False)
    for scenario in ("cloudsen12_intra", "sentinelhub_aug"):
        assert main(["run", "--scenario", scenario, "--data-root", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "dataset 'cloudsen12_l1c' not found at" in err and "bench data download cloudsen12" in err
        assert "--data-root" in err


def test_sentinelhub_without_credentials_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("SH_CLIENT_ID", "")
    monkeypatch.setenv("SH_CLIENT_SECRET", "")
    monkeypatch.setenv("SH_CONFIG_HOME", str(tmp_path / "shconfig"))
    with pytest.raises(DataError, match="no Sentinel Hub credentials.*SH_CLIENT_ID and SH_CLIENT_SECRET.*bench data download"):
        load_dataset("sentinelhub_latvia_aug").read("scene", S2)


def test_credentials_never_appear_in_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("SH_CLIENT_ID", "my-client-id-1234")
    monkeypatch.setenv("SH_CLIENT_SECRET", "my-very-secret-5678")
    monkeypatch.setenv("SH_CONFIG_HOME", str(tmp_path / "shconfig"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # sentinelhub's own config: one attempt
    (tmp_path / "config" / "sentinelhub").mkdir(parents=True)
    (tmp_path / "config" / "sentinelhub" / "config.toml").write_text(
        "[default-profile]\nmax_download_attempts = 1\ndownload_sleep_time = 0\ndownload_timeout_seconds = 5\n")
    with pytest.raises(DataError) as err:  # offline: the request fails
        load_dataset("sentinelhub_latvia_aug").read("scene", S2)
    assert "request failed" in str(err.value)
    assert "my-very-secret-5678" not in str(err.value) and "my-client-id-1234" not in str(err.value)


def test_sentinelhub_request_payload_is_built_offline():
    ds = load_dataset("sentinelhub_latvia_aug")
    body = ds.request().download_list[0].post_values
    (data,) = body["input"]["data"]
    assert data["type"].lower() in ("sentinel-2-l1c", "s2l1c")
    assert data["processing"]["harmonizeValues"] is True
    assert data["dataFilter"]["timeRange"]["from"].startswith("2024-08-01")
    assert data["dataFilter"]["timeRange"]["to"].startswith("2024-08-31")
    assert body["input"]["bounds"]["bbox"] == [23.60, 56.60, 23.75, 56.70]
    assert all(f'"{b}"' in body["evalscript"] for b in S2) and '"CLM"' in body["evalscript"]
    assert [r["identifier"] for r in body["output"]["responses"]] == ["bands", "clm"]


def _evalscript_inputs(script: str) -> dict[str, str]:
    """{band: unit} from an evalscript's setup() input, as the service reads it."""
    import re

    bands = re.search(r"bands: \[([^\]]*)\], units: \[([^\]]*)\]", script)
    names = [b.strip().strip('"') for b in bands.group(1).split(",")]
    units = [u.strip().strip('"') for u in bands.group(2).split(",")]
    assert len(names) == len(units)
    return dict(zip(names, units))


def test_evalscript_units_are_what_sentinelhub_defines_for_each_band():
    """Checked against sentinelhub-py's own band metadata (DataCollection.SENTINEL2_L1C.bands / .metabands),
    not against our assumptions: CLM and dataMask exist only in DN."""
    from sentinelhub import DataCollection

    body = load_dataset("sentinelhub_latvia_aug").request().download_list[0].post_values
    inputs = _evalscript_inputs(body["evalscript"])
    allowed = {b.name: {u.value for u in b.units} for b in (*DataCollection.SENTINEL2_L1C.bands,
                                                            *DataCollection.SENTINEL2_L1C.metabands)}
    assert set(inputs) == {*S2, "CLM", "dataMask"}
    assert all(unit in allowed[band] for band, unit in inputs.items())
    assert (inputs["CLM"], inputs["dataMask"], inputs["B04"]) == ("DN", "DN", "REFLECTANCE")


def test_cdse_accounts_get_the_collection_from_their_base_url():
    from sentinelhub import SHConfig

    from bench.data.datasets.sentinelhub import CDSE_URL

    ds = load_dataset("sentinelhub_latvia_aug")
    cdse = SHConfig(sh_base_url=CDSE_URL, sh_token_url=CDSE_URL.replace("sh.", "identity.") + "/auth")
    assert ds.request(cdse).download_list[0].url.startswith(CDSE_URL)
    assert ds.request(SHConfig()).download_list[0].url.startswith("https://services.sentinel-hub.com")


def _stac(day: str, cloud: float, tile: str = "34VFJ") -> dict:
    """A Catalog API item in the shape the service returns (fields: id, properties.datetime, eo:cloud_cover)."""
    stamp = day.replace("-", "")
    return {"id": f"S2A_MSIL1C_{stamp}T094031_N0511_R036_T{tile}_{stamp}T114016.SAFE",
            "properties": {"datetime": f"{day}T09:50:21Z", "eo:cloud_cover": cloud}}


def test_one_acquisition_is_chosen_by_the_declared_rule():
    from bench.data.datasets.sentinelhub import choose_acquisition, tile_of

    items = [_stac("2024-08-02", 3.0), _stac("2024-08-12", 45.0), _stac("2024-08-15", 95.0), _stac("2024-08-22", 30.0)]
    chosen = choose_acquisition(items, (20, 80), "2024-08-16")
    assert chosen["properties"]["datetime"].startswith("2024-08-12") and tile_of(chosen["id"]) == "34VFJ"
    with pytest.raises(DataError, match=r"no acquisition with cloud cover in \[99.*2024-08-02 \(3.0 %\).*pin one"):
        choose_acquisition(items, (99, 100), "2024-08-16")


def test_the_chosen_acquisition_is_pinned_in_the_cache_and_the_request(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDBENCH_DATA", str(tmp_path))
    ds = load_dataset("sentinelhub_latvia_aug")
    body = ds.request(day="2024-08-12").download_list[0].post_values
    time_range = body["input"]["data"][0]["dataFilter"]["timeRange"]
    assert time_range["from"].startswith("2024-08-12") and time_range["to"].startswith("2024-08-12")
    item = _stac("2024-08-12", 45.0)
    ds.write_cache(np.full((4, 5, 13), 0.1, np.float32), np.zeros((4, 5), np.uint8),
                   {"datetime": item["properties"]["datetime"], "id": item["id"], "cloud_cover": 45.0, "rule": "r"})
    meta = load_dataset("sentinelhub_latvia_aug").scene_meta("scene")
    assert meta["acquired"].startswith("2024-08-12") and meta["tile"] == "34VFJ" and meta["product_id"] == item["id"]


def test_a_refused_request_shows_the_services_reason(tmp_path, monkeypatch):
    from sentinelhub import SentinelHubRequest
    from sentinelhub.exceptions import DownloadFailedException

    from bench.data.datasets.sentinelhub import SentinelHubScene

    monkeypatch.setenv("CLOUDBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("SH_CLIENT_ID", "id-1234")
    monkeypatch.setenv("SH_CLIENT_SECRET", "secret-5678")
    monkeypatch.setenv("SH_CONFIG_HOME", str(tmp_path / "shconfig"))
    monkeypatch.setattr(SentinelHubScene, "acquisition", lambda self, config: {"datetime": "2024-08-12", "id": None})

    def refuse(self, **kwargs):
        raise DownloadFailedException('Failed to download with HTTPError: 400. Server response: "Band CLM: '
                                      'units REFLECTANCE not supported" (client secret-5678)')

    monkeypatch.setattr(SentinelHubRequest, "get_data", refuse)
    with pytest.raises(DataError, match="Server response: \"Band CLM: units REFLECTANCE not supported") as err:
        load_dataset("sentinelhub_latvia_aug").read("scene", S2)
    assert "secret-5678" not in str(err.value)


def test_download_dry_run_prints_the_sentinelhub_request_without_credentials(monkeypatch, capsys, tmp_path):
    import json

    monkeypatch.setenv("SH_CLIENT_ID", "id-1234")
    monkeypatch.setenv("SH_CLIENT_SECRET", "secret-5678")
    monkeypatch.setenv("SH_CONFIG_HOME", str(tmp_path / "shconfig"))
    assert main(["data", "download", "sentinelhub_latvia_aug", "--dry-run"]) == 0
    out = capsys.readouterr().out
    body = json.loads(out[out.index("{"):out.index("evalscript, as the service reads it:")])
    assert _evalscript_inputs(body["evalscript"])["CLM"] == "DN" and "Catalog API" in out
    assert "secret-5678" not in out and "id-1234" not in out


def test_downloads_cannot_pass_empty(tmp_path, monkeypatch):
    from bench.data import download as dl

    folder = tmp_path / "cloudsen12"
    folder.mkdir()
    (folder / dl.MANIFEST).write_text("")
    with pytest.raises(DataError, match="lists no files"):
        dl.verify("cloudsen12", str(tmp_path))

    class Hub:  # the hub answers, but nothing matches the pattern
        def list_repo_tree(self, *a, **k):
            return []

        def dataset_info(self, *a, **k):
            return type("Info", (), {"sha": "0" * 40})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(folder))
    with pytest.raises(DataError, match="matched no file"):
        dl.download("cloudsen12", str(tmp_path))
    with pytest.raises(DataError, match="matches 'cloudsen12-l1c"):
        dl.dry_run("cloudsen12")


def test_cloudsen12_downloads_pin_the_hub_commit(tmp_path, monkeypatch):
    """The newest commit is resolved once and recorded; a repeated download takes the recorded one, never a
    newer commit's files mixed with older ones; --revision overrides. Arguments as huggingface_hub takes them."""
    import inspect

    import huggingface_hub
    from huggingface_hub import HfApi

    from bench.data import download as dl

    folder, asked = tmp_path / "cloudsen12", []
    part = b"taco part bytes"
    newest = ["a" * 40]

    class Hub:
        def dataset_info(self, repo_id, **k):
            inspect.signature(HfApi.dataset_info).bind(None, repo_id, **k)
            return type("Info", (), {"sha": newest[0]})()

        def list_repo_tree(self, repo_id, **k):
            inspect.signature(HfApi.list_repo_tree).bind(None, repo_id, **k)
            asked.append(("tree", k["revision"]))
            lfs = type("Lfs", (), {"sha256": hashlib.sha256(part).hexdigest()})()
            return [type("File", (), {"path": "cloudsen12-l1c.0000.part.taco", "size": len(part), "lfs": lfs})()]

    def snapshot(repo_id, **k):
        inspect.signature(huggingface_hub.snapshot_download).bind(repo_id, **k)
        asked.append(("snapshot", k["revision"]))
        (folder / "cloudsen12-l1c.0000.part.taco").write_bytes(part)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    dl.download("cloudsen12", str(tmp_path))
    assert (folder / dl.REVISION).read_text().strip() == "a" * 40 and asked == [("snapshot", "a" * 40), ("tree", "a" * 40)]
    newest[0] = "b" * 40  # the repository moves on: a repeated (or resumed) download stays where it began
    dl.download("cloudsen12", str(tmp_path))
    assert asked[-1] == ("tree", "a" * 40)
    assert "at commit " + "a" * 40 in dl.dry_run("cloudsen12", "a" * 40)
    dl.download("cloudsen12", str(tmp_path), revision="c" * 40)
    assert asked[-1] == ("tree", "c" * 40) and (folder / dl.REVISION).read_text().strip() == "c" * 40
    assert dl.verify("cloudsen12", str(tmp_path)) == [{"file": "cloudsen12-l1c.0000.part.taco", "status": "ok"}]


def test_wrong_files_in_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDBENCH_DATA", str(tmp_path))
    part = tmp_path / "cloudsen12" / "cloudsen12-l1c.0000.part.taco"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"this is not a TACO file at all")
    with pytest.raises(DataError, match="cannot read .* as TACO files .*holds other or damaged files"):
        load_dataset("cloudsen12_l1c").scene_ids()
    write_cloudsen12_part(part, [{"image": np.zeros((13, 8, 8), np.uint16), "label": np.zeros((8, 8), np.uint8),
                                  "other": "x"}], published_columns=False)
    with pytest.raises(DataError, match="not CloudSEN12\\+: no column 'tortilla:data_split'.*wrong files"):
        load_dataset("cloudsen12_l1c").scene_ids()


def test_bring_your_own_geotiffs_check_and_run(tmp_path, ukis, capsys):
    img, msk = ukis
    toml = write_dataset(tmp_path / "mine", {"a": (img[:, :128, :128] * 10000).astype(np.uint16),
                                            "b": (img[:, 256:384, 256:384] * 10000).astype(np.uint16)},
                         {"a": msk[:128, :128], "b": msk[256:384, 256:384]}, UKIS_BANDS,
                         scale='kind = "digital_numbers"\nfactor = 0.0001\nnodata = 0')
    assert main(["data", "check", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "| a " in out and "128x128" in out and "EPSG:32633" in out and "2 scenes, 0 with errors" in out
    scenario = write_scenario(tmp_path / "their.toml", "ukis_csmask_s2", str(toml))
    assert main(["run", "--scenario", str(scenario), "--out", str(tmp_path / "runs"), "--quiet", "--no-figure"]) == 0
    board = (tmp_path / "runs" / "leaderboards" / "their.md").read_text()
    assert "| unet_mnv2 | percentile |" in board and "human" in board


def test_check_reports_each_bad_file(tmp_path, ukis):
    img, msk = ukis
    bad = msk[:64, :64].copy()
    bad[0, 0] = 7
    toml = write_dataset(tmp_path / "mine", {"good": img[:, :64, :64], "codes": img[:, :64, :64],
                                            "shape": img[:, :64, :64]},
                         {"good": msk[:64, :64], "codes": bad, "shape": msk[:60, :64]}, UKIS_BANDS)
    write_tif(tmp_path / "mine" / "masks" / "crs.tif", msk[:64, :64], crs="EPSG:4326")
    write_tif(tmp_path / "mine" / "images" / "crs.tif", img[:, :64, :64])
    rows, ok = check(str(toml))
    status = {r["scene"]: r["status"] for r in rows}
    assert not ok and status["good"] == "ok"
    assert "label code 7 (1 pixels)" in status["codes"]
    assert "is 64x64 but its mask" in status["shape"]
    assert "has CRS EPSG:32633 but its mask" in status["crs"]


def test_samples_temporal_runs_embedded(tmp_path):
    assert main(["run", "--scenario", "samples_temporal", "--epochs", "1", "--samples-per-epoch", "4",
                 "--batch-size", "4", "--out", str(tmp_path / "runs"), "--quiet", "--no-figure"]) == 0
    (result,) = (tmp_path / "runs" / "results" / "samples_temporal").glob("*.json")
    r = json.loads(result.read_text())
    assert r["data"]["train"]["scenes"] == ["2015-07-11", "2015-07-31"]
    assert r["data"]["test"]["scenes"] == ["2015-08-20", "2015-08-30", "2015-09-09"]
    assert sorted(r["per_month"]) == ["08", "09"]


def test_data_verify_compares_files_with_their_checksums(cloudsen12_root, capsys):
    from bench.core.results import sha256

    folder = cloudsen12_root / "cloudsen12"
    parts = sorted(folder.glob("*.taco"))
    (folder / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.name}\n" for p in parts))
    assert main(["data", "verify", "cloudsen12", "--data-root", str(cloudsen12_root)]) == 0
    assert capsys.readouterr().out.count("| ok") == 2
    with parts[1].open("ab") as f:
        f.write(b"x")  # one byte more: no longer the downloaded file
    assert main(["data", "verify", "cloudsen12", "--data-root", str(cloudsen12_root)]) == 1
    assert "CHECKSUM MISMATCH" in capsys.readouterr().out


def test_data_info_says_where_each_dataset_is(cloudsen12_root, capsys, monkeypatch):
    monkeypatch.delenv("CLOUDBENCH_DATA", raising=False)
    assert main(["data", "info", "--data-root", str(cloudsen12_root)]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "embedded" in rows["ukis_csmask_s2"] and str(cloudsen12_root) in rows["cloudsen12_l1c"]
    assert "| 5 " in rows["cloudsen12_l1c"].replace("  ", " ") or " 5 |" in rows["cloudsen12_l1c"]
    assert "missing: not found at" in rows["copernicus_cloud_s2"]


def test_a_users_drawn_mask_replaces_the_clm_reference(tmp_path, eolearn, monkeypatch):
    import textwrap

    img, clm = eolearn["2015-07-31"]
    cache = tmp_path / "sentinelhub" / "mine"
    write_tif(cache / "image.tif", (img / 10000).astype(np.float32))
    drawn = np.zeros((101, 100), np.uint8)
    drawn[:50] = 2  # a human says: top half thin cloud
    write_tif(tmp_path / "drawn.tif", drawn)
    toml = tmp_path / "scene.toml"
    toml.write_text(textwrap.dedent(f"""\
        name = "mine"
        type = "sentinelhub"
        reference = "human"
        bands = {S2!r}
        bbox = [23.6, 56.6, 23.75, 56.7]
        time_interval = ["2024-08-01", "2024-08-31"]
        cache = "sentinelhub/mine"
        mask = "drawn.tif"
        [scale]
        kind = "reflectance"
        [labels]
        codes = {{ 0 = "clear", 2 = "thin_cloud" }}
        """).replace("'", '"'))
    monkeypatch.setenv("CLOUDBENCH_DATA", str(tmp_path))
    ds = load_dataset(str(toml))
    scene = ds.read("scene", S2)
    assert ds.reference == "human" and (scene.codes[:50] == 2).all() and ds.labels.finest_space().names == [
        "clear", "thick_cloud", "thin_cloud", "cloud_shadow"]


FIGURE04 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cloudsen12_figure04"
needs_figure04 = pytest.mark.skipif(not FIGURE04.is_dir(), reason="needs ../shared/data/cloudsen12_figure04 "
                                    "(CC BY-NC 4.0, not shipped; `bench data download cloudsen12_figure04`)")


@needs_figure04
def test_figure04_patches_read_with_their_human_labels(monkeypatch):
    monkeypatch.setenv("CLOUDBENCH_DATA", str(FIGURE04.parent))
    hq, sc, sc7 = (load_dataset(f"cloudsen12_figure04_{n}") for n in ("hq", "sc", "sc7"))
    acquisitions = ("almost-clear", "clear", "cloudy", "low-cloudy", "mid-cloudy")
    assert hq.scene_ids() == [f"ROI_1746/{c}" for c in acquisitions] + ["ROI_4683/clear"]
    assert sc.scene_ids() == [f"ROI_1746/{c}" for c in acquisitions]
    assert sc7.scene_ids() == [f"ROI_2507/{c}" for c in acquisitions]
    mid = hq.read("ROI_1746/mid-cloudy", ["B02", "B03", "B04"])
    assert mid.valid.all() and sorted(np.unique(mid.codes)) == [0, 1, 2, 3]
    # PROVENANCE.md: DN means B04/B03/B02 2789/2257/2162, stored in that order
    np.testing.assert_allclose(np.nanmean(mid.image, axis=(1, 2)), [0.2162, 0.2257, 0.2789], atol=5e-4)
    cloudy = sc7.read("ROI_2507/cloudy", ["B02", "B03", "B04"])
    # PROVENANCE.md: codes 1: 2808, 2: 1239, 3: 6554, 4: 769, 5: 1177, 6: 854; unscribbled pixels are nodata
    assert int(cloudy.valid.sum()) == 2808 + 1239 + 6554 + 769 + 1177 + 854
    groups = sc7.labels.reference_groups(cloudy.codes[cloudy.valid], sc7.labels.finest_space())
    assert np.bincount(groups, minlength=4).tolist() == [0, 2808 + 1239, 6554 + 769, 1177 + 854]


@needs_figure04
def test_figure04_download_checks_every_file_against_the_pinned_sha256(tmp_path, monkeypatch):
    """Served from a folder in the upstream layout (ROI_1746 one level deeper, under high/)."""
    import shutil

    from bench.data import download as dl

    upstream = tmp_path / "upstream"
    for f in FIGURE04.rglob("*.tif"):
        rel = f.relative_to(FIGURE04).as_posix().replace("ROI_1746/", "ROI_1746/high/", 1)
        (upstream / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, upstream / rel)
    monkeypatch.setattr(dl, "FIGURE04_BASE", upstream.as_uri() + "/")
    files = dl.download("cloudsen12_figure04", str(tmp_path / "data"))
    assert len(files) == 31 and all(r["status"] == "ok" for r in dl.verify("cloudsen12_figure04", str(tmp_path / "data")))
    (upstream / "ROI_2507" / "cloudy" / "manual_sc.tif").write_bytes(b"not the file")
    (tmp_path / "data" / "cloudsen12_figure04" / "ROI_2507" / "cloudy" / "manual_sc.tif").unlink()
    with pytest.raises(DataError, match="sha256 differs from the pinned"):
        dl.download("cloudsen12_figure04", str(tmp_path / "data"))
    assert not (tmp_path / "data" / "cloudsen12_figure04" / "ROI_2507" / "cloudy" / "manual_sc.tif").exists()


@needs_figure04
@pytest.mark.parametrize("scenario,test_scenes,groups", [
    ("rgb_cross", 6, ["clear", "cloud", "cloud_shadow"]),
    ("cloudsen12_acquisitions", 2, ["clear", "thick_cloud", "thin_cloud", "cloud_shadow"]),
    ("rgb_scribble", 5, ["clear", "cloud", "cloud_shadow"]),
])
def test_figure04_scenarios_plan_with_a_human_reference_on_both_sides(scenario, test_scenes, groups, tmp_path):
    from bench.run.plan import RunConfig, plan

    p = plan(RunConfig(scenario=scenario, data_root=str(FIGURE04.parent), out=str(tmp_path)))
    assert len(p.splits["test"].refs) == test_scenes and p.space.names == groups
    assert p.splits["train"].reference == p.splits["test"].reference == "human" and p.bands == ("B02", "B03", "B04")
