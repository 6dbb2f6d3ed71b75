"""Where a command's runs go: the file store and, when asked, MongoDB.

One place reads every way of naming them, so that the observers, the "already COMPLETED"
check and the matrix always look at the same stores:

- the file store: ``--runs DIR``, else the environment variable ``ESRGAN_RUNS``, else ``./runs``;
- MongoDB: ``--mongo URL``, else the environment variable ``ESRGAN_MONGO`` (how the matrix
  hands the URL to its cells, so that it never shows in a process list or a log).

Sacred's own ``-F DIR`` and ``-m HOST:PORT:DB`` (and their long forms) are read here once, as
``--runs DIR`` and ``--mongo mongodb://HOST:PORT/DB`` (database ``sacred`` when ``-m`` names
none, as Sacred has it); nothing downstream sees Sacred's forms. Sacred itself is kept from
adding a second store for them by ``observer.attach_stores``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.store.files import RUNS_ENV, runs_root
from experiments.store.mongo import SACRED_DEFAULT_DB, parse_target, redact, sacred_mongo_kwargs

MONGO_ENV = "ESRGAN_MONGO"


@dataclass(frozen=True)
class StoreTargets:
    """The stores of one command: a file store folder and an optional MongoDB target."""

    runs: Path
    mongo: str | None = None  # a mongodb:// URL (or HOST:PORT:DB, database default 'esrgan')
    mongo_flag: str = "--mongo"  # the option the user typed, named in messages only

    @property
    def mongo_url_db(self) -> tuple[str, str] | None:
        """(url, database) of the MongoDB target."""
        return parse_target(self.mongo) if self.mongo else None

    @property
    def mongo_target(self) -> str | None:
        """The MongoDB target as a URL with its database (what the readers take)."""
        pair = self.mongo_url_db
        if pair is None:
            return None
        url, db = pair
        base = url.split("?", 1)[0].rstrip("/")
        if base.count("/") > 2:  # the URL names a database already
            return url
        query = "?" + url.split("?", 1)[1] if "?" in url else ""
        return f"{base}/{db}{query}"

    def describe(self) -> str:
        """The stores in words, password hidden: 'runs + MongoDB mongodb://u:***@h/db'."""
        text = str(self.runs)
        return text + (f" + MongoDB {redact(self.mongo_target or '')}" if self.mongo else "")

    def environment(self) -> dict[str, str]:
        """Environment variables that hand these stores to a child command."""
        env = {RUNS_ENV: str(self.runs)}
        if self.mongo:
            env[MONGO_ENV] = self.mongo_target or self.mongo
        return env


def _sacred_options() -> list[Any]:
    from sacred.experiment import gather_command_line_options

    return list(gather_command_line_options())


def sacred_option_value(argv: Sequence[str], long: str, short: str) -> str | None:
    """The value of one of Sacred's command-line options in ``argv`` (None if absent).

    ``argv`` is a ``sys.argv``-like list (program name first; a list that starts with an
    option is read whole). Parsed with Sacred's own docopt usage, so stacked short flags
    (``-umX``), docopt's prefix matching and options after ``with`` are read as Sacred reads
    them; an argv that docopt rejects (a flag only run.py knows, say) is scanned token by token.
    """
    args = [str(a) for a in argv]
    if args and not args[0].startswith("-"):
        args = args[1:]
    try:
        from docopt import DocoptExit, docopt
        from sacred.arg_parser import format_usage

        usage = format_usage("dummy", "", {}, _sacred_options())
        parsed = docopt(usage, args, default_help=False)
        value = parsed.get(long)
        return str(value) if value else None
    except (DocoptExit, SystemExit, ImportError):
        pass
    found = None
    for i, tok in enumerate(args):
        if tok == "--":
            break
        if tok in (short, long) and i + 1 < len(args):
            found = args[i + 1]
        elif tok.startswith(long + "="):
            found = tok.split("=", 1)[1]
        elif tok.startswith(short) and len(tok) > 2 and not tok.startswith("--"):
            found = tok[2:]
    return found


def sacred_mongo_arg(argv: Sequence[str]) -> str | None:
    """The value of Sacred's ``-m X`` / ``--mongo_db=X`` / ``--mongo_db X`` in ``argv``."""
    return sacred_option_value(argv, "--mongo_db", "-m")


def sacred_file_storage_arg(argv: Sequence[str]) -> str | None:
    """The value of Sacred's ``-F DIR`` / ``--file_storage=DIR`` in ``argv``."""
    return sacred_option_value(argv, "--file_storage", "-F")


def _take(argv: Sequence[str], flag: str) -> tuple[str | None, list[str]]:
    """(value of ``flag VALUE`` / ``flag=VALUE``, argv without it); the last one wins."""
    rest, value = [], None
    args = iter(argv)
    for arg in args:
        if arg == flag:
            value = next(args, None)
            if value is None:
                raise ValueError(f"{flag} needs a value")
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return value, rest


def _sacred_m(value: str) -> str:
    """Sacred's ``-m`` value as the ``--mongo`` URL it means (database ``sacred`` by default).

    Raises ValueError (one line) for Sacred's collection and run-id suffixes: every reader of
    this project looks in the ``runs`` collection. A priority suffix changes nothing (the file
    store is written first whatever it says).
    """
    extra = sorted(set(sacred_mongo_kwargs(value)) - {"url", "db_name", "priority"})
    if extra:
        raise ValueError(f"Sacred's -m {value!r}: its {' and '.join(extra)} suffix is not taken "
                         "here (the stores keep runs in the collection 'runs'): give "
                         "-m HOST:PORT:DB or --mongo mongodb://HOST:PORT/DB")
    url, db = parse_target(value, default_db=SACRED_DEFAULT_DB)
    return f"{url}/{db}"


def from_argv(argv: Sequence[str], environ: Mapping[str, str] | None = None
              ) -> tuple[StoreTargets, list[str]]:
    """The stores named on a command line (and in the environment), and the argv left for
    Sacred (``--runs``/``--mongo`` removed; Sacred's ``-F``/``-m`` stay in it, read here as
    ``--runs``/``--mongo``: see the module).

    Raises ValueError (one line) when two options name the same store.
    """
    environ = os.environ if environ is None else environ
    mongo, rest = _take(list(argv), "--mongo")
    runs, rest = _take(rest, "--runs")
    sacred_runs, sacred_mongo = sacred_file_storage_arg(rest), sacred_mongo_arg(rest)
    if runs and sacred_runs:
        raise ValueError("both --runs and Sacred's -F name the file store: give one")
    if mongo and sacred_mongo:
        raise ValueError("both --mongo and Sacred's -m name a MongoDB: give one")
    runs = runs or sacred_runs or environ.get(RUNS_ENV)
    folder = Path(runs) if runs else runs_root()
    flag = "-m" if sacred_mongo else "--mongo"
    mongo = _sacred_m(sacred_mongo) if sacred_mongo else mongo or environ.get(MONGO_ENV) or None
    if mongo:
        parse_target(mongo)  # a malformed target is refused here, before anything runs
    return StoreTargets(folder, mongo, flag), rest
