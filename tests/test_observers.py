"""experiments/store (observer, mongo, targets, sync) against real Sacred runs and a real
nx-27017 server.

Each run is a subprocess (``python tiny.py with ...``) so that exit codes, stderr and hangs are
what a user would see; every subprocess has a timeout.
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
from sacred.observers import FileStorageObserver, MongoObserver, QueuedMongoObserver

from experiments.store.mongo import MongoUnavailable
from experiments.store.mongo import parse_target as parse_mongo_target
from experiments.store.mongo import ping as ping_mongo
from experiments.store.observer import ResilientMongoObserver, harden_observers, make_observers
from experiments.store.sync import sync_file_run_to_mongo
from experiments.store.targets import sacred_mongo_arg

# A tiny experiment wired the way run.py wires its observers: --mongo (ours) or -m (Sacred's).
TINY = '''
"""Tiny Sacred experiment for tests/test_observers.py."""
import os
import sys
import time
from pathlib import Path

from experiments.store.mongo import MongoUnavailable
from experiments.store.mongo import parse_target as parse_mongo_target
from experiments.store.mongo import ping as ping_mongo
from experiments.store.observer import make_observers, use_resilient_mongo
from experiments.store.targets import sacred_mongo_arg
from sacred import Experiment

RUNS = Path(os.environ["RUNS_DIR"])
argv = list(sys.argv)
mongo = None
if "--mongo" in argv:
    i = argv.index("--mongo")
    mongo = argv[i + 1]
    del argv[i:i + 2]
ex = Experiment("tiny_observed")
try:
    ex.observers.extend(make_observers(RUNS, mongo))
    own = sacred_mongo_arg(argv)
    if own:
        ping_mongo(parse_mongo_target(own, default_db="sacred")[0], flag="-m")
except MongoUnavailable as exc:
    sys.exit(str(exc))
use_resilient_mongo(ex)


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
    env = dict(os.environ, RUNS_DIR=str(runs), PYTHONWARNINGS="ignore")
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


def test_ping_and_make_observers_against_a_live_server(mongo_server, tmp_path: Path) -> None:
    ping_mongo(mongo_server.url)
    observers = make_observers(tmp_path / "runs", f"{mongo_server.url}/obs_make")
    assert [type(o) for o in observers] == [FileStorageObserver, ResilientMongoObserver]
    file_store, mongo = observers
    assert file_store.priority > mongo.priority  # the complete record is written first
    assert mongo.runs.database.name == "obs_make"
    assert mongo.file_store is file_store
    assert make_observers(None, None) == []


def test_harden_swaps_plain_and_queued_observers(mongo_server) -> None:
    ex = Experiment("harden_me")
    file_store = FileStorageObserver("unused_runs")
    ex.observers = [
        file_store,
        MongoObserver(mongo_server.url, db_name="obs_harden", collection_prefix="pre"),
        QueuedMongoObserver(url=mongo_server.url, db_name="obs_queued"),
    ]
    assert harden_observers(ex) == 2
    assert harden_observers(ex) == 0
    plain, queued = ex.observers[1], ex.observers[2]
    assert isinstance(plain, ResilientMongoObserver)
    assert isinstance(queued, ResilientMongoObserver)
    assert (plain.runs.database.name, plain.runs.name, plain.metrics.name) == (
        "obs_harden", "pre_runs", "pre_metrics")
    assert queued.runs.database.name == "obs_queued"
    assert plain.file_store is file_store
    topology = plain._client.options.server_selection_timeout
    assert topology <= 5  # seconds, not pymongo's 30


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


def test_dead_at_start_with_file_store_runs_on(tmp_path: Path, caplog) -> None:
    file_store = FileStorageObserver(str(tmp_path / "runs"), priority=100)
    dead = ResilientMongoObserver(f"mongodb://127.0.0.1:{free_port()}", db_name="obs_dead",
                                  file_store=file_store, timeout_s=0.5)
    ex = _tiny_experiment([file_store, dead])
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="esrgan.observers"):
        run = ex.run(options={"--capture": "no"})
    assert time.monotonic() - start < 5
    assert run.status == "COMPLETED" and run.result == 1.25
    assert dead.lost
    lost = [r.getMessage() for r in caplog.records if "MongoDB lost at" in r.getMessage()]
    assert len(lost) == 1 and "(connection refused)" in lost[0]
    (run_dir,) = _run_dirs(tmp_path / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"


def test_dead_at_start_without_file_store_fails_fast(tmp_path: Path) -> None:
    dead = ResilientMongoObserver(f"mongodb://127.0.0.1:{free_port()}", db_name="obs_dead",
                                  timeout_s=0.5)
    ran = []
    ex = _tiny_experiment([dead])
    ex.pre_run_hook(lambda: ran.append(True))
    start = time.monotonic()
    with pytest.raises(MongoUnavailable, match="connection refused"):
        ex.run(options={"--capture": "no"})
    assert time.monotonic() - start < 5
    assert ran == []


def test_harden_a_started_run_carries_the_entry_over(mongo_server, tmp_path: Path) -> None:
    plain = MongoObserver(mongo_server.url, db_name="obs_started")
    ex = _tiny_experiment([FileStorageObserver(str(tmp_path / "runs")), plain])
    swapped = []

    @ex.pre_run_hook
    def harden(_run) -> None:  # runs after started_event, before main
        swapped.append(harden_observers(_run))

    run = ex.run(options={"--capture": "no"})
    assert swapped == [1]
    (resilient,) = [o for o in run.observers if isinstance(o, ResilientMongoObserver)]
    client = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=3000)
    doc = client["obs_started"].runs.find_one({"_id": resilient.run_entry["_id"]})
    assert doc["status"] == "COMPLETED" and doc["result"] == 1.25
    assert doc["experiment"]["name"] == "in_process"
    client.close()
    plain._client.close()
