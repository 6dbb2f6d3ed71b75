"""Config -> model and losses: each of the six switches changes exactly its part."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from esrgan.losses.gan import ragan_d_loss, ragan_g_loss, standard_d_loss, standard_g_loss
from esrgan.paper.switches import GENERATOR_SWITCHES as G_SWITCHES
from esrgan.paper.switches import SWITCH_TABLE
from experiments import build, identity, presets

SWITCHES = {s.name: s.baseline for s in SWITCH_TABLE}  # each switch's other value


def config(**overrides) -> dict:
    """The tiny preset's config as Sacred computes it, with overrides."""
    return presets.resolve("tiny", overrides)


def test_tiny_config_is_the_tiny_preset() -> None:
    cfg = config()
    assert (cfg["preset"], cfg["nf"], cfg["nb"], cfg["vgg_weights"]) == ("tiny", 16, 1, "random")
    assert cfg["percep_normalize"] is True  # derived from vgg_weights == 'random'
    assert config(vgg_weights="imagenet")["percep_normalize"] is False
    assert presets.validate(cfg) == []


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_switch_changes_only_its_part(switch: str) -> None:
    base, flipped = config(), config(**{switch: SWITCHES[switch]})
    arch_a, arch_b = build.generator_arch(base), build.generator_arch(flipped)
    changed = {k for k in arch_a if arch_a[k] != arch_b[k]}
    expected = {"rrdb": {"trunk", "nb"}, "bn": {"bn"}, "beta": {"beta"},
                "small_init": {"init_scale"}}.get(switch, set())
    assert changed == expected
    d_a, d_b = build.make_discriminator(base, 0), build.make_discriminator(flipped, 0)
    assert (set(d_a.state_dict()) != set(d_b.state_dict())) == (switch == "d_spectral_norm")
    vgg_a, vgg_b = build.make_feature_extractor(base), build.make_feature_extractor(flipped)
    assert (vgg_a.description != vgg_b.description) == (switch == "vgg_before_act")
    # stage 1 is shared exactly when the switch is not a generator switch
    assert (identity.stage1_key(base) != identity.stage1_key(flipped)) == (switch in G_SWITCHES)
    assert identity.cell_key(base) != identity.cell_key(flipped)


def _modules(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_generator_switches_build_their_networks() -> None:
    full = build.make_generator(config(), seed=0)
    assert _modules(full, nn.BatchNorm2d) == 0
    with_bn = build.make_generator(config(bn=True), seed=0)
    assert _modules(with_bn, nn.BatchNorm2d) > 0
    resblocks = build.make_generator(config(rrdb=False), seed=0)
    assert type(next(iter(resblocks.body.children()))).__name__ == "ResBlock"
    assert len(list(resblocks.body.children())) == config()["nb_resblock"]
    # small init scales the residual-branch weights only
    plain = build.make_generator(config(small_init=False), seed=0)
    small = build.make_generator(config(), seed=0)
    w_plain = plain.body[0].rdb1.conv1.weight.std().item()
    w_small = small.body[0].rdb1.conv1.weight.std().item()
    assert w_small == pytest.approx(0.1 * w_plain, rel=1e-5)
    assert torch.equal(plain.conv_first.weight, small.conv_first.weight)


def test_feature_switch_is_a_relu() -> None:
    before = build.make_feature_extractor(config())
    after = build.make_feature_extractor(config(vgg_before_act=False))
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(torch.relu(before(x)), after(x))
    assert (before(x) < 0).any()


def test_discriminator_follows_the_patch() -> None:
    for patch in (32, 64, 128):
        d = build.make_discriminator(config(patch=patch), seed=0)
        assert d(torch.rand(2, 3, patch, patch)).shape == (2, 1)


def test_gan_losses_match_the_formulas() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-0.5, 1.5, 0.0])

    def sp(x: float) -> float:  # -log sigma(-x) = softplus(x)
        return math.log1p(math.exp(x))

    # standard: L_D = mean(-log s(r)) + mean(-log(1-s(f))), halved; L_G = mean(-log s(f))
    d_std = 0.5 * (sum(sp(-r) for r in real.tolist()) / 3 + sum(sp(f) for f in fake.tolist()) / 3)
    g_std = sum(sp(-f) for f in fake.tolist()) / 3
    assert standard_d_loss(real, fake).item() == pytest.approx(d_std, rel=1e-6)
    assert standard_g_loss(real, fake).item() == pytest.approx(g_std)
    # relativistic average: eq. (1) and (2) with the batch means, averaged over two terms
    mr, mf = real.mean().item(), fake.mean().item()
    d_ra = 0.5 * (sum(sp(-(r - mf)) for r in real.tolist()) / 3
                  + sum(sp(f - mr) for f in fake.tolist()) / 3)
    g_ra = 0.5 * (sum(sp(r - mf) for r in real.tolist()) / 3
                  + sum(sp(-(f - mr)) for f in fake.tolist()) / 3)
    assert ragan_d_loss(real, fake).item() == pytest.approx(d_ra, rel=1e-6)
    assert ragan_g_loss(real, fake).item() == pytest.approx(g_ra, rel=1e-6)


def test_ragan_generator_loss_depends_on_real_logits() -> None:
    """The generator gets gradients from both real and generated data in (2)."""
    fake = torch.tensor([0.3, -0.2], requires_grad=True)
    real = torch.tensor([1.0, 2.0], requires_grad=True)
    ragan_g_loss(real, fake).backward()
    assert real.grad is not None and real.grad.abs().sum() > 0
    real.grad = None
    standard_g_loss(real, fake).backward()
    assert real.grad is None or real.grad.abs().sum() == 0


def test_stable_logits_form_survives_extreme_logits() -> None:
    real = torch.tensor([200.0, -200.0])
    fake = torch.tensor([-300.0, 300.0])
    for d_loss, g_loss in ((standard_d_loss, standard_g_loss), (ragan_d_loss, ragan_g_loss)):
        assert torch.isfinite(d_loss(real, fake))
        assert torch.isfinite(g_loss(real, fake))


def test_a_decoded_cache_is_a_training_folder(tmp_path) -> None:
    """train_hr may name a cache built by `python -m esrgan.data.cache` (memory-mapped uint8)."""
    import numpy as np

    from esrgan.data import build_cache, write_image

    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "hr" / f"img{i}.png", rng.random((64, 72, 3), dtype=np.float32))
    build_cache(tmp_path / "hr", tmp_path / "cache", scale=4, progress=False)
    from_folder = build.train_pairs(config(train_hr=str(tmp_path / "hr")), cache_dir=None)
    from_cache = build.train_pairs(config(train_hr=str(tmp_path / "cache")), cache_dir=None)
    assert [p.hr.dtype for p in from_cache] == [np.uint8] * 2
    a = build.patch_dataset(config(), from_folder, seed=3, length=4)
    b = build.patch_dataset(config(), from_cache, seed=3, length=4)
    assert all(torch.equal(a[i]["hr"], b[i]["hr"]) and torch.equal(a[i]["lr"], b[i]["lr"])
               for i in range(4))


def test_bf16_is_listed_as_a_departure_from_the_paper() -> None:
    assert not any("bf16" in s for s in presets.substitutes(config()))  # tiny: fp32
    (line,) = [s for s in presets.substitutes(config(precision2="bf16-losses")) if "bf16" in s]
    assert "VGG19 and D" in line


def test_departures_name_the_trunk_in_use_and_no_gan_stage_for_a_psnr_cell() -> None:
    deep = presets.substitutes(config(rrdb=False, bn=False, nf=16, nb_resblock=64, steps2=0,
                                      precision1="fp32", precision2="bf16-losses"))
    (scale,) = [s for s in deep if s.startswith("other sizes")]
    assert "nb_resblock 64" in scale and "nf 16" in scale
    assert "nb " not in scale and "gc " not in scale and "steps2" not in scale
    assert not any("bf16" in s for s in deep)  # no GAN stage: its precision is not used
    full = presets.substitutes(config(precision2="bf16-losses"))
    (scale,) = [s for s in full if s.startswith("smaller scale")]
    assert "nb_resblock" not in scale and "steps2" in scale


def test_spectral_norm_in_d_is_its_own_state_and_resumes_from_it() -> None:
    """d_spectral_norm: every conv and linear of D normalised; the power iteration's vectors
    are part of D's state, so a D restored from a checkpoint computes what the original
    does."""
    from esrgan.archs.discriminator import VGGStyleDiscriminator

    torch.manual_seed(0)
    d = VGGStyleDiscriminator(nf=8, patch_size=32, spectral_norm=True)
    layers = [m for m in d.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    x = torch.rand(2, 3, 32, 32)
    d(x), d(x)  # two training forwards move the power iteration on
    restored = VGGStyleDiscriminator(nf=8, patch_size=32, spectral_norm=True)
    restored.load_state_dict(d.state_dict())
    assert torch.equal(restored(x), d(x))
    plain = VGGStyleDiscriminator(nf=8, patch_size=32)
    with pytest.raises(RuntimeError):  # a plain D's checkpoint is not an SN D's
        restored.load_state_dict(plain.state_dict())
