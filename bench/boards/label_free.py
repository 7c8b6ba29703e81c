"""The label-free board: how well each label-free estimator predicts a model's accuracy and mIoU.

A result JSON may carry ``label_free`` (written by the evaluation with :mod:`bench.core.label_free`):
estimates of accuracy and mIoU made without labels, beside the labelled ``metrics``. This board scores the
estimators against those metrics; results without ``label_free`` are skipped here (every other board shows
them as before).

* A *condition* is one labelled evaluation (:func:`conditions_of`): a result without a shift is one
  (``metrics`` against ``label_free.estimates``), a shift result one per severity (``per_severity[k]``
  against its own ``label_free``). Its scenes are the scene-level conditions (``per_scene``).
* The *family* of a condition (:func:`family_of`): ``shift``, ``cross-dataset``, ``temporal`` or ``intra``.
* Estimators: every key under ``estimates.accuracy`` and ``estimates.miou``, and ``aol``
  (agreement-on-the-line, accuracy only; :func:`aol_estimates`), fitted on the stored prediction maps of
  the results that share a scenario, severity and test scenes.
* Per estimator, metric and family (and all families together): n, mean absolute error, mean error
  (estimate - actual: positive is optimistic), Spearman's rho between estimate and actual, and the regret of
  choosing a model by the estimate (:func:`regrets`). Scene level: n, errors and Spearman only.

Only results of a scenario's newest version count; results with the same evaluation key count once.
Outputs: ``label_free.md`` and ``label_free.csv`` beside the scenario boards (:func:`write_label_free_board`),
``label_free.html`` with its scatter plots in the report site (:func:`write_label_free_page`).
"""

from __future__ import annotations

import math
import warnings
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.boards.render import markdown_table, render, warn_if_shrinks  # noqa: E402
from bench.core.label_free import agreement_on_the_line, pixel_agreement, spearman  # noqa: E402
from bench.core.results import write_text  # noqa: E402

NAME = "label_free"  # the board's files: label_free.md, .csv, .html
METRICS = {"miou": "mIoU", "accuracy": "accuracy"}  # board order, shown names
FAMILIES = ("intra", "temporal", "cross-dataset", "shift")
COLOURS = {"intra": "tab:green", "temporal": "tab:blue", "cross-dataset": "tab:orange", "shift": "tab:red"}
#: what each known estimator is (an estimator not listed here is shown by its name alone)
ESTIMATORS = {
    "no_drop": "the calibration (validation) split's labelled figure: assumes nothing changes",
    "confidence": "mean top probability (accuracy); mIoU of the expected confusion at temperature 1",
    "atc": "fraction of pixels above the validation threshold (average thresholded confidence, Garg et al. 2022)",
    "doc": "validation figure minus the drop in mean confidence (Guillory et al. 2021)",
    "calibrated": "the expected confusion matrix of temperature-scaled probabilities",
    "aol": "agreement-on-the-line across the results of a condition (Baek et al. 2022)",
}
WORST = 5  # conditions listed under "where it fails"
BOARD_COUNT = r"from (\d+) results; do not edit"  # how many results the Markdown board was made from
PAGE_COUNT = r'<meta name=results content="?(\d+)'
ID_COLUMNS = ["scenario", "severity", "family", "model", "norm", "adapt", "seed", "eval_key"]
ROW_COLUMNS = [*ID_COLUMNS, "metric", "estimator", "actual", "estimate", "error"]
SORT_BY = {"Spearman ρ": "spearman", "estimated": "estimate"}  # a shown column -> the column it sorts by
SUMMARY_COLUMNS = ["metric", "family", "estimator", "n", "MAE", "mean error", "spearman", "groups",
                   "regret median", "regret mean"]


@dataclass(frozen=True)
class Condition:
    """One labelled evaluation and its label-free side: a result, or one severity of a shift result."""

    result: dict[str, Any]
    severity: str  # "" without a shift
    actual: dict[str, Any]  # accuracy, miou, ... of the condition
    scenes: dict[str, dict[str, Any]]  # actual figures per scene
    label_free: dict[str, Any]  # signals, estimates, per_scene

    @property
    def scene_ids(self) -> tuple[str, ...]:
        """The condition's test scenes, sorted."""
        return tuple(sorted(self.scenes))

    def ids(self) -> dict[str, Any]:
        """What names the condition on the board: scenario, severity, family, model, norm, adapt, seed, key."""
        c = self.result["config"]
        return {"scenario": self.result["scenario"]["name"], "severity": self.severity,
                "family": family_of(self.result), "model": c["model"], "norm": c["norm"],
                "adapt": c.get("adapt", "none"), "seed": self.result.get("seed", c.get("seed")),
                "eval_key": self.result.get("eval_key", "")}


def current(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per evaluation key (the last), of each scenario's newest version; with or without
    ``label_free``, as :func:`bench.boards.leaderboard.scenario_results` keeps them."""
    seen: dict[Any, dict[str, Any]] = {}
    for r in results:
        seen[r.get("eval_key") or r.get("_path") or id(r)] = r
    newest: dict[str, int] = {}
    for r in seen.values():
        s = r["scenario"]
        newest[s["name"]] = max(newest.get(s["name"], s["version"]), s["version"])
    return [r for r in seen.values() if r["scenario"]["version"] == newest[r["scenario"]["name"]]]


def with_label_free(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results of :func:`current` that carry ``label_free`` (the ones this board is made from)."""
    return [r for r in current(results) if r.get("label_free")]


def family_of(r: dict[str, Any]) -> str:
    """``shift`` if the scenario has a controlled shift; else ``cross-dataset`` if it tests on another dataset
    than it trains on; else ``temporal`` if its test months or scenes differ from the training ones; else
    ``intra`` (the same dataset, scenes and months, a disjoint window or split)."""
    d = r["scenario"].get("definition") or {}
    if d.get("shift"):
        return "shift"
    sources = d.get("sources") or {}
    train, test = sources.get("train") or {}, sources.get("test") or {}
    if test.get("dataset") != train.get("dataset"):
        return "cross-dataset"
    if test.get("months") != train.get("months") or test.get("scenes") != train.get("scenes"):
        return "temporal"
    return "intra"


def conditions_of(r: dict[str, Any]) -> list[Condition]:
    """The conditions of one result: one per severity of a shift result, else one; none without
    ``label_free``."""
    if not r.get("label_free"):
        return []
    severities = r.get("per_severity") or {}
    if family_of(r) == "shift" and severities:
        return [Condition(r, str(k), s, s.get("per_scene") or {}, s.get("label_free") or {})
                for k, s in sorted(severities.items(), key=lambda kv: int(kv[0]))]
    return [Condition(r, "", r["metrics"], r.get("per_scene") or {}, r["label_free"])]


def _num(v: Any) -> float:
    return np.nan if v is None else float(v)


def _names(estimates: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per metric, every estimator named in some ``estimates`` dict, sorted."""
    return {m: sorted({k for e in estimates for k in (e.get(m) or {})}) for m in METRICS}


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns[:-1])
    df["error"] = df["estimate"] - df["actual"]
    return df


def label_free_rows(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per condition x estimator x metric of the results that carry ``label_free``: the condition's
    names (:meth:`Condition.ids`), ``metric`` (miou, accuracy), ``estimator``, ``actual``, ``estimate`` (NaN
    where the estimator gave none) and ``error`` (estimate - actual). ``aol`` is added for accuracy."""
    conds = [c for r in with_label_free(results) for c in conditions_of(r)]
    aol = aol_estimates(conds)
    names = _names([c.label_free.get("estimates") or {} for c in conds])
    names["accuracy"] = [*names["accuracy"], "aol"]
    rows = []
    for c, a in zip(conds, aol):
        estimates = c.label_free.get("estimates") or {}
        for metric in METRICS:
            given = {**(estimates.get(metric) or {}), **({"aol": a} if metric == "accuracy" else {})}
            rows += [{**c.ids(), "metric": metric, "estimator": name, "actual": _num(c.actual.get(metric)),
                      "estimate": _num(given.get(name))} for name in names[metric]]
    return _frame(rows, ROW_COLUMNS)


def label_free_scene_rows(results: list[dict[str, Any]]) -> pd.DataFrame:
    """As :func:`label_free_rows`, one row per scene of each condition (a ``scene`` column more), from the
    actual ``per_scene`` figures and the matching ``label_free.per_scene`` estimates; no ``aol``."""
    conds = [c for r in with_label_free(results) for c in conditions_of(r)]
    per_scene = [{s: (v or {}).get("estimates") or {} for s, v in (c.label_free.get("per_scene") or {}).items()}
                 for c in conds]
    names = _names([e for scenes in per_scene for e in scenes.values()])
    rows = []
    for c, estimates in zip(conds, per_scene):
        for scene, actual in sorted(c.scenes.items()):
            if scene not in estimates:
                continue
            given = estimates[scene]
            rows += [{**c.ids(), "scene": scene, "metric": metric, "estimator": name,
                      "actual": _num(actual.get(metric)), "estimate": _num((given.get(metric) or {}).get(name))}
                     for metric in METRICS for name in names[metric]]
    return _frame(rows, [*ID_COLUMNS, "scene", *ROW_COLUMNS[len(ID_COLUMNS):]])


def predictions_file(r: dict[str, Any]) -> Path | None:
    """The ``.npz`` of a result's prediction maps (beside its JSON), or None if it names none or it is gone."""
    name = (r.get("label_free") or {}).get("predictions")
    if not name:
        return None
    path = Path(r.get("_path") or "result.json").parent / name
    return path if path.exists() else None


def _id_accuracy(c: Condition) -> float | None:
    return (c.result["label_free"].get("calibration") or {}).get("accuracy")


def aol_estimates(conds: list[Condition]) -> list[float | None]:
    """Each condition's agreement-on-the-line estimate of its accuracy, or None.

    Conditions of the same scenario, severity and test scenes whose result has prediction maps and a
    calibration form a group; a group of two or more is fitted by
    :func:`bench.core.label_free.agreement_on_the_line` on the pairs' agreement over their common ``val/*``
    maps (in distribution) and ``test/*`` maps (``test/<severity>/*`` for a shift), pixels summed over
    scenes, with each calibration's accuracy as the in-distribution accuracy. A condition in no pair with
    agreement on both splits gets None."""
    out: list[float | None] = [None] * len(conds)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(conds):
        if _id_accuracy(c) is not None and predictions_file(c.result) is not None:
            groups.setdefault((c.result["scenario"]["name"], c.severity, c.scene_ids), []).append(i)
    for members in groups.values():
        if len(members) >= 2:
            for i, v in zip(members, _aol_group([conds[i] for i in members])):
                out[i] = v
    return out


def _aol_group(conds: list[Condition]) -> list[float | None]:
    """Agreement-on-the-line estimates of one group's conditions (None for one in no usable pair)."""
    prefix = f"test/{conds[0].severity}/" if conds[0].severity else "test/"
    paths = [predictions_file(c.result) for c in conds]
    try:
        with ExitStack() as stack:
            files = [stack.enter_context(np.load(p, allow_pickle=False)) for p in paths]
            inside = _agreements(files, paths, lambda k: k.startswith("val/"))
            outside = _agreements(files, paths, lambda k: k.startswith(prefix))
    except (OSError, ValueError, zipfile.BadZipFile) as err:  # a damaged file must not stop the boards
        warnings.warn(f"unreadable prediction maps among {[str(p) for p in paths]} ({err}); no aol estimate "
                      "for them", stacklevel=2)
        return [None] * len(conds)
    pairs = [p for p in inside if inside[p][1] and outside.get(p, (0, 0))[1]]
    if not pairs:
        return [None] * len(conds)
    fitted = agreement_on_the_line(np.array([inside[p][0] / inside[p][1] for p in pairs]),
                                   np.array([outside[p][0] / outside[p][1] for p in pairs]),
                                   np.array([_id_accuracy(c) for c in conds], dtype=float))
    paired = {i for p in pairs for i in p}
    return [float(v) if i in paired else None for i, v in enumerate(fitted)]


def _agreements(files: list[Any], paths: list[Path],
                chosen: Callable[[str], bool]) -> dict[tuple[int, int], tuple[int, int]]:
    """(agreeing, compared) pixels of each pair of prediction files, summed over the maps both hold whose
    key is ``chosen``; a map whose shape differs from its partner's is warned about and left out."""
    keys = [{k for k in f.files if chosen(k)} for f in files]
    counts: dict[tuple[int, int], tuple[int, int]] = {}
    for key in sorted(set().union(*keys)):
        holders = [i for i, ks in enumerate(keys) if key in ks]
        maps = {i: files[i][key] for i in holders} if len(holders) > 1 else {}
        for i, j in combinations(holders, 2):
            if maps[i].shape != maps[j].shape:
                warnings.warn(f"{paths[i]} and {paths[j]}: map {key!r} has shapes {maps[i].shape} and "
                              f"{maps[j].shape}; left out of their agreement", stacklevel=2)
                continue
            agree, compared = pixel_agreement(maps[i], maps[j])
            old = counts.get((i, j), (0, 0))
            counts[(i, j)] = (old[0] + agree, old[1] + compared)
    return counts


def regrets(rows: pd.DataFrame) -> list[float]:
    """Model-selection regret of one estimator, per group of rows of the same scenario and severity with two
    or more estimates: the best actual figure minus that of the row the estimate ranks first (rows tied
    first: their mean, the expected regret of picking one at random). ``rows``: of one estimator and metric."""
    out = []
    for _, g in rows.dropna(subset=["estimate", "actual"]).groupby(["scenario", "severity"]):
        if len(g) >= 2:
            first = g["estimate"] == g["estimate"].max()
            out.append(float(g["actual"].max() - g.loc[first, "actual"].mean()))
    return out


def _scores(e: pd.DataFrame, regret: bool) -> dict[str, Any]:
    """n, MAE, mean error, Spearman's rho and (with ``regret``) groups and median and mean regret."""
    err = e["estimate"] - e["actual"]
    rho = spearman(e["estimate"], e["actual"])
    out = {"n": len(e), "MAE": float(err.abs().mean()), "mean error": float(err.mean()),
           "spearman": np.nan if rho is None else rho}
    if regret:
        r = regrets(e)
        out.update({"groups": len(r), "regret median": float(np.median(r)) if r else np.nan,
                    "regret mean": float(np.mean(r)) if r else np.nan})
    return out


def label_free_summary(rows: pd.DataFrame, regret: bool = True) -> pd.DataFrame:
    """How good each estimator is: one row per metric x family (``all`` first, then each family present) x
    estimator with an estimate, sorted by MAE within metric and family; columns ``SUMMARY_COLUMNS`` (the
    regret ones only with ``regret``). ``rows``: of :func:`label_free_rows` or :func:`label_free_scene_rows`."""
    out = []
    rows = rows.dropna(subset=["estimate", "actual"])
    for metric in METRICS:
        part = rows[rows["metric"] == metric]
        for family in ["all", *(f for f in FAMILIES if f in set(part["family"]))]:
            chosen = part if family == "all" else part[part["family"] == family]
            out += [{"metric": metric, "family": family, "estimator": name, **_scores(e, regret)}
                    for name, e in chosen.groupby("estimator")]
    columns = SUMMARY_COLUMNS if regret else SUMMARY_COLUMNS[:-3]
    df = pd.DataFrame(out, columns=columns)
    order = {"metric": list(METRICS), "family": ["all", *FAMILIES]}
    df["_m"], df["_f"] = df["metric"].map(order["metric"].index), df["family"].map(order["family"].index)
    return df.sort_values(["_m", "_f", "MAE"], kind="stable").drop(columns=["_m", "_f"]).reset_index(drop=True)


def worst_conditions(rows: pd.DataFrame, summary: pd.DataFrame, metric: str,
                     n: int = WORST) -> tuple[str | None, pd.DataFrame]:
    """The estimator of least MAE over all families for ``metric`` and its ``n`` conditions of largest
    absolute error, largest first (None and an empty frame if no estimator has an estimate)."""
    s = summary[(summary["metric"] == metric) & (summary["family"] == "all")]
    if s.empty:
        return None, rows.iloc[:0]
    best = s.sort_values("MAE", kind="stable").iloc[0]["estimator"]
    e = rows[(rows["metric"] == metric) & (rows["estimator"] == best)].dropna(subset=["estimate", "actual"])
    return best, e.assign(abs_error=e["error"].abs()).nlargest(n, "abs_error").drop(columns="abs_error")


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def shown_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """A summary (:func:`label_free_summary`) of one metric as the board shows it: text cells, 3 decimals."""
    out = summary[["family", "estimator", "n"]].copy()
    out["MAE"] = [_fmt(v) for v in summary["MAE"]]
    out["mean error"] = [_fmt(v, signed=True) for v in summary["mean error"]]
    out["Spearman ρ"] = [_fmt(v, signed=True) for v in summary["spearman"]]
    if "groups" in summary:
        out["groups"] = summary["groups"]
        out["regret median"] = [_fmt(v) for v in summary["regret median"]]
        out["regret mean"] = [_fmt(v) for v in summary["regret mean"]]
    return out


def shown_worst(worst: pd.DataFrame) -> pd.DataFrame:
    """Conditions of :func:`worst_conditions` as the board shows them."""
    return pd.DataFrame({"scenario": worst["scenario"], "severity": worst["severity"], "family": worst["family"],
                         "model/norm/adapt": worst["model"] + "/" + worst["norm"] + "/" + worst["adapt"],
                         "seed": worst["seed"], "actual": [_fmt(v) for v in worst["actual"]],
                         "estimated": [_fmt(v) for v in worst["estimate"]],
                         "error": [_fmt(v, signed=True) for v in worst["error"]]})


@dataclass(frozen=True)
class Board:
    """Everything the Markdown board and the HTML page show, computed once from a set of results."""

    results: list[dict[str, Any]]  # those with label_free (newest version, one per key)
    skipped: int  # current results without label_free
    rows: pd.DataFrame  # label_free_rows
    run: pd.DataFrame  # label_free_summary of rows
    scene: pd.DataFrame  # label_free_summary of the scene rows, without regret

    @classmethod
    def of(cls, results: list[dict[str, Any]]) -> Board | None:
        """The board of ``results``, or None when none carries ``label_free``."""
        kept = with_label_free(results)
        if not kept:
            return None
        rows = label_free_rows(kept)
        return cls(kept, len(current(results)) - len(kept), rows, label_free_summary(rows),
                   label_free_summary(label_free_scene_rows(kept), regret=False))

    def header(self) -> dict[str, Any]:
        """Counts for the header: results, skipped, scenarios, models, conditions and scenes per family."""
        runs = self.rows.drop_duplicates(["eval_key", "scenario", "severity", "model", "norm", "adapt", "seed"])
        return {"n": len(self.results), "skipped": self.skipped, "conditions": len(runs),
                "scenarios": len({r["scenario"]["name"] for r in self.results}),
                "models": len({r["config"]["model"] for r in self.results}),
                "families": {f: int((runs["family"] == f).sum()) for f in FAMILIES if (runs["family"] == f).any()},
                "estimators": [(name, ESTIMATORS.get(name, "")) for name in
                               sorted(set(self.rows.dropna(subset=["estimate"])["estimator"]))],
                "made_by": made_by(self.results)}

    def sections(self) -> list[dict[str, Any]]:
        """Per metric: its shown name, run-level and scene-level summaries, best estimator, worst conditions."""
        out = []
        for metric, title in METRICS.items():
            best, worst = worst_conditions(self.rows, self.run, metric)
            out.append({"metric": metric, "title": title, "run": self.run[self.run["metric"] == metric],
                        "scene": self.scene[self.scene["metric"] == metric], "best": best, "worst": worst,
                        "failures": len(worst), "scenes": int(self.scene["metric"].eq(metric).sum())})
        return out


def made_by(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The commands that made the results (a sweep's, or a run's), with how many each and their commits."""
    found: dict[str, dict[str, Any]] = {}
    for r in results:
        entry = found.setdefault(r.get("command") or "?", {"command": r.get("command") or "?", "results": 0,
                                                           "commits": set()})
        entry["results"] += 1
        git = r.get("git") or {}
        entry["commits"].add(f"{str(git.get('commit', '?'))[:10]}{' (dirty)' if git.get('dirty') else ''}")
    return [{**e, "commits": ", ".join(sorted(e["commits"]))} for e in
            sorted(found.values(), key=lambda e: -e["results"])]


def write_label_free_board(results: list[dict[str, Any]], dest: Path, command: str | None = None) -> Path | None:
    """Write ``<dest>/label_free.md`` and ``label_free.csv`` (every summary row, with its ``level``: run or
    scene) from ``results``; returns the Markdown board's path, or None (nothing written) when no result
    carries ``label_free``. Warns before the board is replaced by one made from fewer results."""
    board = Board.of(results)
    if board is None:
        return None
    dest = Path(dest)
    csv = pd.concat([board.run.assign(level="run"), board.scene.assign(level="scene")], ignore_index=True)
    csv["groups"] = csv["groups"].astype("Int64")  # blank at scene level
    write_text(dest / f"{NAME}.csv", csv[["level", *SUMMARY_COLUMNS]].to_csv(index=False, float_format="%.4f"))
    sections = [{**s, "run": markdown_table(shown_summary(s["run"])),
                 "scene": markdown_table(shown_summary(s["scene"])),
                 "worst": markdown_table(shown_worst(s["worst"]))} for s in board.sections()]
    warn_if_shrinks(dest / f"{NAME}.md", BOARD_COUNT, len(board.results), "results")
    return write_text(dest / f"{NAME}.md", render("label_free.md.j2", command=command or "bench leaderboard",
                                                  sections=sections, **board.header()))


def _panel(ax: Any, e: pd.DataFrame, title: str, lims: tuple[float, float]) -> None:
    """One estimator's scatter of estimated against actual, coloured by family, with the line y = x."""
    ax.plot(lims, lims, color="0.5", linewidth=0.8, linestyle="--")
    for family in FAMILIES:
        f = e[e["family"] == family]
        if len(f):
            ax.scatter(f["actual"], f["estimate"], s=16, alpha=0.8, color=COLOURS[family], label=family)
    ax.set(xlim=lims, ylim=lims, aspect="equal")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def scatter_plot(rows: pd.DataFrame, summary: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """Estimated against actual ``metric`` (rows of :func:`label_free_rows`), one panel per estimator in
    the summary's order (by MAE), colour by family, the line y = x; written to ``path`` (PNG). None when
    no estimator has an estimate for ``metric``."""
    part = rows[rows["metric"] == metric].dropna(subset=["estimate", "actual"])
    s = summary[(summary["metric"] == metric) & (summary["family"] == "all")]
    if part.empty or s.empty:
        return None
    values = part[["actual", "estimate"]].to_numpy()
    lims = (max(0.0, float(values.min()) - 0.05), min(1.0, float(values.max()) + 0.05))
    cols = min(3, len(s))
    fig, axes = plt.subplots(math.ceil(len(s) / cols), cols, figsize=(3.4 * cols, 3.4 * math.ceil(len(s) / cols) + 0.4),
                             squeeze=False, layout="constrained")
    for ax, (_, est) in zip(axes.flat, s.iterrows()):
        _panel(ax, part[part["estimator"] == est["estimator"]], f"{est['estimator']} (MAE {est['MAE']:.3f})", lims)
    for ax in axes.flat[len(s):]:
        ax.axis("off")
    fig.supxlabel(f"actual {METRICS[metric]}")
    fig.supylabel(f"estimated {METRICS[metric]}")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=COLOURS[f], label=f)
               for f in FAMILIES if f in set(part["family"])]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _cell(value: Any, numeric: Any = None, text: bool = False) -> dict[str, Any]:
    """A cell of ``board.html.j2``: shown text, its sort value, whether it is text (left-aligned)."""
    sort = None if numeric is None or pd.isna(numeric) else f"{float(numeric):.6g}"
    return {"text": "" if value is None or pd.isna(value) else str(value), "value": sort, "text_cell": text,
            "href": None}


def html_table(shown: pd.DataFrame, numeric: pd.DataFrame) -> dict[str, Any]:
    """``columns`` and ``rows`` of ``board.html.j2`` (a sortable table) from a shown frame (of
    :func:`shown_summary` or :func:`shown_worst`) and the frame it shows: a cell whose column is numeric
    there sorts by its value, the others are text."""
    rows = []
    for i in range(len(shown)):
        cells = []
        for c in shown.columns:
            source = SORT_BY.get(c, c)
            number = source in numeric and pd.api.types.is_numeric_dtype(numeric[source])
            cells.append(_cell(shown[c].iloc[i], numeric[source].iloc[i] if number else None, text=not number))
        rows.append({"cls": "", "id": "", "cells": cells})
    return {"columns": list(shown.columns), "rows": rows}


def _figure(board: Board, metric: str, dest: Path) -> dict[str, str] | None:
    """The scatter plot of ``metric`` under ``dest/figures/label_free`` with its alt text and caption."""
    path = scatter_plot(board.rows, board.run, metric, dest / "figures" / NAME / f"{metric}.png")
    if path is None:
        return None
    name = METRICS[metric]
    return {"src": path.relative_to(dest).as_posix(),
            "alt": f"Estimated against actual {name}, one panel per estimator, points coloured by family",
            "caption": f"Each point is one condition (a result, or one severity of a shift result): its actual "
                       f"{name} across, the estimate up; on the dashed line y = x the estimate is exact. Panels "
                       f"are sorted by mean absolute error."}


def write_label_free_page(results: list[dict[str, Any]], dest: Path, command: str | None = None) -> Path | None:
    """Write ``<dest>/label_free.html`` (and its figures under ``<dest>/figures/label_free/``) of the report
    site: scatter plots of estimated against actual mIoU and accuracy and the sortable tables of the board.
    None (nothing written) when no result carries ``label_free``. It links ``style.css`` and ``board.js``,
    which :func:`bench.boards.report.write_report` writes beside it."""
    board = Board.of(results)
    if board is None:
        return None
    dest = Path(dest)
    sections = [{**s, "figure": _figure(board, s["metric"], dest),
                 "run": html_table(shown_summary(s["run"]), s["run"]),
                 "scene": html_table(shown_summary(s["scene"]), s["scene"]),
                 "worst": html_table(shown_worst(s["worst"]), s["worst"])} for s in board.sections()]
    warn_if_shrinks(dest / f"{NAME}.html", PAGE_COUNT, len(board.results), "results")
    return write_text(dest / f"{NAME}.html", render("label_free.html.j2", title="cloudbench: label-free estimates",
                                                    command=command or "bench report", sections=sections,
                                                    **board.header()))
