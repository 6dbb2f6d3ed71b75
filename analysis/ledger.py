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
from analysis.labels import short_metric_label
from analysis.tables import markdown_table
from esrgan.paper.claims import CLAIMS, DEEP_STUDY, Claim
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
    return {"active_fraction": float(np.mean(active)) if len(active) else None,
            "vgg_weights": ", ".join(map(str, vgg)) or "?",
            "vgg_layer": ", ".join(map(str, layers)) or "conv5_4",
            "deep_depth": int(deep["depth"].max()) if len(deep) and deep["depth"].notna().any()
            else None}


def decide_all(runs: pd.DataFrame, interp: pd.DataFrame, sets: Sequence[str], looks: int = 1
               ) -> dict[str, list[verdicts.ClaimResult]]:
    """The ledger on every set (val first); ``looks``: see ``analysis.sequential``."""
    ctx = context(runs)
    return {s: verdicts.decide(runs, interp, s, ctx, looks=looks) for s in sets}


def _unit(metric: str) -> str:
    return " dB" if metric.startswith("psnr") else ""


def _digits(metric: str) -> int:
    return 4 if metric.startswith("ssim") or metric == "lpips" else 2


def effect_text(result: verdicts.EffectResult) -> str:
    """'+0.42 dB [+0.10, +0.74], n=4' (or the one value without an interval)."""
    est, metric = result.estimate, result.effect.metric
    d, unit = _digits(metric), _unit(metric)
    if est.n == 0:
        return "not measured"
    if est.n < 2:
        return f"{est.mean:+.{d}f}{unit} (n=1, no interval)"
    return f"{est.mean:+.{d}f}{unit} [{est.low:+.{d}f}, {est.high:+.{d}f}], n={est.n}"


def verdict_text(result: verdicts.EffectResult) -> str:
    """The verdict; an inconclusive one with the smallest effect the design could detect."""
    v = result.verdict
    est, metric = result.estimate, result.effect.metric
    d, unit = _digits(metric), _unit(metric)
    if v == verdicts.INCONCLUSIVE:
        if est.n < 2:
            return "inconclusive (one seed: no interval)"
        need = est.seeds_needed
        need_text = ("an effect of this size would need more than 10,000 seeds"
                     if not math.isfinite(need) else
                     f"this size would need about {int(need)} seeds")
        return (f"inconclusive: only effects beyond ±{est.detectable:.{d}f}{unit} were "
                f"detectable (80% power); {need_text}")
    if v == verdicts.OPPOSITE:
        return "**opposite to the paper**"
    return v


def _cannot_show(claim: Claim, result: verdicts.ClaimResult) -> str:
    parts = []
    if result.reason:
        parts.append(result.reason)
    if claim.qualitative:
        parts.append(claim.qualitative)
    parts.append(f"needs: {claim.regime}")
    return "; ".join(parts)


def ledger_markdown(results: Mapping[str, list[verdicts.ClaimResult]]) -> str:
    """One table: a row per effect, its claim's verdict on every set."""
    sets = list(results)
    header = ["Claim", "Effect (paper's sign)"]
    for s in sets:
        header += [f"{s}: effect [95% CI]", f"{s}: verdict"]
    header.append("What this scale cannot show")
    rows = []
    for i, claim in enumerate(CLAIMS):
        per_set = [results[s][i] for s in sets]
        for j, effect in enumerate(claim.effects):
            cells = [f"**{claim.id}** {claim.title}" if j == 0 else "",
                     f"{effect.name}, {short_metric_label(effect.metric)} "
                     f"({'+' if effect.direction > 0 else '−'})"
                     + ("" if effect.decides else " (reported, not deciding)")]
            for result in per_set:
                e = result.effects[j]
                cells += [effect_text(e), verdict_text(e)]
            cells.append(_cannot_show(claim, per_set[0]) if j == 0 else "")
            rows.append(cells)
    return markdown_table(header, rows)


def _verdict_text(result: verdicts.ClaimResult) -> str:
    """A claim's verdict, with which deciding effect says what when they differ."""
    by_verdict: dict[str, list[str]] = {}
    for e in result.effects:
        if e.effect.decides:
            by_verdict.setdefault(e.verdict, []).append(e.effect.name)
    text = f"**{result.verdict}**"
    if len(by_verdict) > 1:
        text += " (" + "; ".join(f"{v}: {', '.join(names)}"
                                 for v, names in by_verdict.items()) + ")"
    return text


def summary_lines(results: Mapping[str, list[verdicts.ClaimResult]]) -> list[str]:
    """One bullet per claim: its verdict on each set; first, every claim that goes against the
    paper somewhere and a failed sanity gate, with what this scale lacks."""
    lead, lines = [], []
    for i, claim in enumerate(CLAIMS):
        per_set = {s: results[s][i] for s in results}
        parts = [f"{s}: {_verdict_text(r)}" for s, r in per_set.items()]
        kind = "sanity gate" if claim.gate else "claim"
        lines.append(f"{claim.id} ({kind}) {claim.title}: " + "; ".join(parts) + ".")
        against = [s for s, r in per_set.items() if r.verdict == verdicts.OPPOSITE]
        gate_fails = claim.gate and any(r.verdict != verdicts.AGREES for r in per_set.values())
        if against or gate_fails:
            sets = against or [s for s, r in per_set.items() if r.verdict != verdicts.AGREES]
            shown = "; ".join(
                f"{s}: {effect_text(per_set[s].effects[0])}" for s in sets)
            what = ("goes against the paper" if against else "does not hold")
            lead.append(f"**{claim.id} {what} on {', '.join(sets)}** ({claim.effects[0].name}: "
                        f"{shown}). What this scale lacks: {claim.regime}.")
    return lead + lines


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
