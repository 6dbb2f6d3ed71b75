"""Losses: GAN losses (standard and relativistic average) and the VGG perceptual loss.

The ``ragan`` switch picks a pair of :mod:`esrgan.losses.gan` functions in ``esrgan.train``'s
``gan_step``: ``ragan_d_loss``/``ragan_g_loss`` or ``standard_d_loss``/``standard_g_loss``.
"""

from esrgan.losses.gan import ragan_d_loss, ragan_g_loss, standard_d_loss, standard_g_loss
from esrgan.losses.perceptual import PerceptualLoss

__all__ = ["PerceptualLoss", "ragan_d_loss", "ragan_g_loss", "standard_d_loss",
           "standard_g_loss"]
