"""experiments/store (observer, mongo, targets, sync) against real Sacred runs and a real
nx-27017 server.

Each whole run is a subprocess (``python tiny.py ...``) so that exit codes, stderr and hangs are
what a user would see; every subprocess has a timeout. tiny.py takes its stores the way
``run.py``'s ``command_line`` does: ``targets.from_argv``, then ``observer.attach_stores``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gridfs
import pymongo
import pytest
from conftest import free_port
from sacred import Experiment

from experiments.store.mongo import MongoUnavailable
from experiments.store.mongo import parse_target as parse_mongo_target
from experiments.store.mongo import ping as ping_mongo
from experiments.store.observer import (
    AtomicFileStorageObserver,
    ResilientMongoObserver,
    attach_stores,
    observers_for,
)
from experiments.store.sync import sync_file_run_to_mongo
from experiments.store.targets import from_argv, sacred_mongo_arg

# A tiny experiment whose stores come from its command line as run.py's command_line takes
# them: --runs/--mongo (ours), -F/-m (Sacred's), ESRGAN_RUNS/ESRGAN_MONGO.
TINY = '''
"""Tiny Sacred experiment for tests/test_observers.py."""
import os
import sys
import time
from pathlib import Path

from experiments.store.mongo import MongoUnavailable
from experiments.store.observer import attach_stores
from experiments.store.targets import from_argv
from sacred import Experiment

RUNS = Path(os.environ["ESRGAN_RUNS"])
ex = Experiment("tiny_observed")
try:
    stores, argv = from_argv(sys.argv)
    attach_stores(ex, stores)
except (MongoUnavailable, ValueError, OSError) as exc:
    sys.exit(f"error: {exc}")


@ex.config
def config():
    steps = 4
    marker = ""  # when set, main waits until this file exists
    tag = ""


@ex.main
def main(_run, steps, marker, tag):
    (RUNS / "main_ran").touch()
    for i in range(steps):
        _run.log_scalar("train.loss", 1.0 / (i + 1), i)
    art = RUNS / ("hello-" + tag + ".txt")
    art.write_text("hello " + tag)
    _run.add_artifact(str(art), "hello.txt")
    if marker:
        Path(marker + ".inmain").touch()
        deadline = time.monotonic() + 60
        while not Path(marker).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _run.add_artifact(str(art), "after.txt")
    for i in range(steps):
        _run.log_scalar("val.psnr", 20.0 + i, i)
    return {"psnr": 23.5, "tag": tag}


if __name__ == "__main__":
    ex.run_commandline(argv)
'''


def _script(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    script = tmp_path / "tiny.py"
    script.write_text(TINY)
    runs = tmp_path / "runs"
    runs.mkdir()
    env = dict(os.environ, ESRGAN_RUNS=str(runs), PYTHONWARNINGS="ignore")
    env.pop("ESRGAN_MONGO", None)
    return script, env


def _run(script: Path, env: dict[str, str], *args: str, timeout: float = 60) -> tuple:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=script.parent)
    return proc, time.monotonic() - start


def _run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir() and p.name.isdigit())


# ---------------------------------------------------------------------------------------------
# parsing


def test_parse_mongo_target_forms() -> None:
    assert parse_mongo_target("mongodb://u:p@h:1/exp?authSource=admin") == (
        "mongodb://u:p@h:1/exp?authSource=admin", "exp")
    assert parse_mongo_target("mongodb://h:1") == ("mongodb://h:1", "esrgan")
    assert parse_mongo_target("mongodb://h:1/") == ("mongodb://h:1/", "esrgan")
    assert parse_mongo_target("db.example.org:27018:lab") == (
        "mongodb://db.example.org:27018", "lab")
    assert parse_mongo_target("h:27017") == ("mongodb://h:27017", "esrgan")
    assert parse_mongo_target("h:27017", default_db="sacred") == ("mongodb://h:27017", "sacred")
    assert parse_mongo_target("lab") == ("mongodb://localhost:27017", "lab")
    assert parse_mongo_target("h:1:lab.runs:3!50") == ("mongodb://h:1", "lab")
    with pytest.raises(ValueError, match="HOST:PORT:DB"):
        parse_mongo_target("not a target!")


def test_sacred_mongo_arg_reads_argv_as_sacred_does() -> None:
    assert sacred_mongo_arg(["run.py", "-m", "h:1:db"]) == "h:1:db"
    assert sacred_mongo_arg(["run.py", "with", "rrdb=True", "--mongo_db=h:2:x"]) == "h:2:x"
    assert sacred_mongo_arg(["run.py", "--mongo_db", "y"]) == "y"
    assert sacred_mongo_arg(["run.py", "-um", "z", "with", "a=1"]) == "z"  # stacked short flags
    assert sacred_mongo_arg(["-m", "q"]) == "q"  # no program name
    assert sacred_mongo_arg(["run.py", "--only-run-py-knows", "-m", "w"]) == "w"  # scan fallback
    assert sacred_mongo_arg(["run.py", "with", "note=-m"]) is None
    assert sacred_mongo_arg(["run.py", "with", "rrdb=True"]) is None
    assert sacred_mongo_arg(["run.py", "-m"]) is None


# ---------------------------------------------------------------------------------------------
# ping


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mongodb://127.0.0.1:{port}", "connection refused"),
        ("mongodb://user:secret@127.0.0.1:{port}/x", "connection refused"),
        ("mongodb://no-such-host.invalid:27017", "host does not resolve"),
    ],
)
def test_ping_fails_fast_with_one_clear_line(url: str, reason: str) -> None:
    url = url.format(port=free_port())
    start = time.monotonic()
    with pytest.raises(MongoUnavailable) as info:
        ping_mongo(url)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert f"is unreachable ({reason})" in message
    assert "drop --mongo to log to the file store only" in message
    assert "secret" not in message


def test_ping_and_observers_for_a_live_server(mongo_server, tmp_path: Path) -> None:
    ping_mongo(mongo_server.url)
    runs = ["--runs", str(tmp_path / "runs")]
    stores, _ = from_argv(["run.py", *runs, "--mongo", f"{mongo_server.url}/obs_make"], environ={})
    observers = observers_for(stores)
    assert [type(o) for o in observers] == [AtomicFileStorageObserver, ResilientMongoObserver]
    file_store, mongo = observers
    assert file_store.priority > mongo.priority  # the complete record is written first
    assert mongo.runs.database.name == "obs_make"
    assert mongo.file_store is file_store
    assert mongo._client.options.server_selection_timeout <= 5  # seconds, not pymongo's 30
    mongo._client.close()
    only_files, _ = from_argv(["run.py", *runs], environ={})
    assert [type(o) for o in observers_for(only_files)] == [AtomicFileStorageObserver]


def test_sacred_store_options_are_read_once(mongo_server, tmp_path: Path) -> None:
    """Sacred's -F and -m name the stores; Sacred adds no plain observer of its own."""
    runs = tmp_path / "sacred_runs"
    argv = ["tiny", "-F", str(runs), "-m", f"127.0.0.1:{mongo_server.port}:obs_sacred"]
    stores, rest = from_argv(argv, environ={})
    assert rest == argv  # Sacred still parses them, and is told to leave them alone
    assert (stores.runs, stores.mongo) == (runs, f"{mongo_server.url}/obs_sacred")
    ex = _tiny_experiment([])
    attach_stores(ex, stores)
    run = ex.run_commandline([*rest, "--capture=no"])
    assert [type(o) for o in run.observers] == [AtomicFileStorageObserver,
                                                ResilientMongoObserver]
    file_store, mongo = run.observers
    assert (mongo.runs.database.name, mongo.runs.name, mongo.metrics.name) == (
        "obs_sacred", "runs", "metrics")
    assert mongo.file_store is file_store
    assert mongo._client.options.server_selection_timeout <= 5  # seconds, not pymongo's 30
    (run_dir,) = _run_dirs(runs)
    client = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=3000)
    doc = client["obs_sacred"].runs.find_one({"_id": mongo.run_entry["_id"]})
    assert doc["status"] == "COMPLETED" and doc["result"] == 1.25
    assert doc["experiment"]["name"] == "in_process"
    assert doc["meta"]["file_store_dir"] == str(run_dir.resolve())
    client.close()
    # Sacred's collection suffix would write where no reader of the project looks: one line
    with pytest.raises(ValueError, match="collection suffix is not taken") as refused:
        from_argv(["tiny", "-m", f"127.0.0.1:{mongo_server.port}:obs.pre"], environ={})
    assert "\n" not in str(refused.value) and "--mongo" in str(refused.value)


# ---------------------------------------------------------------------------------------------
# whole runs


@pytest.mark.parametrize("flag", ["--mongo", "-m"])
def test_unreachable_mongo_exits_fast_before_training(tmp_path: Path, flag: str) -> None:
    script, env = _script(tmp_path)
    port = free_port()
    target = f"mongodb://127.0.0.1:{port}" if flag == "--mongo" else f"127.0.0.1:{port}:obs"
    proc, elapsed = _run(script, env, flag, target, "with", "steps=2", timeout=30)
    assert proc.returncode != 0
    assert elapsed < 5, elapsed
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "is unreachable (connection refused)" in lines[0]
    assert f"drop {flag} to log to the file store only" in lines[0]
    assert not (tmp_path / "runs" / "main_ran").exists()
    assert _run_dirs(tmp_path / "runs") == []


def test_run_is_stored_in_mongo(mongo_server, tmp_path: Path) -> None:
    script, env = _script(tmp_path)
    tag = f"live-{tmp_path.name}"
    proc, _ = _run(script, env, "--mongo", f"{mongo_server.url}/obs_live", "with", f"tag={tag}")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = _run_dirs(tmp_path / "runs")

    client = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=3000)
    db = client["obs_live"]
    doc = db.runs.find_one({"meta.file_store_dir": str(run_dir.resolve())})
    assert doc is not None
    assert doc["status"] == "COMPLETED"
    assert doc["config"]["tag"] == tag and doc["config"]["steps"] == 4
    assert doc["result"] == {"psnr": 23.5, "tag": tag}
    metrics = {m["name"]: m for m in db.metrics.find({"run_id": doc["_id"]})}
    assert metrics["train.loss"]["values"] == [1.0, 0.5, 1 / 3, 0.25]
    assert metrics["val.psnr"]["steps"] == [0, 1, 2, 3]
    assert sorted(m["name"] for m in doc["info"]["metrics"]) == ["train.loss", "val.psnr"]
    (artifact,) = doc["artifacts"]
    assert artifact["name"] == "hello.txt"
    assert gridfs.GridFS(db).get(artifact["file_id"]).read() == f"hello {tag}".encode()
    client.close()


def _kill_mid_run(mongo_factory, tmp_path: Path, flag: str) -> tuple:
    """Run tiny.py, stop its server while main waits, let main finish; return what happened."""
    server = mongo_factory()
    script, env = _script(tmp_path)
    tag = f"killed-{flag}-{tmp_path.name}"
    target = f"{server.url}/obs_kill" if flag == "--mongo" else f"127.0.0.1:{server.port}:obs_kill"
    marker = tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, str(script), flag, target, "with", f"tag={tag}", f"marker={marker}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while not Path(f"{marker}.inmain").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "main never started"
            time.sleep(0.05)
        server.stop()
        released = time.monotonic()
        marker.touch()
        _, stderr = proc.communicate(timeout=60)
        after_main = time.monotonic() - released
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return server, proc.returncode, stderr, after_main, tag


@pytest.mark.parametrize("flag", ["--mongo", "-m"])
def test_server_lost_mid_run_then_synced(mongo_factory, mongo_server, tmp_path: Path,
                                         flag: str) -> None:
    server, returncode, stderr, after_main, tag = _kill_mid_run(mongo_factory, tmp_path, flag)
    assert returncode == 0, stderr
    assert after_main < 20, after_main  # plain Sacred: 312 s
    warnings = [line for line in stderr.splitlines() if "MongoDB lost at" in line]
    assert len(warnings) == 1, stderr
    (run_dir,) = _run_dirs(tmp_path / "runs")
    assert f"this run continues; its complete record is in the file store at {run_dir.resolve()}" \
        in warnings[0]
    assert "Traceback" not in stderr

    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "COMPLETED"
    assert run["result"] == {"psnr": 23.5, "tag": tag}
    assert run["artifacts"] == ["hello.txt", "after.txt"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val.psnr"]["values"] == [20.0, 21.0, 22.0, 23.0]

    # The same server (same database file) comes back: the RUNNING document is completed in place.
    server.start()
    client = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=3000)
    db = client["obs_kill"]
    marker = str(run_dir.resolve())
    stale = db.runs.find_one({"meta.file_store_dir": marker})
    assert stale is not None and stale["status"] == "RUNNING"
    run_id = sync_file_run_to_mongo(run_dir, server.url, "obs_kill")
    assert run_id == stale["_id"]
    doc = db.runs.find_one({"_id": run_id})
    assert doc["status"] == "COMPLETED"
    assert doc["result"] == {"psnr": 23.5, "tag": tag}
    assert doc["info"]["synced_from_file_store"] == marker
    assert doc["config"]["tag"] == tag
    fs = gridfs.GridFS(db)
    assert {a["name"]: fs.get(a["file_id"]).read() for a in doc["artifacts"]} == {
        "hello.txt": f"hello {tag}".encode(), "after.txt": f"hello {tag}".encode()}
    metric_docs = list(db.metrics.find({"run_id": run_id}))
    assert sorted(m["name"] for m in metric_docs) == ["train.loss", "val.psnr"]
    assert {m["name"]: m["values"] for m in metric_docs}["val.psnr"] == [20.0, 21.0, 22.0, 23.0]
    assert sorted(m["name"] for m in doc["info"]["metrics"]) == ["train.loss", "val.psnr"]
    assert {m["id"] for m in doc["info"]["metrics"]} == {str(m["_id"]) for m in metric_docs}

    # Syncing again changes nothing.
    assert sync_file_run_to_mongo(run_dir, server.url, "obs_kill") == run_id
    assert db.runs.count_documents({"meta.file_store_dir": marker}) == 1
    assert db.metrics.count_documents({"run_id": run_id}) == 2
    client.close()

    if flag == "--mongo":
        # A server that never saw the run gets a new document, once.
        fresh = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=3000)
        new_id = sync_file_run_to_mongo(run_dir, mongo_server.url, "obs_fresh")
        assert sync_file_run_to_mongo(run_dir, mongo_server.url, "obs_fresh") == new_id
        found = list(fresh["obs_fresh"].runs.find({"info.synced_from_file_store": marker}))
        assert [d["_id"] for d in found] == [new_id]
        assert found[0]["status"] == "COMPLETED" and found[0]["result"]["psnr"] == 23.5
        assert isinstance(found[0]["start_time"], type(doc["start_time"]))
        fresh.close()


# ---------------------------------------------------------------------------------------------
# a server that dies between the ping and the start (in-process runs)


def _tiny_experiment(observers: list) -> Experiment:
    ex = Experiment("in_process", save_git_info=False)
    ex.observers.extend(observers)

    @ex.main
    def main(_run) -> float:
        _run.log_scalar("loss", 0.5, 0)
        return 1.25

    return ex


def test_dead_at_start_with_file_store_runs_on(mongo_factory, tmp_path: Path, caplog) -> None:
    server = mongo_factory()
    stores, _ = from_argv(["tiny", "--runs", str(tmp_path / "runs"),
                           "--mongo", f"{server.url}/obs_dead"], environ={})
    observers = observers_for(stores, timeout_s=0.5)  # the ping passes
    dead = observers[1]
    server.stop()  # gone between the ping and the start
    ex = _tiny_experiment(observers)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="esrgan.observers"):
        run = ex.run(options={"--capture": "no"})
    assert time.monotonic() - start < 5
    assert run.status == "COMPLETED" and run.result == 1.25
    assert dead.lost_at is not None
    lost = [r.getMessage() for r in caplog.records if "MongoDB lost at" in r.getMessage()]
    assert len(lost) == 1 and "(connection refused)" in lost[0]
    (run_dir,) = _run_dirs(tmp_path / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"


def test_dead_at_start_fails_fast_before_the_run(tmp_path: Path) -> None:
    stores, _ = from_argv(["tiny", "--runs", str(tmp_path / "runs"),
                           "--mongo", f"mongodb://127.0.0.1:{free_port()}/obs_dead"], environ={})
    ran = []
    ex = _tiny_experiment([])
    ex.pre_run_hook(lambda: ran.append(True))
    start = time.monotonic()
    with pytest.raises(MongoUnavailable, match="connection refused"):
        attach_stores(ex, stores)
        ex.run(options={"--capture": "no"})
    assert time.monotonic() - start < 5
    assert ran == []
    assert not (tmp_path / "runs").exists() or _run_dirs(tmp_path / "runs") == []
