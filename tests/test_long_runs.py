"""Long runs: kept checkpoints and the best generator, re-scoring them (esrgan.retest), gradient
accumulation, fp16 with a gradient scaler, the deterministic switch, and what they do to a
cell's identity."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from esrgan import retest
from esrgan.archs.discriminator import VGGStyleDiscriminator
from esrgan.archs.rrdbnet import build_generator
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.benchmark import BenchmarkSet, run_benchmark
from esrgan.checkpoints import remove_checkpoints
from esrgan.losses import PerceptualLoss
from esrgan.train import GanWeights, StageSettings, train_gan, train_psnr
from esrgan.weights import load_checkpoint, load_generator, load_generator_state
from experiments import build, identity, presets


def batches(start: int, size: int = 4):
    """Batch k is a function of k alone (a resumed run sees the batches it would have)."""
    step = start
    while True:
        hr = torch.rand(size, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        yield {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}
        step += 1


def settings(**kw) -> StageSettings:
    base = dict(steps=10, lr=1e-3, batch_size=4, lr_decay_at=(), lr_gamma=0.5,
                adam_betas=(0.9, 0.999), ckpt_every=2, val_every=2, log_every=1,
                num_workers=0, precision="fp32", channels_last=False, compile="off",
                adam="foreach")
    return StageSettings(**{**base, **kw})


# validation values by step: the best PSNR (25) comes at step 4, the run ends at step 10
SCORES = {2: 20.0, 4: 25.0, 6: 23.0, 8: 24.0, 10: 22.0}


def validate(generator: torch.nn.Module, step: int) -> dict[str, float]:
    return {"psnr": SCORES[step], "niqe": 30.0 - SCORES[step]}


def weights_at_each_step(g: torch.nn.Module, record: dict[int, dict]):
    def log(name: str, value: float, step: int) -> None:
        if name == "stage1_lr":  # once per step, after the update
            record[step] = {k: v.detach().clone() for k, v in g.state_dict().items()}
    return log


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------
# retention


def test_keeps_the_last_n_and_the_best_and_resumes_bit_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = build_generator(nf=8, nb=1, gc=4)
    seen: dict[int, dict] = {}
    ckpt = tmp_path / "whole" / "checkpoint.pth"
    out = train_psnr(g, batches, settings(keep_last=2, best_metric="psnr"), checkpoint=ckpt,
                     validate=validate, log=weights_at_each_step(g, seen), progress=False)
    names = sorted(p.name for p in ckpt.parent.iterdir())
    assert names == ["best_psnr.pth", "checkpoint.pth", "checkpoint_10.pth", "checkpoint_8.pth"]
    assert out.best == {"metric": "psnr", "value": 25.0, "step": 4}
    best = load_checkpoint(ckpt.parent / "best_psnr.pth")
    assert (best["stage"], best["step"], best["metric"], best["value"]) == (1, 4, "psnr", 25.0)
    # the best file is a generator file the other commands read (upscale, benchmark)
    assert same(load_generator(ckpt.parent / "best_psnr.pth").state_dict(), seen[4])
    assert same(load_checkpoint(ckpt.parent / "checkpoint_8.pth")["generator"], seen[8])

    # killed after step 6: the resumed run keeps the same files and the same best (step 8's
    # 24 does not beat the 25 of step 4, which it knows from the checkpoint)
    torch.manual_seed(0)
    split = build_generator(nf=8, nb=1, gc=4)
    ckpt2 = tmp_path / "split" / "checkpoint.pth"
    train_psnr(split, batches, settings(steps=6, keep_last=2, best_metric="psnr"),
               checkpoint=ckpt2, validate=validate, progress=False)
    assert sorted(p.name for p in ckpt2.parent.iterdir()) == [
        "best_psnr.pth", "checkpoint.pth", "checkpoint_4.pth", "checkpoint_6.pth"]
    resumed = train_psnr(split, batches, settings(keep_last=2, best_metric="psnr"),
                         checkpoint=ckpt2, validate=validate, progress=False)
    assert resumed.resumed_from == 6 and resumed.best == out.best
    assert sorted(p.name for p in ckpt2.parent.iterdir()) == names
    assert same(split.state_dict(), g.state_dict())
    assert same(load_generator_state(ckpt2.parent / "best_psnr.pth"), seen[4])

    # a rollback: a kept checkpoint copied over the resume point; the later kept one goes,
    # is made again, and the run ends where it ended (the best file stays)
    (ckpt2.parent / "checkpoint_10.pth").write_bytes(b"from the abandoned steps")
    ckpt2.write_bytes((ckpt2.parent / "checkpoint_8.pth").read_bytes())
    again = train_psnr(split, batches, settings(keep_last=2, best_metric="psnr"),
                       checkpoint=ckpt2, validate=validate, progress=False)
    assert again.resumed_from == 8 and again.best == out.best
    assert sorted(p.name for p in ckpt2.parent.iterdir()) == names
    assert same(load_checkpoint(ckpt2.parent / "checkpoint_10.pth")["generator"],
                g.state_dict())


def test_keep_all_and_the_lower_is_better_metric(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "checkpoint.pth"
    out = train_psnr(build_generator(nf=8, nb=1, gc=4), batches,
                     settings(keep_last=-1, best_metric="niqe"), checkpoint=ckpt,
                     validate=validate, progress=False)
    assert sorted(int(m[1]) for p in tmp_path.iterdir()
                  if (m := re.match(r"checkpoint_(\d+)\.pth$", p.name))) == [2, 4, 6, 8, 10]
    assert out.best == {"metric": "niqe", "value": 5.0, "step": 4}  # 30 - 25: lowest
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    remove_checkpoints(ckpt)  # fresh=True: nothing of the run is left to resume or re-score
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    # the default: the resume point only, as before (no best without a metric)
    other = tmp_path / "default"
    train_psnr(build_generator(nf=8, nb=1, gc=4), batches, settings(), validate=validate,
               checkpoint=other / "checkpoint.pth", progress=False)
    assert [p.name for p in other.iterdir()] == ["checkpoint.pth"]
    with pytest.raises(ValueError, match="best metric must be one of"):
        train_psnr(build_generator(nf=8, nb=1, gc=4), batches,
                   settings(best_metric="brightness_shift"), progress=False)


# ------------------------------------------------------------------------------------------
# retest


@pytest.fixture()
def hr_folder(tmp_path: Path) -> Path:
    """Two small real PNG files (smooth gradients with some texture)."""
    folder = tmp_path / "Tiny" / "HR"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        yy, xx = np.mgrid[0:48, 0:48] / 48.0
        img = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * 0.8 + 0.2 * rng.random((48, 48, 3))
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_retest_scores_every_kept_checkpoint(tmp_path: Path, hr_folder: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    run = tmp_path / "stage1"
    train_psnr(build_generator(nf=8, nb=1, gc=4), batches,
               settings(keep_last=2, best_metric="psnr", ema_decay=0.5),
               checkpoint=run / "checkpoint.pth", validate=validate, progress=False)
    out = tmp_path / "retest"
    rc = retest.main([str(run), "--set", f"Tiny={hr_folder}", "--metrics", "none",
                      "--out", str(out), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    table = pd.read_csv(out / "retest.csv")
    # steps 4 (best), 8 (kept), 10 (kept and the resume point): each scored once
    assert list(table["step"]) == [4, 8, 10]
    assert list(table["kept_as"]) == ["best_psnr", "periodic", "latest+periodic"]
    assert (table["set"] == "Tiny").all() and (table["images"] == 2).all()
    assert (out / "retest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same numbers as esrgan.benchmark gives for the best file (the moving average)
    model = load_generator(run / "best_psnr.pth").eval()
    direct = run_benchmark([BenchmarkSet("Tiny", hr_folder)], model, metrics=())
    assert table.loc[0, "psnr"] == pytest.approx(direct.per_set.loc["Tiny", "psnr"], abs=1e-6)
    assert table["psnr"].nunique() == 3  # three different generators
    # a folder with nothing kept: one line
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert retest.main([str(tmp_path / "empty"), "--set", f"Tiny={hr_folder}",
                        "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no checkpoint.pth" in err[0]


# ------------------------------------------------------------------------------------------
# gradient accumulation


def _gradients_and_weights(tmp: Path, accum: int, size: int = 4,
                           steps: int = 3) -> tuple[list[torch.Tensor], dict, list[float]]:
    """G's first-step gradients (Adam's first moment / (1 - beta1), from the checkpoint of a
    one-step run), its weights after ``steps`` steps and the logged L1 losses."""
    out = []
    for n in (1, steps):
        torch.manual_seed(0)
        g = build_generator(nf=8, nb=1, gc=4)
        losses: list[float] = []
        ckpt = tmp / f"accum{accum}-size{size}-steps{n}.pth"
        train_psnr(g, lambda s: batches(s, size=size),
                   settings(steps=n, ckpt_every=0, val_every=0, accum=accum, batch_size=size),
                   checkpoint=ckpt, progress=False,
                   log=lambda name, v, s, kept=losses: kept.append(v)
                   if name == "stage1_l_pix" else None)
        state = load_checkpoint(ckpt)["opt_g"]["state"]
        out.append(([state[i]["exp_avg"] / 0.1 for i in sorted(state)], g.state_dict(), losses))
    return out[0][0], out[1][1], out[1][2]


def test_accumulation_is_the_big_batch_update(tmp_path: Path) -> None:
    grad, weights, losses = _gradients_and_weights(tmp_path, accum=1)
    assert max(g.abs().max().item() for g in grad) > 0.1
    for accum in (2, 4):
        grad_k, weights_k, losses_k = _gradients_and_weights(tmp_path, accum)
        # the same gradient up to float summation order (largest entry 0.33)
        assert max((a - b).abs().max().item() for a, b in zip(grad, grad_k, strict=True)) < 2e-5
        assert losses_k == pytest.approx(losses, abs=1e-6)
        # Adam divides by the gradient's own size: rounding of a near-zero entry moves that
        # weight by a fraction of lr (1e-3) at most
        assert max((weights[k] - weights_k[k]).abs().max().item() for k in weights) < 1e-4
    # not trivially equal: a quarter of the batch alone gives another gradient and update
    grad_1, weights_1, _ = _gradients_and_weights(tmp_path, accum=1, size=1)
    assert max((a - b).abs().max().item() for a, b in zip(grad, grad_1, strict=True)) > 1e-3
    assert max((weights[k] - weights_1[k]).abs().max().item() for k in weights) > 1e-3


def test_accumulation_with_batchnorm_is_refused_in_stage1_and_stated_in_stage2() -> None:
    g = build_generator(nf=8, nb=1, gc=4, bn=True)
    with pytest.raises(ValueError, match=r"^stage 1: accum=2 with BatchNorm in the generator "
                                         r"\(bn=True\) would normalise over micro-batches"):
        train_psnr(g, batches, settings(steps=1, accum=2), progress=False)
    assert presets.validate(presets.resolve("tiny", {"bn": True, "accum": 2})) == [
        "accum=2 with bn=True: G's BatchNorm would normalise over micro-batches, not the "
        "batch (another update); use accum=1"]
    assert presets.validate(presets.resolve("tiny", {"accum": 3})) == [
        "batch 4 must split into accum=3 equal micro-batches"]
    # stage 2 (D has BatchNorm, RaGAN takes batch means) runs, and says how it differs
    torch.manual_seed(0)
    g = build_generator(nf=8, nb=1, gc=4)
    d = VGGStyleDiscriminator(nf=8, patch_size=32)
    percep = PerceptualLoss(VGGFeatureExtractor("conv2_2", weights="random"), normalize=True)
    logged: list[float] = []
    out = train_gan(g, d, percep, batches, settings(steps=2, ckpt_every=0, val_every=0,
                                                    accum=2),
                    ragan=True, weights=GanWeights(1.0, 5e-3, 1e-2), lr_d=1e-3,
                    log=lambda n, v, s: logged.append(v), progress=False)
    assert out.steps == 2 and logged and all(np.isfinite(logged))
    line = [s for s in presets.substitutes(presets.resolve("tiny", {"accum": 2}))
            if "micro-batch" in s]
    assert line == ["stage 2 accumulates 2 micro-batches of 2 per step: D's BatchNorm and "
                    "RaGAN's batch means are taken over each micro-batch, not the batch"]


# ------------------------------------------------------------------------------------------
# fp16


def test_fp16_trains_both_stages_on_cpu_and_resumes_bit_exactly(tmp_path: Path) -> None:
    fp16 = settings(steps=3, precision="fp16", ckpt_every=0, val_every=0)

    def stage1(g: torch.nn.Module, steps: int, folder: Path, logged: list) -> None:
        train_psnr(g, batches, dataclasses.replace(fp16, steps=steps),
                   checkpoint=folder / "s1.pth", progress=False,
                   log=lambda n, v, s: logged.append((n, v)))

    def stage2(g: torch.nn.Module, d: torch.nn.Module, steps: int, folder: Path,
               logged: list) -> None:
        percep = PerceptualLoss(VGGFeatureExtractor("conv2_2", weights="random"),
                                normalize=True)
        train_gan(g, d, percep, batches,
                  dataclasses.replace(fp16, steps=steps, precision="fp16-losses"),
                  ragan=True, weights=GanWeights(1.0, 5e-3, 1e-2), lr_d=1e-3,
                  checkpoint=folder / "s2.pth", progress=False,
                  log=lambda n, v, s: logged.append((n, v)))

    def nets() -> tuple[torch.nn.Module, torch.nn.Module]:
        torch.manual_seed(0)
        return build_generator(nf=8, nb=1, gc=4), VGGStyleDiscriminator(nf=8, patch_size=32)

    g, d = nets()
    logged: list = []
    stage1(g, 3, tmp_path / "whole", logged)
    stage2(g, d, 3, tmp_path / "whole", logged)
    assert {"stage1_l_pix", "stage2_l_g", "stage2_l_d"} <= {n for n, _ in logged}
    assert all(np.isfinite(v) for _, v in logged)
    assert all(p.dtype == torch.float32 for p in g.parameters())
    s1 = load_checkpoint(tmp_path / "whole" / "s1.pth")
    s2 = load_checkpoint(tmp_path / "whole" / "s2.pth")
    assert s1["scaler_g"]["scale"] > 1 and {"scaler_g", "scaler_d"} <= set(s2)
    # each stage stopped after 2 steps, then resumed from its checkpoint: the same weights
    g2, d2 = nets()
    for steps in (2, 3):
        stage1(g2, steps, tmp_path / "split", [])
    for steps in (2, 3):
        stage2(g2, d2, steps, tmp_path / "split", [])
    assert same(g.state_dict(), g2.state_dict()) and same(d.state_dict(), d2.state_dict())


# ------------------------------------------------------------------------------------------
# determinism and the cell's identity


def test_deterministic_switch_is_applied_in_a_run() -> None:
    import experiments.run as run_module

    seen = {}

    def work(cfg: dict, sink: object) -> dict:
        seen["on"] = torch.are_deterministic_algorithms_enabled()
        g = build_generator(nf=8, nb=1, gc=4)
        seen["steps"] = train_psnr(g, batches, settings(steps=2, ckpt_every=0, val_every=0),
                                   progress=False).steps
        return {}

    try:
        run_module.guarded(work, {"seed": 0, "deterministic": True}, None)
        assert seen == {"on": True, "steps": 2}
        import os
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        run_module.guarded(work, {"seed": 0, "deterministic": False}, None)
        assert seen["on"] is False
    finally:
        torch.use_deterministic_algorithms(False)
    assert presets.validate(presets.resolve("tiny", {"deterministic": "yes"})) == [
        "deterministic must be True or False, got 'yes'"]


def test_new_keys_and_the_cell_identity() -> None:
    base = presets.resolve("tiny")
    assert presets.validate(base) == []
    # retention and determinism change nothing computed; accum=1 is the key-less default
    for change in ({"keep_last": 3}, {"best_metric2": "psnr"}, {"deterministic": True},
                   {"accum": 1}):
        cfg = presets.resolve("tiny", change)
        assert identity.cell_key(cfg) == identity.cell_key(base), change
    old = {k: v for k, v in base.items() if k not in ("accum", "keep_last", "best_metric1",
                                                       "best_metric2", "deterministic")}
    assert identity.cell_key(old) == identity.cell_key(base)  # a stored cell keeps its key
    # accumulation: the same stage-1 model (same update), another stage 2
    acc = presets.resolve("tiny", {"accum": 2})
    assert identity.stage1_key(acc) == identity.stage1_key(base)
    assert identity.cell_key(acc) != identity.cell_key(base)
    # fp16 is another arithmetic: another model
    fp16 = presets.resolve("tiny", {"precision1": "fp16"})
    assert identity.stage1_key(fp16) != identity.stage1_key(base)
    assert presets.validate(presets.resolve("tiny", {"precision2": "fp16-losses"})) == []
    # the best metric of a stage is used only when the validation computes it
    assert build.stage_settings(base, 2).best_metric == "niqe"
    assert build.stage_settings(presets.resolve("tiny", {"val_metrics": ["psnr"]}),
                                2).best_metric == ""
    assert presets.validate(presets.resolve("tiny", {"best_metric2": "brightness_shift",
                                                     "keep_last": -2})) == [
        "keep_last must be >= 0, or -1 to keep every checkpoint, got -2",
        "best_metric2 must be one of ['psnr', 'ssim', 'niqe', 'pi', 'lpips', 'dists', "
        "'artifacts', 'brightness_error'] or '' (none), got 'brightness_shift'"]
    # the disk check counts the kept checkpoints
    assert build.disk_needed(presets.resolve("tiny", {"keep_last": 4})) > \
        build.disk_needed(base) + 4 * 4 * 3 * sum(
            p.numel() for p in build.make_generator(base, seed=0).parameters())
    assert presets.resolve("paper")["keep_last"] == 4
