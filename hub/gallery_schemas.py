"""Request and response models of the gallery endpoints (``/identify``, ``/subjects``, export/import)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from edge.bus.messages import EnrollResult, IdentifyResult, NegativeResult, ReembedResult, SubjectRef

MAX_PHOTOS = 10
IMAGE_HELP = "an http(s) URL, or the image's bytes in base64 (a data: URL is accepted too)"


class IdentifyHttpRequest(BaseModel):
    image: str = Field(..., description=IMAGE_HELP, examples=["https://example.com/visitor.jpg"])
    max_candidates: int = Field(3, ge=1, le=20, strict=True, description="how many best subjects to list")

    model_config = {"json_schema_extra": {"examples": [{"image": "https://example.com/visitor.jpg"}]}}


class IdentifyResponse(IdentifyResult):
    success: bool = True
    processing_time: float


class PhotosRequest(BaseModel):
    photos: list[str] = Field(..., min_length=1, max_length=MAX_PHOTOS, description=f"1 to {MAX_PHOTOS}; {IMAGE_HELP}")
    allow_mixup: bool = Field(
        False, strict=True, description="add a face even when it already looks like another subject"
    )


class SubjectCreate(PhotosRequest):
    name: str = Field(..., min_length=1, max_length=200, description="shown on the display and in events")
    metadata: dict[str, Any] = Field(default_factory=dict, description="free JSON kept with the subject")
    credential: int | None = Field(
        None, ge=0, le=2**32 - 1, strict=True,
        description="the card number the door's panel knows this person by (OSDP reader mode); default: the next free",
    )  # fmt: skip
    reuse_credential: bool = Field(False, strict=True, description="allow a number that was a deleted subject's")

    model_config = {
        "json_schema_extra": {
            "examples": [{"name": "Ada Lovelace", "metadata": {"badge": "1042"},
                          "photos": ["https://example.com/ada-1.jpg", "https://example.com/ada-2.jpg"]}]
        }
    }  # fmt: skip


class SubjectUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _something(self) -> SubjectUpdate:
        if self.name is None and self.metadata is None:
            raise ValueError("send name, metadata or both")
        return self


class SubjectSummary(BaseModel):
    subject_id: str
    name: str
    credential: int | None = Field(None, description="card number sent to an access-control panel when granted")
    metadata: dict[str, Any]
    created: float
    updated: float
    faces: int
    faces_for_model: int | None = Field(None, description="faces usable by the configured embedding model")
    negatives: int
    gaze_calibration: GazeCalibration | None = Field(
        None, description="the person's gaze calibration, when one was taken (POST /subjects/{id}/gaze-calibration)"
    )


class GazeCalibration(BaseModel):
    """What a gaze calibration learnt: only what carries over between sessions (docs/LIVENESS.md)."""

    gain: float | None = Field(None, description="the person's eye movement per column (iris position)")
    row_gap: float | None = Field(None, description="the person's eye movement from the upper to the lower row")
    measured: float | None = Field(None, description="when (epoch seconds)")
    device_id: str | None = Field(None, description="the device it was taken on")


class FaceSummary(BaseModel):
    face_id: str
    created: float
    source: str
    quality: dict[str, float]
    models: list[str]
    has_image: bool


class SubjectDetail(SubjectSummary):
    face_list: list[FaceSummary]


class SubjectResponse(BaseModel):
    success: bool = True
    subject: SubjectDetail


class SubjectListResponse(BaseModel):
    success: bool = True
    total: int
    offset: int
    subjects: list[SubjectSummary]


class EnrollResponse(EnrollResult):
    success: bool = True
    subject: SubjectSummary


class DeletedResponse(BaseModel):
    success: bool = True
    deleted: str


class NegativeHttpRequest(BaseModel):
    image: str | None = Field(None, description=f"a photo of the person who is not the subject; {IMAGE_HELP}")
    identification_id: str | None = Field(None, description="a recent identification that wrongly named the subject")

    @model_validator(mode="after")
    def _one(self) -> NegativeHttpRequest:
        if (self.image is None) == (self.identification_id is None):
            raise ValueError("send exactly one of image and identification_id")
        return self


class NegativeResponse(NegativeResult):
    success: bool = True


class IdentificationsResponse(BaseModel):
    success: bool = True
    identifications: list[dict[str, Any]]


class ReembedResponse(ReembedResult):
    success: bool = True


class ImportResponse(BaseModel):
    success: bool = True
    subjects: int
    replaced: int = Field(..., description="subjects that were already here (same id) and were replaced")
    faces: int
    images: int = Field(..., description="photos kept (only with store_enrollment_images)")
    models: list[str] = Field(..., description="embedding models in the archive")
    gallery_version: int
    reembedded: dict[str, int] = Field(default_factory=dict, description="subject id -> faces embedded from photos")
    needs_new_photos: list[SubjectRef] = Field(
        default_factory=list, description="subjects without a face for this device's model and without a photo"
    )
    reembed_pending: str | None = Field(None, description="why re-embedding could not run now")


class GazeCalibrationRequestState(BaseModel):
    state: Literal["requested", "waiting", "running", "saved", "failed"] = Field(
        ...,
        description="requested: queued for the device's door flow; waiting: for the person's face; running: "
        "the cells are being lit; saved or failed (reasons say why: not_taken — no door flow took the request; "
        "no_face, camera_missing, another_person, not_recognised, face_left, gaze_did_not_move, …)",
    )
    device_id: str
    reasons: list[str] = Field(default_factory=list)
    requested: float
    updated: float
    result: GazeCalibration | None = None


class GazeCalibrationResponse(BaseModel):
    success: bool = True
    subject_id: str
    stored: GazeCalibration | None = Field(None, description="the calibration kept with the subject")
    request: GazeCalibrationRequestState | None = Field(None, description="the last request's state (kept 1 h)")

    model_config = {
        "json_schema_extra": {
            "examples": [{"success": True, "subject_id": "3f2a9c41d7e84b0f", "stored": None,
                          "request": {"state": "waiting", "device_id": "front-door", "reasons": [],
                                      "requested": 1795000000.0, "updated": 1795000001.2, "result": None}}]
        }
    }  # fmt: skip
