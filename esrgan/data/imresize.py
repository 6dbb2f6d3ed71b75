"""MATLAB-compatible bicubic ``imresize`` for numpy arrays and torch tensors.

Reproduces MATLAB's ``imresize(img, scale)`` / ``imresize(img, [h w])`` with the default
``'bicubic'`` method: cubic kernel with a = -0.5, a kernel widened by ``1/scale`` when
downscaling with antialiasing, MATLAB's sample positions ``u = x/scale + 0.5*(1 - 1/scale)``,
symmetric (mirror) boundary handling, weights normalised per output pixel, and the dimension
with the smaller scale factor resized first.

Both paths share one weight computation (:func:`resize_weights`, as a sparse matrix in
:func:`resize_matrix`): numpy applies it as a scipy sparse matrix product, torch as a dense
matrix product (differentiable, runs on the tensor's device). There is no Python loop over
pixels or taps. Inputs are not rounded or clipped: MATLAB rounds only because
its input is ``uint8``; callers that want MATLAB's ``uint8`` output round themselves.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["cubic", "imresize", "resize_matrix", "resize_weights"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2
    ) * ((absx > 1) & (absx <= 2))


def resize_weights(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: indices (out, P) int64 into the input, weights (out, P) float64.

    Indices are already mirrored into ``[0, in_length)`` (MATLAB's symmetric padding) and
    all-zero kernel taps are dropped, exactly as MATLAB does.
    """
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        # Antialiasing: widen the kernel so that it acts as a low-pass filter.
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    # Output pixel x maps to input position u (1-based, MATLAB's pixel-centre convention).
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    if scale < 1 and antialiasing:
        weights = scale * cubic(distance * scale)
    else:
        weights = cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric boundary: 1..n, n..1 repeated; convert to 0-based afterwards.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)
    return indices[:, keep], weights[:, keep]


def _output_shape(
    in_hw: tuple[int, int], scale: float | None, output_size: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Output (h, w) and per-dimension scale, as MATLAB derives them."""
    if output_size is not None:
        out_h, out_w = int(output_size[0]), int(output_size[1])
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"imresize: output_size must be positive, got {output_size}")
        return (out_h, out_w), (out_h / in_hw[0], out_w / in_hw[1])
    if scale is None or scale <= 0:
        raise ValueError(f"imresize: give a positive scale or an output_size, got scale={scale}")
    # MATLAB: output size = ceil(scale * input size); the given scale is used for the kernel.
    out_hw = (math.ceil(scale * in_hw[0]), math.ceil(scale * in_hw[1]))
    return out_hw, (float(scale), float(scale))


@lru_cache(maxsize=64)
def resize_matrix(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> sp.csr_matrix:
    """The 1-D resize as a sparse (out_length, in_length) float64 matrix (taps that mirror onto
    the same input pixel are summed). Cached: training resizes the same sizes every step."""
    idx, w = resize_weights(in_length, out_length, scale, antialiasing)
    rows = np.repeat(np.arange(out_length), idx.shape[1])
    matrix = sp.coo_matrix((w.ravel(), (rows, idx.ravel())), shape=(out_length, in_length))
    return matrix.tocsr()


def _resize_axis_numpy(img: np.ndarray, axis: int, matrix: sp.csr_matrix) -> np.ndarray:
    moved = np.moveaxis(img, axis, 0)
    out = matrix.astype(img.dtype) @ moved.reshape(moved.shape[0], -1)
    return np.moveaxis(out.reshape((matrix.shape[0],) + moved.shape[1:]), 0, axis)


def _resize_axis_torch(img: torch.Tensor, axis: int, matrix: sp.csr_matrix) -> torch.Tensor:
    # A dense matmul: far faster in torch than per-tap gathers, differentiable, GPU-friendly.
    dense = torch.from_numpy(matrix.toarray()).to(device=img.device, dtype=img.dtype)
    if axis == img.ndim - 1:
        return img @ dense.T
    return dense @ img


def imresize(
    img: np.ndarray | torch.Tensor,
    scale: float | None = None,
    output_size: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> np.ndarray | torch.Tensor:
    """Resize like MATLAB's bicubic ``imresize``.

    Args:
        img: numpy (H, W) or (H, W, C) array (integers are promoted to float64), or a torch
            floating tensor (C, H, W) or (N, C, H, W) (differentiable; same dtype and device).
        scale: resize factor (output size = ceil(scale * input size)); or
        output_size: (out_h, out_w); takes precedence over ``scale``.
        antialiasing: widen the kernel when downscaling (MATLAB's default, True).

    Returns:
        The resized image in the input's layout; values are neither rounded nor clipped.
    """
    if isinstance(img, torch.Tensor):
        if img.ndim not in (3, 4):
            raise ValueError(f"imresize: torch input must be (C,H,W) or (N,C,H,W), got {img.shape}")
        if not img.is_floating_point():
            img = img.double()
        h_axis, w_axis = img.ndim - 2, img.ndim - 1
        resize_axis = _resize_axis_torch
    elif isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"imresize: numpy input must be (H,W) or (H,W,C), got {img.shape}")
        if not np.issubdtype(img.dtype, np.floating):
            img = img.astype(np.float64)
        h_axis, w_axis = 0, 1
        resize_axis = _resize_axis_numpy
    else:
        raise TypeError(f"imresize: expected numpy array or torch tensor, got {type(img).__name__}")

    in_hw = (img.shape[h_axis], img.shape[w_axis])
    out_hw, scales = _output_shape(in_hw, scale, output_size)
    # MATLAB resizes the dimension with the smaller scale first (stable sort: height on ties).
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    axes = (h_axis, w_axis)
    out = img
    for d in order:
        out = resize_axis(out, axes[d], resize_matrix(in_hw[d], out_hw[d], scales[d], antialiasing))
    if isinstance(out, np.ndarray):
        out = np.ascontiguousarray(out)
    return out
