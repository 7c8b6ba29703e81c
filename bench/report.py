"""``bench report``: the leaderboards as a static HTML site that opens from disk, with no server and
nothing fetched from the network.

``<dest>/index.html`` lists the scenarios; ``<dest>/<scenario>.html`` holds the sortable leaderboard
(click a column; ``#sort=<column>`` or ``#sort=<column>-asc`` in the address sorts on opening), the
per-class IoU with their intervals, the statistical comparisons, the severity plot of a shift scenario,
one figure per row (its first seed) and the provenance of every row: commands, commits, package
versions, data checksums, model folders and logs.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from bench.figures import severity_columns, severity_plot
from bench.leaderboard import (KEYS, display, kendall_tau, leading_comparisons, row_key, scenario_results,
                               table)
from bench.results import write_text

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}code{background:#f3f3f3;padding:0 .2em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f5f5f5;cursor:pointer;user-select:none;position:sticky;top:0}td.t{text-align:left}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.best td,tr.tied td{background:#eef7ee}tr.best td:first-child{font-weight:bold}
details{margin:.3em 0}summary{cursor:pointer}img{max-width:100%;border:1px solid #ddd}
.small{color:#666;font-size:.9em}
"""

JS = """
function sortBy(th, dir){
  const table = th.closest('table'), body = table.tBodies[0], i = [...th.parentNode.children].indexOf(th);
  const key = tr => { const td = tr.children[i]; const v = td.dataset.v;
    return v !== undefined && v !== '' ? parseFloat(v) : td.textContent.trim(); };
  const rows = [...body.rows];
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (typeof x === 'number' && typeof y === 'number') return dir * (x - y);
    if (typeof x === 'number') return -1; if (typeof y === 'number') return 1;
    return dir * String(x).localeCompare(String(y)); });
  rows.forEach(r => body.appendChild(r));
  table.querySelectorAll('th').forEach(h => h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
}
document.querySelectorAll('table.board th').forEach(th => th.addEventListener('click', () =>
  sortBy(th, th.getAttribute('aria-sort') === 'descending' ? 1 : -1)));
function fromHash(){
  const m = decodeURIComponent(location.hash).match(/^#sort=(.+?)(-asc)?$/); if (!m) return;
  const th = [...document.querySelectorAll('table.board th')].find(h => h.dataset.col === m[1]);
  if (th) sortBy(th, m[2] ? 1 : -1);
}
window.addEventListener('hashchange', fromHash); fromHash();
window.addEventListener('load', () => { const imgs = [...document.images];
  document.body.dataset.images = imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length; });
"""


def _page(title: str, body: str) -> str:
    """A page of the site; its style and script are the site's ``style.css`` and ``board.js``."""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<link rel=stylesheet href=style.css></head><body>{body}<script src=board.js></script></body></html>\n")


def _cell(value: Any, numeric: float | None = None, text: bool = False) -> str:
    shown = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    attr = "" if numeric is None or pd.isna(numeric) else f' data-v="{float(numeric):.6g}"'
    return f"<td{attr}{' class=t' if text else ''}>{html.escape(shown)}</td>"


def board_html(df: pd.DataFrame) -> str:
    """The sortable leaderboard table; numeric cells carry their value for sorting."""
    shown = display(df)
    numeric = {c: df[c] for c in df.columns if c in shown.columns and pd.api.types.is_numeric_dtype(df[c])}
    numeric["vs best"] = -df["best - this"].fillna(0).where(df["tied"].notna())
    if "rank in-dist → here" in shown:
        numeric["rank in-dist → here"] = df["rank"].astype("Float64")
    head = "".join(f'<th data-col="{html.escape(c)}">{html.escape(c)}</th>' for c in shown.columns)
    rows = []
    for i, row in shown.iterrows():
        cls = {"best": "best", "yes": "tied"}.get(df.loc[i, "tied"], "")
        tds = "".join(_cell(row[c], numeric[c][i] if c in numeric else None, text=c in KEYS or c == "commit")
                      for c in shown.columns)
        rows.append(f'<tr class="{cls}" data-row="{html.escape("/".join(row[KEYS]))}">{tds}</tr>')
    return f'<table class=board><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


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


def provenance_html(rs: list[dict[str, Any]]) -> str:
    """A row's runs: seed, metrics, commands, code and package versions, data checksums, logs."""
    items = []
    for r in sorted(rs, key=lambda r: r["seed"]):
        v, git, train = r.get("versions") or {}, r.get("git") or {}, r.get("train") or {}
        logs = r.get("logs") or train.get("logs") or {}
        logs = logs if isinstance(logs, dict) else {"csv": logs}
        files = sorted({h[:12] for split in (r.get("data") or {}).values() for h in split.get("files", {}).values()})
        facts = {
            "seed": r["seed"], "mIoU": f"{r['metrics']['miou']:.4f}" if r["metrics"]["miou"] is not None else "",
            "command": r.get("command"), "result": Path(r["_path"]).name, "model folder": Path(r.get("checkpoint", "")).parent.name,
            "commit": f"{(git.get('commit') or 'unknown')[:12]}{' (dirty)' if git.get('dirty') else ''}",
            "versions": ", ".join(f"{k} {val}" for k, val in v.items() if val),
            "training": f"{train.get('steps')} steps, best val mIoU {train.get('best_val_miou')}, "
                        f"{train.get('train_s', 0) or 0:.0f} s" if train else "",
            "hardware": (r.get("hardware") or {}).get("device", ""),
            "data sha256": ", ".join(files[:8]) + (f" (+{len(files) - 8})" if len(files) > 8 else ""),
            "logs": ", ".join(f"{k}: {val}" for k, val in logs.items() if val and k in ("csv", "wandb")),
        }
        items.append("<li>" + "; ".join(f"<b>{html.escape(k)}</b> {html.escape(str(val))}"
                                        for k, val in facts.items() if val not in (None, "")) + "</li>")
    return "<ul class=small>" + "".join(items) + "</ul>"


def scenario_page(name: str, rs: list[dict[str, Any]], every: list[dict[str, Any]], dest: Path,
                  command: str) -> str:
    df = table(rs, every)
    s = rs[0]["scenario"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rs:
        groups.setdefault(row_key(r), []).append(r)
    space = rs[0]["metrics"].get("label_space", {})
    parts = [f"<p><a href=index.html>all scenarios</a></p><h1>{html.escape(name)} "
             f"<span class=small>(scenario version {s['version']})</span></h1>",
             f"<p>{html.escape(s.get('description', ''))}</p><ul>",
             f"<li>Reference labels: <b>{html.escape(str(s.get('reference', '?')))}</b></li>",
             "<li>Label space: " + "; ".join(f"<code>{html.escape(g)}</code> = {html.escape(' + '.join(c))}"
                                            for g, c in space.items()) + "</li>",
             f"<li>{len(rs)} results. Each cell: mean over seeds ± half-width of the 95 % Student-t interval. "
             "<i>vs best</i>: difference to the best row with the 95 % interval of a paired bootstrap over "
             "64 x 64 px test blocks (test-sample noise, not training noise: read it beside the ± over seeds); "
             "highlighted rows are the best and those statistically tied with it.</li>"]
    tau = kendall_tau(df)
    if tau is not None:
        parts.append(f"<li>Kendall's tau between the in-distribution ranking and this one: <b>{tau:.2f}</b></li>")
    parts.append(f"<li>Page generated by <code>{html.escape(command)}</code>; click a column to sort.</li></ul>")
    parts.append(board_html(df))
    lead = leading_comparisons(df, groups)
    if lead:
        parts.append("<h2>Leading rows, each against the next</h2><ul>" + "".join(
            f"<li>{html.escape('/'.join(a))} vs {html.escape('/'.join(b))}: {c.diff:+.3f} "
            f"[{c.low:+.3f}, {c.high:+.3f}], p = {c.p:.3f}: "
            f"<b>{'A beats B' if c.significant else 'not distinguishable'}</b></li>" for a, b, c in lead) + "</ul>")
    if severity_columns(df):
        plot = severity_plot(df, dest / "figures" / name / "severity.png", name, s)
        parts.append(f"<h2>mIoU against shift severity</h2><img src='{plot.relative_to(dest).as_posix()}' "
                     "alt='severity plot'>")
    parts.append("<h2>Rows: figure and provenance</h2>")
    for _, row in df.iterrows():
        k = tuple(row[KEYS])
        first = min(groups[k], key=lambda r: r["seed"])
        fig = _figure(first, dest, name)
        img = (f"<p class=small>figure of seed {first['seed']}</p><img src='{html.escape(fig)}' "
               f"alt='{html.escape('/'.join(k))}'>" if fig else "<p class=small>no figure stored</p>")
        parts.append(f"<details><summary>{html.escape(' / '.join(k))} ({len(groups[k])} runs)</summary>"
                     f"{provenance_html(groups[k])}{img}</details>")
    commands = sorted({r.get("command", "?") for r in rs})
    parts.append("<h2>Runs were made with</h2><ul>" + "".join(f"<li><code>{html.escape(c)}</code></li>"
                                                            for c in commands) + "</ul>")
    return _page(f"cloudbench: {name}", "".join(parts))


def write_report(runs: str | Path = "runs", dest: str | Path = "leaderboards/html",
                 scenarios: list[str] | None = None, command: str | None = None) -> list[Path]:
    """Write ``index.html`` and one page per scenario under ``dest``; returns the pages written."""
    dest = Path(dest)
    command = command or f"bench report --runs {runs} --dest {dest}"
    by_scenario = scenario_results(runs)
    every = [r for rs in by_scenario.values() for r in rs]
    chosen = {n: rs for n, rs in by_scenario.items() if not scenarios or n in scenarios}
    written, index = [], []
    for name, rs in chosen.items():
        written.append(write_text(dest / f"{name}.html", scenario_page(name, rs, every, dest, command)))
        df = table(rs, every)
        best = df.iloc[0]
        index.append(f"<tr><td class=t><a href='{html.escape(name)}.html'>{html.escape(name)}</a></td>"
                     f"<td class=t>{html.escape(rs[0]['scenario'].get('description', ''))}</td>"
                     f"<td class=t>{html.escape(str(rs[0]['scenario'].get('reference', '?')))}</td>"
                     f"<td data-v={len(rs)}>{len(rs)}</td><td class=t>{html.escape('/'.join(best[KEYS]))}</td>"
                     f"<td data-v='{best['mIoU']:.6g}'>{best['mIoU']:.3f}</td></tr>")
    if written:
        write_text(dest / "style.css", CSS.lstrip())
        write_text(dest / "board.js", JS.lstrip())
        body = ("<h1>cloudbench leaderboards</h1><p>Does this Sentinel-2 cloud mask, with this input "
                "normalization, still work on data it was not trained on?</p><table class=board><thead><tr>"
                + "".join(f'<th data-col="{c}">{c}</th>' for c in
                          ("scenario", "description", "reference", "results", "best row", "best mIoU"))
                + f"</tr></thead><tbody>{''.join(index)}</tbody></table>"
                f"<p class=small>Generated by <code>{html.escape(command)}</code>.</p>")
        written.insert(0, write_text(dest / "index.html", _page("cloudbench leaderboards", body)))
    return written
