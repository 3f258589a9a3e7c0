"""The message contract: every MQTT payload of the product as a pydantic model, beside the topic names.

The hub, the inference workers and the device processes (camera, display, door outputs, fleet tool) share these
types, so a payload is checked where it is made and where it is read. Events carry ids, scores, model versions and
timings; never images or embeddings.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.bus.topics import Component, RpcMethod


class Payload(BaseModel):
    """Base of every payload: unknown fields are ignored, so a newer sender does not break an older reader."""

    model_config = ConfigDict(extra="ignore")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()


# -- RPC envelope ---------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """An error as clients see it: a code from the catalogue (docs/ERRORS.md), a message for people, details."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class RpcReply(Payload):
    """What a worker sends to the request's ResponseTopic: a result or an error, never both."""

    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None
    instance: str | None = Field(None, description="the worker instance that answered")


class WorkerInfo(Payload):
    """Retained on ``<component>/<instance>/info`` while the instance runs."""

    component: Component
    instance: str
    host: str
    routes: list[str] = Field(default_factory=list, description="RPC routes served: match, liveness/<host>, …")
    version: str
    pid: int
    started_at: float


# -- match ----------------------------------------------------------------------------------------------------


class MatchRequest(Payload):
    image1: str = Field(..., description="image bytes, base64")
    image2: str = Field(..., description="image bytes, base64")
    threshold: float = Field(..., ge=0.0, le=1.0)
    verbose: bool = False


class MatchResult(Payload):
    match: bool
    similarity_score: float = Field(..., description="calibrated: a score s stands for a false-match rate of 10^(-5s)")
    threshold: float
    model: str
    liveness: dict[str, bool] = Field(
        default_factory=dict, description="per image: did passive anti-spoofing find the face live (details if verbose)"
    )
    warnings: list[str] = Field(default_factory=list)
    inference_time: float | None = Field(None, description="seconds spent by the inference worker")
    details: dict[str, Any] | None = None


# -- liveness -------------------------------------------------------------------------------------------------


class LivenessRequest(Payload):
    video_path: str = Field(..., description="the upload in the spool directory of the caller's host")
    sequence: list[int]
    area_duration: float
    durations: list[float] | None = Field(None, description="each window's length, as drawn (default: area_duration)")


class Reason(BaseModel):
    """Why a check failed, and what the person can do about it."""

    code: str
    message: str
    hint: str = Field("", description="what to do next")


class AreaResult(BaseModel):
    index: int
    area: int
    frames: int = Field(..., description="frames tracked in the area's window")
    frames_used: int = Field(..., description="after the settle time, blinks and lost faces")
    accuracy: float = Field(..., description="share of the used frames whose gaze was on the lit area")
    passed: bool


class AntiSpoofing(BaseModel):
    """The video-level presentation verdict (docs/LIVENESS.md); ``checked`` is false when scored without the models."""

    checked: bool
    passed: bool | None = None
    live_probability: float | None = Field(None, description="texture cue: mean MiniFASNet live probability")
    frames_scored: int | None = None
    screen_pattern: float | None = Field(None, description="moiré peak around the face (a filmed screen is high)")
    picture_motion: float | None = Field(
        None,
        description="how far the face and its surroundings are from moving as one plane, in face motions "
        "(a picture held in a hand is ~0.01, a person above ~0.1)",
    )
    planar_motion_ratio: float | None = Field(None, description="reported only")
    blinks: int | None = Field(None, description="reported only")
    reasons: list[Reason] = Field(default_factory=list)
    reason: str | None = Field(None, description="why it was not checked")


class LivenessResult(Payload):
    result: Literal["pass", "fail"]
    outcome: Literal["pass", "fail", "try_again"] = Field(
        "fail",
        description="result, with a third answer: try_again when the evidence was too weak to decide (too few usable "
        "frames, no face, a face too small or too dark); result is then fail, and the reasons say what to change",
    )
    overall_accuracy: float = Field(..., description="mean of the areas' accuracies")
    sequence_results: list[AreaResult]
    reasons: list[Reason] = Field(default_factory=list, description="why it failed (empty on a pass)")
    anti_spoofing: AntiSpoofing
    frames_processed: int = Field(..., description="frames tracked (one every 0.1 s of video)")
    video_seconds: float
    tracking_time: float = Field(..., description="seconds spent decoding and tracking")
    diagnostics: dict[str, float] = Field(default_factory=dict, description="gaze figures behind the verdict")


# -- health ---------------------------------------------------------------------------------------------------


class HealthRequest(Payload):
    pass


class HealthResult(Payload):
    version: str
    instance: str
    models: dict[str, str]
    runs_on: dict[str, str] = {}  # role -> the runtime and provider it really runs on
    calibration: dict[str, Any] | None = None
    loaded_at: float


# -- gallery and 1:N ------------------------------------------------------------------------------------------


class IdentifyRequest(Payload):
    image: str = Field(..., description="image bytes, base64")
    max_candidates: int = Field(3, ge=1, le=20)
    record: bool = Field(True, description="add to the recent identifications (operator page, 'this is not X')")


class SubjectRef(BaseModel):
    subject_id: str
    name: str


class IdentifyCandidate(SubjectRef):
    similarity_score: float = Field(..., description="calibrated like /match: s stands for a false-match rate 10^(-5s)")
    cosine: float
    marked_not_this_person: bool = Field(False, description="closer to a face marked 'not this person' than to theirs")


class IdentifyThreshold(BaseModel):
    similarity_score: float = Field(..., description="on the calibrated scale; above 1.0 for very large galleries")
    cosine: float
    false_match_rate_per_comparison: float
    gallery_faces: int
    target_fpir: float = Field(..., description="the configured share of strangers that may be given a name")
    explanation: str


class IdentifyResult(Payload):
    identification_id: str
    outcome: Literal["identified", "unknown"]
    subject: SubjectRef | None = None
    similarity_score: float | None = Field(None, description="of the best candidate")
    reason: Reason
    candidates: list[IdentifyCandidate] = Field(default_factory=list)
    threshold: IdentifyThreshold
    model: str
    warnings: list[str] = Field(default_factory=list)
    gallery_version: int
    inference_time: float | None = None


class PhotoReport(BaseModel):
    index: int = Field(..., description="position of the photo in the request")
    status: Literal["added", "rejected", "duplicate", "mixup"]
    face_id: str | None = None
    reasons: list[Reason] = Field(default_factory=list)
    other_subject: SubjectRef | None = Field(None, description="for a mix-up: whom the face already belongs to")
    quality: dict[str, float] = Field(default_factory=dict)


class EnrollRequest(Payload):
    subject_id: str
    photos: list[str] = Field(..., min_length=1, description="image bytes, base64")
    source: Literal["upload", "camera", "import"] = "upload"
    allow_mixup: bool = Field(False, description="add a face even when it already looks like another subject")


class EnrollResult(Payload):
    subject_id: str
    photos: list[PhotoReport]
    faces: int = Field(..., description="the subject's faces for this model after the request")
    model: str
    gallery_version: int


class NegativeRequest(Payload):
    subject_id: str
    image: str | None = Field(None, description="a photo of the person who is not the subject, base64")
    identification_id: str | None = Field(None, description="a recent identification whose probe was not the subject")


class NegativeResult(Payload):
    subject_id: str
    face_id: str
    negatives: int
    gallery_version: int


class ReembedRequest(Payload):
    subject_ids: list[str] = Field(default_factory=list, description="empty: every subject")


class ReembedResult(Payload):
    model: str
    reembedded: dict[str, int] = Field(default_factory=dict, description="subject id -> faces embedded anew")
    needs_new_photos: list[SubjectRef] = Field(
        default_factory=list, description="subjects with no face for this model and no kept photo to embed"
    )
    gallery_version: int


class GalleryChanged(Payload):
    """``gallery/changed``: a hint to reload now; workers also check the version in Redis before each search."""

    version: int
    subject_id: str | None = None


# Request and result type of every RPC method.
RPC_TYPES: dict[RpcMethod, tuple[type[Payload], type[Payload]]] = {
    RpcMethod.MATCH: (MatchRequest, MatchResult),
    RpcMethod.LIVENESS: (LivenessRequest, LivenessResult),
    RpcMethod.LIVENESS_STREAM: (LivenessRequest, LivenessResult),
    RpcMethod.HEALTH: (HealthRequest, HealthResult),
    RpcMethod.IDENTIFY: (IdentifyRequest, IdentifyResult),
    RpcMethod.ENROLL: (EnrollRequest, EnrollResult),
    RpcMethod.NEGATIVE: (NegativeRequest, NegativeResult),
    RpcMethod.REEMBED: (ReembedRequest, ReembedResult),
}


# -- device mode: challenge, events, door -----------------------------------------------------------------------


def new_event_id() -> str:
    return uuid.uuid4().hex


class ChallengeWindow(BaseModel):
    cell: int = Field(..., ge=1, le=6)
    start: float = Field(..., description="epoch seconds")
    end: float = Field(..., description="epoch seconds")


class ChallengeStart(Payload):
    session_id: str
    sequence: list[int]
    area_duration: float
    start_time: float = Field(..., description="epoch seconds, one clock for the whole device")
    grid: tuple[int, int] = (2, 3)
    windows: list[ChallengeWindow]
    purpose: Literal["access", "calibration"] = Field(
        "access", description="calibration: an enrolled person's gaze calibration, not a door decision"
    )


class HighlightDrawn(Payload):
    """``display/timing``: when the display really drew a challenge window's highlight (device clock)."""

    session_id: str
    index: int
    cell: int
    scheduled: float
    drawn: float


class ChallengeEnd(Payload):
    session_id: str
    result: Literal["pass", "fail", "aborted"]
    reasons: list[Reason] = Field(default_factory=list)


class Event(Payload):
    event_id: str = Field(default_factory=new_event_id)
    time: float = Field(default_factory=time.time)
    device_id: str
    model: str | None = Field(None, description="embedding model (and version) behind the scores")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per step")


class MatchEvent(Event):
    match: bool
    similarity_score: float
    threshold: float


class LivenessEvent(Event):
    session_id: str
    result: Literal["pass", "fail"]
    outcome: Literal["pass", "fail", "try_again"] = Field(
        "fail", description="try_again: the evidence was too weak to decide (result is fail; reasons say why)"
    )
    overall_accuracy: float
    reasons: list[str] = Field(default_factory=list)
    calibrated: bool = Field(False, description="judged with the subject's own gaze calibration")


class GazeCalibrationEvent(Event):
    """``events/calibration``: how a subject's gaze calibration on the device went."""

    subject_id: str
    result: Literal["saved", "failed"]
    reasons: list[str] = Field(default_factory=list)
    gain: float | None = Field(None, description="the person's eye movement per column")
    row_gap: float | None = Field(None, description="the person's eye movement between the rows")


class AccessEvent(Event):
    decision: Literal["granted", "denied", "unknown", "no_face"]
    subject_id: str | None = None
    name: str | None = Field(None, description="the subject's display name, for the monitor by the door")
    score: float | None = None
    reasons: list[str] = Field(default_factory=list)


class DoorCommand(Payload):
    """Published on ``door/command`` (QoS 1, never retained); ``event_id`` lets a controller drop duplicates."""

    action: Literal["unlock", "lock"]
    seconds: float = Field(5.0, gt=0, le=600)
    subject_id: str | None = None
    credential: int | None = Field(None, description="the subject's card number, for an access-control panel")
    event_id: str


class DoorIndicator(Payload):
    """``door/indicator``: what the access-control panel asked the reader to show (its LED) or sound."""

    kind: Literal["led", "buzzer"]
    colour: str = "off"
    seconds: float = 0.0


class DoorEvent(Event):
    """``events/door``: what the door contact reports."""

    kind: Literal["door_forced", "door_held_open", "door_closed"]


class FleetCommand(Payload):
    """``cmd/<name>``: arguments of a fleet command; the reply goes to ``cmd/<name>/result`` with the correlation."""

    args: dict[str, Any] = Field(default_factory=dict)


class CommandResult(Payload):
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None


class Stats(Payload):
    component: Component
    instance: str
    time: float = Field(default_factory=time.time)
    figures: dict[str, float] = Field(default_factory=dict, description="fps, drops, queue depth, latencies, memory")
