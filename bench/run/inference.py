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
from bench.core.labels import N_CLASSES
from bench.core.recipe import PRECISIONS
from bench.models.base import Contract, SceneModel

#: what a scene read whole may take as float32 values, a share of the 1.5 GB that a prediction of a 13-band
#: scene is held to (peak RSS, with torch and the model): a scene up to that size is read whole (its
#: scene-level statistics are exact), a larger one in strips (statistics streamed, error below 4 x range /
#: 65,536 per band), so that memory is bounded at every scene size
WHOLE_BYTES = 128 << 20


def whole_pixels(channels: int) -> int:
    """The most pixels of a ``channels``-band scene that is read whole (2.58 Mpx, 1606 px square, at 13 bands)."""
    return WHOLE_BYTES // (4 * max(channels, 1))


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


def resolve_precision(precision: str, device: str, zero_shot: bool = False) -> str:
    """``fp32`` or ``bf16``: ``auto`` picks bf16 where :func:`bf16_is_fast`, except for a pretrained model
    run as it comes (``zero_shot``), which runs in fp32 as its upstream does (ask for bf16 to change that)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) and not zero_shot else "fp32"
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
    ran: dict[str, str] = field(default_factory=dict, compare=False, repr=False)  # the runtime that ran

    def prepare(self, module: nn.Module, device: str, adapting: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model on ``device`` in this memory format, as a function of a batch (its train / eval mode
        is left as it is: an adapter may keep BatchNorm on batch statistics, and then, ``adapting``, an
        exported runtime cannot stand in for it)."""
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
                                       Path(self.exports) if self.exports else None)
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
        return {**self.identity(), "runtime": self.ran.get("runtime", self.runtime)}


@dataclass(frozen=True)
class Tiling:
    """Tiles of ``tile`` px that overlap by at least ``2 * overlap`` px. Along each axis they are spread
    evenly from one edge to the other, the first and the last flush with the scene's edges, and two
    neighbours split their overlap at its middle: each keeps the half nearer its own centre and nothing
    else is discarded. A side no longer than a tile is one tile, padded (mirrored) only to a multiple of
    32, so a scene that fits in a tile is predicted as one tile, as a whole."""

    tile: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.tile < 32 or self.tile % 32:
            raise ConfigError(f"tile size must be a multiple of 32, got {self.tile}")
        if not 0 <= 2 * self.overlap < self.tile:
            raise ConfigError(f"overlap must be at least 0 and under half the tile ({self.tile} px), got {self.overlap}")

    @property
    def stride(self) -> int:
        """The largest step between two tiles' starts (their overlap is then ``2 * overlap``)."""
        return self.tile - 2 * self.overlap

    def size(self, length: int) -> int:
        """The model input's side for a scene side of ``length`` px: the tile, or less for a short side."""
        return min(self.tile, -(-length // 32) * 32)

    def shape(self, height: int, width: int) -> tuple[int, int]:
        """The model input's (rows, columns) for a scene of ``height`` x ``width`` px."""
        return self.size(height), self.size(width)

    def spans(self, length: int) -> list[tuple[int, int, int, int]]:
        """``(start, end, core start, core end)`` of the tiles along a side of ``length`` px."""
        if length <= self.tile:
            return [(0, length, 0, length)]
        n = -(-(length - self.tile) // self.stride) + 1
        starts = [round(i * (length - self.tile) / (n - 1)) for i in range(n)]
        cuts = [0, *((b + a + self.tile) // 2 for a, b in zip(starts, starts[1:])), length]
        return [(s, s + self.tile, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]

    def strips(self, height: int, width: int, whole_pixels: int = WHOLE_PIXELS) -> list[tuple[int, int]]:
        """Core row ranges of the strips: the whole scene if it is small, else one row of tiles each."""
        if height * width <= whole_pixels:
            return [(0, height)]
        return [(c0, c1) for _, _, c0, c1 in self.spans(height)]

    def tiles(self, r0: int, r1: int, height: int, width: int) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
        """``(read window, core)`` of the tiles whose cores cover rows ``r0:r1``: the window is ``(row0, col0,
        row1, col1)`` in the scene, the core ``(drow, dcol, rows, cols)`` inside it."""
        for rs, re_, c0, c1 in self.spans(height):
            if r0 <= c0 < r1:
                for cs, ce, k0, k1 in self.spans(width):
                    yield (rs, cs, re_, ce), (c0 - rs, k0 - cs, c1 - c0, k1 - k0)


def pad_mirrored(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mirror the last two axes at the bottom / right to ``height`` x ``width`` (no copy when they fit)."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, height - h), (0, width - w)], mode="symmetric")


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


Reader = Callable[[int, int], np.ndarray]  # rows r0:r1 -> (C, r1 - r0, W) model-ready input, NaN = nodata
Batch = Callable[[torch.Tensor], np.ndarray]  # (N, C, T, T) -> (N, K, T, T) per-pixel outputs


Tile = tuple[int, tuple[int, int, int, int], tuple[int, int, int, int], np.ndarray]  # strip, window, core, input
#: batches read ahead of the model by the reading thread of :func:`predict_strips`
READ_AHEAD = 2


def tile_stream(read: Reader, height: int, width: int, tiling: Tiling, strips: list[tuple[int, int]],
                tile_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                on_strip: Callable[[int, int], None] | None = None) -> Iterator[Tile]:
    """Every tile of the scene, strip after strip, in row-major order: its strip index, read window, core
    and input (a view of the strip, ``tile_fn`` applied; :func:`input_batches` pads it to the tiling's size
    and replaces NaN). ``on_strip(k, n)`` is called with each strip's tile count before its tiles."""
    for k, (r0, r1) in enumerate(strips):
        windows = list(tiling.tiles(r0, r1, height, width))
        top, bottom = min(w[0][0] for w in windows), max(w[0][2] for w in windows)
        image = read(top, bottom)
        if on_strip:
            on_strip(k, len(windows))
        for (wr, wc, wr1, wc1), core in windows:  # no name keeps a view of the strip past its last tile
            yield k, (wr, wc, wr1, wc1), core, (tile_fn or _same)(image[:, wr - top:wr1 - top, wc:wc1])
        del image


def _same(x: np.ndarray) -> np.ndarray:
    return x


def input_batches(tiles: Iterator[Tile], batch_size: int, size: tuple[int, int]
                  ) -> Iterator[tuple[list[Tile], torch.Tensor]]:
    """Tiles grouped into batches: ``(tiles without their inputs, (N, C, *size) float32 tensor)``. Each tile
    is written into its batch as it arrives (converted to float32 as it is copied, mirrored at the bottom /
    right up to ``size``), so no view of a strip outlives its copy and the reader never holds two strips;
    NaN / inf become 0 over the whole batch in place."""
    out: np.ndarray | None = None
    chunk: list[Tile] = []
    for k, window, core, t in tiles:
        if out is None:
            out = np.empty((batch_size, t.shape[0], *size), dtype=np.float32)
        if t.shape[1:] == size:
            np.copyto(out[len(chunk)], t, casting="unsafe")
        else:
            out[len(chunk)] = pad_mirrored(t, *size)
        chunk.append((k, window, core, None))
        del t
        if len(chunk) == batch_size:
            yield chunk, torch.from_numpy(np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0))
            out, chunk = None, []
    if chunk:
        batch = np.nan_to_num(out[:len(chunk)], copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        yield chunk, torch.from_numpy(batch)


def read_ahead(items: Iterator[Any], depth: int = READ_AHEAD) -> Iterator[Any]:
    """``items``, produced by a thread of their own up to ``depth`` ahead of the consumer: reading,
    normalizing and batching the next tiles go on while the model runs (numpy, GDAL and torch release the
    GIL). An error in the thread is raised here; closing the iterator (or an error here) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
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


def predict_strips(read: Reader, height: int, width: int, tiling: Tiling, run_batch: Batch, batch_size: int,
                   tile_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                   strips: list[tuple[int, int]] | None = None,
                   on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(row0, row1, outputs)`` for each strip of core rows, in order: ``outputs`` (K, row1 - row0, W)
    from ``run_batch`` over the tiles (``tile_fn`` normalizes each tile first). Tiles are read and batched
    :data:`READ_AHEAD` batches ahead, in a thread, while the model runs."""
    strips = strips or tiling.strips(height, width)
    open_: dict[int, list[Any]] = {}  # strip index -> [outputs, tiles left]

    def opened(k: int, n: int) -> None:
        open_[k] = [None, n]

    done = 0
    tiles = tile_stream(read, height, width, tiling, strips, tile_fn, opened)
    for chunk, x in read_ahead(input_batches(tiles, batch_size, tiling.shape(height, width))):
        for (k, (wr, wc, _, _), (dr, dc, h, w), _), o in zip(chunk, run_batch(x)):
            r0, r1 = strips[k]
            if open_[k][0] is None:
                open_[k][0] = np.zeros((o.shape[0], r1 - r0, width), dtype=o.dtype)
            open_[k][0][:, wr + dr - r0:wr + dr - r0 + h, wc + dc:wc + dc + w] = o[:, dr:dr + h, dc:dc + w]
            open_[k][1] -= 1
        if on_batch:
            on_batch(len(chunk))
        while done in open_ and open_[done][1] == 0:
            yield *strips[done], open_.pop(done)[0]
            done += 1


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


def class_batches(fast: FastPaths, fn: Callable[[torch.Tensor], torch.Tensor], device: str,
                  probabilities: bool = False, flip: bool = False) -> Batch:
    """A ``run_batch`` giving the class index (and, with ``probabilities``, the softmax of each class after it;
    with ``flip``, last, 1 where the prediction of the input flipped left to right, flipped back, agrees)."""
    def run(x: torch.Tensor) -> np.ndarray:
        logits = fast.logits(fn, x, device)
        cls = logits.argmax(1, keepdim=True).float()
        parts = [cls, logits.softmax(1)] if probabilities else [cls]
        if flip:  # one more pass: the consistency signal of bench.run.label_free
            parts.append((fast.logits(fn, x.flip(-1), device).flip(-1).argmax(1, keepdim=True) == cls).float())
        out = torch.cat(parts, 1) if len(parts) > 1 else cls.to(torch.uint8)
        return out.cpu().numpy()

    return run
