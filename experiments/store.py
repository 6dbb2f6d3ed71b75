"""What the stores already hold: COMPLETED runs by (kind, cell key), in the file store and MongoDB.

A run is identified in the matrix by ``info['esrgan']`` = ``{'kind': 'cell' | 'interpolation',
'cell_key': ...}`` (experiments/run.py). Both the matrix (``matrix.py run``: which cells are
left) and a single run (``run.py``: a printed command rerun for a finished cell does nothing)
ask the same question here.

The two stores can disagree when a process dies between the file store's and MongoDB's
completed event (the file store is written first, see observers.FILE_STORE_PRIORITY): the
file store then holds a COMPLETED run that MongoDB still shows RUNNING. ``reconcile`` uploads
such runs into MongoDB, so the run is neither lost there nor trained a second time.
"""

from __future__ import annotations

import json
from pathlib import Path

Key = tuple[str, str]  # (kind, cell_key)


def file_store_completed(runs_dir: str | Path | None) -> dict[Key, Path]:
    """COMPLETED runs of a Sacred file store, by (kind, cell key) -> run folder."""
    done: dict[Key, Path] = {}
    root = Path(runs_dir) if runs_dir is not None else None
    if root is None or not root.is_dir():
        return done
    for run in sorted(root.iterdir()):
        try:
            status = json.loads((run / "run.json").read_text())["status"]
            meta = json.loads((run / "info.json").read_text()).get("esrgan", {})
        except (OSError, ValueError, KeyError, AttributeError):
            continue  # not a run folder, or one still being written
        if status == "COMPLETED" and "cell_key" in meta:
            done.setdefault((meta.get("kind", "cell"), meta["cell_key"]), run)
    return done


def mongo_completed(mongo: str) -> set[Key]:
    """(kind, cell key) of every COMPLETED run in the MongoDB target ``mongo`` (URL/DB)."""
    from pymongo import MongoClient

    from experiments.observers import parse_mongo_target

    url, db_name = parse_mongo_target(mongo)
    client = MongoClient(url, serverSelectionTimeoutMS=5000)
    done: set[Key] = set()
    try:
        # whole `info` projected: nested-field projections are not portable across servers
        for doc in client[db_name]["runs"].find({"status": "COMPLETED"}, {"info": 1}):
            meta = (doc.get("info") or {}).get("esrgan") or {}
            if "cell_key" in meta:
                done.add((meta.get("kind", "cell"), meta["cell_key"]))
    finally:
        client.close()
    return done


def reconcile(file_done: dict[Key, Path], mongo_done: set[Key], mongo: str) -> list[Path]:
    """Upload into MongoDB the file-store runs it lacks; returns the run folders synced."""
    from experiments.observers import parse_mongo_target, sync_file_run_to_mongo

    url, db_name = parse_mongo_target(mongo)
    synced = []
    for key, path in sorted(file_done.items()):
        if key not in mongo_done:
            sync_file_run_to_mongo(path, url, db_name)
            mongo_done.add(key)
            synced.append(path)
    return synced


def completed(runs_dir: str | Path | None, mongo: str | None, sync: bool = True) -> set[Key]:
    """Every (kind, cell key) COMPLETED in either store, after reconciling MongoDB (``sync``;
    one writer only, e.g. torchrun's rank 0)."""
    file_done = file_store_completed(runs_dir)
    done = set(file_done)
    if mongo:
        mongo_done = mongo_completed(mongo)
        synced = reconcile(file_done, mongo_done, mongo) if sync else []
        if synced:
            print(f"synced {len(synced)} run(s) completed in the file store but not in MongoDB "
                  f"(a process stopped between the two): {', '.join(p.name for p in synced)}")
        done |= mongo_done
    return done
