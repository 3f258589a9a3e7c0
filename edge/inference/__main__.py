"""``python -m edge.inference``: load the models once and answer RPCs until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from edge.bus import LIVENESS_METHOD, Bus
from edge.config import load_settings_or_exit
from edge.inference.service import InferenceService
from edge.logs import setup_logging
from edge.vision.calibration import CalibrationMissing
from edge.vision.engine import FaceEngine
from models import ModelMissing, model_path

log = logging.getLogger("facematch.inference")


def main() -> int:
    settings = load_settings_or_exit()
    setup_logging("inference", settings.log_level)
    try:
        engine = FaceEngine(settings)
        model_path(settings.models.dir, "face_landmarker")  # the liveness RPC needs it: refuse to start without
    except (ModelMissing, CalibrationMissing) as exc:
        log.error("%s", exc)
        return 3
    service = InferenceService(settings, engine)
    bus = Bus(settings, "inference")
    requests = ThreadPoolExecutor(2, thread_name_prefix="rpc")
    bus.serve("match", service.match, requests)
    bus.serve("health", service.health, requests)
    bus.serve(LIVENESS_METHOD, service.liveness, requests)
    bus.start()
    log.info("models loaded (%s + %s); serving RPCs", engine.detector.name, engine.model_id)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    bus.stop()
    requests.shutdown(wait=True, cancel_futures=True)
    service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
