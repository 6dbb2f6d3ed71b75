"""Figures of the ablation, each written as PNG and SVG (matplotlib Agg, seaborn style).

Every figure carries a footer naming the preset, the data, the steps and the departures from
the paper, so that no figure can be mistaken for the paper's setting. Every figure works with
one seed (no intervals then) and with any subset of the variants (absent ones are skipped).
Each function returns the files it wrote (an empty list when there was nothing to draw).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display (report runs on headless machines)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from PIL import Image  # noqa: E402

from analysis.claim_figures import (  # noqa: E402
    deep_curves,
    effects_over_training,
    evidence_figure,
)
from analysis.claims import ClaimResult  # noqa: E402
from analysis.labels import (  # noqa: E402
    MODEL_LABELS,
    metric_label,
    set_sort_key,
    short_metric_label,
    variant_order,
)
from analysis.plotting import palette, save  # noqa: E402
from analysis.tables import summarize  # noqa: E402
from esrgan.evaluation import BICUBIC, GAN_MODEL, PSNR_MODEL  # noqa: E402
from esrgan.paper.claims import DEEP_VARIANTS  # noqa: E402

# PIRM2018 regions by RMSE on Y (docs/method.md section 5): (name, low, high)
PIRM_REGIONS: tuple[tuple[str, float, float], ...] = (
    ("R1", 0.0, 11.5), ("R2", 11.5, 12.5), ("R3", 12.5, 16.0))
ERRORBAR_NOTE = ("points: mean over seeds; bars: 95% t-interval over seeds "
                 "(none where a variant has one seed); faint dots: single seeds")


# ------------------------------------------------------------------------------------------
# shared pieces


def caption(runs: pd.DataFrame) -> str:
    """One paragraph: preset, data, steps, network, seeds and the departures from the paper."""
    if runs.empty:
        return ""

    def values(column: str) -> list[str]:
        return [str(v) for v in dict.fromkeys(runs[column].dropna())] if column in runs else []

    parts = [f"preset {', '.join(values('preset')) or '?'}",
             f"train data: {', '.join(values('train_data')) or '?'}",
             f"val data: {', '.join(values('val_data')) or '?'}"]
    steps = sorted({(a, b) for a, b in zip(runs["steps1"], runs["steps2"], strict=True)
                    if pd.notna(a) and pd.notna(b)})
    if steps:
        parts.append("steps (PSNR + GAN): " + ", ".join(f"{int(a)} + {int(b)}"
                                                         for a, b in steps))
    if values("network"):
        parts.append("G: " + "; ".join(values("network")))
    seeds = sorted({int(s) for s in runs["seed"].dropna()})
    parts.append(f"seeds: {', '.join(map(str, seeds))}")
    subs = list(dict.fromkeys(d.short for found in runs["substitutes"] for d in found))
    if subs:
        parts.append("departures from the paper: " + "; ".join(subs))
    return " | ".join(parts)


def perceptual_metric(frame: pd.DataFrame) -> str:
    """'pi' where the frame has PI values, else 'niqe' (the y axis of the plane)."""
    metrics = set(frame["metric"].dropna())
    return "pi" if "pi" in metrics else "niqe"


def _xy(frame: pd.DataFrame, model: str, set_name: str, x: str, y: str) -> pd.DataFrame:
    """variant, seed, x, y of one model on one set (runs missing either metric dropped)."""
    part = frame[(frame["model"] == model) & (frame["set"] == set_name)
                 & frame["metric"].isin([x, y])]
    if part.empty:
        return pd.DataFrame(columns=["variant", "seed", x, y])
    wide = part.pivot_table(index=["variant", "seed", "run_id"], columns="metric",
                            values="value", aggfunc="mean").reset_index()
    if x not in wide or y not in wide:
        return pd.DataFrame(columns=["variant", "seed", x, y])
    return wide.dropna(subset=[x, y])


def _rmse_axis(ax: plt.Axes, xs: pd.Series) -> None:
    """Shade the PIRM regions; the x range shows the data and at least the R1/R2 border."""
    low, high = min(float(xs.min()), 10.5), max(float(xs.max()), 12.5)
    pad = 0.05 * (high - low or 1.0)
    left, right = max(0.0, low - pad), high + pad
    ax.set_xlim(left, right)
    shades = ("#cfe8cf", "#e4f1d0", "#f4f1d2")
    for (name, start, stop), shade in zip(PIRM_REGIONS, shades, strict=True):
        ax.axvspan(start, stop, color=shade, alpha=0.7, zorder=0, lw=0)
        seen = (max(start, left), min(stop, right))
        if seen[1] > seen[0]:  # label the visible part of the band
            ax.text(sum(seen) / 2, 0.99, name, ha="center", va="top", fontsize=7,
                    color="#2d5a2d", transform=ax.get_xaxis_transform())


# ------------------------------------------------------------------------------------------
# (a) perception-distortion plane


def plane_figure(runs: pd.DataFrame, out_dir: str | Path, *, x: str = "rmse",
                 set_name: str = "val", footer: str = "", stem: str | None = None
                 ) -> list[Path]:
    """GAN models of every variant on the perception-distortion plane (x RMSE or PSNR, y PI or
    NIQE), with the PSNR-oriented models and bicubic as reference markers.

    With ``x='rmse'`` the PIRM regions R1 <= 11.5, R2 <= 12.5, R3 <= 16 are shaded.
    """
    y = perceptual_metric(runs[runs["set"] == set_name])
    gan = _xy(runs, GAN_MODEL, set_name, x, y)
    if gan.empty:
        return []
    psnr_models = _xy(runs, PSNR_MODEL, set_name, x, y)
    bicubic = _xy(runs, BICUBIC, set_name, x, y)
    colors = palette(gan["variant"])
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for variant, color in colors.items():
        points = gan[gan["variant"] == variant]
        sx, sy = summarize(points[x]), summarize(points[y])
        ax.scatter(points[x], points[y], s=14, color=color, alpha=0.35, lw=0, zorder=2)
        ax.errorbar(sx.mean, sy.mean, xerr=_err(sx.half), yerr=_err(sy.half), fmt="o",
                    ms=7, color=color, ecolor=color, capsize=3, zorder=4,
                    label=f"{variant} (n={sx.n})")
        ref = psnr_models[psnr_models["variant"] == variant]
        if not ref.empty:
            ax.scatter(ref[x].mean(), ref[y].mean(), s=50, marker="s", facecolors="none",
                       edgecolors=[color], linewidths=1.4, zorder=3)
    if not bicubic.empty:
        ax.scatter(bicubic[x].mean(), bicubic[y].mean(), s=70, marker="X", color="black",
                   zorder=5)
    all_x = pd.concat([gan[x], psnr_models[x], bicubic[x]]).astype(float)
    if x == "rmse":
        _rmse_axis(ax, all_x)
    ax.set_xlabel(metric_label(x) + ("  (lower = less distortion)" if x == "rmse"
                                     else "  (higher = less distortion)"))
    ax.set_ylabel(metric_label(y) + "  (lower = better perceptual quality)")
    variant_legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                               title="GAN model of", title_fontsize=8, frameon=False)
    ax.add_artist(variant_legend)
    keys = [Line2D([], [], marker="o", ls="", color="grey", label=MODEL_LABELS[GAN_MODEL]),
            Line2D([], [], marker="s", ls="", markerfacecolor="none", color="grey",
                   label=MODEL_LABELS[PSNR_MODEL] + " (same colour)")]
    if not bicubic.empty:
        keys.append(Line2D([], [], marker="X", ls="", color="black", label="Bicubic"))
    ax.legend(handles=keys, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=7,
              frameon=False)
    ax.grid(alpha=0.3)
    title = (f"Perception-distortion plane, set '{set_name}': "
             f"{short_metric_label(y)} vs {short_metric_label(x)}")
    name = stem or f"pd_plane_{x}" + ("" if set_name == "val" else f"_{set_name}")
    return save(fig, out_dir, name, title, f"{ERRORBAR_NOTE}. {footer}")


def _err(half: float) -> float | None:
    return half if np.isfinite(half) else None


# ------------------------------------------------------------------------------------------
# (b) network vs image interpolation


def interpolation_figure(interp: pd.DataFrame, out_dir: str | Path, *, footer: str = "",
                         stem: str = "interpolation", set_name: str = "val") -> list[Path]:
    """Network vs image interpolation on the plane (alpha annotated), and back projection.

    Each curve is the mean over the interpolation runs (one per seed) at each alpha.
    """
    if interp.empty:
        return []
    y = perceptual_metric(interp)
    xs = [m for m in ("rmse", "psnr") if m in set(interp["metric"])]
    if not xs or y not in set(interp["metric"]):
        return []
    fig, axes = plt.subplots(1, len(xs), figsize=(6.2 * len(xs), 4.8), squeeze=False)
    styles = {"network": ("#1f77b4", "o", "network interpolation"),
              "image": ("#ff7f0e", "^", "image interpolation")}
    n_runs = interp["run_id"].nunique()
    for ax, x in zip(axes[0], xs, strict=True):
        for method, (color, marker, label) in styles.items():
            part = interp[interp["method"] == method]
            wide = part.pivot_table(index=["run_id", "alpha"], columns="metric",
                                    values="value", aggfunc="mean").reset_index()
            if wide.empty or x not in wide or y not in wide:
                continue
            mean = wide.groupby("alpha")[[x, y]].mean().sort_index()
            for _, run in wide.groupby("run_id"):
                if n_runs > 1:
                    run = run.sort_values("alpha")
                    ax.plot(run[x], run[y], color=color, alpha=0.2, lw=0.8)
            ax.plot(mean[x], mean[y], color=color, marker=marker, ms=5, lw=1.6, label=label)
            for alpha, row in mean.iterrows():
                if abs(alpha * 5 - round(alpha * 5)) < 1e-6:  # label 0, 0.2, ..., 1
                    ax.annotate(f"{alpha:g}", (row[x], row[y]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=color)
        back = interp[interp["method"] == "back_projection"]
        wide = back.pivot_table(index="run_id", columns="metric", values="value",
                                aggfunc="mean")
        if not wide.empty and x in wide and y in wide:
            iterations = back["iterations"].dropna()
            note = f" ({int(iterations.iloc[0])} iterations)" if len(iterations) else ""
            ax.scatter(wide[x].mean(), wide[y].mean(), marker="*", s=160, color="#2ca02c",
                       zorder=5, label="GAN model + back projection" + note)
        if x == "rmse":
            _rmse_axis(ax, interp.loc[interp["metric"] == "rmse", "value"])
        ax.set_xlabel(metric_label(x))
        ax.set_ylabel(metric_label(y))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    title = (f"Network vs image interpolation on set '{set_name}' (alpha: 0 = PSNR model, "
             f"1 = GAN model), mean of {n_runs} run(s)")
    return save(fig, out_dir, stem, title, footer)


# ------------------------------------------------------------------------------------------
# (d) training curves


def curves_figure(curves: pd.DataFrame, out_dir: str | Path, *, footer: str = "",
                  stem: str = "training_curves",
                  names: Sequence[str] | None = None) -> list[Path]:
    """Losses and validation metrics vs step, one line per variant (mean over seeds).

    Losses on a log y axis (:func:`loss_scale`). Learning-rate curves are left out (they
    repeat the config).
    """
    if curves.empty:
        return []
    present = [n for n in dict.fromkeys(curves["name"]) if not n.endswith("_lr")]
    chosen = [n for n in (names or sorted(present, key=_curve_key)) if n in present]
    if not chosen:
        return []
    colors = palette(curves["variant"])
    ncols = min(4, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.7 * nrows),
                             squeeze=False)
    for ax, name in zip(axes.flat, chosen, strict=False):
        data = curves[curves["name"] == name]
        few = data["step"].nunique() <= 3  # validation at the end only: show the points
        sns.lineplot(data=data, x="step", y="value", hue="variant", hue_order=list(colors),
                     palette=colors, estimator="mean", errorbar=None, marker="o" if few
                     else None, ax=ax, legend=False)
        if "_val_" not in name:
            loss_scale(ax, data["value"])
        ax.set_title(_curve_title(name), fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("")
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, label=v) for v, c in colors.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
               frameon=False)
    title = "Training curves (mean over seeds per variant)"
    return save(fig, out_dir, stem, title, footer)


def loss_scale(ax: plt.Axes, values: pd.Series) -> str:
    """Put a loss panel on a log y axis (symlog where a value is <= 0, linear within the
    smaller values' tenth percentile), so that one diverging run does not flatten every
    other curve; returns the scale."""
    finite = values[np.isfinite(values.astype(float))].astype(float)
    if finite.empty:
        return "linear"
    if (finite > 0).all():
        ax.set_yscale("log")
        return "log"
    nonzero = finite[finite != 0].abs()
    linthresh = float(nonzero.quantile(0.1)) if len(nonzero) else 1.0
    ax.set_yscale("symlog", linthresh=linthresh)
    return "symlog"


def _curve_key(name: str) -> tuple[int, int, str]:
    stage = 0 if name.startswith("stage1") else 1
    return (stage, 1 if "_val_" in name else 0, name)


def _curve_title(name: str) -> str:
    stage, _, rest = name.partition("_")
    stage_text = {"stage1": "PSNR stage", "stage2": "GAN stage"}.get(stage, stage)
    if rest.startswith("val_"):
        return f"{stage_text}: val {metric_label(rest[4:])}"
    return f"{stage_text}: {rest}"


# ------------------------------------------------------------------------------------------
# (e) crops


def _pick_seed(crops: pd.DataFrame, variant: str, seed: int | None) -> pd.DataFrame:
    rows = crops[crops["variant"] == variant]
    if rows.empty:
        return rows
    if seed is not None and (rows["seed"] == seed).any():
        return rows[rows["seed"] == seed]
    return rows[rows["seed"] == rows["seed"].min()]


def crops_figure(crops: pd.DataFrame, out_dir: str | Path, *, footer: str = "",
                 stem: str = "crops") -> list[Path]:
    """The same validation crop from every variant side by side, one row per image.

    Columns: HR, bicubic (if a run saved it), the PSNR-oriented ESRGAN, then each variant's
    GAN model; all from one seed (the lowest ESRGAN seed; a variant without it shows its
    lowest seed, named in its column title).
    """
    crops = crops[~crops["variant"].isin(list(DEEP_VARIANTS))]
    if crops.empty:
        return []
    variants = variant_order(crops["variant"])
    reference = "ESRGAN" if "ESRGAN" in variants else variants[0]
    ref_rows = _pick_seed(crops, reference, None)
    seed = int(ref_rows["seed"].min())
    columns: list[tuple[str, pd.DataFrame, str]] = [("HR", ref_rows, "hr")]
    if (ref_rows["tag"] == "bicubic").any():
        columns.append(("Bicubic", ref_rows, "bicubic"))
    columns.append((f"{reference}\nPSNR model", ref_rows, "psnr"))
    for variant in variants:
        rows = _pick_seed(crops, variant, seed)
        other = int(rows["seed"].iloc[0]) if len(rows) else seed
        note = "" if other == seed else f" (seed {other})"
        if (rows["tag"] == "gan").any():
            columns.append((f"{variant}{note}\nGAN", rows, "gan"))
        elif variant != reference and (rows["tag"] == "psnr").any():
            columns.append((f"{variant}{note}\nPSNR model", rows, "psnr"))
    images = sorted(set(crops["image"]))
    fig, axes = plt.subplots(len(images), len(columns),
                             figsize=(1.55 * len(columns) + 0.6, 1.55 * len(images) + 0.9),
                             squeeze=False)
    for i, image in enumerate(images):
        for j, (title, rows, tag) in enumerate(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            match = rows[(rows["image"] == image) & (rows["tag"] == tag)]
            if not match.empty:
                with Image.open(match["path"].iloc[0]) as im:
                    ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
            if i == 0:
                ax.set_title("\n".join(textwrap.wrap(title, 16, break_long_words=True,
                                                     replace_whitespace=False)), fontsize=6.5)
            if j == 0:
                ax.set_ylabel(image, fontsize=7)
    title = f"Centre crops of the validation images (seed {seed})"
    return save(fig, out_dir, stem, title, footer)


def write_all(runs: pd.DataFrame, decided: Mapping[str, Sequence[ClaimResult]],
              curves: pd.DataFrame, interp: pd.DataFrame, crops: pd.DataFrame,
              out_dir: str | Path) -> dict[str, list[Path]]:
    """Every figure of a report into ``out_dir``; name -> files (empty when not drawable).

    ``decided``: the claims ledger per set (``analysis.ledger.decide_all``), whose per-seed
    differences the evidence figures (``effects_<set>``) show.
    """
    footer = caption(runs)
    out: dict[str, list[Path]] = {}
    for set_name, results in decided.items():
        out[f"effects_{set_name}"] = evidence_figure(results, out_dir, set_name=set_name,
                                                     footer=footer)
    sets = sorted(set(runs["set"].dropna()), key=set_sort_key)
    for set_name in sets:
        suffix = "" if set_name == "val" else f"_{set_name}"
        for x in ("rmse", "psnr"):
            out[f"pd_plane_{x}{suffix}"] = plane_figure(runs, out_dir, x=x, set_name=set_name,
                                                        footer=footer)
    interp_sets = interp["set"].fillna("val") if "set" in interp else pd.Series(dtype=str)
    for set_name in sorted(set(interp_sets), key=set_sort_key) or ["val"]:
        part = interp[interp_sets == set_name] if len(interp) else interp
        suffix = "" if set_name == "val" else f"_{set_name}"
        out[f"interpolation{suffix}"] = interpolation_figure(
            part, out_dir, footer=footer, stem=f"interpolation{suffix}", set_name=set_name)
    out["training_curves"] = curves_figure(curves, out_dir, footer=footer)
    out["crops"] = crops_figure(crops, out_dir, footer=footer)
    out["claims_over_training"] = effects_over_training(curves, runs, out_dir, footer=footer)
    out["c1_deep_trainability"] = deep_curves(curves, runs, out_dir, footer=footer)
    return out
