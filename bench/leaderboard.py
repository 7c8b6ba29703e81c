"""Leaderboards, generated from stored results and never edited by hand.

``leaderboards/<scenario>.md`` and ``.csv``: one row per model x normalizer x adapter with per-class IoU,
mean IoU and overall accuracy averaged over runs (seeds), the number of runs, the reference type and
the commits that made them; sorted by mean IoU. Only results of the scenario's newest version count.
"""

from __future__ import annotations

import json
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.figures import severity_columns, severity_plot
from bench.results import load_results

KEYS = ["model", "norm", "adapt"]


def table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """The leaderboard of one scenario's results as a DataFrame (one row per model x norm x adapter)."""
    rows = []
    for r in results:
        m = r["metrics"]
        git = r.get("git") or {}
        commit = (git.get("commit") or "unknown")[:8] + ("+dirty" if git.get("dirty") else "")
        rows.append({"model": r["config"]["model"], "norm": r["config"]["norm"], "adapt": r["config"].get("adapt", "none"),
                     **{f"IoU {k}": (np.nan if v is None else v) for k, v in m["iou"].items()},
                     "mIoU": np.nan if m["miou"] is None else m["miou"],
                     "accuracy": np.nan if m["accuracy"] is None else m["accuracy"],
                     **{f"mIoU s{k}": (np.nan if v["miou"] is None else v["miou"])
                        for k, v in (r.get("per_severity") or {}).items()},
                     "seed": r["seed"], "reference": r["scenario"].get("reference", "?"), "commit": commit,
                     "steps": (r.get("train") or {}).get("steps")})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    metric_cols = [c for c in df.columns if c.startswith("IoU ")] + ["mIoU", "accuracy"] + severity_columns(df)
    agg = df.groupby(KEYS, sort=False).agg(
        **{c: (c, "mean") for c in metric_cols},
        **{"mIoU sd": ("mIoU", "std")},
        runs=("seed", "size"),
        steps=("steps", lambda s: ",".join(sorted({str(int(v)) for v in s.dropna()}))),
        reference=("reference", "first"),
        commit=("commit", lambda s: ",".join(sorted(set(s)))),
    ).reset_index()
    return agg.sort_values("mIoU", ascending=False, na_position="last").reset_index(drop=True)


def write_leaderboards(out: str | Path = "runs", dest: str | Path = "leaderboards",
                       scenarios: list[str] | None = None, command: str | None = None) -> list[Path]:
    """Regenerate ``<dest>/<scenario>.md`` and ``.csv`` from every result under ``out``."""
    results = load_results(out)
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_scenario.setdefault(r["scenario"]["name"], []).append(r)
    written = []
    command = command or "bench leaderboard --runs " + shlex.quote(str(out))
    for name, rs in sorted(by_scenario.items()):
        if scenarios and name not in scenarios:
            continue
        newest = max(r["scenario"]["version"] for r in rs)
        rs = [r for r in rs if r["scenario"]["version"] == newest]
        df = table(rs)
        twins = identical_metrics(rs)
        dest_dir = Path(dest)
        dest_dir.mkdir(parents=True, exist_ok=True)
        df.to_csv(dest_dir / f"{name}.csv", index=False, float_format="%.4f")
        (dest_dir / f"{name}.md").write_text(_markdown(name, newest, rs, df, command, twins))
        written += [dest_dir / f"{name}.md", dest_dir / f"{name}.csv"]
        if severity_columns(df):
            written.append(severity_plot(df, dest_dir / f"{name}_severity.png", name, rs[0]["scenario"]))
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


def _markdown(name: str, version: int, results: list[dict[str, Any]], df: pd.DataFrame, command: str,
              twins: list[str] = ()) -> str:
    s = results[0]["scenario"]
    space = results[0]["metrics"].get("label_space", {})
    commands = sorted({r.get("command", "?") for r in results})
    shown = df.drop(columns=[c for c in ("mIoU sd",) if df[c].isna().all()])
    lines = [
        f"# Leaderboard: {name} (scenario version {version})",
        "",
        f"<!-- Generated by `{command}` from {len(results)} results; do not edit by hand. -->",
        "",
        s.get("description", ""),
        "",
        f"- Reference labels: **{s.get('reference', '?')}**",
        "- Label space: " + "; ".join(f"`{g}` = {' + '.join(c)}" for g, c in space.items()),
        f"- Generated by `{command}` from {len(results)} result(s); mean over runs (seeds), sorted by mIoU.",
        *(["- Shift scenario: `mIoU sK` is the mean IoU at severity K; IoU, mIoU and accuracy pool the pixels of "
           f"every severity. Plot: `{name}_severity.png`."] if s.get("definition", {}).get("shift") else []),
        "- IoU of a class absent from both reference and prediction is left out of the mean (blank here).",
        "",
        shown.to_markdown(index=False, floatfmt=".3f", missingval=""),
        "",
        *([f"**Warning**: {t}" for t in twins] + [""] if twins else []),
        "Runs were made with:",
        "",
        *[f"- `{c}`" for c in commands],
        "",
    ]
    return "\n".join(lines)


def main_leaderboard(out: str, dest: str, scenarios: list[str] | None) -> int:
    written = write_leaderboards(out, dest, scenarios)
    if not written:
        print(f"no results under {Path(out) / 'results'}", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0
