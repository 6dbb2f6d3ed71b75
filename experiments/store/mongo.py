"""Reaching MongoDB: one client factory (one timeout), one redaction, targets, a fast ping.

Every MongoDB client of the project is made by :func:`connect`, so every one waits at most
:data:`TIMEOUT_S` for a server and no message ever shows a password (:func:`redact`).
A target is a ``mongodb://`` URL (its path names the database, default ``esrgan``) or one of
Sacred's ``-m`` forms (``HOST:PORT:DB``, ``HOST:PORT``, ``DB``; Sacred's own ``-m`` defaults to
database ``sacred``, see ``targets``).
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import pymongo
import pymongo.errors

DEFAULT_DB = "esrgan"
"""Database used when a target names none (Sacred's own ``-m HOST:PORT`` keeps ``sacred``)."""
SACRED_DEFAULT_DB = "sacred"
TIMEOUT_S = 3.0
"""Server selection and connect timeout of every client (pymongo's default is 30 s)."""
SOCKET_TIMEOUT_S = 5.0
"""The longest wait for any one reply (a query, a run document, one 255 kB artifact chunk).

Operations are not retried (a retry would double the wait on a server that went silent), so
a MongoDB that accepts connections and never answers ends a command within TIMEOUT_S +
SOCKET_TIMEOUT_S, with one line (:func:`failure`); the file store keeps every run."""
STORE_HINT = ("start it, fix the URL, or leave MongoDB out: the file store keeps every run "
              "(upload later with python -m experiments.store.sync RUN_DIR --mongo URL)")


class MongoUnavailable(RuntimeError):
    """MongoDB cannot be reached; the message is one line that says what to do."""


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, fit for a message, a log or a report."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return str(url)
    netloc, slash, tail = rest.partition("/")
    if "@" not in netloc:
        return str(url)
    credentials, _, hosts = netloc.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{tail}"


def client_options(timeout_s: float = TIMEOUT_S,
                   socket_timeout_s: float = SOCKET_TIMEOUT_S) -> dict[str, int]:
    """pymongo keyword arguments of the project's timeouts, in milliseconds."""
    ms = int(timeout_s * 1000)
    return {"serverSelectionTimeoutMS": ms, "connectTimeoutMS": ms,
            "socketTimeoutMS": int(socket_timeout_s * 1000)}


def connect(url: str | list[str] | None, timeout_s: float = TIMEOUT_S,
            socket_timeout_s: float = SOCKET_TIMEOUT_S, **kwargs: Any) -> pymongo.MongoClient:
    """The one way this project makes a MongoDB client (short, explicit timeouts)."""
    for key, value in client_options(timeout_s, socket_timeout_s).items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("retryReads", False)
    kwargs.setdefault("retryWrites", False)
    return pymongo.MongoClient(url, **kwargs)


def failure(url: str, error: BaseException, hint: str = STORE_HINT) -> MongoUnavailable:
    """The one-line error of a MongoDB operation that failed (timed out, refused, closed)."""
    return unreachable(url, reason_from_text(str(error), SOCKET_TIMEOUT_S), hint)


# ------------------------------------------------------------------------------------------
# targets


def _sacred_pattern() -> str:
    from sacred.observers.mongo import get_pattern

    return get_pattern()


def sacred_mongo_kwargs(value: str) -> dict[str, Any]:
    """Sacred's ``-m`` value as MongoObserver keyword arguments (url, db_name, collection, ...).

    Mirrors sacred.observers.mongo.parse_mongo_db_arg, which crashes with AttributeError
    instead of its own ValueError when the value does not match.
    """
    match = re.match(_sacred_pattern(), value)
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


def parse_target(value: str, default_db: str = DEFAULT_DB) -> tuple[str, str]:
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
    kwargs = sacred_mongo_kwargs(value)
    url = "mongodb://" + kwargs.get("url", "localhost:27017")
    return url, kwargs.get("db_name", default_db)


# ------------------------------------------------------------------------------------------
# a fast, clear ping


def drop_hint(flag: str) -> str:
    """The advice of a message about an unreachable server given with ``flag``."""
    return f"start it, fix the URL, or drop {flag} to log to the file store only"


def unreachable(url: str, reason: str, hint: str) -> MongoUnavailable:
    """The one-line error of a server that does not answer."""
    return MongoUnavailable(f"MongoDB at {redact(url)} is unreachable ({reason}) — {hint}")


def reason_from_text(text: str, timeout_s: float) -> str:
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
    return redact(first[:160]) or "no answer"


def run_bounded(fn: Callable[[], Any], timeout_s: float) -> tuple[bool, Any]:
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


def ping(url: str, timeout_s: float = TIMEOUT_S, flag: str = "--mongo",
         hint: str | None = None) -> None:
    """Check that a MongoDB server answers at ``url``; raise MongoUnavailable within ~timeout_s.

    ``flag`` names the command-line switch the message tells the user to drop; ``hint``
    replaces that advice when given whole.
    """
    hint = hint or drop_hint(flag)
    start = dt.datetime.now()

    def left() -> float:
        return timeout_s - (dt.datetime.now() - start).total_seconds()

    nodes = _nodes(url)
    if nodes:
        # Why a TCP probe first: pymongo retries a refused connection until its selection
        # timeout expires; the probe names the cause at once.
        probes = [
            run_bounded(lambda h=h, p=p: _tcp_probe(h, p, max(left(), 0.1)), left())
            for h, p in nodes
        ]
        if not any(done and value is None for done, value in probes):
            reasons = sorted({value if done else f"no answer within {timeout_s:g} s"
                              for done, value in probes})
            raise unreachable(url, "; ".join(str(r) for r in reasons), hint)

    def answer() -> None:
        client = connect(url, timeout_s=max(left(), 0.5), socket_timeout_s=max(left(), 0.5))
        try:
            client.admin.command("ping")
        finally:
            client.close()

    done, value = run_bounded(answer, max(left(), 0.5) + 0.5)
    if not done:
        raise unreachable(url, f"no answer within {timeout_s:g} s", hint)
    if isinstance(value, pymongo.errors.ConfigurationError) and "DNS" in str(value):
        raise unreachable(url, f"host does not resolve: {value}", hint) from value
    if isinstance(value, pymongo.errors.ConfigurationError | ValueError):
        raise MongoUnavailable(f"MongoDB URL {redact(url)} is invalid ({value}) — {hint}")
    if isinstance(value, BaseException):
        raise unreachable(url, reason_from_text(str(value), timeout_s), hint) from value
