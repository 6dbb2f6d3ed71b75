"""Figures of the claims ledger: the evidence behind each set's verdicts, each effect against
training step, and claim C1's curves.

The evidence figure shows, per deciding effect, what the verdict rests on: the paired
difference of every seed, the family-wise interval the verdict reads, the +-delta band of no
effect of interest and zero.

An effect's trajectory is its paired difference value(a) - value(b) at every intermediate
validation (``stage1_val_*`` for a PSNR-oriented side, ``stage2_val_*`` for a GAN side; a side
that does not train in that stage, e.g. bicubic or the PSNR model against its GAN stage, is its
final value). A reader sees whether an effect is still moving when training stops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import claims as verdicts  # noqa: E402
from analysis.labels import metric_label, short_metric_label  # noqa: E402
from analysis.ledger import effect_text, level_text, set_level  # noqa: E402
from analysis.plotting import palette, save  # noqa: E402
from analysis.tables import summarize  # noqa: E402
from esrgan.evaluation import BICUBIC, GAN_MODEL, PSNR_MODEL  # noqa: E402
from esrgan.paper.claims import CLAIMS, DEEP_STUDY, DEEP_VARIANTS, Effect  # noqa: E402

VERDICT_COLORS: dict[str, str] = {
    verdicts.AGREES: "#2a9d4b", verdicts.OPPOSITE: "#d1495b", verdicts.EQUIVALENT: "#3b6ea8",
    verdicts.INCONCLUSIVE: "#6d6d6d", verdicts.PREMISE: "#b0b0b0",
    verdicts.UNTESTABLE: "#b0b0b0"}


def evidence_figure(results: Sequence[verdicts.ClaimResult], out_dir: str | Path, *,
                    set_name: str = "val", footer: str = "", stem: str | None = None
                    ) -> list[Path]:
    """One panel per deciding effect measured on ``set_name``: a dot per seed (its paired
    difference), the family-wise interval as a bar around the mean, the +-delta band shaded,
    zero as a line, the verdict in the title (coloured by it) and the ledger's number below.

    An interval far wider than the dots is cut at the panel's edge (an arrow says so); its
    ends are in the number under the panel.
    """
    panels = [e for r in results for e in r.effects
              if e.effect.decides and e.estimate.n >= 1 and len(e.diffs)]
    if not panels:
        return []
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 3.0 * nrows), squeeze=False)
    for ax, e in zip(axes.flat, panels, strict=False):
        est, effect, color = e.estimate, e.effect, VERDICT_COLORS[e.verdict]
        dots = e.diffs.to_numpy(dtype=float)
        xs = np.linspace(-0.18, 0.18, len(dots)) if len(dots) > 1 else np.zeros(1)
        if effect.delta > 0:
            ax.axhspan(-effect.delta, effect.delta, color="#e6e6e6", lw=0, zorder=0)
        ax.axhline(0, color="black", lw=0.8, zorder=1)
        ax.scatter(xs, dots, s=22, color=color, alpha=0.75, lw=0, zorder=3)
        # the view: the dots, zero, the band and the mean, with room around them
        core = np.concatenate([dots, [0.0, est.mean, -effect.delta, effect.delta]])
        lo, hi = float(np.nanmin(core)), float(np.nanmax(core))
        span = (hi - lo) or max(abs(hi), 1.0)
        view = (lo - 0.6 * span, hi + 0.6 * span)
        ax.set_ylim(*view)
        if est.n >= 2 and np.isfinite(est.low):
            low, high = max(est.low, view[0]), min(est.high, view[1])
            ax.plot([0.5, 0.5], [low, high], color=color, lw=2.2, zorder=2)
            for end, shown, marker in ((est.low, low, "v"), (est.high, high, "^")):
                ax.plot(0.5, shown, marker=marker if end != shown else "_", ms=7,
                        color=color, zorder=2)
        ax.plot(0.5, est.mean, "o", ms=6, color=color, mec="white", zorder=4)
        ax.set_xlim(-0.5, 0.9)
        ax.set_xticks([])
        ax.set_ylabel(f"{metric_label(effect.metric)}", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{e.claim}: {effect.name}\n{e.verdict}", fontsize=8, color=color)
        ax.text(0.5, -0.04, effect_text(e), transform=ax.transAxes, ha="center", va="top",
                fontsize=6.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    level = level_text(set_level(results))
    title = (f"The evidence on '{set_name}': each seed's paired difference, the {level} "
             f"interval (family-wise), the ±delta band")
    return save(fig, out_dir, stem or f"effects_{set_name}", title, footer)


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

