"""The two ESRGAN training stages as plain functions (PAPER.md section 4).

Read top to bottom:

- ``train_psnr``  stage 1, the PSNR-oriented model: L1 only.
- ``train_gan``   stage 2, from the stage-1 generator: L_percep + lambda * L_adv + eta * L1 for G,
  the standard or relativistic loss for D, updated alternately.

Both take every setting as an argument (no config objects from Sacred) and talk to the outside
through three callables: ``log(name, value, step)``, ``validate(generator, step) -> dict`` and
``progress`` (a tqdm bar is made here). Both checkpoint every ``ckpt_every`` steps to one file
(atomic replace) holding G, D, optimisers, schedulers, the torch RNG state and the step, and
resume from it: training samples are a pure function of (seed, sample index) (see
``esrgan.data.PatchDataset``), so a resumed run sees exactly the batches it would have seen, and
on CPU a resumed run ends bit-identical to an uninterrupted one.

Under ``torchrun`` (``esrgan.distributed``) both stages run data-parallel: the networks are
wrapped in DistributedDataParallel, batch statistics are global, the logged losses are averaged
over ranks, and only rank 0 validates and writes the checkpoint (every rank resumes from it).

Speed switches (``StageSettings``): ``precision`` (bf16 autocast), ``channels_last``,
``compile`` (torch.compile of the forward modules) and ``adam`` (the optimiser kernel).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from esrgan import distributed
from esrgan.losses.gan import discriminator_loss, generator_adversarial_loss
from esrgan.losses.perceptual import PerceptualLoss
from esrgan.speed import (
    autocast,
    check_choice,
    compiled,
    generator_precision,
    loss_network_precision,
)

LogFn = Callable[[str, float, int], None]
ValidateFn = Callable[[nn.Module, int], dict[str, float]]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class StageSettings:
    """Optimisation settings of one stage.

    ``lr_decay_at`` are fractions of ``steps`` at which the learning rate is multiplied by
    ``lr_gamma`` (the paper's stage 2: 50k, 100k, 200k, 300k of 400k = 0.125, 0.25, 0.5, 0.75),
    so one schedule scales to any step budget.
    """

    steps: int
    lr: float
    batch_size: int
    lr_decay_at: tuple[float, ...] = ()
    lr_gamma: float = 0.5
    adam_betas: tuple[float, float] = (0.9, 0.999)
    ckpt_every: int = 500
    val_every: int = 0  # 0: validate only at the end
    log_every: int = 10
    num_workers: int = 0
    # 'fp32' | 'bf16' (autocast of the forward passes; losses in fp32) | 'bf16-losses' (only
    # VGG19 and D in bf16)
    precision: str = "fp32"
    channels_last: bool = False  # NHWC memory format for the networks and batches
    compile: str = "off"  # 'off' | 'default' | 'reduce-overhead' (CUDA graphs on a GPU)
    adam: str = "auto"  # 'auto' (fused on CUDA, foreach elsewhere) | 'fused' | 'foreach'

    @property
    def milestones(self) -> list[int]:
        return sorted({max(1, round(f * self.steps)) for f in self.lr_decay_at})


@dataclass
class GanWeights:
    """Loss weights of stage 2: L_G = percep * L_percep + lambda_adv * L_adv + eta_l1 * L1."""

    percep: float = 1.0
    lambda_adv: float = 5e-3
    eta_l1: float = 1e-2


@dataclass
class StageOutcome:
    """What a stage returns: final validation metrics, steps done, seconds spent training."""

    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    resumed_from: int = 0


# ------------------------------------------------------------------------------------------
# helpers shared by both stages


def _atomic_save(obj: dict, path: Path) -> None:
    if not distributed.is_main():
        return  # one writer; every rank holds the same state
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill during the save never leaves a half-written checkpoint


def _load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path`` (None if absent); under DDP every rank must read rank 0's."""
    state = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
    mine = None if state is None else int(state["step"])
    step = distributed.from_main(mine)
    if mine != step:
        raise RuntimeError(f"{path}: rank {distributed.rank()} sees step {mine}, rank 0 step "
                           f"{step}: the work_dir must be one folder shared by all ranks")
    return state


ADAM_IMPLS = ("auto", "fused", "foreach")


def _adam(params, lr: float, settings: StageSettings, device: torch.device) -> torch.optim.Adam:
    """Adam with the kernel ``settings.adam`` asks for (the maths is the same)."""
    check_choice("adam", settings.adam, ADAM_IMPLS)
    fused = settings.adam == "fused" or (settings.adam == "auto" and device.type == "cuda")
    return torch.optim.Adam(params, lr=lr, betas=settings.adam_betas,
                            **({"fused": True} if fused else {}))


def _step_begins(mode: str) -> None:
    """Tell CUDA graphs (compile='reduce-overhead') that a new training step starts, so the
    previous step's graph outputs may be overwritten."""
    if mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()


def _keep(t: Tensor, mode: str) -> Tensor:
    """A graph output that must survive the next call of the same compiled module (CUDA
    graphs reuse their output memory): D and VGG are called twice per step."""
    return t.clone() if mode == "reduce-overhead" else t


def _to_device(batch: dict[str, Tensor], device: torch.device,
               channels_last: bool) -> tuple[Tensor, Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (batch["lr"].to(device, memory_format=fmt), batch["hr"].to(device, memory_format=fmt))


def _prepare(module: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def _check_finite(stage: str, step: int, losses: dict[str, Tensor]) -> dict[str, float]:
    """The losses as floats (averaged over DDP ranks, so every rank decides alike); raises
    TrainingDiverged when one is NaN or infinite."""
    values = distributed.mean_over_ranks({k: float(v) for k, v in losses.items()})
    for name, value in values.items():
        if not math.isfinite(value):
            parts = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise TrainingDiverged(f"{stage}: loss {name} is not finite at step {step} ({parts})")
    return values


class _Averager:
    """Running means of the losses between two log points (keeps the number of points bounded)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def flush(self) -> dict[str, float]:
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


def _run_validation(validate: ValidateFn | None, generator: nn.Module, step: int, prefix: str,
                    log: LogFn) -> dict[str, float]:
    if validate is None or not distributed.is_main():  # other ranks wait at their next step
        return {}
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        metrics = validate(generator, step)
    generator.train(was_training)
    for name, value in metrics.items():
        if value is not None and math.isfinite(value):
            log(f"{prefix}val_{name}", float(value), step)
    return metrics


# ------------------------------------------------------------------------------------------
# stage 1: PSNR-oriented


def train_psnr(
    generator: nn.Module,
    batches: Callable[[int], Iterator[dict[str, Tensor]]],
    settings: StageSettings,
    *,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    log: LogFn = lambda name, value, step: None,
    validate: ValidateFn | None = None,
    progress: bool = True,
) -> StageOutcome:
    """Stage 1: train ``generator`` with the L1 loss only.

    ``batches(start_step)`` yields {'lr', 'hr'} batches for steps start_step, start_step+1, ...
    Resumes from ``checkpoint`` when that file exists; writes it every ``ckpt_every`` steps and
    on Ctrl-C (KeyboardInterrupt is re-raised after the save).
    """
    device = torch.device(device)
    precision_g = generator_precision(settings.precision)
    _prepare(distributed.convert_batchnorm(generator, device), device,
             settings.channels_last).train()
    opt = _adam(generator.parameters(), settings.lr, settings, device)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, settings.milestones, settings.lr_gamma)

    start = 0
    state = _load_checkpoint(checkpoint) if checkpoint else None
    if state is not None:
        generator.load_state_dict(state["generator"])
        opt.load_state_dict(state["opt_g"])
        sched.load_state_dict(state["sched_g"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
    # after the resume: DDP broadcasts rank 0's parameters when it wraps the module
    forward_g = compiled(distributed.data_parallel(generator, device), settings.compile)

    def save(step: int) -> None:
        if checkpoint is not None:
            _atomic_save({"stage": 1, "step": step, "generator": generator.state_dict(),
                          "opt_g": opt.state_dict(), "sched_g": sched.state_dict(),
                          "rng": torch.get_rng_state()}, checkpoint)

    averager = _Averager()
    t0 = time.perf_counter()
    step = start
    consistent = True
    bar = tqdm(total=settings.steps, initial=start, desc="stage 1 (L1)", disable=not progress,
               dynamic_ncols=True)
    try:
        for batch in batches(start):
            if step >= settings.steps:
                break
            lr_img, hr_img = _to_device(batch, device, settings.channels_last)
            consistent = False  # a Ctrl-C from here to `step += 1` leaves a half-done step
            _step_begins(settings.compile)

            with autocast(device.type, precision_g):
                sr = forward_g(lr_img)
            l_pix = F.l1_loss(sr.float(), hr_img)
            opt.zero_grad(set_to_none=True)
            l_pix.backward()
            opt.step()
            sched.step()
            step += 1
            consistent = True

            averager.add(_check_finite("stage 1", step, {"l_pix": l_pix.detach()}))
            bar.update(1)
            if step % settings.log_every == 0 or step == settings.steps:
                means = averager.flush()
                for k, v in means.items():
                    log(f"stage1_{k}", v, step)
                log("stage1_lr", sched.get_last_lr()[0], step)
                bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
            if settings.val_every and step % settings.val_every == 0 and step < settings.steps:
                _run_validation(validate, generator, step, "stage1_", log)
            if settings.ckpt_every and step % settings.ckpt_every == 0:
                save(step)
    except KeyboardInterrupt:
        if consistent:
            save(step)  # otherwise the last periodic checkpoint stands
        raise
    finally:
        bar.close()
    save(step)
    seconds = time.perf_counter() - t0
    metrics = _run_validation(validate, generator, step, "stage1_", log)
    return StageOutcome(metrics=metrics, steps=step, seconds=seconds, resumed_from=start)


# ------------------------------------------------------------------------------------------
# stage 2: GAN


def train_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    perceptual: PerceptualLoss,
    batches: Callable[[int], Iterator[dict[str, Tensor]]],
    settings: StageSettings,
    *,
    gan_loss: str = "ragan",
    weights: GanWeights | None = None,
    lr_d: float | None = None,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    log: LogFn = lambda name, value, step: None,
    validate: ValidateFn | None = None,
    progress: bool = True,
) -> StageOutcome:
    """Stage 2: G from stage 1 trained with eq. (3), D with the ``gan_loss`` ('ragan' | 'standard').

    Each step updates G once (D frozen), then D once on the detached G output, as in the paper's
    reference code. Adam for both, with the same multi-step decay.
    """
    weights = weights or GanWeights()
    device = torch.device(device)
    precision_g = generator_precision(settings.precision)
    precision_loss = loss_network_precision(settings.precision)
    for net in (generator, discriminator):
        _prepare(distributed.convert_batchnorm(net, device), device,
                 settings.channels_last).train()
    _prepare(perceptual, device, settings.channels_last)
    opt_g = _adam(generator.parameters(), settings.lr, settings, device)
    opt_d = _adam(discriminator.parameters(), lr_d or settings.lr, settings, device)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, settings.milestones, settings.lr_gamma)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, settings.milestones, settings.lr_gamma)

    start = 0
    state = _load_checkpoint(checkpoint) if checkpoint else None
    if state is not None:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        sched_g.load_state_dict(state["sched_g"])
        sched_d.load_state_dict(state["sched_d"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
    # G and D's D-step go through DDP; the G-step calls D itself (its parameters are frozen
    # there, so there is nothing to all-reduce and DDP must not wait for their gradients).
    mode = settings.compile
    forward_g = compiled(distributed.data_parallel(generator, device), mode)
    forward_d = compiled(distributed.data_parallel(discriminator, device), mode)
    frozen_d = compiled(discriminator, mode)
    forward_percep = compiled(perceptual, mode)

    def save(step: int) -> None:
        if checkpoint is not None:
            _atomic_save({"stage": 2, "step": step, "generator": generator.state_dict(),
                          "discriminator": discriminator.state_dict(),
                          "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                          "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
                          "rng": torch.get_rng_state()}, checkpoint)

    averager = _Averager()
    t0 = time.perf_counter()
    step = start
    consistent = True
    bar = tqdm(total=settings.steps, initial=start, desc=f"stage 2 ({gan_loss})",
               disable=not progress, dynamic_ncols=True)
    try:
        for batch in batches(start):
            if step >= settings.steps:
                break
            lr_img, hr_img = _to_device(batch, device, settings.channels_last)
            consistent = False  # a Ctrl-C from here to `step += 1` leaves a half-done step
            _step_begins(mode)

            # --- generator step: D frozen, its real logits are constants
            for p in discriminator.parameters():
                p.requires_grad_(False)
            with autocast(device.type, precision_g):
                sr = forward_g(lr_img)
            l_pix = F.l1_loss(sr.float(), hr_img)  # losses in fp32; this order keeps fp32 runs
            with autocast(device.type, precision_loss):  # bit-identical to the plain loop
                l_percep = forward_percep(sr, hr_img).float()
                real_logits = _keep(frozen_d(hr_img), mode).detach().float()
                fake_logits = frozen_d(sr).float()
            l_adv = generator_adversarial_loss(real_logits, fake_logits, gan_loss)
            l_g = weights.percep * l_percep + weights.lambda_adv * l_adv + weights.eta_l1 * l_pix
            opt_g.zero_grad(set_to_none=True)
            l_g.backward()
            opt_g.step()

            # --- discriminator step on the detached SR batch
            for p in discriminator.parameters():
                p.requires_grad_(True)
            with autocast(device.type, precision_loss):
                real_logits = _keep(forward_d(hr_img), mode).float()
                fake_logits = forward_d(sr.detach()).float()
            l_d = discriminator_loss(real_logits, fake_logits, gan_loss)
            opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            opt_d.step()

            sched_g.step()
            sched_d.step()
            step += 1
            consistent = True

            losses = {"l_g": l_g.detach(), "l_pix": l_pix.detach(),
                      "l_percep": l_percep.detach(), "l_adv": l_adv.detach(),
                      "l_d": l_d.detach(),
                      "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}
            averager.add(_check_finite("stage 2", step, losses))
            bar.update(1)
            if step % settings.log_every == 0 or step == settings.steps:
                means = averager.flush()
                for k, v in means.items():
                    log(f"stage2_{k}", v, step)
                log("stage2_lr", sched_g.get_last_lr()[0], step)
                bar.set_postfix({k: f"{means[k]:.4f}" for k in ("l_g", "l_d")})
            if settings.val_every and step % settings.val_every == 0 and step < settings.steps:
                _run_validation(validate, generator, step, "stage2_", log)
            if settings.ckpt_every and step % settings.ckpt_every == 0:
                save(step)
    except KeyboardInterrupt:
        if consistent:
            save(step)  # otherwise the last periodic checkpoint stands
        raise
    finally:
        bar.close()
    save(step)
    seconds = time.perf_counter() - t0
    metrics = _run_validation(validate, generator, step, "stage2_", log)
    return StageOutcome(metrics=metrics, steps=step, seconds=seconds, resumed_from=start)
