"""Upload a file-store run into MongoDB, in MongoObserver's schema (idempotent).

    python -m experiments.store.sync RUN_DIR... --mongo mongodb://host:27017/esrgan

Used after a run lost its MongoDB mid-way (its complete record is in the file store), and by
``reader.completed`` for the runs the file store holds as COMPLETED and MongoDB lacks (made
without ``--mongo``, or while MongoDB was unreachable).
"""

from __future__ import annotations

import argparse
import datetime as dt
import mimetypes
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymongo
import pymongo.errors
from sacred.dependencies import get_digest
from sacred.observers import MongoObserver
from sacred.observers.mongo import force_bson_encodeable

from experiments.store import files
from experiments.store.mongo import (
    MongoUnavailable,
    connect,
    failure,
    parse_target,
    ping,
    redact,
)


def _parse_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _next_id(runs: Any) -> int:
    last = list(runs.find({}, {"_id": 1}).sort("_id", pymongo.DESCENDING).limit(1))
    return int(last[0]["_id"]) + 1 if last and isinstance(last[0]["_id"], int) else 1


def _reserve_id(runs: Any, wanted: int | None, doc: dict) -> int:
    """Insert ``doc`` under ``wanted`` if free, else under the next free id; return the id."""
    candidate = wanted if wanted is not None else _next_id(runs)
    for _ in range(1000):
        try:
            runs.insert_one({**doc, "_id": candidate})
            return candidate
        except pymongo.errors.DuplicateKeyError:
            candidate = _next_id(runs)
    raise RuntimeError("could not find a free run id")


def sync_file_run_to_mongo(run_dir: str | Path, mongo_url: str, db_name: str) -> int:
    """Upload a FileStorageObserver run folder into MongoDB in MongoObserver's schema.

    Writes ``runs`` (the run, ``info.synced_from_file_store`` = the folder's absolute path),
    ``metrics`` (one document per name, listed in ``info.metrics``), artifacts and sources in
    GridFS, and returns the run ``_id``. Idempotent: a folder already synced returns its _id
    and writes nothing. A document the live run left behind (same ``meta.file_store_dir``,
    typically RUNNING with a stale heartbeat) is completed under its own _id, replacing the
    metrics and artifacts it had stored.
    """
    run_dir = Path(run_dir).resolve()
    run = files.read_json(run_dir / files.RUN_FILE, None)
    if run is None:
        raise FileNotFoundError(f"{run_dir} is not a file-store run folder (no run.json)")
    ping(mongo_url, hint="start it or fix the URL; the run stays in the file store")
    client = connect(mongo_url)
    try:
        return _upload(client, run, run_dir, db_name)
    except pymongo.errors.PyMongoError as exc:
        raise failure(mongo_url, exc, "start it or fix the URL; the run stays in the file "
                      "store") from None
    finally:
        client.close()


def _upload(client: pymongo.MongoClient, run: dict, run_dir: Path, db_name: str) -> int:
    """The upload of :func:`sync_file_run_to_mongo` over an open client."""
    import gridfs

    marker = str(run_dir)
    db = client[db_name]
    runs, metrics_coll, fs = db["runs"], db["metrics"], gridfs.GridFS(db)
    done = runs.find_one({"info.synced_from_file_store": marker}, {"_id": 1})
    if done is not None:
        return int(done["_id"])

    previous = runs.find_one({"meta.file_store_dir": marker})
    if previous is not None:
        run_id = int(previous["_id"])
        # Replace what the live run (or an interrupted sync) stored under this id.
        metrics_coll.delete_many({"run_id": run_id})
        for art in previous.get("artifacts") or []:
            if isinstance(art, dict) and "file_id" in art:
                fs.delete(art["file_id"])
    else:
        wanted = int(run_dir.name) if run_dir.name.isdigit() else None
        skeleton = {"status": "SYNCING", "meta": {"file_store_dir": marker}}
        run_id = _reserve_id(runs, wanted, skeleton)

    for name in run.get("artifacts") or []:
        for old in fs.find({"filename": f"artifact://{runs.name}/{run_id}/{name}"}):
            fs.delete(old._id)  # left by an interrupted sync
    artifacts = []
    for name in run.get("artifacts") or []:
        path = run_dir / name
        if not path.exists():
            continue
        content_type, _ = mimetypes.guess_type(name)
        with open(path, "rb") as f:
            file_id = fs.put(
                f, filename=f"artifact://{runs.name}/{run_id}/{name}",
                metadata=None, content_type=content_type,
            )
        artifacts.append({"name": name, "file_id": file_id})

    experiment = dict(run.get("experiment") or {})
    stored_sources = ((previous or {}).get("experiment") or {}).get("sources")
    sources = list(stored_sources or [])  # the live run uploaded them already
    for source_name, stored in [] if sources else experiment.get("sources") or []:
        path = run_dir.parent / stored
        if path.is_file():
            base = experiment.get("base_dir", "")
            with open(path, "rb") as f:
                sources.append([source_name, fs.put(f, filename=str(Path(base) / source_name))])
    experiment["sources"] = sources

    info = dict(files.read_json(run_dir / files.INFO_FILE, {}))
    info.pop("metrics", None)
    info["metrics"] = []
    for name, series in files.read_json(run_dir / files.METRICS_FILE, {}).items():
        doc = {
            "run_id": run_id,
            "name": name,
            "steps": series.get("steps", []),
            "values": series.get("values", []),
            "timestamps": [_parse_time(t) for t in series.get("timestamps", [])],
        }
        inserted = metrics_coll.insert_one(doc).inserted_id
        info["metrics"].append({"name": name, "id": str(inserted)})
    info["synced_from_file_store"] = marker

    resources = []
    for filename, stored in run.get("resources") or []:
        stored_path = Path(stored)
        resources.append(
            [filename, get_digest(str(stored_path)) if stored_path.is_file() else None]
        )
    cout = run_dir / files.COUT_FILE
    meta = dict(run.get("meta") or {})
    meta["file_store_dir"] = marker
    entry = {
        "_id": run_id,
        "experiment": experiment,
        "format": MongoObserver.VERSION,
        "command": run.get("command"),
        "host": run.get("host", {}),
        "start_time": _parse_time(run.get("start_time")),
        "config": files.read_json(run_dir / files.CONFIG_FILE, {}),
        "meta": meta,
        "status": run.get("status"),
        "resources": resources,
        "artifacts": artifacts,
        "captured_out": cout.read_text(errors="replace") if cout.exists() else "",
        "info": force_bson_encodeable(info),
        "heartbeat": _parse_time(run.get("heartbeat")),
        "result": run.get("result"),
    }
    for key in ("stop_time", "fail_trace"):
        if key in run:
            entry[key] = _parse_time(run[key]) if key == "stop_time" else run[key]
    runs.replace_one({"_id": run_id}, force_bson_encodeable(entry), upsert=True)
    return run_id


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m experiments.store.sync RUN_DIR... --mongo TARGET``."""
    parser = argparse.ArgumentParser(prog="python -m experiments.store.sync",
                                     description="Upload file-store run folders into MongoDB.")
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--mongo", required=True, help="mongodb:// URL or HOST:PORT:DB")
    parser.add_argument("--db", default=None, help="database (default: from --mongo, else esrgan)")
    args = parser.parse_args(argv)
    try:
        url, db = parse_target(args.mongo)
        for run_dir in args.run_dirs:
            run_id = sync_file_run_to_mongo(run_dir, url, args.db or db)
            print(f"{run_dir} -> {args.db or db}.runs _id {run_id} ({redact(url)})")
    except (MongoUnavailable, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
