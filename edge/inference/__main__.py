"""``python -m edge.inference``: load the models once and answer RPCs until SIGTERM."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from edge.bus import Bus, Component, RpcMethod
from edge.daemon import Daemon
from edge.inference.service import InferenceService
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
    except (ModelMissing, CalibrationMissing) as exc:
        daemon.log.error("%s", exc)
        return 3
    service = InferenceService(settings, engine)
    bus = Bus(settings, Component.INFERENCE)
    requests = ThreadPoolExecutor(2, thread_name_prefix="rpc")
    # Health has its own lane: it must answer while both request lanes are busy scoring videos.
    health = ThreadPoolExecutor(1, thread_name_prefix="health")
    bus.serve(RpcMethod.MATCH, service.match, requests)
    bus.serve(RpcMethod.HEALTH, service.health, health)
    bus.serve(RpcMethod.LIVENESS, service.liveness, requests)
    connected = bus.start(wait=BROKER_WAIT)
    daemon.ready(
        f"models loaded ({engine.detector.name} + {engine.model_id}); instance {bus.instance}; "
        + ("serving RPCs" if connected else "waiting for the broker")
    )
    daemon.run()
    bus.stop()
    requests.shutdown(wait=True, cancel_futures=True)
    health.shutdown(wait=False, cancel_futures=True)
    service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
