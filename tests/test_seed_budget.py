"""The seeds where they decide: first seeds by cost, extensions that train only what their
claim reads, rounds estimated from measured wall times, and the report's wording."""

from __future__ import annotations

from analysis.report import seeds_markdown
from esrgan.paper.claims import BY_ID
from experiments import matrix
from experiments.store.plan import Extension, Plan

RANDOM = {"vgg_weights": "random"}


def _labels(cells: list[matrix.Cell]) -> list[str]:
    return sorted(c.label() for c in cells)


def test_claims_that_read_only_stage1_models_are_known() -> None:
    assert matrix.stage1_claims() == ["C1", "C2", "C3", "C8"]
    assert BY_ID["C6"].reads_gan_stage and BY_ID["C7"].reads_gan_stage


def test_an_extension_trains_only_what_its_claim_reads() -> None:
    cells = matrix.make_cells("default", "cpu", [5], RANDOM)
    c3 = matrix.claim_cells(cells, ["C3"])
    assert _labels(c3) == ["ESRGAN (PSNR model) seed 5", "ESRGAN w/o RRDB (PSNR model) seed 5"]
    assert all(int(c.config["steps2"]) == 0 for c in c3)
    # the stage-1-only ESRGAN cell shares its stage-1 model with the full cell of its seed
    full = next(c for c in cells if c.label() == "ESRGAN seed 5")
    esrgan_s1 = next(c for c in c3 if c.label().startswith("ESRGAN (PSNR"))
    assert matrix.identity.stage1_key(esrgan_s1.config) == \
        matrix.identity.stage1_key(full.config)
    assert esrgan_s1.key != full.key
    c7 = matrix.claim_cells(cells, ["C7"])
    assert [c.label() for c in c7 if c.kind == "cell"] == ["ESRGAN seed 5"]
    # GAN claims and a stage-1 claim together: one full ESRGAN cell serves both
    both = matrix.claim_cells(cells, ["C3", "C4"])
    assert _labels(both) == ["ESRGAN seed 5", "ESRGAN standard GAN seed 5",
                             "ESRGAN w/o RRDB (PSNR model) seed 5"]


def test_first_seeds_are_more_where_cells_are_cheap() -> None:
    cells = matrix.first_cells("default", "cpu", 3, 5, RANDOM)
    by_seed: dict[int, list[str]] = {}
    for cell in cells:
        by_seed.setdefault(cell.seed, []).append(cell.label())
    assert sorted(by_seed) == [0, 1, 2, 3, 4]
    assert len(by_seed[0]) == 8  # ESRGAN, w/o RRDB, +BN, standard GAN, 4 deep (C5 left out)
    assert sorted(by_seed[3]) == sorted([
        "ESRGAN (PSNR model) seed 3", "ESRGAN w/o RRDB (PSNR model) seed 3",
        "ESRGAN +BN (PSNR model) seed 3", "deep plain MSRA seed 3", "deep x0.1 init seed 3",
        "deep beta 0.2 seed 3", "deep x0.1 init + beta 0.2 seed 3"])
    # a design the claims do not name, or fixed seeds, have no cheap seeds
    assert {c.seed for c in matrix.first_cells("paper", "cpu", 3, 5, RANDOM)} == {0, 1, 2}


def test_a_round_is_estimated_from_measured_wall_times() -> None:
    cells = matrix.claim_cells(matrix.make_cells("default", "cpu", [5], RANDOM), ["C3"])
    measured = {matrix.cell_kind(c.config, c.switches, True): s
                for c, s in zip(sorted(cells, key=lambda c: c.label()), (100.0, 40.0),
                                strict=True)}
    # two jobs: the longer cell bounds the round
    assert matrix._round_seconds(cells, set(), float("nan"), 2, measured) == 100.0
    assert matrix._round_seconds(cells, set(), float("nan"), 1, measured) == 140.0
    # nothing measured and no rate: the round runs
    assert matrix._round_seconds(cells, set(), float("nan"), 1, {}) == 0.0


def test_the_report_says_what_each_extension_reached_and_why() -> None:
    plan = Plan(2, 3, 8, 45.0, [Extension("C3", 7, "why C3", reached=0),
                                Extension("C8", 6, "why C8", reached=6)],
                stopped="the budget (45 min) was spent before seed 5 of the extended claims",
                first_by_claim={"C1": 5, "C2": 5, "C3": 5, "C8": 5})
    md = "\n".join(seeds_markdown(plan, _no_runs()))
    assert "- C3: planned 7 seeds, ran 5 (seeds 0-4; the budget ended before seed 5). " \
        "Why: why C3." in md
    assert "- C8: planned 6 seeds, ran 6 (seeds 0-5: its target)." in md
    assert "ran 3 seeds first" in md and "(C1, C2, C3, C8) 5" in md
    assert "reached 0" not in md


def _no_runs():
    import pandas as pd

    return pd.DataFrame({"run_id": [], "seed": []})


def test_a_resumed_matrix_counts_the_first_seeds_minutes_from_the_store(tmp_path) -> None:
    """The first seeds ran in an earlier process (a stopped `make ablation` run again): their
    minutes come from the runs the store recorded, so the budget is not counted from zero
    again; cells without a completed run count nothing."""
    from test_analysis import make_run, write_file_run

    cells = matrix.first_cells("default", "cpu", 1, 1, RANDOM)[:3]
    store = tmp_path / "runs"
    for run_id, (cell, seconds) in enumerate(zip(cells[:2], (240.0, 120.0), strict=True), 1):
        run = make_run(run_id, "ESRGAN", 0)
        run["info"]["esrgan"]["cell_key"] = cell.key
        run["info"]["esrgan"]["kind"] = cell.kind
        run["result"]["seconds"] = {"total": seconds}
        write_file_run(store, run)
    assert matrix.stored_minutes(store, cells, jobs=2) == (240.0 + 120.0) / 2 / 60
    assert matrix.stored_minutes(store, cells[2:], jobs=2) == 0.0


def test_a_claim_that_started_at_more_seeds_is_extended_from_them() -> None:
    """C3 had 5 first seeds (cheap cells), the GAN claims 3: C3's rounds are seeds 5 and 6,
    not none (seeds 3 and 4, which no extension runs, end nothing)."""
    plan = Plan(2, 3, 8, 45.0, [Extension("C3", 7, "why")], first_by_claim={"C3": 5})
    assert [(seed, [e.claim for e in active]) for seed, active in matrix.plan_rounds(plan)] \
        == [(5, ["C3"]), (6, ["C3"])]
    both = Plan(2, 3, 8, 45.0, [Extension("C4", 4, "why"), Extension("C3", 6, "why")],
                first_by_claim={"C3": 5})
    assert [(seed, [e.claim for e in active]) for seed, active in matrix.plan_rounds(both)] \
        == [(3, ["C4"]), (5, ["C3"])]
