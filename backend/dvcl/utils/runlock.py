"""An exclusive claim on an output folder: two ``dvcl train`` runs into one ``--out`` must not mix files.

The claim is ``FOLDER/.lock``, holding the owner's pid and host, locked with ``flock``. The kernel drops a
``flock`` when its process dies, however it dies (kill -9 included), so a lock file left by a dead run is
simply taken over by the next one; no pid guessing is needed on Linux/macOS. Where ``fcntl`` is missing
(Windows) the file is created exclusively and a stale one is taken over when its pid no longer runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Iterator, Optional

from dvcl.errors import ConfigError, OutputWriteError
from dvcl.utils.atomic import describe_os_error

LOCK_NAME = ".lock"
#: a file that asks whoever works in the folder to stop: a training run saves its checkpoint and stops at the next
#: iteration (how the Slicer module stops a run: its launcher forwards no signal), a stopped experiment grid starts
#: no queued run. One name for both, here, where neither torch nor the trainer is needed to read it.
STOP_FILE = "STOP"


class FolderInUseError(ConfigError):
    """Another live process holds the folder's lock."""


def _owner(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        return f"pid {info.get('pid')} on {info.get('host')}"
    except (OSError, ValueError):
        return "another process"


@contextlib.contextmanager
def claim_folder(folder: Path, what: str = "run folder") -> Iterator[Path]:
    """Hold ``folder/.lock`` for the duration of the block.

    Raises:
        FolderInUseError: a live process holds it (one line naming the pid).
        OutputWriteError: the folder cannot be created or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputWriteError(f"cannot claim {what} {describe_os_error(exc, folder)}") from exc
    lock_path = folder / LOCK_NAME
    try:
        _acquire(fd, lock_path, folder, what)
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock


def _acquire(fd: int, lock_path: Path, folder: Path, what: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        _acquire_pidfile(lock_path, folder, what)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderInUseError(f"{folder}: {what} is in use by {_owner(lock_path)}; wait for it or choose "
                               "another --out") from None


def _acquire_pidfile(lock_path: Path, folder: Path, what: str) -> None:  # pragma: no cover - Windows
    pid: Optional[int] = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(json.loads(lock_path.read_text() or "{}").get("pid"))
    if pid and pid != os.getpid():
        with contextlib.suppress(OSError):
            os.kill(pid, 0)
            raise FolderInUseError(f"{folder}: {what} is in use by pid {pid}; wait for it or choose another --out")
