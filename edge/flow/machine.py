"""The door flow's states and rules (pure: fed observations, no I/O; the runner is ``edge/inference/door_flow.py``).

idle → steady (one face, large enough, still for a moment) → identified (1:N) → anti-spoofing → challenge → decision
→ cooldown → idle. Identification, anti-spoofing and the decision are steps the runner takes between frames; what
needs rules over time is here: steadiness, and what ends a challenge early (the face leaves, a second face, another
identity, a camera that stalls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class State(str, Enum):
    IDLE = "idle"
    STEADY = "steady"
    CHALLENGE = "challenge"
    COOLDOWN = "cooldown"


class Abort(str, Enum):
    """Why a challenge ended before its last window."""

    FACE_LEFT = "face_left"
    SECOND_FACE = "second_face"
    IDENTITY_CHANGED = "identity_changed"
    CAMERA_STALLED = "camera_stalled"
    INTERRUPTED = "interrupted"


ABORT_MESSAGES = {
    Abort.FACE_LEFT: "the face left the camera's view during the challenge",
    Abort.SECOND_FACE: "a second face came into view during the challenge",
    Abort.IDENTITY_CHANGED: "another person's face appeared during the challenge",
    Abort.CAMERA_STALLED: "the camera stopped sending frames during the challenge",
    Abort.INTERRUPTED: "the device restarted during the challenge",
}


@dataclass(frozen=True)
class Sighting:
    """What one frame showed: its capture time, how many faces, and the most prominent one's centre and size."""

    t: float
    faces: int
    centre: tuple[float, float] = (0.0, 0.0)
    eye_distance: float = 0.0


@dataclass(frozen=True)
class FlowRules:
    min_eye_distance: float = 40.0  # pixels: close enough to the door to be walking up, not passing by
    steady_frames: int = 3
    steady_seconds: float = 0.3
    max_drift: float = 0.25  # centre movement between frames, in eye distances
    face_lost_seconds: float = 1.0
    second_face_frames: int = 3
    stall_seconds: float = 1.5


@dataclass
class Steadiness:
    """One face, large enough, that stays still over ``steady_frames`` frames spanning ``steady_seconds``."""

    rules: FlowRules
    run: list[Sighting] = field(default_factory=list)

    def update(self, sighting: Sighting) -> bool:
        usable = sighting.faces == 1 and sighting.eye_distance >= self.rules.min_eye_distance
        if not usable:
            self.run.clear()
            return False
        if self.run:
            last = self.run[-1]
            drift = ((sighting.centre[0] - last.centre[0]) ** 2 + (sighting.centre[1] - last.centre[1]) ** 2) ** 0.5
            if drift > self.rules.max_drift * sighting.eye_distance:
                self.run.clear()
        self.run.append(sighting)
        span = self.run[-1].t - self.run[0].t
        return len(self.run) >= self.rules.steady_frames and span >= self.rules.steady_seconds

    def reset(self) -> None:
        self.run.clear()


@dataclass
class ChallengeWatch:
    """Ends a running challenge early, with the reason."""

    rules: FlowRules
    last_face: float
    last_frame: float
    second_faces: int = 0

    def on_frame(self, sighting: Sighting) -> Abort | None:
        self.last_frame = sighting.t
        if sighting.faces >= 1:
            self.last_face = sighting.t
        self.second_faces = self.second_faces + 1 if sighting.faces > 1 else 0
        if self.second_faces >= self.rules.second_face_frames:
            return Abort.SECOND_FACE
        if sighting.t - self.last_face > self.rules.face_lost_seconds:
            return Abort.FACE_LEFT
        return None

    def on_clock(self, now: float) -> Abort | None:
        """Called between frames: no frame at all for a while is a stalled camera."""
        if now - self.last_frame > self.rules.stall_seconds:
            return Abort.CAMERA_STALLED
        return None
