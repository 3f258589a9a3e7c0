"""A worker's gallery in memory: one matrix of every enrolled face of one model, searched in a single product.

Rows are grouped by subject, so a subject's score (the best of its faces) is one ``np.maximum.reduceat``. The index
follows the gallery in Redis by version (:meth:`GalleryIndex.sync`): the subjects changed since its version are
reloaded, the deleted ones dropped, and a worker that fell too far behind reloads everything.
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


class GalleryIndex:
    def __init__(self, model_id: str, dimension: int):
        self.model_id = model_id
        self.dimension = dimension
        self.version = -1
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        # A snapshot for searching: (matrix, first row of each subject, subject ids, their entries); rebuilt after
        # a change, and never changed in place, so a search running during a sync sees one consistent gallery.
        self._packed: tuple[np.ndarray, np.ndarray, list[str], list[Entry]] | None = None

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

    def _pack(self) -> tuple[np.ndarray, np.ndarray, list[str], list[Entry]]:
        packed = self._packed
        if packed is not None:
            return packed
        with self._lock:  # a sync may be changing the entries
            ids = list(self._entries)
            entries = [self._entries[s] for s in ids]
            blocks = [e.faces for e in entries]
            matrix = np.concatenate(blocks) if blocks else np.zeros((0, self.dimension))
            starts = np.cumsum([0] + [len(b) for b in blocks[:-1]]) if blocks else np.zeros(0, int)
            packed = (np.ascontiguousarray(matrix, np.float32), starts.astype(np.int64), ids, entries)
            self._packed = packed
            return packed

    def search(self, vector: np.ndarray, k: int = 5) -> list[Match]:
        """The ``k`` best subjects for a probe, best first, each with its best cosine and its negatives' best."""
        matrix, starts, ids, entries = self._pack()
        if not ids:
            return []
        scores = matrix @ vector.astype(np.float32)
        # One face per subject is the common case: the scores are the subjects' already.
        per_subject = scores if len(scores) == len(ids) else np.maximum.reduceat(scores, starts)
        k = min(k, len(ids))
        top = np.argpartition(per_subject, len(ids) - k)[len(ids) - k :]
        top = top[np.argsort(-per_subject[top])]
        matches = []
        for i in top:
            entry = entries[i]
            negative = float((entry.negatives @ vector).max()) if len(entry.negatives) else None
            matches.append(Match(Candidate(ids[i], float(per_subject[i]), negative), entry.name))
        return matches
