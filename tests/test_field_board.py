"""The field's scores on the boards, from synthetic results: a result of today's format shows every metric
set, an old one (format 1, before the field's scores) still shows with the scores its confusion matrices
give, and the HTML page lets the reader switch between the sets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bench.boards.leaderboard import table, write_leaderboards
from bench.boards.report import write_report
from bench.core.metrics import boundary_summary, cover_summary, scores
from bench.core.results import load_results, write_json

SPACE = {"not_cloud": ["clear", "cloud_shadow"], "cloud": ["thick_cloud", "thin_cloud"]}
NAMES = list(SPACE)
DEFINITION = {"sources": {"train": {"dataset": "eolearn_slovenia"}, "val": {"dataset": "eolearn_slovenia"},
                          "test": {"dataset": "ukis_csmask_s2"}}, "shift": None}


def result(norm: str, scenes: dict[str, list[list[int]]], new: bool = True, seed: int = 0) -> dict:
    """A stored result with per-scene confusion matrices ``scenes`` (and each scene as one test block);
    ``new``: today's format with the field's scores, else format 1."""
    total = sum(np.array(c) for c in scenes.values())
    per_scene = {s: scores(c, NAMES, SPACE if new else None) for s, c in scenes.items()}
    metrics = {**scores(total, NAMES, SPACE if new else None), "label_space": SPACE}
    if new:
        metrics["boundary"] = boundary_summary({"0": total, "2": total - np.diag([5, 5])}, int(total.sum()), NAMES, SPACE)
        metrics["cloud_cover"] = cover_summary(per_scene, SPACE, NAMES)
        metrics["probabilities"] = {"calibration": {"bins": 15, "count": [0] * 14 + [10], "confidence": [0.0] * 14 + [9.5],
                                                    "correct": [0] * 14 + [9], "ece": 0.05},
                                    "cloud_probability": {"bins": 100, "cloud": [0] * 60 + [1] * 40,
                                                          "not_cloud": [1] * 40 + [0] * 60}}
    return {"format": 2 if new else 1, "config": {"model": "unet_mnv2", "norm": norm, "adapt": "none", "seed": seed},
            "seed": seed, "model": {"mode": "trained"}, "metrics": metrics, "per_scene": per_scene, "per_severity": None,
            "scenario": {"name": "samples_cross", "version": 1, "description": "synthetic", "reference": "human",
                         "definition": DEFINITION},
            "eval_key": f"{norm}-{seed}-{new}", "train_key": f"{norm}{seed}",
            "blocks": {"size": 64, "ids": [f"{s}@0,0" for s in scenes],
                       "confusion": [np.ravel(c).tolist() for c in scenes.values()]}}


GOOD = {"a": [[90, 2], [3, 5]], "b": [[20, 5], [4, 71]]}
POOR = {"a": [[80, 12], [6, 2]], "b": [[15, 10], [30, 45]]}


def stored(out: Path, *results: dict) -> list[dict]:
    for r in results:
        write_json(out / "results" / "samples_cross" / f"{r['eval_key']}.json", r)
    return load_results(out)


def test_every_metric_set_on_the_markdown_board(tmp_path):
    stored(tmp_path, result("percentile", GOOD), result("none", POOR))
    board = (tmp_path / "leaderboards" / "samples_cross.md")
    write_leaderboards(tmp_path)
    text = board.read_text()
    for heading in ("## The field's scores", "## Boundary tolerance", "## Cloud cover", "## Probabilities"):
        assert heading in text
    cloud = scores(sum(np.array(c) for c in GOOD.values()), NAMES, SPACE)["field"]["cloud"]
    row = next(line for line in text.splitlines() if line.startswith("| unet_mnv2 | percentile") and "BOA" not in line
               and f"{cloud['boa']:.3f}" in line)
    assert "best" in row  # the higher cloud BOA is the best row of BOA vs best
    assert re.search(r"\| unet_mnv2 \| none .*\[[-+]\d\.\d{3}, [-+]\d\.\d{3}\]", text)  # its BOA interval vs best


def test_an_old_result_shows_the_scores_its_confusion_gives_and_blanks_the_rest(tmp_path):
    results = stored(tmp_path, result("percentile", GOOD), result("none", POOR, new=False))
    df = table(results)
    old = df[df["norm"] == "none"].iloc[0]
    expected = scores(sum(np.array(c) for c in POOR.values()), NAMES, SPACE)["field"]["cloud"]
    assert old["BOA cloud"] == expected["boa"] and old["commission cloud"] == expected["commission"]
    assert old["cover MAE"] == cover_summary({s: {"confusion": c} for s, c in POOR.items()}, SPACE, NAMES)["mae"]
    assert np.isnan(old["mIoU k2"]) and np.isnan(old["ECE"])  # not stored by format 1
    assert not np.isnan(df[df["norm"] == "percentile"].iloc[0]["mIoU k2"])


def test_thresholds_come_from_the_stored_probability_counts(tmp_path):
    df = table(stored(tmp_path, result("percentile", GOOD)))
    row = df.iloc[0]  # cloud pixels all at p >= 0.6, not-cloud pixels all below 0.4
    assert row["BOA p≥0.5"] == 1.0 and row["BOA p≥0.8"] == 0.5 + 0.5 * 20 / 40
    assert 0.4 <= row["best threshold"] <= 0.6 and row["ECE"] == 0.05


def test_the_html_page_switches_between_metric_sets(tmp_path):
    stored(tmp_path, result("percentile", GOOD), result("none", POOR, new=False))
    write_report(tmp_path, tmp_path / "site")
    page = (tmp_path / "site" / "samples_cross.html").read_text()
    sets = re.findall(r'<section class=set data-set="(\w+)">', page)
    assert sets == ["iou", "field", "boundary", "cover", "probabilities"]
    assert all(f'<button type=button data-set="{s}">' in page for s in sets)
    figure = re.search(r'<img src="(figures/samples_cross/probabilities.png)" alt="reliability', page)
    assert figure and (tmp_path / "site" / figure.group(1)).stat().st_size > 1000
    assert "showSet" in (tmp_path / "site" / "board.js").read_text()


def test_a_board_of_single_runs_prints_every_score_with_three_decimals(tmp_path):
    """Without a ± in a column, a score is still written 1.000, not 1 (a Markdown table that parses the
    cells as numbers drops the zeros and a difference's sign)."""
    perfect = {"a": [[90, 0], [0, 10]], "b": [[30, 0], [0, 70]]}
    stored(tmp_path, result("percentile", perfect), result("none", POOR))
    write_leaderboards(tmp_path)
    rows = [line for line in (tmp_path / "leaderboards" / "samples_cross.md").read_text().splitlines()
            if line.startswith("| unet_mnv2 | percentile")]
    assert rows and all("| 1.000 " in line for line in rows[:2]) and not any("| 1 |" in line for line in rows[:3])
