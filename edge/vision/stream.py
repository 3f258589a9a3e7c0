"""Read a video that is still being uploaded: a growing spool file, fed through a named pipe to the decoder.

The hub appends each chunk of a streamed challenge to a file in the spool directory and, after the last one, creates
``<file>.end``. OpenCV's decoder cannot follow a regular file past its current end, but it reads a named pipe as the
bytes arrive (a WebM from MediaRecorder needs no seeking), so a feeder thread copies the file into a pipe as it grows
and closes the pipe once the end marker is there and everything is copied, or once the hub has removed the file (the
stream was abandoned).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

POLL_SECONDS = 0.02
COPY_CHUNK = 1 << 16


def end_marker(path: Path) -> Path:
    """The file whose existence says the upload of ``path`` is complete."""
    return path.with_name(path.name + ".end")


@dataclass
class FeedOutcome:
    stalled: bool = False  # no byte and no end marker for idle_timeout seconds


class _Feeder(threading.Thread):
    def __init__(self, source: BinaryIO, pipe: Path, marker: Path, idle_timeout: float):
        super().__init__(name="stream-feeder", daemon=True)
        self.source, self.pipe, self.marker, self.idle_timeout = source, pipe, marker, idle_timeout
        self.outcome = FeedOutcome()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            descriptor = self._open_pipe()
            if descriptor is not None:
                try:
                    self._copy(descriptor)
                finally:
                    os.close(descriptor)
        finally:
            self._answer_late_readers()

    def _open_pipe(self) -> int | None:
        """The pipe's write end, once the decoder has opened its read end (or None when told to stop first)."""
        while not self.stop.is_set():
            try:
                descriptor = os.open(self.pipe, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(POLL_SECONDS)
                continue
            os.set_blocking(descriptor, True)
            return descriptor
        return None

    def _copy(self, descriptor: int) -> None:
        last_progress = time.monotonic()
        try:
            while not self.stop.is_set():
                finished = self.marker.exists()  # looked at before reading: every byte written before it is read
                data = self.source.read(COPY_CHUNK)
                if data:
                    os.write(descriptor, data)  # blocks while the decoder is behind: that is the back-pressure
                    last_progress = time.monotonic()
                    continue
                if finished or os.fstat(self.source.fileno()).st_nlink == 0:  # complete, or abandoned and removed
                    return
                if time.monotonic() - last_progress > self.idle_timeout:
                    self.outcome.stalled = True
                    return
                time.sleep(POLL_SECONDS)
        except BrokenPipeError:  # the decoder stopped reading (it had all it needed): nothing more to feed
            pass

    def _answer_late_readers(self) -> None:
        """Whatever opens the pipe from now on (a decoder retrying with another backend) gets an empty end at once,
        instead of waiting forever for a writer."""
        while not self.stop.wait(POLL_SECONDS):
            with contextlib.suppress(OSError):
                os.close(os.open(self.pipe, os.O_WRONLY | os.O_NONBLOCK))


@contextlib.contextmanager
def growing_file(source: Path, idle_timeout: float) -> Iterator[tuple[Path, FeedOutcome]]:
    """A pipe to decode ``source`` from as it grows, and the feed's outcome (read it after decoding)."""
    with tempfile.TemporaryDirectory(prefix="facematch-stream-") as folder, source.open("rb") as handle:
        pipe = Path(folder) / "video"
        os.mkfifo(pipe, 0o600)
        feeder = _Feeder(handle, pipe, end_marker(source), idle_timeout)
        feeder.start()
        try:
            yield pipe, feeder.outcome
        finally:
            feeder.stop.set()
            # A feeder blocked on a full pipe whose reader has gone is released by opening and closing a reader.
            with contextlib.suppress(OSError):
                os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
            feeder.join(timeout=2)
