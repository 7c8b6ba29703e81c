"""The field's scores (PA, UA, F1, BOA, omission, commission), the boundary buffer, cloud cover, calibration
and thresholds, each against figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bench.core.labels import IGNORE
from bench.core.metrics import (binary_scores, boa, boundary_confusions, boundary_excluded, cover_bin,
                                cover_summary, expected_calibration_error, positive_groups, scores,
                                threshold_scores, ProbabilityTally)

FOUR = {"clear": ["clear"], "thick_cloud": ["thick_cloud"], "thin_cloud": ["thin_cloud"],
        "cloud_shadow": ["cloud_shadow"]}
BINARY = {"not_cloud": ["clear", "cloud_shadow"], "cloud": ["thick_cloud", "thin_cloud"]}
#: rows: reference clear, thick, thin, shadow; columns: predicted
CM = np.array([[50, 5, 3, 2],
               [4, 30, 6, 0],
               [2, 3, 10, 1],
               [3, 0, 1, 8]])


def test_producers_and_users_accuracy_and_f1_per_group():
    f = scores(CM, list(FOUR), FOUR)["field"]
    # thin cloud: TP 10, reference 16 (row), predicted 20 (column)
    assert f["pa"]["thin_cloud"] == pytest.approx(10 / 16)
    assert f["ua"]["thin_cloud"] == pytest.approx(10 / 20)
    assert f["f1"]["thin_cloud"] == pytest.approx(2 * 10 / (16 + 20))
    assert f["pa"]["clear"] == pytest.approx(50 / 60) and f["ua"]["clear"] == pytest.approx(50 / 59)


def test_cloud_against_not_cloud_pools_thick_and_thin():
    cloud = scores(CM, list(FOUR), FOUR)["field"]["cloud"]
    # cloud = thick + thin: TP = 30 + 6 + 3 + 10 = 49; FN = 4 + 0 + 2 + 1 = 7; FP = 5 + 3 + 0 + 1 = 9;
    # TN = 50 + 2 + 3 + 8 = 63
    tp, fn, fp, tn = 49, 7, 9, 63
    assert cloud["pa"] == pytest.approx(tp / (tp + fn))
    assert cloud["ua"] == pytest.approx(tp / (tp + fp))
    assert cloud["tnr"] == pytest.approx(tn / (tn + fp))
    assert cloud["boa"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    assert cloud["omission"] == pytest.approx(fn / (tp + fn))
    assert cloud["commission"] == pytest.approx(fp / (tp + fp))
    assert cloud["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_shadow_against_the_rest_only_where_the_space_has_a_shadow_group():
    shadow = scores(CM, list(FOUR), FOUR)["field"]["shadow"]
    assert shadow["pa"] == pytest.approx(8 / 12) and shadow["ua"] == pytest.approx(8 / 11)
    assert shadow["boa"] == pytest.approx((8 / 12 + (128 - 12 - 3) / (128 - 12)) / 2)
    binary = np.array([[70, 5], [10, 40]])
    f = scores(binary, list(BINARY), BINARY)["field"]
    assert f["shadow"] is None  # cloud / not cloud: shadow is inside not_cloud
    assert f["cloud"]["boa"] == pytest.approx((40 / 50 + 70 / 75) / 2)


def test_a_group_that_mixes_cloud_with_clear_has_no_cloud_scores():
    mixed = {"clear+thin_cloud": ["clear", "thin_cloud"], "thick_cloud": ["thick_cloud"], "cloud_shadow": ["cloud_shadow"]}
    assert positive_groups(mixed, "cloud") is None
    assert scores(np.eye(3, dtype=int), list(mixed), mixed)["field"]["cloud"] is None


def test_a_score_without_a_denominator_is_none():
    s = binary_scores(np.array([[10, 0], [0, 0]]), [1])  # no cloud in reference or prediction
    assert s["pa"] is None and s["ua"] is None and s["boa"] is None and s["tnr"] == 1.0


def test_vectorized_boa_matches_the_scalar_one():
    stack = np.stack([CM, CM.T, CM * 2])
    assert boa(stack, [1, 2]) == pytest.approx([binary_scores(c, [1, 2])["boa"] for c in stack])


def square(size: int = 10, lo: int = 3, hi: int = 7) -> np.ndarray:
    ref = np.zeros((size, size), dtype=np.uint8)
    ref[lo:hi, lo:hi] = 1
    return ref


def test_boundary_buffer_around_a_drawn_square():
    ref = square()  # a 4 x 4 cloud in a 10 x 10 clear scene
    assert not boundary_excluded(ref, 0).any()
    # k = 1: the square's outer ring inside (16 - 4 = 12) and the ring around it (36 - 16 = 20)
    assert boundary_excluded(ref, 1).sum() == 12 + 20
    # k = 2: all of the square (16) and two rings outside (64 - 16 = 48)
    assert boundary_excluded(ref, 2).sum() == 16 + 48
    inner = boundary_excluded(ref, 1)[3:7, 3:7]
    assert inner.sum() == 12 and not inner[1:3, 1:3].any()


def test_nodata_is_no_boundary_and_a_wrong_edge_is_forgiven_by_the_buffer():
    ref = square()
    ref[:, 0] = IGNORE  # a nodata column next to clear pixels makes no boundary
    assert not boundary_excluded(ref, 1)[:, 1].any()
    pred = square(lo=2, hi=8)  # one pixel too wide on every side: all its errors sit on the boundary
    by_k = boundary_confusions(ref, pred, 2, (0, 1))
    assert by_k["0"][0, 1] == 36 - 16 - 0  # 20 clear pixels called cloud (none in the nodata column)
    assert by_k["1"][0, 1] == 0 and by_k["1"].sum() == (100 - 10) - (12 + 20)


def test_cloudsen12_cover_bins():
    assert [cover_bin(f) for f in (0.0, 0.001, 0.25, 0.2501, 0.45, 0.65, 0.651, 1.0)] == \
        ["clear", "almost clear", "almost clear", "low", "low", "mid", "cloudy", "cloudy"]


def test_cover_error_and_bins_from_per_scene_confusions():
    per_scene = {"a": {"confusion": [[90, 10], [0, 0]]},  # reference 0 % cloud, predicted 10 %
                 "b": {"confusion": [[30, 0], [20, 50]]}}  # reference 70 %, predicted 50 %
    c = cover_summary(per_scene, BINARY, list(BINARY))
    assert c["per_scene"]["a"] == pytest.approx({"reference": 0.0, "predicted": 0.1})
    assert c["mae"] == pytest.approx((0.1 + 0.2) / 2) and c["bias"] == pytest.approx((0.1 - 0.2) / 2)
    assert set(c["by_bin"]) == {"clear", "cloudy"} and c["by_bin"]["cloudy"]["scenes"] == 1
    assert c["by_bin"]["clear"]["accuracy"] == pytest.approx(0.9)


def test_expected_calibration_error_by_hand():
    # two bins: 10 pixels at confidence 0.9 of which 6 right; 30 at 0.5 of which 15 right
    assert expected_calibration_error([10, 30], [9.0, 15.0], [6, 15]) == pytest.approx(10 / 40 * 0.3)


def test_probability_tally_counts_confidence_and_cloud_probability():
    t = ProbabilityTally(BINARY)
    probs = np.array([[0.9, 0.2, 0.6, 0.05], [0.1, 0.8, 0.4, 0.95]], dtype=np.float32)  # not cloud, cloud
    pred, ref = probs.argmax(0), np.array([0, 1, 1, 1])
    t.add(probs, pred, ref)
    r = t.record()
    assert sum(r["calibration"]["count"]) == 4 and sum(r["calibration"]["correct"]) == 3
    assert r["calibration"]["ece"] == pytest.approx(
        expected_calibration_error(r["calibration"]["count"], r["calibration"]["confidence"], r["calibration"]["correct"]))
    cp = r["cloud_probability"]
    assert sum(cp["cloud"]) == 3 and sum(cp["not_cloud"]) == 1
    at = {s["threshold"]: s for s in threshold_scores(cp["cloud"], cp["not_cloud"], [0.3, 0.5, 0.9])}
    assert at[0.3]["pa"] == 1.0 and at[0.5]["pa"] == pytest.approx(2 / 3) and at[0.9]["pa"] == pytest.approx(1 / 3)
    assert at[0.3]["tnr"] == 1.0  # the not-cloud pixel has cloud probability 0.1
