"""Run a ``dvcl`` subcommand as a child process and turn its JSON-lines progress into signals.

The network never runs in Slicer's GUI process: a crash, an out-of-memory kill or a long training run must
not take the application down or freeze it. Two implementations share one parser and one set of signals:

* :class:`QtProcess` uses ``QProcess`` (PythonQt's ``qt`` inside Slicer, PySide6's ``QtCore`` in tests), so
  output arrives through the Qt event loop and the GUI stays responsive;
* :class:`SubprocessProcess` uses ``subprocess.Popen`` with reader threads, for headless scripts and pytest.

The protocol (docs/architecture.md, "Progress protocol") is one JSON object per line on stdout, logs on
stderr; exit code 0 = success, 2 = bad input, 1 = other failure, 130 = cancelled. Signals are emitted on the
thread that owns the process object (Qt's event loop, or whoever calls :meth:`poll`), never on a reader
thread, so slots may safely touch the MRML scene.
"""

from __future__ import annotations

import codecs
import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

from .ProcessTree import ProcessTree
from .Signal import Signal

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130

#: how the CLI prints a bad-input error on stderr (docs/architecture.md, "Conventions")
CLI_ERROR_PREFIX = "dvcl: error:"
#: seconds between SIGTERM (the CLI removes partial outputs) and SIGKILL. Only for segmentation/evaluation:
#: a training run is stopped through its stop-request file and given all the time its iteration needs.
DEFAULT_KILL_GRACE_S = 5.0


class ProcessStartError(RuntimeError):
    """The program could not be started at all (not found, not executable, already running)."""


@dataclass
class ProgressInfo:
    """One ``progress`` event: ``step`` of ``total`` in ``task``, with an optional ETA in seconds."""

    task: str = ""
    step: int = 0
    total: Optional[int] = None
    message: str = ""
    eta_s: Optional[float] = None

    @property
    def fraction(self) -> Optional[float]:
        """Progress in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.step / float(self.total)))


@dataclass
class ProcessResult:
    """What a finished run left behind.

    Attributes:
        exit_code: the child's exit status (None when it was killed by a signal).
        cancelled: True when :meth:`cancel` was called or the child reported cancellation (exit 130).
        error: a one-line reason when the run failed ('' on success or cancel).
        outputs: ``(path, kind)`` of every ``output`` event, in order.
        stdout: stdout lines that were not protocol events (e.g. the JSON of ``dvcl info``).
        seconds: wall time from start to exit.
    """

    exit_code: Optional[int] = None
    cancelled: bool = False
    error: str = ""
    outputs: List[Tuple[str, str]] = field(default_factory=list)
    stdout: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK and not self.cancelled and not self.error


class ProcessProtocol(Protocol):
    """What the logic classes need from a process runner (tests and Slicer inject different ones)."""

    started: Signal
    progress: Signal
    log: Signal
    metrics: Signal
    output: Signal
    error_occurred: Signal
    finished: Signal

    def start(self, args: Sequence[str], env: Optional[Mapping[str, str]] = None,
              cwd: Optional[str] = None) -> None: ...

    def cancel(self, grace_s: Optional[float] = DEFAULT_KILL_GRACE_S) -> None: ...

    def poll(self) -> bool: ...

    def wait(self, timeout: Optional[float] = None) -> ProcessResult: ...

    @property
    def running(self) -> bool: ...

    @property
    def pid(self) -> Optional[int]: ...


class ProgressEventParser:
    """Parses protocol lines and emits the matching signal; shared by both process implementations.

    Signals (arguments):
        started(task: str, total: int | None)
        progress(ProgressInfo)
        log(line: str)                          stderr lines, non-JSON stdout lines, ``message`` events' text
        metrics(event: dict)                    {"iteration", "losses", "lr", "val_dice", ...}
        output(path: str, kind: str)
        error_occurred(message: str)            only for failures, not for a requested cancel
        finished(ProcessResult)                 always last, exactly once per run
    """

    def __init__(self) -> None:
        self.started = Signal("started")
        self.progress = Signal("progress")
        self.log = Signal("log")
        self.metrics = Signal("metrics")
        self.output = Signal("output")
        self.error_occurred = Signal("error_occurred")
        self.finished = Signal("finished")
        self.last_progress: Optional[ProgressInfo] = None
        self._reset()

    def _reset(self) -> None:
        self._outputs: List[Tuple[str, str]] = []
        self._stdout_other: List[str] = []
        self._stderr_tail: List[str] = []
        self._error_event = ""
        self._cancel_requested = False
        self._done = False
        self._t0 = time.monotonic()
        self.result: Optional[ProcessResult] = None
        self.last_progress = None

    # -- starting (both runners) ---------------------------------------------------------------------
    running: bool  # the runner's property

    def _begin_start(self, args: Sequence[str]) -> None:
        """Refuse a second start and an empty command; forget the last run's events."""
        if self.running:
            raise ProcessStartError("a dvcl process is already running; cancel it or wait for it first")
        if not args:
            raise ProcessStartError("no command given")
        self._reset()

    def _start_failed(self, args: Sequence[str], reason: Any) -> ProcessStartError:
        """The program did not start: no run, nothing will be emitted; the error to raise."""
        self._proc = None
        self._done = True
        return ProcessStartError(f"cannot start '{args[0]}': {reason}")

    # -- parsing --------------------------------------------------------------------------------------
    def handle_stdout_line(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        event = _parse_event(line)
        if event is None:
            self._stdout_other.append(line)
            self.log.emit(line)
            return
        kind = event.get("event")
        if kind == "start":
            self.started.emit(str(event.get("task", "")), _opt_int(event.get("total")))
        elif kind == "progress":
            info = ProgressInfo(
                task=str(event.get("task", "")),
                step=_opt_int(event.get("step")) or 0,
                total=_opt_int(event.get("total")),
                message=str(event.get("message") or ""),
                eta_s=_opt_float(event.get("eta_s")),
            )
            self.last_progress = info
            self.progress.emit(info)
        elif kind == "metrics":
            self.metrics.emit(event)
        elif kind == "output":
            item = (str(event.get("path", "")), str(event.get("kind", "")))
            self._outputs.append(item)
            self.output.emit(*item)
        elif kind == "error":
            self._error_event = str(event.get("message", "")).strip()
        elif kind == "message" and str(event.get("message") or "").strip():  # a line for the user (adapt, demo)
            self.log.emit(str(event["message"]))
        elif kind == "done":
            self.log.emit(f"{event.get('task', 'task')} done in {_opt_float(event.get('seconds')) or 0:.1f} s")
        else:  # unknown events are shown, not dropped: the protocol may grow
            self.log.emit(line)

    def handle_stderr_line(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        self._stderr_tail = (self._stderr_tail + [line])[-20:]
        self.log.emit(line)

    def _finish(self, exit_code: Optional[int]) -> None:
        """Emit error (if any) and finished; called once when the child has exited and output is drained."""
        if self._done:
            return
        self._done = True
        cancelled = self._cancel_requested or exit_code == EXIT_CANCELLED
        error = ""
        if not cancelled and exit_code != EXIT_OK:
            error = self._failure_message(exit_code)
        self.result = ProcessResult(
            exit_code=exit_code,
            cancelled=cancelled,
            error=error,
            outputs=list(self._outputs),
            stdout="\n".join(self._stdout_other),
            seconds=time.monotonic() - self._t0,
        )
        if error:
            self.error_occurred.emit(error)
        self.finished.emit(self.result)

    def _failure_message(self, exit_code: Optional[int]) -> str:
        """The most specific one-line reason: the error event, else the CLI's error line, else the log tail."""
        if self._error_event and self._error_event != "cancelled":
            return self._error_event
        for line in reversed(self._stderr_tail):
            if line.startswith(CLI_ERROR_PREFIX) and line[len(CLI_ERROR_PREFIX):].strip():
                return line[len(CLI_ERROR_PREFIX):].strip()
        tail = [t for t in self._stderr_tail if t.strip()][-3:]
        code = "a signal" if exit_code is None else f"code {exit_code}"
        return f"dvcl exited with {code}" + (f": {' | '.join(tail)}" if tail else "")


def _parse_event(line: str) -> Optional[Dict[str, Any]]:
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("event"), str):
        return obj
    return None


def _opt_int(v: Any) -> Optional[int]:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _opt_float(v: Any) -> Optional[float]:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _merged_env(env: Optional[Mapping[str, str]]) -> Dict[str, str]:
    merged = dict(os.environ)
    merged["PYTHONUNBUFFERED"] = "1"  # log lines arrive while they happen, not at exit
    merged.setdefault("PYTHONIOENCODING", "utf-8")
    if env:
        merged.update({str(k): str(v) for k, v in env.items()})
    return merged


class SubprocessProcess(ProgressEventParser):
    """``subprocess.Popen`` + two reader threads; events are delivered by :meth:`poll` / :meth:`wait`.

    POSIX children start in their own session so that cancel can kill the whole group (data-loader workers
    included) when the polite SIGTERM is not enough, and so that Ctrl-C in a terminal does not hit them twice.
    """

    def __init__(self) -> None:
        super().__init__()
        self._proc: Optional[subprocess.Popen] = None
        self._queue: queue.Queue[Tuple[str, Optional[str]]] = queue.Queue()
        self._eof = {"out": True, "err": True}
        self._kill_timer: Optional[threading.Timer] = None

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._done

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def start(self, args: Sequence[str], env: Optional[Mapping[str, str]] = None,
              cwd: Optional[str] = None) -> None:
        self._begin_start(args)
        self._queue = queue.Queue()
        try:
            self._proc = subprocess.Popen(
                [str(a) for a in args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=cwd, env=_merged_env(env), start_new_session=(os.name == "posix"),
            )
        except OSError as exc:
            raise self._start_failed(args, exc.strerror or exc) from exc
        self._eof = {"out": False, "err": False}
        for key, stream in (("out", self._proc.stdout), ("err", self._proc.stderr)):
            threading.Thread(target=self._reader, args=(key, stream), daemon=True,
                             name=f"dvcl-{key}-{self._proc.pid}").start()

    def _reader(self, key: str, stream) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            for chunk in iter(lambda: stream.readline(), b""):
                pending += decoder.decode(chunk)
                while "\n" in pending:
                    line, pending = pending.split("\n", 1)
                    self._queue.put((key, line))
        finally:
            pending += decoder.decode(b"", final=True)
            if pending:
                self._queue.put((key, pending))
            self._queue.put((key, None))
            stream.close()

    def poll(self) -> bool:
        """Deliver pending events on the calling thread; returns True while the run is not finished."""
        if self._proc is None or self._done:
            return False
        while True:
            try:
                key, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof[key] = True
            elif key == "out":
                self.handle_stdout_line(line)
            else:
                self.handle_stderr_line(line)
        if all(self._eof.values()) and self._proc.poll() is not None:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            code = self._proc.returncode
            self._finish(code if code is not None and code >= 0 else None)
            return False
        return True

    def wait(self, timeout: Optional[float] = None) -> ProcessResult:
        """Block (polling) until the run ends. For scripts and tests; the GUI never calls this."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"dvcl process {self.pid} still running after {timeout} s")
            time.sleep(0.02)
        if self.result is None:
            raise ProcessStartError("wait() called before start()")
        return self.result

    def cancel(self, grace_s: Optional[float] = DEFAULT_KILL_GRACE_S) -> None:
        """SIGTERM to the whole process tree now (the CLI removes partial outputs and exits 130), SIGKILL to
        what is left of it after ``grace_s`` (None: never; the child decides when it is done).

        The tree, not just the child: the child may be a launcher (Slicer's ``PythonSlicer``) that does not
        forward signals to the interpreter it started (``ProcessTree.py``).
        """
        if not self.running or self._proc is None:
            return
        self._cancel_requested = True
        if self._proc.poll() is not None:  # the child is gone but what it started still holds the pipes
            self._kill(ProcessTree(self._proc.pid))
            return
        tree = ProcessTree(self._proc.pid)
        tree.terminate()
        if grace_s is None:
            return
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self._kill_timer = threading.Timer(max(0.0, grace_s), self._kill, args=(tree,))
        self._kill_timer.daemon = True
        self._kill_timer.start()

    def _kill(self, tree: ProcessTree) -> None:
        proc = self._proc
        tree.refresh()
        tree.kill()
        if proc is not None and os.name == "posix":
            try:  # the session started for the child: also reaches processes that left the tree
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass


def _enum_int(value: Any) -> int:
    """Qt enums are ints in PythonQt and enum objects in PySide6."""
    try:
        return int(value)
    except TypeError:
        return int(value.value)


def _qbytes(data: Any) -> bytes:
    """QByteArray -> bytes for both PythonQt (``.data()``) and PySide6 (buffer protocol)."""
    raw = data.data() if hasattr(data, "data") else data
    if isinstance(raw, str):  # some PythonQt builds return str
        return raw.encode("utf-8", "replace")
    return bytes(raw)


class QtProcess(ProgressEventParser):
    """``QProcess`` runner: events arrive through the Qt event loop, so the GUI never blocks.

    Args:
        qt_core: the module that provides ``QProcess``, ``QProcessEnvironment``, ``QTimer`` and
            ``QCoreApplication`` (Slicer's ``qt``; ``PySide6.QtCore`` in tests). Defaults to ``import qt``.
    """

    _NORMAL_EXIT = 0
    #: finished QProcess objects kept alive until the event loop has left their signal emission: the logic
    #: drops its reference to this runner inside the ``finished`` slot, and deleting a QProcess from within
    #: its own signal would free it under Qt's feet
    _retired: List[Any] = []

    def __init__(self, qt_core: Any = None) -> None:
        super().__init__()
        if qt_core is None:
            import qt as qt_core  # noqa: PLC0415 - only exists inside Slicer
        self._qt = qt_core
        self._proc = None
        self._decoders: Dict[str, Any] = {}
        self._buffers: Dict[str, str] = {}
        self._tree: Optional[ProcessTree] = None
        self._kill_deadline = 0.0
        self._pending_exit: Optional[Tuple[Optional[int]]] = None

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._done

    @property
    def pid(self) -> Optional[int]:
        if self._proc is None:
            return None
        pid = int(self._proc.processId())
        return pid or None

    def start(self, args: Sequence[str], env: Optional[Mapping[str, str]] = None,
              cwd: Optional[str] = None) -> None:
        self._begin_start(args)
        self._tree = None
        self._pending_exit = None
        qt = self._qt
        proc = qt.QProcess()
        qenv = qt.QProcessEnvironment()
        for key, value in _merged_env(env).items():
            qenv.insert(key, value)
        proc.setProcessEnvironment(qenv)
        if cwd:
            proc.setWorkingDirectory(str(cwd))
        self._decoders = {k: codecs.getincrementaldecoder("utf-8")(errors="replace") for k in ("out", "err")}
        self._buffers = {"out": "", "err": ""}
        proc.readyReadStandardOutput.connect(lambda: self._read("out"))
        proc.readyReadStandardError.connect(lambda: self._read("err"))
        proc.finished.connect(self._on_finished)
        self._proc = proc
        proc.start(str(args[0]), [str(a) for a in args[1:]])
        if not proc.waitForStarted(10000):
            raise self._start_failed(args, proc.errorString())

    def _read(self, key: str, final: bool = False) -> None:
        if self._proc is None:
            return
        data = self._proc.readAllStandardOutput() if key == "out" else self._proc.readAllStandardError()
        text = self._buffers[key] + self._decoders[key].decode(_qbytes(data), final=final)
        lines = text.split("\n")
        self._buffers[key] = "" if final else lines.pop()
        handler = self.handle_stdout_line if key == "out" else self.handle_stderr_line
        for line in lines:
            handler(line)

    def _on_finished(self, *args: Any) -> None:
        if self._proc is None or self._done:
            return
        self._read("out", final=True)
        self._read("err", final=True)
        crashed = _enum_int(self._proc.exitStatus()) != self._NORMAL_EXIT
        QtProcess._retired.append(self._proc)
        self._qt.QTimer.singleShot(2000, QtProcess._release_retired)
        code = None if crashed else int(self._proc.exitCode())
        if self._tree is not None and self._pending_exit is None and self._tree.alive():
            # a launcher that died on SIGTERM left its interpreter behind: report the end when that is gone too
            self._pending_exit = (code,)
            self._await_tree()
            return
        self._finish(code)

    def _await_tree(self) -> None:
        if self._done or self._tree is None or self._pending_exit is None:
            return
        if self._tree.alive() and time.monotonic() < self._kill_deadline:
            self._qt.QTimer.singleShot(100, self._await_tree)
            return
        self._tree.kill()
        self._finish(self._pending_exit[0])

    @staticmethod
    def _release_retired() -> None:
        QtProcess._retired.clear()

    def poll(self) -> bool:
        """Let Qt deliver pending events (only needed outside a running event loop)."""
        if self._proc is None or self._done:
            return False
        self._qt.QCoreApplication.processEvents()
        return not self._done

    def wait(self, timeout: Optional[float] = None) -> ProcessResult:
        """Block until the run ends, pumping Qt events. For scripts and tests; the GUI never calls this."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._proc is not None and not self._done:
            if not self._proc.waitForFinished(50):
                time.sleep(0.01)  # already exited (waiting for its orphaned children): do not spin
            self._qt.QCoreApplication.processEvents()
            if deadline is not None and time.monotonic() > deadline and not self._done:
                raise TimeoutError(f"dvcl process {self.pid} still running after {timeout} s")
        if self.result is None:
            raise ProcessStartError("wait() called before start()")
        return self.result

    def cancel(self, grace_s: Optional[float] = DEFAULT_KILL_GRACE_S) -> None:
        """SIGTERM to the whole process tree now, kill what is left of it after ``grace_s`` (see
        :meth:`SubprocessProcess.cancel`: ``QProcess.terminate()`` alone reaches only the launcher)."""
        if not self.running or self._proc is None:
            return
        self._cancel_requested = True
        proc = self._proc
        pid = self.pid
        tree = ProcessTree(pid) if pid else None
        self._tree = tree
        self._kill_deadline = float("inf") if grace_s is None else time.monotonic() + max(0.0, grace_s)
        if tree is not None:
            tree.terminate()
        else:
            proc.terminate()
        if grace_s is not None:
            self._qt.QTimer.singleShot(int(max(0.0, grace_s) * 1000), lambda: self._kill(proc, tree))

    def _kill(self, proc: Any, tree: Optional[ProcessTree]) -> None:
        if tree is not None:
            tree.refresh()
            tree.kill()
        if proc is self._proc and not self._done:
            proc.kill()


def default_process() -> ProcessProtocol:
    """A ``QtProcess`` inside a running Qt application (Slicer), else a ``SubprocessProcess``."""
    try:
        import qt  # noqa: PLC0415 - PythonQt, only inside Slicer

        if qt.QCoreApplication.instance() is not None:
            return QtProcess(qt)
    except ImportError:
        pass
    return SubprocessProcess()
