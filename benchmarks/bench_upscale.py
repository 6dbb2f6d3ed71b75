"""Speed and output change of bf16 / torch.compile in tiled upscaling: benchmarks/bench_upscale.py

    python benchmarks/bench_upscale.py [--size 64] [--tile 32] [--overlap 16] [--no-compile]

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
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
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

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from esrgan.archs.rrdbnet import build_generator  # noqa: E402
from esrgan.data.io import read_image, to_tensor  # noqa: E402
from esrgan.upscale import compile_generator, upscale  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="LR crop size (default 64)")
    parser.add_argument("--tile", type=int, default=32, help="LR tile (default 32)")
    parser.add_argument("--overlap", type=int, default=16, help="LR overlap (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the first")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile runs")
    args = parser.parse_args(argv)

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
    return 0


if __name__ == "__main__":
    try:
        status = main()
    finally:
        shutil.rmtree(_CACHE, ignore_errors=True)
    sys.exit(status)
