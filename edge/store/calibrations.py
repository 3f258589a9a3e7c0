"""Gaze calibration requests: the hub asks, the device's door flow runs it, anyone reads how it went.

A device keeps a queue of one (``fm:gaze-calibration-request:<device>``, a subject id with a short TTL): the door flow
takes it when it is idle, waits for that person's face, lights the six cells one after the other and stores what it
learnt with the subject (:meth:`edge.store.gallery.Gallery.set_gaze`). The state of the last request for a subject is
``fm:gaze-calibration:<subject>`` (erased with the subject). A request nobody took, or one whose worker died, is
reported as failed once its time is up rather than pending for ever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

import redis

from edge.errors import ErrorCode, FacematchError
from edge.store import keys
from edge.store.redis_store import Store

CalibrationState = Literal["requested", "waiting", "running", "saved", "failed"]
PENDING = ("requested", "waiting", "running")
# The door flow must take a request this soon (it polls twice a second when idle); a device with no door flow running
# leaves it to expire and the request is reported as not taken.
REQUEST_SECONDS = 60.0
# Once taken, the person has this long to stand in front of the camera.
WAIT_SECONDS = 60.0
STATUS_TTL = 3600


class CalibrationBusy(FacematchError):
    default_code = ErrorCode.CALIBRATION_BUSY


class GazeCalibrations:
    def __init__(self, store: Store):
        self.store = store

    @property
    def _redis(self) -> redis.Redis:
        return self.store.client

    def _guard(self, action: Callable[[], Any]) -> Any:
        return self.store.guard(action)

    def request(self, subject_id: str, device_id: str) -> dict[str, Any]:
        """Queue a calibration of ``subject_id`` on ``device_id``; asking again for the same subject is harmless."""
        queue = keys.gaze_calibration_request(device_id)
        if not self._guard(lambda: self._redis.set(queue, subject_id, nx=True, ex=int(REQUEST_SECONDS))):
            queued = self._guard(lambda: self._redis.get(queue))
            if queued is not None and queued.decode() != subject_id:
                raise CalibrationBusy("another subject's gaze calibration is waiting on this device; try again "
                                      "when it is done (about a minute)", device_id=device_id)  # fmt: skip
            if queued is not None:
                return self.status(subject_id) or self.update(subject_id, device_id, "requested",
                                                              expires=time.time() + REQUEST_SECONDS)  # fmt: skip
            return self.request(subject_id, device_id)  # the other request expired meanwhile
        return self.update(subject_id, device_id, "requested", expires=time.time() + REQUEST_SECONDS)

    def take(self, device_id: str) -> str | None:
        """The subject whose calibration this device runs next (the request leaves the queue)."""
        raw = self._guard(lambda: self._redis.getdel(keys.gaze_calibration_request(device_id)))
        return raw.decode() if raw else None

    def update(self, subject_id: str, device_id: str, state: CalibrationState, *, reasons: list[str] | None = None,
               expires: float | None = None, result: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        now = time.time()
        previous = self.status(subject_id) or {}
        doc = {
            "subject_id": subject_id, "device_id": device_id, "state": state, "reasons": reasons or [],
            "requested": previous.get("requested", now) if state != "requested" else now, "updated": now,
            "expires": expires, "result": result,
        }  # fmt: skip
        status = keys.gaze_calibration_status(subject_id)
        self._guard(lambda: self._redis.set(status, json.dumps(doc), ex=STATUS_TTL))
        return doc

    def status(self, subject_id: str) -> dict[str, Any] | None:
        """The last request's state; a pending one whose time ran out is failed (no door flow took it, or the
        worker running it stopped)."""
        raw = self._guard(lambda: self._redis.get(keys.gaze_calibration_status(subject_id)))
        if raw is None:
            return None
        doc = json.loads(raw)
        if doc["state"] in PENDING and doc.get("expires") and time.time() > doc["expires"]:
            reason = "not_taken" if doc["state"] == "requested" else "interrupted"
            doc = {**doc, "state": "failed", "reasons": [reason]}
        return doc
