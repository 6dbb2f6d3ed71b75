"""GAN losses on raw discriminator outputs (logits): standard GAN and relativistic average GAN.

docs/method.md section 2. Every loss uses binary cross-entropy with logits (numerically
stable).
``real`` and ``fake`` are the discriminator's raw outputs C(x_r) and C(x_f) for one mini-batch.

Reductions (one choice for both kinds, so that the ``ragan`` switch changes only relativism):
- discriminator: the mean of its real term and its fake term;
- generator: standard GAN has one term, -E[log D(x_f)] (the non-saturating form); RaGAN has two,
  eq. (2), averaged as in the reference implementation (xinntao's ESRGAN/BasicSR), so that
  lambda = 5e-3 means what it meant there.

What must be detached is the caller's business and is done in ``esrgan.train``: in the
discriminator step ``fake`` comes from a detached G output; in the generator step the real
logits enter RaGAN's generator loss as constants (D is not being updated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from esrgan.distributed import batch_mean


def _bce(logits: Tensor, target_is_real: bool) -> Tensor:
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def standard_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """L_D = -E[log sigma(C(x_r))] - E[log(1 - sigma(C(x_f)))], halved."""
    return 0.5 * (_bce(real, True) + _bce(fake, False))


def standard_g_loss(real: Tensor, fake: Tensor) -> Tensor:
    """L_G = -E[log sigma(C(x_f))]; ``real`` is unused (kept for one signature)."""
    del real
    return _bce(fake, True)


def ragan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Eq. (1): D_Ra(x_r, x_f) = sigma(C(x_r) - E[C(x_f)]), averaged over its two terms."""
    return 0.5 * (_bce(real - batch_mean(fake), True) + _bce(fake - batch_mean(real), False))


def ragan_g_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Eq. (2): the generator gets gradients from both real and generated data."""
    return 0.5 * (_bce(real - batch_mean(fake), False) + _bce(fake - batch_mean(real), True))
