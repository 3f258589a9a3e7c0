"""Image bytes -> BGR pixels: EXIF orientation applied, decompression bombs refused, downscaled to a cap."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decoded pixels allowed before downscaling (a 10 MB JPEG can hold 200+ megapixels of flat colour).
MAX_PIXELS = 50_000_000
FORMATS = "JPEG, PNG, WebP, BMP, GIF or TIFF"


class ImageError(ValueError):
    """The bytes are not a usable image. ``code`` is machine-readable; the message says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def decode_image(data: bytes, max_dimension: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    if not data:
        raise ImageError("empty_image", "the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError("image_too_large", f"{width}×{height} pixels is more than the {max_pixels:,} allowed")
            image = ImageOps.exif_transpose(image)
            image = image.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image_too_large", f"would decode to more than the {max_pixels:,} pixels allowed") from None
    except UnidentifiedImageError:
        # PIL's own message names an in-memory file object: say what a person can act on instead.
        raise ImageError("invalid_image", f"not an image in a format this service reads ({FORMATS})") from None
    except (OSError, ValueError, SyntaxError):
        raise ImageError("invalid_image", "the image is corrupt or truncated") from None
    pixels = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    longest = max(pixels.shape[:2])
    if longest > max_dimension:
        scale = max_dimension / longest
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return pixels
