"""A worker's gallery in memory: one matrix of every enrolled face of one model, searched in a single product.

Rows are grouped by subject, so a subject's score (the best of its faces) is one ``np.maximum.reduceat``. The index
follows the gallery in Redis by version (:meth:`GalleryIndex.sync`): the subjects changed since its version are
reloaded, the deleted ones dropped, and a worker that fell too far behind reloads everything.

A fused template (the accurate profile: 768 columns) makes one product over a large gallery slow (13 ms at 100,000
faces on 2 cores). Past ``two_stage_rows`` rows the search runs in two stages: the cosines of the template's first
part (SFace's 128 columns; every row's part has the same norm, so its dot products rank like cosines) pick the best
``TWO_STAGE_SHARE`` of the rows, and only those are scored exactly. A subject with no kept row is not a candidate, so
the two stages can only lower a probe's best score, never name anyone the exact search would not: strangers are named
no more often, and an enrolled person is missed only when their rows fall outside the kept share (measured by
``bench identify``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from edge.bus import Bus
from edge.bus.messages import GalleryChanged
from edge.identify.openset import Candidate
from edge.store.gallery import Gallery, Subject, removal_tag

log = logging.getLogger(__name__)

TWO_STAGE_ROWS = 20_000  # under this, one product over every column takes under ~3 ms
TWO_STAGE_SHARE = 0.01  # of the rows, kept by the first stage for exact scoring
TWO_STAGE_MIN_KEPT = 256


def announce_change(bus: Bus, version: int, subject_id: str | None) -> None:
    """What every writer of the gallery sends after a change: workers catch up at once (``GalleryIndex.sync``)."""
    bus.publish(bus.topics.gallery_changed, GalleryChanged(version=version, subject_id=subject_id).to_bytes(), qos=1)


@dataclass(frozen=True)
class Entry:
    name: str
    faces: np.ndarray  # k × d, rows L2-normalised
    negatives: np.ndarray  # m × d (m may be 0)


@dataclass(frozen=True)
class Match:
    candidate: Candidate
    name: str


@dataclass(frozen=True)
class _Packed:
    matrix: np.ndarray  # every face, grouped by subject
    starts: np.ndarray  # the first row of each subject
    row_subject: np.ndarray  # the subject (its position in ids) of each row
    ids: list[str]
    entries: list[Entry]
    leading: np.ndarray | None  # a contiguous copy of the first-stage columns (two-stage galleries only)


class GalleryIndex:
    def __init__(self, model_id: str, dimension: int, first_stage: int = 0, *, two_stage_rows: int = TWO_STAGE_ROWS,
                 min_kept: int = TWO_STAGE_MIN_KEPT):  # fmt: skip
        self.model_id = model_id
        self.dimension = dimension
        self.first_stage = first_stage  # leading columns searched first in a large gallery; 0: one stage
        self.two_stage_rows = two_stage_rows
        self.min_kept = min_kept
        self.version = -1
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        # A snapshot for searching, rebuilt after a change and never changed in place, so a search running during a
        # sync sees one consistent gallery.
        self._packed: _Packed | None = None

    # -- contents ---------------------------------------------------------------------------------------------

    @property
    def subjects(self) -> int:
        return len(self._entries)

    @property
    def faces(self) -> int:
        return sum(len(e.faces) for e in self._entries.values())

    def _entry(self, subject: Subject) -> Entry | None:
        faces = [f.embeddings[self.model_id] for f in subject.faces if self.model_id in f.embeddings]
        if not faces:
            return None
        negatives = [f.embeddings[self.model_id] for f in subject.negatives if self.model_id in f.embeddings]
        empty = np.zeros((0, self.dimension), np.float32)
        return Entry(subject.name, np.stack(faces), np.stack(negatives) if negatives else empty)

    def put(self, subject_id: str, subject: Subject | None) -> None:
        """Replace one subject's rows (``None`` or a subject without faces of this model: remove it)."""
        entry = self._entry(subject) if subject else None
        if entry is None:
            self._entries.pop(subject_id, None)
        else:
            self._entries[subject_id] = entry
        self._packed = None

    def load_all(self, subjects: dict[str, Entry], version: int) -> None:
        self._entries = subjects
        self.version = version
        self._packed = None

    # -- following the gallery --------------------------------------------------------------------------------

    def sync(self, gallery: Gallery) -> bool:
        """Catch up with the gallery in Redis; True when something changed."""
        with self._lock:
            changes = gallery.changes_since(self.version) if self.version >= 0 else None
            if changes is not None and changes.version == self.version:
                return False
            if changes is None or changes.full_reload:
                version = gallery.version()
                entries = {}
                for subject in gallery.iterate():
                    entry = self._entry(subject)
                    if entry is not None:
                        entries[subject.subject_id] = entry
                self.load_all(entries, version)
                log.info("gallery index %s: %d subjects, %d faces (version %d)", self.model_id, self.subjects,
                         self.faces, version)  # fmt: skip
                return True
            if changes.removed_tags:
                for subject_id in [s for s in self._entries if removal_tag(s) in changes.removed_tags]:
                    self.put(subject_id, None)
            loaded = gallery.load(changes.changed)
            for subject_id in changes.changed:
                self.put(subject_id, loaded.get(subject_id))
            self.version = changes.version
            return True

    # -- search -----------------------------------------------------------------------------------------------

    def _pack(self) -> _Packed:
        packed = self._packed
        if packed is not None:
            return packed
        with self._lock:  # a sync may be changing the entries
            ids = list(self._entries)
            entries = [self._entries[s] for s in ids]
            counts = [len(e.faces) for e in entries]
            matrix = np.concatenate([e.faces for e in entries]) if entries else np.zeros((0, self.dimension))
            matrix = np.ascontiguousarray(matrix, np.float32)
            starts = np.cumsum([0, *counts[:-1]]).astype(np.int64) if entries else np.zeros(0, np.int64)
            row_subject = np.repeat(np.arange(len(ids)), counts)
            two_stage = 0 < self.first_stage < self.dimension and len(matrix) >= self.two_stage_rows
            leading = np.ascontiguousarray(matrix[:, : self.first_stage]) if two_stage else None
            packed = _Packed(matrix, starts, row_subject, ids, entries, leading)
            self._packed = packed
            return packed

    @property
    def two_stages(self) -> bool:
        """Whether the gallery as it stands is searched in two stages."""
        return self._pack().leading is not None

    def kept_rows(self, rows: int) -> int:
        """How many of ``rows`` faces the first stage keeps for exact scoring."""
        return min(rows, max(self.min_kept, int(np.ceil(TWO_STAGE_SHARE * rows))))

    def _subject_scores(self, packed: _Packed, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(subjects, their best cosine with the probe): every subject, or in a two-stage gallery the subjects with
        a face among the rows the first stage kept."""
        if packed.leading is None:
            scores = packed.matrix @ vector
            # One face per subject is the common case: the scores are the subjects' already.
            best = scores if len(scores) == len(packed.ids) else np.maximum.reduceat(scores, packed.starts)
            return np.arange(len(best)), best
        rows = len(packed.matrix)
        kept = self.kept_rows(rows)
        rough = packed.leading @ vector[: self.first_stage]
        kept_rows = np.argpartition(rough, rows - kept)[rows - kept :]
        scores = packed.matrix[kept_rows] @ vector
        order = np.argsort(-scores)
        subjects = packed.row_subject[kept_rows[order]]
        _, first = np.unique(subjects, return_index=True)  # each subject's best kept face comes first
        return subjects[first], scores[order][first]

    def search(self, vector: np.ndarray, k: int = 5) -> list[Match]:
        """The ``k`` best subjects for a probe, best first, each with its best cosine and its negatives' best."""
        packed = self._pack()
        if not packed.ids:
            return []
        subjects, best = self._subject_scores(packed, vector.astype(np.float32))
        k = min(k, len(best))
        top = np.argpartition(best, len(best) - k)[len(best) - k :]
        top = top[np.argsort(-best[top])]
        matches = []
        for i in top:
            entry = packed.entries[subjects[i]]
            negative = float((entry.negatives @ vector).max()) if len(entry.negatives) else None
            matches.append(Match(Candidate(packed.ids[subjects[i]], float(best[i]), negative), entry.name))
        return matches
