"""Every Redis key name of the product (prefix ``fm:``). No other module spells a key."""

from __future__ import annotations

PREFIX = "fm:"


def session(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def subjects() -> str:
    """Set of enrolled subject ids."""
    return f"{PREFIX}subjects"


def subject(subject_id: str) -> str:
    """Hash of a subject's metadata (name, created, ...)."""
    return f"{PREFIX}subject:{subject_id}"


def embeddings(model_id: str) -> str:
    """Hash subject id -> embedding bytes, one hash per model so that models never mix."""
    return f"{PREFIX}emb:{model_id}"


def audit() -> str:
    """Capped stream of access decisions."""
    return f"{PREFIX}audit"


def outbox() -> str:
    """Capped stream of events waiting for the central broker."""
    return f"{PREFIX}outbox"


def page_token(token_hash: str) -> str:
    """A kiosk page token (by its sha256), with a TTL."""
    return f"{PREFIX}page-token:{token_hash}"


# Prefix of the rate-limit counters (kept by the `limits` library, shared by every hub process).
RATE_LIMIT_PREFIX = f"{PREFIX}rate"
