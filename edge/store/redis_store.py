"""The Redis store used by the hub and the inference daemon."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import redis

from edge.config import redact
from edge.errors import RedisUnavailable
from edge.store import keys

T = TypeVar("T")


class StoreUnavailable(RedisUnavailable):
    """Redis cannot be reached; the message names the URL (without its password) and the cause."""


class SessionState(str, Enum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    EXPIRED = "expired"


class SessionConflict(Exception):
    """The session is not in the state the caller expected (``found`` says which, or ``missing``)."""

    def __init__(self, found: str):
        super().__init__(found)
        self.found = found


class Store:
    def __init__(self, url: str, *, socket_timeout: float = 5.0):
        self.url = url
        self._redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, decode_responses=False
        )

    def _fail(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"Redis at {redact(self.url)} is unreachable: {exc}")

    def guard(self, action: Callable[[], T]) -> T:
        """Run ``action``; a Redis failure becomes :class:`StoreUnavailable` (503 naming Redis)."""
        try:
            return action()
        except redis.RedisError as exc:
            raise self._fail(exc) from exc

    def ping(self) -> bool:
        """True when Redis answers; never raises."""
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()

    @property
    def client(self) -> redis.Redis:
        """The connection, for modules that keep their own keys (named in :mod:`edge.store.keys`)."""
        return self._redis

    # -- sessions ---------------------------------------------------------------------------------------------

    def create_session(self, session_id: str, document: dict[str, Any], ttl: int) -> None:
        doc = {**document, "state": SessionState.PENDING.value, "created": time.time()}
        try:
            created = self._redis.set(keys.session(session_id), json.dumps(doc), ex=ttl, nx=True)
        except redis.RedisError as exc:
            raise self._fail(exc) from exc
        if not created:
            raise SessionConflict("exists")

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        try:
            raw = self._redis.get(keys.session(session_id))
        except redis.RedisError as exc:
            raise self._fail(exc) from exc
        return json.loads(raw) if raw else None

    def transition(self, session_id: str, expected: SessionState, new: SessionState, **fields: Any) -> dict[str, Any]:
        """Atomically move a session from ``expected`` to ``new``; raise :class:`SessionConflict` otherwise.

        WATCH/MULTI makes the check and the write one step: of two concurrent submits, exactly one wins.
        """
        key = keys.session(session_id)
        try:
            with self._redis.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        raw = pipe.get(key)
                        if raw is None:
                            raise SessionConflict("missing")
                        doc = json.loads(raw)
                        if doc.get("state") != expected.value:
                            raise SessionConflict(str(doc.get("state")))
                        doc.update(fields, state=new.value)
                        pipe.multi()
                        pipe.set(key, json.dumps(doc), keepttl=True)
                        pipe.execute()
                        return doc
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise self._fail(exc) from exc
