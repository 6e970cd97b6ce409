"""Progress reporting: a tqdm bar for people, JSON lines for programs (the Slicer module).

The protocol is documented in docs/architecture.md ("Progress protocol"). JSON events go to stdout,
one object per line, flushed immediately, so a parent process can parse them as they come.

In ``bar`` mode a terminal gets tqdm bars. When stderr is not a terminal (a log file, CI, ``2> log``) bars
would fill the file with carriage returns and, for nested bars, cursor-movement escape codes; there each
bar writes a plain line instead, at most every :data:`LINE_INTERVAL_S` seconds and when it closes.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

_MODE = "bar"
MODES = ("bar", "json", "none")

#: seconds between two plain progress lines when stderr is not a terminal
LINE_INTERVAL_S = 30.0


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def set_mode(mode: str) -> None:
    """Select how progress is shown: ``bar`` (tqdm on stderr), ``json`` (stdout events) or ``none``."""
    global _MODE
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    _MODE = mode


def get_mode() -> str:
    return _MODE


def emit(event: str, **fields: Any) -> None:
    """Write one JSON event on stdout when in ``json`` mode (no-op otherwise)."""
    if _MODE != "json":
        return
    payload = {"event": event, **fields}
    sys.stdout.write(json.dumps(payload, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj: Any) -> Any:
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


class Progress:
    """A progress bar that speaks both protocols.

    Example::

        with Progress("segment", total=len(files)) as bar:
            for f in files:
                ...
                bar.update(message=f.name)
    """

    def __init__(self, task: str, total: Optional[int], desc: Optional[str] = None, unit: str = "it",
                 initial: int = 0) -> None:
        self.task = task
        self.total = total
        self.step = initial
        self._start = time.monotonic()
        self._initial = initial
        self._bar = None
        self._desc = desc or task
        self._unit = unit
        self._lines = False  # plain lines instead of a bar (stderr is not a terminal)
        self._last_line = self._start
        self._written_step: Optional[int] = None
        self._postfix: dict = {}
        self._message: Optional[str] = None
        if _MODE == "bar":
            if stderr_is_terminal():
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=self._desc, unit=unit, initial=initial, file=sys.stderr,
                                 dynamic_ncols=True)
            else:
                self._lines = True
        emit("start", task=task, total=total, step=initial)

    def update(self, n: int = 1, message: Optional[str] = None, **postfix: Any) -> None:
        self.step += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)
            if message:
                self._bar.set_description_str(message, refresh=False)
            self._bar.update(n)
        if self._lines:
            self._postfix.update(postfix)
            self._message = message or self._message
            if time.monotonic() - self._last_line >= LINE_INTERVAL_S:
                self._write_line()
        eta = self.eta_seconds()
        emit("progress", task=self.task, step=self.step, total=self.total, message=message, eta_s=eta, **postfix)

    def eta_seconds(self) -> Optional[float]:
        done = self.step - self._initial
        if not self.total or done <= 0:
            return None
        rate = (time.monotonic() - self._start) / done
        return round(rate * (self.total - self.step), 1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._lines:
            if self._written_step != self.step:
                self._write_line()
            self._lines = False

    def _write_line(self) -> None:
        """``desc: 40/160 it (25%), 5:12 elapsed, 15:36 left, message, key=value``: no \\r, no escape codes."""
        self._last_line = time.monotonic()
        self._written_step = self.step
        parts = [f"{self.step}/{self.total} {self._unit}" if self.total else f"{self.step} {self._unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.step / self.total:.0f}%)"
        parts.append(f"{_clock(self._last_line - self._start)} elapsed")
        eta = self.eta_seconds()
        if eta is not None and self.total and self.step < self.total:
            parts.append(f"{_clock(eta)} left")
        if self._message:
            parts.append(str(self._message))
        parts += [f"{k}={_fmt(v)}" for k, v in self._postfix.items()]
        sys.stderr.write(f"{self._desc}: {', '.join(parts)}\n")
        sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.4g}"
    return v
