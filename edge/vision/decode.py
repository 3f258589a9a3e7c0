"""Image bytes -> BGR pixels: EXIF orientation applied, decompression bombs refused, downscaled to a cap."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decoded pixels allowed before downscaling (a 10 MB JPEG can hold 200+ megapixels of flat colour).
MAX_PIXELS = 50_000_000


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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("image_too_large", f"refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError as exc:
        raise ImageError("invalid_image", f"not a decodable image: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("invalid_image", f"the image is corrupt or truncated: {exc}") from None
    pixels = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    longest = max(pixels.shape[:2])
    if longest > max_dimension:
        scale = max_dimension / longest
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return pixels
