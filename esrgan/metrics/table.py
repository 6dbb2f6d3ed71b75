"""Score a set of SR images with named metrics into a pandas table.

``evaluate_images`` returns one row per image and one column per metric name. A metric whose
weights are not on disk (:class:`~esrgan.metrics.iqa.MetricUnavailable`) is left out: a column
of NaN here (a set's mean leaves it out altogether), with one warning naming the missing file.
Tables never show an unavailable metric as 0.
``summarize`` gives the means plus PIRM's pooled RMSE.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np
import pandas as pd
from tqdm import tqdm

from esrgan.metrics.iqa import MetricUnavailable
from esrgan.metrics.pirm import pooled_rmse

__all__ = ["MetricInputError", "MetricNameError", "evaluate_images", "summarize"]


class MetricInputError(ValueError):
    """An image a metric cannot score (wrong shape, too small); names the image and metric."""


class MetricNameError(ValueError):
    """A metric name that is not in :data:`esrgan.metrics.METRICS`."""


def _check_names(metrics: Sequence[str]) -> None:
    from esrgan.metrics import METRICS

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise MetricNameError(
            f"unknown metric name(s) {', '.join(unknown)}; known: {', '.join(METRICS)}"
        )


@cache
def _warn_once(message: str) -> None:
    """One warning per message and process: a run scores at every validation, and warnings'
    own once-per-place registry is reset by every ``catch_warnings`` block (torch has many)."""
    warnings.warn(message, stacklevel=3)


def evaluate_images(
    sr_images: Iterable[np.ndarray],
    hr_images: Iterable[np.ndarray | None],
    names: Sequence[str],
    metrics: Sequence[str],
    crop_border: int,
    *,
    iqa_weights: str | os.PathLike | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Per-image metric table (index ``image``, columns = ``metrics`` in the given order).

    Args:
        sr_images, hr_images: HWC RGB float images in [0, 1], consumed lazily in step with
            ``names`` (an HR entry may be None when only no-reference metrics are asked).
        names: one name per image (the table index).
        metrics: names from :data:`esrgan.metrics.METRICS`.
        crop_border: pixels removed from each side before scoring (usually the scale).
        iqa_weights: folder of pyiqa weight files for ma / pi / lpips (see esrgan.metrics.iqa).
        progress: show a tqdm progress bar (on stderr).
    """
    from esrgan.metrics import METRICS

    _check_names(metrics)
    table = {m: [] for m in metrics}
    unavailable: dict[str, str] = {}  # metric -> why (its missing weight file)
    pairs = zip(names, sr_images, hr_images, strict=False)
    if progress:
        pairs = tqdm(pairs, total=len(names), desc="evaluate", unit="img")
    count = 0
    for name, sr, hr in pairs:
        count += 1
        for m in metrics:
            metric = METRICS[m]
            if m in unavailable:
                table[m].append(np.nan)
                continue
            if metric.needs_reference and hr is None:
                raise MetricInputError(f"{name}: metric {m} needs a reference (HR) image")
            args = (sr, hr, crop_border) if metric.needs_reference else (sr, crop_border)
            kwargs = {"weights_dir": iqa_weights} if metric.uses_iqa_weights else {}
            try:
                value = metric.function(*args, **kwargs)
            except MetricUnavailable as exc:
                _warn_once(f"metric {m} unavailable, left out of this run: {exc}")
                unavailable[m] = str(exc)
                value = np.nan
            except ValueError as exc:
                raise MetricInputError(f"{name}: metric {m}: {exc}") from exc
            table[m].append(float(value))
    if count != len(names):
        raise MetricInputError(f"{len(names)} names but {count} image pairs")
    frame = pd.DataFrame(table, index=pd.Index(list(names), name="image"), columns=list(metrics))
    frame.attrs["left_out"] = unavailable  # metric -> why it could not be computed
    return frame


def summarize(table: pd.DataFrame) -> pd.Series:
    """Column means (NaN for a metric that is NaN on every image) plus ``rmse_pooled``.

    ``rmse_pooled`` (PIRM's set RMSE, sqrt of the mean per-image MSE) is added when the table
    has an ``rmse`` column.
    """
    means = table.mean(axis=0, skipna=True)
    if "rmse" in table.columns:
        means["rmse_pooled"] = pooled_rmse(table["rmse"].dropna())
    return means
