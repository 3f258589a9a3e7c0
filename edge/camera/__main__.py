"""``python -m edge.camera``: frames from the configured source onto ``camera/frame`` until SIGTERM."""

from __future__ import annotations

import sys
import threading
import time

from edge.bus import Bus, Component
from edge.camera.publisher import CameraPublisher
from edge.daemon import Daemon

BROKER_WAIT = 30.0
# The loop reads a frame at least this often while it runs (a retry waits at most 30 s); longer means it hangs.
STUCK_AFTER = 45.0


def main() -> int:
    daemon = Daemon("camera")
    daemon.handle_signals()
    settings = daemon.settings
    if settings.camera.source == "none":
        daemon.ready("no camera configured (camera.source: none)")
        daemon.run()
        return daemon.exit_code()
    bus = Bus(settings, Component.CAMERA)
    connected = bus.start(wait=BROKER_WAIT)
    publisher = CameraPublisher(settings.camera, bus)
    loop = threading.Thread(target=publisher.run, args=(daemon.stop_requested,), name="camera", daemon=True)
    loop.start()
    daemon.ready(f"{settings.camera.source} {settings.camera.device}; "
                 + ("broker connected" if connected else "waiting for the broker"))  # fmt: skip

    def check() -> None:
        if time.monotonic() - publisher.last_loop > STUCK_AFTER:
            raise RuntimeError(f"the camera loop has not moved for {STUCK_AFTER:g} s")

    daemon.run(check)
    loop.join(timeout=5)
    bus.stop()
    return daemon.exit_code()


if __name__ == "__main__":
    sys.exit(main())
