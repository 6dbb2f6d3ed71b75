"""A run's setting: every semantic config value but the switches, the seeds, the study and the
preset; what the runs of one variant must share to be pooled as its replicates.

Each run's frame rows carry two digests (``analysis.load``): ``setting`` (every setting key of
``experiments.keys``) and ``stage1_setting`` (its stage-1 keys: what a PSNR-oriented model
and its bicubic baseline depend on). A stored config is read through ``keys.complete``, so
a run stored before a key existed has the setting it computed with.

:func:`check` refuses a frame in which one variant of one study holds runs of two settings,
or in which the two sides of a claim's effect were trained in different settings: averaging
them would read two settings as replicates of one, or credit a switch with what another key
did. The refusal is one line that names the keys that differ and their values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from esrgan.evaluation import BICUBIC, PSNR_MODEL
from experiments.identity import digest
from experiments.keys import SETTING_KEYS, STAGE1_SETTING_KEYS, complete

SETTING, STAGE1_SETTING, SETTING_VALUES = "setting", "stage1_setting", "setting_values"
SETTING_COLUMNS: tuple[str, ...] = (SETTING, STAGE1_SETTING, SETTING_VALUES)
STAGE1_MODELS: tuple[str, ...] = (PSNR_MODEL, BICUBIC)


class MixedSettings(ValueError):
    """Runs that would be pooled or compared belong to different settings."""


def setting_columns(config: Mapping[str, Any]) -> dict[str, Any]:
    """The setting columns of a run from its stored config."""
    full = complete(config)
    # a key the stored config lacks (and that has no since) is unknown, not a value: left out
    values = tuple((k, full[k]) for k in SETTING_KEYS if k in full)
    stage1 = {k: v for k, v in values if k in STAGE1_SETTING_KEYS}
    return {SETTING: digest(dict(values)), STAGE1_SETTING: digest(stage1),
            SETTING_VALUES: values}


def column_for(models: Iterable[str]) -> str:
    """The setting column that decides ``models``' values: the stage-1 one when every model
    is a stage-1 output (PSNR-oriented model or bicubic), else the whole setting."""
    return STAGE1_SETTING if set(models) <= set(STAGE1_MODELS) else SETTING


def differences(part: pd.DataFrame, column: str = SETTING) -> str:
    """The keys whose values differ between the settings of ``part``, with their values:
    'lr1 0.0005 / 0.0002, steps2 250 / 0' ('' when one setting). A key some runs lack (stored
    before it was recorded, with no known value then) is compared among the runs that have
    it."""
    if column not in part or part[column].nunique(dropna=False) < 2:
        return ""
    keep = None if column == SETTING else set(STAGE1_SETTING_KEYS)
    per = [dict(v) for v in part.drop_duplicates(column)[SETTING_VALUES]]
    names = [k for k in SETTING_KEYS if (keep is None or k in keep)
             and len({repr(p[k]) for p in per if k in p}) > 1]
    return ", ".join(f"{k} " + " / ".join(dict.fromkeys(repr(p[k]) for p in per if k in p))
                     for k in names)


def _check_variants(frame: pd.DataFrame, column: str, what: str) -> None:
    """One ``column`` setting per (study, variant) of ``frame``."""
    if column not in frame or frame.empty:
        return
    study = frame["study"].fillna("ablation") if "study" in frame else "ablation"
    for (study_name, variant), part in frame.assign(_study=study).groupby(
            ["_study", "variant"], sort=True):
        found = differences(part, column)
        if found:
            raise MixedSettings(
                f"{what}: variant {variant!r} ({study_name}) holds runs of "
                f"{part[column].nunique()} settings that differ in {found}; report them "
                "separately (one store or one --preset per setting)")


def check(runs: pd.DataFrame, interp: pd.DataFrame | None = None) -> None:
    """Refuse (:class:`MixedSettings`) frames where a variant holds two settings.

    GAN-model rows must share the whole setting; PSNR-model and bicubic rows the stage-1
    part (a stage-1-only cell and a full cell of one variant share their PSNR model); an
    interpolation sweep the whole setting.
    """
    if "model" in runs:
        stage1 = runs["model"].isin(STAGE1_MODELS)
        _check_variants(runs[stage1], STAGE1_SETTING, "the runs' PSNR-oriented models")
        _check_variants(runs[~stage1 & runs["model"].notna()], SETTING,
                        "the runs' GAN models")
    if interp is not None:
        _check_variants(interp, SETTING, "the interpolation sweeps")


def check_sides(a: pd.DataFrame, b: pd.DataFrame, effect: str, column: str) -> None:
    """Refuse an effect whose two sides' runs were made in different settings."""
    if column not in a or column not in b or a.empty or b.empty:
        return
    both = pd.concat([a.drop_duplicates(column), b.drop_duplicates(column)])
    found = differences(both, column)
    if found:
        raise MixedSettings(f"effect {effect!r}: its two sides were trained in different "
                            f"settings (they differ in {found}), so their difference is not "
                            "the switch's")
