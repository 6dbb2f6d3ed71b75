"""NIQE (Mittal, Soundararajan, Bovik 2013), faithful to the original MATLAB ``niqe.m``.

Pipeline (as MATLAB, and as BasicSR's ``niqe.py``): luma Y of MATLAB ``rgb2ycbcr`` in 0..255,
rounded to integers (MATLAB works on the ``uint8`` Y plane), cropped to whole 96x96 blocks;
at two scales (full, then MATLAB bicubic ``imresize`` by 0.5), MSCN coefficients with the
pristine model's 7x7 Gaussian window (``imfilter(..., 'replicate')``), and per block 18
features: the GGD fit of the MSCN values (shape, variance) and the AGGD fits of the four
neighbour products (shape, mean, left and right spread). The quality is the Mahalanobis-like
distance between the image's multivariate Gaussian and the pristine one.

The pristine model (``data/niqe_pris_params.npz``) is that of the LIVE lab's MATLAB release;
see ``data/README.md``. Everything is vectorised over blocks; there is no Python loop over
blocks or pixels.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma

from esrgan.data.imresize import imresize
from esrgan.metrics.color import rgb2y

__all__ = ["NIQE_BLOCK_SIZE", "niqe", "niqe_y", "pristine_model"]

NIQE_BLOCK_SIZE = 96

# The shape-parameter grid MATLAB searches (gam = 0.2:0.001:10).
_GAM = np.arange(0.2, 10.001, 0.001)
_R_GAM = gamma(2 / _GAM) ** 2 / (gamma(1 / _GAM) * gamma(3 / _GAM))


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36), gaussian_window (7, 7)) of the shipped pristine NIQE model."""
    ref = resources.files("esrgan.metrics").joinpath("data/niqe_pris_params.npz")
    with resources.as_file(ref) as path, np.load(path) as params:
        return (
            params["mu_pris_param"].reshape(-1).astype(np.float64),
            params["cov_pris_param"].astype(np.float64),
            params["gaussian_window"].astype(np.float64),
        )


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalised Gaussian fit per row of ``x`` (n_blocks, n): alpha, beta_l, beta_r.

    MATLAB's ``estimateaggdparam``: moment matching, then the nearest shape on the grid.
    """
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt(np.sum(np.where(neg, x * x, 0), axis=1) / neg.sum(axis=1))
        right_std = np.sqrt(np.sum(np.where(pos, x * x, 0), axis=1) / pos.sum(axis=1))
        gammahat = left_std / right_std
        rhat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
        rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    # Row-wise argmin over the 9801 grid values (a NaN row yields index 0, then NaN params).
    pos_grid = np.argmin((_R_GAM[None, :] - rhatnorm[:, None]) ** 2, axis=1)
    alpha = _GAM[pos_grid]
    alpha = np.where(np.isnan(rhatnorm), np.nan, alpha)
    ratio = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * ratio, right_std * ratio


def _block_features(blocks: np.ndarray) -> np.ndarray:
    """18 NIQE features for each block of ``blocks`` (n_blocks, b, b)."""
    n = blocks.shape[0]
    flat = blocks.reshape(n, -1)
    alpha, beta_l, beta_r = _aggd_fit(flat)
    feats = [alpha, (beta_l + beta_r) / 2]
    # MATLAB circshift within the block: horizontal, vertical, main and secondary diagonal.
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shifted = np.roll(blocks, shift, axis=(1, 2))
        alpha, beta_l, beta_r = _aggd_fit((blocks * shifted).reshape(n, -1))
        mean = (beta_r - beta_l) * (gamma(2 / alpha) / gamma(1 / alpha))
        feats.extend([alpha, mean, beta_l, beta_r])
    return np.stack(feats, axis=1)


def _to_blocks(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape
    nh, nw = h // size, w // size
    tiles = img[: nh * size, : nw * size].reshape(nh, size, nw, size)
    return tiles.swapaxes(1, 2).reshape(-1, size, size)


def niqe_y(y: np.ndarray, block_size: int = NIQE_BLOCK_SIZE) -> float:
    """NIQE of a luma plane ``y`` (H, W) in 0..255 (used as given; MATLAB passes integers).

    NaN when no block has defined statistics (a flat image), as in MATLAB.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"niqe_y expects an HxW luma plane, got shape {y.shape}")
    h, w = y.shape
    nh, nw = h // block_size, w // block_size
    if nh < 1 or nw < 1:
        raise ValueError(
            f"NIQE needs at least one {block_size}x{block_size} block, image is {w}x{h}"
        )
    mu_pris, cov_pris, window = pristine_model()
    img = y[: nh * block_size, : nw * block_size]
    features = []
    for scale in (1, 2):
        mu = convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(img * img, window, mode="nearest") - mu * mu))
        mscn = (img - mu) / (sigma + 1)
        features.append(_block_features(_to_blocks(mscn, block_size // scale)))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5) * 255.0
    dist = np.concatenate(features, axis=1)
    valid = dist[~np.isnan(dist).any(axis=1)]
    if valid.shape[0] == 0:
        return float("nan")  # no block has defined statistics (a flat image): MATLAB gives NaN
    mu_dist = np.nanmean(dist, axis=0)
    # MATLAB's nancov normalises by N - 1, but by N for a single observation (one block).
    cov_dist = np.cov(valid, rowvar=False, ddof=1 if valid.shape[0] > 1 else 0)
    diff = mu_pris - mu_dist
    quality = diff @ np.linalg.pinv((cov_pris + cov_dist) / 2) @ diff
    return float(np.sqrt(quality))


def niqe(img: np.ndarray, crop_border: int = 0) -> float:
    """NIQE of an HWC RGB float image in [0, 1] (lower is better), on MATLAB's uint8 luma.

    ``crop_border`` pixels are removed from each side first (PIRM uses the scale, 4).
    """
    y = rgb2y(img) * 255.0
    if crop_border:
        if min(y.shape) <= 2 * crop_border:
            h, w = y.shape
            raise ValueError(f"image {w}x{h} too small for crop_border={crop_border}")
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    # MATLAB computes NIQE on the uint8 Y plane of rgb2ycbcr: round as it does.
    return niqe_y(np.floor(y + 0.5))
