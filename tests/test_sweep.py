"""`bench sweep`: grids, resuming after a real SIGKILL, parallel workers, submitit, DDP, the HTML report."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.core.errors import ConfigError, UnknownNameError
from bench.core.results import load_results, read_result
from bench.sweep.grid import Grid, expand

pytestmark = pytest.mark.filterwarnings("ignore:imagenet weights", "ignore:normalization sanity")

TINY = ["--patch-size", "64", "--batch-size", "4", "--samples-per-epoch", "8", "--epochs", "3", "--wandb", "off"]
#: 2 scenarios sharing one training set x 2 normalizers x 2 seeds = 8 cells, 4 trained models
GRID = ["--models", "unet_mnv2", "--norms", "none,percentile", "--adapt", "none",
        "--scenarios", "samples_intra,samples_cross", "--seeds", "2", *TINY, "--jobs", "4", "--quiet"]


def sweep_args(out: Path, *extra: str) -> list[str]:
    return ["sweep", *GRID, "--out", str(out), "--leaderboards", str(out / "lb"), *extra]


def results_in(out: Path) -> list[Path]:
    return sorted((out / "results").glob("*/*.json"))


def test_axes_take_names_wildcards_and_seed_counts():
    assert expand("model", "unet_*") == ["unet_mnv2", "unet_r18"]
    assert expand("norm", "zscore,percentile*") == ["zscore", "percentile", "percentile_scene"]
    with pytest.raises(UnknownNameError, match="did you mean 'percentile'"):
        expand("norm", "percentil")
    with pytest.raises(UnknownNameError, match="pattern for models 'unet_x\\*'"):
        expand("model", "unet_x*")
    assert Grid(seeds=3).seed_list() == [0, 1, 2] and Grid(seeds="4,0").seed_list() == [0, 4]
    with pytest.raises(ConfigError, match="--seeds"):
        Grid(seeds="three").seed_list()


def test_dry_run_lists_cells_and_trains_each_model_once(tmp_path, capsys):
    assert main(["sweep", "--norms", "none,percentile,zscore", "--scenarios", "samples_intra,samples_cross",
                 "--adapt", "none,adabn", "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 cells: 0 cached, 12 to run; 3 models to train" in out  # not 12: one model per normalizer
    assert len(re.findall(r"train \+ evaluate", out)) == 12
    assert not (tmp_path / "results").exists()  # nothing ran


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 8-cell grid run without interruption, four workers writing to one results folder."""
    out = tmp_path_factory.mktemp("reference")
    assert main(sweep_args(out)) == 0
    return out


def test_four_parallel_workers_lose_nothing(reference):
    paths = results_in(reference)
    assert len(paths) == 8 and all(read_result(p) is not None for p in paths)
    assert not list(reference.rglob("*.corrupt")) and not list(reference.rglob("*.tmp"))
    assert len(list((reference / "models").glob("*/model.pt"))) == 4
    board = pd.read_csv(reference / "lb" / "samples_cross.csv", dtype={"seeds": str})
    assert list(board["runs"]) == [2, 2] and set(board["seeds"]) == {"0,1"}  # 2 rows x 2 seeds each


def processes_mentioning(text: Path) -> list[str]:
    found = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (p / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if str(text) in cmd:
            found.append(cmd)
    return found


def test_killed_sweep_resumes_to_the_same_leaderboard(reference, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *sweep_args(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(results_in(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = len(results_in(out))
    assert 2 <= at_kill < 8, "the kill should land part way through the grid"
    time.sleep(1)
    assert not processes_mentioning(out), "workers must die with the sweep"

    assert main(sweep_args(out)) == 0  # the same command again
    assert len(results_in(out)) == 8
    for name in ("samples_intra", "samples_cross"):  # all but wall time, which no rerun repeats
        assert without_timing(out / "lb" / f"{name}.csv") == without_timing(reference / "lb" / f"{name}.csv")


def without_timing(csv: Path) -> str:
    """A board's CSV less its ``train s`` column (seconds of training on a shared machine)."""
    import pandas as pd

    df = pd.read_csv(csv)
    assert "train s" in df.columns
    return df.drop(columns=["train s"]).to_csv(index=False)


def test_rerun_of_a_finished_sweep_does_nothing(reference, capsys):
    before = {p: p.stat().st_mtime_ns for p in results_in(reference)}
    assert main(sweep_args(reference, "--dry-run")) == 0
    assert "8 cells: 8 cached, 0 to run; 0 models to train" in capsys.readouterr().out
    assert main(sweep_args(reference)) == 0
    assert {p: p.stat().st_mtime_ns for p in results_in(reference)} == before


def _write_many(args: tuple[str, str, int]) -> None:
    from bench.boards.leaderboard import write_leaderboards
    from bench.core.results import write_json

    template, out, worker = args
    r = json.loads(Path(template).read_text())
    for i in range(15):
        r["eval_key"] = f"w{worker}-{i}"
        write_json(Path(out) / "results" / r["scenario"]["name"] / f"w{worker}-{i}.json", r)
        if i % 5 == 0:
            write_leaderboards(out, Path(out) / "lb")


def test_concurrent_writers_of_results_and_leaderboards(reference, tmp_path):
    template = results_in(reference)[0]
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_write_many, [(str(template), str(tmp_path), w) for w in range(4)])
    assert len(load_results(tmp_path)) == 60 and not list(tmp_path.rglob("*.corrupt"))
    from bench.boards.leaderboard import write_leaderboards

    (csv,) = [p for p in write_leaderboards(tmp_path, tmp_path / "lb") if p.suffix == ".csv" and p.stem != "label_free"]
    assert list(pd.read_csv(csv)["runs"]) == [60]  # every result counted once


def test_submitit_local_executor_runs_the_cells(tmp_path, capsys):
    out = tmp_path / "submitit"
    assert main(["sweep", "--norms", "percentile", "--adapt", "none,adabn", "--scenarios", "samples_intra",
                 *TINY, "--out", str(out), "--launcher", "submitit_local", "--quiet"]) == 0
    assert len(results_in(out)) == 2
    assert list((out / "sweeps" / "submitit").glob("*_log.out"))  # submitit's own job logs
    assert "1 models trained" in capsys.readouterr().out


def test_slurm_launcher_turns_flags_into_an_sbatch_script(tmp_path, monkeypatch):
    from bench.sweep.launchers import Launcher

    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConfigError, match="needs Slurm's srun"):
        Launcher("slurm", folder=tmp_path).executor()
    (tmp_path / "bin").mkdir()
    for tool in ("srun", "sbatch"):  # stand-ins, so that submitit believes it is on a cluster; nothing is submitted
        (tmp_path / "bin" / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    ex = Launcher("slurm", jobs=8, folder=tmp_path, partition="gpu", time_min=90, gpus_per_job=4,
                  cpus_per_job=8).executor()
    script = ex._executor._make_submission_file_text("python -m bench.sweep.driver job.json", "1")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=8"):
        assert f"#SBATCH {line}" in script


def test_ddp_on_two_cpu_processes_writes_one_result(tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "bench.cli", "run", *TINY, "--accelerator", "cpu",
                           "--devices", "2", "--strategy", "ddp", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = results_in(out)
    train = json.loads(path.read_text())["train"]
    assert train["world_size"] == 2 and train["strategy"] == "DDPStrategy"
    assert train["steps"] == 3  # 8 crops split over 2 processes, batch 4: one step per epoch


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CLOUDBENCH_REQUIRE_CHROMIUM"),
                    reason="Debian's chromium is not installed (.ci/run installs it)")
def test_html_report_renders_in_headless_chromium(reference, tmp_path):
    from bench.boards.report import write_report

    site = tmp_path / "site"
    pages = write_report(reference, site)
    assert [p.name for p in pages] == ["index.html", "samples_cross.html", "samples_intra.html", "label_free.html"]

    def dom(page: str, hash_: str = "", *how: str) -> str:
        """The page as Chromium shows it in a 1280 px wide window once its script has run (``how``: instead
        of the DOM, e.g. a screenshot)."""
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}", "--hide-scrollbars",
                               "--window-size=1280,900", "--virtual-time-budget=3000", *(how or ["--dump-dom"]),
                               (site / page).as_uri() + hash_], capture_output=True, text=True, timeout=120).stdout

    index = dom("index.html")
    assert "href=\"samples_cross.html\"" in index and "href=\"samples_intra.html\"" in index
    width, window = map(int, re.search(r'data-width="(\d+)/(\d+)"', index).groups())
    assert width <= window == 1280  # long descriptions wrap
    page = dom("samples_cross.html")
    rows = re.findall(r'<tr class="(\w*)" data-row="([^"]+)">(.*?)</tr>', page)
    assert {r[1] for r in rows} == {"unet_mnv2/none/none", "unet_mnv2/percentile/none"}
    assert all("±" in r[2] for r in rows)  # two seeds: every metric has its interval
    assert rows[0][0] == "best" and "in-dist" in page and "samples_intra" in page
    assert "seed 0" in page and "model folder" in page  # provenance of each row
    loaded, total = map(int, re.search(r'data-images="(\d+)/(\d+)"', page).groups())
    assert loaded == total == 3 + 2  # forest, in-distribution, probabilities; one run figure per row: from disk
    width, window = map(int, re.search(r'data-width="(\d+)/(\d+)"', page).groups())
    assert width <= window == 1280  # the page, its table's default columns too, fits a laptop's width
    assert re.search(r'<th data-col="commit" class="x">', page) and "<summary>columns</summary>" in page

    def first_table(html: str) -> list[str]:
        return re.findall(r'data-row="([^"]+)"', html.split('data-set="iou"')[2].split("</table>")[0])

    ascending = dom("samples_cross.html", "#sort=mIoU-asc")
    assert first_table(ascending) == first_table(page)[::-1]  # the address sorts the table: worst first
    assert 'aria-sort="ascending"' in ascending
    shot = tmp_path / "samples_cross.png"
    dom("samples_cross.html", "", f"--screenshot={shot}")
    assert shot.stat().st_size > 20_000  # rendered, not a blank page


def test_rewritten_leaderboards_do_not_make_a_checkout_dirty(tmp_path):
    from bench.core.results import git_state

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "bench").mkdir()
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "bench" / "code.py").write_text("x = 1\n")
    (tmp_path / "leaderboards" / "board.md").write_text("| a |\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "leaderboards" / "board.md").write_text("| b |\n")  # a sweep regenerated it
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "bench" / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True


def test_set_crosses_a_model_setting_into_rows_of_their_own(tmp_path, capsys):
    """`--set threshold=0.3,0.4,0.5`: three cells, three identities, and (from their results) three rows."""
    from bench.boards.leaderboard import table
    from bench.sweep.grid import cell_command, plans

    grid = Grid(models="s2cloudless", scenarios="samples_temporal", settings={"threshold": [0.3, 0.4, 0.5]})
    cells = plans(grid)
    assert [p.cfg.settings for p in cells] == [{"threshold": 0.3}, {"threshold": 0.4}, {"threshold": 0.5}]
    assert len({p.eval_key for p in cells}) == 3 and len({p.result_path for p in cells}) == 3
    assert "--set threshold=0.3" in cell_command(cells[0].cfg)
    results = [{"config": {**p.cfg.record(), "norm": "native"}, "seed": 0, "model": {"mode": "zero-shot"},
                "scenario": {"name": "samples_temporal", "reference": "algorithm"},
                "metrics": {"iou": {"cloud": m}, "miou": m, "accuracy": m, "confusion": [[9, 1], [1, 9]],
                            "classes": ["not_cloud", "cloud"]}, "eval_key": p.eval_key}
               for p, m in zip(cells, (0.5, 0.7, 0.6))]
    df = table(results)
    assert df["recipe"].tolist() == ["threshold=0.4", "threshold=0.5", "threshold=0.3"]  # sorted by mIoU
    from bench.boards.report import board_rows

    columns = {c["name"]: c["extra"] for c in board_rows(df)[0]}
    assert columns["recipe"] is False  # the one column telling these rows apart is shown on the page
    assert {c["name"]: c["extra"] for c in board_rows(df.iloc[:1])[0]}["recipe"] is True  # else picked


def test_set_refuses_what_the_model_does_not_take():
    from bench.core.registry import get_registry

    entry = get_registry().get("model", "s2cloudless")
    assert entry.with_settings({"dilation_size": 2}).settings["dilation_size"] == 2
    with pytest.raises(ConfigError, match="did you mean 'threshold'"):
        entry.with_settings({"threshhold": 0.3})
    with pytest.raises(ConfigError, match="threshold"):
        entry.with_settings({"threshold": "high"})
    with pytest.raises(ConfigError, match="in_channels is not a setting"):
        entry.with_settings({"in_channels": 3})
    assert main(["run", "--model", "s2cloudless", "--set", "threshold=0.3,0.4", "--out", "/nonexistent"]) == 2
