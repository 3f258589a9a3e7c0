"""One clock for the device: epoch seconds that never jump.

Capture times, challenge windows and the display's schedule are compared across processes in epoch seconds. Reading
``time.time()`` for each would let an NTP step move a frame into another window, so each process anchors the
monotonic clock to the epoch once, at import, and counts from there. Processes started on the same boot agree to
within the wall clock's own agreement at their start (milliseconds), and none of them jumps afterwards.
"""

from __future__ import annotations

import time

_OFFSET = time.time() - time.monotonic()


def now() -> float:
    """Epoch seconds, monotonic within this process."""
    return time.monotonic() + _OFFSET


def from_monotonic(stamp: float) -> float:
    """A ``time.monotonic()`` reading as epoch seconds on this clock."""
    return stamp + _OFFSET
