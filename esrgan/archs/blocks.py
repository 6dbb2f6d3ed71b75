"""Trunk blocks of the generator: ESRGAN's RDB / RRDB and SRGAN's residual block.

Module names follow BasicSR (``rdb1..3``, ``conv1..5``; ``conv1``/``conv2`` in ResBlock) so that
published BasicSR state dicts load 1:1. Three paper switches reach every block as arguments:

- ``bn``: BatchNorm inside the block (SRGAN has it, ESRGAN removes it).
- ``beta``: residual scaling, the residual branch is multiplied by ``beta`` before the add
  (ESRGAN: 0.2; 1.0 means no scaling).
- ``init_scale``: the block's convs get Kaiming-normal weights multiplied by ``init_scale`` and
  zero biases (ESRGAN's reference code: 0.1; 1.0 is plain MSRA init).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def init_conv_(conv: nn.Conv2d, scale: float = 1.0) -> None:
    """Kaiming-normal init (fan_in, a=0), weights times ``scale``, zero bias; in place.

    This is BasicSR's ``default_init_weights``: the reference code's "small init" is this
    with scale 0.1 applied to the convs inside the residual (dense) blocks.
    """
    nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
    with torch.no_grad():
        conv.weight.mul_(scale)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _bn_or_identity(channels: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class ResidualDenseBlock(nn.Module):
    """RDB: five densely connected 3x3 convs; output = beta * conv5(...) + x.

    conv_k sees the concatenation of the block input and every earlier conv output
    (channels nf + (k-1)*gc), conv1..conv4 produce ``gc`` channels and are followed by
    LeakyReLU(0.2); conv5 maps back to ``nf`` channels with no activation.

    With ``bn=True`` a BatchNorm2d (``bn1``..``bn5``) follows each of the five convs, before
    its LeakyReLU (conv5 has none): that is where SRGAN's block puts BN (conv-BN-act). It is
    a baseline for the BN-removal ablation, not part of any published RRDB network.
    """

    def __init__(self, nf: int = 64, gc: int = 32, bn: bool = False, beta: float = 0.2,
                 init_scale: float = 0.1) -> None:
        super().__init__()
        self.beta = beta
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        # Identity when bn=False: no parameters, so the state dict is exactly BasicSR's.
        self.bn1 = _bn_or_identity(gc, bn)
        self.bn2 = _bn_or_identity(gc, bn)
        self.bn3 = _bn_or_identity(gc, bn)
        self.bn4 = _bn_or_identity(gc, bn)
        self.bn5 = _bn_or_identity(nf, bn)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            init_conv_(conv, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.bn1(self.conv1(x)))
        x2 = self.lrelu(self.bn2(self.conv2(torch.cat((x, x1), 1))))
        x3 = self.lrelu(self.bn3(self.conv3(torch.cat((x, x1, x2), 1))))
        x4 = self.lrelu(self.bn4(self.conv4(torch.cat((x, x1, x2, x3), 1))))
        x5 = self.bn5(self.conv5(torch.cat((x, x1, x2, x3, x4), 1)))
        return x5 * self.beta + x


class RRDB(nn.Module):
    """Residual-in-Residual Dense Block: three RDBs in sequence; output = beta * rdb3 + x."""

    def __init__(self, nf: int = 64, gc: int = 32, bn: bool = False, beta: float = 0.2,
                 init_scale: float = 0.1) -> None:
        super().__init__()
        self.beta = beta
        self.rdb1 = ResidualDenseBlock(nf, gc, bn, beta, init_scale)
        self.rdb2 = ResidualDenseBlock(nf, gc, bn, beta, init_scale)
        self.rdb3 = ResidualDenseBlock(nf, gc, bn, beta, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * self.beta + x


class ResBlock(nn.Module):
    """SRGAN residual block: out = x + beta * f(x), f = conv3x3-[BN]-ReLU-conv3x3-[BN].

    ReLU (not SRGAN's PReLU) as in BasicSR's MSRResNet, whose ``ResidualBlockNoBN`` this is
    with ``bn=False``: a parameter-free activation keeps ``bn`` the only change between the
    two ResBlock variants. BN modules are named ``bn1``/``bn2``.
    """

    def __init__(self, nf: int = 64, bn: bool = True, beta: float = 1.0,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.beta = beta
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.bn1 = _bn_or_identity(nf, bn)
        self.bn2 = _bn_or_identity(nf, bn)
        self.relu = nn.ReLU(inplace=True)
        init_conv_(self.conv1, init_scale)
        init_conv_(self.conv2, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) * self.beta
