"""Request and response models of the HTTP API (also the OpenAPI documentation at /docs).

Where the HTTP shape agrees with a bus message, the HTTP model is that message plus the HTTP-only fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from edge.bus.messages import LivenessResult, MatchResult
from edge.errors import ErrorCode


class MatchRequest(BaseModel):
    image1: str = Field(
        ...,
        description="an http(s) URL, or the image's bytes in base64 (with or without a data: prefix)",
        examples=["https://example.com/face1.jpg"],
    )
    image2: str = Field(
        ..., description="like image1; a data: URL is accepted too (data:image/jpeg;base64,…)",
        examples=["https://example.com/face2.jpg"],
    )  # fmt: skip
    # strict: `true` is not a threshold and "yes" is not a boolean (lax parsing turned `threshold: true` into 1.0)
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, strict=True,
        description="on the calibrated similarity score; default SIMILARITY_THRESHOLD (0.6)",
    )  # fmt: skip
    verbose: bool = Field(False, strict=True, description="add per-image face, quality and timing details")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "image1": "https://example.com/face1.jpg",
                    "image2": "https://example.com/face2.jpg",
                    "threshold": 0.6,
                    "verbose": True,
                }
            ]
        }
    }


class MatchResponse(MatchResult):
    success: bool = True
    processing_time: float = Field(..., description="seconds, from request to answer")


class InitiateLivenessRequest(BaseModel):
    area_duration: float | None = Field(
        None, ge=1.0, le=10.0, strict=True, description="seconds each area is highlighted; default AREA_DURATION (3.0)"
    )

    model_config = {"json_schema_extra": {"examples": [{"area_duration": 3.0}]}}


class ScheduleWindow(BaseModel):
    cell: int
    start: float = Field(..., description="seconds from the first frame of the recording")
    end: float


class InitiateLivenessResponse(BaseModel):
    success: bool = True
    session_id: str
    sequence: list[int] = Field(..., description="3 cells of the 2×3 grid, 1..6 row-major (1 2 3 / 4 5 6)")
    area_duration: float = Field(..., description="the nominal time per area; each window's own length is drawn")
    total_duration: float = Field(..., description="the sum of the windows' lengths")
    schedule: list[ScheduleWindow] = Field(
        ...,
        description="when each cell is lit: its length is drawn per challenge (0.8–1.2 × area_duration), so "
        "a recording made in advance cannot follow it",
    )
    expires_in: int = Field(..., description="seconds before the session expires")
    instructions: str


class SubmitLivenessResponse(LivenessResult):
    success: bool = True
    session_id: str
    processing_time: float


class StreamChunkResponse(BaseModel):
    success: bool = True
    session_id: str
    index: int = Field(..., description="the chunk just stored")
    received: int = Field(..., description="bytes of the video received so far")


class PageTokenRequest(BaseModel):
    hours: float = Field(
        12.0, ge=1 / 60, le=24 * 7, strict=True, description="how long the page may run challenges (1 minute to a week)"
    )


class PageTokenResponse(BaseModel):
    success: bool = True
    token: str = Field(..., description="shown once; only its hash is kept")
    expires_in: int
    url: str = Field(..., description="the page with the token in its fragment (never sent to the server)")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    success: bool = False
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these statuses, each listing the catalogue's codes answered with it."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        codes = [c for c in ErrorCode if c.status == status]
        lines = "; ".join(f"`{c.value}`: {c.description}" for c in codes)
        responses[status] = {"model": ErrorResponse, "description": lines}
    return responses


COMMON_ERRORS = (401, 422, 429, 500, 503)
