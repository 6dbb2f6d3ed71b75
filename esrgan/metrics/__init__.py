"""Image quality metrics, MATLAB-exact, and one table naming them.

Conventions (measured against the field's reference numbers):

- PSNR/SSIM on the Y channel of MATLAB ``rgb2ycbcr`` (not rounded), ``crop_border = scale``;
  SSIM is the original MATLAB Gaussian version. ``*_rgb`` variants score RGB.
- Bicubic x4 baselines reproduce Set5 28.431 dB / 0.8113, Set14 26.092 / 0.7050 and
  BSD100 25.963 / 0.6682 when the pipeline quantises like MATLAB on ``uint8`` files: the LR is
  rounded to 8 bits, and so is the SR (as saving/reading a PNG does). Rounding the Y plane as
  well (``rgb2ycbcr`` on ``uint8``) gives 28.419 / 0.8103, the numbers papers print.
- NIQE on the rounded MATLAB luma (as MATLAB's ``niqe`` on the ``uint8`` Y plane), with the
  LIVE pristine model shipped in ``data/``; Ma, LPIPS and DISTS come from pyiqa when their
  weight files are on disk, else they are reported as unavailable (NaN), never as 0.

Every function in :data:`METRICS` takes ``(sr, hr, crop_border)`` when it needs a reference and
``(img, crop_border)`` otherwise; ``uses_iqa_weights`` ones also take ``weights_dir=``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from esrgan.metrics.artifacts import artifact_index
from esrgan.metrics.brightness import brightness_error, brightness_shift
from esrgan.metrics.color import rgb2y, rgb2ycbcr
from esrgan.metrics.iqa import MetricUnavailable, dists, lpips, ma
from esrgan.metrics.niqe import niqe
from esrgan.metrics.pirm import perceptual_index, pi, pooled_rmse, rmse
from esrgan.metrics.psnr_ssim import psnr, quantize, ssim
from esrgan.metrics.table import MetricInputError, MetricNameError, evaluate_images, summarize

__all__ = [
    "SR_PANEL",
    "artifact_index",
    "METRICS",
    "Metric",
    "MetricInputError",
    "MetricNameError",
    "MetricUnavailable",
    "brightness_error",
    "brightness_shift",
    "dists",
    "evaluate_images",
    "lpips",
    "ma",
    "niqe",
    "perceptual_index",
    "pi",
    "pooled_rmse",
    "psnr",
    "quantize",
    "rgb2y",
    "rgb2ycbcr",
    "rmse",
    "ssim",
    "summarize",
]


@dataclass(frozen=True)
class Metric:
    """How to compute one named metric and how to read it."""

    function: Callable[..., float]
    higher_is_better: bool
    needs_reference: bool
    label: str
    channel: str  # "Y" (MATLAB BT.601 luma) or "RGB": what the metric looks at
    uses_iqa_weights: bool = False


SR_PANEL: tuple[str, ...] = ("psnr", "ssim", "lpips", "dists", "niqe", "pi")
"""The metrics a current SR paper reports: fidelity, learned full-reference, no-reference."""

METRICS: dict[str, Metric] = {
    "psnr": Metric(psnr, True, True, "PSNR-Y (dB)", "Y"),
    "ssim": Metric(ssim, True, True, "SSIM-Y", "Y"),
    "psnr_rgb": Metric(partial(psnr, y_channel=False), True, True, "PSNR-RGB (dB)", "RGB"),
    "ssim_rgb": Metric(partial(ssim, y_channel=False), True, True, "SSIM-RGB", "RGB"),
    "niqe": Metric(niqe, False, False, "NIQE-Y", "Y"),
    "ma": Metric(ma, True, False, "Ma (NRQM)-Y", "Y", uses_iqa_weights=True),
    "pi": Metric(pi, False, False, "PI-Y", "Y", uses_iqa_weights=True),
    "lpips": Metric(lpips, False, True, "LPIPS (alex, RGB)", "RGB", uses_iqa_weights=True),
    "dists": Metric(dists, False, True, "DISTS (RGB)", "RGB", uses_iqa_weights=True),
    "rmse": Metric(rmse, False, True, "RMSE-Y", "Y"),
    # share of the error in isolated spectral peaks (a checkerboard); read against bicubic's
    "artifacts": Metric(artifact_index, False, True, "Artifact index-Y", "Y"),
    # signed: neither higher nor lower is better; the error (its magnitude) is lower-better
    "brightness_shift": Metric(brightness_shift, False, True, "Brightness shift (Y levels)",
                               "Y"),
    "brightness_error": Metric(brightness_error, False, True, "Brightness error (Y levels)",
                               "Y"),
}
