"""Every setting of the experiment, in one place: the base config, the named presets, checks.

Sacred reads the bodies of ``base`` and the presets below as config scopes: each assignment
is one config key, and the comment beside it is its documentation (``print_config`` shows it).
The base config is the ``cpu`` preset (so that a bare ``run.py`` is practical on a laptop);
``tiny`` is for tests, ``paper`` is the paper's full setting for a GPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esrgan.speed import COMPILE_MODES, TRAINING_PRECISIONS
from esrgan.train import ADAM_IMPLS

# the paper's sizes and schedule, for the substitutes list of a report
PAPER_SIZES = {"nf": 64, "nb": 23, "gc": 32, "steps1": 1_000_000, "steps2": 400_000,
               "batch": 16, "patch": 128}
# pi and lpips need pyiqa's weight files (esrgan/metrics/iqa.py); without them they are left out
KNOWN_VAL_METRICS = ("psnr", "ssim", "niqe", "pi", "lpips")


def base():
    preset = "cpu"  # name of the preset these values came from (recorded with every run)

    # --- the six paper changes (PAPER.md 1-3); defaults = full ESRGAN
    rrdb = True  # RRDB trunk (False: SRGAN residual blocks, nb_resblock of them)
    bn = False  # BatchNorm in the trunk blocks (True: SRGAN's BN)
    beta = 0.2  # residual scaling of every residual branch (1.0: none)
    small_init = True  # Kaiming init x0.1 in the residual blocks (False: plain MSRA)
    ragan = True  # relativistic average GAN (False: standard GAN)
    vgg_before_act = True  # perceptual features before the ReLU (False: after, as SRGAN)

    # --- network sizes
    nf = 32  # generator feature channels (paper: 64)
    nb = 4  # number of RRDB blocks (paper: 23)
    nb_resblock = 8  # number of ResBlocks when rrdb=False (paper's SRGAN: 16)
    gc = 16  # RDB growth channels (paper: 32)
    scale = 4  # upscaling factor (2 or 4)
    d_nf = 32  # discriminator base channels (paper: 64)

    # --- stage-2 loss: L_G = percep_weight * L_percep + lambda_adv * L_adv + eta_l1 * L1
    vgg_layer = "conv5_4"  # VGG19 layer of the perceptual loss
    vgg_weights = "imagenet"  # 'imagenet' (torchvision's vgg19-dcbb9e9d.pth), 'random', or a path
    vgg_seed = 0  # init seed of the random-weight VGG19
    percep_weight = 1.0  # weight of the perceptual term
    percep_normalize = vgg_weights == "random"  # divide by mean |HR feature| (not in the paper)
    lambda_adv = 5e-3  # weight of the adversarial term
    eta_l1 = 1e-2  # weight of the L1 term

    # --- optimisation (Adam; lr_decay_at*: fractions of the stage's steps where lr *= lr_gamma)
    steps1 = 1500  # stage-1 (L1, PSNR-oriented) steps
    lr1 = 2e-4  # stage-1 learning rate
    lr_decay_at1 = [0.2, 0.4, 0.6, 0.8]  # paper: halved every 200k of 1M
    steps2 = 200  # stage-2 (GAN) steps
    lr2 = 1e-4  # stage-2 generator learning rate
    lr_d = 1e-4  # discriminator learning rate
    lr_decay_at2 = [0.125, 0.25, 0.5, 0.75]  # paper: 50k, 100k, 200k, 300k of 400k
    lr_gamma = 0.5  # learning-rate decay factor
    adam_betas = [0.9, 0.999]  # Adam beta1, beta2
    batch = 4  # global batch size (under torchrun: split evenly over the processes)
    patch = 64  # HR patch size (multiple of 32: the discriminator halves it 5 times)
    # Speed: each preset's default is the fastest setting that passed the bf16 quality guard
    # (benchmarks/bench_precision.py, README "Performance"): here bf16-losses + channels_last,
    # stage 2 1.5x faster, validation PSNR-Y within 0.001 dB of fp32 (full bf16: -0.12 dB).
    precision = "bf16-losses"  # training arithmetic: 'fp32', 'bf16' (autocast), 'bf16-losses'
    channels_last = True  # NHWC memory format for networks and batches (faster with bf16)
    compile = "off"  # torch.compile of the networks: 'off', 'default', 'reduce-overhead'
    adam = "auto"  # Adam kernel: 'auto' (fused on CUDA, foreach on CPU), 'fused', 'foreach'

    # --- data (None: the embedded scikit-image photos, see esrgan/data/embedded.py)
    train_hr = None  # folder of HR training images (e.g. DF2K)
    train_lr = None  # folder of matching LR images (None: MATLAB bicubic from HR)
    val_hr = None  # folder of HR validation images
    val_lr = None  # folder of matching LR validation images
    test_sets = []  # HR folders scored at the end (LR by MATLAB bicubic); .../Set5/HR -> 'Set5'
    val_metrics = ["psnr", "ssim", "niqe"]  # validation metrics (Y, shave = scale); + pi, lpips
    val_crops = 64  # side of the centre crops saved per validation image (0: none)
    interp_alphas = [round(0.1 * i, 1) for i in range(11)]  # `interpolate` command's alphas
    bp_iterations = 5  # back-projection iterations of the `interpolate` command

    # --- run mechanics
    seed = 0  # seed of stage 2 (data order, D init): the matrix's replicates
    stage1_seed = 0  # seed of stage 1 (G init, data order); shared by the stage-2 seeds
    device = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', ...
    num_workers = 0  # DataLoader workers
    val_every = 0  # validate every N steps (0: only at the end of each stage)
    ckpt_every = 100  # checkpoint every N steps
    log_every = 10  # log losses every N steps (averaged over them)
    work_dir = "work"  # checkpoints and the stage-1 cache
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
    # fp32: tests compare tiny runs weight by weight (resume, torchrun); bf16 would save 1-2 s
    precision = "fp32"
    channels_last = False
    ckpt_every = 25
    log_every = 10
    val_crops = 32


def cpu():
    preset = "cpu"  # the default of `make ablation` on 2 cores (= base values)


def paper():
    preset = "paper"  # the paper's full setting (PAPER.md section 4), for a GPU
    nf = 64
    nb = 23
    nb_resblock = 16
    gc = 32
    d_nf = 64
    patch = 128
    batch = 16
    steps1 = 1_000_000
    steps2 = 400_000
    # not measured on a GPU in this project yet: fp32 eager until bench_gpu.py and the quality
    # guard have run there (then e.g. bf16-losses, channels_last, compile='reduce-overhead')
    precision = "fp32"
    channels_last = False
    num_workers = 8
    val_every = 5000
    ckpt_every = 5000
    log_every = 100
    val_crops = 128


NAMED = {"tiny": tiny, "cpu": cpu, "paper": paper}
# replicates per cell in `experiments/matrix.py` (and so `make ablation`) unless --seeds is given
MATRIX_SEEDS = {"tiny": 2, "cpu": 2, "paper": 1}


def _vgg_problem(weights: str) -> str | None:
    """Missing VGG19 weights, found before anything trains."""
    from esrgan.archs.vgg import IMAGENET_FILE, imagenet_weights_path

    if weights == "random":
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


def validate(cfg: Mapping[str, Any]) -> list[str]:
    """Every problem of a config, one short sentence each (empty: fine)."""
    problems = []
    if not float(cfg["beta"]) > 0:
        problems.append(f"beta must be > 0 (1.0 means no residual scaling), got {cfg['beta']}")
    if int(cfg["scale"]) not in (2, 4):
        problems.append(f"scale must be 2 or 4, got {cfg['scale']}")
    patch = int(cfg["patch"])
    if patch <= 0 or patch % 32 or patch % (4 * int(cfg["scale"])):
        problems.append(f"patch must be a positive multiple of 32 (the discriminator halves it "
                        f"five times) and of 4*scale, got {patch}")
    for key in ("steps1", "steps2"):
        if int(cfg[key]) < 0:
            problems.append(f"{key} must be >= 0, got {cfg[key]}")
    for key in ("batch", "nf", "nb", "nb_resblock", "gc", "d_nf"):
        if int(cfg[key]) < 1:
            problems.append(f"{key} must be >= 1, got {cfg[key]}")
    for key in ("train_hr", "train_lr", "val_hr", "val_lr"):
        if cfg[key] is not None and not Path(cfg[key]).is_dir():
            problems.append(f"{key} folder not found: {cfg[key]}")
    for folder in list(cfg["test_sets"]):
        if not Path(folder).is_dir():
            problems.append(f"test set folder not found: {folder}")
    unknown = sorted(set(cfg["val_metrics"]) - set(KNOWN_VAL_METRICS))
    if unknown:
        problems.append(f"unknown val_metrics {unknown}; known: {list(KNOWN_VAL_METRICS)}")
    for key, allowed in (("precision", TRAINING_PRECISIONS), ("compile", COMPILE_MODES),
                         ("adam", ADAM_IMPLS)):
        if cfg[key] not in allowed:
            problems.append(f"{key} must be one of {list(allowed)}, got {cfg[key]!r}")
    from esrgan.distributed import launch_world_size

    world = launch_world_size()
    if int(cfg["batch"]) % world:
        problems.append(f"batch {cfg['batch']} is the global batch and must split evenly over "
                        f"the {world} torchrun processes")
    device = str(cfg["device"])
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            problems.append(f"device {device!r} requested but CUDA is not available")
    vgg = _vgg_problem(str(cfg["vgg_weights"]))
    if vgg:
        problems.append(vgg)
    return problems


def runs_root() -> Path:
    """The file store of this machine (ESRGAN_RUNS, default ./runs)."""
    return Path(os.environ.get("ESRGAN_RUNS", "runs"))


# keys a resumed run keeps from the new command line instead of the old run
_RESUME_KEEPS = ("device", "num_workers", "progress", "resume")


def resume_updates(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config of the run named by ``resume`` (a run folder or a file-store run id)."""
    target = str(cfg["resume"])
    folder = Path(target)
    if not (folder / "config.json").exists() and target.isdigit():
        folder = runs_root() / target
    config_file = folder / "config.json"
    if not config_file.exists():
        from sacred.utils import SacredError

        raise SacredError(f"resume={target}: no run there (looked for {config_file})",
                          print_traceback=False)
    old = json.loads(config_file.read_text())
    old.pop("__doc__", None)
    return {k: v for k, v in old.items() if k not in _RESUME_KEEPS}


def substitutes(cfg: Mapping[str, Any]) -> list[str]:
    """What this run does differently from the paper's setting, for reports."""
    out = []
    if cfg["train_hr"] is None:
        out.append("embedded scikit-image photos instead of DF2K (800 + 2650 2K images)")
    if cfg["vgg_weights"] == "random":
        out.append(f"random-weight VGG19 (seed {cfg['vgg_seed']}) instead of ImageNet VGG19: "
                   "ImageNet weights were not available")
    if cfg["percep_normalize"]:
        out.append("perceptual L1 divided by the mean |feature| of the HR image (not in the "
                   "paper; keeps stage 2 stable with a random VGG19)")
    if cfg["vgg_layer"] != "conv5_4":
        out.append(f"perceptual features from {cfg['vgg_layer']} instead of conv5_4")
    sizes = {k: cfg[k] for k in PAPER_SIZES if cfg[k] != PAPER_SIZES[k]}
    if sizes:
        paper = ", ".join(f"{k} {PAPER_SIZES[k]}" for k in sizes)
        ours = ", ".join(f"{k} {v}" for k, v in sizes.items())
        out.append(f"smaller scale: {ours} (paper: {paper}); learning-rate milestones scaled")
    if cfg["precision"] != "fp32":
        which = "VGG19 and D" if cfg["precision"] == "bf16-losses" else "all networks"
        out.append(f"bf16 autocast in {which} ({cfg['precision']}; the paper trained in fp32; "
                   "benchmarks/bench_precision.py measures the difference)")
    return out
