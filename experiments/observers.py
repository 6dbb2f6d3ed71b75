"""Sacred observers that never hang and never lose a run.

Every run is written to Sacred's FileStorageObserver (the complete record) and, when asked, to
MongoDB through :class:`ResilientMongoObserver`. A MongoDB that is down at start fails the
command within seconds, before anything trains; a MongoDB that dies mid-run costs one warning
line, and the run goes on and is uploaded later with :func:`sync_file_run_to_mongo`.

Failure modes measured here (sacred 0.8.7, pymongo 4.20.1, nx-27017 0.8.1, 2-core machine) and
what this module does about each:

1. No server listening, plain ``-m HOST:PORT:DB``: ``started_event`` waits pymongo's default 30 s
   server selection, the run fails, then ``failed_event`` waits another 30 s: exit 1 after 61 s
   with two tracebacks. pymongo waits its whole selection timeout for an unresolvable host too.
   Handled: :func:`ping_mongo` before Sacred starts (a TCP probe answers "connection refused" or
   "host does not resolve" in milliseconds; a pymongo ``ping`` bounded by ``timeout_s`` follows),
   raising :class:`MongoUnavailable` with one line. :func:`sacred_mongo_arg` finds Sacred's own
   ``-m`` value in argv so that the same check covers it.
2. Server killed mid-run, plain MongoObserver: the training finishes, the first heartbeat logs
   "connection closed", Sacred marks the observer failed (no more heartbeats), but
   ``completed_event`` still calls ``final_save(attempts=10)``: 10 x (30 s server selection + 1 s
   sleep), then it tries to pickle into ``failure_dir=None`` and raises TypeError. Measured:
   the process exits after 312 s; the FileStorageObserver (lower priority, so called *after*
   MongoDB) says RUNNING for those five minutes. This is the "hang at exit".
   Handled: short pymongo timeouts (server selection and connect ``timeout_s``, socket
   ``socket_timeout_s``); the first ``ConnectionFailure`` in any event logs one warning
   ("MongoDB lost at ...") and sets a flag, after which every event returns at once;
   ``final_save`` makes one attempt, not ten, and Sacred's ``save`` no longer swallows
   ``AutoReconnect``; the observer's own client is closed when the run ends, so pymongo's
   monitor threads stop and the interpreter's exit-time join of them does not wait. The file
   store gets a higher priority than MongoDB, so it writes each event first and owns the run id.
   Measured with this observer: the first failing call takes up to ``timeout_s`` (3 s) once;
   the process exits 0.6-1 s after main returns when the loss was already seen, about 4 s when
   ``completed_event`` is the first call to fail.
   One more wait hid in ``MongoClient.close()``: it sends ``endSessions`` first, which waited a
   full server selection (3 s) on the dead server; after a loss the pooled sessions are dropped
   before closing (the server expires them itself) and the close is bounded.
3. QueuedMongoObserver (the "fault tolerant" one) is worse: its worker retries a failed event
   forever (``while True`` with ``retry_interval``) and ``completed_event`` calls
   ``queue.join()`` without a timeout, so a lost server means a process that never exits
   (measured: still running 90 s after main returned, then killed).
   Not used; :func:`harden_observers` replaces it too.
4. The heartbeat thread (non-daemon, 10 s period) blocks in a pymongo call for at most the
   server-selection timeout; Sacred joins it for 2 s and the interpreter waits for it at exit.
   With the short timeouts and the lost flag this is bounded by ``timeout_s`` once.
5. Run ids. With Sacred's default order (MongoDB first) the file store takes MongoDB's id, and a
   folder ``runs/<id>`` that already exists fails the run at start (measured: FileExistsError).
   With the file store first, it hands out its folder name as a *string* ("1"), which a plain
   MongoObserver stores as a string ``_id``, and an id the server already holds raises
   DuplicateKeyError in ``insert``. Handled: the id is converted to int, and a taken id falls
   back to the next free one (``meta.file_store_dir`` links the two records).

Sacred's own ``-m`` observer is replaced through an option hook (:func:`use_resilient_mongo`):
the hook removes ``--mongo_db`` from the options before Sacred applies them and adds an
equivalent :class:`ResilientMongoObserver`, so ``-m HOST:PORT:DB`` gets the same behaviour.

Document size: the observer writes what Sacred writes (``info``, ``captured_out``, one metrics
document per run and name); keep images and per-pixel data out of ``info`` and metrics.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import mimetypes
import re
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pymongo
import pymongo.errors
from sacred.dependencies import get_digest
from sacred.observers import FileStorageObserver, MongoObserver, RunObserver
from sacred.observers.mongo import force_bson_encodeable, get_pattern
from sacred.observers.queue import QueueObserver
from sacred.utils import ObserverError

DEFAULT_DB = "esrgan"
"""Database used when a target names none (Sacred's own ``-m HOST:PORT`` keeps ``sacred``)."""

SACRED_DEFAULT_DB = "sacred"
FILE_STORE_PRIORITY = 100  # above every MongoDB observer: the complete record is written first
MONGO_PRIORITY = 10  # below Sacred's FileStorageObserver default (20) as well
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_SOCKET_TIMEOUT_S = 5.0

LOGGER = logging.getLogger("esrgan.observers")


class MongoUnavailable(RuntimeError):
    """MongoDB cannot be reached; the message is one line that says what to do."""


# ----------------------------------------------------------------------------------------------
# Reaching MongoDB


def _redact(url: str) -> str:
    """The URL with its password replaced, fit for a message."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


def _drop_hint(flag: str) -> str:
    return f"start it, fix the URL, or drop {flag} to log to the file store only"


def _unreachable(url: str, reason: str, hint: str) -> MongoUnavailable:
    return MongoUnavailable(f"MongoDB at {_redact(url)} is unreachable ({reason}) — {hint}")


def _reason_from_text(text: str, timeout_s: float) -> str:
    """A short cause for a pymongo/socket error message."""
    # pymongo appends "(configured timeouts: ...)" and ", Timeout: 3.0s, Topology ..." to
    # every network error; the cause is before them.
    first = text.split(" (configured timeouts")[0].split(", Timeout:")[0].strip()
    low = first.lower()
    if "refused" in low:
        return "connection refused"
    if any(
        s in low
        for s in ("name or service not known", "nodename nor servname", "name resolution",
                  "getaddrinfo", "no address associated")
    ):
        return "host does not resolve"
    if "authentication failed" in low or "auth failed" in low:
        return "authentication failed"
    if "timed out" in low or "timeout" in low:
        return f"no answer within {timeout_s:g} s"
    if "connection closed" in low or "connection reset" in low:
        return "connection closed"
    return first[:160] or "no answer"


def _run_bounded(fn: Callable[[], Any], timeout_s: float) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread; (finished, result or exception) within ``timeout_s``.

    A daemon thread because getaddrinfo and SRV lookups take no timeout and may block for
    much longer than the budget on a machine without DNS.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["value"] = exc

    thread = threading.Thread(target=target, daemon=True, name="mongo-probe")
    thread.start()
    thread.join(max(timeout_s, 0.0))
    return ("value" in box), box.get("value")


def _tcp_probe(host: str, port: int, timeout_s: float) -> str | None:
    """None when something accepts TCP at host:port, else the reason."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return "host does not resolve"
    reason = "no address"
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout_s)
            try:
                sock.connect(addr)
                return None
            except ConnectionRefusedError:
                reason = "connection refused"
            except TimeoutError:
                reason = f"no answer within {timeout_s:g} s"
            except OSError as exc:
                reason = exc.strerror or str(exc)
    return reason


def _nodes(url: str) -> list[tuple[str, int]]:
    """Host/port pairs of a ``mongodb://`` URL without any network access ([] for +srv)."""
    if not url.startswith("mongodb://"):
        return []
    netloc = url[len("mongodb://"):].split("/", 1)[0].split("?", 1)[0]
    netloc = netloc.rsplit("@", 1)[-1]
    nodes = []
    for part in netloc.split(","):
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.lstrip(":") or "27017"
        else:
            host, _, port = part.partition(":")
            port = port or "27017"
        if host and port.isdigit():
            nodes.append((host, int(port)))
    return nodes


def _client_kwargs(timeout_s: float, socket_timeout_s: float | None = None) -> dict[str, int]:
    ms = int(timeout_s * 1000)
    sock_ms = int((socket_timeout_s if socket_timeout_s is not None else timeout_s) * 1000)
    return {"serverSelectionTimeoutMS": ms, "connectTimeoutMS": ms, "socketTimeoutMS": sock_ms}


def ping_mongo(url: str, timeout_s: float = DEFAULT_TIMEOUT_S, flag: str = "--mongo") -> None:
    """Check that a MongoDB server answers at ``url``; raise MongoUnavailable within ~timeout_s.

    ``flag`` names the command-line switch the message tells the user to drop.
    """
    _ping(url, timeout_s, _drop_hint(flag))


def _ping(url: str, timeout_s: float, hint: str) -> None:
    """ping_mongo with the advice part of the message given whole."""
    start = dt.datetime.now()

    def left() -> float:
        return timeout_s - (dt.datetime.now() - start).total_seconds()

    nodes = _nodes(url)
    if nodes:
        # Why a TCP probe first: pymongo retries a refused connection until its selection
        # timeout expires; the probe names the cause at once.
        probes = [
            _run_bounded(lambda h=h, p=p: _tcp_probe(h, p, max(left(), 0.1)), left())
            for h, p in nodes
        ]
        if not any(done and value is None for done, value in probes):
            reasons = sorted({value if done else f"no answer within {timeout_s:g} s"
                              for done, value in probes})
            raise _unreachable(url, "; ".join(str(r) for r in reasons), hint)

    def ping() -> None:
        client = pymongo.MongoClient(url, **_client_kwargs(max(left(), 0.5)))
        try:
            client.admin.command("ping")
        finally:
            client.close()

    done, value = _run_bounded(ping, max(left(), 0.5) + 0.5)
    if not done:
        raise _unreachable(url, f"no answer within {timeout_s:g} s", hint)
    if isinstance(value, pymongo.errors.ConfigurationError) and "DNS" in str(value):
        raise _unreachable(url, f"host does not resolve: {value}", hint) from value
    if isinstance(value, pymongo.errors.ConfigurationError | ValueError):
        raise MongoUnavailable(f"MongoDB URL {_redact(url)} is invalid ({value}) — {hint}")
    if isinstance(value, BaseException):
        raise _unreachable(url, _reason_from_text(str(value), timeout_s), hint) from value


# ----------------------------------------------------------------------------------------------
# Parsing targets and argv


def _sacred_mongo_kwargs(value: str) -> dict[str, Any]:
    """Sacred's ``-m`` value as MongoObserver keyword arguments (url, db_name, collection, ...).

    Mirrors sacred.observers.mongo.parse_mongo_db_arg, which crashes with AttributeError
    instead of its own ValueError when the value does not match.
    """
    match = re.match(get_pattern(), value)
    if match is None:
        raise ValueError(
            f'a MongoDB target must be a mongodb:// URL, "HOST:PORT", "HOST:PORT:DB" or "DB" '
            f"(Sacred's -m form), not {value!r}"
        )
    g = match.groupdict()
    kwargs: dict[str, Any] = {}
    if g["host1"]:
        kwargs["url"] = f"{g['host1']}:{g['port1']}"
    elif g["host2"]:
        kwargs["url"] = f"{g['host2']}:{g['port2']}"
    if g["priority"] is not None:
        kwargs["priority"] = int(g["priority"])
    for key in ("db_name", "collection", "overwrite"):
        if g[key] is not None:
            kwargs[key] = g[key]
    return kwargs


def parse_mongo_target(value: str, default_db: str = DEFAULT_DB) -> tuple[str, str]:
    """(url, db_name) of a ``mongodb://`` URL or one of Sacred's ``-m`` forms.

    A URL takes its database from the path (``default_db`` when it has none) and is returned
    unchanged. ``HOST:PORT:DB``, ``HOST:PORT`` and ``DB`` become ``mongodb://HOST:PORT``
    (``localhost:27017`` when absent, as pymongo and Sacred do). Sacred's collection, run-id and
    priority suffixes (``DB.collection:id!prio``) are accepted and ignored here.
    """
    value = value.strip()
    if value.startswith(("mongodb://", "mongodb+srv://")):
        rest = value.split("://", 1)[1]
        path = rest.split("/", 1)[1] if "/" in rest else ""
        db = path.split("?", 1)[0]
        return value, db or default_db
    kwargs = _sacred_mongo_kwargs(value)
    url = "mongodb://" + kwargs.get("url", "localhost:27017")
    return url, kwargs.get("db_name", default_db)


def _argv_options(options: Sequence[Any] | None = None) -> list[Any]:
    from sacred.experiment import gather_command_line_options

    return list(gather_command_line_options()) + list(options or [])


def sacred_mongo_arg(argv: Sequence[str]) -> str | None:
    """The value of Sacred's ``-m X`` / ``--mongo_db=X`` / ``--mongo_db X`` in ``argv``, or None.

    ``argv`` is a ``sys.argv``-like list (program name first; a list that starts with an
    option is read whole). Parsed with Sacred's own docopt usage, so ``-umX``, ``--mongo X``
    (docopt's prefix matching) and options after ``with`` are read as Sacred reads them; an
    argv that docopt rejects (a flag only run.py knows, say) is scanned token by token.
    """
    args = [str(a) for a in argv]
    if args and not args[0].startswith("-"):
        args = args[1:]
    try:
        from docopt import DocoptExit, docopt
        from sacred.arg_parser import format_usage

        usage = format_usage("dummy", "", {}, _argv_options())
        parsed = docopt(usage, args, default_help=False)
        value = parsed.get("--mongo_db")
        return str(value) if value else None
    except (DocoptExit, SystemExit, ImportError):
        pass
    found = None
    for i, tok in enumerate(args):
        if tok == "--":
            break
        if tok in ("-m", "--mongo_db") and i + 1 < len(args):
            found = args[i + 1]
        elif tok.startswith("--mongo_db="):
            found = tok.split("=", 1)[1]
        elif tok.startswith("-m") and len(tok) > 2 and not tok.startswith("--"):
            found = tok[2:]
    return found


# ----------------------------------------------------------------------------------------------
# The resilient observer


def _file_store_dir(file_store: FileStorageObserver | None) -> str | None:
    if file_store is None:
        return None
    run_dir = getattr(file_store, "dir", None)
    return str(Path(run_dir).resolve()) if run_dir else None


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
        timeout_s: float = DEFAULT_TIMEOUT_S,
        socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
        **client_kwargs: Any,
    ) -> None:
        self._owns_client = client is None
        if client is None:
            for key, ms in _client_kwargs(timeout_s, socket_timeout_s).items():
                client_kwargs.setdefault(key, ms)
            client = pymongo.MongoClient(url, **client_kwargs)
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
            f" (upload it later: python experiments/observers.py sync {where} --mongo URL)"
            if where
            else "it has no file store, so MongoDB will not hold its end"
        )
        reason = _reason_from_text(str(exc), self.timeout_s)
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
        _run_bounded(self._client.close, 2.0)

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
                raise _unreachable(
                    str(self.url or "localhost:27017"),
                    _reason_from_text(str(exc), self.timeout_s),
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
    timeout_s: float = DEFAULT_TIMEOUT_S,
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
        url, db = parse_mongo_target(mongo)
        ping_mongo(url, timeout_s=timeout_s, flag=flag)
        observers.append(
            ResilientMongoObserver(
                url, db_name=db_name or db, file_store=file_store, timeout_s=timeout_s
            )
        )
    return observers


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


def use_resilient_mongo(ex: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
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
        kwargs = _sacred_mongo_kwargs(str(value))
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


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    with open(path) as f:
        return json.load(f)


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
    import gridfs

    run_dir = Path(run_dir).resolve()
    run = _read_json(run_dir / "run.json", None)
    if run is None:
        raise FileNotFoundError(f"{run_dir} is not a file-store run folder (no run.json)")
    marker = str(run_dir)
    _ping(mongo_url, DEFAULT_TIMEOUT_S, "start it or fix the URL; the run stays in the file store")
    client = pymongo.MongoClient(mongo_url, **_client_kwargs(DEFAULT_TIMEOUT_S, 30.0))
    try:
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

        info = dict(_read_json(run_dir / "info.json", {}))
        info.pop("metrics", None)
        info["metrics"] = []
        for name, series in _read_json(run_dir / "metrics.json", {}).items():
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
        cout = run_dir / "cout.txt"
        meta = dict(run.get("meta") or {})
        meta["file_store_dir"] = marker
        entry = {
            "_id": run_id,
            "experiment": experiment,
            "format": MongoObserver.VERSION,
            "command": run.get("command"),
            "host": run.get("host", {}),
            "start_time": _parse_time(run.get("start_time")),
            "config": _read_json(run_dir / "config.json", {}),
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
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python experiments/observers.py sync RUN_DIR... --mongo TARGET``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sync = sub.add_parser("sync", help="upload file-store run folders into MongoDB")
    sync.add_argument("run_dirs", nargs="+", type=Path)
    sync.add_argument("--mongo", required=True, help="mongodb:// URL or HOST:PORT:DB")
    sync.add_argument("--db", default=None, help="database (default: from --mongo, else esrgan)")
    args = parser.parse_args(argv)
    url, db = parse_mongo_target(args.mongo)
    try:
        for run_dir in args.run_dirs:
            run_id = sync_file_run_to_mongo(run_dir, url, args.db or db)
            print(f"{run_dir} -> {args.db or db}.runs _id {run_id}")
    except MongoUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
