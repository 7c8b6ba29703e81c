"""Confidence intervals over seeds and the paired block bootstrap, checked against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp

from bench.boards.leaderboard import kendall_tau, table
from bench.core.metrics import scores
from bench.boards.stats import miou, paired_bootstrap, seed_interval


def test_seed_interval_is_scipys_student_t_interval():
    values = [0.52, 0.61, 0.58, 0.66]
    mean, half = seed_interval(values)
    low, high = sp.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sp.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (mean - half, mean + half) == pytest.approx((low, high), abs=1e-12)
    assert np.isnan(seed_interval([0.7])[1]) and seed_interval([0.7])[0] == 0.7  # one seed: no interval


def test_vectorised_miou_follows_the_absent_class_rule_of_metrics():
    rng = np.random.default_rng(1)
    cms = rng.integers(0, 30, (20, 3, 3))
    cms[:5, 2, :] = 0
    cms[:5, :, 2] = 0  # class 2 absent from reference and prediction: left out of the mean
    expected = [scores(cm, ["a", "b", "c"])["miou"] for cm in cms]
    assert miou(cms) == pytest.approx(expected)


def _blocks(rng: np.random.Generator, n: int, skill, sizes: int = 0) -> np.ndarray:  # noqa: ANN001
    """Per-block 2-class confusion matrices of a classifier that is right with probability ``skill`` (one
    value, or one per block); ``sizes`` seeds the block sizes, so two calls can share the same blocks."""
    pos, neg = np.random.default_rng(sizes).integers(50, 200, (2, n))
    tp = rng.binomial(pos, skill)
    tn = rng.binomial(neg, skill)
    return np.stack([np.stack([tp, pos - tp], -1), np.stack([neg - tn, tn], -1)], -2)  # (n, 2, 2)


def test_paired_bootstrap_interval_matches_scipy_bootstrap():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.55, 0.95, 30)  # some blocks are hard for both: A and B are correlated
    a, b = _blocks(rng, 30, difficulty + 0.03), _blocks(rng, 30, difficulty)

    def diff(idx, axis=-1):  # noqa: ANN001 - scipy passes resampled block indices, vectorised
        w = (idx[..., None] == np.arange(len(a))).sum(-2)
        return miou(np.einsum("...n,nkl->...kl", w, a)) - miou(np.einsum("...n,nkl->...kl", w, b))

    ref = sp.bootstrap((np.arange(len(a)),), diff, vectorized=True, method="percentile", n_resamples=20000,
                       random_state=1).confidence_interval
    ours = paired_bootstrap(a[None], b[None], resamples=20000, seed=2)
    assert ours.diff == pytest.approx(float(miou(a.sum(0)) - miou(b.sum(0))))
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), abs=0.004)
    unpaired = [miou(a[rng.integers(0, 30, 30)].sum(0)) - miou(b[rng.integers(0, 30, 30)].sum(0)) for _ in range(2000)]
    assert ours.high - ours.low < 0.5 * np.subtract(*np.quantile(unpaired, [0.975, 0.025]))  # pairing matters


def test_paired_bootstrap_on_hand_examples():
    rng = np.random.default_rng(3)
    a = _blocks(rng, 25, 0.9)[None]
    same = paired_bootstrap(a, a)
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0) and not same.significant
    perfect = a.copy()
    perfect[..., 0, 0] += perfect[..., 0, 1]
    perfect[..., 1, 1] += perfect[..., 1, 0]
    perfect[..., 0, 1] = perfect[..., 1, 0] = 0  # A is right on every pixel B is
    better = paired_bootstrap(perfect, a)
    assert better.significant and better.p == 0.0 and better.low > 0
    # seeds are averaged on each side: A with two runs against B with three
    two, three = np.stack([a[0], perfect[0]]), np.stack([a[0], a[0], perfect[0]])
    d = paired_bootstrap(two, three).diff
    assert d == pytest.approx((miou(a[0].sum(0)) + 1.0) / 2 - (2 * miou(a[0].sum(0)) + 1.0) / 3)
    with pytest.raises(ValueError, match="same blocks"):
        paired_bootstrap(a, a[:, :10])


def result(norm: str, seed: int, blocks: np.ndarray, scenario: str = "cross", test: str = "other",
           train_key: str | None = None) -> dict:
    """A stored result as `bench run` writes it, reduced to what the leaderboard reads."""
    cm = blocks.sum(0)
    return {"config": {"model": "unet_mnv2", "norm": norm, "adapt": "none"}, "seed": seed,
            "metrics": scores(cm, ["cloud", "clear"]), "train_key": train_key or f"{norm}{seed}",
            "scenario": {"name": scenario, "version": 1, "reference": "human",
                         "definition": {"sources": {"train": {"dataset": "mine"}, "test": {"dataset": test}}}},
            "blocks": {"size": 64, "ids": [f"s@{i},0" for i in range(len(blocks))],
                       "confusion": [b.ravel().tolist() for b in blocks]},
            "_path": f"/runs/{scenario}/{norm}-{seed}.json"}


def test_leaderboard_marks_rows_tied_with_the_best_and_gives_seed_intervals():
    rng = np.random.default_rng(4)
    runs = ([result("percentile", s, _blocks(rng, 40, 0.90)) for s in range(3)]
            + [result("zscore", s, _blocks(rng, 40, 0.90)) for s in range(3)]
            + [result("none", s, _blocks(rng, 40, 0.60)) for s in range(3)])
    df = table(runs).set_index("norm")
    assert df.loc["none", "tied"] == "no" and df.loc["none", "best - this low"] > 0
    best = df.index[0]
    assert df.loc[best, "tied"] == "best"
    other = ({"percentile", "zscore"} - {best}).pop()
    assert df.loc[other, "tied"] == "yes"  # same skill: the interval of the difference reaches zero
    mean, half = seed_interval([r["metrics"]["miou"] for r in runs if r["config"]["norm"] == "none"])
    assert (df.loc["none", "mIoU"], df.loc["none", "mIoU ci95"]) == pytest.approx((mean, half))


def test_in_distribution_drop_and_how_the_ranking_changes():
    rng = np.random.default_rng(5)
    skill_intra = {"none": 0.95, "percentile": 0.93, "zscore": 0.91}
    skill_cross = {"none": 0.60, "percentile": 0.85, "zscore": 0.75}
    intra = [result(n, 0, _blocks(rng, 20, q), scenario="intra", test="mine") for n, q in skill_intra.items()]
    cross = [result(n, 0, _blocks(rng, 20, q)) for n, q in skill_cross.items()]
    df = table(cross, intra + cross).set_index("norm")
    assert set(df["in-dist scenario"]) == {"intra"}
    assert df.loc["none", "drop"] == pytest.approx(intra[0]["metrics"]["miou"] - cross[0]["metrics"]["miou"])
    assert list(df.loc[["none", "percentile", "zscore"], "rank in-dist"]) == [1, 2, 3]
    assert list(df.loc[["none", "percentile", "zscore"], "rank"]) == [3, 1, 2]
    assert kendall_tau(df) == pytest.approx(sp.kendalltau([1, 2, 3], [3, 1, 2]).statistic)
    assert "in-dist scenario" not in table(intra, intra + cross)  # the in-distribution board itself


def simulated_entry(rng, seeds, difficulty, skill=0.8, sd_seed=0.03, px=200):
    """Per-block confusion matrices ``(seeds, blocks, 2, 2)`` of an entry whose accuracy is ``skill`` plus a
    per-seed offset (training noise) plus each block's difficulty (shared by every entry: same test set)."""
    runs = []
    for _ in range(seeds):
        offset = rng.normal(0, sd_seed)
        cms = []
        for d in difficulty:
            ref = rng.random(px) < 0.5
            pred = np.where(rng.random(px) < np.clip(skill + offset + d, 0.01, 0.99), ref, ~ref)
            cm = np.zeros((2, 2))
            np.add.at(cm, (ref.astype(int), pred.astype(int)), 1)
            cms.append(cm)
        runs.append(cms)
    return np.array(runs)


def rejection_rate(compare, seeds, trials=120, gap=0.0, resamples=300):
    """How often ``compare`` calls A and B different (95 % interval excludes 0) when A's skill exceeds B's
    by ``gap``."""
    rng = np.random.default_rng(7)
    hits = 0
    for t in range(trials):
        difficulty = rng.normal(0, 0.05, 12)
        a = simulated_entry(rng, seeds, difficulty, skill=0.8 + gap)
        b = simulated_entry(rng, seeds, difficulty)
        c = compare(a, b, resamples=resamples, seed=t)
        hits += c.low > 0 or c.high < 0
    return hits / trials


def test_hierarchical_bootstrap_holds_its_level_when_training_noise_dominates():
    """Entries of equal skill whose seeds differ (sd 0.03 in accuracy) on a shared test set: resampling
    test blocks alone calls them different most of the time; resampling seeds and blocks together stays
    near the nominal 5 % (three seeds, 120 simulated boards), and still finds a real gap of 0.15."""
    from bench.boards.stats import hierarchical_bootstrap

    blocks_only = rejection_rate(paired_bootstrap, seeds=3)
    hierarchical = rejection_rate(hierarchical_bootstrap, seeds=3)
    assert blocks_only > 0.4, blocks_only
    assert hierarchical <= 0.1, hierarchical
    assert rejection_rate(hierarchical_bootstrap, seeds=3, gap=0.15, trials=40) >= 0.8


def test_hierarchical_bootstrap_with_one_seed_is_the_block_bootstrap():
    from bench.boards.stats import hierarchical_bootstrap

    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 50, (1, 20, 3, 3)), rng.integers(0, 50, (1, 20, 3, 3))
    h, p = hierarchical_bootstrap(a, b, resamples=500), paired_bootstrap(a, b, resamples=500)
    assert (h.low, h.high, h.seeds) == (p.low, p.high, (1, 1))
    three = hierarchical_bootstrap(np.concatenate([a, a, a]), np.concatenate([b, b, b]), resamples=500)
    assert three.seeds == (3, 3) and three.diff == pytest.approx(p.diff)  # identical seeds: same difference


def test_a_draw_on_which_the_score_is_undefined_is_left_out_of_the_interval():
    """BOA needs cloud and not cloud: two test blocks, one all cloud, one all clear, make a quarter of the
    draws all cloud and another quarter all clear. The interval comes from the other draws, without a
    warning."""
    import warnings
    from functools import partial

    from bench.boards.stats import hierarchical_bootstrap
    from bench.core.metrics import boa

    cloudy, clear = np.array([[0, 0], [10, 90]]), np.array([[95, 5], [0, 0]])  # rows: reference not cloud, cloud
    a = np.stack([clear, cloudy])[None]
    b = np.stack([np.array([[80, 20], [0, 0]]), np.array([[0, 0], [30, 70]])])[None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = paired_bootstrap(a, b, resamples=400, stat=partial(boa, positive=[1]))
        three = hierarchical_bootstrap(np.concatenate([a, a, a]), np.concatenate([b, b * 2, b]), resamples=400,
                                       stat=partial(boa, positive=[1]))
    assert one.diff == pytest.approx((0.95 + 0.9) / 2 - (0.8 + 0.7) / 2)
    assert np.isfinite([one.low, one.high, three.low, three.high]).all() and one.low <= one.diff <= one.high
