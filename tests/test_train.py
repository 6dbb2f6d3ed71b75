"""The training stages in-process: both precisions train, keep fp32 weights, stay finite."""

from __future__ import annotations

import pytest
import torch

from esrgan.archs.discriminator import VGGStyleDiscriminator
from esrgan.archs.rrdbnet import build_generator
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.losses import PerceptualLoss
from esrgan.train import StageSettings, train_gan, train_psnr


def batches(start: int):
    gen = torch.Generator().manual_seed(start)
    while True:
        hr = torch.rand(2, 3, 32, 32, generator=gen)
        yield {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}


@pytest.mark.parametrize(("precision", "channels_last"), [("fp32", False), ("bf16", True)])
def test_both_stages_train_in_each_precision(precision: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    g = build_generator(nf=8, nb=1, gc=4)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    settings = StageSettings(steps=4, lr=1e-3, batch_size=2, ckpt_every=0, log_every=1,
                             precision=precision, channels_last=channels_last)
    logged: list[tuple[str, float, int]] = []
    train_psnr(g, batches, settings, log=lambda n, v, s: logged.append((n, v, s)),
               progress=False)
    d = VGGStyleDiscriminator(nf=8, patch_size=32)
    percep = PerceptualLoss(VGGFeatureExtractor("conv2_2", weights="random"), normalize=True)
    out = train_gan(g, d, percep, batches, settings, log=lambda n, v, s: logged.append((n, v, s)),
                    progress=False)
    assert out.steps == 4
    assert all(p.dtype == torch.float32 for p in g.parameters())
    assert any(not torch.equal(before[k], v) for k, v in g.state_dict().items())
    names = {n for n, _, _ in logged}
    assert {"stage1_l_pix", "stage2_l_g", "stage2_l_d"} <= names
    assert all(torch.isfinite(torch.tensor(v)) for _, v, _ in logged)


def test_unknown_precision_is_refused() -> None:
    g = build_generator(nf=8, nb=1, gc=4)
    settings = StageSettings(steps=1, lr=1e-3, batch_size=2, precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        train_psnr(g, batches, settings, progress=False)
