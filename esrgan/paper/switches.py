"""The six changes ESRGAN makes to SRGAN, one row each, and the switches this suite adds beside
them: the one table every layer reads.

A switch is a flat Sacred config key. Its row says what the paper uses (ESRGAN's value), what
it replaces (SRGAN's value), which part of the method it changes, the change's name and the
name of the variant "ESRGAN with this switch set back to SRGAN's value". The presets take
their defaults from ``ESRGAN``, the matrix builds its designs from ``ESRGAN``/``SRGAN`` and
``PAPER_PATH``, the analysis names variants with :func:`variant_label`, the claims ledger
refers to switches by name, and a test checks README's switch table against this one.

A switch the paper does not have (``origin='extension'``, e.g. spectral normalisation in D):
its ``paper`` value is the paper's method (the extension off), ``baseline`` the other value.
It stays at its paper value on the paper's path and in the designs, a run stored before it
existed reads as that value (``experiments.keys``), and a label names it only when it is on.

Where each switch reaches its tensor op (one hop, in ``experiments/build.py``):

    rrdb            -> build_generator(trunk='rrdb' | 'resblock')   esrgan/archs/blocks.py
    bn              -> build_generator(bn=...)                     BatchNorm in the blocks
    beta            -> build_generator(beta=...)                   x + beta * branch(x)
    small_init      -> build_generator(init_scale=SMALL_INIT_SCALE | 1.0)  blocks.init_conv_
    ragan           -> train_gan(ragan=...) -> gan_step          esrgan/losses/gan.py
    vgg_before_act  -> VGGFeatureExtractor(before_activation=...)  esrgan/archs/vgg.py
    d_spectral_norm -> VGGStyleDiscriminator(spectral_norm=...)    esrgan/archs/discriminator.py

A new switch is one row here, its default line in ``experiments/presets.base``, its line in
``experiments/build.py`` and its tensor op (README's switch table follows, a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Switch:
    """One paper change as a config switch."""

    name: str  # the config key
    paper: Any  # ESRGAN's value
    baseline: Any  # SRGAN's value (what the change replaces)
    part: str  # 'generator', 'adversarial loss', 'perceptual loss' or 'discriminator'
    change: str  # the change ESRGAN makes, in words
    flipped_label: str  # the variant: ESRGAN with this switch at its baseline value
    paper_text: str  # what the paper's value means
    baseline_text: str  # what the baseline value means
    section: str  # where the paper introduces it (an extension: where it comes from)
    kind: type = bool  # the value's type: bool, or float for a numeric switch (beta)
    # compact-label tokens: (True, False) for a bool; (prefix, "") for a float ('b=0.2')
    tokens: tuple[str, str] = ("", "")
    origin: str = "paper"  # 'paper' (ESRGAN's change) or 'extension' (not in the paper)

    def normalise(self, value: Any) -> Any:
        """``value`` as this switch's type (None stays None: a run that predates it)."""
        return None if value is None else self.kind(value)

    def token(self, value: Any) -> str:
        """This switch's part of :func:`compact_label` ('?' when the value is missing; ''
        for an extension at its paper value: a label names an extension only when it is on)."""
        if self.origin == "extension" and value is not None and same_value(
                self.name, value, self.paper):
            return ""
        if self.kind is float:
            return f"{self.tokens[0]}={'?' if value is None else format(float(value), 'g')}"
        return "?" if value is None else self.tokens[0 if value else 1]

    @property
    def stage(self) -> int:
        """The first training stage the switch changes: 1 for the generator, else 2."""
        return 1 if self.part == "generator" else 2

    @property
    def flipped_values(self) -> dict[str, Any]:
        """ESRGAN with this switch at its baseline value (the ``flipped_label`` variant)."""
        return {**ESRGAN, self.name: self.baseline}


SWITCH_TABLE: tuple[Switch, ...] = (
    Switch("rrdb", True, False, "generator", "RRDB trunk", "ESRGAN w/o RRDB",
           "RRDB trunk (`nb` blocks)", "SRGAN ResBlocks (`nb_resblock` blocks)", "3.1",
           tokens=("RRDB", "ResBlock")),
    Switch("bn", False, True, "generator", "BN removal", "ESRGAN +BN",
           "no BatchNorm in G", "BN in the trunk blocks", "3.1", tokens=("BN", "noBN")),
    Switch("beta", 0.2, 1.0, "generator", "residual scaling beta=0.2", "ESRGAN beta=1",
           "residual scaling", "none", "3.1", kind=float, tokens=("b", "")),
    Switch("small_init", True, False, "generator", "x0.1 init", "ESRGAN w/o small init",
           "Kaiming x0.1 in the residual blocks", "plain MSRA", "3.1",
           tokens=("init0.1", "init1")),
    Switch("ragan", True, False, "adversarial loss", "RaGAN", "ESRGAN standard GAN",
           "relativistic average GAN", "standard GAN", "3.2", tokens=("RaGAN", "GAN")),
    Switch("vgg_before_act", True, False, "perceptual loss", "VGG features before activation",
           "ESRGAN after-act VGG", "VGG19 conv5_4 before ReLU", "after ReLU (SRGAN)", "3.3",
           tokens=("before", "after")),
    Switch("d_spectral_norm", False, True, "discriminator", "spectral normalisation in D",
           "ESRGAN +SN D", "D as in the paper", "spectral norm on every conv and linear of D",
           "Miyato et al. 2018", tokens=("SN-D", ""), origin="extension"),
)
SMALL_INIT_SCALE = 0.1  # small_init's number: MSRA init of the residual blocks x0.1 (3.1)

SWITCHES: dict[str, Switch] = {s.name: s for s in SWITCH_TABLE}
NAMES: tuple[str, ...] = tuple(SWITCHES)
# The paper's own switches (its ablation designs flip these); the others are extensions.
PAPER_SWITCHES: tuple[str, ...] = tuple(s.name for s in SWITCH_TABLE if s.origin == "paper")
ESRGAN: dict[str, Any] = {s.name: s.paper for s in SWITCH_TABLE}
# SRGAN: the paper's switches at their baseline, an extension at its paper value (off)
SRGAN: dict[str, Any] = {s.name: s.baseline if s.origin == "paper" else s.paper
                         for s in SWITCH_TABLE}
# Switches of the generator: they change the stage-1 (PSNR-oriented) model as well.
GENERATOR_SWITCHES: tuple[str, ...] = tuple(s.name for s in SWITCH_TABLE if s.stage == 1)


def _path() -> tuple[tuple[str, dict[str, Any]], ...]:
    """The paper's cumulative ablation (its Fig. 8), SRGAN first.

    The last step switches to the RRDB trunk; ESRGAN also has beta 0.2 and x0.1 init there,
    which the paper introduces together with the RRDB.
    """
    no_bn = {**SRGAN, "bn": ESRGAN["bn"]}
    before = {**no_bn, "vgg_before_act": ESRGAN["vgg_before_act"]}
    ragan = {**before, "ragan": ESRGAN["ragan"]}
    return (("SRGAN", dict(SRGAN)), ("SRGAN -BN", no_bn), ("SRGAN -BN +before-act", before),
            ("SRGAN -BN +before-act +RaGAN", ragan), ("ESRGAN", dict(ESRGAN)))


PAPER_PATH: tuple[tuple[str, dict[str, Any]], ...] = _path()


def same_value(switch: str, a: Any, b: Any) -> bool:
    """Whether two values of a switch are the same setting (a float switch compared as one)."""
    if a is None or b is None:
        return a is b
    if SWITCHES[switch].kind is float:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return bool(a) == bool(b)


def matches(values: Mapping[str, Any], reference: Mapping[str, Any]) -> bool:
    """Whether ``values`` sets every switch as ``reference`` does."""
    return all(same_value(s, values.get(s), reference[s]) for s in NAMES)


def flipped(values: Mapping[str, Any]) -> list[str]:
    """The switches whose value differs from ESRGAN's, in table order."""
    return [s for s in NAMES if not same_value(s, values.get(s), ESRGAN[s])]


def compact_label(values: Mapping[str, Any]) -> str:
    """A short, unique string of the switches, e.g. 'ResBlock/BN/b=1/init1/GAN/after' (an
    extension only when it is on: '.../after/SN-D')."""
    return "/".join(t for s in SWITCH_TABLE if (t := s.token(values.get(s.name))))


def variant_label(values: Mapping[str, Any]) -> str:
    """The one name of a setting of the six switches (keys as in the Sacred config).

    The paper's cumulative path by its steps' names, ESRGAN with one switch flipped by the
    switch's ``flipped_label``, anything else by :func:`compact_label`.
    """
    for label, reference in PAPER_PATH:
        if matches(values, reference):
            return label
    for switch in SWITCH_TABLE:
        if matches(values, {**ESRGAN, switch.name: switch.baseline}):
            return switch.flipped_label
    return compact_label(values)


def variant_switches(label: str) -> dict[str, Any]:
    """The switches of a named variant (the inverse of :func:`variant_label` on the paper's
    path and the one-switch flips); ValueError for any other name."""
    for name, values in PAPER_PATH:
        if name == label:
            return dict(values)
    for switch in SWITCH_TABLE:
        if switch.flipped_label == label:
            return switch.flipped_values
    raise ValueError(f"unknown variant label {label!r}; known: {known_labels()}")



def known_labels() -> list[str]:
    """Labels in plot order: the paper's path, then the one-switch flips."""
    return [label for label, _ in PAPER_PATH] + [s.flipped_label for s in SWITCH_TABLE]
