"""Names for what the analysis shows: variants from their six switches, metrics, plot order.

A variant is a setting of the six paper switches (PAPER.md sections 1-3). Three families get
readable names: the full ESRGAN, ESRGAN with exactly one switch flipped back to SRGAN's choice,
and the paper's cumulative path from SRGAN to ESRGAN (PAPER.md section 6, Fig. 8). Anything
else gets a compact string of its switches, so that no two settings share a label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from esrgan.metrics import METRICS

SWITCHES: tuple[str, ...] = ("rrdb", "bn", "beta", "small_init", "ragan", "vgg_before_act")

ESRGAN: dict[str, Any] = {"rrdb": True, "bn": False, "beta": 0.2, "small_init": True,
                          "ragan": True, "vgg_before_act": True}
SRGAN: dict[str, Any] = {"rrdb": False, "bn": True, "beta": 1.0, "small_init": False,
                         "ragan": False, "vgg_before_act": False}

# The switch's value when it is flipped away from ESRGAN (SRGAN's choice for every switch).
FLIPPED: dict[str, Any] = dict(SRGAN)

ONE_FLIP: dict[str, str] = {
    "rrdb": "ESRGAN w/o RRDB",
    "bn": "ESRGAN +BN",
    "beta": "ESRGAN beta=1",
    "small_init": "ESRGAN w/o small init",
    "ragan": "ESRGAN standard GAN",
    "vgg_before_act": "ESRGAN after-act VGG",
}

# What each switch is, in words (the change ESRGAN makes), for tables and generated text.
CHANGE_NAMES: dict[str, str] = {
    "rrdb": "RRDB trunk",
    "bn": "BN removal",
    "beta": "residual scaling beta=0.2",
    "small_init": "x0.1 init",
    "ragan": "RaGAN",
    "vgg_before_act": "VGG features before activation",
}

# Switches of the generator: they change the stage-1 (PSNR-oriented) model as well, and the
# paper credits them with a better PSNR model; the other two act in stage 2 only.
GENERATOR_SWITCHES: tuple[str, ...] = ("rrdb", "bn", "beta", "small_init")


def _path() -> list[tuple[str, dict[str, Any]]]:
    srgan_nobn = {**SRGAN, "bn": False}
    before = {**srgan_nobn, "vgg_before_act": True}
    ragan = {**before, "ragan": True}
    return [("SRGAN", dict(SRGAN)), ("SRGAN -BN", srgan_nobn),
            ("SRGAN -BN +before-act", before), ("SRGAN -BN +before-act +RaGAN", ragan),
            ("ESRGAN", dict(ESRGAN))]


# The paper's cumulative path, SRGAN first. The last step switches to the RRDB trunk; our
# ESRGAN also has beta 0.2 and x0.1 init there, which the paper introduces with the RRDB.
PAPER_PATH: list[tuple[str, dict[str, Any]]] = _path()


@dataclass(frozen=True)
class Comparison:
    """Two variants that differ by one paper change: ``without`` lacks it, ``with_`` has it."""

    group: str  # "one switch" (flipped from ESRGAN) or "paper path" (cumulative step)
    change: str  # the change, in words
    switches: tuple[str, ...]  # the switches it flips
    without: str  # label of the variant without the change
    with_: str  # label of the variant with the change


def comparisons() -> list[Comparison]:
    """Every comparison the report makes, in report order: one-switch flips, then the path."""
    out = [Comparison("one switch", CHANGE_NAMES[s], (s,), ONE_FLIP[s], "ESRGAN")
           for s in SWITCHES]
    for (before_label, before), (after_label, after) in zip(PAPER_PATH, PAPER_PATH[1:],
                                                            strict=False):
        flipped = tuple(s for s in SWITCHES if not same_value(s, before[s], after[s]))
        change = " + ".join(CHANGE_NAMES[s] for s in flipped)
        out.append(Comparison("paper path", change, flipped, before_label, after_label))
    return out


def same_value(switch: str, a: Any, b: Any) -> bool:
    """Whether two values of a switch are the same setting (beta compared as a float)."""
    if a is None or b is None:
        return a is b
    if switch == "beta":
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return bool(a) == bool(b)


def _matches(switches: Mapping[str, Any], reference: Mapping[str, Any]) -> bool:
    return all(same_value(s, switches.get(s), reference[s]) for s in SWITCHES)


def compact_label(switches: Mapping[str, Any]) -> str:
    """A short, unique string of all six switches, e.g. 'ResBlock/BN/b=1/init1/GAN/after'."""

    def pick(name: str, yes: str, no: str) -> str:
        value = switches.get(name)
        return "?" if value is None else (yes if value else no)

    beta = switches.get("beta")
    parts = [pick("rrdb", "RRDB", "ResBlock"), pick("bn", "BN", "noBN"),
             "b=?" if beta is None else f"b={float(beta):g}",
             pick("small_init", "init0.1", "init1"), pick("ragan", "RaGAN", "GAN"),
             pick("vgg_before_act", "before", "after")]
    return "/".join(parts)


def variant_label(switches: Mapping[str, Any]) -> str:
    """The name of a setting of the six switches (keys as in the Sacred config)."""
    for label, reference in PAPER_PATH:
        if _matches(switches, reference):
            return label
    for switch, label in ONE_FLIP.items():
        if _matches(switches, {**ESRGAN, switch: FLIPPED[switch]}):
            return label
    return compact_label(switches)


def variant_order(labels: Iterable[str]) -> list[str]:
    """The given labels in plot order: the paper path, then one-switch flips, then the rest."""
    known = [label for label, _ in PAPER_PATH] + list(ONE_FLIP.values())
    present = list(dict.fromkeys(labels))
    ordered = [label for label in known if label in present]
    return ordered + sorted(label for label in present if label not in known)


# ------------------------------------------------------------------------------------------
# metrics

MODEL_LABELS: dict[str, str] = {"bicubic": "Bicubic", "psnr_model": "PSNR-oriented model",
                                "gan_model": "GAN model"}
METRIC_ORDER: tuple[str, ...] = ("psnr", "ssim", "rmse", "niqe", "ma", "pi", "lpips",
                                 "psnr_rgb", "ssim_rgb")


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
