"""Gallery export and import: a zip archive whose manifest holds the sha256 of every member.

``manifest.json`` (format, creation, device, models, the members' checksums), ``subjects.jsonl`` (one subject per line
with its faces and negatives, embeddings as base64 float32 per model id) and, when photos are kept,
``images/<subject>/<face>.jpg``. The checksums detect a damaged or truncated archive; they do not prove who made it,
so an archive is kept like the gallery itself (it holds biometric templates, in plain form).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge.errors import ErrorCode, InputError
from edge.store.gallery import FaceRecord, Gallery, Subject

FORMAT = "facematch-gallery"
FORMAT_VERSION = 1
# Refuse archives that would unpack to more than this (a zip bomb), whatever their size on the wire.
MAX_UNPACKED = 4 * 1024**3
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class ArchiveError(InputError):
    def __init__(self, message: str):
        super().__init__(f"gallery archive: {message}", ErrorCode.INVALID_ARCHIVE)


@dataclass
class ImportReport:
    subjects: int = 0
    replaced: int = 0
    faces: int = 0
    images: int = 0
    models: set[str] = field(default_factory=set)
    subject_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"subjects": self.subjects, "replaced": self.replaced, "faces": self.faces, "images": self.images,
                "models": sorted(self.models)}  # fmt: skip


def _b64(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype(np.float32).tobytes()).decode()


def _face_doc(face: FaceRecord, image_member: str | None) -> dict[str, Any]:
    return {
        "face_id": face.face_id,
        "created": face.created,
        "source": face.source,
        "quality": face.quality,
        "embeddings": {m: _b64(v) for m, v in face.embeddings.items()},
        "image": image_member,
    }


def export_gallery(gallery: Gallery, target: IO[bytes], device_id: str) -> int:
    """Write the whole gallery to ``target``; returns the number of subjects."""
    checksums: dict[str, str] = {}
    models: set[str] = set()
    count = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        lines = io.BytesIO()
        for subject in gallery.iterate():
            faces = []
            for face in subject.faces:
                member = None
                image = gallery.image(subject.subject_id, face.face_id) if face.has_image else None
                if image is not None:
                    member = f"images/{subject.subject_id}/{face.face_id}.jpg"
                    archive.writestr(member, image)
                    checksums[member] = hashlib.sha256(image).hexdigest()
                faces.append(_face_doc(face, member))
                models.update(face.embeddings)
            doc = {
                "subject_id": subject.subject_id, "name": subject.name, "metadata": subject.metadata,
                "credential": subject.credential,
                "created": subject.created, "updated": subject.updated, "faces": faces,
                "negatives": [_face_doc(n, None) for n in subject.negatives], "gaze": subject.gaze,
            }  # fmt: skip
            lines.write(json.dumps(doc).encode() + b"\n")
            count += 1
        data = lines.getvalue()
        archive.writestr("subjects.jsonl", data)
        checksums["subjects.jsonl"] = hashlib.sha256(data).hexdigest()
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created": time.time(), "device_id": device_id,
            "subjects": count, "models": sorted(models), "files": checksums,
        }  # fmt: skip
        archive.writestr("manifest.json", json.dumps(manifest, indent=1))
    return count


def _read_member(archive: zipfile.ZipFile, name: str, expected: str) -> bytes:
    try:
        data = archive.read(name)
    except KeyError:
        raise ArchiveError(f"{name} is listed in the manifest but missing") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArchiveError(f"{name} cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArchiveError(f"{name} does not match its checksum (damaged or altered)")
    return data


def _face(doc: dict[str, Any], images: dict[str, bytes]) -> tuple[FaceRecord, bytes | None]:
    if not ID_PATTERN.match(str(doc.get("face_id", ""))):
        raise ArchiveError(f"a face id is malformed: {doc.get('face_id')!r}")
    embeddings = {}
    for model, text in doc.get("embeddings", {}).items():
        raw = base64.b64decode(text)
        if not raw or len(raw) % 4:
            raise ArchiveError(f"face {doc['face_id']}: the {model} embedding is malformed")
        vector = np.frombuffer(raw, dtype=np.float32).copy()
        if not np.all(np.isfinite(vector)):
            raise ArchiveError(f"face {doc['face_id']}: the {model} embedding is not finite")
        embeddings[model] = vector
    image = images.get(doc["image"]) if doc.get("image") else None
    created = float(doc.get("created", time.time()))
    source, quality = str(doc.get("source", "import")), dict(doc.get("quality", {}))
    face = FaceRecord(doc["face_id"], embeddings, created, source, quality)
    return face, image


def _gaze(doc: Any) -> dict[str, Any] | None:
    """A subject's gaze calibration as exported: numbers (or null) only, nothing else carried in."""
    if doc is None:
        return None
    if not isinstance(doc, dict) or not all(v is None or isinstance(v, int | float | str) for v in doc.values()):
        raise ValueError("gaze is not a calibration")
    return {str(k): v for k, v in doc.items()}


def read_archive(source: Path | IO[bytes]) -> tuple[dict[str, Any], list[tuple[Subject, dict[str, bytes]]]]:
    """The manifest and every subject (with the photos of its faces by face id), checked against the checksums."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"not a zip archive ({exc})") from None
    with archive:
        if sum(i.file_size for i in archive.infolist()) > MAX_UNPACKED:
            raise ArchiveError(f"unpacks to more than {MAX_UNPACKED // 1024**3} GiB")
        try:
            manifest = json.loads(archive.read("manifest.json"))
        except (KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ArchiveError(f"no readable manifest.json ({exc})") from None
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ArchiveError(f"not a {FORMAT} v{FORMAT_VERSION} archive")
        files: dict[str, str] = manifest.get("files", {})
        if "subjects.jsonl" not in files:
            raise ArchiveError("the manifest lists no subjects.jsonl")
        images = {n: _read_member(archive, n, digest) for n, digest in files.items() if n != "subjects.jsonl"}
        lines = _read_member(archive, "subjects.jsonl", files["subjects.jsonl"]).splitlines()
    subjects = []
    for number, line in enumerate(lines, 1):
        try:
            doc = json.loads(line)
            if not ID_PATTERN.match(str(doc.get("subject_id", ""))):
                raise ArchiveError(f"line {number}: a subject id is malformed")
            faces = [_face(f, images) for f in doc.get("faces", [])]
            negatives = [_face(f, {})[0] for f in doc.get("negatives", [])]
            subject = Subject(
                doc["subject_id"], str(doc["name"]), dict(doc.get("metadata", {})), float(doc["created"]),
                float(doc["updated"]), [f for f, _ in faces], negatives,
                int(doc["credential"]) if doc.get("credential") is not None else None, _gaze(doc.get("gaze")),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"line {number} of subjects.jsonl is malformed ({exc})") from None
        subjects.append((subject, {f.face_id: image for f, image in faces if image is not None}))
    return manifest, subjects


def import_gallery(gallery: Gallery, source: Path | IO[bytes]) -> ImportReport:
    """Add every subject of the archive; a subject already here (same id) is replaced. Nothing is written unless
    the whole archive checks out."""
    _, subjects = read_archive(source)
    report = ImportReport()
    for subject, images in subjects:
        replaced = gallery.replace_subject(subject, images)
        report.subjects += 1
        report.subject_ids.append(subject.subject_id)
        report.replaced += int(replaced)
        report.faces += len(subject.faces)
        report.images += sum(1 for f in subject.faces if f.has_image)
        for face in subject.faces:
            report.models.update(face.embeddings)
    return report
