"""Upscale images with a trained generator, optionally in tiles.

    python -m esrgan.upscale --weights G.pth --input LR_DIR_OR_FILE --output OUT_DIR \\
        [--tile 256 --tile-overlap 16] [--params auto] [--device cpu] [--precision bf16] \\
        [--compile default]

``--weights`` takes a ``.pth`` or ``.safetensors`` file (recognised by content) in any layout
``esrgan.weights`` reads; ``--params`` chooses between ``params`` and ``params_ema`` of a
BasicSR file (default ``auto``: ``params_ema`` when present).

Tiling works in LR space: the image is cut into ``tile`` x ``tile`` cores, each is run with
``overlap`` extra LR pixels of context on every side (clipped at the image border), and only
the core's part of the output is pasted. When ``overlap`` >= the network's receptive-field
radius (``esrgan.archs.rrdbnet.receptive_field``: 349 LR pixels for the paper net) the tiled
result equals the whole-image result up to float rounding, so no blending is needed. Smaller
overlaps (the default 16, as in common ESRGAN tools) cost far less and differ only slightly
near the seams, because a trained net's effective receptive field is much smaller.

Memory: each tile's output is clamped, rounded to 8 bits and pasted into one uint8 image
(``upscale_to_uint8``), which is encoded as PNG a few rows at a time, so with ``--tile`` the
memory needed is the 8-bit image (3 bytes per output pixel) plus one tile. Measured with
``benchmarks/bench_upscale.py --memory`` (LR 1024x1024 and 2048x2048, ``--tile 128``): the
peak grows by 6.7 bytes per output pixel (the 8-bit image, the float LR input and allocator
slack), against 50.7 when the whole float output was kept; LR 2048x2048 (output 8192x8192)
peaked at 1.07 GiB instead of 3.77 GiB.

Outputs are PNGs named like the inputs (``baby.png`` -> ``OUT_DIR/baby.png``). The output
folder is created and checked before anything is computed: one ``error:`` line when it cannot
be written. A file that cannot be read gets one ``error:`` line on stderr; the others are
still written, and the exit status is 2 if anything failed. A full disk stops the run.

Speed options (both off by default; fp32 eager is the reference output):

- ``--precision bf16`` runs the generator's forward passes under ``torch.autocast`` with
  bfloat16 (weights stay fp32, the output is converted back to fp32 before clamping and
  rounding). Measured with ``benchmarks/bench_upscale.py`` (paper-shape generator, random
  weights with the output scaled to image range, 64x64 LR crop of Set5 baby, tile 32,
  overlap 16, 2-core AVX512-BF16/AMX CPU): the 8-bit output differs from fp32 by at most 13
  grey levels, 2.1 on average, in 81% of the values; it ran 2.0x faster than fp32. A trained
  net may differ by another amount: compare on your own weights before relying on it.
- ``--compile default`` (or ``reduce-overhead``) wraps the generator in ``torch.compile`` with
  dynamic shapes (``compile_generator``): the first image pays the compile (about 100 s per
  graph for the paper net on 2 CPU cores with a cold cache; a few graphs cover all tile
  sizes), later tiles and images reuse it. In the same benchmark fp32 compiled ran 1.24x
  and bf16 compiled 3.9x faster than fp32 eager; compiled fp32 matches eager fp32 within
  1 grey level. ``reduce-overhead`` adds CUDA graphs on a GPU and equals ``default`` on the
  CPU.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from esrgan.data.io import DataError, list_images, read_image, to_tensor, write_image
from esrgan.files import NoSpaceError, check_output_dir
from esrgan.speed import COMPILE_MODES, PRECISIONS, autocast, check_choice, compiled
from esrgan.weights import PARAMS_CHOICES, PARAMS_HELP, load_generator

# The CLI leaves out max-autotune: its kernel search takes minutes per shape on the CPU.
CLI_COMPILE_MODES: tuple[str, ...] = COMPILE_MODES[:3]


def compile_generator(model: nn.Module, mode: str = "off") -> nn.Module:
    """``torch.compile`` ``model`` in ``mode`` ('off' returns ``model`` itself).

    ``mode`` is one of ``esrgan.speed.COMPILE_MODES``; anything else raises ValueError. The
    compiled module forwards attribute access (``.scale``, ``.arch``) to ``model`` and shares
    its weights.
    """
    # dynamic=True: tiled upscaling feeds interior tiles (tile + 2*overlap), first/last row
    # and column tiles clipped at the border (up to 9 sizes per image, depending on it), and
    # a folder's images all differ in size. Static shapes would recompile for every new size
    # (about 100 s each for the paper net on 2 CPU cores) until torch's recompile limit (8)
    # falls back to eager. Shape-generic graphs cover them all with a few compiles (3 for 9
    # tile sizes in tests/test_upscale.py: duck sizing and a conv size guard add two). They
    # should cost little speed (not measured against static): the convolutions, nearly all
    # the time, run as the same library kernels either way; only the fused pointwise code
    # loops over symbolic sizes.
    return compiled(model, mode, dynamic=True)


def _check_args(lr: Tensor, tile: int | None, overlap: int, precision: str) -> None:
    check_choice("upscale: precision", precision, PRECISIONS)
    if lr.ndim != 4 or lr.shape[0] != 1:
        raise ValueError(f"upscale: expected a (1, C, H, W) tensor, got {tuple(lr.shape)}")
    if tile is not None and tile < 1:
        raise ValueError(f"upscale: tile must be >= 1 (or None for the whole image), got {tile}")
    if overlap < 0:
        raise ValueError(f"upscale: overlap must be >= 0, got {overlap}")


def _tiles(model: nn.Module, lr: Tensor, tile: int | None, overlap: int, progress: bool,
           precision: str) -> Iterator[tuple[slice, slice, Tensor]]:
    """(output rows, output columns, raw output there) for each tile, in order.

    Each forward pass runs under ``torch.no_grad``; one tile's output is alive at a time.
    """
    scale = model.scale
    _, _, h, w = lr.shape
    bf16 = precision == "bf16"

    def run(x: Tensor) -> Tensor:
        # no_grad per pass, not around the loop: grad mode must not leak to the caller
        # while this generator waits at a yield.
        with torch.no_grad(), autocast(lr.device.type, precision):
            y = model(x)
        return y.float() if bf16 else y

    if tile is None or (h <= tile and w <= tile):
        yield slice(0, h * scale), slice(0, w * scale), run(lr)
        return
    cores = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]
    for y0, x0 in tqdm(cores, desc="tiles", leave=False, disable=not progress):
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
        py1, px1 = min(y1 + overlap, h), min(x1 + overlap, w)
        result = run(lr[:, :, py0:py1, px0:px1])
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        yield (slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale),
               result[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale])
        del result


def upscale(model: nn.Module, lr: Tensor, tile: int | None = None, overlap: int = 16,
            progress: bool = False, *, precision: str = "fp32") -> Tensor:
    """Run ``model`` (with a ``.scale``) on a (1, C, H, W) LR tensor, whole or in tiles.

    ``tile`` is the LR tile core size (None: whole image), ``overlap`` the LR context added
    around each core. ``precision`` is 'fp32' or 'bf16' (forward passes under bfloat16
    autocast on ``lr``'s device type; the result is float32). Runs under ``torch.no_grad``;
    returns the raw (unclamped) output (1, C_out, H*scale, W*scale) on ``lr``'s device.
    For large images ``upscale_to_uint8`` needs far less memory.
    """
    _check_args(lr, tile, overlap, precision)
    _, _, h, w = lr.shape
    tiles = _tiles(model, lr, tile, overlap, progress, precision)
    if tile is None or (h <= tile and w <= tile):
        return next(tiles)[2]  # the whole image in one pass
    out: Tensor | None = None
    for rows, cols, result in tiles:
        if out is None:
            out = result.new_empty((1, result.shape[1], h * model.scale, w * model.scale))
        out[:, :, rows, cols] = result
    assert out is not None  # h, w >= 1, so there was at least one tile
    return out


def to_uint8(t: Tensor) -> Tensor:
    """A (1, C, H, W) float output in [0, 1] as an (H, W, C) uint8 tensor: clamped, rounded.

    The same values as ``write_image`` makes of ``to_numpy(t.clamp(0, 1))`` (round half to
    even after multiplying by 255 in float32).
    """
    return t[0].clamp(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0)


def upscale_to_uint8(model: nn.Module, lr: Tensor, tile: int | None = None, overlap: int = 16,
                     progress: bool = False, *, precision: str = "fp32") -> np.ndarray:
    """``upscale``, clamped to [0, 1] and rounded to 8 bits: an (H*scale, W*scale, C) uint8
    array on the CPU, ready for ``write_image``.

    Each tile is converted as it is pasted into the one uint8 output buffer, so the memory
    needed is the 8-bit output (3 bytes per pixel) plus one tile's float output, instead of
    the float output (12 bytes per pixel) and its copies. Equal to
    ``to_uint8(upscale(...))`` with the same arguments, value for value.
    """
    _check_args(lr, tile, overlap, precision)
    _, _, h, w = lr.shape
    out: np.ndarray | None = None
    for rows, cols, result in _tiles(model, lr, tile, overlap, progress, precision):
        part = to_uint8(result).cpu().numpy()
        if out is None:
            out = np.empty((h * model.scale, w * model.scale, part.shape[2]), np.uint8)
        out[rows, cols] = part
    assert out is not None
    return out


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        return list_images(path)
    if path.is_file():
        return [path]
    raise DataError(f"input {path} does not exist")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 for any error)."""
    parser = argparse.ArgumentParser(
        prog="python -m esrgan.upscale", description="Upscale images with an ESRGAN generator.")
    parser.add_argument("--weights", required=True,
                        help="generator checkpoint: .pth or .safetensors (recognised by "
                             "content), any published layout")
    parser.add_argument("--params", choices=PARAMS_CHOICES, default="auto", help=PARAMS_HELP)
    parser.add_argument("--input", required=True, type=Path, help="an image or a folder")
    parser.add_argument("--output", required=True, type=Path, help="output folder (PNGs)")
    parser.add_argument("--tile", type=int, default=None,
                        help="LR tile size (default: whole image at once); bounds the memory "
                             "to the 8-bit output plus one tile")
    parser.add_argument("--tile-overlap", type=int, default=16,
                        help="LR context pixels around each tile (default 16; exact at >= the "
                             "receptive field, 349 for the paper net)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default) or bf16 autocast: faster where the CPU/GPU has "
                             "bf16 units; up to 13 8-bit grey levels (mean 2) off fp32 in "
                             "benchmarks/bench_upscale.py")
    parser.add_argument("--compile", choices=CLI_COMPILE_MODES, default="off",
                        help="torch.compile mode (default off); the first image pays the "
                             "compile (about 100 s on 2 CPU cores for the paper net)")
    args = parser.parse_args(argv)

    try:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {args.device} requested but CUDA is not available")
        if args.tile is not None and args.tile < 1:
            raise ValueError(f"--tile must be >= 1, got {args.tile}")
        if args.tile_overlap < 0:
            raise ValueError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
        files = _inputs(args.input)
        if args.input.is_dir() and args.output.resolve() == args.input.resolve():
            raise ValueError(f"output folder {args.output} is the input folder: "
                             f"the results would overwrite the inputs")
        # Before any work: an unwritable output is one error, not one per computed image.
        check_output_dir(args.output)
        model = load_generator(args.weights, params=args.params).to(device).eval()
        model = compile_generator(model, args.compile)
    except (ValueError, OSError, RuntimeError) as exc:  # Checkpoint/Data errors are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2

    failures = 0
    written: dict[str, Path] = {}
    # One bar always (a single large image takes minutes without tiles); tiles add their own.
    for path in tqdm(files, desc="images", unit="img"):
        name = f"{path.stem}.png"
        if name in written:
            tqdm.write(f"error: {path}: output {name} already written for {written[name]}",
                       file=sys.stderr)
            failures += 1
            continue
        try:
            lr = to_tensor(read_image(path)).unsqueeze(0).to(device)
            sr = upscale_to_uint8(model, lr, args.tile, args.tile_overlap, progress=True,
                                  precision=args.precision)
            del lr
            write_image(args.output / name, sr)
        except NoSpaceError as exc:  # every later image would fail the same way
            tqdm.write(f"error: {exc}", file=sys.stderr)
            failures += 1
            break
        except (ValueError, OSError) as exc:  # ImageReadError is a ValueError
            tqdm.write(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        except torch.OutOfMemoryError:
            tqdm.write(f"error: {path}: out of memory (try a smaller --tile)", file=sys.stderr)
            failures += 1
            continue
        written[name] = path
    if written:
        where = args.output / next(iter(written)) if len(written) == 1 else args.output
        print(f"wrote {len(written)} image(s) to {where}")
    if failures:
        print(f"{failures} of {len(files)} images failed", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
