"""The sequential seed budget: which claims get seeds beyond the first ones, and its record.

``make ablation`` runs the first seeds of every cell (look 1), then, while its time budget
lasts, adds seeds to the cells of the claims still undecided on the validation photos whose
power analysis says a decision is within the seed cap (look 2). The plan is made once, at
look 1, from the validation set's estimates; the rounds that follow only carry it out (one
seed per round for every cell of the planned claims, cheapest claims first, while the budget
lasts), and the verdicts are printed after each round. The family-wise error rate is split
between the two looks (Bonferroni: ALPHA / 2 each, ``analysis.claims.family_confidence`` with
``looks=2``), which holds whatever rule chose the added seeds; the test photos are decided once,
at the end, at the same level.

The record (``experiments.store.plan``, in the file store) is what the report reads: the looks,
the first seeds, the cap, the budget and the time spent, and each extension with its reason. A
rerun finds it and carries out the same plan.

    python -m analysis.sequential plan --store runs --preset cpu --first-seeds 3 --cap 8
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd

from analysis import claims as verdicts
from esrgan.paper.claims import CLAIMS, Claim
from experiments.store.plan import LOOKS, Extension

PLAN_SET = "val"  # the set the plan looks at (the test photos decide once, at the end)


def claim_targets(results: Sequence[verdicts.ClaimResult], first_seeds: int | Mapping[str, int],
                  cap: int) -> tuple[list[Extension], list[str]]:
    """The claims to extend and their seed targets, from look 1's results on one set.

    A claim is extended when its verdict is inconclusive and every one of its undecided
    deciding effects reaches a decision (a sign or equivalence, 80% power at its observed mean
    and sd) at look 2's level within ``cap`` seeds; the target is the largest of those.
    ``first_seeds``: the seeds every claim had at look 1, or per claim id.
    Returns the extensions and, for the undecided claims left alone, why.
    """
    extensions, left = [], []
    for result in results:
        if result.verdict != verdicts.INCONCLUSIVE:
            continue
        first = first_seeds if isinstance(first_seeds, int) else first_seeds[result.claim.id]
        level = verdicts.family_confidence(result.family, LOOKS)
        needs = []
        for e in result.effects:
            if not e.effect.decides or e.verdict != verdicts.INCONCLUSIVE:
                continue
            est = e.estimate
            need = verdicts.seeds_needed(est.mean, est.sd, level, delta=e.effect.delta) \
                if est.n >= 2 else math.inf
            needs.append((need, e.effect.name))
        if not needs:
            continue
        target, name = max(needs, key=lambda t: (t[0] if math.isfinite(t[0]) else math.inf))
        claim = result.claim.id
        if not math.isfinite(target) or target > cap:
            shown = "more than 10,000" if not math.isfinite(target) else f"about {int(target)}"
            left.append(f"{claim}: a decision on {name} would need {shown} seeds "
                        f"(cap {cap})")
        elif target > first:
            extensions.append(Extension(
                claim, int(target),
                f"inconclusive after {first} seeds; {name} reaches a decision with 80% "
                f"power at about {int(target)} seeds (observed mean and spread, look-2 level)"))
    return extensions, left


def carry_out(claims: Sequence[Claim], differences: Sequence[Sequence[np.ndarray]],
              first_seeds: int, cap: int, set_name: str = PLAN_SET
              ) -> tuple[list[verdicts.ClaimResult], list[Extension]]:
    """The whole procedure on given per-seed differences (``differences[i][j]``: claim i's
    effect j, at least ``cap`` seeds): look 1 on the first seeds, the plan, the added seeds up
    to each target, and the final verdicts. ``make ablation`` does the same with runs."""
    def looked(n_of: dict[str, int]) -> list[verdicts.ClaimResult]:
        measured = [verdicts.Measured(c, [(e, pd.Series(np.asarray(d[:n_of[c.id]], float)))
                                          for e, d in zip(c.effects, diffs, strict=True)])
                    for c, diffs in zip(claims, differences, strict=True)]
        return verdicts.judge(measured, set_name, LOOKS)

    n_of = {c.id: first_seeds for c in claims}
    extensions, _ = claim_targets(looked(n_of), first_seeds, cap)
    n_of.update({e.claim: e.target for e in extensions})
    return looked(n_of), extensions


def main(argv: Sequence[str] | None = None) -> int:
    """``plan``: look 1 on the store's validation runs, the extensions as JSON on stdout;
    ``status``: the current validation verdicts of some claims, a line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["plan", "status"])
    parser.add_argument("--store", required=True, help="the file store of the runs")
    parser.add_argument("--first-seeds", type=int, default=0)
    parser.add_argument("--cheap-seeds", type=int, default=0,
                        help="first seeds of the claims that read only stage-1 models "
                             "(default: --first-seeds)")
    parser.add_argument("--cap", type=int, default=0)
    parser.add_argument("--claims", nargs="*", default=[], help="status: these claims")
    parser.add_argument("--preset", required=True, help="the preset of the runs to read")
    args = parser.parse_args(argv)

    from analysis import ledger, load

    runs = load.load_runs(args.store, preset=args.preset)
    interp = load.load_interpolation(args.store, preset=args.preset)
    if runs.empty:
        print(json.dumps({"extensions": [], "left": [], "first_by_claim": {}}))
        return 0
    results = ledger.decide_all(runs, interp, [PLAN_SET], looks=LOOKS)[PLAN_SET]
    if args.action == "status":
        for result in results:
            if result.claim.id in args.claims:
                shown = "; ".join(f"{e.effect.name}: {ledger.effect_text(e)}, {e.verdict}"
                                  for e in result.effects if e.effect.decides)
                print(f"{result.claim.id} on {PLAN_SET} now: {result.verdict} ({shown})")
        return 0
    cheap = max(args.cheap_seeds, args.first_seeds)
    first = {c.id: args.first_seeds if c.reads_gan_stage else cheap for c in CLAIMS}
    extensions, left = claim_targets(results, first, args.cap)
    print(json.dumps({"extensions": [asdict(e) for e in extensions], "left": left,
                      "first_by_claim": {k: v for k, v in first.items()
                                         if v != args.first_seeds}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
