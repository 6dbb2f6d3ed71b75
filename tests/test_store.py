"""The run store questions (experiments/store.py) against real folders and a real MongoDB."""

from __future__ import annotations

import json
from pathlib import Path

import pymongo

from experiments import store


def _file_run(root: Path, run_id: int, status: str, kind: str, key: str) -> Path:
    """A file-store run folder as Sacred's FileStorageObserver writes it (the fields we read)."""
    run = root / str(run_id)
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({
        "status": status, "start_time": "2026-11-26T10:00:00.000000",
        "experiment": {"name": "esrgan", "sources": []}, "command": "main", "host": {},
        "meta": {}, "resources": [], "artifacts": [], "heartbeat": None,
        "result": {"psnr": 20.0} if status == "COMPLETED" else None}))
    (run / "info.json").write_text(json.dumps({"esrgan": {"kind": kind, "cell_key": key}}))
    (run / "config.json").write_text(json.dumps({"seed": run_id}))
    (run / "metrics.json").write_text(json.dumps({}))
    return run


def test_file_store_completed_reads_only_finished_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _file_run(runs, 1, "COMPLETED", "cell", "aaa")
    _file_run(runs, 2, "RUNNING", "cell", "bbb")
    _file_run(runs, 3, "COMPLETED", "interpolation", "aaa")
    (runs / "_sources").mkdir()
    (runs / "4").mkdir()  # a run folder still being written: no run.json yet
    done = store.file_store_completed(runs)
    assert done == {("cell", "aaa"): runs / "1", ("interpolation", "aaa"): runs / "3"}
    assert store.file_store_completed(tmp_path / "absent") == {}


def test_run_completed_only_in_the_file_store_is_synced_to_mongo(tmp_path: Path,
                                                                 mongo_server) -> None:
    """A process killed between the file store's and MongoDB's completed event."""
    runs = tmp_path / "runs"
    finished = _file_run(runs, 1, "COMPLETED", "cell", "aaa")
    _file_run(runs, 2, "RUNNING", "cell", "bbb")
    target = f"{mongo_server.url}/store_sync"
    client = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=5000)
    try:
        db = client["store_sync"]
        # what the live MongoDB observer left: the run, still RUNNING
        db.runs.insert_one({"_id": 1, "status": "RUNNING",
                            "meta": {"file_store_dir": str(finished.resolve())},
                            "info": {"esrgan": {"kind": "cell", "cell_key": "aaa"}}})
        assert store.mongo_completed(target) == set()

        assert store.completed(runs, target) == {("cell", "aaa")}
        doc = db.runs.find_one({"_id": 1})
        assert doc["status"] == "COMPLETED" and doc["result"] == {"psnr": 20.0}
        assert store.mongo_completed(target) == {("cell", "aaa")}
        # a second look syncs nothing more (no duplicate document)
        assert store.completed(runs, target) == {("cell", "aaa")}
        assert db.runs.count_documents({}) == 1
    finally:
        client.close()
