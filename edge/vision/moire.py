"""A screen's pixel grid, filmed by a camera, beats against the sensor's grid: moiré, a faint periodic pattern with a
sharp peak in the image's spectrum. Skin, hair and room scenes have smooth spectra.

The spectra of a window around the face (native resolution: resampling would smear the pattern) are averaged over the
frames sampled through a video: a screen's pattern stays at its frequency, chance peaks of the scene do not. The score
is how far the strongest fine-scale peak of that average rises above the typical level at its own frequency and above
the typical level in its own direction (natural log units). A periodic pattern is a peak at one frequency; a long
straight edge of the room (a shelf, a monitor's rim) is a line through the origin of the spectrum that lifts its whole
direction, which the second baseline cancels (it put the webcam recordings here at up to 2.6, now 1.7). Peaks on the
horizontal and vertical axes are ignored: video codecs' block grids and sensors' row noise put them there in every
camera image.
"""

from __future__ import annotations

import cv2
import numpy as np

WINDOW = 256  # pixels, native resolution; 128 let 3 % of simulated screens through at the same genuine refusals
FINE_BAND = (0.12, 0.45)  # cycles per pixel: patterns 2.2-8 px apart
AXIS_BINS = 1.5
SECTORS = 90  # directions (modulo 180°, the spectrum of a real image is symmetric) in 2° sectors


def _rings() -> list[np.ndarray]:
    """Masks of the band's frequencies, one per ring of equal frequency."""
    half = WINDOW // 2
    fy, fx = np.mgrid[-half:half, -half:half] / WINDOW
    radius = np.hypot(fx, fy)
    band = (radius > FINE_BAND[0]) & (radius < FINE_BAND[1])
    band &= (np.abs(fx) > AXIS_BINS / WINDOW) & (np.abs(fy) > AXIS_BINS / WINDOW)
    ring_of = np.round(radius * WINDOW).astype(int)
    return [band & (ring_of == ring) for ring in np.unique(ring_of[band])]


RINGS = _rings()
BAND = np.logical_or.reduce(RINGS)


def _sector_members() -> list[np.ndarray]:
    """For each direction sector, the positions (in the band's flattened order) of its frequencies."""
    half = WINDOW // 2
    fy, fx = np.mgrid[-half:half, -half:half] / WINDOW
    sector = (np.degrees(np.arctan2(fy, fx)) % 180 / (180 / SECTORS)).astype(int) % SECTORS
    of_band = sector[BAND]
    return [np.flatnonzero(of_band == s) for s in range(SECTORS) if np.any(of_band == s)]


SECTOR_MEMBERS = _sector_members()
TAPER = np.outer(np.hanning(WINDOW), np.hanning(WINDOW)).astype(np.float32)


def face_spectrum(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """Log-magnitude spectrum of the fine detail in a window centred on the face of a BGR image (None when the image
    is smaller than the window)."""
    height, width = image.shape[:2]
    if min(height, width) < WINDOW:
        return None
    x, y, w, h = box
    left = int(np.clip(x + w / 2 - WINDOW / 2, 0, width - WINDOW))
    top = int(np.clip(y + h / 2 - WINDOW / 2, 0, height - WINDOW))
    gray = cv2.cvtColor(image[top : top + WINDOW, left : left + WINDOW], cv2.COLOR_BGR2GRAY).astype(np.float32)
    detail = gray - cv2.GaussianBlur(gray, (0, 0), 2.0)
    return np.log(np.abs(np.fft.fftshift(np.fft.fft2(detail * TAPER))) + 1e-3).astype(np.float32)


def screen_pattern_score(spectra: list[np.ndarray]) -> float | None:
    """Prominence of the strongest fine periodic pattern common to the frames' spectra."""
    if not spectra:
        return None
    mean = np.mean(spectra, axis=0)
    above_ring = np.zeros_like(mean)
    for ring in RINGS:
        above_ring[ring] = mean[ring] - np.median(mean[ring])
    values = above_ring[BAND]
    return float(max(np.max(values[members] - np.median(values[members])) for members in SECTOR_MEMBERS))
