"""Perceptual features that are smooth in the image, for runs without the ImageNet VGG19.

A random-weight VGG19's filters are not smooth, and neither is the gradient of a loss on its
features with respect to the image: the GAN stage follows it into a periodic grid
(docs/gan_stage_pilots.md). Two substitutes, both deterministic and free of weight files:

- :class:`GaborFeatureExtractor`: a fixed multi-scale bank of oriented Gabor quadrature pairs
  (the classic model of early visual features), as rectified simple cells or as phase-free
  complex cells (local energy);
- :class:`BandLimited`: any extractor on low-passed input (SR and HR alike), so that the
  gradient reaching the image carries no frequency above the low-pass's band.

Both have the interface of ``VGGFeatureExtractor``: ``forward(img)`` with RGB in [0, 1], a
``description`` for a run's record, nothing trainable, always in eval mode.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GABOR_MODES = ("simple", "energy")
# One octave of bandwidth: the envelope's sigma is this times the wavelength (Daugman's
# relation for a half-amplitude bandwidth of one octave, 0.56).
_SIGMA_PER_WAVELENGTH = 0.56
_PYRAMID_SIGMA = 1.0  # the low-pass before each 2x decimation of the pyramid
_ENERGY_EPS = 1e-6  # keeps the energy's gradient finite where a pair's responses are both 0


def gaussian_kernel1d(sigma: float) -> Tensor:
    """A normalised 1-D Gaussian (float64) of radius ceil(3 sigma)."""
    if sigma <= 0:
        raise ValueError(f"a Gaussian's sigma must be > 0, got {sigma}")
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: Tensor, kernel1d: Tensor) -> Tensor:
    """``x`` (N, C, H, W) blurred per channel by the separable ``kernel1d``, reflect padded."""
    channels, radius = x.shape[1], kernel1d.numel() // 2
    k = kernel1d.to(device=x.device, dtype=x.dtype)
    # reflect padding needs a side longer than the radius; a tiny image is padded by
    # replication instead (no such image reaches a training step, but validation may)
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def gabor_pairs(wavelength: float, orientations: int) -> Tensor:
    """The bank of one scale: (2 * orientations, 1, k, k) float64, even then odd filter of
    each orientation, each of zero mean and unit L2 norm; orientations evenly over 180 deg."""
    sigma = _SIGMA_PER_WAVELENGTH * wavelength
    radius = math.ceil(3 * sigma)
    coords = torch.arange(-radius, radius + 1, dtype=torch.float64)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    envelope = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    filters = []
    for i in range(orientations):
        theta = math.pi * i / orientations
        along = x * math.cos(theta) + y * math.sin(theta)
        phase = 2 * math.pi * along / wavelength
        for carrier in (torch.cos(phase), torch.sin(phase)):
            f = envelope * carrier
            f = f - envelope * (f.sum() / envelope.sum())  # no response to flat regions
            filters.append(f / f.norm())
    return torch.stack(filters).unsqueeze(1)


class GaborFeatureExtractor(nn.Module):
    """A fixed bank of Gabor quadrature pairs at several scales and orientations, per RGB
    channel, input RGB in [0, 1].

    - ``scales``: pyramid levels (each a 2x decimation after a Gaussian low-pass); the
      filters' ``wavelength`` in pixels of a level is the same at each, so the image sees
      wavelengths ``wavelength * 2**s``.
    - ``orientations``: evenly spaced over 180 degrees; an even (cosine) and an odd (sine)
      filter each, of zero mean and unit norm.
    - ``mode``: 'simple' - the half-wave rectified responses ReLU(+-even), ReLU(+-odd)
      (sparse, a ReLU after each linear filter as in VGG19); 'energy' - each pair's local
      energy sqrt(even^2 + odd^2), which does not change when a texture shifts by less than a
      wavelength.
    - ``lowpass``: > 0 appends the pyramid's low-pass residual (the RGB image low-passed and
      decimated ``scales`` times) at this weight: the filters have zero mean, so without it
      the features say nothing of colour and brightness.

    The output is every level's features flattened and concatenated, (N, D): the perceptual
    loss only compares features element by element. Level s is weighted by ``2**s`` so that
    on natural photos (band-pass amplitude about doubling per octave down, a quarter of the
    elements per level) the levels weigh about alike. The filters are computed from these
    numbers alone (no weights, no data, no random draw); ``filters_sha256`` is the hash of
    their float32 values, and ``description`` names it.
    """

    def __init__(self, scales: int = 3, orientations: int = 6, wavelength: float = 4.0,
                 mode: str = "simple", lowpass: float = 0.0) -> None:
        super().__init__()
        if mode not in GABOR_MODES:
            raise ValueError(f"Gabor mode must be one of {GABOR_MODES}, got {mode!r}")
        if scales < 1 or orientations < 1 or wavelength < 2:
            raise ValueError(f"need scales >= 1, orientations >= 1 and wavelength >= 2 px "
                             f"(Nyquist), got {scales}, {orientations}, {wavelength}")
        if lowpass < 0:
            raise ValueError(f"the low-pass residual's weight must be >= 0, got {lowpass}")
        self.scales, self.orientations, self.mode = scales, orientations, mode
        self.lowpass = float(lowpass)
        bank = gabor_pairs(wavelength, orientations).float()
        # one bank per RGB channel (grouped convolution)
        self.register_buffer("filters", bank.repeat(3, 1, 1, 1), persistent=False)
        self.register_buffer("pyramid", gaussian_kernel1d(_PYRAMID_SIGMA).float(),
                             persistent=False)
        digest = hashlib.sha256()
        for tensor in (self.filters, self.pyramid):
            digest.update(tensor.contiguous().numpy().tobytes())
        self.filters_sha256 = digest.hexdigest()
        waves = ", ".join(f"{wavelength * 2**s:g}" for s in range(scales))
        cells = "rectified simple cells" if mode == "simple" else "complex cells (energy)"
        self.description = (f"gabor filter bank, {cells}: {orientations} orientations x "
                            f"{scales} scales (wavelengths {waves} px) per RGB channel, "
                            f"filters sha256 {self.filters_sha256[:16]}")
        if self.lowpass:
            self.description += f", with the low-pass residual (weight {self.lowpass:g})"
        super().train(False)

    def train(self, mode: bool = True) -> GaborFeatureExtractor:
        """Always eval: the bank is a fixed measuring instrument."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        filters = self.filters.to(dtype=x.dtype)
        pad = filters.shape[-1] // 2
        levels = []
        for s in range(self.scales):
            if s:
                x = gaussian_blur(x, self.pyramid)[..., ::2, ::2]
            mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
            r = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), filters, groups=3)
            even, odd = r[:, 0::2], r[:, 1::2]
            if self.mode == "simple":
                feat = torch.cat([F.relu(even), F.relu(-even), F.relu(odd), F.relu(-odd)], 1)
            else:
                # float32: under fp16 autocast the squares of small responses would underflow
                e, o = even.float(), odd.float()
                feat = torch.sqrt(e * e + o * o + _ENERGY_EPS**2)
            levels.append(feat.flatten(1) * 2.0**s)
        if self.lowpass:
            # the colour and brightness the zero-mean filters are blind to; weighted by the
            # 4**scales pixels each of its elements stands for, so that at weight 1 it counts
            # as a full-resolution colour image would
            residual = gaussian_blur(x, self.pyramid)[..., ::2, ::2]
            levels.append(residual.flatten(1) * (self.lowpass * 4.0**self.scales))
        return torch.cat(levels, 1)


class BandLimited(nn.Module):
    """``extractor`` on its input low-passed by a Gaussian of ``sigma`` pixels.

    Both SR and HR pass the low-pass (the loss calls this module on each), so the features
    compare only their low-passed content, and the gradient that reaches the generator is the
    extractor's gradient blurred by the same Gaussian (its own adjoint): a periodic pattern
    finer than the low-pass's band cannot come from it.
    """

    def __init__(self, extractor: nn.Module, sigma: float) -> None:
        super().__init__()
        self.extractor = extractor
        self.sigma = float(sigma)
        self.register_buffer("kernel", gaussian_kernel1d(self.sigma).float(), persistent=False)
        self.description = (f"{extractor.description}, on its input low-passed by a "
                            f"Gaussian of sigma {self.sigma:g} px")
        super().train(False)

    def train(self, mode: bool = True) -> BandLimited:
        """Always eval, as the extractor it wraps."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(gaussian_blur(x, self.kernel))
