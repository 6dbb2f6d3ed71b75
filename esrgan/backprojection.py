"""Iterative back projection (Irani & Peleg; used as SR post-processing by Timofte et al. 2016).

    x <- x + up(y_LR - down(x))

``down`` and ``up`` are MATLAB bicubic :func:`~esrgan.data.imresize.imresize` (antialiased
downscale to the LR size, bicubic upscale back), the same operator that made the LR images, so
that each step moves ``x`` towards consistency with the observed LR image. Works on numpy HWC
images and on torch (C,H,W) / (N,C,H,W) tensors alike (differentiable in torch). Values are not
clipped or rounded between iterations; quantise the result as you would any SR output.
"""

from __future__ import annotations

import numpy as np
import torch

from esrgan.data.imresize import imresize

__all__ = ["back_project"]


def _hw(img: np.ndarray | torch.Tensor) -> tuple[int, int]:
    if isinstance(img, torch.Tensor):
        return int(img.shape[-2]), int(img.shape[-1])
    return int(img.shape[0]), int(img.shape[1])


def back_project(
    sr: np.ndarray | torch.Tensor,
    lr: np.ndarray | torch.Tensor,
    scale: int,
    iterations: int,
) -> np.ndarray | torch.Tensor:
    """Refine ``sr`` by ``iterations`` back-projection steps against its LR image ``lr``.

    ``sr`` must be ``scale`` times the size of ``lr`` (same type and layout: numpy HWC or
    torch (C,H,W)/(N,C,H,W)). ``iterations = 0`` returns ``sr`` unchanged.
    """
    if type(sr) is not type(lr):
        raise TypeError(f"sr and lr must both be numpy or both torch, got {type(sr)}, {type(lr)}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    lr_hw, sr_hw = _hw(lr), _hw(sr)
    if (lr_hw[0] * scale, lr_hw[1] * scale) != sr_hw:
        raise ValueError(f"SR size {sr_hw} is not {scale} x LR size {lr_hw}")
    x = sr
    for _ in range(iterations):
        residual = lr - imresize(x, output_size=lr_hw)
        x = x + imresize(residual, output_size=sr_hw)
    return x
