"""Redis storage: sessions (with single-use state transitions), gallery, audit.

Key names live in :mod:`edge.store.keys`.
"""

from edge.store.redis_store import SessionConflict, SessionState, Store, StoreUnavailable

__all__ = ["SessionConflict", "SessionState", "Store", "StoreUnavailable"]
