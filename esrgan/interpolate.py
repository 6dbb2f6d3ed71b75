"""Network interpolation between a PSNR-oriented and a GAN generator (the paper, section 3.4).

    python -m esrgan.interpolate PSNR.pth GAN.pth --alpha 0.2 -o OUT.pth
    python -m esrgan.interpolate PSNR.pth GAN.pth --alphas 0:1:0.2 -o OUTDIR
    python -m esrgan.interpolate PSNR.pth GAN.pth --alphas 0:1:0.2 -o 'out/net_{alpha:.1f}.pth'

theta = (1 - alpha) * theta_PSNR + alpha * theta_GAN. Inputs may be in any published layout,
``.pth`` or ``.safetensors`` (see ``esrgan.weights``); ``--params`` chooses between
``params`` and ``params_ema`` of BasicSR inputs. Every output is ours,
``{'params': ..., 'arch': ...}``, as a safetensors file when its name ends in
``.safetensors``, else a torch file. With ``--alphas`` the output is a folder (files
``interp_alpha0.20.pth``, ...) or a pattern with ``{alpha}``. Every output path is checked
before anything is computed. Bad input prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from esrgan.files import check_output_path
from esrgan.weights import (
    PARAMS_CHOICES,
    PARAMS_HELP,
    CheckpointError,
    interpolate_state,
    read_generator_checkpoint,
    save_checkpoint,
)

# init_scale only shapes the initial weights; two trained nets may differ in it and still be
# the same architecture.
_IGNORED_ARCH_KEYS = ("init_scale",)


def parse_alphas(spec: str) -> list[float]:
    """'START:STOP:STEP' (STOP included) -> [START, START+STEP, ..., STOP], each in [0, 1]."""
    parts = spec.split(":")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--alphas must be START:STOP:STEP (e.g. 0:1:0.2), got {spec!r}") from None
    if not (math.isfinite(step) and step > 0 and start <= stop):
        raise ValueError(f"--alphas {spec!r}: need START <= STOP and STEP > 0")
    count = math.floor((stop - start) / step + 1e-9) + 1
    alphas = [round(start + k * step, 10) for k in range(count)]
    for alpha in alphas:
        check_alpha(alpha)
    return alphas


def check_alpha(alpha: float) -> None:
    """ValueError unless 0 <= alpha <= 1."""
    if not (math.isfinite(alpha) and 0 <= alpha <= 1):
        raise ValueError(f"interpolation alpha must be in [0, 1], got {alpha:g}")


def output_path(output: str, alpha: float, many: bool) -> Path:
    """Where the network for ``alpha`` goes: a pattern with {alpha}, a folder, or a file."""
    if "{alpha" in output:
        return Path(output.format(alpha=alpha))
    if many or Path(output).is_dir():
        return Path(output) / f"interp_alpha{alpha:.2f}.pth"
    return Path(output)


def load_pair(psnr_path: str | Path, gan_path: str | Path, *,
              params: str = "auto") -> tuple[dict, dict, dict]:
    """(PSNR state, GAN state, arch) of two generator files of the same architecture.

    ``params`` picks the weights of BasicSR files (``esrgan.weights.load_generator_state``).
    Raises ``CheckpointError`` when the two files are different architectures.
    """
    state_a, arch_a = read_generator_checkpoint(psnr_path, params=params)
    state_b, arch_b = read_generator_checkpoint(gan_path, params=params)
    for key in arch_a:
        if key not in _IGNORED_ARCH_KEYS and arch_a[key] != arch_b.get(key):
            raise CheckpointError(
                f"cannot interpolate {psnr_path} and {gan_path}: different architectures "
                f"({key} = {arch_a[key]!r} vs {arch_b.get(key)!r})")
    return state_a, state_b, arch_a


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m esrgan.interpolate",
        description="Interpolate two generators: (1 - alpha) * PSNR + alpha * GAN.")
    parser.add_argument("psnr", help="PSNR-oriented generator checkpoint (alpha = 0)")
    parser.add_argument("gan", help="GAN generator checkpoint (alpha = 1)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--alpha", type=float, help="one alpha in [0, 1]")
    group.add_argument("--alphas", help="START:STOP:STEP, STOP included (e.g. 0:1:0.2)")
    parser.add_argument("-o", "--output", required=True,
                        help="output file (--alpha), folder, or pattern with {alpha}; a name "
                             "ending in .safetensors writes safetensors")
    parser.add_argument("--params", choices=PARAMS_CHOICES, default="auto",
                        help=PARAMS_HELP + "; applies to both inputs")
    args = parser.parse_args(argv)
    try:
        if args.alphas is not None:
            alphas = parse_alphas(args.alphas)
        else:
            check_alpha(args.alpha)
            alphas = [args.alpha]
        paths = [output_path(args.output, alpha, many=args.alphas is not None)
                 for alpha in alphas]
        for path in paths:  # before any work: one clear error for an unwritable output
            check_output_path(path)
        state_a, state_b, arch = load_pair(args.psnr, args.gan, params=args.params)
        for alpha, path in zip(alphas, paths, strict=True):
            params = interpolate_state(state_a, state_b, alpha)
            save_checkpoint(path, {"params": params, "arch": dict(arch)})
            print(f"alpha {alpha:.2f} -> {path}")
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
