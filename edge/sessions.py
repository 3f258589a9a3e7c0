"""Liveness sessions: who may use one, and that it is scored at most once. Used by the hub and the door flow.

A session moves pending -> submitted (claimed for scoring) -> completed. A claim that ends without a score (the video
could not be decoded, a worker or the broker failed) goes back to pending, so the client can try again until the
session expires: only a scored challenge uses a session up.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from dataclasses import dataclass

from edge.errors import ErrorCode, SessionError
from edge.liveness.challenge import Challenge, draw_durations, generate_sequence
from edge.store import SessionConflict, SessionState, Store


@dataclass(frozen=True)
class Session:
    session_id: str
    owner: str
    challenge: Challenge
    state: str
    created: float  # epoch seconds


class Sessions:
    def __init__(self, store: Store, ttl: int):
        self.store = store
        self.ttl = ttl

    def open(self, owner: str, area_duration: float) -> Session:
        """A new pending session with a freshly drawn sequence, bound to ``owner`` (an API key or page token id)."""
        challenge = Challenge(tuple(generate_sequence()), area_duration, draw_durations(area_duration))
        session_id = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        document = {"sequence": list(challenge.sequence), "area_duration": area_duration,
                    "durations": list(challenge.lengths), "key": owner}  # fmt: skip
        self.store.create_session(session_id, document, self.ttl)
        return Session(session_id, owner, challenge, SessionState.PENDING.value, time.time())

    def check(self, session_id: str, owner: str) -> Session:
        """The session if ``owner`` may submit to it now; a :class:`SessionError` saying why not otherwise."""
        document = self.store.get_session(session_id)
        if document is None:
            raise SessionError("no such session: it never existed or it has expired", ErrorCode.UNKNOWN_SESSION)
        if document.get("key") != owner:
            raise SessionError("this session was opened by another client", ErrorCode.SESSION_NOT_YOURS)
        if document["state"] != SessionState.PENDING.value:
            raise SessionError(f"this session was already {document['state']}; open a new one", ErrorCode.SESSION_USED)
        durations = document.get("durations")
        challenge = Challenge(tuple(document["sequence"]), float(document["area_duration"]),
                              tuple(durations) if durations else None)  # fmt: skip
        return Session(session_id, owner, challenge, document["state"], float(document.get("created", 0.0)))

    @staticmethod
    def require_shown(session: Session) -> None:
        """A video complete before the challenge could have been shown in full was recorded in advance: 425."""
        elapsed = time.time() - session.created
        if elapsed < session.challenge.total_duration:
            raise SessionError(
                f"the video came {elapsed:.1f} s after the challenge was issued, but showing it takes "
                f"{session.challenge.total_duration:g} s: record the challenge as it is shown, then submit",
                ErrorCode.SUBMITTED_TOO_EARLY,
            )

    def claim(self, session_id: str, owner: str, *, streaming: bool = False) -> Session:
        """Take the session for scoring (pending -> submitted), atomically: of two submits, one wins.

        A whole video that arrives too early (:meth:`require_shown`) is refused and the session stays usable; a
        streamed one is claimed by its first chunk, and its end is checked instead."""
        session = self.check(session_id, owner)
        if not streaming:
            self.require_shown(session)
        try:
            self.store.transition(session_id, SessionState.PENDING, SessionState.SUBMITTED)
        except SessionConflict as exc:
            if exc.found == "missing":
                message, code = "the session expired before the upload finished", ErrorCode.UNKNOWN_SESSION
            else:
                message, code = f"this session was already {exc.found}; open a new one", ErrorCode.SESSION_USED
            raise SessionError(message, code) from None
        return session

    def release(self, session_id: str) -> None:
        """Give a claimed session back (submitted -> pending): it was never scored."""
        with contextlib.suppress(SessionConflict):  # expired meanwhile: nothing to give back
            self.store.transition(session_id, SessionState.SUBMITTED, SessionState.PENDING)

    def complete(self, session_id: str, result: str, overall_accuracy: float) -> None:
        with contextlib.suppress(SessionConflict):  # expired while it was scored: the client still gets its answer
            self.store.transition(
                session_id, SessionState.SUBMITTED, SessionState.COMPLETED,
                result=result, overall_accuracy=overall_accuracy,
            )  # fmt: skip
