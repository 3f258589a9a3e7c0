"""Request and response models of the HTTP API (they are also the OpenAPI documentation at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class MatchRequest(BaseModel):
    image1: str = Field(
        ...,
        description="an http(s) URL, or the image's bytes in base64 (with or without a data: prefix)",
        examples=["https://example.com/face1.jpg"],
    )
    image2: str = Field(..., examples=["data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEA..."])
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="on the calibrated similarity score; default SIMILARITY_THRESHOLD (0.6)"
    )
    verbose: bool = Field(False, description="add per-image face, quality and timing details")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "image1": "https://example.com/face1.jpg",
                    "image2": "data:image/jpeg;base64,/9j/4AAQ...",
                    "threshold": 0.6,
                    "verbose": True,
                }
            ]
        }
    }


class MatchResponse(BaseModel):
    success: bool = True
    match: bool
    similarity_score: float = Field(..., description="calibrated: a score s stands for a false-match rate of 10^(-5s)")
    threshold: float
    model: str
    liveness: dict[str, bool] = Field(
        default_factory=dict, description="per image: did passive anti-spoofing find the face live (details if verbose)"
    )
    warnings: list[str] = []
    processing_time: float = Field(..., description="seconds, from request to answer")
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    success: bool = False
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "an input is not an image, a URL is refused or unreachable",
        413: "an image or the body is too large",
        422: "no usable face (the reason is named), or the request is malformed",
        503: "a dependency (broker, inference daemon, Redis) is down; the body names it",
        504: "the inference daemon did not answer in time",
    }.items()
}


class InitiateLivenessRequest(BaseModel):
    area_duration: float | None = Field(
        None, ge=1.0, le=10.0, description="seconds each area is highlighted; default AREA_DURATION (3.0)"
    )

    model_config = {"json_schema_extra": {"examples": [{"area_duration": 3.0}]}}


class InitiateLivenessResponse(BaseModel):
    success: bool = True
    session_id: str
    sequence: list[int] = Field(..., description="3 cells of the 2×3 grid, 1..6 row-major (1 2 3 / 4 5 6)")
    area_duration: float
    total_duration: float
    expires_in: int = Field(..., description="seconds before the session expires")
    instructions: str


class AreaResultModel(BaseModel):
    index: int
    area: int
    frames: int
    frames_used: int
    accuracy: float
    passed: bool


class ReasonModel(BaseModel):
    code: str
    message: str


class AntiSpoofingModel(BaseModel):
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
    reasons: list[ReasonModel] = Field(default_factory=list)
    reason: str | None = Field(None, description="why it was not checked")


class SubmitLivenessResponse(BaseModel):
    success: bool = True
    session_id: str
    result: str = Field(..., description="pass or fail")
    overall_accuracy: float
    sequence_results: list[AreaResultModel]
    reasons: list[ReasonModel] = Field(..., description="why it failed (empty on a pass)")
    anti_spoofing: AntiSpoofingModel = Field(..., description="video-level passive anti-spoofing verdict and cues")
    frames_processed: int = Field(..., description="frames tracked (one every 0.1 s of video)")
    video_seconds: float
    tracking_time: float = Field(..., description="seconds spent decoding and tracking")
    diagnostics: dict[str, float] = Field(default_factory=dict, description="gaze figures behind the verdict")
    processing_time: float
