"""The live door flow: camera frames → walk-up → 1:N → anti-spoofing → gaze challenge → decision → door command.

Exactly one inference worker per device runs it: the one holding ``fm:door-flow:<device>`` in Redis (a short TTL,
renewed while it lives; another worker takes over within seconds of its death). Frames come from ``camera/frame``
through a one-slot mailbox, so a slow step drops frames instead of building a backlog.

One walk-up, one decision: each walk-up has an id, and its decision is published only by whoever sets
``fm:walkup:<id>`` first. The walk-up in progress is kept in Redis, so a worker that takes over after a crash or a
restart closes it as interrupted (once) instead of leaving it open or deciding it twice. Every outcome is an
``events/access`` message: granted, denied (and why), unknown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import redis

from edge import clock
from edge.bus import Bus, EventKind
from edge.bus.client import Message, Subscription
from edge.bus.messages import (
    AccessEvent,
    ChallengeEnd,
    ChallengeStart,
    ChallengeWindow,
    DoorCommand,
    GazeCalibrationEvent,
    LivenessEvent,
    Reason,
)
from edge.camera.publisher import CAPTURE_TIME
from edge.config import Settings
from edge.flow.machine import ABORT_MESSAGES, Abort, ChallengeWatch, FlowRules, Sighting, State, Steadiness
from edge.identify.openset import Decision, Outcome
from edge.inference.gallery import GalleryService
from edge.inference.liveness import scoring_params
from edge.liveness.challenge import Challenge, draw_durations, generate_sequence
from edge.liveness.person import PersonGaze, calibrate, params_for
from edge.liveness.validator import ValidatorParams, validate
from edge.policy import AccessPolicy
from edge.store import SessionConflict, SessionState, Store, StoreUnavailable, keys
from edge.store.audit import Audit
from edge.store.calibrations import WAIT_SECONDS, GazeCalibrations
from edge.store.gallery import SubjectNotFound
from edge.vision.embed import Embedding, cosine
from edge.vision.engine import FaceEngine
from edge.vision.gaze import GazeFrame, GazeTracker
from edge.vision.gaze_net import GazeNetPool
from edge.vision.types import Face

log = logging.getLogger("facematch.door")

LOCK_TTL_MS = 5000
RENEW_EVERY = 1.0
DECISION_TTL = 86400
# The first frame captured after the last window closes the challenge; without one, the clock closes it this long
# after the end (frames captured before the end may still be on their way).
FINISH_WAIT = 0.15
CLOCK_EVERY = 0.05
IDENTITY_CHECK_EVERY = 1.0
# Anti-spoofing samples one frame this often during a challenge (~10 ms each).
PAD_EVERY = 0.5
# A gaze calibration lights every cell once: both rows, each column, in a snake so the eyes never cross the grid.
CALIBRATION_CELLS = (1, 2, 3, 6, 5, 4)
# How often an idle flow looks for a calibration request.
CALIBRATION_POLL = 0.5

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""


@dataclass
class WalkUp:
    walkup_id: str
    started: float
    subject_id: str | None = None
    name: str | None = None
    score: float | None = None
    probe: Embedding | None = None  # the identification's embedding, for the identity check
    challenge: Challenge | None = None
    session_id: str | None = None
    start_time: float = 0.0
    frames: list[GazeFrame] = field(default_factory=list)
    watch: ChallengeWatch | None = None
    last_identity_check: float = 0.0
    identity_misses: int = 0
    live: list[float] = field(default_factory=list)  # passive anti-spoofing's live probability, sampled
    last_pad: float = 0.0
    last_net: float = -math.inf  # the gaze network's last reading (when it is on)
    marks: dict[str, float] = field(default_factory=dict)  # device-clock times of its steps
    purpose: str = "access"  # or "calibration": an enrolled person's gaze calibration, no door decision

    @property
    def end_time(self) -> float:
        return self.start_time + (self.challenge.total_duration if self.challenge else 0.0)


@dataclass
class CalibrationJob:
    """A gaze calibration taken from the device's queue, waiting for its person's face."""

    subject_id: str
    started: float
    deadline: float
    last_reason: str = "no_face"
    last_try: float = 0.0  # when a face in the cooldown after a decision was last identified


class Identified(NamedTuple):
    """A steady face's 1:N identification."""

    embedding: Embedding
    decision: Decision
    names: dict[str, str]
    seconds: float


def rules_of(settings: Settings) -> FlowRules:
    door = settings.door
    return FlowRules(min_eye_distance=door.min_eye_distance, steady_seconds=door.steady_seconds,
                     face_lost_seconds=door.face_lost_seconds, stall_seconds=door.stall_seconds)  # fmt: skip


class DoorFlow:
    def __init__(self, settings: Settings, engine: FaceEngine, gallery: GalleryService, store: Store, bus: Bus,
                 landmarker: object, gaze_nets: GazeNetPool | None = None):  # fmt: skip
        self.settings = settings
        self.gaze_nets = gaze_nets
        self.engine = engine
        self.gallery = gallery
        self.store = store
        self.bus = bus
        self.landmarker = landmarker
        self.rules = rules_of(settings)
        self.policy = AccessPolicy(settings.door)
        self.audit = Audit(store, settings.door.audit_retention_days)
        self.device = settings.device_id
        self.token = f"{settings.instance_id}:{uuid.uuid4().hex[:8]}"
        self.state = State.IDLE
        self.steady = Steadiness(self.rules)
        self.walkup: WalkUp | None = None
        self.cooldown_until = 0.0
        self.last_face = 0.0
        self.last_frame = 0.0
        self.last_looked = 0.0  # capture time of the last frame looked at
        self.steady_live: list[float] = []
        self.holds_lock = False
        self._last_renew = 0.0
        self._lock = threading.RLock()  # frames and the clock thread take turns
        self._stop = threading.Event()
        self._tracker: GazeTracker | None = None
        self._borrowed = contextlib.ExitStack()  # the gaze network the tracker holds
        self._subscription: Subscription | None = None
        self._clock_thread: threading.Thread | None = None
        self._renew = store.client.register_script(_RENEW)
        self.decisions = 0
        self.calibrations = GazeCalibrations(store)
        self.calibration: CalibrationJob | None = None
        self._last_poll = 0.0
        # Per walk-up, device-clock times of its steps (for `facematch bench live`): the last few only.
        self.milestones: list[tuple[str, dict[str, float]]] = []

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._gaze_tracker()  # MediaPipe's first use takes ~1 s: not in the middle of the first challenge
        self._subscription = self.bus.subscribe(self.bus.topics.camera_frame, self.on_frame, qos=0, latest_only=True)
        self._clock_thread = threading.Thread(target=self._clock, name="door-clock", daemon=True)
        self._clock_thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._subscription is not None:
            self._subscription.unsubscribe()
        if self._clock_thread is not None:
            self._clock_thread.join(timeout=3)
        with self._lock:
            if self.holds_lock:
                try:
                    if self.store.client.get(keys.door_flow_lock(self.device)) == self.token.encode():
                        self.store.client.delete(keys.door_flow_lock(self.device))
                except redis.RedisError:
                    pass
            if self._tracker is not None:
                self._tracker.close()
                self._tracker = None
                self._borrowed.close()

    def _clock(self) -> None:
        while not self._stop.wait(CLOCK_EVERY):
            try:
                self._keep_lock()
                with self._lock:
                    self._on_clock()
            except (redis.RedisError, StoreUnavailable) as exc:
                log.warning("door flow: Redis is unreachable (%s); frames are not looked at until it is back", exc)
                self.holds_lock = False
                self._stop.wait(RENEW_EVERY)
            except Exception:
                log.exception("door flow clock failed")

    def _keep_lock(self) -> None:
        now = time.monotonic()
        if now - self._last_renew < RENEW_EVERY and self.holds_lock:
            return
        self._last_renew = now
        client = self.store.client
        lock = keys.door_flow_lock(self.device)
        if self.holds_lock:
            self.holds_lock = bool(self._renew(keys=[lock], args=[self.token, LOCK_TTL_MS]))
            if not self.holds_lock:
                log.warning("door flow: lost the device's lock; another worker runs the flow now")
            return
        if client.set(lock, self.token, nx=True, px=LOCK_TTL_MS):
            self.holds_lock = True
            log.info("door flow: this worker runs the device's door flow")
            with self._lock:
                self._close_interrupted()

    # -- frames -----------------------------------------------------------------------------------------------

    def on_frame(self, message: Message) -> None:
        if not self.holds_lock:
            return
        try:
            captured = float(message.user_properties.get(CAPTURE_TIME, clock.now()))
        except ValueError:
            return
        if self._resting(captured):
            self.last_frame = captured
            return
        image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return
        self.last_frame = self.last_looked = captured
        with self._lock:
            try:
                self._on_image(image, captured)
            except (redis.RedisError, StoreUnavailable) as exc:
                log.warning("door flow: Redis failed mid-walk-up (%s)", exc)
            except Exception:
                log.exception("door flow: a frame could not be handled")

    def _resting(self, captured: float) -> bool:
        """Nobody in view for a while: only ``door.idle_fps`` frames a second are looked at. Detecting faces on every
        frame of an empty room would cost about a third of a core of a 2-core board, and a walk-up is still seen
        within 1/idle_fps; the first face brings back every frame."""
        idle_fps = self.settings.door.idle_fps
        if idle_fps <= 0 or self.state is not State.IDLE:
            return False
        nobody = captured - self.last_face > self.rules.face_lost_seconds
        # 0.9: a camera frame a little late is not skipped; a capture time gone back (the camera daemon restarted on
        # another clock) is looked at, so the next ones are spaced from it.
        return nobody and 0 <= captured - self.last_looked < 0.9 / idle_fps

    def _on_image(self, image: np.ndarray, captured: float) -> None:
        # Faces far smaller than a walk-up's (people passing in the background) are not counted.
        faces = [f for f in self.engine.detector.detect(image) if f.eye_distance >= self.rules.min_eye_distance / 2]
        sighting = Sighting(captured, len(faces), _centre(faces[0]) if faces else (0.0, 0.0),
                            faces[0].eye_distance if faces else 0.0)  # fmt: skip
        if faces:
            self.last_face = captured
        if self.state is State.COOLDOWN:
            gone = captured - self.last_face > self.rules.face_lost_seconds
            if captured >= self.cooldown_until or (gone and not faces):
                self.state = State.IDLE
                self.steady.reset()
            elif self.calibration is not None:
                self._calibration_in_cooldown(image, faces, sighting)
            return
        if self.state is State.CHALLENGE:
            self._challenge_frame(image, faces, sighting)
            return
        steady = self.steady.update(sighting)
        if not self.steady.run:
            self.state, self.steady_live = State.IDLE, []
            return
        # Anti-spoofing on every frame of the steady run: the walk-up starts with several frames' evidence.
        if len(self.steady.run) == 1:
            self.steady_live = []
        self.steady_live.append(self.engine.pad.score(image, faces[0]).live_probability)
        self.state = State.STEADY
        if steady:
            live = self.steady_live[-self.rules.steady_frames :]
            self.steady.reset()
            identified = None
            if self.calibration is not None:
                identified = self._identify(image, faces[0])
                if self._calibration_walk_up(identified, captured):
                    return
            self._walk_up(image, faces[0], captured, live, identified)  # anyone else walks up as always

    # -- a walk-up --------------------------------------------------------------------------------------------

    def _is_live(self, walkup: WalkUp) -> bool:
        """The mean live probability over the sampled frames against the threshold measured for whole videos
        (``liveness.video_antispoof_threshold``, docs/LIVENESS.md): on webcam frames the models' single-frame
        probability of real people is often far below 0.5, so one frame at 0.5 would turn them away."""
        return not walkup.live or float(np.mean(walkup.live)) >= self.settings.liveness.video_antispoof_threshold

    def _local_time(self) -> datetime:
        zone = self.settings.door.policy.timezone
        return datetime.now(ZoneInfo(zone)) if zone else datetime.now().astimezone()

    def _identify(self, image: np.ndarray, face: Face) -> Identified:
        started = time.perf_counter()
        self.gallery.index.sync(self.gallery.gallery)
        embedding = self.engine.embedder.embed(image, face)
        decision, names = self.gallery.decide(embedding.vector)
        return Identified(embedding, decision, names, time.perf_counter() - started)

    def _walk_up(self, image: np.ndarray, face: Face, captured: float, live: list[float],
                 identified: Identified | None = None) -> None:  # fmt: skip
        walkup = WalkUp(uuid.uuid4().hex, captured, live=list(live), last_pad=captured, marks={"steady": captured})
        self.walkup = walkup
        if self.policy.lockout.locked(clock.now()):
            self._decide(walkup, "denied", ["locked_out"], {})
            return
        embedding, decision, names, seconds = identified or self._identify(image, face)
        timings = {"identify": seconds}
        if decision.outcome is not Outcome.IDENTIFIED or decision.subject_id is None:
            best = decision.candidates[0] if decision.candidates else None
            self._decide(
                walkup,
                "unknown",
                [decision.why.value],
                timings,
                score=self.engine.calibration.score(best.cosine) if best and self.engine.calibration else None,
            )
            return  # fmt: skip
        walkup.subject_id, walkup.name, walkup.probe = decision.subject_id, names[decision.subject_id], embedding
        best = next(c for c in decision.candidates if c.subject_id == decision.subject_id)
        walkup.score = round(self.engine.calibration.score(best.cosine), 4) if self.engine.calibration else None
        when = self._local_time()
        refusal = self.policy.refusal(walkup.subject_id, walkup.score, when)
        if refusal is not None:
            self._decide(walkup, "denied", [refusal], timings)
            return
        if not self.policy.wants_challenge(walkup.subject_id, when, clock.now()):
            if self.settings.door.antispoof_required and not self._is_live(walkup):
                self._decide(walkup, "denied", ["not_live"], timings)
            else:
                self._decide(walkup, "granted", [], timings)
            return
        self._start_challenge(walkup, timings)

    def _start_challenge(self, walkup: WalkUp, timings: dict[str, float]) -> None:
        area = self.settings.liveness.area_duration
        calibrating = walkup.purpose == "calibration"
        if calibrating:
            walkup.challenge = Challenge(CALIBRATION_CELLS, area)
        else:
            walkup.challenge = Challenge(tuple(generate_sequence()), area, draw_durations(area))
        walkup.session_id = str(uuid.uuid4())
        # The start is drawn too (lead + 0..1 s in 0.1 s steps): nothing about the schedule is known in advance.
        walkup.start_time = clock.now() + self.settings.door.challenge_lead + secrets.randbelow(11) / 10
        walkup.watch = ChallengeWatch(self.rules, last_face=walkup.started, last_frame=walkup.started)
        walkup.last_identity_check = walkup.started
        if calibrating:  # no door decision hangs on it: a calibration a restart cut short is reported as such
            self.calibrations.update(walkup.subject_id or "", self.device, "running", expires=walkup.end_time + 30)
        else:
            document = {"sequence": list(walkup.challenge.sequence), "area_duration": area,
                        "durations": list(walkup.challenge.lengths), "key": f"door:{self.device}",
                        "walkup_id": walkup.walkup_id, "start_time": walkup.start_time}  # fmt: skip
            self.store.create_session(walkup.session_id, document, self.settings.redis.session_ttl)
            self.store.client.set(keys.walkup_current(self.device), json.dumps({
                "walkup_id": walkup.walkup_id, "session_id": walkup.session_id, "subject_id": walkup.subject_id,
            }), ex=self.settings.redis.session_ttl)  # fmt: skip
        windows = [ChallengeWindow(cell=w.cell, start=walkup.start_time + w.start, end=walkup.start_time + w.end)
                   for w in walkup.challenge.windows()]  # fmt: skip
        start = ChallengeStart(session_id=walkup.session_id, sequence=list(walkup.challenge.sequence),
                               area_duration=area, start_time=walkup.start_time, windows=windows,
                               purpose=walkup.purpose)  # fmt: skip
        self.bus.publish(self.bus.topics.challenge_start, start.to_bytes(), qos=1)
        walkup.marks["challenge_start"] = clock.now()
        walkup.marks["last_window_end"] = walkup.end_time
        self.state = State.CHALLENGE
        log.info("walk-up %s: %s identified (%.0f ms); %s %s starts in %.1f s", walkup.walkup_id[:8],
                 walkup.name, 1000 * sum(timings.values()), "gaze calibration" if calibrating else "challenge",
                 walkup.challenge.sequence, walkup.start_time - clock.now())  # fmt: skip

    def _challenge_frame(self, image: np.ndarray, faces: list[Face], sighting: Sighting) -> None:
        walkup = self.walkup
        assert walkup is not None and walkup.watch is not None and walkup.challenge is not None
        abort = walkup.watch.on_frame(sighting)
        if abort is None and faces and sighting.t - walkup.last_identity_check >= IDENTITY_CHECK_EVERY:
            walkup.last_identity_check = sighting.t
            abort = self._identity_check(walkup, image, faces[0])
        if abort is not None:
            self._finish_challenge(walkup, abort)
            return
        if faces and sighting.t - walkup.last_pad >= PAD_EVERY:
            walkup.last_pad = sighting.t
            walkup.live.append(self.engine.pad.score(image, faces[0]).live_probability)
        if walkup.start_time <= sighting.t < walkup.end_time:
            tracker = self._gaze_tracker()
            # Spaced as the web challenge's readings are (edge/inference/liveness.py).
            with_net = sighting.t - walkup.last_net >= 0.9 * self.settings.liveness.gaze_net_interval
            if with_net:
                walkup.last_net = sighting.t
            frame = tracker.track(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), sighting.t - walkup.started, with_net)
            walkup.frames.append(dataclasses.replace(frame, t=sighting.t - walkup.start_time))
        if sighting.t >= walkup.end_time:
            self._finish_challenge(walkup, None)

    def _identity_check(self, walkup: WalkUp, image: np.ndarray, face: Face) -> Abort | None:
        """The face in view must stay the identified one: twice in a row below a 1:1 false-match rate of 1 % (a
        lenient bar: the head turns during the challenge) ends the challenge."""
        assert walkup.probe is not None and self.engine.calibration is not None
        now = self.engine.embedder.embed(image, face)
        same = cosine(now, walkup.probe) >= self.engine.calibration.cosine_for(0.4)
        walkup.identity_misses = 0 if same else walkup.identity_misses + 1
        return Abort.IDENTITY_CHANGED if walkup.identity_misses >= 2 else None

    def _on_clock(self) -> None:
        now = clock.now()
        self._poll_calibration(now)
        walkup = self.walkup
        if self.state is not State.CHALLENGE or walkup is None or walkup.watch is None:
            return
        if now < walkup.start_time:
            return
        abort = walkup.watch.on_clock(now)
        if abort is not None:
            self._finish_challenge(walkup, abort)
        elif now >= walkup.end_time + FINISH_WAIT:
            self._finish_challenge(walkup, None)

    def _finish_challenge(self, walkup: WalkUp, abort: Abort | None) -> None:
        assert walkup.challenge is not None and walkup.session_id is not None
        if walkup.purpose == "calibration":
            self._finish_calibration(walkup, abort)
            return
        started = time.perf_counter()
        outcome = "fail"
        calibrated = False
        if abort is not None:
            passed, accuracy, reasons = False, 0.0, [abort.value]
        else:
            params, calibrated = self.validator_params(walkup.subject_id)
            verdict = validate(walkup.frames, walkup.challenge, params)
            passed, accuracy, reasons = verdict.passed, verdict.overall_accuracy, list(verdict.reasons)
            outcome = verdict.outcome
            if self.settings.door.antispoof_required and not self._is_live(walkup):
                passed, reasons, outcome = False, [*reasons, "not_live"], "fail"
        result = "pass" if passed else "fail"
        timings = {"validate": time.perf_counter() - started}
        liveness = LivenessEvent(device_id=self.device, session_id=walkup.session_id, result=result, outcome=outcome,
                                 overall_accuracy=round(accuracy, 4), reasons=reasons, model=self.engine.model_id,
                                 timings=timings, calibrated=calibrated)  # fmt: skip
        end = ChallengeEnd(session_id=walkup.session_id, result="aborted" if abort else result,
                           reasons=[Reason(code=r, message=_message(r)) for r in reasons])  # fmt: skip
        if self._claim(walkup):
            self.bus.publish(self.bus.topics.challenge_end, end.to_bytes(), qos=1)
            self.bus.publish(self.bus.topics.event(EventKind.LIVENESS), liveness.to_bytes(), qos=1)
            self._publish_decision(walkup, "granted" if passed else "denied", [] if passed else reasons, timings)
        else:
            self._already_decided(walkup)
        self._complete_session(walkup.session_id, result, accuracy)

    def validator_params(self, subject_id: str | None) -> tuple[ValidatorParams, bool]:
        """The validator's settings for this person's challenge, and whether their own gaze calibration set them
        (``liveness.person_calibration``; without a calibration, or when it cannot be read, the calibration-free
        rule)."""
        params, _ = scoring_params(self.settings.liveness)
        liveness = self.settings.liveness
        if not liveness.person_calibration or subject_id is None:
            return params, False
        try:
            gaze = self.gallery.gallery.gaze_of(subject_id)
        except Exception as exc:  # an unreadable calibration falls back, and says so
            log.warning("gaze calibration of %s not used: %s", subject_id, exc)
            return params, False
        if gaze is None:
            return params, False
        person = PersonGaze.from_dict(gaze)
        return params_for(person, params, liveness.calibration_gain_share, liveness.calibration_row_gap_share), True

    # -- gaze calibration -------------------------------------------------------------------------------------

    def _poll_calibration(self, now: float) -> None:
        job = self.calibration
        if job is not None:
            if self.state is not State.CHALLENGE and now > job.deadline:
                self.calibration = None
                reason = job.last_reason if self.last_frame >= job.started else "camera_missing"
                self._calibration_done(job.subject_id, None, [reason])
            return
        if self.state is State.CHALLENGE or not self.holds_lock or now - self._last_poll < CALIBRATION_POLL:
            return
        self._last_poll = now
        subject_id = self.calibrations.take(self.device)
        if subject_id is None:
            return
        self.calibration = CalibrationJob(subject_id, now, now + WAIT_SECONDS)
        self.calibrations.update(subject_id, self.device, "waiting", expires=time.time() + WAIT_SECONDS + 5)
        log.info("gaze calibration of %s: waiting for the person's face", subject_id)

    def _calibration_in_cooldown(self, image: np.ndarray, faces: list[Face], sighting: Sighting) -> None:
        """The person to calibrate may be the one just decided: they need not wait out the cooldown (anyone else
        does, so that nobody is decided twice). Meanwhile a steady face is identified at most once a second."""
        job = self.calibration
        assert job is not None
        if not self.steady.update(sighting) or sighting.t - job.last_try < IDENTITY_CHECK_EVERY:
            return
        job.last_try = sighting.t
        self.steady.reset()
        self._calibration_walk_up(self._identify(image, faces[0]), sighting.t)

    def _calibration_walk_up(self, identified: Identified, captured: float) -> bool:
        """A steady face while a calibration waits: it starts (True) when the face is the subject's, and only then;
        anyone else is not calibrated."""
        job = self.calibration
        assert job is not None
        decision = identified.decision
        if decision.outcome is not Outcome.IDENTIFIED or decision.subject_id != job.subject_id:
            job.last_reason = "another_person" if decision.outcome is Outcome.IDENTIFIED else "not_recognised"
            return False
        walkup = WalkUp(uuid.uuid4().hex, captured, subject_id=job.subject_id, name=identified.names[job.subject_id],
                        probe=identified.embedding, purpose="calibration", marks={"steady": captured})  # fmt: skip
        self.walkup = walkup
        self._start_challenge(walkup, {"identify": identified.seconds})
        return True

    def _finish_calibration(self, walkup: WalkUp, abort: Abort | None) -> None:
        """Learn the person's gain and row gap from the six windows (edge/liveness/person.py) and keep them with
        the subject; no door decision is made."""
        assert walkup.challenge is not None and walkup.subject_id is not None
        self.calibration = None
        params, _ = scoring_params(self.settings.liveness)
        reasons = [abort.value] if abort is not None else []
        person = None
        if abort is None:
            windows = [(w.cell, [dataclasses.replace(f, t=f.t - w.start) for f in walkup.frames
                                 if w.start <= f.t < w.end]) for w in walkup.challenge.windows()]  # fmt: skip
            person = calibrate(windows, settle=params.settle)
            if person.gain is None or person.row_gap is None:
                reasons = ["not_enough_frames"]
            elif person.gain < params.min_gain:
                reasons = ["gaze_did_not_move"]
            elif person.row_gap <= 0:
                reasons = ["gaze_row_mismatch"]
        self._calibration_done(walkup.subject_id, None if reasons else person, reasons, walkup.session_id,
                               aborted=abort is not None)  # fmt: skip
        self.walkup = None
        self.state = State.COOLDOWN
        self.cooldown_until = clock.now() + self.settings.door.rewalk_seconds

    def _calibration_done(self, subject_id: str, person: PersonGaze | None, reasons: list[str],
                          session_id: str | None = None, *, aborted: bool = False) -> None:  # fmt: skip
        """Store what was learnt (``person``; None: nothing), record the request's state, and say so on the bus (the
        display shows it); ``session_id`` names the calibration's lit cells when they were shown."""
        result = None
        erased = False
        if person is not None:
            result = {**person.to_dict(), "measured": time.time(), "device_id": self.device}
            try:
                self.gallery.gallery.set_gaze(subject_id, result)
            except SubjectNotFound:
                erased = True
        else:
            erased = not self.store.client.exists(keys.subject(subject_id))
        if erased:  # erased while it ran: nothing of the person is written back
            result, reasons = None, ["unknown_subject"]
        state = "saved" if result is not None else "failed"
        if not erased:
            self.calibrations.update(subject_id, self.device, state, reasons=reasons, result=result)
        if session_id is not None:
            outcome = "aborted" if aborted else "pass" if result is not None else "fail"
            message = ChallengeEnd(session_id=session_id, result=outcome,
                                   reasons=[Reason(code=r, message=_message(r)) for r in reasons])  # fmt: skip
            self.bus.publish(self.bus.topics.challenge_end, message.to_bytes(), qos=1)
        event = GazeCalibrationEvent(device_id=self.device, subject_id=subject_id, result=state, reasons=reasons,
                                     gain=person.gain if result else None, row_gap=person.row_gap if result else None,
                                     model=self.engine.model_id)  # fmt: skip
        self.bus.publish(self.bus.topics.event(EventKind.CALIBRATION), event.to_bytes(), qos=1)
        log.info("gaze calibration of %s: %s%s", subject_id, state, f" ({', '.join(reasons)})" if reasons else "")

    # -- decisions --------------------------------------------------------------------------------------------

    def _claim(self, walkup: WalkUp) -> bool:
        """True for the one caller that decides this walk-up (a restart or a redelivery never decides twice)."""
        return bool(self.store.client.set(keys.walkup_decided(walkup.walkup_id), self.token, nx=True, ex=DECISION_TTL))

    def _decide(self, walkup: WalkUp, decision: str, reasons: list[str], timings: dict[str, float],
                score: float | None = None) -> None:  # fmt: skip
        if self._claim(walkup):
            self._publish_decision(walkup, decision, reasons, timings, score)
        else:
            self._already_decided(walkup)

    def _already_decided(self, walkup: WalkUp) -> None:
        """Someone else decided this walk-up (a worker that took over while this one had lost the lock): nothing is
        published, and this worker leaves it."""
        log.info("walk-up %s was already decided elsewhere", walkup.walkup_id[:8])
        self.walkup = None
        self.state = State.COOLDOWN
        self.cooldown_until = clock.now() + self.settings.door.rewalk_seconds

    def _publish_decision(self, walkup: WalkUp, decision: str, reasons: list[str], timings: dict[str, float],
                          score: float | None = None) -> None:  # fmt: skip
        event = AccessEvent(
            device_id=self.device, decision=decision, subject_id=walkup.subject_id, name=walkup.name,
            score=walkup.score if score is None else score, reasons=reasons, model=self.engine.model_id,
            timings={k: round(v, 4) for k, v in timings.items()},
        )  # fmt: skip
        self.bus.publish(self.bus.topics.event(EventKind.ACCESS), event.to_bytes(), qos=1)
        walkup.marks["access"] = clock.now()
        if decision != "granted":
            self.policy.lockout.record_denial(clock.now())
        try:
            self.audit.record(event)
        except redis.RedisError as exc:  # the event is out; the audit entry is what is lost: said, not hidden
            log.error("audit entry for %s not written: %s", event.event_id, exc)
        if decision == "granted":
            credential = self.gallery.gallery.credential_of(walkup.subject_id) if walkup.subject_id else None
            command = DoorCommand(
                action="unlock", seconds=self.settings.door.unlock_seconds, subject_id=walkup.subject_id,
                credential=credential, event_id=event.event_id,
            )  # fmt: skip
            self.bus.publish(self.bus.topics.door_command, command.to_bytes(), qos=1, retain=False)
            walkup.marks["door_command"] = clock.now()
        self.milestones = [*self.milestones[-49:], (decision, dict(walkup.marks))]
        self.decisions += 1
        log.info("walk-up %s: %s%s%s", walkup.walkup_id[:8], decision, f" {walkup.name}" if walkup.name else "",
                 f" ({', '.join(reasons)})" if reasons else "")  # fmt: skip
        self.store.client.delete(keys.walkup_current(self.device))
        self.walkup = None
        self.state = State.COOLDOWN
        self.cooldown_until = clock.now() + self.settings.door.rewalk_seconds

    def _complete_session(self, session_id: str, result: str, accuracy: float) -> None:
        with contextlib.suppress(SessionConflict):  # expired meanwhile
            self.store.transition(session_id, SessionState.PENDING, SessionState.COMPLETED, result=result,
                                  overall_accuracy=accuracy)  # fmt: skip

    def _close_interrupted(self) -> None:
        """A walk-up left open by a worker that died or restarted: decided once, as interrupted."""
        raw = self.store.client.get(keys.walkup_current(self.device))
        if raw is None:
            return
        doc = json.loads(raw)
        walkup = WalkUp(doc["walkup_id"], clock.now(), subject_id=doc.get("subject_id"),
                        session_id=doc.get("session_id"))  # fmt: skip
        if self._claim(walkup):
            if walkup.session_id:
                end = ChallengeEnd(session_id=walkup.session_id, result="aborted",
                                   reasons=[Reason(code=Abort.INTERRUPTED.value,
                                                   message=ABORT_MESSAGES[Abort.INTERRUPTED])])  # fmt: skip
                self.bus.publish(self.bus.topics.challenge_end, end.to_bytes(), qos=1)
            self._publish_decision(walkup, "denied", [Abort.INTERRUPTED.value], {})
        else:
            self.store.client.delete(keys.walkup_current(self.device))

    def _gaze_tracker(self) -> GazeTracker:
        if self._tracker is None:
            # The flow's one tracker keeps a network of the pool for good (one challenge at a time per device).
            net = self._borrowed.enter_context(self.gaze_nets.lend()) if self.gaze_nets else None
            self._tracker = GazeTracker(self.landmarker, net)  # type: ignore[arg-type]
        return self._tracker


def _message(code: str) -> str:
    try:
        return ABORT_MESSAGES[Abort(code)]
    except ValueError:
        return code.replace("_", " ")


def _centre(face: Face) -> tuple[float, float]:
    x, y, w, h = face.box
    return (x + w / 2, y + h / 2)
