"""An RPC's image: base64 -> pixels, and the refusal of a face that cannot be used, both naming the image."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from edge.errors import ErrorCode, ImageInputError
from edge.vision.decode import ImageError, decode_image
from edge.vision.engine import FaceAnalysis
from edge.vision.quality import MULTIPLE_FACES


def decode_field(field: str, encoded: str, max_dimension: int) -> tuple[bytes, np.ndarray]:
    """(the image's bytes, its pixels); an :class:`ImageInputError` naming ``field`` when it is unusable."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(field, "not valid base64", ErrorCode.INVALID_BASE64) from None
    try:
        return data, decode_image(data, max_dimension)
    except ImageError as exc:
        raise ImageInputError(field, str(exc), ErrorCode(exc.code)) from None


def refusal(field: str, analysis: FaceAnalysis) -> ImageInputError:
    """The error for a face that failed a quality check (several faces only warn, so they are not listed)."""
    quality = analysis.quality.to_dict()
    blocking = [r for r in quality["reasons"] if r["code"] != MULTIPLE_FACES]
    code = ErrorCode.NO_FACE if analysis.face is None else ErrorCode.POOR_QUALITY
    return ImageInputError(field, "; ".join(r["message"] for r in blocking), code, quality=quality)
