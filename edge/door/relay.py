"""The door strike's relay and the door contact, over a line interface (the GPIO driver is one implementation).

Fail-secure: the line is driven inactive when the relay is made, when a pulse ends and when it is closed; a crash
leaves the line to the kernel, which releases it (wire the strike so that a released, de-energised line is locked).
Overlapping grants extend the pulse; they never shorten it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class OutputLine(Protocol):
    def set_active(self, active: bool) -> None: ...

    def close(self) -> None: ...


class Relay:
    def __init__(self, line: OutputLine, now: Callable[[], float] = time.monotonic):
        self.line = line
        self.now = now
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.release_at = 0.0
        self.pulses = 0
        self.line.set_active(False)

    @property
    def active(self) -> bool:
        return self.now() < self.release_at

    def pulse(self, seconds: float) -> None:
        with self._lock:
            until = self.now() + seconds
            if until <= self.release_at:
                return
            self.release_at = until
            self.line.set_active(True)
            self.pulses += 1
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(seconds, self._release)
            self._timer.daemon = True
            self._timer.start()

    def _release(self) -> None:
        with self._lock:
            if self.now() + 1e-3 >= self.release_at:
                self.line.set_active(False)
                self.release_at = 0.0

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self.release_at = 0.0
            self.line.set_active(False)
        self.line.close()


@dataclass
class DoorContact:
    """The door's contact input: ``forced`` when it opens while no grant holds it unlocked, ``held_open`` when it
    stays open past ``held_open_seconds`` (reported once per opening), ``closed`` when it closes."""

    relay: Relay | None
    held_open_seconds: float
    now: Callable[[], float] = time.monotonic
    opened_at: float | None = None
    reported_held: bool = False

    def on_change(self, is_open: bool) -> str | None:
        if is_open and self.opened_at is None:
            self.opened_at, self.reported_held = self.now(), False
            return None if self.relay is not None and self.relay.active else "door_forced"
        if not is_open and self.opened_at is not None:
            self.opened_at = None
            return "door_closed"
        return None

    def on_tick(self) -> str | None:
        held = self.opened_at is not None and self.now() - self.opened_at > self.held_open_seconds
        if held and not self.reported_held:
            self.reported_held = True
            return "door_held_open"
        return None
