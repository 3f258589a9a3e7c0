"""RPC handlers of the gallery: 1:N identification, and the gallery steps that need the models.

Enrolment checks each photo on its own (quality, a near-duplicate of the subject's own faces, a face that already
looks like *another* subject — a likely mix-up) and reports every photo's fate. Templates are never updated from
identifications: only these explicit calls add faces.
"""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np

from edge.bus import Bus
from edge.bus.messages import (
    EnrollRequest,
    EnrollResult,
    IdentifyCandidate,
    IdentifyRequest,
    IdentifyResult,
    IdentifyThreshold,
    NegativeRequest,
    NegativeResult,
    PhotoReport,
    Reason,
    ReembedRequest,
    ReembedResult,
    SubjectRef,
)
from edge.config import Settings
from edge.errors import ErrorCode, GalleryError, ImageInputError, InputError
from edge.identify.index import GalleryIndex, announce_change
from edge.identify.openset import (
    EXPLANATIONS,
    Candidate,
    Decision,
    OpenSetPolicy,
    Threshold,
    decide,
    threshold_for,
)
from edge.inference.images import decode_field, refusal
from edge.store.gallery import FaceRecord, Gallery, new_id
from edge.vision.decode import ImageError, decode_image
from edge.vision.engine import FaceAnalysis, FaceEngine
from edge.vision.model_id import first_stage_dimension
from edge.vision.quality import MESSAGES, MULTIPLE_FACES

log = logging.getLogger(__name__)


def open_set_policy(settings: Settings) -> OpenSetPolicy:
    return OpenSetPolicy(
        settings.gallery.target_fpir, settings.gallery.margin_decades, settings.matching.similarity_threshold
    )


def described(threshold: Threshold) -> IdentifyThreshold:
    return IdentifyThreshold(
        similarity_score=round(threshold.score, 4),
        cosine=round(threshold.cosine, 4),
        false_match_rate_per_comparison=threshold.fmr_per_comparison,
        gallery_faces=threshold.gallery_faces,
        target_fpir=threshold.target_fpir,
        explanation=threshold.explain(),
    )


class GalleryService:
    def __init__(self, settings: Settings, engine: FaceEngine, gallery: Gallery, bus: Bus | None = None):
        self.settings = settings
        self.engine = engine
        self.gallery = gallery
        self.bus = bus
        self.policy = open_set_policy(settings)
        assert engine.calibration is not None
        self.calibration = engine.calibration
        self.index = GalleryIndex(engine.model_id, engine.embedder_dimension, first_stage_dimension(settings))

    def on_gallery_changed(self, _message: object) -> None:
        """A change event from any hub or worker: catch up now rather than at the next search."""
        try:
            self.index.sync(self.gallery)
        except Exception:  # Redis down: the next search syncs (or answers 503)
            log.warning("gallery sync after a change event failed", exc_info=True)

    def _announce(self, version: int, subject_id: str | None) -> None:
        if self.bus is not None:
            announce_change(self.bus, version, subject_id)

    # -- images -----------------------------------------------------------------------------------------------

    def _analyze(self, field: str, encoded: str) -> tuple[bytes, FaceAnalysis]:
        data, pixels = decode_field(field, encoded, self.settings.http.max_image_dimension)
        return data, self.engine.analyze(pixels)

    # -- identify ---------------------------------------------------------------------------------------------

    def _candidates(self, vector: np.ndarray, k: int) -> tuple[list[Candidate], dict[str, str]]:
        matches = self.index.search(vector, k=max(k, 2))
        return [m.candidate for m in matches], {m.candidate.subject_id: m.name for m in matches}

    def decide(self, vector: np.ndarray, max_candidates: int = 3) -> tuple[Decision, dict[str, str]]:
        """The open-set decision for one embedding against the index as it is (sync it first), with the names of
        the candidates."""
        candidates, names = self._candidates(vector, max_candidates)
        threshold = threshold_for(self.calibration, self.index.faces, self.policy)
        return decide(candidates, threshold, self.calibration, self.policy), names

    def identify(self, request: IdentifyRequest) -> IdentifyResult:
        started = time.perf_counter()
        self.index.sync(self.gallery)
        _, analysis = self._analyze("image", request.image)
        if not analysis.quality.ok:
            raise refusal("image", analysis)
        assert analysis.embedding is not None
        vector = analysis.embedding.vector
        decision, names = self.decide(vector, request.max_candidates)
        threshold = decision.threshold
        shown = [
            IdentifyCandidate(
                subject_id=c.subject_id, name=names[c.subject_id], cosine=round(c.cosine, 4),
                similarity_score=round(self.calibration.score(c.cosine), 4),
                marked_not_this_person=c.negative_cosine is not None and c.negative_cosine >= c.cosine,
            )
            for c in decision.candidates[: request.max_candidates]
        ]  # fmt: skip
        subject = SubjectRef(subject_id=decision.subject_id, name=names[decision.subject_id]) if decision.subject_id \
            else None  # fmt: skip
        best = next((c for c in shown if subject and c.subject_id == subject.subject_id), shown[0] if shown else None)
        result = IdentifyResult(
            identification_id=uuid.uuid4().hex,
            outcome=decision.outcome.value,
            subject=subject,
            similarity_score=best.similarity_score if best else None,
            reason=Reason(code=decision.why.value, message=EXPLANATIONS[decision.why]),
            candidates=shown,
            threshold=described(threshold),
            model=self.engine.model_id,
            warnings=[MESSAGES[MULTIPLE_FACES]] if MULTIPLE_FACES in analysis.quality.reasons else [],
            gallery_version=self.index.version,
            inference_time=round(time.perf_counter() - started, 4),
        )
        if request.record and self.settings.gallery.recent_identifications:
            self._record(result, vector)
        return result

    def _record(self, result: IdentifyResult, vector: np.ndarray) -> None:
        entry = {
            "identification_id": result.identification_id,
            "time": time.time(),
            "outcome": result.outcome,
            "subject_id": result.subject.subject_id if result.subject else None,
            "name": result.subject.name if result.subject else None,
            "similarity_score": result.similarity_score,
            "reason": result.reason.code,
            "candidates": [c.subject_id for c in result.candidates],
        }
        self.gallery.record_identification(entry, {self.engine.model_id: vector}, self.settings.gallery.probe_ttl,
                                           self.settings.gallery.recent_identifications)  # fmt: skip

    # -- enrol ------------------------------------------------------------------------------------------------

    def enroll(self, request: EnrollRequest) -> EnrollResult:
        self.index.sync(self.gallery)
        subject = self.gallery.get(request.subject_id)
        model = self.engine.model_id
        own = [f.embeddings[model] for f in subject.faces if model in f.embeddings]
        limit = self.settings.gallery.max_faces_per_subject
        threshold = threshold_for(self.calibration, max(self.index.faces, 1), self.policy)
        reports, version = [], self.index.version
        for index, photo in enumerate(request.photos):
            field = f"photos[{index}]"
            try:
                data, analysis = self._analyze(field, photo)
                if not analysis.quality.ok:
                    raise refusal(field, analysis)
            except ImageInputError as exc:
                quality = exc.detail.get("quality", {}).get("reasons", [])
                reasons = [Reason(**r) for r in quality if r["code"] != MULTIPLE_FACES] or [
                    Reason(code=exc.code.value, message=exc.message.removeprefix(f"{field}: "))
                ]
                reports.append(PhotoReport(index=index, status="rejected", reasons=reasons))
                continue
            assert analysis.embedding is not None
            vector = analysis.embedding.vector
            metrics = {k: round(v, 3) for k, v in analysis.quality.metrics.items()}
            if own and max(float(np.dot(v, vector)) for v in own) >= self.settings.gallery.near_duplicate_cosine:
                reports.append(
                    PhotoReport(
                        index=index,
                        status="duplicate",
                        quality=metrics,
                        reasons=[
                            Reason(
                                code="near_duplicate",
                                message="this face is almost identical to one the subject already has",
                            )
                        ],
                    )
                )
                continue  # fmt: skip
            others = [m for m in self.index.search(vector, k=2) if m.candidate.subject_id != request.subject_id]
            if others and others[0].candidate.cosine >= threshold.cosine and not request.allow_mixup:
                other = SubjectRef(subject_id=others[0].candidate.subject_id, name=others[0].name)
                reports.append(
                    PhotoReport(
                        index=index,
                        status="mixup",
                        quality=metrics,
                        other_subject=other,
                        reasons=[
                            Reason(
                                code="belongs_to_other_subject",
                                message=f"this face already looks like {other.name} ({other.subject_id})",
                                hint="check the photo; send allow_mixup to add it anyway",
                            )
                        ],
                    )
                )
                continue  # fmt: skip
            if len(own) >= limit:
                reports.append(
                    PhotoReport(
                        index=index,
                        status="rejected",
                        quality=metrics,
                        reasons=[
                            Reason(
                                code="too_many_faces",
                                message=f"the subject already has {limit} faces (max_faces_per_subject)",
                            )
                        ],
                    )
                )
                continue  # fmt: skip
            face = FaceRecord(new_id()[:16], {model: vector}, source=request.source, quality=metrics)
            version = self.gallery.add_face(request.subject_id, face, data)
            own.append(vector)
            reports.append(PhotoReport(index=index, status="added", face_id=face.face_id, quality=metrics))
        if any(r.status == "added" for r in reports):
            self._announce(version, request.subject_id)
            self.index.sync(self.gallery)
        elif not own:
            raise InputError(
                "no photo could be enrolled; each photo's reasons are listed", ErrorCode.NO_USABLE_PHOTO,
                photos=[r.model_dump(exclude_none=True) for r in reports],
            )  # fmt: skip
        return EnrollResult(subject_id=request.subject_id, photos=reports, faces=len(own), model=model,
                            gallery_version=self.gallery.version())  # fmt: skip

    # -- "this is not X" --------------------------------------------------------------------------------------

    def negative(self, request: NegativeRequest) -> NegativeResult:
        if (request.image is None) == (request.identification_id is None):
            raise InputError("send either image or identification_id", ErrorCode.BAD_REQUEST)
        self.gallery.get(request.subject_id)  # 404 before any work
        if request.identification_id is not None:
            embeddings = self.gallery.probe_embeddings(request.identification_id)
            if not embeddings:
                raise GalleryError(f"identification {request.identification_id!r} is unknown or its probe has "
                                   "expired (gallery.probe_ttl)", ErrorCode.UNKNOWN_IDENTIFICATION)  # fmt: skip
            source = "identification"
        else:
            _, analysis = self._analyze("image", request.image or "")
            if not analysis.quality.ok:
                raise refusal("image", analysis)
            assert analysis.embedding is not None
            embeddings, source = {self.engine.model_id: analysis.embedding.vector}, "upload"
        face = FaceRecord(new_id()[:16], embeddings, source=source)
        version = self.gallery.add_face(request.subject_id, face, negative=True)
        self._announce(version, request.subject_id)
        subject = self.gallery.get(request.subject_id)
        return NegativeResult(subject_id=request.subject_id, face_id=face.face_id, negatives=len(subject.negatives),
                              gallery_version=version)  # fmt: skip

    # -- re-embedding after a model change or an import -------------------------------------------------------

    def reembed(self, request: ReembedRequest) -> ReembedResult:
        model = self.engine.model_id
        ids = request.subject_ids or self.gallery.subject_ids()
        done: dict[str, int] = {}
        missing = []
        for subject in self.gallery.load(ids).values():
            count = 0
            for face in subject.faces:
                if model in face.embeddings or not face.has_image:
                    continue
                image = self.gallery.image(subject.subject_id, face.face_id)
                if image is None:
                    continue
                try:
                    pixels = decode_image(image, self.settings.http.max_image_dimension)
                except ImageError:
                    continue
                analysis = self.engine.analyze(pixels, embed_if_poor=True)
                if analysis.embedding is not None:
                    self.gallery.add_embedding(subject.subject_id, face.face_id, model, analysis.embedding.vector)
                    count += 1
            if count:
                done[subject.subject_id] = count
            if not any(model in f.embeddings for f in subject.faces) and not count:
                missing.append(SubjectRef(subject_id=subject.subject_id, name=subject.name))
        version = self.gallery.version()
        if done:
            self._announce(version, None)
        return ReembedResult(model=model, reembedded=done, needs_new_photos=missing, gallery_version=version)
