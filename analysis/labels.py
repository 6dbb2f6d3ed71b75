"""Names for what the analysis shows: variants from their six switches, metrics, plot order.

A variant is a setting of the six paper switches; its one name comes from
``esrgan.paper.switches.variant_label`` (the paper's cumulative path by its steps, ESRGAN with
one switch flipped by that switch's label, anything else by a compact string of all six).
"""

from __future__ import annotations

from collections.abc import Iterable

from esrgan.evaluation import BICUBIC, GAN_MODEL, PSNR_MODEL
from esrgan.metrics import METRICS
from esrgan.paper.claims import DEEP_VARIANTS
from esrgan.paper.switches import (
    ESRGAN,
    GENERATOR_SWITCHES,
    PAPER_PATH,
    SRGAN,
    SWITCH_TABLE,
    SWITCHES,
    compact_label,
    known_labels,
    same_value,
    variant_label,
)

__all__ = ["ESRGAN", "GENERATOR_SWITCHES", "MODEL_LABELS", "ONE_FLIP", "PAPER_PATH", "SRGAN",
           "SWITCHES", "compact_label", "higher_is_better", "metric_label", "metric_sort_key",
           "same_value", "set_sort_key", "short_metric_label", "variant_label",
           "variant_order"]

# ESRGAN with one switch flipped back to SRGAN's choice, by switch.
ONE_FLIP: dict[str, str] = {s.name: s.flipped_label for s in SWITCH_TABLE}


def variant_order(labels: Iterable[str]) -> list[str]:
    """The given labels in plot order: the paper path, then one-switch flips, then the deep
    design's variants, then the rest."""
    known = [*known_labels(), *DEEP_VARIANTS]
    present = list(dict.fromkeys(labels))
    ordered = [label for label in known if label in present]
    return ordered + sorted(label for label in present if label not in known)


# ------------------------------------------------------------------------------------------
# metrics

MODEL_LABELS: dict[str, str] = {BICUBIC: "Bicubic", PSNR_MODEL: "PSNR-oriented model",
                                GAN_MODEL: "GAN model"}
METRIC_ORDER: tuple[str, ...] = ("psnr", "ssim", "rmse", "niqe", "ma", "pi", "lpips",
                                 "psnr_rgb", "ssim_rgb", "artifacts")


def metric_label(name: str) -> str:
    """Axis/table label of a metric, e.g. 'PSNR-Y (dB)'; unknown names come back as given."""
    metric = METRICS.get(name)
    return metric.label if metric else name


def short_metric_label(name: str) -> str:
    """The label without its unit, e.g. 'PSNR-Y'."""
    return metric_label(name).split(" (")[0]


def higher_is_better(name: str) -> bool | None:
    """True for PSNR/SSIM/Ma, False for NIQE/PI/RMSE/LPIPS, None when unknown."""
    metric = METRICS.get(name)
    return metric.higher_is_better if metric else None


def metric_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting metrics in the conventional order of SR tables."""
    return (METRIC_ORDER.index(name) if name in METRIC_ORDER else len(METRIC_ORDER), name)


def set_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting the validation set first, then the test sets by name."""
    return (0 if name == "val" else 1, str(name))
