"""VGG19 feature extractor for the perceptual loss (docs/method.md section 3).

ESRGAN takes conv5_4 features *before* the ReLU (SRGAN: after). Only the layers up to the
requested one are built, with torchvision's ``vgg19().features`` indices, so torchvision's
ImageNet file ``vgg19-dcbb9e9d.pth`` loads into them directly (``features.{i}.weight``).

Compute nodes have no internet: the ImageNet file is looked up in
``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``), where ``make weights`` puts it, and
verified there against its published hash (``esrgan.downloads``), or taken from an explicit
path; it is only downloaded when ``download=True``. ``weights='random'`` is the offline
substitute: a deterministic (seeded) random-weight VGG19, which is *not* the paper's loss.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from esrgan.downloads import WEIGHT_FILES, FetchError, fetch, verified
from esrgan.weights import CheckpointError, WeightsNotFound, load_checkpoint, load_into

# torchvision's VGG19_Weights.IMAGENET1K_V1 (its name, URL and hash: esrgan.downloads)
IMAGENET_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_URL = WEIGHT_FILES[IMAGENET_FILE].url
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's VGG19 ("E") configuration: conv widths, 'M' = 2x2 max-pool.
_VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)


def _conv_indices() -> dict[str, int]:
    """conv1_1 -> 0, conv1_2 -> 2, conv2_1 -> 5, ... (index in torchvision's ``features``)."""
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 1
    for item in _VGG19_CFG:
        if item == "M":
            index, block, conv = index + 1, block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = index
            index, conv = index + 2, conv + 1  # conv then its ReLU
    return names


CONV_LAYERS: dict[str, int] = _conv_indices()


def imagenet_weights_path() -> Path:
    """Where torchvision keeps (and this class looks for) the ImageNet VGG19 file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


class VGGFeatureExtractor(nn.Module):
    """Frozen VGG19 truncated at ``layer`` (conv1_1 ... conv5_4), input RGB in [0, 1].

    - ``before_activation``: features of the conv itself (ESRGAN) or after its ReLU (SRGAN).
    - ``weights``: 'imagenet' (torchvision's file in the hub cache), a path to that file, or
      'random' (torchvision's VGG init, Kaiming normal fan_out, drawn from a
      ``torch.Generator`` seeded with ``seed``: independent of the global RNG).
    - ``use_input_norm``: subtract the ImageNet mean and divide by its std first.
    - ``download``: fetch the ImageNet file when missing (default off: no internet).
    - ``pool``: 'max' (VGG19's own) or 'avg' (2x2 average pools, the same shapes).

    Parameters never require grad and the module stays in eval mode whatever ``train()``
    is asked. ``description`` says what this extractor is, for a run's record.
    """

    def __init__(self, layer: str = "conv5_4", before_activation: bool = True,
                 weights: str | os.PathLike = "imagenet", seed: int = 0,
                 use_input_norm: bool = True, download: bool = False,
                 pool: str = "max") -> None:
        super().__init__()
        if layer not in CONV_LAYERS:
            raise ValueError(
                f"VGG19 layer must be one of {', '.join(CONV_LAYERS)} (relu_* = "
                f"before_activation=False), got {layer!r}")
        last = CONV_LAYERS[layer] + (0 if before_activation else 1)
        if pool not in ("max", "avg"):
            raise ValueError(f"VGG19 pooling must be 'max' or 'avg', got {pool!r}")
        self.features = _vgg19_features(last, pool)
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

        if weights == "random":
            _random_init_(self.features, seed)
            source = f"random weights (seed {seed})"
        else:
            path = _find_weights(weights, download)
            _load_features(self.features, path)
            source = f"imagenet weights ({path.name})" if weights == "imagenet" else \
                f"weights from {path}"
        act = "before" if before_activation else "after"
        pooling = "" if pool == "max" else ", average pooling"
        self.description = f"vgg19 {layer} {act}-activation{pooling}, {source}"

        for param in self.parameters():
            param.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        """Always eval: the extractor is a fixed measuring instrument, never trained."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        return self.features(x)


def _vgg19_features(last: int, pool: str = "max") -> nn.Sequential:
    """torchvision's ``vgg19().features[: last + 1]``, built without the rest of VGG19
    (``pool='avg'``: its max-pools replaced by 2x2 average pools, the same shapes)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _VGG19_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2) if pool == "max"
                          else nn.AvgPool2d(kernel_size=2, stride=2))
        else:
            # skip_init: allocate without the default init, which would draw from the global
            # RNG (and be overwritten anyway by the loaded or the seeded weights).
            conv = nn.utils.skip_init(nn.Conv2d, in_ch, int(item), 3, padding=1)
            layers += [conv, nn.ReLU(inplace=True)]
            in_ch = int(item)
        if len(layers) > last:
            break
    return nn.Sequential(*layers[: last + 1])


def _random_init_(features: nn.Sequential, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for module in features:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu",
                                    generator=gen)
            nn.init.zeros_(module.bias)


def _find_weights(weights: str | os.PathLike, download: bool) -> Path:
    if weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise WeightsNotFound(
                f"VGG19 weights file {path} not found (or use vgg_weights=random offline)")
        return path
    path = imagenet_weights_path()
    if path.is_file():
        return verified(path)
    hint = (f"ImageNet VGG19 weights {IMAGENET_FILE} not found: put it into {path.parent} "
            f"(`make weights` fetches it from {IMAGENET_URL}), or use vgg_weights=random for a "
            f"random-weight VGG19 offline")
    if not download:
        raise WeightsNotFound(hint)
    try:
        errors = fetch([WEIGHT_FILES[IMAGENET_FILE]], progress=False,
                       folders={"torch": path.parent}, log=lambda _: None)
    except (FetchError, OSError) as exc:
        errors = [str(exc)]
    if errors:  # no network, proxy, disk full, wrong hash: all end the same way
        raise WeightsNotFound(f"{hint} (download failed: {errors[0]})")
    return path


def _load_features(features: nn.Sequential, path: Path) -> None:
    """Load torchvision's ``features.{i}.*`` entries for the layers that were built."""
    obj = load_checkpoint(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a VGG19 state dict")
    holder = nn.Module()  # gives the built layers torchvision's key names, features.{i}.*
    holder.features = features
    state = {k: obj[k] for k in holder.state_dict() if k in obj}
    load_into(holder, state, str(path))
