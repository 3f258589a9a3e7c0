"""Challenge videos on their way to scoring: the spool file an inference worker on this host reads, the request that
names it, and the error when the disk will not take it. Shared by the whole-file and the streamed upload."""

from __future__ import annotations

import secrets
from pathlib import Path

from edge.bus.messages import LivenessRequest
from edge.errors import DependencyUnavailable, ErrorCode
from edge.liveness.challenge import Challenge


def spool_path(spool: Path, session_id: str, kind: str) -> Path:
    """A fresh name per upload: a session given back and tried again never meets its earlier file."""
    return spool / f"{session_id}-{secrets.token_hex(4)}.{kind}"


def spool_unavailable(exc: OSError) -> DependencyUnavailable:
    """Disk full, read-only, gone: the device's fault, not the client's (503)."""
    return DependencyUnavailable(
        "spool", f"the upload could not be stored in the spool directory: {exc.strerror}", ErrorCode.SPOOL_UNAVAILABLE
    )


def scoring_request(path: Path, challenge: Challenge) -> LivenessRequest:
    return LivenessRequest(
        video_path=str(path), sequence=list(challenge.sequence), area_duration=challenge.area_duration,
        durations=list(challenge.lengths),
    )  # fmt: skip
