"""A tiny default dataset that needs no download: photographs shipped inside scikit-image.

All eight load offline from the scikit-image wheel (checked with scikit-image 0.26; images
that ``skimage.data`` fetches with pooch, e.g. ``kidney`` or ``lily``, are not used).
Sizes are width x height of the RGB original, then after the x4 mod-crop:

======================== ============ ============ ======
image                    original     x4 mod-crop  split
======================== ============ ============ ======
astronaut                512x512      512x512      train
rocket                   640x427      640x424      train
stereo_motorcycle_left   741x500      740x500      train
immunohistochemistry     512x512      512x512      train
retina                   1411x1411    1408x1408    train
hubble_deep_field        1000x872     1000x872     train
coffee                   600x400      600x400      val
chelsea                  451x300      448x300      val
======================== ============ ============ ======

(``stereo_motorcycle_left`` is the left view of ``skimage.data.stereo_motorcycle()``.) This is
the split measured in the project's shared notes. LR is made like the benchmark LR files:
MATLAB-bicubic ``imresize(HR, 1/scale)`` rounded to 8 bits (``make_lr``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import skimage.data

from .datasets import ImagePair, make_lr
from .io import mod_crop

# name -> loader returning a uint8 (H, W, 3) RGB array. A dict literal: the one list of images.
EMBEDDED_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": skimage.data.astronaut,
    "rocket": skimage.data.rocket,
    "stereo_motorcycle_left": lambda: skimage.data.stereo_motorcycle()[0],
    "immunohistochemistry": skimage.data.immunohistochemistry,
    "retina": skimage.data.retina,
    "hubble_deep_field": skimage.data.hubble_deep_field,
    "coffee": skimage.data.coffee,
    "chelsea": skimage.data.chelsea,
}

EMBEDDED_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut", "rocket", "stereo_motorcycle_left", "immunohistochemistry", "retina",
        "hubble_deep_field",
    ),
    "val": ("coffee", "chelsea"),
}


def embedded_image(name: str) -> np.ndarray:
    """One embedded photograph as float32 HWC RGB in [0, 1] (not mod-cropped)."""
    if name not in EMBEDDED_IMAGES:
        raise ValueError(f"unknown embedded image {name!r}; known: {', '.join(EMBEDDED_IMAGES)}")
    img = np.asarray(EMBEDDED_IMAGES[name]())
    return img[:, :, :3].astype(np.float32) / 255.0


def embedded_pairs(split: Literal["train", "val"], scale: int = 4) -> list[ImagePair]:
    """The HR/LR pairs of one split of ``EMBEDDED_SPLIT`` (HR mod-cropped to ``scale``)."""
    if split not in EMBEDDED_SPLIT:
        raise ValueError(f"split must be one of {', '.join(EMBEDDED_SPLIT)}, got {split!r}")
    pairs = []
    for name in EMBEDDED_SPLIT[split]:
        hr = mod_crop(embedded_image(name), scale)
        pairs.append(ImagePair(name=name, hr=hr, lr=make_lr(hr, scale)))
    return pairs
