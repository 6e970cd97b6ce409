"""Progress reporting: a tqdm bar for people, JSON lines for programs (the Slicer module).

The protocol is documented in docs/architecture.md ("Progress protocol"). JSON events go to stdout,
one object per line, flushed immediately, so a parent process can parse them as they come.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

_MODE = "bar"
MODES = ("bar", "json", "none")


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
        if _MODE == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc or task, unit=unit, initial=initial, file=sys.stderr,
                             dynamic_ncols=True)
        emit("start", task=task, total=total, step=initial)

    def update(self, n: int = 1, message: Optional[str] = None, **postfix: Any) -> None:
        self.step += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)
            if message:
                self._bar.set_description_str(message, refresh=False)
            self._bar.update(n)
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

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.4g}"
    return v
