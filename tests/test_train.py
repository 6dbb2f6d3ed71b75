"""The training stages in-process: both precisions train, keep fp32 weights, stay finite."""

from __future__ import annotations

import pytest
import torch

from esrgan.archs.discriminator import VGGStyleDiscriminator
from esrgan.archs.rrdbnet import build_generator
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.losses import PerceptualLoss
from esrgan.train import GanWeights, train_psnr
from esrgan.train import StageSettings as _StageSettings
from esrgan.train import train_gan as _train_gan


def StageSettings(**kw) -> _StageSettings:  # noqa: N802 (the dataclass, with test defaults)
    """Stage settings for these tests: what is not given takes a small, plain value."""
    defaults = dict(lr_decay_at=(), lr_gamma=0.5, adam_betas=(0.9, 0.999), ckpt_every=0,
                    val_every=0, log_every=10, num_workers=0, precision="fp32",
                    channels_last=False, compile="off", adam="auto")
    return _StageSettings(**{**defaults, **kw})


def train_gan(*args, **kw):
    """train_gan with the paper's loss weights and RaGAN unless a test says otherwise."""
    kw.setdefault("ragan", True)
    kw.setdefault("weights", GanWeights(percep=1.0, lambda_adv=5e-3, eta_l1=1e-2))
    kw.setdefault("lr_d", 1e-3)
    return _train_gan(*args, **kw)


def batches(start: int):
    gen = torch.Generator().manual_seed(start)
    while True:
        hr = torch.rand(2, 3, 32, 32, generator=gen)
        yield {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}


@pytest.mark.parametrize(("precision", "channels_last"),
                         [("fp32", False), ("bf16", True), ("bf16-losses", True)])
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


def _train(precision: str, adam: str = "foreach") -> tuple[dict, dict]:
    """G after 3 stage-1 steps, then after 3 stage-2 steps (state dicts), from one seed."""
    torch.manual_seed(0)
    g = build_generator(nf=8, nb=1, gc=4)
    settings = StageSettings(steps=3, lr=1e-3, batch_size=2, ckpt_every=0, precision=precision,
                             adam=adam)
    train_psnr(g, batches, settings, progress=False)
    stage1 = {k: v.clone() for k, v in g.state_dict().items()}
    torch.manual_seed(1)
    d = VGGStyleDiscriminator(nf=8, patch_size=32)
    percep = PerceptualLoss(VGGFeatureExtractor("conv2_2", weights="random"), normalize=True)
    train_gan(g, d, percep, batches, settings, progress=False)
    return stage1, g.state_dict()


def test_bf16_losses_keeps_the_generator_in_fp32() -> None:
    """'bf16-losses': stage 1 (L1 only) is exactly fp32; stage 2 differs (VGG, D in bf16)."""
    fp32_1, fp32_2 = _train("fp32")
    mixed_1, mixed_2 = _train("bf16-losses")
    assert all(torch.equal(fp32_1[k], mixed_1[k]) for k in fp32_1)
    assert any(not torch.equal(fp32_2[k], mixed_2[k]) for k in fp32_2)


def test_adam_kernel_switch() -> None:
    from esrgan.train import _adam

    params = [torch.nn.Parameter(torch.ones(3))]
    for adam, fused in (("auto", None), ("foreach", None), ("fused", True)):
        opt = _adam(params, 1e-3, StageSettings(steps=1, lr=1e-3, batch_size=1, adam=adam),
                    torch.device("cpu"))
        assert opt.defaults["fused"] is fused, adam
    # one step from the same gradient: the same update up to float rounding
    updates = []
    for adam in ("foreach", "fused"):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 50))
        opt = _adam([p], 1e-2, StageSettings(steps=1, lr=1e-2, batch_size=1, adam=adam),
                    torch.device("cpu"))
        p.grad = torch.linspace(0.5, -2, 50)
        opt.step()
        updates.append(p.detach().clone())
    assert (updates[0] - updates[1]).abs().max().item() < 1e-6
    assert (updates[0] - torch.linspace(-1, 1, 50)).abs().min().item() > 9e-3  # it moved
    with pytest.raises(ValueError, match="adam must be one of auto, fused, foreach"):
        _adam(params, 1e-3, StageSettings(steps=1, lr=1e-3, batch_size=1, adam="sgd"),
              torch.device("cpu"))


@pytest.mark.parametrize("ragan", [True, False])
def test_gan_step_is_eq3_and_g_update_leaves_d_untouched(ragan: bool) -> None:
    """One GAN step on fixed tensors: the logged L_G is percep * L_percep + lambda * L_adv
    + eta * L1 of G's output before the update, and G's update gives D no gradient."""
    import copy

    import torch.nn.functional as F

    from esrgan.losses.gan import ragan_g_loss, standard_g_loss
    from esrgan.speed import grad_scaler, wrap
    from esrgan.train import GanNets, Update, gan_step

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    g = build_generator(nf=8, nb=1, gc=4)
    d = VGGStyleDiscriminator(in_ch=3, nf=8, patch_size=32)
    percep = PerceptualLoss(VGGFeatureExtractor("conv2_2", weights="random", seed=0))
    lr_img, hr_img = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    weights = GanWeights(percep=0.7, lambda_adv=5e-3, eta_l1=1e-2)

    # L_G computed here from copies, before anything trains
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    with torch.no_grad():
        sr = g0(lr_img)
        real, fake = d0(hr_img), d0(sr)
        adv = (ragan_g_loss if ragan else standard_g_loss)(real, fake)
        expected = (weights.percep * percep(sr, hr_img) + weights.lambda_adv * adv
                    + weights.eta_l1 * F.l1_loss(sr, hr_img))

    opt_g, opt_d = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
    d_before = {k: v.clone() for k, v in d.state_dict().items() if v.is_floating_point()}
    seen: dict[str, object] = {}

    class CheckedUpdate(Update):
        def __call__(self, loss, inputs):  # G's update: D must get no gradient from it
            out = super().__call__(loss, inputs)
            seen["d_grads"] = [p.grad for p in d.parameters()]
            seen["d_params"] = {k: v.clone() for k, v in d.state_dict().items()
                                if k in d_before and "running" not in k}
            return out

    nets = GanNets(g=wrap(g, cpu, "fp32", "off", parallel=False),
                   d=wrap(d, cpu, "fp32", "off", parallel=False),
                   d_frozen=wrap(d, cpu, "fp32", "off", parallel=False),
                   percep=wrap(percep, cpu, "fp32", "off", parallel=False), discriminator=d)
    losses = gan_step(nets, CheckedUpdate(opt_g, grad_scaler("fp32", cpu)),
                      Update(opt_d, grad_scaler("fp32", cpu)), [(lr_img, hr_img)], ragan,
                      weights)
    assert losses["l_g"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert all(grad is None for grad in seen["d_grads"])
    assert all(torch.equal(v, d_before[k]) for k, v in seen["d_params"].items())
    assert any(not torch.equal(v, d.state_dict()[k]) for k, v in d_before.items()
               if "running" not in k)  # D's own update then trains it


class _SteppedPerceptual(PerceptualLoss):
    """A perceptual term that sees the step: it records each step it is told of."""

    def __init__(self) -> None:
        super().__init__(VGGFeatureExtractor("conv2_2", weights="random"), normalize=True)
        self.steps: list[int] = []

    def before_step(self, step: int) -> None:
        self.steps.append(step)


def test_a_perceptual_term_sees_each_step_also_after_a_resume(tmp_path) -> None:
    torch.manual_seed(0)
    g, d = build_generator(nf=8, nb=1, gc=4), VGGStyleDiscriminator(nf=8, patch_size=32)
    ckpt = tmp_path / "checkpoint.pth"
    first = _SteppedPerceptual()
    train_gan(g, d, first, batches, StageSettings(steps=3, lr=1e-3, batch_size=2),
              checkpoint=ckpt, progress=False)
    assert first.steps == [0, 1, 2]
    again = _SteppedPerceptual()  # the same stage, 5 steps: resumes at step 3
    train_gan(g, d, again, batches, StageSettings(steps=5, lr=1e-3, batch_size=2),
              checkpoint=ckpt, progress=False)
    assert again.steps == [3, 4]


def test_the_gan_stage_without_a_perceptual_term() -> None:
    torch.manual_seed(0)
    g, d = build_generator(nf=8, nb=1, gc=4), VGGStyleDiscriminator(nf=8, patch_size=32)
    logged: list[tuple[str, float, int]] = []
    out = train_gan(g, d, None, batches, StageSettings(steps=2, lr=1e-3, batch_size=2,
                                                       log_every=1),
                    log=lambda n, v, s: logged.append((n, v, s)), progress=False)
    assert out.steps == 2
    assert {v for n, v, _ in logged if n == "stage2_l_percep"} == {0.0}
    assert all(torch.isfinite(torch.tensor(v)) for _, v, _ in logged)
