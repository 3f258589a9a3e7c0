"""The gallery over HTTP: ``POST /identify``, ``/subjects`` (enrol, list, get, rename, delete), faces, "this is not
X", recent identifications, export and import.

Steps that need the models (identify, enrolment, negatives from a photo, re-embedding) are RPCs to an inference
worker; the rest reads and writes Redis here. Every change is announced on ``gallery/changed``.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from edge.bus import RpcMethod
from edge.bus.messages import (
    EnrollRequest,
    EnrollResult,
    IdentifyRequest,
    IdentifyResult,
    NegativeRequest,
    NegativeResult,
    ReembedRequest,
    ReembedResult,
)
from edge.errors import DependencyUnavailable, ErrorCode, FacematchError, InputError
from edge.identify.index import announce_change
from edge.store import keys
from edge.store.archive import export_gallery, import_gallery
from edge.store.calibrations import GazeCalibrations
from hub.deps import Hub, KeyHolder
from hub.gallery_schemas import (
    DeletedResponse,
    EnrollResponse,
    GazeCalibrationResponse,
    IdentificationsResponse,
    IdentifyHttpRequest,
    IdentifyResponse,
    ImportResponse,
    NegativeHttpRequest,
    NegativeResponse,
    PhotosRequest,
    ReembedResponse,
    SubjectCreate,
    SubjectDetail,
    SubjectListResponse,
    SubjectResponse,
    SubjectUpdate,
)
from hub.schemas import COMMON_ERRORS, error_responses
from hub.state import HubState

router = APIRouter(tags=["gallery"])

# Re-embedding kept photos after an import takes ~50 ms a photo; a large gallery may take minutes.
REEMBED_TIMEOUT = 900.0
ZIP_BODY = {
    "requestBody": {
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        "required": True,
    }
}


async def encoded_photos(hub: HubState, photos: list[str]) -> list[str]:
    loaded = [await hub.images.load(f"photos[{i}]", p) for i, p in enumerate(photos)]
    return [base64.b64encode(data).decode() for data in loaded]


# -- identify -----------------------------------------------------------------------------------------------------


@router.post(
    "/identify",
    summary="Who is this? The best enrolled subjects, or `unknown` (open-set, calibrated for the gallery's size)",
    response_model=IdentifyResponse,
    response_model_exclude_none=True,
    responses=error_responses(400, 403, 413, 415, *COMMON_ERRORS, 504),
)
async def identify(request: IdentifyHttpRequest, caller: KeyHolder, hub: Hub) -> IdentifyResponse:
    started = time.perf_counter()
    hub.require(RpcMethod.IDENTIFY)
    with hub.match_slots.take():
        image = await hub.images.load("image", request.image)
        rpc = IdentifyRequest(image=base64.b64encode(image).decode(), max_candidates=request.max_candidates)
        result: IdentifyResult = await hub.bus.acall(RpcMethod.IDENTIFY, rpc, timeout=hub.settings.http.request_timeout)
    return IdentifyResponse(**result.model_dump(), processing_time=round(time.perf_counter() - started, 4))


@router.get(
    "/identifications",
    summary="The most recent identifications (for the operator page)",
    response_model=IdentificationsResponse,
    responses=error_responses(403, *COMMON_ERRORS),
)
def identifications(
    caller: KeyHolder, hub: Hub, count: Annotated[int, Query(ge=1, le=1000)] = 20
) -> IdentificationsResponse:
    return IdentificationsResponse(identifications=hub.gallery.recent_identifications(count))


# -- subjects -----------------------------------------------------------------------------------------------------


@router.get(
    "/subjects",
    summary="Enrolled subjects, a page at a time (oldest first)",
    response_model=SubjectListResponse,
    responses=error_responses(403, *COMMON_ERRORS),
)
def list_subjects(
    caller: KeyHolder,
    hub: Hub,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SubjectListResponse:
    ids = hub.gallery.subject_ids(offset, limit)
    loaded = hub.gallery.load(ids)
    model = hub.model_id()
    return SubjectListResponse(
        total=hub.gallery.count(), offset=offset,
        subjects=[loaded[s].summary(model) for s in ids if s in loaded],
    )  # fmt: skip


async def _enroll(hub: HubState, subject_id: str, photos: list[str], allow_mixup: bool) -> EnrollResult:
    rpc = EnrollRequest(subject_id=subject_id, photos=await encoded_photos(hub, photos), allow_mixup=allow_mixup)
    timeout = hub.settings.http.request_timeout + 2.0 * len(photos)
    return await hub.bus.acall(RpcMethod.ENROLL, rpc, timeout=timeout)


async def _answer(hub: HubState, subject_id: str, result: EnrollResult) -> EnrollResponse:
    """An enrolment's report with the subject as it is now."""
    subject = await run_in_threadpool(hub.gallery.get, subject_id)
    return EnrollResponse(subject=subject.summary(result.model), **result.model_dump())


@router.post(
    "/subjects",
    status_code=201,
    summary="Enrol a person from one or more photos; each photo's fate is reported",
    response_model=EnrollResponse,
    response_model_exclude_none=True,
    responses=error_responses(400, 403, 409, 413, 415, *COMMON_ERRORS, 504),
)
async def create_subject(request: SubjectCreate, caller: KeyHolder, hub: Hub) -> EnrollResponse:
    hub.require(RpcMethod.ENROLL)
    await run_in_threadpool(hub.sweep_pending)
    subject_id = await run_in_threadpool(
        partial(hub.gallery.create_subject, request.name, request.metadata, credential=request.credential,
                reuse_credential=request.reuse_credential, pending=True)
    )  # fmt: skip
    try:
        result = await _enroll(hub, subject_id, request.photos, request.allow_mixup)
    except BaseException:
        # Nothing was enrolled (no usable photo, a bad image, a worker gone): no empty subject is left behind. (If
        # this process dies here instead, the subject is pending and the next hub start or enrolment erases it.)
        await run_in_threadpool(hub.gallery.delete_subject, subject_id)
        raise
    await run_in_threadpool(hub.gallery.finish_subject, subject_id)
    return await _answer(hub, subject_id, result)


@router.get(
    "/subjects/{subject_id}",
    summary="One subject with the summary of each face (never the embeddings)",
    response_model=SubjectResponse,
    responses=error_responses(403, 404, *COMMON_ERRORS),
)
def get_subject(subject_id: str, caller: KeyHolder, hub: Hub) -> SubjectResponse:
    subject = hub.gallery.get(subject_id)
    detail = SubjectDetail(**subject.summary(hub.model_id()), face_list=[f.summary() for f in subject.faces])
    return SubjectResponse(subject=detail)


@router.patch(
    "/subjects/{subject_id}",
    summary="Rename a subject or replace its metadata",
    response_model=SubjectResponse,
    responses=error_responses(400, 403, 404, 413, 415, *COMMON_ERRORS),
)
def update_subject(subject_id: str, request: SubjectUpdate, caller: KeyHolder, hub: Hub) -> SubjectResponse:
    version = hub.gallery.update_subject(subject_id, request.name, request.metadata)
    announce_change(hub.bus, version, subject_id)
    return get_subject(subject_id, caller, hub)


@router.delete(
    "/subjects/{subject_id}",
    summary="Erase a subject: faces, photos, negatives and recent identifications naming it",
    response_model=DeletedResponse,
    responses=error_responses(403, 404, *COMMON_ERRORS),
)
def delete_subject(subject_id: str, caller: KeyHolder, hub: Hub) -> DeletedResponse:
    version = hub.gallery.delete_subject(subject_id)
    announce_change(hub.bus, version, subject_id)
    return DeletedResponse(deleted=subject_id)


def _calibration(hub: HubState, subject_id: str) -> GazeCalibrationResponse:
    request = GazeCalibrations(hub.store).status(subject_id)
    return GazeCalibrationResponse(subject_id=subject_id, stored=hub.gallery.gaze_of(subject_id),
                                   request=request)  # fmt: skip


@router.post(
    "/subjects/{subject_id}/gaze-calibration",
    status_code=202,
    summary="Calibrate the person's gaze on the device: they stand at the camera and look at each lit cell",
    description="Queues a calibration for the device's door flow, which waits up to a minute for this person's face, "
    "lights the six cells one after the other on the display and keeps what it learnt with the subject (deleted "
    "with it). Poll `GET` for the outcome. The door flow uses it only with `liveness.person_calibration` on: "
    "measured on the recordings here it cost genuine passes, so it is off by default (docs/LIVENESS.md).",
    response_model=GazeCalibrationResponse,
    responses=error_responses(403, 404, 409, 501, *COMMON_ERRORS),
)
def request_gaze_calibration(subject_id: str, caller: KeyHolder, hub: Hub) -> GazeCalibrationResponse:
    hub.gallery.require(subject_id)
    device = hub.settings.device_id
    if not hub.store.client.exists(keys.door_flow_lock(device)):
        raise FacematchError("no door flow runs on this device: a calibration needs the camera (camera.source) and "
                             "the inference daemon's door flow (door.flow)", ErrorCode.NOT_SUPPORTED)  # fmt: skip
    GazeCalibrations(hub.store).request(subject_id, device)
    return _calibration(hub, subject_id)


@router.get(
    "/subjects/{subject_id}/gaze-calibration",
    summary="The person's stored gaze calibration and the state of the last request",
    response_model=GazeCalibrationResponse,
    responses=error_responses(403, 404, *COMMON_ERRORS),
)
def get_gaze_calibration(subject_id: str, caller: KeyHolder, hub: Hub) -> GazeCalibrationResponse:
    hub.gallery.require(subject_id)
    return _calibration(hub, subject_id)


@router.delete(
    "/subjects/{subject_id}/gaze-calibration",
    summary="Forget the person's gaze calibration (their challenges use the calibration-free rule again)",
    response_model=DeletedResponse,
    responses=error_responses(403, 404, *COMMON_ERRORS),
)
def delete_gaze_calibration(subject_id: str, caller: KeyHolder, hub: Hub) -> DeletedResponse:
    hub.gallery.set_gaze(subject_id, None)
    return DeletedResponse(deleted=f"{subject_id}/gaze-calibration")


@router.post(
    "/subjects/{subject_id}/faces",
    summary="Add photos to a subject",
    response_model=EnrollResponse,
    response_model_exclude_none=True,
    responses=error_responses(400, 403, 404, 413, 415, *COMMON_ERRORS, 504),
)
async def add_faces(subject_id: str, request: PhotosRequest, caller: KeyHolder, hub: Hub) -> EnrollResponse:
    hub.require(RpcMethod.ENROLL)
    await run_in_threadpool(hub.gallery.get, subject_id)  # 404 before loading any photo
    return await _answer(hub, subject_id, await _enroll(hub, subject_id, request.photos, request.allow_mixup))


@router.delete(
    "/subjects/{subject_id}/faces/{face_id}",
    summary="Remove one face (and its photo) from a subject",
    response_model=DeletedResponse,
    responses=error_responses(403, 404, *COMMON_ERRORS),
)
def remove_face(subject_id: str, face_id: str, caller: KeyHolder, hub: Hub) -> DeletedResponse:
    version = hub.gallery.remove_face(subject_id, face_id)
    announce_change(hub.bus, version, subject_id)
    return DeletedResponse(deleted=face_id)


@router.post(
    "/subjects/{subject_id}/negatives",
    summary="'This is not X': mark a face (a recent identification's, or a photo) as not this subject",
    response_model=NegativeResponse,
    responses=error_responses(400, 403, 404, 413, 415, *COMMON_ERRORS, 504),
)
async def add_negative(subject_id: str, request: NegativeHttpRequest, caller: KeyHolder, hub: Hub) -> NegativeResponse:
    hub.require(RpcMethod.NEGATIVE)
    image = None
    if request.image is not None:
        image = base64.b64encode(await hub.images.load("image", request.image)).decode()
    rpc = NegativeRequest(subject_id=subject_id, image=image, identification_id=request.identification_id)
    result: NegativeResult = await hub.bus.acall(RpcMethod.NEGATIVE, rpc, timeout=hub.settings.http.request_timeout)
    return NegativeResponse(**result.model_dump())


# -- export / import ----------------------------------------------------------------------------------------------


@router.get(
    "/gallery/export",
    summary="The whole gallery as a checksummed zip archive (biometric templates: keep it safe)",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}, **error_responses(403, *COMMON_ERRORS)},
)
def export(caller: KeyHolder, hub: Hub) -> FileResponse:
    hub.spool.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=hub.spool, prefix="export-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as handle:
            export_gallery(hub.gallery, handle, hub.settings.device_id)
    except BaseException:
        os.unlink(path)
        raise
    name = f"facematch-gallery-{hub.settings.device_id}-{time.strftime('%Y%m%d-%H%M%S')}.zip"
    return FileResponse(path, media_type="application/zip", filename=name, background=BackgroundTask(os.unlink, path))


@router.post(
    "/gallery/import",
    summary="Import a gallery archive (body: the zip); subjects with the same id are replaced",
    response_model=ImportResponse,
    openapi_extra=ZIP_BODY,
    responses=error_responses(400, 403, 413, *COMMON_ERRORS),
)
async def import_(http_request: Request, caller: KeyHolder, hub: Hub) -> ImportResponse:
    path = await _spool_body(hub, http_request)
    try:
        report = await run_in_threadpool(import_gallery, hub.gallery, path)
    finally:
        path.unlink(missing_ok=True)
    version = await run_in_threadpool(hub.gallery.version)
    announce_change(hub.bus, version, None)
    reembed = await _reembed(hub, report.subject_ids) if report.subject_ids else {}
    return ImportResponse(**report.to_dict(), gallery_version=version, **reembed)


@router.post(
    "/gallery/reembed",
    summary="After a change of matching profile or model: embed kept photos anew; list who needs new photos",
    response_model=ReembedResponse,
    responses=error_responses(403, *COMMON_ERRORS, 504),
)
async def reembed(caller: KeyHolder, hub: Hub) -> ReembedResponse:
    hub.require(RpcMethod.REEMBED)
    result: ReembedResult = await hub.bus.acall(RpcMethod.REEMBED, ReembedRequest(), timeout=REEMBED_TIMEOUT)
    return ReembedResponse(**result.model_dump())


async def _reembed(hub: HubState, subject_ids: list[str]) -> dict[str, Any]:
    """Embed kept photos with the worker's model where a face lacks it; say who needs new photos."""
    try:
        hub.require(RpcMethod.REEMBED)
        request = ReembedRequest(subject_ids=subject_ids)
        result: ReembedResult = await hub.bus.acall(RpcMethod.REEMBED, request, timeout=REEMBED_TIMEOUT)
    except DependencyUnavailable as exc:
        return {"reembed_pending": f"{exc.message}: run the import again once a worker is online"}
    return {"reembedded": result.reembedded, "needs_new_photos": [s.model_dump() for s in result.needs_new_photos]}


async def _spool_body(hub: HubState, request: Request) -> Path:
    hub.spool.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=hub.spool, prefix="import-", suffix=".zip")
    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                handle.write(chunk)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise FacematchError(f"the archive could not be stored: {exc}", ErrorCode.SPOOL_UNAVAILABLE) from None
    if size == 0:
        path.unlink(missing_ok=True)
        raise InputError("the body is empty: send the archive's bytes (Content-Type: application/zip)",
                         ErrorCode.INVALID_ARCHIVE)  # fmt: skip
    return path
