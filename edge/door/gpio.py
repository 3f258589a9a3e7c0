"""GPIO lines through libgpiod's maintained Python binding (``gpiod`` 2.x): the relay output and the contact input.

Lines are named as the board names them (``gpiod`` looks the name up on the chip) or given by offset. Raspberry Pi
(``/dev/gpiochip0`` on a Pi 4, ``/dev/gpiochip4`` on a Pi 5): names like ``GPIO17``. Jetson: ``/dev/gpiochip0``
with names like ``PQ.05`` (pin 7 of the 40-pin header on an Orin Nano); ``gpioinfo`` lists them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

CONSUMER = "facematch-door"


class GpioError(Exception):
    pass


def _import():
    try:
        import gpiod
        from gpiod.line import Direction, Edge, Value
    except ImportError:
        raise GpioError("the gpiod package (libgpiod's binding) is not installed") from None
    return gpiod, Direction, Edge, Value


def _offset(chip_path: str, line: str) -> int:
    gpiod, *_ = _import()
    if line.isdigit():
        return int(line)
    try:
        with gpiod.Chip(chip_path) as chip:
            return int(chip.line_offset_from_id(line))
    except (OSError, ValueError) as exc:
        raise GpioError(f"no line {line!r} on {chip_path}: {exc} (gpioinfo lists the names)") from None


class GpioOutput:
    """An output line requested inactive from the start (fail-secure)."""

    def __init__(self, chip_path: str, line: str, active_low: bool = False):
        gpiod, Direction, _, Value = _import()
        self._value = Value
        self.offset = _offset(chip_path, line)
        settings = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE, active_low=active_low)
        try:
            self._request = gpiod.request_lines(chip_path, consumer=CONSUMER, config={self.offset: settings})
        except OSError as exc:
            raise GpioError(f"cannot request {chip_path} line {line}: {exc} (in the gpio group?)") from None

    def set_active(self, active: bool) -> None:
        self._request.set_value(self.offset, self._value.ACTIVE if active else self._value.INACTIVE)

    def close(self) -> None:
        self.set_active(False)
        self._request.release()


class GpioInput:
    """An input line whose changes (both edges, debounced) call ``on_change(is_active)`` from a thread."""

    def __init__(self, chip_path: str, line: str, on_change: Callable[[bool], None], active_low: bool = False):
        gpiod, Direction, Edge, Value = _import()
        self._value = Value
        self.offset = _offset(chip_path, line)
        settings = gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.BOTH, active_low=active_low,
                                      debounce_period=timedelta(milliseconds=20))  # fmt: skip
        try:
            self._request = gpiod.request_lines(chip_path, consumer=CONSUMER, config={self.offset: settings})
        except OSError as exc:
            raise GpioError(f"cannot request {chip_path} line {line}: {exc}") from None
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="door-contact", daemon=True)
        self._thread.start()

    def is_active(self) -> bool:
        return self._request.get_value(self.offset) == self._value.ACTIVE

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._request.wait_edge_events(timedelta(milliseconds=200)):
                self._request.read_edge_events()
                self._on_change(self.is_active())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self._request.release()
