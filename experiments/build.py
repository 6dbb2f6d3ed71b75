"""Config dict -> the objects of one run: networks, losses, data, and the keys that name them.

This is the only place where the flat Sacred switches meet the library's arguments (the
switches themselves: ``esrgan.paper.switches``), so that a reader sees each paper change
mapped once:

    rrdb            -> build_generator(trunk='rrdb' | 'resblock')   (and nb vs nb_resblock)
    bn              -> build_generator(bn=...)
    beta            -> build_generator(beta=...)
    small_init      -> build_generator(init_scale=0.1 | 1.0)
    ragan           -> train_gan(gan_loss='ragan' | 'standard')
    vgg_before_act  -> VGGFeatureExtractor(before_activation=...)

It also names a run: ``stage1_key`` (the settings that decide the stage-1 model) and
``cell_key`` (every setting that changes what is computed). Nothing here imports Sacred:
every function takes the plain config dict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from esrgan import distributed
from esrgan.archs.discriminator import VGGStyleDiscriminator
from esrgan.archs.rrdbnet import build_generator
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.data import (
    ImagePair,
    PatchDataset,
    embedded_image,
    embedded_pairs,
    load_pairs,
    load_training_pairs,
    make_loader,
    mod_crop,
    to_tensor,
)
from esrgan.losses import PerceptualLoss
from esrgan.losses.perceptual import active_fraction
from esrgan.train import GanWeights, StageSettings
from experiments.presets import EMBEDDED_TEST

SMALL_INIT_SCALE = 0.1  # the paper's small init: MSRA init scaled by 0.1 (section 3.1)

# Config keys that decide the stage-1 (PSNR) model; runs that agree on all of them share it.
STAGE1_KEYS = (
    "rrdb", "bn", "beta", "small_init", "nf", "nb", "nb_resblock", "gc", "scale",
    "steps1", "lr1", "lr_decay_at1", "lr_gamma", "adam_betas", "batch", "patch",
    "train_hr", "train_lr", "stage1_seed", "precision1", "channels_last", "ema_decay",
)
# Keys that never change what is computed (where, how fast, how often it is shown).
NON_SEMANTIC_KEYS = (
    "device", "num_workers", "resume", "fresh", "work_dir", "progress", "log_every",
    "val_every1", "val_every2", "ckpt_every", "test_sets", "val_crops", "interp_alphas",
    "bp_iterations",
    "compile", "adam",  # same maths, other kernels (float rounding aside)
    "study",  # a label for the analysis
    "tb_dir",  # where the live TensorBoard view is written
    # which checkpoints are kept; deterministic kernels (the same maths, reproducible)
    "keep_last", "best_metric1", "best_metric2", "deterministic",
)
# Keys added after cells were stored, at the value that computes what those cells computed:
# left out of the cell key there, so that a stored cell keeps its key. ``accum`` is not a
# stage-1 key (the same update, float rounding aside) but changes stage 2 (D's BatchNorm and
# RaGAN's means over micro-batches).
ADDED_KEYS: dict[str, Any] = {"accum": 1}


def generator_arch(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The build_generator arguments chosen by the four generator switches and the sizes."""
    return {
        "trunk": "rrdb" if cfg["rrdb"] else "resblock",
        "bn": bool(cfg["bn"]),
        "beta": float(cfg["beta"]),
        "init_scale": SMALL_INIT_SCALE if cfg["small_init"] else 1.0,
        "nf": int(cfg["nf"]),
        # The paper compares each trunk at its own depth (16 SRGAN ResBlocks, 23 RRDBs).
        "nb": int(cfg["nb"] if cfg["rrdb"] else cfg["nb_resblock"]),
        "gc": int(cfg["gc"]),
        "scale": int(cfg["scale"]),
    }


def device(cfg: Mapping[str, Any]) -> torch.device:
    """The configured device ('auto': CUDA when there is one); under torchrun this process's
    GPU, and the job is joined."""
    name = str(cfg["device"])
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.init(torch.device(name))


def make_generator(cfg: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """A freshly initialised generator; the init is a function of ``seed`` alone."""
    torch.manual_seed(seed)
    return build_generator(**generator_arch(cfg))


def make_discriminator(cfg: Mapping[str, Any], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return VGGStyleDiscriminator(in_ch=3, nf=int(cfg["d_nf"]), patch_size=int(cfg["patch"]))


def make_feature_extractor(cfg: Mapping[str, Any]) -> VGGFeatureExtractor:
    return VGGFeatureExtractor(
        layer=cfg["vgg_layer"],
        before_activation=bool(cfg["vgg_before_act"]),
        weights=cfg["vgg_weights"],
        seed=int(cfg["vgg_seed"]),
    )


PREMISE_PHOTO = "astronaut"  # a fixed training photo for the VGG19 sparsity (the paper: baboon)


def vgg_premise(cfg: Mapping[str, Any], extractor: VGGFeatureExtractor) -> dict[str, Any]:
    """The premise of the before-activation loss, measured on the extractor in use: the
    fraction of its layer's units active after the ReLU on a fixed photo."""
    image = to_tensor(mod_crop(embedded_image(PREMISE_PHOTO), int(cfg["scale"])))
    return {"vgg_active_fraction": active_fraction(extractor, image),
            "vgg_active_photo": PREMISE_PHOTO, "vgg_layer": str(cfg["vgg_layer"]),
            "vgg_weights": str(cfg["vgg_weights"])}


def make_perceptual_loss(cfg: Mapping[str, Any]) -> PerceptualLoss:
    return PerceptualLoss(make_feature_extractor(cfg), normalize=bool(cfg["percep_normalize"]))


def gan_loss_name(cfg: Mapping[str, Any]) -> str:
    return "ragan" if cfg["ragan"] else "standard"


def gan_weights(cfg: Mapping[str, Any]) -> GanWeights:
    return GanWeights(percep=float(cfg["percep_weight"]), lambda_adv=float(cfg["lambda_adv"]),
                      eta_l1=float(cfg["eta_l1"]))


def stage_settings(cfg: Mapping[str, Any], stage: int) -> StageSettings:
    steps = int(cfg[f"steps{stage}"])
    return StageSettings(
        steps=steps,
        lr=float(cfg[f"lr{stage}"]),
        batch_size=int(cfg["batch"]),
        lr_decay_at=tuple(float(f) for f in cfg[f"lr_decay_at{stage}"]),
        lr_gamma=float(cfg["lr_gamma"]),
        adam_betas=(float(cfg["adam_betas"][0]), float(cfg["adam_betas"][1])),
        ckpt_every=int(cfg["ckpt_every"]),
        val_every=int(cfg[f"val_every{stage}"]),
        log_every=max(1, int(cfg["log_every"])),
        num_workers=int(cfg["num_workers"]),
        precision=str(cfg[f"precision{stage}"]),
        channels_last=bool(cfg["channels_last"]),
        compile=str(cfg["compile"]),
        adam=str(cfg["adam"]),
        ema_decay=float(cfg["ema_decay"]),
        accum=int(cfg["accum"]),
        keep_last=int(cfg["keep_last"]),
        best_metric=best_metric(cfg, stage),
    )


def best_metric(cfg: Mapping[str, Any], stage: int) -> str:
    """The metric a stage keeps its best generator by: ``best_metric<stage>`` when the
    validation computes it (it is among ``val_metrics``), else '' (no best file)."""
    metric = str(cfg[f"best_metric{stage}"])
    return metric if metric in cfg["val_metrics"] else ""


def train_pairs(cfg: Mapping[str, Any], cache_dir: Path | None) -> list[ImagePair]:
    """Training pairs: the embedded set when ``train_hr`` is None, else that folder.

    ``train_hr`` may be a decoded cache (``python -m esrgan.data.cache``): memory-mapped, the
    way to feed a GPU from DF2K-sized folders.
    """
    if cfg["train_hr"] is None:
        return embedded_pairs("train", scale=int(cfg["scale"]))
    return load_training_pairs(cfg["train_hr"], cfg["train_lr"], scale=int(cfg["scale"]),
                               cache_dir=cache_dir, on_error="skip")


def val_pairs(cfg: Mapping[str, Any], cache_dir: Path | None) -> list[ImagePair]:
    """Validation pairs: the embedded set when ``val_hr`` is None, else that folder."""
    if cfg["val_hr"] is None:
        return embedded_pairs("val", scale=int(cfg["scale"]))
    return load_pairs(cfg["val_hr"], cfg["val_lr"], scale=int(cfg["scale"]),
                      cache_dir=cache_dir, on_error="raise")


def test_set_name(folder: str) -> str:
    """'embedded' -> 'test'; ``.../Set5/HR`` -> 'Set5'; any other folder -> its own name."""
    if folder == EMBEDDED_TEST:
        return "test"
    path = Path(folder).resolve()
    return path.parent.name if path.name.upper() in ("HR", "GT") else path.name


def load_test_set(folder: str, scale: int, cache_dir: Path | None) -> list[ImagePair]:
    """A test set: the held-out embedded photos, or an HR folder with LR by MATLAB bicubic
    (the benchmark convention)."""
    if folder == EMBEDDED_TEST:
        return embedded_pairs("test", scale=scale)
    return load_pairs(folder, None, scale=scale, cache_dir=cache_dir, on_error="raise")


def patch_dataset(cfg: Mapping[str, Any], pairs: list[ImagePair], seed: int,
                  length: int) -> PatchDataset:
    """Training crops: sample i is a pure function of (seed, i)."""
    return PatchDataset(pairs, patch_size=int(cfg["patch"]), scale=int(cfg["scale"]),
                        augment=True, seed=seed, length=max(length, 1))


def loader(data: PatchDataset, settings: StageSettings, start: int,
           device: torch.device) -> torch.utils.data.DataLoader:
    """Batches of steps start .. settings.steps - 1, identical for any number of workers.

    Under torchrun this process gets its slice of each global batch (``batch / N`` samples),
    so the N processes together see exactly the single-process batches.
    """
    world, rank = distributed.world_size(), distributed.rank()
    return make_loader(data, settings.batch_size // world, num_workers=settings.num_workers,
                       start_step=start, num_steps=max(settings.steps - start, 0),
                       rank=rank, world_size=world, pin_memory=device.type == "cuda")


def disk_needed(cfg: Mapping[str, Any]) -> int:
    """Bytes a run writes at most at once: its checkpoints, their temporary copies (a file is
    replaced only once its new version is complete), the generator files and their copies in
    the file store, plus a margin for images and records."""
    g = sum(p.numel() for p in make_generator(cfg, seed=0).parameters())
    d = sum(p.numel() for p in make_discriminator(cfg, seed=0).parameters()) \
        if int(cfg["steps2"]) > 0 else 0
    checkpoint = 4 * 3 * (g + d)  # fp32 weights + Adam's two moments
    generators = 4 * g * 5  # stage-1 cache, G_psnr, G_gan and the file store's copies
    steps = [int(cfg["steps1"])] + ([int(cfg["steps2"])] if d else [])
    every, keep = int(cfg["ckpt_every"]), int(cfg["keep_last"])
    # the periodic checkpoints kept per stage (-1: all of them)
    kept = sum(keep if keep >= 0 else (n // every if every > 0 else 0) for n in steps)
    best = 4 * 2 * g * 2 * len(steps)  # raw and averaged G, and a temporary copy, per stage
    return (2 + kept) * checkpoint + generators + best + 20_000_000


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage1_key(cfg: Mapping[str, Any]) -> str:
    """Hash of exactly the settings that decide the stage-1 model."""
    return _digest({k: cfg.get(k) for k in STAGE1_KEYS})


def cell_key(cfg: Mapping[str, Any]) -> str:
    """Hash of every setting that changes what a run computes (its identity in the matrix)."""
    return _digest({k: v for k, v in sorted(cfg.items()) if k not in NON_SEMANTIC_KEYS
                    and not (k in ADDED_KEYS and v == ADDED_KEYS[k])})
