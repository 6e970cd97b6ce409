"""A minimal pure-Python signal/slot class.

Why not Qt signals: custom signals declared from Python crash under PythonQt (SlicerNNUnet's finding), and
the logic classes must also run where there is no Qt at all (pytest with ``slicer-core``, headless scripts).
Slots are called synchronously on the thread that calls :meth:`Signal.emit`; the process classes make sure
that this is the thread that owns the MRML scene (see ``Process.py``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List

log = logging.getLogger(__name__)


class Signal:
    """Holds a list of callables and calls each of them on :meth:`emit`.

    A slot that raises does not stop the others: the exception is logged, because one broken observer
    (e.g. a closed widget) must not silently swallow a "finished" notification meant for the logic.
    Set ``raise_errors`` to re-raise instead (tests use it to see failures).
    """

    raise_errors = False

    def __init__(self, name: str = "signal") -> None:
        self.name = name
        self._slots: List[Callable[..., Any]] = []

    def connect(self, slot: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``slot``; connecting the same callable twice calls it once. Returns ``slot``."""
        if not callable(slot):
            raise TypeError(f"{self.name}: slot must be callable, got {type(slot).__name__}")
        if slot not in self._slots:
            self._slots.append(slot)
        return slot

    def disconnect(self, slot: Callable[..., Any] = None) -> None:
        """Remove ``slot`` (or every slot when ``slot`` is None); unknown slots are ignored."""
        if slot is None:
            self._slots.clear()
        elif slot in self._slots:
            self._slots.remove(slot)

    def emit(self, *args: Any) -> None:
        for slot in list(self._slots):
            try:
                slot(*args)
            except Exception:
                if Signal.raise_errors:
                    raise
                log.exception("%s: slot %r failed", self.name, slot)

    def __len__(self) -> int:
        return len(self._slots)

    def __repr__(self) -> str:
        return f"Signal({self.name!r}, {len(self._slots)} slot(s))"
