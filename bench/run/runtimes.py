"""Exported inference runtimes: a torch network run through ONNX Runtime or OpenVINO on the CPU.

* **Export once.** A network is exported to ONNX once per weights (the sha256 of its state dict) and band
  count, into the model's folder (a model trained here) or the user cache (a zoo model), written
  atomically; batch, height and width stay dynamic, so one file serves every tile size.
* **Checked before use.** On its first batch of real tiles an exported runtime is run beside torch fp32; it
  is used only if the two argmax maps agree on at least :data:`AGREEMENT` of the pixels (99.9 % in fp32,
  99 % in bf16). Otherwise it is set aside with a warning and torch runs. The outcome is remembered in a
  JSON file beside the export, per runtime, precision and CPU, so the check runs once per machine.
* **auto.** Among torch and the runtimes that passed their check, the fastest on that first batch (the
  median of :data:`ROUNDS` alternated rounds, at the thread count in use), measured once and remembered
  the same way.

bf16 runs through torch's autocast or OpenVINO's inference-precision hint where the CPU has bf16
(``OPTIMIZATION_CAPABILITIES``); ONNX Runtime runs fp32 only. int8 (asked for, never a default) is OpenVINO
running the export quantized by NNCF's post-training quantization on :data:`CALIBRATION_TILES` tiles of the
training split, made once beside the export; it is checked against torch fp32 as the others are. A runtime asked for by name that cannot run
here (not installed, a GPU device, bf16 where it has none, an adapter that changes the network while it
predicts) is refused before any pixel is predicted; ``auto`` leaves it out instead.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core.errors import ConfigError
from bench.core.results import CACHE, atomic, write_json
from bench.data.splits import pad_to, tile_grid
from bench.models.base import class_indices

EXPORTED = ("onnxruntime", "openvino")
#: least argmax agreement with torch fp32 on the first batch for an exported runtime to be used (int8
#: quantization moves more pixels, and is asked for knowingly: its agreement is recorded in results)
AGREEMENT = {"fp32": 0.999, "bf16": 0.99, "int8": 0.95}
#: tiles of the training split that calibrate an int8 model
CALIBRATION_TILES = 64
OPSET = 17
#: alternated timing rounds per candidate when ``auto`` measures
ROUNDS = 3
#: where a zoo model's exports go (a trained model's go to its own folder)
EXPORTS = CACHE / "exports"

Logits = Callable[[torch.Tensor], torch.Tensor]


class RuntimeSetAside(UserWarning):
    """An exported runtime disagreed with torch on real tiles (or could not run): torch is used instead."""


def weights_digest(module: nn.Module) -> str:
    """sha256 of a network's state dict: every parameter and buffer, by name, in order."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                 else t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def export_onnx(module: nn.Module, in_channels: int, path: Path) -> Path:
    """``module`` (in eval mode) as an ONNX file at ``path``, batch / height / width dynamic."""
    net = copy.deepcopy(module).float().cpu().eval()
    net = net.to(memory_format=torch.contiguous_format)
    x = torch.zeros(1, in_channels, 64, 64)
    with atomic(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(net, (x,), str(tmp), dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
                          opset_version=OPSET)
        import onnx

        onnx.checker.check_model(str(tmp), full_check=True)  # a malformed export is never kept
    return path


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), which a check and a measurement are remembered for."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def openvino_has_bf16() -> bool:
    """True where OpenVINO's CPU plugin runs bf16 natively."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def onnxruntime_logits(path: Path, precision: str, threads: int) -> Logits:
    """An ONNX Runtime session of ``path`` as a function of a batch (fp32 only)."""
    import onnxruntime as ort

    if precision != "fp32":
        raise ConfigError("onnxruntime runs fp32 only here: use --precision fp32, or --runtime openvino / torch for bf16")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.enable_mem_pattern = False  # a planned arena per input shape: 150 MB more at 2 x 512 px tiles
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads leave the cores
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": np.ascontiguousarray(x.numpy(), np.float32)})[0])


def calibration_tiles(images: Iterable[np.ndarray], patch: int, total: int, n: int = CALIBRATION_TILES) -> list[np.ndarray]:
    """Up to ``n`` (1, C, patch, patch) float32 model inputs, every ``total // n``-th of the ``total`` tiles
    of ``images`` (normalized training scenes, streamed; edge tiles mirrored to full size, NaN as 0)."""
    step, kept, i = max(1, total // n), [], 0
    for img in images:
        for r0, c0, r1, c1 in tile_grid(*img.shape[1:], patch):
            if i % step == 0 and len(kept) < n:
                tile = pad_to(img[:, r0:r1, c0:c1], patch)[None].astype(np.float32)
                kept.append(np.nan_to_num(tile, nan=0.0, posinf=0.0, neginf=0.0))
            i += 1
    return kept


def int8_model(path: Path, tag: str, calibration: Callable[[], list[np.ndarray]] | None) -> Path:
    """The OpenVINO IR of the ONNX export ``path`` quantized to int8 by NNCF on ``calibration()`` (a list of
    (1, C, H, W) float32 model inputs of the training split that ``tag`` names), made once beside it."""
    out = path.with_name(f"{path.stem}-int8-{tag}.xml")
    if out.exists() and out.with_suffix(".bin").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if calibration is None:
        raise ConfigError("--precision int8 calibrates on a training split, and this model has none here: "
                          "run it once with `bench run ... --precision int8 --runtime openvino` (which makes "
                          f"its int8 model beside {path}), or use fp32")
    import logging

    try:
        import nncf
    except ImportError:
        raise ConfigError("--precision int8 quantizes with NNCF, which is not installed: pip install 'cloudbench[int8]'") from None
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    items = calibration()
    quantized = nncf.quantize(ov.Core().read_model(str(path)), nncf.Dataset(items), subset_size=len(items))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.") as tmp:
        ov.save_model(quantized, str(Path(tmp) / out.name), compress_to_fp16=False)
        (Path(tmp) / out.name).with_suffix(".bin").replace(out.with_suffix(".bin"))  # the weights first,
        (Path(tmp) / out.name).replace(out)  # then the file whose presence says the pair is complete
    return out


def openvino_logits(path: Path, precision: str, threads: int) -> Logits:
    """An OpenVINO CPU model of ``path`` (an ONNX export, or its int8 IR) compiled at ``precision`` as a
    function of a batch. It is compiled for one input shape at a time (a static shape: 160 MB less than a
    dynamic one at 2 x 512 px tiles, and as fast), again when the tile size changes; a smaller batch of the
    same tiles (a scene's last) is padded to the compiled batch."""
    import openvino as ov

    if precision == "bf16" and not openvino_has_bf16():
        raise ConfigError("this CPU has no native bf16 for OpenVINO (OPTIMIZATION_CAPABILITIES lacks BF16): use "
                          "--precision fp32, or --runtime torch")
    if precision == "int8" and path.suffix != ".xml":
        raise ConfigError("int8 runs an NNCF-quantized model (bench.run.runtimes.int8_model)")
    core = ov.Core()
    model = core.read_model(str(path))
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "INFERENCE_NUM_THREADS": threads}
    compiled: dict[tuple[int, ...], Any] = {}  # input shape -> (model, request): one at a time

    def request(shape: tuple[int, ...]) -> tuple[Any, Any]:
        if shape not in compiled:
            compiled.clear()  # the last shape's buffers go before the next is made
            static = model.clone()
            static.reshape(list(shape))
            net = core.compile_model(static, "CPU", config)
            compiled[shape] = net, net.create_infer_request()
        return compiled[shape]

    def run(x: torch.Tensor) -> torch.Tensor:
        n, shape = x.shape[0], tuple(x.shape)
        known = next(iter(compiled), None)
        if known is not None and known[1:] == shape[1:] and n < known[0]:  # a last, smaller batch
            x = torch.cat([x, x.new_zeros((known[0] - n, *shape[1:]))])
        net, req = request(tuple(x.shape))
        out = req.infer({0: np.ascontiguousarray(x.numpy(), np.float32)})
        return torch.from_numpy(np.array(out[net.output(0)], dtype=np.float32)[:n])

    return run


SESSIONS = {"onnxruntime": onnxruntime_logits, "openvino": openvino_logits}


def refusal(runtime: str, device: str, adapting: bool) -> str | None:
    """Why ``runtime`` cannot run here at all, or None."""
    if not device.startswith("cpu"):
        return f"{runtime} runs on the CPU here; device {device!r} runs torch"
    if adapting:
        return f"{runtime} runs a fixed network; a test-time adapter changes it while it predicts"
    try:
        __import__(runtime)
    except ImportError:
        return f"{runtime} is not installed (pip install {runtime})"
    return None


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of pixels whose argmax class is the same in two batches of logits."""
    return float((class_indices(a) == class_indices(b)).float().mean())


def median_seconds(fns: dict[str, Callable[[], Any]], rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds of each function over ``rounds`` rounds, the functions alternated within a round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


class Chooser:
    """The logits function of one network under one runtime request (``runtime``; ``names``: the exported
    runtimes that may run here, :func:`refusal` passed): it exports, checks and (``auto``) measures on the
    first batch, then runs what it chose. ``ran`` says which runtime that was."""

    def __init__(self, module: nn.Module, torch_fn: Logits, torch_fp32: Logits, runtime: str, names: list[str],
                 precision: str, folder: Path | None, calibration: Callable[[], list[np.ndarray]] | None = None,
                 tag: str = "") -> None:
        self.module, self.torch_fn, self.torch_fp32 = module, torch_fn, torch_fp32
        self.runtime, self.names, self.precision, self.folder = runtime, names, precision, folder
        self.calibration, self.tag = calibration, tag  # int8: the training split's tiles, and what names them
        self.fn: Logits | None = None
        self.ran: str | None = None
        self.checks: dict[str, float] = {}  # runtime -> its agreement with torch fp32 on the first batch

    @property
    def agreement(self) -> float | None:
        """The agreement with torch fp32 of the runtime that runs (None for torch, or before the first batch)."""
        return self.checks.get(self.ran or "")

    @property
    def label(self) -> str:
        """The precision as checks are remembered: int8 with its calibration data."""
        return f"int8:{self.tag}" if self.precision == "int8" else self.precision

    def session(self, name: str, path: Path, threads: int) -> Logits:
        """``name``'s function of a batch for the export at ``path`` (int8: its quantized model)."""
        if self.precision == "int8" and name == "openvino":
            path = int8_model(path, self.tag, self.calibration)
        return SESSIONS[name](path, self.precision, threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn is None:
            self.fn, self.ran = self.choose(x)
        return self.fn(x)

    def export(self, in_channels: int) -> Path:
        """The network's ONNX file for ``in_channels`` bands, exported now unless it was before."""
        name = f"{weights_digest(self.module)[:16]}-{in_channels}b-opset{OPSET}.onnx"
        path = (self.folder / "exports" if self.folder else EXPORTS) / name
        return path if path.exists() else export_onnx(self.module, in_channels, path)

    def remembered(self, memo: "Memo", threads: int) -> str | None:
        """The runtime ``auto`` chose before on this machine among the same passed checks, or None."""
        passed = [n for n in self.names if (memo.check(n, self.label) or {}).get("passed")]
        fastest = memo.fastest(self.precision, threads, passed)
        if fastest is not None and fastest != "torch":
            self.checks[fastest] = memo.check(fastest, self.label)["agreement"]
        return fastest

    def choose(self, x: torch.Tensor) -> tuple[Logits, str]:
        """(logits function, runtime name) after the check, and for ``auto`` the measurement, on batch ``x``."""
        threads = torch.get_num_threads()
        path = self.export(x.shape[1])
        memo = Memo(path.with_suffix(".json"))
        if self.runtime == "auto":  # chosen before on this machine: only that one is loaded (memory)
            known = self.remembered(memo, threads)
            if known is not None:
                return (self.torch_fn, "torch") if known == "torch" else (self.session(known, path, threads), known)
        passed: dict[str, Logits] = {}
        reference: torch.Tensor | None = None
        for name in self.names:
            try:
                fn = self.session(name, path, threads)
            except ConfigError:  # this precision is not for it: refused by name, left out by auto
                if self.runtime == "auto":
                    continue
                raise
            check = memo.check(name, self.label)
            if check is None:
                if reference is None:
                    reference = self.torch_fp32(x)
                check = memo.record_check(name, self.label, agreement(fn(x), reference), AGREEMENT[self.precision])
            self.checks[name] = check["agreement"]
            if check["passed"]:
                passed[name] = fn
            elif self.runtime != "auto" and self.precision != "int8":  # int8 is refused below instead
                warnings.warn(f"{name} ({self.precision}) agreed with torch fp32 on {check['agreement']:.2%} of the "
                              f"pixels of real tiles, under the {AGREEMENT[self.precision]:.1%} required: it is set "
                              f"aside and torch runs ({path.with_suffix('.json')} remembers this)", RuntimeSetAside,
                              stacklevel=2)
        if self.precision == "int8" and not passed:  # asked for int8: never torch fp32 under its name
            raise ConfigError(f"the int8 model agreed with torch fp32 on {self.checks.get('openvino', 0):.2%} of the "
                              f"pixels of real tiles, under the {AGREEMENT['int8']:.0%} required: use fp32 "
                              f"({path.with_suffix('.json')} remembers this)")
        if self.runtime != "auto":
            return (passed[self.runtime], self.runtime) if passed else (self.torch_fn, "torch")
        fastest = memo.fastest(self.precision, threads, list(passed))
        if fastest is None:
            seconds = median_seconds({"torch": lambda: self.torch_fn(x), **{k: (lambda f=f: f(x)) for k, f in passed.items()}})
            fastest = memo.record_fastest(self.precision, threads, seconds)
        return (passed[fastest], fastest) if fastest in passed else (self.torch_fn, "torch")


def check_key(runtime: str, precision: str) -> str:
    """What a check is remembered by: the runtime, the precision and this CPU."""
    return f"{runtime}/{precision}/{cpu_name()}"


class Memo:
    """What was found about one export on this machine: its checks and which runtime was fastest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            self.data = {}
        self.data.setdefault("checks", {})
        self.data.setdefault("fastest", {})

    def check(self, runtime: str, precision: str) -> dict[str, Any] | None:
        """The remembered check of ``runtime`` at ``precision`` on this CPU, or None."""
        return self.data["checks"].get(check_key(runtime, precision))

    def record_check(self, runtime: str, precision: str, agreed: float, required: float) -> dict[str, Any]:
        """Remember (and return) a check's outcome."""
        check = {"agreement": agreed, "required": required, "passed": agreed >= required}
        self.data["checks"][check_key(runtime, precision)] = check
        write_json(self.path, self.data)
        return check

    def fastest(self, precision: str, threads: int, passed: list[str]) -> str | None:
        """The remembered fastest runtime, if it was measured among the same candidates."""
        found = self.data["fastest"].get(f"{precision}/{threads}/{cpu_name()}")
        if found and set(found["seconds"]) == {"torch", *passed}:
            return found["runtime"]
        return None

    def record_fastest(self, precision: str, threads: int, seconds: dict[str, float]) -> str:
        """Remember (and return) the fastest of measured ``seconds`` per batch."""
        best = min(seconds, key=seconds.get)
        self.data["fastest"][f"{precision}/{threads}/{cpu_name()}"] = {"runtime": best, "seconds": seconds}
        write_json(self.path, self.data)
        return best
