"""One error model for the whole product: every error a client can receive, and the exceptions that carry them.

Each :class:`ErrorCode` has its HTTP status and a description; the catalogue in docs/ERRORS.md and the OpenAPI
responses are built from it. Code raises a :class:`FacematchError` (or a subclass) naming a code; the hub maps it to
HTTP in one place (``hub/errors.py``) and the bus maps it to an RPC error and back in one place (``edge/bus``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(str, Enum):
    """Every machine-readable error code, with the HTTP status it is answered with and what it means."""

    status: int
    description: str

    def __new__(cls, value: str, status: int, description: str) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.description = description
        return member

    # 400: the input is unusable
    INVALID_BASE64 = "invalid_base64", 400, "an image is neither an http(s) URL nor valid base64"
    INVALID_IMAGE = "invalid_image", 400, "an image's bytes are not a decodable or complete image"
    EMPTY_IMAGE = "empty_image", 400, "an image is empty"
    UNSUPPORTED_URL_SCHEME = "unsupported_url_scheme", 400, "an image URL is not http(s)"
    INVALID_URL = "invalid_url", 400, "an image URL is malformed (port, host, brackets)"
    URL_UNRESOLVABLE = "url_unresolvable", 400, "an image URL's host does not resolve"
    URL_NOT_ALLOWED = "url_not_allowed", 400, "an image URL resolves to a private, loopback or reserved address"
    URL_FETCH_FAILED = "url_fetch_failed", 400, "an image URL answered with an error or the connection failed"
    URL_TIMEOUT = "url_timeout", 400, "an image URL did not deliver the image in time"
    TOO_MANY_REDIRECTS = "too_many_redirects", 400, "an image URL redirected too often"
    EMPTY_VIDEO = "empty_video", 400, "the uploaded video is empty"
    INVALID_VIDEO = "invalid_video", 400, "the uploaded video cannot be decoded (or has no picture)"
    VIDEO_TOO_SHORT = "video_too_short", 400, "the uploaded video is shorter than the challenge"
    VIDEO_TIMING = "video_timing", 400, "the video's frames are not timed like a continuous camera recording"
    VIDEO_MISSING = "video_missing", 400, "the spooled video named in a liveness request does not exist"
    STREAM_STALLED = "stream_stalled", 400, "a streamed challenge video stopped arriving before it ended"
    INVALID_ARCHIVE = "invalid_archive", 400, "a gallery archive is not one, is damaged, or fails its checksums"
    BAD_REQUEST = "bad_request", 400, "an RPC or command request is malformed"
    UNREADABLE_BODY = "unreadable_body", 400, "the body could not be read as its declared content type"
    # 401 / 403: who may ask
    MISSING_CREDENTIALS = "missing_api_key", 401, "no API key (X-API-Key) or page token was sent"
    INVALID_API_KEY = "invalid_api_key", 401, "the API key is unknown or revoked"
    INVALID_PAGE_TOKEN = "invalid_page_token", 401, "the page token is unknown or expired"
    SESSION_NOT_YOURS = "session_not_yours", 403, "the liveness session was opened by another key or page token"
    FORBIDDEN = "forbidden", 403, "a page token only allows the liveness challenge"
    # 404 / 405 / 409
    NOT_FOUND = "not_found", 404, "no such path"
    UNKNOWN_SESSION = "unknown_session", 404, "the liveness session never existed or has expired"
    UNKNOWN_COMMAND = "unknown_command", 404, "a fleet command the device does not know"
    UNKNOWN_SUBJECT = "unknown_subject", 404, "no subject with this id is enrolled"
    UNKNOWN_FACE = "unknown_face", 404, "the subject has no face with this id"
    UNKNOWN_IDENTIFICATION = (
        "unknown_identification", 404, "the identification is unknown, or its probe was already discarded (probe_ttl)"
    )  # fmt: skip
    NOT_SUPPORTED = "not_supported", 501, "the device cannot do this in the way it runs (the message says why)"
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "the path exists but not with this HTTP method"
    REQUEST_TIMEOUT = "request_timeout", 408, "the request body did not arrive in time"
    CREDENTIAL_IN_USE = "credential_in_use", 409, "the card number belongs to another subject"
    CREDENTIAL_RETIRED = (
        "credential_retired", 409, "the card number was a deleted subject's; send reuse_credential to give it again"
    )  # fmt: skip
    CALIBRATION_BUSY = (
        "calibration_busy", 409, "the device already has another subject's gaze calibration waiting; try again later"
    )  # fmt: skip
    SESSION_USED = "session_used", 409, "the liveness session was already scored or is being scored"
    STREAM_OUT_OF_ORDER = (
        "stream_out_of_order", 409, "a chunk of a streamed challenge video is not the next one, or the stream is over"
    )  # fmt: skip
    SUBMITTED_TOO_EARLY = (
        "submitted_too_early", 425,
        "the challenge video came before the challenge could have been completed (a recording made in advance)",
    )  # fmt: skip
    # 413 / 415 / 422 / 429
    BODY_TOO_LARGE = "body_too_large", 413, "the request body is over the limit"
    IMAGE_TOO_LARGE = "image_too_large", 413, "an image has too many bytes or pixels"
    VIDEO_TOO_LARGE = "video_too_large", 413, "the uploaded video is over the limit"
    JSON_EXPECTED = "json_expected", 415, "the endpoint takes a JSON body (Content-Type: application/json)"
    INVALID_REQUEST = "invalid_request", 422, "the request does not follow the schema; each problem is listed"
    NO_FACE = "no_face", 422, "no face was found in an image"
    POOR_QUALITY = "poor_quality", 422, "the face is unusable; the quality reasons say why"
    NO_USABLE_PHOTO = (
        "no_usable_photo",
        422,
        "no enrolment photo could be used; each one's reasons are listed",
    )
    MULTIPLE_FACES = "multiple_faces", 422, "more than one face was in view for much of the challenge video"
    RATE_LIMITED = "rate_limited", 429, "too many requests for this key or address; see Retry-After"
    # 5xx: the service's side
    INTERNAL = "internal", 500, "an unexpected failure (logged on the device)"
    BAD_REPLY = "bad_reply", 502, "an inference worker answered with something that is not a valid reply"
    BROKER_UNAVAILABLE = "broker_unavailable", 503, "the MQTT broker is not connected"
    REDIS_UNAVAILABLE = "redis_unavailable", 503, "Redis is unreachable"
    INFERENCE_UNAVAILABLE = "inference_unavailable", 503, "no inference worker that can serve this request is online"
    SPOOL_UNAVAILABLE = "spool_unavailable", 503, "the upload could not be stored (disk full or not writable)"
    GALLERY_LOCKED = "gallery_locked", 503, "the gallery is encrypted and its key file is missing or another key"
    OVERLOADED = "overloaded", 503, "the device is already working on as many of these as it takes at once; retry"
    INFERENCE_TIMEOUT = "inference_timeout", 504, "the inference worker did not answer in time"


class FacematchError(Exception):
    """The root of every error meant for a client: a code from the catalogue, a message for people, details."""

    default_code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None, **detail: Any):
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.detail = detail

    @property
    def status(self) -> int:
        return self.code.status

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, **self.detail}

    @classmethod
    def from_dict(cls, error: dict[str, Any]) -> FacematchError:
        """Rebuild an error sent as :meth:`to_dict` (an RPC reply); an unknown code becomes ``bad_reply``."""
        try:
            code = ErrorCode(error.get("code"))
        except ValueError:
            code = ErrorCode.BAD_REPLY
        detail = {k: v for k, v in error.items() if k not in ("code", "message")}
        return FacematchError(str(error.get("message") or code.description), code, **detail)


class InputError(FacematchError):
    """The request's content is unusable (an image, a video, a field)."""

    default_code = ErrorCode.BAD_REQUEST


class ImageInputError(InputError):
    """An input image is unusable; ``image`` names it (``image1``/``image2``) and the message starts with it."""

    default_code = ErrorCode.INVALID_IMAGE

    def __init__(self, image: str, message: str, code: ErrorCode | None = None, **detail: Any):
        super().__init__(f"{image}: {message}", code, image=image, **detail)
        self.image = image


class AuthError(FacematchError):
    default_code = ErrorCode.INVALID_API_KEY


class SessionError(FacematchError):
    """A liveness session cannot be used as asked (unknown, someone else's, already used)."""

    default_code = ErrorCode.UNKNOWN_SESSION


class DependencyUnavailable(FacematchError):
    """A dependency is down; ``dependency`` names it (broker, redis, inference)."""

    default_code = ErrorCode.INTERNAL

    def __init__(self, dependency: str, message: str, code: ErrorCode):
        super().__init__(message, code, dependency=dependency)
        self.dependency = dependency


class BrokerUnavailable(DependencyUnavailable):
    def __init__(self, message: str):
        super().__init__("broker", message, ErrorCode.BROKER_UNAVAILABLE)


class RedisUnavailable(DependencyUnavailable):
    def __init__(self, message: str):
        super().__init__("redis", message, ErrorCode.REDIS_UNAVAILABLE)


class InferenceUnavailable(DependencyUnavailable):
    def __init__(self, message: str):
        super().__init__("inference", message, ErrorCode.INFERENCE_UNAVAILABLE)


class InferenceTimeout(FacematchError):
    default_code = ErrorCode.INFERENCE_TIMEOUT


class GalleryError(FacematchError):
    """A subject, face or identification is unknown, or the gallery cannot be read or written as asked."""

    default_code = ErrorCode.UNKNOWN_SUBJECT


class RateLimited(FacematchError):
    """Too many requests (429), or (with ``code=OVERLOADED``) too many at once (503); both say when to retry."""

    default_code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, retry_after: int, code: ErrorCode | None = None):
        super().__init__(message, code)
        self.retry_after = retry_after


def catalogue_markdown() -> str:
    """The table of docs/ERRORS.md (a test keeps the file equal to it)."""
    lines = ["| status | code | meaning |", "|---|---|---|"]
    lines += [f"| {c.status} | `{c.value}` | {c.description} |" for c in sorted(ErrorCode, key=lambda c: c.status)]
    return "\n".join(lines)
