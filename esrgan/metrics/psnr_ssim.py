"""PSNR and SSIM as the SR literature computes them (MATLAB conventions).

- Luma: MATLAB ``rgb2ycbcr`` (BT.601) Y, see :mod:`esrgan.metrics.color`; ``y_channel=False``
  scores the RGB channels instead (PSNR over all channels, SSIM averaged over channels).
- ``crop_border`` pixels are removed from every side first (the convention is crop = scale).
- SSIM is Wang et al.'s original ``ssim_index.m``: 11x11 Gaussian window (sigma 1.5),
  ``filter2(..., 'valid')``, K1 = 0.01, K2 = 0.03, L = 255, on values in 0..255.
- Inputs are HWC RGB float images in [0, 1]. They are scored as given (no rounding): a
  caller scoring a network output the way published tables do first quantises it to 8 bits
  (:func:`quantize`, what saving a PNG does); the package docstring of :mod:`esrgan.metrics`
  gives the measured consequences.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

from esrgan.metrics.color import rgb2y

__all__ = ["mse", "psnr", "quantize", "ssim", "ssim_plane"]


def quantize(img: np.ndarray) -> np.ndarray:
    """Round a [0, 1] image to the nearest of 256 grey levels (half away from zero, as MATLAB)."""
    return np.floor(np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5) / 255.0


def _prepare(
    sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 in 0..255, luma (H, W) or RGB (H, W, 3), borders cropped."""
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR shapes differ: {sr.shape} vs {hr.shape}")
    if sr.ndim != 3 or sr.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB images, got shape {sr.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    h, w = sr.shape[:2]
    if h <= 2 * crop_border or w <= 2 * crop_border:
        raise ValueError(f"image {w}x{h} is too small for crop_border={crop_border}")
    if y_channel:
        sr, hr = rgb2y(sr) * 255.0, rgb2y(hr) * 255.0
    else:
        sr, hr = sr.astype(np.float64) * 255.0, hr.astype(np.float64) * 255.0
    if crop_border:
        c = crop_border
        sr, hr = sr[c:-c, c:-c], hr[c:-c, c:-c]
    return sr, hr


def mse(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """Mean squared error in grey levels^2 (0..255), on Y by default (PIRM's per-image MSE)."""
    a, b = _prepare(sr, hr, crop_border, y_channel)
    return float(np.mean((a - b) ** 2))


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """PSNR in dB (peak 255) of ``sr`` against ``hr``; ``inf`` for identical images."""
    err = mse(sr, hr, crop_border, y_channel)
    if err == 0:
        return float("inf")
    return 10.0 * math.log10(255.0**2 / err)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    # MATLAB fspecial('gaussian', 11, 1.5) is the outer product of this normalised vector.
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """filter2(g g^T, img, 'valid') for a separable symmetric window."""
    r = len(g) // 2
    out = correlate1d(img, g, axis=0, mode="constant")
    out = correlate1d(out, g, axis=1, mode="constant")
    # The border never touches the padding once 'valid' rows/columns are kept.
    return out[r:-r, r:-r]


def ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB ssim_index.m on one 2-D plane in 0..255 (no crop, no colour conversion)."""
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    g = _gaussian_1d()
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    mu_a2, mu_b2, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = _filter_valid(a * a, g) - mu_a2
    var_b = _filter_valid(b * b, g) - mu_b2
    cov = _filter_valid(a * b, g) - mu_ab
    ssim_map = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_a2 + mu_b2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """MATLAB (Wang et al. 2004) SSIM of ``sr`` against ``hr``, on Y by default."""
    a, b = _prepare(sr, hr, crop_border, y_channel)
    if min(a.shape[:2]) < 11:
        h, w = a.shape[:2]
        raise ValueError(f"image {w}x{h} (after crop) is smaller than the 11x11 SSIM window")
    if a.ndim == 2:
        return ssim_plane(a, b)
    return float(np.mean([ssim_plane(a[..., k], b[..., k]) for k in range(a.shape[2])]))
