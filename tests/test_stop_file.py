"""The trainer's stop-request file (RUN_DIR/STOP): how the Slicer module stops a run behind a launcher that
forwards no signal. A request made to this process stops it and is consumed; a leftover from an earlier
process does not stop the next one (a resumed run)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dvcl.training.trainer import _PROCESS_START, STOP_FILE, _StopRequest


def test_a_new_request_stops_and_is_consumed(tmp_path):
    path = tmp_path / STOP_FILE
    with _StopRequest(path) as stop:
        assert not stop.requested
        path.write_text("stop")
        assert stop.requested and stop.requested  # stays requested once seen
    assert not path.exists()


def test_a_leftover_from_an_earlier_process_is_ignored(tmp_path):
    path = tmp_path / STOP_FILE
    path.write_text("stop")
    os.utime(path, (_PROCESS_START - 60, _PROCESS_START - 60))
    with _StopRequest(path) as stop:
        assert not path.exists() and not stop.requested


def test_a_signal_after_the_file_means_stop_now(tmp_path):
    path = tmp_path / STOP_FILE
    with _StopRequest(path) as stop:
        path.write_text("stop")
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises as soon as the signal is delivered
