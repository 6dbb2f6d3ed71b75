"""Scoring a generator on a set of image pairs: super-resolve, score, and the references.

One policy for a metric that cannot be computed (its weight file is not on disk): it is left
out, with one warning naming the file, never reported as 0 (``esrgan.metrics.table``).

    sr = super_resolve(generator, pairs, device)     # whole images, fp32, eval mode
    means = score(sr, pairs, ["psnr", "ssim", "niqe"], scale=4)
    means = score(bicubic_images(pairs, 4), pairs, ["psnr"], scale=4)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from esrgan.data import ImagePair, imresize, to_numpy, to_tensor
from esrgan.metrics import evaluate_images, pooled_rmse

# The models a cell scores, by the names its result and the analysis use:
# result[model][set][metric] (bicubic upscaling is the reference row).
BICUBIC = "bicubic"
PSNR_MODEL = "psnr_model"  # stage 1, L1 only
GAN_MODEL = "gan_model"  # stage 2, from the stage-1 model
MODELS: tuple[str, ...] = (BICUBIC, PSNR_MODEL, GAN_MODEL)


def super_resolve(generator: torch.nn.Module, pairs: Sequence[ImagePair],
                  device: torch.device) -> list[np.ndarray]:
    """Whole-image SR of every pair's LR (fp32, eval mode), clipped to [0, 1]."""
    was_training = generator.training
    generator.eval()
    out = []
    with torch.no_grad():
        for pair in pairs:
            sr = generator(to_tensor(pair.lr).unsqueeze(0).to(device))
            out.append(to_numpy(sr[0].clamp(0, 1).float().cpu()))
    generator.train(was_training)
    return out


def score(images: Sequence[np.ndarray], pairs: Sequence[ImagePair], metrics: Sequence[str],
          scale: int, left_out: dict[str, str] | None = None) -> dict[str, float]:
    """Mean of each metric over a set, plus ``rmse``: PIRM's pooled RMSE on Y.

    PSNR/SSIM on Y with crop = ``scale``; NIQE and PI on Y, shaving ``scale`` pixels; ``rmse``
    is sqrt of the mean per-image MSE (0..255). A metric that is unavailable is missing from
    the result (see the module docstring); ``left_out``, when given, gets why (metric -> the
    missing file's message).
    """
    names = [pair.name for pair in pairs]
    wanted = list(dict.fromkeys([*metrics, "rmse"]))
    table = evaluate_images(images, [pair.hr for pair in pairs], names, wanted,
                            crop_border=scale)
    if left_out is not None:
        left_out.update(table.attrs.get("left_out", {}))
    out = {m: float(np.mean(table[m].to_numpy())) for m in metrics
           if m != "rmse" and not table[m].isna().any()}
    out["rmse"] = pooled_rmse(table["rmse"].to_numpy())
    return out


def bicubic_images(pairs: Sequence[ImagePair], scale: int) -> list[np.ndarray]:
    """MATLAB-bicubic upscaling of every pair's LR, clipped to [0, 1] (the reference row)."""
    return [np.clip(imresize(p.lr.astype(np.float64), scale), 0, 1).astype(np.float32)
            for p in pairs]


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size`` x ``size`` window of an image (smaller if the image is)."""
    h, w = img.shape[:2]
    size = min(size, h, w)
    y, x = (h - size) // 2, (w - size) // 2
    return img[y:y + size, x:x + size]
