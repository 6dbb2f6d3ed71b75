"""The default dataset, which needs no download: photographs that ship with installed packages.

Every image loads offline from a wheel this project depends on: scikit-image's sample data,
matplotlib's sample data, and pyiqa's example images (five reference photos of the TID2013
database, which are Kodak photographs at 512x384, and four photos from its speed-test folder).
Images that ``skimage.data`` would fetch over the network (``kidney``, ``lily``, ...) are not
used. Greyscale images become three equal channels.

Three splits, disjoint:

- ``train``: every other natural photo and texture (20 images);
- ``val``: coffee and chelsea, scored during training (intermediate validations);
- ``test``: the five TID2013/Kodak references, held out: no training run ever sees them, and
  no setting of the presets was tuned on them.

LR is made like the benchmark LR files: MATLAB-bicubic ``imresize(HR, 1/scale)`` rounded to 8
bits (``make_lr``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import skimage.data
from PIL import Image

from .datasets import ImagePair, make_lr
from .io import DataError, mod_crop


def _package_file(package: str, relative: str) -> Callable[[], np.ndarray]:
    """A loader of an image file installed by ``package`` (at ``relative`` in site-packages)."""

    def load() -> np.ndarray:
        try:
            path = Path(str(metadata.distribution(package).locate_file(relative)))
        except metadata.PackageNotFoundError:
            path = None
        if path is None or not path.is_file():
            version = _version(package)
            raise DataError(
                f"embedded image {relative} not found: it ships with {package}"
                f"{' ' + version if version else ''} (pinned in constraints.txt); reinstall "
                f"it, or set train_hr/val_hr/test_sets to folders of your own")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    return load


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def _matplotlib_sample(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / name
        if not path.is_file():
            raise DataError(f"embedded image {name} not found in matplotlib's sample data at "
                            f"{path.parent}")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    return load


def _grey(loader: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    return lambda: np.repeat(np.asarray(loader())[:, :, None], 3, axis=2)


_TID = "ResultsCalibra/ref_dir/"
_SPEED = "tests/test_efficiency_img_dir/"

# name -> loader returning a uint8 (H, W, 3) RGB array. A dict literal: the one list of images.
EMBEDDED_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    # scikit-image colour photos
    "astronaut": skimage.data.astronaut,
    "rocket": skimage.data.rocket,
    "stereo_motorcycle_left": lambda: skimage.data.stereo_motorcycle()[0],
    "stereo_motorcycle_right": lambda: skimage.data.stereo_motorcycle()[1],
    "immunohistochemistry": skimage.data.immunohistochemistry,
    "retina": skimage.data.retina,
    "hubble_deep_field": skimage.data.hubble_deep_field,
    "coffee": skimage.data.coffee,
    "chelsea": skimage.data.chelsea,
    # scikit-image greyscale photos and textures
    "camera": _grey(skimage.data.camera),
    "coins": _grey(skimage.data.coins),
    "moon": _grey(skimage.data.moon),
    "page": _grey(skimage.data.page),
    "brick": _grey(skimage.data.brick),
    "grass": _grey(skimage.data.grass),
    "gravel": _grey(skimage.data.gravel),
    "cell": _grey(skimage.data.cell),
    # matplotlib's sample photo
    "grace_hopper": _matplotlib_sample("grace_hopper.jpg"),
    # pyiqa's example photos
    "spaq_highway": _package_file("pyiqa", _SPEED + "SPAQ_10241.jpg"),
    "frame_garden": _package_file("pyiqa", _SPEED + "frame_7gzdcz9sif0ekg31.jpg"),
    "frame_sunset": _package_file("pyiqa", _SPEED + "frame_9ogwhvvy7gfj6jzh.jpg"),
    "frame_night": _package_file("pyiqa", _SPEED + "frame_4wrwr48cdk6rbcjl.jpg"),
    "tid2013_i03": _package_file("pyiqa", _TID + "I03.bmp"),
    "tid2013_i04": _package_file("pyiqa", _TID + "I04.bmp"),
    "tid2013_i06": _package_file("pyiqa", _TID + "I06.bmp"),
    "tid2013_i08": _package_file("pyiqa", _TID + "I08.bmp"),
    "tid2013_i19": _package_file("pyiqa", _TID + "I19.bmp"),
}

EMBEDDED_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut", "rocket", "stereo_motorcycle_left", "stereo_motorcycle_right",
        "immunohistochemistry", "retina", "hubble_deep_field", "grace_hopper", "spaq_highway",
        "frame_garden", "frame_sunset", "frame_night", "camera", "coins", "moon", "page",
        "brick", "grass", "gravel", "cell",
    ),
    "val": ("coffee", "chelsea"),
    "test": ("tid2013_i03", "tid2013_i04", "tid2013_i06", "tid2013_i08", "tid2013_i19"),
}
Split = Literal["train", "val", "test"]


def embedded_image(name: str) -> np.ndarray:
    """One embedded photograph as float32 HWC RGB in [0, 1] (not mod-cropped)."""
    return _embedded_uint8(name).astype(np.float32) / 255.0


@lru_cache(maxsize=64)
def _embedded_uint8(name: str) -> np.ndarray:
    if name not in EMBEDDED_IMAGES:
        raise ValueError(f"unknown embedded image {name!r}; known: {', '.join(EMBEDDED_IMAGES)}")
    img = np.asarray(EMBEDDED_IMAGES[name]())
    img = img[:, :, :3]
    img.setflags(write=False)
    return img


def embedded_pairs(split: Split, scale: int = 4) -> list[ImagePair]:
    """The HR/LR pairs of one split of ``EMBEDDED_SPLIT`` (HR mod-cropped to ``scale``)."""
    if split not in EMBEDDED_SPLIT:
        raise ValueError(f"split must be one of {', '.join(EMBEDDED_SPLIT)}, got {split!r}")
    pairs = []
    for name in EMBEDDED_SPLIT[split]:
        hr = mod_crop(embedded_image(name), scale)
        pairs.append(ImagePair(name=name, hr=hr, lr=make_lr(hr, scale)))
    return pairs
