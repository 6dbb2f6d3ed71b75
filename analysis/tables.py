"""Summary tables of the ablation: metrics per variant, and the Markdown/CSV writers.

Statistics are over seeds (the runs of one variant differ only in their seed). Intervals are
two-sided 95% Student-t intervals of the mean: mean +- t(0.975, n-1) * sd / sqrt(n); with one
seed there is no interval and the tables say so. These describe each variant; effects between
variants and their verdicts are the claims ledger's (``analysis.claims``, ``analysis.ledger``).
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
    higher_is_better,
    metric_label,
    metric_sort_key,
    set_sort_key,
    variant_order,
)
from esrgan.evaluation import BICUBIC, GAN_MODEL, PSNR_MODEL

CONFIDENCE = 0.95
MODEL_ORDER: tuple[str, ...] = (GAN_MODEL, PSNR_MODEL, BICUBIC)

SUMMARY_COLUMNS: list[str] = ["variant", "model", "set", "metric", "n", "mean", "std", "ci95",
                              "ci_low", "ci_high", "seeds"]


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


def digits(metric: str) -> int:
    """Decimals a value of ``metric`` is shown with: four for the metrics that live in [0, 1]
    and move in the third decimal (SSIM, LPIPS, the artifact index), else two."""
    return 4 if metric.startswith("ssim") or metric in ("lpips", "artifacts") else 2


def format_value(metric: str, mean: float, half: float = math.nan) -> str:
    """'27.31 +- 0.42' (or '27.31' without an interval); SSIM with four decimals."""
    if not np.isfinite(mean):
        return "-"
    d = digits(metric)
    text = f"{mean:.{d}f}"
    return text + (f" ± {half:.{d}f}" if np.isfinite(half) else "")


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


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
