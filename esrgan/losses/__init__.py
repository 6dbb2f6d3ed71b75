"""Losses: GAN losses (standard and relativistic average) and the VGG perceptual loss."""

from esrgan.losses.gan import GAN_LOSSES, discriminator_loss, generator_adversarial_loss
from esrgan.losses.perceptual import PerceptualLoss

__all__ = ["GAN_LOSSES", "PerceptualLoss", "discriminator_loss", "generator_adversarial_loss"]
