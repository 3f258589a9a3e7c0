"""``python -m edge.inference``: load the models once and answer RPCs until SIGTERM."""

from __future__ import annotations

import sys

from edge.bus import Bus, Component
from edge.credentials import redis_url
from edge.daemon import Daemon
from edge.inference.door_flow import DoorFlow
from edge.inference.gallery import GalleryService
from edge.inference.service import InferenceService
from edge.store import Store
from edge.store.gallery import Gallery, GalleryLocked
from edge.vision.calibration import CalibrationMissing
from edge.vision.engine import FaceEngine
from models import ModelMissing, model_path

# Seconds to wait for the broker before saying READY anyway (the bus keeps reconnecting; requests wait for it).
BROKER_WAIT = 30.0


def main() -> int:
    daemon = Daemon("inference")
    daemon.handle_signals()
    settings = daemon.settings
    try:
        engine = FaceEngine(settings)
        model_path(settings.models.dir, "face_landmarker")  # the liveness RPC needs it: refuse to start without
        service = InferenceService(settings, engine)  # with the optional gaze network when configured
    except (ModelMissing, CalibrationMissing) as exc:
        daemon.log.error("%s", exc)
        return 3
    bus = Bus(settings, Component.INFERENCE)
    store = Store(redis_url(settings))
    try:
        gallery = GalleryService(settings, engine, Gallery.from_settings(store, settings), bus)
    except GalleryLocked as exc:
        daemon.log.error("%s", exc)
        return 3
    executors = service.serve(bus, gallery)
    flow = None
    if settings.door.flow and settings.camera.source != "none":
        landmarker = model_path(settings.models.dir, "face_landmarker")
        flow = DoorFlow(settings, engine, gallery, store, bus, landmarker, service.gaze_nets)
    connected = bus.start(wait=BROKER_WAIT)
    if flow is not None:
        flow.start()
    daemon.ready(
        f"models loaded ({engine.detector.name} + {engine.model_id}); instance {bus.instance}; "
        + ("serving RPCs" if connected else "waiting for the broker")
    )
    daemon.run()
    if flow is not None:
        flow.stop()
    bus.stop()
    for executor in executors:
        executor.shutdown(wait=True, cancel_futures=True)
    service.close()
    store.close()
    return daemon.exit_code()


if __name__ == "__main__":
    sys.exit(main())
