"""Summary tables of the ablation: metrics per variant and each paper change's effect.

Statistics are over seeds (the runs of one variant differ only in their seed). Intervals are
two-sided 95% Student-t intervals of the mean: mean +- t(0.975, n-1) * sd / sqrt(n); with one
seed there is no interval and the tables say so. Switch effects are paired by seed: the
difference is taken seed by seed (same stage-1 seed and data order), then averaged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.labels import (
    GENERATOR_SWITCHES,
    MODEL_LABELS,
    Comparison,
    comparisons,
    higher_is_better,
    metric_label,
    metric_sort_key,
    set_sort_key,
    short_metric_label,
    variant_order,
)
from esrgan.evaluation import BICUBIC, GAN_MODEL, PSNR_MODEL

CONFIDENCE = 0.95
MODEL_ORDER: tuple[str, ...] = (GAN_MODEL, PSNR_MODEL, BICUBIC)

SUMMARY_COLUMNS: list[str] = ["variant", "model", "set", "metric", "n", "mean", "std", "ci95",
                              "ci_low", "ci_high", "seeds"]
EFFECT_COLUMNS: list[str] = ["group", "change", "switches", "without_change", "with_change",
                             "model", "set", "metric", "n", "diff", "std", "ci_low", "ci_high",
                             "claim", "verdict", "seeds"]


@dataclass(frozen=True)
class Summary:
    """Mean of n values with the half-width of its 95% t interval (NaN for n < 2)."""

    mean: float
    std: float
    half: float
    n: int


def summarize(values: Iterable[float]) -> Summary:
    """Mean, sample sd and 95% t half-width of the finite values."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(data.size)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n < 2:
        return Summary(mean, math.nan, math.nan, 1)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n))
    return Summary(mean, std, half, n)


def _model_key(model: str) -> int:
    return MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)


# ------------------------------------------------------------------------------------------
# metrics per variant


def replicates(data: pd.DataFrame) -> pd.DataFrame:
    """One row per independent replicate.

    A PSNR-oriented model (and bicubic) depends on the stage-1 seed only: runs whose seeds
    differ but that share ``stage1_seed`` share that model, so it counts once, keyed by its
    stage-1 seed. Counting it per stage-2 seed would fake a zero-width interval.
    """
    if "stage1_seed" not in data:
        return data
    stage1 = data["model"].isin([PSNR_MODEL, BICUBIC])
    shared = data[stage1].assign(seed=data.loc[stage1, "stage1_seed"])
    shared = shared.drop_duplicates(subset=["variant", "model", "set", "metric", "seed"])
    return pd.concat([data[~stage1], shared], ignore_index=True)


def variant_summary(runs: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, sd and 95% CI over seeds of every variant x model x set x metric.

    Rows are ordered as in :func:`analysis.labels.variant_order`; columns
    :data:`SUMMARY_COLUMNS` (``ci95`` is the half-width, ``seeds`` the seeds used).
    """
    data = replicates(runs.dropna(subset=["metric", "value"]))
    if models is not None:
        data = data[data["model"].isin(models)]
    rows = []
    for (variant, model, set_name, metric), group in data.groupby(
            ["variant", "model", "set", "metric"], sort=False):
        s = summarize(group["value"])
        rows.append({"variant": variant, "model": model, "set": set_name, "metric": metric,
                     "n": s.n, "mean": s.mean, "std": s.std, "ci95": s.half,
                     "ci_low": s.mean - s.half, "ci_high": s.mean + s.half,
                     "seeds": " ".join(str(x) for x in sorted(group["seed"].unique()))})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if out.empty:
        return out
    order = {v: i for i, v in enumerate(variant_order(out["variant"]))}
    out = out.assign(
        _v=out["variant"].map(order), _m=out["model"].map(_model_key),
        _s=out["set"].map(set_sort_key), _k=out["metric"].map(metric_sort_key))
    return (out.sort_values(["_m", "_s", "_v", "_k"], kind="stable")
            .drop(columns=["_v", "_m", "_s", "_k"]).reset_index(drop=True))


def format_value(metric: str, mean: float, half: float = math.nan) -> str:
    """'27.31 +- 0.42' (or '27.31' without an interval); SSIM with four decimals."""
    if not np.isfinite(mean):
        return "-"
    digits = 4 if metric.startswith("ssim") or metric == "lpips" else 2
    text = f"{mean:.{digits}f}"
    return text + (f" ± {half:.{digits}f}" if np.isfinite(half) else "")


def metrics_markdown(summary: pd.DataFrame, model: str, set_name: str) -> str:
    """One Markdown table: a row per variant, a column per metric ('mean +- CI'), and n."""
    part = summary[(summary["model"] == model) & (summary["set"] == set_name)]
    if part.empty:
        return ""
    metrics = sorted(part["metric"].unique(), key=metric_sort_key)
    header = ["Variant", "n"] + [_arrow_label(m) for m in metrics]
    body = []
    for variant in variant_order(part["variant"]):
        rows = part[part["variant"] == variant].set_index("metric")
        n = int(rows["n"].max())
        cells = [format_value(m, rows.at[m, "mean"], rows.at[m, "ci95"]) if m in rows.index
                 else "-" for m in metrics]
        body.append([variant, str(n), *cells])
    return markdown_table(header, body)


def _arrow_label(metric: str) -> str:
    better = higher_is_better(metric)
    arrow = "" if better is None else (" ↑" if better else " ↓")
    return metric_label(metric) + arrow


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-style Markdown table ('|' inside cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


# ------------------------------------------------------------------------------------------
# switch effects


def paper_claim(comparison: Comparison, model: str, metric: str) -> int:
    """Sign the paper predicts for (without - with): +1, -1, or 0 where it claims nothing.

    Every change is claimed to improve perceptual quality of the GAN model (NIQE and PI fall,
    Ma rises). The generator changes (RRDB, BN removal, beta, small init) are also claimed to
    give a better PSNR-oriented model (PSNR rises).
    """
    if model == GAN_MODEL:
        better = higher_is_better(metric)
        if metric in ("niqe", "pi", "ma") and better is not None:
            return -1 if better else 1
    if model == PSNR_MODEL and metric == "psnr":
        if any(s in GENERATOR_SWITCHES for s in comparison.switches):
            return -1
    return 0


def claim_text(claim: int, metric: str) -> str:
    """The paper's claim in words, e.g. 'the change lowers NIQE-Y'."""
    if claim == 0:
        return ""
    # claim is the sign of (without - with): +1 means the change lowers the metric
    return f"the change {'lowers' if claim > 0 else 'raises'} {short_metric_label(metric)}"


def verdict(claim: int, diff: float, low: float, high: float, n: int) -> str:
    """Whether a measured difference agrees with the paper's claim, given its CI."""
    if claim == 0:
        return "no claim"
    if n < 2 or not (np.isfinite(low) and np.isfinite(high)):
        if diff == 0:
            return "no difference (1 seed)"
        agrees = np.sign(diff) == claim
        return f"{'agrees' if agrees else 'opposite'} (1 seed, no CI)"
    if low <= 0 <= high:
        return "inconclusive"
    return "agrees" if np.sign(diff) == claim else "opposite to paper"


def switch_effects(runs: pd.DataFrame, which: Sequence[Comparison] | None = None
                   ) -> pd.DataFrame:
    """Per paper change: mean over seeds of (without - with), paired by seed, with 95% CI.

    For a one-switch comparison ``without`` is the flipped variant and ``with`` ESRGAN; for a
    paper-path step, the step before and after the change. Comparisons whose variants are
    absent are skipped. The PSNR-oriented model is compared only for generator changes (the
    other two share it with ESRGAN). Columns: :data:`EFFECT_COLUMNS`.
    """
    data = replicates(runs.dropna(subset=["metric", "value"]))
    data = data[data["model"].isin([GAN_MODEL, PSNR_MODEL])]
    rows = []
    for comp in (comparisons() if which is None else which):
        pair = data[data["variant"].isin([comp.without, comp.with_])]
        if pair.empty:
            continue
        for (model, set_name, metric), group in pair.groupby(["model", "set", "metric"],
                                                              sort=False):
            if model == PSNR_MODEL and not any(s in GENERATOR_SWITCHES
                                                 for s in comp.switches):
                continue
            table = group.pivot_table(index="seed", columns="variant", values="value",
                                      aggfunc="mean")
            if comp.without not in table or comp.with_ not in table:
                continue
            diffs = (table[comp.without] - table[comp.with_]).dropna()
            if diffs.empty:
                continue
            s = summarize(diffs)
            claim = paper_claim(comp, model, metric)
            rows.append({
                "group": comp.group, "change": comp.change, "switches": ",".join(comp.switches),
                "without_change": comp.without, "with_change": comp.with_, "model": model,
                "set": set_name,
                "metric": metric, "n": s.n, "diff": s.mean, "std": s.std,
                "ci_low": s.mean - s.half, "ci_high": s.mean + s.half,
                "claim": claim_text(claim, metric),
                "verdict": verdict(claim, s.mean, s.mean - s.half, s.mean + s.half, s.n),
                "seeds": " ".join(str(x) for x in sorted(diffs.index))})
    out = pd.DataFrame(rows, columns=EFFECT_COLUMNS)
    if out.empty:
        return out
    out = out.assign(_m=out["model"].map(_model_key), _s=out["set"].map(set_sort_key),
                     _k=out["metric"].map(metric_sort_key))
    order = {(c.group, c.change): i for i, c in enumerate(comparisons())}
    out["_c"] = [order.get((g, c), len(order)) for g, c in zip(out["group"], out["change"],
                                                                strict=True)]
    return (out.sort_values(["_s", "_c", "_m", "_k"], kind="stable")
            .drop(columns=["_m", "_s", "_k", "_c"]).reset_index(drop=True))


def effect_panels(effects: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, metric) panels of the effect figure that the effects table has data for."""
    present = set(zip(effects["model"], effects["metric"], strict=True))
    y = "pi" if (GAN_MODEL, "pi") in present else "niqe"
    wanted = [(GAN_MODEL, y), (GAN_MODEL, "psnr"), (PSNR_MODEL, "psnr")]
    return [p for p in wanted if p in present]


def _signed(metric: str, value: float) -> str:
    if not np.isfinite(value):
        return "-"
    digits = 4 if metric.startswith("ssim") or metric == "lpips" else 2
    return f"{value:+.{digits}f}"


def effects_markdown(effects: pd.DataFrame, set_name: str = "val",
                     metrics: Sequence[str] | None = None) -> str:
    """The effect table: change, comparison, model, metric, n, difference, CI, paper, verdict."""
    part = effects[effects["set"] == set_name]
    if metrics is not None:
        part = part[part["metric"].isin(metrics)]
    if part.empty:
        return ""
    header = ["Change", "Without − with", "Model", "Metric", "n", "Δ (mean)", "95% CI",
              "Paper", "Verdict"]
    body = []
    for row in part.itertuples(index=False):
        ci = (f"[{_signed(row.metric, row.ci_low)}, {_signed(row.metric, row.ci_high)}]"
              if np.isfinite(row.ci_low) else "(1 seed)")
        mark = row.verdict
        if mark.startswith("opposite"):
            mark = f"**{mark}**"
        body.append([f"{row.change} ({row.group})", f"{row.without_change} − {row.with_change}",
                     MODEL_LABELS.get(row.model, row.model), short_metric_label(row.metric),
                     str(row.n), _signed(row.metric, row.diff), ci, row.claim or "—", mark])
    return markdown_table(header, body)


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
