"""The one reader of stored runs, for both stores: the matrix, resume and the analysis use it.

    store = open_store("runs")                          # a Sacred file store folder
    store = open_store("mongodb://host:27017/esrgan")   # a MongoObserver database
    for record in store.runs(): ...                     # RunRecord, the same from both
    completed("runs", "mongodb://host/esrgan")          # {(kind, cell_key)} COMPLETED anywhere

Selection (:func:`select_runs`), the same for every caller: runs of the given statuses, kinds
and preset, and one run per identity (``record.RunRecord.identity``): the newest, so that a
cell run twice, or seen by both stores, counts once.

The two stores can disagree when a process dies between the file store's and MongoDB's
completed event (the file store is written first, see ``observer.FILE_STORE_PRIORITY``): the
file store then holds a COMPLETED run that MongoDB still shows RUNNING. :func:`completed`
uploads such runs into MongoDB (``sync``), so the run is neither lost there nor trained twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from experiments.store import files
from experiments.store.mongo import DEFAULT_DB, connect, failure, parse_target, redact
from experiments.store.record import Key, RunRecord, timestamp


class StoreError(RuntimeError):
    """A run store that cannot be read (missing folder, unreachable server)."""


class FileStore:
    """A Sacred FileStorageObserver folder (layout: ``experiments.store.files``)."""

    def __init__(self, root: str | Path, must_exist: bool = True) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"run store {self.root} is a file, not a folder")
        if must_exist and not self.root.is_dir():
            raise StoreError(f"run store folder not found: {self.root}")
        self.name = str(self.root)

    def runs(self, statuses: Iterable[str] | None = None) -> Iterator[RunRecord]:
        """Every readable run folder (half-written ones are skipped)."""
        wanted = None if statuses is None else set(statuses)
        for folder in files.run_folders(self.root):
            try:
                run = files.read_json(folder / files.RUN_FILE)
                if not isinstance(run, dict):
                    continue  # not a run folder
                if wanted is not None and run.get("status") not in wanted:
                    continue
                config = files.read_json(folder / files.CONFIG_FILE, {})
                info = files.read_json(folder / files.INFO_FILE, {})
            except (OSError, ValueError):
                continue  # a run being written right now: its files are incomplete
            yield RunRecord(
                run_id=folder.name, source=self.name, status=str(run.get("status", "")),
                config=config, info=info, result=run.get("result"),
                start_time=timestamp(run.get("start_time")),
                artifacts=list(run.get("artifacts") or []), handle=folder)

    def metrics(self, record: RunRecord) -> dict[str, dict[str, list]]:
        """Sacred scalars of a run: name -> {'steps': [...], 'values': [...]}."""
        return files.read_json(Path(record.handle) / files.METRICS_FILE, {})

    def artifact(self, record: RunRecord, name: str, cache_dir: Path | None = None) -> Path:
        """The artifact file in the run folder (no copy needed)."""
        return Path(record.handle) / name


class MongoStore:
    """A Sacred MongoObserver database: ``runs``, ``metrics`` and GridFS artifacts."""

    def __init__(self, target: str) -> None:
        from pymongo import uri_parser
        from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

        try:
            url, database = parse_target(target)
            parsed = uri_parser.parse_uri(url)
            self.client = connect(url)
            self.client.admin.command("ping")
        except (InvalidURI, ConfigurationError, ValueError) as e:
            raise StoreError(f"bad MongoDB URL {redact(target)}: {e}") from None
        except PyMongoError as e:
            raise StoreError(str(failure(target, e))) from None
        self.db = self.client[database]
        # a canonical name without credentials or options, for the `source` column
        hosts = ",".join(f"{host}:{port}" for host, port in parsed["nodelist"])
        self.name = f"mongodb://{hosts}/{database}"

    def runs(self, statuses: Iterable[str] | None = None) -> Iterator[RunRecord]:
        from pymongo.errors import PyMongoError

        query = {} if statuses is None else {"status": {"$in": list(statuses)}}
        projection = {"captured_out": 0, "experiment": 0, "host": 0, "meta": 0, "resources": 0}
        try:
            docs = list(self.db["runs"].find(query, projection).sort("_id", 1))
        except PyMongoError as e:
            raise StoreError(str(failure(self.name, e))) from None
        for doc in docs:
            artifacts = {a["name"]: a["file_id"] for a in doc.get("artifacts") or []}
            yield RunRecord(
                run_id=str(doc["_id"]), source=self.name, status=str(doc.get("status", "")),
                config=dict(doc.get("config") or {}), info=dict(doc.get("info") or {}),
                result=doc.get("result"), start_time=timestamp(doc.get("start_time")),
                artifacts=list(artifacts), handle=(doc["_id"], artifacts))

    def metrics(self, record: RunRecord) -> dict[str, dict[str, list]]:
        from pymongo.errors import PyMongoError

        out: dict[str, dict[str, list]] = {}
        try:
            docs = list(self.db["metrics"].find({"run_id": record.handle[0]}))
        except PyMongoError as e:
            raise StoreError(str(failure(self.name, e))) from None
        for doc in docs:
            out[doc["name"]] = {"steps": list(doc.get("steps") or []),
                                "values": list(doc.get("values") or [])}
        return out

    def artifact(self, record: RunRecord, name: str, cache_dir: Path | None = None) -> Path:
        """The GridFS artifact copied to ``cache_dir`` (reused when its size still matches)."""
        import gridfs
        from pymongo.errors import PyMongoError

        file_id = record.handle[1][name]
        key = hashlib.sha256(self.name.encode()).hexdigest()[:12]
        root = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "esrgan-analysis"
        path = root / key / record.run_id / name
        try:
            grid_out = gridfs.GridFS(self.db).get(file_id)
            if path.is_file() and path.stat().st_size == grid_out.length:
                return path
            content = grid_out.read()
        except PyMongoError as e:
            raise StoreError(str(failure(self.name, e))) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(content)
        tmp.replace(path)
        return path

    def close(self) -> None:
        self.client.close()


Store = FileStore | MongoStore
Source = str | Path | FileStore | MongoStore


def is_mongo(source: Any) -> bool:
    """Whether a store source names MongoDB (a ``mongodb://`` URL) rather than a folder."""
    return isinstance(source, MongoStore) or str(source).startswith(
        ("mongodb://", "mongodb+srv://"))


def open_store(source: Source) -> Store:
    """A store from a folder path or a ``mongodb://`` URL (database default 'esrgan')."""
    if isinstance(source, FileStore | MongoStore):
        return source
    return MongoStore(str(source)) if is_mongo(source) else FileStore(source)


def open_stores(sources: Source | Sequence[Source]) -> list[Store]:
    """Each source opened once."""
    if isinstance(sources, str | Path | FileStore | MongoStore):
        return [open_store(sources)]
    return [open_store(s) for s in sources]


_EARLIEST = dt.datetime.min


def select_runs(sources: Source | Sequence[Source], *, preset: str | None = None,
                statuses: Iterable[str] | None = ("COMPLETED",),
                kinds: Iterable[str] | None = ("cell",), dedupe: bool = True
                ) -> list[tuple[Store, RunRecord]]:
    """The runs every reader works on, oldest first.

    ``statuses``/``kinds`` None: any. ``dedupe``: one run per identity (the newest; among
    equal start times the first store given wins, so a run seen by both stores counts once).
    """
    wanted_kind = None if kinds is None else set(kinds)
    chosen: dict[str, tuple[int, Store, RunRecord]] = {}
    plain: list[tuple[int, Store, RunRecord]] = []
    for rank, store in enumerate(open_stores(sources)):
        for record in store.runs(statuses):
            if wanted_kind is not None and record.kind not in wanted_kind:
                continue
            if preset is not None and record.preset != preset:
                continue
            if not dedupe:
                plain.append((rank, store, record))
                continue
            old = chosen.get(record.identity)
            if old is None or (record.start_time or _EARLIEST) > (old[2].start_time or _EARLIEST):
                chosen[record.identity] = (rank, store, record)
    picked = plain if not dedupe else list(chosen.values())
    picked.sort(key=lambda t: (t[2].start_time or _EARLIEST, t[0], _id_key(t[2].run_id)))
    return [(store, record) for _, store, record in picked]


def _id_key(run_id: str) -> tuple[int, int | str]:
    return (0, int(run_id)) if run_id.isdigit() else (1, run_id)


# ------------------------------------------------------------------------------------------
# what is COMPLETED


def file_store_completed(runs_dir: str | Path | None) -> dict[Key, Path]:
    """COMPLETED runs of a Sacred file store, by (kind, cell key) -> run folder."""
    done: dict[Key, Path] = {}
    if runs_dir is None or not Path(runs_dir).is_dir():
        return done
    for record in FileStore(runs_dir).runs(statuses=("COMPLETED",)):
        if record.key is not None:
            done.setdefault(record.key, Path(record.handle))
    return done


def mongo_completed(mongo: str) -> set[Key]:
    """(kind, cell key) of every COMPLETED run in the MongoDB target ``mongo`` (URL/DB)."""
    from pymongo.errors import PyMongoError

    url, db_name = parse_target(mongo, default_db=DEFAULT_DB)
    client = connect(url)
    done: set[Key] = set()
    try:
        # whole `info` projected: nested-field projections are not portable across servers
        for doc in client[db_name]["runs"].find({"status": "COMPLETED"}, {"info": 1}):
            record = RunRecord(run_id=str(doc["_id"]), source=db_name, status="COMPLETED",
                               config={}, info=dict(doc.get("info") or {}), result=None,
                               start_time=None)
            if record.key is not None:
                done.add(record.key)
    except PyMongoError as exc:
        raise failure(url, exc) from None
    finally:
        client.close()
    return done


def reconcile(file_done: dict[Key, Path], mongo_done: set[Key], mongo: str) -> list[Path]:
    """Upload into MongoDB the file-store runs it lacks; returns the run folders synced."""
    from experiments.store.sync import sync_file_run_to_mongo

    url, db_name = parse_target(mongo)
    missing = {key: path for key, path in sorted(file_done.items()) if key not in mongo_done}
    if missing:
        # Why they are missing: runs made without --mongo, or while MongoDB was unreachable
        # or lost mid-run (the file store keeps every run); the stores must agree.
        print(f"uploading {len(missing)} run(s) that the file store holds as COMPLETED and "
              f"MongoDB {redact(url)} lacks (made without --mongo, or while MongoDB was "
              f"unreachable): {', '.join(p.name for p in missing.values())}", flush=True)
    for key, path in missing.items():
        sync_file_run_to_mongo(path, url, db_name)
        mongo_done.add(key)
    return list(missing.values())


def completed(runs_dir: str | Path | None, mongo: str | None, sync: bool = True) -> set[Key]:
    """Every (kind, cell key) COMPLETED in either store, after reconciling MongoDB (``sync``;
    one writer only, e.g. torchrun's rank 0)."""
    file_done = file_store_completed(runs_dir)
    done = set(file_done)
    if mongo:
        mongo_done = mongo_completed(mongo)
        if sync:
            reconcile(file_done, mongo_done, mongo)
        done |= mongo_done
    return done
