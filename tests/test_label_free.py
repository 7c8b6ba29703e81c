"""Label-free estimates against synthetic models whose true accuracy is known by construction.

The calibrated model draws each pixel's true class from its own probabilities, so the true class is the
predicted one with probability equal to the confidence; the overconfident model is the same one with its
logits doubled. Expectations come from the true labels, never from the estimators under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from bench.core.label_free import (BINS, LEVELS, OUTSIDE_FLAG, TEMPERATURES, Calibrator, Signals,
                                   agreement_on_the_line, flagged_bands, fold, input_shift,
                                   pixel_agreement, probit_line, spearman, tempered)
from bench.core.labels import IGNORE
from bench.core.metrics import confusion, scores

K = 4
N = 200_000
HALF = N // 2
STEP = TEMPERATURES[1] / TEMPERATURES[0]  # ratio between neighbouring grid temperatures
#: (lut, group names): the four project classes, and cloud (thick + thin) vs not_cloud (clear + shadow)
SPACES = {"classes": (np.arange(K), ["clear", "thick_cloud", "thin_cloud", "cloud_shadow"]),
          "cloud": (np.array([0, 1, 1, 0]), ["not_cloud", "cloud"])}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0))
    return e / e.sum(axis=0)


@pytest.fixture(scope="module")
def model() -> tuple[np.ndarray, np.ndarray]:
    """(logits (K, N), true classes (N,)) with the true class drawn from softmax(logits)."""
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(K, N)) * 1.5 + np.array([[1.0], [0.3], [-0.3], [-0.8]])
    cumulative = np.cumsum(softmax(logits), axis=0)
    true = np.minimum((rng.random(N) > cumulative).sum(axis=0), K - 1)
    return logits, true


def calibrate(probs, reference, lut, names) -> dict:
    """Calibration from ``probs`` streamed in four chunks."""
    cal = Calibrator(len(names), lut)
    for chunk in np.array_split(np.arange(reference.size), 4):
        cal.add(probs[:, chunk], reference[chunk])
    return cal.result(names)


def observe(probs, lut, names, calibration) -> Signals:
    signals = Signals(len(names), lut, calibration)
    for chunk in np.array_split(np.arange(probs.shape[1]), 3):
        signals.add(probs[:, chunk])
    return signals


def truth(probs, true, lut, names) -> dict:
    """The scores of the model's own prediction (argmax of the group probabilities) against the labels."""
    predicted = fold(probs, lut, len(names)).argmax(axis=0)
    return scores(confusion(lut[true], predicted, len(names)), names)


@pytest.mark.parametrize("space", SPACES)
def test_a_calibrated_model_is_estimated_within_a_point(model, space):
    lut, names = SPACES[space]
    logits, true = model
    probs = softmax(logits)
    cal = calibrate(probs[:, :HALF], lut[true[:HALF]], lut, names)
    assert 1 / STEP - 1e-9 <= cal["temperature"] <= STEP + 1e-9  # T = 1 within a grid step

    # ATC threshold: the (1 - accuracy)-quantile of validation confidences, leaving accuracy above it
    top = fold(probs[:, :HALF], lut, len(names)).max(axis=0)
    accuracy = truth(probs[:, :HALF], true[:HALF], lut, names)["accuracy"]
    assert cal["accuracy"] == pytest.approx(accuracy)
    assert cal["atc_threshold"] == pytest.approx(np.quantile(top, 1 - accuracy), abs=1 / BINS)
    assert (top > cal["atc_threshold"]).mean() == pytest.approx(accuracy, abs=1e-3)

    estimates = observe(probs[:, HALF:], lut, names, cal).estimates(names)
    real = truth(probs[:, HALF:], true[HALF:], lut, names)
    for method in ("atc", "calibrated", "confidence", "doc", "no_drop"):
        assert estimates["accuracy"][method] == pytest.approx(real["accuracy"], abs=0.01), method
    assert estimates["miou"]["calibrated"] == pytest.approx(real["miou"], abs=0.02)
    assert estimates["iou"]["calibrated"] == pytest.approx(real["iou"], abs=0.02)


def test_an_overconfident_model_is_corrected_by_temperature(model):
    lut, names = SPACES["classes"]
    logits, true = model
    probs = softmax(2 * logits)  # the calibrated model, twice as sure of itself
    cal = calibrate(probs[:, :HALF], true[:HALF], lut, names)
    assert cal["temperature"] == pytest.approx(2.0, rel=STEP - 1)

    estimates = observe(probs[:, HALF:], lut, names, cal).estimates(names)
    real = truth(probs[:, HALF:], true[HALF:], lut, names)
    assert estimates["accuracy"]["confidence"] > real["accuracy"] + 0.05  # raw confidence overestimates
    assert estimates["accuracy"]["calibrated"] == pytest.approx(real["accuracy"], abs=0.01)
    assert estimates["miou"]["calibrated"] == pytest.approx(real["miou"], abs=0.02)
    assert estimates["miou"]["confidence"] > real["miou"] + 0.05


def test_fold_sums_the_member_classes_of_each_group():
    lut = np.array([0, 1, 1, 2])  # clear, cloud (thick + thin), shadow
    probs = np.array([[0.1, 0.7], [0.2, 0.1], [0.3, 0.1], [0.4, 0.1]])
    np.testing.assert_allclose(fold(probs, lut, 3), [[0.1, 0.7], [0.5, 0.2], [0.4, 0.1]])
    with pytest.raises(ValueError, match="lut"):
        fold(probs[:3], lut, 3)


def test_temperature_one_keeps_probabilities_and_a_large_one_flattens_them():
    probs = np.array([[0.7, 0.5], [0.2, 0.5], [0.1, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(tempered(probs, 1.0), probs)
    squared = probs ** 2 / (probs ** 2).sum(axis=0)  # T = 1/2: p^2, renormalised
    np.testing.assert_allclose(tempered(probs, 0.5), squared)
    # T -> infinity: uniform over the classes with p > 0; a zero probability stays zero
    np.testing.assert_allclose(tempered(probs, 1e9), [[1 / 3, 0.5], [1 / 3, 0.5], [1 / 3, 0], [0, 0]])


def test_probit_line_recovers_a_line_and_predicts_ood_accuracy():
    a, b = 0.8, -0.3
    id_agreement = np.array([0.6, 0.7, 0.8, 0.9, 0.95])
    ood_agreement = norm.cdf(a * norm.ppf(id_agreement) + b)
    assert probit_line(id_agreement, ood_agreement) == pytest.approx((a, b))
    id_accuracy = np.array([0.75, 0.85, 0.92])
    np.testing.assert_allclose(agreement_on_the_line(id_agreement, ood_agreement, id_accuracy),
                               norm.cdf(a * norm.ppf(id_accuracy) + b))


def test_with_fewer_than_three_pairs_or_no_spread_the_slope_is_one():
    x = np.array([0.7, 0.9])
    assert probit_line(x, norm.cdf(norm.ppf(x) - 0.4)) == pytest.approx((1.0, -0.4))
    close = np.array([0.60, 0.61, 0.62])  # pairs that barely differ: no slope is fitted to them
    assert probit_line(close, norm.cdf(40 * norm.ppf(close) - 10))[0] == 1.0
    same = np.full(4, 0.8)
    y = np.array([0.6, 0.65, 0.7, 0.75])
    assert probit_line(same, y) == pytest.approx((1.0, np.mean(norm.ppf(y) - norm.ppf(same))))


def test_input_shift_measures_a_shifted_band_and_flags_it():
    rng = np.random.default_rng(3)
    q = np.quantile(rng.normal(size=(3, 200_000)), LEVELS, axis=1).T
    train = np.vstack([q, np.full(len(LEVELS), np.nan)])  # the fourth band is unknown
    shifts = [0.0, 1.0, -2.0]  # in standard deviations
    test = [rng.normal(size=50_000) + d for d in shifts] + [rng.normal(size=100)]
    shift = input_shift(train, test)
    z01, z99 = norm.ppf(0.01), norm.ppf(0.99)
    # a normal shifted by d: outside P1-P99 with probability Phi(z01 - d) + 1 - Phi(z99 - d); every
    # quantile moves by d, so the 1-Wasserstein distance is d, divided by the P1-P99 range
    outside = [norm.cdf(z01 - d) + norm.sf(z99 - d) for d in shifts]
    assert outside[0] == pytest.approx(0.02)
    assert shift["outside"][:3] == pytest.approx(outside, abs=0.005)
    assert shift["distance"][:3] == pytest.approx([abs(d) / (z99 - z01) for d in shifts], abs=0.01)
    assert shift["outside"][3] is None and shift["distance"][3] is None
    bands = ["same", "up_1", "down_2", "unknown"]
    expected = [name for name, o in zip(bands, outside) if o > OUTSIDE_FLAG]
    assert "down_2" in expected and flagged_bands(shift, bands) == expected


def flat(d: dict, prefix: str = "") -> dict:
    """A nested dict as {"a.b": value}, for comparing with pytest.approx."""
    out = {}
    for key, value in d.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def test_merging_two_halves_equals_one_accumulator(model):
    lut, names = SPACES["cloud"]
    logits, true = model
    probs = softmax(logits[:, :20_000])
    cal = calibrate(probs, lut[true[:20_000]], lut, names)
    whole = observe(probs, lut, names, cal)
    part, rest = observe(probs[:, :7_000], lut, names, cal), observe(probs[:, 7_000:], lut, names, cal)
    part.merge(rest)
    assert part.signals([1]) == pytest.approx(whole.signals([1]))
    assert flat(part.estimates(names)) == pytest.approx(flat(whole.estimates(names)))
    with pytest.raises(ValueError, match="merge"):
        part.merge(Signals(2, lut, None))


def test_confidence_and_entropy_are_means_over_pixels():
    lut, names = SPACES["classes"]
    probs = np.array([[0.25, 1.0], [0.25, 0.0], [0.25, 0.0], [0.25, 0.0]])  # uniform, certain
    signals = Signals(4, lut)
    signals.add(probs)
    s = signals.signals([1, 2])
    assert s["confidence"] == pytest.approx((0.25 + 1.0) / 2)
    assert s["entropy"] == pytest.approx((np.log(4) + 0.0) / 2)
    assert s["cloud_fraction"] == 0.0 and s["atc_fraction"] is None  # both predicted clear (argmax 0)
    estimates = signals.estimates(names)  # without calibration only raw confidence is estimated
    assert estimates["accuracy"]["confidence"] == pytest.approx(0.625)
    assert {k: v for k, v in estimates["accuracy"].items() if k != "confidence"} == dict.fromkeys(
        ["no_drop", "atc", "doc", "calibrated"])


def test_a_model_without_probabilities_gives_only_pixels_and_cloud_fraction(model):
    lut, names = SPACES["classes"]
    logits, true = model
    cal = calibrate(softmax(logits[:, :1000]), true[:1000], lut, names)
    signals = Signals(4, lut, cal)
    signals.add_classes(np.array([0, 1, 2, 2, 3, 0]))
    assert signals.signals([1, 2]) == {"pixels": 6, "confidence": None, "entropy": None,
                                       "atc_fraction": None, "cloud_fraction": 0.5}
    estimates = signals.estimates(names)
    assert estimates["accuracy"] == {"no_drop": cal["accuracy"], "confidence": None, "atc": None,
                                     "doc": None, "calibrated": None}
    assert estimates["miou"] == {"no_drop": cal["miou"], "confidence": None, "doc": None, "calibrated": None}
    assert estimates["iou"]["calibrated"] == dict.fromkeys(names)


def test_the_model_s_own_decision_replaces_the_argmax(model):
    lut, names = SPACES["classes"]
    logits, true = model
    probs, reference = softmax(logits[:, :10_000]), true[:10_000].copy()
    reference[:100] = IGNORE
    cal = Calibrator(4, lut)
    cal.add(probs, reference, np.where(reference == IGNORE, 0, reference))  # a perfect decision rule
    calibration = cal.result(names)
    assert calibration["accuracy"] == 1.0 and calibration["pixels"] == 9_900
    default, given = observe(probs, lut, names, calibration), Signals(4, lut, calibration)
    given.add(probs, probs.argmax(axis=0))
    assert flat(given.estimates(names)) == pytest.approx(flat(default.estimates(names)))
    # everything predicted clear: the estimated accuracy is the mean calibrated probability of clear
    clear = Signals(4, lut, calibration)
    clear.add(probs, np.zeros(10_000, dtype=np.int64))
    expected = tempered(probs, calibration["temperature"])[0].mean()
    assert clear.estimates(names)["accuracy"]["calibrated"] == pytest.approx(expected)
    assert clear.signals([1, 2])["cloud_fraction"] == 0.0


def test_calibrating_on_no_labelled_pixel_is_refused():
    cal = Calibrator(2, SPACES["cloud"][0])
    with pytest.raises(ValueError, match="no labelled pixel"):
        cal.result(["not_cloud", "cloud"])
    cal.add(np.full((K, 3), 0.25), np.full(3, IGNORE))  # every pixel ignored
    with pytest.raises(ValueError, match="no labelled pixel"):
        cal.result(["not_cloud", "cloud"])


def test_pixel_agreement_ignores_pixels_either_prediction_left_out():
    a = np.array([0, 1, 2, IGNORE, 1, 0])
    b = np.array([0, 2, 2, 1, IGNORE, 0])
    assert pixel_agreement(a, b) == (3, 4)


def test_spearman_needs_three_varying_pairs():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    assert spearman([1, 2, None, 3], [1, 2, 3, None]) is None  # two finite pairs left


def test_a_group_the_model_never_predicts_counts_as_iou_zero_where_calibration_had_it():
    lut = np.array([0, 1, 1, 2])  # clear, cloud, cloud_shadow
    probs = np.array([[0.9, 0.2], [0.1, 0.8], [0.0, 0.0], [0.0, 0.0]])  # a cloud mask: no shadow, ever
    names = ["clear", "cloud", "cloud_shadow"]
    cal = {"temperature": 1.0, "atc_threshold": 0.5, "accuracy": 0.9, "miou": 0.6, "confidence": 0.9,
           "iou": {"clear": 0.9, "cloud": 0.9, "cloud_shadow": 0.0}}
    blind, aware = Signals(3, lut, cal), Signals(3, lut, cal, never=(2,))
    for s in (blind, aware):
        s.add(probs)
    two = blind.estimates(names)["miou"]["calibrated"]  # shadow left out: the mean of two groups
    assert aware.estimates(names)["miou"]["calibrated"] == pytest.approx(two * 2 / 3)
    assert aware.estimates(names)["iou"]["calibrated"]["cloud_shadow"] == 0.0
    cal["iou"]["cloud_shadow"] = None  # the calibration reference had no shadow: nothing to count
    absent = Signals(3, lut, cal, never=(2,))
    absent.add(probs)
    assert absent.estimates(names)["iou"]["calibrated"]["cloud_shadow"] is None
    assert absent.estimates(names)["miou"]["calibrated"] == pytest.approx(two)


def test_a_model_of_classes_only_is_calibrated_on_its_accuracy_alone():
    ref = np.array([0, 0, 1, 1, 1, IGNORE])
    cal = Calibrator(2, np.array([0, 1, 1, 0]))
    cal.add_classes(ref, np.array([0, 1, 1, 1, 0, 0]))
    result = cal.result(["not_cloud", "cloud"])
    assert result["accuracy"] == pytest.approx(3 / 5) and result["pixels"] == 5
    assert result["temperature"] is result["atc_threshold"] is result["confidence"] is None
    s = Signals(2, np.array([0, 1, 1, 0]), result)
    s.add_classes(np.array([0, 1, 1]))
    est = s.estimates(["not_cloud", "cloud"])
    assert est["accuracy"]["no_drop"] == pytest.approx(3 / 5)  # what agreement on the line starts from
    assert est["accuracy"]["atc"] is est["accuracy"]["doc"] is est["miou"]["calibrated"] is None
