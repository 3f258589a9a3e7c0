"""The gallery in Redis: subjects, their faces (embeddings per model id), negatives, and a version for workers.

Every change is one Redis transaction that also raises ``fm:gallery:version`` and records, per subject, the version
of its last change; a worker asks "what changed since my version" (:meth:`Gallery.changes_since`) instead of
reloading everything, and one that missed too much reloads in full. A deleted subject leaves only the sha256 of its
random id in the removals set, so erasure keeps no id, name, embedding or image.

Embeddings are float32 bytes, base64 in the JSON face record; with a key file they are sealed (AES-GCM), as are the
enrolment photos when ``store_enrollment_images`` keeps them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from edge.config import Settings
from edge.errors import ErrorCode, GalleryError
from edge.store import keys
from edge.store.redis_store import Store
from edge.store.sealing import Sealer, SealError

# How many deletions the removals set remembers; a worker further behind reloads the whole gallery.
REMOVALS_KEPT = 10_000


_SET_FIELD_IF_EXISTS = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2], 'updated', ARGV[3])
return 1
"""
_DROP_FIELD_IF_EXISTS = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hdel', KEYS[1], ARGV[1])
return 1
"""


class SubjectNotFound(GalleryError):
    def __init__(self, subject_id: str):
        super().__init__(f"no subject {subject_id!r} is enrolled", ErrorCode.UNKNOWN_SUBJECT)


class FaceNotFound(GalleryError):
    def __init__(self, subject_id: str, face_id: str):
        super().__init__(f"subject {subject_id!r} has no face {face_id!r}", ErrorCode.UNKNOWN_FACE)


class GalleryLocked(GalleryError):
    def __init__(self, message: str):
        super().__init__(message, ErrorCode.GALLERY_LOCKED)


def new_id() -> str:
    return uuid.uuid4().hex


def removal_tag(subject_id: str) -> str:
    return hashlib.sha256(subject_id.encode()).hexdigest()


@dataclass
class FaceRecord:
    """One enrolled (or negative) face: its embeddings by model id, the quality it was accepted with."""

    face_id: str
    embeddings: dict[str, np.ndarray]
    created: float = field(default_factory=time.time)
    source: str = "upload"
    quality: dict[str, float] = field(default_factory=dict)
    has_image: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "face_id": self.face_id,
            "created": self.created,
            "source": self.source,
            "quality": self.quality,
            "models": sorted(self.embeddings),
            "has_image": self.has_image,
        }


@dataclass
class Subject:
    subject_id: str
    name: str
    metadata: dict[str, Any]
    created: float
    updated: float
    faces: list[FaceRecord] = field(default_factory=list)
    negatives: list[FaceRecord] = field(default_factory=list)
    credential: int | None = None
    gaze: dict[str, Any] | None = None  # the person's gaze calibration (edge.liveness.person), when one was taken

    def summary(self, model_id: str | None = None) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "name": self.name,
            "credential": self.credential,
            "metadata": self.metadata,
            "created": self.created,
            "updated": self.updated,
            "faces": len(self.faces),
            "faces_for_model": (sum(1 for f in self.faces if model_id in f.embeddings) if model_id else None),
            "negatives": len(self.negatives),
            "gaze_calibration": self.gaze,
        }


@dataclass(frozen=True)
class Changes:
    """What a worker at ``since`` must do to reach ``version``: reload these subjects, drop the removed ones."""

    version: int
    changed: list[str]
    removed_tags: set[str]
    full_reload: bool


class Gallery:
    def __init__(self, store: Store, sealer: Sealer | None = None, *, keep_images: bool = False):
        self.store = store
        self.sealer = sealer
        self.keep_images = keep_images

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> Gallery:
        """The gallery as configured; a configured key file that cannot be read is an error, never plain text."""
        key_file = settings.gallery.key_file
        try:
            sealer = Sealer.from_file(key_file) if key_file else None
        except SealError as exc:
            raise GalleryLocked(str(exc)) from None
        return cls(store, sealer, keep_images=settings.gallery.store_enrollment_images)

    @property
    def _redis(self) -> redis.Redis:
        return self.store.client

    def _guard(self, action: Callable[[], Any]) -> Any:
        return self.store.guard(action)

    # -- encoding ---------------------------------------------------------------------------------------------

    def _encode_vector(self, vector: np.ndarray, context: str) -> str:
        data = np.asarray(vector, dtype=np.float32).tobytes()
        if self.sealer:
            data = self.sealer.seal(data, context)
        return base64.b64encode(data).decode()

    def _open(self, sealed: bytes, context: str) -> bytes:
        if self.sealer is None:
            raise GalleryLocked("the gallery is encrypted and no key file is configured (gallery.key_file)")
        try:
            return self.sealer.open(sealed, context)
        except SealError as exc:
            raise GalleryLocked(str(exc)) from None

    def _decode_vector(self, text: str, context: str, sealed: bool) -> np.ndarray:
        data = base64.b64decode(text)
        if sealed:
            data = self._open(data, context)
        return np.frombuffer(data, dtype=np.float32).copy()

    def _encode_gaze(self, subject_id: str, gaze: dict[str, Any]) -> bytes:
        data = json.dumps(gaze).encode()
        return b"sealed:" + self.sealer.seal(data, f"{subject_id}/gaze") if self.sealer else data

    def _decode_gaze(self, subject_id: str, raw: bytes | None) -> dict[str, Any] | None:
        if not raw:
            return None
        if raw.startswith(b"sealed:"):
            raw = self._open(raw[len(b"sealed:") :], f"{subject_id}/gaze")
        return json.loads(raw)

    def _encode_face(self, subject_id: str, face: FaceRecord) -> str:
        return json.dumps({
            "created": face.created,
            "source": face.source,
            "quality": face.quality,
            "has_image": face.has_image,
            "sealed": self.sealer is not None,
            "embeddings": {
                model: self._encode_vector(vector, f"{subject_id}/{face.face_id}/{model}")
                for model, vector in face.embeddings.items()
            },
        })  # fmt: skip

    def _decode_face(self, subject_id: str, face_id: str, raw: bytes) -> FaceRecord:
        doc = json.loads(raw)
        sealed = bool(doc.get("sealed"))
        embeddings = {
            model: self._decode_vector(text, f"{subject_id}/{face_id}/{model}", sealed)
            for model, text in doc["embeddings"].items()
        }
        return FaceRecord(face_id, embeddings, doc["created"], doc.get("source", "upload"), doc.get("quality", {}),
                          bool(doc.get("has_image")))  # fmt: skip

    # -- writes: one transaction each, with the version bump --------------------------------------------------

    def _commit(self, subject_id: str, write: Callable[[redis.client.Pipeline], None], *, removed: bool = False) -> int:
        """Run ``write`` and the version bump atomically; returns the new gallery version."""

        def attempt() -> int:
            with self._redis.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(keys.gallery_version())
                        version = int(pipe.get(keys.gallery_version()) or 0) + 1
                        pipe.multi()
                        write(pipe)
                        pipe.set(keys.gallery_version(), version)
                        if removed:
                            pipe.zrem(keys.gallery_changes(), subject_id)
                            pipe.zadd(keys.gallery_removals(), {removal_tag(subject_id): version})
                        else:
                            pipe.zadd(keys.gallery_changes(), {subject_id: version})
                        pipe.execute()
                        return version
                    except redis.WatchError:
                        continue

        version = self._guard(attempt)
        if removed:
            self._trim_removals()
        return version

    def _trim_removals(self) -> None:
        excess = self._redis.zcard(keys.gallery_removals()) - REMOVALS_KEPT
        if excess > 0:
            dropped = self._redis.zrange(keys.gallery_removals(), 0, excess - 1, withscores=True)
            self._redis.zremrangebyrank(keys.gallery_removals(), 0, excess - 1)
            self._redis.set(keys.gallery_removals_floor(), int(dropped[-1][1]))

    def create_subject(self, name: str, metadata: dict[str, Any] | None = None, subject_id: str | None = None,
                       credential: int | None = None, *, reuse_credential: bool = False,
                       pending: bool = False) -> str:  # fmt: skip
        """A new subject with a card number: the one given (unique; a retired one only with ``reuse_credential``)
        or the next free one. ``pending``: its photos are still to come (:meth:`finish_subject`); a process that dies
        before then leaves it to :meth:`sweep_pending`, so no half-enrolled person stays listed."""
        subject_id = subject_id or new_id()
        now = time.time()
        number = self._credential_for(subject_id, credential, reuse_credential)

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.hset(keys.subject(subject_id), mapping={
                "name": name, "metadata": json.dumps(metadata or {}), "created": now, "updated": now,
                "credential": number,
            })  # fmt: skip
            pipe.zadd(keys.subjects(), {subject_id: now})
            pipe.srem(keys.credentials_retired(), number)
            if pending:
                pipe.zadd(keys.subjects_pending(), {subject_id: now})

        self._commit(subject_id, write)
        return subject_id

    def finish_subject(self, subject_id: str) -> None:
        """The pending subject's enrolment went through: it is no longer swept."""
        self._guard(lambda: self._redis.zrem(keys.subjects_pending(), subject_id))

    def sweep_pending(self, older_than: float) -> list[str]:
        """Erase subjects whose enrolment started more than ``older_than`` seconds ago and never finished (the hub
        died between creating them and enrolling their photos); returns their ids."""
        cutoff = time.time() - older_than
        stale = [s.decode() for s in self._guard(lambda: self._redis.zrangebyscore(keys.subjects_pending(), 0, cutoff))]
        for subject_id in stale:
            try:
                self.delete_subject(subject_id)
            except SubjectNotFound:
                self._guard(lambda sid=subject_id: self._redis.zrem(keys.subjects_pending(), sid))
        return stale

    def _credential_for(self, subject_id: str, wanted: int | None, reuse: bool) -> int:
        """Reserve a card number for ``subject_id`` (HSETNX: two enrolments never get the same one)."""
        return int(self._guard(lambda: self._reserve(subject_id, wanted, reuse)))

    def _reserve(self, subject_id: str, wanted: int | None, reuse: bool) -> int:
        client = self._redis
        if wanted is not None:
            if client.sismember(keys.credentials_retired(), wanted) and not reuse:
                message = f"card number {wanted} was a deleted subject's: send reuse_credential to give it again"
                raise GalleryError(message + " (the panel may still hold its history)", ErrorCode.CREDENTIAL_RETIRED)
            if not client.hsetnx(keys.credentials(), wanted, subject_id):
                raise GalleryError(f"card number {wanted} belongs to another subject", ErrorCode.CREDENTIAL_IN_USE)
            return wanted
        while True:
            number = int(client.incr(keys.credential_next()))
            if not client.sismember(keys.credentials_retired(), number) and client.hsetnx(
                keys.credentials(), number, subject_id
            ):
                return number

    def credential_of(self, subject_id: str) -> int | None:
        raw = self._guard(lambda: self._redis.hget(keys.subject(subject_id), "credential"))
        return int(raw) if raw else None

    def update_subject(self, subject_id: str, name: str | None = None, metadata: dict[str, Any] | None = None) -> int:
        self.require(subject_id)
        fields: dict[str, Any] = {"updated": time.time()}
        if name is not None:
            fields["name"] = name
        if metadata is not None:
            fields["metadata"] = json.dumps(metadata)
        return self._commit(subject_id, lambda pipe: pipe.hset(keys.subject(subject_id), mapping=fields))

    def set_gaze(self, subject_id: str, gaze: dict[str, Any] | None) -> None:
        """Keep (or with None, drop) the subject's gaze calibration. Only on a subject that still exists: a
        calibration finishing after an erasure must not leave a trace of the person behind."""
        if gaze is None:
            written = self._guard(lambda: self._redis.eval(_DROP_FIELD_IF_EXISTS, 1, keys.subject(subject_id), "gaze"))
        else:
            data = self._encode_gaze(subject_id, gaze)
            written = self._guard(lambda: self._redis.eval(_SET_FIELD_IF_EXISTS, 1, keys.subject(subject_id), "gaze",
                                                           data, time.time()))  # fmt: skip
        if not written:
            raise SubjectNotFound(subject_id)

    def gaze_of(self, subject_id: str) -> dict[str, Any] | None:
        """The subject's gaze calibration, or None (also for a subject that does not exist)."""
        return self._decode_gaze(subject_id, self._guard(lambda: self._redis.hget(keys.subject(subject_id), "gaze")))

    def _calibration_queued_on(self, subject_id: str) -> list[str]:
        """The device queue that holds a calibration request for this subject (to erase with it), if any."""
        raw = self._guard(lambda: self._redis.get(keys.gaze_calibration_status(subject_id)))
        device = json.loads(raw).get("device_id") if raw else None
        queue = keys.gaze_calibration_request(device) if device else None
        if queue and self._guard(lambda: self._redis.get(queue)) == subject_id.encode():
            return [queue]
        return []

    def add_face(self, subject_id: str, face: FaceRecord, image: bytes | None = None, *, negative: bool = False) -> int:
        self.require(subject_id)
        keep = image is not None and self.keep_images and not negative
        face.has_image = keep
        encoded = self._encode_face(subject_id, face)
        image_key = keys.face_image(subject_id, face.face_id)
        if keep and self.sealer:
            image = self.sealer.seal(image, f"{subject_id}/{face.face_id}/image")  # type: ignore[arg-type]

        def write(pipe: redis.client.Pipeline) -> None:
            table = keys.negatives(subject_id) if negative else keys.faces(subject_id)
            pipe.hset(table, face.face_id, encoded)
            pipe.hset(keys.subject(subject_id), "updated", time.time())
            if keep:
                pipe.set(image_key, image)

        return self._commit(subject_id, write)

    def add_embedding(self, subject_id: str, face_id: str, model_id: str, vector: np.ndarray) -> int:
        """Add another model's embedding to an existing face (re-embedding a kept photo after a model change)."""
        face = self.face(subject_id, face_id)
        face.embeddings[model_id] = vector
        encoded = self._encode_face(subject_id, face)
        return self._commit(subject_id, lambda pipe: pipe.hset(keys.faces(subject_id), face_id, encoded))

    def remove_face(self, subject_id: str, face_id: str) -> int:
        self.require(subject_id)
        if not self._guard(lambda: self._redis.hexists(keys.faces(subject_id), face_id)):
            raise FaceNotFound(subject_id, face_id)

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.hdel(keys.faces(subject_id), face_id)
            pipe.delete(keys.face_image(subject_id, face_id))
            pipe.hset(keys.subject(subject_id), "updated", time.time())

        return self._commit(subject_id, write)

    def delete_subject(self, subject_id: str) -> int:
        """Erase the subject: metadata, faces, negatives, photos, recent identifications naming it, their probes."""
        self.require(subject_id)
        face_ids = [f.decode() for f in self._guard(lambda: self._redis.hkeys(keys.faces(subject_id)))]
        mentions = self._identifications_naming(subject_id)
        credential = self.credential_of(subject_id)
        queued_on = self._calibration_queued_on(subject_id)

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.delete(keys.subject(subject_id), keys.faces(subject_id), keys.negatives(subject_id))
            pipe.delete(keys.gaze_calibration_status(subject_id), *queued_on)
            pipe.hdel(keys.audit_names(), keys.audit_pseudonym(subject_id))  # the audit keeps a pseudonym, not the name
            if credential is not None:  # the number is kept apart, linked to nobody, so it is not given again
                pipe.hdel(keys.credentials(), credential)
                pipe.sadd(keys.credentials_retired(), credential)
            for face_id in face_ids:
                pipe.delete(keys.face_image(subject_id, face_id))
            pipe.zrem(keys.subjects(), subject_id)
            pipe.zrem(keys.subjects_pending(), subject_id)
            for entry_id, identification_id in mentions:
                pipe.xdel(keys.identifications(), entry_id)
                pipe.delete(keys.probe(identification_id))

        return self._commit(subject_id, write, removed=True)

    def replace_subject(self, subject: Subject, images: dict[str, bytes]) -> bool:
        """Write ``subject`` whole (an import), replacing one with the same id; returns whether it existed. Photos
        are kept only when this gallery keeps enrolment photos."""
        existed = bool(self._guard(lambda: self._redis.exists(keys.subject(subject.subject_id))))
        old_faces = [f.decode() for f in self._guard(lambda: self._redis.hkeys(keys.faces(subject.subject_id)))]
        sid = subject.subject_id
        faces, stored = {}, {}
        for face in subject.faces:
            image = images.get(face.face_id) if self.keep_images else None
            face.has_image = image is not None
            if image is not None:
                stored[keys.face_image(sid, face.face_id)] = (
                    self.sealer.seal(image, f"{sid}/{face.face_id}/image") if self.sealer else image
                )
            faces[face.face_id] = self._encode_face(sid, face)
        negatives = {n.face_id: self._encode_face(sid, n) for n in subject.negatives}

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.delete(keys.subject(sid), keys.faces(sid), keys.negatives(sid))
            for face_id in old_faces:
                pipe.delete(keys.face_image(sid, face_id))
            pipe.hset(keys.subject(sid), mapping={
                "name": subject.name, "metadata": json.dumps(subject.metadata),
                "created": subject.created, "updated": time.time(),
                **({"credential": subject.credential} if subject.credential is not None else {}),
                **({"gaze": self._encode_gaze(sid, subject.gaze)} if subject.gaze else {}),
            })  # fmt: skip
            if subject.credential is not None:
                pipe.hset(keys.credentials(), subject.credential, sid)
            pipe.zadd(keys.subjects(), {sid: subject.created})
            if faces:
                pipe.hset(keys.faces(sid), mapping=faces)
            if negatives:
                pipe.hset(keys.negatives(sid), mapping=negatives)
            for key, data in stored.items():
                pipe.set(key, data)

        self._commit(sid, write)
        return existed

    # -- reads ------------------------------------------------------------------------------------------------

    def require(self, subject_id: str) -> None:
        """Raise SubjectNotFound unless the subject exists."""
        if not self._guard(lambda: self._redis.exists(keys.subject(subject_id))):
            raise SubjectNotFound(subject_id)

    def version(self) -> int:
        return int(self._guard(lambda: self._redis.get(keys.gallery_version())) or 0)

    def count(self) -> int:
        return int(self._guard(lambda: self._redis.zcard(keys.subjects())))

    def subject_ids(self, offset: int = 0, limit: int | None = None) -> list[str]:
        end = -1 if limit is None else offset + limit - 1
        return [s.decode() for s in self._guard(lambda: self._redis.zrange(keys.subjects(), offset, end))]

    def get(self, subject_id: str) -> Subject:
        subject = self.load([subject_id]).get(subject_id)
        if subject is None:
            raise SubjectNotFound(subject_id)
        return subject

    def face(self, subject_id: str, face_id: str) -> FaceRecord:
        raw = self._guard(lambda: self._redis.hget(keys.faces(subject_id), face_id))
        if raw is None:
            raise FaceNotFound(subject_id, face_id)
        return self._decode_face(subject_id, face_id, raw)

    def image(self, subject_id: str, face_id: str) -> bytes | None:
        data = self._guard(lambda: self._redis.get(keys.face_image(subject_id, face_id)))
        if data is not None and self.sealer:
            data = self.sealer.open(data, f"{subject_id}/{face_id}/image")
        return data

    def load(self, subject_ids: list[str]) -> dict[str, Subject]:
        """The subjects that exist among ``subject_ids``, with their faces and negatives (one round trip)."""

        def fetch() -> list[Any]:
            with self._redis.pipeline(transaction=False) as pipe:
                for subject_id in subject_ids:
                    pipe.hgetall(keys.subject(subject_id))
                    pipe.hgetall(keys.faces(subject_id))
                    pipe.hgetall(keys.negatives(subject_id))
                return pipe.execute()

        replies = self._guard(fetch)
        subjects = {}
        for i, subject_id in enumerate(subject_ids):
            meta, faces, negatives = replies[3 * i : 3 * i + 3]
            if not meta:
                continue
            subjects[subject_id] = Subject(
                subject_id,
                meta[b"name"].decode(),
                json.loads(meta.get(b"metadata", b"{}")),
                float(meta[b"created"]),
                float(meta[b"updated"]),
                sorted((self._decode_face(subject_id, k.decode(), v) for k, v in faces.items()), key=_created),
                sorted((self._decode_face(subject_id, k.decode(), v) for k, v in negatives.items()), key=_created),
                int(meta[b"credential"]) if meta.get(b"credential") else None,
                self._decode_gaze(subject_id, meta.get(b"gaze")),
            )
        return subjects

    def iterate(self, batch: int = 1000) -> Iterator[Subject]:
        """Every subject, ``batch`` at a time."""
        ids = self.subject_ids()
        for start in range(0, len(ids), batch):
            yield from self.load(ids[start : start + batch]).values()

    def changes_since(self, since: int) -> Changes:
        def fetch() -> Changes:
            version = int(self._redis.get(keys.gallery_version()) or 0)
            floor = int(self._redis.get(keys.gallery_removals_floor()) or 0)
            if since > version or since < floor:
                return Changes(version, [], set(), full_reload=True)
            changed = self._redis.zrangebyscore(keys.gallery_changes(), f"({since}", version)
            removed = self._redis.zrangebyscore(keys.gallery_removals(), f"({since}", version)
            return Changes(version, [c.decode() for c in changed], {r.decode() for r in removed}, full_reload=False)

        return self._guard(fetch)

    # -- recent identifications (for the operator page and "this is not X") ------------------------------------

    def record_identification(self, entry: dict[str, Any], probes: dict[str, np.ndarray], probe_ttl: int,
                              keep: int) -> None:  # fmt: skip
        """Append to the recent identifications; the probe's embeddings are kept ``probe_ttl`` seconds only."""
        identification_id = entry["identification_id"]
        probe = {m: self._encode_vector(v, f"probe/{identification_id}/{m}") for m, v in probes.items()}
        flat = {k: json.dumps(v) for k, v in entry.items()}

        def write() -> None:
            with self._redis.pipeline() as pipe:
                pipe.set(keys.probe(identification_id), json.dumps({"sealed": self.sealer is not None, **probe}),
                         ex=probe_ttl)  # fmt: skip
                pipe.xadd(keys.identifications(), flat, maxlen=keep, approximate=False)
                pipe.execute()

        self._guard(write)

    def recent_identifications(self, count: int) -> list[dict[str, Any]]:
        entries = self._guard(lambda: self._redis.xrevrange(keys.identifications(), count=count))
        return [{k.decode(): json.loads(v) for k, v in fields.items()} for _, fields in entries]

    def probe_embeddings(self, identification_id: str) -> dict[str, np.ndarray] | None:
        raw = self._guard(lambda: self._redis.get(keys.probe(identification_id)))
        if raw is None:
            return None
        doc = json.loads(raw)
        sealed = bool(doc.pop("sealed", False))
        return {m: self._decode_vector(t, f"probe/{identification_id}/{m}", sealed) for m, t in doc.items()}

    def _identifications_naming(self, subject_id: str) -> list[tuple[bytes, str]]:
        entries = self._guard(lambda: self._redis.xrange(keys.identifications()))
        found = []
        for entry_id, fields in entries:
            text = b" ".join(fields.values())
            if subject_id.encode() in text:
                found.append((entry_id, json.loads(fields[b"identification_id"])))
        return found


def _created(face: FaceRecord) -> float:
    return face.created
