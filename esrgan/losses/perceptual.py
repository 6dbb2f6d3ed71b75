"""Perceptual loss: L1 distance between VGG19 features of SR and HR (docs/method.md sec. 3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esrgan.distributed import batch_mean


class PerceptualLoss(nn.Module):
    """L1 between ``extractor(sr)`` and ``extractor(hr)`` features.

    ``normalize=True`` divides the L1 by the (detached) mean |feature| of the HR features, so the
    loss measures a relative feature error. This is NOT in the paper: with a random-weight VGG19
    (offline runs) the features have an arbitrary scale, which makes the perceptual term's weight
    relative to L1 and the adversarial term arbitrary too: stage 2 was measured to collapse
    without it and to stay stable with it. Reports state it whenever it is on.
    """

    def __init__(self, extractor: nn.Module, normalize: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        self.extractor = extractor
        self.normalize = normalize
        self.eps = eps

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        with torch.no_grad():
            hr_feat = self.extractor(hr)
        sr_feat = self.extractor(sr)
        loss = torch.nn.functional.l1_loss(sr_feat, hr_feat)
        if self.normalize:
            loss = loss / (batch_mean(hr_feat.abs()) + self.eps)  # global batch under DDP
        return loss


def active_fraction(extractor: nn.Module, image: Tensor) -> float:
    """Fraction of the extractor's units that are active (> 0, i.e. pass the ReLU) on ``image``.

    The premise of the paper's before-activation loss (its section 3.3): for an ImageNet VGG19
    only 11.17% of conv5_4's units are active on the baboon photo, so features taken after the
    ReLU are sparse. ``image`` is a (1, 3, H, W) or (3, H, W) RGB tensor in [0, 1]; the
    extractor's features before or after its ReLU give the same fraction.
    """
    if image.ndim == 3:
        image = image.unsqueeze(0)
    with torch.no_grad():
        # a fixed filter bank holds its filters as buffers, a VGG19 as parameters
        tensors = [*extractor.parameters(), *extractor.buffers()]
        device = tensors[0].device if tensors else image.device
        features = extractor(image.to(device))
    return float((features > 0).float().mean())
