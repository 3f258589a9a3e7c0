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


def rate(scope: str) -> str:
    """Prefix for rate-limit counters."""
    return f"{PREFIX}rate:{scope}"
