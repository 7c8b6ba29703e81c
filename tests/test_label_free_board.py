"""The label-free board, on synthetic results whose answers are known by construction: an estimator equal
to the labelled figure has no error, a constant offset has that offset as its error, agreement on a known
probit line gives back the accuracy on that line, and results without label-free estimates are skipped
here while every other board keeps them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from bench.boards.label_free import (family_of, label_free_rows, label_free_scene_rows, label_free_summary,
                                     worst_conditions, write_label_free_board)
from bench.boards.leaderboard import write_leaderboards
from bench.boards.report import write_report
from bench.core.labels import IGNORE
from bench.core.results import load_results, write_json


def definition(train: dict, test: dict, shift: dict | None = None) -> dict:
    """A scenario definition as results store it, reduced to its sources and shift."""
    return {"sources": {"train": train, "val": train, "test": test}, "shift": shift}


UKIS_TRAIN = {"dataset": "ukis_csmask_s2", "window": {"rows": [0, 512], "cols": [0, 384]}}
UKIS_TEST = {"dataset": "ukis_csmask_s2", "window": {"rows": [256, 512], "cols": [384, 512]}}
INTRA = definition(UKIS_TRAIN, UKIS_TEST)
TEMPORAL = definition({"dataset": "eolearn_slovenia", "months": [7]}, {"dataset": "eolearn_slovenia", "months": [8, 9]})
OTHER_SCENES = definition({"dataset": "cloudsen12_l1c", "scenes": ["a"]}, {"dataset": "cloudsen12_l1c", "scenes": ["b"]})
CROSS = definition(UKIS_TRAIN, {"dataset": "cloudsen12_l1c"})
SHIFT = definition(UKIS_TRAIN, UKIS_TEST, {"type": "noise", "severities": [0, 1, 2]})


def metrics(accuracy: float, miou: float) -> dict:
    """Labelled metrics as evaluation writes them, reduced to what the boards read (the confusion differs
    with the figures, so that no two results look like twins)."""
    return {"accuracy": accuracy, "miou": miou, "iou": {"cloud": miou, "clear": miou},
            "confusion": [[round(1000 * accuracy), 5], [5, round(1000 * miou)]], "classes": ["cloud", "clear"]}


def label_free(estimates: dict[str, tuple], per_scene: dict | None = None, **top) -> dict:
    """A ``label_free`` record; ``estimates``: estimator -> (accuracy, mIoU) estimates; ``per_scene``:
    scene -> the same; ``top``: calibration and predictions."""
    def shaped(e: dict[str, tuple]) -> dict:
        return {"accuracy": {k: a for k, (a, _) in e.items()}, "miou": {k: m for k, (_, m) in e.items()},
                "iou": {"calibrated": {}}}

    return {"version": 1, "signals": {"pixels": 1000}, "estimates": shaped(estimates),
            "per_scene": {s: {"signals": {}, "estimates": shaped(e)} for s, e in (per_scene or {}).items()}, **top}


def result(norm_: str, accuracy: float, miou: float, estimates: dict[str, tuple] | None, *,
           scenario: str = "samples_cross", scenario_definition: dict = CROSS, seed: int = 0, version: int = 1,
           eval_key: str | None = None, per_scene: dict | None = None, **lf) -> dict:
    """A stored result as `bench run` writes it, reduced to what the boards read; ``estimates`` None: an old
    result, from before label-free estimates were recorded."""
    r = {"config": {"model": "unet_mnv2", "norm": norm_, "adapt": "none", "seed": seed}, "seed": seed,
         "scenario": {"name": scenario, "version": version, "description": f"{scenario}, synthetic", "reference": "human",
                      "definition": scenario_definition},
         "model": {"mode": "trained"}, "eval_key": eval_key or f"{scenario}-{norm_}-{seed}-v{version}",
         "train_key": f"{norm_}{seed}", "metrics": metrics(accuracy, miou),
         "per_scene": {s: {"accuracy": a, "miou": m} for s, (a, m) in (per_scene or {}).items()},
         "per_severity": None}
    if estimates is not None:
        r["label_free"] = label_free(estimates, **lf)
    return r


def stored(out: Path, *results: dict) -> list[dict]:
    """Write results where `bench run` puts them and read them back as the boards do."""
    for r in results:
        write_json(out / "results" / r["scenario"]["name"] / f"{r['eval_key']}.json", r)
    return load_results(out)


def board_of(rows: pd.DataFrame, metric: str = "miou", family: str = "all") -> pd.DataFrame:
    s = label_free_summary(rows)
    return s[(s["metric"] == metric) & (s["family"] == family)].set_index("estimator")


#: norm -> (accuracy, mIoU) of four results on one scenario
ACTUAL = {"none": (0.80, 0.50), "zscore": (0.85, 0.60), "percentile": (0.90, 0.70), "minmax": (0.95, 0.80)}


def four_results() -> list[dict]:
    """``exact`` equals the labelled figures, ``offset`` is 0.05 above them, ``reversed`` ranks them backwards."""
    return [result(n, a, m, {"exact": (a, m), "offset": (a + 0.05, m + 0.05), "reversed": (1.75 - a, 1.3 - m)})
            for n, (a, m) in ACTUAL.items()]


def test_an_exact_estimator_has_no_error_perfect_rank_and_no_regret():
    board = board_of(label_free_rows(four_results()))
    exact = board.loc["exact"]
    assert (exact["n"], exact["MAE"], exact["spearman"]) == (4, 0.0, 1.0)
    assert (exact["groups"], exact["regret median"], exact["regret mean"]) == (1, 0.0, 0.0)
    assert list(board.index) == ["exact", "offset", "reversed"]  # sorted by MAE


@pytest.mark.parametrize("metric", ["miou", "accuracy"])
def test_a_constant_offset_is_the_mean_absolute_error_and_keeps_the_ranking(metric):
    offset = board_of(label_free_rows(four_results()), metric).loc["offset"]
    assert offset["MAE"] == pytest.approx(0.05) and offset["mean error"] == pytest.approx(0.05)
    assert offset["spearman"] == 1.0 and offset["regret mean"] == 0.0


def test_a_reversed_ranking_picks_the_worst_model():
    reversed_ = board_of(label_free_rows(four_results())).loc["reversed"]
    assert reversed_["spearman"] == -1.0
    assert reversed_["regret median"] == pytest.approx(0.80 - 0.50)  # best actual minus the one ranked first
    assert reversed_["MAE"] == pytest.approx(np.mean([0.3, 0.1, 0.1, 0.3]))


def shift_result(norm_: str, skill: float) -> dict:
    """A shift result of three severities; severity k: accuracy skill - 0.1 k, mIoU skill - 0.2 - 0.1 k, and
    ``calibrated`` 0.01 under each; its pooled estimate (0.5) is of no condition."""
    r = result(norm_, skill - 0.1, skill - 0.3, {"calibrated": (0.5, 0.5)}, scenario="shift_noise",
               scenario_definition=SHIFT)
    r["per_severity"] = {str(k): {**metrics(skill - 0.1 * k, skill - 0.2 - 0.1 * k), "per_scene": {},
                                  "label_free": label_free({"calibrated": (skill - 0.1 * k - 0.01,
                                                                           skill - 0.21 - 0.1 * k)})}
                         for k in range(3)}
    return r


def test_a_shift_result_is_one_condition_per_severity():
    rows = label_free_rows([shift_result("percentile", 0.9), shift_result("zscore", 0.8)])
    mine = rows[(rows["metric"] == "miou") & (rows["estimator"] == "calibrated") & (rows["norm"] == "percentile")]
    assert list(mine["severity"]) == ["0", "1", "2"]
    assert list(mine["actual"]) == pytest.approx([0.7, 0.6, 0.5])
    assert list(mine["estimate"]) == pytest.approx([0.69, 0.59, 0.49])
    assert set(mine["family"]) == {"shift"}
    calibrated = board_of(rows).loc["calibrated"]
    assert calibrated["groups"] == 3  # models are compared within each severity
    assert calibrated["MAE"] == pytest.approx(0.01) and calibrated["regret mean"] == 0.0


@pytest.mark.parametrize("scenario_definition, family", [
    (INTRA, "intra"), (TEMPORAL, "temporal"), (OTHER_SCENES, "temporal"), (CROSS, "cross-dataset"),
    (definition(UKIS_TRAIN, {"dataset": "cloudsen12_l1c"}, {"type": "haze"}), "shift"),  # a shift comes first
], ids=["intra", "months", "scenes", "cross-dataset", "shift"])
def test_the_family_follows_the_scenario_definition(scenario_definition, family):
    r = result("percentile", 0.9, 0.7, {"calibrated": (0.9, 0.7)}, scenario_definition=scenario_definition)
    assert family_of(r) == family
    assert set(label_free_rows([r])["family"]) == {family}


def pair_maps(agree: int, compared: int, ignored: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two group maps that agree on ``agree`` of the ``compared`` pixels both evaluate; the first leaves
    ``ignored`` more pixels unevaluated (IGNORE)."""
    a = np.zeros((1, compared + ignored), dtype=np.uint8)
    b = a.copy()
    b[0, : compared - agree] = 1
    a[0, compared:] = IGNORE
    return a, b


ID_ACCURACY = {"percentile": 0.92, "zscore": 0.85}
#: in distribution the two models agree on 900 / 1000 pixels, out of it on 330 / 400 + 370 / 600 = 700 / 1000
LINE = norm.ppf(0.7) - norm.ppf(0.9)  # the probit line of slope 1 (two models) through that agreement
ON_THE_LINE = {n: float(norm.cdf(norm.ppf(a) + LINE)) for n, a in ID_ACCURACY.items()}


def with_predictions(out: Path, r: dict, maps: dict[str, np.ndarray], calibration_accuracy: float) -> dict:
    """``r`` with its prediction maps written beside its JSON and a calibration of that accuracy."""
    name = f"{r['eval_key']}.predictions.npz"
    folder = out / "results" / r["scenario"]["name"]
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / name, **maps)
    r["label_free"].update(predictions=name, calibration={
        "source": {"scenario": r["scenario"]["name"], "split": "val", "dataset": "ukis_csmask_s2"},
        "temperature": 1.0, "atc_threshold": 0.8, "accuracy": calibration_accuracy, "miou": 0.7,
        "confidence": 0.9, "pixels": 1000})
    return r


@pytest.mark.parametrize("shift", [False, True], ids=["no shift", "shift severity 2"])
def test_agreement_on_a_known_line_gives_back_the_accuracy_on_it(tmp_path, shift):
    val, t1, t2 = pair_maps(900, 1000, ignored=100), pair_maps(330, 400), pair_maps(370, 600)
    prefix = "test/2/" if shift else "test/"
    results = []
    for i, (n, acc) in enumerate(ID_ACCURACY.items()):
        maps = {"val/v1": val[i], f"{prefix}t1": t1[i], f"{prefix}t2": t2[i]}
        scenes = {"t1": (0.9, 0.7), "t2": (0.9, 0.7)}
        if shift:  # severity 0: the same agreement out of distribution as in it, so no drop is estimated
            maps.update({"test/0/t1": val[i], "test/0/t2": val[i]})
            r = shift_result(n, 0.9)
            for k, actual in (("0", acc), ("2", ON_THE_LINE[n])):
                r["per_severity"][k].update(accuracy=actual, per_scene=scenes)
        else:
            r = result(n, ON_THE_LINE[n], 0.6, {"calibrated": (0.8, 0.6)}, per_scene=scenes)
        results.append(with_predictions(tmp_path, r, maps, acc))
    alone = result("minmax", 0.8, 0.6, {"calibrated": (0.8, 0.6)}, scenario="samples_temporal",
                   scenario_definition=TEMPORAL)  # no other result in its group
    no_file = result("none", 0.7, 0.5, {"calibrated": (0.7, 0.5)})  # same group, no prediction maps
    rows = label_free_rows(stored(tmp_path, *results, with_predictions(tmp_path, alone, {"val/v1": val[0]}, 0.9),
                                  no_file))
    aol = rows[rows["estimator"] == "aol"]
    assert set(aol["metric"]) == {"accuracy"}  # agreement-on-the-line estimates accuracy only
    severity = "2" if shift else ""
    on_line = aol[aol["severity"] == severity].set_index("norm")
    assert on_line.loc["percentile", "estimate"] == pytest.approx(ON_THE_LINE["percentile"], abs=1e-9)
    assert on_line.loc["zscore", "estimate"] == pytest.approx(ON_THE_LINE["zscore"], abs=1e-9)
    assert on_line["error"].dropna().abs().max() < 1e-9
    if shift:
        same = aol[aol["severity"] == "0"].set_index("norm")["estimate"]
        assert dict(same) == pytest.approx(ID_ACCURACY)
    else:
        assert np.isnan(on_line.loc["none", "estimate"])
    assert aol[aol["scenario"] == "samples_temporal"]["estimate"].isna().all()


def test_only_the_newest_scenario_version_counts_and_copies_count_once():
    copies = [result("percentile", 0.9, 0.7, {"calibrated": (0.8, 0.6)}, eval_key="same") for _ in range(2)]
    old = result("zscore", 0.9, 0.7, {"calibrated": (0.1, 0.1)}, version=0)
    rows = label_free_rows([*copies, old, result("none", 0.8, 0.6, {"calibrated": (0.8, 0.6)})])
    assert sorted(rows[rows["metric"] == "miou"]["norm"]) == ["none", "percentile"]


def test_scene_level_compares_each_scene_with_its_own_estimate():
    scenes = {"a": (0.9, 0.7), "b": (0.8, 0.6), "c": (0.7, 0.4)}
    r = result("percentile", 0.8, 0.6, {"exact": (0.8, 0.6)}, per_scene=scenes)
    r["label_free"] = label_free({"exact": (0.8, 0.6)},
                                 per_scene={s: {"exact": (a, m), "high": (a + 0.1, m + 0.1)} for s, (a, m) in scenes.items()})
    rows = label_free_scene_rows([r])
    assert sorted(set(rows["scene"])) == ["a", "b", "c"]
    summary = label_free_summary(rows, regret=False)
    miou = summary[(summary["metric"] == "miou") & (summary["family"] == "all")].set_index("estimator")
    assert (miou.loc["exact", "n"], miou.loc["exact", "MAE"], miou.loc["exact", "spearman"]) == (3, 0.0, 1.0)
    assert miou.loc["high", "MAE"] == pytest.approx(0.1)
    assert "regret mean" not in summary  # one scene is not a choice between models


def test_where_it_fails_lists_the_largest_errors_of_the_best_estimator():
    errors = [0.01, 0.07, 0.02, 0.06, 0.03, 0.05, 0.04]
    results = [result(f"n{i}", 0.9, 0.5, {"close": (0.9, 0.5 + e), "far": (0.9, 0.9)}) for i, e in enumerate(errors)]
    rows = label_free_rows(results)
    best, worst = worst_conditions(rows, label_free_summary(rows), "miou")
    assert best == "close"
    assert list(worst["error"]) == pytest.approx([0.07, 0.06, 0.05, 0.04, 0.03])
    assert list(worst["norm"]) == ["n1", "n3", "n5", "n6", "n4"]


def test_an_old_result_is_skipped_here_and_stays_on_its_scenario_board(tmp_path):
    old = result("zscore", 0.8, 0.6, None, scenario="samples_intra", scenario_definition=INTRA)
    assert "label_free" not in old
    stored(tmp_path, old)
    written = write_leaderboards(tmp_path, tmp_path / "lb")
    assert [p.name for p in written] == ["samples_intra.md", "samples_intra.csv"]  # no label-free board
    assert write_label_free_board(load_results(tmp_path), tmp_path / "lb") is None

    new = [result(n, a, m, {"calibrated": (a - 0.02, m - 0.03)}) for n, (a, m) in ACTUAL.items()]
    results = stored(tmp_path, *new)
    written = write_leaderboards(tmp_path, tmp_path / "lb")
    assert [p.name for p in written] == ["samples_cross.md", "samples_cross.csv", "samples_intra.md",
                                         "samples_intra.csv", "label_free.md", "label_free.csv"]
    assert "| unet_mnv2 | zscore" in (tmp_path / "lb" / "samples_intra.md").read_text()
    assert set(label_free_rows(results)["scenario"]) == {"samples_cross"}
    md = (tmp_path / "lb" / "label_free.md").read_text()
    assert "from 4 results; do not edit" in md and "1 result(s) without them (from before they were recorded) are left out" in md
    assert "1 scenario(s), 1 model(s)" in md


def test_the_board_and_the_html_page(tmp_path):
    results = [*four_results(), shift_result("percentile", 0.9), shift_result("zscore", 0.8)]
    stored(tmp_path, *results)
    write_leaderboards(tmp_path, tmp_path / "lb", command="bench leaderboard")
    md = (tmp_path / "lb" / "label_free.md").read_text()
    assert "Generated by `bench leaderboard` from **6 results**" in md and "2 scenario(s), 1 model(s)" in md
    assert "10 conditions" in md and "cross-dataset 4, shift 6" in md
    assert md.index("## mIoU") < md.index("## accuracy") and "Where it fails" in md
    assert "Scene level" not in md  # these results store no per-scene estimates
    csv = pd.read_csv(tmp_path / "lb" / "label_free.csv")
    assert set(csv["level"]) == {"run"}  # these results store no per-scene estimates
    exact = csv[(csv["metric"] == "miou") & (csv["family"] == "cross-dataset") & (csv["estimator"] == "exact")]
    assert list(exact["MAE"]) == [0.0]

    pages = write_report(tmp_path, tmp_path / "site")
    assert [p.name for p in pages] == ["index.html", "samples_cross.html", "shift_noise.html", "label_free.html"]
    assert 'href="label_free.html"' in (tmp_path / "site" / "index.html").read_text()
    page = (tmp_path / "site" / "label_free.html").read_text()
    images = re.findall(r'<img src="([^"]+)" alt="([^"]+)">', page)
    assert len(images) == 2 and page.count("<figcaption") == 2  # mIoU and accuracy
    assert all((tmp_path / "site" / src).stat().st_size > 5000 and alt for src, alt in images)
    assert not re.search(r'(src|href)="?(https?:|//)', page)  # opens from disk, nothing fetched
    assert page.count("<table class=board>") == 2 * 2  # per metric: run level and where it fails (no scene level)

    alone = tmp_path / "alone"
    assert [p.name for p in write_report(tmp_path, alone, ["label_free"])] == ["label_free.html"]
    assert not (alone / "index.html").exists()  # the scenario pages and the index are left as they are
    assert [p.name for p in write_leaderboards(tmp_path, alone, ["label_free"])] == ["label_free.md", "label_free.csv"]


def test_a_damaged_predictions_file_warns_and_leaves_only_aol_out(tmp_path):
    val, test = pair_maps(900, 1000), pair_maps(700, 1000)
    results = [with_predictions(tmp_path, result(n, 0.8, 0.6, {"calibrated": (0.8, 0.6)}),
                                {"val/v1": val[i], "test/t1": test[i]}, 0.9) for i, n in enumerate(ID_ACCURACY)]
    damaged = tmp_path / "results" / "samples_cross" / results[0]["label_free"]["predictions"]
    damaged.write_bytes(damaged.read_bytes()[:100])  # a copy cut short
    with pytest.warns(UserWarning, match="unreadable prediction maps"):
        rows = label_free_rows(stored(tmp_path, *results))
    assert rows[rows["estimator"] == "aol"]["estimate"].isna().all()
    assert rows[rows["estimator"] == "calibrated"]["estimate"].notna().all()


def test_the_header_names_the_commands_and_commits_that_made_the_results():
    from bench.boards.label_free import made_by

    results = [{"command": "bench sweep --seeds 3", "git": {"commit": "a" * 40, "dirty": False}}] * 2
    results += [{"command": "bench run", "git": {"commit": "b" * 40, "dirty": True}}]
    assert made_by(results) == [{"command": "bench sweep --seeds 3", "results": 2, "commits": "a" * 10},
                                {"command": "bench run", "results": 1, "commits": "b" * 10 + " (dirty)"}]
