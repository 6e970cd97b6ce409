"""The process runners and the progress-protocol parser, with real child processes.

The children are small Python scripts that speak the protocol of docs/architecture.md, so the tests can
script every case (events, crash, error line, a child that ignores SIGTERM) and still go through real pipes,
real signals and real exit codes. The QProcess runner is exercised with PySide6's QtCore, the same API that
Slicer's PythonQt ``qt`` module offers.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time

import pytest

from DVCLSegmentationLib.Process import (
    EXIT_CANCELLED,
    ProcessStartError,
    ProgressEventParser,
    ProgressInfo,
    QtProcess,
    SubprocessProcess,
)
from DVCLSegmentationLib.Signal import Signal

EVENTS_SCRIPT = textwrap.dedent("""
    import json, sys
    def ev(**kw):
        sys.stdout.write(json.dumps(kw) + "\\n"); sys.stdout.flush()
    ev(event="start", task="segment", total=3)
    print("a plain stdout line", flush=True)
    sys.stderr.write("INFO loading model\\n"); sys.stderr.flush()
    ev(event="progress", task="segment", step=1, total=3, message="network", eta_s=2.5)
    ev(event="metrics", iteration=10, losses={"sup": 0.5, "cps": 0.25}, lr=0.1, val_dice=None)
    ev(event="output", path="/tmp/x.nii.gz", kind="segmentation")
    ev(event="progress", task="segment", step=3, total=3, message="done", eta_s=0.0)
    ev(event="done", task="segment", seconds=0.1)
""")

FAIL_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.stdout.write(json.dumps({"event": "error", "message": "x.nii.gz: not a 3D image"}) + "\\n")
    sys.stderr.write("dvcl: error: x.nii.gz: not a 3D image\\n")
    sys.exit(2)
""")

CRASH_SCRIPT = ("import sys; sys.stderr.write('Traceback (most recent call last):\\nZeroDivisionError: boom\\n'); "
                "sys.exit(1)")

# behaves like the dvcl CLI on SIGTERM: cleans up and exits 130
POLITE_SCRIPT = textwrap.dedent("""
    import json, signal, sys, time
    def stop(*_):
        sys.stdout.write(json.dumps({"event": "error", "message": "cancelled"}) + "\\n"); sys.stdout.flush()
        sys.exit(130)
    signal.signal(signal.SIGTERM, stop)
    sys.stdout.write(json.dumps({"event": "start", "task": "train", "total": 1000}) + "\\n"); sys.stdout.flush()
    time.sleep(60)
""")

STUBBORN_SCRIPT = textwrap.dedent("""
    import json, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.write(json.dumps({"event": "start", "task": "train", "total": 1}) + "\\n"); sys.stdout.flush()
    time.sleep(60)
""")


# Slicer's PythonSlicer stand-in: starts the real interpreter and forwards no signal (CTKAppLauncher does not);
# "ignore": SIGTERM is ignored; "die": SIGTERM ends the launcher and orphans the interpreter
LAUNCHER_SCRIPT = textwrap.dedent("""
    import signal, subprocess, sys
    if sys.argv[1] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2]])
    sys.exit(child.wait())
""")
PID_LINE = "import os, sys; sys.stderr.write(f'CHILD_PID={os.getpid()}\\n'); sys.stderr.flush()\n"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process reused the pid
        return True
    # a zombie still answers kill(0); /proc says whether it has exited
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Recorder:
    """Collects every signal of a process (slots only append; assertions happen outside them)."""

    def __init__(self, process) -> None:
        self.events = []
        for name in ("started", "progress", "log", "metrics", "output", "error_occurred", "finished"):
            getattr(process, name).connect(lambda *args, n=name: self.events.append((n, args)))

    def of(self, name):
        return [args for n, args in self.events if n == name]


def test_signal_connect_emit_disconnect():
    sig = Signal("s")
    got = []
    slot = sig.connect(lambda a, b: got.append(a + b))
    sig.connect(slot)  # the same slot twice is called once
    sig.emit(2, 3)
    assert got == [5]
    sig.disconnect(slot)
    sig.emit(1, 1)
    assert got == [5]
    with pytest.raises(TypeError):
        sig.connect("not callable")


def test_signal_slot_error_does_not_stop_other_slots():
    Signal.raise_errors = False
    sig = Signal("s")
    got = []

    def bad(_):
        raise RuntimeError("broken slot")

    sig.connect(bad)
    sig.connect(got.append)
    sig.emit(7)
    assert got == [7]


def test_parser_maps_each_event_to_its_signal():
    parser = ProgressEventParser()
    rec = Recorder(parser)
    for line in [
        '{"event": "start", "task": "segment", "total": 4}',
        '{"event": "progress", "task": "segment", "step": 2, "total": 4, "message": "network", "eta_s": 12.0}',
        '{"event": "metrics", "iteration": 100, "losses": {"sup": 0.5}, "lr": 0.09, "val_dice": 0.7}',
        '{"event": "output", "path": "/abs/out.seg.nrrd", "kind": "segmentation"}',
        "not json at all",
        '{"no_event_key": 1}',
        '{"event": "future_event", "x": 1}',
        '{"event": "message", "task": "adapt", "message": "adapting model m to 2 scans"}',
    ]:
        parser.handle_stdout_line(line + "\n")
    assert rec.of("started") == [("segment", 4)]
    (info,), = rec.of("progress")
    assert info == ProgressInfo(task="segment", step=2, total=4, message="network", eta_s=12.0)
    assert info.fraction == 0.5
    (metrics,), = rec.of("metrics")
    assert metrics["iteration"] == 100 and metrics["val_dice"] == 0.7
    assert rec.of("output") == [("/abs/out.seg.nrrd", "segmentation")]
    # non-protocol lines are shown, not dropped
    assert [a[0] for a in rec.of("log")] == ["not json at all", '{"no_event_key": 1}',
                                             '{"event": "future_event", "x": 1}',
                                             "adapting model m to 2 scans"]  # a message event: its text
    parser._finish(0)
    assert parser.result.ok and parser.result.outputs == [("/abs/out.seg.nrrd", "segmentation")]
    assert rec.events[-1][0] == "finished" and not rec.of("error_occurred")


@pytest.mark.parametrize("stderr, error_event, code, expected", [
    (["dvcl: error: a.nii.gz: label map on another grid"], "", 2, "a.nii.gz: label map on another grid"),
    (["dvcl: error: from stderr"], "from the event", 2, "from the event"),
    (["Traceback (most recent call last):", "  File x", "MemoryError"], "", 1,
     "dvcl exited with code 1: Traceback (most recent call last): |   File x | MemoryError"),
    ([], "", None, "dvcl exited with a signal"),
])
def test_parser_failure_message(stderr, error_event, code, expected):
    parser = ProgressEventParser()
    errors = []
    parser.error_occurred.connect(errors.append)
    for line in stderr:
        parser.handle_stderr_line(line)
    if error_event:
        parser.handle_stdout_line(json.dumps({"event": "error", "message": error_event}))
    parser._finish(code)
    assert errors == [expected]
    assert parser.result.error == expected and not parser.result.ok and not parser.result.cancelled


def test_exit_130_counts_as_cancelled_not_as_error():
    parser = ProgressEventParser()
    errors = []
    parser.error_occurred.connect(errors.append)
    parser.handle_stdout_line('{"event": "error", "message": "cancelled"}')
    parser._finish(EXIT_CANCELLED)
    assert parser.result.cancelled and errors == []


def _factories():
    out = [pytest.param(lambda: SubprocessProcess(), id="subprocess")]
    try:
        from PySide6 import QtCore

        def qt_process():
            QtCore.QCoreApplication.instance() or _qt_app()
            return QtProcess(QtCore)

        out.append(pytest.param(qt_process, id="qprocess"))
    except ImportError:  # pragma: no cover
        out.append(pytest.param(None, id="qprocess", marks=pytest.mark.skip(reason="PySide6 not installed")))
    return out


_APP = []


def _qt_app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    _APP.append(app)
    return app


@pytest.mark.parametrize("factory", _factories())
def test_successful_run_emits_events_in_order(factory):
    process = factory()
    rec = Recorder(process)
    process.start([sys.executable, "-c", EVENTS_SCRIPT])
    result = process.wait(20)
    assert result.ok and result.exit_code == 0 and not result.cancelled
    assert result.outputs == [("/tmp/x.nii.gz", "segmentation")]
    assert result.stdout == "a plain stdout line"
    assert rec.of("started") == [("segment", 3)]
    assert [a[0].step for a in rec.of("progress")] == [1, 3]
    assert rec.of("metrics")[0][0]["losses"] == {"sup": 0.5, "cps": 0.25}
    logs = [a[0] for a in rec.of("log")]
    assert "a plain stdout line" in logs and "INFO loading model" in logs
    names = [n for n, _ in rec.events]
    assert names[-1] == "finished" and names.count("finished") == 1
    assert not process.running


@pytest.mark.parametrize("factory", _factories())
@pytest.mark.parametrize("script, code, message", [
    (FAIL_SCRIPT, 2, "x.nii.gz: not a 3D image"),
    (CRASH_SCRIPT, 1, "dvcl exited with code 1: Traceback (most recent call last): | ZeroDivisionError: boom"),
])
def test_failed_run_reports_one_clear_error(factory, script, code, message):
    process = factory()
    rec = Recorder(process)
    process.start([sys.executable, "-c", script])
    result = process.wait(20)
    assert result.exit_code == code and not result.ok and not result.cancelled
    assert rec.of("error_occurred") == [(message,)]
    assert [n for n, _ in rec.events][-2:] == ["error_occurred", "finished"]


@pytest.mark.parametrize("factory", _factories())
def test_cancel_terminates_the_child(factory):
    process = factory()
    rec = Recorder(process)
    process.start([sys.executable, "-c", POLITE_SCRIPT])
    deadline = time.monotonic() + 20
    while not rec.of("started"):  # the child has installed its SIGTERM handler
        process.poll()
        time.sleep(0.01)
        assert time.monotonic() < deadline, "child never started"
    pid = process.pid
    assert _pid_alive(pid)
    t0 = time.monotonic()
    process.cancel()
    result = process.wait(20)
    assert time.monotonic() - t0 < 4.0  # SIGTERM, not the 5 s kill fallback
    assert result.cancelled and result.exit_code == EXIT_CANCELLED and result.error == ""
    assert rec.of("error_occurred") == []
    assert not _pid_alive(pid)


@pytest.mark.parametrize("factory", _factories())
def test_cancel_kills_a_child_that_ignores_sigterm(factory):
    process = factory()
    rec = Recorder(process)
    process.start([sys.executable, "-c", STUBBORN_SCRIPT])
    deadline = time.monotonic() + 20
    while not rec.of("started"):
        process.poll()
        time.sleep(0.01)
        assert time.monotonic() < deadline
    pid = process.pid
    process.cancel(grace_s=0.5)
    result = process.wait(20)
    assert result.cancelled and result.exit_code is None  # killed by SIGKILL
    assert not _pid_alive(pid)


def test_start_errors_are_raised_not_signalled():
    process = SubprocessProcess()
    with pytest.raises(ProcessStartError, match="cannot start"):
        process.start(["/nonexistent/dvcl-python", "-m", "dvcl"])
    assert not process.running
    process.start([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        with pytest.raises(ProcessStartError, match="already running"):
            process.start([sys.executable, "-c", "pass"])
    finally:
        process.cancel(grace_s=0.2)
        process.wait(10)


def test_utf8_split_across_reads_is_decoded():
    # a multi-byte character written in two halves must arrive intact
    script = ("import sys, time; b='Dice für Milz\\n'.encode(); sys.stdout.buffer.write(b[:11]); "
              "sys.stdout.flush(); time.sleep(0.2); sys.stdout.buffer.write(b[11:]); sys.stdout.flush()")
    process = SubprocessProcess()
    process.start([sys.executable, "-c", script])
    assert process.wait(20).stdout == "Dice für Milz"


@pytest.mark.parametrize("factory", _factories())
@pytest.mark.parametrize("launcher", ["ignore", "die"])
@pytest.mark.parametrize("child", [POLITE_SCRIPT, STUBBORN_SCRIPT], ids=["polite_child", "stubborn_child"])
@pytest.mark.parametrize("tree", ["psutil", "ps"])
def test_cancel_stops_the_interpreter_behind_a_launcher(factory, launcher, child, tree, monkeypatch):
    """Cancel reaches the interpreter a non-forwarding launcher started; afterwards no process of the run lives."""
    from DVCLSegmentationLib import ProcessTree

    if tree == "psutil":
        pytest.importorskip("psutil")
    monkeypatch.setattr(ProcessTree, "USE_PSUTIL", tree == "psutil")
    process = factory()
    rec = Recorder(process)
    process.start([sys.executable, "-c", LAUNCHER_SCRIPT, launcher, PID_LINE + child])
    deadline = time.monotonic() + 30
    while not (rec.of("started") and any("CHILD_PID=" in a[0] for a in rec.of("log"))):
        process.poll()
        time.sleep(0.01)
        assert time.monotonic() < deadline, "the launched interpreter never started"
    launcher_pid = process.pid
    child_pid = int(next(a[0] for a in rec.of("log") if "CHILD_PID=" in a[0]).split("=")[1])
    assert child_pid != launcher_pid and _pid_alive(child_pid)
    t0 = time.monotonic()
    process.cancel(grace_s=1.0)
    result = process.wait(20)
    assert result.cancelled and result.error == ""
    if child is POLITE_SCRIPT:  # the interpreter got the SIGTERM itself: clean exit, no kill needed
        assert time.monotonic() - t0 < 1.0
        if launcher == "ignore":
            assert result.exit_code == EXIT_CANCELLED
    deadline = time.monotonic() + 5
    while _pid_alive(child_pid) and time.monotonic() < deadline:  # an orphan is reaped by init, not by us
        time.sleep(0.05)
    assert not _pid_alive(child_pid), "the interpreter behind the launcher survived Cancel"
    assert not _pid_alive(launcher_pid)


def test_cancel_after_the_launcher_left_kills_what_it_started():
    """A launcher that exits at once leaves its interpreter holding the pipes: Cancel still ends it."""
    launcher = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1]])"
    process = SubprocessProcess()
    rec = Recorder(process)
    process.start([sys.executable, "-c", launcher, PID_LINE + STUBBORN_SCRIPT])
    deadline = time.monotonic() + 30
    while not (any("CHILD_PID=" in a[0] for a in rec.of("log")) and process._proc.poll() is not None):
        process.poll()
        time.sleep(0.01)
        assert time.monotonic() < deadline
    child_pid = int(next(a[0] for a in rec.of("log") if "CHILD_PID=" in a[0]).split("=")[1])
    assert process.running and _pid_alive(child_pid)
    process.cancel(grace_s=0.5)
    result = process.wait(20)
    assert result.cancelled
    deadline = time.monotonic() + 5
    while _pid_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(child_pid)
