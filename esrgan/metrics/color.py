"""MATLAB ``rgb2ycbcr`` (ITU-R BT.601, studio range) for float RGB images in [0, 1].

MATLAB, for ``double`` input in [0, 1]::

    Y  = (16  +  65.481 R + 128.553 G +  24.966 B) / 255     in [16/255, 235/255]
    Cb = (128 -  37.797 R -  74.203 G + 112.0   B) / 255
    Cr = (128 + 112.0   R -  93.786 G -  18.214 B) / 255

Results are float and not rounded (MATLAB rounds only for ``uint8`` input).
"""

from __future__ import annotations

import numpy as np

__all__ = ["YCBCR_MATRIX", "YCBCR_OFFSET", "rgb2y", "rgb2ycbcr"]

YCBCR_MATRIX = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def _check_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {img.shape}")
    return img.astype(np.float64, copy=False)


def rgb2ycbcr(img: np.ndarray) -> np.ndarray:
    """HWC RGB in [0, 1] -> HWC YCbCr in [0, 1] (float64), as MATLAB ``rgb2ycbcr`` on doubles."""
    img = _check_rgb(img)
    return (img @ YCBCR_MATRIX.T + YCBCR_OFFSET) / 255.0


def rgb2y(img: np.ndarray) -> np.ndarray:
    """HWC RGB in [0, 1] -> HW luma Y in [16/255, 235/255] (float64), MATLAB BT.601."""
    img = _check_rgb(img)
    return (img @ YCBCR_MATRIX[0] + YCBCR_OFFSET[0]) / 255.0
