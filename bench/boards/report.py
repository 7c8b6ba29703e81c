"""``bench report``: the leaderboards as a static HTML site that opens from disk, with no server and
nothing fetched from the network.

``<dest>/index.html`` lists the scenarios; ``<dest>/<scenario>.html`` holds the sortable leaderboard
(click a column; ``#sort=<column>`` or ``#sort=<column>-asc`` in the address sorts on opening), the
per-class IoU with their intervals, the statistical comparisons, the severity plot of a shift scenario,
one figure per row (its first seed) and the provenance of every row: commands, commits, package
versions, data checksums, model folders and logs. ``<dest>/label_free.html``, linked from the index when
some result records label-free estimates: how close they come to the labelled figures, with scatter plots
(:mod:`bench.boards.label_free`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from bench.boards.label_free import write_label_free_page
from bench.boards.field import METRIC_SETS, field_tables
from bench.boards.leaderboard import (KEYS, display, kendall_tau, leading_comparisons, row_columns, row_groups,
                                      row_name, scenario_results, table, varying_settings)
from bench.boards.plots import forest_plot, in_distribution_plot, probability_plot, severity_columns, severity_plot
from bench.boards.render import STATIC, render, static, warn_if_shrinks
from bench.core.results import write_text

# how many results a scenario page, and how many scenarios the index, were made from (their <meta> tags)
PAGE_COUNT = r'<meta name=results content="?(\d+)'
INDEX_COUNT = r'<meta name=scenarios content="?(\d+)'


#: columns a scenario page hides until the reader picks them (the row's tooltip tells most of them)
EXTRA = ("recipe", "trained on", "runs", "seeds", "steps", "train s", "reference", "commit", "in-dist (scenario)",
         "rank in-dist → here")


def _cell(value: Any, numeric: float | None = None, text: bool = False, href: str | None = None,
          title: str | None = None) -> dict[str, Any]:
    """A table cell: shown text, its sort value, whether it is text (left-aligned), a link, a tooltip."""
    shown = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    sort = None if numeric is None or pd.isna(numeric) else f"{float(numeric):.6g}"
    return {"text": shown, "value": sort, "text_cell": text, "href": href, "title": title}


def is_extra(column: str) -> bool:
    """A column hidden by default: long text, provenance, and a shift's per-severity figures (drawn above)."""
    return column in EXTRA or bool(re.fullmatch(r"mIoU s\d+", column))


def row_tooltip(row: pd.Series) -> str:
    """What a row's first cell tells on hover: what the model learned from, its runs and commits."""
    recipe = f"recipe: {row['recipe']}; " if isinstance(row.get("recipe"), str) and row["recipe"] else ""
    return (f"{recipe}trained on: {row.get('trained on', '?')}; {row.get('runs', '?')} run(s), seeds "
            f"{row.get('seeds', '')}; commit {row.get('commit', '?')}")


def board_rows(df: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sortable leaderboard's columns (``{name, extra}``) and rows; numeric cells carry their value for
    sorting, the first cell of a row its tooltip."""
    shown = display(df)
    numeric = {c: df[c] for c in df.columns if c in shown.columns and pd.api.types.is_numeric_dtype(df[c])}
    numeric["vs best"] = -df["best - this"].fillna(0).where(df["tied"].notna())
    if "rank in-dist → here" in shown:
        numeric["rank in-dist → here"] = df["rank"].astype("Float64")
    rows = []
    for i, row in shown.iterrows():
        cells = [_cell(row[c], numeric[c][i] if c in numeric else None, text=c in KEYS or c == "commit",
                       title=row_tooltip(df.loc[i]) if j == 0 else None) for j, c in enumerate(shown.columns)]
        rows.append({"cls": {"best": "best", "yes": "tied"}.get(df.loc[i, "tied"], ""),
                     "id": row_name(tuple(df.loc[i, KEYS])), "cells": cells})
    needed = recipe_tells_rows_apart(shown)
    return [{"name": c, "extra": is_extra(c) and not (c == "recipe" and needed)} for c in shown.columns], rows


def recipe_tells_rows_apart(shown: pd.DataFrame) -> bool:
    """Rows alike but for their recipe (a ``--set`` sweep): then the recipe is shown, not only picked."""
    alike = [c for c in ("model", "norm", "adapt", "mode") if c in shown]
    return "recipe" in shown and bool(shown.duplicated(subset=alike, keep=False).any())


def metric_sets(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The page's tables, one per metric set (:data:`bench.boards.field.METRIC_SETS`): the board itself
    (``iou``) and each field table that has values; cells sort by their mean."""
    columns, rows = board_rows(df)
    sets = [{"key": "iou", "label": METRIC_SETS["iou"], "columns": columns, "rows": rows}]
    for key, shown in field_tables(df, row_columns(df)).items():
        rows = []
        for i, row in shown.iterrows():
            cells = [_cell(row[c], None if c in KEYS else df.loc[i, c] if pd.api.types.is_numeric_dtype(df[c])
                           else _mean_of(row[c]), text=c in KEYS) for c in shown.columns]
            rows.append({"cls": {"best": "best", "yes": "tied"}.get(df.loc[i, "tied"], ""),
                         "id": row_name(tuple(df.loc[i, KEYS])), "cells": cells})
        sets.append({"key": key, "label": METRIC_SETS[key], "rows": rows,
                     "columns": [{"name": c, "extra": False} for c in shown.columns]})
    return sets


def _mean_of(text: Any) -> float | None:
    """The sort value of a text cell (``BOA vs best``): its leading number (``tied, -0.012 [...]`` -> -0.012)."""
    try:
        return float(str(text).replace("tied, ", "").split(" ")[0])
    except ValueError:
        return None


def probabilities_rows(df: pd.DataFrame, groups: dict[tuple, list[dict[str, Any]]]) -> list[tuple[str, dict]]:
    """(row name, probability counts of its first run) of the rows whose models give probabilities."""
    rows = []
    for _, row in df.iterrows():
        first = min(groups[tuple(row[KEYS])], key=lambda r: r["seed"])
        if (first["metrics"].get("probabilities") or {}).get("calibration"):
            rows.append((row_name(tuple(row[KEYS])), first["metrics"]["probabilities"]))
    return rows


def page_figures(name: str, df: pd.DataFrame, groups: dict[tuple, list[dict[str, Any]]], scenario: dict[str, Any],
                 dest: Path) -> list[dict[str, str]]:
    """The figures a scenario page opens with, each ``{src, alt, caption}``: the forest plot, in distribution
    against here (a scenario tested away from its training data), the severity curves (a shift), the
    probabilities (models that give them)."""
    folder, out = dest / "figures" / name, []

    def add(path: Path | None, alt: str, caption: str) -> None:
        if path is not None:
            out.append({"src": path.relative_to(dest).as_posix(), "alt": alt, "caption": caption})

    add(forest_plot(df, folder / "forest.png", name), f"mIoU of every row of {name} with its 95 % interval",
        "Every row's mIoU with its 95 % interval over seeds, in board order. Diamond: the best row; black "
        "edge: rows tied with it (hierarchical bootstrap); colour: trained here, zero-shot or fine-tuned; "
        "hollow: not ranked (the reference is the model's own algorithm).")
    add(in_distribution_plot(df, folder / "in_distribution.png", name), "in-distribution mIoU against mIoU here",
        "Each row's mIoU in distribution (its own test data, or severity 0 of a shift) against here (the "
        "strongest severity of a shift). On the dashed line a row lost nothing; the further below, the more "
        "it lost away from its training data. Rows that keep their order lie along one line.")
    if severity_columns(df):
        add(severity_plot(df, folder / "severity.png", name, scenario), "mIoU against shift severity, one panel per model",
            "mIoU against the shift's severity: one panel per model, one line per normalizer and adapter, the "
            "band its 95 % interval over seeds.")
    rows = probabilities_rows(df, groups)
    if rows:
        add(probability_plot(rows[:10], folder / "probabilities.png", name),
            "reliability diagram and cloud BOA against the cloud-probability threshold",
            "Left: the share of pixels predicted right against the model's confidence, per confidence bin (on "
            "the dashed line a model is calibrated). Right: cloud BOA when cloud is predicted at a cloud "
            "probability of at least the threshold. First run of each row that gives probabilities.")
    return out


def _figure(r: dict[str, Any], dest: Path, name: str) -> str | None:
    """Copy a run's figure into the site as a JPEG at most 900 px wide (a site of many runs stays a few MB);
    its path relative to the page."""
    src = Path(r.get("figure") or Path(r["_path"]).with_suffix(".png"))
    if not src.exists():
        return None
    target = dest / "figures" / name / f"{src.stem}.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import Image

        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((900, 100_000))
            im.save(target, quality=80, optimize=True)
    except (OSError, ImportError):
        target = target.with_suffix(src.suffix)
        shutil.copyfile(src, target)
    return target.relative_to(dest).as_posix()


def provenance(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row's runs, by seed: metrics, commands, code and package versions, data checksums, logs."""
    items = []
    for r in sorted(rs, key=lambda r: r["seed"]):
        v, git, train = r.get("versions") or {}, r.get("git") or {}, r.get("train") or {}
        logs = r.get("logs") or train.get("logs") or {}
        logs = logs if isinstance(logs, dict) else {"csv": logs}
        files = sorted({h[:12] for split in (r.get("data") or {}).values() for h in split.get("files", {}).values()})
        facts = {
            "seed": r["seed"], "mIoU": f"{r['metrics']['miou']:.4f}" if r["metrics"]["miou"] is not None else "",
            "command": r.get("command"), "result": Path(r["_path"]).name,
            "model folder": Path(r.get("checkpoint", "")).parent.name,
            "commit": f"{(git.get('commit') or 'unknown')[:12]}{' (dirty)' if git.get('dirty') else ''}",
            "versions": ", ".join(f"{k} {val}" for k, val in v.items() if val),
            "training": f"{train.get('steps')} steps, best val mIoU {train.get('best_val_miou')}, "
                        f"{train.get('train_s', 0) or 0:.0f} s" if train else "",
            "hardware": (r.get("hardware") or {}).get("device", ""),
            "data sha256": ", ".join(files[:8]) + (f" (+{len(files) - 8})" if len(files) > 8 else ""),
            "logs": ", ".join(f"{k}: {val}" for k, val in logs.items() if val and k in ("csv", "wandb")),
        }
        items.append({k: val for k, val in facts.items() if val not in (None, "")})
    return items


def scenario_page(name: str, rs: list[dict[str, Any]], df: pd.DataFrame, dest: Path, command: str,
                  merged: list[str] = ()) -> str:
    """The page of one scenario (``df``: its :func:`table`): the board, comparisons, severity plot, and each
    row's figure and provenance."""
    s = rs[0]["scenario"]
    groups = row_groups(rs)
    details = []
    for _, row in df.iterrows():
        k = tuple(row[KEYS])
        first = min(groups[k], key=lambda r: r["seed"])
        details.append({"name": row_name(k), "runs": provenance(groups[k]), "seed": first["seed"],
                        "figure": _figure(first, dest, name)})
    return render("scenario.html.j2", title=f"cloudbench: {name}", name=name, count=len(rs), scenario=s, n=len(rs),
                  label_space=rs[0]["metrics"].get("label_space", {}), tau=kendall_tau(df), command=command,
                  sets=metric_sets(df), figures=page_figures(name, df, groups, s, dest), merged=list(merged),
                  leading=[(row_name(a), row_name(b), c) for a, b, c in leading_comparisons(df, groups)],
                  details=details, commands=sorted({r.get("command", "?") for r in rs}))


def index_row(name: str, rs: list[dict[str, Any]], df: pd.DataFrame) -> dict[str, Any]:
    """A scenario's row of the index: description, reference, results and the best row."""
    best = df.iloc[0]
    return {"cls": "", "id": name, "cells": [
        _cell(name, text=True, href=f"{name}.html"), _cell(rs[0]["scenario"].get("description", ""), text=True),
        _cell(rs[0]["scenario"].get("reference", "?"), text=True), _cell(len(rs), len(rs)),
        _cell(row_name(tuple(best[KEYS])), text=True), _cell(f"{best['mIoU']:.3f}", best["mIoU"])]}


#: ``--scenario label_free`` writes the label-free board or page alone
LABEL_FREE = "label_free"


def write_report(runs: str | Path = "runs", dest: str | Path | None = None,
                 scenarios: list[str] | None = None, command: str | None = None,
                 merge_recipes: bool = False) -> list[Path]:
    """Write ``index.html`` and one page per scenario under ``dest`` (default ``<runs>/report``); returns the
    pages written. Warns before a page is replaced by one made from fewer results or scenarios."""
    dest = Path(dest) if dest is not None else Path(runs) / "report"
    command = command or f"bench report --runs {runs} --out {dest}"
    by_scenario = scenario_results(runs, merge_recipes)
    every = [r for rs in by_scenario.values() for r in rs]
    chosen = {n: rs for n, rs in by_scenario.items() if not scenarios or n in scenarios}
    if scenarios == [LABEL_FREE]:  # that page alone: the scenario pages and the index are left as they are
        page = write_label_free_page(every, dest, command)
        return [page] if page else []
    written, index = [], []
    for name, rs in chosen.items():
        warn_if_shrinks(dest / f"{name}.html", PAGE_COUNT, len(rs), "results")
        df = table(rs, every)  # the bootstraps run once per scenario, for its page and its index row
        merged = varying_settings(rs) if merge_recipes else []
        written.append(write_text(dest / f"{name}.html", scenario_page(name, rs, df, dest, command, merged)))
        index.append(index_row(name, rs, df))
    if written:
        label_free = write_label_free_page(every, dest, command)  # of every scenario; None without label_free
        written += [label_free] if label_free else []
        for f in STATIC:
            write_text(dest / f, static(f))
        warn_if_shrinks(dest / "index.html", INDEX_COUNT, len(index), "scenarios")
        columns = ["scenario", "description", "reference", "results", "best row", "best mIoU"]
        written.insert(0, write_text(dest / "index.html", render("index.html.j2", title="cloudbench leaderboards",
                                                                 columns=columns, rows=index, command=command,
                                                                 count=len(index),
                                                                 label_free=label_free and label_free.name)))
    return written
