"""PIRM 2018 challenge measures: per-image RMSE on Y, pooled RMSE, perceptual index, regions.

PIRM (Blau et al. 2018) scores on the MATLAB YCbCr luma with ``shave = 4`` pixels removed:

- RMSE: per image MSE in grey levels^2 (0..255), pooled as sqrt(mean over images of MSE);
- PI = 0.5 * ((10 - Ma) + NIQE), lower is better.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from esrgan.metrics.iqa import ma
from esrgan.metrics.niqe import niqe
from esrgan.metrics.psnr_ssim import mse

__all__ = ["PIRM_REGIONS", "perceptual_index", "pi", "pirm_region", "pooled_rmse", "rmse"]

# Upper RMSE bound of each PIRM 2018 region.
PIRM_REGIONS = {1: 11.5, 2: 12.5, 3: 16.0}


def rmse(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """Per-image RMSE on Y in grey levels (0..255), ``crop_border`` pixels shaved."""
    return math.sqrt(mse(sr, hr, crop_border, y_channel=True))


def pooled_rmse(rmses: Iterable[float]) -> float:
    """PIRM's set RMSE: sqrt of the mean per-image MSE (not the mean of the RMSEs)."""
    values = np.asarray(list(rmses), dtype=np.float64)
    if values.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean(values**2)))


def perceptual_index(ma_score: float, niqe_score: float) -> float:
    """PI = 0.5 * ((10 - Ma) + NIQE)."""
    return 0.5 * ((10.0 - ma_score) + niqe_score)


def pi(
    img: np.ndarray, crop_border: int = 4, weights_dir: str | os.PathLike | None = None
) -> float:
    """Perceptual index of an HWC RGB [0, 1] image (needs Ma's weights, see esrgan.metrics.iqa)."""
    ma_score = ma(img, crop_border, weights_dir=weights_dir)
    return perceptual_index(ma_score, niqe(img, crop_border))


def pirm_region(set_rmse: float) -> int | None:
    """The PIRM 2018 region (1, 2, 3) a set RMSE falls in, or None above region 3's bound."""
    for region, bound in PIRM_REGIONS.items():
        if set_rmse <= bound:
            return region
    return None
