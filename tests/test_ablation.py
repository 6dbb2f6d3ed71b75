"""End to end: the tiny ablation matrix, killed halfway and resumed, logged to MongoDB and the
file store, analysed into a report. Marked ``e2e`` (and ``slow``): CI runs it by itself
(``make test-e2e``) after ``make test``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import default_signals, wait_for

from experiments.store.plan import Extension, Plan, read_plan, write_plan

REPO = Path(__file__).resolve().parents[1]
MATRIX = [sys.executable, str(REPO / "experiments" / "matrix.py")]
# one-at-a-time has 7 cells (ESRGAN + each switch flipped) and one interpolation sweep
SMALL = ["steps1=40", "steps2=20", "ckpt_every=10", "val_metrics=['psnr','niqe']"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def completed(runs: Path) -> list[dict]:
    out = []
    for run in runs.iterdir() if runs.is_dir() else []:
        try:
            record = json.loads((run / "run.json").read_text())
            info = json.loads((run / "info.json").read_text())["esrgan"]
        except (OSError, ValueError, KeyError):
            continue
        if record["status"] == "COMPLETED":
            out.append({"id": run.name, **info})
    return out


def test_tiny_ablation_end_to_end(tmp_path: Path, mongo_server) -> None:
    mongo = f"{mongo_server.url}/ablation_e2e"
    runs = tmp_path / "runs"
    env = {**os.environ, "ESRGAN_RUNS": str(runs)}
    cmd = [*MATRIX, "run", "one-at-a-time", "--preset", "tiny", "--seeds", "2",
           "--mongo", mongo, "--runs", str(runs), *SMALL]

    # first pass: killed (the whole process group, as Ctrl-C or a lost job would) halfway
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: len(completed(runs)) >= 4, first, "4 completed cells")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = {r["id"]: r["cell_key"] for r in completed(runs)}
    assert 4 <= len(before) < 15

    # second pass finishes the matrix without rerunning a completed cell
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(before)} already in the store" in proc.stdout
    done = completed(runs)
    cells = Counter(r["cell_key"] for r in done if r["kind"] == "cell")
    sweeps = [r for r in done if r["kind"] == "interpolation"]
    assert len(cells) == 14 and set(cells.values()) == {1}, "a completed cell ran twice"
    assert len(sweeps) == 2
    assert all(before[i] == r["cell_key"] for r in done for i in [r["id"]] if i in before)

    # a third pass has nothing to do
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0 and "0 to run" in again.stdout

    # MongoDB holds the same runs
    from pymongo import MongoClient

    client = MongoClient(mongo_server.url, serverSelectionTimeoutMS=5000)
    try:
        keys = {d["info"]["esrgan"]["cell_key"] for d in client["ablation_e2e"].runs.find(
            {"status": "COMPLETED", "info.esrgan.kind": "cell"})}
    finally:
        client.close()
    assert keys == set(cells)

    # the report, from MongoDB and the file store
    out = tmp_path / "reports"
    report = subprocess.run(
        [sys.executable, "-m", "analysis.report", "--store", str(runs), "--mongo", mongo,
         "--preset", "tiny", "--name", "tiny", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert report.returncode == 0, report.stdout + report.stderr
    index = (out / "tiny" / "index.md").read_text()
    for variant in ("ESRGAN", "ESRGAN w/o RRDB", "ESRGAN +BN", "ESRGAN beta=1",
                    "ESRGAN w/o small init", "ESRGAN standard GAN", "ESRGAN after-act VGG"):
        assert f"| {variant} |" in index, f"no table row for {variant}"
    assert "random-weight VGG19" in index
    figures = list((out / "tiny" / "figures").iterdir())
    assert {p.suffix for p in figures} == {".png", ".svg"}
    assert len(figures) >= 10 and all(p.stat().st_size > 1000 for p in figures)


def test_printed_commands_complete_the_matrix_and_rerun_nothing(tmp_path: Path,
                                                                 mongo_server) -> None:
    """`matrix.py commands` lines, run one by one as a job array would, share one store."""
    mongo = f"{mongo_server.url}/commands_e2e"
    runs = tmp_path / "runs"
    listing = subprocess.run(
        [*MATRIX, "commands", "one-at-a-time", "--preset", "tiny", "--seeds", "1",
         "--mongo", mongo, "--runs", str(runs), *SMALL],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, check=True)
    lines = listing.stdout.strip().splitlines()
    assert len(lines) == 8  # ESRGAN + 6 flipped switches, then the interpolation sweep
    assert all(line.startswith(f"ESRGAN_RUNS={runs} ") for line in lines)

    clean_env = {k: v for k, v in os.environ.items() if k not in ("ESRGAN_RUNS", "ESRGAN_MONGO")}
    for line in lines:  # each line is self-contained: no environment from us
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=clean_env,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, line + "\n" + proc.stdout + proc.stderr
    done = completed(runs)
    assert Counter(r["kind"] for r in done) == {"cell": 7, "interpolation": 1}
    assert len({r["cell_key"] for r in done if r["kind"] == "cell"}) == 7

    # a second pass (a retried job array) runs nothing and creates no run
    folders = sorted(p.name for p in runs.iterdir())
    for line in lines:
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=clean_env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0 and "already COMPLETED" in proc.stdout, proc.stdout
    assert sorted(p.name for p in runs.iterdir()) == folders


def test_tiny_default_ablation_decides_the_ledger(tmp_path: Path) -> None:
    """`make ablation PRESET=tiny` (its two commands, run where the test says): the default
    design, then the report that opens with the claims ledger."""
    runs = tmp_path / "runs"
    env = {**os.environ, "ESRGAN_RUNS": str(runs)}
    t0 = time.monotonic()
    proc = subprocess.run([*MATRIX, "run", "default", "--preset", "tiny", "--jobs", "2",
                           "--budget", "45"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = read_plan(runs)  # looked at after the first seeds, whatever it chose
    assert plan is not None and plan.looks == 2 and plan.first_seeds == 2 and plan.stopped
    # every GAN model's periodic-artifact index is computed and stored, beside bicubic's
    gan = [r for r in completed(runs) if r.get("cell_key")]
    results = [json.loads((runs / r["id"] / "run.json").read_text())["result"] for r in gan]
    scored = [r for r in results if "gan_model" in r]
    assert scored and all(0 <= r[m]["val"]["artifacts"] < 1 for r in scored
                          for m in ("gan_model", "psnr_model", "bicubic"))
    report = subprocess.run(
        [sys.executable, "-m", "analysis.report", "--store", str(runs), "--preset", "tiny",
         "--name", "tiny", "--out", str(tmp_path / "reports")],
        cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert report.returncode == 0, report.stdout + report.stderr
    minutes = (time.monotonic() - t0) / 60
    assert minutes < 5, f"make ablation PRESET=tiny took {minutes:.1f} min"
    folder = tmp_path / "reports" / "tiny"
    index = (folder / "index.md").read_text()
    ledger = index.split("## The claims ledger", 1)[1].split("\n## ", 1)[0]
    assert index.index("## The claims ledger") < index.index("## Scale of these runs")
    for claim in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"):
        assert f"**{claim}**" in ledger
    assert "test: verdict" in ledger and "val: verdict" in ledger
    assert "the deep trunk has 8 blocks; the claim needs >= 32" in ledger  # C1 at tiny depth
    assert "units are active after the ReLU with the random VGG19" in ledger  # C5's premise
    assert "premise not met" in ledger
    claims = (folder / "tables" / "claims.csv").read_text()
    assert claims.count("\nC") >= 2 * 10  # every effect on val and test
    for name in ("claims_over_training", "c1_deep_trainability", "crops", "interpolation"):
        assert (folder / "figures" / f"{name}.png").stat().st_size > 1000, name
    assert "## At paper scale" in index and "GPU-hours" in index


def test_added_seeds_follow_the_plan(tmp_path: Path) -> None:
    """A store whose plan extends C1 to 3 seeds: after the first 2 seeds of the deep design
    the matrix runs seed 2 of C1's cells only, records how far it got, and a rerun adds
    nothing."""
    runs = tmp_path / "runs"
    write_plan(runs, Plan(2, 2, 3, 30.0, [Extension("C1", 3, "a test plan")]))
    env = {**os.environ, "ESRGAN_RUNS": str(runs)}
    cmd = [*MATRIX, "run", "deep", "--preset", "tiny", "--jobs", "2", "--budget", "30"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "extra seeds: C1 up to 3 (a test plan)" in proc.stdout
    seeds = Counter(json.loads((runs / r["id"] / "config.json").read_text())["seed"]
                    for r in completed(runs) if r.get("study") == "deep")
    assert seeds == {0: 4, 1: 4, 2: 4}, seeds
    plan = read_plan(runs)
    assert plan.extensions[0].reached == 3
    assert plan.stopped == "every extended claim reached its target"
    assert plan.spent_min > 0
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=1800)
    assert again.returncode == 0 and "0 run by this process" in again.stdout, again.stdout


# ------------------------------------------------------------------------------------------
# `make ablation` stopped by SIGTERM


def _alive_in_group(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that have not ended (a zombie has), from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)"
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def _statuses(runs: Path) -> list[str]:
    out = []
    for run in sorted(runs.iterdir()) if runs.is_dir() else []:
        try:
            out.append(json.loads((run / "run.json").read_text())["status"])
        except (OSError, ValueError, KeyError):
            continue  # not a run, or being written
    return out


def test_sigterm_to_make_ablation_ends_the_matrix_and_its_cells(tmp_path: Path) -> None:
    """SIGTERM to make's pid alone (make hands it to its shell only), then to the whole process
    group: each time the matrix and its cells end within seconds, and the same command then
    finishes the matrix with each cell completed once."""
    # The repository's top level as `make ablation` sees it, so that work/, runs/ and reports/
    # are written here; the stamp says the venv is ready (this interpreter runs everything).
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "experiments"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()
    runs = tmp_path / "runs"
    cmd = ["make", "ablation", "PRESET=tiny", "DESIGN=deep", "SEEDS=1", "BUDGET=0",
           f"RUNS={runs}", f"PY={sys.executable}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    for target in ("make", "group"):
        started = len(_statuses(runs))
        with open(tmp_path / f"make-{target}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=default_signals)
            try:
                wait_for(lambda n=started: len(_statuses(runs)) > n, proc, "a cell's run")
                if target == "make":
                    proc.send_signal(signal.SIGTERM)
                else:
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
                deadline = time.monotonic() + 60  # a limit: stopping takes a few seconds
                while _alive_in_group(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                left = _alive_in_group(proc.pid)
            finally:
                if _alive_in_group(proc.pid):
                    os.killpg(proc.pid, signal.SIGKILL)  # leave nothing running
        assert not left, f"SIGTERM to {target}: processes {left} still run after 60 s"
        statuses = _statuses(runs)
        assert statuses and set(statuses) == {"INTERRUPTED"}, (target, statuses)

    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = Counter(r["cell_key"] for r in completed(runs))
    assert len(cells) == 4 and set(cells.values()) == {1}, cells  # each cell completed once
    assert (tmp_path / "reports" / "tiny" / "index.md").is_file()
