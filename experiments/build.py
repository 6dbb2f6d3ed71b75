"""Config dict -> the objects of one run: networks, losses, data, and the keys that name them.

This is the only place where the flat Sacred switches meet the library's arguments (the
switches themselves: ``esrgan.paper.switches``), so that a reader sees each paper change
mapped once:

    rrdb            -> build_generator(trunk='rrdb' | 'resblock')   (and nb vs nb_resblock)
    bn              -> build_generator(bn=...)
    beta            -> build_generator(beta=...)
    small_init      -> build_generator(init_scale=0.1 | 1.0)
    ragan           -> train_gan(ragan=...)
    vgg_before_act  -> VGGFeatureExtractor(before_activation=...)  (a Gabor bank has none)
    d_spectral_norm -> VGGStyleDiscriminator(spectral_norm=...)       (not in the paper)

A run's identity (``stage1_key``, ``cell_key``) is ``experiments.identity``. Nothing here
imports Sacred: every function takes the plain config dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from esrgan import distributed
from esrgan.archs.discriminator import VGGStyleDiscriminator
from esrgan.archs.filterbank import BandLimited, GaborFeatureExtractor
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
from esrgan.paper.switches import SMALL_INIT_SCALE
from esrgan.train import GanWeights, StageSettings
from experiments.keys import PERCEPTUAL_NETS
from experiments.presets import EMBEDDED_TEST


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
    """The configured device ('auto': CUDA when there is one). Under torchrun the caller
    joins the job with ``distributed.init(device)``, which picks this process's GPU."""
    name = str(cfg["device"])
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_generator(cfg: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """A freshly initialised generator; the init is a function of ``seed`` alone."""
    torch.manual_seed(seed)
    return build_generator(**generator_arch(cfg))


def discriminator_seed(cfg: Mapping[str, Any]) -> int:
    """D's init seed: the run's seed + 1, so that G's and D's inits never share a stream."""
    return int(cfg["seed"]) + 1


def make_discriminator(cfg: Mapping[str, Any], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return VGGStyleDiscriminator(in_ch=3, nf=int(cfg["d_nf"]), patch_size=stage_patch(cfg, 2),
                                 spectral_norm=bool(cfg["d_spectral_norm"]))


def stage_patch(cfg: Mapping[str, Any], stage: int) -> int:
    """The HR patch side of a stage's training crops (stage 2's is D's input too)."""
    return int(cfg["patch2"] or cfg["patch"]) if stage == 2 else int(cfg["patch"])


def new_discriminator(cfg: Mapping[str, Any]) -> torch.nn.Module:
    """The run's D, freshly initialised from its seed (:func:`discriminator_seed`)."""
    return make_discriminator(cfg, discriminator_seed(cfg))


def make_feature_extractor(cfg: Mapping[str, Any]) -> torch.nn.Module:
    """The perceptual loss's network: VGG19 (``vgg_*`` keys) or a fixed Gabor filter bank
    (``percep_net``, ``gabor_lowpass``), on input low-passed first when ``percep_blur`` > 0."""
    net = str(cfg["percep_net"])
    extractor: torch.nn.Module
    if net == "vgg19":
        extractor = VGGFeatureExtractor(
            layer=cfg["vgg_layer"],
            before_activation=bool(cfg["vgg_before_act"]),
            weights=cfg["vgg_weights"],
            seed=int(cfg["vgg_seed"]),
            pool=str(cfg["vgg_pool"]),
        )
    elif net in ("gabor", "gabor_energy"):
        extractor = GaborFeatureExtractor(mode="simple" if net == "gabor" else "energy",
                                          lowpass=float(cfg["gabor_lowpass"]))
    else:
        raise ValueError(f"percep_net must be one of {PERCEPTUAL_NETS}, got {net!r}")
    blur = float(cfg["percep_blur"])
    return BandLimited(extractor, blur) if blur > 0 else extractor


PREMISE_PHOTO = "astronaut"  # a fixed training photo for the VGG19 sparsity (the paper: baboon)


def vgg_premise(cfg: Mapping[str, Any], extractor: torch.nn.Module) -> dict[str, Any]:
    """The premise of the before-activation loss, measured on the extractor in use: the
    fraction of its layer's units active after the ReLU on a fixed photo."""
    image = to_tensor(mod_crop(embedded_image(PREMISE_PHOTO), int(cfg["scale"])))
    return {"vgg_active_fraction": active_fraction(extractor, image),
            "vgg_active_photo": PREMISE_PHOTO, "vgg_layer": str(cfg["vgg_layer"]),
            "vgg_weights": str(cfg["vgg_weights"])}


def make_perceptual_loss(cfg: Mapping[str, Any]) -> PerceptualLoss:
    return PerceptualLoss(make_feature_extractor(cfg), normalize=bool(cfg["percep_normalize"]))


def gan_weights(cfg: Mapping[str, Any]) -> GanWeights:
    return GanWeights(percep=float(cfg["percep_weight"]), lambda_adv=float(cfg["lambda_adv"]),
                      eta_l1=float(cfg["eta_l1"]))


def stage_settings(cfg: Mapping[str, Any], stage: int) -> StageSettings:
    """The optimisation settings of stage 1 (L1) or stage 2 (GAN), every key spelled out."""
    if stage == 1:
        own = {"steps": cfg["steps1"], "lr": cfg["lr1"], "lr_decay_at": cfg["lr_decay_at1"],
               "val_every": cfg["val_every1"], "precision": cfg["precision1"],
               "best_metric": cfg["best_metric1"]}
    else:
        own = {"steps": cfg["steps2"], "lr": cfg["lr2"], "lr_decay_at": cfg["lr_decay_at2"],
               "val_every": cfg["val_every2"], "precision": cfg["precision2"],
               "best_metric": cfg["best_metric2"]}
    return StageSettings(
        steps=int(own["steps"]),
        lr=float(own["lr"]),
        batch_size=int(cfg["batch"]),
        lr_decay_at=tuple(float(f) for f in own["lr_decay_at"]),
        lr_gamma=float(cfg["lr_gamma"]),
        adam_betas=(float(cfg["adam_betas"][0]), float(cfg["adam_betas"][1])),
        ckpt_every=int(cfg["ckpt_every"]),
        val_every=int(own["val_every"]),
        log_every=max(1, int(cfg["log_every"])),
        num_workers=int(cfg["num_workers"]),
        precision=str(own["precision"]),
        channels_last=bool(cfg["channels_last"]),
        compile=str(cfg["compile"]),
        adam=str(cfg["adam"]),
        ema_decay=float(cfg["ema_decay"]),
        accum=int(cfg["accum"]),
        keep_last=int(cfg["keep_last"]),
        # kept by a metric only when the validation computes it
        best_metric=own["best_metric"] if own["best_metric"] in cfg["val_metrics"] else "",
    )


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
                  length: int, stage: int = 1) -> PatchDataset:
    """Training crops of a stage: sample i is a pure function of (seed, i)."""
    return PatchDataset(pairs, patch_size=stage_patch(cfg, stage), scale=int(cfg["scale"]),
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


# ------------------------------------------------------------------------------------------
# one cell, built once


@dataclass
class CellParts:
    """Everything one cell needs, built from its config in one place (:func:`cell_parts`).

    ``run_cell`` reads: build these, stage 1, stage 2, score, record. Building loads the
    data and the perceptual network, so that bad input fails here, before any training.
    """

    stage1: StageSettings  # the L1 stage
    stage2: StageSettings  # the GAN stage (``steps`` 0: a stage-1 cell)
    perceptual: PerceptualLoss | None  # None for a stage-1 cell
    gan: GanWeights  # eq. (3)'s weights
    ragan: bool  # RaGAN's losses, else the standard GAN's
    lr_d: float
    train: list[ImagePair]
    val: list[ImagePair]
    tests: dict[str, list[ImagePair]]  # by set name
    metrics: list[str]  # scored at each validation and at the end
    scale: int
    new_generator: Callable[[int], torch.nn.Module]  # a fresh G from an init seed
    new_discriminator: Callable[[], torch.nn.Module]  # a fresh D from its seed
    patches: Callable[[int], PatchDataset]  # stage (1 or 2) -> its training crops

    @property
    def gan_stage(self) -> bool:
        return self.stage2.steps > 0

    def batches(self, stage: int, device: torch.device) -> Callable[[int], Any]:
        """``batches(start_step)`` of a stage: its loader from ``start_step`` on."""
        settings = self.stage1 if stage == 1 else self.stage2
        data = self.patches(stage)
        return lambda start: loader(data, settings, start, device)


def cell_parts(cfg: Mapping[str, Any]) -> CellParts:
    """Build every part of a cell from its config (see :class:`CellParts`)."""
    scale = int(cfg["scale"])
    cache = Path(cfg["work_dir"]) / "lr_cache"
    stage1, stage2 = stage_settings(cfg, 1), stage_settings(cfg, 2)
    perceptual = make_perceptual_loss(cfg) if stage2.steps > 0 else None
    train = train_pairs(cfg, cache_dir=cache)
    seeds = {1: int(cfg["stage1_seed"]), 2: int(cfg["seed"])}  # the data order of each stage

    def patches(stage: int) -> PatchDataset:
        settings = stage1 if stage == 1 else stage2
        return patch_dataset(cfg, train, seed=seeds[stage], stage=stage,
                             length=settings.steps * settings.batch_size)

    return CellParts(
        stage1=stage1, stage2=stage2, perceptual=perceptual, gan=gan_weights(cfg),
        ragan=bool(cfg["ragan"]), lr_d=float(cfg["lr_d"]), train=train,
        val=val_pairs(cfg, cache_dir=cache),
        tests={test_set_name(f): load_test_set(f, scale, cache) for f in cfg["test_sets"]},
        metrics=list(cfg["val_metrics"]), scale=scale,
        new_generator=lambda seed: make_generator(cfg, seed),
        new_discriminator=lambda: new_discriminator(cfg),
        patches=patches)
