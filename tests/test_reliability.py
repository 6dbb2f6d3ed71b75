"""What a run does when things go wrong: bad values, a full disk, broken checkpoints, two
identical commands, Ctrl-C, a password in the MongoDB URL. Real runs of the tiny preset.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import default_signals, stage2_checkpoint_step, wait_for
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from esrgan.weights import load_generator_state

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "experiments" / "run.py"
MATRIX = REPO / "experiments" / "matrix.py"
FAST = ["steps1=30", "steps2=20", "ckpt_every=10", "progress=False", "val_metrics=['psnr']",
        "test_sets=[]"]


def run_exp(tmp: Path, *args: str, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "ESRGAN_RUNS": str(tmp / "runs"), **(env or {})}
    return subprocess.run([sys.executable, str(RUN), *args], cwd=tmp, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_dirs(tmp: Path) -> list[Path]:
    root = tmp / "runs"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def statuses(tmp: Path) -> list[str]:
    return [json.loads((r / "run.json").read_text())["status"] for r in run_dirs(tmp)]


# ------------------------------------------------------------------------------------------
# bad values: one line, nothing trained


@pytest.mark.parametrize(("override", "expected"), [
    ("beta=abc", "beta must be a number, got 'abc'"),
    ("steps1=abc", "steps1 must be a whole number, got 'abc'"),
    ("patch=abc", "patch must be a whole number, got 'abc'"),
    ("nb=1.5", "nb must be a whole number, got 1.5"),
    ("val_metrics=psnr", "val_metrics must be a list, e.g. [a, b], got 'psnr'"),
])
def test_wrong_kind_of_value_is_one_line(tmp_path: Path, override: str, expected: str) -> None:
    proc = run_exp(tmp_path, "with", "tiny", override, timeout=900)
    assert proc.returncode != 0
    assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "work").exists() and run_dirs(tmp_path) == []


@pytest.mark.parametrize(("override", "expected"), [
    ("scale=0", "scale must be one of [2, 4], got 0"),  # was a ZeroDivisionError traceback
    ("steps1=10000000000000000000",  # was an overflow in the data loader
     "steps1 must be between 0 and 1e+09, got 10000000000000000000"),
    ("val_every1=-1", "val_every1 must be >= 0 (0: only at the stage's end), got -1"),
    ("ckpt_every=-25", "ckpt_every must be >= 0 (0: only at the stage's end), got -25"),
    ("log_every=0", "log_every must be >= 1, got 0"),
])
def test_a_value_out_of_its_range_is_one_line(tmp_path: Path, override: str,
                                              expected: str) -> None:
    """Each key's bounds (experiments/keys.py) are checked before anything that combines
    keys, so no value reaches an arithmetic it breaks, and none is accepted silently."""
    proc = run_exp(tmp_path, "with", "tiny", override, timeout=900)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: invalid config: {expected}"], proc.stderr
    assert not (tmp_path / "work").exists() and run_dirs(tmp_path) == []


def test_run_store_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    proc = run_exp(tmp_path, "--runs", str(tmp_path / "afile" / "runs"), "with", "tiny",
                   timeout=900)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot write into {tmp_path}/afile/runs: {tmp_path}/afile is a "
                     "file, not a folder"], proc.stderr


def test_work_dir_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    proc = run_exp(tmp_path, "with", "tiny", f"work_dir={tmp_path}/afile/work")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: work_dir: cannot write into {tmp_path}/afile/work: {tmp_path}/"
                     "afile is a file, not a folder"], proc.stderr
    assert run_dirs(tmp_path) == []  # refused before any run folder was made


def test_refusals_of_the_design_card_command_are_one_error_line(tmp_path: Path) -> None:
    proc = run_exp(tmp_path, "with", "rrdb=True", "ragan=False", "beta=-1")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: invalid config: beta must be > 0 (1.0 means no residual scaling), "
                     "got -1"], proc.stderr


# ------------------------------------------------------------------------------------------
# checkpoints that cannot be read


def _kill_in_stage2(tmp: Path, args: list[str]) -> None:
    env = {**os.environ, "ESRGAN_RUNS": str(tmp / "runs")}
    proc = subprocess.Popen([sys.executable, str(RUN), *args], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: stage2_checkpoint_step(tmp / "work") >= 10, proc,
             "the stage-2 checkpoint of step 10")
    proc.kill()
    proc.wait()


# Tests marked e2e run several tiny cells each: CI runs them in its end-to-end job (make
# test-e2e), make test leaves them out.


@pytest.mark.parametrize("damage", ["truncated", "planted pickle"])
@pytest.mark.e2e
@pytest.mark.slow
def test_unreadable_stage2_checkpoint_is_set_aside_and_the_stage_restarts(
        tmp_path: Path, damage: str) -> None:
    args = ["with", "tiny", "steps1=30", "steps2=40", "ckpt_every=5", "progress=False",
            "val_metrics=['psnr']", "test_sets=[]"]
    _kill_in_stage2(tmp_path, args)
    (ckpt,) = (tmp_path / "work" / "stage2").glob("*/checkpoint.pth")
    marker = tmp_path / "payload-ran"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    else:
        code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
        ckpt.write_bytes(b"cbuiltins\nexec\n(" + repr(code).encode() + b"\ntR.")
    proc = run_exp(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    warning = [line for line in proc.stderr.splitlines() if "set aside as" in line]
    assert len(warning) == 1 and str(ckpt.relative_to(tmp_path)) in warning[0], proc.stderr
    assert warning[0].startswith("warning: ")
    assert "Traceback" not in proc.stderr
    assert list(ckpt.parent.glob("checkpoint.pth.unreadable-*"))
    info = json.loads((run_dirs(tmp_path)[-1] / "info.json").read_text())["esrgan"]
    assert info["stage1_reused"] is True  # the good stage-1 model was kept
    assert info["stage2_resumed_from"] == 0 and statuses(tmp_path)[-1] == "COMPLETED"


@pytest.mark.parametrize("broken", ["generator.pth", "record.json"])
@pytest.mark.e2e
@pytest.mark.slow
def test_unreadable_stage1_cache_entry_is_retrained(tmp_path: Path, broken: str) -> None:
    assert run_exp(tmp_path, "with", "tiny", *FAST).returncode == 0
    (entry,) = [p for p in (tmp_path / "work" / "stage1").iterdir() if p.is_dir()]
    first = load_generator_state(entry / "generator.pth")
    (entry / broken).write_bytes((entry / broken).read_bytes()[:100])
    proc = run_exp(tmp_path, "with", "tiny", *FAST, "ragan=False")  # same stage-1 model
    assert proc.returncode == 0, proc.stderr
    assert "set aside as" in proc.stderr
    assert str((entry / broken).relative_to(tmp_path)) in proc.stderr
    info = json.loads((run_dirs(tmp_path)[-1] / "info.json").read_text())["esrgan"]
    assert info["stage1_reused"] is False
    again = load_generator_state(entry / "generator.pth")
    assert all(torch.equal(first[k], again[k]) for k in first)  # retrained, same seed


# ------------------------------------------------------------------------------------------
# two identical commands


def test_two_identical_commands_train_the_cell_once(tmp_path: Path) -> None:
    env = {**os.environ, "ESRGAN_RUNS": str(tmp_path / "runs")}
    cmd = [sys.executable, str(RUN), "with", "tiny", *FAST]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert statuses(tmp_path) == ["COMPLETED"]  # one run in the store, not two
    # Which of the two trains, and whether the other waits on the lock or starts after the
    # first has finished, depends on the scheduler; that exactly one of them skips does not.
    assert sum("already COMPLETED" in out for out, _ in outs) == 1, outs
    assert not list((tmp_path / "work").rglob("*.tmp"))


@pytest.mark.e2e
@pytest.mark.slow
def test_a_command_waiting_on_the_lock_skips_the_cell_finished_meanwhile(tmp_path: Path
                                                                        ) -> None:
    import fcntl

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    assert run_exp(first, "with", "tiny", *FAST).returncode == 0
    (lock_name,) = [p.name for p in (first / "work" / "locks").iterdir()]
    lock = second / "work" / "locks" / lock_name
    lock.parent.mkdir(parents=True)
    env = {**os.environ, "ESRGAN_RUNS": str(second / "runs")}
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as if another process were training this cell
        held.write("pid 1 on elsewhere\n")
        held.flush()
        proc = subprocess.Popen([sys.executable, str(RUN), "with", "tiny", *FAST],
                                cwd=second, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        while line and "is being run by" not in line:
            line = proc.stdout.readline()
        assert "is being run by pid 1 on elsewhere" in line, proc.communicate(timeout=900)
        # the other process completes the cell while this one waits
        shutil.copytree(first / "runs", second / "runs", dirs_exist_ok=True)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert "already COMPLETED" in out
    assert statuses(second) == ["COMPLETED"]  # the copied run only: nothing trained twice
    assert not (second / "work" / "stage1").exists()


# ------------------------------------------------------------------------------------------
# Ctrl-C


STOP_ARGS = ["with", "tiny", "steps1=30", "steps2=400", "ckpt_every=5", "progress=False",
             "val_metrics=['psnr']", "test_sets=[]"]


def _stop_in_stage2(tmp: Path, sig: signal.Signals, repeat: bool = False) -> tuple[int, str]:
    """Start a run, send ``sig`` once stage 2 has checkpointed step 10 (with ``repeat``, again
    every 20 ms until the run has ended); (status, stderr)."""
    env = {**os.environ, "ESRGAN_RUNS": str(tmp / "runs")}
    proc = subprocess.Popen([sys.executable, str(RUN), *STOP_ARGS], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    wait_for(lambda: stage2_checkpoint_step(tmp / "work") >= 10, proc,
             "the stage-2 checkpoint of step 10")
    proc.send_signal(sig)
    while repeat and proc.poll() is None:
        # Signals sent back to back merge into one: spaced out, each reaches the handler.
        time.sleep(0.02)
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=900)
    return proc.returncode, err


def test_ctrl_c_says_how_to_resume(tmp_path: Path) -> None:
    returncode, err = _stop_in_stage2(tmp_path, signal.SIGINT)
    assert returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("interrupted: the checkpoints are saved; run the "
                                            "same command to resume")
    assert statuses(tmp_path) == ["INTERRUPTED"]
    # the live view keeps what was logged before the interrupt, each step once
    (tb_run,) = (tmp_path / "work" / "tensorboard").glob("ESRGAN.*/seed0")
    acc = EventAccumulator(str(tb_run / "stage2"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("stage2/l_g")]
    assert steps and steps[0] == 10 and steps == sorted(set(steps))


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_is_handled_as_ctrl_c_and_the_same_command_resumes(tmp_path: Path) -> None:
    """Sent again while the run stops, as a matrix cell gets it when its process group is
    signalled (once from the group, once passed on by the matrix): only the first counts."""
    returncode, err = _stop_in_stage2(tmp_path, signal.SIGTERM, repeat=True)
    assert returncode == 143, err  # 128 + SIGTERM, distinct from Ctrl-C's 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("terminated (SIGTERM): the checkpoints are saved; "
                                            "run the same command to resume")
    assert statuses(tmp_path) == ["INTERRUPTED"]
    saved = stage2_checkpoint_step(tmp_path / "work")
    assert saved >= 10
    again = run_exp(tmp_path, *STOP_ARGS, timeout=600)
    assert again.returncode == 0, again.stderr
    assert sorted(statuses(tmp_path)) == ["COMPLETED", "INTERRUPTED"]
    (done,) = [d for d in run_dirs(tmp_path)
               if json.loads((d / "run.json").read_text())["status"] == "COMPLETED"]
    info = json.loads((done / "info.json").read_text())
    assert info["esrgan"]["stage2_resumed_from"] == saved


# ------------------------------------------------------------------------------------------
# an unwritable live view: one warning, the run goes on


FULL_AT_START = textwrap.dedent('''
    import subprocess, sys
    disk, command = sys.argv[1], sys.argv[2:]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], check=True)
    with open(f"{disk}/filler", "wb", buffering=0) as f:  # full to the last byte
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(bytes(chunk))
            except OSError:
                pass
    sys.exit(subprocess.run(command).returncode)
''')


def test_an_unwritable_tb_dir_is_one_warning_and_the_run_completes(tmp_path: Path,
                                                                    unwritable_dirs) -> None:
    """Under a file, in a folder that refuses files, on a disk full from the start: the live
    view is left out with one warning and the run completes (as when the disk fills later)."""
    (tmp_path / "a-file").write_text("not a folder")
    refusing = next(iter(unwritable_dirs.items()))
    places = {"under a file": tmp_path / "a-file" / "tb", refusing[0]: refusing[1]}
    if _can_mount_tmpfs():
        (tmp_path / "full").mkdir()
        (tmp_path / "full_at_start.py").write_text(FULL_AT_START)
        places["full disk"] = tmp_path / "full"
    for kind, place in places.items():
        work = tmp_path / kind.replace(" ", "-")
        work.mkdir()
        command = [sys.executable, str(RUN), "with", "tiny", "steps1=10", "steps2=4",
                   "val_every1=10", "val_every2=4", "ckpt_every=10", "progress=False",
                   "val_metrics=['psnr']", "test_sets=[]", f"tb_dir={str(place)!r}"]
        if kind == "full disk":
            command = ["unshare", "-rm", sys.executable, str(tmp_path / "full_at_start.py"),
                       str(place), *command]
        proc = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "ESRGAN_RUNS": str(work / "runs"),
                                   "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, (kind, proc.stderr)
        assert statuses(work) == ["COMPLETED"], kind
        warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
        assert len(warned) == 1, (kind, proc.stderr)
        assert str(place) in warned[0] and "no live view" in warned[0], warned
        assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------
# a full disk (a real small tmpfs in a private mount namespace)

FULL_DISK = textwrap.dedent('''
    import os, subprocess, sys, time, pathlib
    disk, run, size = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                   check=True)
    env = {**os.environ, "ESRGAN_RUNS": str(disk / "runs")}
    args = [sys.executable, run, "with", "tiny", "steps1=30", "steps2=400", "ckpt_every=5",
            "progress=False", "val_metrics=['psnr']", "test_sets=[]"]
    proc = subprocess.Popen(args, cwd=disk, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((disk / "work" / "stage2").glob("*/checkpoint.pth")):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    with open(disk / "filler", "wb", buffering=0) as f:  # fill the disk to the last byte
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\\0" * chunk)
            except OSError:
                pass
    _, err = proc.communicate(timeout=900)
    print("RC", proc.returncode)
    print("ERR", err.replace("\\n", "\\\\n"))
    leftovers = [str(p) for p in (disk / "work").rglob("*.tmp")]
    print("TMP", leftovers)
    for run_json in sorted((disk / "runs").glob("*/run.json")):
        print("RUN", run_json.read_text().replace("\\n", " "))
    again = subprocess.run(args, cwd=disk, env=env, capture_output=True, text=True)
    print("AGAIN", again.returncode, again.stderr.strip().replace("\\n", "\\\\n"))
    print("FOLDERS", sorted(p.name for p in (disk / "runs").iterdir() if p.name.isdigit()))
''')


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def _on_a_tmpfs(tmp: Path, script: str, last: str, keys: tuple[str, ...] = ()
                ) -> tuple[dict[str, str], list[dict], str]:
    """Run ``script`` (its disk tmp/disk, a tmpfs mounted in a private mount namespace) with
    arguments disk, run.py and ``last``; (its 'KEY value' lines, its 'RUN' records, output)."""
    disk = tmp / "disk"
    disk.mkdir()
    path = tmp / "on_a_tmpfs.py"
    path.write_text(script)
    out = subprocess.run(["unshare", "-rm", sys.executable, str(path), str(disk), str(RUN),
                          last], capture_output=True, text=True, timeout=900, cwd=REPO)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line
                 and (not keys or line.split(" ", 1)[0] in keys))
    runs = [json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines()
            if line.startswith("RUN ")]
    return lines, runs, out.stdout + out.stderr


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a mount namespace")
def test_full_disk_is_one_line_and_leaves_a_readable_record(tmp_path: Path) -> None:
    lines, runs, output = _on_a_tmpfs(tmp_path, FULL_DISK, "60m",
                                      ("RC", "ERR", "TMP", "AGAIN", "FOLDERS"))
    assert lines["RC"] != "0", output
    err = lines["ERR"].replace("\\n", "\n")
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "no space left on device: " in last and "checkpoint" in last and " MB" in last, err
    assert lines["TMP"] == "[]"  # no partial checkpoint keeps the disk full
    assert len(runs) == 1 and runs[0]["status"] in ("RUNNING", "FAILED")  # readable JSON
    if runs[0]["status"] == "FAILED":
        assert "no space left on device" in runs[0]["fail_trace"][-1]
    # the next attempt says why at once and adds no run folder
    rc, again = lines["AGAIN"].split(" ", 1)
    assert rc != "0" and "no space left on device" in again and "Traceback" not in again
    assert lines["FOLDERS"] == "['1']"


RESUME_ON_A_TIGHT_DISK = textwrap.dedent('''
    import os, shutil, signal, subprocess, sys, time, pathlib
    from experiments import build, presets
    disk, run, size = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                   check=True)
    env = {**os.environ, "ESRGAN_RUNS": str(disk / "runs")}
    overrides = {"steps1": 30, "steps2": 400, "ckpt_every": 5, "progress": False,
                 "val_metrics": ["psnr"], "test_sets": []}
    args = [sys.executable, run, "with", "tiny", "steps1=30", "steps2=400", "ckpt_every=5",
            "progress=False", "val_metrics=['psnr']", "test_sets=[]"]
    proc = subprocess.Popen(args, cwd=disk, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    stage2 = disk / "work" / "stage2"
    while not list(stage2.glob("*/checkpoint.pth")) and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    cfg = presets.resolve("tiny", overrides)
    needed = build.disk_needed(cfg)
    own = sum(f.stat().st_size for f in (disk / "work").rglob("*") if f.is_file())
    # leave less than the whole estimate free, but more than the estimate less the run's files
    target = needed - own // 2
    with open(disk / "filler", "wb") as f:
        f.write(b"\\0" * max(shutil.disk_usage(disk).free - target, 0))
    print("FREE", shutil.disk_usage(disk).free, "NEEDED", needed, "OWN", own)
    again = subprocess.run(args, cwd=disk, env=env, capture_output=True, text=True)
    print("AGAIN", again.returncode, again.stderr.strip().replace("\\n", "\\\\n"))
''')


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a mount namespace")
def test_a_resumed_run_counts_its_own_files_against_the_disk_it_needs(tmp_path: Path) -> None:
    lines, _, output = _on_a_tmpfs(tmp_path, RESUME_ON_A_TIGHT_DISK, "60m")
    assert "FREE" in lines, output
    free, needed, own = (int(v) for v in lines["FREE"].split()[::2])
    assert needed - own < free < needed  # the old check refused exactly this
    rc, err = lines["AGAIN"].split(" ", 1)
    assert rc == "0", err
    assert "no space left" not in err


RUN_STORE_FILLS = textwrap.dedent('''
    import os, subprocess, sys, time, pathlib
    disk, run, work = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(disk)], check=True)
    env = {**os.environ, "ESRGAN_RUNS": str(disk / "runs")}
    args = [sys.executable, run, "with", "tiny", "steps1=30", "steps2=400", "ckpt_every=5",
            "progress=False", "val_metrics=['psnr']", "test_sets=[]", f"work_dir={work}"]
    proc = subprocess.Popen(args, cwd=disk, env=env, stderr=subprocess.PIPE, text=True)
    while not list((work / "stage2").glob("*/checkpoint.pth")) and proc.poll() is None:
        time.sleep(0.05)
    with open(disk / "filler", "wb", buffering=0) as f:  # the run store's disk fills up
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\\0" * chunk)
            except OSError:
                pass
    _, err = proc.communicate()
    print("RC", proc.returncode)
    print("ERR", err.strip().splitlines()[-1] if err.strip() else "")
    for run_json in sorted((disk / "runs").glob("*/run.json")):
        print("RUN", run_json.read_text().replace("\\n", " "))
    (disk / "filler").unlink()  # space again: the same command completes the cell
    again = subprocess.run(args, cwd=disk, env=env, capture_output=True, text=True)
    print("AGAIN", again.returncode, again.stderr.strip().replace("\\n", "\\\\n"))
    done = [p for p in (disk / "runs").glob("*/run.json") if "COMPLETED" in p.read_text()]
    print("COMPLETED", len(done))
''')


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a mount namespace")
def test_a_run_store_that_fills_mid_run_fails_the_command(tmp_path: Path) -> None:
    lines, runs, output = _on_a_tmpfs(tmp_path, RUN_STORE_FILLS, str(tmp_path / "work"),
                                      ("RC", "ERR", "AGAIN", "COMPLETED"))
    assert lines.get("RC") not in (None, "0"), output  # never a silent 0
    assert lines["ERR"].startswith("error: the file store could not record the end of run")
    assert "free space and run the same command again" in lines["ERR"]
    assert [r["status"] for r in runs] == ["RUNNING"]  # readable, and not COMPLETED
    rc, err = lines["AGAIN"].split(" ", 1)
    assert rc == "0", err
    assert lines["COMPLETED"] == "1"


# ------------------------------------------------------------------------------------------
# the matrix under make: its shell ends on SIGTERM (tests/test_ablation.py runs make itself)


def test_the_matrix_stops_once_the_shell_that_started_it_has_ended(tmp_path: Path) -> None:
    shell = subprocess.Popen(["sh", "-c", "exit 0"])  # the shell whose pid make passed...
    shell.wait()  # ...has ended
    proc = subprocess.run([sys.executable, str(MATRIX), "run", "deep", "--preset", "tiny",
                           "--seeds", "1", "--runs", str(tmp_path / "runs"),
                           "--stop-with-parent", str(shell.pid)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          preexec_fn=default_signals)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "COMPLETED" not in statuses(tmp_path)  # stopped, not run to the end
    # make ablation hands the matrix the pid of the shell that runs it
    recipe = subprocess.run(["make", "-n", "ablation", f"RUNS={tmp_path / 'runs'}"], cwd=REPO,
                            capture_output=True, text=True, timeout=900).stdout
    assert "--stop-with-parent $$ " in recipe, recipe


# ------------------------------------------------------------------------------------------
# the MongoDB password


def test_make_dry_run_runs_nothing_and_shows_no_password(tmp_path: Path) -> None:
    env = {**os.environ, "RUNS": str(tmp_path / "runs")}
    out = subprocess.run(["make", "-n", "ablation", "MONGO=mongodb://user:secret@h:1/x",
                          f"RUNS={tmp_path / 'runs'}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "matrix.py run" in out.stdout and "analysis.report" in out.stdout
    assert "secret" not in out.stdout + out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_matrix_hands_mongodb_to_cells_through_the_environment(tmp_path: Path,
                                                              mongo_server) -> None:
    url = f"{mongo_server.url}/env_only"
    proc = subprocess.run([sys.executable, str(MATRIX), "run", "deep", "--preset", "tiny",
                           "--seeds", "1", "--mongo", url, "--runs", str(tmp_path / "runs"),
                           "steps1=10"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    logs = list((tmp_path / "work" / "logs").glob("*.log"))
    assert len(logs) == 4
    assert not any(mongo_server.url.split("//")[1] in log.read_text() for log in logs)
    from pymongo import MongoClient

    client = MongoClient(mongo_server.url, serverSelectionTimeoutMS=5000)
    try:
        assert client["env_only"].runs.count_documents({"status": "COMPLETED"}) == 4
    finally:
        client.close()


def test_printed_commands_leave_a_password_to_the_environment() -> None:
    from experiments.matrix import command_prefix
    from experiments.store.targets import from_argv

    secret, _ = from_argv(["--mongo", "mongodb://user:secret@db.example.org/lab"], environ={})
    prefix = command_prefix(secret)
    assert "secret" not in prefix and '"${ESRGAN_MONGO:?' in prefix
    plain, _ = from_argv(["--mongo", "mongodb://db.example.org:27017/lab"], environ={})
    assert "ESRGAN_MONGO=mongodb://db.example.org:27017/lab " in command_prefix(plain)


def test_report_never_shows_a_password(tmp_path: Path) -> None:
    from conftest import free_port

    from analysis import report

    url = f"mongodb://user:secret@127.0.0.1:{free_port()}/x"
    proc = subprocess.run([sys.executable, "-m", "analysis.report", "--mongo", url, "--name",
                           "x", "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 2 and "secret" not in proc.stdout + proc.stderr
    assert "user:***@" in proc.stderr
    table = report.scale_table(_one_run_frame(), _empty_interp(), ["runs", url])
    assert "secret" not in table and "mongodb://user:***@127.0.0.1" in table


def _one_run_frame():
    import pandas as pd

    from analysis.load import RUN_COLUMNS

    row = dict.fromkeys(RUN_COLUMNS)
    row.update(run_id="1", kind="cell", preset="tiny", seed=0, variant="ESRGAN", steps1=1,
               steps2=1, wall_s=1.0, substitutes=())
    return pd.DataFrame([row], columns=RUN_COLUMNS)


def _empty_interp():
    import pandas as pd

    from analysis.load import INTERP_COLUMNS

    return pd.DataFrame(columns=INTERP_COLUMNS)


# ------------------------------------------------------------------------------------------
# a MongoDB that accepts connections, answers the handshake and ping, then never answers


def _silent_mongo_command(tmp: Path, url: str, which: str) -> list[str]:
    if which == "sync":
        run = tmp / "runs" / "1"
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"status": "COMPLETED", "artifacts": []}))
        return [sys.executable, "-m", "experiments.store.sync", str(run), "--mongo", url]
    if which == "run":
        return [sys.executable, str(RUN), "--mongo", url, "with", "tiny", *FAST]
    if which == "matrix":
        return [sys.executable, str(MATRIX), "list", "default", "--preset", "tiny",
                "--mongo", url]
    return [sys.executable, "-m", "analysis.report", "--store", url, "--name", "silent"]


# sync and run in `make test`; matrix and report in the e2e suite (it keeps make test short)
E2E = (pytest.mark.e2e, pytest.mark.slow)


@pytest.mark.parametrize("which", ["sync", "run", pytest.param("matrix", marks=E2E),
                                   pytest.param("report", marks=E2E)])
def test_a_silent_mongodb_ends_each_command_with_one_line(tmp_path: Path, which: str) -> None:
    from silent_mongo import SilentMongo

    from experiments.store.mongo import SOCKET_TIMEOUT_S, TIMEOUT_S

    with SilentMongo("handshake") as server:
        cmd = _silent_mongo_command(tmp_path, f"{server.url}/silent", which)
        env = {**os.environ, "ESRGAN_RUNS": str(tmp_path / "runs")}
        # A bound far above the stated TIMEOUT_S + SOCKET_TIMEOUT_S (8 s) and below the minute
        # that retried 30 s uploads took: the command must not wait for pymongo's defaults.
        assert TIMEOUT_S + SOCKET_TIMEOUT_S <= 10
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=50)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MongoDB at "), done.stderr
    assert f"{server.url}/silent is unreachable (no answer within" in last
    assert "experiments.store.sync" in last or which == "sync"
    assert not list((tmp_path / "work").glob("stage*/*/checkpoint.pth"))  # nothing trained


# ------------------------------------------------------------------------------------------
# a weights file whose recorded architecture lies


def _limit_memory() -> None:
    import resource

    default_signals()
    cap = 8 << 30  # an 8 GiB address-space cap: building nb=1000000 blocks would pass it
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_lying_arch_is_refused_before_anything_is_built(tmp_path: Path, suffix: str) -> None:
    import numpy as np

    from esrgan.archs.rrdbnet import Generator
    from esrgan.data import write_image
    from esrgan.weights import save_checkpoint

    model = Generator(nf=8, nb=1, gc=4)
    lie = tmp_path / f"lie{suffix}"
    save_checkpoint(lie, {"params": model.state_dict(), "arch": {**model.arch, "nb": 1000000}})
    write_image(tmp_path / "in.png", np.full((16, 16, 3), 0.5, dtype=np.float32))
    done = subprocess.run([sys.executable, "-m", "esrgan.upscale", "--weights", str(lie),
                           "--input", str(tmp_path / "in.png"), "--output",
                           str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=600, preexec_fn=_limit_memory)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "bad_alloc" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        "its 'arch' entry says nb=1000000 but its tensors hold nb=1"), done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _ten_thousand_blocks(path: Path) -> None:
    """A few MB whose keys name 10,000 RRDBs of nf 256, gc 128: about 460 GB if built."""
    bias = torch.zeros(128)  # one storage, saved once however many keys share it
    state = {"conv_first.weight": torch.zeros(256, 3, 3, 3),
             "conv_last.weight": torch.zeros(3, 256, 3, 3),
             "body.0.rdb1.conv1.weight": torch.zeros(128, 256, 3, 3)}
    state.update({f"body.{i}.rdb1.conv1.bias": bias for i in range(10_000)})
    if path.suffix == ".safetensors":  # as another tool writes it: flat params.<key> tensors
        from safetensors.torch import save_file

        save_file({f"params.{k}": v.clone() for k, v in state.items()}, str(path))
    else:
        torch.save({"params": state, "step": 1}, path)


@pytest.mark.parametrize(("command", "suffix"), [
    ("upscale", ".pth"), ("upscale", ".safetensors"), ("benchmark", ".pth"),
    ("export", ".pth"), ("retest", ".pth")])
def test_weights_naming_10000_blocks_are_refused_before_anything_is_built(
        tmp_path: Path, command: str, suffix: str) -> None:
    import numpy as np

    from esrgan.data import write_image

    weights = tmp_path / f"huge{suffix}"
    _ten_thousand_blocks(weights)
    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "a.png", np.full((32, 32, 3), 0.5, dtype=np.float32))
    out = tmp_path / "out"
    args = {
        "upscale": ["--weights", str(weights), "--input", str(tmp_path / "hr" / "a.png"),
                    "--output", str(out)],
        "benchmark": ["--weights", str(weights), "--set", f"S={tmp_path / 'hr'}",
                      "--metrics", "none", "--out", str(out)],
        "export": [str(weights), "--onnx", str(out / "g.onnx")],
        "retest": [str(weights), "--set", f"S={tmp_path / 'hr'}", "--metrics", "none",
                   "--out", str(out)],
    }[command]
    done = subprocess.run([sys.executable, "-m", f"esrgan.{command}", *args],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          preexec_fn=_limit_memory)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {weights}: "), done.stderr
    assert "10000 trunk blocks" in last and "parameters" in last, done.stderr
    assert "allocate" not in done.stderr, done.stderr
    assert not any(out.rglob("*.png")) and not any(out.rglob("*.onnx"))


# ------------------------------------------------------------------------------------------
# the design card's command on a machine without the ImageNet VGG19 file


def test_the_design_card_command_runs_without_the_imagenet_vgg19(tmp_path: Path) -> None:
    env = {"TORCH_HOME": str(tmp_path / "torch-home")}  # an empty cache: no VGG19 file
    proc = run_exp(tmp_path, "with", "rrdb=True", "ragan=False", "steps1=10", "steps2=4",
                   "val_every1=10", "val_every2=4", "progress=False", "val_metrics=['psnr']",
                   "test_sets=[]", env=env)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if line.startswith("NOTE: ImageNet")]
    assert len(notes) == 2 and "this run uses vgg_weights=random" in notes[0]  # start and end
    assert proc.stdout.splitlines()[0] == notes[0]
    (run,) = run_dirs(tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert config["vgg_weights"] == "random" and config["ragan"] is False
    assert config["percep_normalize"] is True  # what the matrix's random-VGG cells use
    info = json.loads((run / "info.json").read_text())
    assert any("random-weight VGG19" in s for s in info["esrgan"]["substitutes"])


# ------------------------------------------------------------------------------------------
# counts and messages that say what happened


@pytest.mark.e2e
@pytest.mark.slow
def test_the_first_mongo_run_says_what_it_uploads_and_why(tmp_path: Path, mongo_server) -> None:
    assert run_exp(tmp_path, "with", "tiny", *FAST).returncode == 0  # file store only
    again = run_exp(tmp_path, "--mongo", f"{mongo_server.url}/first_upload", "with", "tiny",
                    *FAST)
    assert again.returncode == 0, again.stderr
    line = next(x for x in again.stdout.splitlines() if x.startswith("uploading"))
    assert line == (f"uploading 1 run(s) that the file store holds as COMPLETED and MongoDB "
                    f"{mongo_server.url}/first_upload lacks (made without --mongo, or while "
                    "MongoDB was unreachable): 1")
    assert "already COMPLETED" in again.stdout  # and the cell is not trained again


def test_progress_weights_cells_by_their_expected_work() -> None:
    from experiments.matrix import expected_cost, make_cells

    cells = {c.label(): c for c in make_cells("default", "cpu", [0], {})}
    gan = expected_cost(cells["ESRGAN seed 0"], trains_stage1=True)
    gan_reusing = expected_cost(cells["ESRGAN seed 0"], trains_stage1=False)
    psnr_only = expected_cost(cells["ESRGAN +BN (PSNR model) seed 0"], trains_stage1=True)
    # 2000 L1 + 250 GAN steps against 2000 L1 steps: the GAN cell is almost twice the work
    assert 1.5 < gan / psnr_only < 3
    assert gan_reusing < gan


@pytest.mark.e2e
@pytest.mark.slow
def test_two_matrices_at_once_count_each_cell_once(tmp_path: Path) -> None:
    cmd = [sys.executable, str(MATRIX), "run", "claims", "--preset", "tiny", "--seeds", "1",
           "--runs", str(tmp_path / "runs"), "steps1=30", "steps2=20", "val_metrics=['psnr']"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = []
    for out, _ in outs:
        (line,) = [x for x in out.splitlines() if x.startswith("matrix finished")]
        words = line.split(": ", 1)[1].split(", ")
        counts.append([int(w.split()[0]) for w in words])
    trained = sum(c[0] for c in counts)
    other = sum(c[1] + c[2] for c in counts)
    # 4 cells (C5's is left out with a random VGG19) and 1 sweep, each trained once
    assert trained == 5 and other == 5, outs
    assert all(c[3] == 0 for c in counts)
    assert sorted(statuses(tmp_path)) == ["COMPLETED"] * 5


# ------------------------------------------------------------------------------------------
# sacred's pkg_resources warning


@pytest.mark.parametrize("cmd", [["-m", "experiments.store.sync", "--help"],
                                 [str(MATRIX), "list", "deep", "--preset", "tiny"]])
def test_commands_do_not_show_sacreds_pkg_resources_warning(tmp_path: Path, cmd) -> None:
    done = subprocess.run([sys.executable, *cmd], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ESRGAN_RUNS": str(tmp_path / "r")})
    assert done.returncode == 0, done.stderr
    assert "pkg_resources" not in done.stderr


def test_other_warnings_still_show() -> None:
    code = ("import experiments.store.sync, warnings; "
            "warnings.warn('something else is deprecated', UserWarning)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert "pkg_resources" not in done.stderr
    assert "something else is deprecated" in done.stderr
