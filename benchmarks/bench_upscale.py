"""Speed and output change of bf16 / torch.compile in tiled upscaling: benchmarks/bench_upscale.py

    python benchmarks/bench_upscale.py [--size 64] [--tile 32] [--overlap 16] [--no-compile]
    python benchmarks/bench_upscale.py --memory      # only the peak-memory rows (see below)

Runs ``esrgan.upscale.upscale`` with the paper-shape generator (``build_generator()``
defaults: RRDB, nf 64, nb 23, gc 32, x4) on a ``size`` x ``size`` LR crop of Set5 baby, in
tiles, and prints for each of fp32 eager (the baseline), bf16 eager, fp32 compiled and bf16
compiled (``compile_generator(model, 'default')``):

- the steady-state seconds per image (best of a few runs) and the speed ratio to fp32 eager;
- for the compiled ones, the first call's seconds (compile included) separately;
- the difference of the 8-bit output (clamped to [0, 1], rounded to 8 bit) from fp32 eager:
  the maximum and mean in grey levels and the share of pixels (channel values) that differ,
  plus the maximum of the raw (unclamped) difference in levels.

Steady state is the best of ``--repeats`` calls after the first: the machine may be shared,
and a compiled model's first few calls after the compile can still be slow. The compile
times are cold ones: the run uses a fresh, temporary inductor cache (removed at the end),
since a warm on-disk cache from an earlier run would shorten them to seconds. On a 2-core
machine another busy process slows the 2-thread runs far more than by half (every parallel
region waits for the thread that lost its core): compare lines of one quiet run only.

The weights are random (no paper-shape trained generator is bundled). A random generator's
output lies within about +-0.1 of 0, so clamping would hide most differences; the benchmark
therefore folds an affine map into conv_last (per channel: mean 0.45, std 0.22 on this crop),
which scales the output and its rounding error alike. A trained net's numbers may differ.

Reads the shared data from $ESRGAN_SHARED or ../shared next to the repository and exits with
a message when it is absent. With the defaults every tile is 48x48 (one graph per precision).
Takes about 4 minutes on 2 CPU cores, nearly all of it the two compiles (about 2 minutes
each for the paper net); ``--no-compile`` skips the compiled runs (about 20 seconds).

Memory rows (``--memory``, also run at the end of a default run): the peak resident memory of
upscaling one LR image of 1024x1024 and of 2048x2048 with ``--tile 128`` (overlap 16) and
writing the PNG, each in a fresh subprocess (``resource.getrusage(RUSAGE_CHILDREN)
.ru_maxrss`` of a launcher process that runs only it), for

- old: the previous CLI path, kept below as the baseline (``upscale`` returns the float
  output; ``to_numpy(sr.clamp_(0, 1))`` and ``write_image``'s float-to-uint8 and Pillow
  copies), and
- new: ``python -m esrgan.upscale`` (tiles pasted into one uint8 buffer, streaming PNG).

It prints each peak, the growth per output pixel between the two sizes (bytes per pixel: the
fixed cost of Python, torch and the model cancels out) and the ratio old/new. The generator
is small (RRDB, nf 16, nb 1, random weights with the output scaled to image range) so that
the four runs take a few minutes on 2 cores: the memory per output pixel does not depend on
the network, only a tile's activations do.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Before torch is imported: inductor reads its cache location once.
_CACHE = tempfile.mkdtemp(prefix="bench_upscale_inductor_")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _CACHE

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]  # esrgan is installed (pip install -e .)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from esrgan.archs.rrdbnet import build_generator  # noqa: E402
from esrgan.data.io import read_image, to_numpy, to_tensor, write_image  # noqa: E402
from esrgan.upscale import compile_generator, upscale  # noqa: E402
from esrgan.weights import load_generator, save_generator  # noqa: E402


def _image_like(model: nn.Module, lr: Tensor) -> nn.Module:
    """Scale conv_last so that ``model(lr)`` has mean 0.45 and std 0.22 per channel."""
    with torch.no_grad():
        y = model(lr)
        mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3))
        k = 0.22 / std
        model.conv_last.weight.mul_(k.view(-1, 1, 1, 1))
        model.conv_last.bias.sub_(mean).mul_(k).add_(0.45)
    return model


def _levels(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255).round()


def _timed(fn: Callable[[], Tensor], repeats: int) -> tuple[float, float, Tensor]:
    """(first call's seconds, best of ``repeats`` later calls, last output)."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return first, best, out


# --- peak memory: the previous CLI path (baseline) and the current one --------------------

MEMORY_SIZES = (1024, 2048)
MEMORY_TILE, MEMORY_OVERLAP = 128, 16


def _old_upscale(model: nn.Module, lr: Tensor, tile: int, overlap: int) -> Tensor:
    """The tiled ``upscale`` before the uint8 buffer: the whole float output in memory."""
    scale = model.scale
    _, _, h, w = lr.shape
    with torch.no_grad():
        out: Tensor | None = None
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
                py1, px1 = min(y1 + overlap, h), min(x1 + overlap, w)
                result = model(lr[:, :, py0:py1, px0:px1])
                if out is None:
                    out = result.new_empty((1, result.shape[1], h * scale, w * scale))
                oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
                out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                    result[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
        assert out is not None
        return out


def _old_write_image(path: Path, img: np.ndarray) -> None:
    """``write_image`` before the streaming encoder: float -> uint8 copies, then Pillow."""
    u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        Image.fromarray(u8).save(f, format="PNG")
    os.replace(tmp, path)


def _memory_child(argv: list[str]) -> int:
    """``--memory-child old WEIGHTS LR OUT``: the previous CLI path, in this process."""
    _, weights, lr_path, out = argv
    model = load_generator(weights).eval()
    lr = to_tensor(read_image(lr_path)).unsqueeze(0)
    sr = _old_upscale(model, lr, MEMORY_TILE, MEMORY_OVERLAP)
    Path(out).mkdir(parents=True, exist_ok=True)
    _old_write_image(Path(out) / Path(lr_path).name, to_numpy(sr.clamp_(0, 1)))
    return 0


def _peak_rss(command: list[str]) -> int:
    """Peak resident bytes of ``command``, run alone under a fresh launcher process."""
    launcher = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", launcher, *command], env=env,
                          capture_output=True, text=True, check=True)
    kib = int(proc.stdout.strip().splitlines()[-1])  # ru_maxrss is in KiB on Linux
    return kib * 1024


def memory_rows() -> int:
    """Peak RSS of the old and new upscale paths for LR 1024^2 and 2048^2, --tile 128."""
    work = Path(tempfile.mkdtemp(prefix="bench_upscale_memory_"))
    try:
        torch.manual_seed(0)
        model = build_generator(nf=16, nb=1).eval()
        yy, xx = np.mgrid[0:64, 0:64] / 64.0
        probe = np.stack([np.sin(6 * xx + 4 * yy), np.cos(5 * xx), xx * yy], axis=2) * 0.4 + 0.5
        _image_like(model, to_tensor(probe.astype(np.float32)).unsqueeze(0))
        weights = work / "g.pth"
        save_generator(weights, model)
        print(f"peak memory: RRDB nf 16 nb 1 (random weights), x4, --tile {MEMORY_TILE} "
              f"--tile-overlap {MEMORY_OVERLAP}, one image per fresh process, "
              f"{torch.get_num_threads()} threads")
        peaks: dict[tuple[str, int], int] = {}
        for size in MEMORY_SIZES:
            rng = np.random.default_rng(size)
            yy, xx = np.mgrid[0:size, 0:size] / size
            smooth = 0.5 + 0.3 * np.sin(40 * xx[..., None] + 25 * yy[..., None] + rng.random(3))
            lr_path = work / f"lr{size}.png"
            write_image(lr_path, np.clip(smooth + 0.05 * rng.standard_normal((size, size, 3)),
                                         0, 1))
            del smooth
            runs = {
                "old": [sys.executable, str(Path(__file__).resolve()), "--memory-child", "old",
                        str(weights), str(lr_path), str(work / "old")],
                "new": [sys.executable, "-m", "esrgan.upscale", "--weights", str(weights),
                        "--input", str(lr_path), "--output", str(work / "new"),
                        "--tile", str(MEMORY_TILE), "--tile-overlap", str(MEMORY_OVERLAP)],
            }
            for label, command in runs.items():
                start = time.perf_counter()
                peaks[label, size] = _peak_rss(command)
                pixels = (4 * size) ** 2
                print(f"  {label}  LR {size}x{size} -> {4 * size}x{4 * size}: peak "
                      f"{peaks[label, size] / 2**30:5.2f} GiB = "
                      f"{peaks[label, size] / pixels:5.1f} bytes per output pixel "
                      f"({time.perf_counter() - start:4.0f} s)")
            same = np.array_equal(np.asarray(Image.open(work / "old" / lr_path.name)),
                                  np.asarray(Image.open(work / "new" / lr_path.name)))
            print(f"  old and new PNGs equal: {same}")
        small, large = MEMORY_SIZES
        growth_pixels = (4 * large) ** 2 - (4 * small) ** 2
        slopes = {label: (peaks[label, large] - peaks[label, small]) / growth_pixels
                  for label in ("old", "new")}
        print(f"  growth per output pixel ({small}^2 -> {large}^2 LR): old "
              f"{slopes['old']:5.1f} bytes, new {slopes['new']:5.1f} bytes "
              f"(uint8 RGB output: 3.0): old/new x{slopes['old'] / slopes['new']:4.1f}; "
              f"peak at {large}^2: old/new x{peaks['old', large] / peaks['new', large]:4.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-child"]:
        return _memory_child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="LR crop size (default 64)")
    parser.add_argument("--tile", type=int, default=32, help="LR tile (default 32)")
    parser.add_argument("--overlap", type=int, default=16, help="LR overlap (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the first")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile runs")
    parser.add_argument("--memory", action="store_true",
                        help="only the peak-memory rows (old vs new upscale path)")
    args = parser.parse_args(argv)
    if args.memory:
        return memory_rows()

    shared = Path(os.environ.get("ESRGAN_SHARED", REPO_ROOT.parent / "shared"))
    path = shared / "data" / "Set5" / "LR_bicubic" / "X4" / "babyx4.png"
    if not path.is_file():
        print(f"skipped: {path} not found (set ESRGAN_SHARED)")
        return 0
    image = read_image(path)
    h, w = image.shape[:2]
    y0, x0 = (h - args.size) // 2, (w - args.size) // 2
    lr = to_tensor(image[y0:y0 + args.size, x0:x0 + args.size]).unsqueeze(0)

    torch.manual_seed(0)
    model = build_generator().eval()
    _image_like(model, lr)
    tiles = math.ceil(args.size / args.tile) ** 2
    print(f"paper-shape generator (random weights, output scaled to image range), "
          f"{args.size}x{args.size} LR crop of Set5 baby -> {4 * args.size}x{4 * args.size}, "
          f"tile {args.tile} overlap {args.overlap} ({tiles} tiles), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    runs: list[tuple[str, nn.Module, str]] = [("fp32 eager", model, "fp32"),
                                              ("bf16 eager", model, "bf16")]
    if not args.no_compile:
        compiled = compile_generator(model, "default")
        runs += [("fp32 compiled", compiled, "fp32"), ("bf16 compiled", compiled, "bf16")]

    base_time: float | None = None
    base_out: Tensor | None = None
    for label, net, precision in runs:
        first, best, out = _timed(
            lambda net=net, precision=precision: upscale(
                net, lr, args.tile, args.overlap, precision=precision), args.repeats)
        if base_time is None or base_out is None:
            base_time, base_out = best, out
        diff = (_levels(out) - _levels(base_out)).abs()
        raw = (out - base_out).abs().max().item() * 255
        compile_note = f"  first call {first:6.1f} s (compile)" if net is not model else ""
        print(f"  {label:14s} {best:6.2f} s/image  x{base_time / best:4.2f} vs fp32 eager  "
              f"8-bit diff max {diff.max().item():2.0f} mean {diff.mean().item():4.2f} levels, "
              f"{100 * (diff > 0).float().mean().item():5.2f}% of values differ "
              f"(raw max {raw:5.2f}){compile_note}")
    return memory_rows()


if __name__ == "__main__":
    try:
        status = main()
    finally:
        shutil.rmtree(_CACHE, ignore_errors=True)
    sys.exit(status)
