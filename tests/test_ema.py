"""The generator's exponential moving average (``ema_decay``): off by default, exact, resumable,
saved beside the raw weights in BasicSR's layout and used as the interpolation endpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esrgan.archs.rrdbnet import build_generator
from esrgan.train import StageSettings, train_psnr
from esrgan.weights import load_checkpoint, load_generator_state

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "experiments" / "run.py"


def batches(start: int):
    """Batch k is a function of k alone, so that a resumed run sees the batches it would have."""
    step = start
    while True:
        hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        yield {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}
        step += 1


def settings(steps: int, decay: float) -> StageSettings:
    return StageSettings(steps=steps, lr=1e-3, batch_size=2, lr_decay_at=(), lr_gamma=0.5,
                         adam_betas=(0.9, 0.999), ckpt_every=0, val_every=0, log_every=1,
                         num_workers=0, precision="fp32", channels_last=False, compile="off",
                         adam="foreach", ema_decay=decay)


def basicsr_model_ema(ema: dict[str, torch.Tensor], net: torch.nn.Module, decay: float) -> None:
    """BasicSR's ``SRModel.model_ema``, line for line (its parameters only)."""
    net_params = dict(net.named_parameters())
    for k, v in ema.items():
        v.mul_(decay).add_(net_params[k].data, alpha=1 - decay)


def test_ema_is_basicsr_moving_average_from_the_start_weights() -> None:
    """BasicSR copies G into the average before training (model_ema(0)), then averages after
    every step: the average of t steps is decay^t W_0 + sum_i (1 - decay) decay^(t-i) W_i."""
    torch.manual_seed(0)
    g = build_generator(nf=8, nb=1, gc=4)
    w0 = {k: v.detach().clone() for k, v in g.named_parameters()}
    reference = {k: v.clone() for k, v in w0.items()}  # model_ema(0): a copy of G
    after: list[dict] = []

    def log(name: str, value: float, step: int) -> None:
        if name == "stage1_lr":  # once per step, after the update and this suite's average
            basicsr_model_ema(reference, g, 0.5)
            after.append({k: v.detach().clone() for k, v in g.named_parameters()})

    out = train_psnr(g, batches, settings(3, 0.5), log=log, progress=False)
    assert out.ema is not None and len(after) == 3
    ema = dict(out.ema.named_parameters())
    assert all(torch.allclose(ema[k], reference[k], atol=1e-7) for k in reference)
    expected = {k: 0.125 * w0[k] + 0.125 * after[0][k] + 0.25 * after[1][k] + 0.5 * after[2][k]
                for k in w0}
    assert all(torch.allclose(ema[k], expected[k], atol=1e-7) for k in expected)
    # the one-step-behind average (started at W_1) differs by decay^t (W_0 - W_1): visible here
    behind = {k: 0.25 * after[0][k] + 0.25 * after[1][k] + 0.5 * after[2][k] for k in w0}
    assert max((ema[k] - behind[k] - 0.125 * (w0[k] - after[0][k])).abs().max().item()
               for k in w0) < 1e-7
    assert max((ema[k] - behind[k]).abs().max().item() for k in w0) > 1e-5
    assert train_psnr(build_generator(nf=8, nb=1, gc=4), batches, settings(1, 0.0),
                      progress=False).ema is None  # off by default


def test_stage2_average_carries_over_and_raw_g_trains_on() -> None:
    """BasicSR's ESRGAN recipe: G loads stage 1's params, the average its params_ema."""
    from esrgan.archs.discriminator import VGGStyleDiscriminator
    from esrgan.archs.vgg import VGGFeatureExtractor
    from esrgan.losses import PerceptualLoss
    from esrgan.train import GanWeights, train_gan

    torch.manual_seed(0)
    g = build_generator(nf=8, nb=1, gc=4)
    stage1 = train_psnr(g, batches, settings(6, 0.9), progress=False)
    raw1 = {k: v.detach().clone() for k, v in g.named_parameters()}
    avg1 = {k: v.detach().clone() for k, v in stage1.ema.named_parameters()}
    assert max((raw1[k] - avg1[k]).abs().max().item() for k in raw1) > 3e-3  # far apart
    torch.manual_seed(1)
    d = VGGStyleDiscriminator(nf=8, patch_size=32)
    percep = PerceptualLoss(VGGFeatureExtractor("conv2_2", weights="random"), normalize=True)
    before: list[dict] = []  # G's weights when its first stage-2 step begins

    def log(name: str, value: float, step: int) -> None:
        if name == "stage2_lr":
            before.append({k: v.detach().clone() for k, v in g.named_parameters()})

    out = train_gan(g, d, percep, batches, settings(1, 0.9), ragan=True,
                    weights=GanWeights(1.0, 5e-3, 1e-2), lr_d=1e-3, log=log, progress=False,
                    ema_start=stage1.ema)
    w1 = before[0]
    ema = dict(out.ema.named_parameters())
    assert all(torch.allclose(ema[k], 0.9 * avg1[k] + 0.1 * w1[k], atol=1e-7) for k in w1)
    # the raw G went on from the raw stage-1 weights: one Adam step (lr 1e-3) away from them
    assert max((w1[k] - raw1[k]).abs().max().item() for k in w1) < 1.01e-3


def test_ema_resumes_bit_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    whole = build_generator(nf=8, nb=1, gc=4)
    torch.manual_seed(0)
    split = build_generator(nf=8, nb=1, gc=4)
    a = train_psnr(whole, batches, settings(4, 0.9), progress=False)
    ckpt = tmp_path / "checkpoint.pth"
    short = dataclasses.replace(settings(4, 0.9), steps=2)
    train_psnr(split, batches, short, checkpoint=ckpt, progress=False)
    assert "generator_ema" in load_checkpoint(ckpt)
    b = train_psnr(split, batches, settings(4, 0.9), checkpoint=ckpt, progress=False)
    assert b.resumed_from == 2
    ea, eb = a.ema.state_dict(), b.ema.state_dict()
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert all(torch.equal(v, split.state_dict()[k]) for k, v in whole.state_dict().items())


# in the e2e suite (CI runs it every time): it keeps `make test` under 5 minutes
@pytest.mark.e2e
@pytest.mark.slow
def test_ema_run_ships_both_weights_and_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "ESRGAN_RUNS": str(tmp_path / "runs")}
    args = ["with", "tiny", "steps1=20", "steps2=10", "ema_decay=0.9", "progress=False",
            "val_metrics=['psnr']", "test_sets=[]", "interp_alphas=[0.0, 1.0]"]
    for command in ([], ["interpolate"]):
        proc = subprocess.run([sys.executable, str(RUN), *command, *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
    cell, sweep = sorted((tmp_path / "runs").glob("[0-9]*"), key=lambda p: int(p.name))
    raw = load_generator_state(cell / "G_gan.pth", params="params")
    ema = load_generator_state(cell / "G_gan.pth", params="params_ema")
    assert raw.keys() == ema.keys() and any(not torch.equal(raw[k], ema[k]) for k in raw)
    info = json.loads((cell / "info.json").read_text())["esrgan"]
    assert any("moving average" in s for s in info["substitutes"])
    # the sweep's alpha = 1 end is the GAN model's moving average, as the cell scored it
    result = json.loads((cell / "run.json").read_text())["result"]
    end = json.loads((sweep / "run.json").read_text())["result"]["network"][-1]
    assert end["alpha"] == 1.0 and abs(end["psnr"] - result["gan_model"]["val"]["psnr"]) < 1e-9
