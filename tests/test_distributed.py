"""Data-parallel training under torchrun (gloo, CPU): the maths of one process, logged once.

Two processes on this 2-core machine: torchrun gives each one thread (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import free_port, stage2_checkpoint_step, wait_for

from esrgan.data import embedded_pairs, to_tensor
from esrgan.weights import load_generator, load_generator_state

REPO = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, *args: str, cwd: Path, env: dict | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", *args]
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# One step of every batch-statistic path (D's BatchNorm, RaGAN's means, the perceptual
# normaliser) on a global batch of 4: gradients in one process vs two ranks of 2.
GRADIENTS = textwrap.dedent('''
    import sys, torch
    from esrgan import distributed
    from esrgan.archs.discriminator import VGGStyleDiscriminator
    from esrgan.archs.vgg import VGGFeatureExtractor
    from esrgan.losses import PerceptualLoss
    from esrgan.losses.gan import ragan_d_loss, ragan_g_loss

    device = distributed.init(torch.device("cpu"))
    torch.manual_seed(0)
    d = VGGStyleDiscriminator(in_ch=3, nf=8, patch_size=32)
    percep = PerceptualLoss(VGGFeatureExtractor("conv2_2", weights="random"), normalize=True)
    real, fake = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32, requires_grad=True)
    world, rank = distributed.world_size(), distributed.rank()
    part = slice(rank * 4 // world, (rank + 1) * 4 // world)
    d = distributed.data_parallel(distributed.convert_batchnorm(d, device), device)
    r, f = d(real[part]), d(fake[part])
    loss = ragan_d_loss(r, f) + ragan_g_loss(r, f) \\
        + percep(fake[part], real[part])
    loss.backward()
    module = getattr(d, "module", d)
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    # rank r's loss is its slice's mean, the global loss the mean over ranks
    grads["fake"] = fake.grad.clone() / world
    grads["running_var"] = module.bn1_0.running_var.clone()
    assert type(module.bn1_0).__name__ == ("GlobalBatchNorm2d" if world > 1 else "BatchNorm2d")
    if rank == 0 or world == 1:
        torch.save(grads, sys.argv[2])
    distributed.shutdown()
''')


def test_ddp_gradients_equal_one_process(tmp_path: Path) -> None:
    script = tmp_path / "grads.py"
    script.write_text(GRADIENTS)
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    subprocess.run([sys.executable, str(script), str(REPO), str(one)], check=True, cwd=tmp_path,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    torchrun(2, str(script), str(REPO), str(two), cwd=tmp_path)
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert a.keys() == b.keys()
    # the input gradient of rank 0's slice: DDP does not touch it, so only the all-reduce in
    # the backward pass can route the other rank's RaGAN/BN/normaliser terms into it
    a["fake"], b["fake"] = a["fake"][:2], b["fake"][:2]
    for name in a:
        scale = a[name].abs().max().item()
        assert scale > 0, name
        # float32 sums in another order: ~1e-7 relative; 1e-5 leaves room, per-rank statistics
        # (the usual DDP mistake) are off by 1e-2 and more
        assert (a[name] - b[name]).abs().max().item() <= 1e-5 * scale + 1e-7, name


FAST = ["tiny", "steps1=20", "steps2=30", "ckpt_every=5", "progress=False",
        "val_metrics=['psnr']", "val_crops=0", "bn=True"]  # bn: G's BatchNorm is global too


def _kill_job(folder: Path) -> None:
    """SIGKILL a whole torchrun job, as a lost node would: torchrun starts its workers in
    sessions of their own, so they are found by their working directory."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(proc / "cwd").resolve() == folder.resolve():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


def _completed(runs: Path) -> list[Path]:
    return [r for r in runs.iterdir() if r.name.isdigit()
            and json.loads((r / "run.json").read_text())["status"] == "COMPLETED"]


@pytest.mark.e2e
@pytest.mark.slow
def test_torchrun_tiny_run_equals_one_process_and_is_logged_once(tmp_path: Path) -> None:
    """The acceptance test: 2 processes vs 1 with the same config (global batch and seed);
    and a 2-process job killed in stage 2 and resumed ends exactly where an uninterrupted one
    does."""
    single, ddp, resumed = tmp_path / "single", tmp_path / "ddp", tmp_path / "resumed"
    job = [str(REPO / "experiments" / "run.py"), "with", *FAST]
    env = {"OMP_NUM_THREADS": "1"}
    for folder in (single, ddp, resumed):
        folder.mkdir()
    subprocess.run([sys.executable, *job], cwd=single, check=True, capture_output=True,
                   env={**os.environ, **env, "ESRGAN_RUNS": str(single / "runs")}, timeout=300)
    torchrun(2, *job, cwd=ddp, env={**env, "ESRGAN_RUNS": str(ddp / "runs")})

    resumed_env = {**env, "ESRGAN_RUNS": str(resumed / "runs")}
    killed = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={free_port()}", *job], cwd=resumed, env={**os.environ, **resumed_env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: stage2_checkpoint_step(resumed / "work") >= 5, killed,
             "the stage-2 checkpoint of step 5")
    _kill_job(resumed)
    killed.wait()
    at = stage2_checkpoint_step(resumed / "work")
    assert 5 <= at < 30
    torchrun(2, *job, cwd=resumed, env=resumed_env)

    # logged once: one run per torchrun job, reported by rank 0 with its evaluation
    (run1,) = _completed(single / "runs")
    (run2,) = [r for r in (ddp / "runs").iterdir() if r.name.isdigit()]
    (run3,) = _completed(resumed / "runs")
    assert len([r for r in (resumed / "runs").iterdir() if r.name.isdigit()]) == 2  # + killed
    record = json.loads((run2 / "run.json").read_text())
    assert record["status"] == "COMPLETED" and "rank" not in record["result"]
    info = [json.loads((r / "info.json").read_text())["esrgan"] for r in (run1, run2, run3)]
    assert len({i["cell_key"] for i in info}) == 1  # the same cell on 1 or 2 processes
    assert info[2]["stage2_resumed_from"] == at
    # TensorBoard: written by rank 0 only, one event file per stage of the 2-process job
    for stage in ("stage1", "stage2"):
        assert len(list((ddp / "work" / "tensorboard").glob(f"*/seed0/{stage}/events.*"))) == 1

    # resume under torchrun is exact
    b = load_generator_state(run2 / "G_gan.pth")
    c = load_generator_state(run3 / "G_gan.pth")
    assert all(torch.equal(b[k], c[k]) for k in b), "resumed 2-process run differs"

    # 2 processes vs 1: the same maths, float32 sums in another order (~1e-7 relative per
    # operation), which the GAN game amplifies step by step. Measured: weights 1e-5 of their
    # norm apart after stage 1, 2e-5 after 10 GAN steps, 2.5e-4 after 30; SR images 1e-4 apart
    # (1/40 of a grey level), validation PSNR 8e-5 dB. The bounds leave about 8x margin. What
    # the test guards against, a per-rank batch statistic or a wrong data slice, moves the
    # weights by about their whole stage-2 change (> 1e-2 of the norm).
    a = load_generator_state(run1 / "G_gan.pth")
    assert a.keys() == b.keys()
    floats = [k for k in a if a[k].is_floating_point()]
    assert all(torch.equal(a[k], b[k]) for k in a if k not in floats)  # BN step counters
    diff = sum(((a[k] - b[k]).double() ** 2).sum() for k in floats) ** 0.5
    norm = sum((a[k].double() ** 2).sum() for k in floats) ** 0.5
    assert diff <= 2e-3 * norm, float(diff / norm)
    ga, gb = load_generator(run1 / "G_gan.pth").eval(), load_generator(run2 / "G_gan.pth").eval()
    lr = to_tensor(embedded_pairs("val", scale=4)[0].lr).unsqueeze(0)
    with torch.no_grad():
        assert (ga(lr) - gb(lr)).abs().max().item() <= 1e-3
    psnr = [json.loads((r / "run.json").read_text())["result"]["gan_model"]["val"]["psnr"]
            for r in (run1, run2)]
    assert abs(psnr[0] - psnr[1]) <= 1e-3
