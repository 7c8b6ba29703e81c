"""Controlled shifts, the normalization sanity gate, and severity leaderboards."""

from __future__ import annotations

import re

import json

import numpy as np
import pytest

from bench.cli import main
from bench.data.splits import load_split
from bench.core.registry import get_registry
from bench.data.scenarios import load_scenario

pytestmark = pytest.mark.filterwarnings("ignore:imagenet weights")
BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
SHIFTS = get_registry().names("shift")


@pytest.fixture(scope="module")
def scene():
    return load_split(load_scenario("samples_intra"), "test").scenes[0].image


@pytest.mark.parametrize("name", SHIFTS)
def test_severity_zero_is_the_identity_and_strength_grows(name, scene):
    fn = get_registry().get("shift", name).builder.fn
    np.testing.assert_array_equal(fn(scene, 0, BANDS, seed=1), scene)
    distance = [float(np.nanmean(np.abs(fn(scene, s, BANDS, seed=1) - scene))) for s in range(6)]
    assert distance[0] == 0 and all(a < b for a, b in zip(distance, distance[1:])), distance


def test_haze_is_strongest_in_blue(scene):
    fn = get_registry().get("shift", "haze").builder.fn
    added = (fn(scene, 3, BANDS) - scene).reshape(6, -1).mean(1)
    assert added[0] == added.max() and added[-1] == added.min()


def test_offset_at_severity_5_is_the_baseline_04_offset(scene):
    fn = get_registry().get("shift", "offset").builder.fn
    np.testing.assert_allclose(fn(scene, 5, BANDS) - scene, 0.1, atol=1e-6)


def test_shift_scenario_reports_each_severity_and_plots(tmp_path):
    out = tmp_path / "runs"
    args = ["--patch-size", "64", "--batch-size", "4", "--samples-per-epoch", "4", "--epochs", "1", "--out", str(out),
            "--quiet", "--no-figure"]
    assert main(["run", "--scenario", "shift_noise", *args]) == 0
    assert main(["run", "--scenario", "shift_noise", "--adapt", "adabn", *args]) == 0
    results = [json.loads(p.read_text()) for p in sorted((out / "results" / "shift_noise").glob("*.json"))]
    for r in results:
        assert sorted(r["per_severity"], key=int) == ["0", "1", "2", "3", "4", "5"]
        pooled = np.sum([np.array(m["confusion"]) for m in r["per_severity"].values()], axis=0)
        assert r["metrics"]["confusion"] == pooled.tolist()
        assert set(r["sanity"]) >= {"train", "test", "warnings"} and len(r["sanity"]["test"]["median"]) == 6
    assert {r["adapter"]["protocol"] for r in results} == {"none", "per_scene"}
    adabn = next(r for r in results if r["adapter"]["protocol"] == "per_scene")  # every severity's budget, added
    per = [m["adapter"]["budget"]["images"] for m in adabn["per_severity"].values()]
    assert adabn["adapter"]["evaluations"] == 6 and adabn["adapter"]["budget"]["images"] == sum(per) > 0
    board = (out / "leaderboards" / "shift_noise.md").read_text()
    assert "mIoU s5" in board and "| adabn" in board
    assert (out / "leaderboards" / "shift_noise_severity.png").stat().st_size > 5000


def test_sanity_gate_warns_when_test_inputs_leave_the_training_range():
    from bench.data.splits import Split
    from bench.data.datasets import SceneData
    from bench.data.sanity import check

    scenario = load_scenario("samples_intra")
    train, test = load_split(scenario, "train"), load_split(scenario, "test")
    norm = get_registry().get("norm", "percentile").build().fit(train.samples())
    assert check(train, test, norm, BANDS)["warnings"] == []
    s = test.scenes[0]
    bright = Split.of("test", [SceneData(s.id, s.image + 0.8, s.codes, s.valid, s.meta)], test.labels, test.reference)
    with pytest.warns(UserWarning, match="normalization sanity: band B02: at least half of the test values lie "
                      "above the training data's 99th percentile"):
        found = check(train, bright, norm, BANDS)["warnings"]
    assert len(found) >= 3
    for message in found:  # the printed median never reads as equal to a printed bound
        median, low, high = re.search(r"median (\S+), training P1-P99 \[(\S+), (\S+)\]", message).groups()
        assert median not in (low, high), message


def test_numbers_are_printed_apart():
    from bench.data.sanity import apart

    assert apart(1.00003, 0.0, 1.0) == ("1.00003", "0", "1")
    assert apart(0.5, 0.25, 0.75) == ("0.5", "0.25", "0.75")


def test_leaderboard_warns_about_bit_identical_normalizers(tmp_path):
    from bench.boards.leaderboard import identical_metrics

    base = {"config": {"model": "m", "norm": "a", "adapt": "none"}, "seed": 0,
            "metrics": {"confusion": [[5, 1], [0, 4]]}}
    twin = json.loads(json.dumps(base))
    twin["config"]["norm"] = "b"
    other = json.loads(json.dumps(base))
    other["config"]["norm"], other["metrics"]["confusion"] = "c", [[4, 2], [0, 4]]
    with pytest.warns(UserWarning, match="a/none and b/none give bit-identical metrics"):
        assert len(identical_metrics([base, twin, other])) == 1
    perfect = [json.loads(json.dumps(base)), json.loads(json.dumps(twin))]
    for r in perfect:
        r["metrics"]["confusion"] = [[6, 0], [0, 4]]
    assert identical_metrics(perfect) == []  # two perfect scores are not a sign of a no-op
