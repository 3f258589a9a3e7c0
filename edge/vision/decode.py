"""Image bytes -> BGR pixels: EXIF orientation applied, decompression bombs refused, downscaled to a cap.

Memory is the scarce thing on a small board: a 16 kB PNG can decode to 7000×7000 pixels (147 MB). So a JPEG is
decoded at a reduced scale straight away (libjpeg's DCT scaling: never the full image), every other format is
shrunk right after decoding with no intermediate copy, and decoded pixels are drawn from one budget per process, in
proportion to the device's memory: images that would go past it wait their turn instead of decoding side by side.
"""

from __future__ import annotations

import ctypes
import io
import os
import threading
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decoded pixels allowed for one image (a 10 MB JPEG can hold 200+ megapixels of flat colour).
MAX_PIXELS = 50_000_000
FORMATS = "JPEG, PNG, WebP, BMP, GIF or TIFF"
# Share of the device's memory that images being decoded at once may take (4 bytes a pixel while decoding).
MEMORY_SHARE = 0.125
BYTES_PER_PIXEL = 4
# How long an image waits for its share of the budget before the request is refused as too much at once.
BUDGET_WAIT = 10.0


class ImageError(ValueError):
    """The bytes are not a usable image. ``code`` is machine-readable; the message says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class PixelBudget:
    """Decoded pixels in flight in this process, bounded: ``take(n)`` waits until ``n`` fit."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._room = threading.Condition()

    def take(self, pixels: int, timeout: float = BUDGET_WAIT) -> None:
        wanted = min(pixels, self.limit)  # one image over the whole budget still decodes, alone
        with self._room:
            if not self._room.wait_for(lambda: self.used + wanted <= self.limit, timeout):
                # The device is busy, the image is not at fault: 503 with Retry-After, like any overload.
                raise ImageError("overloaded", "the device is decoding as many pixels as its memory allows")
            self.used += wanted

    def give(self, pixels: int) -> None:
        with self._room:
            self.used -= min(pixels, self.limit)
            self._room.notify_all()


# glibc's mallopt parameter: allocations at least this large are mmapped and go back to the system when freed.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def return_large_buffers_to_the_system() -> None:
    """Make glibc give big freed buffers (decoded images, video frames) back to the system at once.

    By default glibc raises its mmap threshold after each large free, up to 32 MB, so later image buffers come from
    the heaps of the decoding threads and stay there: the inference daemon's memory only grew (437 MB -> 1.1 GB over
    a probing session). A fixed threshold ends that. Call once, early, in a process that decodes images."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator has its own policy


def device_budget() -> int:
    """Pixels the images being decoded at once may have, from the device's physical memory."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 2 << 30
    return max(MAX_PIXELS, int(memory * MEMORY_SHARE / BYTES_PER_PIXEL))


BUDGET = PixelBudget(device_budget())


def _open(data: bytes, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError("image_too_large", f"{width}×{height} pixels is more than the {max_pixels:,} allowed")
        return image


def _decode(image: Image.Image, max_dimension: int) -> Image.Image:
    """The image at most about ``max_dimension`` on its longest side, decoded with as little memory as it can."""
    longest = max(image.size)
    if image.format == "JPEG" and longest > max_dimension:
        # Decode at 1/2, 1/4 or 1/8 scale, never below the size asked for.
        scale = longest / max_dimension
        image.draft("RGB", (int(image.size[0] / scale) + 1, int(image.size[1] / scale) + 1))
    image.load()
    factor = max(1, max(image.size) // max_dimension)
    if factor > 1:
        image = image.reduce(factor)  # a box filter by a whole factor: fast, and frees the full decode at once
    image = ImageOps.exif_transpose(image)
    return image.convert("RGB") if image.mode != "RGB" else image


def decode_image(
    data: bytes, max_dimension: int, max_pixels: int = MAX_PIXELS, budget: PixelBudget = BUDGET
) -> np.ndarray:
    if not data:
        raise ImageError("empty_image", "the image is empty")
    try:
        image = _open(data, max_pixels)
        pixels = image.size[0] * image.size[1]
        budget.take(pixels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = _decode(image, max_dimension)
        finally:
            budget.give(pixels)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image_too_large", f"would decode to more than the {max_pixels:,} pixels allowed") from None
    except UnidentifiedImageError:
        # PIL's own message names an in-memory file object: say what a person can act on instead.
        raise ImageError("invalid_image", f"not an image in a format this service reads ({FORMATS})") from None
    except (OSError, ValueError, SyntaxError):
        raise ImageError("invalid_image", "the image is corrupt or truncated") from None
    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    longest = max(bgr.shape[:2])
    if longest > max_dimension:
        scale = max_dimension / longest
        size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return bgr
