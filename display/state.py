"""What the monitor shows at time t, from the bus's messages. Pure: no screen, no clock of its own.

The grid's highlighted cell is computed from ``challenge/start``'s windows and the device clock (``edge.clock``),
never from when the message arrived, so the display and the scorer agree on the schedule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum

from edge.bus.messages import AccessEvent, ChallengeEnd, ChallengeStart, DoorIndicator, GazeCalibrationEvent

RESULT_SECONDS = 4.0

# What a denied person reads, by reason code (the first known one is shown).
DENIAL_TEXT = {
    "face_left": ("Please stay in front of the camera", "Stand still and keep your face in view until the end."),
    "second_face": ("One person at a time, please", "Step up alone and try again."),
    "identity_changed": ("One person at a time, please", "Step up alone and try again."),
    "camera_stalled": ("The camera stopped", "Please try again in a moment."),
    "interrupted": ("The check was interrupted", "Please try again."),
    "not_live": ("Not accepted", "Show your own face to the camera, in good light."),
    "accuracy_below_threshold": ("Your eyes did not follow the lit squares", "Look at each lit square in turn."),
}
DEFAULT_DENIAL = ("Not accepted", "Please try again, or ask for help.")
# What the person being calibrated reads when it did not work, by reason code.
CALIBRATION_TEXT = {
    "face_left": "Stay in front of the camera until every square has been lit.",
    "second_face": "Only the person being enrolled should be in view.",
    "identity_changed": "Only the person being enrolled should be in view.",
    "gaze_did_not_move": "Keep your head still and move your eyes to each lit square.",
    "gaze_row_mismatch": "Look at the upper squares, then at the lower ones, with your eyes only.",
    "another_person": "The face in view is not the person being enrolled.",
    "not_recognised": "The face in view was not recognised: check the enrolment photos.",
    "no_face": "Nobody stood in front of the camera in time.",
    "camera_missing": "The camera is not delivering pictures.",
}


class Kind(str, Enum):
    IDLE = "idle"
    COUNTDOWN = "countdown"
    CHALLENGE = "challenge"
    RESULT = "result"


@dataclass(frozen=True)
class Screen:
    kind: Kind
    title: str = ""
    detail: str = ""
    lit_cell: int | None = None  # 1..6 while a window is open
    countdown: float | None = None  # seconds to the first window
    progress: float | None = None  # 0..1 through the challenge
    granted: bool | None = None
    indicator: str | None = None  # the LED colour an access-control panel asked the reader to show


@dataclass
class DisplayModel:
    components: dict[str, bool] = field(default_factory=dict)  # component -> any instance online
    challenge: ChallengeStart | None = None
    result: Screen | None = None  # a decision or a calibration's outcome, shown until result_until
    result_until: float = 0.0
    indicator: str | None = None
    indicator_until: float = 0.0

    # -- inputs -------------------------------------------------------------------------------------------------

    def on_start(self, start: ChallengeStart) -> None:
        self.challenge = start
        self.result = None

    def on_end(self, end: ChallengeEnd) -> None:
        if self.challenge is not None and self.challenge.session_id == end.session_id:
            self.challenge = None

    def on_access(self, event: AccessEvent, now: float) -> None:
        self.challenge = None
        self.result = _result_screen(event)
        self.result_until = now + RESULT_SECONDS

    def on_calibration(self, event: GazeCalibrationEvent, now: float) -> None:
        self.challenge = None
        if event.result == "saved":
            self.result = Screen(Kind.RESULT, "Calibration saved", "Thank you", granted=True)
        else:
            detail = next((CALIBRATION_TEXT[r] for r in event.reasons if r in CALIBRATION_TEXT), "Please try again.")
            self.result = Screen(Kind.RESULT, "Calibration not saved", detail, granted=False)
        self.result_until = now + RESULT_SECONDS

    def on_indicator(self, indicator: DoorIndicator, now: float) -> None:
        """The panel's LED command (OSDP): shown as a coloured frame for its time (or until the next command)."""
        if indicator.kind == "led":
            self.indicator = None if indicator.colour == "off" else indicator.colour
            self.indicator_until = now + (indicator.seconds or 3600.0)

    def on_presence(self, component: str, online: bool) -> None:
        self.components[component] = online

    # -- output -------------------------------------------------------------------------------------------------

    def screen(self, now: float) -> Screen:
        screen = self._screen(now)
        if self.indicator is not None and now < self.indicator_until:
            return dataclasses.replace(screen, indicator=self.indicator)
        return screen

    def _screen(self, now: float) -> Screen:
        if self.result is not None and now < self.result_until:
            return self.result
        start = self.challenge
        if start is not None:
            first, last = start.windows[0].start, start.windows[-1].end
            calibrating = start.purpose == "calibration"
            if now < first:
                title = "Calibration: get ready" if calibrating else "Get ready"
                return Screen(Kind.COUNTDOWN, title, "Keep your head still and look at each square when it lights up",
                              countdown=first - now, progress=0.0)  # fmt: skip
            if now < last:
                lit = next((w.cell for w in start.windows if w.start <= now < w.end), None)
                return Screen(Kind.CHALLENGE, "Calibration: look at the lit square" if calibrating
                              else "Look at the lit square", "", lit_cell=lit,
                              progress=(now - first) / (last - first))  # fmt: skip
            return Screen(Kind.CHALLENGE, "Checking…", "", progress=1.0)
        return self._idle()

    def _idle(self) -> Screen:
        if self.components.get("inference") is False:
            return Screen(Kind.IDLE, "Out of service", "The recognition service is not running")
        if self.components.get("camera") is False:
            return Screen(Kind.IDLE, "Out of service", "The camera is not connected")
        return Screen(Kind.IDLE, "Welcome", "Step up to the camera")


def _result_screen(event: AccessEvent) -> Screen:
    if event.decision == "granted":
        return Screen(Kind.RESULT, f"Welcome, {event.name}" if event.name else "Welcome", "The door is open",
                      granted=True)  # fmt: skip
    if event.decision == "unknown":
        return Screen(Kind.RESULT, "Not recognised", "Please ask for help, or register at the desk.", granted=False)
    title, detail = next((DENIAL_TEXT[r] for r in event.reasons if r in DENIAL_TEXT), DEFAULT_DENIAL)
    return Screen(Kind.RESULT, title, detail, granted=False)
