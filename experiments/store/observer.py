"""Sacred observers that never hang and never lose a run.

Every run is written to Sacred's FileStorageObserver (the complete record) and, when asked, to
MongoDB through :class:`ResilientMongoObserver`: short timeouts, and a server lost mid-run
costs one warning line while the run goes on (it is uploaded later with
``experiments.store.sync``). Sacred's own ``-m`` observer is replaced through an option hook
(:func:`use_resilient_mongo`), so ``-m HOST:PORT:DB`` gets the same behaviour. Why each
measure is needed (what plain Sacred and pymongo do when the server is down): docs/observers.md.

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
from sacred.observers.queue import QueueObserver
from sacred.serializer import flatten
from sacred.utils import ObserverError

from esrgan.files import atomic_write, check_output_dir
from experiments.store.mongo import (
    DEFAULT_DB,
    SACRED_DEFAULT_DB,
    SOCKET_TIMEOUT_S,
    TIMEOUT_S,
    connect,
    parse_target,
    ping,
    reason_from_text,
    run_bounded,
    sacred_mongo_kwargs,
    unreachable,
)
from experiments.store.targets import StoreTargets

FILE_STORE_PRIORITY = 100  # above every MongoDB observer: the complete record is written first
MONGO_PRIORITY = 10  # below Sacred's FileStorageObserver default (20) as well

LOGGER = logging.getLogger("esrgan.observers")

def _file_store_dir(file_store: FileStorageObserver | None) -> str | None:
    if file_store is None:
        return None
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
    run folder is written into ``meta.file_store_dir`` and named in the warning. With no file
    store, a server that fails at start raises MongoUnavailable (the run would be recorded
    nowhere); with one, the run continues.
    """

    RESILIENT = True  # checked by attribute: this module may be imported under two names

    def __init__(
        self,
        url: str | list[str] | None = None,
        db_name: str = DEFAULT_DB,
        collection: str = "runs",
        collection_prefix: str = "",
        overwrite: int | str | None = None,
        priority: int = MONGO_PRIORITY,
        client: pymongo.MongoClient | None = None,
        failure_dir: str | None = None,
        file_store: FileStorageObserver | None = None,
        timeout_s: float = TIMEOUT_S,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        **client_kwargs: Any,
    ) -> None:
        self._owns_client = client is None
        if client is None:
            client = connect(url, timeout_s, socket_timeout_s, **client_kwargs)
        self.url = url
        self.timeout_s = timeout_s
        self.file_store = file_store
        self.lost_at: dt.datetime | None = None
        self._lock = threading.Lock()
        self._finished = False
        super().__init__(
            db_name=db_name,
            collection=collection,
            collection_prefix=collection_prefix,
            overwrite=overwrite,
            priority=priority,
            client=client,
            failure_dir=failure_dir,
        )

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
        where = _file_store_dir(self.file_store)
        if where is None and self.file_store is not None:
            where = str(Path(self.file_store.basedir).resolve())
        tail = (
            f"its complete record is in the file store at {where}"
            f" (upload it later: python -m experiments.store.sync {where} --mongo URL)"
            if where
            else "it has no file store, so MongoDB will not hold its end"
        )
        reason = reason_from_text(str(exc), self.timeout_s)
        LOGGER.warning("MongoDB lost at %s (%s): this run continues; %s",
                       self.lost_at.isoformat(sep=" "), reason, tail)

    def _close(self) -> None:
        self._finished = True
        if not self._owns_client:
            return
        if self.lost_at is not None:
            # Why: close() sends endSessions first, which waits a full server selection on a
            # dead server (measured: 3 s after the run ended). The server expires them itself.
            try:
                self._client._topology.pop_all_sessions()
            except Exception:  # private pymongo API: the bounded close below still holds
                pass
        # Why close at all: pymongo joins its monitor threads at interpreter exit (1 s each).
        run_bounded(self._client.close, 2.0)

    @property
    def lost(self) -> bool:
        """True once the server was lost during this run."""
        return self.lost_at is not None

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
        """Insert the run; on a dead server continue with the file store or raise."""
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
            if self.file_store is None:
                self._close()
                raise unreachable(
                    str(self.url or "localhost:27017"),
                    reason_from_text(str(exc), self.timeout_s),
                    "start it or fix the URL; this run has no file store, so it stops here",
                ) from exc
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
            if self.overwrite:
                raise
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
# Building and hardening observer lists


def make_observers(
    file_root: str | Path | None,
    mongo: str | None,
    *,
    db_name: str | None = None,
    timeout_s: float = TIMEOUT_S,
    flag: str = "--mongo",
) -> list[RunObserver]:
    """The observers of one run: the file store at ``file_root`` and, if ``mongo``, MongoDB.

    ``mongo`` is a ``mongodb://`` URL or a Sacred ``-m`` form (see parse_mongo_target);
    ``db_name`` overrides the database it names. The server is pinged first: MongoUnavailable
    (one line, naming ``flag``) when it does not answer within ``timeout_s``.
    """
    observers: list[RunObserver] = []
    file_store = None
    if file_root is not None:
        file_store = FileStorageObserver(str(file_root), priority=FILE_STORE_PRIORITY)
        observers.append(file_store)
    if mongo:
        url, db = parse_target(mongo)
        ping(url, timeout_s=timeout_s, flag=flag)
        observers.append(
            ResilientMongoObserver(
                url, db_name=db_name or db, file_store=file_store, timeout_s=timeout_s
            )
        )
    return observers


def observers_for(stores: StoreTargets) -> list[RunObserver]:
    """The observers of a ``run.py`` command: its file store and, when named, MongoDB.

    MongoDB given as Sacred's ``-m`` keeps Sacred's meaning (database ``sacred`` by default,
    its collection and priority suffixes). The server is pinged first: MongoUnavailable (one
    line, naming the flag to drop) when it does not answer.
    """
    check_output_dir(stores.runs)  # a store under a file or unwritable: one line, now
    file_store = AtomicFileStorageObserver(str(stores.runs), priority=FILE_STORE_PRIORITY)
    observers: list[RunObserver] = [file_store]
    pair = stores.mongo_url_db
    if pair is not None:
        url, db = pair
        ping(url, flag=stores.mongo_flag)
        kwargs = sacred_mongo_kwargs(stores.mongo) if stores.mongo_flag == "-m" else {}
        kwargs.pop("url", None)
        kwargs["db_name"] = db
        kwargs["priority"] = min(int(kwargs.get("priority", MONGO_PRIORITY)), MONGO_PRIORITY)
        observers.append(ResilientMongoObserver(url, **kwargs, file_store=file_store))
    return observers


def ignore_sacred_store_options(ex: Any) -> None:
    """Take Sacred's ``-F``/``-m`` out of Sacred's hands: ``run.py`` has read them into its
    StoreTargets (and attached those observers), so Sacred must not add a second store."""

    def store_options_read_already(options: dict) -> None:
        for key in ("--file_storage", "--mongo_db"):
            if options.get(key):
                options[key] = None

    ex.option_hook(store_options_read_already)


def _settings_of(observer: MongoObserver) -> dict[str, Any]:
    """Constructor arguments that rebuild ``observer`` against the same server and collections."""
    client = observer._client
    init = dict(getattr(client, "_init_kwargs", {}) or {})
    url = init.pop("host", None)
    if url is None:
        url = [f"{h}:{p}" for h, p in client.topology_description.server_descriptions()]
    init.pop("port", None)
    init.pop("connect", None)
    for key in ("serverSelectionTimeoutMS", "connectTimeoutMS", "socketTimeoutMS"):
        init.pop(key, None)  # replaced by the short ones
    runs_name = observer.runs.name
    metrics_name = observer.metrics.name if observer.metrics is not None else "metrics"
    prefix = runs_name[: -len("runs")].rstrip("_") if runs_name.endswith("runs") else ""
    settings: dict[str, Any] = {
        "url": url,
        "db_name": observer.runs.database.name,
        "priority": min(observer.priority, MONGO_PRIORITY),
        "failure_dir": observer.failure_dir,
        **{k: v for k, v in init.items() if v is not None},
    }
    if prefix and metrics_name == f"{prefix}_metrics":
        settings["collection_prefix"] = prefix
    elif runs_name != "runs":
        settings["collection"] = runs_name
    return settings


def _resilient_from(observer: RunObserver, file_store: FileStorageObserver | None) -> RunObserver:
    plain = observer._covered_observer if isinstance(observer, QueueObserver) else observer
    if not isinstance(plain, MongoObserver) or getattr(plain, "RESILIENT", False):
        return observer
    resilient = ResilientMongoObserver(**_settings_of(plain), file_store=file_store)
    # Carry a run already started by the plain observer over to the resilient one.
    resilient.run_entry = plain.run_entry
    resilient.overwrite = plain.overwrite
    return resilient


def harden_observers(target: Any) -> int:
    """Swap plain/queued MongoObservers in ``target.observers`` for ResilientMongoObservers.

    ``target`` is a sacred Experiment (before its run) or a Run (before or during it: a started
    run entry is carried over). Returns how many observers were swapped. The swapped-out
    observer's client is left open: it may be shared, and its owner closes it.
    """
    observers = target.observers
    file_store = next((o for o in observers if isinstance(o, FileStorageObserver)), None)
    swapped = 0
    for i, obs in enumerate(list(observers)):
        new = _resilient_from(obs, file_store)
        if new is not obs:
            observers[i] = new
            swapped += 1
    return swapped


def use_resilient_mongo(ex: Any, timeout_s: float = TIMEOUT_S) -> None:
    """Make Sacred's own ``-m``/``--mongo_db`` option use a ResilientMongoObserver.

    Registers an option hook on the Experiment ``ex``: it takes ``--mongo_db`` out of the
    options before Sacred applies them (recording the value as ``resilient_mongo_db``), adds
    the equivalent resilient observer to ``ex.observers`` (linked to the file store there)
    and hardens any plain MongoObserver already in ``ex.observers``. No ping happens here:
    ping in run.py with sacred_mongo_arg + ping_mongo, which gives the one-line error.
    """
    if any(getattr(h, "_esrgan_resilient_mongo", False) for h in ex.option_hooks):
        return

    def resilient_mongo_option(options: dict) -> None:
        # Drop the observer a previous run of this experiment object added.
        ex.observers[:] = [o for o in ex.observers if not getattr(o, "_from_option", False)]
        harden_observers(ex)
        value = options.get("--mongo_db")
        if not value:
            return
        kwargs = sacred_mongo_kwargs(str(value))
        kwargs.setdefault("db_name", SACRED_DEFAULT_DB)
        file_store = next((o for o in ex.observers if isinstance(o, FileStorageObserver)), None)
        observer = ResilientMongoObserver(**kwargs, file_store=file_store, timeout_s=timeout_s)
        observer._from_option = True
        ex.observers.append(observer)
        options["--mongo_db"] = None  # Sacred must not add its own plain observer as well
        options["resilient_mongo_db"] = value

    resilient_mongo_option._esrgan_resilient_mongo = True
    ex.option_hook(resilient_mongo_option)


# ----------------------------------------------------------------------------------------------
# Uploading a file-store run
