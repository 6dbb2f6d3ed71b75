"""A run's identity: which settings decide its stage-1 model, and which name the whole cell.

Two runs that agree on every :data:`STAGE1_KEYS` share one stage-1 (PSNR) model
(``stage1_key``); a cell is every setting that changes what a run computes (``cell_key``: all
keys but :data:`NON_SEMANTIC_KEYS`). The matrix, the run guards and the run record all name
runs by these two digests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from esrgan.paper.switches import GENERATOR_SWITCHES

# Config keys that decide the stage-1 (PSNR) model; runs that agree on all of them share it.
STAGE1_KEYS = (
    *GENERATOR_SWITCHES, "nf", "nb", "nb_resblock", "gc", "scale",
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
ADDED_KEYS: dict[str, Any] = {"accum": 1, "patch2": 0, "vgg_pool": "max"}


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
