"""Leaderboards, generated from stored results and never edited by hand.

``leaderboards/<scenario>.md`` and ``.csv``: one row per model x normalizer x adapter, sorted by mean IoU.

* Every metric is the mean over runs (seeds) with the half-width of its 95 % Student-t interval.
* ``vs best``: a paired bootstrap over test blocks (:mod:`bench.boards.stats`) of the best row against each
  other row; a row whose interval of (best - row) reaches 0 is *tied* with the best.
* The leading rows are each tested against the next ("A beats B").
* For a scenario tested away from its training data, each row's in-distribution mIoU (the same trained
  models on the test split of their own dataset, or severity 0 of a shift), the drop, and both rankings
  with Kendall's tau between them.
* ``mode`` (trained / zero-shot / fine-tuned) and ``trained on`` say what each model learned from. A
  pretrained model scored against a reference that its own algorithm made (s2cloudless on s2cloudless
  masks) says ``same as reference`` there: it is listed last and left out of the ranking statistics (best
  row, ``vs best``, the leading comparisons, ranks and Kendall's tau).

Only results of the scenario's newest version count; results with the same evaluation key (copies of
one experiment) count once.

``leaderboards/label_free.md`` and ``.csv``, of every scenario's results that record label-free estimates:
how close each estimator comes to the labelled figures (:mod:`bench.boards.label_free`).
"""

from __future__ import annotations

import json
import math
import shlex
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.boards.field import add_field_columns, cover_scenes, field_tables
from bench.boards.label_free import write_label_free_board
from bench.boards.plots import severity_columns, severity_plot
from bench.boards.stats import LEVEL, Comparison, blocks_of, hierarchical_bootstrap, seed_interval
from bench.boards.render import fmt, markdown_table, render, warn_if_shrinks
from bench.core.labels import CLASSES
from bench.core.results import file_lock, load_results, write_text

KEYS = ["model", "norm", "adapt", "recipe"]  # "recipe": the training settings in which a row differs from others
SAME_AS_REFERENCE = "same as reference"
THIS_SPLIT = "this scenario's train split"
BOARD_COUNT = r"from (\d+) results; do not edit"  # finds how many results a Markdown board was made from
LEADING = 4  # "A beats B" is tested between consecutive rows among the first LEADING


def row_key(r: dict[str, Any]) -> tuple[str, str, str, str]:
    """The row a result belongs to: (model, normalizer, adapter, recipe label; see :func:`label_recipes`)."""
    c = r["config"]
    return c["model"], c["norm"], c.get("adapt", "none"), r.get("_recipe", "")


def row_name(key: tuple) -> str:
    """``unet_mnv2/percentile/none``, with ``[max_steps=3]`` when the row's recipe differs from others."""
    return "/".join(key[:3]) + (f" [{key[3]}]" if len(key) > 3 and key[3] else "")


def training_settings(r: dict[str, Any]) -> dict[str, Any]:
    """What decided a result's model beyond model, normalizer and adapter: the recipe, the initial weights
    (of a model trained here; a pretrained model's are its own) and the number of processes (the batch is
    per device); and the model settings given with ``--set``, the only ones of a model run zero-shot."""
    mode, given = mode_of(r), (r.get("config") or {}).get("settings") or {}  # model settings of --set
    if mode == "zero-shot":
        return dict(given)
    weights = {"weights": str((r.get("model") or {}).get("weights") or "?").split(" (")[0]} if mode == "trained" else {}
    return {**(r.get("recipe") or {}), **weights, "world_size": (r.get("train") or {}).get("world_size") or 1,
            **given}


def varying_settings(results: list[dict[str, Any]]) -> list[str]:
    """The training settings (:func:`training_settings`) in which trained results of one board differ, sorted."""
    settings = [s for s in (training_settings(r) for r in results) if s]
    return [k for k in sorted({k for s in settings for k in s})
            if len({json.dumps(s.get(k), sort_keys=True) for s in settings}) > 1]


def label_recipes(results: list[dict[str, Any]], merge: bool = False) -> None:
    """Give each result the label of its row's recipe: the settings in which results of this board differ
    (``max_steps=3``), so runs with different settings are never pooled into one row; with ``merge`` every
    label is empty (rows pool them)."""
    varying = [] if merge else varying_settings(results)
    for r in results:
        s = training_settings(r)
        label = [f"{k}={s.get(k)}" for k in varying if k in s]
        if mode_of(r) == "fine-tuned":  # never pooled with the same model run zero-shot
            label.insert(0, "fine-tuned")
        r["_recipe"] = ", ".join(label)


def mode_of(r: dict[str, Any]) -> str:
    """``trained``, ``zero-shot`` or ``fine-tuned`` (results older than the zoo are ``trained``)."""
    return (r.get("model") or {}).get("mode") or "trained"


def trained_on(r: dict[str, Any]) -> str:
    """What a result's model learned from: this scenario's train split, the pretrained model's declared
    source (plus this split when fine-tuned), or ``same as reference`` where the test reference was made by
    the model's own algorithm."""
    contract = (r.get("model") or {}).get("contract") or {}
    algorithm, made_by = contract.get("algorithm"), (r.get("scenario") or {}).get("reference_by")
    if algorithm and made_by and algorithm == made_by:
        return SAME_AS_REFERENCE
    mode = mode_of(r)
    if mode == "trained":
        return THIS_SPLIT
    declared = contract.get("trained_on", "?")
    return f"{declared}, then {THIS_SPLIT}" if mode == "fine-tuned" else declared


def _num(v: Any) -> float:
    return np.nan if v is None else float(v)


def _commit(r: dict[str, Any]) -> str:
    git = r.get("git") or {}
    return (git.get("commit") or "unknown")[:8] + ("+dirty" if git.get("dirty") else "")


def table(results: list[dict[str, Any]], every: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """The leaderboard of one scenario's results (one row per model x norm x adapter x recipe); ``every``
    (all results, of all scenarios) supplies the in-distribution counterparts of the rows."""
    if any("_recipe" not in r for r in results):
        label_recipes(results)
    groups = row_groups(results)
    rows = []
    for k, rs in groups.items():
        row: dict[str, Any] = dict(zip(KEYS, k))
        metrics = [(f"IoU {c}", [r["metrics"]["iou"].get(c) for r in rs]) for c in rs[0]["metrics"]["iou"]]
        metrics += [("mIoU", [r["metrics"]["miou"] for r in rs]), ("accuracy", [r["metrics"]["accuracy"] for r in rs])]
        for name, values in metrics:
            row[name], row[f"{name} ci95"] = seed_interval(values)
        for sev in sorted({s for r in rs for s in (r.get("per_severity") or {})}, key=int):
            row[f"mIoU s{sev}"], row[f"mIoU s{sev} ci95"] = seed_interval(
                [_num((r.get("per_severity") or {}).get(sev, {}).get("miou")) for r in rs])
        row.update({"mode": mode_of(rs[0]), "trained on": trained_on(rs[0]),
                    "runs": len(rs), "seeds": ",".join(str(s) for s in sorted({r["seed"] for r in rs})),
                    "steps": ",".join(sorted({str((r.get("train") or {}).get("steps")) for r in rs})),
                    "train s": float(np.mean([(r.get("train") or {}).get("train_s") or 0.0 for r in rs])),
                    "reference": rs[0]["scenario"].get("reference", "?"),
                    "commit": ",".join(sorted({_commit(r) for r in rs}))})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["ranked"] = df["trained on"] != SAME_AS_REFERENCE
    df = df.sort_values(["ranked", "mIoU"], ascending=False, na_position="last").reset_index(drop=True)
    _versus_best(df, groups)
    _in_distribution(df, groups, every or results)
    add_field_columns(df, groups, KEYS)
    return df


def _versus_best(df: pd.DataFrame, groups: dict[tuple, list[dict[str, Any]]]) -> None:
    """Columns ``best - this`` (with its bootstrap interval and p) and ``tied`` (with the best row)."""
    cols = {"best - this": np.nan, "best - this low": np.nan, "best - this high": np.nan, "p best beats this": np.nan}
    for c, v in cols.items():
        df[c] = v
    df["tied"] = pd.Series([None] * len(df), dtype=object)
    best = blocks_of(groups[tuple(df.loc[0, KEYS])]) if df.loc[0, "ranked"] else None
    if best is None:
        return
    ids, best_cm = best
    df.loc[0, "tied"] = "best"
    for i in range(1, len(df)):
        if not df.loc[i, "ranked"]:
            continue
        other = blocks_of(groups[tuple(df.loc[i, KEYS])], ids)
        if other is None:
            continue
        c = hierarchical_bootstrap(best_cm, other[1])
        df.loc[i, list(cols)] = [c.diff, c.low, c.high, c.p]
        df.loc[i, "tied"] = "no" if c.significant else "yes"


def single_seed(df: pd.DataFrame, results: list[dict[str, Any]]) -> bool:
    """True if some compared row has a single seed (its comparisons resample test blocks only)."""
    groups = row_groups(results)
    return df["tied"].notna().any() and any(len(groups[tuple(df.loc[i, KEYS])]) < 2 for i in range(len(df)))


def leading_comparisons(df: pd.DataFrame, groups: dict[tuple, list[dict[str, Any]]],
                        n: int = LEADING) -> list[tuple[tuple, tuple, Comparison]]:
    """Each of the first ``n`` rows against the next one: (A, B, A - B)."""
    out = []
    for i in range(min(n, int(df["ranked"].sum())) - 1):
        a, b = tuple(df.loc[i, KEYS]), tuple(df.loc[i + 1, KEYS])
        ba = blocks_of(groups[a])
        bb = blocks_of(groups[b], ba[0]) if ba else None
        if ba and bb:
            out.append((a, b, hierarchical_bootstrap(ba[1], bb[1])))
    return out


def _test_source(r: dict[str, Any]) -> tuple[str | None, str | None]:
    d = r["scenario"].get("definition", {})
    src = d.get("sources", {})
    return (src.get("test") or {}).get("dataset"), (src.get("train") or {}).get("dataset")


def _in_distribution(df: pd.DataFrame, groups: dict[tuple, list[dict[str, Any]]],
                     every: list[dict[str, Any]]) -> None:
    """Columns ``in-dist scenario``, ``mIoU in-dist``, ``drop``, ``rank in-dist`` and ``rank`` where a row
    has an in-distribution counterpart: severity 0 of a shift scenario, else results of the same trained
    models and adapter on a scenario that tests on their own training dataset with no shift."""
    intra: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in every:
        test_ds, train_ds = _test_source(r)
        if mode_of(r) == "zero-shot":  # a pretrained model as it comes was not trained on either scenario
            continue
        if test_ds and test_ds == train_ds and not r["scenario"].get("definition", {}).get("shift"):
            intra.setdefault((r["train_key"], r["config"].get("adapt", "none")), []).append(r)
    names, values, here = [], [], []
    for i in range(len(df)):
        rs = groups[tuple(df.loc[i, KEYS])]
        if rs[0]["scenario"].get("definition", {}).get("shift"):
            cols = severity_columns(df)
            has_zero = "mIoU s0" in cols
            names.append("severity 0" if has_zero else None)
            values.append(df.loc[i, "mIoU s0"] if has_zero else np.nan)
            here.append(df.loc[i, cols[-1]] if cols else np.nan)  # the strongest severity
            continue
        pairs = [(r, intra[(r.get("train_key"), r["config"].get("adapt", "none"))][0]) for r in rs
                 if (r.get("train_key"), r["config"].get("adapt", "none")) in intra]
        pairs = [(r, m) for r, m in pairs if m["scenario"]["name"] != r["scenario"]["name"]]
        if not pairs:  # no counterpart, or this is the in-distribution scenario itself
            names.append(None), values.append(np.nan), here.append(np.nan)
            continue
        names.append(pairs[0][1]["scenario"]["name"])  # drop and ranks use the runs that have a counterpart
        values.append(float(np.nanmean([_num(m["metrics"]["miou"]) for _, m in pairs])))
        here.append(float(np.nanmean([_num(r["metrics"]["miou"]) for r, _ in pairs])))
    if not any(names):
        return
    df["in-dist scenario"] = names
    df["mIoU in-dist"] = values
    df["drop"] = np.array(values, dtype=float) - np.array(here, dtype=float)
    has = ~np.isnan(df["mIoU in-dist"].to_numpy(dtype=float)) & df["ranked"].to_numpy(dtype=bool)
    df["rank in-dist"] = pd.Series(df["mIoU in-dist"].where(has).rank(ascending=False, method="min"), dtype="Int64")
    df["rank"] = pd.Series(pd.Series(here, dtype=float).where(has).rank(ascending=False, method="min"), dtype="Int64")


def kendall_tau(df: pd.DataFrame) -> float | None:
    """Kendall's tau between the in-distribution and this scenario's rankings (None if < 3 rows have both)."""
    if "rank in-dist" not in df:
        return None
    both = df[["rank in-dist", "rank"]].dropna()
    if len(both) < 3:
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(both["rank in-dist"].astype(float), both["rank"].astype(float)).statistic
    return None if math.isnan(tau) else float(tau)


def unique(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per evaluation key (copies of one experiment, e.g. from merged run folders, count once)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        seen[r.get("eval_key") or r.get("_path", id(r))] = r
    return list(seen.values())


def scenario_results(out: str | Path, merge_recipes: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every result under ``out`` by scenario, newest scenario version only, one per experiment, each
    labelled with its row's recipe (:func:`label_recipes`)."""
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for r in unique(load_results(out)):
        by_scenario.setdefault(r["scenario"]["name"], []).append(r)
    for name, rs in by_scenario.items():
        newest = max(r["scenario"]["version"] for r in rs)
        by_scenario[name] = [r for r in rs if r["scenario"]["version"] == newest]
        label_recipes(by_scenario[name], merge_recipes)
    return dict(sorted(by_scenario.items()))


def write_leaderboards(out: str | Path = "runs", dest: str | Path | None = None,
                       scenarios: list[str] | None = None, command: str | None = None,
                       merge_recipes: bool = False) -> list[Path]:
    """Regenerate ``<dest>/<scenario>.md`` and ``.csv`` (default ``<out>/leaderboards``) from every result
    under ``out``; warns before a board is replaced by one made from fewer results. Runs with different
    training settings are separate rows unless ``merge_recipes``."""
    by_scenario = scenario_results(out, merge_recipes)
    every = [r for rs in by_scenario.values() for r in rs]
    dest_dir = Path(dest) if dest is not None else Path(out) / "leaderboards"
    command = command or f"bench leaderboard --runs {shlex.quote(str(out))} --out {shlex.quote(str(dest_dir))}"
    written = []
    with file_lock(dest_dir / ".lock"):  # parallel runs regenerate boards one at a time
        for name, rs in by_scenario.items():
            if scenarios and name not in scenarios:
                continue
            df = table(rs, every)
            twins = identical_metrics(rs)
            warn_if_shrinks(dest_dir / f"{name}.md", BOARD_COUNT, len(rs), "results")
            write_text(dest_dir / f"{name}.csv", df.to_csv(index=False, float_format="%.4f"))
            merged = varying_settings(rs) if merge_recipes else []
            write_text(dest_dir / f"{name}.md", markdown(name, rs, df, command, twins, merged))
            written += [dest_dir / f"{name}.md", dest_dir / f"{name}.csv"]
            if severity_columns(df):
                written.append(severity_plot(df, dest_dir / f"{name}_severity.png", name, rs[0]["scenario"]))
        board = write_label_free_board(every, dest_dir, command)  # of every scenario; None without label_free
        written += [board, board.with_suffix(".csv")] if board else []
    return written


def identical_metrics(results: list[dict[str, Any]]) -> list[str]:
    """Pairs of different normalizers or adapters whose confusion matrices are bit-identical (same model
    and seed): one of them probably did nothing. Each pair is warned about and listed. Two perfect results
    (no error anywhere) are identical for a good reason and are not reported."""
    seen: dict[tuple, tuple[str, str]] = {}
    found = []
    for r in results:
        cms = [r["metrics"]["confusion"], *(m["confusion"] for m in (r.get("per_severity") or {}).values())]
        if all(not any(v for i, row in enumerate(cm) for j, v in enumerate(row) if i != j) for cm in cms):
            continue
        c = r["config"]
        sig = (c["model"], r["seed"], json.dumps(r["metrics"]["confusion"]), json.dumps(r.get("per_severity") and
               {k: v["confusion"] for k, v in r["per_severity"].items()}))
        combo = (c["norm"], c.get("adapt", "none"))
        if sig in seen and seen[sig] != combo:
            found.append(f"{c['model']} seed {r['seed']}: {'/'.join(seen[sig])} and {'/'.join(combo)} give "
                         "bit-identical metrics (did one of them do nothing?)")
        seen.setdefault(sig, combo)
    for message in found:
        warnings.warn(message, stacklevel=2)
    return found


def versus_best(row: pd.Series) -> str:
    """The ``vs best`` cell: ``best``, ``tied (p 0.31)``, or ``-0.081 [-0.152, -0.020]`` (this - best)."""
    if row.get("tied") == "best":
        return "best"
    if row.get("trained on") == SAME_AS_REFERENCE:
        return "not ranked"
    if row.get("tied") not in ("yes", "no"):
        return ""
    d, lo, hi = -row["best - this"], -row["best - this high"], -row["best - this low"]
    text = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"tied, {text}" if row["tied"] == "yes" else text


def row_columns(df: pd.DataFrame) -> list[str]:
    """The columns that name a board's rows: model, normalizer, adapter, and the settings label where
    rows differ in it."""
    return KEYS if df["recipe"].astype(bool).any() else KEYS[:3]


def display(df: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as shown in Markdown and HTML: means with intervals, the tie column, ranks."""
    classes = [c for c in df.columns if c.startswith("IoU ") and not c.endswith(" ci95")]
    out = df[row_columns(df)].copy()
    out["mode"], out["trained on"] = df["mode"], df["trained on"]
    for c in [*classes, "mIoU", "accuracy"]:
        out[c] = [fmt(m, h) for m, h in zip(df[c], df[f"{c} ci95"])]
    vs = [versus_best(r) for _, r in df.iterrows()]
    if any(vs):  # results older than per-block storage cannot be compared
        out["vs best"] = vs
    for c in severity_columns(df):
        out[c] = [fmt(v) for v in df[c]]
    if "mIoU in-dist" in df:
        out["in-dist (scenario)"] = [f"{fmt(v)} ({n})" if isinstance(n, str) else ""
                                     for v, n in zip(df["mIoU in-dist"], df["in-dist scenario"])]
        out["drop"] = [fmt(v) for v in df["drop"]]
        out["rank in-dist → here"] = [f"{a} → {b}" if not pd.isna(a) else ""
                                      for a, b in zip(df["rank in-dist"], df["rank"])]
    for c in ("runs", "seeds", "steps"):
        out[c] = df[c]
    if "train s" in df:  # the cost of training or fine-tuning, beside its gain (0 for zero-shot)
        out["train s"] = [f"{v:.0f}" for v in df["train s"]]
    for c in ("reference", "commit"):
        out[c] = df[c]
    return out


def markdown(name: str, results: list[dict[str, Any]], df: pd.DataFrame, command: str,
             twins: list[str] = (), merged: list[str] = ()) -> str:
    """The Markdown leaderboard of one scenario (template ``templates/board.md.j2``); ``merged``: the
    training settings that rows pool (``--merge-recipes``)."""
    s = results[0]["scenario"]
    space = results[0]["metrics"].get("label_space", {})
    extra = {k: markdown_table(t) for k, t in field_tables(df, row_columns(df)).items()}
    return render("board.md.j2", name=name, scenario=s, command=command, n=len(results), level=f"{LEVEL:.0%}",
                  field=extra, cover_scenes=cover_scenes(df),
                  label_space="; ".join(f"`{g}` = {' + '.join(c)}" for g, c in space.items()),
                  compared=bool(df["tied"].notna().any()), shift=bool(s.get("definition", {}).get("shift")),
                  in_dist="mIoU in-dist" in df, tau=kendall_tau(df), table=markdown_table(display(df)),
                  leading=[(row_name(a), row_name(b), c) for a, b, c in leading_comparisons(df, row_groups(results))],
                  warnings=list(twins), merged=list(merged), single_seed=single_seed(df, results),
                  pretrained=pretrained_models(results), unranked=not df["ranked"].all(),
                  commands=sorted({r.get("command", "?") for r in results}))


def pretrained_models(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The pretrained models on a board, each once: name, framework, what it was trained on, citation."""
    seen: dict[str, dict[str, str]] = {}
    for r in results:
        c = (r.get("model") or {}).get("contract") or {}
        if mode_of(r) != "trained" and r["config"]["model"] not in seen:
            seen[r["config"]["model"]] = {"name": r["config"]["model"], "framework": c.get("framework", "?"),
                                          "trained_on": c.get("trained_on", "?"), "citation": c.get("citation", ""),
                                          "missing": ", ".join(missing_groups(r))}
    return sorted(seen.values(), key=lambda d: d["name"])


def missing_groups(r: dict[str, Any]) -> list[str]:
    """Groups of the board's label space that the model's outputs never predict (it scores 0 there)."""
    outputs = ((r.get("model") or {}).get("contract") or {}).get("outputs") or {}
    predicted = {min(classes, key=CLASSES.index) for classes in outputs.values() if classes != ["nodata"]}
    space = r["metrics"].get("label_space", {})
    return [g for g, members in space.items() if not predicted & set(members)]


def row_groups(results: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Results by leaderboard row (model, normalizer, adapter), in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(row_key(r), []).append(r)
    return groups
