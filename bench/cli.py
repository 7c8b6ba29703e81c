"""The ``bench`` command: a thin layer over the Python API (``bench.run.runner``, ``bench.core.registry``, ...)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING, Any

from bench import __version__
from bench.core.errors import BenchError, ConfigError, unknown
from bench.core.recipe import BLENDS, RUNTIMES, Recipe
from bench.core.registry import KIND_ALIASES, KINDS, get_registry
from bench.run.output import configure_output

if TYPE_CHECKING:  # the run layer imports torch: the CLI loads it only for commands that run models
    from bench.run.plan import RunConfig


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _run_options(p: argparse.ArgumentParser) -> None:
    """Options that ``run`` and ``sweep`` share: the recipe, where data and results live, the hardware."""
    Recipe.add_arguments(p.add_argument_group("recipe (default: the scenario's preset, else the study's)"))
    p.add_argument("--data-root", help="folder holding downloaded datasets (or set CLOUDBENCH_DATA)")
    p.add_argument("--out", default="runs", help="folder for trained models and results (default: runs)")
    p.add_argument("--strict", action="store_true", help="refuse NaN / inf pixels instead of treating them as nodata")
    p.add_argument("--finetune", action="store_true", help="train a pretrained PyTorch model further on the "
                   "scenario's training split (then any --norm); without it pretrained models run zero-shot")
    h = p.add_argument_group("hardware (any Lightning accelerator and strategy)")
    h.add_argument("--accelerator", default="auto", help="auto, cpu, gpu, ...")
    h.add_argument("--devices", type=_positive_int, default=1, help="devices per run (with --strategy ddp: processes)")
    h.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, fsdp, ...")
    h.add_argument("--num-nodes", type=_positive_int, default=1)
    h.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    h.add_argument("--no-channels-last", action="store_true", help="keep the contiguous memory format (default: "
                   "channels_last for inference, and for training with bf16 or on a GPU)")
    h.add_argument("--compile", action="store_true", help="torch.compile the model for evaluation")
    _runtime_option(h)
    p.add_argument("--wandb", default="offline", help="offline (default; `wandb sync` later), online, or off")
    p.add_argument("--no-figure", action="store_true", help="do not draw the per-run figure")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="replace a model setting (bench list models shows them), e.g. --set threshold=0.3; in a "
                   "sweep, KEY=V1,V2,... crosses the values; each value is its own result and leaderboard row")
    p.add_argument("--masks", metavar="DIR", help="for a model of precomputed masks (type masks): the folder "
                   "holding its mask files (the same as --set root=DIR)")
    p.add_argument("--reevaluate", action="store_true", help="evaluate again, with the model it already has, a "
                   "result written by an older cloudbench (without the field's scores); others are kept")
    p.add_argument("--consistency", action="store_true", help="label-free: also measure how often a prediction "
                   "holds with the input flipped (one more inference pass)")


def _tiling_options(p: argparse.ArgumentParser) -> None:
    """--tile, --overlap and --blend of predict: a zoo model's own inference policy unless one is given."""
    p.add_argument("--tile", type=int, help="tile size, multiple of 32 (default: the model's inference policy, "
                   "else 512)")
    p.add_argument("--overlap", type=int, help="with --blend crop, pixels dropped at each tile side that has a "
                   "neighbour, so seams do not show; with ramp, pixels two neighbours share (default 32)")
    p.add_argument("--blend", choices=BLENDS, help="crop: each pixel from the one tile whose kept core holds it; "
                   "ramp: the mean of its tiles' logits, weighted by linear ramps across each overlap "
                   "(omnicloudmask's blending) (default crop)")


def _runtime_option(p: argparse._ActionsContainer) -> None:
    p.add_argument("--runtime", default="torch", choices=RUNTIMES,
                   help="torch (default); onnxruntime or openvino: the network exported to ONNX once and checked "
                   "against torch on the first tiles (CPU); auto: the fastest of those that agree, measured once")


def _launcher_options(p: argparse.ArgumentParser, launcher_help: str) -> None:
    """Where ``sweep`` and ``predict`` run their jobs (bench.sweep.launchers)."""
    p.add_argument("--launcher", default="local", help=launcher_help)
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--time", type=_positive_int, default=60, help="Slurm time limit per job, minutes")
    p.add_argument("--gpus-per-job", type=int, default=0, help="GPUs per Slurm job (one task per GPU)")
    p.add_argument("--cpus-per-job", type=int, help="CPUs per Slurm task")


def _launcher(args: argparse.Namespace, folder: Path | None = None):  # noqa: ANN202 - a sweep Launcher
    """The launcher that ``--launcher``, ``--jobs`` and the Slurm options ask for (its files in ``folder``,
    default: the launcher's own)."""
    from bench.sweep.launchers import Launcher

    return Launcher(args.launcher, jobs=args.jobs, partition=args.partition, time_min=args.time,
                    gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
                    **({"folder": folder} if folder else {}))


def model_settings(args: argparse.Namespace) -> dict[str, list[Any]]:
    """``--set KEY=V1,V2`` (repeatable) and ``--masks DIR`` as ``{key: [values]}``."""
    from bench.run.plan import parse_setting

    out = dict(parse_setting(text) for text in args.settings)
    if args.masks:
        out["root"] = [args.masks]
    return out


def _run_config(args: argparse.Namespace, argv: Sequence[str], **extra: Any) -> RunConfig:
    """The settings ``run`` and ``sweep`` share, from parsed arguments."""
    from bench.run.plan import RunConfig

    return RunConfig(recipe=Recipe.overrides(args), data_root=args.data_root, out=args.out, strict=args.strict,
                     accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
                     num_nodes=args.num_nodes, num_workers=args.num_workers, wandb=args.wandb,
                     channels_last=not args.no_channels_last, compile=args.compile, runtime=args.runtime,
                     figure=not args.no_figure, finetune=args.finetune, command=shlex.join(["bench", *argv]),
                     consistency=args.consistency, reevaluate=args.reevaluate,
                     **extra)


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="bench", description="cloudbench: do Sentinel-2 cloud masks still work on "
                                "data they were not trained on?")
    p.add_argument("--version", action="version", version=f"cloudbench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_run, _add_sweep, _add_predict, _add_assess, _add_score, _add_boards, _add_list, _add_data):
        add(sub)
    return p


def _add_run(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="train (or reuse) a model, evaluate it on a scenario, write results")
    r.add_argument("--model", default="unet_mnv2", help="model variant (bench list models)")
    r.add_argument("--norm", default=None, help="normalizer (bench list norms; default: native for a pretrained "
                   "model, its own preprocessing, else percentile)")
    r.add_argument("--scenario", default="samples_cross", help="scenario name or path of a scenario TOML")
    r.add_argument("--adapt", default="none", help="test-time adapter (bench list adapters)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--weights", help="a pretrained model's weight file(s), comma-separated, instead of its own; for "
                   "a model trained here, its initial encoder weights: imagenet (looked for in the cache, then "
                   "fetched) or random")
    _run_options(r)
    r.add_argument("--leaderboards", default=None, help="folder for the scenario's leaderboard (default: <out>/leaderboards)")
    r.add_argument("--no-leaderboard", action="store_true", help="do not regenerate the scenario's leaderboard")
    r.add_argument("--force", action="store_true", help="redo training and evaluation even if results exist")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="cross models x norms x adapters x scenarios x seeds; resumable, parallel")
    sw.add_argument("--models", default="unet_mnv2", help="names or wildcards, comma-separated: 'unet_*,segformer_b0'")
    sw.add_argument("--norms", default="none,percentile,zscore", help="normalizers (default: none,percentile,zscore)")
    sw.add_argument("--adapt", default="none", help="adapters, e.g. none,adabn")
    sw.add_argument("--scenarios", default="samples_cross", help="scenario names, wildcards or TOML paths")
    sw.add_argument("--seeds", default="1", help="a count (3: seeds 0,1,2) or a list (0,4,7)")
    _run_options(sw)
    sw.add_argument("--leaderboards", default=None, help="folder for the leaderboards (default: <out>/leaderboards)")
    sw.add_argument("--dry-run", action="store_true", help="list the cells and which are cached; run nothing")
    sw.add_argument("--jobs", type=_positive_int, default=1, help="jobs at once (local: worker processes)")
    _launcher_options(sw, "local (default), slurm, or submitit_local")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="write a model's cloud mask of a GeoTIFF or an L1C .SAFE (folder or zip)",
                        description="Predict a whole scene, strip by strip, into a cloud-optimised GeoTIFF with "
                        "the input's georeferencing: class codes 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud "
                        "shadow, 255 nodata, with a colour table.")
    pr.add_argument("input", nargs="+", help="a GeoTIFF, an L1C .SAFE folder or its zip; with --out-dir, several, "
                    "folders of them, glob patterns ('scenes/*.tif') or list files (@scenes.txt, one path a line)")
    which = pr.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a pretrained model of the zoo, run zero-shot (bench list models)")
    which.add_argument("--run", help="a trained run: its result JSON, its model folder or its model.pt")
    out = pr.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="the mask GeoTIFF to write (one scene)")
    out.add_argument("--out-dir", help="a folder for the masks of many scenes, <stem>.tif each; a scene whose mask "
                     "is there is skipped (unless --overwrite), so the same command resumes an interrupted batch")
    pr.add_argument("--probabilities", help="also write the 4 class probabilities to this GeoTIFF (one scene)")
    pr.add_argument("--write-probabilities", action="store_true", help="with --out-dir: also write "
                    "<stem>_probabilities.tif")
    pr.add_argument("--jobs", type=_positive_int, default=1, help="with --out-dir: scenes at once, in local "
                    "worker processes that share the CPU's threads (default 1); with --launcher, jobs submitted")
    _launcher_options(pr, "local (default), or slurm / submitit_local: --jobs submitit jobs, each with its "
                      "share of the scenes (as bench sweep submits)")
    pr.add_argument("--probability-type", default="uint8", help="uint8 (percent, nodata 255; default) or float32")
    pr.add_argument("--bands", help="the GeoTIFF's bands in file order, e.g. B02,B03,B04,B08 (default: its band "
                    "descriptions)")
    pr.add_argument("--scale", type=float, help="GeoTIFF values x SCALE = reflectance (default: 0.0001 for "
                    "integers, digital numbers; 1 for floats)")
    pr.add_argument("--offset", type=float, default=0.0, help="added to GeoTIFF values before scaling, e.g. -1000 "
                    "for L1C processing baseline 04.00 or later (a .SAFE reads its own)")
    pr.add_argument("--weights", help="a pretrained model's weight file(s), instead of its own")
    _tiling_options(pr)
    pr.add_argument("--batch-size", type=_positive_int, default=2, help="tiles per forward pass (default 2: "
                    "peak memory within 1.5 GB for 13 bands at 512 px)")
    pr.add_argument("--device", help="cpu or cuda (default: cuda if there is one)")
    pr.add_argument("--precision", default="auto", help="auto (bf16 where the hardware runs it fast), fp32, bf16, "
                    "or int8 with --runtime openvino (a trained run's int8 model, made by `bench run --precision int8`)")
    pr.add_argument("--no-channels-last", action="store_true", help="keep the contiguous memory format")
    _runtime_option(pr)
    pr.add_argument("--compile", action="store_true", help="torch.compile the model first")
    pr.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_assess(sub: argparse._SubParsersAction) -> None:
    pa = sub.add_parser("assess", help="label-free estimates: how will these masks do on my (unlabelled) scenes?")
    pa.add_argument("scenes", nargs="*", metavar="SCENE", help="GeoTIFFs or L1C .SAFE folders / zips")
    pa.add_argument("--model", action="append", default=[], help="a pretrained model (repeatable)")
    pa.add_argument("--run", action="append", default=[], help="a trained run's result JSON (repeatable)")
    pa.add_argument("--scenario", help="assess on this scenario's test split (its labels are not read); a shift "
                    "scenario gives one table per severity")
    pa.add_argument("--masks", metavar="DIR", help="for a model of masks made by another tool (bench list models "
                    "'masks_*'): the folder of its mask files; it joins the agreement between the models")
    pa.add_argument("--calibrate-on", help="the scenario whose validation split calibrates a pretrained model "
                    "(default: samples_intra, else samples_temporal, the first that has its bands)")
    pa.add_argument("--bands", help="the GeoTIFFs' bands in file order (default: their band descriptions)")
    pa.add_argument("--scale", type=float, help="GeoTIFF values x SCALE = reflectance (as bench predict)")
    pa.add_argument("--offset", type=float, default=0.0, help="added to GeoTIFF values before scaling")
    pa.add_argument("--tile", type=int, default=512, help="tile size, multiple of 32 (default 512)")
    pa.add_argument("--batch-size", type=_positive_int, default=2, help="tiles per forward pass (default 2)")
    pa.add_argument("--device", help="cpu or cuda (default: cuda if there is one)")
    pa.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    _runtime_option(pa)
    pa.add_argument("--json", help="write the whole assessment to this JSON file (schema in bench.run.assess)")
    pa.add_argument("--quiet", action="store_true", help="no progress display")


def _add_score(sub: argparse._SubParsersAction) -> None:
    sc = sub.add_parser("score", help="score mask files made by any tool against reference masks",
                        description="Score predicted masks against reference masks with evaluation's metrics, in "
                        "the finest label space both code tables allow; nodata on either side is left out.")
    sc.add_argument("files", nargs="*", metavar="PRED REF", help="pairs of mask GeoTIFFs: predicted, then reference")
    sc.add_argument("--pred", metavar="DIR", help="folder of predicted masks, matched to --ref by file stem")
    sc.add_argument("--ref", metavar="DIR", help="folder of reference masks")
    sc.add_argument("--pairs", metavar="FILE", help="a list file: one 'PRED REF' pair a line (relative to it)")
    for side in ("pred", "ref"):
        sc.add_argument(f"--{side}-codes", default="masks_cloudbench", metavar="PRESET_OR_TABLE",
                        help=f"the {side} files' code table: a masks preset (bench list models 'masks_*'), a "
                        "TOML / JSON file (codes, bits, band) or inline 0=clear,1=cloud,255=nodata "
                        "(default: masks_cloudbench, bench predict's codes)")
    sc.add_argument("--reproject", action="store_true", help="resample PRED onto REF's grid (nearest neighbour) "
                    "instead of refusing a different grid")
    sc.add_argument("--json", metavar="FILE", help="write the scores to this JSON file (schema in bench.run.score)")


def _add_boards(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("report", help="write the leaderboards as a static HTML site (opens from disk)")
    rp.add_argument("--runs", default="runs", help="folder of results (default: runs)")
    rp.add_argument("--out", "--dest", dest="out", help="site folder (default: <runs>/report; the committed site "
                    "is leaderboards/html)")
    rp.add_argument("--scenario", action="append", help="only this scenario (repeatable); label_free: only the "
                    "label-free page")
    lb = sub.add_parser("leaderboard", help="regenerate <scenario>.md and .csv boards from stored results")
    lb.add_argument("--runs", default="runs", help="folder of results (default: runs)")
    lb.add_argument("--out", "--dest", dest="out", help="folder of the boards (default: <runs>/leaderboards; the "
                    "committed boards are leaderboards/)")
    lb.add_argument("--scenario", action="append", help="only this scenario (repeatable; the label-free board "
                    "is written from every result; label_free: only it)")
    for p in (rp, lb):
        p.add_argument("--merge-recipes", action="store_true", help="pool runs with different training settings "
                       "(steps, patch size, lr, weights, ...) into one row; the board says so")


def _add_list(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser("list", help="list registered plugins: models, norms, adapters, scenarios, datasets")
    ls.add_argument("kind", nargs="?", default=None, help="models | norms | adapters | scenarios | datasets (default: all)")
    ls.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'unet_*'")


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets: info, download, verify, check")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dsub.add_parser("info", help="every dataset, its reference type and whether its data is found")
    dl = dsub.add_parser("download", help="fetch a dataset into the data root (needs internet)")
    dl.add_argument("name", help="cloudsen12, copernicus_cloud_s2, or a sentinelhub dataset")
    dl.add_argument("--dry-run", action="store_true", help="print what would be fetched (files and sizes, or the "
                    "Sentinel Hub request with its evalscript); fetch nothing")
    dl.add_argument("--revision", help="CloudSEN12+: the Hugging Face commit to take (default: the one an earlier "
                    "download recorded in REVISION, else the newest, recorded then)")
    vf = dsub.add_parser("verify", help="check downloaded files against their SHA256SUMS")
    vf.add_argument("name")
    ck = dsub.add_parser("check", help="validate every file of a dataset TOML and print a summary table")
    ck.add_argument("toml")
    ck.add_argument("--strict", action="store_true", help="NaN / inf pixels are errors")
    for sp in (dsub.choices["info"], dl, vf):
        sp.add_argument("--data-root", help="folder of downloaded datasets (default: CLOUDBENCH_DATA)")


def cmd_list(args: argparse.Namespace) -> int:
    """``bench list [KIND] [PATTERN]``: registered entries, one line each."""
    reg = get_registry()
    if args.kind is None:
        kinds = list(KINDS)
    else:
        kind = KIND_ALIASES.get(args.kind, args.kind)
        if kind not in KINDS:
            raise unknown("plugin kind", args.kind, list(KIND_ALIASES))
        kinds = [kind]
    width = max((len(n) for k in kinds for n in reg.names(k, args.pattern)), default=0)
    shown = 0
    for kind in kinds:
        entries = reg.entries(kind, args.pattern)
        if len(kinds) > 1 and entries:
            print(f"{KINDS[kind]}s:")
        for e in entries:
            extra = ""
            if kind == "scenario":
                extra = f" [v{e.settings.get('version', '?')}]"
            if kind == "model":
                extra = f" [{model_kind(e)}]"
            print(f"  {e.name:<{width}}  {e.description}{extra}")
            shown += 1
    if not shown:
        print(f"nothing matches {args.pattern!r}", file=sys.stderr)
        return 1
    return 0


def model_kind(entry: Any) -> str:
    """``pytorch; trained here`` or ``onnx; pretrained: zero-shot`` (``+ fine-tune`` where it can be trained)."""
    from bench.models.base import contract_of

    c = contract_of(entry)
    if not c.pretrained:
        return f"{c.framework}; trained here"
    return f"{c.framework}; pretrained: zero-shot" + (" + fine-tune" if c.trainable else "")


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``bench run``: one model x normalizer x adapter x scenario; prints the metrics and files."""
    settings = model_settings(args)
    several = [k for k, v in settings.items() if len(v) > 1]
    if several:
        raise ConfigError(f"--set {several[0]}: bench run takes one value; bench sweep crosses several")
    cfg = _run_config(args, argv, model=args.model, norm=args.norm, scenario=args.scenario, adapt=args.adapt,
                      seed=args.seed, weights=args.weights, leaderboards=False if args.no_leaderboard else (args.leaderboards or True),
                      force=args.force, progress=not args.quiet, settings={k: v[0] for k, v in settings.items()})
    cfg.validate()  # names and values, before torch is loaded
    from bench.run.runner import run

    res = run(cfg)
    if not res.metrics:  # a process of a multi-process strategy other than rank 0: rank 0 reports
        return 0
    m = res.metrics
    ious = "  ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in m["iou"].items())
    miou = "n/a" if m["miou"] is None else f"{m['miou']:.3f}"
    acc = "n/a" if m["accuracy"] is None else f"{m['accuracy']:.3f}"
    print(f"\n{cfg.model} x {cfg.norm} x adapt {cfg.adapt} on {cfg.scenario}: mIoU {miou}  accuracy {acc}  ({ious})")
    print(f"result:      {res.path}")
    if res.figure:
        print(f"figure:      {res.figure}")
    if res.leaderboard:
        print(f"leaderboard: {res.leaderboard}")
    return 0


def cmd_sweep(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``bench sweep``: a grid of runs, resumable and parallel; prints what it did."""
    from bench.sweep.driver import sweep
    from bench.sweep.grid import Grid, dry_run, plans

    grid = Grid(models=args.models, norms=args.norms, adapts=args.adapt, scenarios=args.scenarios,
                seeds=args.seeds, settings=model_settings(args),
                base=_run_config(args, argv, progress=False, leaderboards=False))
    if args.dry_run:
        print(dry_run(plans(grid)))
        return 0
    launcher = _launcher(args)
    s = sweep(grid, launcher, leaderboards=args.leaderboards or True, command=shlex.join(["bench", *argv]),
              progress=not args.quiet)
    print(f"\n{s.cells} cells: {s.done_before} cached, {s.ran} run now, {len(s.failed)} failed; "
          f"{s.models_to_train} models trained, {s.models_reused} reused"
          + (f", {s.pretrained} pretrained run zero-shot" if s.pretrained else "") + f"; {s.wall_s:.0f} s")
    for p in s.leaderboards:
        print(f"leaderboard: {p}")
    for f in s.failed:
        print(f"missing: {f}", file=sys.stderr)
    return 1 if s.failed else 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``bench predict``: one scene's mask (and probabilities) from a trained run or a pretrained model."""
    from bench.data.datasets.base import check_bands
    from bench.run.inference import FastPaths, resolve_precision
    from bench.run.predict import default_device, load_predictor, predict

    bands = [b.strip() for b in args.bands.split(",")] if args.bands else None
    if bands:
        check_bands(bands, "--bands")
    device = args.device or default_device()
    if args.out and (len(args.input) > 1 or args.write_probabilities or args.jobs > 1 or args.launcher != "local"):
        raise ConfigError("--out names one mask: give --out-dir for several scenes (and --write-probabilities)")
    if args.out_dir and args.probabilities:
        raise ConfigError("--probabilities names one file: with --out-dir, pass --write-probabilities")
    predictor = load_predictor(args.model, args.run, args.weights)
    zero_shot = predictor.source.get("mode") == "zero-shot"  # auto: fp32 for a zoo model, as upstream runs it
    fast = FastPaths(resolve_precision(args.precision, device, zero_shot, predictor.contract.upstream_precision),
                     not args.no_channels_last, args.compile, args.runtime, predictor.exports(),
                     tag="train" if predictor.exports() else "")
    options = dict(bands=bands, scale=args.scale, offset=args.offset, tile=args.tile, overlap=args.overlap,
                   blend=args.blend,
                   batch_size=args.batch_size, device=device, fast=fast, probability_type=args.probability_type)
    if args.out_dir:
        return predict_scenes(predictor, args, options)
    written = predict(predictor, args.input[0], args.out, args.probabilities, overwrite=args.overwrite,
                      progress=not args.quiet, **options)
    print(written.summary())
    return 0


def predict_scenes(predictor: Any, args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``bench predict ... --out-dir``: every scene's mask, a summary table, exit 1 if any scene failed."""
    from tabulate import tabulate

    from bench.run.predict_many import predict_in_processes, predict_many, scene_paths

    scenes = scene_paths(args.input)
    if args.launcher != "local":
        from bench.run.predict_many import predict_submitted
        launcher = _launcher(args, folder=Path(args.out_dir) / ".jobs")
        outcomes = predict_submitted(launcher.executor(), args.model, args.run, args.weights, scenes, args.out_dir,
                                     args.jobs, args.write_probabilities, args.overwrite, not args.quiet, **options)
    elif args.jobs > 1:
        outcomes = predict_in_processes(args.model, args.run, args.weights, scenes, args.out_dir, args.jobs,
                                        args.write_probabilities, args.overwrite, not args.quiet, **options)
    else:
        outcomes = predict_many(predictor, scenes, args.out_dir, args.write_probabilities, args.overwrite,
                                not args.quiet, **options)
    print(tabulate([o.row() for o in outcomes], headers=["scene", "status", "seconds", "detail"]))
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {k: sum(o.status == k for o in outcomes) for k in ("written", "skipped", "failed")}
    print(f"\n{len(outcomes)} scenes: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + f"; masks in {args.out_dir}")
    return 1 if failed else 0


def cmd_assess(args: argparse.Namespace) -> int:
    """``bench assess``: estimates of each model on scenes without labels, a verdict and a recommendation."""
    from bench.core.results import write_json
    from bench.run import assess as a
    from bench.run.inference import FastPaths, resolve_precision
    from bench.run.predict import default_device

    if bool(args.scenes) == bool(args.scenario):
        raise ConfigError("give the scenes to assess or --scenario NAME, not both")
    if not args.model and not args.run:
        raise ConfigError("give at least one --model NAME or --run RESULT.json")
    device = args.device or default_device()
    fast = FastPaths(resolve_precision(args.precision, device), runtime=args.runtime)
    plans = [a.calibration_plan(m, args.calibrate_on, a.model_bands(m)) for m in args.model if not a.is_masks(m)]
    plans += [a.run_plan(Path(r)) for r in args.run]
    masks = [m for m in args.model if a.is_masks(m)]
    bands = [b.strip() for b in args.bands.split(",")] if args.bands else None
    reports = []
    for severity in a.severities(args.scenario):
        rows = [a.row_of(p, device, FastPaths(resolve_precision(args.precision, device, p.mode == "zero-shot"),
                                              runtime=args.runtime))
                for p in plans] + [a.masks_row(m, args.masks) for m in masks]
        scenes = (a.split_scenes(args.scenario, severity) if args.scenario else
                  a.file_scenes([Path(s) for s in args.scenes], bands, args.scale, args.offset, args.tile))
        report = a.assess(rows, scenes, args.tile, args.batch_size, device, fast, not args.quiet)
        reports.append({"severity": severity, **report})
        print(a.table(report, severity))
    if args.json:
        write_json(args.json, reports[0] if len(reports) == 1 else {"schema": a.SCHEMA, "severities": reports})
        print(f"assessment: {args.json}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """``bench score``: predicted masks against reference masks, per pair and pooled."""
    from bench.core.results import write_json
    from bench.run.score import pairs_of, score, table

    pairs = pairs_of(args.files, args.pred, args.ref, args.pairs)
    report = score(pairs, args.pred_codes, args.ref_codes, args.reproject)
    print(table(report))
    if args.json:
        write_json(args.json, report)
        print(f"scores: {args.json}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``bench data info|download|verify|check``."""
    from bench.data import download as catalog

    if getattr(args, "data_root", None):
        os.environ["CLOUDBENCH_DATA"] = str(args.data_root)
    if args.data_command == "info":
        catalog.print_table(catalog.info())
        return 0
    if args.data_command == "download":
        if args.dry_run:
            print(catalog.dry_run(args.name, args.revision))
            return 0
        for path in catalog.download(args.name, args.data_root, args.revision):
            print(path)
        return 0
    if args.data_command == "verify":
        rows = catalog.verify(args.name, args.data_root)
        catalog.print_table(rows)
        return 0 if all(r["status"] == "ok" for r in rows) else 1
    rows, ok = catalog.check(args.toml, strict=args.strict)
    catalog.print_table(rows)
    print(f"\n{len(rows)} scenes, {sum(r['status'].startswith('ERROR') for r in rows)} with errors")
    return 0 if ok else 1


def _written(paths: list, runs: str) -> int:
    """Print the files a ``leaderboard`` or ``report`` command wrote; 1 if there were no results to use."""
    if not paths:
        print(f"no results under {Path(runs) / 'results'}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


def cmd_boards(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``bench leaderboard`` / ``bench report``: regenerate boards from stored results, by default into
    the results folder (``<runs>/leaderboards``, ``<runs>/report``): the committed boards are written only
    when ``--out`` names them."""
    command = shlex.join(["bench", *argv])
    if args.command == "report":
        from bench.boards.report import write_report

        out = args.out or str(Path(args.runs) / "report")
        return _written(write_report(args.runs, out, args.scenario, command, args.merge_recipes), args.runs)
    from bench.boards.leaderboard import write_leaderboards

    out = args.out or str(Path(args.runs) / "leaderboards")
    return _written(write_leaderboards(args.runs, out, args.scenario, command, args.merge_recipes), args.runs)


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "predict": lambda args, argv: cmd_predict(args),
            "assess": lambda args, argv: cmd_assess(args), "score": lambda args, argv: cmd_score(args),
            "report": cmd_boards, "leaderboard": cmd_boards,
            "list": lambda args, argv: cmd_list(args), "data": lambda args, argv: cmd_data(args)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bench``; returns the exit code (0 ok, 1 nothing found, 2 error, 130 interrupted,
    141 output pipe closed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_output(quiet=getattr(args, "quiet", False))
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args, argv)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"\ninterrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bench list | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
