"""The run store: where runs are written (Sacred observers) and read back (matrix, resume,
analysis). Nothing outside this package knows the layout of a stored run.

- ``record``:   what a stored run is (``RunRecord``) and its identity ``(kind, cell_key)``
- ``files``:    Sacred's file-store layout (the only code that opens its files by name)
- ``mongo``:    reaching MongoDB: one client factory, one timeout, one redaction, a fast ping
- ``reader``:   the one reader of both stores; what is COMPLETED; reconciling the two
- ``targets``:  where a command's runs go (``--runs``/``--mongo``, Sacred's ``-F``/``-m``, env)
- ``observer``: Sacred observers that never hang and never lose a run (imports Sacred)
- ``sync``:     upload a file-store run into MongoDB (``python -m experiments.store.sync``)

The names below are the package's reading side, importable without Sacred.
"""

from experiments.store.mongo import MongoUnavailable, redact
from experiments.store.reader import (
    FileStore,
    MongoStore,
    StoreError,
    completed,
    file_store_completed,
    mongo_completed,
    open_store,
    open_stores,
    select_runs,
)
from experiments.store.record import Key, RunRecord

__all__ = [
    "FileStore",
    "Key",
    "MongoStore",
    "MongoUnavailable",
    "RunRecord",
    "StoreError",
    "completed",
    "file_store_completed",
    "mongo_completed",
    "open_store",
    "open_stores",
    "redact",
    "select_runs",
]
