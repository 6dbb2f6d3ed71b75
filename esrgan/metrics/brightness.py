"""Brightness consistency: how far the mean luma of an SR image is from its HR image's.

The paper's Fig. 9 shows that a perceptual loss on after-activation VGG features shifts the
brightness histogram of the output; this measures that shift on Y (MATLAB BT.601 luma, in grey
levels of the 0..255 scale, ``crop_border`` pixels removed from each side).
"""

from __future__ import annotations

import numpy as np

from esrgan.metrics.color import rgb2y


def brightness_shift(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """mean Y(SR) - mean Y(HR) in grey levels (positive: the SR image is brighter)."""
    if np.shape(sr) != np.shape(hr):
        raise ValueError(f"SR and HR shapes differ: {np.shape(sr)} vs {np.shape(hr)}")
    a, b = rgb2y(np.asarray(sr)), rgb2y(np.asarray(hr))
    if crop_border:
        c = crop_border
        a, b = a[c:-c, c:-c], b[c:-c, c:-c]
    if a.size == 0:
        raise ValueError(f"image too small for a {crop_border}-pixel border crop")
    return float(255.0 * (a.mean() - b.mean()))


def brightness_error(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """|mean Y(SR) - mean Y(HR)| in grey levels (0: the brightness is consistent)."""
    return abs(brightness_shift(sr, hr, crop_border))
