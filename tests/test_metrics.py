"""Metrics against confusion matrices worked out by hand; label folding into evaluation spaces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.core.errors import ConfigError, DataError
from bench.core.labels import IGNORE, EvalSpace, LabelMap
from bench.core.metrics import confusion, scores


def test_scores_of_a_hand_computed_confusion_matrix():
    ref = np.array([0, 0, 0, 1, 1, 2, IGNORE])
    pred = np.array([0, 0, 1, 1, 0, 2, 2])
    cm = confusion(ref, pred, 3)
    assert cm.tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]  # the IGNORE pixel is not counted
    s = scores(cm, ["clear", "cloud", "cloud_shadow"])
    # clear: TP 2, FP 1, FN 1 -> 2/4; cloud: TP 1, FP 1, FN 1 -> 1/3; shadow: 1/1
    assert s["iou"] == pytest.approx({"clear": 0.5, "cloud": 1 / 3, "cloud_shadow": 1.0})
    assert s["miou"] == pytest.approx((0.5 + 1 / 3 + 1) / 3)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["n_pixels"] == 6


def test_class_absent_from_reference_and_prediction_is_nan_and_left_out():
    cm = confusion(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    s = scores(cm, ["a", "b", "c"])
    assert s["iou"]["c"] is None
    assert s["miou"] == pytest.approx((0.5 + 0.5) / 2)


def test_class_present_only_in_prediction_counts_as_zero():
    s = scores(confusion(np.array([0, 0]), np.array([0, 1]), 2), ["a", "b"])
    assert s["iou"]["b"] == 0.0 and s["miou"] == pytest.approx(0.25)


def test_ukis_codes_fold_into_the_finest_space():
    labels = LabelMap.parse({"0": "cloud_shadow", "1": "clear", "3": "clear", "4": "cloud"}, "t")
    space = labels.finest_space()
    assert space.to_dict() == {"clear": ["clear"], "cloud": ["thick_cloud", "thin_cloud"],
                               "cloud_shadow": ["cloud_shadow"]}
    codes = np.array([[0, 1, 3, 4]])
    assert labels.reference_groups(codes, space).tolist() == [[2, 0, 0, 1]]
    assert labels.train_targets(codes).tolist() == [[3, 0, 0, 1]]  # cloud trains as thick_cloud
    # model classes clear, thick, thin, shadow -> clear, cloud, cloud, shadow
    assert space.class_lut().tolist() == [0, 1, 1, 2]


def test_cloud_vs_not_cloud_folds_shadow_into_not_cloud():
    labels = LabelMap.parse({"0": "not_cloud", "1": "cloud", "255": "nodata"}, "t")
    space = labels.finest_space()
    assert space.names == ["not_cloud", "cloud"]
    assert space.class_lut().tolist() == [0, 1, 1, 0]
    assert labels.reference_groups(np.array([0, 1, 255]), space).tolist() == [0, 1, IGNORE]


def test_a_space_finer_than_the_reference_is_refused():
    labels = LabelMap.parse({"0": "not_cloud", "1": "cloud"}, "t")
    fine = EvalSpace.parse({"clear": ["clear"], "cloud": ["cloud"], "shadow": ["cloud_shadow"]}, "t")
    with pytest.raises(ConfigError, match="reference code 0 stands for .*cloud_shadow.*splits"):
        labels.check_space(fine, "t")


def test_space_must_partition_the_classes():
    with pytest.raises(ConfigError, match="in no group"):
        EvalSpace.parse({"cloud": ["cloud"]}, "t")
    with pytest.raises(ConfigError, match="in two groups"):
        EvalSpace.parse({"a": ["cloud", "clear"], "b": ["clear", "cloud_shadow"]}, "t")
    with pytest.raises(ConfigError, match="unknown class 'clouds'; did you mean 'cloud'"):
        EvalSpace.parse({"a": ["clouds"]}, "t")


def test_unknown_label_code_names_code_count_and_file():
    labels = LabelMap.parse({"0": "clear", "1": "cloud"}, "t")
    with pytest.raises(DataError, match=r"scene.tif: label code 7 \(3 pixels\) not in the label mapping"):
        labels.check(np.array([0, 1, 7, 7, 7]), "scene.tif")


def test_nan_iou_is_written_as_null_json(tmp_path):
    import json

    from bench.core.results import write_json

    p = write_json(tmp_path / "r.json", {"miou": math.nan, "x": [1.0, float("inf")]})
    assert json.loads(p.read_text()) == {"miou": None, "x": [1.0, None]}
