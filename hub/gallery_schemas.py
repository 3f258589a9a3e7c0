"""Request and response models of the gallery endpoints (``/identify``, ``/subjects``, export/import)."""

from __future__ import annotations

from typing import Any

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
