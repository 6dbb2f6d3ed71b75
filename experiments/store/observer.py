"""Sacred observers that never hang and never lose a run.

Every run is written to Sacred's FileStorageObserver (the complete record) and, when asked, to
MongoDB through :class:`ResilientMongoObserver`: short timeouts, and a server lost mid-run
costs one warning line while the run goes on (it is uploaded later with
``experiments.store.sync``). :func:`attach_stores` is how ``run.py`` hands a command's stores
(``targets.from_argv``, Sacred's ``-F``/``-m`` included) to its Experiment. Why each measure is
needed (what plain Sacred and pymongo do when the server is down): docs/observers.md.

Document size: the observer writes what Sacred writes (``info``, ``captured_out``, one metrics
document per run and name); keep images and per-pixel data out of ``info`` and metrics.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymongo
import pymongo.errors
from sacred.observers import FileStorageObserver, MongoObserver, RunObserver
from sacred.observers.mongo import force_bson_encodeable
from sacred.serializer import flatten
from sacred.utils import ObserverError

from esrgan.files import atomic_write, check_output_dir
from experiments.store.mongo import (
    SOCKET_TIMEOUT_S,
    TIMEOUT_S,
    connect,
    ping,
    reason_from_text,
    run_bounded,
)
from experiments.store.targets import StoreTargets

FILE_STORE_PRIORITY = 100  # above every MongoDB observer: the complete record is written first
MONGO_PRIORITY = 10  # below Sacred's FileStorageObserver default (20) as well

LOGGER = logging.getLogger("esrgan.observers")


def _file_store_dir(file_store: FileStorageObserver) -> str | None:
    run_dir = getattr(file_store, "dir", None)
    return str(Path(run_dir).resolve()) if run_dir else None


class AtomicFileStorageObserver(FileStorageObserver):
    """Sacred's file store with every JSON file and artifact written atomically.

    A full disk (or a kill) in the middle of a write leaves the previous, complete version
    of the file (Sacred writes in place: a cut ``run.json`` makes the run unreadable). A
    write that fails for want of space costs one warning, once; the run goes on, and its
    record says how far it got.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_failed: str | None = None

    def _write(self, path: str | Path, content: Any, what: str) -> None:
        try:
            atomic_write(path, content, what=what)
        except OSError as exc:
            if self.write_failed is None:
                self.write_failed = str(exc)
                LOGGER.warning("the file store could not write %s (%s): the run record there "
                               "keeps its last complete version", path, exc)

    def save_json(self, obj: Any, filename: str) -> None:
        text = json.dumps(flatten(obj), sort_keys=True, indent=2)
        self._write(Path(self.dir) / filename, text.encode(), "the run record")

    def save_file(self, filename: str, target_name: str | None = None) -> None:
        target = Path(self.dir) / (target_name or Path(filename).name)
        if Path(filename).resolve() == target.resolve():
            return
        if target.name in ("run.json", "config.json", "cout.txt", "metrics.json"):
            super().save_file(filename, target_name)  # Sacred refuses these names itself
            return
        self._write(target, Path(filename).read_bytes(), "the artifact")


class ResilientMongoObserver(MongoObserver):
    """A MongoObserver with short timeouts that gives up on a lost server instead of waiting.

    ``file_store`` is the FileStorageObserver that holds the complete record of the run: its
    run folder is written into ``meta.file_store_dir`` and named in the warning, and the run
    continues there when the server fails, at start or later.
    """

    def __init__(
        self,
        url: str,
        *,
        db_name: str,
        file_store: FileStorageObserver,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.timeout_s = timeout_s
        self.file_store = file_store
        self.lost_at: dt.datetime | None = None
        self._lock = threading.Lock()
        self._finished = False
        super().__init__(db_name=db_name, priority=MONGO_PRIORITY,
                         client=connect(url, timeout_s, SOCKET_TIMEOUT_S))

    # -- the guard every event goes through -----------------------------------------------------

    def _guard(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.lost_at is not None or self._finished:
            return None
        try:
            return method(*args, **kwargs)
        except pymongo.errors.ConnectionFailure as exc:
            self._mark_lost(exc)
        except pymongo.errors.InvalidOperation:
            # The client was closed by another thread after the loss; nothing to report twice.
            if self.lost_at is None and not self._finished:
                raise
        return None

    def _mark_lost(self, exc: BaseException) -> None:
        with self._lock:
            if self.lost_at is not None:
                return
            self.lost_at = dt.datetime.now().replace(microsecond=0)
        where = _file_store_dir(self.file_store) or str(Path(self.file_store.basedir).resolve())
        tail = (f"its complete record is in the file store at {where}"
                f" (upload it later: python -m experiments.store.sync {where} --mongo URL)")
        reason = reason_from_text(str(exc), self.timeout_s)
        LOGGER.warning("MongoDB lost at %s (%s): this run continues; %s",
                       self.lost_at.isoformat(sep=" "), reason, tail)

    def _close(self) -> None:
        self._finished = True
        if self.lost_at is not None:
            # Why: close() sends endSessions first, which waits a full server selection on a
            # dead server (measured: 3 s after the run ended). The server expires them itself.
            try:
                self._client._topology.pop_all_sessions()
            except Exception:  # private pymongo API: the bounded close below still holds
                pass
        # Why close at all: pymongo joins its monitor threads at interpreter exit (1 s each).
        run_bounded(self._client.close, 2.0)

    # -- Sacred events --------------------------------------------------------------------------

    def queued_event(self, *args: Any, **kwargs: Any) -> Any:
        """Sacred's queued_event, guarded."""
        return self._guard(super().queued_event, *args, **kwargs)

    def started_event(
        self,
        ex_info: dict,
        command: str,
        host_info: dict,
        start_time: dt.datetime,
        config: dict,
        meta_info: dict,
        _id: Any,
    ) -> Any:
        """Insert the run; on a dead server the run continues in the file store."""
        meta = dict(meta_info)
        store = _file_store_dir(self.file_store)
        if store is not None:
            meta["file_store_dir"] = store
        if isinstance(_id, str):
            # The file store hands out its folder name ("3"); MongoDB runs have int ids.
            _id = int(_id) if _id.isdigit() else None
        try:
            return super().started_event(
                ex_info, command, host_info, start_time, config, meta, _id
            )
        except pymongo.errors.ConnectionFailure as exc:
            self._mark_lost(exc)
            return _id

    def heartbeat_event(self, *args: Any, **kwargs: Any) -> None:
        """Sacred's heartbeat_event, guarded."""
        self._guard(super().heartbeat_event, *args, **kwargs)

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        """Sacred's log_metrics, guarded."""
        self._guard(super().log_metrics, *args, **kwargs)

    def artifact_event(self, *args: Any, **kwargs: Any) -> None:
        """Sacred's artifact_event, guarded."""
        self._guard(super().artifact_event, *args, **kwargs)

    def resource_event(self, *args: Any, **kwargs: Any) -> None:
        """Sacred's resource_event, guarded."""
        self._guard(super().resource_event, *args, **kwargs)

    def completed_event(self, *args: Any, **kwargs: Any) -> None:
        """Sacred's completed_event with one save attempt; closes the client."""
        try:
            self._guard(super().completed_event, *args, **kwargs)
        finally:
            self._close()

    def interrupted_event(self, *args: Any, **kwargs: Any) -> None:
        """Sacred's interrupted_event with one save attempt; closes the client."""
        try:
            self._guard(super().interrupted_event, *args, **kwargs)
        finally:
            self._close()

    def failed_event(self, *args: Any, **kwargs: Any) -> None:
        """Sacred's failed_event with one save attempt; closes the client."""
        try:
            self._guard(super().failed_event, *args, **kwargs)
        finally:
            self._close()

    # -- storage primitives ---------------------------------------------------------------------

    def insert(self) -> None:
        """Insert the run; an id the server already holds falls back to the next free one."""
        try:
            super().insert()
        except pymongo.errors.DuplicateKeyError:
            # Why: the file store numbers runs by its own folders; a shared server may already
            # hold that number. meta.file_store_dir links the two records.
            self.run_entry["_id"] = None
            super().insert()

    def save(self) -> None:
        """Update the run; unlike Sacred's, a lost connection is raised (to the guard)."""
        try:
            self.runs.update_one({"_id": self.run_entry["_id"]}, {"$set": self.run_entry})
        except pymongo.errors.InvalidDocument as exc:
            raise ObserverError(
                "Run contained an unserializable entry (most likely in the info)"
            ) from exc

    def final_save(self, attempts: int) -> None:
        """One attempt (Sacred makes up to 10, 31 s each); a dead server is left to the guard."""
        try:
            self.runs.update_one(
                {"_id": self.run_entry["_id"]}, {"$set": self.run_entry}, upsert=True
            )
        except pymongo.errors.InvalidDocument:
            self.run_entry = force_bson_encodeable(self.run_entry)
            print(
                "Warning: some entries of the run were not BSON-serializable and were stored "
                "as strings (most likely in 'info' or 'result').",
                file=sys.stderr,
            )
            self.runs.update_one(
                {"_id": self.run_entry["_id"]}, {"$set": self.run_entry}, upsert=True
            )

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__


# ----------------------------------------------------------------------------------------------
# The observers of a command


def observers_for(stores: StoreTargets, timeout_s: float = TIMEOUT_S) -> list[RunObserver]:
    """The observers of a ``run.py`` command: its file store and, when named, MongoDB.

    The server is pinged first: MongoUnavailable (one line, naming the option to drop) when it
    does not answer within ``timeout_s``, the observer's own timeout too.
    """
    check_output_dir(stores.runs)  # a store under a file or unwritable: one line, now
    file_store = AtomicFileStorageObserver(str(stores.runs), priority=FILE_STORE_PRIORITY)
    observers: list[RunObserver] = [file_store]
    if stores.mongo_url_db is not None:
        url, db = stores.mongo_url_db
        ping(url, timeout_s=timeout_s, flag=stores.mongo_flag)
        observers.append(ResilientMongoObserver(url, db_name=db, file_store=file_store,
                                                timeout_s=timeout_s))
    return observers


def attach_stores(ex: Any, stores: StoreTargets, observed: bool = True) -> None:
    """Hand ``stores`` to the Sacred Experiment ``ex``: its observers when ``observed``, and
    Sacred's own ``-F``/``-m`` taken out of Sacred's hands (``targets.from_argv`` has read
    them into ``stores``), so that Sacred adds no second store of its own.

    Raises MongoUnavailable, or OSError for a file store that cannot be written.
    """
    if observed:
        ex.observers.extend(observers_for(stores))

    def store_options_read_already(options: dict) -> None:
        for key in ("--file_storage", "--mongo_db"):
            if options.get(key):
                options[key] = None

    ex.option_hook(store_options_read_already)
