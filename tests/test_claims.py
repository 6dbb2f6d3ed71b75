"""The claims ledger: verdicts on synthetic effects, the premise metrics, the deep design."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import claims as verdicts
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.losses.perceptual import active_fraction
from esrgan.metrics import METRICS, brightness_error, brightness_shift
from esrgan.paper.claims import BY_ID, CLAIMS, DEEP_STUDY, DEEP_VARIANTS
from esrgan.paper.switches import NAMES
from experiments import build, matrix, presets


def effects(mean: float, sd: float, n: int, seed: int = 0) -> np.ndarray:
    """n paired differences with exactly this mean and sample sd."""
    if n == 1:
        return np.array([mean])
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x = (x - x.mean()) / x.std(ddof=1)
    return mean + sd * x


@pytest.mark.parametrize(("mean", "sd", "n", "direction", "expected"), [
    (1.0, 0.2, 5, +1, verdicts.AGREES),
    (-1.0, 0.2, 5, +1, verdicts.OPPOSITE),
    (-0.5, 0.05, 4, -1, verdicts.AGREES),  # the paper predicts a decrease
    (0.5, 0.05, 4, -1, verdicts.OPPOSITE),
    (0.05, 0.5, 5, +1, verdicts.INCONCLUSIVE),
    (1.0, 0.2, 1, +1, verdicts.INCONCLUSIVE),  # one seed: no interval, never "agrees"
])
def test_each_verdict_is_reached(mean: float, sd: float, n: int, direction: int,
                                 expected: str) -> None:
    est = verdicts.estimate(effects(mean, sd, n))
    assert est.n == n and est.mean == pytest.approx(mean)
    assert verdicts.verdict(direction, est) == expected


def test_premise_and_scale_override_the_numbers() -> None:
    strong = verdicts.estimate(effects(1.0, 0.1, 5))
    weak = verdicts.estimate(effects(0.0, 1.0, 5))
    for est in (strong, weak):  # "premise not met" never becomes inconclusive (or agrees)
        assert verdicts.verdict(+1, est, premise_met=False) == verdicts.PREMISE
        assert verdicts.verdict(+1, est, testable=False) == verdicts.UNTESTABLE
    assert verdicts.combine([verdicts.AGREES, verdicts.PREMISE]) == verdicts.PREMISE
    assert verdicts.combine([verdicts.AGREES, verdicts.OPPOSITE]) == verdicts.OPPOSITE
    assert verdicts.combine([verdicts.AGREES, verdicts.INCONCLUSIVE]) == verdicts.INCONCLUSIVE
    assert verdicts.combine([verdicts.AGREES] * 3) == verdicts.AGREES


def test_inconclusive_carries_the_detectable_effect() -> None:
    est = verdicts.estimate(effects(0.05, 0.5, 5))
    # (t_0.975,4 + t_0.8,4) * sd / sqrt(n) = (2.776 + 0.941) * 0.5 / sqrt(5)
    assert est.detectable == pytest.approx((2.7764 + 0.9410) * 0.5 / math.sqrt(5), rel=1e-3)
    assert est.detectable > abs(est.mean)  # what it could not see
    need = est.seeds_needed
    assert need > 5 and verdicts.detectable(0.5, int(need)) <= 0.05 < verdicts.detectable(
        0.5, int(need) - 1)
    # a design with 4x the seeds halves the detectable effect (about: t shrinks too)
    assert verdicts.detectable(0.5, 20) < est.detectable / 2


def test_the_ledger_names_switches_and_regimes() -> None:
    assert [c.id for c in CLAIMS] == [f"C{i}" for i in range(1, 9)]
    assert BY_ID["C8"].gate and not any(c.gate for c in CLAIMS[:-1])
    for claim in CLAIMS:
        assert set(claim.switches) <= set(NAMES)
        assert claim.regime and claim.design in matrix.DESIGNS
        assert any(e.decides for e in claim.effects)
        for effect in claim.effects:
            assert effect.metric in METRICS and effect.direction in (+1, -1)
    assert BY_ID["C5"].premise and BY_ID["C1"].needs.min_depth >= 32


def _runs(rows: list[tuple[str, str, str, int, float]], study: str = "ablation"
          ) -> pd.DataFrame:
    return pd.DataFrame([{"variant": v, "model": m, "metric": k, "set": "val", "seed": s,
                          "stage1_seed": s, "value": x, "study": study}
                         for v, m, k, s, x in rows])


def test_decide_c5_premise_and_c1_scale() -> None:
    rows = []
    for seed in range(4):
        rows += [("ESRGAN", "gan_model", "niqe", seed, 6.0 - 0.1 * seed),
                 ("ESRGAN after-act VGG", "gan_model", "niqe", seed, 7.0),
                 ("ESRGAN", "gan_model", "brightness_error", seed, 0.5),
                 ("ESRGAN after-act VGG", "gan_model", "brightness_error", seed,
                  0.9 + 0.1 * seed)]
    runs = _runs(rows)
    sparse = verdicts.decide(runs, pd.DataFrame(), "val", {"active_fraction": 0.11},
                             [BY_ID["C5"]])[0]
    dense = verdicts.decide(runs, pd.DataFrame(), "val", {"active_fraction": 0.47,
                                                          "vgg_weights": "random"},
                            [BY_ID["C5"]])[0]
    assert sparse.verdict == verdicts.AGREES
    assert dense.verdict == verdicts.PREMISE and "47.0% of" in dense.reason
    assert dense.effects[1].verdict == verdicts.AGREES  # brightness: measurable anyway
    deep = _runs([(label, "psnr_model", "psnr", s, 28.0 + s) for label in DEEP_VARIANTS
                  for s in range(3)], study=DEEP_STUDY)
    shallow = verdicts.decide(deep, pd.DataFrame(), "val", {"deep_depth": 8}, [BY_ID["C1"]])[0]
    assert shallow.verdict == verdicts.UNTESTABLE and "needs >= 32" in shallow.reason
    missing = verdicts.decide(_runs([]).reindex(columns=deep.columns), pd.DataFrame(), "val",
                              {}, [BY_ID["C2"]])[0]
    assert missing.verdict == verdicts.UNTESTABLE


def test_interpolation_effect_at_matched_psnr() -> None:
    rows = []
    for seed in range(3):
        for alpha in np.linspace(0, 1, 6):
            psnr = 30 - 2 * alpha
            rows.append({"seed": seed, "variant": "ESRGAN", "method": "network",
                         "alpha": alpha, "metric": "psnr", "value": psnr})
            rows.append({"seed": seed, "variant": "ESRGAN", "method": "network",
                         "alpha": alpha, "metric": "niqe", "value": 8 - 2 * alpha
                         - 0.3 * math.sin(math.pi * alpha)})
            rows.append({"seed": seed, "variant": "ESRGAN", "method": "image", "alpha": alpha,
                         "metric": "psnr", "value": psnr})
            rows.append({"seed": seed, "variant": "ESRGAN", "method": "image", "alpha": alpha,
                         "metric": "niqe", "value": 8 - 2 * alpha})
    diffs = verdicts.interpolation_differences(pd.DataFrame(rows))
    assert len(diffs) == 3 and (diffs < -0.2).all()  # network lies below image interpolation


def test_brightness_and_sparsity_on_known_inputs() -> None:
    hr = np.full((24, 24, 3), 0.5)
    brighter = hr + 10 / 255  # +10 RGB levels: +10 * 219 / 255 levels of Y
    assert brightness_shift(brighter, hr) == pytest.approx(10 * 219 / 255)
    assert brightness_shift(hr, brighter) == pytest.approx(-10 * 219 / 255)
    assert brightness_error(hr, brighter, crop_border=4) == pytest.approx(10 * 219 / 255)
    extractor = VGGFeatureExtractor("conv1_1", weights="random", use_input_norm=False)
    conv = extractor.features[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1.0] * 16 + [-1.0] * 48))  # 16 of 64 channels active
    assert active_fraction(extractor, torch.rand(3, 20, 20)) == pytest.approx(0.25)


def test_deep_design_builds_the_stated_depth_and_trains(tmp_path) -> None:
    cells = matrix.make_cells("deep", "cpu", range(3), {})
    assert len(cells) == 4 * 3
    cfg = cells[0].config
    assert cfg["study"] == DEEP_STUDY and cfg["steps2"] == 0 and not cfg["rrdb"]
    arch = build.generator_arch(cfg)
    assert arch["trunk"] == "resblock" and arch["nb"] == presets.DEEP["cpu"]["nb_resblock"] == 64
    assert not arch["bn"]
    generator = build.make_generator(cfg, seed=0)
    assert len(generator.body) == 64
    assert {(c.config["small_init"], c.config["beta"]) for c in cells} == {
        (v["small_init"], v["beta"]) for v in DEEP_VARIANTS.values()}
    # the tiny preset's deep cell trains (stage 1 only) through the real experiment
    import os
    import subprocess

    tiny = matrix.make_cells("deep", "tiny", [0], {"steps1": 8, "val_every1": 4})[0]
    env = {**os.environ, "ESRGAN_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run(tiny.argv(), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "runs").glob("[0-9]*")
    import json

    result = json.loads((run / "run.json").read_text())["result"]
    assert "gan_model" not in result and result["psnr_model"]["val"]["psnr"] > 0
    info = json.loads((run / "info.json").read_text())["esrgan"]
    assert info["study"] == DEEP_STUDY and info["generator_arch"]["nb"] == 8


def test_c5_cells_run_only_with_a_trained_vgg19() -> None:
    """With a random VGG19, C5's premise is not met whatever its runs show: its cell is left
    out (and said why); with the ImageNet one (the default key) it runs."""
    labels = {c.label() for c in matrix.make_cells("claims", "cpu", [0], {})}
    assert "ESRGAN after-act VGG seed 0" in labels
    random = matrix.make_cells("claims", "cpu", [0], {"vgg_weights": "random"})
    assert "ESRGAN after-act VGG seed 0" not in {c.label() for c in random}
    assert len(random) == len(labels) - 1
    (spec,) = [s for s in matrix.design_claims("cpu") if s.trained_vgg_only]
    why = matrix.left_out(spec, "cpu", {"vgg_weights": "random"})
    assert "claim C5" in why and "premise not met" in why
    assert matrix.left_out(spec, "cpu", {}) == ""


def test_gan_claims_need_a_gan_stage_without_a_grid() -> None:
    """C4-C7 are read only where ESRGAN's GAN model paints no periodic grid (its artifact
    index on val at most ARTIFACT_LIMIT); C2 does not depend on it."""
    from analysis.claims import _testable
    from esrgan.paper.claims import ARTIFACT_LIMIT, BY_ID

    grid = {"gan_artifacts": 3 * ARTIFACT_LIMIT, "psnr_artifacts": 0.002}
    clean = {"gan_artifacts": ARTIFACT_LIMIT / 2, "psnr_artifacts": 0.002}
    for claim in ("C4", "C5", "C6", "C7"):
        ok, why = _testable(BY_ID[claim], grid)
        assert not ok and "periodic grid" in why and f"{3 * ARTIFACT_LIMIT:.4f}" in why
        assert _testable(BY_ID[claim], clean) == (True, "")
    assert _testable(BY_ID["C2"], grid) == (True, "")
    assert _testable(BY_ID["C7"], {}) == (True, "")  # not measured (older runs): no judgement
