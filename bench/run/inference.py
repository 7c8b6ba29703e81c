"""The one inference path of evaluation and prediction: fast paths, then overlapping tiles over strips.

* :class:`FastPaths`: channels_last memory format, bf16 autocast (on where the hardware runs it fast: a CPU
  with AMX or AVX512-BF16, a CUDA GPU with bf16), optional ``torch.compile``. Results record which ran.
* :func:`predict_strips` covers a scene of any size with ``tile`` x ``tile`` tiles whose outer ``overlap``
  pixels are discarded (so seams do not show), reading the scene one strip of rows at a time, in a thread
  that keeps :data:`READ_AHEAD` batches ahead of the model (:func:`read_ahead`): memory is bounded by a
  strip and a few batches of tiles, not the scene. A scene-level normalizer takes its statistics
  from a first streamed pass (:meth:`bench.data.normalizers.Normalizer.scene_function`). Tiles flow into
  batches across strips in row-major order, so a scene read whole or in strips gives the same batches.

With ``overlap = 0`` the tiles are :func:`bench.data.splits.tile_grid`'s, edge tiles mirrored to full size.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core.errors import ConfigError
from bench.core.labels import IGNORE, N_CLASSES
from bench.data.splits import WHOLE_BYTES, whole_pixels  # noqa: F401 - the memory budget, used here and re-exported
from bench.core.recipe import BLENDS, PRECISIONS
from bench.models.base import Contract, SceneModel, class_indices

WHOLE_PIXELS = whole_pixels(13)
_compiled: "weakref.WeakKeyDictionary[nn.Module, Callable]" = weakref.WeakKeyDictionary()
_choosers: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


#: set to ``fast`` or ``slow`` to override what :func:`bf16_is_fast` detects (``auto`` then picks bf16, or
#: fp32): the test suite runs both ways on any CPU, and a user can keep a machine's runs at one precision
BF16_ENV = "CLOUDBENCH_BF16"


def bf16_is_fast(device: str) -> bool:
    """True where bf16 autocast is faster than fp32: a CUDA GPU that supports bf16, or a CPU with AMX or
    AVX512-BF16 (elsewhere the CPU emulates bf16 and is several times slower); ``$CLOUDBENCH_BF16`` overrides."""
    forced = os.environ.get(BF16_ENV, "").strip().lower()
    if forced:
        if forced not in ("fast", "slow"):
            raise ConfigError(f"${BF16_ENV} must be 'fast' or 'slow' (or unset), got {forced!r}")
        return forced == "fast"
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return bool(cpu and (cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()))


def resolve_precision(precision: str, device: str, zero_shot: bool = False, upstream: str = "fp32") -> str:
    """``fp32`` or ``bf16`` (or ``int8``, only where asked for): ``auto`` picks bf16 where
    :func:`bf16_is_fast`, except for a pretrained model
    run as it comes (``zero_shot``), which runs in the precision its upstream runs in (``upstream``, its
    contract's inference policy; fp32 unless declared; ask for bf16 to change that)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if zero_shot:
            return "bf16" if upstream == "bf16" and bf16_is_fast(device) else "fp32"
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


@dataclass(frozen=True)
class FastPaths:
    """How a torch model runs: memory format, autocast precision, compilation, and the runtime (torch, or an
    export to ONNX Runtime / OpenVINO checked against torch: :mod:`bench.run.runtimes`)."""

    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = True
    compile: bool = False
    runtime: str = "torch"  # torch | onnxruntime | openvino | auto
    exports: str | None = None  # folder for a model's exports (None: the user cache)
    ran: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the runtime that ran
    #: int8: ``calibration()`` gives training-split model inputs (bench.run.runtimes.int8_model), ``tag`` names them
    calibration: Callable[[], list[np.ndarray]] | None = field(default=None, compare=False, repr=False)
    tag: str = field(default="", compare=False)

    def prepare(self, module: nn.Module, device: str, adapting: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model on ``device`` in this memory format, as a function of a batch (its train / eval mode
        is left as it is: an adapter may keep BatchNorm on batch statistics, and then, ``adapting``, an
        exported runtime cannot stand in for it)."""
        if self.precision == "int8" and self.runtime != "openvino":
            raise ConfigError(f"--precision int8 runs through OpenVINO (an NNCF int8 model), not {self.runtime}: "
                              "add --runtime openvino")
        module = module.to(device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        fn: Callable[[torch.Tensor], torch.Tensor] = module
        if self.compile:
            if module not in _compiled:  # compiled once per module, not once per scene
                _compiled[module] = torch.compile(module)
            fn = _compiled[module]
        if self.runtime == "torch":
            self.ran["runtime"] = "torch"
            return fn
        return self.exported(module, fn, device, adapting)

    def exported(self, module: nn.Module, fn: Callable, device: str, adapting: bool) -> Callable:
        """The runtime's function of a batch for ``module`` (one per module and request, kept across scenes)."""
        from bench.run import runtimes

        adapting = adapting or any(m.training for m in module.modules())
        asked = list(runtimes.EXPORTED) if self.runtime == "auto" else [self.runtime]
        reasons = {r: runtimes.refusal(r, device, adapting) for r in asked}
        if self.runtime != "auto" and reasons[self.runtime]:
            raise ConfigError(f"--runtime {self.runtime}: {reasons[self.runtime]}")
        names = [r for r in asked if not reasons[r]]
        if not names:
            self.ran["runtime"] = "torch"  # auto: torch where no exported runtime can stand in
            return fn
        key = (self.runtime, self.precision, torch.get_num_threads(), self.exports)
        chooser = _choosers.setdefault(module, {}).get(key)
        if chooser is None:
            torch_fn = lambda x: self.torch_logits(fn, x, device, self.precision)  # noqa: E731
            torch_fp32 = lambda x: self.torch_logits(fn, x, device, "fp32")  # noqa: E731
            chooser = runtimes.Chooser(module, torch_fn, torch_fp32, self.runtime, names, self.precision,
                                       Path(self.exports) if self.exports else None, self.calibration, self.tag)
            _choosers[module][key] = chooser
        self.ran["runtime"] = chooser.ran or self.runtime
        return chooser

    def torch_logits(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: str,
                     precision: str) -> torch.Tensor:
        """float32 logits of a batch through torch at ``precision``."""
        x = x.to(device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        kind = "cuda" if device.startswith("cuda") else "cpu"
        with torch.no_grad(), torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return fn(x).float()

    def logits(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: str) -> torch.Tensor:
        """float32 logits of a batch."""
        from bench.run.runtimes import Chooser

        if isinstance(fn, Chooser):  # an exported runtime (or what its check fell back to), on the CPU
            with torch.no_grad():
                out = fn(x.cpu())
            self.ran["runtime"] = fn.ran
            if fn.checks:
                self.ran["checks"] = {k: round(v, 6) for k, v in fn.checks.items()}
            return out
        return self.torch_logits(fn, x, device, self.precision)

    def adapted(self, adapting: bool) -> "FastPaths":
        """These paths for a network that an adapter changes while it predicts: there ``auto`` runs torch."""
        return replace(self, runtime="torch", ran={}) if adapting and self.runtime == "auto" else self

    def identity(self) -> dict[str, Any]:
        """What decides the predictions up to the runtime (a runtime that passed its check agrees with torch)."""
        return {"precision": self.precision, "channels_last": self.channels_last, "compile": self.compile}

    def describe(self) -> dict[str, Any]:
        """What results record (``runtime``: the one that ran, once a batch has run)."""
        return {**self.identity(), "runtime": self.ran.get("runtime", self.runtime),
                **({"agreement": self.ran["checks"]} if "checks" in self.ran else {})}


@dataclass(frozen=True)
class Tiling:
    """How a scene is cut into model inputs.

    With ``blend = "crop"`` (the default), tiles of ``tile`` px overlap by at least ``2 * overlap`` px.
    Along each axis they are spread evenly from one edge to the other, the first and the last flush with
    the scene's edges, and two neighbours split their overlap at its middle: each keeps the half nearer
    its own centre and nothing else is discarded. A side no longer than a tile is one tile, padded only to a
    multiple of 32, so a scene that fits in a tile is predicted as one tile, as a whole.

    With ``blend = "ramp"`` (omnicloudmask's ``make_patch_indexes`` and ``create_gradient_mask``), tiles
    start every ``tile - overlap`` px, the last moved back flush with the edge, and every pixel's logits are
    the mean of its tiles' weighted by linear ramps ``overlap`` px wide at each tile's sides.

    ``pad``, ``fit`` and ``shift_nodata`` are those of :class:`bench.models.base.InferencePolicy`;
    ``whole`` > 0: a scene of up to that many pixels is one tile.
    """

    tile: int
    overlap: int = 0
    blend: str = "crop"
    pad: str = "end"
    fit: str = "pad"
    shift_nodata: bool = False
    whole: int = 0

    def __post_init__(self) -> None:
        if self.tile < 32 or (self.tile % 32 and self.fit == "pad"):
            raise ConfigError(f"tile size must be a multiple of 32, got {self.tile}")
        if self.blend not in BLENDS:
            raise ConfigError(f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        if self.shift_nodata and self.blend != "ramp":
            raise ConfigError("shift_nodata moves tiles, which only ramp blending places freely")
        shared = self.overlap if self.blend == "ramp" else 2 * self.overlap
        if not 0 <= shared < self.tile:
            raise ConfigError(f"overlap must be at least 0 and under {'the' if self.blend == 'ramp' else 'half the'} "
                              f"tile ({self.tile} px), got {self.overlap}")

    @property
    def stride(self) -> int:
        """The largest step between two tiles' starts."""
        return self.tile - (self.overlap if self.blend == "ramp" else 2 * self.overlap)

    def fitted(self, height: int, width: int, nodata_share: float = 0.0) -> "Tiling":
        """The tiling of a ``height`` x ``width`` scene: one tile where it is ``whole``-sized; with ``fit =
        "square"`` a square tile no larger than the shorter side, or half of it where more than 30 % of the
        values are nodata (omnicloudmask's ``check_patch_size``), the overlap at most half the tile."""
        if self.whole and height * width <= self.whole:
            side = -(-max(height, width) // 32) * 32
            return replace(self, tile=side, overlap=0, whole=0, fit="pad")
        if self.fit == "square" and nodata_share > 0.3 and self.tile > min(height, width) / 2:
            side = max(min(height, width) // 2, 32)
            return replace(self, tile=side, overlap=min(self.overlap, side // 2))
        if self.fit == "square" and min(height, width) < self.tile:
            side = max(min(height, width), 32)
            return replace(self, tile=side, overlap=min(self.overlap, side // 2))
        return self

    def size(self, length: int) -> int:
        """The model input's side for a scene side of ``length`` px: the tile, or less for a short side."""
        return self.tile if self.fit == "square" else min(self.tile, -(-length // 32) * 32)

    def shape(self, height: int, width: int) -> tuple[int, int]:
        """The model input's (rows, columns) for a scene of ``height`` x ``width`` px."""
        t = self.fitted(height, width)
        return t.size(height), t.size(width)

    def spans(self, length: int) -> list[tuple[int, int, int, int]]:
        """``(start, end, core start, core end)`` of the tiles along a side of ``length`` px; with ramp
        blending a core holds the pixels that no later tile reaches."""
        if length <= self.tile:
            return [(0, length, 0, length)]
        if self.blend == "ramp":
            starts = sorted({min(s, length - self.tile) for s in range(0, length, self.stride)})
            cuts = [0, *starts[1:], length]
        else:
            n = -(-(length - self.tile) // self.stride) + 1
            starts = [round(i * (length - self.tile) / (n - 1)) for i in range(n)]
            cuts = [0, *((b + a + self.tile) // 2 for a, b in zip(starts, starts[1:])), length]
        return [(s, s + self.tile, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]

    def strips(self, height: int, width: int, whole_pixels: int = WHOLE_PIXELS) -> list[tuple[int, int]]:
        """Core row ranges of the strips: the whole scene if it is small, else one row of tiles each."""
        if height * width <= whole_pixels:
            return [(0, height)]
        return [(c0, c1) for _, _, c0, c1 in self.fitted(height, width).spans(height)]

    def tiles(self, r0: int, r1: int, height: int, width: int) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
        """``(read window, core)`` of the tiles whose cores cover rows ``r0:r1``: the window is ``(row0, col0,
        row1, col1)`` in the scene, the core ``(drow, dcol, rows, cols)`` inside it."""
        t = self.fitted(height, width)
        for rs, re_, c0, c1 in t.spans(height):
            if r0 <= c0 < r1:
                for cs, ce, k0, k1 in t.spans(width):
                    yield (rs, cs, re_, ce), (c0 - rs, k0 - cs, c1 - c0, k1 - k0)

    def padding(self, rows: int, cols: int, size: tuple[int, int]) -> tuple[int, int]:
        """Where a ``rows`` x ``cols`` input sits in the padded ``size`` model input: its (top, left)."""
        return pad_offsets(rows, cols, size, self.pad)

    def weights(self) -> np.ndarray:
        """(tile, tile) float32 blending weights of ramp blending (omnicloudmask's ``create_gradient_mask``)."""
        ov = min(self.overlap, self.tile // 2)
        ramp = np.ones(self.tile, dtype=np.float64)
        if ov:
            ramp[:ov], ramp[-ov:] = np.arange(1, ov + 1) / ov, np.arange(ov, 0, -1) / ov
        return np.outer(ramp, ramp).astype(np.float32)


def model_tiling(contract: Contract | None, tile: int, overlap: int = 0, blend: str = "crop") -> Tiling:
    """The tiling a model runs with: its contract's inference policy, else ``tile`` / ``overlap`` / ``blend``
    (the run's). A policy of whole scenes (``tile = "scene"``) tiles a scene above :func:`whole_pixels` (of
    the model's band count) the run's way."""
    policy = contract.inference if contract else None
    if policy is None:
        return Tiling(tile, overlap, blend)
    if policy.tile == "scene":
        channels = len(contract.bands) if contract.bands else 13
        return Tiling(tile, overlap, blend, pad=policy.pad, whole=whole_pixels(channels))
    return Tiling(int(policy.tile), policy.overlap, policy.blend, policy.pad, policy.fit, policy.shift_nodata)


def pad_input(x: np.ndarray, size: tuple[int, int], pad: str = "end") -> np.ndarray:
    """The last two axes padded to ``size``: mirrored at the bottom / right (``end``), or reflected on both
    sides around the centre (``centre``: CloudSEN12's ``padded_predict``); no copy when they fit."""
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    top, left = pad_offsets(h, w, size, pad)
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(top, size[0] - h - top), (left, size[1] - w - left)],
                  mode="reflect" if pad == "centre" else "symmetric")


def pad_offsets(rows: int, cols: int, size: tuple[int, int], pad: str = "end") -> tuple[int, int]:
    """(top, left) of a ``rows`` x ``cols`` input padded to ``size``: centred, or at the top left (``end``)."""
    return ((size[0] - rows) // 2, (size[1] - cols) // 2) if pad == "centre" else (0, 0)


def shifted_from_nodata(nodata: np.ndarray, window: tuple[int, int, int, int], top: int) -> tuple[int, int, int, int] | None:
    """omnicloudmask's ``get_patch``: ``window`` (scene rows and columns) moved inward while an edge row or
    column of it is all nodata in every band, within ``nodata`` ((C, rows, W), the rows read from ``top``
    on: NaN or 0, as upstream's ``is_nodata``); None where the window holds no valid pixel."""
    r0, c0, r1, c1 = window
    rows, cols = nodata.shape[1], nodata.shape[2]
    patch = nodata[:, r0 - top:r1 - top, c0:c1]
    if patch.all():
        return None
    if not patch.any():
        return window
    a, b = r0 - top, r1 - top
    if b < rows and nodata[:, a, c0:c1].all():
        while b < rows and nodata[:, a, c0:c1].all():
            a, b = a + 1, b + 1
    elif a > 0 and nodata[:, b - 1, c0:c1].all():
        while a > 0 and nodata[:, b - 1, c0:c1].all():
            a, b = a - 1, b - 1
    if c1 < cols and nodata[:, a:b, c0].all():
        while c1 < cols and nodata[:, a:b, c0].all():
            c0, c1 = c0 + 1, c1 + 1
    elif c0 > 0 and nodata[:, a:b, c1 - 1].all():
        while c0 > 0 and nodata[:, a:b, c1 - 1].all():
            c0, c1 = c0 - 1, c1 - 1
    return a + top, c0, b + top, c1


class HeldRows:
    """Arrays read with a strip (its labels, its nodata mask), kept by the strip's first row until the rows
    of its core are taken; the engine may read the next strip (in its reading thread) before it hands out
    the last one's cores."""

    def __init__(self) -> None:
        self.held: dict[int, tuple[np.ndarray, ...]] = {}
        self.lock = threading.Lock()

    def keep(self, top: int, *arrays: np.ndarray) -> None:
        """Hold ``arrays`` of the rows read from ``top`` on."""
        with self.lock:
            self.held[top] = arrays

    def take(self, r0: int, r1: int) -> tuple[np.ndarray, ...]:
        """Rows ``r0:r1`` of the held arrays that cover them; what was read before them is let go."""
        with self.lock:
            top = max(k for k in self.held if k <= r0)
            for k in [k for k in self.held if k < top]:
                self.held.pop(k)
            return tuple(a[r0 - top:r1 - top] for a in self.held[top])


Reader = Callable[[int, int], np.ndarray]  # rows r0:r1 -> (C, r1 - r0, W): input, NaN = nodata, or values a tile_fn converts
Batch = Callable[[torch.Tensor], np.ndarray]  # (N, C, T, T) -> (N, K, T, T) per-pixel outputs


Tile = tuple[int, tuple[int, int, int, int], tuple[int, int, int, int], np.ndarray]  # strip, window, core, input
#: batches read ahead of the model by the reading thread of :func:`predict_strips`
READ_AHEAD = 2
#: the reading thread's niceness: it runs where the model's threads leave a core, rather than pre-empting
#: one of them and holding up the rest at their next barrier (a 2-core full tile: ONNX Runtime 10 % faster,
#: OpenVINO 3.5 %, torch 2.5 %; benchmarks/predict_tile.py)
READ_AHEAD_NICE = 19


def tile_stream(read: Reader, height: int, width: int, tiling: Tiling, strips: list[tuple[int, int]],
                on_strip: Callable[[int, int], None] | None = None) -> Iterator[Tile]:
    """Every tile of the scene, strip after strip, in row-major order: its strip index, read window, core
    and input (a view of the strip; :func:`input_batches` normalizes it, pads it to the tiling's size and
    replaces NaN). ``on_strip(k, n)`` is called with each strip's tile count before its tiles. With
    ``shift_nodata``, windows move away from nodata inside the strip read, and one without a valid pixel,
    or the same as one before it, is left out (omnicloudmask's ``compile_batches``)."""
    seen: set[tuple[int, int, int, int]] = set()
    for k, (r0, r1) in enumerate(strips):
        windows = list(tiling.tiles(r0, r1, height, width))
        top, bottom = min(w[0][0] for w in windows), max(w[0][2] for w in windows)
        image = read(top, bottom)
        if tiling.shift_nodata:
            windows = shifted_windows(image, windows, top, seen)
        if on_strip:
            on_strip(k, len(windows))
        for (wr, wc, wr1, wc1), core in windows:  # no name keeps a view of the strip past its last tile
            yield k, (wr, wc, wr1, wc1), core, image[:, wr - top:wr1 - top, wc:wc1]
        del image


def nodata_of(image: np.ndarray) -> np.ndarray:
    """Where values are nodata to omnicloudmask's ``is_nodata``: NaN, or 0 (of the model's input)."""
    return np.isnan(image) | (image == 0)


def shifted_windows(image: np.ndarray, windows: list, top: int, seen: set) -> list:
    """``windows`` of a strip read from ``top`` moved away from nodata (:func:`shifted_from_nodata`), those
    without a valid pixel and those already in ``seen`` left out."""
    nodata, out = nodata_of(image), []
    for window, core in windows:
        moved = shifted_from_nodata(nodata, window, top)
        if moved is not None and moved not in seen:
            seen.add(moved)
            out.append((moved, core))
    return out


def _same(x: np.ndarray) -> np.ndarray:
    return x


def input_batches(tiles: Iterator[Tile], batch_size: int, size: tuple[int, int], pad: str = "end",
                  tile_fn: Callable[[np.ndarray], np.ndarray] | None = None
                  ) -> Iterator[tuple[list[Tile], torch.Tensor]]:
    """Tiles grouped into batches: ``(tiles without their inputs, (N, C, *size) float32 tensor)``. Each tile
    is normalized by ``tile_fn`` and written into its batch as it arrives (converted to float32 as it is
    copied, padded up to ``size`` by :func:`pad_input`), so no view of a strip outlives its copy and the
    reader never holds two strips; NaN / inf become 0 over the whole batch in place. A ``tile_fn`` with an
    ``into(tile, out)`` (:func:`bench.run.predict.looked_up`) writes a full-size tile's finite values
    straight into its place in the batch: one pass instead of three."""
    fn = tile_fn or _same
    into = getattr(fn, "into", None)
    out: np.ndarray | None = None
    chunk: list[Tile] = []
    unchecked = False  # a tile in this batch may hold NaN or inf
    for k, window, core, t in tiles:
        if out is None:
            out = np.empty((batch_size, t.shape[0], *size), dtype=np.float32)
        if into is not None and t.shape[1:] == size:
            into(t, out[len(chunk)])
        else:
            t, unchecked = fn(t), True
            if t.shape[1:] == size:
                np.copyto(out[len(chunk)], t, casting="unsafe")
            else:
                out[len(chunk)] = pad_input(t, size, pad)
        chunk.append((k, window, core, None))
        del t
        if len(chunk) == batch_size:
            yield chunk, torch.from_numpy(finite(out) if unchecked else out)
            out, chunk, unchecked = None, [], False
    if chunk:
        yield chunk, torch.from_numpy(finite(out[:len(chunk)]) if unchecked else out[:len(chunk)])


def finite(x: np.ndarray) -> np.ndarray:
    """``x`` with NaN and inf set to 0, in place (``np.nan_to_num`` takes six times as long)."""
    np.copyto(x, 0, where=~np.isfinite(x))
    return x


def lower_priority(nice: int = READ_AHEAD_NICE) -> None:
    """This thread's scheduling priority lowered (Linux, where a thread has its own; elsewhere left as it is)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass


def read_ahead(items: Iterator[Any], depth: int = READ_AHEAD) -> Iterator[Any]:
    """``items``, produced by a thread of their own up to ``depth`` ahead of the consumer: reading,
    normalizing and batching the next tiles go on while the model runs (numpy, GDAL and torch release the
    GIL). An error in the thread is raised here; closing the iterator (or an error here) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        lower_priority()
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, end))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            q.put((False, err))

    thread = threading.Thread(target=produce, name="cloudbench-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a producer blocked on a full queue see the stop
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


def predict_strips(read: Reader, height: int, width: int, tiling: Tiling, run_batch: "ClassBatches",
                   batch_size: int, tile_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                   strips: list[tuple[int, int]] | None = None,
                   on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(row0, row1, outputs)`` for each strip of core rows, in order: ``outputs`` (K, row1 - row0, W)
    from ``run_batch`` over the tiles (``tile_fn`` normalizes each tile first): each tile's core, or with
    ramp blending the outputs of the blended logits. Tiles are read and batched :data:`READ_AHEAD` batches
    ahead, in a thread, while the model runs."""
    strips = strips or tiling.strips(height, width)
    if tiling.shift_nodata and strips == [(0, height)]:  # read whole: upstream's patch size for its nodata
        image = read(0, height)
        tiling = tiling.fitted(height, width, float(nodata_of(image).mean()))
        read = lambda r0, r1: image[:, r0:r1]  # noqa: E731 - the scene already read
    fitted = tiling.fitted(height, width)
    size = fitted.shape(height, width)
    open_: dict[int, list[Any]] = {}  # strip index -> [outputs, tiles left]
    blend = Blend(run_batch.channels, width, fitted.weights()) if fitted.blend == "ramp" else None

    def opened(k: int, n: int) -> None:
        open_[k] = [None, n]

    done = 0
    tiles = tile_stream(read, height, width, tiling, strips, opened)
    for chunk, x in read_ahead(input_batches(tiles, batch_size, size, fitted.pad, tile_fn)):
        out = run_batch.logits(x).cpu().numpy() if blend else run_batch(x)
        for (k, (wr, wc, wr1, wc1), (dr, dc, h, w), _), o in zip(chunk, out):
            pr, pc = fitted.padding(wr1 - wr, wc1 - wc, size)
            if blend:
                blend.add((wr, wc, wr1, wc1), o[:, pr:pr + wr1 - wr, pc:pc + wc1 - wc])
            else:
                r0, r1 = strips[k]
                if open_[k][0] is None:
                    open_[k][0] = np.zeros((o.shape[0], r1 - r0, width), dtype=o.dtype)
                open_[k][0][:, wr + dr - r0:wr + dr - r0 + h, wc + dc:wc + dc + w] = o[:, pr + dr:pr + dr + h, pc + dc:pc + dc + w]
            open_[k][1] -= 1
        if on_batch:
            on_batch(len(chunk))
        while done in open_ and open_[done][1] == 0:
            r0, r1 = strips[done]
            outputs = open_.pop(done)[0]
            yield r0, r1, blended(run_batch, blend, r0, r1) if blend else outputs
            done += 1
    for r0, r1 in strips[done:]:  # strips left without a tile (no valid pixel to shift one to)
        yield r0, r1, blended(run_batch, blend, r0, r1)


def blended(run_batch: "ClassBatches", blend: "Blend", r0: int, r1: int) -> np.ndarray:
    """The outputs of rows ``r0:r1`` from their blended logits; a pixel no tile reached (every tile over it
    left out, without a valid pixel) has no class (IGNORE)."""
    mean, reached = blend.take(r0, r1)
    out = run_batch.outputs(torch.from_numpy(mean[None]))[0]
    out[0][~reached] = IGNORE
    return out


class Blend:
    """Ramp blending: the weighted sums of tiles' logits over the rows that later tiles may still reach;
    :meth:`take` hands out the weighted mean of final rows (0 where no tile reached)."""

    def __init__(self, channels: int, width: int, weights: np.ndarray) -> None:
        self.width, self.weights, self.top = width, weights, 0
        self.sum = np.zeros((channels, 0, width), dtype=np.float32)  # from row self.top on
        self.count = np.zeros((0, width), dtype=np.float32)

    def reach(self, bottom: int) -> None:
        """Hold rows up to ``bottom``."""
        grow = bottom - self.top - self.count.shape[0]
        if grow > 0:
            self.sum = np.concatenate([self.sum, np.zeros((len(self.sum), grow, self.width), np.float32)], 1)
            self.count = np.concatenate([self.count, np.zeros((grow, self.width), np.float32)])

    def add(self, window: tuple[int, int, int, int], logits: np.ndarray) -> None:
        """Add a tile's (K, rows, cols) logits at ``window`` (scene rows and columns)."""
        r0, c0, r1, c1 = window
        self.reach(r1)
        w = self.weights[:r1 - r0, :c1 - c0]
        self.sum[:, r0 - self.top:r1 - self.top, c0:c1] += logits * w
        self.count[r0 - self.top:r1 - self.top, c0:c1] += w

    def take(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, r1 - r0, W) mean logits of rows ``r0:r1`` (the first not taken), and where a tile reached
        them; the rows are then let go."""
        self.reach(r1)
        n, count = r1 - r0, self.count[:r1 - r0]
        mean = np.divide(self.sum[:, :n], count, out=np.zeros_like(self.sum[:, :n]), where=count > 0)
        reached = count > 0
        self.sum, self.count, self.top = self.sum[:, n:].copy(), self.count[n:].copy(), r1
        return mean, reached


def scene_model_strips(read: Reader, height: int, width: int, tiling: Tiling, model: SceneModel,
                       contract: Contract, strips: list[tuple[int, int]] | None = None,
                       on_strip: Callable[[int], None] | None = None, probabilities: bool = False,
                       scene: tuple[str, dict] | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """The same for a model that is not torch (it predicts whole arrays): ``overlap`` rows of context above
    and below each strip; outputs are project class indices, (1, rows, W), then with ``probabilities`` (for a
    model that has ``predict_with_probabilities``) the probability of each project class, (5, rows, W).

    A model that knows scenes rather than pixels (precomputed masks) has ``bind(scene id, meta, (H, W))``,
    given ``scene`` = (id, meta), returning an object whose ``predict_rows(r0, r1)`` gives the output codes
    of those rows; the image is not read for it."""
    classes = contract.class_of_code()
    if hasattr(model, "bind"):
        bound = model.bind(*(scene or ("scene", {})), (height, width))
        for r0, r1 in strips or tiling.strips(height, width):
            if on_strip:
                on_strip(r1 - r0)
            yield r0, r1, classes[bound.predict_rows(r0, r1)][None]
        return
    with_probs = probabilities and hasattr(model, "predict_with_probabilities")
    for r0, r1 in strips or tiling.strips(height, width):
        top, bottom = max(r0 - tiling.overlap, 0), min(r1 + tiling.overlap, height)
        if with_probs:
            codes, code_probs = model.predict_with_probabilities(read(top, bottom))
            out = np.concatenate([classes[codes][None].astype(np.float32), class_probabilities(code_probs, classes)])
        else:
            out = classes[model.predict(read(top, bottom))][None]
        if on_strip:
            on_strip(r1 - r0)
        yield r0, r1, out[:, r0 - top:r1 - top]


def class_probabilities(code_probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(4, H, W) project-class probabilities of (codes, H, W) probabilities of a model's own output codes
    (each code's probability goes to the project class it predicts; nodata codes to none)."""
    out = np.zeros((N_CLASSES, *code_probs.shape[1:]), dtype=np.float32)
    for code, p in enumerate(code_probs):
        if classes[code] < N_CLASSES:
            out[classes[code]] += p
    return out


@dataclass
class ClassBatches:
    """A ``run_batch`` of :func:`predict_strips`: the class index of each pixel, then with ``probabilities``
    the softmax of each class, then with ``flip`` 1 where the prediction of the input flipped left to right,
    flipped back, agrees (the consistency signal of :mod:`bench.run.label_free`). Ramp blending averages
    :meth:`logits` first and takes :meth:`outputs` of the mean."""

    fast: FastPaths
    fn: Callable[[torch.Tensor], torch.Tensor]
    device: str
    probabilities: bool = False
    flip: bool = False

    @property
    def channels(self) -> int:
        """How many logit channels :meth:`logits` gives."""
        return N_CLASSES * (2 if self.flip else 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) float32 logits, then with ``flip`` those of the flipped input, flipped back."""
        out = self.fast.logits(self.fn, x, self.device)
        if self.flip:
            out = torch.cat([out, self.fast.logits(self.fn, x.flip(-1), self.device).flip(-1)], 1)
        return out

    def outputs(self, t: torch.Tensor) -> np.ndarray:
        """(N, outputs, H, W) of (N, K, H, W) logits: uint8 classes alone, else float32."""
        cls = class_indices(t[:, :N_CLASSES], keepdim=True)
        if not (self.probabilities or self.flip):
            return cls.to(torch.uint8).cpu().numpy()
        parts = [cls.float(), t[:, :N_CLASSES].softmax(1)] if self.probabilities else [cls.float()]
        if self.flip:
            parts.append((class_indices(t[:, N_CLASSES:], keepdim=True) == cls).float())
        return torch.cat(parts, 1).cpu().numpy()

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.outputs(self.logits(x))


def class_batches(fast: FastPaths, fn: Callable[[torch.Tensor], torch.Tensor], device: str,
                  probabilities: bool = False, flip: bool = False) -> ClassBatches:
    """The :class:`ClassBatches` of a prepared model."""
    return ClassBatches(fast, fn, device, probabilities, flip)
