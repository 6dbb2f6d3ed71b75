"""The generator: one framework, every paper change to G as its own argument.

The method: docs/method.md section 1.

    conv_first -> body (nb trunk blocks) -> conv_body -> + conv_first output (global skip)
    -> [nearest x2 -> conv_up{k} -> LeakyReLU 0.2] x (1 for x2, 2 for x4)
    -> conv_hr -> LeakyReLU 0.2 -> conv_last

Module names are BasicSR's RRDBNet names, so a BasicSR x4 RRDBNet state dict loads 1:1
(BasicSR's own x2/x1 RRDBNet variants use pixel-unshuffle at the input instead; this x2
framework is one nearest+conv stage, as the paper's framework implies).

Each generator switch of the paper is one ``build_generator`` argument doing one thing:
``trunk`` ('rrdb' or SRGAN's 'resblock'), ``bn`` (BatchNorm inside the trunk blocks only),
``beta`` (residual scaling) and ``init_scale`` (the small init of the block convs). Their ESRGAN
and SRGAN values are the switch table, ``esrgan.paper.switches``.
"""

from __future__ import annotations

import math
import numbers

import torch.nn.functional as F
from torch import Tensor, nn

from esrgan.archs.blocks import RRDB, ResBlock

TRUNKS: tuple[str, ...] = ("rrdb", "resblock")
SCALES: tuple[int, ...] = (2, 4)

# Longest chain of 3x3 convs through one trunk block: an RRDB holds 3 RDBs of 5 convs whose
# dense connections still leave a conv1->conv2->...->conv5 path; a ResBlock has 2 convs.
_BLOCK_DEPTH: dict[str, int] = {"rrdb": 15, "resblock": 2}


class Generator(nn.Module):
    """The ESRGAN/SRGAN generator framework; see the module docstring and ``build_generator``.

    ``arch`` holds the build arguments (a plain dict, saved beside the weights so a checkpoint
    rebuilds its own network); ``scale`` is the upscaling factor.
    """

    def __init__(self, trunk: str = "rrdb", bn: bool = False, beta: float = 0.2,
                 init_scale: float = 0.1, nf: int = 64, nb: int = 23, gc: int = 32,
                 scale: int = 4, in_ch: int = 3, out_ch: int = 3) -> None:
        super().__init__()
        _check_arch(trunk, bn, beta, init_scale, nf, nb, gc, scale, in_ch, out_ch)
        self.arch: dict = {
            "trunk": trunk, "bn": bool(bn), "beta": float(beta), "init_scale": float(init_scale),
            "nf": nf, "nb": nb, "gc": gc, "scale": scale, "in_ch": in_ch, "out_ch": out_ch,
        }
        self.scale = scale
        self.conv_first = nn.Conv2d(in_ch, nf, 3, 1, 1)
        if trunk == "rrdb":
            blocks = [RRDB(nf, gc, bn, beta, init_scale) for _ in range(nb)]
        else:
            blocks = [ResBlock(nf, bn, beta, init_scale) for _ in range(nb)]
        self.body = nn.Sequential(*blocks)
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        if scale == 4:
            self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        # Framework convs keep PyTorch's default init, as in the reference RRDBNet code
        # (xinntao/ESRGAN, BasicSR): only the residual branches get Kaiming x init_scale.
        # A plain Kaiming-normal framework (gain sqrt(2) through 6 convs) starts with outputs
        # far outside [0, 1] (initial L1 about 1.1 instead of 0.4 on the tiny net).

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        if self.scale == 4:
            feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def build_generator(trunk: str = "rrdb", bn: bool = False, beta: float = 0.2,
                    init_scale: float = 0.1, nf: int = 64, nb: int = 23, gc: int = 32,
                    scale: int = 4, in_ch: int = 3, out_ch: int = 3) -> Generator:
    """Build the generator; the defaults are the paper's RRDB network (16,697,987 parameters).

    - ``trunk``: 'rrdb' (ESRGAN) or 'resblock' (SRGAN residual block; ``gc`` is unused).
    - ``bn``: BatchNorm inside the trunk blocks, nowhere else in G. For RRDB it follows each
      conv of every RDB, before its LeakyReLU; for ResBlock conv-BN-ReLU-conv-BN.
    - ``beta``: residual scaling (RDB: beta*x5 + x; RRDB: beta*rdb3 + x; ResBlock:
      x + beta*f(x)). 1.0 means none.
    - ``init_scale``: Kaiming-normal (fan_in, a=0) init everywhere; the convs inside the
      residual (dense) blocks are multiplied by ``init_scale`` with zero bias. 1.0 = plain MSRA.
      Framework convs keep PyTorch's default init, as in the reference code.

    The SRGAN baseline is ``build_generator('resblock', bn=True, beta=1.0, init_scale=1.0,
    nb=16)``. Raises ValueError for an invalid argument.
    """
    return Generator(trunk=trunk, bn=bn, beta=beta, init_scale=init_scale, nf=nf, nb=nb, gc=gc,
                     scale=scale, in_ch=in_ch, out_ch=out_ch)


def _check_arch(trunk: str, bn: bool, beta: float, init_scale: float, nf: int, nb: int, gc: int,
                scale: int, in_ch: int, out_ch: int) -> None:
    if trunk not in TRUNKS:
        raise ValueError(f"generator: unknown trunk {trunk!r} (choose one of {', '.join(TRUNKS)})")
    if not isinstance(bn, bool):
        raise ValueError(f"generator: bn must be True or False, got {bn!r}")
    if not (isinstance(beta, numbers.Real) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"generator: residual scaling beta must be > 0, got {beta!r}")
    if not (isinstance(init_scale, numbers.Real) and math.isfinite(init_scale) and init_scale > 0):
        raise ValueError(f"generator: init_scale must be > 0, got {init_scale!r}")
    if scale not in SCALES:
        raise ValueError(f"generator: scale must be one of {SCALES}, got {scale!r}")
    for name, value in (("nb", nb), ("nf", nf), ("gc", gc), ("in_ch", in_ch), ("out_ch", out_ch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"generator: {name} must be an integer >= 1, got {value!r}")


def receptive_field(arch: dict) -> int:
    """Receptive-field radius of the generator in LR pixels (``arch`` as in ``Generator.arch``).

    An output pixel depends only on LR pixels within this Chebyshev distance of the LR pixel
    it lies in. Each 3x3 conv at LR resolution adds 1: conv_first, the trunk (15 per RRDB
    along its conv1->...->conv5 chains, 2 per ResBlock), conv_body. Paper net: 1+345+1 = 347.

    The upsampling part, worked out exactly (``_upsampling_radius``): a 3x3 conv at 2x or 4x
    resolution adds only 1/2 or 1/4 LR pixel, but nearest upsampling rounds to whole LR
    pixels depending on the output pixel's phase. x4 (conv_up1 at 2x; conv_up2, conv_hr,
    conv_last at 4x) adds 2; x2 (conv_up1, conv_hr, conv_last at 2x: 3/2 rounded out) adds 2
    too. Paper net: 349.
    Tiles overlapping by at least this many LR pixels reproduce the whole-image output.
    """
    trunk = arch["trunk"]
    if trunk not in _BLOCK_DEPTH:
        raise ValueError(f"receptive_field: unknown trunk {trunk!r}")
    lr_convs = 1 + arch["nb"] * _BLOCK_DEPTH[trunk] + 1
    return lr_convs + _upsampling_radius(arch["scale"])


def _upsampling_radius(scale: int) -> int:
    """LR radius added by the stages after the global skip, by interval arithmetic.

    Walk back from each output phase p (0..scale-1 inside an LR pixel): a 3x3 conv widens
    the interval by 1 at its resolution, a nearest x2 upsample maps interval [a, b] to
    [a // 2, b // 2]. The worst phase gives the radius.
    """
    # (convs at the final resolution, then per earlier stage: convs at that stage's resolution)
    stages = {4: [3, 1], 2: [3]}[scale]  # x4: up2,hr,last at 4x; up1 at 2x. x2: up1,hr,last.
    radius = 0
    for p in range(scale):
        lo = hi = p
        for n_convs in stages:
            lo, hi = (lo - n_convs) // 2, (hi + n_convs) // 2
        radius = max(radius, -lo, hi)  # LR pixel of the output is 0
    return radius
