"""Signal or kill a process together with every process it started, on Linux, macOS and Windows.

Why a tree: inside an installed Slicer ``PythonSlicer`` is a launcher (CTKAppLauncher) that starts
``python-real`` with Slicer's environment and does not forward SIGTERM. Signalling only the launcher's pid
leaves the interpreter that runs ``dvcl`` alive (SlicerMONAIAuto3DSeg hit the same problem and kills the
children). So every signal goes to each process of the tree, the children included.

How the tree is found, best first:

* ``psutil`` (shipped with Slicer): ``Process.children(recursive=True)``; its process objects also guard
  against a pid that was reused after the process exited;
* POSIX without psutil: the parent links of ``ps -A -o pid=,ppid=`` (Linux and macOS);
* Windows without psutil: ``taskkill /T`` walks the tree itself.

The tree is snapshotted when a cancel starts and again when the kill follows: a launcher that exits first
orphans its children, and an orphan cannot be found from its former parent any more.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Any, Dict, List, Optional

try:  # shipped with Slicer; optional elsewhere
    import psutil
except ImportError:  # pragma: no cover - exercised by forcing the fallback in the tests
    psutil = None

log = logging.getLogger(__name__)

#: set to False to use the fallbacks even where psutil is installed (tests of the fallback path)
USE_PSUTIL = True


def _psutil() -> Any:
    return psutil if USE_PSUTIL else None


def _ps_children() -> Dict[int, List[int]]:
    """parent pid -> child pids from ``ps`` (POSIX); empty when ``ps`` is unavailable."""
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    children: Dict[int, List[int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    return children


class ProcessTree:
    """A snapshot of ``root_pid`` and its descendants that can be signalled and killed as one.

    Call :meth:`refresh` to add processes started since the snapshot (processes already known stay in it,
    so children orphaned by an exited launcher are still reached).
    """

    def __init__(self, root_pid: int) -> None:
        self.root_pid = int(root_pid)
        self._members: Dict[int, Any] = {}  # pid -> psutil.Process (or None without psutil)
        self.refresh()

    def refresh(self) -> ProcessTree:
        ps = _psutil()
        if ps is not None:
            try:
                root = ps.Process(self.root_pid)
                found = [root] + root.children(recursive=True)
            except ps.Error:
                found = []
            for proc in found:
                self._members.setdefault(proc.pid, proc)
            return self
        if os.name == "posix":
            links = _ps_children()
            todo, seen = [self.root_pid], set()
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                todo += links.get(pid, [])
            for pid in seen:
                self._members.setdefault(pid, None)
        else:
            self._members.setdefault(self.root_pid, None)
        return self

    @property
    def pids(self) -> List[int]:
        return sorted(self._members)

    def alive(self) -> List[int]:
        """Pids of the snapshot that are still running (zombies count as gone)."""
        return [pid for pid, proc in self._members.items() if _is_alive(pid, proc)]

    def send(self, sig: int) -> None:
        """Send ``sig`` to every living process of the tree, children first.

        On Windows there is no polite signal for a console child; SIGTERM there ends the tree like a kill.
        """
        if os.name != "posix":
            self.kill()
            return
        for pid, proc in sorted(self._members.items(), key=lambda item: item[0] == self.root_pid):
            if not _is_alive(pid, proc):
                continue
            try:
                if proc is not None:
                    proc.send_signal(sig)
                else:
                    os.kill(pid, sig)
            except (OSError, Exception) as exc:  # gone meanwhile, or not ours
                log.debug("signal %s to %d failed: %s", sig, pid, exc)

    def terminate(self) -> None:
        self.send(signal.SIGTERM)

    def kill(self) -> None:
        """Kill every process of the tree now (SIGKILL on POSIX, ``taskkill /T /F`` on Windows)."""
        if os.name == "posix":
            self.send(signal.SIGKILL)
            return
        ps = _psutil()  # pragma: no cover - Windows
        for pid, proc in self._members.items():
            if not _is_alive(pid, proc):
                continue
            try:
                if ps is not None and proc is not None:
                    proc.kill()
                else:
                    subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True, timeout=30)
            except Exception as exc:
                log.debug("kill %d failed: %s", pid, exc)


def _is_alive(pid: int, proc: Optional[Any]) -> bool:
    ps = _psutil()
    if proc is not None and ps is not None:
        try:
            return proc.is_running() and proc.status() != ps.STATUS_ZOMBIE
        except ps.Error:
            return False
    if os.name != "posix":  # pragma: no cover - Windows without psutil
        out = subprocess.run(["tasklist", "/FI", f"PID eq {pid}"], capture_output=True, text=True).stdout
        return str(pid) in out
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0); Linux's /proc says whether it has exited
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        if os.path.isdir("/proc/self"):
            return False  # Linux: no /proc entry, the process is gone
        return True  # no /proc (macOS): trust kill(0)
