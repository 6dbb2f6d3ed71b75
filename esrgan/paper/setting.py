"""The paper's training setting (section 4 and the supplementary material), as data.

The ``paper`` preset takes its values from here, and a run's record lists every value of its
own that differs from these (its departures from the paper, ``esrgan.paper.departures``).
"""

from __future__ import annotations

from typing import Any

# Sizes, schedule and loss weights of ESRGAN's training, by config key.
PAPER_SETTING: dict[str, Any] = {
    "nf": 64,  # generator feature channels
    "nb": 23,  # RRDB blocks
    "gc": 32,  # RDB growth channels
    "nb_resblock": 16,  # SRGAN's residual blocks (the baseline trunk)
    "d_nf": 64,  # discriminator base channels (VGG-style, 128x128 input)
    "scale": 4,
    "patch": 128,  # HR patch
    "batch": 16,
    "steps1": 1_000_000,  # PSNR-oriented stage, L1 only
    "lr1": 2e-4,
    "lr_decay_at1": [0.2, 0.4, 0.6, 0.8],  # halved every 200k of 1M
    "steps2": 400_000,  # GAN stage
    "lr2": 1e-4,
    "lr_d": 1e-4,
    "lr_decay_at2": [0.125, 0.25, 0.5, 0.75],  # halved at 50k, 100k, 200k, 300k of 400k
    "lr_gamma": 0.5,
    "adam_betas": [0.9, 0.999],
    "vgg_layer": "conv5_4",  # perceptual features of an ImageNet VGG19
    "percep_weight": 1.0,  # eq. (3): L_G = L_percep + lambda * L_G^Ra + eta * L1
    "lambda_adv": 5e-3,
    "eta_l1": 1e-2,
}

PAPER_DATA = "DF2K (DIV2K 800 + Flickr2K 2650 2K images)"

# The sizes a reduced run is compared with in its list of departures.
SCALE_KEYS: tuple[str, ...] = ("nf", "nb", "gc", "steps1", "steps2", "batch", "patch")
