"""The config-key registry (experiments/keys.py) and what it protects: a store made before a
key existed keeps its cell keys, its stage-1 models and its labels; two settings of one
variant are never pooled as replicates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_analysis import make_run, write_file_run

from analysis import claims, load, report, settings
from esrgan.paper.claims import BY_ID, CLAIMS, Regime, Side
from esrgan.paper.switches import (
    ESRGAN,
    SWITCH_TABLE,
    compact_label,
    known_labels,
    variant_switches,
)
from experiments import identity, keys, matrix, presets
from experiments.store import RunRecord

# One cell and one stage-1-only cell of the tiny default ablation as a file store made at
# fe2fa9d recorded them (config.json, and the keys of info.json): a store made before the
# registry, the seventh switch and any key added since.
STORED = json.loads((Path(__file__).parent / "data" / "stored_fe2fa9d.json").read_text())


def _resolved_now(stored: dict[str, Any]) -> dict[str, Any]:
    """The config today's code gives the command that made ``stored``."""
    config = {k: v for k, v in stored.items() if k != "__doc__"}
    return presets.resolve(config["preset"], config)


def test_the_registry_is_the_configs_keys_with_their_kinds() -> None:
    for name in presets.NAMED:
        cfg = presets.resolve(name)
        assert set(cfg) == set(keys.BY_NAME), name
        assert keys.problems(cfg) == [], name
    assert set(identity.NON_SEMANTIC_KEYS) | set(identity.STAGE1_KEYS) <= set(keys.BY_NAME)
    assert not set(identity.NON_SEMANTIC_KEYS) & set(identity.STAGE1_KEYS)
    for switch in SWITCH_TABLE:  # a generator switch decides the stage-1 model
        assert (switch.name in identity.STAGE1_KEYS) == (switch.stage == 1)


@pytest.mark.parametrize("run", sorted(STORED))
def test_a_key_not_in_a_stored_run_has_the_value_it_computed_with(run: str) -> None:
    """The general rule replacing hand-kept per-key lists: every key today's config has and a
    stored run lacks is 'added' (has a since); otherwise that run would be re-keyed."""
    stored = STORED[run]["config"]
    missing = sorted(set(keys.BY_NAME) - set(stored))
    assert missing, "the stored run should predate at least one key"
    assert [k for k in missing if not keys.BY_NAME[k].added] == []


@pytest.mark.parametrize("run", sorted(STORED))
def test_a_store_made_before_new_keys_keeps_its_cell_and_stage1_keys(run: str) -> None:
    stored = STORED[run]
    now = _resolved_now(stored["config"])
    assert identity.cell_key(now) == stored["cell_key"]
    assert identity.stage1_key(now) == stored["stage1_key"]
    # and the stored config itself (as the matrix and the analysis read it)
    assert identity.cell_key(stored["config"]) == stored["cell_key"]
    assert identity.stage1_key(stored["config"]) == stored["stage1_key"]


def test_a_key_at_another_value_than_before_it_existed_is_another_cell() -> None:
    base = presets.resolve("tiny")
    for name, since in keys.ADDED_KEYS.items():
        other = {"d_spectral_norm": True, "vgg_pool": "avg", "patch2": 64, "accum": 2,
                 "percep_net": "gabor", "percep_blur": 1.5, "gabor_lowpass": 1.0}[name]
        assert other != since
        changed = presets.resolve("tiny", {name: other})
        assert identity.cell_key(changed) != identity.cell_key(base), name
        key = keys.BY_NAME[name]
        assert (identity.stage1_key(changed) != identity.stage1_key(base)) == (
            key.role == keys.STAGE1), name


@pytest.mark.parametrize("run", sorted(STORED))
def test_a_store_made_before_a_switch_existed_keeps_its_labels(run: str) -> None:
    stored = STORED[run]
    record = RunRecord(run_id="1", source="x", status="COMPLETED", config=stored["config"],
                       info={"esrgan": {}}, result=None, start_time=None)
    switches = load.switches_of(record)
    assert switches["d_spectral_norm"] is False
    assert load.variant_label(switches) == stored["variant"]


def test_the_matrix_finds_a_stored_cell_under_its_old_key() -> None:
    """The matrix names a cell by the key of the config it would run: the one stored."""
    stored = STORED["ESRGAN seed 0"]
    cells = matrix.make_cells("claims", "tiny", [0], {"vgg_weights": "random"})
    keys_now = {c.key for c in cells}
    assert stored["cell_key"] in keys_now


def test_two_settings_of_one_variant_are_refused_not_pooled(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    for run_id, weight in ((1, 1.0), (2, 0.5)):
        run = make_run(run_id, "ESRGAN", 0)
        run["config"]["percep_weight"] = weight
        run["info"]["esrgan"]["cell_key"] = f"k{run_id}"
        write_file_run(store, run)
    runs = load.load_runs(str(store))
    with pytest.raises(settings.MixedSettings, match=r"'ESRGAN'.*percep_weight 1\.0 / 0\.5"):
        settings.check(runs)
    with pytest.raises(report.ReportError) as info:
        report.build_report([str(store)], "mixed", tmp_path / "reports")
    message = str(info.value)
    assert "percep_weight 1.0 / 0.5" in message and "\n" not in message
    assert not (tmp_path / "reports" / "mixed" / "index.md").exists()
    # the ledger itself refuses as well (a reader calling it directly)
    c7 = [c for c in CLAIMS if c.id == "C7"]
    with pytest.raises(settings.MixedSettings, match="percep_weight"):
        claims.decide(runs, load.load_interpolation(str(store)), "val", claims=c7)


def test_a_stage1_cell_and_a_full_cell_share_their_psnr_model_setting(tmp_path: Path) -> None:
    """A PSNR-oriented model depends on the stage-1 keys only: a stage-1-only cell of a
    variant pools with its full cells there, and the GAN-stage keys do not split it."""
    store = tmp_path / "runs"
    full = make_run(1, "ESRGAN", 0)
    psnr_only = make_run(2, "ESRGAN", 1)
    psnr_only["config"]["steps2"] = 0
    psnr_only["result"].pop("gan_model")
    write_file_run(store, full)
    write_file_run(store, psnr_only)
    runs = load.load_runs(str(store))
    settings.check(runs)  # no refusal
    psnr = runs[(runs["model"] == "psnr_model") & (runs["metric"] == "psnr")]
    assert psnr["stage1_setting"].nunique() == 1 and psnr["setting"].nunique() == 2
    # but two stage-1 settings of one variant are refused
    other = make_run(3, "ESRGAN", 2)
    other["config"]["steps1"] = 1000
    write_file_run(store, other)
    with pytest.raises(settings.MixedSettings, match="steps1 2000 / 1000"):
        settings.check(load.load_runs(str(store)))


def test_stage1_cells_do_not_split_an_effect_of_a_gan_model_and_its_psnr_model(
        tmp_path: Path) -> None:
    """Full cells at seeds 0-1 and stage-1-only cells (``steps2=0``, the cheap first seeds) at
    seeds 2-3 of one variant: an effect of the GAN model against its PSNR model reads the
    seeds with both, never refusing the stage-1 cells as another setting, and still refuses
    a GAN-stage key that differs between the full cells."""
    store = tmp_path / "runs"
    for run_id, seed in ((1, 0), (2, 1)):
        write_file_run(store, make_run(run_id, "ESRGAN", seed))
    for run_id, seed in ((3, 2), (4, 3)):
        run = make_run(run_id, "ESRGAN", seed)
        run["config"]["steps2"] = 0
        run["result"].pop("gan_model")
        write_file_run(store, run)
    runs = load.load_runs(str(store))
    (effect,) = [e for c in CLAIMS for e in c.effects if e.name == "GAN - PSNR model NIQE"]
    diffs = claims.paired_differences(runs, effect, "val")
    assert list(diffs.index) == [0, 1]
    other = make_run(5, "ESRGAN", 4)
    other["config"]["steps2"] = 2 * other["config"]["steps2"]
    write_file_run(store, other)
    with pytest.raises(settings.MixedSettings, match="'ESRGAN' holds.*steps2"):
        claims.paired_differences(load.load_runs(str(store)), effect, "val")


def test_the_sides_of_an_effect_must_share_their_setting(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    esrgan = make_run(1, "ESRGAN", 0)
    esrgan["config"]["lr1"] = 5e-4
    write_file_run(store, esrgan)
    bn = make_run(2, "ESRGAN +BN", 0)
    bn["config"]["lr1"] = 1e-4
    write_file_run(store, bn)
    runs = load.load_runs(str(store))
    settings.check(runs)  # each variant alone is one setting
    with pytest.raises(settings.MixedSettings, match=r"two sides.*lr1 0\.0005 / 0\.0001"):
        claims.decide(runs, load.load_interpolation(str(store)), "val", claims=[BY_ID["C2"]])


def test_claims_name_known_variants_and_typed_regimes() -> None:
    with pytest.raises(ValueError, match=r"unknown variant 'ESRGAN\+BN'"):
        Side("ESRGAN+BN", "psnr_model")
    with pytest.raises(ValueError, match="unknown model"):
        Side("ESRGAN", "psnr")
    with pytest.raises(TypeError):
        Regime(max_gan_artefacts=0.005)  # type: ignore[call-arg]
    labels = set(known_labels())
    for claim in CLAIMS:
        assert isinstance(claim.needs, Regime)
        for effect in claim.effects:
            for side in (effect.a, effect.b):
                assert side.variant in labels or effect.study == "deep"


def test_the_claims_design_is_computed_from_the_claims() -> None:
    specs = matrix.design_claims("cpu")
    by_label = {load.variant_label(s.switches): s for s in specs}
    read = {side.variant for c in CLAIMS for e in c.effects if e.study != "deep"
            for side in (e.a, e.b)}
    assert set(by_label) == read
    assert by_label["ESRGAN"].fixed == {}  # its GAN model is read (C4-C7)
    assert by_label["ESRGAN +BN"].fixed == matrix.STAGE1_ONLY  # C2 reads its PSNR model only
    assert by_label["ESRGAN after-act VGG"].trained_vgg_only == "C5"
    for label, spec in by_label.items():
        assert spec.switches == variant_switches(label) == {**ESRGAN, **spec.switches}


def test_an_extension_switch_stays_off_on_the_papers_path_and_out_of_labels() -> None:
    (switch,) = [s for s in SWITCH_TABLE if s.origin == "extension"]
    assert [s.switches[switch.name] for s in matrix.design_paper("cpu")] == [switch.paper] * 5
    assert load.variant_label({**ESRGAN, switch.name: switch.baseline}) == switch.flipped_label
    assert "SN" not in compact_label({**ESRGAN, "bn": True, "ragan": False})
    assert len(matrix.design_factorial("cpu")) == 64
