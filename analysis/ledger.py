"""The claims ledger as the report shows it: claim, experiment, effect and interval, verdict,
and what this scale cannot show; then what reproducing the rest would cost at paper scale.

The claims are ``esrgan.paper.claims``; their verdicts ``analysis.claims``. The premise and
regime measurements (the VGG19's sparsity, the deep trunk's depth) come from the runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis import claims as verdicts
from analysis import tables
from analysis.labels import short_metric_label
from analysis.tables import markdown_table
from esrgan.evaluation import GAN_MODEL, PSNR_MODEL
from esrgan.paper.claims import CLAIMS, DEEP_STUDY, Claim, Effect
from esrgan.paper.setting import PAPER_SETTING

# GPU step times reported for one H200 (torch 2.11, batch 16, HR patch 128, the paper's RRDB
# generator, VGG-style discriminator and VGG19 conv5_4) by a standalone measurement outside
# this project's code: its GAN step eager in fp32 and compiled with CUDA graphs, bf16 and
# fused Adam. The PSNR step (the generator alone) is an estimate: a third of the eager GAN step.
GPU = "one H200"
GPU_STEP_S = {"gan_eager": 0.145, "gan_fast": 0.0315, "psnr_eager": 0.05, "psnr_fast": 0.012}
GPU_SOURCE = ("GAN step 121-169 ms eager fp32 and 31.5 ms compiled (CUDA graphs, bf16, fused "
              "Adam), measured on one H200 with a standalone script; PSNR step estimated")
DEEP_PAPER_STEPS = 200_000  # L1 steps of the 64-block networks at paper scale (an estimate)


def context(runs: pd.DataFrame) -> dict[str, Any]:
    """The premise and regime measurements the verdicts need, from the runs."""
    per_run = runs.drop_duplicates("run_id")
    active = per_run["vgg_active_fraction"].dropna() if "vgg_active_fraction" in per_run else []
    deep = per_run[per_run["study"] == DEEP_STUDY] if "study" in per_run else per_run.iloc[:0]
    vgg = [v for v in dict.fromkeys(per_run["vgg_weights"].dropna())]
    layers = [v for v in dict.fromkeys(per_run["vgg_layer"].dropna())] \
        if "vgg_layer" in per_run else []
    return {**gan_artifacts(runs),
            "active_fraction": float(np.mean(active)) if len(active) else None,
            "vgg_weights": ", ".join(map(str, vgg)) or "?",
            "vgg_layer": ", ".join(map(str, layers)) or "conv5_4",
            "deep_depth": int(deep["depth"].max()) if len(deep) and deep["depth"].notna().any()
            else None}


def gan_artifacts(runs: pd.DataFrame) -> dict[str, float]:
    """ESRGAN's GAN and PSNR models' mean artifact index on val (the GAN claims' regime)."""
    if "metric" not in runs:
        return {}
    part = runs[(runs["variant"] == "ESRGAN") & (runs["set"] == "val")
                & (runs["metric"] == "artifacts")]
    if "study" in part:
        part = part[part["study"].fillna("ablation") == "ablation"]
    means = part.groupby("model")["value"].mean()
    return {key: float(means[model]) for key, model in (("gan_artifacts", GAN_MODEL),
                                                        ("psnr_artifacts", PSNR_MODEL))
            if model in means}


def decide_all(runs: pd.DataFrame, interp: pd.DataFrame, sets: Sequence[str], looks: int = 1
               ) -> dict[str, list[verdicts.ClaimResult]]:
    """The ledger on every set (val first); ``looks``: see ``analysis.sequential``."""
    ctx = context(runs)
    return {s: verdicts.decide(runs, interp, s, ctx, looks=looks) for s in sets}


NUMERIC: tuple[str, ...] = (verdicts.AGREES, verdicts.OPPOSITE, verdicts.EQUIVALENT,
                            verdicts.INCONCLUSIVE)  # the verdicts the numbers give
SPECIAL: tuple[str, ...] = (verdicts.PREMISE, verdicts.UNTESTABLE)  # given whatever the numbers


def _unit(metric: str) -> str:
    return " dB" if metric.startswith("psnr") else ""


def level_text(confidence: float) -> str:
    """An interval's level in per cent with the decimals that tell it apart: '95%',
    '99.5%', '99.72%'."""
    pct = 100 * confidence
    for d in range(5):
        shown = round(pct, d)
        if shown != 100 and abs(shown - pct) <= (100 - pct) / 100:
            return f"{shown:.{d}f}%"
    return f"{pct:.6g}%"


def set_level(results: Sequence[verdicts.ClaimResult]) -> float:
    """The level of every interval of one set's ledger (its family's Bonferroni level)."""
    if not results:
        return verdicts.CONFIDENCE
    return verdicts.family_confidence(results[0].family, results[0].looks)


def in_family(result: verdicts.EffectResult) -> bool:
    """Whether the effect is one of its set's family: deciding, two seeds or more, and judged
    on its numbers (not set aside by a premise or the scale)."""
    return (result.effect.decides and result.estimate.n >= 2
            and result.verdict not in SPECIAL)


def effect_text(result: verdicts.EffectResult) -> str:
    """'+0.42 dB [+0.10, +0.74], n=4': the mean and its interval at the family's level (the
    one number of the report for this effect on this set)."""
    est, metric = result.estimate, result.effect.metric
    d, unit = tables.digits(metric), _unit(metric)
    if est.n == 0:
        return "not measured"
    if est.n < 2:
        return f"{est.mean:+.{d}f}{unit} (n=1, no interval)"
    return f"{est.mean:+.{d}f}{unit} [{est.low:+.{d}f}, {est.high:+.{d}f}], n={est.n}"


def verdict_text(result: verdicts.EffectResult, unadjusted: bool = True) -> str:
    """The verdict (family-wise) in words: an inconclusive one with the smallest effect the
    design could detect and the seeds a decision would need, an equivalent one with its delta;
    with ``unadjusted``, the verdict of the effect tested alone at 95% after it."""
    v = result.verdict
    est, effect = result.estimate, result.effect
    d, unit = tables.digits(effect.metric), _unit(effect.metric)
    text = v
    if v == verdicts.INCONCLUSIVE:
        if est.n < 2:
            return "inconclusive (one seed: no interval)"
        need = est.seeds_needed
        need_text = ("a decision would need more than 10,000 seeds"
                     if not math.isfinite(need) else
                     f"a decision would need about {int(need)} seeds")
        text = (f"inconclusive: only effects beyond ±{est.detectable:.{d}f}{unit} were "
                f"detectable (80% power), and {need_text}")
    elif v == verdicts.EQUIVALENT:
        text = f"equivalent: |effect| < {effect.delta:g}{unit}"
    if unadjusted and v in NUMERIC and result.raw_verdict:
        text += f" (unadjusted 95%: {result.raw_verdict})"
    return text


def _cannot_show(claim: Claim, result: verdicts.ClaimResult) -> str:
    parts = []
    if result.reason:
        parts.append(result.reason)
    if claim.qualitative:
        parts.append(claim.qualitative)
    parts.append(f"needs: {claim.regime}")
    return "; ".join(parts)


def _effect_label(effect: Effect) -> str:
    return f"{effect.name}, {short_metric_label(effect.metric)}"


def ledger_markdown(results: Mapping[str, list[verdicts.ClaimResult]]) -> str:
    """One table: a row per effect, its number and verdict on every set (the interval's level
    in the column's header: one family per set)."""
    sets = list(results)
    header = ["Claim", "Effect (paper's sign)"]
    for s in sets:
        header += [f"{s}: effect [{level_text(set_level(results[s]))} CI]", f"{s}: verdict"]
    header.append("What this scale cannot show")
    rows = []
    for i, claim in enumerate(CLAIMS):
        per_set = [results[s][i] for s in sets]
        for j, effect in enumerate(claim.effects):
            cells = [f"**{claim.id}** {claim.title}" if j == 0 else "",
                     f"{_effect_label(effect)} ({'+' if effect.direction > 0 else '−'})"
                     + ("" if effect.decides else " (reported, not deciding)")]
            for result in per_set:
                e = result.effects[j]
                cells += [effect_text(e), verdict_text(e)]
            cells.append(_cannot_show(claim, per_set[0]) if j == 0 else "")
            rows.append(cells)
    return markdown_table(header, rows)


def delta_lines(claims: Sequence[Claim] = CLAIMS) -> list[str]:
    """The smallest effects of interest, each once with its reason and the effects it is for."""
    groups: dict[tuple[float, str], list[tuple[Claim, Effect]]] = {}
    for claim in claims:
        for effect in claim.effects:
            if effect.delta > 0:
                groups.setdefault((effect.delta, effect.delta_why), []).append((claim, effect))
    lines = []
    for (delta, why), members in groups.items():
        metrics = list(dict.fromkeys(short_metric_label(e.metric) for _, e in members))
        where = []
        for claim in {c.id: c for c, _ in members}.values():
            mine = [e for c, e in members if c.id == claim.id]
            where.append(claim.id if len(mine) == len(claim.effects)
                         else f"{claim.id}: {', '.join(e.name for e in mine)}")
        unit = _unit(members[0][1].metric)
        lines.append(f"delta {delta:g}{unit} for {' and '.join(metrics)} "
                     f"({'; '.join(where)}). Why: {why}.")
    return lines


def chance_lines(results: Mapping[str, list[verdicts.ClaimResult]]) -> list[str]:
    """One sentence per set: how many verdicts chance alone would give tested one by one, how
    the family-wise level prevents it, and how many effects each way decides."""
    alpha = verdicts.ALPHA
    lines = []
    for s, claim_results in results.items():
        family = [e for r in claim_results for e in r.effects if in_family(e)]
        m = len(family)
        if not m:
            lines.append(f"{s}: no deciding effect has two seeds or more, so none is decided.")
            continue
        looks = claim_results[0].looks
        split = f"{alpha:.0%}/{m}" if looks == 1 else f"{alpha:.0%}/({looks} × {m})"
        raw = sum(e.raw_verdict in verdicts.DECIDED for e in family)
        fam = sum(e.verdict in verdicts.DECIDED for e in family)
        lines.append(
            f"{s}: {m} deciding effect{'s' if m > 1 else ''}; tested one by one at "
            f"{alpha:.0%}, about {alpha * m:.2g} of them would come out agrees or opposite by "
            f"chance even with no real effect; Bonferroni at {split} "
            f"({level_text(set_level(claim_results))} intervals"
            f"{f', {looks} looks' if looks > 1 else ''}) keeps the chance of any false verdict "
            f"in this set at {alpha:.0%} at most. Unadjusted, {raw} of the {m} "
            f"{'is' if raw == 1 else 'are'} decided; family-wise, {fam}.")
    return lines


# ------------------------------------------------------------------------------------------
# what was found: the ledger's verdicts as sentences

GROUPS: dict[str, str] = {"agrees": "Agrees with the paper",
                          "equivalent": "No effect larger than delta (equivalent)",
                          "against": "Against the paper",
                          "open": "Open, and why"}
_REST: dict[str, tuple[str, str]] = {  # (one effect, several)
    "agrees": ("agrees with the paper", "agree with the paper"),
    "equivalent": ("is equivalent", "are equivalent"),
    "against": ("goes against the paper", "go against the paper"),
    "open": ("is open", "are open")}


def _group(per_set: Sequence[verdicts.EffectResult]) -> str:
    """Where an effect goes on the page, from its verdicts on the sets: against the paper
    anywhere first, then agrees, equivalent, else open."""
    seen = {e.verdict for e in per_set}
    if verdicts.OPPOSITE in seen:
        return "against"
    if verdicts.AGREES in seen:
        return "agrees"
    if verdicts.EQUIVALENT in seen:
        return "equivalent"
    return "open"


def _strength(e: verdicts.EffectResult, group: str) -> float:
    """How firmly an effect is decided: |mean| over the interval's half-width (a sign), or
    delta over the interval's largest |end| (equivalence); 0 when it is not."""
    est = e.estimate
    if est.n < 2:
        return 0.0
    if group == "equivalent" and e.verdict == verdicts.EQUIVALENT:
        reach = max(abs(est.low), abs(est.high))
        return math.inf if reach == 0 else e.effect.delta / reach
    if e.verdict in (verdicts.AGREES, verdicts.OPPOSITE):
        half = (est.high - est.low) / 2
        return math.inf if half == 0 else abs(est.mean) / half
    return 0.0


def _sets_text(sets: Sequence[str]) -> str:
    return " and ".join(sets) if len(sets) <= 2 else ", ".join(sets[:-1]) + " and " + sets[-1]


def _special_text(verdict: str, sets: Sequence[str], reasons: Mapping[str, str],
                  said: set[str]) -> str:
    """'premise not met on val and test: why' (a reason already given in the line: left out)."""
    why = [r for r in dict.fromkeys(reasons.get(s, "") for s in sets) if r and r not in said]
    said.update(why)
    return f"{verdict} on {_sets_text(sets)}" + (f": {'; '.join(why)}" if why else "")


def _effect_sentence(per_set: Sequence[verdicts.EffectResult], reasons: Mapping[str, str],
                     said: set[str]) -> str:
    """'name, metric: +0.45 dB [...], n=3 on val (agrees); ... on test (...).': the ledger's
    number and verdict per set; a verdict the setting gives (premise, scale) once for its
    sets, with its reason and no number."""
    effect = per_set[0].effect
    head = _effect_label(effect) + ("" if effect.decides else " (reported, not deciding)")
    parts = [f"{effect_text(e)} on {e.set} ({verdict_text(e, unadjusted=False)})"
             for e in per_set if e.verdict not in SPECIAL]
    for special in SPECIAL:
        sets = [e.set for e in per_set if e.verdict == special]
        if sets:
            parts.append(_special_text(special, sets, reasons, said))
    return f"{head}: {'; '.join(parts)}."


def _claim_bullets(index: int, per_claim: Sequence[verdicts.ClaimResult]
                   ) -> list[tuple[str, tuple[float, ...], str]]:
    """(group, sort key, line) of one claim: a line per group its effects fall in, and the
    sets where the setting sets the whole claim aside (premise, scale) said once, as open."""
    claim = per_claim[0].claim
    reasons = {r.set: r.reason for r in per_claim}
    # sets on which every effect of the claim has the same premise/scale verdict
    aside: dict[str, list[str]] = {}
    for r in per_claim:
        kinds = {e.verdict for e in r.effects}
        if len(kinds) == 1 and kinds <= set(SPECIAL):
            aside.setdefault(kinds.pop(), []).append(r.set)
    judged = [r for r in per_claim if not any(r.set in sets for sets in aside.values())]
    where: dict[str, list[int]] = {}
    if judged:
        for j in range(len(claim.effects)):
            where.setdefault(_group([r.effects[j] for r in judged]), []).append(j)
    groups = list(where) + (["open"] if aside and "open" not in where else [])
    order = list(GROUPS)
    out = []
    for group in groups:
        said: set[str] = set()
        indices = where.get(group, [])
        parts = [_effect_sentence([r.effects[j] for r in judged], reasons, said)
                 for j in indices]
        if group == "open":
            for v, sets in aside.items():
                text = _special_text(v, sets, reasons, said)
                parts.append(f"{text[0].upper()}{text[1:]}.")
        body = " ".join(parts)
        line = f"{claim.id} ({claim.title}): {body}"
        if group == "against":
            line += f" What this scale lacks: {claim.regime}."
        rest = []
        for g in (g for g in groups if g != group):
            above = "above" if order.index(g) < order.index(group) else "below"
            names = [claim.effects[j].name for j in where.get(g, [])]
            if names:
                rest.append(f"{', '.join(names)} {_REST[g][len(names) > 1]} ({above})")
            if g == "open":
                rest += [f"{v} on {_sets_text(sets)} ({above})" for v, sets in aside.items()]
        if rest:
            line += f" The rest of {claim.id}: {'; '.join(rest)}."
        if claim.gate and group == "open":
            line += (" This is the sanity gate: until it agrees, every other effect rests "
                     "on a PSNR model not shown to beat bicubic.")
        deciding = [[r.effects[j] for r in judged] for j in indices
                    if claim.effects[j].decides] or [[r.effects[j] for r in judged]
                                                     for j in indices]
        if group == "open":
            need = [e.estimate.seeds_needed for per_set in deciding for e in per_set
                    if e.verdict == verdicts.INCONCLUSIVE and e.estimate.n >= 2]
            key = (float(not indices), min(need, default=math.inf), float(index))
        else:
            key = (-max(_strength(e, group) for per_set in deciding for e in per_set),
                   float(index))
        out.append((group, key, line))
    return out


def found_markdown(results: Mapping[str, list[verdicts.ClaimResult]]) -> list[str]:
    """'What was found': the ledger's effects as sentences, grouped (agrees with the paper,
    equivalent, against the paper, open and why), strongest first; a claim split over groups
    says in each where the rest of it is. Every number and verdict is the ledger table's."""
    sets = list(results)
    bullets: dict[str, list[tuple[tuple[float, ...], str]]] = {g: [] for g in GROUPS}
    for i in range(len(CLAIMS)):
        for group, key, line in _claim_bullets(i, [results[s][i] for s in sets]):
            bullets[group].append((key, line))
    md = []
    for group, title in GROUPS.items():
        if bullets[group]:
            md += [f"### {title}", ""]
            md += [f"- {line}" for _, line in sorted(bullets[group], key=lambda b: b[0])]
            md.append("")
    return md


def frame(results: Mapping[str, list[verdicts.ClaimResult]]) -> pd.DataFrame:
    """The ledger as one CSV table (every set)."""
    return pd.concat([verdicts.to_frame(r) for r in results.values()], ignore_index=True)


# ------------------------------------------------------------------------------------------
# at paper scale


def paper_scale_markdown(runs: pd.DataFrame) -> str:
    """What ``PRESET=paper`` runs for the same design and its cost in GPU-hours."""
    per_run = runs[runs["kind"] == "cell"].drop_duplicates("run_id")
    if per_run.empty:
        return ""
    seeds = max(1, per_run["seed"].nunique())
    stage1 = per_run.drop_duplicates(["variant", "stage1_seed", "study"])
    full = stage1[stage1["study"] != DEEP_STUDY]
    deep = stage1[stage1["study"] == DEEP_STUDY]
    gan = per_run[per_run["steps2"].fillna(0) > 0]
    n1, nd, n2 = len(full) / seeds, len(deep) / seeds, len(gan) / seeds
    s1, s2 = PAPER_SETTING["steps1"], PAPER_SETTING["steps2"]

    def hours(mode: str) -> float:
        psnr, gan_s = GPU_STEP_S[f"psnr_{mode}"], GPU_STEP_S[f"gan_{mode}"]
        return (n1 * s1 * psnr + nd * DEEP_PAPER_STEPS * psnr + n2 * s2 * gan_s) / 3600

    eager, fast = hours("eager"), hours("fast")
    rows = [["PSNR-oriented models per seed", f"{n1:g}", f"{s1:,} L1 steps each"],
            ["deep-trunk models per seed (C1)", f"{nd:g}",
             f"about {DEEP_PAPER_STEPS:,} L1 steps each (64 blocks of width 64)"],
            ["GAN stages per seed", f"{n2:g}", f"{s2:,} steps each"],
            ["GPU-hours per seed, eager fp32", f"{eager:,.0f}", f"on {GPU}"],
            ["GPU-hours per seed, compiled + bf16", f"{fast:,.0f}", f"on {GPU}"],
            [f"GPU-hours for {max(seeds, 3)} seeds (compiled)", f"{fast * max(seeds, 3):,.0f}",
             "3 seeds are the fewest that give an interval worth reading"]]
    text = [f"`PRESET=paper` runs this report's design with the paper's sizes and schedule "
            f"(RRDB nf {PAPER_SETTING['nf']}, {PAPER_SETTING['nb']} blocks, patch "
            f"{PAPER_SETTING['patch']}, batch {PAPER_SETTING['batch']}, DF2K at `train_hr`, "
            "an ImageNet VGG19):", "", markdown_table(["", "count / hours", "at paper scale"],
                                                      rows), "",
            f"Step times: {GPU_SOURCE}; not measured by this project's code. The paper's own "
            "models were trained once each; deciding its claims with intervals needs several "
            "seeds per variant."]
    return "\n".join(text)
