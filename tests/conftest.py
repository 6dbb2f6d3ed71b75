"""Shared test fixtures: the ../shared data folder and a real MongoDB wire-protocol server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The commands the tests start (run.py, matrix.py, make) import this checkout's packages, not
# whatever checkout an installed environment points at (a second worktree on one venv).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder beside the repository (test data only; the product never reads it).

    ESRGAN_SHARED overrides the location. Tests that use it are skipped when it is absent.
    """
    path = Path(os.environ.get("ESRGAN_SHARED", REPO_ROOT.parent / "shared"))
    if not (path / "data").is_dir():
        pytest.skip(f"shared test data not found at {path} (set ESRGAN_SHARED)")
    return path


@pytest.fixture()
def unwritable_dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Real folders that refuse new files for the user running the tests, by kind.

    ``chmod 555`` stops only users without CAP_DAC_OVERRIDE (root writes anyway), so it is
    offered only where a write into it really fails; sysfs refuses new files even to root
    (while ``os.access`` says yes). Skips if neither works here.
    """

    def refuses(folder: Path) -> bool:
        try:
            (folder / "esrgan-write-test").touch()
        except OSError:
            return True
        (folder / "esrgan-write-test").unlink()
        return False

    places: dict[str, Path] = {}
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if refuses(locked):
        places["chmod 555"] = locked
    sysfs = Path("/sys/kernel")
    if sysfs.is_dir() and refuses(sysfs):
        places["sysfs"] = sysfs
    if not places:
        pytest.skip("no unwritable folder found here")
    yield places
    locked.chmod(0o755)  # so that pytest can remove tmp_path


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_signals() -> None:
    """``preexec_fn`` of a child a test signals: SIGINT and SIGTERM at their defaults.

    A test runner started under nohup, with ``&`` in a script or by some CI runners
    inherits an ignored SIGINT, and so would the run it starts (Python then installs no
    KeyboardInterrupt handler); a user pressing Ctrl-C has the default disposition.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str,
             limit_s: float = 900) -> None:
    """Wait until ``condition()`` holds (an event the code emits), failing if ``proc`` ends.

    ``limit_s`` only keeps a broken run from hanging the suite; a slow machine just waits.
    """
    deadline = time.monotonic() + limit_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {limit_s:.0f} s")
        time.sleep(0.05)


def stage2_checkpoint_step(work: Path) -> int:
    """The step of the stage-2 checkpoint under a run's ``work`` dir (0: none or being written);
    tests poll it to kill a run in the middle of stage 2."""
    import torch

    for ckpt in (work / "stage2").glob("*/checkpoint.pth"):
        try:
            return int(torch.load(ckpt, weights_only=True)["step"])
        except Exception:  # being replaced right now
            return 0
    return 0


def _nx_binary() -> str:
    exe = Path(sys.executable).with_name("nx-27017")
    if exe.exists():
        return str(exe)
    found = shutil.which("nx-27017")
    if not found:
        pytest.skip("nx-27017 is not installed (pip install nx-27017)")
    return found


class MongoServer:
    """An nx-27017 process (MongoDB wire protocol on SQLite) on a loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        pid_file = self.workdir / f"nx-{self.port}.pid"
        cmd = [
            # --data-dir: one SQLite file per logical database, so databases stay separate
            _nx_binary(), "--data-dir", str(self.workdir / "data"), "-p", str(self.port),
            "--log-file", str(self.workdir / "nx.log"), "--pid-file", str(pid_file),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nx-27017 exited with {self.proc.returncode}") from None
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("nx-27017 did not start listening within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """One nx-27017 server for the whole session; tests use their own database names."""
    server = MongoServer(tmp_path_factory.mktemp("mongo"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def mongo_factory(tmp_path: Path) -> Iterator:
    """Start private servers (for tests that kill the server); all are stopped afterwards."""
    servers: list[MongoServer] = []

    def make() -> MongoServer:
        srv = MongoServer(tmp_path / f"mongo{len(servers)}")
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()
