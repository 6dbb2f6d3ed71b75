"""The Sacred experiment end to end: real runs of the tiny preset, file store and MongoDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import stage2_checkpoint_step, wait_for
from test_tensorboard import assert_mirrors_the_store, read_events, scalars

from esrgan.weights import load_generator_state

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "experiments" / "run.py"
# even smaller than the tiny preset: these tests check plumbing, not quality
FAST = ["steps1=30", "steps2=20", "ckpt_every=10", "progress=False", "val_metrics=['psnr']",
        "test_sets=[]"]


def run_exp(tmp: Path, *args: str, timeout: float = 900, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """``python experiments/run.py ARGS`` in ``tmp`` (file store tmp/runs, work dir tmp/work)."""
    full_env = {**os.environ, "ESRGAN_RUNS": str(tmp / "runs"), **(env or {})}
    proc = subprocess.run([sys.executable, str(RUN), *args], cwd=tmp, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_dirs(tmp: Path) -> list[Path]:
    root = tmp / "runs"
    return sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_tiny_run_writes_a_complete_file_store_run(tmp_path: Path) -> None:
    run_exp(tmp_path, "with", "tiny", "progress=False")  # its wall time: `make bench`, not here
    (run,) = run_dirs(tmp_path)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    result = record["result"]
    for model in ("bicubic", "psnr_model", "gan_model"):
        assert set(result[model]["val"]) >= {"psnr", "ssim", "niqe", "rmse"}
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "tiny" and config["vgg_weights"] == "random"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"stage1_l_pix", "stage2_l_g", "stage2_l_d", "stage2_val_psnr"} <= set(metrics)
    assert len(metrics["stage1_l_pix"]["values"]) == 10  # 100 steps, one point per 10
    names = {p.name for p in run.iterdir()}
    assert {"G_psnr.pth", "G_gan.pth", "metrics.csv"} <= names
    assert any(n.startswith("crop_coffee") for n in names)
    info = json.loads((run / "info.json").read_text())["esrgan"]
    assert "random weights" in info["vgg"]
    assert any("random-weight VGG19" in s for s in info["substitutes"])
    # the departures as data too, the same ones (what the analysis reads)
    assert [d["text"] for d in info["departures"]] == info["substitutes"]
    assert info["departures"][1]["key"] == "vgg_weights"
    # the stored generator is a loadable weights file
    state = load_generator_state(run / "G_gan.pth")
    assert "conv_first.weight" in state
    # the live view: every scalar of the store in TensorBoard's files, and the crops of every
    # validation (tiny: val_every2 25 of 50 steps, 32-pixel crops)
    (tb_run,) = (tmp_path / "work" / "tensorboard").glob("ESRGAN.*/seed0")
    assert_mirrors_the_store(run, tb_run)
    assert {"stage1_lr", "stage2_lr", "stage2_d_lr"} <= set(metrics)
    images = read_events(tb_run / "stage2")
    assert [(e.step, e.width) for e in images.Images("stage2/sr_coffee")] == [(25, 32), (50, 32)]
    assert [e.step for e in images.Images("stage2/hr_chelsea")] == [25]


# in the e2e suite (CI runs it every time): it keeps `make test` under 5 minutes
@pytest.mark.e2e
@pytest.mark.slow
def test_runs_sharing_generator_settings_reuse_stage1(tmp_path: Path) -> None:
    run_exp(tmp_path, "with", "tiny", *FAST)
    run_exp(tmp_path, "with", "tiny", *FAST, "ragan=False")  # a stage-2 switch only
    first, second = run_dirs(tmp_path)
    info1 = json.loads((first / "info.json").read_text())["esrgan"]
    info2 = json.loads((second / "info.json").read_text())["esrgan"]
    assert info1["stage1_key"] == info2["stage1_key"]
    assert (info1["stage1_reused"], info2["stage1_reused"]) == (False, True)
    assert info1["cell_key"] != info2["cell_key"]
    # the reused model is the same model, and its curves are replayed into the second run
    a = load_generator_state(first / "G_psnr.pth")
    b = load_generator_state(second / "G_psnr.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    m2 = json.loads((second / "metrics.json").read_text())
    assert "stage1_l_pix" in m2
    # the same command again: the store holds it as COMPLETED, so nothing runs
    again = run_exp(tmp_path, "with", "tiny", *FAST, "ragan=False")
    assert f"{info2['cell_key']} is already COMPLETED" in again.stdout
    assert run_dirs(tmp_path) == [first, second]
    # a generator switch gives a different stage-1 model
    run_exp(tmp_path, "with", "tiny", *FAST, "bn=True")
    info3 = json.loads((run_dirs(tmp_path)[-1] / "info.json").read_text())["esrgan"]
    assert info3["stage1_key"] != info1["stage1_key"] and not info3["stage1_reused"]


@pytest.mark.e2e
@pytest.mark.slow
def test_sigkill_in_stage2_then_resume_is_bit_exact(tmp_path: Path) -> None:
    args = ["with", "tiny", "steps1=30", "steps2=60", "ckpt_every=5", "progress=False",
            "val_metrics=['psnr']", "test_sets=[]"]
    whole = tmp_path / "whole"
    whole.mkdir()
    run_exp(whole, *args)

    killed = tmp_path / "killed"
    killed.mkdir()
    env = {**os.environ, "ESRGAN_RUNS": str(killed / "runs")}
    proc = subprocess.Popen([sys.executable, str(RUN), *args], cwd=killed, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: stage2_checkpoint_step(killed / "work") >= 20, proc,
             "the stage-2 checkpoint of step 20")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = stage2_checkpoint_step(killed / "work")
    assert 20 <= step < 60, f"killed at checkpoint step {step}"
    (dead,) = run_dirs(killed)
    assert json.loads((dead / "run.json").read_text())["status"] == "RUNNING"  # never finished

    run_exp(killed, "with", f"resume={dead}", "progress=False")
    resumed = run_dirs(killed)[-1]
    assert json.loads((resumed / "run.json").read_text())["status"] == "COMPLETED"
    info = json.loads((resumed / "info.json").read_text())["esrgan"]
    assert info["stage2_resumed_from"] == step
    a = load_generator_state(run_dirs(whole)[0] / "G_gan.pth")
    b = load_generator_state(resumed / "G_gan.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from uninterrupted"
    # TensorBoard: the resumed run's folder shows every step once, as the uninterrupted run's
    # (the first loss point after the resume averages fewer steps; validations are exact)
    (whole_tb,) = (whole / "work" / "tensorboard").glob("ESRGAN.*/seed0")
    (killed_tb,) = (killed / "work" / "tensorboard").glob("ESRGAN.*/seed0")
    for stage in ("stage1", "stage2"):
        want, got = scalars(whole_tb / stage), scalars(killed_tb / stage)
        assert want.keys() == got.keys()
        for tag in want:
            assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag
    assert got["stage2/val_psnr"] == want["stage2/val_psnr"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("beta=-0.5", "beta must be > 0"),
        ("patch=40", "patch must be a positive multiple of 32"),
        ("train_hr=/no/such/folder", "train_hr folder not found: /no/such/folder"),
        ("vgg_weights=imagenet", "vgg19-dcbb9e9d.pth not found"),
        ("val_metrics=['psnr','nope']", "unknown val_metrics ['nope']"),
    ],
)
def test_invalid_config_gives_one_clear_line(tmp_path: Path, override: str, expected: str) -> None:
    env = {"TORCH_HOME": str(tmp_path / "torch_home")}  # no ImageNet VGG19 there
    proc = run_exp(tmp_path, "with", "tiny", override, env=env, check=False, timeout=900)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "work").exists()  # nothing trained


def test_unknown_config_key_is_refused(tmp_path: Path) -> None:
    proc = run_exp(tmp_path, "with", "tiny", "ragann=False", check=False, timeout=900)
    assert proc.returncode != 0
    assert "ragann" in proc.stderr and "Traceback" not in proc.stderr


def test_nan_loss_fails_the_run_with_a_clear_error(tmp_path: Path) -> None:
    proc = run_exp(tmp_path, "with", "tiny", *FAST, "lr1=1e12", check=False)
    assert proc.returncode != 0
    assert "not finite" in proc.stderr and "stage 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    (run,) = run_dirs(tmp_path)
    assert json.loads((run / "run.json").read_text())["status"] == "FAILED"


def test_tiny_run_is_stored_in_mongodb(tmp_path: Path, mongo_server) -> None:
    from pymongo import MongoClient

    db_name = "exp_store"
    run_exp(tmp_path, "--mongo", f"{mongo_server.url}/{db_name}", "with", "tiny", *FAST,
            "seed=7")
    (run,) = run_dirs(tmp_path)
    cell_key = json.loads((run / "info.json").read_text())["esrgan"]["cell_key"]
    client = MongoClient(mongo_server.url, serverSelectionTimeoutMS=5000)
    try:
        db = client[db_name]
        doc = db.runs.find_one({"info.esrgan.cell_key": cell_key})
        assert doc is not None, "run not in MongoDB"
        assert doc["status"] == "COMPLETED"
        assert doc["config"]["seed"] == 7 and doc["config"]["preset"] == "tiny"
        assert doc["result"]["gan_model"]["val"]["psnr"] > 0
        names = {m["name"] for m in db.metrics.find({"run_id": doc["_id"]})}
        assert {"stage1_l_pix", "stage2_l_d", "stage2_val_psnr"} <= names
        artifacts = {a["name"] for a in doc["artifacts"]}
        assert {"G_psnr.pth", "G_gan.pth", "metrics.csv"} <= artifacts
        file_id = next(a["file_id"] for a in doc["artifacts"] if a["name"] == "G_gan.pth")
        assert db["fs.files"].find_one({"_id": file_id})["length"] > 1000
    finally:
        client.close()


def test_unreachable_mongodb_fails_fast_before_training(tmp_path: Path) -> None:
    from conftest import free_port

    for flag, target in (("--mongo", f"mongodb://127.0.0.1:{free_port()}/x"),
                         ("-m", f"127.0.0.1:{free_port()}:x")):
        t0 = time.perf_counter()
        args = [flag, target, "with", "tiny"] if flag == "--mongo" else ["with", "tiny", flag,
                                                                          target]
        proc = run_exp(tmp_path, *args, check=False, timeout=900)
        assert proc.returncode != 0
        assert "unreachable" in proc.stderr and "Traceback" not in proc.stderr
        assert time.perf_counter() - t0 < 30  # import ~3 s + a loopback refusal, never 30 s
        assert not (tmp_path / "work").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_mongodb_lost_mid_run_keeps_the_run(tmp_path: Path, mongo_factory) -> None:
    server = mongo_factory()
    env = {**os.environ, "ESRGAN_RUNS": str(tmp_path / "runs")}
    args = ["--mongo", f"{server.url}/lost", "with", "tiny", "steps1=30", "steps2=60",
            "ckpt_every=5", "progress=False", "val_metrics=['psnr']"]
    proc = subprocess.Popen([sys.executable, str(RUN), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: stage2_checkpoint_step(tmp_path / "work") >= 5, proc,
             "the stage-2 checkpoint of step 5")
    server.stop()  # MongoDB goes away in the middle of stage 2
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert "MongoDB lost" in err
    (run,) = run_dirs(tmp_path)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "COMPLETED" and record["result"]["gan_model"]["val"]["psnr"] > 0
    assert (run / "G_gan.pth").exists()


def test_unavailable_metrics_are_missing_not_zero(tmp_path: Path, monkeypatch) -> None:
    import numpy as np

    from esrgan.data import ImagePair, make_lr
    from experiments import run

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no pyiqa weights there
    monkeypatch.delenv("ESRGAN_IQA_WEIGHTS", raising=False)
    hr = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    pair = ImagePair("noise", hr, make_lr(hr, 4))
    with pytest.warns(UserWarning, match="left out of this run"):
        out = run.score([hr], [pair], ["psnr", "pi", "lpips"], 4)
    assert "psnr" in out and "rmse" in out
    assert "pi" not in out and "lpips" not in out
