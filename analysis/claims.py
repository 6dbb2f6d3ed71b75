"""The claims ledger decided: each claim's effects measured over seeds, with one verdict.

For every effect of ``esrgan.paper.claims`` (value(a) - value(b), paired by seed) this module
gives the mean and its Student-t interval, at the level the family-wise error control asks for,
and one verdict:

- ``agrees`` / ``opposite``: the interval excludes 0 on the side the paper predicts / the other;
- ``equivalent``: the interval lies inside (-delta, +delta), the effect's smallest effect of
  interest (``Effect.delta``): no effect a reader would care about, in either direction (two
  one-sided tests at the interval's level); it wins over agrees/opposite when both hold (a
  real but negligible effect);
- ``inconclusive``: neither; it carries the smallest effect the design could have detected
  with 80% power and the seeds a decision would need;
- ``premise not met`` / ``not testable at this scale``: the setting lacks what the claim rests
  on, or its runs are absent or below its regime, whatever the numbers.

Error control. The family is the deciding effects tested on one set; its family-wise error
rate (the chance that any verdict of the family is false) is held at ``ALPHA`` by Bonferroni:
each effect's interval is at confidence 1 - ALPHA / (looks * m) for m effects and ``looks``
looks at the data (the sequential seed budget of ``make ablation`` looks twice: after the first
seeds and after the added ones, and splits ALPHA between the two, valid whatever rule chose the
added seeds). Bonferroni, not Holm, so that the interval shown and the verdict are one thing.
Each effect also carries its unadjusted 95% verdict (``raw_verdict``), as a reader testing it
alone would get it.

A claim's verdict combines its deciding effects: ``agrees`` when all agree, ``opposite`` when
any goes against the paper, ``equivalent`` when all are equivalent, else ``inconclusive``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis import settings
from esrgan.paper.claims import CLAIMS, Claim, Effect

CONFIDENCE = 0.95  # an effect tested alone (the unadjusted verdict)
ALPHA = 1 - CONFIDENCE  # family-wise error rate of one set's verdicts
POWER = 0.8
AGREES, OPPOSITE, EQUIVALENT, INCONCLUSIVE = "agrees", "opposite", "equivalent", "inconclusive"
PREMISE, UNTESTABLE = "premise not met", "not testable at this scale"
VERDICTS: tuple[str, ...] = (AGREES, OPPOSITE, EQUIVALENT, INCONCLUSIVE, PREMISE, UNTESTABLE)
DECIDED: tuple[str, ...] = (AGREES, OPPOSITE, EQUIVALENT)


@dataclass(frozen=True)
class Estimate:
    """Mean of paired differences over seeds, its t interval and what the design can see.

    ``confidence``: the interval's level. ``detectable``: the smallest |effect| this design
    detects with 80% power at that level, its n and observed sd; ``seeds_needed``: seeds for a
    decision (a sign, or equivalence within ``delta``) with 80% power at the observed mean and
    sd. NaN where n < 2 (no spread, no interval).
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    detectable: float
    seeds_needed: float
    confidence: float = CONFIDENCE


SEED_LIMIT = 10_000  # seeds_needed: beyond this, inf


@functools.lru_cache(maxsize=64)
def _factors(confidence: float, power: float) -> np.ndarray:
    """(t(conf) + t(power)) / sqrt(n) for n = 2 .. SEED_LIMIT (index n - 2): the detectable
    effect in units of sd. Decreasing in n; computed once per level."""
    n = np.arange(2, SEED_LIMIT + 1)
    q = stats.t.ppf(0.5 + confidence / 2, n - 1) + stats.t.ppf(power, n - 1)
    return q / np.sqrt(n)


@functools.lru_cache(maxsize=4096)
def _t(q: float, df: int) -> float:
    return float(stats.t.ppf(q, df))


def detectable(sd: float, n: int, confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """Smallest |mean difference| a paired design of n seeds detects with ``power``."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if n <= SEED_LIMIT:
        return float(_factors(confidence, power)[n - 2] * sd)
    return (_t(0.5 + confidence / 2, n - 1) + _t(power, n - 1)) * sd / math.sqrt(n)


def seeds_needed(effect: float, sd: float, confidence: float = CONFIDENCE,
                 power: float = POWER, delta: float = 0.0) -> float:
    """Seeds a paired design needs for a decision with ``power`` if the true mean difference
    is ``effect``: its sign, or (``delta`` > |effect|) its equivalence within ``delta``,
    whichever comes first (inf beyond ``SEED_LIMIT``)."""
    if not (math.isfinite(effect) and math.isfinite(sd)):
        return math.nan
    if sd == 0:
        return 2.0
    # the margin the interval's half-width must fit in: |effect| (sign), delta - |effect|
    margin = max(abs(effect), delta - abs(effect))
    if margin <= 0:
        return math.inf
    factors = _factors(confidence, power)
    fits = np.nonzero(factors * sd <= margin)[0]
    return float(fits[0] + 2) if fits.size else math.inf


def estimate(diffs: Iterable[float], confidence: float = CONFIDENCE,
             delta: float = 0.0) -> Estimate:
    """The :class:`Estimate` of paired differences (non-finite values dropped)."""
    data = np.asarray([d for d in diffs if d is not None and np.isfinite(d)], dtype=float)
    n = int(data.size)
    if n == 0:
        return Estimate(0, *[math.nan] * 6, confidence=confidence)
    mean = float(data.mean())
    if n < 2:
        return Estimate(1, mean, *[math.nan] * 5, confidence=confidence)
    sd = float(data.std(ddof=1))
    half = _t(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(n, mean, sd, mean - half, mean + half, detectable(sd, n, confidence),
                    seeds_needed(mean, sd, confidence, delta=delta), confidence)


def family_confidence(m: int, looks: int = 1, alpha: float = ALPHA) -> float:
    """The confidence of each interval in a family of ``m`` effects looked at ``looks`` times
    that keeps the family-wise error rate at ``alpha`` (Bonferroni)."""
    return 1 - alpha / (max(m, 1) * max(looks, 1))


def verdict(direction: int, est: Estimate, *, delta: float = 0.0, premise_met: bool = True,
            testable: bool = True) -> str:
    """The verdict of one effect whose sign the paper predicts (``direction`` +1 or -1)."""
    if not premise_met:  # the stronger statement: no setting of this kind could test it
        return PREMISE
    if not testable:
        return UNTESTABLE
    if est.n < 2 or not (math.isfinite(est.low) and math.isfinite(est.high)):
        return INCONCLUSIVE
    if delta > 0 and -delta < est.low and est.high < delta:
        return EQUIVALENT
    if est.low <= 0 <= est.high:
        return INCONCLUSIVE
    return AGREES if np.sign(est.mean) == np.sign(direction) else OPPOSITE


def combine(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its deciding effects' verdicts."""
    if not verdicts:
        return UNTESTABLE
    for special in (PREMISE, UNTESTABLE):
        if special in verdicts:
            return special
    for same in (AGREES, EQUIVALENT):
        if all(v == same for v in verdicts):
            return same
    if OPPOSITE in verdicts:
        return OPPOSITE
    return INCONCLUSIVE


# ------------------------------------------------------------------------------------------
# measuring the effects from the run frames (analysis.load)


STAGE1_MODELS = settings.STAGE1_MODELS


def _rows(runs: pd.DataFrame, variant: str, model: str, metric: str, set_name: str,
          study: str | None) -> pd.DataFrame:
    """A variant's rows of one model, metric, set and study."""
    part = runs[(runs["variant"] == variant) & (runs["model"] == model)
                & (runs["metric"] == metric) & (runs["set"] == set_name)]
    return part[part["study"].fillna("ablation") == (study or "ablation")]


def paired_differences(runs: pd.DataFrame, effect: Effect, set_name: str) -> pd.Series:
    """value(a) - value(b) per replicate, for the replicates both sides have.

    When both sides are stage-1 models (PSNR-oriented or bicubic) a replicate is a stage-1
    seed: runs that share their stage-1 model count once, so no interval is faked. A side
    whose runs hold two settings, or two sides trained in different settings, are refused
    (:class:`analysis.settings.MixedSettings`): a replicate is a seed, never another setting.
    """
    models = {effect.a.model, effect.b.model}
    key = "stage1_seed" if models <= set(STAGE1_MODELS) else "seed"
    sides = [_rows(runs, side.variant, side.model, effect.metric, set_name, effect.study)
             for side in (effect.a, effect.b)]
    for side, part in zip((effect.a, effect.b), sides, strict=True):
        # each side on what its own model depends on: a PSNR-oriented model on the stage-1
        # keys only, so the stage-1-only cells of a variant pool with its full cells there
        column = settings.column_for([side.model])
        found = settings.differences(part, column)
        if found:
            raise settings.MixedSettings(
                f"effect {effect.name!r}: variant {side.variant!r} holds runs of "
                f"{part[column].nunique()} settings that differ in {found}")
    # the two sides share what both models depend on: the whole setting for two GAN models,
    # its stage-1 part as soon as one side is a stage-1 model (a GAN model against its own
    # PSNR model, whose stage-1-only cells have steps2=0)
    shared = settings.SETTING if not models & set(STAGE1_MODELS) else settings.STAGE1_SETTING
    settings.check_sides(*sides, effect.name, shared)
    a, b = (part.groupby(key)["value"].mean() for part in sides)
    both = a.index.intersection(b.index)
    return (a[both] - b[both]).sort_index()


def interpolation_differences(interp: pd.DataFrame, variant: str = "ESRGAN",
                              metric: str = "niqe", set_name: str = "val") -> pd.Series:
    """Per seed: mean of (network - image) ``metric`` at equal PSNR, over the network sweep's
    interior points inside the image sweep's PSNR range (the ends are the same two models)."""
    out = {}
    part = interp[(interp["variant"] == variant) & interp["method"].isin(["network", "image"])]
    if "set" in part:
        part = part[part["set"].fillna("val") == set_name]
    for seed, rows in part.groupby("seed"):
        curves = {}
        for method in ("network", "image"):
            wide = rows[rows["method"] == method].pivot_table(
                index="alpha", columns="metric", values="value", aggfunc="mean")
            if "psnr" not in wide or metric not in wide:
                break
            curves[method] = wide[["psnr", metric]].dropna().sort_index()
        if len(curves) < 2:
            continue
        image = curves["image"].sort_values("psnr")
        lo, hi = image["psnr"].min(), image["psnr"].max()
        network = curves["network"]
        inner = network.iloc[1:-1]
        inner = inner[(inner["psnr"] >= lo) & (inner["psnr"] <= hi)]
        if inner.empty:
            continue
        at = np.interp(inner["psnr"], image["psnr"], image[metric])
        out[seed] = float(np.mean(inner[metric].to_numpy() - at))
    return pd.Series(out, dtype=float).sort_index()


@dataclass
class EffectResult:
    """One effect on one set: the estimate at the family's level and its verdict (the one the
    report gives), the unadjusted 95% estimate and verdict beside it, and the per-seed
    differences they rest on."""

    claim: str
    effect: Effect
    set: str
    estimate: Estimate
    verdict: str
    seeds: list[int] = field(default_factory=list)
    raw: Estimate | None = None  # unadjusted 95% interval
    raw_verdict: str = ""
    diffs: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))


@dataclass
class ClaimResult:
    """A claim on one set: its effects and the combined verdict, with why."""

    claim: Claim
    set: str
    effects: list[EffectResult]
    verdict: str
    reason: str = ""  # why a premise is not met or the claim is not testable
    family: int = 0  # effects in this set's family (the Bonferroni m)
    looks: int = 1  # looks at the data the error rate is split over


def _premise(claim: Claim, context: Mapping[str, object]) -> tuple[bool, str]:
    limit = claim.needs.max_active_fraction
    if limit is None:
        return True, ""
    active = context.get("active_fraction")
    vgg = context.get("vgg_weights", "?")
    if active is None or not math.isfinite(float(active)):  # type: ignore[arg-type]
        return False, "the VGG19's sparsity was not measured"
    met = float(active) <= float(limit)  # type: ignore[arg-type]
    text = (f"{100 * float(active):.1f}% of {context.get('vgg_layer', 'conv5_4')} units are "  # type: ignore[arg-type]
            f"active after the ReLU with the {vgg} VGG19 (paper: 11.17% for an ImageNet "
            f"VGG19)")
    return met, text + ("" if met else ": the features are not sparse, so the premise is absent")


def _testable(claim: Claim, context: Mapping[str, object]) -> tuple[bool, str]:
    depth = claim.needs.min_depth
    if depth is not None:
        have = context.get("deep_depth")
        if not have:
            return False, "no deep-trunk runs in the store (the 'deep' design)"
        if int(have) < int(depth):  # type: ignore[arg-type]
            return False, f"the deep trunk has {have} blocks; the claim needs >= {depth}"
    limit = claim.needs.max_gan_artifacts
    have = context.get("gan_artifacts")
    if limit is not None and have is not None and float(have) > float(limit):  # type: ignore[arg-type]
        return False, (f"the GAN stage paints a periodic grid: ESRGAN's GAN model has an "
                       f"artifact index of {float(have):.4f} on val (at most {limit} without "  # type: ignore[arg-type]
                       f"one; its PSNR model {context.get('psnr_artifacts', math.nan):.4f}), so "
                       "its scores measure the grid, not what the claim is about (the search "
                       "for a regime without it: docs/gan_stage_pilots.md)")
    return True, ""


@dataclass
class Measured:
    """A claim's paired differences on one set, before any verdict, and its preconditions."""

    claim: Claim
    diffs: list[tuple[Effect, pd.Series]]  # per effect: its difference per seed
    testable: bool = True
    why_not: str = ""
    premise_met: bool = True
    premise_text: str = ""


def measure(runs: pd.DataFrame, interp: pd.DataFrame, set_name: str,
            context: Mapping[str, object] | None = None,
            claims: Sequence[Claim] = CLAIMS) -> list[Measured]:
    """Every claim's differences on ``set_name``; ``context`` holds the premise measurements
    (``active_fraction``, ``vgg_weights``, ``vgg_layer``) and the regime (``deep_depth``)."""
    context = context or {}
    out = []
    for claim in claims:
        testable, why_not = _testable(claim, context)
        premise_met, premise_text = _premise(claim, context)
        diffs_of = []
        for effect in claim.effects:
            if effect.kind == "interpolation":
                diffs = (interpolation_differences(interp, effect.a.variant, effect.metric,
                                                   set_name)
                         if not interp.empty else pd.Series(dtype=float))
            else:
                diffs = paired_differences(runs, effect, set_name)
            diffs_of.append((effect, diffs.dropna()))
        out.append(Measured(claim, diffs_of, testable, why_not, premise_met, premise_text))
    return out


def judge(measured: Sequence[Measured], set_name: str, looks: int = 1) -> list[ClaimResult]:
    """The verdicts of one set's claims, the family's error rate held at ``ALPHA`` over
    ``looks`` looks (Bonferroni over the deciding effects that get a verdict from numbers)."""
    m = sum(1 for c in measured if c.testable and c.premise_met
            for effect, diffs in c.diffs if effect.decides and len(diffs) >= 2)
    level = family_confidence(m, looks)
    results = []
    for c in measured:
        effects = []
        for effect, diffs in c.diffs:
            est = estimate(diffs, level, effect.delta)
            raw = estimate(diffs, CONFIDENCE, effect.delta)
            judged = {"delta": effect.delta, "premise_met": c.premise_met or not effect.decides,
                      "testable": c.testable and est.n > 0}
            effects.append(EffectResult(
                c.claim.id, effect, set_name, est, verdict(effect.direction, est, **judged),
                [int(s) for s in diffs.index], raw, verdict(effect.direction, raw, **judged),
                diffs))
        combined = combine([e.verdict for e in effects if e.effect.decides])
        reason = c.why_not if not c.testable else ""
        if c.testable and not any(e.estimate.n for e in effects):
            reason = "no runs of this claim's variants on this set"
        if combined == PREMISE or (c.claim.premise and c.premise_text):
            reason = "; ".join(r for r in (c.premise_text, reason) if r)
        results.append(ClaimResult(c.claim, set_name, effects, combined, reason, m, looks))
    return results


def decide(runs: pd.DataFrame, interp: pd.DataFrame, set_name: str,
           context: Mapping[str, object] | None = None,
           claims: Sequence[Claim] = CLAIMS, looks: int = 1) -> list[ClaimResult]:
    """Every claim measured and judged on ``set_name`` (:func:`measure`, :func:`judge`)."""
    return judge(measure(runs, interp, set_name, context, claims), set_name, looks)


def to_frame(results: Sequence[ClaimResult]) -> pd.DataFrame:
    """One row per claim x effect x set: the ledger as a table (CSV)."""
    rows = []
    for result in results:
        for e in result.effects:
            rows.append({
                "claim": result.claim.id, "title": result.claim.title, "set": result.set,
                "effect": e.effect.name, "metric": e.effect.metric,
                "paper_sign": "+" if e.effect.direction > 0 else "-",
                "decides": e.effect.decides, "delta": e.effect.delta, "n": e.estimate.n,
                "mean": e.estimate.mean, "sd": e.estimate.sd,
                "confidence": e.estimate.confidence, "ci_low": e.estimate.low,
                "ci_high": e.estimate.high, "detectable": e.estimate.detectable,
                "seeds_needed": e.estimate.seeds_needed, "verdict": e.verdict,
                "raw_ci_low": e.raw.low if e.raw else math.nan,
                "raw_ci_high": e.raw.high if e.raw else math.nan,
                "raw_verdict": e.raw_verdict, "claim_verdict": result.verdict,
                "family": result.family, "looks": result.looks,
                "seeds": " ".join(map(str, e.seeds)), "reason": result.reason})
    return pd.DataFrame(rows)
