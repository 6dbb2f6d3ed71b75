"""VGG19 blocks trained on the embedded training photos by a self-supervised pretext task.

For the GAN-stage pilots (docs/gan_stage_pilots.md): a random-weight VGG19's filters are not
smooth, so the gradient of a perceptual loss on its features paints a grid; filters learned
from photos are smooth edge and colour detectors. No ImageNet and no labels: the pretext task
is denoising. The network's layers up to ``--layer`` take a noisy crop (Gaussian noise of a
standard deviation drawn per image) and a small decoder at each block's last conv (conv2_2,
conv3_4, conv4_4, conv5_4 as far as built) reconstructs the clean crop from that block's
features alone, so that every block, not only the last, must keep what the image holds.

    python benchmarks/pretext_vgg19.py --out FILE [--layer conv5_4] [--steps 1000] [--seed 0]

The file holds torchvision's keys (``features.{i}.weight`` / ``.bias``) for the layers built,
so that a run loads it with ``vgg_weights=FILE`` (and ``percep_normalize=True`` to keep the
normaliser the random VGG19 has). Printed: the loss every 100 steps, the wall time and the
file's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esrgan.archs.vgg import (
    CONV_LAYERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    _random_init_,
    _vgg19_features,
)
from esrgan.data.embedded import embedded_pairs

# the last conv of each block, the stride of its features, its width
TAPS = {"conv1_2": (1, 64), "conv2_2": (2, 128), "conv3_4": (4, 256), "conv4_4": (8, 512),
        "conv5_4": (16, 512)}


class Decoder(nn.Module):
    """Features of stride ``stride`` -> an RGB image at full resolution (sub-pixel conv)."""

    def __init__(self, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, 128, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(128, 3 * stride * stride, 1))
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.body(x))


def random_crops(photos: list[np.ndarray], batch: int, patch: int,
                 gen: np.random.Generator) -> Tensor:
    """``batch`` random ``patch``-pixel crops (random photo, flip, 90-degree turn), [0, 1]
    (the photos as 8-bit or as floats in [0, 1])."""
    crops = []
    for _ in range(batch):
        img = photos[gen.integers(len(photos))]
        y = gen.integers(img.shape[0] - patch + 1)
        x = gen.integers(img.shape[1] - patch + 1)
        crop = img[y:y + patch, x:x + patch]
        if gen.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.rot90(crop, gen.integers(4))
        crops.append(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1))
    batch_ = torch.stack(crops).float()
    return batch_ / 255.0 if photos[0].dtype == np.uint8 else batch_


def train(layer: str, steps: int, batch: int, patch: int, lr: float, seed: int,
          max_sigma: float) -> nn.Sequential:
    """VGG19's features up to ``layer``, trained by multi-depth denoising from a seeded
    Kaiming init (the random VGG19's)."""
    torch.manual_seed(seed)
    features = _vgg19_features(CONV_LAYERS[layer] + 1)  # through the layer's ReLU
    _random_init_(features, seed)
    taps = {CONV_LAYERS[name]: name for name in TAPS if CONV_LAYERS[name] <= CONV_LAYERS[layer]}
    decoders = nn.ModuleDict({name: Decoder(TAPS[name][1], TAPS[name][0])
                              for name in taps.values()})
    params = [*features.parameters(), *decoders.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    photos = [p.hr for p in embedded_pairs("train")]
    gen = np.random.default_rng(seed)
    features.train()
    running = 0.0
    for step in range(1, steps + 1):
        clean = random_crops(photos, batch, patch, gen)
        sigma = torch.from_numpy(gen.uniform(0, max_sigma, (batch, 1, 1, 1))).float()
        noisy = clean + sigma * torch.randn_like(clean)
        x = (noisy - mean) / std
        loss = clean.new_zeros(())
        for i, module in enumerate(features):
            x = module(x)
            if i - 1 in taps and isinstance(module, nn.ReLU):
                loss = loss + F.l1_loss(decoders[taps[i - 1]](x), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item() / len(taps)
        if step % 100 == 0:
            print(f"step {step}: mean L1 per tap {running / 100:.4f}", flush=True)
            running = 0.0
    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layer", default="conv5_4", choices=list(CONV_LAYERS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-sigma", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.monotonic()
    features = train(args.layer, args.steps, args.batch, args.patch, args.lr, args.seed,
                     args.max_sigma)
    state = {f"features.{k}": v.detach().clone() for k, v in features.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {len(state)} tensors, {time.monotonic() - t0:.0f} s, sha256 {digest}")


if __name__ == "__main__":
    main()
