"""`bench run` end to end on the embedded real data, in-process, on tiny patches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

from bench.cli import main
from bench.run.runner import RunConfig, run

pytestmark = pytest.mark.filterwarnings("ignore:imagenet weights")

TINY = ["--patch-size", "64", "--batch-size", "4", "--samples-per-epoch", "8", "--epochs", "2", "--quiet"]


def bench(tmp: Path, *args: str) -> int:
    return main(["run", *TINY, "--out", str(tmp / "runs"), "--leaderboards", str(tmp / "lb"), *args])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    assert bench(tmp) == 0  # the default: unet_mnv2 x percentile x samples_cross
    (result,) = (tmp / "runs" / "results" / "samples_cross").glob("*.json")
    return tmp, result, json.loads(result.read_text())


def test_result_holds_what_reproduces_and_audits_the_run(first_run):
    tmp, path, r = first_run
    assert r["config"]["model"] == "unet_mnv2" and r["config"]["norm"] == "percentile"
    assert r["scenario"]["name"] == "samples_cross" and r["scenario"]["version"] == 1
    assert r["scenario"]["reference"] == "algorithmic"
    assert len(r["normalizer"]["state"]["p_low"]) == 6
    assert r["model"]["weights"].startswith("random")
    m = r["metrics"]
    assert m["classes"] == ["cloud", "not_cloud"] and m["n_pixels"] == 5 * 101 * 100
    assert sum(map(sum, m["confusion"])) == m["n_pixels"]
    assert set(r["per_scene"]) == {"2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09"}
    assert sum(s["n_pixels"] for s in r["per_scene"].values()) == m["n_pixels"]
    blocks = r["blocks"]  # the bootstrap's units: 64 px blocks, 2 x 2 per 101 x 100 scene, adding up to the total
    assert blocks["size"] == 64 and len(blocks["ids"]) == 5 * 4 and "2015-07-11@64,0" in blocks["ids"]
    assert [sum(b[i] for b in blocks["confusion"]) for i in range(4)] == sum(m["confusion"], [])
    assert r["recipe"]["patch_size"] == 64 and r["train"]["steps"] == 4  # 2 epochs x 8 crops / batch 4
    assert all(len(h) == 64 for split in r["data"].values() for h in split["files"].values())
    assert {"torch", "segmentation-models-pytorch", "pytorch-lightning"} <= set(r["versions"])
    assert "commit" in r["git"] and "dirty" in r["git"]
    assert r["hardware"]["cpus"] >= 1 and r["timings"]["total_s"] > 0
    assert r["command"].startswith("bench run --patch-size 64")
    assert Path(r["checkpoint"]).exists() and Path(r["figure"]).stat().st_size > 10_000
    logs = r["logs"]  # Lightning's CSV log always, and the offline wandb run (the default)
    assert "val_miou" in Path(logs["csv"]).read_text().splitlines()[0]
    assert logs["wandb_mode"] == "offline" and list(Path(logs["wandb"]).glob("run-*.wandb"))
    board = (tmp / "lb" / "samples_cross.md").read_text()
    assert "| unet_mnv2 | percentile |" in board and "bench run --patch-size 64" in board
    assert "algorithmic" in board


def test_same_command_again_skips_the_existing_result(first_run, capsys):
    tmp, path, r = first_run
    before = path.stat().st_mtime_ns
    assert bench(tmp) == 0
    assert "result exists, skipped" in capsys.readouterr().err
    assert path.stat().st_mtime_ns == before


def test_another_test_source_reuses_the_trained_model(first_run, capsys):
    tmp, _, r = first_run
    models = sorted((tmp / "runs" / "models").iterdir())
    assert bench(tmp, "--scenario", "samples_intra") == 0
    assert "reusing trained model" in capsys.readouterr().out
    assert sorted((tmp / "runs" / "models").iterdir()) == models  # nothing new was trained
    (intra,) = (tmp / "runs" / "results" / "samples_intra").glob("*.json")
    intra = json.loads(intra.read_text())
    assert intra["train_key"] == r["train_key"] and intra["eval_key"] != r["eval_key"]
    assert intra["metrics"]["classes"] == ["clear", "cloud", "cloud_shadow"]


def test_same_seed_gives_the_same_metrics(first_run, tmp_path):
    _, _, r = first_run
    assert bench(tmp_path) == 0
    (again,) = (tmp_path / "runs" / "results" / "samples_cross").glob("*.json")
    assert json.loads(again.read_text())["metrics"] == r["metrics"]


class Interrupt(Exception):
    pass


class StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == 0:
            raise Interrupt


def test_interrupted_training_resumes_to_the_same_result(first_run, tmp_path):
    _, _, r = first_run
    cfg = dict(recipe=dict(patch_size=64, batch_size=4, samples_per_epoch=8, epochs=2), out=str(tmp_path / "runs"),
               leaderboards=False, progress=False, figure=False)
    with pytest.raises(Interrupt):
        run(RunConfig(**cfg, callbacks=[StopAfterFirstEpoch()]))
    (model_dir,) = (tmp_path / "runs" / "models").glob("*/")
    assert (model_dir / "checkpoints" / "last.ckpt").exists() and not (model_dir / "model.pt").exists()
    assert not (tmp_path / "runs" / "results").exists()  # nothing half-written
    res = run(RunConfig(**cfg))
    result = json.loads(res.path.read_text())
    assert result["train"]["resumed_from"].endswith("last.ckpt")
    assert result["metrics"] == r["metrics"]  # same as the uninterrupted run


def test_truncated_checkpoint_and_result_are_set_aside(first_run, tmp_path):
    cfg = dict(recipe=dict(patch_size=64, batch_size=4, samples_per_epoch=8, epochs=1), out=str(tmp_path / "runs"),
               leaderboards=False, progress=False, figure=False)
    res = run(RunConfig(**cfg))
    (model_dir,) = (tmp_path / "runs" / "models").glob("*/")
    final = model_dir / "model.pt"
    final.write_bytes(final.read_bytes()[:1000])
    res.path.write_text(res.path.read_text()[:100])
    with pytest.warns(UserWarning, match="unreadable.*set aside") as record:
        again = run(RunConfig(**cfg))
    aside = {Path(str(w.message).split("set aside as ")[-1]).name for w in record if "set aside" in str(w.message)}
    assert {"model.pt.corrupt", res.path.name + ".corrupt"} <= aside
    assert json.loads(again.path.read_text())["train"]["steps"] == 2 and final.exists()


def test_bad_flags_and_names_give_clear_errors(capsys, tmp_path):
    assert main(["run", "--norm", "percentil", "--out", str(tmp_path)]) == 2
    assert "unknown normalizer 'percentil'; did you mean 'percentile'" in capsys.readouterr().err
    assert main(["run", "--scenario", "samples_crosss", "--out", str(tmp_path)]) == 2
    assert "did you mean 'samples_cross'" in capsys.readouterr().err
    assert main(["run", "--patch-size", "100", "--out", str(tmp_path)]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(["run", "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["run", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "--epochs must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # not a number at all: argparse's own message
        main(["run", "--epochs", "three"])


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("cloudbench ")


def test_leaderboard_averages_runs_and_sorts_by_miou(first_run, tmp_path, capsys):
    _, path, r = first_run
    runs = tmp_path / "runs" / "results" / "samples_cross"
    runs.mkdir(parents=True)

    def variant(name, norm, seed, miou, cloud, eval_key=None):
        v = json.loads(json.dumps(r))
        v["config"]["norm"], v["seed"], v["eval_key"] = norm, seed, eval_key or name
        v["metrics"]["miou"], v["metrics"]["iou"] = miou, {"cloud": cloud, "not_cloud": 2 * miou - cloud}
        (runs / f"{name}.json").write_text(json.dumps(v))

    variant("a", "none", 0, 0.30, 0.1)
    variant("b", "none", 1, 0.40, 0.2)
    variant("c", "zscore", 0, 0.50, 0.5)
    variant("c-copy", "zscore", 0, 0.50, 0.5, eval_key="c")  # one experiment copied twice counts once
    (runs / "broken.json").write_text('{"metrics": ')  # a truncated result is set aside, not used
    with pytest.warns(UserWarning, match="broken.json is unreadable"):
        assert main(["leaderboard", "--runs", str(tmp_path / "runs"), "--dest", str(tmp_path / "lb")]) == 0
    import pandas as pd

    df = pd.read_csv(tmp_path / "lb" / "samples_cross.csv")
    assert df["norm"].tolist() == ["zscore", "none"]
    assert df.loc[1, "mIoU"] == pytest.approx(0.35) and df.loc[1, "runs"] == 2
    assert df.loc[1, "IoU cloud"] == pytest.approx(0.15) and df.loc[0, "runs"] == 1
    md = (tmp_path / "lb" / "samples_cross.md").read_text()
    assert "Generated by `bench leaderboard --runs" in md and "| zscore" in md
    assert (runs / "broken.json.corrupt").exists()


def test_each_step_of_a_run_can_be_called_on_its_own(first_run, tmp_path):
    """plan -> train -> evaluate -> record -> publish, one function each, give what ``run`` gives."""
    from bench.run.runner import evaluate_run, plan, publish, record
    from bench.run.training import train_or_load

    _, _, r = first_run
    cfg = RunConfig(recipe=dict(patch_size=64, batch_size=4, samples_per_epoch=8, epochs=2), out=str(tmp_path / "runs"),
                    leaderboards=str(tmp_path / "lb"), progress=False, figure=False)
    p = plan(cfg)
    assert p.train_key == r["train_key"] and p.eval_key == r["eval_key"] and not p.done and not p.trained
    assert p.recipe.patch_size == 64 and p.recipe.lr == 1e-3  # flags over the scenario preset over the study
    trained = train_or_load(p)
    assert trained.fresh and p.trained and not p.done
    evaluated = evaluate_run(p, trained)
    assert evaluated.metrics == r["metrics"] and not evaluated.per_severity
    result = record(p, trained, evaluated, {"data_s": 0.0, "eval_s": evaluated.eval_s, "total_s": 1.0})
    assert result["eval_key"] == r["eval_key"] and result["recipe"] == r["recipe"]
    assert not p.done  # nothing is written before publish
    figure, board = publish(p, result, evaluated)
    assert p.done and figure is None and board == tmp_path / "lb" / "samples_cross.md"
    assert json.loads(p.result_path.read_text())["metrics"] == r["metrics"]


class StopAtEpochStart(pl.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise Interrupt


def test_a_killed_run_resumes_from_its_last_epoch_not_its_best(tmp_path, monkeypatch):
    """Validation mIoU is best at epoch 0 and never improves; killed before epoch 4, the run must resume at
    epoch 4, not at 1 (``last.ckpt`` is written after every epoch, not only when val mIoU improves)."""
    import torch

    from bench.run.task import SegmentationTask

    monkeypatch.setattr(SegmentationTask, "on_validation_epoch_end",
                        lambda self: self.log("val_miou", 1.0 / (self.current_epoch + 1)))
    cfg = dict(recipe=dict(patch_size=64, batch_size=4, samples_per_epoch=4, epochs=6, patience=10),
               out=str(tmp_path / "runs"), leaderboards=False, progress=False, figure=False, wandb="off")
    with pytest.raises(Interrupt):
        run(RunConfig(**cfg, callbacks=[StopAtEpochStart(4)]))
    (model_dir,) = (tmp_path / "runs" / "models").glob("*/")
    last = torch.load(model_dir / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(model_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert last["epoch"] == 3 and last["global_step"] == 4 and best["epoch"] == 0
    res = run(RunConfig(**cfg))
    resumed = json.loads(res.path.read_text())["train"]
    assert resumed["resumed_from"].endswith("last.ckpt") and resumed["steps"] == 6
    logged = (model_dir / "logs" / "version_1" / "metrics.csv").read_text().splitlines()
    epochs = {int(float(row.split(",")[logged[0].split(",").index("epoch")])) for row in logged[1:]}
    assert min(epochs) == 4  # the resumed run trained epochs 4 and 5 only


def test_runs_with_different_recipes_are_different_rows(first_run, tmp_path, capsys):
    """Two seed-0 runs with --max-steps 3 and 6 are two rows (with the setting that differs shown), never
    one row averaging them; --merge-recipes pools them and says so."""
    _, _, r = first_run
    runs = tmp_path / "runs" / "results" / "samples_cross"
    runs.mkdir(parents=True)
    for steps, miou in ((3, 0.30), (6, 0.60)):
        v = json.loads(json.dumps(r))
        v["recipe"]["max_steps"], v["metrics"]["miou"], v["eval_key"] = steps, miou, f"k{steps}"
        (runs / f"s{steps}.json").write_text(json.dumps(v))
    assert main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "lb")]) == 0
    import pandas as pd

    df = pd.read_csv(tmp_path / "lb" / "samples_cross.csv", keep_default_na=False)
    assert df["recipe"].tolist() == ["max_steps=6", "max_steps=3"] and df["runs"].tolist() == [1, 1]
    assert "| max_steps=6 |" in (tmp_path / "lb" / "samples_cross.md").read_text()
    assert main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "merged"),
                 "--merge-recipes"]) == 0
    merged = pd.read_csv(tmp_path / "merged" / "samples_cross.csv")
    assert len(merged) == 1 and merged.loc[0, "runs"] == 2 and merged.loc[0, "mIoU"] == pytest.approx(0.45)
    assert "Rows pool runs with different training settings** (`--merge-recipes`): max_steps" in \
        (tmp_path / "merged" / "samples_cross.md").read_text()


def test_boards_go_to_the_run_folder_and_warn_before_shrinking(first_run, tmp_path):
    """`bench leaderboard` and `bench report` write under --runs by default, never into the committed
    leaderboards/; a board replaced by one made from fewer results warns."""
    tmp, _, _ = first_run
    runs = tmp / "runs"
    assert main(["leaderboard", "--runs", str(runs)]) == 0
    assert (runs / "leaderboards" / "samples_cross.md").exists()
    assert main(["report", "--runs", str(runs), "--scenario", "samples_cross"]) == 0
    assert (runs / "report" / "index.html").exists() and (runs / "report" / "style.css").exists()
    board = tmp_path / "lb" / "samples_cross.md"
    board.parent.mkdir()
    board.write_text("<!-- Generated by `bench sweep` from 36 results; do not edit by hand. -->\n")
    with pytest.warns(UserWarning, match=r"samples_cross.md was generated from 36 results; it is replaced by one "
                                         r"from 1 \(`git checkout"):
        assert main(["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "lb")]) == 0
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text('<html><head><meta name=scenarios content="8">')
    with pytest.warns(UserWarning, match=r"index.html was generated from 8 scenarios; it is replaced by one from 1"):
        assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "site"), "--scenario", "samples_cross"]) == 0
    assert '<meta name=scenarios content="1">' in (tmp_path / "site" / "index.html").read_text()


def test_leaderboard_in_a_clone_leaves_it_clean(first_run, tmp_path):
    """Run in a checkout, `bench leaderboard` leaves `git status` clean: its boards go to runs/, which git
    ignores, not to the tracked leaderboards/."""
    import shutil
    import subprocess

    tmp, _, _ = first_run
    repo = Path(__file__).resolve().parent.parent
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    shutil.copytree(tmp / "runs" / "results", clone / "runs" / "results")
    subprocess.run([sys.executable, "-c", "from bench.cli import main; raise SystemExit(main(['leaderboard']))"],
                   cwd=clone, check=True, capture_output=True)
    assert (clone / "runs" / "leaderboards" / "samples_cross.md").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert status == ""


def test_one_progress_display_with_an_eta_and_plain_lines_in_a_log(tmp_path, capfd, monkeypatch):
    """Not on a terminal, a run prints plain lines (epoch k/N, steps, best val mIoU, ETA), one per period
    and a last one, no redraws; --quiet prints none, nor Lightning's notes, nor what results record anyway."""
    import bench.core.progress

    monkeypatch.setattr(bench.core.progress, "EVERY_S", 3600.0)  # one period longer than the run: first and last
    assert main(["run", *TINY[:-1], "--out", str(tmp_path / "runs"), "--no-leaderboard", "--no-figure",
                 "--wandb", "off"]) == 0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if " steps" in line]
    assert "\r" not in err
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  0/4 steps"), err
    assert "UserWarning" not in err and "warnings.warn" not in err  # warnings print on one line, no source
    assert "GPU available" not in err and "`Trainer.fit` stopped" not in err  # Lightning's chatter, even unquiet
    assert lines[-1].startswith("epoch 2/2  4/4 steps  best val mIoU ") and "ETA 0s" in lines[-1]
    assert main(["run", *TINY, "--seed", "1", "--out", str(tmp_path / "runs"), "--no-leaderboard",
                 "--no-figure", "--wandb", "off"]) == 0
    quiet = capfd.readouterr().err
    assert " steps" not in quiet
    for note in ("GPU available", "TPU available", "max_epochs", "Automatic Mixed Precision", "random weights"):
        assert note not in quiet, quiet


def test_plain_progress_prints_at_most_one_line_per_period():
    import io

    from bench.core.progress import Progress

    out = io.StringIO()
    p = Progress(10, "cells", "sweep", file=out, every_s=3600)
    for _ in range(10):
        p.update(1, status="1 running")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sweep  1/10 cells") and "10/10 cells" in lines[1]


EMBEDDED = str(Path(__file__).resolve().parent.parent / "bench" / "data" / "samples" / "ukis_csmask_s2" / "dataset.toml")


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "norms"], ["data", "info"], ["data", "check", EMBEDDED],
                                  ["run", "--norm", "percentil"], ["run", "--epochs", "0"]])
def test_quick_commands_do_not_load_torch(args):
    """`bench --help`, `list`, `data info` and argument errors answer without importing torch, smp or
    Lightning (seconds of start-up); `benchmarks/start_time.py` times them."""
    code = (f"import sys\nfrom bench.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'segmentation_models_pytorch', 'pytorch_lightning', 'wandb') "
            "if m in sys.modules), file=sys.stderr)")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert err.strip().splitlines()[-1] == "[]", err


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`bench list | head -1`: no BrokenPipeError traceback."""
    proc = subprocess.run("bench list | head -1", shell=True, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert proc.stdout.strip() == "models:" and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
