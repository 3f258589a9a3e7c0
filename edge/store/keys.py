"""Every Redis key name of the product (prefix ``fm:``). No other module spells a key."""

from __future__ import annotations

import hashlib

PREFIX = "fm:"


def session(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def subjects() -> str:
    """Sorted set: subject id -> created (epoch s), for listing."""
    return f"{PREFIX}subjects"


def subjects_pending() -> str:
    """Sorted set: subject id -> created, for subjects whose enrolment (create, then photos) has not finished."""
    return f"{PREFIX}subjects:pending"


def subject(subject_id: str) -> str:
    """Hash of a subject's metadata (name, metadata JSON, created, updated)."""
    return f"{PREFIX}subject:{subject_id}"


def faces(subject_id: str) -> str:
    """Hash face id -> face record (JSON: quality, embeddings per model id, whether an image is kept)."""
    return f"{PREFIX}faces:{subject_id}"


def negatives(subject_id: str) -> str:
    """Hash face id -> record of a face an operator marked "this is not the subject" (same shape as faces)."""
    return f"{PREFIX}negatives:{subject_id}"


def face_image(subject_id: str, face_id: str) -> str:
    """The enrolment photo of one face (only with ``gallery.store_enrollment_images``)."""
    return f"{PREFIX}image:{subject_id}:{face_id}"


def credentials() -> str:
    """Hash credential (card) number -> subject id: a number belongs to one subject at a time."""
    return f"{PREFIX}credentials"


def credentials_retired() -> str:
    """Set of card numbers whose subject was deleted (the number only): not given again unless asked."""
    return f"{PREFIX}credentials:retired"


def credential_next() -> str:
    """Counter for card numbers allocated when enrolment gives none."""
    return f"{PREFIX}credentials:next"


def gallery_version() -> str:
    """Integer, incremented by every gallery change."""
    return f"{PREFIX}gallery:version"


def gallery_changes() -> str:
    """Sorted set: subject id -> gallery version of its last change (workers fetch what changed since theirs)."""
    return f"{PREFIX}gallery:changes"


def gallery_removals() -> str:
    """Sorted set: sha256 of a deleted subject id -> version of the deletion (no id or name is kept)."""
    return f"{PREFIX}gallery:removals"


def gallery_removals_floor() -> str:
    """The oldest version still covered by the removals set (a worker older than that reloads everything)."""
    return f"{PREFIX}gallery:removals-floor"


def identifications() -> str:
    """Capped stream of recent identifications, for the operator page."""
    return f"{PREFIX}identifications"


def probe(identification_id: str) -> str:
    """The embedding of a recent identification's probe (short TTL), so an operator can mark it "not X"."""
    return f"{PREFIX}probe:{identification_id}"


def audit() -> str:
    """Capped stream of access decisions."""
    return f"{PREFIX}audit"


def audit_pseudonym(subject_id: str) -> str:
    """How the audit names a subject: a hash of its id, which names nobody once the subject is erased."""
    return "p-" + hashlib.sha256(f"audit:{subject_id}".encode()).hexdigest()[:16]


def audit_names() -> str:
    """Hash audit pseudonym -> name: erasing a subject deletes its name here, the audit keeps the pseudonym."""
    return f"{PREFIX}audit:names"


def outbox() -> str:
    """Capped stream of events waiting for the central broker."""
    return f"{PREFIX}outbox"


def page_token(token_hash: str) -> str:
    """A kiosk page token (by its sha256), with a TTL."""
    return f"{PREFIX}page-token:{token_hash}"


def door_flow_lock(device_id: str) -> str:
    """Held (with a short TTL, renewed) by the one inference worker that runs the device's door flow."""
    return f"{PREFIX}door-flow:{device_id}"


def walkup_current(device_id: str) -> str:
    """The walk-up in progress on a device (JSON), so that a worker taking over after a restart can close it."""
    return f"{PREFIX}walkup-current:{device_id}"


def walkup_decided(walkup_id: str) -> str:
    """Set once when a walk-up's decision is made: a second decision for it is never published."""
    return f"{PREFIX}walkup:{walkup_id}"


def gaze_calibration_request(device_id: str) -> str:
    """The subject id whose gaze calibration the device's door flow runs next (a short TTL: a queue of one)."""
    return f"{PREFIX}gaze-calibration-request:{device_id}"


def gaze_calibration_status(subject_id: str) -> str:
    """The last gaze calibration asked for a subject (JSON: device, state, reasons, times; a TTL). Erased with the
    subject; what was learnt is kept in the subject's own hash."""
    return f"{PREFIX}gaze-calibration:{subject_id}"


# Prefix of the rate-limit counters (kept by the `limits` library, shared by every hub process).
RATE_LIMIT_PREFIX = f"{PREFIX}rate"
