"""A periodic-artifact (checkerboard) index: how much of an SR image's error is a regular grid.

GAN-trained generators can paint a faint periodic pattern (a checkerboard or diagonal grid)
that PSNR barely registers and a no-reference metric such as NIQE reads as unnatural. A grid
puts the error's energy into a few isolated spectral peaks; natural errors (blur, misplaced
texture, ringing at edges) spread it over broad bands. The index is the share of the energy of
the error ``SR - HR`` (Y channel, Hann-windowed, mean removed) that sits in bins standing
``PEAK_FACTOR`` times above the local median of the spectrum around them, leaving out periods
longer than ``LONGEST_PERIOD`` pixels (the error's smooth part, not a grid).

It is full-reference and unitless in [0, 1]. Read it against bicubic's on the same images:
a broadband error scores about 0.01 (chance peaks), bicubic and PSNR-oriented models stay near
that on photos; a visible grid scores several times more.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

from esrgan.metrics.psnr_ssim import _prepare

PEAK_FACTOR = 10.0  # a bin is a peak above 10x its neighbourhood's median power
NEIGHBOURHOOD = 9  # side of the square of bins whose median is a bin's background
LONGEST_PERIOD = 32  # periods longer than this many pixels are the error's smooth part

__all__ = ["artifact_index"]


def artifact_index(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """Share of the energy of ``SR - HR`` (Y) in isolated spectral peaks (0: none, 1: all)."""
    a, b = _prepare(sr, hr, crop_border, y_channel=True)
    error = a - b
    h, w = error.shape
    if min(h, w) < 2 * LONGEST_PERIOD:
        raise ValueError(f"image {w}x{h} is too small for the artifact index (needs "
                         f"{2 * LONGEST_PERIOD} px a side after cropping {crop_border})")
    error = (error - error.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(error)) ** 2
    fy = np.abs(np.fft.fftfreq(h))[:, None]
    fx = np.abs(np.fft.fftfreq(w))[None, :]
    fine = np.maximum(fy, fx) >= 1.0 / LONGEST_PERIOD  # leave the error's smooth part out
    total = power[fine].sum()
    if total <= 0:
        return 0.0
    # the spectrum is periodic: its neighbourhoods wrap around
    background = median_filter(power, size=NEIGHBOURHOOD, mode="wrap")
    peaks = fine & (power > PEAK_FACTOR * background)
    return float(power[peaks].sum() / total)
