"""Every setting of the experiment, in one place: the base config, the named presets, checks.

Sacred reads the bodies of ``base`` and the presets below as config scopes: each assignment
is one config key, and the comment beside it is its documentation (``print_config`` shows it).
The base config is the ``cpu`` preset (so that a bare ``run.py`` is practical on a laptop);
``tiny`` is for tests, ``paper`` is the paper's full setting for a GPU. The six paper switches
take their defaults (full ESRGAN) from ``esrgan.paper.switches``, the paper preset its sizes
and schedule from ``esrgan.paper.setting``.

``resolve(preset, overrides)`` is the one way to turn a preset and overrides into the config
Sacred gives ``run.py with PRESET key=value ...``: the matrix, the benchmarks and the tests
all use it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esrgan.paper.departures import departures
from esrgan.paper.setting import PAPER_SETTING
from esrgan.paper.switches import ESRGAN
from experiments import keys

EMBEDDED_TEST = "embedded"  # the value of test_sets that names the held-out embedded photos
# pi, lpips and dists need weight files (esrgan/downloads.py); without them they are left out
KNOWN_VAL_METRICS = ("psnr", "ssim", "niqe", "pi", "lpips", "dists", "artifacts",
                     "brightness_shift", "brightness_error")


def base():
    preset = "cpu"  # name of the preset these values came from (recorded with every run)

    # --- the six paper changes (esrgan/paper/switches.py); defaults = full ESRGAN
    rrdb = ESRGAN["rrdb"]  # RRDB trunk (False: SRGAN residual blocks, nb_resblock of them)
    bn = ESRGAN["bn"]  # BatchNorm in the trunk blocks (True: SRGAN's BN)
    beta = ESRGAN["beta"]  # residual scaling of every residual branch (1.0: none)
    small_init = ESRGAN["small_init"]  # Kaiming init x0.1 in the residual blocks (False: MSRA)
    ragan = ESRGAN["ragan"]  # relativistic average GAN (False: standard GAN)
    vgg_before_act = ESRGAN["vgg_before_act"]  # perceptual features before the ReLU (SRGAN: after)
    # --- switches the paper does not have (off = the paper's method)
    d_spectral_norm = ESRGAN["d_spectral_norm"]  # spectral norm on D's convs and linears

    # --- network sizes (the paper preset has the paper's)
    nf = 32  # generator feature channels
    nb = 4  # number of RRDB blocks
    nb_resblock = 8  # number of ResBlocks when rrdb=False
    gc = 16  # RDB growth channels
    scale = 4  # upscaling factor (2 or 4)
    d_nf = 32  # discriminator base channels

    # --- stage-2 loss: L_G = percep_weight * L_percep + lambda_adv * L_adv + eta_l1 * L1
    vgg_layer = PAPER_SETTING["vgg_layer"]  # VGG19 layer of the perceptual loss
    vgg_weights = "imagenet"  # 'imagenet' (torchvision's vgg19-dcbb9e9d.pth), 'random', or a path
    vgg_seed = 0  # init seed of the random-weight VGG19
    vgg_pool = "max"  # VGG19's pooling: 'max' (VGG19's own) or 'avg' (smoother gradients)
    # perceptual network: 'vgg19' (the paper's, vgg_* keys), or a fixed Gabor filter bank
    # (no weight file; esrgan/archs/filterbank.py): 'gabor' (rectified simple cells) or
    # 'gabor_energy' (complex cells, the local energy of each quadrature pair)
    percep_net = "vgg19"
    # a Gabor bank's low-pass residual (colour and brightness, which its zero-mean filters do
    # not see), weighted as a full-resolution RGB image at 1 (0: band-pass only)
    gabor_lowpass = 0.0
    percep_blur = 0.0  # sigma (px) of a Gaussian low-pass of SR and HR before it (0: none)
    percep_weight = PAPER_SETTING["percep_weight"]  # weight of the perceptual term
    percep_normalize = vgg_weights == "random"  # divide by mean |HR feature| (not in the paper)
    lambda_adv = PAPER_SETTING["lambda_adv"]  # weight of the adversarial term
    eta_l1 = PAPER_SETTING["eta_l1"]  # weight of the L1 term

    # --- optimisation (Adam; lr_decay_at*: fractions of the stage's steps where lr *= lr_gamma)
    steps1 = 2000  # stage-1 (L1, PSNR-oriented) steps
    # the paper's 2e-4 spreads over 1M steps: in a few thousand, 5e-4 trains a better PSNR model
    lr1 = 5e-4  # stage-1 learning rate (measured: README "How the default was chosen")
    lr_decay_at1 = PAPER_SETTING["lr_decay_at1"]  # the paper halves every 200k of 1M steps
    steps2 = 250  # stage-2 (GAN) steps
    lr2 = PAPER_SETTING["lr2"]  # stage-2 generator learning rate
    lr_d = PAPER_SETTING["lr_d"]  # discriminator learning rate
    lr_decay_at2 = PAPER_SETTING["lr_decay_at2"]  # the paper: 50k, 100k, 200k, 300k of 400k
    lr_gamma = PAPER_SETTING["lr_gamma"]  # learning-rate decay factor
    adam_betas = PAPER_SETTING["adam_betas"]  # Adam beta1, beta2
    batch = 4  # global batch size (under torchrun: split evenly over the processes)
    patch = 64  # HR patch size (multiple of 32: the discriminator halves it 5 times)
    patch2 = 0  # HR patch size of stage 2 and of D's input (0: patch)
    # fp32, the paper's arithmetic: bf16 autocast is faster only on CPUs with native bf16
    # (AVX512-BF16 or AMX); elsewhere it is emulated and far slower (README "Performance")
    precision1 = "fp32"  # stage-1 arithmetic (G only): 'fp32', 'bf16' or 'fp16' (autocast)
    # stage 2: 'fp32', 'bf16'/'fp16' (every network), 'bf16-losses'/'fp16-losses' (VGG, D);
    # fp16 (GPUs before Ampere) adds a gradient scaler per optimiser
    precision2 = "fp32"
    channels_last = True  # NHWC memory format for networks and batches (faster on CPUs)
    compile = "off"  # torch.compile of the networks: 'off', 'default', 'reduce-overhead'
    adam = "auto"  # Adam kernel: 'auto' (fused on CUDA, foreach on CPU), 'fused', 'foreach'
    # > 0: keep an exponential moving average of G's weights in both stages, score and ship
    # it (BasicSR's recipe: 0.999; not in the paper, which uses the raw weights)
    ema_decay = 0.0

    # --- long runs (README "Long runs"): kept checkpoints, accumulation, determinism
    # periodic checkpoints kept beside the resume point, checkpoint_<step>.pth (0: only the
    # resume point; -1: all, BasicSR's way, unbounded on disk)
    keep_last = 0
    best_metric1 = "psnr"  # stage 1 keeps best_<metric>.pth, its best validation ('': none)
    best_metric2 = "niqe"  # stage 2's: the perceptual metric ('pi' with pyiqa's weights)
    # micro-batches per step: `batch` is split into `accum` parts whose gradients add up to
    # the batch's (e.g. the paper's 16 as 4 x 4); stage 2 takes D's BatchNorm and RaGAN's
    # means over each part; refused with bn=True (G's BatchNorm would, too)
    accum = 1
    deterministic = False  # deterministic kernels on CUDA (use_deterministic_algorithms)

    # --- data (None: the embedded scikit-image photos, see esrgan/data/embedded.py)
    train_hr = None  # folder of HR training images (e.g. DF2K)
    train_lr = None  # folder of matching LR images (None: MATLAB bicubic from HR)
    val_hr = None  # folder of HR validation images
    val_lr = None  # folder of matching LR validation images
    # sets scored at the end: HR folders (LR by MATLAB bicubic; .../Set5/HR -> 'Set5') or
    # 'embedded' (the held-out embedded photos, set 'test', see esrgan/data/embedded.py)
    test_sets = ["embedded"]
    # validation metrics (Y, shave = scale); + pi, lpips, dists when their weights are on disk
    # LPIPS and DISTS where their weights are on disk (`make weights`); else left out, and the
    # report says why. PI (NIQE and Ma's NRQM) is slow on a CPU: add it by hand there.
    val_metrics = ["psnr", "ssim", "niqe", "lpips", "dists", "artifacts", "brightness_shift",
                   "brightness_error"]
    val_crops = 64  # side of the centre crops saved per validation image (0: none)
    interp_alphas = [round(0.2 * i, 1) for i in range(6)]  # the paper's alphas 0, 0.2, ..., 1
    bp_iterations = 5  # back-projection iterations of the `interpolate` command

    # --- run mechanics
    seed = 0  # the replicate: seeds stage 2 (data order, D init) and, by default, stage 1
    stage1_seed = seed  # seed of stage 1 (G init, data order): each replicate its own model
    study = "ablation"  # what the run is part of ('ablation', 'deep'): a label for the analysis
    device = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', ...
    num_workers = 0  # DataLoader workers
    val_every1 = 500  # validate every N steps of stage 1 (0: only at its end)
    val_every2 = 150  # validate every N steps of stage 2 (0: only at its end)
    ckpt_every = 100  # checkpoint every N steps
    log_every = 10  # log losses every N steps (averaged over them)
    work_dir = "work"  # checkpoints and the stage-1 cache
    # TensorBoard event files, one folder per run (experiments/tblog.py); '' writes none
    tb_dir = work_dir + "/tensorboard"
    resume = None  # run folder or file-store run id to continue (its config is reused)
    fresh = False  # ignore existing checkpoints of this configuration
    progress = True  # tqdm progress bars


def tiny():
    preset = "tiny"  # a run in well under a minute (tests, CI)
    nf = 16
    nb = 1
    nb_resblock = 2
    gc = 8
    d_nf = 16
    patch = 32
    batch = 4
    vgg_layer = "conv3_4"
    vgg_weights = "random"  # tests and smoke runs work offline
    steps1 = 100
    steps2 = 50
    val_every1 = 50
    val_every2 = 25
    # fp32: tests compare tiny runs weight by weight (resume, torchrun); bf16 would save 1-2 s
    precision1 = "fp32"
    precision2 = "fp32"
    channels_last = False
    ckpt_every = 25
    log_every = 10
    val_crops = 32
    val_metrics = ["psnr", "ssim", "niqe", "artifacts", "brightness_shift", "brightness_error"]


def cpu():
    preset = "cpu"  # the default of `make ablation` on a CPU (= base values)


def paper():
    preset = "paper"  # the paper's full setting (esrgan/paper/setting.py), for a GPU
    nf = PAPER_SETTING["nf"]
    nb = PAPER_SETTING["nb"]
    nb_resblock = PAPER_SETTING["nb_resblock"]
    gc = PAPER_SETTING["gc"]
    d_nf = PAPER_SETTING["d_nf"]
    patch = PAPER_SETTING["patch"]
    batch = PAPER_SETTING["batch"]
    steps1 = PAPER_SETTING["steps1"]
    lr1 = PAPER_SETTING["lr1"]
    steps2 = PAPER_SETTING["steps2"]
    # not measured on a GPU in this project yet: fp32 eager until the quality guard has run
    # there (then e.g. bf16-losses, channels_last, compile='reduce-overhead')
    precision1 = "fp32"
    precision2 = "fp32"
    channels_last = False
    num_workers = 8
    val_every1 = 20_000
    val_every2 = 20_000
    ckpt_every = 5000
    keep_last = 4  # 4 rollback points, the last 20k steps (0.8 GB in stage 1, 1.5 GB in 2)
    log_every = 100
    val_crops = 128
    # the panel of current SR papers; each left out (and said so) without its weight files
    val_metrics = ["psnr", "ssim", "niqe", "pi", "lpips", "dists", "artifacts",
                   "brightness_shift", "brightness_error"]


NAMED = {"tiny": tiny, "cpu": cpu, "paper": paper}

# The deep design (claim C1) per preset: a deep, narrow no-BN residual trunk trained with L1
# only, in fp32. The paper's evidence is 64 residual blocks; a narrow width keeps it cheap (the
# claim is about depth). On the CPU the learning rate stays constant: 400 steps are the early
# part of the paper's curves, where a decay would stop the curves before they separate
# (measured: README "How the default was chosen").
# The tiny preset's 8 blocks only exercise the design.
DEEP: dict[str, dict[str, Any]] = {
    "tiny": {"nb_resblock": 8, "nf": 8, "steps1": 60, "val_every1": 20, "lr1": 2e-4,
             "precision1": "fp32", "val_metrics": ["psnr"]},
    "cpu": {"nb_resblock": 64, "nf": 16, "steps1": 400, "batch": 8, "val_every1": 100,
            "lr1": 2e-4, "lr_decay_at1": [], "precision1": "fp32", "val_metrics": ["psnr"]},
    "paper": {"nb_resblock": 64, "nf": 64, "steps1": 200_000, "val_every1": 10_000,
              "lr1": 2e-4, "precision1": "fp32", "val_metrics": ["psnr"]},
}
# replicates per cell in `experiments/matrix.py` (and so `make ablation`) unless --seeds is given
MATRIX_SEEDS = {"tiny": 2, "cpu": 3, "paper": 1}
# first seeds of the claims that read only stage-1 models (C1, C2, C3, C8): their cells train
# no GAN stage (a stage-1-only or deep cell costs a fraction of a full one), so the first look
# already has power where power is cheap
CHEAP_SEEDS = {"tiny": 2, "cpu": 5, "paper": 1}
# the most seeds the sequential budget of `make ablation` gives a cell (BUDGET=minutes)
MAX_SEEDS = {"tiny": 2, "cpu": 8, "paper": 3}  # tiny: a smoke run, no extra seeds


class ConfigError(ValueError):
    """An unknown preset or config key, or a value of the wrong kind."""


def resolve(preset: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config Sacred gives ``run.py with PRESET key=value ...`` (overrides win)."""
    from sacred.config import ConfigScope

    if preset not in NAMED:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(sorted(NAMED))}")
    fixed = dict(overrides or {})
    unknown = sorted(set(fixed) - set(_defaults()))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}")
    named = dict(ConfigScope(NAMED[preset])(fixed=fixed))
    return dict(ConfigScope(base)(fixed={**named, **fixed}))


# ------------------------------------------------------------------------------------------
# checks


@functools.cache
def _base_defaults() -> tuple[tuple[str, Any], ...]:
    from sacred.config import ConfigScope

    return tuple(dict(ConfigScope(base)()).items())


def _defaults() -> dict[str, Any]:
    """The base config (every key and its default value)."""
    return dict(_base_defaults())


def _vgg_problem(weights: str, net: str = "vgg19") -> str | None:
    """Missing VGG19 weights, found before anything trains (none needed by another net)."""
    from esrgan.archs.vgg import IMAGENET_FILE, imagenet_weights_path

    if weights == "random" or net != "vgg19":
        return None
    if weights == "imagenet":
        path = imagenet_weights_path()
        if not path.is_file():
            return (f"ImageNet VGG19 weights {IMAGENET_FILE} not found: put it into "
                    f"{path.parent} (or set TORCH_HOME), or use vgg_weights=random offline")
        return None
    if not Path(weights).is_file():
        return f"vgg_weights file not found: {weights} (or use vgg_weights=random offline)"
    return None


def random_vgg_notice(what: str) -> str | None:
    """The notice of ``what`` (a run, a matrix) running without the ImageNet VGG19 file.

    None when the file is in torchvision's cache (ConfigError when it does not hash as
    published). A single run and the matrix fall back to ``vgg_weights=random`` the same way,
    with this notice at their start and end; the run records it in its config and its
    departures from the paper.
    """
    from esrgan.archs.vgg import IMAGENET_FILE, imagenet_weights_path
    from esrgan.downloads import file_status

    path = imagenet_weights_path()
    status = file_status(IMAGENET_FILE)
    if status == "hash differs":
        raise ConfigError(f"{path} does not hash as torchvision's {IMAGENET_FILE}: delete it "
                          "and run `make weights`, or use vgg_weights=random")
    if status != "missing":
        return None
    return (f"NOTE: ImageNet VGG19 weights not found at {path}: {what} uses "
            "vgg_weights=random (a seeded random-weight VGG19), recorded in the run and said on "
            "every report and figure; `make weights` gets the paper's (or name a file with "
            "vgg_weights=)")


def needs_vgg_fallback(preset: str, overrides: Mapping[str, Any]) -> bool:
    """Whether a run of ``preset`` with ``overrides`` would ask for the ImageNet VGG19 file."""
    if "vgg_weights" in overrides or "resume" in overrides:
        return False  # the user named the weights, or a resumed run keeps its own
    return bool(resolve(preset)["vgg_weights"] == "imagenet")


def validate(cfg: Mapping[str, Any]) -> list[str]:
    """Every problem of a config, one short sentence each (empty: fine).

    Each key's kind, choices and bounds first (``experiments.keys``); the checks that combine
    keys run only when those hold, so that no value reaches an arithmetic it would break.
    """
    problems = keys.problems(cfg)
    if problems:
        return problems
    if not 0 <= cfg["ema_decay"] < 1:
        problems.append(f"ema_decay must be in [0, 1) (0: no moving average), got "
                        f"{cfg['ema_decay']}")
    if not cfg["beta"] > 0:
        problems.append(f"beta must be > 0 (1.0 means no residual scaling), got {cfg['beta']}")
    for key in ("patch", "patch2"):
        patch = cfg[key]
        if key == "patch2" and patch == 0:
            continue
        if patch <= 0 or patch % 32 or patch % (4 * cfg["scale"]):
            problems.append(f"{key} must be a positive multiple of 32 (the discriminator "
                            f"halves it five times) and of 4*scale, got {patch}"
                            + (" (0: patch)" if key == "patch2" else ""))
    for key in ("train_hr", "train_lr", "val_hr", "val_lr"):
        if cfg[key] is not None and not Path(cfg[key]).is_dir():
            problems.append(f"{key} folder not found: {cfg[key]}")
    for folder in cfg["test_sets"]:
        if folder != EMBEDDED_TEST and not Path(str(folder)).is_dir():
            problems.append(f"test set folder not found: {folder}")
    unknown = sorted(set(cfg["val_metrics"]) - set(KNOWN_VAL_METRICS))
    if unknown:
        problems.append(f"unknown val_metrics {unknown}; known: {list(KNOWN_VAL_METRICS)}")
    from esrgan.distributed import launch_world_size

    world = launch_world_size()
    if cfg["batch"] % world:
        problems.append(f"batch {cfg['batch']} is the global batch and must split evenly over "
                        f"the {world} torchrun processes")
    if cfg["gabor_lowpass"] and cfg["percep_net"] == "vgg19":
        problems.append("gabor_lowpass is a weight within a Gabor bank: set percep_net=gabor "
                        "or gabor_energy, or leave it at 0")
    problems += _long_run_problems(cfg, world)
    device = str(cfg["device"])
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            problems.append(f"device {device!r} requested but CUDA is not available")
    vgg = _vgg_problem(str(cfg["vgg_weights"]), str(cfg["percep_net"]))
    if vgg:
        problems.append(vgg)
    return problems


def _long_run_problems(cfg: Mapping[str, Any], world: int) -> list[str]:
    """Problems of the long-run keys: accum, keep_last, best_metric1/2."""
    problems = []
    accum = cfg["accum"]
    if accum < 1:
        problems.append(f"accum must be >= 1 (micro-batches per step), got {accum}")
    elif cfg["batch"] % (world * accum):
        problems.append(f"batch {cfg['batch']} must split into accum={accum} equal "
                        f"micro-batches" + (f" on each of the {world} processes"
                                            if world > 1 else ""))
    elif accum > 1 and cfg["bn"]:
        problems.append(f"accum={accum} with bn=True: G's BatchNorm would normalise over "
                        "micro-batches, not the batch (another update); use accum=1")
    if cfg["keep_last"] < -1:
        problems.append(f"keep_last must be >= 0, or -1 to keep every checkpoint, got "
                        f"{cfg['keep_last']}")
    usable = [m for m in KNOWN_VAL_METRICS if m != "brightness_shift"]  # signed: no best
    for key in ("best_metric1", "best_metric2"):
        if cfg[key] and cfg[key] not in usable:
            problems.append(f"{key} must be one of {usable} or '' (none), got {cfg[key]!r}")
    return problems


# keys a resumed run keeps from the new command line instead of the old run
_RESUME_KEEPS = ("device", "num_workers", "progress", "resume")


def resume_updates(cfg: Mapping[str, Any], runs_dir: str | Path) -> dict[str, Any]:
    """The config of the run named by ``resume`` (a run folder or a run id of ``runs_dir``)."""
    from experiments.store import files

    target = str(cfg["resume"])
    config_file = files.run_folder(target, runs_dir) / files.CONFIG_FILE
    try:
        old = files.read_json(config_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"resume={target}: {config_file} cannot be read ({exc})") from None
    if not isinstance(old, dict):
        raise ConfigError(f"resume={target}: no run there (looked for {config_file})")
    old.pop("__doc__", None)
    # a key the old run predates is set to the value it computed with, not today's default
    return {k: v for k, v in keys.complete(old).items() if k not in _RESUME_KEEPS}


def substitutes(cfg: Mapping[str, Any]) -> list[str]:
    """The sentences of the run's departures from the paper (``esrgan.paper.departures``)."""
    return [d.text for d in departures(cfg)]
