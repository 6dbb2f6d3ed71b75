"""Figures of the claims ledger: each effect against training step, and claim C1's curves.

An effect's trajectory is its paired difference value(a) - value(b) at every intermediate
validation (``stage1_val_*`` for a PSNR-oriented side, ``stage2_val_*`` for a GAN side; a side
that does not train in that stage, e.g. bicubic or the PSNR model against its GAN stage, is its
final value). A reader sees whether an effect is still moving when training stops.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.labels import metric_label, short_metric_label  # noqa: E402
from analysis.plotting import palette, save  # noqa: E402
from analysis.tables import summarize  # noqa: E402
from esrgan.evaluation import BICUBIC, GAN_MODEL, PSNR_MODEL  # noqa: E402
from esrgan.paper.claims import CLAIMS, DEEP_STUDY, DEEP_VARIANTS, Effect  # noqa: E402


def _curve(curves: pd.DataFrame, variant: str, name: str, study: str | None) -> pd.DataFrame:
    part = curves[(curves["variant"] == variant) & (curves["name"] == name)]
    part = part[part["study"].fillna("ablation") == (study or "ablation")]
    return part.groupby(["seed", "step"])["value"].mean().reset_index()


def _final(runs: pd.DataFrame, variant: str, model: str, metric: str, study: str | None
           ) -> pd.Series:
    part = runs[(runs["variant"] == variant) & (runs["model"] == model)
                & (runs["metric"] == metric) & (runs["set"] == "val")]
    part = part[part["study"].fillna("ablation") == (study or "ablation")]
    return part.groupby("seed")["value"].mean()


def trajectory(curves: pd.DataFrame, runs: pd.DataFrame, effect: Effect) -> pd.DataFrame:
    """Columns stage, step, seed, diff: the effect at every validation both sides have."""
    stage = 2 if GAN_MODEL in (effect.a.model, effect.b.model) else 1
    name = f"stage{stage}_val_{effect.metric}"

    def side(variant: str, model: str) -> pd.DataFrame | pd.Series:
        trains = (model == GAN_MODEL) if stage == 2 else (model == PSNR_MODEL)
        if trains:
            return _curve(curves, variant, name, effect.study)
        return _final(runs, variant, model, effect.metric, effect.study)

    a, b = side(effect.a.variant, effect.a.model), side(effect.b.variant, effect.b.model)
    if isinstance(a, pd.Series):
        return pd.DataFrame(columns=["stage", "step", "seed", "diff"])
    if isinstance(b, pd.Series):
        merged = a.assign(other=a["seed"].map(b)).dropna(subset=["other"])
    else:
        merged = a.merge(b.rename(columns={"value": "other"}), on=["seed", "step"])
    out = merged.assign(diff=merged["value"] - merged["other"], stage=stage)
    return out[["stage", "step", "seed", "diff"]]


def effects_over_training(curves: pd.DataFrame, runs: pd.DataFrame, out_dir: str | Path, *,
                          footer: str = "", stem: str = "claims_over_training") -> list[Path]:
    """One panel per claim effect: its mean over seeds against the step, with a 95% band."""
    panels = []
    for claim in CLAIMS:
        for effect in claim.effects:
            if effect.kind != "paired" or effect.metric == "brightness_error":
                continue
            data = trajectory(curves, runs, effect) if not curves.empty else pd.DataFrame()
            if len(data) and data["step"].nunique() >= 2:
                panels.append((claim, effect, data))
    if not panels:
        return []
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.9 * nrows), squeeze=False)
    for ax, (claim, effect, data) in zip(axes.flat, panels, strict=False):
        rows = []
        for step, group in data.groupby("step"):
            s = summarize(group["diff"])
            rows.append((step, s.mean, s.half))
        steps, means, halves = (np.array(v, dtype=float) for v in zip(*rows, strict=True))
        ax.plot(steps, means, marker="o", ms=3, color="#3b6ea8")
        ok = np.isfinite(halves)
        ax.fill_between(steps[ok], (means - halves)[ok], (means + halves)[ok],
                        color="#3b6ea8", alpha=0.2, lw=0)
        ax.axhline(0, color="black", lw=0.8)
        sign = "+" if effect.direction > 0 else "−"
        ax.set_title(f"{claim.id}: {effect.name}\n{short_metric_label(effect.metric)} "
                     f"(paper: {sign})", fontsize=8)
        stage = int(data["stage"].iloc[0])
        ax.set_xlabel(f"step of the {'GAN' if stage == 2 else 'PSNR'} stage", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    title = "Each claim's effect against training step (mean over seeds, 95% band)"
    return save(fig, out_dir, stem, title, footer)


def deep_curves(curves: pd.DataFrame, runs: pd.DataFrame, out_dir: str | Path, *,
                footer: str = "", stem: str = "c1_deep_trainability") -> list[Path]:
    """Claim C1: validation PSNR of the deep trunk's four variants against the step."""
    if curves.empty or "study" not in curves:
        return []
    data = curves[(curves["study"] == DEEP_STUDY) & (curves["name"] == "stage1_val_psnr")]
    if data.empty:
        return []
    colors = palette(list(DEEP_VARIANTS))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for variant in DEEP_VARIANTS:
        part = data[data["variant"] == variant]
        if part.empty:
            continue
        rows = [(step, summarize(g["value"])) for step, g in part.groupby("step")]
        steps = np.array([r[0] for r in rows], dtype=float)
        means = np.array([r[1].mean for r in rows])
        halves = np.array([r[1].half for r in rows])
        n = int(part["seed"].nunique())
        ax.plot(steps, means, marker="o", ms=3, color=colors[variant], label=f"{variant} "
                f"(n={n})")
        ok = np.isfinite(halves)
        ax.fill_between(steps[ok], (means - halves)[ok], (means + halves)[ok],
                        color=colors[variant], alpha=0.2, lw=0)
    bic = runs[(runs["model"] == BICUBIC) & (runs["metric"] == "psnr") & (runs["set"] == "val")]
    if len(bic):
        ax.axhline(float(bic["value"].mean()), color="black", ls="--", lw=1, label="bicubic")
    depth = runs.loc[runs["study"] == DEEP_STUDY, "depth"].dropna()
    blocks = f"{int(depth.max())} " if len(depth) else ""
    ax.set_xlabel("L1 step", fontsize=8)
    ax.set_ylabel(metric_label("psnr") + " on val", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    title = f"C1: a deep no-BN residual trunk ({blocks}blocks), mean over seeds, 95% band"
    return save(fig, out_dir, stem, title, footer)

