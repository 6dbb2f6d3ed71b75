"""VGG-style discriminator of SRGAN/ESRGAN (docs/method.md section 2), BasicSR module names.

Five stages, each a 3x3 stride-1 conv then a 4x4 stride-2 conv, with nf, 2nf, 4nf, 8nf, 8nf
channels; BatchNorm after every conv except the first; LeakyReLU(0.2) after each. A
``patch_size`` input ends as (8nf, patch/32, patch/32), flattened into
Linear(8nf*(patch/32)^2, 100) -> LeakyReLU(0.2) -> Linear(100, 1). The output is the raw
logit C(x) (no sigmoid): the GAN losses take logits.

``spectral_norm=True`` (not in the paper; Miyato et al. 2018) puts spectral normalisation on
every conv and linear layer (one power iteration per training forward), BatchNorm unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

_STAGE_MULT: tuple[int, ...] = (1, 2, 4, 8, 8)


class VGGStyleDiscriminator(nn.Module):
    """VGG-style D for square ``patch_size`` inputs (a multiple of 32); returns (N, 1) logits."""

    def __init__(self, in_ch: int = 3, nf: int = 64, patch_size: int = 128,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        if not isinstance(patch_size, int) or patch_size < 32 or patch_size % 32:
            raise ValueError(
                f"discriminator: patch_size must be a positive multiple of 32 (five stride-2 "
                f"stages), got {patch_size!r}")
        if nf < 1 or in_ch < 1:
            raise ValueError(f"discriminator: nf and in_ch must be >= 1, got {nf}, {in_ch}")
        self.in_ch = in_ch
        self.patch_size = patch_size
        layers: dict[str, nn.Module] = {}
        prev = in_ch
        for i, mult in enumerate(_STAGE_MULT):
            ch = nf * mult
            # BN follows every conv but the very first; a conv followed by BN needs no bias.
            first = i == 0
            layers[f"conv{i}_0"] = nn.Conv2d(prev, ch, 3, 1, 1, bias=first)
            if not first:
                layers[f"bn{i}_0"] = nn.BatchNorm2d(ch, affine=True)
            layers[f"conv{i}_1"] = nn.Conv2d(ch, ch, 4, 2, 1, bias=False)
            layers[f"bn{i}_1"] = nn.BatchNorm2d(ch, affine=True)
            prev = ch
        for name, module in layers.items():
            self.add_module(name, module)
        side = patch_size // 32
        self.linear1 = nn.Linear(prev * side * side, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self._order = list(layers)
        if spectral_norm:
            for module in self.modules():
                if isinstance(module, nn.Conv2d | nn.Linear):
                    _spectral_norm(module)

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.in_ch, self.patch_size, self.patch_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"discriminator: expected input of shape (N, {expected[0]}, {expected[1]}, "
                f"{expected[2]}), got {tuple(x.shape)}")
        feat = x
        for name in self._order:
            feat = getattr(self, name)(feat)
            if name.startswith("bn") or name == "conv0_0":
                feat = self.lrelu(feat)
        feat = self.lrelu(self.linear1(feat.flatten(1)))
        return self.linear2(feat)
