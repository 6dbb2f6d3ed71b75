"""Every config key in one table: its kind, its values, its part in a run's identity, and the
value a run stored before the key existed had.

The Sacred config (``experiments.presets``) holds each key's default and the sentence that
documents it; this table holds what the rest of the suite must know about the key:

- ``role``: ``STAGE1`` (decides the stage-1 PSNR-oriented model, and so the cell), ``CELL``
  (decides what the run computes beyond stage 1), ``RUN`` (where, how fast, how often, what is
  kept or shown: never what is computed).
- ``since``: the value that computes what runs made before the key existed computed (their
  stored configs lack it). At that value the key is left out of a run's identity
  (``experiments.identity``), so adding a key re-keys no stored cell and orphans no stage-1
  model; a stored config that lacks it reads as that value (:func:`complete`), so its labels
  and its setting stay what they were. ``FOUNDING`` marks the keys every stored run has.
- ``kind``, ``choices``, ``minimum``, ``maximum``: the values it takes, checked before any
  check that combines keys (``presets.validate``, which also holds those).

Adding a key is one line in ``presets.base`` (default and documentation) and one row here
(with a ``since``: a new key is never ``FOUNDING``); a test checks that the two agree. A paper
switch's row comes from its switch (``esrgan.paper.switches``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from esrgan.paper.switches import SWITCH_TABLE, Switch
from esrgan.speed import ADAM_IMPLS, COMPILE_MODES, FORWARD_PRECISIONS, TRAINING_PRECISIONS

STAGE1, CELL, RUN = "stage1", "cell", "run"
# the perceptual loss's networks (experiments.build.make_feature_extractor)
PERCEPTUAL_NETS = ("vgg19", "gabor", "gabor_energy")
ROLES = (STAGE1, CELL, RUN)


class _Founding:
    """The ``since`` of a key that every stored run has (there was no 'before')."""

    def __repr__(self) -> str:
        return "FOUNDING"


FOUNDING: Any = _Founding()

# kinds: a Python type, or one of these names
PATH = "path"  # None or a folder/file path
RUN_REF = "run"  # None, a run folder or a run id
MAX_STEPS = 10**9  # a training stage of more steps would overflow the data order's indices


@dataclass(frozen=True)
class Key:
    """One config key (see the module docstring)."""

    name: str
    role: str
    kind: Any  # bool, int, float, str, list, PATH or RUN_REF
    since: Any = FOUNDING
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    why: str = ""  # said after a refused value: what the bound means

    @property
    def semantic(self) -> bool:
        """Whether the key changes what a run computes (part of the cell key)."""
        return self.role != RUN

    @property
    def added(self) -> bool:
        """Whether stored runs may lack the key (it has a ``since`` value)."""
        return self.since is not FOUNDING

    def at_since(self, value: Any) -> bool:
        """Whether ``value`` is the value runs made before the key existed computed with."""
        return self.added and _same(value, self.since)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this key, in one sentence (None: fine)."""
        want = _kind_problem(self.kind, value)
        if want:
            return f"{self.name} must be {want}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if self.kind is float and not math.isfinite(value):
                return f"{self.name} must be a finite number, got {value!r}"
            low, high = self.minimum, self.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                bound = (f">= {low:g}" if high is None else f"<= {high:g}" if low is None
                         else f"between {low:g} and {high:g}")
                return (f"{self.name} must be {bound}{' (' + self.why + ')' if self.why else ''}"
                        f", got {value!r}")
        return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b and type(a) is type(b)


def _kind_problem(kind: Any, value: Any) -> str | None:
    """What ``value`` should have been for ``kind`` (None when it is of that kind)."""
    if kind is bool:
        return None if isinstance(value, bool) else "True or False"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) \
            else "a whole number"
    if kind is float:
        return None if isinstance(value, numbers.Real) and not isinstance(value, bool) \
            else "a number"
    if kind is list:
        return None if isinstance(value, list) else "a list, e.g. [a, b]"
    if kind is str:
        return None if isinstance(value, str) else "a text"
    if kind == PATH:
        return None if value is None or isinstance(value, str) else "a path (or None)"
    # RUN_REF
    return None if value is None or isinstance(value, str | int) and not isinstance(
        value, bool) else "a run folder or run id (or None)"


def _switch_key(switch: Switch) -> Key:
    """A paper switch's row: a generator switch decides the stage-1 model. A switch the paper
    does not have was added after runs were stored, at its paper value (off)."""
    since = switch.paper if switch.origin == "extension" else FOUNDING
    kind = float if switch.kind is float else bool
    return Key(switch.name, STAGE1 if switch.stage == 1 else CELL, kind, since)


_STEPS = {"minimum": 0, "maximum": MAX_STEPS}
_SIZE = {"minimum": 1}
_EVERY = {"minimum": 0, "why": "0: only at the stage's end"}

KEYS: tuple[Key, ...] = (
    Key("preset", CELL, str),
    *(_switch_key(s) for s in SWITCH_TABLE),
    # network sizes
    Key("nf", STAGE1, int, **_SIZE),
    Key("nb", STAGE1, int, **_SIZE),
    Key("nb_resblock", STAGE1, int, **_SIZE),
    Key("gc", STAGE1, int, **_SIZE),
    Key("scale", STAGE1, int, choices=(2, 4)),
    Key("d_nf", CELL, int, **_SIZE),
    # the stage-2 loss
    Key("vgg_layer", CELL, str),
    Key("vgg_weights", CELL, str),
    Key("vgg_seed", CELL, int),
    Key("vgg_pool", CELL, str, since="max", choices=("max", "avg")),
    Key("percep_net", CELL, str, since="vgg19", choices=PERCEPTUAL_NETS),
    Key("percep_blur", CELL, float, since=0.0, minimum=0.0, maximum=16.0,
        why="a Gaussian's sigma in pixels; 0: no low-pass"),
    Key("gabor_lowpass", CELL, float, since=0.0, minimum=0.0),
    Key("percep_weight", CELL, float, minimum=0.0),
    Key("percep_normalize", CELL, bool),
    Key("lambda_adv", CELL, float, minimum=0.0),
    Key("eta_l1", CELL, float, minimum=0.0),
    # optimisation
    Key("steps1", STAGE1, int, **_STEPS),
    Key("lr1", STAGE1, float, minimum=0.0),
    Key("lr_decay_at1", STAGE1, list),
    Key("steps2", CELL, int, **_STEPS),
    Key("lr2", CELL, float, minimum=0.0),
    Key("lr_d", CELL, float, minimum=0.0),
    Key("lr_decay_at2", CELL, list),
    Key("lr_gamma", STAGE1, float, minimum=0.0),
    Key("adam_betas", STAGE1, list),
    Key("batch", STAGE1, int, **_SIZE),
    Key("patch", STAGE1, int, **_SIZE),
    Key("patch2", CELL, int, since=0),
    Key("precision1", STAGE1, str, choices=FORWARD_PRECISIONS),
    Key("precision2", CELL, str, choices=TRAINING_PRECISIONS),
    Key("channels_last", STAGE1, bool),
    Key("compile", RUN, str, choices=COMPILE_MODES),  # same maths, other kernels
    Key("adam", RUN, str, choices=ADAM_IMPLS),  # same maths, other kernels
    Key("ema_decay", STAGE1, float),
    # long runs
    Key("keep_last", RUN, int),
    Key("best_metric1", RUN, str),
    Key("best_metric2", RUN, str),
    # not a stage-1 key: the same update, float rounding aside; stage 2 takes D's BatchNorm
    # and RaGAN's means over each micro-batch
    Key("accum", CELL, int, since=1),
    Key("deterministic", RUN, bool),  # the same maths, reproducible kernels
    # data
    Key("train_hr", STAGE1, PATH),
    Key("train_lr", STAGE1, PATH),
    Key("val_hr", CELL, PATH),
    Key("val_lr", CELL, PATH),
    Key("test_sets", RUN, list),
    Key("val_metrics", CELL, list),
    Key("val_crops", RUN, int, minimum=0),
    Key("interp_alphas", RUN, list),
    Key("bp_iterations", RUN, int, minimum=0),
    # run mechanics
    Key("seed", CELL, int),
    Key("stage1_seed", STAGE1, int),
    Key("study", RUN, str),  # a label for the analysis
    Key("device", RUN, str),
    Key("num_workers", RUN, int, minimum=0),
    Key("val_every1", RUN, int, **_EVERY),
    Key("val_every2", RUN, int, **_EVERY),
    Key("ckpt_every", RUN, int, **_EVERY),
    Key("log_every", RUN, int, minimum=1),
    Key("work_dir", RUN, str),
    Key("tb_dir", RUN, str),  # where the live TensorBoard view is written
    Key("resume", RUN, RUN_REF),
    Key("fresh", RUN, bool),
    Key("progress", RUN, bool),
)

BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}
STAGE1_KEYS: tuple[str, ...] = tuple(k.name for k in KEYS if k.role == STAGE1)
NON_SEMANTIC_KEYS: tuple[str, ...] = tuple(k.name for k in KEYS if k.role == RUN)
# keys a stored run may lack, with the value it computed with
ADDED_KEYS: dict[str, Any] = {k.name: k.since for k in KEYS if k.added}
# The keys of a run's *setting*: what a variant's runs must share to be pooled as replicates
# of it. Everything semantic but what names the variant (the switches), the replicate (seeds),
# the study (its own group) and the preset (one per report); the metrics scored are a
# question of the report, not of the model.
_NOT_SETTING = {*(s.name for s in SWITCH_TABLE), "seed", "stage1_seed", "preset",
                "val_metrics"}
SETTING_KEYS: tuple[str, ...] = tuple(k.name for k in KEYS
                                      if k.semantic and k.name not in _NOT_SETTING)
STAGE1_SETTING_KEYS: tuple[str, ...] = tuple(k for k in SETTING_KEYS if k in STAGE1_KEYS)


def complete(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config with every key it predates filled in at its ``since`` value (what the
    run computed with); other keys as stored. The one place an old run is read as new."""
    out = dict(config)
    for name, since in ADDED_KEYS.items():
        out.setdefault(name, since)
    return out


def problems(config: Mapping[str, Any]) -> list[str]:
    """Each key's value against its kind, choices and bounds (one sentence per problem)."""
    return [p for k in KEYS if k.name in config and (p := k.problem(config[k.name]))]
