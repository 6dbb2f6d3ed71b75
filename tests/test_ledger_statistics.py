"""The ledger's statistics by simulation: synthetic paired differences with a known mean and
spread, many repetitions, a fixed random seed.

The intervals must cover the true mean as often as they say; over the whole sequential
procedure (first seeds, plan, added seeds, final verdicts) a true zero effect must come out
"agrees"/"opposite" in at most 5% of the families; "equivalent" must be reached for a true zero
effect with a small spread and never for a true effect of twice delta.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import claims as verdicts
from analysis.sequential import carry_out
from esrgan.paper.claims import Claim, Effect, Side

DELTA = 0.1
REPS = 1500
MC = 2 * math.sqrt(0.05 * 0.95 / REPS)  # two Monte-Carlo standard errors at 5%


def synthetic_claims(m: int) -> list[Claim]:
    """m claims of one deciding effect each (value(a) - value(b) predicted > 0)."""
    return [Claim(f"S{i}", f"synthetic {i}", "", "", (), "psnr_model", "psnr", "", "default",
                  (Effect(f"effect {i}", Side("ESRGAN", "psnr_model"),
                          Side("ESRGAN +BN", "psnr_model"), "psnr", +1, delta=DELTA),))
            for i in range(m)]


@pytest.mark.parametrize("n", [3, 5])
def test_intervals_cover_the_true_mean(n: int) -> None:
    rng = np.random.default_rng(1)
    for confidence in (verdicts.CONFIDENCE, verdicts.family_confidence(6, 2)):
        hits = 0
        for _ in range(4000):
            est = verdicts.estimate(rng.normal(0.3, 0.5, n), confidence)
            hits += est.low <= 0.3 <= est.high
        assert hits / 4000 >= 0.93, (n, confidence, hits / 4000)


@pytest.mark.parametrize("sd", [0.05, 0.15, 0.4])
def test_sequential_procedure_keeps_the_false_verdict_rate(sd: float) -> None:
    """Six true zero effects: the chance that any final verdict is agrees/opposite."""
    rng = np.random.default_rng(2)
    claims = synthetic_claims(6)
    false_families, extended = 0, 0
    for _ in range(REPS):
        draws = [[rng.normal(0.0, sd, 8)] for _ in claims]
        results, extensions = carry_out(claims, draws, first_seeds=3, cap=8)
        extended += bool(extensions)
        false_families += any(r.verdict in (verdicts.AGREES, verdicts.OPPOSITE)
                              for r in results)
    assert false_families / REPS <= 0.05 + MC, false_families / REPS
    if sd == 0.05:  # the procedure does add seeds in this regime: the test tests it
        assert extended / REPS > 0.5


def test_equivalence_reached_for_no_effect_and_never_for_twice_delta() -> None:
    rng = np.random.default_rng(3)
    claims = synthetic_claims(4)
    reached, wrong = 0, 0
    for _ in range(500):
        zero = [[rng.normal(0.0, 0.02, 8)] for _ in claims]
        results, _ = carry_out(claims, zero, first_seeds=3, cap=8)
        reached += sum(r.verdict == verdicts.EQUIVALENT for r in results)
        far = [[rng.normal(2 * DELTA * s, 0.1, 8)] for s in (1, -1, 1, -1)]
        results, _ = carry_out(claims, far, first_seeds=3, cap=8)
        wrong += sum(r.verdict == verdicts.EQUIVALENT for r in results)
    assert reached / (500 * len(claims)) >= 0.9
    assert wrong == 0


def test_verdicts_from_an_interval() -> None:
    def est(low: float, high: float) -> verdicts.Estimate:
        return verdicts.Estimate(3, (low + high) / 2, 0.1, low, high, 0.2, 5.0)

    assert verdicts.verdict(+1, est(0.02, 0.3), delta=DELTA) == verdicts.AGREES
    assert verdicts.verdict(+1, est(-0.3, -0.02), delta=DELTA) == verdicts.OPPOSITE
    assert verdicts.verdict(+1, est(-0.05, 0.08), delta=DELTA) == verdicts.EQUIVALENT
    assert verdicts.verdict(+1, est(0.01, 0.08), delta=DELTA) == verdicts.EQUIVALENT
    assert verdicts.verdict(+1, est(-0.05, 0.2), delta=DELTA) == verdicts.INCONCLUSIVE
    assert verdicts.verdict(+1, est(-0.05, 0.08), delta=0.0) == verdicts.INCONCLUSIVE


def test_family_level_and_seeds_needed() -> None:
    assert verdicts.family_confidence(10, 2) == pytest.approx(1 - 0.05 / 20)
    # a larger family or a second look needs more seeds for the same effect
    one = verdicts.seeds_needed(0.3, 0.2, verdicts.family_confidence(1, 1))
    many = verdicts.seeds_needed(0.3, 0.2, verdicts.family_confidence(10, 2))
    assert 2 <= one < many < math.inf
    # equivalence: a zero effect within a wide delta needs few seeds, none within no delta
    assert verdicts.seeds_needed(0.0, 0.05, delta=0.5) <= 4
    assert verdicts.seeds_needed(0.0, 0.05) == math.inf
