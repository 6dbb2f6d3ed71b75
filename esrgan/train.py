"""The two ESRGAN training stages: two step functions and the one loop they share.

Read top to bottom:

- :func:`psnr_step`  stage 1's update, the PSNR-oriented model: L1 only.
- :func:`gan_step`   stage 2's update: G with L_percep + lambda * L_adv + eta * L1 (eq. (3) of
  the paper, D frozen), then D with the standard or relativistic loss, alternately.
- :func:`train_loop` what both stages share: batches (split into ``accum`` micro-batches),
  the step, the learning-rate schedule, loss checks, averaged logging, validation,
  checkpoints (the resume point, the last ``keep_last``, the best by a validation metric),
  Ctrl-C and resume.
- :func:`train_psnr`, :func:`train_gan`: a stage's networks, optimisers and schedule, then the
  loop.

The files beside a stage's resume point (kept checkpoints, best files, files set aside) are
``esrgan.checkpoints``.

Both stages take every setting as an argument (no config objects from Sacred) and talk to the
outside through ``log(name, value, step)``, ``validate(generator, step) -> dict`` and
``progress`` (a tqdm bar is made here). Both checkpoint every ``ckpt_every`` steps to one file
(atomic replace) holding the networks, optimisers, schedulers, fp16 gradient scalers, the torch
RNG state and the step, and resume from it: training samples are a pure function of (seed,
sample index) (see ``esrgan.data.PatchDataset``), so a resumed run sees exactly the batches it
would have seen, and on CPU a resumed run ends bit-identical to an uninterrupted one. Beside
that resume point a stage keeps the last ``keep_last`` periodic checkpoints
(``checkpoint_<step>.pth``) and the generator that scored best on ``best_metric``
(``best_<metric>.pth``); ``esrgan.retest`` scores them afterwards.

The speed switches (``StageSettings``: ``precision``, ``channels_last``, ``compile``, ``adam``)
and data parallelism are applied where a network is wrapped (``esrgan.speed.wrap``), never
inside a step's equations; gradient accumulation and the fp16 gradient scaler where a loss
becomes an update (:class:`Update`). Under ``torchrun`` (``esrgan.distributed``) the networks
are wrapped in DistributedDataParallel, batch statistics are global, the logged losses are
averaged over ranks, and only rank 0 validates and writes the checkpoint (every rank resumes
from it).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from esrgan import checkpoints, distributed
from esrgan.losses.gan import ragan_d_loss, ragan_g_loss, standard_d_loss, standard_g_loss
from esrgan.losses.perceptual import PerceptualLoss
from esrgan.speed import (
    Forward,
    adam,
    generator_precision,
    grad_scaler,
    loss_network_precision,
    mark_step_begin,
    wrap,
)
from esrgan.weights import save_generator

# The fp16 gradient scaler skips an update whose gradients overflowed (its first few, while
# it finds its scale); the schedule counts steps, not updates, as BasicSR's does.
warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")

LogFn = Callable[[str, float, int], None]
ValidateFn = Callable[[nn.Module, int], dict[str, float]]
Batches = Callable[[int], Iterator[dict[str, Tensor]]]
MicroBatches = Sequence[tuple[Tensor, Tensor]]  # the (LR, HR) micro-batches of one step
StepFn = Callable[[MicroBatches], dict[str, Tensor]]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class StageSettings:
    """Optimisation settings of one stage (every value comes from the experiment's config).

    ``lr_decay_at`` are fractions of ``steps`` at which the learning rate is multiplied by
    ``lr_gamma`` (the paper's stage 2: 50k, 100k, 200k, 300k of 400k = 0.125, 0.25, 0.5, 0.75),
    so one schedule scales to any step budget. ``ckpt_every``/``val_every`` 0: only at the end.
    ``precision``: 'fp32', 'bf16' (autocast of every forward pass) or 'bf16-losses' (VGG19 and
    D only); ``compile``: 'off', 'default', 'reduce-overhead' (CUDA graphs on a GPU);
    ``adam``: 'auto' (fused on CUDA), 'fused' or 'foreach' (``esrgan.speed``).

    ``accum``: micro-batches per step (``batch_size / accum`` samples each), their gradients
    summed into one update: for a mean loss the update of the whole batch (stage 1 refuses it
    with BatchNorm in G, whose statistics would be the micro-batch's; in stage 2 D's
    BatchNorm and RaGAN's batch means are the micro-batch's). ``keep_last``: periodic
    checkpoints kept beside the resume point (0: none, -1: all); ``best_metric``: the
    validation metric whose best value's generator is kept ('': none).
    """

    steps: int
    lr: float
    batch_size: int
    lr_decay_at: tuple[float, ...]
    lr_gamma: float
    adam_betas: tuple[float, float]
    ckpt_every: int
    val_every: int
    log_every: int
    num_workers: int
    precision: str
    channels_last: bool
    compile: str
    adam: str
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of G (BasicSR: 0.999)
    accum: int = 1
    keep_last: int = 0
    best_metric: str = ""

    @property
    def milestones(self) -> list[int]:
        return sorted({max(1, round(f * self.steps)) for f in self.lr_decay_at})


@dataclass
class GanWeights:
    """Loss weights of stage 2: L_G = percep * L_percep + lambda_adv * L_adv + eta_l1 * L1."""

    percep: float
    lambda_adv: float
    eta_l1: float


@dataclass
class StageOutcome:
    """What a stage returns: final validation metrics, steps done, seconds spent training,
    and with ``ema_decay`` the moving average of G (the network validated)."""

    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    resumed_from: int = 0
    ema: nn.Module | None = None
    best: dict[str, Any] | None = None  # {'metric', 'value', 'step'} of the best file


def make_ema(generator: nn.Module, decay: float,
             start: nn.Module | None = None) -> AveragedModel | None:
    """An exponential moving average of ``generator``'s weights (and buffers), or None for 0.

    W_ema <- decay * W_ema + (1 - decay) * W after every update, from W_ema = the weights of
    ``start`` when given (stage 2: stage 1's average, which BasicSR loads from
    ``params_ema``), else ``generator``'s weights before the first update, as BasicSR's
    ``model_ema(0)`` copies them: after t updates the average is
    decay^t W_0 + sum_i (1 - decay) decay^(t-i) W_i. BasicSR averages the parameters only;
    here the buffers too (BatchNorm's running statistics, a G with ``bn``).
    """
    if decay == 0:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
    ema = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if start is not None:
        ema.module.load_state_dict(start.state_dict())
    ema.n_averaged.fill_(1)  # it holds its first value already: every update averages
    return ema


class Update:
    """An optimiser's update from a loss over the micro-batches of one step.

    Each micro-batch's loss, divided by their number, is back-propagated (through the fp16
    gradient scaler, a plain backward without one), then the optimiser steps once (the scaler
    skips a step whose gradients overflowed, and adjusts its scale). For a mean loss over k
    equal micro-batches this is the update of the whole batch. Returns the micro-batches'
    mean of each logged value.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        self.optimizer, self.scaler = optimizer, scaler

    def __call__(self, loss: Callable[..., tuple[Tensor, dict[str, Tensor]]],
                 inputs: Sequence[tuple[Tensor, ...]]) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, Tensor] = {}
        for args in inputs:
            value, logged = loss(*args)
            self.scaler.scale(value / len(inputs)).backward()
            for name, v in logged.items():
                sums[name] = sums[name] + v.detach() if name in sums else v.detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {name: v / len(inputs) for name, v in sums.items()}


# ------------------------------------------------------------------------------------------
# the two steps: only the equations


def psnr_step(g: Forward, update_g: Update, batch: MicroBatches) -> dict[str, Tensor]:
    """One stage-1 update: L1 between G(LR) and HR."""

    def l1(lr_img: Tensor, hr_img: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        l_pix = F.l1_loss(g(lr_img), hr_img)
        return l_pix, {"l_pix": l_pix}

    return update_g(l1, batch)


@dataclass
class GanNets:
    """The forwards of one GAN step: ``d`` for D's own update, ``d_frozen`` inside G's (D's
    parameters do not train there, so under DDP there is nothing to all-reduce)."""

    g: Forward
    d: Forward
    d_frozen: Forward
    percep: Forward | None  # None: no perceptual term
    discriminator: nn.Module  # its parameters are frozen during G's update


def gan_step(nets: GanNets, update_g: Update, update_d: Update, batch: MicroBatches,
             ragan: bool, weights: GanWeights) -> dict[str, Tensor]:
    """One stage-2 update: G once with D frozen, then D once on the detached G output (the
    order of the paper's reference code). ``ragan``: the relativistic average losses, eq. (1)
    and (2); else the standard GAN's."""
    fakes: list[Tensor] = []  # G's outputs before its update, one per micro-batch, for D

    def generator_loss(lr_img: Tensor, hr_img: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        sr = nets.g(lr_img)
        fakes.append(sr.detach())
        l_pix = F.l1_loss(sr, hr_img)
        # no perceptual network: the term is 0 (eq. (3) without it)
        l_percep = nets.percep(sr, hr_img) if nets.percep is not None else sr.new_zeros(())
        real_logits = nets.d_frozen(hr_img).detach()
        fake_logits = nets.d_frozen(sr)
        if ragan:
            l_adv = ragan_g_loss(real_logits, fake_logits)
        else:
            l_adv = standard_g_loss(real_logits, fake_logits)
        l_g = weights.percep * l_percep + weights.lambda_adv * l_adv + weights.eta_l1 * l_pix
        return l_g, {"l_g": l_g, "l_pix": l_pix, "l_percep": l_percep, "l_adv": l_adv}

    def d_loss(hr_img: Tensor, sr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        real_logits = nets.d(hr_img)
        fake_logits = nets.d(sr)
        if ragan:
            l_d = ragan_d_loss(real_logits, fake_logits)
        else:
            l_d = standard_d_loss(real_logits, fake_logits)
        return l_d, {"l_d": l_d, "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}

    # --- generator step: D frozen, its real logits are constants
    for p in nets.discriminator.parameters():
        p.requires_grad_(False)
    g_losses = update_g(generator_loss, batch)

    # --- discriminator step on the detached SR batch
    for p in nets.discriminator.parameters():
        p.requires_grad_(True)
    d_losses = update_d(d_loss, [(hr_img, sr) for (_, hr_img), sr
                                 in zip(batch, fakes, strict=True)])
    return {**g_losses, **d_losses}


# ------------------------------------------------------------------------------------------
# the loop both stages share


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


@dataclass
class Stage:
    """What the loop needs to know about a stage."""

    number: int  # 1 or 2: names the logged scalars ('stage1_l_pix') and the checkpoint
    title: str  # the progress bar's label
    step: StepFn  # one update from an (LR, HR) batch; returns the losses
    parts: dict[str, Any]  # what a checkpoint holds, by name (networks, optimisers, schedulers)
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]  # stepped once per step
    lr_names: tuple[str, ...]  # the logged name of each scheduler's rate ('lr', 'd_lr')
    generator: nn.Module  # the network trained
    shown: tuple[str, ...] | None = None  # losses on the progress bar (None: all)
    ema: AveragedModel | None = None  # its moving average: updated every step, validated
    # called with the step about to run, before it (a loss whose terms change during training;
    # a pure function of the step, so that a resumed run computes what it would have)
    before_step: Callable[[int], None] | None = None


def _micro_batches(lr_img: Tensor, hr_img: Tensor, accum: int) -> MicroBatches:
    """The ``accum`` equal (LR, HR) micro-batches of one step's batch (views, no copies)."""
    if lr_img.shape[0] % accum:
        raise ValueError(f"a batch of {lr_img.shape[0]} samples does not split into "
                         f"accum={accum} equal micro-batches")
    size = lr_img.shape[0] // accum
    return list(zip(lr_img.split(size), hr_img.split(size), strict=True))


def train_loop(stage: Stage, batches: Batches, settings: StageSettings, *,
               device: torch.device, checkpoint: Path | None, log: LogFn,
               validate: ValidateFn | None, progress: bool, start: int,
               best: dict[str, Any] | None = None) -> StageOutcome:
    """Run ``stage.step`` from step ``start`` to ``settings.steps``.

    Writes the checkpoint every ``ckpt_every`` steps (and keeps the last ``keep_last`` of
    them), at the end and on Ctrl-C (KeyboardInterrupt is re-raised after the save);
    validates every ``val_every`` steps and at the end, and writes the validated generator
    to ``best_<metric>.pth`` whenever ``best_metric`` beats ``best`` (the best so far, from
    the checkpoint); logs the mean losses every ``log_every`` steps.
    """
    prefix = f"stage{stage.number}_"
    checkpoints.check_best_metric(settings.best_metric)
    if checkpoint is not None and distributed.is_main():
        best = checkpoints.settle_kept(checkpoint, start, settings.best_metric, best)

    def save(step: int, periodic: bool = False) -> None:
        if checkpoint is not None:
            parts = {name: part.state_dict() for name, part in stage.parts.items()}
            arch = getattr(stage.generator, "arch", None)
            checkpoints.atomic_save({"stage": stage.number, "step": step, **parts,
                          "rng": torch.get_rng_state(), "best": best,
                          **({"arch": dict(arch)} if arch is not None else {})}, checkpoint)
            if periodic and settings.keep_last:
                checkpoints.keep(checkpoint, step, settings.keep_last)

    def validation(step: int) -> dict[str, float]:
        nonlocal best
        metrics = _run_validation(validate, validated, step, prefix, log)
        metric = settings.best_metric
        value = metrics.get(metric) if metric else None
        if value is not None and checkpoints.better(metric, float(value), best):
            best = {"metric": metric, "value": float(value), "step": step}
            if checkpoint is not None:  # rank 0 only: the others have no metrics
                save_generator(checkpoint.with_name(f"best_{metric}.pth"), stage.generator,
                               ema=stage.ema.module if stage.ema is not None else None,
                               info={"stage": stage.number, **best})
        return metrics

    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    validated = stage.generator if stage.ema is None else stage.ema.module
    averager = _Averager()
    t0 = time.perf_counter()
    step = start
    consistent = True
    bar = tqdm(total=settings.steps, initial=start, desc=stage.title, disable=not progress,
               dynamic_ncols=True)
    try:
        for batch in batches(start):
            if step >= settings.steps:
                break
            lr_img = batch["lr"].to(device, memory_format=fmt)
            hr_img = batch["hr"].to(device, memory_format=fmt)
            consistent = False  # a Ctrl-C from here to `step += 1` leaves a half-done step
            mark_step_begin(settings.compile)
            if stage.before_step is not None:
                stage.before_step(step)
            losses = stage.step(_micro_batches(lr_img, hr_img, settings.accum))
            if stage.ema is not None:
                stage.ema.update_parameters(stage.generator)
            for scheduler in stage.schedulers:
                scheduler.step()
            step += 1
            consistent = True

            averager.add(_check_finite(f"stage {stage.number}", step, losses))
            bar.update(1)
            if step % settings.log_every == 0 or step == settings.steps:
                means = averager.flush()
                for k, v in means.items():
                    log(f"{prefix}{k}", v, step)
                for lr_name, scheduler in zip(stage.lr_names, stage.schedulers, strict=True):
                    log(f"{prefix}{lr_name}", scheduler.get_last_lr()[0], step)
                shown = stage.shown or tuple(means)
                bar.set_postfix({k: f"{means[k]:.4f}" for k in shown})
            if settings.val_every and step % settings.val_every == 0 and step < settings.steps:
                validation(step)
            if settings.ckpt_every and step % settings.ckpt_every == 0:
                save(step, periodic=True)
    except KeyboardInterrupt:
        if consistent:
            save(step)  # otherwise the last periodic checkpoint stands
        raise
    finally:
        bar.close()
    save(step)
    seconds = time.perf_counter() - t0
    metrics = validation(step)
    return StageOutcome(metrics=metrics, steps=step, seconds=seconds, resumed_from=start,
                        ema=None if stage.ema is None else stage.ema.module, best=best)


# ------------------------------------------------------------------------------------------
# the stages


def _prepare(module: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def _adam(params: Any, lr: float, settings: StageSettings,
          device: torch.device) -> torch.optim.Adam:
    """Adam with the stage's betas and kernel."""
    return adam(params, lr, settings.adam_betas, settings.adam, device)


def _resume(checkpoint: Path | None, parts: dict[str, Any]) -> tuple[int, dict | None]:
    """Load every part from ``checkpoint`` (if it exists) and the RNG state; the step reached
    and the best validation so far (None: none yet).

    A checkpoint that cannot be read (truncated, tampered, of another stage) is set aside
    with a warning naming it, and the stage starts over from step 0.
    """
    state = checkpoints.load_training_checkpoint(checkpoint, parts) if checkpoint else None
    if state is None:
        return 0, None
    for name, part in parts.items():
        part.load_state_dict(state[name])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), state.get("best")


def train_psnr(
    generator: nn.Module,
    batches: Batches,
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
    Resumes from ``checkpoint`` when that file exists. ``accum`` > 1 is refused for a
    generator with BatchNorm: its statistics over micro-batches would make another update.
    """
    device = torch.device(device)
    precision_g = generator_precision(settings.precision)
    check_accum(settings.accum, generator, "stage 1")
    _prepare(distributed.convert_batchnorm(generator, device), device,
             settings.channels_last).train()
    opt = _adam(generator.parameters(), settings.lr, settings, device)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, settings.milestones, settings.lr_gamma)
    scaler = grad_scaler(precision_g, device)
    ema = make_ema(generator, settings.ema_decay)
    parts = {"generator": generator, "opt_g": opt, "sched_g": sched,
             **({"scaler_g": scaler} if scaler.is_enabled() else {}),
             **({"generator_ema": ema} if ema is not None else {})}
    start, best = _resume(checkpoint, parts)
    # after the resume: DDP broadcasts rank 0's parameters when it wraps the module
    g = wrap(generator, device, precision_g, settings.compile)
    update_g = Update(opt, scaler)
    stage = Stage(1, "stage 1 (L1)", lambda batch: psnr_step(g, update_g, batch), parts,
                  [sched], ("lr",), generator, ema=ema)
    return train_loop(stage, batches, settings, device=device, checkpoint=checkpoint, log=log,
                      validate=validate, progress=progress, start=start, best=best)


def check_accum(accum: int, generator: nn.Module, stage: str) -> None:
    """ValueError for ``accum`` < 1, or > 1 with BatchNorm in ``generator`` (its statistics
    would be the micro-batch's, not the batch's: not the same update)."""
    if accum < 1:
        raise ValueError(f"accum must be >= 1 (micro-batches per step), got {accum}")
    if accum > 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                         for m in generator.modules()):
        raise ValueError(f"{stage}: accum={accum} with BatchNorm in the generator (bn=True) "
                         "would normalise over micro-batches, not the batch: use accum=1")


def train_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    perceptual: PerceptualLoss | None,
    batches: Batches,
    settings: StageSettings,
    *,
    ragan: bool,
    weights: GanWeights,
    lr_d: float,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    log: LogFn = lambda name, value, step: None,
    validate: ValidateFn | None = None,
    progress: bool = True,
    ema_start: nn.Module | None = None,
) -> StageOutcome:
    """Stage 2: G from stage 1 trained with eq. (3), D with RaGAN (``ragan``) or the standard GAN.

    ``perceptual`` None: no perceptual term. A perceptual term with a ``before_step(step)``
    method has it called before each step (a term that changes during training).

    Adam for both (D with learning rate ``lr_d``), with the same multi-step decay. With
    ``ema_decay`` the moving average continues from ``ema_start`` (stage 1's average, as
    BasicSR's ESRGAN recipe loads ``params_ema`` into it; None: from G's weights). With
    ``accum`` > 1, D's BatchNorm and RaGAN's batch means are taken over each micro-batch.
    """
    device = torch.device(device)
    precision_g = generator_precision(settings.precision)
    precision_loss = loss_network_precision(settings.precision)
    check_accum(settings.accum, nn.Identity(), "stage 2")
    for net in (generator, discriminator):
        _prepare(distributed.convert_batchnorm(net, device), device,
                 settings.channels_last).train()
    if perceptual is not None:
        _prepare(perceptual, device, settings.channels_last)
    opt_g = _adam(generator.parameters(), settings.lr, settings, device)
    opt_d = _adam(discriminator.parameters(), lr_d, settings, device)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, settings.milestones, settings.lr_gamma)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, settings.milestones, settings.lr_gamma)
    # one scaler per optimiser: an overflow in D's gradients skips D's step only
    scaler_g, scaler_d = (grad_scaler(settings.precision, device) for _ in range(2))
    ema = make_ema(generator, settings.ema_decay, start=ema_start)
    parts = {"generator": generator, "discriminator": discriminator, "opt_g": opt_g,
             "opt_d": opt_d, "sched_g": sched_g, "sched_d": sched_d,
             **({"scaler_g": scaler_g, "scaler_d": scaler_d} if scaler_g.is_enabled() else {}),
             **({"generator_ema": ema} if ema is not None else {})}
    start, best = _resume(checkpoint, parts)
    # G and D's own update go through DDP; G's update calls D directly (frozen there).
    mode = settings.compile
    nets = GanNets(
        g=wrap(generator, device, precision_g, mode),
        d=wrap(discriminator, device, precision_loss, mode),
        d_frozen=wrap(discriminator, device, precision_loss, mode, parallel=False),
        percep=None if perceptual is None else wrap(perceptual, device, precision_loss, mode,
                                                   parallel=False),
        discriminator=discriminator)
    update_g, update_d = Update(opt_g, scaler_g), Update(opt_d, scaler_d)
    stage = Stage(2, f"stage 2 ({'ragan' if ragan else 'standard'})",
                  lambda batch: gan_step(nets, update_g, update_d, batch, ragan, weights),
                  parts, [sched_g, sched_d], ("lr", "d_lr"), generator, shown=("l_g", "l_d"),
                  ema=ema, before_step=getattr(perceptual, "before_step", None))
    return train_loop(stage, batches, settings, device=device, checkpoint=checkpoint, log=log,
                      validate=validate, progress=progress, start=start, best=best)
